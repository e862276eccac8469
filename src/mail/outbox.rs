//! The outbox worker (SPEC §3.4): takes due messages from the database under a lease,
//! delivers each through its profile's provider, and records every step and attempt, so that
//! a process killed at any moment loses no message and sends none twice.
//!
//! A worker is a loop around [`Outbox::run_once`] (one message), woken when a message is
//! queued and otherwise polling for retries that fall due and for messages other instances
//! queued. Tests call [`Outbox::drain`] instead of waiting.

use super::graph::GraphDelivery;
use crate::config::MailSettings;
use crate::graph::{Graph, GraphError};
use crate::identity::tokens::TokenError;
use crate::store::blobs::now_ms;
use crate::store::outbox::{Claimed, Finish, Outcome, Reason, StepError};
use crate::store::{Store, StoreError};
use rand::Rng;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Points at which a test makes a delivery stop as if the process had been killed: nothing
/// after the point is recorded and the lease is left to expire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    AfterClaim,
    /// The draft's create was sent; its answer is not recorded.
    AfterDraftRequested,
    AfterDraft,
    /// One fragment of a large attachment uploaded.
    MidAttachment,
    /// "submitting" committed, the send not requested.
    AfterSubmitting,
    /// The send answered 202; "sent" not recorded.
    AfterSend,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("the delivery stopped at {0:?} (a simulated crash)")]
    Crashed(CrashPoint),
    #[error(transparent)]
    Step(#[from] StepError),
}

/// Outlook's upload budget per mailbox: 150 MB in any 5 minutes (throttling-limits.md,
/// "Outlook service limits"). Kept per instance.
#[derive(Debug, Default)]
pub struct UploadBudget {
    used: Mutex<HashMap<String, VecDeque<(Instant, u64)>>>,
}

impl UploadBudget {
    /// Takes `bytes` from the mailbox's budget, or says how long until they fit.
    pub fn take(&self, mailbox: &str, bytes: u64, limit: u64, window: Duration) -> Result<(), Duration> {
        let now = Instant::now();
        let mut used = self.used.lock().expect("budget lock");
        let recent = used.entry(mailbox.to_ascii_lowercase()).or_default();
        while recent.front().is_some_and(|(t, _)| now.duration_since(*t) >= window) {
            recent.pop_front();
        }
        let mut total: u64 = recent.iter().map(|(_, b)| b).sum();
        if total + bytes <= limit || recent.is_empty() {
            recent.push_back((now, bytes));
            return Ok(());
        }
        // The wait until enough of the oldest uploads leave the window.
        for (t, b) in recent.iter() {
            total -= b;
            if total + bytes <= limit {
                return Err(window.saturating_sub(now.duration_since(*t)));
            }
        }
        Err(window)
    }
}

/// How a provider's failure is to be treated.
#[derive(Debug, Clone)]
pub enum Failure {
    /// Worth another try later (`after`: the provider's `Retry-After`).
    Transient { reason: Reason, after: Option<Duration> },
    /// Will fail the same way every time.
    Permanent(Reason),
    /// The operator must sign in again; the message waits without spending attempts.
    Signin(Reason),
    /// Whether the provider acted is not known.
    Ambiguous(Reason),
}

impl Failure {
    /// A failure that will repeat, with no provider code.
    pub fn permanent(detail: String) -> Self {
        Self::Permanent(Reason {
            kind: "permanent".into(),
            detail,
            code: None,
            status: None,
        })
    }

    /// A failure worth another try after the usual backoff, with no provider code.
    pub fn transient(detail: String) -> Self {
        Self::Transient {
            reason: Reason {
                kind: "transient".into(),
                detail,
                code: None,
                status: None,
            },
            after: None,
        }
    }

    /// A record the delivery reads (its profile, tenant or secret): gone is permanent, a
    /// database that did not answer is worth another try.
    pub fn from_store(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { what, key } => Self::permanent(format!("the {what} '{key}' this message is sent through was removed")),
            other => Self::transient(other.to_string()),
        }
    }

    /// An attachment that could not be read from the database.
    pub fn unreadable_attachment(e: &StoreError) -> Self {
        Self::transient(format!("the attachment could not be read: {e}"))
    }

    /// Graph's answer classified (concepts/errors.md, throttling.md).
    pub fn from_graph(e: &GraphError) -> Self {
        match e {
            GraphError::Api {
                status,
                code,
                message,
                retry_after,
                ..
            } => {
                let reason = |kind: &str| Reason {
                    kind: kind.into(),
                    detail: format!("Microsoft Graph answered {status} {code}: {message}"),
                    code: Some(code.clone()),
                    status: Some(*status),
                };
                match status {
                    429 => Self::Transient {
                        reason: reason("throttled"),
                        after: *retry_after,
                    },
                    500..=599 => Self::Transient {
                        reason: reason("transient"),
                        after: *retry_after,
                    },
                    _ => Self::Permanent(reason("permanent")),
                }
            }
            GraphError::Transport(m) => Self::Transient {
                reason: Reason {
                    kind: "transient".into(),
                    detail: format!("Microsoft Graph could not be reached: {m}"),
                    code: None,
                    status: None,
                },
                after: None,
            },
            GraphError::Token(t) => Self::from_token(t),
            GraphError::Local(m) => Self::Permanent(Reason {
                kind: "permanent".into(),
                detail: m.clone(),
                code: None,
                status: None,
            }),
        }
    }

    pub fn from_token(t: &TokenError) -> Self {
        let reason = |kind: &str| Reason {
            kind: kind.into(),
            detail: t.to_string(),
            code: None,
            status: None,
        };
        match t {
            TokenError::SigninRequired(_) => Self::Signin(reason("signin_required")),
            // The identity platform did not answer, or answered 5xx: try later.
            TokenError::OAuth(e) if e.is_transient() => Self::Transient {
                reason: reason("transient"),
                after: None,
            },
            TokenError::Store(_) => Self::Transient {
                reason: reason("transient"),
                after: None,
            },
            _ => Self::Permanent(reason("permanent")),
        }
    }
}

