//! Bad input to the admin API: malformed or mistyped bodies, invalid values, conflicts,
//! bad pagination and missing credentials each get a clear 4xx problem, and a refused
//! request writes nothing (no row, no audit record).

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Backend, Reply, TestApp, on_both_stores};

/// An upstream URL nothing listens on; these tests never proxy.
const NOWHERE: &str = "http://127.0.0.1:9";

/// What a refused request must leave as it was.
#[derive(Debug, PartialEq)]
struct Counts {
    audit: u64,
    apis: u64,
    upstreams: u64,
}

async fn total(app: &TestApp, list: &str) -> u64 {
    let sep = if list.contains('?') { '&' } else { '?' };
    app.get(&format!("{list}{sep}per_page=1")).await.expect(200)["total"].as_u64().unwrap()
}

async fn counts(app: &TestApp) -> Counts {
    Counts {
        audit: app.audit_count().await,
        apis: total(app, "/admin/v1/apis").await,
        upstreams: total(app, "/admin/v1/upstreams").await,
    }
}

/// Asserts a 422 `invalid-input` problem and returns the fields its `errors` name.
#[track_caller]
fn invalid_fields(reply: &Reply) -> Vec<String> {
    let body = reply.problem(422);
    let errors = body["errors"].as_array().unwrap_or_else(|| panic!("no `errors` array: {body}"));
    assert!(!errors.is_empty(), "{body}");
    errors
        .iter()
        .map(|e| {
            assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "error without a message: {body}");
            e["field"].as_str().unwrap_or_else(|| panic!("error without a field: {body}")).to_owned()
        })
        .collect()
}

/// Asserts a problem whose `detail` mentions `needle`.
#[track_caller]
fn problem_mentioning(reply: &Reply, status: u16, needle: &str) -> Value {
    let body = reply.problem(status);
    assert!(body["detail"].as_str().unwrap().contains(needle), "detail should mention {needle:?}: {body}");
    body
}

/// Sends a body over the limit on a connection of its own. The server answers before
/// reading it all and then drops the connection; on the shared client's pool that
/// would break whichever request came next (see
/// [`connection_survives_or_close_is_announced`]).
async fn send_oversized(app: &TestApp, method: Method, path: &str, content_type: &str, body: String) -> Reply {
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let res = client
        .request(method, format!("{}{path}", app.admin_url))
        .bearer_auth(&app.token)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("the server answers before reading the whole body");
    Reply { status: res.status(), headers: res.headers().clone(), body: res.bytes().await.unwrap().to_vec() }
}

#[track_caller]
fn too_large(reply: &Reply) {
    assert_eq!(reply.problem(413)["type"], "urn:turnpike:problem:body-too-large");
}

/// Reads one HTTP/1.1 response with a `content-length` body; returns its head.
async fn read_response(r: &mut (impl tokio::io::AsyncRead + Unpin)) -> std::io::Result<String> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().expect("a numeric content-length"));
            if buf.len() >= end + 4 + length {
                return Ok(head);
            }
        }
        let n = r.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Sends an oversized request on a raw connection and checks that the server keeps its
/// word about that connection: either the answer says `Connection: close` (RFC 9112,
/// section 9.6), or the connection still serves a next request. A server that stops
/// reading and silently closes makes keep-alive clients send their next request into
/// a dead connection (reqwest then fails it with `hyper::Error(IncompleteMessage)`).
async fn connection_survives_or_close_is_announced(
    app: &TestApp,
    method: &str,
    path: &str,
    content_type: &str,
) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let addr = app.admin_url.trim_start_matches("http://").to_owned();
    let (mut r, mut w) = tokio::net::TcpStream::connect(addr).await.unwrap().into_split();
    let body = vec![b'a'; 2 * 1024 * 1024];
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: admin\r\nauthorization: Bearer {}\r\n\
         content-type: {content_type}\r\ncontent-length: {}\r\n\r\n",
        app.token,
        body.len()
    );
    // The server may stop reading at any point, so the body is written alongside.
    let writer = tokio::spawn(async move {
        let _ = w.write_all(head.as_bytes()).await;
        let _ = w.write_all(&body).await;
        w
    });
    let wait = std::time::Duration::from_secs(5);
    let head = tokio::time::timeout(wait, read_response(&mut r)).await.expect("an answer in time").unwrap();
    assert!(head.starts_with("http/1.1 413"), "{head}");
    if head.lines().any(|l| l.starts_with("connection:") && l.contains("close")) {
        return Ok(());
    }
    let mut w = tokio::time::timeout(wait, writer).await.expect("the body is taken or refused in time").unwrap();
    let next = format!("GET /admin/v1/apis HTTP/1.1\r\nhost: admin\r\nauthorization: Bearer {}\r\n\r\n", app.token);
    let sent = w.write_all(next.as_bytes()).await;
    let answer = tokio::time::timeout(wait, read_response(&mut r)).await.expect("an answer in time");
    match (sent, answer) {
        (Ok(()), Ok(next)) if next.starts_with("http/1.1 200") => Ok(()),
        (sent, answer) => Err(format!(
            "{method} {path}: after a 413 without `Connection: close` the connection did not serve the next \
             request (write {sent:?}, read {answer:?}); the 413 head was:\n{head}"
        )),
    }
}

