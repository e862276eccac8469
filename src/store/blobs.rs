//! File contents in the database, in chunks of [`CHUNK`] bytes: attachments, uploads and
//! report outputs are streamed in and out a chunk at a time (never held whole in memory) and
//! every instance reads what any instance wrote — nothing depends on a shared disk.
//!
//! A blob is written before the rows that use it; one that nothing came to use (its request
//! failed, or an upload expired) is removed by [`Store::sweep_blobs`].

use super::{Db, Result, Store, StoreError};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};

/// Every chunk but a blob's last is exactly this long, so a byte range maps to chunk numbers.
pub const CHUNK: usize = 1024 * 1024;

/// A stored blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    pub id: String,
    pub size: u64,
    pub sha256: String,
}

/// Why a streamed blob was not stored.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("the content is larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the content could not be read: {0}")]
    Body(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Store {
    /// Stores `body` as a new blob, at most `limit` bytes; a longer or broken body leaves nothing.
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn write_blob<S, E>(&self, body: S, limit: u64) -> Result<BlobInfo, BlobError>
    where
        S: Stream<Item = std::result::Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        let id = uuid::Uuid::new_v4().to_string();
        self.insert_blob_row(&id).await?;
        let written = self.write_chunks(&id, body, limit).await;
        if written.is_err() {
            self.delete_blob(&id).await?;
        }
        written
    }

    /// Stores bytes already in memory (inline attachments).
    pub async fn write_blob_bytes(&self, bytes: &[u8]) -> Result<BlobInfo, BlobError> {
        let chunks: Vec<std::result::Result<Bytes, std::convert::Infallible>> =
            bytes.chunks(CHUNK).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        self.write_blob(futures_util::stream::iter(chunks), u64::MAX).await
    }

    async fn insert_blob_row(&self, id: &str) -> Result<()> {
        on_pool!(self, |p| sqlx::query(
            "INSERT INTO blobs (id, size, sha256, created_ms) VALUES ($1, 0, '', $2)"
        )
        .bind(id)
        .bind(now_ms())
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(())
    }

    async fn write_chunks<S, E>(&self, id: &str, body: S, limit: u64) -> Result<BlobInfo, BlobError>
    where
        S: Stream<Item = std::result::Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        let mut body = std::pin::pin!(body);
        let mut hasher = Sha256::new();
        let mut buffer: Vec<u8> = Vec::with_capacity(CHUNK);
        let mut size: u64 = 0;
        let mut n: i64 = 0;
        while let Some(piece) = body.next().await {
            let piece = piece.map_err(|e| BlobError::Body(e.to_string()))?;
            size += piece.len() as u64;
            if size > limit {
                return Err(BlobError::TooLarge { limit });
            }
            hasher.update(&piece);
            let mut rest = &piece[..];
            while !rest.is_empty() {
                let take = (CHUNK - buffer.len()).min(rest.len());
                buffer.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if buffer.len() == CHUNK {
                    self.insert_chunk(id, n, &buffer).await?;
                    n += 1;
                    buffer.clear();
                }
            }
        }
        if !buffer.is_empty() {
            self.insert_chunk(id, n, &buffer).await?;
        }
        let sha256 = hex::encode(hasher.finalize());
        on_pool!(self, |p| sqlx::query("UPDATE blobs SET size = $2, sha256 = $3 WHERE id = $1")
            .bind(id)
            .bind(size as i64)
            .bind(&sha256)
            .execute(p)
            .await
            .map(|r| r.rows_affected()))
        .map_err(StoreError::from)?;
        Ok(BlobInfo {
            id: id.to_string(),
            size,
            sha256,
        })
    }

    async fn insert_chunk(&self, id: &str, n: i64, data: &[u8]) -> Result<()> {
        on_pool!(self, |p| sqlx::query(
            "INSERT INTO blob_chunks (blob_id, n, data) VALUES ($1, $2, $3)"
        )
        .bind(id)
        .bind(n)
        .bind(data)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(())
    }

    async fn delete_blob(&self, id: &str) -> Result<()> {
        on_pool!(self, |p| sqlx::query("DELETE FROM blobs WHERE id = $1")
            .bind(id)
            .execute(p)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(())
    }

    pub async fn blob_info(&self, id: &str) -> Result<BlobInfo> {
        let row: Option<(i64, String)> = on_pool!(self, |p| sqlx::query_as("SELECT size, sha256 FROM blobs WHERE id = $1")
            .bind(id)
            .fetch_optional(p)
            .await)?;
        let (size, sha256) = row.ok_or_else(|| StoreError::NotFound {
            what: "blob",
            key: id.to_string(),
        })?;
        Ok(BlobInfo {
            id: id.to_string(),
            size: size as u64,
            sha256,
        })
    }

    /// Chunk `n` of a blob.
    pub async fn blob_chunk(&self, id: &str, n: u64) -> Result<Vec<u8>> {
        let data: Option<Vec<u8>> = on_pool!(self, |p| sqlx::query_scalar(
            "SELECT data FROM blob_chunks WHERE blob_id = $1 AND n = $2"
        )
        .bind(id)
        .bind(n as i64)
        .fetch_optional(p)
        .await)?;
        data.ok_or_else(|| StoreError::Other(anyhow::anyhow!("blob {id} has no chunk {n}")))
    }

    /// `len` bytes from `start` (within the blob), read chunk by chunk.
    pub async fn blob_range(&self, id: &str, start: u64, len: u64) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(len as usize);
        let end = start + len;
        let mut n = start / CHUNK as u64;
        while (n * CHUNK as u64) < end {
            let chunk = self.blob_chunk(id, n).await?;
            let base = n * CHUNK as u64;
            let from = start.saturating_sub(base) as usize;
            let to = ((end - base) as usize).min(chunk.len());
            out.extend_from_slice(&chunk[from.min(to)..to]);
            n += 1;
        }
        Ok(out)
    }

    /// The whole blob as a stream of chunks (a download, or an SMTP message body).
    pub fn blob_stream(&self, id: &str, size: u64) -> impl Stream<Item = Result<Bytes>> + Send + 'static {
        let store = self.clone();
        let id = id.to_string();
        let chunks = size.div_ceil(CHUNK as u64);
        futures_util::stream::iter(0..chunks).then(move |n| {
            let store = store.clone();
            let id = id.clone();
            async move { store.blob_chunk(&id, n).await.map(Bytes::from) }
        })
    }

    /// Removes blobs nothing uses that are older than `min_age_ms` (a blob being written is
    /// young; an old one nothing points at was left by a failed request or an expired upload).
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn sweep_blobs(&self, min_age_ms: i64) -> Result<u64> {
        let gone = on_pool!(self, |p| sqlx::query(
            "DELETE FROM blobs WHERE created_ms < $1 \
             AND NOT EXISTS (SELECT 1 FROM uploads u WHERE u.blob_id = blobs.id) \
             AND NOT EXISTS (SELECT 1 FROM outbox_attachments a WHERE a.blob_id = blobs.id) \
             AND NOT EXISTS (SELECT 1 FROM report_files r WHERE r.blob_id = blobs.id)"
        )
        .bind(now_ms() - min_age_ms)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
        Ok(gone)
    }
}
