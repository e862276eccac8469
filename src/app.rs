//! The application: shared state, router assembly, start-up (including `--dev` provisioning)
//! and graceful shutdown.

use crate::config::Settings;
use crate::domain::Secret;
use crate::error::ApiError;
use crate::export::jobs::ExportJobs;
use crate::graph::{Graph, RetryPolicy};
use crate::http::{apikeys, audit, auth, exports, health, imports, openapi, operators, tenants};
use crate::identity::sso::SsoValidator;
use crate::identity::tokens::Tokens;
use crate::store::Store;
use crate::store::models::Role;
use crate::store::secrets::{HOW_TO_MAKE_A_KEY, Keyring, MasterKey};
use anyhow::Context;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub tokens: Arc<Tokens>,
    pub graph: Arc<Graph>,
    pub sso: Arc<SsoValidator>,
    pub exports: Arc<ExportJobs>,
    pub settings: Arc<Settings>,
    pub metrics: PrometheusHandle,
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint; the API is described at /openapi.json".into())
}

/// Assembles every route. Health checks sit outside the trace layer so probes do not
/// flood the logs.
pub fn router(state: AppState) -> Router {
    let timeout = Duration::from_secs(state.settings.http.request_timeout_secs);
    let admin = Router::new()
        .route("/api/v1/tenants", get(tenants::list).post(tenants::create))
        .route(
            "/api/v1/tenants/{code}",
            get(tenants::get).put(tenants::replace).delete(tenants::delete),
        )
        .route("/api/v1/operators", get(operators::list))
        .route("/api/v1/operators/{code}", get(operators::get).put(operators::put))
        .route("/api/v1/apikeys", get(apikeys::list).post(apikeys::create))
        .route("/api/v1/apikeys/{id}", delete(apikeys::revoke))
        .route("/api/v1/audit", get(audit::list))
        .route("/api/v1/operators/{code}/signin", post(auth::issue_link))
        .route("/api/v1/operators/{code}/signin/device", post(auth::device))
        .route("/api/v1/me", get(auth::me))
        .route("/auth/signin", get(auth::signin))
        .route("/auth/callback", get(auth::callback))
        .layer(DefaultBodyLimit::max(state.settings.http.json_body_limit))
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, timeout));
    // Exports stream large bodies and run for minutes: their own limits, no timeout.
    let client = Router::new()
        .route("/api/v1/exports", post(exports::create))
        .route("/api/v1/exports/{id}", get(exports::status))
        .route("/api/v1/exports/{id}/content", get(exports::content))
        .route("/api/v1/exports/{id}/events", get(exports::events))
        .route("/api/v1/imports", post(imports::create))
        .layer(DefaultBodyLimit::max(state.settings.export.max_json_bytes as usize));
    let traced = admin
        .merge(client)
        .route("/openapi.json", get(openapi::serve))
        .fallback(not_found)
        .route_layer(axum::middleware::from_fn(health::track))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let route = req
                .extensions()
                .get::<MatchedPath>()
                .map(MatchedPath::as_str)
                .unwrap_or("unmatched");
            tracing::info_span!("request", method = %req.method(), route)
        }));
    let mut probes = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz));
    // With a listener of their own, metrics are not on the public port at all.
    if state.settings.metrics.listen.is_none() {
        probes = probes.route("/metrics", get(health::metrics));
    }
    traced.merge(probes).with_state(state)
}

/// The metrics listener's router (`metrics.listen`).
fn metrics_router(state: AppState) -> Router {
    Router::new().route("/metrics", get(health::metrics)).with_state(state)
}

/// The keyring from the settings; production refuses to start without a master key.
pub fn keyring(settings: &Settings) -> anyhow::Result<Keyring> {
    let Some(key) = &settings.master_key else {
        anyhow::bail!("no master key is configured: {HOW_TO_MAKE_A_KEY}");
    };
    let previous = settings
        .previous_master_keys
        .iter()
        .map(MasterKey::parse)
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Keyring::new(MasterKey::parse(key)?, previous))
}

/// Fills in what `--dev` provides: a master key kept in the data folder (generated on first
/// start) and the Microsoft 365 emulator allowed as a tenant endpoint (its address is set
/// once it listens).
pub fn prepare_dev(settings: &mut Settings) -> anyhow::Result<()> {
    settings.dev = true;
    settings.allow_emulator = true;
    std::fs::create_dir_all(&settings.data_dir).with_context(|| format!("cannot create {}", settings.data_dir.display()))?;
    if settings.master_key.is_none() {
        let path = settings.data_dir.join("master.key");
        if !path.exists() {
            let (_, encoded) = MasterKey::generate();
            write_private(&path, encoded.expose())?;
            tracing::warn!(path = %path.display(), "dev mode: generated a master key; production needs its own (see the README)");
        }
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        settings.master_key = Some(Secret::new(text.trim().to_string()));
    }
    Ok(())
}