fn upstream_with(targets: Value) -> Value {
    json!({"name": "backend", "targets": targets})
}

on_both_stores! {
    async fn malformed_json_is_a_400_problem(app) {
        let before = counts(&app).await;
        for body in [r#"{"name": "Pets", "slug":"#, "not json", "", r#"{"name":"Pets","slug":"pets"} trailing"#] {
            let reply = app.post_raw("/admin/v1/apis", "application/json", body).await;
            let problem = reply.problem(400);
            assert_eq!(problem["type"], "urn:turnpike:problem:malformed-body", "{body:?}");
        }
        assert_eq!(counts(&app).await, before);
    }

    async fn wrong_types_are_422_naming_the_field(app) {
        let before = counts(&app).await;
        problem_mentioning(&app.post("/admin/v1/apis", json!({"name": 5, "slug": "pets"})).await, 422, "name");
        let tags = app.post("/admin/v1/apis", json!({"name": "Pets", "slug": "pets", "tags": "a"})).await;
        problem_mentioning(&tags, 422, "tags");
        problem_mentioning(&app.post("/admin/v1/apis", json!({"name": null, "slug": "pets"})).await, 422, "name");
        let nested = app.post("/admin/v1/upstreams", upstream_with(json!([{"url": NOWHERE, "weight": "heavy"}]))).await;
        problem_mentioning(&nested, 422, "targets[0].weight");
        // Out of the type's range (u32) is a type error too, not a silent wrap.
        let huge = upstream_with(json!([{"url": NOWHERE, "weight": 5_000_000_000u64}]));
        let huge = app.post("/admin/v1/upstreams", huge).await;
        problem_mentioning(&huge, 422, "targets[0].weight");
        let negative = app.post("/admin/v1/upstreams", upstream_with(json!([{"url": NOWHERE, "weight": -1}]))).await;
        problem_mentioning(&negative, 422, "targets[0].weight");
        for not_an_object in [json!("Pets"), json!(5), json!(null), json!(true)] {
            app.post("/admin/v1/apis", not_an_object).await.problem(422);
        }
        assert_eq!(counts(&app).await, before);
    }

    // The documented body of every create is an object. Serde's derive also reads a
    // struct from a sequence of its fields in order, which must not leak through: an
    // array is a wrong type, not another spelling of the object.
    async fn a_json_array_body_is_refused_not_read_as_a_tuple(app) {
        let slug = app.draft_api("tuple", NOWHERE).await;
        let before = counts(&app).await;
        let versions = format!("/admin/v1/apis/{slug}/versions");
        let routes = format!("{versions}/v1/routes");
        let cases = [
            ("/admin/v1/apis", json!(["Pets", "pets"])),
            ("/admin/v1/upstreams", json!(["backend", [{"url": NOWHERE}]])),
            (versions.as_str(), json!(["v2"])),
            (routes.as_str(), json!([null, [], "/pets"])),
            ("/admin/v1/plans", json!(["gold", "Gold"])),
            ("/admin/v1/developers", json!(["ann@example.com", "Ann"])),
            ("/admin/v1/tokens", json!(["ci"])),
        ];
        let mut accepted = Vec::new();
        for (path, body) in cases {
            let reply = app.post(path, body.clone()).await;
            if reply.status != 422 {
                accepted.push(format!("POST {path} {body} -> {} {}", reply.status, reply.text()));
            }
        }
        assert!(accepted.is_empty(), "array bodies not refused with 422:\n{}", accepted.join("\n"));
        assert_eq!(counts(&app).await, before);
        assert_eq!(total(&app, &versions).await, 1);
        assert_eq!(total(&app, &routes).await, 1);
        assert_eq!(total(&app, "/admin/v1/plans").await, 0);
        assert_eq!(total(&app, "/admin/v1/developers").await, 0);
    }

    async fn unknown_and_missing_fields_are_422_naming_them(app) {
        let before = counts(&app).await;
        let unknown = app.post("/admin/v1/apis", json!({"name": "Pets", "slug": "pets", "colour": "red"})).await;
        problem_mentioning(&unknown, 422, "colour");
        let nested = app.post("/admin/v1/upstreams", upstream_with(json!([{"url": NOWHERE, "wieght": 5}]))).await;
        problem_mentioning(&nested, 422, "wieght");
        problem_mentioning(&app.post("/admin/v1/apis", json!({"name": "Pets"})).await, 422, "slug");
        problem_mentioning(&app.post("/admin/v1/upstreams", json!({"name": "backend"})).await, 422, "targets");
        problem_mentioning(&app.post("/admin/v1/apis", json!({})).await, 422, "name");
        assert_eq!(counts(&app).await, before);
    }

    async fn json_sent_as_text_plain_is_415(app) {
        let before = counts(&app).await;
        let body = json!({"name": "Pets", "slug": "pets"}).to_string();
        let reply = app.post_raw("/admin/v1/apis", "text/plain", body.clone()).await;
        assert_eq!(reply.problem(415)["type"], "urn:turnpike:problem:unsupported-media-type");
        let form = Some(("application/x-www-form-urlencoded", body.into_bytes()));
        app.send(Method::POST, "/admin/v1/apis", form, Some(&app.token)).await.problem(415);
        assert_eq!(counts(&app).await, before);
    }

    async fn a_body_over_the_limit_is_413(app) {
        let before = counts(&app).await;
        // The harness caps bodies at 1 MiB.
        let big = json!({"name": "Pets", "slug": "pets", "description": "a".repeat(2 * 1024 * 1024)});
        let reply = send_oversized(&app, Method::POST, "/admin/v1/apis", "application/json", big.to_string()).await;
        too_large(&reply);
        assert_eq!(counts(&app).await, before);
    }

    async fn an_openapi_upload_over_the_limit_is_413(app) {
        app.post("/admin/v1/apis", json!({"name": "Pets", "slug": "pets"})).await.expect(201);
        let before = counts(&app).await;
        let mut doc = String::from("openapi: 3.1.0\ninfo:\n  title: Big\n  version: '1'\n  description: ");
        doc.push_str(&"a".repeat(2 * 1024 * 1024));
        doc.push_str("\npaths: {}\n");
        let path = "/admin/v1/apis/pets/versions/v1/openapi";
        let reply = send_oversized(&app, Method::PUT, path, "application/yaml", doc).await;
        too_large(&reply);
        assert_eq!(counts(&app).await, before);
        assert_eq!(total(&app, "/admin/v1/apis/pets/versions").await, 0);
    }

    async fn an_openapi_upload_that_is_not_utf8_is_400(app) {
        app.post("/admin/v1/apis", json!({"name": "Pets", "slug": "pets"})).await.expect(201);
        let before = counts(&app).await;
        let mut doc = b"openapi: 3.1.0\ninfo:\n  title: Caf".to_vec();
        doc.extend_from_slice(&[0xC3, 0x28, 0xFF]);
        doc.extend_from_slice(b"\n  version: '1'\npaths: {}\n");
        let reply = app.put_raw("/admin/v1/apis/pets/versions/v1/openapi", "application/yaml", doc).await;
        assert_eq!(reply.problem(400)["type"], "urn:turnpike:problem:malformed-body");
        assert_eq!(counts(&app).await, before);
        assert_eq!(total(&app, "/admin/v1/apis/pets/versions").await, 0);
    }

    async fn invalid_api_fields_are_422_with_every_error(app) {
        let before = counts(&app).await;
        for slug in ["Pets", "pet store", "pet_store", "-pets"] {
            let reply = app.post("/admin/v1/apis", json!({"name": "Pets", "slug": slug})).await;
            assert_eq!(invalid_fields(&reply), ["slug"], "{slug:?}");
        }
        // Every problem of a request at once, not just the first.
        let both = invalid_fields(&app.post("/admin/v1/apis", json!({"name": "  ", "slug": "-bad-"})).await);
        assert_eq!(both, ["name", "slug"]);
        assert_eq!(counts(&app).await, before);
    }

    async fn invalid_version_and_route_fields_are_422(app) {
        let slug = app.draft_api("pets", NOWHERE).await;
        let before = counts(&app).await;
        let versions = format!("/admin/v1/apis/{slug}/versions");
        for base_path in ["no-slash", "/a/../b", "/", "/a//b", "/a b"] {
            let reply = app.post(&versions, json!({"label": "v2", "base_path": base_path})).await;
            assert_eq!(invalid_fields(&reply), ["base_path"], "{base_path:?}");
        }
        assert_eq!(invalid_fields(&app.post(&versions, json!({"label": "-v2"})).await), ["label"]);

        let routes = format!("{versions}/v1/routes");
        for path in ["pets", "/a/../b", "/pets?x=1", "/{id}/{id}", "/a*"] {
            assert_eq!(invalid_fields(&app.post(&routes, json!({"path": path})).await), ["path"], "{path:?}");
        }
        for methods in [json!(["FETCH"]), json!(["get"]), json!(["GET", "GET"])] {
            let reply = app.post(&routes, json!({"path": "/pets", "methods": methods})).await;
            assert_eq!(invalid_fields(&reply), ["methods"], "{methods}");
        }
        let mut both = invalid_fields(&app.post(&routes, json!({"path": "pets", "methods": ["FETCH"]})).await);
        both.sort();
        assert_eq!(both, ["methods", "path"]);

        assert_eq!(counts(&app).await, before);
        assert_eq!(total(&app, &versions).await, 1);
        assert_eq!(total(&app, &routes).await, 1);
    }

    async fn invalid_upstream_targets_are_422_naming_each_one(app) {
        let before = counts(&app).await;
        for url in ["ftp://x", "http://", "localhost:8080", "http://user:pw@example.com", ""] {
            let reply = app.post("/admin/v1/upstreams", upstream_with(json!([{"url": url}]))).await;
            assert_eq!(invalid_fields(&reply), ["targets[0].url"], "{url:?}");
        }
        let zero = app.post("/admin/v1/upstreams", upstream_with(json!([{"url": NOWHERE, "weight": 0}]))).await;
        assert_eq!(invalid_fields(&zero), ["targets[0].weight"]);
        let many = app
            .post(
                "/admin/v1/upstreams",
                json!({
                    "name": "Bad Name",
                    "targets": [{"url": "ftp://x", "weight": 0}, {"url": "http://", "weight": 1}],
                }),
            )
            .await;
        assert_eq!(invalid_fields(&many), ["name", "targets[0].url", "targets[0].weight", "targets[1].url"]);
        assert_eq!(invalid_fields(&app.post("/admin/v1/upstreams", upstream_with(json!([]))).await), ["targets"]);
        assert_eq!(counts(&app).await, before);
    }

    async fn conflicts_are_409_and_write_nothing(app) {
        let slug = app.draft_api("dup", NOWHERE).await;
        app.post("/admin/v1/apis", json!({"name": "Other", "slug": "other"})).await.expect(201);
        let versions = format!("/admin/v1/apis/{slug}/versions");
        app.post(&versions, json!({"label": "v2"})).await.expect(201);
        let before = counts(&app).await;

        let conflict = |reply: Reply| assert_eq!(reply.problem(409)["type"], "urn:turnpike:problem:conflict");
        conflict(app.post("/admin/v1/apis", json!({"name": "Again", "slug": "dup"})).await);
        conflict(app.post("/admin/v1/upstreams", json!({"name": "dup-up", "targets": [{"url": NOWHERE}]})).await);
        conflict(app.post(&versions, json!({"label": "v1"})).await);
        conflict(app.patch(&format!("{versions}/v2"), json!({"label": "v1"})).await);
        // Base paths are unique across all APIs: the gateway could not tell them apart.
        conflict(app.post(&versions, json!({"label": "v3", "base_path": "/dup/v1"})).await);
        conflict(app.post("/admin/v1/apis/other/versions", json!({"label": "v1", "base_path": "/dup/v1"})).await);
        conflict(app.patch(&format!("{versions}/v2"), json!({"base_path": "/dup/v1"})).await);

        let ghost = app.post(&versions, json!({"label": "v3", "upstream_id": "ghost"})).await;
        assert_eq!(invalid_fields(&ghost), ["upstream_id"]);

        conflict(app.delete("/admin/v1/upstreams/dup-up").await);
        app.get("/admin/v1/upstreams/dup-up").await.expect(200);

        assert_eq!(counts(&app).await, before);
        assert_eq!(total(&app, &versions).await, 2);
        assert_eq!(total(&app, "/admin/v1/apis/other/versions").await, 0);
        let v2 = app.get(&format!("{versions}/v2")).await.expect(200);
        assert_eq!(v2["base_path"], "/dup/v2");
        assert_eq!(v2["label"], "v2");
    }

    async fn bad_pagination_is_refused_on_every_list(app) {
        let slug = app.draft_api("pages", NOWHERE).await;
        let before = counts(&app).await;
        let lists = [
            "/admin/v1/apis".to_owned(),
            "/admin/v1/upstreams".to_owned(),
            "/admin/v1/plans".to_owned(),
            "/admin/v1/developers".to_owned(),
            "/admin/v1/applications".to_owned(),
            "/admin/v1/subscriptions".to_owned(),
            "/admin/v1/tokens".to_owned(),
            "/admin/v1/audit".to_owned(),
            format!("/admin/v1/apis/{slug}/versions"),
            format!("/admin/v1/apis/{slug}/versions/v1/routes"),
        ];
        for list in &lists {
            app.get(&format!("{list}?per_page=200")).await.expect(200);
            for (query, field) in [("per_page=0", "per_page"), ("per_page=1000", "per_page"), ("page=0", "page")] {
                let reply = app.get(&format!("{list}?{query}")).await;
                assert_eq!(invalid_fields(&reply), [field], "{list}?{query}");
            }
            for query in ["page=abc", "per_page=-1", "colour=red", "page=1&page=2"] {
                let problem = app.get(&format!("{list}?{query}")).await.problem(400);
                assert_eq!(problem["type"], "urn:turnpike:problem:invalid-query", "{list}?{query}");
            }
        }
        assert_eq!(counts(&app).await, before);
    }

    async fn a_bad_merge_patch_is_refused_and_changes_nothing(app) {
        let slug = app.draft_api("patchy", NOWHERE).await;
        let api_path = format!("/admin/v1/apis/{slug}");
        let version_path = format!("{api_path}/versions/v1");
        let upstream_path = "/admin/v1/upstreams/patchy-up";
        let api = app.get(&api_path).await.expect(200);
        let version = app.get(&version_path).await.expect(200);
        let upstream = app.get(upstream_path).await.expect(200);
        let before = counts(&app).await;

        let wrong = [json!({"name": 5}), json!({"tags": "a"}), json!({"colour": "red"}), json!([1, 2]), json!("name")];
        for patch in wrong {
            app.patch(&api_path, patch.clone()).await.problem(422);
        }
        // Valid JSON, invalid value.
        assert_eq!(invalid_fields(&app.patch(&api_path, json!({"name": " "})).await), ["name"]);
        assert!(invalid_fields(&app.patch(&api_path, json!({"slug": "renamed"})).await).contains(&"slug".to_owned()));
        for patch in [json!({"base_path": 5}), json!({"upstream_id": ["x"]}), json!([])] {
            app.patch(&version_path, patch).await.problem(422);
        }
        assert_eq!(invalid_fields(&app.patch(&version_path, json!({"base_path": "no-slash"})).await), ["base_path"]);
        for patch in [json!({"targets": "x"}), json!({"targets": [{"url": NOWHERE, "weight": "x"}]}), json!([])] {
            app.patch(upstream_path, patch).await.problem(422);
        }
        let bad_target = app.patch(upstream_path, json!({"targets": [{"url": "ftp://x"}]})).await;
        assert_eq!(invalid_fields(&bad_target), ["targets[0].url"]);
        // Malformed JSON in a PATCH is the same 400 as in a POST.
        let malformed = Some(("application/merge-patch+json", b"{\"name\":".to_vec()));
        app.send(Method::PATCH, &api_path, malformed, Some(&app.token)).await.problem(400);

        assert_eq!(app.get(&api_path).await.expect(200), api);
        assert_eq!(app.get(&version_path).await.expect(200), version);
        assert_eq!(app.get(upstream_path).await.expect(200), upstream);
        assert_eq!(counts(&app).await, before);
    }
}

