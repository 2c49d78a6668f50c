//! Applications, subscriptions and API keys of the signed-in developer. Every id in
//! a path is looked up through the developer's own applications, so anyone else's
//! application, key or subscription answers 404, never 403. Writes go through the
//! shared [`Publisher`](turnpike_store::publish::Publisher): a new key works at the
//! gateway at once and a revoked one stops.

use std::collections::HashMap;

use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use tower_sessions::Session;
use turnpike_domain::model::VersionState;
use turnpike_store::applications::{self, ApplicationInput, ApplicationRecord};
use turnpike_store::entities;
use turnpike_store::keys::{self, CreatedKey, KeyInput, KeyRecord};
use turnpike_store::subscriptions::{self, SubscriptionFilter, SubscriptionInput, SubscriptionRecord};
use turnpike_store::{Actor, PageParams, StoreError, apis, plans, versions};

use crate::PortalState;
use crate::csrf::CsrfForm;
use crate::pages::{FieldErrors, FlashKind, FormContext, PageContext, PageError, SignedIn, flash, render};

pub(crate) fn routes() -> Router<PortalState> {
    Router::new()
        .route("/apps", get(apps_page).post(create_app))
        .route("/apps/{id}", get(app_page))
        .route("/apps/{id}/edit", post(edit_app))
        .route("/apps/{id}/delete", post(delete_app))
        .route("/apps/{id}/subscriptions", post(subscribe))
        .route("/apps/{id}/keys", post(create_key))
        .route("/apps/{id}/keys/{key}/rotate", post(rotate_key))
        .route("/apps/{id}/keys/{key}/revoke", post(revoke_key))
}

/// The largest list a page shows.
const ALL: PageParams = PageParams { page: 1, per_page: 200 };

/// Grace periods offered when a key is rotated, in seconds, with their labels.
pub const GRACE_PERIODS: &[(i64, &str)] =
    &[(0, "None: the old key stops now"), (3600, "1 hour"), (86_400, "24 hours"), (604_800, "7 days")];

fn actor(developer_id: &str) -> Actor {
    Actor(format!("developer:{developer_id}"))
}

/// The application `id` if it belongs to `developer_id`; 404 otherwise, exactly as
/// for an id that does not exist.
async fn own_app(
    state: &PortalState,
    developer_id: &str,
    id: &str,
) -> Result<entities::applications::Model, PageError> {
    match applications::find(state.store.db(), id).await {
        Ok(app) if app.developer_id == developer_id => Ok(app),
        Ok(_) | Err(StoreError::NotFound { .. }) => Err(PageError::not_found()),
        Err(e) => Err(e.into()),
    }
}

/// What a key's row shows as its state.
pub fn key_state(key: &KeyRecord, now: DateTime<Utc>) -> &'static str {
    match (key.revoked_at, key.expires_at) {
        (Some(_), _) => "revoked",
        (None, Some(at)) if at <= now => "expired",
        (None, Some(_)) => "expiring",
        (None, None) => "active",
    }
}

/// Parses the optional expiry date of the key form (`YYYY-MM-DD`, the key stops at
/// 00:00 UTC that day). It must be a later day than today.
pub fn parse_expiry(value: &str, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, &'static str> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    let date = NaiveDate::parse_from_str(value, "%Y-%m-%d").map_err(|_| "Enter a date like 2030-12-31.")?;
    let at = date.and_hms_opt(0, 0, 0).map(|t| t.and_utc()).ok_or("Enter a date like 2030-12-31.")?;
    if at <= now {
        return Err("The date must be after today.");
    }
    Ok(Some(at))
}

/// The old key's new expiry when it is rotated with `grace_seconds` of grace: never
/// later than the expiry it already had. `None` means revoke it now.
pub fn rotated_expiry(current: Option<DateTime<Utc>>, grace_seconds: i64, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if grace_seconds <= 0 {
        return None;
    }
    let end = now + chrono::Duration::seconds(grace_seconds);
    Some(current.map_or(end, |at| at.min(end)))
}

