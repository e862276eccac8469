-- The outbox (issue 13): messages, their attachments as chunked blobs, every attempt, the
-- idempotency records of POST /api/v1/mail, uploads and report outputs. Times the queue
-- compares are milliseconds since the Unix epoch, so SQLite and PostgreSQL order them alike.

-- File contents, in chunks of at most 1 MiB: streamed in and out, never held whole, and
-- readable by every instance (nothing depends on a shared disk).
CREATE TABLE blobs (
    id         TEXT PRIMARY KEY NOT NULL,
    size       BIGINT NOT NULL,
    sha256     TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE TABLE blob_chunks (
    blob_id TEXT NOT NULL REFERENCES blobs (id) ON DELETE CASCADE,
    n       BIGINT NOT NULL,
    data    BYTEA NOT NULL,
    PRIMARY KEY (blob_id, n)
);

CREATE TABLE uploads (
    id           TEXT PRIMARY KEY NOT NULL,
    api_key      TEXT NOT NULL,
    name         TEXT NOT NULL,
    content_type TEXT NOT NULL,
    blob_id      TEXT NOT NULL REFERENCES blobs (id),
    created_ms   BIGINT NOT NULL,
    expires_ms   BIGINT NOT NULL
);
CREATE INDEX uploads_expires ON uploads (expires_ms);

CREATE TABLE outbox (
    id                  TEXT PRIMARY KEY NOT NULL,
    api_key             TEXT NOT NULL,
    company             TEXT NOT NULL,
    function            TEXT NOT NULL,
    profile             TEXT NOT NULL,
    provider            TEXT NOT NULL,
    operator            TEXT,
    message             TEXT NOT NULL,   -- JSON: recipients, the rendered subject and bodies
    state               TEXT NOT NULL CHECK (state IN ('queued', 'sending', 'retrying', 'held', 'sent', 'failed', 'cancelled')),
    step                TEXT NOT NULL CHECK (step IN ('new', 'drafting', 'draft', 'submitting', 'done')),
    draft_id            TEXT,
    internet_message_id TEXT,
    attempts            BIGINT NOT NULL,
    reason              TEXT,            -- why it waits or failed: JSON {kind, detail, code?}
    created_ms          BIGINT NOT NULL,
    next_attempt_ms     BIGINT NOT NULL,
    submitted_ms        BIGINT,
    sent_ms             BIGINT,
    lease_owner         TEXT,
    lease_until_ms      BIGINT
);
CREATE INDEX outbox_due ON outbox (state, next_attempt_ms);
CREATE INDEX outbox_key ON outbox (api_key, created_ms);

CREATE TABLE outbox_attachments (
    message_id   TEXT NOT NULL REFERENCES outbox (id) ON DELETE CASCADE,
    n            BIGINT NOT NULL,
    name         TEXT NOT NULL,
    content_type TEXT NOT NULL,
    blob_id      TEXT NOT NULL REFERENCES blobs (id),
    size         BIGINT NOT NULL,
    delivered    BOOLEAN NOT NULL,       -- on the draft (Graph) — recorded before the next one
    PRIMARY KEY (message_id, n)
);
CREATE INDEX outbox_attachments_blob ON outbox_attachments (blob_id);

CREATE TABLE outbox_attempts (
    message_id TEXT NOT NULL REFERENCES outbox (id) ON DELETE CASCADE,
    n          BIGINT NOT NULL,
    at_ms      BIGINT NOT NULL,
    outcome    TEXT NOT NULL CHECK (outcome IN ('sent', 'transient', 'permanent', 'ambiguous')),
    detail     TEXT NOT NULL,
    PRIMARY KEY (message_id, n)
);

-- Idempotency-Key records, per API key, kept at least 7 days.
CREATE TABLE idempotency (
    api_key      TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status       BIGINT,                -- absent while the first request is in progress
    response     TEXT,
    message_id   TEXT,
    created_ms   BIGINT NOT NULL,
    PRIMARY KEY (api_key, key)
);
CREATE INDEX idempotency_created ON idempotency (created_ms);

CREATE TABLE reports (
    id              TEXT PRIMARY KEY NOT NULL,
    api_key         TEXT NOT NULL,
    company         TEXT NOT NULL,
    operator        TEXT NOT NULL,
    report          TEXT NOT NULL,
    title           TEXT NOT NULL,
    document_type   TEXT,
    document_number TEXT,
    mail_id         TEXT,
    created_ms      BIGINT NOT NULL,
    expires_ms      BIGINT NOT NULL
);
CREATE INDEX reports_operator ON reports (operator, created_ms);
CREATE TABLE report_files (
    report_id    TEXT NOT NULL REFERENCES reports (id) ON DELETE CASCADE,
    n            BIGINT NOT NULL,
    name         TEXT NOT NULL,
    content_type TEXT NOT NULL,
    blob_id      TEXT NOT NULL REFERENCES blobs (id),
    size         BIGINT NOT NULL,
    PRIMARY KEY (report_id, n)
);
CREATE INDEX report_files_blob ON report_files (blob_id);
