-- A directory is one tenant record: SSO finds the record by the token's directory id, and two
-- records for one directory made that choice arbitrary (issue 10).
CREATE UNIQUE INDEX tenants_directory ON tenants (lower(tenant_id));

-- Sign-in links are sealed tokens (see identity::signin_link); the nonce of each one used is
-- kept until the link would have expired, so a link works once.
CREATE TABLE signin_links_used (
    nonce         TEXT PRIMARY KEY NOT NULL,
    operator_code TEXT NOT NULL,
    expires_at    TEXT NOT NULL
);
CREATE INDEX signin_links_used_expiry ON signin_links_used (expires_at);
