//! The developer portal's accounts: passwords (argon2id hashes), single-use account
//! tokens (email verification and password reset, stored as keyed hashes), the
//! development outbox, browser sessions and OpenID Connect identities; developers
//! gain the time their email address was verified.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

fn to_developer(name: &str, from: (impl IntoIden + 'static, impl IntoIden + 'static)) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(name)
        .from(from.0, from.1)
        .to(Developers::Table, Developers::Id)
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(Developers::Table)
                .add_column(timestamp_with_time_zone_null(Developers::EmailVerifiedAt))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(DeveloperPasswords::Table)
                .col(string(DeveloperPasswords::DeveloperId).primary_key())
                .col(text(DeveloperPasswords::PasswordHash))
                .col(timestamp_with_time_zone(DeveloperPasswords::UpdatedAt))
                .foreign_key(&mut to_developer(
                    "fk_passwords_developer",
                    (DeveloperPasswords::Table, DeveloperPasswords::DeveloperId),
                ))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(AccountTokens::Table)
                .col(string(AccountTokens::TokenHash).primary_key())
                .col(string(AccountTokens::DeveloperId))
                .col(string(AccountTokens::Purpose))
                .col(timestamp_with_time_zone(AccountTokens::CreatedAt))
                .col(timestamp_with_time_zone(AccountTokens::ExpiresAt))
                .col(timestamp_with_time_zone_null(AccountTokens::UsedAt))
                .foreign_key(&mut to_developer(
                    "fk_account_tokens_developer",
                    (AccountTokens::Table, AccountTokens::DeveloperId),
                ))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_account_tokens_developer")
                .table(AccountTokens::Table)
                .col(AccountTokens::DeveloperId)
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Outbox::Table)
                .col(string(Outbox::Id).primary_key())
                .col(string(Outbox::ToAddress))
                .col(text(Outbox::Subject))
                .col(text(Outbox::Body))
                .col(timestamp_with_time_zone(Outbox::CreatedAt))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(PortalSessions::Table)
                .col(string(PortalSessions::Id).primary_key())
                .col(string_null(PortalSessions::DeveloperId))
                .col(text(PortalSessions::Data))
                .col(timestamp_with_time_zone(PortalSessions::ExpiryDate))
                .foreign_key(&mut to_developer(
                    "fk_portal_sessions_developer",
                    (PortalSessions::Table, PortalSessions::DeveloperId),
                ))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_portal_sessions_developer")
                .table(PortalSessions::Table)
                .col(PortalSessions::DeveloperId)
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_portal_sessions_expiry")
                .table(PortalSessions::Table)
                .col(PortalSessions::ExpiryDate)
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(OidcIdentities::Table)
                .col(string(OidcIdentities::Id).primary_key())
                .col(string(OidcIdentities::Issuer))
                .col(string(OidcIdentities::Subject))
                .col(string(OidcIdentities::DeveloperId))
                .col(timestamp_with_time_zone(OidcIdentities::CreatedAt))
                .foreign_key(&mut to_developer(
                    "fk_oidc_identities_developer",
                    (OidcIdentities::Table, OidcIdentities::DeveloperId),
                ))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ux_oidc_identities_issuer_subject")
                .table(OidcIdentities::Table)
                .col(OidcIdentities::Issuer)
                .col(OidcIdentities::Subject)
                .unique()
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            OidcIdentities::Table.into_iden(),
            PortalSessions::Table.into_iden(),
            Outbox::Table.into_iden(),
            AccountTokens::Table.into_iden(),
            DeveloperPasswords::Table.into_iden(),
        ] {
            m.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        m.alter_table(Table::alter().table(Developers::Table).drop_column(Developers::EmailVerifiedAt).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum Developers {
    Table,
    Id,
    EmailVerifiedAt,
}

#[derive(DeriveIden)]
enum DeveloperPasswords {
    Table,
    DeveloperId,
    PasswordHash,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum AccountTokens {
    Table,
    TokenHash,
    DeveloperId,
    Purpose,
    CreatedAt,
    ExpiresAt,
    UsedAt,
}

#[derive(DeriveIden)]
enum Outbox {
    Table,
    Id,
    ToAddress,
    Subject,
    Body,
    CreatedAt,
}

#[derive(DeriveIden)]
enum PortalSessions {
    Table,
    Id,
    DeveloperId,
    Data,
    ExpiryDate,
}

#[derive(DeriveIden)]
enum OidcIdentities {
    Table,
    Id,
    Issuer,
    Subject,
    DeveloperId,
    CreatedAt,
}
