//! `api_versions` table. Generated-entity style: columns only, behaviour lives in the sibling query modules.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "api_versions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub api_id: String,
    pub label: String,
    pub state: String,
    #[sea_orm(unique)]
    pub base_path: String,
    pub upstream_id: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub openapi_document: Option<String>,
    pub sunset_at: Option<DateTimeUtc>,
    pub deprecated_at: Option<DateTimeUtc>,
    pub successor_id: Option<String>,
    #[sea_orm(column_type = "Text")]
    pub policies: String,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