/// Turns a templated path of the admin document into a concrete one.
fn fill_template(path: &str) -> String {
    path.split('/')
        .map(|s| if s.starts_with('{') && s.ends_with('}') { "dummy" } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

const OPERATION_KEYS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_admin_route_requires_a_token() {
    let app = TestApp::start(Backend::Sqlite).await;
    // The document itself is public.
    let doc = app.send(Method::GET, "/admin/openapi.json", None, None).await.expect(200);
    let before = counts(&app).await;

    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().expect("the document has paths") {
        assert!(path.starts_with("/admin/v1/"), "{path}");
        for method in item.as_object().unwrap().keys().filter(|k| OPERATION_KEYS.contains(&k.as_str())) {
            let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
            let url = fill_template(path);
            let body = || Some(("application/json", b"{}".to_vec()));
            for (token, body) in [(None, None), (None, body()), (Some("not-a-token"), body()), (Some(""), None)] {
                let reply = app.send(method.clone(), &url, body, token).await;
                assert_eq!(reply.status, 401, "{method} {url} with token {token:?}: {}", reply.text());
                reply.problem(401);
                assert_eq!(reply.headers.get("www-authenticate").unwrap(), "Bearer", "{method} {url}");
            }
            // Another scheme carrying the real token is not a bearer token.
            let basic = app
                .client
                .request(method.clone(), format!("{}{url}", app.admin_url))
                .header("authorization", format!("Basic {}", app.token))
                .send()
                .await
                .unwrap();
            assert_eq!(basic.status(), 401, "{method} {url} with Basic");
            checked += 1;
        }
    }
    assert!(checked >= 40, "only {checked} operations documented");
    assert_eq!(counts(&app).await, before, "unauthenticated requests wrote something");

    // A revoked token is refused everywhere too.
    let created = app.post("/admin/v1/tokens", json!({"name": "short-lived"})).await.expect(201);
    let (id, secret) = (created["id"].as_str().unwrap(), created["token"].as_str().unwrap());
    app.send(Method::GET, "/admin/v1/apis", None, Some(secret)).await.expect(200);
    app.delete(&format!("/admin/v1/tokens/{id}")).await.expect(200);
    app.send(Method::GET, "/admin/v1/apis", None, Some(secret)).await.problem(401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_admin_paths_are_404_and_wrong_methods_405() {
    let app = TestApp::start(Backend::Sqlite).await;
    for path in ["/admin/v1/nope", "/admin/v2/apis", "/admin/v1/apis/x/y/z/w", "/admin", "/elsewhere"] {
        app.get(path).await.problem(404);
        app.send(Method::GET, path, None, None).await.problem(404);
    }
    for (method, path) in [
        (Method::DELETE, "/admin/v1/apis"),
        (Method::PUT, "/admin/v1/apis/x"),
        (Method::POST, "/admin/v1/apis/x/versions/v1"),
        (Method::GET, "/admin/v1/apis/x/versions/v1/publish"),
        (Method::POST, "/admin/openapi.json"),
    ] {
        let reply = app.send(method.clone(), path, None, Some(&app.token)).await;
        assert_eq!(reply.status, 405, "{method} {path}: {}", reply.text());
        reply.problem(405);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_docs_and_their_assets_are_served() {
    let app = TestApp::start(Backend::Sqlite).await;
    let page = app.send(Method::GET, "/admin/docs", None, None).await;
    assert_eq!(page.status, 200);
    let content_type = page.headers.get("content-type").unwrap().to_str().unwrap();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let html = page.text();
    let bundle = "/admin/static/vendor/swagger-ui/swagger-ui-bundle.js";
    assert!(html.contains(bundle), "{html}");

    for (asset, kind) in [
        (bundle, "javascript"),
        ("/admin/static/admin-docs.js", "javascript"),
        ("/admin/static/vendor/swagger-ui/swagger-ui.css", "text/css"),
    ] {
        assert!(html.contains(asset), "the page does not reference {asset}");
        let reply = app.send(Method::GET, asset, None, None).await;
        assert_eq!(reply.status, 200, "{asset}");
        let content_type = reply.headers.get("content-type").unwrap().to_str().unwrap();
        assert!(content_type.contains(kind), "{asset}: {content_type}");
        assert!(!reply.body.is_empty(), "{asset}");
    }
    app.send(Method::GET, "/admin/static/vendor/nope.js", None, None).await.problem(404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_413_says_whether_the_connection_lives_on() {
    let app = TestApp::start(Backend::Sqlite).await;
    app.post("/admin/v1/apis", json!({"name": "Pets", "slug": "pets"})).await.expect(201);
    let outcomes = [
        connection_survives_or_close_is_announced(&app, "POST", "/admin/v1/apis", "application/json").await,
        connection_survives_or_close_is_announced(
            &app,
            "PUT",
            "/admin/v1/apis/pets/versions/v1/openapi",
            "application/yaml",
        )
        .await,
    ];
    let failures: Vec<String> = outcomes.into_iter().filter_map(Result::err).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
