//! Liveness, readiness and Prometheus metrics.

use super::AppState;
use crate::error::ApiError;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::time::Instant;

/// The probes; `/metrics` too when it has no listener of its own.
pub fn routes(with_metrics: bool) -> axum::Router<AppState> {
    use axum::routing::get;
    let probes = axum::Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz));
    if with_metrics {
        probes.route("/metrics", get(metrics))
    } else {
        probes
    }
}

/// Liveness: the process answers. Deliberately touches nothing else.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "alive")))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: the database answers.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses((status = 200), (status = 503)))]
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    state.store.ping().await.map_err(|e| {
        tracing::warn!(error = %e, "readiness check failed");
        ApiError::Unavailable("the database does not answer".into())
    })?;
    Ok("ready")
}

#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    // The outbox's depth is read at scrape time, from the database every instance shares, so
    // any instance reports the whole queue and a stuck message shows without a log search.
    match state.store.outbox_depth().await {
        Ok(depth) => {
            for s in crate::store::outbox::MailState::ALL {
                let n = depth.iter().find(|(name, _)| name == s.as_str()).map_or(0, |(_, n)| *n);
                metrics::gauge!("outbox_messages", "state" => s.as_str()).set(n as f64);
            }
        }
        Err(e) => tracing::warn!(error = %e, "outbox depth not read for /metrics"),
    }
    (
        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

/// A request method as a metric label: a fixed set, because HTTP lets a client invent
/// methods and every new label value is a new series kept for the life of the process.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Counts requests and their latency by matched route (never the raw URI, which would
/// explode the label set with codes and ids).
pub async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = method_label(req.method());
    let started = Instant::now();
    let response = next.run(req).await;
    let labels = [
        ("method", method.to_string()),
        ("route", route),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels).record(started.elapsed().as_secs_f64());
    response
}
