//! Schema migrations of the control-plane store. Every migration must run on both
//! SQLite and PostgreSQL, so only portable column types and constraints are used:
//! ids are text (UUIDv7), structured values are JSON text, times are timestamps with
//! time zone.

use sea_orm_migration::prelude::*;

pub use sea_orm_migration::MigratorTrait;

mod m20261127_000001_init;
mod m20261127_000002_policies_certificates;
mod m20261127_000003_api_versioning;
mod m20261127_000004_portal;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261127_000001_init::Migration),
            Box::new(m20261127_000002_policies_certificates::Migration),
            Box::new(m20261127_000003_api_versioning::Migration),
            Box::new(m20261127_000004_portal::Migration),
        ]
    }
}
