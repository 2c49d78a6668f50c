//! The catalogue and the interactive reference docs: `/apis` (search and tag filter,
//! a plain GET form), `/apis/{slug}` (versions, deprecation notices, plans) and
//! `/apis/{slug}/{version}/docs` (Swagger UI, vendored, over the version's stored
//! OpenAPI document served with the gateway as its server). Drafts never show: they
//! answer 404 like unknown addresses.

use askama::Template;
use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use turnpike_domain::model::QuotaPeriod;
use turnpike_store::apis::ApiRecord;
use turnpike_store::plans::PlanRecord;
use turnpike_store::portal::catalog::{self, CatalogApi, PublicVersion};

use crate::PortalState;
use crate::pages::{PageContext, PageError, encode_component, render};

pub(crate) fn routes() -> Router<PortalState> {
    Router::new()
        .route("/apis", get(list))
        .route("/apis/{slug}", get(show))
        .route("/apis/{slug}/{version}/docs", get(docs))
        .route("/apis/{slug}/{version}/openapi.json", get(document))
}

// ---- rules -----------------------------------------------------------------------

/// Whether `api` matches the search text: every word appears (case-insensitively) in
/// its name, description or tags.
pub fn matches(api: &ApiRecord, q: &str) -> bool {
    let haystack =
        format!("{}\n{}\n{}", api.input.name, api.input.description, api.input.tags.join("\n")).to_lowercase();
    q.split_whitespace().all(|word| haystack.contains(&word.to_lowercase()))
}

/// Whether `api` carries `tag` (case-insensitively).
pub fn has_tag(api: &ApiRecord, tag: &str) -> bool {
    api.input.tags.iter().any(|t| t.eq_ignore_ascii_case(tag))
}

/// Every tag of `apis`, sorted, once each (case-insensitively; the first spelling wins).
pub fn all_tags<'a>(apis: impl IntoIterator<Item = &'a ApiRecord>) -> Vec<String> {
    let mut tags: Vec<String> = Vec::new();
    for api in apis {
        for tag in &api.input.tags {
            if !tags.iter().any(|t| t.eq_ignore_ascii_case(tag)) {
                tags.push(tag.clone());
            }
        }
    }
    tags.sort_by_key(|t| t.to_lowercase());
    tags
}

/// The URL of a version at the gateway: the gateway's public URL and the base path.
pub fn gateway_url(gateway: &str, base_path: &str) -> String {
    format!("{}{base_path}", gateway.trim_end_matches('/'))
}

/// The document with the gateway as its only server, so "try it" calls go through the
/// gateway: `servers` for OpenAPI 3, `host`, `basePath` and `schemes` for Swagger 2.
pub fn with_gateway_server(mut document: serde_json::Value, gateway: &str, base_path: &str) -> serde_json::Value {
    let url = gateway_url(gateway, base_path);
    if let Some(object) = document.as_object_mut() {
        if object.contains_key("swagger") {
            let (scheme, authority) = gateway.split_once("://").unwrap_or(("http", gateway));
            object.insert("host".into(), authority.trim_end_matches('/').into());
            object.insert("basePath".into(), base_path.into());
            object.insert("schemes".into(), serde_json::json!([scheme]));
        } else {
            object.insert("servers".into(), serde_json::json!([{ "url": url, "description": "Turnpike gateway" }]));
        }
    }
    document
}

/// The docs page's Content-Security-Policy: everything from the portal itself, and
/// requests ("try it") to the gateway too.
pub fn docs_csp(gateway: &str) -> String {
    let origin = gateway.trim_end_matches('/');
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; \
         connect-src 'self' {origin}; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
}

// ---- view models ----------------------------------------------------------------

pub struct Card {
    pub slug: String,
    pub name: String,
    pub description: String,
    pub tags: Vec<String>,
    pub latest: Option<PublicVersion>,
}

