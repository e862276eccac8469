//! Tenant records: one per Microsoft 365 directory, the client secret sealed.

use super::models::{SecretState, Tenant};
use super::{Db, Result, Store, StoreError, corrupt, is_unique_violation};
use crate::domain::{NewTenant, Secret, SecretUpdate, TenantCode};
use chrono::{DateTime, Utc};

fn directory_conflict(t: &NewTenant, other: &str) -> StoreError {
    StoreError::Conflict {
        field: "tenant_id",
        message: format!(
            "directory {} is already configured as tenant {other}; one directory is one tenant record",
            t.tenant_id.as_str()
        ),
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

impl TryFrom<TenantRow> for Tenant {
    type Error = StoreError;

    fn try_from(row: TenantRow) -> Result<Self> {
        use crate::domain::{Authority, ClientId, DirectoryId, GraphEndpoint, Platform, RedirectUrl};
        Ok(Tenant {
            code: TenantCode::parse(&row.code).map_err(|e| corrupt("tenant code", &row.code, e))?,
            description: row.description,
            tenant_id: DirectoryId::from_stored(row.tenant_id),
            client_id: ClientId::from_stored(row.client_id),
            platform: Platform::parse(&row.platform).map_err(|e| corrupt("tenant platform", &row.platform, e))?,
            redirect_url: RedirectUrl::from_stored(row.redirect_url),
            client_secret: SecretState {
                set: row.client_secret.is_some(),
            },
            authority: Authority::from_stored(row.authority),
            graph_endpoint: GraphEndpoint::from_stored(row.graph_endpoint),
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

const TENANT_COLUMNS: &str =
    "code, description, tenant_id, client_id, platform, redirect_url, client_secret, authority, graph_endpoint, created_at, updated_at";

pub(super) fn tenant_secret_aad(code: &TenantCode) -> String {
    format!("tenant/{code}/client_secret")
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

impl Store {
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn list_tenants(&self) -> Result<Vec<Tenant>> {
        let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants ORDER BY code");
        let rows: Vec<TenantRow> = on_pool!(self, |p| sqlx::query_as(&sql).fetch_all(p).await)?;
        rows.into_iter().map(Tenant::try_from).collect()
    }

    /// The tenant record of a directory (a token's `tid`), found by the index that keeps one
    /// record per directory.
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn tenant_by_directory(&self, directory: &str) -> Result<Option<Tenant>> {
        let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE lower(tenant_id) = lower($1)");
        let row: Option<TenantRow> = on_pool!(self, |p| sqlx::query_as(&sql).bind(directory).fetch_optional(p).await)?;
        row.map(Tenant::try_from).transpose()
    }

    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn get_tenant(&self, code: &TenantCode) -> Result<Tenant> {
        let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE code = $1");
        let row: Option<TenantRow> = on_pool!(self, |p| sqlx::query_as(&sql).bind(code.as_str()).fetch_optional(p).await)?;
        row.map(Tenant::try_from).transpose()?.ok_or_else(|| StoreError::NotFound {
            what: "tenant",
            key: code.to_string(),
        })
    }

    /// The decrypted client secret, for the code that calls the identity platform.
    #[tracing::instrument(skip_all, err(level = "debug"))]
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

    #[tracing::instrument(skip_all, err(level = "debug"))]
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

    #[tracing::instrument(skip_all, err(level = "debug"))]
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
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn delete_tenant(&self, actor: &str, code: &TenantCode) -> Result<()> {
        in_tx!(self, |tx| {
            refuse_in_use!(
                tx,
                "SELECT code FROM operators WHERE tenant_code = $1 ORDER BY code",
                code.as_str(),
                |users| format!("tenant '{code}' is still used by operators: {users}; move them to another tenant first")
            );
            refuse_in_use!(
                tx,
                "SELECT name FROM email_profiles WHERE tenant_code = $1 ORDER BY name",
                code.as_str(),
                |users| format!("tenant '{code}' is still used by email profiles: {users}; change or remove them first")
            );
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
}
