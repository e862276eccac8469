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

use crate::domain::{NewTenant, OperatorCode, Secret, SecretUpdate, TenantCode};
use anyhow::Context;
use chrono::{DateTime, Utc};
use models::*;
use secrets::Keyring;
use sha2::{Digest, Sha256};
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

fn directory_conflict(t: &NewTenant, other: &str) -> StoreError {
    StoreError::Conflict {
        field: "tenant_id",
        message: format!(
            "directory {} is already configured as tenant {other}; one directory is one tenant record",
            t.tenant_id.as_str()
        ),
    }
}

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
                let mut $tx = pool.begin().await?;
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
            .bind(Utc::now())
            .bind($actor)
            .bind($action)
            .bind($target)
            .bind(serde_json::Value::to_string(&$detail))
            .execute(&mut *$tx)
            .await?
    };
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

#[derive(sqlx::FromRow)]
struct TenantRow {
    code: String,
    description: String,
    tenant_id: String,
    client_id: String,
    platform: String,
    redirect_url: String,
    client_secret: Option<String>,
    authority: String,
    graph_endpoint: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TenantRow {
    fn into_model(self) -> Tenant {
        use crate::domain::{Authority, ClientId, DirectoryId, GraphEndpoint, Platform, RedirectUrl};
        Tenant {
            code: TenantCode::parse(&self.code).expect("stored code was parsed on the way in"),
            description: self.description,
            tenant_id: DirectoryId::from_stored(self.tenant_id),
            client_id: ClientId::from_stored(self.client_id),
            platform: Platform::parse(&self.platform).unwrap_or(Platform::PublicClient),
            redirect_url: RedirectUrl::from_stored(self.redirect_url),
            client_secret: SecretState {
                set: self.client_secret.is_some(),
            },
            authority: Authority::from_stored(self.authority),
            graph_endpoint: GraphEndpoint::from_stored(self.graph_endpoint),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

#[derive(sqlx::FromRow)]
struct OperatorRow {
    code: String,
    enabled: bool,
    tenant_code: Option<String>,
    email: Option<String>,
    signin: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl OperatorRow {
    fn into_model(self) -> Operator {
        use crate::domain::EmailAddress;
        Operator {
            code: OperatorCode::parse(&self.code).expect("stored code was parsed on the way in"),
            enabled: self.enabled,
            tenant: self.tenant_code.and_then(|c| TenantCode::parse(&c).ok()),
            email: self.email.and_then(|e| EmailAddress::parse(&e).ok()),
            signin: SigninState::from_db(&self.signin),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

#[derive(sqlx::FromRow)]
struct ApiKeyRow {
    id: String,
    name: String,
    role: String,
    created_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
}

impl ApiKeyRow {
    fn into_model(self) -> ApiKey {
        ApiKey {
            id: self.id,
            name: self.name,
            role: Role::from_db(&self.role),
            created_at: self.created_at,
            revoked_at: self.revoked_at,
        }
    }
}

#[derive(sqlx::FromRow)]
struct AuditRow {
    id: i64,
    at: DateTime<Utc>,
    actor: String,
    action: String,
    target: String,
    detail: String,
}

const TENANT_COLUMNS: &str =
    "code, description, tenant_id, client_id, platform, redirect_url, client_secret, authority, graph_endpoint, created_at, updated_at";
const OPERATOR_COLUMNS: &str = "code, enabled, tenant_code, email, signin, created_at, updated_at";
const API_KEY_COLUMNS: &str = "id, name, role, created_at, revoked_at";

fn tenant_secret_aad(code: &TenantCode) -> String {
    format!("tenant/{code}/client_secret")
}

fn signin_verifier_aad(state: &str) -> String {
    format!("signin/{}/verifier", state_hash(state))
}

fn state_hash(state: &str) -> String {
    hex::encode(Sha256::digest(state.as_bytes()))
}

fn operator_token_aad(code: &str) -> String {
    format!("operator/{code}/refresh_token")
}

/// The audit record of a tenant's non-secret fields.
fn tenant_audit(t: &NewTenant) -> serde_json::Value {
    serde_json::json!({
        "description": t.description,
        "tenant_id": t.tenant_id,
        "client_id": t.client_id,
        "platform": t.platform,
        "redirect_url": t.redirect_url,
        "authority": t.authority,
        "graph_endpoint": t.graph_endpoint,
    })
}

/// Says what happened to a secret, for the audit log, without its value.
fn secret_audit(update: &SecretUpdate) -> &'static str {
    match update {
        SecretUpdate::Keep => "unchanged",
        SecretUpdate::Clear => "cleared",
        SecretUpdate::Set(_) => "replaced",
    }
}

/// SHA-256 of an API key. Keys carry 256 random bits, so a fast unsalted hash is enough to
/// make a stolen table useless; a password hash would only slow every request.
fn api_key_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Store {
    /// Opens the database named by `url` (`sqlite:…` or `postgres:…`) and brings its schema up
    /// to date.
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

    pub async fn migrate(&self) -> anyhow::Result<()> {
        match &self.db {
            Db::Sqlite(p) => sqlx::migrate!("./migrations/sqlite").run(p).await,
            Db::Postgres(p) => sqlx::migrate!("./migrations/postgres").run(p).await,
        }
        .context("database migration failed")
    }

    pub fn backend(&self) -> &'static str {
        match self.db {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// A trivial round trip, for `/readyz`.
    pub async fn ping(&self) -> Result<()> {
        on_pool!(self, |p| sqlx::query("SELECT 1").execute(p).await.map(|_| ()))?;
        Ok(())
    }

    pub async fn close(&self) {
        on_pool!(self, |p| p.close().await)
    }

    // ----- tenants -------------------------------------------------------------------------

    pub async fn list_tenants(&self) -> Result<Vec<Tenant>> {
        let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants ORDER BY code");
        let rows: Vec<TenantRow> = on_pool!(self, |p| sqlx::query_as(&sql).fetch_all(p).await)?;
        Ok(rows.into_iter().map(TenantRow::into_model).collect())
    }

    /// The tenant record of a directory (a token's `tid`), found by the index that keeps one
    /// record per directory.
    pub async fn tenant_by_directory(&self, directory: &str) -> Result<Option<Tenant>> {
        let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE lower(tenant_id) = lower($1)");
        let row: Option<TenantRow> = on_pool!(self, |p| sqlx::query_as(&sql).bind(directory).fetch_optional(p).await)?;
        Ok(row.map(TenantRow::into_model))
    }

    pub async fn get_tenant(&self, code: &TenantCode) -> Result<Tenant> {
        let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE code = $1");
        let row: Option<TenantRow> = on_pool!(self, |p| sqlx::query_as(&sql).bind(code.as_str()).fetch_optional(p).await)?;
        row.map(TenantRow::into_model).ok_or_else(|| StoreError::NotFound {
            what: "tenant",
            key: code.to_string(),
        })
    }

    /// The decrypted client secret, for the code that calls the identity platform.
    pub async fn tenant_client_secret(&self, code: &TenantCode) -> Result<Option<Secret>> {
        let sealed: Option<Option<String>> = on_pool!(self, |p| sqlx::query_scalar("SELECT client_secret FROM tenants WHERE code = $1")
            .bind(code.as_str())
            .fetch_optional(p)
            .await)?;
        match sealed {
            None => Err(StoreError::NotFound {
                what: "tenant",
                key: code.to_string(),
            }),
            Some(None) => Ok(None),
            Some(Some(s)) => Ok(Some(self.keyring.open(&s, &tenant_secret_aad(code))?)),
        }
    }

    /// Another tenant record for the same directory, which the unique index would refuse:
    /// named in the 409 so the administrator knows which record to fix.
    async fn directory_taken(&self, t: &NewTenant) -> Result<()> {
        let other: Option<String> = on_pool!(self, |p| sqlx::query_scalar(
            "SELECT code FROM tenants WHERE lower(tenant_id) = lower($1) AND code <> $2"
        )
        .bind(t.tenant_id.as_str())
        .bind(t.code.as_str())
        .fetch_optional(p)
        .await)?;
        match other {
            Some(code) => Err(directory_conflict(t, &code)),
            None => Ok(()),
        }
    }

    pub async fn create_tenant(&self, actor: &str, t: &NewTenant) -> Result<Tenant> {
        let code_taken = || StoreError::Conflict {
            field: "code",
            message: format!("a tenant with code '{}' already exists", t.code),
        };
        match self.get_tenant(&t.code).await {
            Ok(_) => return Err(code_taken()),
            Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        self.directory_taken(t).await?;
        let now = Utc::now();
        let sealed = match &t.client_secret {
            SecretUpdate::Set(s) => Some(self.keyring.seal(s, &tenant_secret_aad(&t.code))),
            SecretUpdate::Keep | SecretUpdate::Clear => None,
        };
        let mut detail = tenant_audit(t);
        detail["client_secret"] = serde_json::json!(if sealed.is_some() { "set" } else { "not set" });
        in_tx!(self, |tx| {
            let inserted = sqlx::query(&format!(
                "INSERT INTO tenants ({TENANT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)"
            ))
            .bind(t.code.as_str())
            .bind(&t.description)
            .bind(t.tenant_id.as_str())
            .bind(t.client_id.as_str())
            .bind(t.platform.as_str())
            .bind(t.redirect_url.as_str())
            .bind(&sealed)
            .bind(t.authority.as_str())
            .bind(t.graph_endpoint.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await;
            match inserted {
                // A race with another writer; the checks above name the record in the usual case.
                Err(e) if is_unique_violation(&e) && e.to_string().contains("tenants_directory") => {
                    return Err(directory_conflict(t, "another record"));
                }
                Err(e) if is_unique_violation(&e) => return Err(code_taken()),
                other => other?,
            };
            audit!(tx, actor, "tenant.create", t.code.as_str(), detail);
        });
        self.get_tenant(&t.code).await
    }

    pub async fn replace_tenant(&self, actor: &str, t: &NewTenant) -> Result<Tenant> {
        let before = self.get_tenant(&t.code).await?;
        self.directory_taken(t).await?;
        // The stored secret was given for the endpoints it was stored with; kept silently, it
        // would be sent to whatever new authority or Graph endpoint the request names.
        let moved = before.authority.as_str() != t.authority.as_str() || before.graph_endpoint.as_str() != t.graph_endpoint.as_str();
        if moved && matches!(t.client_secret, SecretUpdate::Keep) && before.client_secret.set {
            return Err(StoreError::Invalid {
                field: "client_secret",
                message: "must be given again (or set to null) when authority or graph_endpoint changes: \
                          the stored secret is never sent to a new endpoint"
                    .into(),
            });
        }
        let (keep, sealed) = match &t.client_secret {
            SecretUpdate::Keep => (true, None),
            SecretUpdate::Clear => (false, None),
            SecretUpdate::Set(s) => (false, Some(self.keyring.seal(s, &tenant_secret_aad(&t.code)))),
        };
        let after = tenant_audit(t);
        let before_json = serde_json::to_value(&before).map_err(anyhow::Error::from)?;
        let changed: serde_json::Map<String, serde_json::Value> = after
            .as_object()
            .expect("object")
            .iter()
            .filter(|(k, v)| before_json.get(k.as_str()) != Some(v))
            .map(|(k, v)| (k.clone(), serde_json::json!({"from": before_json[k.as_str()], "to": v})))
            .collect();
        let detail = serde_json::json!({"changed": changed, "client_secret": secret_audit(&t.client_secret)});
        in_tx!(self, |tx| {
            let done = sqlx::query(
                "UPDATE tenants SET description = $2, tenant_id = $3, client_id = $4, platform = $5, redirect_url = $6, \
                 client_secret = CASE WHEN $7 THEN client_secret ELSE $8 END, authority = $9, graph_endpoint = $10, updated_at = $11 \
                 WHERE code = $1",
            )
            .bind(t.code.as_str())
            .bind(&t.description)
            .bind(t.tenant_id.as_str())
            .bind(t.client_id.as_str())
            .bind(t.platform.as_str())
            .bind(t.redirect_url.as_str())
            .bind(keep)
            .bind(&sealed)
            .bind(t.authority.as_str())
            .bind(t.graph_endpoint.as_str())
            .bind(Utc::now())
            .execute(&mut *tx)
            .await;
            let done = match done {
                Err(e) if is_unique_violation(&e) => return Err(directory_conflict(t, "another record")),
                other => other?,
            };
            if done.rows_affected() == 0 {
                return Err(StoreError::NotFound {
                    what: "tenant",
                    key: t.code.to_string(),
                });
            }
            audit!(tx, actor, "tenant.replace", t.code.as_str(), detail);
        });
        self.get_tenant(&t.code).await
    }

    /// Deletes a tenant no operator uses; otherwise a conflict naming the operators.
    pub async fn delete_tenant(&self, actor: &str, code: &TenantCode) -> Result<()> {
        in_tx!(self, |tx| {
            let users: Vec<String> = sqlx::query_scalar("SELECT code FROM operators WHERE tenant_code = $1 ORDER BY code")
                .bind(code.as_str())
                .fetch_all(&mut *tx)
                .await?;
            if !users.is_empty() {
                return Err(StoreError::Conflict {
                    field: "code",
                    message: format!(
                        "tenant '{code}' is still used by operators: {}; move them to another tenant first",
                        users.join(", ")
                    ),
                });
            }
            let done = sqlx::query("DELETE FROM tenants WHERE code = $1")
                .bind(code.as_str())
                .execute(&mut *tx)
                .await?;
            if done.rows_affected() == 0 {
                return Err(StoreError::NotFound {
                    what: "tenant",
                    key: code.to_string(),
                });
            }
            audit!(tx, actor, "tenant.delete", code.as_str(), serde_json::json!({}));
        });
        Ok(())
    }

    // ----- operators -----------------------------------------------------------------------

    pub async fn list_operators(&self) -> Result<Vec<Operator>> {
        let sql = format!("SELECT {OPERATOR_COLUMNS} FROM operators ORDER BY code");
        let rows: Vec<OperatorRow> = on_pool!(self, |p| sqlx::query_as(&sql).fetch_all(p).await)?;
        Ok(rows.into_iter().map(OperatorRow::into_model).collect())
    }

    /// The operator of `tenant` whose address is `email` (compared without regard to case),
    /// for the add-in, whose token names the user but not the operator.
    pub async fn operator_by_email(&self, tenant: &TenantCode, email: &str) -> Result<Option<Operator>> {
        let sql =
            format!("SELECT {OPERATOR_COLUMNS} FROM operators WHERE tenant_code = $1 AND lower(email) = lower($2) ORDER BY code LIMIT 1");
        let row: Option<OperatorRow> = on_pool!(self, |p| sqlx::query_as(&sql)
            .bind(tenant.as_str())
            .bind(email)
            .fetch_optional(p)
            .await)?;
        Ok(row.map(OperatorRow::into_model))
    }

    pub async fn get_operator(&self, code: &OperatorCode) -> Result<Operator> {
        let sql = format!("SELECT {OPERATOR_COLUMNS} FROM operators WHERE code = $1");
        let row: Option<OperatorRow> = on_pool!(self, |p| sqlx::query_as(&sql).bind(code.as_str()).fetch_optional(p).await)?;
        row.map(OperatorRow::into_model).ok_or_else(|| StoreError::NotFound {
            what: "operator",
            key: code.to_string(),
        })
    }

    /// Creates or replaces an operator; returns it and whether it was created. Moving an
    /// operator to another tenant unlinks their Microsoft account: the stored refresh token
    /// belongs to the old tenant.
    pub async fn put_operator(&self, actor: &str, op: &NewOperator) -> Result<(Operator, bool)> {
        let now = Utc::now();
        let tenant = op.tenant.as_ref().map(|t| t.as_str().to_string());
        let created = in_tx!(self, |tx| {
            if let Some(t) = &tenant {
                let exists: Option<String> = sqlx::query_scalar("SELECT code FROM tenants WHERE code = $1")
                    .bind(t)
                    .fetch_optional(&mut *tx)
                    .await?;
                if exists.is_none() {
                    return Err(StoreError::Invalid {
                        field: "tenant",
                        message: format!("no tenant has code '{t}'"),
                    });
                }
            }
            let previous: Option<Option<String>> = sqlx::query_scalar("SELECT tenant_code FROM operators WHERE code = $1")
                .bind(op.code.as_str())
                .fetch_optional(&mut *tx)
                .await?;
            match &previous {
                None => {
                    sqlx::query(&format!(
                        "INSERT INTO operators ({OPERATOR_COLUMNS}) VALUES ($1, $2, $3, $4, 'never', $5, $5)"
                    ))
                    .bind(op.code.as_str())
                    .bind(op.enabled)
                    .bind(&tenant)
                    .bind(op.email.as_ref().map(|e| e.as_str()))
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
                Some(old_tenant) => {
                    let moved = *old_tenant != tenant;
                    sqlx::query(
                        "UPDATE operators SET enabled = $2, tenant_code = $3, email = $4, updated_at = $5, \
                         signin = CASE WHEN $6 THEN 'never' ELSE signin END, \
                         refresh_token = CASE WHEN $6 THEN NULL ELSE refresh_token END WHERE code = $1",
                    )
                    .bind(op.code.as_str())
                    .bind(op.enabled)
                    .bind(&tenant)
                    .bind(op.email.as_ref().map(|e| e.as_str()))
                    .bind(now)
                    .bind(moved)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            let action = if previous.is_none() { "operator.create" } else { "operator.update" };
            audit!(
                tx,
                actor,
                action,
                op.code.as_str(),
                serde_json::json!({"enabled": op.enabled, "tenant": tenant, "email": op.email})
            );
            previous.is_none()
        });
        Ok((self.get_operator(&op.code).await?, created))
    }

    /// Records a new refresh token for an operator (sealed) and marks them linked. Refresh
    /// tokens are replaced on every use, so this is called after each redemption.
    pub async fn store_refresh_token(&self, code: &str, token: &Secret) -> Result<()> {
        let sealed = self.keyring.seal(token, &operator_token_aad(code));
        let done = on_pool!(self, |p| sqlx::query(
            "UPDATE operators SET refresh_token = $2, signin = 'linked', updated_at = $3 WHERE code = $1"
        )
        .bind(code)
        .bind(&sealed)
        .bind(Utc::now())
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
        if done == 0 {
            return Err(StoreError::NotFound {
                what: "operator",
                key: code.to_string(),
            });
        }
        Ok(())
    }

    /// The operator's refresh token, decrypted, when one is stored.
    pub async fn operator_refresh_token(&self, code: &str) -> Result<Option<Secret>> {
        let sealed: Option<Option<String>> = on_pool!(self, |p| sqlx::query_scalar("SELECT refresh_token FROM operators WHERE code = $1")
            .bind(code)
            .fetch_optional(p)
            .await)?;
        match sealed.flatten() {
            None => Ok(None),
            Some(s) => Ok(Some(self.keyring.open(&s, &operator_token_aad(code))?)),
        }
    }

    /// The identity platform refused the operator's grant: it is forgotten, and the operator
    /// must sign in again.
    pub async fn require_signin(&self, code: &str) -> Result<()> {
        on_pool!(self, |p| sqlx::query(
            "UPDATE operators SET refresh_token = NULL, signin = 'signin_required', updated_at = $2 WHERE code = $1"
        )
        .bind(code)
        .bind(Utc::now())
        .execute(p)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Keeps an authorization request's state for its callback, and drops expired ones and,
    /// past the bounds, the oldest: at most `per_operator` for this operator, `total` in all.
    pub async fn put_pending_signin(&self, state: &str, pending: &PendingSignin, per_operator: usize, total: usize) -> Result<()> {
        let now = Utc::now();
        let verifier = self.keyring.seal(&pending.verifier, &signin_verifier_aad(state));
        in_tx!(self, |tx| {
            sqlx::query("DELETE FROM signin_states WHERE expires_at < $1")
                .bind(now)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO signin_states (state_hash, operator_code, verifier, nonce, redirect_uri, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(state_hash(state))
            .bind(pending.operator.as_str())
            .bind(&verifier)
            .bind(&pending.nonce)
            .bind(&pending.redirect_uri)
            .bind(now)
            .bind(pending.expires_at)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "DELETE FROM signin_states WHERE operator_code = $1 AND state_hash NOT IN \
                 (SELECT state_hash FROM signin_states WHERE operator_code = $1 ORDER BY created_at DESC, state_hash LIMIT $2)",
            )
            .bind(pending.operator.as_str())
            .bind(per_operator.max(1) as i64)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "DELETE FROM signin_states WHERE state_hash NOT IN \
                 (SELECT state_hash FROM signin_states ORDER BY created_at DESC, state_hash LIMIT $1)",
            )
            .bind(total.max(1) as i64)
            .execute(&mut *tx)
            .await?;
        });
        Ok(())
    }

    /// Spends a sign-in link's nonce: `false` when it was already spent.
    pub async fn spend_signin_link(&self, nonce: &str, operator: &OperatorCode, expires_at: DateTime<Utc>) -> Result<bool> {
        let now = Utc::now();
        let inserted = in_tx!(self, |tx| {
            sqlx::query("DELETE FROM signin_links_used WHERE expires_at < $1")
                .bind(now)
                .execute(&mut *tx)
                .await?;
            let r = sqlx::query(
                "INSERT INTO signin_links_used (nonce, operator_code, expires_at) VALUES ($1, $2, $3) ON CONFLICT (nonce) DO NOTHING",
            )
            .bind(nonce)
            .bind(operator.as_str())
            .bind(expires_at)
            .execute(&mut *tx)
            .await?;
            r.rows_affected() == 1
        });
        Ok(inserted)
    }

    /// Records who an operator was linked to, and how (`operator.signin`).
    pub async fn audit_signin(&self, operator: &OperatorCode, account: &str, via: &str) -> Result<()> {
        in_tx!(self, |tx| {
            audit!(
                tx,
                account,
                "operator.signin",
                operator.as_str(),
                serde_json::json!({"account": account, "via": via})
            );
        });
        Ok(())
    }

    /// Records that a sign-in link was issued, and to whom (`operator.signin_link`).
    pub async fn audit_signin_link(&self, actor: &str, operator: &OperatorCode, expires_at: DateTime<Utc>) -> Result<()> {
        in_tx!(self, |tx| {
            audit!(
                tx,
                actor,
                "operator.signin_link",
                operator.as_str(),
                serde_json::json!({"expires_at": expires_at})
            );
        });
        Ok(())
    }

    /// Takes (and so spends) a sign-in state: `None` when it is unknown, already used or expired.
    pub async fn take_pending_signin(&self, state: &str) -> Result<Option<PendingSignin>> {
        type Row = (String, String, String, String, DateTime<Utc>);
        let row: Option<Row> = on_pool!(self, |p| sqlx::query_as(
            "DELETE FROM signin_states WHERE state_hash = $1 RETURNING operator_code, verifier, nonce, redirect_uri, expires_at"
        )
        .bind(state_hash(state))
        .fetch_optional(p)
        .await)?;
        let Some((operator, verifier, nonce, redirect_uri, expires_at)) = row else {
            return Ok(None);
        };
        if expires_at <= Utc::now() {
            return Ok(None);
        }
        Ok(Some(PendingSignin {
            operator: OperatorCode::parse(&operator).map_err(|e| StoreError::Other(anyhow::anyhow!("stored operator code: {e}")))?,
            verifier: self.keyring.open(&verifier, &signin_verifier_aad(state))?,
            nonce,
            redirect_uri,
            expires_at,
        }))
    }

    // ----- companies -----------------------------------------------------------------------

    pub async fn put_company(&self, actor: &str, code: &crate::domain::CompanyCode, name: &str) -> Result<()> {
        let now = Utc::now();
        in_tx!(self, |tx| {
            sqlx::query(
                "INSERT INTO companies (code, name, created_at, updated_at) VALUES ($1, $2, $3, $3) \
                 ON CONFLICT (code) DO UPDATE SET name = excluded.name, updated_at = excluded.updated_at",
            )
            .bind(code.as_str())
            .bind(name)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            audit!(tx, actor, "company.put", code.as_str(), serde_json::json!({"name": name}));
        });
        Ok(())
    }

    pub async fn list_companies(&self) -> Result<Vec<Company>> {
        let rows: Vec<(String, String)> = on_pool!(self, |p| sqlx::query_as("SELECT code, name FROM companies ORDER BY code")
            .fetch_all(p)
            .await)?;
        Ok(rows.into_iter().map(|(code, name)| Company { code, name }).collect())
    }

    // ----- API keys ------------------------------------------------------------------------

    /// Creates a key and returns it with the token, which is not stored and cannot be shown again.
    pub async fn create_api_key(&self, actor: &str, name: &str, role: Role) -> Result<(ApiKey, Secret)> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 64 {
            return Err(StoreError::Invalid {
                field: "name",
                message: "must be 1 to 64 characters".into(),
            });
        }
        let mut bytes = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
        let token = Secret::new(format!(
            "obk_{}",
            base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes)
        ));
        let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        in_tx!(self, |tx| {
            let inserted = sqlx::query("INSERT INTO api_keys (id, name, role, key_hash, created_at) VALUES ($1, $2, $3, $4, $5)")
                .bind(&id)
                .bind(name)
                .bind(role.as_str())
                .bind(api_key_hash(token.expose_secret()))
                .bind(Utc::now())
                .execute(&mut *tx)
                .await;
            match inserted {
                Err(e) if is_unique_violation(&e) => {
                    return Err(StoreError::Conflict {
                        field: "name",
                        message: format!("a live API key is already named '{name}'"),
                    });
                }
                other => other?,
            };
            audit!(tx, actor, "apikey.create", &id, serde_json::json!({"name": name, "role": role}));
        });
        let key = self
            .list_api_keys()
            .await?
            .into_iter()
            .find(|k| k.id == id)
            .context("created key vanished")?;
        Ok((key, token))
    }

    /// The live key whose token this is, if any.
    pub async fn authenticate_api_key(&self, token: &str) -> Result<Option<ApiKey>> {
        let sql = format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL");
        let row: Option<ApiKeyRow> = on_pool!(self, |p| sqlx::query_as(&sql).bind(api_key_hash(token)).fetch_optional(p).await)?;
        Ok(row.map(ApiKeyRow::into_model))
    }

    pub async fn list_api_keys(&self) -> Result<Vec<ApiKey>> {
        let sql = format!("SELECT {API_KEY_COLUMNS} FROM api_keys ORDER BY created_at, id");
        let rows: Vec<ApiKeyRow> = on_pool!(self, |p| sqlx::query_as(&sql).fetch_all(p).await)?;
        Ok(rows.into_iter().map(ApiKeyRow::into_model).collect())
    }

    /// Revokes the live key with this id or name.
    pub async fn revoke_api_key(&self, actor: &str, id_or_name: &str) -> Result<ApiKey> {
        let id: String = in_tx!(self, |tx| {
            let id: Option<String> = sqlx::query_scalar("SELECT id FROM api_keys WHERE (id = $1 OR name = $1) AND revoked_at IS NULL")
                .bind(id_or_name)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(id) = id else {
                return Err(StoreError::NotFound {
                    what: "live API key",
                    key: id_or_name.to_string(),
                });
            };
            sqlx::query("UPDATE api_keys SET revoked_at = $2 WHERE id = $1")
                .bind(&id)
                .bind(Utc::now())
                .execute(&mut *tx)
                .await?;
            audit!(tx, actor, "apikey.revoke", &id, serde_json::json!({}));
            id
        });
        self.list_api_keys()
            .await?
            .into_iter()
            .find(|k| k.id == id)
            .context("revoked key vanished")
            .map_err(Into::into)
    }

    // ----- audit ---------------------------------------------------------------------------

    /// The newest `limit` entries, newest first.
    pub async fn list_audit(&self, limit: i64) -> Result<Vec<AuditEntry>> {
        let rows: Vec<AuditRow> = on_pool!(self, |p| sqlx::query_as(
            "SELECT id, at, actor, action, target, detail FROM audit_log ORDER BY id DESC LIMIT $1"
        )
        .bind(limit)
        .fetch_all(p)
        .await)?;
        Ok(rows
            .into_iter()
            .map(|r| AuditEntry {
                id: r.id,
                at: r.at,
                actor: r.actor,
                action: r.action,
                target: r.target,
                detail: serde_json::from_str(&r.detail).unwrap_or(serde_json::Value::Null),
            })
            .collect())
    }

    // ----- key rotation --------------------------------------------------------------------

    /// Re-seals every stored secret under `new`'s current key in one transaction (either all
    /// move or none do), and returns how many were re-sealed. `self` must be able to open them.
    pub async fn reseal_secrets(&self, actor: &str, new: &Keyring) -> Result<usize> {
        let count = in_tx!(self, |tx| {
            let tenants: Vec<(String, String)> = sqlx::query_as("SELECT code, client_secret FROM tenants WHERE client_secret IS NOT NULL")
                .fetch_all(&mut *tx)
                .await?;
            let operators: Vec<(String, String)> =
                sqlx::query_as("SELECT code, refresh_token FROM operators WHERE refresh_token IS NOT NULL")
                    .fetch_all(&mut *tx)
                    .await?;
            for (code, sealed) in &tenants {
                let aad = tenant_secret_aad(&TenantCode::parse(code).map_err(anyhow::Error::msg)?);
                let plain = self.keyring.open(sealed, &aad).with_context(|| format!("tenant {code}"))?;
                sqlx::query("UPDATE tenants SET client_secret = $2 WHERE code = $1")
                    .bind(code)
                    .bind(new.seal(&plain, &aad))
                    .execute(&mut *tx)
                    .await?;
            }
            for (code, sealed) in &operators {
                let aad = operator_token_aad(code);
                let plain = self.keyring.open(sealed, &aad).with_context(|| format!("operator {code}"))?;
                sqlx::query("UPDATE operators SET refresh_token = $2 WHERE code = $1")
                    .bind(code)
                    .bind(new.seal(&plain, &aad))
                    .execute(&mut *tx)
                    .await?;
            }
            let count = tenants.len() + operators.len();
            audit!(tx, actor, "key.rotate", new.current_id(), serde_json::json!({"resealed": count}));
            count
        });
        Ok(count)
    }
}