pub struct TagLink {
    pub tag: String,
    pub href: String,
    pub current: bool,
}

pub struct PlanView {
    pub name: String,
    pub description: String,
    pub rate_limit: String,
    pub quota: String,
    pub requires_approval: bool,
}

fn plan_view(plan: PlanRecord) -> PlanView {
    let p = plan.input;
    let rate_limit = match p.rate_limit {
        Some(r) if r.per_seconds == 1 => format!("{} requests per second", r.requests),
        Some(r) if r.per_seconds == 60 => format!("{} requests per minute", r.requests),
        Some(r) => format!("{} requests per {} seconds", r.requests, r.per_seconds),
        None => "No rate limit".to_owned(),
    };
    let quota = match p.quota {
        Some(q) => {
            let period = match q.period {
                QuotaPeriod::Hour => "hour",
                QuotaPeriod::Day => "day",
                QuotaPeriod::Month => "month",
            };
            format!("{} requests per {period}", q.requests)
        }
        None => "No quota".to_owned(),
    };
    PlanView { name: p.name, description: p.description, rate_limit, quota, requires_approval: p.requires_approval }
}

// ---- pages ------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
struct Filters {
    #[serde(default)]
    q: String,
    #[serde(default)]
    tag: String,
}

#[derive(Template)]
#[template(path = "portal/catalog.html")]
struct CatalogPage {
    ctx: PageContext,
    q: String,
    tag: String,
    tags: Vec<TagLink>,
    cards: Vec<Card>,
    /// How many APIs the catalogue has at all (to tell "none yet" from "none match").
    total: usize,
}

async fn list(
    State(state): State<PortalState>,
    ctx: PageContext,
    Query(filters): Query<Filters>,
) -> Result<Response, PageError> {
    let apis = catalog::listed(state.store.db()).await?;
    let q = filters.q.trim().to_owned();
    let tag = filters.tag.trim().to_owned();
    let tags = all_tags(apis.iter().map(|a| &a.api))
        .into_iter()
        .map(|t| {
            let mut href = format!("/apis?tag={}", encode_component(&t));
            if !q.is_empty() {
                href.push_str(&format!("&q={}", encode_component(&q)));
            }
            TagLink { current: t.eq_ignore_ascii_case(&tag), tag: t, href }
        })
        .collect();
    let total = apis.len();
    let cards = apis
        .into_iter()
        .filter(|a| matches(&a.api, &q) && (tag.is_empty() || has_tag(&a.api, &tag)))
        .map(|a| Card {
            latest: a.latest().cloned(),
            slug: a.api.input.slug,
            name: a.api.input.name,
            description: a.api.input.description,
            tags: a.api.input.tags,
        })
        .collect();
    Ok(render(StatusCode::OK, &CatalogPage { ctx, q, tag, tags, cards, total }))
}

#[derive(Template)]
#[template(path = "portal/api.html")]
struct ApiPage {
    ctx: PageContext,
    api: CatalogApi,
    plans: Vec<PlanView>,
    gateway: String,
}

impl ApiPage {
    fn gateway_url(&self, version: &PublicVersion) -> String {
        gateway_url(&self.gateway, &version.base_path)
    }
}

async fn visible_api(state: &PortalState, slug: &str) -> Result<CatalogApi, PageError> {
    catalog::api(state.store.db(), slug).await?.ok_or_else(PageError::not_found)
}

async fn show(
    State(state): State<PortalState>,
    ctx: PageContext,
    Path(slug): Path<String>,
) -> Result<Response, PageError> {
    let api = visible_api(&state, &slug).await?;
    let plans = catalog::plans(state.store.db()).await?.into_iter().map(plan_view).collect();
    let gateway = state.settings.gateway_url.as_str().to_owned();
    Ok(render(StatusCode::OK, &ApiPage { ctx, api, plans, gateway }))
}

