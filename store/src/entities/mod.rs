//! sea-orm entities, one per table, in the form sea-orm-cli generates. Never add
//! behaviour here: queries and conversions live in the store's sibling modules.

pub mod admin_tokens;
pub mod api_keys;
pub mod api_versions;
pub mod apis;
pub mod applications;
pub mod audit_log;
pub mod certificates;
pub mod developers;
pub mod plans;
pub mod routes;
pub mod snapshots;
pub mod subscriptions;
pub mod upstreams;
