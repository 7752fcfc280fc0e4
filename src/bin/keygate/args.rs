//! The command line: every command, option and value parser.

use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand};
use keygate::hash::KeyDigest;
use keygate::key::Environment;
use keygate::limit::{Quota, QuotaPeriod, RateLimit};
use keygate::scope::Scope;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Operate keygate's keys and tenants on SQLite or PostgreSQL.
#[derive(Debug, Parser)]
#[command(name = "keygate", version)]
#[command(
    after_help = "Exit codes: 0 done, 1 database or runtime error, 2 usage error or invalid input, 3 not found, 4 conflict.\nThe key pepper, if keys are hashed with one, is read from KEYGATE_PEPPER only."
)]
pub(crate) struct Cli {
    /// The database: a file path or `sqlite:` URL for SQLite, `postgres://…` for PostgreSQL.
    #[arg(
        long,
        env = "KEYGATE_DATABASE_URL",
        global = true,
        hide_env_values = true
    )]
    pub(crate) database_url: Option<String>,

    /// Print JSON (one document on stdout; errors as one JSON line on stderr).
    #[arg(long, global = true)]
    pub(crate) json: bool,

    /// The key prefix of the service's key format (`sk` gives `sk_live_…`).
    #[arg(long, env = "KEYGATE_KEY_PREFIX", default_value = "sk", global = true)]
    pub(crate) key_prefix: String,

    /// The entropy of keys' secret part, in bits (128 to 512, a multiple of 8).
    #[arg(
        long,
        env = "KEYGATE_KEY_ENTROPY_BITS",
        default_value_t = 256,
        global = true
    )]
    pub(crate) key_entropy_bits: usize,

    /// Whether keys carry the CRC32 tail (`true` or `false`).
    #[arg(long, env = "KEYGATE_KEY_CHECKSUM", default_value_t = true, action = ArgAction::Set, global = true)]
    pub(crate) key_checksum: bool,

    /// Who makes the change, for the audit trail.
    #[arg(long, default_value = "cli", global = true, value_parser = readable_name)]
    pub(crate) actor: String,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create or update keygate's tables (every other command does it too).
    Migrate,
    /// Create, inspect, suspend and resume tenants, and set their plans.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Issue, list, inspect, rename, rotate, revoke and import keys.
    #[command(subcommand)]
    Key(KeyCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum TenantCommand {
    /// Create a tenant, optionally with its first admin key (printed once).
    Create {
        /// The tenant id: 1 to 64 characters of A-Z, a-z, 0-9, `_`, `.` and `-`.
        #[arg(value_parser = tenant_id)]
        tenant: String,
        #[command(flatten)]
        plan: PlanArgs,
        /// Create it suspended.
        #[arg(long)]
        suspended: bool,
        /// Also issue the tenant's first key, with scope `admin`, and print its secret once.
        #[arg(long)]
        admin_key: bool,
        /// The admin key's environment.
        #[arg(long, default_value = "live", requires = "admin_key")]
        environment: Environment,
        /// The admin key's name.
        #[arg(long, default_value = "admin", requires = "admin_key")]
        name: String,
    },
    /// Show a tenant's status and plan.
    Get {
        #[arg(value_parser = tenant_id)]
        tenant: String,
    },
    /// Suspend a tenant: every request of its keys is refused with 403.
    Suspend {
        #[arg(value_parser = tenant_id)]
        tenant: String,
    },
    /// Resume a suspended tenant.
    Resume {
        #[arg(value_parser = tenant_id)]
        tenant: String,
    },
    /// Replace a tenant's plan (options left out are unset: no limit).
    SetPlan {
        #[arg(value_parser = tenant_id)]
        tenant: String,
        #[command(flatten)]
        plan: PlanArgs,
    },
}

/// A tenant's plan.
#[derive(Debug, Args)]
pub(crate) struct PlanArgs {
    /// The plan's name.
    #[arg(long = "plan", default_value = "default", value_parser = readable_name)]
    pub(crate) plan_name: String,
    /// The tenant's rate limit, shared by its keys: `<n>/<window>`, e.g. `600/min`, `10/s`,
    /// `5000/h`, `100/30s`.
    #[arg(long, value_parser = rate_limit)]
    pub(crate) rate_limit: Option<RateLimit>,
    /// A rate limit for each key of the tenant, like --rate-limit.
    #[arg(long, value_parser = rate_limit)]
    pub(crate) key_rate_limit: Option<RateLimit>,
    /// The tenant's quota: `<n>/day` or `<n>/month`.
    #[arg(long, value_parser = quota)]
    pub(crate) quota: Option<Quota>,
    /// The only scopes the tenant's keys may use, comma-separated (default: any).
    #[arg(long, value_delimiter = ',', value_parser = scope)]
    pub(crate) allowed_scopes: Option<Vec<Scope>>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum KeyCommand {
    /// Issue a key and print its secret, once.
    Issue {
        #[arg(long, value_parser = tenant_id)]
        tenant: String,
        #[command(flatten)]
        key: NewKeyArgs,
        /// Create the tenant (active, plan `default`, no limits) if it does not exist.
        #[arg(long)]
        create_tenant: bool,
    },
    /// List a tenant's active keys, oldest first.
    List {
        #[arg(long, value_parser = tenant_id)]
        tenant: String,
    },
    /// Show one active key.
    Get {
        #[arg(long, value_parser = tenant_id)]
        tenant: String,
        key_id: String,
    },
    /// Rename an active key.
    Rename {
        #[arg(long, value_parser = tenant_id)]
        tenant: String,
        key_id: String,
        /// The new name.
        #[arg(long)]
        name: String,
    },
    /// Replace a key's secret and print the new one, once.
    Rotate {
        #[arg(long, value_parser = tenant_id)]
        tenant: String,
        key_id: String,
        /// Seconds during which the old key keeps working (at most 30 days).
        #[arg(long, default_value_t = 0)]
        grace_seconds: u64,
    },
    /// Revoke an active key: its next request is refused.
    Revoke {
        #[arg(long, value_parser = tenant_id)]
        tenant: String,
        key_id: String,
    },
    /// Import a key issued elsewhere by the hex SHA-256 of its secret.
    ///
    /// The key must have the service's format (e.g. `sk_live_<64 hex>` with
    /// --key-checksum false) and keys must be hashed with plain SHA-256 (no pepper).
    Import {
        #[arg(long, value_parser = tenant_id)]
        tenant: String,
        /// The SHA-256 of the whole key, 64 hex characters.
        #[arg(long, value_parser = digest)]
        sha256: KeyDigest,
        /// The key's last four characters, for display.
        #[arg(long)]
        last4: Option<String>,
        #[command(flatten)]
        key: NewKeyArgs,
    },
}

/// What a new or imported key holds.
#[derive(Debug, Args)]
pub(crate) struct NewKeyArgs {
    /// A scope of the key; repeat for several.
    #[arg(long = "scope", required = true)]
    pub(crate) scopes: Vec<String>,
    /// The key's name.
    #[arg(long, default_value = "cli")]
    pub(crate) name: String,
    /// `live` or `test`.
    #[arg(long, default_value = "live")]
    pub(crate) environment: Environment,
    /// When the key stops working, RFC 3339 (e.g. `2030-01-01T00:00:00Z`).
    #[arg(long, value_parser = rfc3339)]
    pub(crate) expires_at: Option<OffsetDateTime>,
    /// A JSON object handed to the service with the tenant.
    #[arg(long, value_parser = metadata)]
    pub(crate) metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

/// 1 to 64 characters of `A-Z`, `a-z`, `0-9`, `_`, `.` and `-`.
fn tenant_id(s: &str) -> Result<String, String> {
    let valid = (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if valid {
        Ok(s.to_owned())
    } else {
        Err("a tenant id is 1 to 64 characters of A-Z, a-z, 0-9, `_`, `.` and `-`".into())
    }
}

/// A name people read in listings and the audit trail (a plan's, the actor's), held to the rule
/// of a key's name: trimmed, 1 to 128 characters, no control or formatting characters.
fn readable_name(s: &str) -> Result<String, String> {
    keygate::lifecycle::validate_name(s).map_err(|e| e.to_string())
}

/// `<n>/<window>`: the window a unit (`s`, `min`, `h`, `day` and their long forms) or a
/// number of seconds (`30s`).
fn rate_limit(s: &str) -> Result<RateLimit, String> {
    const FORM: &str = "expected <n>/<window>, e.g. 600/min, 10/s, 5000/h, 100/30s";
    let (n, window) = s.split_once('/').ok_or(FORM)?;
    let limit: u32 = n.trim().parse().map_err(|_| FORM)?;
    if limit == 0 {
        return Err("the limit must be at least 1".into());
    }
    let seconds = match window.trim() {
        "s" | "sec" | "second" => 1,
        "m" | "min" | "minute" => 60,
        "h" | "hour" => 3600,
        "d" | "day" => 86_400,
        other => other
            .strip_suffix('s')
            .and_then(|n| n.parse::<u64>().ok())
            .filter(|n| *n > 0)
            .ok_or(FORM)?,
    };
    Ok(RateLimit {
        limit,
        window: Duration::from_secs(seconds),
    })
}

/// `<n>/day` or `<n>/month`.
fn quota(s: &str) -> Result<Quota, String> {
    const FORM: &str = "expected <n>/day or <n>/month, e.g. 1000000/month";
    let (n, period) = s.split_once('/').ok_or(FORM)?;
    let limit: u64 = n.trim().parse().map_err(|_| FORM)?;
    let period = match period.trim() {
        "day" => QuotaPeriod::Day,
        "month" => QuotaPeriod::Month,
        _ => return Err(FORM.into()),
    };
    Ok(Quota { limit, period })
}

fn scope(s: &str) -> Result<Scope, String> {
    Scope::new(s.trim()).map_err(|e| e.to_string())
}

fn digest(s: &str) -> Result<KeyDigest, String> {
    KeyDigest::from_hex(s.trim()).map_err(|e| e.to_string())
}

fn rfc3339(s: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(s, &Rfc3339)
        .map_err(|_| "expected an RFC 3339 time, e.g. 2030-01-01T00:00:00Z".into())
}

fn metadata(s: &str) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    match serde_json::from_str(s) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        _ => Err("expected a JSON object, e.g. {\"team\":\"core\"}".into()),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// clap's own checks of the definitions (unique names, valid defaults), which it otherwise
    /// runs only when a command is parsed.
    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn rate_limits_and_quotas_parse() {
        assert_eq!(rate_limit("600/min"), Ok(RateLimit::per_minute(600)));
        assert_eq!(rate_limit("10/s"), Ok(RateLimit::per_second(10)));
        assert_eq!(
            rate_limit("100/30s").map(|r| r.window),
            Ok(Duration::from_secs(30))
        );
        assert!(rate_limit("0/min").is_err());
        assert!(rate_limit("5/0s").is_err());
        assert!(rate_limit("5/fortnight").is_err());
        assert_eq!(
            quota("7/day"),
            Ok(Quota {
                limit: 7,
                period: QuotaPeriod::Day
            })
        );
        assert!(quota("7/year").is_err());
        assert!(tenant_id(&"a".repeat(64)).is_ok());
        assert!(tenant_id(&"a".repeat(65)).is_err());
        assert!(tenant_id("").is_err());
    }
}
