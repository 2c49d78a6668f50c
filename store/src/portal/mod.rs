//! What the developer portal keeps beside the developers themselves: sign-in
//! credentials and verified addresses (`accounts`), single-use links sent by mail
//! (`tokens`), browser sessions (`sessions`), the development outbox (`outbox`) and
//! accounts at OpenID Connect providers (`identities`).
//!
//! Account changes that an operator may want to trace (sign-up, verification,
//! password changes) run through a [`Change`](crate::Change) and leave an audit
//! record; sessions, tokens and outbox mail are bookkeeping and are written directly.

pub mod accounts;
pub mod catalog;
pub mod identities;
pub mod outbox;
pub mod sessions;
pub mod tokens;
