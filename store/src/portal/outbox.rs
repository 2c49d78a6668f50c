//! The development outbox: mail the portal would have sent, kept in the database
//! when no SMTP server is configured, so that all-in-one works out of the box and
//! tests can follow the links in it.

use chrono::{DateTime, Utc};
use sea_orm::{ActiveModelTrait, ConnectionTrait, EntityTrait, QueryOrder, QuerySelect, Set};

use crate::entities::outbox;
use crate::{StoreError, new_id};

/// One message in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMail {
    pub id: String,
    pub to: String,
    pub subject: String,
    pub body: String,
    pub created_at: DateTime<Utc>,
}

fn mail(m: outbox::Model) -> OutboxMail {
    OutboxMail { id: m.id, to: m.to_address, subject: m.subject, body: m.body, created_at: m.created_at }
}

/// Keeps a message; returns its id.
pub async fn push(db: &impl ConnectionTrait, to: &str, subject: &str, body: &str) -> Result<String, StoreError> {
    let model = outbox::ActiveModel {
        id: Set(new_id()),
        to_address: Set(to.to_owned()),
        subject: Set(subject.to_owned()),
        body: Set(body.to_owned()),
        created_at: Set(Utc::now()),
    }
    .insert(db)
    .await?;
    Ok(model.id)
}

/// The newest `limit` messages, newest first.
pub async fn latest(db: &impl ConnectionTrait, limit: u64) -> Result<Vec<OutboxMail>, StoreError> {
    let rows = outbox::Entity::find()
        .order_by_desc(outbox::Column::CreatedAt)
        .order_by_desc(outbox::Column::Id)
        .limit(limit)
        .all(db)
        .await?;
    Ok(rows.into_iter().map(mail).collect())
}

pub async fn get(db: &impl ConnectionTrait, id: &str) -> Result<Option<OutboxMail>, StoreError> {
    Ok(outbox::Entity::find_by_id(id).one(db).await?.map(mail))
}
