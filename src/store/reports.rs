//! Report outputs (the source's "emailing SRS outputs"): files a report server posted for an
//! operator and company, kept for a while, listed for the Outlook pane and attachable to mail.

use super::blobs::{BlobInfo, now_ms};
use super::{Db, Result, Store, StoreError};
use serde::Serialize;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReportFile {
    pub n: u32,
    pub name: String,
    pub content_type: String,
    pub size: u64,
    #[serde(skip)]
    pub blob: BlobInfo,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReportDocument {
    #[serde(rename = "type")]
    pub kind: String,
    pub number: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Report {
    pub id: String,
    pub company: String,
    pub operator: String,
    pub report: String,
    pub title: String,
    pub document: Option<ReportDocument>,
    pub files: Vec<ReportFile>,
    /// The message that sent it, when it was mailed.
    pub mail: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

pub struct NewReport {
    pub api_key: String,
    pub company: String,
    pub operator: String,
    pub report: String,
    pub title: String,
    pub document: Option<(String, String)>,
    pub files: Vec<(String, String, BlobInfo)>,
    pub ttl_ms: i64,
}

type ReportRow = (
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
    i64,
);

fn ms(at: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(at).unwrap_or_default()
}

impl Store {
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn create_report(&self, r: &NewReport) -> Result<String> {
        let id = uuid::Uuid::new_v4().to_string();
        let now = now_ms();
        in_tx!(self, |tx| {
            sqlx::query(
                "INSERT INTO reports (id, api_key, company, operator, report, title, document_type, document_number, created_ms, expires_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(&id)
            .bind(&r.api_key)
            .bind(&r.company)
            .bind(&r.operator)
            .bind(&r.report)
            .bind(&r.title)
            .bind(r.document.as_ref().map(|d| d.0.clone()))
            .bind(r.document.as_ref().map(|d| d.1.clone()))
            .bind(now)
            .bind(now + r.ttl_ms)
            .execute(&mut *tx)
            .await?;
            for (n, (name, ctype, blob)) in r.files.iter().enumerate() {
                sqlx::query("INSERT INTO report_files (report_id, n, name, content_type, blob_id, size) VALUES ($1, $2, $3, $4, $5, $6)")
                    .bind(&id)
                    .bind(n as i64 + 1)
                    .bind(name)
                    .bind(ctype)
                    .bind(&blob.id)
                    .bind(blob.size as i64)
                    .execute(&mut *tx)
                    .await?;
            }
        });
        Ok(id)
    }

    pub async fn set_report_mail(&self, id: &str, mail: &str) -> Result<()> {
        on_pool!(self, |p| sqlx::query("UPDATE reports SET mail_id = $2 WHERE id = $1")
            .bind(id)
            .bind(mail)
            .execute(p)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// The files of a report of `api_key` that has not expired: file `n`, or all of them.
    pub async fn report_files(&self, id: &uuid::Uuid, api_key: &str, n: Option<u32>) -> Result<Vec<ReportFile>> {
        let rows: Vec<(i64, String, String, String, i64, String)> = on_pool!(self, |p| sqlx::query_as(
            "SELECT f.n, f.name, f.content_type, f.blob_id, f.size, b.sha256 FROM report_files f \
             JOIN reports r ON r.id = f.report_id JOIN blobs b ON b.id = f.blob_id \
             WHERE r.id = $1 AND r.api_key = $2 AND r.expires_ms > $3 AND ($4 IS NULL OR f.n = $4) ORDER BY f.n"
        )
        .bind(id.to_string())
        .bind(api_key)
        .bind(now_ms())
        .bind(n.map(i64::from))
        .fetch_all(p)
        .await)?;
        if rows.is_empty() {
            return Err(StoreError::NotFound {
                what: "report output",
                key: id.to_string(),
            });
        }
        Ok(rows
            .into_iter()
            .map(|(n, name, content_type, blob_id, size, sha256)| ReportFile {
                n: n as u32,
                name,
                content_type,
                size: size as u64,
                blob: BlobInfo {
                    id: blob_id,
                    size: size as u64,
                    sha256,
                },
            })
            .collect())
    }

    /// An operator's outputs that have not expired, newest first.
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn list_reports(&self, api_key: &str, operator: &str, limit: u32) -> Result<Vec<Report>> {
        let rows: Vec<ReportRow> = on_pool!(self, |p| sqlx::query_as(
            "SELECT id, company, operator, report, title, document_type, document_number, mail_id, created_ms, expires_ms \
             FROM reports WHERE api_key = $1 AND operator = $2 AND expires_ms > $3 ORDER BY created_ms DESC, id LIMIT $4"
        )
        .bind(api_key)
        .bind(operator)
        .bind(now_ms())
        .bind(i64::from(limit))
        .fetch_all(p)
        .await)?;
        let mut out = Vec::with_capacity(rows.len());
        for (id, company, operator, report, title, dt, dn, mail, created, expires) in rows {
            let files = self
                .report_files(&uuid::Uuid::parse_str(&id).unwrap_or_default(), api_key, None)
                .await?;
            out.push(Report {
                id,
                company,
                operator,
                report,
                title,
                document: dt.zip(dn).map(|(kind, number)| ReportDocument { kind, number }),
                files,
                mail,
                created_at: ms(created),
                expires_at: ms(expires),
            });
        }
        Ok(out)
    }

    pub async fn sweep_reports(&self) -> Result<u64> {
        Ok(on_pool!(self, |p| sqlx::query("DELETE FROM reports WHERE expires_ms <= $1")
            .bind(now_ms())
            .execute(p)
            .await
            .map(|r| r.rows_affected()))?)
    }
}

impl Store {
    /// Removes a report that could not be completed (its mail was refused); its blobs are
    /// left to the blob sweep, which takes those nothing refers to.
    pub async fn delete_report(&self, id: &str) -> Result<()> {
        on_pool!(self, |p| sqlx::query("DELETE FROM reports WHERE id = $1")
            .bind(id)
            .execute(p)
            .await
            .map(|_| ()))?;
        Ok(())
    }
}
