//! The outbox (SPEC §3.4): queued messages, their attachments, every attempt, the leases that
//! let several workers and instances share the queue, and the idempotency records of
//! `POST /api/v1/mail`.
//!
//! Every step of a delivery is its own short transaction guarded by the lease
//! (`lease_owner`): a worker that lost its lease — it stalled past the lease and another
//! took the message over — can record nothing more, so two workers never both act on one
//! message.

use super::blobs::{BlobInfo, now_ms};
use super::{Db, Dialect, Result, Store, StoreError, corrupt};
use crate::domain::StoredMessage;
use serde::Serialize;
use serde_json::Value;

/// Where a message is (SPEC §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MailState {
    Queued,
    Sending,
    Retrying,
    Held,
    Sent,
    Failed,
    Cancelled,
}

impl MailState {
    pub const ALL: [Self; 7] = [
        Self::Queued,
        Self::Sending,
        Self::Retrying,
        Self::Held,
        Self::Sent,
        Self::Failed,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Sending => "sending",
            Self::Retrying => "retrying",
            Self::Held => "held",
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    /// [`Self::parse`] for a caller's filter: the message names the choices.
    pub fn parse_filter(raw: &str) -> Result<Self, String> {
        Self::parse(raw).ok_or_else(|| "must be one of queued, sending, retrying, held, sent, failed, cancelled".to_string())
    }
}

/// How far a Graph delivery got; each is committed before the next network call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing sent to the provider yet.
    New,
    /// A draft may have been created (the create was sent; its answer not recorded).
    Drafting,
    /// The draft exists and is recorded; attachments are added one by one.
    Draft,
    /// The send was (or is about to be) requested.
    Submitting,
    Done,
}

impl Step {
    fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Drafting => "drafting",
            Self::Draft => "draft",
            Self::Submitting => "submitting",
            Self::Done => "done",
        }
    }

    fn parse(raw: &str) -> Option<Self> {
        [Self::New, Self::Drafting, Self::Draft, Self::Submitting, Self::Done]
            .into_iter()
            .find(|s| s.as_str() == raw)
    }
}

/// What an attempt came to (SPEC §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Sent,
    Transient,
    Permanent,
    Ambiguous,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Transient => "transient",
            Self::Permanent => "permanent",
            Self::Ambiguous => "ambiguous",
        }
    }
}

pub struct NewAttachment {
    pub name: String,
    pub content_type: String,
    pub blob: BlobInfo,
}

pub struct NewMail {
    pub id: uuid::Uuid,
    pub api_key: String,
    pub company: String,
    pub function: String,
    pub profile: String,
    pub provider: String,
    pub operator: Option<String>,
    pub message: StoredMessage,
    pub attachments: Vec<NewAttachment>,
}

/// A claimed message, as the worker needs it.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: String,
    pub company: String,
    pub function: String,
    pub profile: String,
    pub provider: String,
    pub operator: Option<String>,
    pub message: StoredMessage,
    pub step: Step,
    pub draft_id: Option<String>,
    pub internet_message_id: Option<String>,
    pub attempts: u32,
    pub created_ms: i64,
    pub submitted_ms: Option<i64>,
    pub attachments: Vec<Attachment>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Attachment {
    pub n: i64,
    pub name: String,
    pub content_type: String,
    pub blob_id: String,
    pub size: i64,
    pub delivered: bool,
}

/// Why a message waits, failed or is held: shown as the message's `error`.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Reason {
    /// `signin_required`, `throttled`, `transient`, `permanent`, `unconfirmed`, `expired`, ….
    pub kind: String,
    pub detail: String,
    /// The provider's own code (`ErrorInvalidRecipients`, an SMTP reply code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
}

/// The end of one claim.
#[derive(Debug, Clone)]
pub enum Finish {
    Sent {
        internet_message_id: Option<String>,
        detail: String,
    },
    /// Back in the queue at `at_ms`; `attempt` is recorded (and counted) when the provider
    /// was tried, absent when the message only waited (a budget, a confirmation grace).
    Retry {
        at_ms: i64,
        reason: Reason,
        attempt: Option<Outcome>,
    },
    Failed {
        reason: Reason,
        outcome: Outcome,
    },
    Held {
        reason: Reason,
        outcome: Outcome,
    },
}