/// How a key is recognised on pages: its tag and stored prefix (`tpk_ab12cd34`).
fn shown_prefix(prefix: &str) -> String {
    format!("tpk_{prefix}")
}

fn format_time(at: &DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

// ---------------------------------------------------------------- list and create

#[derive(Debug, Default, Deserialize)]
struct AppForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
}

#[derive(Template)]
#[template(path = "portal/apps.html")]
struct AppsPage {
    ctx: PageContext,
    apps: Vec<ApplicationRecord>,
    name: String,
    description: String,
    errors: FieldErrors,
}

async fn list_apps(state: &PortalState, developer_id: &str) -> Result<Vec<ApplicationRecord>, PageError> {
    Ok(applications::list(state.store.db(), Some(developer_id), ALL).await?.items)
}

async fn apps_page(
    State(state): State<PortalState>,
    SignedIn(viewer): SignedIn,
    FormContext(ctx): FormContext,
) -> Result<Response, PageError> {
    let apps = list_apps(&state, &viewer.id).await?;
    let page = AppsPage { ctx, apps, name: String::new(), description: String::new(), errors: FieldErrors::default() };
    Ok(render(StatusCode::OK, &page))
}

/// Moves the store's validation messages next to the form's fields.
fn field_errors(e: StoreError, fields: &[&str], fallback: &str) -> Result<FieldErrors, PageError> {
    let mut errors = FieldErrors::default();
    match e {
        StoreError::Invalid(list) => {
            for error in list {
                let field = if fields.contains(&error.field.as_str()) { error.field.as_str() } else { fallback };
                errors.add(field, capitalised(&error.message));
            }
        }
        StoreError::Conflict(message) => errors.add(fallback, capitalised(&message)),
        other => return Err(other.into()),
    }
    Ok(errors)
}

fn capitalised(message: &str) -> String {
    let mut chars = message.chars();
    let mut out: String = chars.next().map(|c| c.to_uppercase().collect()).unwrap_or_default();
    out.push_str(chars.as_str());
    if !out.ends_with('.') {
        out.push('.');
    }
    out
}

async fn create_app(
    State(state): State<PortalState>,
    SignedIn(viewer): SignedIn,
    FormContext(ctx): FormContext,
    session: Session,
    CsrfForm(form): CsrfForm<AppForm>,
) -> Result<Response, PageError> {
    let input = ApplicationInput {
        developer_id: viewer.id.clone(),
        name: form.name.trim().to_owned(),
        description: form.description.trim().to_owned(),
    };
    let change = state.store.change(&actor(&viewer.id)).await?;
    let created = match applications::create(&change, input).await {
        Ok(created) => created,
        Err(e) => {
            drop(change);
            let errors = field_errors(e, &["name", "description"], "name")?;
            let apps = list_apps(&state, &viewer.id).await?;
            let page = AppsPage { ctx, apps, name: form.name, description: form.description, errors };
            return Ok(render(StatusCode::BAD_REQUEST, &page));
        }
    };
    state.publisher.commit(change).await?;
    flash(&session, FlashKind::Success, format!("Application “{}” created.", created.input.name)).await?;
    Ok(Redirect::to(&format!("/apps/{}", created.id)).into_response())
}

// ---------------------------------------------------------------- one application

/// The settings form (its fields are named apart from the key form's on the same page).
#[derive(Debug, Default, Deserialize)]
struct EditForm {
    #[serde(default, rename = "app-name")]
    name: String,
    #[serde(default, rename = "app-description")]
    description: String,
}

