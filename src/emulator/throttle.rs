//! Outlook's throttling, per app and mailbox (microsoft-graph-docs-contrib
//! `concepts/throttling-limits.md`, "Outlook service limits": 4 concurrent requests and
//! 10,000 requests in a 10-minute period per app ID and mailbox), answered as
//! `concepts/throttling.md` shows: `429 Too Many Requests`, a `Retry-After` in seconds, and
//! Graph's error body with code `TooManyRequests`.

use super::Emulator;
use super::graph::graph_error;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// The limits; tests lower them with `POST /_emulator/limits`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    pub concurrent: u32,
    pub requests_per_window: usize,
    pub window_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            concurrent: 4,
            requests_per_window: 10_000,
            window_secs: 600,
        }
    }
}

#[derive(Debug, Default)]
pub struct ThrottleState {
    pub limits: Limits,
    in_flight: HashMap<String, u32>,
    recent: HashMap<String, VecDeque<Instant>>,
}

/// The Outlook resource a path names (mail, contacts, people), as `(mailbox, rest)`:
/// `None` for everything else, which these limits do not cover.
fn outlook_mailbox(path: &str) -> Option<(&str, &str)> {
    const OUTLOOK: [&str; 6] = ["messages", "sendMail", "contacts", "contactFolders", "people", "mailFolders"];
    let rest = path.strip_prefix("/v1.0/")?;
    let (mailbox, tail) = if let Some(t) = rest.strip_prefix("me/") {
        ("me", t)
    } else {
        let t = rest.strip_prefix("users/")?;
        t.split_once('/')?
    };
    let resource = tail.split(['/', '?']).next()?;
    OUTLOOK.contains(&resource).then_some((mailbox, tail))
}

/// Releases the request's concurrency slot when it finishes, however it finishes.
struct Slot {
    emu: Emulator,
    key: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut t = self.emu.throttle();
        if let Some(n) = t.in_flight.get_mut(&self.key) {
            *n = n.saturating_sub(1);
        }
    }
}

fn throttled(emu: &Emulator, req: &Request, retry_after: u64) -> Response {
    emu.log_request(super::faults::Logged {
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
        status: 429,
        authorization: true,
        content_range: None,
        faulted: false,
    });
    let mut r = graph_error(
        req.headers(),
        StatusCode::TOO_MANY_REQUESTS,
        "TooManyRequests",
        "Too many requests. Please retry after the time given in the Retry-After header.",
    );
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after.max(1)));
    r
}

pub async fn middleware(State(emu): State<Emulator>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let Some((mailbox, _)) = outlook_mailbox(&path) else {
        return next.run(req).await;
    };
    // Only requests with a valid token count; the handler answers the others with a 401.
    let claims = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .and_then(|t| emu.keys().verify(t).ok());
    let Some(claims) = claims else {
        return next.run(req).await;
    };
    let app = claims["azp"].as_str().or(claims["appid"].as_str()).unwrap_or_default();
    let mailbox = if mailbox == "me" {
        claims["oid"].as_str().unwrap_or_default().to_string()
    } else {
        emu.users_by_upn_or_id(mailbox).map_or(mailbox.to_ascii_lowercase(), |u| u.id)
    };
    let key = format!("{app}|{mailbox}");
    {
        let mut t = emu.throttle();
        let limits = t.limits.clone();
        let window = Duration::from_secs(limits.window_secs);
        let now = Instant::now();
        let recent = t.recent.entry(key.clone()).or_default();
        while recent.front().is_some_and(|at| now.duration_since(*at) >= window) {
            recent.pop_front();
        }
        if recent.len() >= limits.requests_per_window {
            let wait = window.saturating_sub(now.duration_since(*recent.front().expect("non-empty")));
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            drop(t);
            return throttled(&emu, &req, seconds);
        }
        let in_flight = t.in_flight.entry(key.clone()).or_default();
        if *in_flight >= limits.concurrent {
            drop(t);
            return throttled(&emu, &req, 1);
        }
        *in_flight += 1;
        t.recent.get_mut(&key).expect("inserted above").push_back(now);
    }
    let _slot = Slot { emu: emu.clone(), key };
    next.run(req).await
}

/// `POST /_emulator/limits`: replaces the limits (and forgets what was counted).
pub async fn set_limits(State(emu): State<Emulator>, axum::Json(limits): axum::Json<Limits>) -> StatusCode {
    let mut t = emu.throttle();
    *t = ThrottleState {
        limits,
        ..Default::default()
    };
    StatusCode::NO_CONTENT
}

#[cfg(test)]
mod tests {
    use super::outlook_mailbox;

    #[test]
    fn outlook_resources_are_recognised() {
        assert_eq!(outlook_mailbox("/v1.0/me/messages").map(|m| m.0), Some("me"));
        assert_eq!(outlook_mailbox("/v1.0/me/sendMail").map(|m| m.0), Some("me"));
        assert_eq!(outlook_mailbox("/v1.0/users/a@b.c/contacts").map(|m| m.0), Some("a@b.c"));
        assert_eq!(outlook_mailbox("/v1.0/me/contactFolders/1/contacts").map(|m| m.0), Some("me"));
        assert!(outlook_mailbox("/v1.0/me/drive/root:/a:/content").is_none());
        assert!(outlook_mailbox("/v1.0/users").is_none());
        assert!(outlook_mailbox("/v1.0/me").is_none());
    }
}
