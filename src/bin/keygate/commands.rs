//! Each command, on the database: what it changes and what it prints.

use keygate::hash::KeyHasher;
use keygate::key::{KeyFormat, KeyScheme};
use keygate::lifecycle::{KeyManager, NewKey};
use keygate::plan::{Plan, TenantEntitlements, TenantStatus};
use keygate::setup::Database;
use serde_json::json;

use crate::args::{Cli, Command, KeyCommand, NewKeyArgs, PlanArgs, TenantCommand};
use crate::error::{CliError, Kind};
use crate::output::{self, Output};

/// Runs the command line's command, and hands its output to `print`. A key whose secret could
/// not be printed is taken back ([`KeyManager::withdraw`]): nobody would hold its secret, and
/// a rotation without grace would have left the tenant without the key it replaced.
pub(crate) async fn run(
    cli: Cli,
    print: impl FnOnce(&Output) -> std::io::Result<()>,
) -> Result<(), CliError> {
    let scheme = scheme(&cli)?;
    let url = cli.database_url.as_deref().unwrap_or_default();
    if url.trim().is_empty() {
        return Err(CliError::new(
            Kind::Invalid,
            "no database: pass --database-url or set KEYGATE_DATABASE_URL",
        ));
    }
    let db = Database::connect(url).await?;
    let manager = db.key_manager().scheme(scheme).build();
    let actor = cli.actor.as_str();
    let output = match cli.command {
        Command::Migrate => Ok(Output::new(
            format!("{} database migrated\n", db.kind()),
            &json!({"migrated": true, "database": db.kind()}),
        )),
        Command::Tenant(command) => tenant(&db, &manager, actor, command).await,
        Command::Key(command) => key(&db, &manager, actor, command).await,
    }?;
    let Err(error) = print(&output) else {
        return Ok(());
    };
    let not_printed = format!("could not print the output ({error})");
    let Some((tenant, issued)) = &output.shows_secret_of else {
        return Err(CliError::new(Kind::Runtime, not_printed));
    };
    let id = &issued.info.id;
    let message = match manager.withdraw(actor, tenant, issued).await {
        Ok(()) => format!(
            "{not_printed}; key {id}, whose secret it showed, was taken back: revoked, and a key it replaced in a rotation active again"
        ),
        Err(e) => format!(
            "{not_printed}; taking back key {id}, whose secret it showed, failed ({e}): revoke it"
        ),
    };
    Err(CliError::new(Kind::Runtime, message))
}

/// The key scheme from the options and `KEYGATE_PEPPER` (from the environment only, so that
/// it never shows in a process listing).
fn scheme(cli: &Cli) -> Result<KeyScheme, CliError> {
    let invalid = |e: keygate::key::KeyFormatError| CliError::new(Kind::Invalid, e.to_string());
    let format = KeyFormat::new(&cli.key_prefix)
        .map_err(invalid)?
        .with_entropy_bits(cli.key_entropy_bits)
        .map_err(invalid)?
        .with_checksum(cli.key_checksum);
    let hasher = match std::env::var_os("KEYGATE_PEPPER") {
        Some(pepper) if !pepper.is_empty() => KeyHasher::hmac_sha256(pepper.as_encoded_bytes()),
        _ => KeyHasher::sha256(),
    };
    Ok(KeyScheme::new(format, hasher))
}

async fn tenant(
    db: &Database,
    manager: &KeyManager,
    actor: &str,
    command: TenantCommand,
) -> Result<Output, CliError> {
    match command {
        TenantCommand::Create {
            tenant,
            plan,
            suspended,
            admin_key,
            environment,
            name,
        } => {
            let entitlements = TenantEntitlements {
                status: if suspended {
                    TenantStatus::Suspended
                } else {
                    TenantStatus::Active
                },
                plan: plan_of(plan),
            };
            // What could make the admin key fail is checked before the tenant is written: a
            // refused key must not leave a tenant behind (a retry would find it "exists").
            let new = NewKey::new(name, ["admin"]).environment(environment);
            if admin_key {
                manager.validate(&new)?;
                if !manager.list(&tenant).await?.is_empty() {
                    return Err(CliError::new(
                        Kind::Conflict,
                        format!("tenant {tenant} has an active key already"),
                    ));
                }
            }
            if !db.create_tenant(&tenant, &entitlements).await? {
                return Err(CliError::new(
                    Kind::Conflict,
                    format!("tenant {tenant} exists already"),
                ));
            }
            let mut text = output::tenant_text(&tenant, &entitlements);
            let view = output::tenant_view(&tenant, &entitlements);
            if !admin_key {
                let created = output::Created {
                    tenant: view,
                    admin_key: None,
                };
                return Ok(Output::new(format!("created {text}"), &created));
            }
            let issued = manager
                .issue_first(actor, &tenant, new)
                .await?
                .ok_or_else(|| {
                    CliError::new(
                        Kind::Conflict,
                        format!("tenant {tenant} has an active key already"),
                    )
                })?;
            text = format!(
                "created {text}{}",
                output::issued_text("issued admin key", &tenant, &issued)
            );
            let created = output::Created {
                tenant: view,
                admin_key: Some(output::with_secret(&issued)),
            };
            Ok(Output::new(text, &created).showing_secret_of(&tenant, issued))
        }
        TenantCommand::Get { tenant } => {
            let found = db
                .tenant(&tenant)
                .await?
                .ok_or_else(|| no_tenant(&tenant))?;
            Ok(output::tenant(&tenant, &found))
        }
        TenantCommand::Suspend { tenant } => set_status(db, &tenant, TenantStatus::Suspended).await,
        TenantCommand::Resume { tenant } => set_status(db, &tenant, TenantStatus::Active).await,
        TenantCommand::SetPlan { tenant, plan } => {
            if !db.set_tenant_plan(&tenant, &plan_of(plan)).await? {
                return Err(no_tenant(&tenant));
            }
            shown(db, &tenant).await
        }
    }
}

