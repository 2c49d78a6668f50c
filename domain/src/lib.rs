//! Turnpike's domain: the control plane's vocabulary and rules, with no I/O.
//! Lifecycle transitions, input validation, OpenAPI import, key formats and
//! configuration snapshots are plain functions here, tested without servers.

pub mod certificate;
pub mod credential;
pub mod lifecycle;
pub mod model;
pub mod network;
pub mod openapi;
pub mod policy;
pub mod secrets;
pub mod snapshot;
pub mod subscription;
pub mod validate;

/// A new identifier for any stored entity: a UUID v7 string, so that ids sort by
/// creation time and index well.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_uuid_v7_and_increase() {
        let a = super::new_id();
        let b = super::new_id();
        let parsed = uuid::Uuid::parse_str(&a).unwrap();
        assert_eq!(parsed.get_version_num(), 7);
        assert_eq!(a.len(), 36);
        assert!(a < b, "{a} then {b}");
    }
}
