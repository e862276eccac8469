//! Contacts kept locally for the lookup (issue 15): the ERP's contacts per company, and the
//! index of each mailbox's personal contacts, refreshed per folder from `contacts/delta`.
//! Both are searched by word prefix over a `haystack` column written here, so a keystroke
//! costs one indexed-table query, not a walk of Graph folders.

use super::{Db, Result, Store, StoreError};
use crate::contacts::{haystack, normalise, words};
use crate::domain::CompanyCode;
use chrono::Utc;

/// An `erp_contacts` row: key, name, address, account, role.
type ErpRow = (String, String, String, Option<String>, Option<String>);

/// One contact the ERP publishes for a company (SPEC §6, "ERP contacts").
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema, PartialEq)]
pub struct ErpContact {
    pub key: String,
    pub name: String,
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// One address of a personal contact, as indexed.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexedContact {
    pub contact_id: String,
    pub folder_id: String,
    pub name: String,
    pub address: String,
    pub company: Option<String>,
}

/// A folder of the index and where its next refresh starts.
#[derive(Debug, Clone)]
pub struct IndexedFolder {
    pub folder_id: String,
    pub name: String,
    pub delta_link: Option<String>,
}

/// A personal contact as browsed, with its folder's name.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct BrowsedContact {
    pub name: String,
    pub address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub company: Option<String>,
    pub folder: String,
    pub folder_id: String,
    #[serde(skip)]
    pub contact_id: String,
}

