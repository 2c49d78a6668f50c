//! TLS certificates the gateway presents, chosen by SNI. The private key is stored
//! for the snapshot but never leaves this module in a record or an audit entry.

use chrono::{DateTime, Utc};
use sea_orm::{ActiveModelTrait, ConnectionTrait, EntityTrait, QueryOrder, Set};
use serde::Serialize;
use turnpike_domain::certificate::{self, CertificateInput};

use crate::entities::certificates;
use crate::json::{fetch_page, from_text, to_text};
use crate::{Change, Page, PageParams, StoreError, new_id, patched};

/// A certificate as shown: what it is good for, never its key.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CertificateRecord {
    pub id: String,
    /// Hosts the certificate is presented for.
    pub hosts: Vec<String>,
    /// DNS names of the certificate's subjectAltName.
    pub names: Vec<String>,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
    /// Hex SHA-256 of the server certificate (DER).
    pub fingerprint: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

fn record(m: certificates::Model) -> Result<CertificateRecord, StoreError> {
    // Only accepted certificates are stored; a failure means the row was damaged.
    let info = certificate::inspect(&m.cert_pem).map_err(|e| {
        StoreError::Database(sea_orm::DbErr::Custom(format!(
            "certificate {} holds an unreadable certificate: {e}",
            m.id
        )))
    })?;
    Ok(CertificateRecord {
        hosts: from_text("certificates.hosts", &m.hosts)?,
        names: info.names,
        not_before: info.not_before,
        not_after: info.not_after,
        fingerprint: info.fingerprint,
        id: m.id,
        created_at: m.created_at,
        updated_at: m.updated_at,
    })
}

async fn find(db: &impl ConnectionTrait, id: &str) -> Result<certificates::Model, StoreError> {
    certificates::Entity::find_by_id(id).one(db).await?.ok_or_else(|| StoreError::not_found("certificate", id))
}

pub async fn get(db: &impl ConnectionTrait, id: &str) -> Result<CertificateRecord, StoreError> {
    record(find(db, id).await?)
}

/// Oldest first.
pub async fn list(db: &impl ConnectionTrait, params: PageParams) -> Result<Page<CertificateRecord>, StoreError> {
    let select = certificates::Entity::find().order_by_asc(certificates::Column::Id);
    let (rows, total) = fetch_page(db, select, params).await?;
    Ok(Page::new(rows.into_iter().map(record).collect::<Result<_, _>>()?, params, total))
}

/// A host has one certificate, so that the choice by SNI is never a guess.
async fn ensure_hosts_free(
    db: &impl ConnectionTrait,
    hosts: &[String],
    except: Option<&str>,
) -> Result<(), StoreError> {
    for other in certificates::Entity::find().all(db).await? {
        if Some(other.id.as_str()) == except {
            continue;
        }
        let taken: Vec<String> = from_text("certificates.hosts", &other.hosts)?;
        if let Some(host) = hosts.iter().find(|h| taken.contains(h)) {
            return Err(StoreError::Conflict(format!(
                "host '{host}' already has certificate {}; replace that one with PATCH",
                other.id
            )));
        }
    }
    Ok(())
}

/// What the audit log keeps of a certificate: never the key.
fn audit_detail(hosts: &[String], info: &certificate::CertificateInfo) -> serde_json::Value {
    serde_json::json!({"hosts": hosts, "fingerprint": info.fingerprint, "not_after": info.not_after})
}

pub async fn create(change: &Change<'_>, input: CertificateInput) -> Result<CertificateRecord, StoreError> {
    let accepted = certificate::validate(&input, Utc::now())?;
    ensure_hosts_free(change.txn(), &accepted.hosts, None).await?;
    record(insert(change, input, &accepted).await?)
}

