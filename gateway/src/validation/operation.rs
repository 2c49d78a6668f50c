//! From a version's OpenAPI document to what each of its routes checks: the
//! operation at the route's path template and method, with its parameters (the path
//! item's merged with the operation's, which win) and its request body. Compiled
//! once per snapshot; every schema of the document is compiled once, however many
//! operations use it.

use std::collections::HashMap;
use std::sync::Arc;

use http::Method;
use serde_json::{Map, Value};
use turnpike_domain::snapshot::{SnapshotRoute, SnapshotVersion};

use super::params::{In, Param, Template};
use super::schema::{Compiler, NodeId, Schemas};

const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/// A version's request validation: the operation of each route and method.
#[derive(Debug)]
pub struct Validator {
    routes: HashMap<String, Vec<(Method, Arc<Operation>)>>,
}

/// What one operation checks.
#[derive(Debug)]
pub struct Operation {
    pub(super) schemas: Arc<Schemas>,
    pub(super) template: Template,
    pub(super) params: Vec<Param>,
    pub(super) body: Option<RequestBody>,
}

/// An operation's `requestBody`.
#[derive(Debug)]
pub struct RequestBody {
    pub required: bool,
    pub media: Vec<Media>,
}

/// One entry of a request body's `content`.
#[derive(Debug)]
pub struct Media {
    /// The media type or range, lower-case without parameters: `application/json`,
    /// `image/*`, `*/*`.
    pub range: String,
    /// The schema, kept for JSON media types only (the only ones checked).
    pub schema: Option<NodeId>,
}

impl RequestBody {
    /// The entry for a request's media type (lower-case, without parameters): an
    /// exact match, else `type/*`, else `*/*`.
    pub fn select(&self, essence: &str) -> Option<&Media> {
        let main = essence.split('/').next().unwrap_or_default();
        self.media
            .iter()
            .find(|m| m.range == essence)
            .or_else(|| self.media.iter().find(|m| m.range.strip_suffix("/*").is_some_and(|t| t == main)))
            .or_else(|| self.media.iter().find(|m| m.range == "*/*"))
    }

    /// The accepted media types, for a 415's message.
    pub fn accepted(&self) -> String {
        self.media.iter().map(|m| m.range.as_str()).collect::<Vec<_>>().join(", ")
    }
}

impl Validator {
    /// Compiles a version's validation; `None` unless its policies ask for it and
    /// the snapshot carries its document. Whatever cannot be compiled is logged and
    /// left unchecked: the control plane accepted the document, and refusing valid
    /// requests would be worse than letting some unchecked ones through.
    pub fn compile(version: &SnapshotVersion) -> Option<Validator> {
        if !version.policies.validate_requests {
            return None;
        }
        let Some(document) = &version.openapi else {
            tracing::warn!(version = %version.id, "request validation is on but the version has no OpenAPI document");
            return None;
        };
        let mut compiler = Compiler::new(document);
        // The gateway takes the API key off the request before validation; a document
        // declaring it as a parameter must not then find it missing.
        let consumed: Vec<(In, String)> = version
            .policies
            .key_auth
            .iter()
            .flat_map(|auth| {
                let query = auth.query.iter().map(|name| (In::Query, name.clone()));
                query.chain([(In::Header, auth.header.to_ascii_lowercase())])
            })
            .collect();
        // Operations by (path template, method), each compiled once.
        let mut compiled: Vec<Compiled> = Vec::new();
        let mut index: HashMap<(&str, &str), usize> = HashMap::new();
        let mut routes: Vec<(&str, Vec<(Method, usize)>)> = Vec::new();
        for route in &version.routes {
            let Some((template, item)) = path_item(document, route, &mut compiler) else {
                tracing::debug!(version = %version.id, route = %route.id, path = %route.spec.path,
                    "no operation of the document describes this route; its requests are not validated");
                continue;
            };
            let mut methods = Vec::new();
            for method in METHODS {
                let wanted =
                    route.spec.methods.is_empty() || route.spec.methods.iter().any(|m| m.eq_ignore_ascii_case(method));
                let Some(operation) = item.get(method).filter(|_| wanted) else { continue };
                let at = *index.entry((template, method)).or_insert_with(|| {
                    compiled.push(Compiled::new(template, item, operation, &consumed, &mut compiler));
                    compiled.len() - 1
                });
                let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).expect("a standard method");
                methods.push((method, at));
            }
            routes.push((&route.id, methods));
        }
        let (schemas, problems) = compiler.finish();
        for problem in problems {
            tracing::warn!(version = %version.id, %problem, "part of the OpenAPI document is not validated");
        }
        let schemas = Arc::new(schemas);
        let operations: Vec<Arc<Operation>> = compiled
            .into_iter()
            .map(|c| {
                Arc::new(Operation { schemas: schemas.clone(), template: c.template, params: c.params, body: c.body })
            })
            .collect();
        let routes = routes
            .into_iter()
            .map(|(id, methods)| {
                (id.to_owned(), methods.into_iter().map(|(m, at)| (m, operations[at].clone())).collect())
            })
            .collect();
        Some(Validator { routes })
    }

    /// The operation a request matched to `route_id` with `method` runs, if the
    /// document describes it.
    pub fn operation(&self, route_id: &str, method: &Method) -> Option<Arc<Operation>> {
        self.routes.get(route_id)?.iter().find(|(m, _)| m == method).map(|(_, op)| op.clone())
    }
}

