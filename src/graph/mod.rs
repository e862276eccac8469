//! One client for every Microsoft Graph call (microsoft-graph-docs-contrib `concepts/`):
//! the token of whoever the call is for, retries on 429/503/504 and connection errors
//! honouring `Retry-After` (throttling.md, best-practices-concept.md) with exponential backoff
//! and jitter within a bounded total wait, one token refresh on 401, `@odata.nextLink` paging
//! (paging.md), Graph's error body as a typed error (errors.md), and at most 4 requests in
//! flight per mailbox (Outlook's documented concurrency limit, throttling-limits.md).

pub mod drive;

use crate::domain::{OperatorCode, Secret, TenantCode};
use crate::identity::tokens::{TokenError, Tokens};
use crate::store::models::Tenant;
use futures_util::{Stream, TryStreamExt};
use rand::Rng;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long one Graph call may take: JSON answers and simple uploads (at most 4 MiB) are
/// quick, so a stalled call is retried or reported; only upload-session fragments (10 MiB
/// and more, sent by `drive`) keep the shared client's long timeout.
const GRAPH_CALL_TIMEOUT: Duration = Duration::from_secs(60);
use tokio::sync::Semaphore;

/// Outlook allows 4 concurrent requests per app and mailbox.
const PER_MAILBOX: usize = 4;

/// Whose token a call carries, and so whose mailbox it counts against.
#[derive(Debug, Clone)]
pub enum Principal {
    /// Delegated: the operator's own token.
    Operator(OperatorCode),
    /// Application permission in a tenant, acting on one mailbox; `app` is a separate app
    /// registration holding the permission (a `graph_direct` profile's own), else the tenant's.
    App {
        tenant: TenantCode,
        mailbox: String,
        app: Option<crate::identity::oauth::ClientApp>,
    },
    /// A delegated token obtained on-behalf-of the add-in's user (object id `user`); it cannot
    /// be refreshed here — the add-in gets a new one.
    OnBehalfOf { tenant: TenantCode, user: String, token: Secret },
}

