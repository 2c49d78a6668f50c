//! The portal's integration tests, one binary: the real router served on a free
//! loopback port over a real database (a SQLite file in a temporary directory, or a
//! PostgreSQL database from the testkit), driven over HTTP like a browser with
//! JavaScript off. Each test starts its own portal.

#[path = "portal/support.rs"]
mod support;

#[path = "portal/accounts.rs"]
mod accounts;
#[path = "portal/apps.rs"]
mod apps;
#[path = "portal/browser.rs"]
mod browser;
#[path = "portal/catalog.rs"]
mod catalog;
#[path = "portal/mail.rs"]
mod mail;
#[path = "portal/oidc.rs"]
mod oidc;
#[path = "portal/store.rs"]
mod store;