/// Renames an application or changes its description.
async fn edit_app(
    State(state): State<PortalState>,
    SignedIn(viewer): SignedIn,
    FormContext(ctx): FormContext,
    session: Session,
    Path(id): Path<String>,
    CsrfForm(form): CsrfForm<EditForm>,
) -> Result<Response, PageError> {
    let app = own_app(&state, &viewer.id, &id).await?;
    let patch = serde_json::json!({ "name": form.name.trim(), "description": form.description.trim() });
    let change = state.store.change(&actor(&viewer.id)).await?;
    if let Err(e) = applications::patch(&change, &app.id, &patch).await {
        drop(change);
        let settings_errors = field_errors(e, &["name", "description"], "name")?;
        let settings = AppForm { name: form.name, description: form.description };
        let page = AppPage { settings, settings_errors, ..AppPage::load(&state, ctx, &app).await? };
        return Ok(render(StatusCode::BAD_REQUEST, &page));
    }
    state.publisher.commit(change).await?;
    flash(&session, FlashKind::Success, "Application settings saved.").await?;
    Ok(Redirect::to(&format!("/apps/{}", app.id)).into_response())
}

/// A form whose checkbox confirms something that cannot be undone (`confirm=yes`).
#[derive(Debug, Default, Deserialize)]
struct ConfirmForm {
    #[serde(default)]
    confirm: String,
}

/// Deletes an application with its subscriptions and keys (they stop working at once).
async fn delete_app(
    State(state): State<PortalState>,
    SignedIn(viewer): SignedIn,
    session: Session,
    Path(id): Path<String>,
    CsrfForm(form): CsrfForm<ConfirmForm>,
) -> Result<Response, PageError> {
    let app = own_app(&state, &viewer.id, &id).await?;
    if form.confirm != "yes" {
        flash(&session, FlashKind::Error, "Tick the box to confirm deleting the application.").await?;
        return Ok(Redirect::to(&format!("/apps/{}", app.id)).into_response());
    }
    let change = state.store.change(&actor(&viewer.id)).await?;
    applications::delete(&change, &app.id).await?;
    state.publisher.commit(change).await?;
    let text = format!("Application “{}” deleted; its keys no longer work.", app.name);
    flash(&session, FlashKind::Success, text).await?;
    Ok(Redirect::to("/apps").into_response())
}

/// A published version that takes new subscriptions, as the subscribe form lists it.
pub struct VersionChoice {
    pub id: String,
    pub label: String,
}

/// A subscription with the names a person recognises.
pub struct SubscriptionRow {
    pub version: String,
    pub plan: String,
    pub state: &'static str,
    pub created: String,
}

/// A key without its secret.
pub struct KeyRow {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub created: String,
    pub expires: String,
    pub state: &'static str,
    pub live: bool,
}

pub struct PlanChoice {
    pub id: String,
    pub label: String,
}

#[derive(Debug, Default, Deserialize)]
struct SubscribeForm {
    #[serde(default)]
    version_id: String,
    #[serde(default)]
    plan_id: String,
}

#[derive(Debug, Default, Deserialize)]
struct KeyForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    expires_on: String,
}

#[derive(Template)]
#[template(path = "portal/app.html")]
struct AppPage {
    ctx: PageContext,
    app: ApplicationRecord,
    subscriptions: Vec<SubscriptionRow>,
    versions: Vec<VersionChoice>,
    plans: Vec<PlanChoice>,
    keys: Vec<KeyRow>,
    grace_periods: &'static [(i64, &'static str)],
    subscribe: SubscribeFormValues,
    key: KeyFormValues,
    subscribe_errors: FieldErrors,
    key_errors: FieldErrors,
    /// The settings form's values (the application's own until a failed edit).
    settings: AppForm,
    settings_errors: FieldErrors,
}

#[derive(Default)]
struct SubscribeFormValues {
    version_id: String,
    plan_id: String,
}

#[derive(Default)]
struct KeyFormValues {
    name: String,
    expires_on: String,
}

