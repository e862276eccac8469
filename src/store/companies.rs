//! ERP companies (the legal entities documents are sent for).

use super::models::Company;
use super::{Db, Result, Store};
use chrono::Utc;

impl Store {
    #[tracing::instrument(skip_all, err(level = "debug"))]
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

    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn list_companies(&self) -> Result<Vec<Company>> {
        let rows: Vec<(String, String)> = on_pool!(self, |p| sqlx::query_as("SELECT code, name FROM companies ORDER BY code")
            .fetch_all(p)
            .await)?;
        Ok(rows.into_iter().map(|(code, name)| Company { code, name }).collect())
    }
}