/// Stores a certificate that [`certificate::validate`] accepted, without looking at
/// the hosts of the others (the caller does).
async fn insert(
    change: &Change<'_>,
    input: CertificateInput,
    accepted: &certificate::Accepted,
) -> Result<certificates::Model, StoreError> {
    let now = Utc::now();
    let model = certificates::ActiveModel {
        id: Set(new_id()),
        hosts: Set(to_text(&accepted.hosts)),
        cert_pem: Set(input.cert_pem),
        key_pem: Set(input.key_pem),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(change.txn())
    .await?;
    change.audit("certificate.create", "certificate", &model.id, audit_detail(&accepted.hosts, &accepted.info)).await?;
    Ok(model)
}

/// Applies a JSON merge patch to `{cert_pem, key_pem, hosts}`: a renewal sends a new
/// `cert_pem` and `key_pem`. The hosts stay as they are unless the patch sets them;
/// `"hosts": null` takes them from the certificate again. The result is checked like
/// a new certificate.
pub async fn patch(change: &Change<'_>, id: &str, patch: &serde_json::Value) -> Result<CertificateRecord, StoreError> {
    let model = find(change.txn(), id).await?;
    let current = CertificateInput {
        hosts: Some(from_text("certificates.hosts", &model.hosts)?),
        cert_pem: model.cert_pem.clone(),
        key_pem: model.key_pem.clone(),
    };
    let input: CertificateInput = patched(&current, patch)?;
    let accepted = certificate::validate(&input, Utc::now())?;
    ensure_hosts_free(change.txn(), &accepted.hosts, Some(&model.id)).await?;
    record(update(change, model, input, &accepted).await?)
}

/// Replaces a stored certificate with one that [`certificate::validate`] accepted,
/// without looking at the hosts of the others (the caller does).
async fn update(
    change: &Change<'_>,
    model: certificates::Model,
    input: CertificateInput,
    accepted: &certificate::Accepted,
) -> Result<certificates::Model, StoreError> {
    let mut active: certificates::ActiveModel = model.into();
    active.hosts = Set(to_text(&accepted.hosts));
    active.cert_pem = Set(input.cert_pem);
    active.key_pem = Set(input.key_pem);
    active.updated_at = Set(Utc::now());
    let model = active.update(change.txn()).await?;
    change.audit("certificate.update", "certificate", &model.id, audit_detail(&accepted.hosts, &accepted.info)).await?;
    Ok(model)
}

/// Deletes a certificate; its hosts are no longer served over TLS.
pub async fn delete(change: &Change<'_>, id: &str) -> Result<(), StoreError> {
    let model = find(change.txn(), id).await?;
    certificates::Entity::delete_by_id(model.id.clone()).exec(change.txn()).await?;
    let hosts: Vec<String> = from_text("certificates.hosts", &model.hosts)?;
    change.audit("certificate.delete", "certificate", &model.id, serde_json::json!({"hosts": hosts})).await?;
    Ok(())
}

/// A stored certificate with its key, for the declarative export and import.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Stored {
    pub id: String,
    pub hosts: Vec<String>,
    pub cert_pem: String,
    pub key_pem: String,
}

// The private key must never reach a log line.
impl std::fmt::Debug for Stored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stored").field("id", &self.id).field("hosts", &self.hosts).finish_non_exhaustive()
    }
}

/// Every certificate with its key, ordered by hosts (a host has one certificate, so
/// the order does not depend on ids or on when they were created).
pub(crate) async fn all_with_keys(db: &impl ConnectionTrait) -> Result<Vec<Stored>, StoreError> {
    let mut all = certificates::Entity::find()
        .all(db)
        .await?
        .into_iter()
        .map(|m| {
            Ok(Stored {
                hosts: from_text("certificates.hosts", &m.hosts)?,
                id: m.id,
                cert_pem: m.cert_pem,
                key_pem: m.key_pem,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    all.sort_by(|a, b| (&a.hosts, &a.id).cmp(&(&b.hosts, &b.id)));
    Ok(all)
}

/// Creates (`id` `None`) or replaces a certificate for a declarative import, which
/// has validated it with [`certificate::validate`] and checks that hosts stay unique
/// across every certificate with [`ensure_unique_hosts`] once all are written: one
/// at a time, a host moving from one certificate to another would be refused.
pub(crate) async fn put_accepted(
    change: &Change<'_>,
    id: Option<&str>,
    input: CertificateInput,
    accepted: &certificate::Accepted,
) -> Result<(), StoreError> {
    match id {
        None => drop(insert(change, input, accepted).await?),
        Some(id) => {
            let model = find(change.txn(), id).await?;
            drop(update(change, model, input, accepted).await?);
        }
    }
    Ok(())
}

/// Refuses a state where two certificates are presented for the same host.
pub(crate) async fn ensure_unique_hosts(db: &impl ConnectionTrait) -> Result<(), StoreError> {
    let mut owner: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    for c in all_with_keys(db).await? {
        for host in c.hosts {
            if let Some(other) = owner.insert(host.clone(), c.id.clone()) {
                return Err(StoreError::Conflict(format!(
                    "host '{host}' would have two certificates ({other} and {})",
                    c.id
                )));
            }
        }
    }
    Ok(())
}