/// What the worker needs from the mail settings, in the units it uses.
#[derive(Debug, Clone)]
pub struct OutboxPolicy {
    pub lease_ms: i64,
    pub retry_base_ms: u64,
    pub retry_cap_ms: u64,
    pub max_attempts: u32,
    pub max_age_ms: i64,
    pub sent_grace_ms: i64,
    pub poll: Duration,
    pub upload_budget_bytes: u64,
    pub upload_budget_window: Duration,
}

impl From<&MailSettings> for OutboxPolicy {
    fn from(s: &MailSettings) -> Self {
        Self {
            lease_ms: (s.lease_secs * 1000) as i64,
            retry_base_ms: s.retry_base_ms,
            retry_cap_ms: s.retry_cap_secs * 1000,
            max_attempts: s.max_attempts,
            max_age_ms: (s.max_age_secs * 1000) as i64,
            sent_grace_ms: s.sent_grace_ms as i64,
            poll: Duration::from_millis(s.poll_ms.max(10)),
            upload_budget_bytes: s.upload_budget_bytes,
            upload_budget_window: Duration::from_secs(s.upload_budget_window_secs),
        }
    }
}

impl OutboxPolicy {
    /// Exponential backoff with full jitter between half and all of `base * 2^attempt`, capped.
    pub fn backoff_ms(&self, attempt: u32) -> i64 {
        let full = self.retry_base_ms.saturating_mul(1u64 << attempt.min(20)).min(self.retry_cap_ms);
        let half = full / 2;
        (half + rand::thread_rng().gen_range(0..=full - half)) as i64
    }
}

pub struct Outbox {
    pub(super) store: Store,
    pub(super) graph: Arc<Graph>,
    pub(super) policy: OutboxPolicy,
    pub(super) budget: UploadBudget,
    pub(super) smtp: super::smtp::SmtpClient,
    wake: Notify,
    crash: Mutex<Option<CrashPoint>>,
}

impl Outbox {
    /// Fails when a configured SMTP root certificate cannot be read.
    pub fn new(store: Store, graph: Arc<Graph>, settings: &MailSettings) -> anyhow::Result<Self> {
        Ok(Self {
            store,
            graph,
            policy: OutboxPolicy::from(settings),
            budget: UploadBudget::default(),
            smtp: super::smtp::SmtpClient::new(settings)?,
            wake: Notify::new(),
            crash: Mutex::new(None),
        })
    }

    /// Tells a waiting worker that a message was queued.
    pub fn notify(&self) {
        self.wake.notify_one();
    }

    /// Makes the next delivery that reaches `point` stop there, as a killed process would.
    #[doc(hidden)]
    pub fn crash_at(&self, point: Option<CrashPoint>) {
        *self.crash.lock().expect("crash lock") = point;
    }

    pub(super) fn checkpoint(&self, point: CrashPoint) -> Result<(), RunError> {
        let mut crash = self.crash.lock().expect("crash lock");
        if *crash == Some(point) {
            *crash = None;
            return Err(RunError::Crashed(point));
        }
        Ok(())
    }

    /// Claims and delivers one due message; `false` when none was due.
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn run_once(&self) -> Result<bool, RunError> {
        let owner = uuid::Uuid::new_v4().to_string();
        let Some(claim) = self.store.claim_mail(&owner, self.policy.lease_ms).await.map_err(StepError::from)? else {
            return Ok(false);
        };
        self.checkpoint(CrashPoint::AfterClaim)?;
        let started = Instant::now();
        let finish = self.deliver(&claim, &owner).await?;
        let label = match &finish {
            Finish::Sent { .. } => "sent",
            Finish::Retry { attempt: None, .. } => "waiting",
            Finish::Retry { .. } => "transient",
            Finish::Failed { .. } => "failed",
            Finish::Held { .. } => "held",
        };
        metrics::counter!("outbox_sends_total", "provider" => claim.provider.clone(), "outcome" => label).increment(1);
        if matches!(finish, Finish::Sent { .. }) {
            let queued_for = (now_ms() - claim.created_ms).max(0) as f64 / 1000.0;
            metrics::histogram!("outbox_queue_to_sent_seconds", "provider" => claim.provider.clone()).record(queued_for);
        }
        tracing::info!(message = %claim.id, provider = %claim.provider, outcome = label, ms = started.elapsed().as_millis() as u64, "outbox delivery");
        self.store.finish_mail(&claim.id, &owner, &finish).await?;
        Ok(true)
    }

