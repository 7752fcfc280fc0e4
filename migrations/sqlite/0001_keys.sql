-- keygate: key records and the audit trail. Times are unix nanoseconds (UTC).
CREATE TABLE keygate_keys (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL,
    name          TEXT NOT NULL,
    digest        BLOB NOT NULL UNIQUE,
    prefix        TEXT NOT NULL,
    last4         TEXT NOT NULL,
    scopes        TEXT NOT NULL,
    environment   TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT,
    revoked_at    BIGINT,
    last_used_at  BIGINT,
    metadata      TEXT NOT NULL,
    restrictions  TEXT NOT NULL
);

CREATE INDEX keygate_keys_tenant_created ON keygate_keys (tenant_id, created_at, id);

CREATE TABLE keygate_audit (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    at          BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    tenant_id   TEXT NOT NULL,
    action      TEXT NOT NULL,
    key_id      TEXT NOT NULL,
    key_prefix  TEXT NOT NULL
);

CREATE INDEX keygate_audit_tenant ON keygate_audit (tenant_id, at);