/// The worker no longer holds the message (its lease expired and another took it).
#[derive(Debug, thiserror::Error)]
#[error("the lease on message {0} was lost")]
pub struct LeaseLost(pub String);

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Lost(#[from] LeaseLost),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for StepError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.into())
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AttemptView {
    pub at: chrono::DateTime<chrono::Utc>,
    pub outcome: Outcome,
    pub detail: String,
}

/// A message as `GET /api/v1/mail/{id}` shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MailView {
    pub id: String,
    pub state: MailState,
    pub company: String,
    pub function: String,
    pub profile: String,
    pub provider: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    pub subject: String,
    pub recipients: usize,
    pub attachments: usize,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub next_attempt_at: Option<chrono::DateTime<chrono::Utc>>,
    pub sent_at: Option<chrono::DateTime<chrono::Utc>>,
    pub internet_message_id: Option<String>,
    pub attempts: Vec<AttemptView>,
    pub error: Option<Reason>,
    #[serde(skip)]
    pub api_key: String,
}

/// The cursor of the page after `messages`, a page of at most `limit`: absent on the last.
pub fn next_cursor(messages: &[MailView], limit: u32) -> Option<String> {
    (messages.len() == limit as usize)
        .then(|| messages.last().map(|m| m.id.clone()))
        .flatten()
}

/// The first answer to an idempotent request, or why there is none to give.
#[derive(Debug, Clone, PartialEq)]
pub enum Begun {
    /// This request is the first: go on, then [`Store::enqueue_mail`] records the answer.
    Fresh,
    Replay {
        status: u16,
        response: Value,
    },
    InProgress,
    /// The key was used with another body.
    Mismatch,
}

#[derive(sqlx::FromRow)]
struct MailRow {
    id: String,
    api_key: String,
    company: String,
    function: String,
    profile: String,
    provider: String,
    operator: Option<String>,
    message: String,
    state: String,
    step: String,
    draft_id: Option<String>,
    internet_message_id: Option<String>,
    attempts: i64,
    reason: Option<String>,
    created_ms: i64,
    next_attempt_ms: i64,
    submitted_ms: Option<i64>,
    sent_ms: Option<i64>,
}

const MAIL_COLUMNS: &str = "id, api_key, company, function, profile, provider, operator, message, state, step, draft_id, \
                            internet_message_id, attempts, reason, created_ms, next_attempt_ms, submitted_ms, sent_ms";

