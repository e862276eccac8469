//! Uploads: files sent ahead of the message that attaches them (`POST /api/v1/uploads`),
//! kept until they expire whether or not a message used them (a message keeps its own
//! reference to the content).

use super::blobs::{BlobInfo, now_ms};
use super::{Db, Result, Store, StoreError};
use serde::Serialize;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Upload {
    pub id: String,
    pub name: String,
    pub content_type: String,
    pub size: u64,
    pub sha256: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
    #[serde(skip)]
    pub blob: BlobInfo,
}

impl Store {
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn create_upload(&self, api_key: &str, name: &str, content_type: &str, blob: &BlobInfo, ttl_ms: i64) -> Result<Upload> {
        let id = uuid::Uuid::new_v4().to_string();
        let now = now_ms();
        on_pool!(self, |p| sqlx::query(
            "INSERT INTO uploads (id, api_key, name, content_type, blob_id, created_ms, expires_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        )
        .bind(&id)
        .bind(api_key)
        .bind(name)
        .bind(content_type)
        .bind(&blob.id)
        .bind(now)
        .bind(now + ttl_ms)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(Upload {
            id,
            name: name.to_string(),
            content_type: content_type.to_string(),
            size: blob.size,
            sha256: blob.sha256.clone(),
            expires_at: chrono::DateTime::from_timestamp_millis(now + ttl_ms).unwrap_or_default(),
            blob: blob.clone(),
        })
    }

    /// An upload of `api_key` that has not expired.
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn get_upload(&self, id: &uuid::Uuid, api_key: &str) -> Result<Upload> {
        let row: Option<(String, String, String, i64, i64, String)> = on_pool!(self, |p| sqlx::query_as(
            "SELECT u.name, u.content_type, u.blob_id, u.expires_ms, b.size, b.sha256 FROM uploads u JOIN blobs b ON b.id = u.blob_id \
             WHERE u.id = $1 AND u.api_key = $2 AND u.expires_ms > $3"
        )
        .bind(id.to_string())
        .bind(api_key)
        .bind(now_ms())
        .fetch_optional(p)
        .await)?;
        let (name, content_type, blob_id, expires, size, sha256) = row.ok_or_else(|| StoreError::NotFound {
            what: "upload",
            key: id.to_string(),
        })?;
        Ok(Upload {
            id: id.to_string(),
            name,
            content_type,
            size: size as u64,
            sha256: sha256.clone(),
            expires_at: chrono::DateTime::from_timestamp_millis(expires).unwrap_or_default(),
            blob: BlobInfo {
                id: blob_id,
                size: size as u64,
                sha256,
            },
        })
    }

    /// Removes expired uploads (their content goes with the next blob sweep unless a
    /// message still attaches it).
    pub async fn sweep_uploads(&self) -> Result<u64> {
        Ok(on_pool!(self, |p| sqlx::query("DELETE FROM uploads WHERE expires_ms <= $1")
            .bind(now_ms())
            .execute(p)
            .await
            .map(|r| r.rows_affected()))?)
    }
}
