//! sea-orm entities, one per table, in the form sea-orm-cli generates. Never add
//! behaviour here: queries and conversions live in the store's sibling modules.

pub mod account_tokens;
pub mod admin_tokens;
pub mod api_keys;
pub mod api_versions;
pub mod apis;
pub mod applications;
pub mod audit_log;
pub mod certificates;
pub mod developer_passwords;
pub mod developers;
pub mod oidc_identities;
pub mod outbox;
pub mod plans;
pub mod portal_sessions;
pub mod routes;
pub mod snapshots;
pub mod subscriptions;
pub mod upstreams;
