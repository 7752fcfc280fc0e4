-- keygate: tenants' status and plan (JSON), read by the entitlement source.
CREATE TABLE keygate_tenants (
    id      TEXT PRIMARY KEY,
    status  TEXT NOT NULL,
    plan    TEXT NOT NULL
);
