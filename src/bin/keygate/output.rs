//! What a command prints: text for people, JSON for scripts (`--json`).

use keygate::lifecycle::IssuedKey;
use keygate::plan::{TenantEntitlements, TenantStatus};
use keygate::store::KeyInfo;
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use zeroize::Zeroizing;

/// A command's output, both forms rendered. Wiped when dropped: it may hold a secret.
pub(crate) struct Output {
    text: Zeroizing<String>,
    json: Zeroizing<String>,
    /// The key whose secret this output shows, and its tenant: taken back if the output
    /// cannot be printed, since nobody would hold the secret.
    pub(crate) shows_secret_of: Option<(String, IssuedKey)>,
}

impl Output {
    pub(crate) fn new(text: String, json: &impl Serialize) -> Output {
        // A value that can be serialized at all (plain data: strings, numbers, maps) serializes
        // to JSON without error.
        let json = serde_json::to_string_pretty(json).unwrap_or_else(|_| "null".into());
        Output {
            text: Zeroizing::new(text),
            json: Zeroizing::new(json + "\n"),
            shows_secret_of: None,
        }
    }

    /// This output shows the secret of `issued`, a key of `tenant`.
    pub(crate) fn showing_secret_of(mut self, tenant: &str, issued: IssuedKey) -> Output {
        self.shows_secret_of = Some((tenant.to_owned(), issued));
        self
    }

    pub(crate) fn render(&self, json: bool) -> &str {
        if json { &self.json } else { &self.text }
    }
}

/// A tenant as printed.
#[derive(Serialize)]
pub(crate) struct TenantView<'a> {
    id: &'a str,
    #[serde(flatten)]
    entitlements: &'a TenantEntitlements,
}

pub(crate) fn tenant(id: &str, entitlements: &TenantEntitlements) -> Output {
    Output::new(
        tenant_text(id, entitlements),
        &tenant_view(id, entitlements),
    )
}

pub(crate) fn tenant_view<'a>(id: &'a str, entitlements: &'a TenantEntitlements) -> TenantView<'a> {
    TenantView { id, entitlements }
}

pub(crate) fn tenant_text(id: &str, e: &TenantEntitlements) -> String {
    let status = match e.status {
        TenantStatus::Active => "active",
        TenantStatus::Suspended => "suspended",
    };
    let plan = &e.plan;
    let rate = |r: &Option<keygate::limit::RateLimit>| {
        r.map_or("none".to_owned(), |r| {
            format!("{}/{}s", r.limit, r.window.as_secs())
        })
    };
    let quota = plan.quota.map_or("none".to_owned(), |q| {
        let period = match q.period {
            keygate::limit::QuotaPeriod::Day => "day",
            _ => "month",
        };
        format!("{}/{period}", q.limit)
    });
    let scopes = plan.allowed_scopes.as_ref().map_or("any".to_owned(), |s| {
        s.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
    });
    format!(
        "tenant {id}: {status}, plan {} (rate limit {}, key rate limit {}, quota {quota}, scopes {scopes})\n",
        plan.name,
        rate(&plan.rate_limit),
        rate(&plan.key_rate_limit),
    )
}

/// A tenant just created, with its admin key if one was asked for.
#[derive(Serialize)]
pub(crate) struct Created<'a> {
    pub(crate) tenant: TenantView<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) admin_key: Option<WithSecret<'a>>,
}

/// A key with its secret, as printed once: the key's fields and `key`.
#[derive(Serialize)]
pub(crate) struct WithSecret<'a> {
    #[serde(flatten)]
    info: &'a KeyInfo,
    key: &'a str,
}

pub(crate) fn with_secret(issued: &IssuedKey) -> WithSecret<'_> {
    WithSecret {
        info: &issued.info,
        key: issued.key.expose_secret(),
    }
}

/// The text of a key with its secret: the details, then the secret on a line of its own.
pub(crate) fn issued_text(what: &str, tenant: &str, issued: &IssuedKey) -> String {
    format!(
        "{what} {} for tenant {tenant}\n{}key: {}\n(the secret is shown once: store it now)\n",
        issued.info.id,
        key_text(&issued.info),
        issued.key.expose_secret()
    )
}

pub(crate) fn issued(what: &str, tenant: &str, issued: IssuedKey) -> Output {
    Output::new(issued_text(what, tenant, &issued), &with_secret(&issued))
        .showing_secret_of(tenant, issued)
}

/// One key's details, a line each.
pub(crate) fn key_text(k: &KeyInfo) -> String {
    let time = |t: Option<time::OffsetDateTime>, none: &str| {
        t.and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_else(|| none.to_owned())
    };
    let scopes: Vec<&str> = k.scopes.iter().map(|s| s.as_str()).collect();
    format!(
        "  id:          {}\n  name:        {}\n  prefix:      {}…{}\n  scopes:      {}\n  environment: {}\n  created:     {}\n  expires:     {}\n  last used:   {}\n{}",
        k.id,
        k.name,
        k.prefix,
        k.last4,
        scopes.join(","),
        k.environment,
        time(Some(k.created_at), ""),
        time(k.expires_at, "never"),
        time(k.last_used_at, "never"),
        // Only a key in its rotation grace period is listed with an end.
        k.revoked_at
            .map(|t| format!("  stops:       {}\n", time(Some(t), "")))
            .unwrap_or_default(),
    )
}

pub(crate) fn key(k: &KeyInfo) -> Output {
    Output::new(format!("key {}\n{}", k.id, key_text(k)), k)
}

pub(crate) fn keys(tenant: &str, keys: &[KeyInfo]) -> Output {
    let mut text = format!("{} active key(s) of tenant {tenant}\n", keys.len());
    for k in keys {
        text.push_str(&key_text(k));
        text.push('\n');
    }
    Output::new(text, &keys)
}