impl AppPage {
    async fn load(
        state: &PortalState,
        ctx: PageContext,
        app: &entities::applications::Model,
    ) -> Result<AppPage, PageError> {
        let db = state.store.db();
        let now = Utc::now();
        // Every version by id (for the subscriptions' names), and the published ones
        // that take new subscriptions.
        let mut version_names: HashMap<String, String> = HashMap::new();
        let mut choices = Vec::new();
        for api in apis::list(db, ALL).await?.items {
            let model = apis::find(db, &api.id).await?;
            for v in versions::list(db, &model, None, ALL).await?.items {
                let label = format!("{} {}", api.input.name, v.label);
                if v.state == VersionState::Published {
                    choices.push(VersionChoice { id: v.id.clone(), label: label.clone() });
                }
                version_names.insert(v.id, label);
            }
        }
        let all_plans = plans::list(db, ALL).await?.items;
        let plan_names: HashMap<&str, &str> =
            all_plans.iter().map(|p| (p.id.as_str(), p.input.name.as_str())).collect();
        let filter = SubscriptionFilter { application_id: Some(app.id.clone()), ..SubscriptionFilter::default() };
        let subscriptions = subscriptions::list(db, &filter, ALL)
            .await?
            .items
            .into_iter()
            .map(|s: SubscriptionRecord| SubscriptionRow {
                version: version_names.get(&s.version_id).cloned().unwrap_or_else(|| s.version_id.clone()),
                plan: plan_names.get(s.plan_id.as_str()).map_or_else(|| s.plan_id.clone(), |n| (*n).to_owned()),
                state: s.state.as_str(),
                created: format_time(&s.created_at),
            })
            .collect();
        let plans = all_plans
            .iter()
            .map(|p| PlanChoice {
                id: p.id.clone(),
                label: if p.input.requires_approval {
                    format!("{} (needs approval)", p.input.name)
                } else {
                    p.input.name.clone()
                },
            })
            .collect();
        let keys = keys::list(db, app, ALL)
            .await?
            .items
            .into_iter()
            .rev()
            .map(|k| KeyRow {
                state: key_state(&k, now),
                live: k.revoked_at.is_none() && k.expires_at.is_none_or(|at| at > now),
                id: k.id,
                name: k.name,
                prefix: shown_prefix(&k.prefix),
                created: format_time(&k.created_at),
                expires: k.expires_at.as_ref().map_or_else(|| "never".to_owned(), format_time),
            })
            .collect();
        let record = applications::get(db, &app.id).await?;
        Ok(AppPage {
            ctx,
            settings: AppForm { name: record.input.name.clone(), description: record.input.description.clone() },
            settings_errors: FieldErrors::default(),
            app: record,
            subscriptions,
            versions: choices,
            plans,
            keys,
            grace_periods: GRACE_PERIODS,
            subscribe: SubscribeFormValues::default(),
            key: KeyFormValues::default(),
            subscribe_errors: FieldErrors::default(),
            key_errors: FieldErrors::default(),
        })
    }
}

async fn app_page(
    State(state): State<PortalState>,
    SignedIn(viewer): SignedIn,
    FormContext(ctx): FormContext,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let app = own_app(&state, &viewer.id, &id).await?;
    Ok(render(StatusCode::OK, &AppPage::load(&state, ctx, &app).await?))
}

async fn subscribe(
    State(state): State<PortalState>,
    SignedIn(viewer): SignedIn,
    FormContext(ctx): FormContext,
    session: Session,
    Path(id): Path<String>,
    CsrfForm(form): CsrfForm<SubscribeForm>,
) -> Result<Response, PageError> {
    let app = own_app(&state, &viewer.id, &id).await?;
    let mut errors = FieldErrors::default();
    if form.version_id.is_empty() {
        errors.add("version_id", "Choose an API version.");
    }
    if form.plan_id.is_empty() {
        errors.add("plan_id", "Choose a plan.");
    }
    if errors.is_empty() {
        let change = state.store.change(&actor(&viewer.id)).await?;
        let input = SubscriptionInput {
            application_id: app.id.clone(),
            version_id: form.version_id.clone(),
            plan_id: form.plan_id.clone(),
        };
        match subscriptions::create(&change, input).await {
            Ok(created) => {
                state.publisher.commit(change).await?;
                let text = match created.state {
                    turnpike_domain::model::SubscriptionState::Pending => {
                        "Subscription requested. It is pending until the API's owner approves it."
                    }
                    _ => "Subscribed. The application's keys can call this API now.",
                };
                flash(&session, FlashKind::Success, text).await?;
                return Ok(Redirect::to(&format!("/apps/{}", app.id)).into_response());
            }
            Err(e) => {
                drop(change);
                errors = field_errors(e, &["version_id", "plan_id"], "version_id")?;
            }
        }
    }
    let page = AppPage {
        subscribe: SubscribeFormValues { version_id: form.version_id, plan_id: form.plan_id },
        subscribe_errors: errors,
        ..AppPage::load(&state, ctx, &app).await?
    };
    Ok(render(StatusCode::BAD_REQUEST, &page))
}

