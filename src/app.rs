//! The application: built from settings (store, clients, export jobs, workers), run (the
//! server beside its workers, until a signal or a worker stops), shut down gracefully.

use crate::config::Settings;
use crate::export::jobs::ExportJobs;
use crate::graph::{Graph, RetryPolicy};
use crate::http::AppState;
use crate::identity::sso::SsoValidator;
use crate::identity::tokens::Tokens;
use crate::store::Store;
use crate::store::secrets::{HOW_TO_MAKE_A_KEY, Keyring, MasterKey};
use crate::workers::Workers;
use anyhow::Context;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// How long shutdown waits for background work (export jobs, pollers) to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

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

/// Expired shared grids go with the rest. Idempotency records are kept 7 days (then a repeat is a new message); a blob nothing
/// refers to is removed once it is 6 hours old (an upload being written is younger).
async fn sweep_mail(store: &Store) {
    const DAY_MS: i64 = 24 * 3600 * 1000;
    let swept = async {
        store.sweep_uploads().await?;
        store.sweep_reports().await?;
        store.sweep_idempotency(7 * DAY_MS + DAY_MS / 24).await?;
        store.sweep_blobs(DAY_MS / 4).await?;
        store.sweep_grids(chrono::Utc::now()).await
    };
    if let Err(e) = swept.await {
        tracing::warn!(error = %e, "sweeping expired uploads, reports, idempotency records and grids failed; trying again later");
    }
}

/// A bound, ready-to-run server.
pub struct Application {
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    state: AppState,
    workers: Workers,
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
        let actual = listener.local_addr()?.port();
        if settings.listen.port() == 0 && settings.public_url.port_or_known_default() == Some(0) {
            let _ = settings.public_url.set_port(Some(actual));
        }
        // A public URL on this machine that names another port sends every sign-in back to
        // a port nobody listens on; behind a proxy the ports differ on purpose.
        let local = matches!(settings.public_url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
        if local && settings.public_url.port_or_known_default() != Some(actual) {
            tracing::warn!(
                public_url = %settings.public_url,
                port = actual,
                "public_url names another port than the server listens on: sign-in redirects will not come back (set public_url or --public-url)"
            );
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
        let mut workers = Workers::new();
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
        // Expired export files are removed even when nobody asks for them.
        let sweeping = exports.clone();
        workers.start("export sweeper", |cancel| async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return Ok(()),
                    _ = tick.tick() => sweeping.sweep(),
                }
            }
        });
        let templates = Arc::new(crate::mail::templates::Templates::new(settings.mail.templates_dir.clone()));
        let outbox = Arc::new(crate::mail::outbox::Outbox::new(store.clone(), graph.clone(), &settings.mail)?);
        for _ in 0..settings.mail.workers {
            let worker = outbox.clone();
            workers.start("outbox worker", move |cancel| worker.work(cancel));
        }
        let sweeping = store.clone();
        workers.start("mail sweeper", |cancel| async move {
            let mut tick = tokio::time::interval(Duration::from_secs(600));
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return Ok(()),
                    _ = tick.tick() => sweep_mail(&sweeping).await,
                }
            }
        });
        let contacts = Arc::new(crate::contacts::lookup::Lookup::new(
            store.clone(),
            graph.clone(),
            &settings.contacts,
            workers.spawner(),
        ));
        let state = AppState {
            store,
            templates,
            tokens,
            graph,
            sso,
            exports,
            settings: Arc::new(settings),
            metrics: crate::telemetry::metrics_handle(),
            contacts,
            workers: workers.spawner(),
            outbox,
        };
        Ok(Self {
            listener,
            metrics_listener,
            state,
            workers,
        })
    }

    /// The outbox, for tests that drive delivery step by step.
    pub fn outbox(&self) -> Arc<crate::mail::outbox::Outbox> {
        self.state.outbox.clone()
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

    /// The spawner of background tasks (tests drain it instead of sleeping).
    pub fn spawner(&self) -> crate::workers::Spawner {
        self.state.workers.clone()
    }

    /// Serves until `shutdown` resolves or a worker stops, then finishes the requests in
    /// flight and the background work (at most [`SHUTDOWN_GRACE`]). A stopped worker is an
    /// error naming it: the process exits non-zero so a supervisor restarts it.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let Self {
            listener,
            metrics_listener,
            state,
            mut workers,
        } = self;
        let store = state.store.clone();
        let header_timeout = Duration::from_secs(state.settings.http.header_read_timeout_secs);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            }
        };
        let metrics = metrics_listener.map(|listener| {
            let app = crate::http::metrics_router(state.clone());
            tokio::spawn(crate::http::server::serve(listener, app, header_timeout, stopped()))
        });
        let api = crate::http::server::serve(listener, crate::http::router(state), header_timeout, stopped());
        let mut api = std::pin::pin!(api);
        let mut failed = None;
        tokio::select! {
            () = shutdown => {}
            (name, why) = workers.stopped() => {
                tracing::error!(worker = %name, error = %crate::error::error_chain(&why), "a worker stopped; shutting down");
                failed = Some(why.context(format!("worker '{name}' stopped")));
            }
            () = &mut api => {}
        }
        let _ = stop_tx.send(true);
        api.await;
        if let Some(m) = metrics {
            let _ = m.await;
        }
        workers.shutdown(SHUTDOWN_GRACE).await;
        store.close().await;
        failed.map_or(Ok(()), Err)
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
