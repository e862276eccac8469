//! ERP companies (the legal entities documents are sent for).

use super::models::Company;
use super::{Db, Result, Store, StoreError};
use crate::domain::CompanyCode;
use chrono::Utc;

impl Store {
    /// Creates or renames a company; answers whether it was created.
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn put_company(&self, actor: &str, code: &CompanyCode, name: &str) -> Result<bool> {
        let now = Utc::now();
        let created = in_tx!(self, |tx| {
            let existed: Option<String> = sqlx::query_scalar("SELECT code FROM companies WHERE code = $1")
                .bind(code.as_str())
                .fetch_optional(&mut *tx)
                .await?;
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
            existed.is_none()
        });
        Ok(created)
    }

    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn list_companies(&self) -> Result<Vec<Company>> {
        let rows: Vec<(String, String)> = on_pool!(self, |p| sqlx::query_as("SELECT code, name FROM companies ORDER BY code")
            .fetch_all(p)
            .await)?;
        Ok(rows.into_iter().map(|(code, name)| Company { code, name }).collect())
    }

    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn get_company(&self, code: &CompanyCode) -> Result<Company> {
        let row: Option<(String, String)> = on_pool!(self, |p| sqlx::query_as("SELECT code, name FROM companies WHERE code = $1")
            .bind(code.as_str())
            .fetch_optional(p)
            .await)?;
        row.map(|(code, name)| Company { code, name }).ok_or_else(|| StoreError::NotFound {
            what: "company",
            key: code.to_string(),
        })
    }

    /// Removes a company no email profile names (409 naming the profiles otherwise).
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn delete_company(&self, actor: &str, code: &CompanyCode) -> Result<()> {
        in_tx!(self, |tx| {
            refuse_in_use!(
                tx,
                "SELECT profile FROM email_profile_companies WHERE company = $1 ORDER BY profile",
                code.as_str(),
                |users| format!("company {code} is named by email profiles {users}; change or remove them first")
            );
            let gone = sqlx::query("DELETE FROM companies WHERE code = $1")
                .bind(code.as_str())
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if gone == 0 {
                return Err(StoreError::NotFound {
                    what: "company",
                    key: code.to_string(),
                });
            }
            audit!(tx, actor, "company.delete", code.as_str(), serde_json::json!({}));
        });
        Ok(())
    }
}