    /// Runs [`Outbox::run_once`] until nothing is due; answers how many were handled.
    pub async fn drain(&self) -> Result<usize, RunError> {
        let mut n = 0;
        while self.run_once().await? {
            n += 1;
        }
        Ok(n)
    }

    /// A supervised worker: delivers until cancelled.
    pub async fn work(self: Arc<Self>, cancel: CancellationToken) -> crate::workers::WorkerResult {
        loop {
            if cancel.is_cancelled() {
                return Ok(());
            }
            match self.run_once().await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(RunError::Step(StepError::Lost(lost))) => {
                    tracing::warn!(error = %lost, "another worker took the message over");
                    continue;
                }
                Err(e) => tracing::error!(error = %e, "outbox delivery failed; the message is left to its lease"),
            }
            let wait = match self.store.next_mail_due_ms().await {
                Ok(Some(due)) => Duration::from_millis((due - now_ms()).clamp(0, self.policy.poll.as_millis() as i64) as u64),
                _ => self.policy.poll,
            };
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                () = self.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One claim's delivery, ended by what to record.
    async fn deliver(&self, claim: &Claimed, owner: &str) -> Result<Finish, RunError> {
        let now = now_ms();
        if now - claim.created_ms > self.policy.max_age_ms && claim.step != crate::store::outbox::Step::Submitting {
            return Ok(Finish::Failed {
                reason: Reason {
                    kind: "expired".into(),
                    detail: format!("not delivered within {} s of being queued", self.policy.max_age_ms / 1000),
                    code: None,
                    status: None,
                },
                outcome: Outcome::Permanent,
            });
        }
        let outcome = match claim.provider.as_str() {
            "graph_delegate" | "graph_direct" => match GraphDelivery::prepare(self, claim).await {
                Ok(d) => d.run(self, claim, owner).await?,
                Err(f) => Err(f),
            },
            "smtp" => super::smtp::deliver(self, claim, owner).await?,
            other => Err(Failure::Permanent(Reason {
                kind: "permanent".into(),
                detail: format!("this version cannot deliver through provider {other}"),
                code: None,
                status: None,
            })),
        };
        Ok(match outcome {
            Ok(finish) => finish,
            Err(failure) => self.after_failure(claim, failure),
        })
    }

    fn after_failure(&self, claim: &Claimed, failure: Failure) -> Finish {
        let now = now_ms();
        let attempts = claim.attempts + 1;
        match failure {
            Failure::Permanent(reason) => Finish::Failed {
                reason,
                outcome: Outcome::Permanent,
            },
            Failure::Signin(reason) => Finish::Retry {
                at_ms: now + self.policy.retry_cap_ms as i64,
                reason,
                attempt: None,
            },
            Failure::Transient { reason, .. } | Failure::Ambiguous(reason) if attempts >= self.policy.max_attempts => Finish::Failed {
                reason: Reason {
                    detail: format!("gave up after {attempts} attempts; the last: {}", reason.detail),
                    ..reason
                },
                outcome: Outcome::Transient,
            },
            Failure::Transient { reason, after } => {
                let backoff = self.policy.backoff_ms(claim.attempts);
                let wait = after.map_or(backoff, |a| (a.as_millis() as i64).max(backoff.min(a.as_millis() as i64)));
                Finish::Retry {
                    at_ms: now + wait,
                    reason,
                    attempt: Some(Outcome::Transient),
                }
            }
            Failure::Ambiguous(reason) => Finish::Retry {
                at_ms: now + self.policy.backoff_ms(claim.attempts),
                reason,
                attempt: Some(Outcome::Ambiguous),
            },
        }
    }
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").field("policy", &self.policy).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upload_budget_holds_and_says_when_it_frees() {
        let b = UploadBudget::default();
        let window = Duration::from_secs(300);
        assert!(b.take("a@x.com", 100, 150, window).is_ok());
        let wait = b.take("A@x.com", 100, 150, window).unwrap_err();
        assert!(wait <= window && wait > Duration::from_secs(299), "{wait:?}");
        assert!(b.take("b@x.com", 100, 150, window).is_ok(), "another mailbox has its own budget");
        assert!(b.take("a@x.com", 50, 150, window).is_ok());
    }

    #[test]
    fn backoff_is_jittered_and_capped() {
        let p = OutboxPolicy::from(&MailSettings::default());
        for a in 0..30 {
            let full = (p.retry_base_ms.saturating_mul(1 << a.min(20))).min(p.retry_cap_ms) as i64;
            let d = p.backoff_ms(a);
            assert!(d >= full / 2 && d <= full, "{a}: {d}");
        }
    }
}