#[derive(Template)]
#[template(path = "portal/docs.html")]
struct DocsPage {
    ctx: PageContext,
    api: ApiRecord,
    version: PublicVersion,
    gateway_url: String,
}

async fn visible_version(
    state: &PortalState,
    slug: &str,
    label: &str,
) -> Result<(ApiRecord, PublicVersion), PageError> {
    let api = visible_api(state, slug).await?;
    let version = api.versions.into_iter().find(|v| v.label == label).ok_or_else(PageError::not_found)?;
    Ok((api.api, version))
}

async fn docs(
    State(state): State<PortalState>,
    ctx: PageContext,
    Path((slug, label)): Path<(String, String)>,
) -> Result<Response, PageError> {
    let (api, version) = visible_version(&state, &slug, &label).await?;
    let gateway = state.settings.gateway_url.as_str();
    let gateway_url = gateway_url(gateway, &version.base_path);
    let mut response = render(StatusCode::OK, &DocsPage { ctx, api, version, gateway_url });
    if let Ok(csp) = HeaderValue::from_str(&docs_csp(gateway)) {
        response.headers_mut().insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    Ok(response)
}

async fn document(
    State(state): State<PortalState>,
    Path((slug, label)): Path<(String, String)>,
) -> Result<Response, PageError> {
    let (_, version) = visible_version(&state, &slug, &label).await?;
    let document = catalog::document(state.store.db(), &version.id).await?.ok_or_else(PageError::not_found)?;
    let served = with_gateway_server(document, state.settings.gateway_url.as_str(), &version.base_path);
    Ok(Json(served).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use turnpike_store::apis::ApiInput;

    fn api(name: &str, description: &str, tags: &[&str]) -> ApiRecord {
        ApiRecord {
            id: "id".into(),
            input: ApiInput {
                name: name.into(),
                slug: "slug".into(),
                description: description.into(),
                tags: tags.iter().map(|t| (*t).to_owned()).collect(),
                owner: None,
                versioning: Default::default(),
            },
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn search_matches_name_description_and_tags() {
        let a = api("Weather Forecasts", "Hourly data for any city", &["Geo", "climate"]);
        assert!(matches(&a, ""));
        assert!(matches(&a, "weather"));
        assert!(matches(&a, "HOURLY city"));
        assert!(matches(&a, "geo"));
        assert!(!matches(&a, "weather payments"));
        assert!(has_tag(&a, "CLIMATE"));
        assert!(!has_tag(&a, "clim"));
    }

    #[test]
    fn tags_are_listed_once_sorted() {
        let a = api("A", "", &["beta", "Alpha"]);
        let b = api("B", "", &["alpha", "gamma"]);
        assert_eq!(all_tags([&a, &b]), vec!["Alpha", "beta", "gamma"]);
    }

    #[test]
    fn the_gateway_becomes_the_only_server() {
        let doc = serde_json::json!({"openapi": "3.0.3", "servers": [{"url": "https://upstream.internal"}]});
        let served = with_gateway_server(doc, "https://api.example.com/", "/pets/v1");
        assert_eq!(
            served["servers"],
            serde_json::json!([{"url": "https://api.example.com/pets/v1", "description": "Turnpike gateway"}])
        );
        let doc = serde_json::json!({"swagger": "2.0", "host": "upstream.internal"});
        let served = with_gateway_server(doc, "http://127.0.0.1:8000", "/pets/v1");
        assert_eq!(served["host"], "127.0.0.1:8000");
        assert_eq!(served["basePath"], "/pets/v1");
        assert_eq!(served["schemes"], serde_json::json!(["http"]));
    }

    #[test]
    fn the_docs_csp_allows_only_the_portal_and_the_gateway() {
        let csp = docs_csp("https://api.example.com");
        assert!(csp.contains("script-src 'self';"));
        assert!(csp.contains("connect-src 'self' https://api.example.com;"));
        assert!(!csp.contains("unsafe"));
    }
}
