//! How an API's versions are chosen: JSON text of `turnpike_domain::model::Versioning`,
//! `{"mode":"path"}` (each version by its own base path) for every existing API.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(Apis::Table)
                .add_column(text(Apis::Versioning).default(r#"{"mode":"path"}"#))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(Table::alter().table(Apis::Table).drop_column(Apis::Versioning).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum Apis {
    Table,
    Versioning,
}
