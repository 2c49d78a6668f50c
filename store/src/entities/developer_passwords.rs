//! `developer_passwords` table. Generated-entity style: columns only, behaviour lives in the sibling query modules.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "developer_passwords")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub developer_id: String,
    #[sea_orm(column_type = "Text")]
    pub password_hash: String,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
