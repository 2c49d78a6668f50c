//! Portal browser sessions. The portal's session store (tower-sessions) keeps each
//! session's data here as JSON text, under a hash of the session id so that a read
//! of this table cannot be replayed as cookies. The signed-in developer is kept in a
//! column of its own so that all sessions of an account can be ended at once.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, Set};

use crate::StoreError;
use crate::entities::portal_sessions;

/// One stored session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    /// Hash of the session id (the cookie's value); computed by the caller.
    pub id_hash: String,
    /// The signed-in developer, if any.
    pub developer_id: Option<String>,
    /// The session's data as JSON text.
    pub data: String,
    pub expiry_date: DateTime<Utc>,
}

fn active(row: &SessionRow) -> portal_sessions::ActiveModel {
    portal_sessions::ActiveModel {
        id: Set(row.id_hash.clone()),
        developer_id: Set(row.developer_id.clone()),
        data: Set(row.data.clone()),
        expiry_date: Set(row.expiry_date),
    }
}

/// The session with this id hash if it has not expired at `now`.
pub async fn load(
    db: &impl ConnectionTrait,
    id_hash: &str,
    now: DateTime<Utc>,
) -> Result<Option<SessionRow>, StoreError> {
    let row = portal_sessions::Entity::find_by_id(id_hash).one(db).await?;
    Ok(row.filter(|r| now < r.expiry_date).map(|r| SessionRow {
        id_hash: r.id,
        developer_id: r.developer_id,
        data: r.data,
        expiry_date: r.expiry_date,
    }))
}

/// Stores a new session; `false` (and nothing written) if the id hash is taken.
pub async fn create(db: &impl ConnectionTrait, row: &SessionRow) -> Result<bool, StoreError> {
    let inserted = portal_sessions::Entity::insert(active(row))
        .on_conflict(OnConflict::column(portal_sessions::Column::Id).do_nothing().to_owned())
        .exec_without_returning(db)
        .await?;
    Ok(inserted == 1)
}

/// Replaces the data and expiry of an existing session; `false` if there is none.
/// Never inserts: a session ended meanwhile (sign-out elsewhere, a password change)
/// must not come back because a request that still held it saves at its end.
pub async fn update(db: &impl ConnectionTrait, row: &SessionRow) -> Result<bool, StoreError> {
    let done = portal_sessions::Entity::update_many()
        .col_expr(portal_sessions::Column::DeveloperId, Expr::value(row.developer_id.clone()))
        .col_expr(portal_sessions::Column::Data, Expr::value(row.data.clone()))
        .col_expr(portal_sessions::Column::ExpiryDate, Expr::value(row.expiry_date))
        .filter(portal_sessions::Column::Id.eq(&row.id_hash))
        .exec(db)
        .await?;
    Ok(done.rows_affected == 1)
}

pub async fn delete(db: &impl ConnectionTrait, id_hash: &str) -> Result<(), StoreError> {
    portal_sessions::Entity::delete_by_id(id_hash).exec(db).await?;
    Ok(())
}

/// Ends every session of a developer except `keep` (an id hash); returns how many ended.
pub async fn delete_for_developer(
    db: &impl ConnectionTrait,
    developer_id: &str,
    keep: Option<&str>,
) -> Result<u64, StoreError> {
    let mut query =
        portal_sessions::Entity::delete_many().filter(portal_sessions::Column::DeveloperId.eq(developer_id));
    if let Some(keep) = keep {
        query = query.filter(portal_sessions::Column::Id.ne(keep));
    }
    Ok(query.exec(db).await?.rows_affected)
}

/// How many stored sessions a developer has (expired ones included until deleted).
pub async fn count_for_developer(db: &impl ConnectionTrait, developer_id: &str) -> Result<u64, StoreError> {
    Ok(portal_sessions::Entity::find().filter(portal_sessions::Column::DeveloperId.eq(developer_id)).count(db).await?)
}

/// Deletes sessions that expired before `now`; returns how many.
pub async fn delete_expired(db: &impl ConnectionTrait, now: DateTime<Utc>) -> Result<u64, StoreError> {
    let done =
        portal_sessions::Entity::delete_many().filter(portal_sessions::Column::ExpiryDate.lt(now)).exec(db).await?;
    Ok(done.rows_affected)
}