// ---------------------------------------------------------------- keys

#[derive(Template)]
#[template(path = "portal/key_created.html")]
struct KeyCreatedPage {
    ctx: PageContext,
    app: ApplicationRecord,
    key: CreatedKey,
    expires: String,
    /// For a rotation: what happens to the old key.
    rotated: Option<String>,
}

async fn create_key(
    State(state): State<PortalState>,
    SignedIn(viewer): SignedIn,
    FormContext(ctx): FormContext,
    Path(id): Path<String>,
    CsrfForm(form): CsrfForm<KeyForm>,
) -> Result<Response, PageError> {
    let app = own_app(&state, &viewer.id, &id).await?;
    let mut errors = FieldErrors::default();
    let expires_at = parse_expiry(&form.expires_on, Utc::now()).unwrap_or_else(|message| {
        errors.add("expires_on", message);
        None
    });
    if errors.is_empty() {
        let change = state.store.change(&actor(&viewer.id)).await?;
        match keys::create(&change, &state.hasher, &app, KeyInput { name: form.name.trim().to_owned(), expires_at })
            .await
        {
            Ok(created) => {
                state.publisher.commit(change).await?;
                let page = KeyCreatedPage {
                    ctx,
                    app: applications::get(state.store.db(), &app.id).await?,
                    expires: created.record.expires_at.as_ref().map_or_else(|| "never".to_owned(), format_time),
                    key: created,
                    rotated: None,
                };
                return Ok(render(StatusCode::OK, &page));
            }
            Err(e) => {
                drop(change);
                errors = field_errors(e, &["name", "expires_at"], "name")?;
                if let Some(message) = errors.get("expires_at").map(str::to_owned) {
                    errors.add("expires_on", message);
                }
            }
        }
    }
    let page = AppPage {
        key: KeyFormValues { name: form.name, expires_on: form.expires_on },
        key_errors: errors,
        ..AppPage::load(&state, ctx, &app).await?
    };
    Ok(render(StatusCode::BAD_REQUEST, &page))
}

#[derive(Debug, Default, Deserialize)]
struct RotateForm {
    #[serde(default)]
    grace: String,
}

async fn rotate_key(
    State(state): State<PortalState>,
    SignedIn(viewer): SignedIn,
    FormContext(ctx): FormContext,
    Path((id, key_id)): Path<(String, String)>,
    CsrfForm(form): CsrfForm<RotateForm>,
) -> Result<Response, PageError> {
    let app = own_app(&state, &viewer.id, &id).await?;
    let old = keys::get(state.store.db(), &app, &key_id).await?;
    let grace = form
        .grace
        .parse::<i64>()
        .ok()
        .filter(|g| GRACE_PERIODS.iter().any(|(s, _)| s == g))
        .ok_or_else(|| PageError::bad_request("Choose how long the old key keeps working."))?;
    let now = Utc::now();
    if key_state(&old, now) == "revoked" || key_state(&old, now) == "expired" {
        return Err(PageError::new(
            StatusCode::CONFLICT,
            "This key no longer works",
            "A revoked or expired key cannot be rotated. Create a new key instead.",
        ));
    }
    let change = state.store.change(&actor(&viewer.id)).await?;
    // The new key keeps the old one's name and any expiry it had.
    let input = KeyInput { name: old.name.clone(), expires_at: old.expires_at };
    let created = keys::create(&change, &state.hasher, &app, input).await?;
    let rotated = match rotated_expiry(old.expires_at, grace, now) {
        None => {
            keys::revoke(&change, &app, &old.id).await?;
            format!("The old key {}… is revoked.", shown_prefix(&old.prefix))
        }
        Some(at) => {
            if Some(at) != old.expires_at {
                let patch = serde_json::json!({ "expires_at": at });
                keys::patch(&change, &app, &old.id, &patch).await?;
            }
            format!("The old key {}… keeps working until {}.", shown_prefix(&old.prefix), format_time(&at))
        }
    };
    state.publisher.commit(change).await?;
    let page = KeyCreatedPage {
        ctx,
        app: applications::get(state.store.db(), &app.id).await?,
        expires: created.record.expires_at.as_ref().map_or_else(|| "never".to_owned(), format_time),
        key: created,
        rotated: Some(rotated),
    };
    Ok(render(StatusCode::OK, &page))
}