/// The path item describing a route: the one under the route's path, else one
/// whose template differs only in parameter names.
fn path_item<'d>(
    document: &'d Value,
    route: &SnapshotRoute,
    compiler: &mut Compiler<'d>,
) -> Option<(&'d str, &'d Map<String, Value>)> {
    let paths = document.get("paths")?.as_object()?;
    let (template, item) = paths.get_key_value(&route.spec.path).or_else(|| {
        let shape = template_shape(&route.spec.path);
        paths.iter().find(|(template, _)| template_shape(template) == shape)
    })?;
    Some((template.as_str(), compiler.resolve(item)?.as_object()?))
}

/// The path with every template name erased: `/pets/{id}` → `/pets/{}`.
fn template_shape(path: &str) -> String {
    path.split('/').map(|s| if s.starts_with('{') && s.ends_with('}') { "{}" } else { s }).collect::<Vec<_>>().join("/")
}

/// An operation before the document's schemas are finished.
struct Compiled {
    template: Template,
    params: Vec<Param>,
    body: Option<RequestBody>,
}

impl Compiled {
    fn new<'d>(
        template: &str,
        item: &'d Map<String, Value>,
        operation: &'d Value,
        consumed: &[(In, String)],
        compiler: &mut Compiler<'d>,
    ) -> Compiled {
        let mut params: Vec<Param> = Vec::new();
        let declared = [item.get("parameters"), operation.get("parameters")];
        for param in declared.into_iter().flatten().filter_map(Value::as_array).flatten() {
            let Some(param) = compiler.resolve(param) else { continue };
            match Param::compile(param, compiler) {
                Ok(Some(param)) if consumed.contains(&param.key()) => {}
                Ok(Some(param)) => match params.iter_mut().find(|p| p.key() == param.key()) {
                    Some(earlier) => *earlier = param,
                    None => params.push(param),
                },
                Ok(None) => {}
                Err(problem) => compiler.problems.push(format!("{template}: {problem}")),
            }
        }
        let body = operation.get("requestBody").and_then(|b| compiler.resolve(b)).map(|body| {
            let content = body.get("content").and_then(Value::as_object);
            let media = content
                .into_iter()
                .flatten()
                .map(|(media_type, media)| {
                    let range = essence(media_type);
                    let schema = media.get("schema").filter(|_| super::is_json(&range)).map(|s| compiler.schema(s));
                    Media { range, schema }
                })
                .collect();
            RequestBody { required: body.get("required") == Some(&Value::Bool(true)), media }
        });
        Compiled { template: Template::parse(template), params, body }
    }
}