impl Principal {
    fn key(&self) -> String {
        match self {
            Self::Operator(op) => format!("op:{op}"),
            Self::App { tenant, mailbox, .. } => format!("app:{tenant}:{}", mailbox.to_ascii_lowercase()),
            Self::OnBehalfOf { tenant, user, .. } => format!("obo:{tenant}:{}", user.to_ascii_lowercase()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// Graph's error body: `{"error": {"code", "message", "innerError": {"request-id"}}}`.
    #[error("Microsoft Graph answered {status} {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
        request_id: Option<String>,
        retry_after: Option<Duration>,
    },
    /// No answer (connection refused, reset, timed out). Never carries the URL.
    #[error("Microsoft Graph could not be reached: {0}")]
    Transport(String),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("{0}")]
    Local(String),
}

impl GraphError {
    fn transport(e: reqwest::Error) -> Self {
        // reqwest puts the URL in its message; an upload URL is a credential.
        Self::Transport(e.without_url().to_string())
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// How hard to retry.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base: Duration,
    pub cap: Duration,
    /// The most time spent waiting across one call's retries.
    pub max_total_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
            max_total_wait: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// Exponential backoff with jitter: between half and all of `base * 2^attempt`, capped.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let full = self.base.saturating_mul(1u32 << attempt.min(16)).min(self.cap);
        let half = full / 2;
        half + full.saturating_sub(half).mul_f64(rand::thread_rng().r#gen::<f64>())
    }
}

/// `Retry-After` in seconds (whole or fractional, as Graph and the emulator send) or as an
/// HTTP date (RFC 9110 §10.2.3).
pub fn parse_retry_after(raw: &str) -> Option<Duration> {
    let raw = raw.trim();
    if let Ok(secs) = raw.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(3600.0)));
    }
    let when = chrono::DateTime::parse_from_rfc2822(raw).ok()?;
    Some(
        (when.with_timezone(&chrono::Utc) - chrono::Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

/// Percent-encodes one path segment (a mailbox, a message id, a file name).
pub fn encode_segment(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// A tenant's Graph base URL: `{graph endpoint}/v1.0`.
pub fn base_url(tenant: &Tenant) -> String {
    format!("{}/v1.0", tenant.graph_endpoint.as_str().trim_end_matches('/'))
}

fn retryable(status: u16) -> bool {
    matches!(status, 429 | 503 | 504)
}

/// Reads Graph's error body.
pub async fn api_error(resp: reqwest::Response) -> GraphError {
    let status = resp.status().as_u16();
    let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(String::from);
    let retry_after = header("retry-after").as_deref().and_then(parse_retry_after);
    let header_id = header("request-id");
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    let e = &body["error"];
    GraphError::Api {
        status,
        code: e["code"].as_str().unwrap_or("unknown").to_string(),
        message: e["message"].as_str().unwrap_or("(no message)").to_string(),
        request_id: header_id.or_else(|| e["innerError"]["request-id"].as_str().map(String::from)),
        retry_after,
    }
}

pub struct Graph {
    tokens: Arc<Tokens>,
    policy: RetryPolicy,
    mailboxes: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Graph {
    pub fn new(tokens: Arc<Tokens>, policy: RetryPolicy) -> Self {
        Self {
            tokens,
            policy,
            mailboxes: Mutex::default(),
        }
    }

    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        self.tokens.http()
    }

    async fn token(&self, who: &Principal) -> Result<Secret, TokenError> {
        match who {
            Principal::Operator(op) => self.tokens.operator_token(op).await,
            Principal::App { tenant, app, .. } => self.tokens.app_token_as(tenant, app.as_ref()).await,
            Principal::OnBehalfOf { token, .. } => Ok(token.clone()),
        }
    }

    async fn token_rejected(&self, who: &Principal, used: &Secret) {
        match who {
            Principal::Operator(op) => self.tokens.operator_token_rejected(op, used).await,
            Principal::App { tenant, .. } => self.tokens.app_token_rejected(tenant, used).await,
            Principal::OnBehalfOf { .. } => {}
        }
    }

    /// Sends a request built by `build` with the principal's token, retrying as the module
    /// says. `replayable` is false for bodies that cannot be sent twice; those are never retried.
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn send(
        &self,
        who: &Principal,
        replayable: bool,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, GraphError> {
        let _permit = self.mailbox_limit(who).acquire_owned().await.expect("never closed");
        let mut token = self.token(who).await?;
        let mut refreshed = false;
        let mut retry = Retrier::new(&self.policy);
        loop {
            let outcome = build(self.http())
                .bearer_auth(token.expose_secret())
                .timeout(GRAPH_CALL_TIMEOUT)
                .send()
                .await;
            match outcome {
                Ok(r) if r.status().is_success() => return Ok(r),
                Ok(r) if r.status() == reqwest::StatusCode::UNAUTHORIZED && !refreshed => {
                    // Expired or revoked early: one new token, one more try.
                    self.token_rejected(who, &token).await;
                    token = self.token(who).await?;
                    refreshed = true;
                }
                other => retry.after(other, replayable).await?,
            }
        }
    }

    /// A request that carries no token (the pre-authenticated upload URL), with the same retries.
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn send_anonymous(
        &self,
        replayable: bool,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, GraphError> {
        let mut retry = Retrier::new(&self.policy);
        loop {
            match build(self.http()).timeout(GRAPH_CALL_TIMEOUT).send().await {
                Ok(r) if r.status().is_success() => return Ok(r),
                other => retry.after(other, replayable).await?,
            }
        }
    }

    /// `GET` as JSON, once: no retries and no waiting for `Retry-After`, for a caller that
    /// has its own time budget and reports a 429 instead (the contact lookup). One new token
    /// on a 401 still. `outlook` requests count against the mailbox's 4 concurrent requests;
    /// directory requests (`/users`, `/contacts`) are not Outlook's and do not.
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn get_once(
        &self,
        who: &Principal,
        outlook: bool,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<Value, GraphError> {
        let _permit = match outlook {
            true => Some(self.mailbox_limit(who).acquire_owned().await.expect("never closed")),
            false => None,
        };
        let mut token = self.token(who).await?;
        for first in [true, false] {
            let r = build(self.http())
                .bearer_auth(token.expose_secret())
                .timeout(GRAPH_CALL_TIMEOUT)
                .send()
                .await
                .map_err(GraphError::transport)?;
            if r.status().is_success() {
                return r.json().await.map_err(GraphError::transport);
            }
            if r.status() == reqwest::StatusCode::UNAUTHORIZED && first {
                self.token_rejected(who, &token).await;
                token = self.token(who).await?;
                continue;
            }
            return Err(api_error(r).await);
        }
        unreachable!("the loop returns on its second pass")
    }

    fn mailbox_limit(&self, who: &Principal) -> Arc<Semaphore> {
        self.mailboxes
            .lock()
            .expect("mailbox map lock")
            .entry(who.key())
            .or_insert_with(|| Arc::new(Semaphore::new(PER_MAILBOX)))
            .clone()
    }

    /// `GET` as JSON.
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn get_json(&self, who: &Principal, url: &str) -> Result<Value, GraphError> {
        let resp = self.send(who, true, |http| http.get(url)).await?;
        resp.json().await.map_err(GraphError::transport)
    }

    /// Every item of a collection, page by page, following `@odata.nextLink` (used as given:
    /// paging.md says not to take it apart).
    pub fn pages<'a>(&'a self, who: &'a Principal, first: String) -> impl Stream<Item = Result<Value, GraphError>> + 'a {
        futures_util::stream::try_unfold(Some(first), move |next| async move {
            let Some(url) = next else { return Ok(None) };
            let mut page = self.get_json(who, &url).await?;
            let next = page["@odata.nextLink"].as_str().map(String::from);
            let items = match page["value"].take() {
                Value::Array(items) => items,
                _ => return Err(GraphError::Local("a collection page without 'value'".into())),
            };
            Ok(Some((futures_util::stream::iter(items.into_iter().map(Ok)), next)))
        })
        .try_flatten()
    }
}

/// One call's retry budget.
pub struct Retrier<'a> {
    policy: &'a RetryPolicy,
    attempt: u32,
    waited: Duration,
}

impl<'a> Retrier<'a> {
    pub fn new(policy: &'a RetryPolicy) -> Self {
        Self {
            policy,
            attempt: 0,
            waited: Duration::ZERO,
        }
    }

    /// Waits before the next attempt, or returns the error when the answer is final or the
    /// budget is spent.
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn after(&mut self, outcome: Result<reqwest::Response, reqwest::Error>, replayable: bool) -> Result<(), GraphError> {
        let (error, hint) = match outcome {
            Ok(r) => {
                let retry = retryable(r.status().as_u16());
                let e = api_error(r).await;
                if !retry {
                    return Err(e);
                }
                let hint = match &e {
                    GraphError::Api { retry_after, .. } => *retry_after,
                    _ => None,
                };
                (e, hint)
            }
            Err(e) => (GraphError::transport(e), None),
        };
        self.wait(error, hint, replayable).await
    }

    /// Waits `hint` (a `Retry-After`) or the backoff, unless retrying is not allowed.
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn wait(&mut self, error: GraphError, hint: Option<Duration>, replayable: bool) -> Result<(), GraphError> {
        let delay = hint.unwrap_or_else(|| self.policy.backoff(self.attempt));
        self.attempt += 1;
        if !replayable || self.attempt >= self.policy.max_attempts || self.waited + delay > self.policy.max_total_wait {
            return Err(error);
        }
        tracing::debug!(attempt = self.attempt, delay_ms = delay.as_millis() as u64, error = %error, "retrying a Graph request");
        self.waited += delay;
        tokio::time::sleep(delay).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_whole_fractional_seconds_and_dates() {
        assert_eq!(parse_retry_after("1"), Some(Duration::from_secs(1)));
        assert_eq!(parse_retry_after("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after(" 2 "), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("soon"), None);
        let later = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        let d = parse_retry_after(&later).unwrap();
        assert!(d > Duration::from_secs(25) && d <= Duration::from_secs(30), "{d:?}");
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let p = RetryPolicy::default();
        for attempt in 0..12 {
            let full = p.base.saturating_mul(1 << attempt).min(p.cap);
            let d = p.backoff(attempt);
            assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?} vs {full:?}");
        }
        assert!(p.backoff(40) <= p.cap);
    }
}