async fn revoke_key(
    State(state): State<PortalState>,
    SignedIn(viewer): SignedIn,
    session: Session,
    Path((id, key_id)): Path<(String, String)>,
    CsrfForm(form): CsrfForm<ConfirmForm>,
) -> Result<Response, PageError> {
    let app = own_app(&state, &viewer.id, &id).await?;
    let key = keys::get(state.store.db(), &app, &key_id).await?;
    if form.confirm != "yes" {
        flash(
            &session,
            FlashKind::Error,
            format!("Tick the box to confirm revoking the key {}….", shown_prefix(&key.prefix)),
        )
        .await?;
        return Ok(Redirect::to(&format!("/apps/{}", app.id)).into_response());
    }
    let change = state.store.change(&actor(&viewer.id)).await?;
    keys::revoke(&change, &app, &key.id).await?;
    state.publisher.commit(change).await?;
    flash(
        &session,
        FlashKind::Success,
        format!("The key {}… is revoked; it no longer works.", shown_prefix(&key.prefix)),
    )
    .await?;
    Ok(Redirect::to(&format!("/apps/{}", app.id)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn expiry_dates_must_be_later_days() {
        let now = at("2030-01-10T12:00:00Z");
        assert_eq!(parse_expiry("", now), Ok(None));
        assert_eq!(parse_expiry(" 2030-01-11 ", now), Ok(Some(at("2030-01-11T00:00:00Z"))));
        assert!(parse_expiry("2030-01-10", now).is_err());
        assert!(parse_expiry("2029-12-31", now).is_err());
        assert!(parse_expiry("31/12/2030", now).is_err());
    }

    #[test]
    fn rotation_never_extends_the_old_key() {
        let now = at("2030-01-10T12:00:00Z");
        assert_eq!(rotated_expiry(None, 0, now), None, "no grace revokes");
        assert_eq!(rotated_expiry(None, 3600, now), Some(at("2030-01-10T13:00:00Z")));
        assert_eq!(rotated_expiry(Some(at("2030-01-10T12:30:00Z")), 86_400, now), Some(at("2030-01-10T12:30:00Z")));
        assert_eq!(rotated_expiry(Some(at("2030-02-01T00:00:00Z")), 604_800, now), Some(at("2030-01-17T12:00:00Z")));
    }

    #[test]
    fn key_states() {
        let now = at("2030-01-10T12:00:00Z");
        let key = |expires: Option<&str>, revoked: bool| KeyRecord {
            id: "k".into(),
            application_id: "a".into(),
            name: "n".into(),
            prefix: "tpk_x".into(),
            expires_at: expires.map(at),
            revoked_at: revoked.then_some(now),
            created_at: now,
        };
        assert_eq!(key_state(&key(None, false), now), "active");
        assert_eq!(key_state(&key(Some("2030-01-11T00:00:00Z"), false), now), "expiring");
        assert_eq!(key_state(&key(Some("2030-01-10T11:00:00Z"), false), now), "expired");
        assert_eq!(key_state(&key(None, true), now), "revoked");
    }
}