/// A media type without parameters, lower-case: `Application/JSON; charset=utf-8`
/// → `application/json`.
pub fn essence(media_type: &str) -> String {
    media_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use turnpike_domain::model::{RouteSpec, VersionState};
    use turnpike_domain::policy::{KeyAuth, Policies};

    use super::*;

    fn route(id: &str, methods: &[&str], path: &str) -> SnapshotRoute {
        SnapshotRoute {
            id: id.into(),
            spec: RouteSpec {
                name: None,
                methods: methods.iter().map(|m| m.to_string()).collect(),
                path: path.into(),
                host: None,
                headers: Default::default(),
            },
        }
    }

    fn version(document: Option<Value>, validate: bool, routes: Vec<SnapshotRoute>) -> SnapshotVersion {
        SnapshotVersion {
            id: "v1".into(),
            api_id: "api".into(),
            api_slug: "pets".into(),
            label: "v1".into(),
            state: VersionState::Published,
            base_path: "/pets/v1".into(),
            upstream_id: None,
            sunset_at: None,
            deprecated_at: None,
            successor_base_path: None,
            routes,
            policies: Policies { validate_requests: validate, ..Default::default() },
            openapi: document,
            docs_headers: Vec::new(),
        }
    }

    fn document() -> Value {
        json!({
            "openapi": "3.0.3",
            "paths": {
                "/pets/{petId}": {
                    "parameters": [
                        {"name": "petId", "in": "path", "required": true, "schema": {"type": "string"}},
                        {"$ref": "#/components/parameters/Tenant"},
                    ],
                    "get": {"parameters": [{"name": "petId", "in": "path", "required": true,
                                            "schema": {"type": "integer"}}]},
                    "put": {"requestBody": {"$ref": "#/components/requestBodies/Pet"}},
                },
                "/things": {"$ref": "#/components/pathItems/Things"},
            },
            "components": {
                "parameters": {"Tenant": {"name": "X-Tenant", "in": "header", "schema": {"type": "string"}}},
                "requestBodies": {"Pet": {"required": true, "content": {
                    "application/json; charset=utf-8": {"schema": {"type": "object"}},
                    "image/*": {"schema": {"type": "string", "format": "binary"}},
                }}},
                "pathItems": {"Things": {"post": {}}},
            },
        })
    }

    #[test]
    fn routes_find_their_operations_by_template_and_method() {
        let v = version(
            Some(document()),
            true,
            vec![
                route("get", &["GET"], "/pets/{petId}"),
                route("any", &[], "/pets/{id}"),
                route("things", &["post"], "/things"),
                route("elsewhere", &[], "/*"),
            ],
        );
        let validator = Validator::compile(&v).unwrap();
        let get = validator.operation("get", &Method::GET).unwrap();
        assert!(validator.operation("get", &Method::PUT).is_none(), "the route does not take PUT");
        assert!(Arc::ptr_eq(&get, &validator.operation("any", &Method::GET).unwrap()), "compiled once");
        assert!(validator.operation("any", &Method::PUT).is_some());
        assert!(validator.operation("any", &Method::DELETE).is_none(), "not in the document");
        assert!(validator.operation("things", &Method::POST).is_some(), "path item references resolve");
        assert!(validator.operation("elsewhere", &Method::GET).is_none());
        assert!(validator.operation("nope", &Method::GET).is_none());

        // The operation's `petId` replaces the path item's; the header comes from the path item.
        let names: Vec<(&str, &str)> = get.params.iter().map(|p| (p.location.as_str(), p.name.as_str())).collect();
        assert_eq!(names, [("path", "petId"), ("header", "X-Tenant")]);
        let types: Vec<_> = get.params.iter().map(|p| format!("{p:?}")).collect();
        assert!(types[0].contains("Scalar(Types(32))"), "integer, from the operation: {types:?}");
    }

    #[test]
    fn request_bodies_resolve_and_select_media_types() {
        let v = version(Some(document()), true, vec![route("put", &["PUT"], "/pets/{petId}")]);
        let put = Validator::compile(&v).unwrap().operation("put", &Method::PUT).unwrap();
        let body = put.body.as_ref().unwrap();
        assert!(body.required);
        assert_eq!(body.accepted(), "application/json, image/*");
        assert!(body.select("application/json").unwrap().schema.is_some());
        let image = body.select("image/png").unwrap();
        assert_eq!((image.range.as_str(), image.schema), ("image/*", None), "only JSON schemas are kept");
        assert!(body.select("text/plain").is_none());
        assert_eq!(essence(" Application/JSON ; charset=UTF-8"), "application/json");
    }

    #[test]
    fn api_key_parameters_are_not_checked_since_the_gateway_consumes_them() {
        let document = json!({"openapi": "3.0.3", "paths": {"/pets": {"get": {"parameters": [
            {"name": "X-API-Key", "in": "header", "required": true, "schema": {"type": "string"}},
            {"name": "api_key", "in": "query", "required": true, "schema": {"type": "string"}},
            {"name": "limit", "in": "query", "schema": {"type": "integer"}},
        ]}}}});
        let mut v = version(Some(document), true, vec![route("list", &["GET"], "/pets")]);
        let names = |v: &SnapshotVersion| -> Vec<String> {
            let op = Validator::compile(v).unwrap().operation("list", &Method::GET).unwrap();
            op.params.iter().map(|p| p.name.clone()).collect()
        };
        assert_eq!(names(&v), ["X-API-Key", "api_key", "limit"]);
        v.policies.key_auth = Some(KeyAuth { header: "x-api-key".into(), query: Some("api_key".into()) });
        assert_eq!(names(&v), ["limit"]);
    }

    #[test]
    fn validation_needs_the_policy_and_a_document() {
        let routes = || vec![route("get", &["GET"], "/pets/{petId}")];
        assert!(Validator::compile(&version(Some(document()), false, routes())).is_none());
        assert!(Validator::compile(&version(None, true, routes())).is_none());
        assert!(Validator::compile(&version(Some(json!({"openapi": "3.1.0"})), true, routes())).is_some());
    }
}
