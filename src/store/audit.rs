//! The audit log: appended in the transaction of the change it records, read newest first.

use super::models::AuditEntry;
use super::{Db, Result, Store};
use chrono::{DateTime, Utc};

#[derive(sqlx::FromRow)]
struct AuditRow {
    id: i64,
    at: DateTime<Utc>,
    actor: String,
    action: String,
    target: String,
    detail: String,
}

impl Store {
    /// The newest `limit` entries, newest first.
    #[tracing::instrument(skip_all, err(level = "debug"))]
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
}
