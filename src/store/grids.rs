//! Shared grids (issue 16): a grid the ERP shares with an operator, its rows, and the latest
//! change set published back from the Excel pane. A grid is written in batches while its
//! body streams in and is listed only once every row is stored (`ready`); one that fails
//! on the way is deleted, and one whose instance died is swept with the expired ones.

use super::{Db, Result, Store, StoreError};
use chrono::{DateTime, TimeZone, Utc};

/// A grid's record, without its rows.
#[derive(Debug, Clone)]
pub struct GridRecord {
    pub id: String,
    pub operator: String,
    pub name: String,
    pub key: String,
    /// The checked columns as `ColumnSpec` JSON.
    pub columns: String,
    pub rows: u64,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// The change set last published from the pane.
#[derive(Debug, Clone)]
pub struct PublishedChanges {
    pub published_at: DateTime<Utc>,
    pub operator: String,
    /// `{"changes", "problems"}`, JSON.
    pub body: String,
}

type GridRow = (String, String, String, String, String, i64, i64, i64);

fn at(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

fn record(r: GridRow) -> GridRecord {
    GridRecord {
        id: r.0,
        operator: r.1,
        name: r.2,
        key: r.3,
        columns: r.4,
        rows: r.5.max(0) as u64,
        created_at: at(r.6),
        expires_at: at(r.7),
    }
}

const COLUMNS: &str = "id, operator, name, key_column, columns, row_count, created_ms, expires_ms";

/// How long a grid may stay not ready before the sweep takes it for abandoned.
const ABANDONED_MS: i64 = 3_600_000;

impl Store {
    /// Starts a grid: its record, not yet listed.
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn begin_grid(&self, g: &GridRecord) -> Result<()> {
        on_pool!(self, |p| sqlx::query(
            "INSERT INTO grids (id, operator, name, key_column, columns, row_count, ready, created_ms, expires_ms) \
             VALUES ($1, $2, $3, $4, $5, 0, 0, $6, $7)"
        )
        .bind(&g.id)
        .bind(&g.operator)
        .bind(&g.name)
        .bind(&g.key)
        .bind(&g.columns)
        .bind(g.created_at.timestamp_millis())
        .bind(g.expires_at.timestamp_millis())
        .execute(p)
        .await
        .map(drop))?;
        Ok(())
    }

    /// Stores rows `first..first + rows.len()` of a grid (each a JSON array of cells), in one
    /// statement per few hundred rows.
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn append_grid_rows(&self, id: &str, first: u64, rows: &[String]) -> Result<()> {
        // Three parameters a row; SQLite allows 32,766 in a statement.
        for (c, chunk) in rows.chunks(500).enumerate() {
            let base = first + (c * 500) as u64;
            let values: Vec<String> = (0..chunk.len())
                .map(|i| format!("(${}, ${}, ${})", 3 * i + 1, 3 * i + 2, 3 * i + 3))
                .collect();
            let sql = format!("INSERT INTO grid_rows (grid_id, n, cells) VALUES {}", values.join(", "));
            on_pool!(self, |p| {
                let mut q = sqlx::query(&sql);
                for (i, cells) in chunk.iter().enumerate() {
                    q = q.bind(id).bind((base + i as u64) as i64).bind(cells);
                }
                q.execute(p).await.map(drop)
            })?;
        }
        Ok(())
    }

    /// Makes a grid visible, with its row count, and audits it.
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn finish_grid(&self, actor: &str, id: &str, rows: u64) -> Result<()> {
        in_tx!(self, |tx| {
            sqlx::query("UPDATE grids SET ready = 1, row_count = $2 WHERE id = $1")
                .bind(id)
                .bind(rows as i64)
                .execute(&mut *tx)
                .await?;
            audit!(tx, actor, "grid.share", id, serde_json::json!({"rows": rows}));
        });
        Ok(())
    }

    /// Removes a grid, its rows and its change set.
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn delete_grid(&self, id: &str) -> Result<()> {
        // Rows first: SQLite's cascade would do it too, one row at a time under the lock.
        on_pool!(self, |p| sqlx::query("DELETE FROM grid_rows WHERE grid_id = $1")
            .bind(id)
            .execute(p)
            .await
            .map(drop))?;
        on_pool!(self, |p| sqlx::query("DELETE FROM grids WHERE id = $1")
            .bind(id)
            .execute(p)
            .await
            .map(drop))?;
        Ok(())
    }

    /// An operator's grids that have not expired, newest first.
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn list_grids(&self, operator: &str, now: DateTime<Utc>) -> Result<Vec<GridRecord>> {
        let sql =
            format!("SELECT {COLUMNS} FROM grids WHERE operator = $1 AND ready = 1 AND expires_ms > $2 ORDER BY created_ms DESC, id DESC");
        let rows: Vec<GridRow> = on_pool!(self, |p| sqlx::query_as(&sql)
            .bind(operator)
            .bind(now.timestamp_millis())
            .fetch_all(p)
            .await)?;
        Ok(rows.into_iter().map(record).collect())
    }

    /// One ready grid, expired or not (the caller says which it is).
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn get_grid(&self, id: &str) -> Result<GridRecord> {
        let sql = format!("SELECT {COLUMNS} FROM grids WHERE id = $1 AND ready = 1");
        let row: Option<GridRow> = on_pool!(self, |p| sqlx::query_as(&sql).bind(id).fetch_optional(p).await)?;
        row.map(record).ok_or_else(|| StoreError::NotFound {
            what: "grid",
            key: id.to_string(),
        })
    }

    /// Rows `offset..offset + limit` of a grid, each a JSON array of cells.
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn grid_rows(&self, id: &str, offset: u64, limit: u64) -> Result<Vec<String>> {
        let rows: Vec<String> = on_pool!(self, |p| sqlx::query_scalar(
            "SELECT cells FROM grid_rows WHERE grid_id = $1 AND n >= $2 AND n < $3 ORDER BY n"
        )
        .bind(id)
        .bind(offset as i64)
        .bind(offset.saturating_add(limit) as i64)
        .fetch_all(p)
        .await)?;
        Ok(rows)
    }

    /// Keeps the change set just published as the grid's latest.
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn publish_grid_changes(&self, id: &str, operator: &str, body: &str) -> Result<DateTime<Utc>> {
        let now = Utc::now();
        in_tx!(self, |tx| {
            sqlx::query("DELETE FROM grid_changes WHERE grid_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("INSERT INTO grid_changes (grid_id, published_ms, by_operator, body) VALUES ($1, $2, $3, $4)")
                .bind(id)
                .bind(now.timestamp_millis())
                .bind(operator)
                .bind(body)
                .execute(&mut *tx)
                .await?;
            audit!(tx, operator, "grid.publish", id, serde_json::json!({}));
        });
        Ok(now)
    }

    /// The change set last published for a grid, if any.
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn grid_changes(&self, id: &str) -> Result<Option<PublishedChanges>> {
        let row: Option<(i64, String, String)> = on_pool!(self, |p| sqlx::query_as(
            "SELECT published_ms, by_operator, body FROM grid_changes WHERE grid_id = $1"
        )
        .bind(id)
        .fetch_optional(p)
        .await)?;
        Ok(row.map(|(ms, operator, body)| PublishedChanges {
            published_at: at(ms),
            operator,
            body,
        }))
    }

    /// Deletes the grids that expired, and those left unfinished for an hour (their
    /// instance died while storing them). Returns how many went.
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn sweep_grids(&self, now: DateTime<Utc>) -> Result<usize> {
        let ms = now.timestamp_millis();
        let ids: Vec<String> = on_pool!(self, |p| sqlx::query_scalar(
            "SELECT id FROM grids WHERE expires_ms <= $1 OR (ready = 0 AND created_ms <= $2)"
        )
        .bind(ms)
        .bind(ms - ABANDONED_MS)
        .fetch_all(p)
        .await)?;
        for id in &ids {
            self.delete_grid(id).await?;
        }
        Ok(ids.len())
    }
}