async fn set_status(db: &Database, tenant: &str, status: TenantStatus) -> Result<Output, CliError> {
    if !db.set_tenant_status(tenant, status).await? {
        return Err(no_tenant(tenant));
    }
    shown(db, tenant).await
}

/// The tenant as it is now.
async fn shown(db: &Database, tenant: &str) -> Result<Output, CliError> {
    let found = db.tenant(tenant).await?.ok_or_else(|| no_tenant(tenant))?;
    Ok(output::tenant(tenant, &found))
}

/// Keys of a tenant that does not exist would be refused (403): refuse to make them.
async fn ensure_tenant(db: &Database, tenant: &str, hint: &str) -> Result<(), CliError> {
    if db.tenant(tenant).await?.is_some() {
        return Ok(());
    }
    Err(CliError::new(
        Kind::NotFound,
        format!("tenant {tenant} not found: create it with `keygate tenant create {tenant}`{hint}"),
    ))
}

fn no_tenant(tenant: &str) -> CliError {
    CliError::new(Kind::NotFound, format!("tenant {tenant} not found"))
}

fn plan_of(args: PlanArgs) -> Plan {
    Plan {
        name: args.plan_name,
        rate_limit: args.rate_limit,
        key_rate_limit: args.key_rate_limit,
        quota: args.quota,
        allowed_scopes: args.allowed_scopes.map(|s| s.into_iter().collect()),
    }
}

fn new_key(args: NewKeyArgs) -> NewKey {
    let mut new = NewKey::new(args.name, args.scopes).environment(args.environment);
    new.expires_at = args.expires_at;
    if let Some(metadata) = args.metadata {
        new = new.metadata(metadata);
    }
    new
}

async fn key(
    db: &Database,
    manager: &KeyManager,
    actor: &str,
    command: KeyCommand,
) -> Result<Output, CliError> {
    match command {
        KeyCommand::Issue {
            tenant,
            key,
            create_tenant,
        } => {
            if create_tenant {
                let default = TenantEntitlements::active(Plan {
                    name: "default".into(),
                    ..Plan::default()
                });
                // `false` when it exists: then there is nothing to create.
                db.create_tenant(&tenant, &default).await?;
            } else {
                ensure_tenant(db, &tenant, " or pass --create-tenant").await?;
            }
            let issued = manager.issue(actor, &tenant, new_key(key)).await?;
            Ok(output::issued("issued key", &tenant, issued))
        }
        KeyCommand::List { tenant } => {
            let keys = manager.list(&tenant).await?;
            // No key and no tenant: a typo in the tenant id, not an empty tenant.
            if keys.is_empty() && db.tenant(&tenant).await?.is_none() {
                return Err(no_tenant(&tenant));
            }
            Ok(output::keys(&tenant, &keys))
        }
        KeyCommand::Get { tenant, key_id } => {
            Ok(output::key(&manager.get(&tenant, &key_id).await?))
        }
        KeyCommand::Rename {
            tenant,
            key_id,
            name,
        } => Ok(output::key(
            &manager.rename(actor, &tenant, &key_id, &name).await?,
        )),
        KeyCommand::Rotate {
            tenant,
            key_id,
            grace_seconds,
        } => {
            let grace = (grace_seconds > 0).then(|| std::time::Duration::from_secs(grace_seconds));
            let issued = manager.rotate(actor, &tenant, &key_id, grace).await?;
            Ok(output::issued(
                &format!("rotated {key_id}: new key"),
                &tenant,
                issued,
            ))
        }
        KeyCommand::Revoke { tenant, key_id } => {
            manager.revoke(actor, &tenant, &key_id).await?;
            Ok(Output::new(
                format!("revoked {key_id} of tenant {tenant}\n"),
                &json!({"revoked": key_id, "tenant_id": tenant}),
            ))
        }
        KeyCommand::Import {
            tenant,
            sha256,
            last4,
            key,
        } => {
            ensure_tenant(db, &tenant, "").await?;
            let info = manager
                .import(actor, &tenant, sha256, last4.as_deref(), new_key(key))
                .await?;
            Ok(output::key(&info))
        }
    }
}
