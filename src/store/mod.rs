//! Storage: one [`Store`] over SQLite (the embedded default) or PostgreSQL (several instances
//! behind a load balancer), with per-backend migrations run at start.
//!
//! Unlike Atuin's one-implementation-per-backend trait, each query here is written once and
//! compiled against both drivers by the `on_pool!`/`in_tx!` macros: both backends accept the
//! same `$n` placeholders and `ON CONFLICT`, so two copies of every statement would only be
//! two chances to let them drift. Where the dialects really differ, the backend is matched
//! explicitly.

pub mod models;
pub mod secrets;

use crate::domain::Secret;
use anyhow::Context;
use secrets::Keyring;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// Errors the callers act on; everything else is `Other` and becomes an opaque 500.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what} '{key}' does not exist")]
    NotFound { what: &'static str, key: String },
    /// A uniqueness or reference rule: `field` names the input at fault.
    #[error("{message}")]
    Conflict { field: &'static str, message: String },
    /// A rule about the input's content that needed the database to check.
    #[error("{message}")]
    Invalid { field: &'static str, message: String },
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        Self::Other(anyhow::Error::new(e).context("database operation failed"))
    }
}

/// Creates the SQLite file readable by its owner alone before SQLite opens it: it holds
/// sealed secrets and the audit log, and SQLite gives its `-wal` and `-shm` files the
/// database file's permissions.
fn create_private(path: &std::path::Path) -> anyhow::Result<()> {
    if path.as_os_str().is_empty() || path.as_os_str() == ":memory:" || path.exists() {
        return Ok(());
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot create the database {}", path.display())),
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error().is_some_and(|d| d.is_unique_violation())
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Clone)]
enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to whichever backend is configured.
macro_rules! on_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.db {
            Db::Sqlite($pool) => $body,
            Db::Postgres($pool) => $body,
        }
    };
}

/// Runs `$body` inside one transaction (`$tx`), committing when it finishes without `?`
/// returning early; an early return drops the transaction, which rolls it back — so a
/// failed write leaves nothing half-done, audit entry included.
macro_rules! in_tx {
    ($store:expr, |$tx:ident| $body:expr) => {
        match &$store.db {
            Db::Sqlite(pool) => {
                // IMMEDIATE takes the write lock at the start: a deferred transaction that
                // reads and then writes while another one writes fails at once with
                // SQLITE_BUSY (busy_timeout cannot help it), which two racing requests hit.
                let mut $tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let out = $body;
                $tx.commit().await?;
                out
            }
            Db::Postgres(pool) => {
                let mut $tx = pool.begin().await?;
                let out = $body;
                $tx.commit().await?;
                out
            }
        }
    };
}

/// Appends one audit entry in the caller's transaction.
macro_rules! audit {
    ($tx:expr, $actor:expr, $action:expr, $target:expr, $detail:expr) => {
        sqlx::query("INSERT INTO audit_log (at, actor, action, target, detail) VALUES ($1, $2, $3, $4, $5)")
            .bind(chrono::Utc::now())
            .bind($actor)
            .bind($action)
            .bind($target)
            .bind(serde_json::Value::to_string(&$detail))
            .execute(&mut *$tx)
            .await?
    };
}

/// Refuses, in the caller's transaction, to remove `$key` while rows still name it: `$sql`
/// selects their names (one `$1`); the 409 (on `code`) says `$message`, in which `$users` is
/// the names joined.
macro_rules! refuse_in_use {
    ($tx:expr, $sql:expr, $key:expr, |$users:ident| $message:expr) => {{
        let names: Vec<String> = sqlx::query_scalar($sql).bind($key).fetch_all(&mut *$tx).await?;
        if !names.is_empty() {
            let $users = names.join(", ");
            return Err(StoreError::Conflict {
                field: "code",
                message: $message,
            });
        }
    }};
}

// One file per resource, declared after the macros above so they can use them.
mod apikeys;
mod audit;
pub mod blobs;
mod companies;
pub mod contacts;
pub mod grids;
mod operators;
pub mod outbox;
mod profiles;
pub mod reports;
mod rotation;
mod signin;
mod tenants;
pub mod uploads;

/// A stored value that no longer parses (the database was changed by hand, or by a newer
/// version): an error naming it, never a panic and never a silent default.
fn corrupt(what: &str, value: &str, why: impl std::fmt::Display) -> StoreError {
    StoreError::Other(anyhow::anyhow!("the stored {what} '{value}' is not valid: {why}"))
}

/// The SQL dialect of the configured backend. Statements are written once in the SQL both
/// accept; where they cannot be (row locks that skip rows another instance holds, for
/// example), a resource matches on this and keeps both variants side by side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Store {
    db: Db,
    keyring: Arc<Keyring>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.backend())
    }
}

impl Store {
    /// Opens the database named by `url` (`sqlite:…` or `postgres:…`) and brings its schema up
    /// to date.
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn connect(url: &Secret, keyring: Keyring) -> anyhow::Result<Self> {
        let raw = url.expose_secret();
        let db = if raw.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(raw)
                .context("database_url is not a valid SQLite URL")?
                .create_if_missing(true)
                // WAL lets readers run while the outbox worker writes.
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(5))
                .foreign_keys(true);
            if let Some(dir) = opts.get_filename().parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).with_context(|| format!("cannot create the database folder {}", dir.display()))?;
            }
            create_private(opts.get_filename())?;
            Db::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(8)
                    .connect_with(opts)
                    .await
                    .context("cannot open the SQLite database")?,
            )
        } else if raw.starts_with("postgres:") || raw.starts_with("postgresql:") {
            let pool = PgPoolOptions::new()
                .max_connections(10)
                .acquire_timeout(Duration::from_secs(10))
                .connect(raw)
                .await
                .context("cannot connect to PostgreSQL (check database_url)")?;
            Db::Postgres(pool)
        } else {
            anyhow::bail!("database_url must start with sqlite: or postgres:");
        };
        let store = Self {
            db,
            keyring: Arc::new(keyring),
        };
        store.migrate().await?;
        Ok(store)
    }

    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn migrate(&self) -> anyhow::Result<()> {
        match &self.db {
            Db::Sqlite(p) => sqlx::migrate!("./migrations/sqlite").run(p).await,
            Db::Postgres(p) => sqlx::migrate!("./migrations/postgres").run(p).await,
        }
        .context("database migration failed")
    }

    pub fn dialect(&self) -> Dialect {
        match self.db {
            Db::Sqlite(_) => Dialect::Sqlite,
            Db::Postgres(_) => Dialect::Postgres,
        }
    }

    pub fn backend(&self) -> &'static str {
        match self.dialect() {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
        }
    }

    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// A trivial round trip, for `/readyz`.
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn ping(&self) -> Result<()> {
        on_pool!(self, |p| sqlx::query("SELECT 1").execute(p).await.map(|_| ()))?;
        Ok(())
    }

    pub async fn close(&self) {
        on_pool!(self, |p| p.close().await)
    }
}
