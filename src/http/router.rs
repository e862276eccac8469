//! The composition root of the HTTP edge: the state every handler shares, and the one place
//! where each resource's routes are merged and layered. A new resource adds one line here.

use super::{
    addin, apikeys, audit, auth, companies, contacts, exports, grids, health, imports, mail, openapi, operators, profiles, reports,
    templates, tenants,
};
use crate::config::Settings;
use crate::error::ApiError;
use crate::graph::Graph;
use crate::identity::sso::SsoValidator;
use crate::identity::tokens::Tokens;
use crate::store::Store;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;
use std::time::Duration;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

/// What every handler may reach. Built once by [`crate::app::Application::build`].
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub tokens: Arc<Tokens>,
    pub graph: Arc<Graph>,
    pub sso: Arc<SsoValidator>,
    pub exports: Arc<exports::Jobs>,
    pub settings: Arc<Settings>,
    /// The mail templates: built-in, with the installation's overrides.
    pub templates: Arc<crate::mail::templates::Templates>,
    pub metrics: PrometheusHandle,
    /// Where background work started by a request (device-code polling, export jobs) runs,
    /// so it is supervised and drained at shutdown.
    pub workers: crate::workers::Spawner,
    /// The outbox's delivery, told when a message is queued.
    pub outbox: Arc<crate::mail::outbox::Outbox>,
    /// The contact lookup (its throttling memory and index refreshes are shared).
    pub contacts: Arc<crate::contacts::lookup::Lookup>,
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint; the API is described at /openapi.json".into())
}

/// Assembles every route. Health checks sit outside the trace layer so probes do not
/// flood the logs.
pub fn router(state: AppState) -> Router {
    let timeout = Duration::from_secs(state.settings.http.request_timeout_secs);
    // Small JSON bodies, answered within the request timeout.
    let admin = Router::new()
        .merge(tenants::routes())
        .merge(operators::routes())
        .merge(apikeys::routes())
        .merge(audit::routes())
        .merge(auth::routes())
        .merge(companies::routes())
        .merge(profiles::routes())
        .merge(templates::routes())
        .merge(mail::routes())
        .merge(contacts::routes())
        .merge(addin::routes(state.settings.dev))
        .layer(DefaultBodyLimit::max(state.settings.http.json_body_limit))
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, timeout));
    // Exports stream large bodies and run for minutes: their own limits, no timeout.
    let bulk = Router::new()
        .merge(exports::routes())
        .merge(imports::routes())
        .merge(contacts::erp_routes())
        .merge(grids::routes())
        .layer(DefaultBodyLimit::max(state.settings.export.max_json_bytes as usize));
    // Mail bodies carry inline attachments: their own limit, the request timeout.
    let mail_bodies = mail::send_routes()
        .layer(DefaultBodyLimit::max(state.settings.mail.max_json_bytes as usize))
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, timeout));
    // Uploads are streamed into the database and bounded while they arrive.
    let uploads = mail::upload_routes().merge(reports::routes()).layer(DefaultBodyLimit::disable());
    let traced = admin
        .merge(bulk)
        .merge(mail_bodies)
        .merge(uploads)
        .route("/openapi.json", get(openapi::serve))
        .fallback(not_found)
        .route_layer(axum::middleware::from_fn(health::track))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::signin_links))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let route = req
                .extensions()
                .get::<MatchedPath>()
                .map(MatchedPath::as_str)
                .unwrap_or("unmatched");
            tracing::info_span!("request", method = %req.method(), route)
        }));
    // With a listener of their own, metrics are not on the public port at all.
    let probes = health::routes(state.settings.metrics.listen.is_none());
    traced.merge(probes).with_state(state)
}

/// The metrics listener's router (`metrics.listen`).
pub fn metrics_router(state: AppState) -> Router {
    Router::new().route("/metrics", get(health::metrics)).with_state(state)
}