fn at(ms: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

impl MailRow {
    fn message(&self) -> Result<StoredMessage> {
        serde_json::from_str(&self.message).map_err(|e| corrupt("message", &self.id, e))
    }

    fn state(&self) -> Result<MailState> {
        MailState::parse(&self.state).ok_or_else(|| corrupt("message state", &self.state, "unknown"))
    }
}

/// Message ids are UUIDs; anything else names no message (and never reaches the database).
fn message_key(id: &str) -> Result<String> {
    uuid::Uuid::parse_str(id).map(|u| u.to_string()).map_err(|_| StoreError::NotFound {
        what: "message",
        key: id.to_string(),
    })
}

impl Store {
    /// Starts an idempotent request: records `key` for `api_key` as in progress, or says what
    /// the first request with it came to. A record left in progress longer than `stale_ms`
    /// (its request died with the process) is taken over.
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn begin_idempotent(&self, api_key: &str, key: &str, hash: &str, stale_ms: i64) -> Result<Begun> {
        let now = now_ms();
        let inserted = on_pool!(self, |p| sqlx::query(
            "INSERT INTO idempotency (api_key, key, request_hash, created_ms) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (api_key, key) DO NOTHING"
        )
        .bind(api_key)
        .bind(key)
        .bind(hash)
        .bind(now)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
        if inserted == 1 {
            return Ok(Begun::Fresh);
        }
        let row: Option<(String, Option<i64>, Option<String>, i64)> = on_pool!(self, |p| sqlx::query_as(
            "SELECT request_hash, status, response, created_ms FROM idempotency WHERE api_key = $1 AND key = $2"
        )
        .bind(api_key)
        .bind(key)
        .fetch_optional(p)
        .await)?;
        let Some((stored_hash, status, response, created)) = row else {
            // Swept between the two statements: start again.
            return Box::pin(self.begin_idempotent(api_key, key, hash, stale_ms)).await;
        };
        if stored_hash != hash {
            return Ok(Begun::Mismatch);
        }
        match (status, response) {
            (Some(status), Some(response)) => Ok(Begun::Replay {
                status: status as u16,
                response: serde_json::from_str(&response).map_err(|e| corrupt("idempotent answer", key, e))?,
            }),
            _ if created < now - stale_ms => {
                let taken = on_pool!(self, |p| sqlx::query(
                    "UPDATE idempotency SET created_ms = $4 WHERE api_key = $1 AND key = $2 AND status IS NULL AND created_ms = $3"
                )
                .bind(api_key)
                .bind(key)
                .bind(created)
                .bind(now)
                .execute(p)
                .await
                .map(|r| r.rows_affected()))?;
                Ok(if taken == 1 { Begun::Fresh } else { Begun::InProgress })
            }
            _ => Ok(Begun::InProgress),
        }
    }

    /// Forgets an in-progress key whose request failed (a corrected retry may use it again).
    pub async fn abandon_idempotent(&self, api_key: &str, key: &str) -> Result<()> {
        on_pool!(self, |p| sqlx::query(
            "DELETE FROM idempotency WHERE api_key = $1 AND key = $2 AND status IS NULL"
        )
        .bind(api_key)
        .bind(key)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Queues a message with its attachments and, when given, the idempotency key's answer —
    /// all in one transaction: never a message without its attachments, never an answer
    /// without its message.
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn enqueue_mail(&self, mail: &NewMail, idempotent: Option<(&str, u16, &Value)>) -> Result<()> {
        let now = now_ms();
        let message = serde_json::to_string(&mail.message).map_err(anyhow::Error::from)?;
        let id = mail.id.to_string();
        in_tx!(self, |tx| {
            sqlx::query(
                "INSERT INTO outbox (id, api_key, company, function, profile, provider, operator, message, state, step, \
                 attempts, created_ms, next_attempt_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'queued', 'new', 0, $9, $9)",
            )
            .bind(&id)
            .bind(&mail.api_key)
            .bind(&mail.company)
            .bind(&mail.function)
            .bind(&mail.profile)
            .bind(&mail.provider)
            .bind(&mail.operator)
            .bind(&message)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            for (n, a) in mail.attachments.iter().enumerate() {
                sqlx::query(
                    "INSERT INTO outbox_attachments (message_id, n, name, content_type, blob_id, size, delivered) \
                     VALUES ($1, $2, $3, $4, $5, $6, FALSE)",
                )
                .bind(&id)
                .bind(n as i64)
                .bind(&a.name)
                .bind(&a.content_type)
                .bind(&a.blob.id)
                .bind(a.blob.size as i64)
                .execute(&mut *tx)
                .await?;
            }
            // Who the operator mails is what the contact lookup ranks first (issue 15).
            if let Some(op) = &mail.operator {
                let m = &mail.message;
                for r in m.to.iter().chain(&m.cc).chain(&m.bcc) {
                    sqlx::query(
                        "INSERT INTO operator_recipients (operator, address, sends, last_ms) VALUES ($1, $2, 1, $3) \
                         ON CONFLICT (operator, address) DO UPDATE SET sends = operator_recipients.sends + 1, last_ms = excluded.last_ms",
                    )
                    .bind(op)
                    .bind(crate::contacts::normalise(r.address.as_str()))
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            if let Some((key, status, response)) = idempotent {
                sqlx::query("UPDATE idempotency SET status = $3, response = $4, message_id = $5 WHERE api_key = $1 AND key = $2")
                    .bind(&mail.api_key)
                    .bind(key)
                    .bind(i64::from(status))
                    .bind(response.to_string())
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?;
            }
        });
        Ok(())
    }

    /// Takes the next due message for `owner` until `lease_ms` from now: a queued or retrying
    /// message whose time has come, or one whose worker's lease ran out. The lease is
    /// committed before the caller makes any network call.
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn claim_mail(&self, owner: &str, lease_ms: i64) -> Result<Option<Claimed>> {
        let now = now_ms();
        let due = "(state IN ('queued', 'retrying') AND next_attempt_ms <= $3) OR (state = 'sending' AND lease_until_ms < $3)";
        // PostgreSQL: rows another instance is claiming are skipped, not waited for. SQLite
        // has one writer at a time, so the conditional update alone is exclusive.
        // PostgreSQL picks the partial index by itself; SQLite's planner prefers `outbox_due`
        // and a sort, so it is named.
        let (lock, pending) = match self.dialect() {
            Dialect::Postgres => (" FOR UPDATE SKIP LOCKED", "outbox"),
            Dialect::Sqlite => ("", "outbox INDEXED BY outbox_pending"),
        };
        // A message whose worker died first (its lease expired: it was claimed before any
        // queued one is due), else the oldest due one through the partial index
        // `outbox_pending` — one index entry read, not every pending message sorted. COALESCE
        // evaluates its second query only when the first finds nothing, in both databases.
        let pick = format!(
            "COALESCE((SELECT id FROM outbox WHERE state = 'sending' AND lease_until_ms < $3 LIMIT 1{lock}), \
             (SELECT id FROM {pending} WHERE state IN ('queued', 'retrying') AND next_attempt_ms <= $3 \
              ORDER BY next_attempt_ms LIMIT 1{lock}))"
        );
        let sql = format!(
            "UPDATE outbox SET state = 'sending', lease_owner = $1, lease_until_ms = $2 \
             WHERE id = {pick} AND ({due}) RETURNING {MAIL_COLUMNS}"
        );
        let row: Option<MailRow> = on_pool!(self, |p| sqlx::query_as(&sql)
            .bind(owner)
            .bind(now + lease_ms)
            .bind(now)
            .fetch_optional(p)
            .await)?;
        let Some(row) = row else { return Ok(None) };
        let attachments: Vec<Attachment> = on_pool!(self, |p| sqlx::query_as(
            "SELECT n, name, content_type, blob_id, size, delivered FROM outbox_attachments WHERE message_id = $1 ORDER BY n"
        )
        .bind(&row.id)
        .fetch_all(p)
        .await)?;
        Ok(Some(Claimed {
            message: row.message()?,
            step: Step::parse(&row.step).ok_or_else(|| corrupt("delivery step", &row.step, "unknown"))?,
            id: row.id,
            company: row.company,
            function: row.function,
            profile: row.profile,
            provider: row.provider,
            operator: row.operator,
            draft_id: row.draft_id,
            internet_message_id: row.internet_message_id,
            attempts: row.attempts as u32,
            created_ms: row.created_ms,
            submitted_ms: row.submitted_ms,
            attachments,
        }))
    }

    /// Records a step of a delivery (and renews the lease), only while `owner` holds it.
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn mail_step(
        &self,
        id: &str,
        owner: &str,
        step: Step,
        draft: Option<(&str, Option<&str>)>,
        lease_ms: i64,
    ) -> Result<(), StepError> {
        let now = now_ms();
        let submitted = (step == Step::Submitting).then_some(now);
        let (draft_id, imid) = draft.map_or((None, None), |(d, i)| (Some(d), i));
        let changed = on_pool!(self, |p| sqlx::query(
            "UPDATE outbox SET step = $3, lease_until_ms = $4, \
             draft_id = CASE WHEN $5 THEN $6 ELSE draft_id END, \
             internet_message_id = CASE WHEN $5 THEN $7 ELSE internet_message_id END, \
             submitted_ms = COALESCE($8, submitted_ms) \
             WHERE id = $1 AND lease_owner = $2 AND state = 'sending'"
        )
        .bind(id)
        .bind(owner)
        .bind(step.as_str())
        .bind(now + lease_ms)
        .bind(draft.is_some() || step == Step::New)
        .bind(draft_id)
        .bind(imid)
        .bind(submitted)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
        if changed == 0 {
            return Err(LeaseLost(id.to_string()).into());
        }
        Ok(())
    }

    /// Records that attachment `n` is on the draft.
    pub async fn mail_attachment_delivered(&self, id: &str, owner: &str, n: i64, lease_ms: i64) -> Result<(), StepError> {
        let now = now_ms();
        let changed = in_tx!(self, |tx| {
            let held = sqlx::query("UPDATE outbox SET lease_until_ms = $3 WHERE id = $1 AND lease_owner = $2 AND state = 'sending'")
                .bind(id)
                .bind(owner)
                .bind(now + lease_ms)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if held == 1 {
                sqlx::query("UPDATE outbox_attachments SET delivered = TRUE WHERE message_id = $1 AND n = $2")
                    .bind(id)
                    .bind(n)
                    .execute(&mut *tx)
                    .await?;
            }
            held
        });
        if changed == 0 {
            return Err(LeaseLost(id.to_string()).into());
        }
        Ok(())
    }

    /// Forgets which attachments reached a draft (the draft was replaced by a new one).
    pub async fn mail_attachments_reset(&self, id: &str) -> Result<()> {
        on_pool!(self, |p| sqlx::query(
            "UPDATE outbox_attachments SET delivered = FALSE WHERE message_id = $1"
        )
        .bind(id)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Ends a claim: the message's new state, the attempt recorded, the lease released.
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn finish_mail(&self, id: &str, owner: &str, finish: &Finish) -> Result<(), StepError> {
        let now = now_ms();
        let (state, next, reason, attempt, imid, detail): (&str, i64, Option<&Reason>, Option<Outcome>, Option<&str>, String) = match finish
        {
            Finish::Sent {
                internet_message_id,
                detail,
            } => (
                "sent",
                now,
                None,
                Some(Outcome::Sent),
                internet_message_id.as_deref(),
                detail.clone(),
            ),
            Finish::Retry { at_ms, reason, attempt } => ("retrying", *at_ms, Some(reason), *attempt, None, reason.detail.clone()),
            Finish::Failed { reason, outcome } => ("failed", now, Some(reason), Some(*outcome), None, reason.detail.clone()),
            Finish::Held { reason, outcome } => ("held", now, Some(reason), Some(*outcome), None, reason.detail.clone()),
        };
        let reason = reason.map(|r| serde_json::to_string(r).expect("a reason serializes"));
        let sent = (state == "sent").then_some(now);
        let changed = in_tx!(self, |tx| {
            let changed = sqlx::query(
                "UPDATE outbox SET state = $3, next_attempt_ms = $4, reason = $5, lease_owner = NULL, lease_until_ms = NULL, \
                 attempts = attempts + $6, sent_ms = COALESCE($7, sent_ms), \
                 internet_message_id = COALESCE($8, internet_message_id), step = CASE WHEN $3 = 'sent' THEN 'done' ELSE step END \
                 WHERE id = $1 AND lease_owner = $2 AND state = 'sending'",
            )
            .bind(id)
            .bind(owner)
            .bind(state)
            .bind(next)
            .bind(&reason)
            .bind(i64::from(attempt.is_some()))
            .bind(sent)
            .bind(imid)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if changed == 1
                && let Some(outcome) = attempt
            {
                let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox_attempts WHERE message_id = $1")
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
                sqlx::query("INSERT INTO outbox_attempts (message_id, n, at_ms, outcome, detail) VALUES ($1, $2, $3, $4, $5)")
                    .bind(id)
                    .bind(n + 1)
                    .bind(now)
                    .bind(outcome.as_str())
                    .bind(&detail)
                    .execute(&mut *tx)
                    .await?;
            }
            changed
        });
        if changed == 0 {
            return Err(LeaseLost(id.to_string()).into());
        }
        Ok(())
    }

    /// Hands a claimed message back untouched (the worker is shutting down).
    pub async fn release_mail(&self, id: &str, owner: &str) -> Result<()> {
        on_pool!(self, |p| sqlx::query(
            "UPDATE outbox SET state = CASE WHEN attempts = 0 THEN 'queued' ELSE 'retrying' END, \
             lease_owner = NULL, lease_until_ms = NULL, next_attempt_ms = $3 \
             WHERE id = $1 AND lease_owner = $2 AND state = 'sending'"
        )
        .bind(id)
        .bind(owner)
        .bind(now_ms())
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// The next time a message falls due (queued, retrying, or held by a lease), if any.
    pub async fn next_mail_due_ms(&self) -> Result<Option<i64>> {
        let next: Option<i64> = on_pool!(self, |p| sqlx::query_scalar(
            "SELECT MIN(CASE WHEN state = 'sending' THEN lease_until_ms ELSE next_attempt_ms END) FROM outbox \
             WHERE state IN ('queued', 'retrying', 'sending')"
        )
        .fetch_one(p)
        .await)?;
        Ok(next)
    }

    /// One message; `api_key` limits it to that key's own (a client key), `None` for an admin.
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn get_mail(&self, id: &str, api_key: Option<&str>) -> Result<MailView> {
        let key = message_key(id)?;
        let row: Option<MailRow> = on_pool!(self, |p| sqlx::query_as(&format!(
            "SELECT {MAIL_COLUMNS} FROM outbox WHERE id = $1"
        ))
        .bind(&key)
        .fetch_optional(p)
        .await)?;
        let row = row
            .filter(|r| api_key.is_none_or(|k| k == r.api_key))
            .ok_or_else(|| StoreError::NotFound {
                what: "message",
                key: id.to_string(),
            })?;
        let attempts: Vec<(i64, String, String)> = on_pool!(self, |p| sqlx::query_as(
            "SELECT at_ms, outcome, detail FROM outbox_attempts WHERE message_id = $1 ORDER BY n"
        )
        .bind(&key)
        .fetch_all(p)
        .await)?;
        let attachments: i64 = on_pool!(self, |p| sqlx::query_scalar(
            "SELECT COUNT(*) FROM outbox_attachments WHERE message_id = $1"
        )
        .bind(&key)
        .fetch_one(p)
        .await)?;
        let mut view = view(row)?;
        view.attachments = attachments as usize;
        view.attempts = attempts
            .into_iter()
            .map(|(ms, outcome, detail)| {
                let outcome = match outcome.as_str() {
                    "sent" => Outcome::Sent,
                    "transient" => Outcome::Transient,
                    "permanent" => Outcome::Permanent,
                    "ambiguous" => Outcome::Ambiguous,
                    other => return Err(corrupt("attempt outcome", other, "unknown")),
                };
                Ok(AttemptView {
                    at: at(ms),
                    outcome,
                    detail,
                })
            })
            .collect::<Result<_>>()?;
        Ok(view)
    }

    /// Messages newest first, after `cursor` (the id of the last one of the previous page).
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn list_mail(
        &self,
        api_key: Option<&str>,
        state: Option<MailState>,
        company: Option<&str>,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Vec<MailView>> {
        let after: Option<(i64, String)> = match cursor {
            Some(c) => {
                let key = message_key(c).map_err(|_| StoreError::Invalid {
                    field: "cursor",
                    message: "is not a cursor this service returned".into(),
                })?;
                let created: Option<i64> = on_pool!(self, |p| sqlx::query_scalar("SELECT created_ms FROM outbox WHERE id = $1")
                    .bind(&key)
                    .fetch_optional(p)
                    .await)?;
                Some((
                    created.ok_or_else(|| StoreError::Invalid {
                        field: "cursor",
                        message: "names no message (it may have been removed)".into(),
                    })?,
                    key,
                ))
            }
            None => None,
        };
        let (after_ms, after_id) = after.unwrap_or((i64::MAX, String::new()));
        let rows: Vec<MailRow> = on_pool!(self, |p| sqlx::query_as(&format!(
            "SELECT {MAIL_COLUMNS} FROM outbox WHERE ($1 IS NULL OR api_key = $1) AND ($2 IS NULL OR state = $2) \
             AND ($3 IS NULL OR company = $3) AND (created_ms < $4 OR (created_ms = $4 AND id < $5)) \
             ORDER BY created_ms DESC, id DESC LIMIT $6"
        ))
        .bind(api_key)
        .bind(state.map(MailState::as_str))
        .bind(company)
        .bind(after_ms)
        .bind(if after_id.is_empty() { "\u{10ffff}".to_string() } else { after_id })
        .bind(i64::from(limit))
        .fetch_all(p)
        .await)?;
        rows.into_iter().map(view).collect()
    }

    /// A failed or held message back in the queue, from where its delivery stopped.
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn retry_mail(&self, actor: &str, id: &str, api_key: Option<&str>) -> Result<MailView> {
        self.move_mail(actor, id, api_key, &["failed", "held"], "queued", "mail.retry")
            .await
    }

    /// A message that has not started sending taken out of the queue.
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn cancel_mail(&self, actor: &str, id: &str, api_key: Option<&str>) -> Result<MailView> {
        self.move_mail(actor, id, api_key, &["queued", "retrying", "held"], "cancelled", "mail.cancel")
            .await
    }

    async fn move_mail(&self, actor: &str, id: &str, api_key: Option<&str>, from: &[&str], to: &str, action: &str) -> Result<MailView> {
        let current = self.get_mail(id, api_key).await?;
        let key = current.id.clone();
        let moved = in_tx!(self, |tx| {
            // The state is checked in the update itself: a worker may claim it meanwhile.
            let moved = sqlx::query(
                // A held message is one whose delivery may have reached the server (SMTP's
                // RFC 1047 window); released by a person, it is sent again from the start.
                "UPDATE outbox SET state = $2, next_attempt_ms = $3, attempts = CASE WHEN $2 = 'queued' THEN 0 ELSE attempts END, \
                 step = CASE WHEN state = 'held' AND $2 = 'queued' THEN 'new' ELSE step END \
                 WHERE id = $1 AND state IN ($4, $5, $6)",
            )
            .bind(&key)
            .bind(to)
            .bind(now_ms())
            .bind(from[0])
            .bind(from.get(1).copied().unwrap_or(from[0]))
            .bind(from.get(2).copied().unwrap_or(from[0]))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if moved == 1 {
                audit!(tx, actor, action, &key, serde_json::json!({"from": current.state}));
            }
            moved
        });
        if moved == 0 {
            let now = self.get_mail(id, api_key).await?;
            return Err(StoreError::Conflict {
                field: "state",
                message: format!(
                    "message {id} is {}; only a message that is {} can be moved to {to}",
                    now.state.as_str(),
                    from.join(" or ")
                ),
            });
        }
        self.get_mail(id, api_key).await
    }

    /// How many messages are in each state (for the metrics).
    pub async fn outbox_depth(&self) -> Result<Vec<(String, i64)>> {
        Ok(on_pool!(self, |p| sqlx::query_as(
            "SELECT state, COUNT(*) FROM outbox GROUP BY state"
        )
        .fetch_all(p)
        .await)?)
    }

    /// The messages of `operator` that wait for them to sign in again become due now (they
    /// sign in, and their mail leaves at the next poll instead of at the next retry).
    pub async fn wake_signed_in(&self, operator: &str) -> Result<u64> {
        Ok(on_pool!(self, |p| sqlx::query(
            "UPDATE outbox SET next_attempt_ms = $2 \
             WHERE operator = $1 AND state = 'retrying' AND reason LIKE '%\"kind\":\"signin_required\"%'"
        )
        .bind(operator)
        .bind(now_ms())
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?)
    }

    /// Removes idempotency records older than `max_age_ms`.
    pub async fn sweep_idempotency(&self, max_age_ms: i64) -> Result<u64> {
        Ok(on_pool!(self, |p| sqlx::query("DELETE FROM idempotency WHERE created_ms < $1")
            .bind(now_ms() - max_age_ms)
            .execute(p)
            .await
            .map(|r| r.rows_affected()))?)
    }
}

fn view(row: MailRow) -> Result<MailView> {
    let message = row.message()?;
    let state = row.state()?;
    let error = row
        .reason
        .as_deref()
        .map(|r| serde_json::from_str::<Reason>(r).map_err(|e| corrupt("message reason", &row.id, e)))
        .transpose()?;
    Ok(MailView {
        state,
        company: row.company,
        function: row.function,
        profile: row.profile,
        provider: row.provider,
        operator: row.operator,
        subject: message.subject.clone(),
        recipients: message.recipients(),
        attachments: 0,
        created_at: at(row.created_ms),
        next_attempt_at: matches!(state, MailState::Queued | MailState::Retrying).then(|| at(row.next_attempt_ms)),
        sent_at: row.sent_ms.map(at),
        internet_message_id: row.internet_message_id,
        attempts: Vec::new(),
        error: if state == MailState::Sent { None } else { error },
        api_key: row.api_key,
        id: row.id,
    })
}
