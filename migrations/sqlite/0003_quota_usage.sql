-- keygate: durable quota usage, leased out in blocks (LeasedQuotaLimiter). One row per tenant
-- and calendar period; `used` counts every unit granted and not given back.
CREATE TABLE keygate_quota_usage (
    tenant_id     TEXT NOT NULL,
    period        TEXT NOT NULL,
    period_start  BIGINT NOT NULL,
    used          BIGINT NOT NULL,
    last_grant    BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, period, period_start)
);
