-- Operator sign-in in progress: the authorization request's single-use state (stored as its
-- SHA-256, so a database read cannot complete someone's sign-in), its PKCE verifier (sealed by
-- the keyring) and nonce. Rows live 10 minutes.
CREATE TABLE signin_states (
    state_hash    TEXT PRIMARY KEY NOT NULL,
    operator_code TEXT NOT NULL REFERENCES operators (code) ON DELETE CASCADE,
    verifier      TEXT NOT NULL,
    nonce         TEXT NOT NULL,
    redirect_uri  TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    expires_at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX signin_states_expiry ON signin_states (expires_at);
