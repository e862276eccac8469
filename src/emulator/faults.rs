//! Scripted faults and the request log, for tests (`/_emulator/faults`, `/_emulator/requests`).
//! A fault answers matching requests with the error Graph sends for that status — codes and
//! bodies from microsoft-graph-docs-contrib `concepts/errors.md`, `Retry-After` from
//! `concepts/throttling.md` — optionally after a delay, a given number of times.

use super::Emulator;
use super::graph::graph_error;
use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// `GET`, `PUT`, …; any method when absent.
    #[serde(default)]
    pub method: Option<String>,
    /// A path pattern where `*` matches any run of characters (`/v1.0/me/drive/*`, `/_upload/*`).
    pub path: String,
    /// The status to answer (429, 500, 503, 504, …); absent: only the delay, then the real answer.
    #[serde(default)]
    pub status: Option<u16>,
    /// Graph's error code to answer (`ErrorInvalidRecipients`, `ErrorSendAsDenied`, …); the
    /// status's usual code when absent.
    #[serde(default)]
    pub code: Option<String>,
    /// The error message to answer; a generic one for the status when absent.
    #[serde(default)]
    pub message: Option<String>,
    /// The `Retry-After` header value, in whole or fractional seconds (`"1"`, `"0.5"`).
    #[serde(default)]
    pub retry_after: Option<String>,
    /// Milliseconds to wait before answering.
    #[serde(default)]
    pub delay_ms: u64,
    /// Drop the connection after the first part of the request body, answering nothing (a
    /// network failure in the middle of an upload).
    #[serde(default)]
    pub drop_connection: bool,
    /// How many matching requests it applies to (then it is spent).
    #[serde(default = "one")]
    pub times: u32,
}

fn one() -> u32 {
    1
}

/// One request as the emulator saw it.
#[derive(Debug, Clone, Serialize)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub status: u16,
    /// Whether it carried an Authorization header (never its value).
    pub authorization: bool,
    pub content_range: Option<String>,
    pub faulted: bool,
}

/// Matches `pattern` (with `*` wildcards) against the whole of `path`.
pub fn glob(pattern: &str, path: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if parts.len() == 1 {
        return pattern == path;
    }
    if !path.starts_with(first) || !path[first.len()..].ends_with(last) || path.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &path[first.len()..path.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    true
}

fn graph_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        429 => "TooManyRequests",
        401 => "InvalidAuthenticationToken",
        404 => "itemNotFound",
        503 => "serviceNotAvailable",
        504 => "gatewayTimeout",
        500 => "generalException",
        502 => "badGateway",
        _ => "unknownError",
    }
}

/// Applies the first matching fault, logs the request, and passes it on otherwise.
pub async fn middleware(State(emu): State<Emulator>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if path.starts_with("/_emulator/") {
        return next.run(req).await;
    }
    let method = req.method().as_str().to_string();
    let fault = {
        let mut faults = emu.faults();
        let hit = faults
            .iter_mut()
            .find(|f| f.times > 0 && f.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(&method)) && glob(&f.path, &path));
        hit.map(|f| {
            f.times -= 1;
            f.clone()
        })
    };
    let authorization = req.headers().contains_key(header::AUTHORIZATION);
    let content_range = req
        .headers()
        .get(header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let headers = req.headers().clone();
    if let Some(f) = &fault
        && f.delay_ms > 0
    {
        tokio::time::sleep(Duration::from_millis(f.delay_ms)).await;
    }
    if fault.as_ref().is_some_and(|f| f.drop_connection) {
        emu.log_request(Logged {
            method,
            path,
            status: 0,
            authorization,
            content_range,
            faulted: true,
        });
        let mut body = req.into_body().into_data_stream();
        let _ = futures_util::StreamExt::next(&mut body).await;
        // Unwinding out of the connection's task closes its socket with no answer; unlike
        // `panic!`, `resume_unwind` skips the panic hook, so nothing is printed.
        std::panic::resume_unwind(Box::new("emulated connection drop"));
    }
    let response = match fault.as_ref().and_then(|f| f.status.map(|s| (f, s))) {
        Some((f, status)) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let message = match status.as_u16() {
                429 => "Please retry after",
                // The message Graph sends for an expired token (concepts/errors.md, resolve-auth-errors.md).
                401 => "Lifetime validation failed, the token is expired.",
                404 => "The upload session was not found or has expired.",
                _ => "The service is temporarily unavailable (emulated fault).",
            };
            let code = f.code.as_deref().unwrap_or(graph_code(status));
            let mut r = graph_error(&headers, status, code, f.message.as_deref().unwrap_or(message));
            if let Some(v) = f.retry_after.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
        None => next.run(req).await,
    };
    emu.log_request(Logged {
        method,
        path,
        status: response.status().as_u16(),
        authorization,
        content_range,
        faulted: fault.is_some_and(|f| f.status.is_some()),
    });
    response
}

/// `POST /_emulator/faults`: adds faults (a list), `DELETE` clears them.
pub async fn add(State(emu): State<Emulator>, Json(faults): Json<Vec<Fault>>) -> StatusCode {
    emu.faults().extend(faults);
    StatusCode::NO_CONTENT
}

pub async fn clear(State(emu): State<Emulator>) -> StatusCode {
    emu.faults().clear();
    StatusCode::NO_CONTENT
}

/// The request log: the last requests, and a count of all of them by status.
#[derive(Default)]
pub struct RequestLog {
    pub recent: std::collections::VecDeque<Logged>,
    pub counts: Counts,
}

/// Requests since the start or the last reset, by status.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    pub total: u64,
    pub by_status: std::collections::BTreeMap<u16, u64>,
}

impl RequestLog {
    /// Keeps the last 10,000 requests, enough for any test and bounded for a long-running dev
    /// server; the counts cover every request, for a benchmark's thousands.
    pub fn push(&mut self, entry: Logged) {
        self.counts.total += 1;
        *self.counts.by_status.entry(entry.status).or_default() += 1;
        if self.recent.len() >= 10_000 {
            self.recent.pop_front();
        }
        self.recent.push_back(entry);
    }
}

/// `GET /_emulator/requests`: the requests since the start or the last reset (the last 10,000).
pub async fn requests(State(emu): State<Emulator>) -> impl IntoResponse {
    Json(emu.requests())
}

/// `GET /_emulator/requests/counts`: how many requests were answered with each status.
pub async fn counts(State(emu): State<Emulator>) -> impl IntoResponse {
    Json(emu.request_counts())
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn globs_match_whole_paths() {
        assert!(glob("/_upload/*", "/_upload/abc"));
        assert!(glob("/v1.0/me/drive/*/content", "/v1.0/me/drive/root:/a.xlsx:/content"));
        assert!(glob("*", "/anything"));
        assert!(!glob("/v1.0/me", "/v1.0/me/drive"));
        assert!(!glob("/v1.0/*/content", "/v1.0/me/drive/items/1"));
        assert!(glob("/a*b*c", "/a-x-b-y-c"));
        assert!(!glob("/ab*ba", "/aba"));
    }
}