/// Writes a file only its owner can read (keys and tokens).
pub fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}

/// The dev API keys, as written to `<data_dir>/dev-keys.json`.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct DevKeys {
    pub admin: String,
    pub client: String,
}

/// Makes sure `<data_dir>/dev-keys.json` holds a live admin and client key. Returns the keys
/// when they were just created (so the caller prints them once), `None` when the file's
/// keys still work.
pub async fn ensure_dev_keys(store: &Store, data_dir: &Path) -> anyhow::Result<Option<DevKeys>> {
    let path = data_dir.join("dev-keys.json");
    if let Ok(text) = std::fs::read_to_string(&path)
        && let Ok(keys) = serde_json::from_str::<DevKeys>(&text)
        && store
            .authenticate_api_key(&keys.admin)
            .await?
            .is_some_and(|k| k.role == Role::Admin)
        && store
            .authenticate_api_key(&keys.client)
            .await?
            .is_some_and(|k| k.role == Role::Client)
    {
        return Ok(None);
    }
    let mut created = Vec::new();
    for (name, role) in [("dev-admin", Role::Admin), ("dev-client", Role::Client)] {
        // A stale key of the same name (its file was lost) is retired first.
        let _ = store.revoke_api_key("serve --dev", name).await;
        let (_, token) = store.create_api_key("serve --dev", name, role).await?;
        created.push(token.expose().to_string());
    }
    let keys = DevKeys {
        admin: created[0].clone(),
        client: created[1].clone(),
    };
    write_private(&path, &serde_json::to_string_pretty(&keys)?)?;
    Ok(Some(keys))
}

/// A bound, ready-to-run server.
pub struct Application {
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    state: AppState,
}

impl Application {
    /// Opens the database, runs migrations and binds the listener.
    pub async fn build(mut settings: Settings) -> anyhow::Result<Self> {
        let store = Store::connect(&settings.database_url, keyring(&settings)?).await?;
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.listen))?;
        // Port 0 (tests, a quick local run) picks a free port; the public URL follows it, or
        // sign-in would send the browser back to a port nobody listens on.
        if settings.listen.port() == 0 && settings.public_url.port_or_known_default() == Some(0) {
            let port = listener.local_addr()?.port();
            let _ = settings.public_url.set_port(Some(port));
        }
        let metrics_listener = match settings.metrics.listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} (metrics.listen)"))?,
            ),
            None => None,
        };
        let http = crate::identity::oauth::http_client();
        let tokens = Arc::new(Tokens::new(http.clone(), store.clone()));
        let graph = Arc::new(Graph::new(tokens.clone(), RetryPolicy::default()));
        let sso = Arc::new(SsoValidator::new(http));
        let e = &settings.export;
        let exports = Arc::new(
            ExportJobs::new(
                &settings.data_dir.join("exports"),
                e.max_concurrent,
                Duration::from_secs(e.retention_secs),
                None,
            )?
            .with_limits(crate::export::jobs::QueueLimits {
                max_spool_bytes: e.max_spool_bytes,
                max_spool_bytes_per_key: e.max_spool_bytes_per_key,
                max_jobs: e.max_queued_jobs,
                max_jobs_per_key: e.max_queued_jobs_per_key,
            }),
        );
        let state = AppState {
            store,
            tokens,
            graph,
            sso,
            exports,
            settings: Arc::new(settings),
            metrics: crate::telemetry::metrics_handle(),
        };
        Ok(Self {
            listener,
            metrics_listener,
            state,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    /// Where metrics are served when they have a listener of their own.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn store(&self) -> &Store {
        &self.state.store
    }

    /// Serves until `shutdown` resolves, then finishes the requests in flight.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let store = self.state.store.clone();
        // Expired export files are removed even when nobody asks for them.
        let exports = Arc::downgrade(&self.state.exports);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            while let Some(jobs) = exports.upgrade() {
                jobs.sweep();
                drop(jobs);
                tick.tick().await;
            }
        });
        let header_timeout = Duration::from_secs(self.state.settings.http.header_read_timeout_secs);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            }
        };
        let metrics = self.metrics_listener.map(|listener| {
            let app = metrics_router(self.state.clone());
            tokio::spawn(crate::http::server::serve(listener, app, header_timeout, stopped()))
        });
        let api = crate::http::server::serve(self.listener, router(self.state), header_timeout, stopped());
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        api.await;
        if let Some(m) = metrics {
            let _ = m.await;
        }
        store.close().await;
        Ok(())
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}

