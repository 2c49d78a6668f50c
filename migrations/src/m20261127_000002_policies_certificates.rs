//! Version policies (JSON text, `{}` when none) and TLS certificates for the gateway.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter().table(ApiVersions::Table).add_column(text(ApiVersions::Policies).default("{}")).to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Certificates::Table)
                .col(string(Certificates::Id).primary_key())
                .col(text(Certificates::Hosts))
                .col(text(Certificates::CertPem))
                .col(text(Certificates::KeyPem))
                .col(timestamp_with_time_zone(Certificates::CreatedAt))
                .col(timestamp_with_time_zone(Certificates::UpdatedAt))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(Certificates::Table).to_owned()).await?;
        m.alter_table(Table::alter().table(ApiVersions::Table).drop_column(ApiVersions::Policies).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum ApiVersions {
    Table,
    Policies,
}

#[derive(DeriveIden)]
enum Certificates {
    Table,
    Id,
    Hosts,
    CertPem,
    KeyPem,
    CreatedAt,
    UpdatedAt,
}
