-- Email profiles (issue 12): which mailbox, through which provider, sends which business
-- functions, system-wide or for some companies.
CREATE TABLE email_profiles (
    name        TEXT PRIMARY KEY NOT NULL,
    description TEXT NOT NULL,
    provider    TEXT NOT NULL CHECK (provider IN ('smtp', 'graph_delegate', 'graph_direct')),
    system_wide BOOLEAN NOT NULL,   -- else the companies in email_profile_companies
    enabled     BOOLEAN NOT NULL,
    functions   TEXT NOT NULL,      -- JSON array of function names
    settings    TEXT NOT NULL,      -- JSON of the provider's settings; never a secret
    tenant_code TEXT REFERENCES tenants (code),  -- the tenant the settings name, if any
    secret_kind TEXT CHECK (secret_kind IN ('smtp_password', 'graph_client_secret')),
    secret      TEXT,               -- sealed by the keyring, never plaintext
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
-- Names are unique without regard to case.
CREATE UNIQUE INDEX email_profiles_name ON email_profiles (lower(name));
CREATE INDEX email_profiles_tenant ON email_profiles (tenant_code);

CREATE TABLE email_profile_companies (
    profile TEXT NOT NULL REFERENCES email_profiles (name) ON DELETE CASCADE,
    company TEXT NOT NULL REFERENCES companies (code),
    PRIMARY KEY (profile, company)
);
CREATE INDEX email_profile_companies_company ON email_profile_companies (company);

-- The claim rule, kept by the database so two racing requests cannot both win: one enabled
-- profile per function and scope ('*' system-wide, else a company code). Only enabled
-- profiles hold claims.
CREATE TABLE email_profile_claims (
    function TEXT NOT NULL,
    scope    TEXT NOT NULL,
    profile  TEXT NOT NULL REFERENCES email_profiles (name) ON DELETE CASCADE,
    PRIMARY KEY (function, scope)
);
CREATE INDEX email_profile_claims_profile ON email_profile_claims (profile);