/// The tenant and operator `serve --dev` provides.
pub const DEV_TENANT: &str = "DEMO";
pub const DEV_OPERATOR: &str = "DEMO";

/// Points tenant `DEMO` at the in-process emulator (its port changes on every start) and
/// links operator `DEMO` to the emulator's demo user, so a OneDrive export works at once.
/// The sign-in is the real authorization-code + PKCE exchange; only the account picker is
/// answered by code, through the emulator's sign-in request header.
pub async fn seed_dev_tenant(store: &Store, emulator: &str) -> anyhow::Result<()> {
    use crate::domain::{OperatorCode, TenantCode};
    use crate::emulator::seed::{DEMO_CLIENT_ID, DEMO_TENANT_ID, DEMO_USER};
    use crate::identity::oauth;
    use crate::store::models::NewOperator;
    let actor = "serve --dev";
    let input: crate::domain::TenantInput = serde_json::from_value(serde_json::json!({
        "code": DEV_TENANT,
        "description": "The built-in Microsoft 365 emulator (serve --dev)",
        "tenant_id": DEMO_TENANT_ID,
        "client_id": DEMO_CLIENT_ID,
        "platform": "public_client",
        "redirect_url": "http://localhost",
        "client_secret": "demo-client-secret",
        "authority": emulator,
        "graph_endpoint": emulator,
    }))?;
    let tenant = input
        .parse(None, Some(emulator))
        .map_err(|e| anyhow::anyhow!("the dev tenant does not parse: {e:?}"))?;
    let code = TenantCode::parse(DEV_TENANT).map_err(anyhow::Error::msg)?;
    match store.get_tenant(&code).await {
        Ok(_) => store.replace_tenant(actor, &tenant).await?,
        Err(crate::store::StoreError::NotFound { .. }) => store.create_tenant(actor, &tenant).await?,
        Err(e) => return Err(e.into()),
    };
    let operator = OperatorCode::parse(DEV_OPERATOR).map_err(anyhow::Error::msg)?;
    store
        .put_operator(
            actor,
            &NewOperator {
                code: operator.clone(),
                enabled: true,
                tenant: Some(code),
                email: Some(crate::domain::EmailAddress::parse(DEMO_USER).map_err(anyhow::Error::msg)?),
            },
        )
        .await?;

    // The shared client follows no redirects, so the emulator's answer to the account picker
    // (a redirect carrying the code) is read, not followed.
    let http = oauth::http_client();
    let endpoints = oauth::Endpoints::microsoft(emulator, DEMO_TENANT_ID);
    let app = oauth::ClientApp {
        client_id: DEMO_CLIENT_ID.into(),
        secret: None,
    };
    let pkce = oauth::pkce();
    let redirect_uri = "http://localhost/auth/callback";
    let scope = crate::identity::tokens::DELEGATED_SCOPES;
    let state = oauth::random_token();
    let url = oauth::authorize_url(
        &endpoints,
        &app,
        &oauth::AuthorizeRequest {
            redirect_uri,
            scope,
            state: &state,
            nonce: &oauth::random_token(),
            challenge: &pkce.challenge,
            login_hint: Some(DEMO_USER),
        },
    )?;
    let page = http.get(&url).send().await?;
    let request = page
        .headers()
        .get("x-emulator-signin-request")
        .and_then(|v| v.to_str().ok())
        .context("the emulator did not show its sign-in page")?
        .to_string();
    let back = http
        .post(&endpoints.authorize)
        .form(&[("request", request.as_str()), ("user", DEMO_USER)])
        .send()
        .await?;
    let location = back
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .context("the emulator did not redirect back")?;
    let location = url::Url::parse(location)?;
    let code = location
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .context("the emulator sent no code")?;
    let tokens = oauth::redeem_code(&http, &endpoints, &app, &code, &pkce.verifier, redirect_uri, scope).await?;
    let refresh = tokens.refresh_token.context("the emulator issued no refresh token")?;
    store.store_refresh_token(DEV_OPERATOR, &refresh).await?;
    Ok(())
}
