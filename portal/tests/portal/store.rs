//! The portal's store queries and the tower-sessions store, on SQLite and PostgreSQL.

use chrono::{TimeDelta, Utc};
use sea_orm::EntityTrait;
use time::OffsetDateTime;
use tower_sessions::SessionStore;
use tower_sessions::session::{Id, Record};
use turnpike_portal::session_store::{DEVELOPER_KEY, DbSessionStore, hash_id};
use turnpike_store::Actor;
use turnpike_store::entities::audit_log;
use turnpike_store::portal::sessions::{self, SessionRow};
use turnpike_store::portal::tokens::{self, Purpose};
use turnpike_store::portal::{accounts, outbox};

use crate::support::{Backend, open_store};

macro_rules! on_both_stores {
    ($(async fn $name:ident($backend:ident) $body:block)*) => {
        $(
            mod $name {
                use super::*;

                async fn run($backend: Backend) $body

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    run(Backend::Sqlite).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    run(Backend::Postgres).await;
                }
            }
        )*
    };
}

on_both_stores! {
    async fn accounts_sign_up_verify_and_set_passwords(backend) {
        let (store, _dir) = open_store(backend).await;
        let change = store.change(&Actor("portal:sign-up".into())).await.unwrap();
        let created = accounts::sign_up(&change, " Ada@Example.COM ", "Ada", "$argon2id$hash-1").await.unwrap();
        change.commit().await.unwrap();
        assert_eq!(created.email, "ada@example.com");
        assert_eq!(created.password_hash.as_deref(), Some("$argon2id$hash-1"));
        assert!(created.email_verified_at.is_none());
        assert!(!format!("{created:?}").contains("hash-1"), "Debug hides the hash");

        let found = accounts::find_by_email(store.db(), "ADA@example.com ").await.unwrap().unwrap();
        assert_eq!(found, created);
        assert!(accounts::find_by_email(store.db(), "nobody@example.com").await.unwrap().is_none());

        // A taken address is a conflict, and nothing is written.
        let change = store.change(&Actor("portal:sign-up".into())).await.unwrap();
        let err = accounts::sign_up(&change, "ada@example.com", "Other", "$argon2id$hash-2").await.unwrap_err();
        assert!(matches!(err, turnpike_store::StoreError::Conflict(_)), "{err:?}");
        drop(change);

        let at = Utc::now();
        let change = store.change(&Actor(format!("developer:{}", created.id))).await.unwrap();
        accounts::set_password(&change, &created.id, "$argon2id$hash-3").await.unwrap();
        accounts::mark_email_verified(&change, &created.id, at).await.unwrap();
        // The first confirmation counts.
        accounts::mark_email_verified(&change, &created.id, at + TimeDelta::hours(1)).await.unwrap();
        accounts::rename(&change, &created.id, "Ada King").await.unwrap();
        change.commit().await.unwrap();
        let found = accounts::find(store.db(), &created.id).await.unwrap().unwrap();
        assert_eq!(found.password_hash.as_deref(), Some("$argon2id$hash-3"));
        assert_eq!(found.name, "Ada King");
        let verified = found.email_verified_at.unwrap();
        assert!((verified - at).num_seconds().abs() < 1, "{verified} vs {at}");

        let change = store.change(&Actor("test".into())).await.unwrap();
        assert!(accounts::set_password(&change, "no-such-id", "$argon2id$x").await.is_err());
        drop(change);

        // Every account change left an audit record without the hash.
        let audit = audit_log::Entity::find().all(store.db()).await.unwrap();
        let actions: Vec<&str> = audit.iter().map(|a| a.action.as_str()).collect();
        for action in ["developer.create", "developer.sign_up", "developer.password_set", "developer.email_verified", "developer.update"] {
            assert!(actions.contains(&action), "{action} missing from {actions:?}");
        }
        assert_eq!(actions.iter().filter(|a| **a == "developer.email_verified").count(), 1);
        assert!(audit.iter().all(|a| !a.detail.contains("hash")), "{audit:?}");
    }

    async fn account_tokens_are_single_use_and_expire(backend) {
        let (store, _dir) = open_store(backend).await;
        let change = store.change(&Actor("test".into())).await.unwrap();
        let dev = accounts::sign_up(&change, "grace@example.com", "Grace", "$argon2id$h").await.unwrap().id;
        change.commit().await.unwrap();
        let db = store.db();
        let now = Utc::now();
        tokens::issue(db, "hash-a", &dev, Purpose::Reset, now + TimeDelta::hours(1)).await.unwrap();
        tokens::issue(db, "hash-b", &dev, Purpose::Reset, now + TimeDelta::hours(1)).await.unwrap();
        tokens::issue(db, "hash-v", &dev, Purpose::Verify, now + TimeDelta::hours(24)).await.unwrap();
        tokens::issue(db, "hash-old", &dev, Purpose::Verify, now - TimeDelta::seconds(1)).await.unwrap();

        assert_eq!(tokens::peek(db, "hash-a", Purpose::Reset, now).await.unwrap().as_deref(), Some(dev.as_str()));
        // The purpose must match, and unknown or expired tokens are nothing.
        assert_eq!(tokens::peek(db, "hash-a", Purpose::Verify, now).await.unwrap(), None);
        assert_eq!(tokens::consume(db, "hash-a", Purpose::Verify, now).await.unwrap(), None);
        assert_eq!(tokens::peek(db, "nope", Purpose::Reset, now).await.unwrap(), None);
        assert_eq!(tokens::peek(db, "hash-old", Purpose::Verify, now).await.unwrap(), None);
        assert_eq!(tokens::consume(db, "hash-old", Purpose::Verify, now).await.unwrap(), None);
        // Valid until the expiry, not at it.
        assert_eq!(tokens::peek(db, "hash-a", Purpose::Reset, now + TimeDelta::hours(1)).await.unwrap(), None);

        assert_eq!(tokens::consume(db, "hash-a", Purpose::Reset, now).await.unwrap().as_deref(), Some(dev.as_str()));
        assert_eq!(tokens::consume(db, "hash-a", Purpose::Reset, now).await.unwrap(), None, "used");
        assert_eq!(tokens::peek(db, "hash-a", Purpose::Reset, now).await.unwrap(), None);
        // Using one reset token made the other one useless; the verify token is untouched.
        assert_eq!(tokens::consume(db, "hash-b", Purpose::Reset, now).await.unwrap(), None);
        assert!(tokens::peek(db, "hash-v", Purpose::Verify, now).await.unwrap().is_some());

        assert_eq!(tokens::delete_expired(db, now).await.unwrap(), 1, "only hash-old had expired");
        assert!(tokens::peek(db, "hash-v", Purpose::Verify, now).await.unwrap().is_some());
        assert_eq!(tokens::delete_expired(db, now + TimeDelta::days(2)).await.unwrap(), 2);
    }

    async fn sessions_are_stored_by_hash_and_end_per_developer(backend) {
        let (store, _dir) = open_store(backend).await;
        let change = store.change(&Actor("test".into())).await.unwrap();
        let ada = accounts::sign_up(&change, "ada@example.com", "Ada", "$argon2id$h").await.unwrap().id;
        let bob = accounts::sign_up(&change, "bob@example.com", "Bob", "$argon2id$h").await.unwrap().id;
        change.commit().await.unwrap();
        let db = store.db();
        let now = Utc::now();
        let row = |id: &str, developer: Option<&str>, expiry| SessionRow {
            id_hash: id.to_owned(),
            developer_id: developer.map(str::to_owned),
            data: format!(r#"{{"n":"{id}"}}"#),
            expiry_date: expiry,
        };
        let later = now + TimeDelta::days(1);
        assert!(sessions::create(db, &row("s1", Some(&ada), later)).await.unwrap());
        assert!(!sessions::create(db, &row("s1", None, later)).await.unwrap(), "taken ids are refused");
        assert!(sessions::create(db, &row("s2", Some(&ada), later)).await.unwrap());
        assert!(sessions::create(db, &row("s3", Some(&bob), later)).await.unwrap());
        assert!(sessions::create(db, &row("s4", None, now - TimeDelta::seconds(1))).await.unwrap());

        let loaded = sessions::load(db, "s1", now).await.unwrap().unwrap();
        assert_eq!(loaded.developer_id.as_deref(), Some(ada.as_str()));
        assert_eq!(loaded.data, r#"{"n":"s1"}"#);
        assert!(sessions::load(db, "s4", now).await.unwrap().is_none(), "expired");
        assert!(sessions::load(db, "nope", now).await.unwrap().is_none());

        let mut changed = row("s1", None, later);
        changed.data = r#"{"n":"changed"}"#.into();
        assert!(sessions::update(db, &changed).await.unwrap());
        assert_eq!(sessions::load(db, "s1", now).await.unwrap().unwrap().data, r#"{"n":"changed"}"#);
        assert!(!sessions::update(db, &row("gone", None, later)).await.unwrap(), "update never inserts");
        assert!(sessions::load(db, "gone", now).await.unwrap().is_none());

        assert_eq!(sessions::count_for_developer(db, &ada).await.unwrap(), 1, "s1 was signed out by the update");
        assert!(sessions::update(db, &row("s1", Some(&ada), later)).await.unwrap());
        assert_eq!(sessions::delete_for_developer(db, &ada, Some("s2")).await.unwrap(), 1);
        assert!(sessions::load(db, "s1", now).await.unwrap().is_none());
        assert!(sessions::load(db, "s2", now).await.unwrap().is_some());
        assert_eq!(sessions::delete_for_developer(db, &ada, None).await.unwrap(), 1);
        assert_eq!(sessions::count_for_developer(db, &bob).await.unwrap(), 1);

        assert_eq!(sessions::delete_expired(db, now).await.unwrap(), 1);
        sessions::delete(db, "s3").await.unwrap();
        assert_eq!(sessions::count_for_developer(db, &bob).await.unwrap(), 0);
    }

    async fn the_session_store_round_trips_records(backend) {
        let (store, _dir) = open_store(backend).await;
        let change = store.change(&Actor("test".into())).await.unwrap();
        let ada = accounts::sign_up(&change, "ada@example.com", "Ada", "$argon2id$h").await.unwrap().id;
        change.commit().await.unwrap();
        let sessions_store = DbSessionStore::new(store.clone());
        let expiry = OffsetDateTime::from_unix_timestamp((Utc::now() + TimeDelta::hours(1)).timestamp()).unwrap();
        let mut record = Record { id: Id::default(), data: Default::default(), expiry_date: expiry };
        record.data.insert("csrf".into(), serde_json::json!("token"));
        record.data.insert(DEVELOPER_KEY.into(), serde_json::json!(ada));
        let original = record.id;
        sessions_store.create(&mut record).await.unwrap();
        assert_eq!(record.id, original);

        // A record with the same id gets a new one instead of replacing the first.
        let mut clash = Record { id: original, data: Default::default(), expiry_date: expiry };
        sessions_store.create(&mut clash).await.unwrap();
        assert_ne!(clash.id, original);

        let loaded = sessions_store.load(&original).await.unwrap().unwrap();
        assert_eq!(loaded.data, record.data);
        assert_eq!(loaded.expiry_date, expiry);
        // Stored under the hash, with the developer in its own column.
        let row = sessions::load(store.db(), &hash_id(&original), Utc::now()).await.unwrap().unwrap();
        assert_eq!(row.developer_id.as_deref(), Some(ada.as_str()));
        assert!(!row.data.contains(&original.to_string()));
        assert!(sessions::load(store.db(), &original.to_string(), Utc::now()).await.unwrap().is_none());

        record.data.remove(DEVELOPER_KEY);
        sessions_store.save(&record).await.unwrap();
        assert!(!sessions_store.load(&original).await.unwrap().unwrap().data.contains_key(DEVELOPER_KEY));
        sessions_store.delete(&original).await.unwrap();
        assert!(sessions_store.load(&original).await.unwrap().is_none());
        // Saving a deleted session does not bring it back.
        sessions_store.save(&record).await.unwrap();
        assert!(sessions_store.load(&original).await.unwrap().is_none());

        let expired = OffsetDateTime::now_utc() - time::Duration::seconds(1);
        let mut old = Record { id: Id::default(), data: Default::default(), expiry_date: expired };
        sessions_store.create(&mut old).await.unwrap();
        assert!(sessions_store.load(&old.id).await.unwrap().is_none());
    }

    async fn the_outbox_keeps_mail_newest_first(backend) {
        let (store, _dir) = open_store(backend).await;
        let db = store.db();
        let first = outbox::push(db, "a@example.com", "First", "one").await.unwrap();
        let second = outbox::push(db, "b@example.com", "Second", "two\nhttps://x.example/y").await.unwrap();
        let latest = outbox::latest(db, 10).await.unwrap();
        assert_eq!(latest.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), [second.as_str(), first.as_str()]);
        assert_eq!(outbox::latest(db, 1).await.unwrap().len(), 1);
        let mail = outbox::get(db, &second).await.unwrap().unwrap();
        assert_eq!((mail.to.as_str(), mail.subject.as_str(), mail.body.as_str()), ("b@example.com", "Second", "two\nhttps://x.example/y"));
        assert!(outbox::get(db, "nope").await.unwrap().is_none());
    }
}

on_both_stores! {
    async fn a_session_saved_while_a_change_is_open_waits_for_it_instead_of_breaking_it(backend) {
        let (store, _dir) = open_store(backend).await;
        let change = store.change(&Actor("test".into())).await.unwrap();
        // The change reads first, as changes do ...
        assert!(accounts::find_by_email(change.txn(), "nobody@example.com").await.unwrap().is_none());
        // ... then a session is saved from another connection, outside any change ...
        let row = SessionRow {
            id_hash: hash_id(&Id::default()),
            developer_id: None,
            data: "{}".into(),
            expiry_date: Utc::now() + TimeDelta::hours(1),
        };
        let db = store.clone();
        let (started, writing) = tokio::sync::oneshot::channel();
        let saved = tokio::spawn(async move {
            let _ = started.send(());
            sessions::create(db.db(), &row).await
        });
        writing.await.unwrap();
        tokio::task::yield_now().await;
        // ... and the change still writes and commits (on SQLite a deferred transaction
        // would fail here with "database is locked" once the session write got in first).
        let created = accounts::sign_up(&change, "ada@example.com", "Ada", "$argon2id$hash").await;
        assert!(created.is_ok(), "{:?}", created.err());
        change.commit().await.unwrap();
        assert!(saved.await.unwrap().unwrap(), "the session was saved once the change was done");
    }
}
