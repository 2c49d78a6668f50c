//! Subscriptions: an application's access to an API version under a plan. The
//! approval rules are in [`turnpike_domain::subscription`].

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, Set,
};
use serde::{Deserialize, Serialize};
use turnpike_domain::model::{SubscriptionState, VersionState};
use turnpike_domain::subscription::{self, SubscriptionAction};

use crate::entities::{api_versions, subscriptions};
use crate::json::fetch_page;
use crate::versions::state_of;
use crate::{Change, Page, PageParams, StoreError, applications, new_id, plans};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SubscriptionInput {
    pub application_id: String,
    /// Id of a published API version.
    pub version_id: String,
    /// Plan id or slug.
    pub plan_id: String,
}

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SubscriptionRecord {
    pub id: String,
    pub application_id: String,
    pub version_id: String,
    pub plan_id: String,
    pub state: SubscriptionState,
    pub allowed_actions: Vec<SubscriptionAction>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Filters of a subscription list.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[serde(deny_unknown_fields)]
pub struct SubscriptionFilter {
    pub state: Option<SubscriptionState>,
    pub application_id: Option<String>,
    pub version_id: Option<String>,
}

fn record(m: subscriptions::Model) -> SubscriptionRecord {
    // The column is only ever written from SubscriptionState::as_str.
    let state = SubscriptionState::parse(&m.state).unwrap_or(SubscriptionState::Revoked);
    SubscriptionRecord {
        allowed_actions: subscription::allowed_actions(state).to_vec(),
        id: m.id,
        application_id: m.application_id,
        version_id: m.version_id,
        plan_id: m.plan_id,
        state,
        created_at: m.created_at,
        updated_at: m.updated_at,
    }
}

pub async fn find(db: &impl ConnectionTrait, id: &str) -> Result<subscriptions::Model, StoreError> {
    subscriptions::Entity::find_by_id(id).one(db).await?.ok_or_else(|| StoreError::not_found("subscription", id))
}

pub async fn get(db: &impl ConnectionTrait, id: &str) -> Result<SubscriptionRecord, StoreError> {
    Ok(record(find(db, id).await?))
}

pub async fn list(
    db: &impl ConnectionTrait,
    filter: &SubscriptionFilter,
    params: PageParams,
) -> Result<Page<SubscriptionRecord>, StoreError> {
    let mut select = subscriptions::Entity::find().order_by_asc(subscriptions::Column::Id);
    if let Some(state) = filter.state {
        select = select.filter(subscriptions::Column::State.eq(state.as_str()));
    }
    if let Some(app) = &filter.application_id {
        select = select.filter(subscriptions::Column::ApplicationId.eq(app.as_str()));
    }
    if let Some(version) = &filter.version_id {
        select = select.filter(subscriptions::Column::VersionId.eq(version.as_str()));
    }
    let (rows, total) = fetch_page(db, select, params).await?;
    Ok(Page::new(rows.into_iter().map(record).collect(), params, total))
}

pub async fn create(change: &Change<'_>, input: SubscriptionInput) -> Result<SubscriptionRecord, StoreError> {
    let db = change.txn();
    let app = applications::find(db, &input.application_id)
        .await
        .map_err(|_| StoreError::invalid("application_id", format!("no application '{}'", input.application_id)))?;
    let plan = plans::find(db, &input.plan_id)
        .await
        .map_err(|_| StoreError::invalid("plan_id", format!("no plan '{}'", input.plan_id)))?;
    let version = api_versions::Entity::find_by_id(input.version_id.clone())
        .one(db)
        .await?
        .ok_or_else(|| StoreError::invalid("version_id", format!("no API version '{}'", input.version_id)))?;
    if state_of(&version) != VersionState::Published {
        return Err(StoreError::Conflict(format!(
            "version '{}' is {}; only published versions take new subscriptions",
            version.label, version.state
        )));
    }
    let existing = subscriptions::Entity::find()
        .filter(subscriptions::Column::ApplicationId.eq(app.id.clone()))
        .filter(subscriptions::Column::VersionId.eq(version.id.clone()))
        .count(db)
        .await?;
    if existing > 0 {
        return Err(StoreError::Conflict("the application is already subscribed to this version".into()));
    }
    let now = Utc::now();
    let state = subscription::initial_state(plan.requires_approval);
    let model = subscriptions::ActiveModel {
        id: Set(new_id()),
        application_id: Set(app.id),
        version_id: Set(version.id),
        plan_id: Set(plan.id),
        state: Set(state.as_str().into()),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(db)
    .await?;
    change
        .audit("subscription.create", "subscription", &model.id, serde_json::json!({"state": state.as_str()}))
        .await?;
    Ok(record(model))
}

/// Approves, rejects or revokes a subscription.
pub async fn act(change: &Change<'_>, id: &str, action: SubscriptionAction) -> Result<SubscriptionRecord, StoreError> {
    let model = find(change.txn(), id).await?;
    let from = record(model.clone()).state;
    let to = subscription::apply(from, action)?;
    let mut active: subscriptions::ActiveModel = model.into();
    active.state = Set(to.as_str().into());
    active.updated_at = Set(Utc::now());
    let model = active.update(change.txn()).await?;
    change
        .audit(
            &format!("subscription.{}", action.as_str()),
            "subscription",
            &model.id,
            serde_json::json!({"from": from.as_str(), "to": to.as_str()}),
        )
        .await?;
    Ok(record(model))
}

pub async fn delete(change: &Change<'_>, id: &str) -> Result<(), StoreError> {
    let model = find(change.txn(), id).await?;
    subscriptions::Entity::delete_by_id(model.id.clone()).exec(change.txn()).await?;
    change.audit("subscription.delete", "subscription", &model.id, serde_json::json!({})).await?;
    Ok(())
}
