//! The first schema: admin tokens, the API catalogue, upstreams, plans, consumers,
//! compiled snapshots and the audit log.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

fn created_updated(t: &mut TableCreateStatement) -> &mut TableCreateStatement {
    t.col(timestamp_with_time_zone(Alias::new("created_at"))).col(timestamp_with_time_zone(Alias::new("updated_at")))
}

fn fk(
    name: &str,
    from: (impl IntoIden + 'static, impl IntoIden + 'static),
    to: (impl IntoIden + 'static, impl IntoIden + 'static),
    on_delete: ForeignKeyAction,
) -> ForeignKeyCreateStatement {
    ForeignKey::create().name(name).from(from.0, from.1).to(to.0, to.1).on_delete(on_delete).to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(AdminTokens::Table)
                .col(string(AdminTokens::Id).primary_key())
                .col(string(AdminTokens::Name))
                .col(string(AdminTokens::Prefix))
                .col(string_uniq(AdminTokens::TokenHash))
                .col(timestamp_with_time_zone(AdminTokens::CreatedAt))
                .col(timestamp_with_time_zone_null(AdminTokens::RevokedAt))
                .to_owned(),
        )
        .await?;

        m.create_table(
            created_updated(
                Table::create()
                    .table(Upstreams::Table)
                    .col(string(Upstreams::Id).primary_key())
                    .col(string_uniq(Upstreams::Name))
                    .col(text(Upstreams::Spec)),
            )
            .to_owned(),
        )
        .await?;

        m.create_table(
            created_updated(
                Table::create()
                    .table(Apis::Table)
                    .col(string(Apis::Id).primary_key())
                    .col(string_uniq(Apis::Slug))
                    .col(string(Apis::Name))
                    .col(text(Apis::Description))
                    .col(text(Apis::Tags))
                    .col(string_null(Apis::Owner)),
            )
            .to_owned(),
        )
        .await?;

        m.create_table(
            created_updated(
                Table::create()
                    .table(ApiVersions::Table)
                    .col(string(ApiVersions::Id).primary_key())
                    .col(string(ApiVersions::ApiId))
                    .col(string(ApiVersions::Label))
                    .col(string(ApiVersions::State))
                    .col(string_uniq(ApiVersions::BasePath))
                    .col(string_null(ApiVersions::UpstreamId))
                    .col(text_null(ApiVersions::OpenapiDocument))
                    .col(timestamp_with_time_zone_null(ApiVersions::SunsetAt))
                    .col(timestamp_with_time_zone_null(ApiVersions::DeprecatedAt))
                    .col(string_null(ApiVersions::SuccessorId))
                    .foreign_key(&mut fk(
                        "fk_versions_api",
                        (ApiVersions::Table, ApiVersions::ApiId),
                        (Apis::Table, Apis::Id),
                        ForeignKeyAction::Cascade,
                    ))
                    .foreign_key(&mut fk(
                        "fk_versions_upstream",
                        (ApiVersions::Table, ApiVersions::UpstreamId),
                        (Upstreams::Table, Upstreams::Id),
                        ForeignKeyAction::Restrict,
                    )),
            )
            .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ux_versions_api_label")
                .table(ApiVersions::Table)
                .col(ApiVersions::ApiId)
                .col(ApiVersions::Label)
                .unique()
                .to_owned(),
        )
        .await?;

        m.create_table(
            created_updated(
                Table::create()
                    .table(Routes::Table)
                    .col(string(Routes::Id).primary_key())
                    .col(string(Routes::VersionId))
                    .col(text(Routes::Spec))
                    .foreign_key(&mut fk(
                        "fk_routes_version",
                        (Routes::Table, Routes::VersionId),
                        (ApiVersions::Table, ApiVersions::Id),
                        ForeignKeyAction::Cascade,
                    )),
            )
            .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create().name("ix_routes_version").table(Routes::Table).col(Routes::VersionId).to_owned(),
        )
        .await?;

        m.create_table(
            created_updated(
                Table::create()
                    .table(Plans::Table)
                    .col(string(Plans::Id).primary_key())
                    .col(string_uniq(Plans::Slug))
                    .col(string(Plans::Name))
                    .col(text(Plans::Description))
                    .col(text_null(Plans::RateLimit))
                    .col(text_null(Plans::Quota))
                    .col(boolean(Plans::RequiresApproval)),
            )
            .to_owned(),
        )
        .await?;

        m.create_table(
            created_updated(
                Table::create()
                    .table(Developers::Table)
                    .col(string(Developers::Id).primary_key())
                    .col(string_uniq(Developers::Email))
                    .col(string(Developers::Name)),
            )
            .to_owned(),
        )
        .await?;

        m.create_table(
            created_updated(
                Table::create()
                    .table(Applications::Table)
                    .col(string(Applications::Id).primary_key())
                    .col(string(Applications::DeveloperId))
                    .col(string(Applications::Name))
                    .col(text(Applications::Description))
                    .foreign_key(&mut fk(
                        "fk_applications_developer",
                        (Applications::Table, Applications::DeveloperId),
                        (Developers::Table, Developers::Id),
                        ForeignKeyAction::Cascade,
                    )),
            )
            .to_owned(),
        )
        .await?;

        m.create_table(
            created_updated(
                Table::create()
                    .table(Subscriptions::Table)
                    .col(string(Subscriptions::Id).primary_key())
                    .col(string(Subscriptions::ApplicationId))
                    .col(string(Subscriptions::VersionId))
                    .col(string(Subscriptions::PlanId))
                    .col(string(Subscriptions::State))
                    .foreign_key(&mut fk(
                        "fk_subscriptions_application",
                        (Subscriptions::Table, Subscriptions::ApplicationId),
                        (Applications::Table, Applications::Id),
                        ForeignKeyAction::Cascade,
                    ))
                    .foreign_key(&mut fk(
                        "fk_subscriptions_version",
                        (Subscriptions::Table, Subscriptions::VersionId),
                        (ApiVersions::Table, ApiVersions::Id),
                        ForeignKeyAction::Cascade,
                    ))
                    .foreign_key(&mut fk(
                        "fk_subscriptions_plan",
                        (Subscriptions::Table, Subscriptions::PlanId),
                        (Plans::Table, Plans::Id),
                        ForeignKeyAction::Restrict,
                    )),
            )
            .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ux_subscriptions_app_version")
                .table(Subscriptions::Table)
                .col(Subscriptions::ApplicationId)
                .col(Subscriptions::VersionId)
                .unique()
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(ApiKeys::Table)
                .col(string(ApiKeys::Id).primary_key())
                .col(string(ApiKeys::ApplicationId))
                .col(string(ApiKeys::Name))
                .col(string(ApiKeys::Prefix))
                .col(string_uniq(ApiKeys::KeyHash))
                .col(timestamp_with_time_zone_null(ApiKeys::ExpiresAt))
                .col(timestamp_with_time_zone_null(ApiKeys::RevokedAt))
                .col(timestamp_with_time_zone(ApiKeys::CreatedAt))
                .foreign_key(&mut fk(
                    "fk_keys_application",
                    (ApiKeys::Table, ApiKeys::ApplicationId),
                    (Applications::Table, Applications::Id),
                    ForeignKeyAction::Cascade,
                ))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Snapshots::Table)
                .col(big_integer(Snapshots::Version).primary_key())
                .col(string(Snapshots::Checksum))
                .col(text(Snapshots::Content))
                .col(timestamp_with_time_zone(Snapshots::CreatedAt))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(AuditLog::Table)
                .col(string(AuditLog::Id).primary_key())
                .col(timestamp_with_time_zone(AuditLog::At))
                .col(string(AuditLog::Actor))
                .col(string(AuditLog::Action))
                .col(string(AuditLog::ResourceType))
                .col(string(AuditLog::ResourceId))
                .col(text(AuditLog::Detail))
                .to_owned(),
        )
        .await?;
        m.create_index(Index::create().name("ix_audit_at").table(AuditLog::Table).col(AuditLog::At).to_owned()).await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            AuditLog::Table.into_iden(),
            Snapshots::Table.into_iden(),
            ApiKeys::Table.into_iden(),
            Subscriptions::Table.into_iden(),
            Applications::Table.into_iden(),
            Developers::Table.into_iden(),
            Plans::Table.into_iden(),
            Routes::Table.into_iden(),
            ApiVersions::Table.into_iden(),
            Apis::Table.into_iden(),
            Upstreams::Table.into_iden(),
            AdminTokens::Table.into_iden(),
        ] {
            m.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum AdminTokens {
    Table,
    Id,
    Name,
    Prefix,
    TokenHash,
    CreatedAt,
    RevokedAt,
}

#[derive(DeriveIden)]
enum Upstreams {
    Table,
    Id,
    Name,
    Spec,
}

#[derive(DeriveIden)]
enum Apis {
    Table,
    Id,
    Slug,
    Name,
    Description,
    Tags,
    Owner,
}

#[derive(DeriveIden)]
enum ApiVersions {
    Table,
    Id,
    ApiId,
    Label,
    State,
    BasePath,
    UpstreamId,
    OpenapiDocument,
    SunsetAt,
    DeprecatedAt,
    SuccessorId,
}

#[derive(DeriveIden)]
enum Routes {
    Table,
    Id,
    VersionId,
    Spec,
}

#[derive(DeriveIden)]
enum Plans {
    Table,
    Id,
    Slug,
    Name,
    Description,
    RateLimit,
    Quota,
    RequiresApproval,
}

#[derive(DeriveIden)]
enum Developers {
    Table,
    Id,
    Email,
    Name,
}

#[derive(DeriveIden)]
enum Applications {
    Table,
    Id,
    DeveloperId,
    Name,
    Description,
}

#[derive(DeriveIden)]
enum Subscriptions {
    Table,
    Id,
    ApplicationId,
    VersionId,
    PlanId,
    State,
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    ApplicationId,
    Name,
    Prefix,
    KeyHash,
    ExpiresAt,
    RevokedAt,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Snapshots {
    Table,
    Version,
    Checksum,
    Content,
    CreatedAt,
}

#[derive(DeriveIden)]
enum AuditLog {
    Table,
    Id,
    At,
    Actor,
    Action,
    ResourceType,
    ResourceId,
    Detail,
}
