//! API keys: only their SHA-256 is stored; the token is shown once.

use super::models::{ApiKey, Role};
use super::{Db, Result, Store, StoreError, corrupt, is_unique_violation};
use crate::domain::Secret;
use anyhow::Context;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

#[derive(sqlx::FromRow)]
struct ApiKeyRow {
    id: String,
    name: String,
    role: String,
    created_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
}

impl TryFrom<ApiKeyRow> for ApiKey {
    type Error = StoreError;

    fn try_from(row: ApiKeyRow) -> Result<Self> {
        Ok(ApiKey {
            role: Role::from_db(&row.role).ok_or_else(|| corrupt("API key role", &row.role, "not a role"))?,
            id: row.id,
            name: row.name,
            created_at: row.created_at,
            revoked_at: row.revoked_at,
        })
    }
}

const API_KEY_COLUMNS: &str = "id, name, role, created_at, revoked_at";

/// SHA-256 of an API key. Keys carry 256 random bits, so a fast unsalted hash is enough to
/// make a stolen table useless; a password hash would only slow every request.
fn api_key_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Store {
    /// Creates a key and returns it with the token, which is not stored and cannot be shown again.
    #[tracing::instrument(skip_all, err(level = "debug"))]
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
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn authenticate_api_key(&self, token: &str) -> Result<Option<ApiKey>> {
        let sql = format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL");
        let row: Option<ApiKeyRow> = on_pool!(self, |p| sqlx::query_as(&sql).bind(api_key_hash(token)).fetch_optional(p).await)?;
        row.map(ApiKey::try_from).transpose()
    }

    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn list_api_keys(&self) -> Result<Vec<ApiKey>> {
        let sql = format!("SELECT {API_KEY_COLUMNS} FROM api_keys ORDER BY created_at, id");
        let rows: Vec<ApiKeyRow> = on_pool!(self, |p| sqlx::query_as(&sql).fetch_all(p).await)?;
        rows.into_iter().map(ApiKey::try_from).collect()
    }

    /// Revokes the live key with this id or name.
    #[tracing::instrument(skip_all, err(level = "debug"))]
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
}
