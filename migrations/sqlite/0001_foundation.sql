-- Tenants, companies, operators, API keys and the audit log.
CREATE TABLE tenants (
    code           TEXT PRIMARY KEY NOT NULL,
    description    TEXT NOT NULL,
    tenant_id      TEXT NOT NULL,
    client_id      TEXT NOT NULL,
    platform       TEXT NOT NULL CHECK (platform IN ('public_client', 'spa')),
    redirect_url   TEXT NOT NULL,
    client_secret  TEXT,            -- sealed by the keyring, never plaintext
    authority      TEXT NOT NULL,
    graph_endpoint TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);

CREATE TABLE companies (
    code       TEXT PRIMARY KEY NOT NULL,
    name       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE operators (
    code          TEXT PRIMARY KEY NOT NULL,
    enabled       BOOLEAN NOT NULL,
    tenant_code   TEXT REFERENCES tenants (code),
    email         TEXT,
    signin        TEXT NOT NULL DEFAULT 'never' CHECK (signin IN ('never', 'linked', 'signin_required')),
    refresh_token TEXT,             -- sealed by the keyring, never plaintext
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
CREATE INDEX operators_tenant ON operators (tenant_code);

CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY NOT NULL,
    name       TEXT NOT NULL,
    role       TEXT NOT NULL CHECK (role IN ('admin', 'client')),
    key_hash   TEXT NOT NULL UNIQUE, -- SHA-256 of the key; the key itself is shown once
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
-- A name is unique among live keys; a revoked key keeps its row for the audit trail.
CREATE UNIQUE INDEX api_keys_live_name ON api_keys (name) WHERE revoked_at IS NULL;

CREATE TABLE audit_log (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    at     TEXT NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL            -- JSON; never holds a secret value
);