/// `LIKE` patterns for each word of a query: `% word%` over the haystack, `\` escaping.
fn patterns(query: &str) -> Vec<String> {
    words(query)
        .iter()
        .map(|w| format!("% {}%", w.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")))
        .collect()
}

/// `haystack LIKE $n ESCAPE '\'` for each pattern, from placeholder `first`.
fn like_clauses(n: usize, first: usize) -> String {
    (0..n).map(|i| format!(" AND haystack LIKE ${} ESCAPE '\\'", first + i)).collect()
}

impl Store {
    /// Replaces a company's ERP contacts with `contacts`, atomically (checked by the caller).
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn replace_erp_contacts(&self, actor: &str, company: &CompanyCode, contacts: &[ErpContact]) -> Result<()> {
        in_tx!(self, |tx| {
            let exists: Option<String> = sqlx::query_scalar("SELECT code FROM companies WHERE code = $1")
                .bind(company.as_str())
                .fetch_optional(&mut *tx)
                .await?;
            if exists.is_none() {
                return Err(StoreError::NotFound {
                    what: "company",
                    key: company.to_string(),
                });
            }
            sqlx::query("DELETE FROM erp_contacts WHERE company = $1")
                .bind(company.as_str())
                .execute(&mut *tx)
                .await?;
            for c in contacts {
                let hay = haystack(&[
                    &c.name,
                    &c.address,
                    c.account.as_deref().unwrap_or(""),
                    c.role.as_deref().unwrap_or(""),
                ]);
                sqlx::query(
                    "INSERT INTO erp_contacts (company, key, name, address, address_lc, account, role, haystack) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(company.as_str())
                .bind(&c.key)
                .bind(&c.name)
                .bind(&c.address)
                .bind(normalise(&c.address))
                .bind(&c.account)
                .bind(&c.role)
                .bind(hay)
                .execute(&mut *tx)
                .await?;
            }
            audit!(
                tx,
                actor,
                "company.contacts.replace",
                company.as_str(),
                serde_json::json!({"contacts": contacts.len()})
            );
        });
        Ok(())
    }

    /// A company's ERP contacts, by key.
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn list_erp_contacts(&self, company: &CompanyCode) -> Result<Vec<ErpContact>> {
        self.get_company(company).await?;
        let rows: Vec<ErpRow> = on_pool!(self, |p| sqlx::query_as(
            "SELECT key, name, address, account, role FROM erp_contacts WHERE company = $1 ORDER BY key"
        )
        .bind(company.as_str())
        .fetch_all(p)
        .await)?;
        Ok(rows.into_iter().map(erp).collect())
    }

    /// A company's ERP contacts matching every word of `query` (a prefix of a word of the
    /// name, address, account or role), at most `limit`.
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn search_erp_contacts(&self, company: &CompanyCode, query: &str, limit: usize) -> Result<Vec<ErpContact>> {
        let pats = patterns(query);
        let sql = format!(
            "SELECT key, name, address, account, role FROM erp_contacts WHERE company = $1{} ORDER BY name, key LIMIT {}",
            like_clauses(pats.len(), 2),
            limit
        );
        let rows: Vec<ErpRow> = on_pool!(self, |p| {
            let mut q = sqlx::query_as(&sql).bind(company.as_str());
            for pat in &pats {
                q = q.bind(pat);
            }
            q.fetch_all(p).await
        })?;
        Ok(rows.into_iter().map(erp).collect())
    }

    /// The folders indexed for `owner`, and when the index was last refreshed (the oldest folder).
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn contact_index(&self, owner: &str) -> Result<(Vec<IndexedFolder>, Option<i64>)> {
        let rows: Vec<(String, String, Option<String>, i64)> = on_pool!(self, |p| sqlx::query_as(
            "SELECT folder_id, name, delta_link, refreshed_ms FROM contact_folders WHERE owner = $1 ORDER BY name"
        )
        .bind(owner)
        .fetch_all(p)
        .await)?;
        let oldest = rows.iter().map(|r| r.3).min();
        let folders = rows
            .into_iter()
            .map(|(folder_id, name, delta_link, _)| IndexedFolder {
                folder_id,
                name,
                delta_link,
            })
            .collect();
        Ok((folders, oldest))
    }

    /// Applies one folder's delta round in one transaction: a full round (`full`) replaces
    /// the folder's contacts; otherwise `upserts` replace those contacts' addresses and
    /// `removed` go. The folder's `delta_link` is stored with them, so a crash between rounds
    /// repeats a round instead of losing one.
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn apply_contact_delta(
        &self,
        owner: &str,
        folder: &IndexedFolder,
        full: bool,
        upserts: &[IndexedContact],
        removed: &[String],
    ) -> Result<()> {
        let now = Utc::now().timestamp_millis();
        in_tx!(self, |tx| {
            if full {
                sqlx::query("DELETE FROM personal_contacts WHERE owner = $1 AND folder_id = $2")
                    .bind(owner)
                    .bind(&folder.folder_id)
                    .execute(&mut *tx)
                    .await?;
            }
            let changed = upserts.iter().map(|c| &c.contact_id).chain(removed);
            for id in changed {
                sqlx::query("DELETE FROM personal_contacts WHERE owner = $1 AND contact_id = $2")
                    .bind(owner)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            for c in upserts {
                sqlx::query(
                    "INSERT INTO personal_contacts (owner, contact_id, folder_id, name, name_lc, address, address_lc, company, haystack) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (owner, contact_id, address_lc) DO NOTHING",
                )
                .bind(owner)
                .bind(&c.contact_id)
                .bind(&c.folder_id)
                .bind(&c.name)
                .bind(c.name.to_lowercase())
                .bind(&c.address)
                .bind(normalise(&c.address))
                .bind(&c.company)
                .bind(haystack(&[&c.name, &c.address, c.company.as_deref().unwrap_or("")]))
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query(
                "INSERT INTO contact_folders (owner, folder_id, name, delta_link, refreshed_ms) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (owner, folder_id) DO UPDATE SET name = excluded.name, delta_link = excluded.delta_link, \
                 refreshed_ms = excluded.refreshed_ms",
            )
            .bind(owner)
            .bind(&folder.folder_id)
            .bind(&folder.name)
            .bind(&folder.delta_link)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        });
        Ok(())
    }

    /// Forgets the folders of `owner` not in `keep` (deleted in Outlook), with their contacts.
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn prune_contact_folders(&self, owner: &str, keep: &[String]) -> Result<()> {
        let (folders, _) = self.contact_index(owner).await?;
        in_tx!(self, |tx| {
            for f in folders.iter().filter(|f| !keep.contains(&f.folder_id)) {
                for table in ["personal_contacts", "contact_folders"] {
                    sqlx::query(&format!("DELETE FROM {table} WHERE owner = $1 AND folder_id = $2"))
                        .bind(owner)
                        .bind(&f.folder_id)
                        .execute(&mut *tx)
                        .await?;
                }
            }
        });
        Ok(())
    }

    /// `owner`'s indexed personal contacts matching every word of `query`, at most `limit`.
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn search_personal_contacts(&self, owner: &str, query: &str, limit: usize) -> Result<Vec<IndexedContact>> {
        let pats = patterns(query);
        let sql = format!(
            "SELECT contact_id, folder_id, name, address, company FROM personal_contacts WHERE owner = $1{} \
             ORDER BY name_lc, address_lc LIMIT {}",
            like_clauses(pats.len(), 2),
            limit
        );
        let rows: Vec<(String, String, String, String, Option<String>)> = on_pool!(self, |p| {
            let mut q = sqlx::query_as(&sql).bind(owner);
            for pat in &pats {
                q = q.bind(pat);
            }
            q.fetch_all(p).await
        })?;
        Ok(rows
            .into_iter()
            .map(|(contact_id, folder_id, name, address, company)| IndexedContact {
                contact_id,
                folder_id,
                name,
                address,
                company,
            })
            .collect())
    }

    /// One page of `owner`'s personal contacts (optionally one folder's), by name, after
    /// `after` (`(name_lc, contact_id, address_lc)` of the last one seen).
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn browse_personal_contacts(
        &self,
        owner: &str,
        folder: Option<&str>,
        after: Option<&(String, String, String)>,
        limit: usize,
    ) -> Result<Vec<BrowsedContact>> {
        let (n, c, a) = after.cloned().unwrap_or_default();
        let sql = format!(
            "SELECT p.name, p.address, p.company, f.name, p.folder_id, p.contact_id FROM personal_contacts p \
             JOIN contact_folders f ON f.owner = p.owner AND f.folder_id = p.folder_id \
             WHERE p.owner = $1 AND ($2 = '' OR p.folder_id = $2) AND ($3 = 0 OR (p.name_lc, p.contact_id, p.address_lc) > ($4, $5, $6)) \
             ORDER BY p.name_lc, p.contact_id, p.address_lc LIMIT {limit}"
        );
        let rows: Vec<(String, String, Option<String>, String, String, String)> = on_pool!(self, |p| sqlx::query_as(&sql)
            .bind(owner)
            .bind(folder.unwrap_or(""))
            .bind(i64::from(after.is_some()))
            .bind(&n)
            .bind(&c)
            .bind(&a)
            .fetch_all(p)
            .await)?;
        Ok(rows
            .into_iter()
            .map(|(name, address, company, folder, folder_id, contact_id)| BrowsedContact {
                name,
                address,
                company,
                folder,
                folder_id,
                contact_id,
            })
            .collect())
    }

    /// How often `operator` has mailed each of `addresses` (normalised) through officebridge.
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn recipient_counts(&self, operator: &str) -> Result<std::collections::HashMap<String, i64>> {
        // Bounded: the 500 addresses mailed most recently are what relevance needs.
        let rows: Vec<(String, i64)> = on_pool!(self, |p| sqlx::query_as(
            "SELECT address, sends FROM operator_recipients WHERE operator = $1 ORDER BY last_ms DESC LIMIT 500"
        )
        .bind(operator)
        .fetch_all(p)
        .await)?;
        Ok(rows.into_iter().collect())
    }
}

fn erp((key, name, address, account, role): ErpRow) -> ErpContact {
    ErpContact {
        key,
        name,
        address,
        account,
        role,
    }
}
