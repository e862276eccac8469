//! Email profiles: the settings (JSON, never a secret), the sealed secret, the companies a
//! profile applies to, and its claims — one row per function and scope of an enabled
//! profile, unique, so the claim rule holds even when two requests race.

use super::models::{Profile, SecretState, SettingsView};
use super::{Db, Result, Store, StoreError, corrupt, is_unique_violation};
use crate::domain::{ApplyTo, CompanyCode, Function, NewProfile, ProfileName, ProviderSettings, Scope, SecretKind, SecretUpdate};
use chrono::{DateTime, Utc};

#[derive(sqlx::FromRow)]
struct ProfileRow {
    name: String,
    description: String,
    system_wide: bool,
    enabled: bool,
    functions: String,
    settings: String,
    secret_kind: Option<String>,
    secret: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

const PROFILE_COLUMNS: &str = "name, description, system_wide, enabled, functions, settings, secret_kind, secret, created_at, updated_at";

pub(super) fn profile_secret_aad(name: &ProfileName) -> String {
    format!("profile/{}/secret", name.as_str().to_lowercase())
}

impl ProfileRow {
    fn into_profile(self, companies: Vec<CompanyCode>) -> Result<Profile> {
        let name = ProfileName::parse(&self.name).map_err(|e| corrupt("profile name", &self.name, e))?;
        let functions: Vec<Function> =
            serde_json::from_str(&self.functions).map_err(|e| corrupt("profile functions", &self.functions, e))?;
        let settings: ProviderSettings = serde_json::from_str(&self.settings).map_err(|e| corrupt("profile settings", &self.name, e))?;
        let kind = self
            .secret_kind
            .as_deref()
            .map(|k| SecretKind::parse(k).ok_or_else(|| corrupt("profile secret kind", k, "not a kind")))
            .transpose()?;
        let state = |wanted: SecretKind| {
            (settings.secret_kind() == Some(wanted)).then_some(SecretState {
                set: kind == Some(wanted) && self.secret.is_some(),
            })
        };
        let view = match settings.clone() {
            ProviderSettings::Smtp(s) => SettingsView::Smtp {
                settings: s,
                password: state(SecretKind::SmtpPassword),
            },
            ProviderSettings::GraphDelegate(g) => SettingsView::GraphDelegate(g),
            ProviderSettings::GraphDirect(g) => SettingsView::GraphDirect {
                settings: g,
                client_secret: state(SecretKind::GraphClientSecret),
            },
        };
        Ok(Profile {
            name,
            description: self.description,
            provider: settings.provider(),
            apply_to: if self.system_wide {
                ApplyTo::System
            } else {
                ApplyTo::Companies(companies)
            },
            enabled: self.enabled,
            functions,
            settings: view,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// The audit record of a profile: what it is, never its secret.
fn profile_audit(p: &NewProfile) -> serde_json::Value {
    serde_json::json!({
        "provider": p.settings.provider(),
        "apply_to": p.apply_to,
        "enabled": p.enabled,
        "functions": p.functions,
        "settings": p.settings,
        "secret": match p.secret {
            SecretUpdate::Keep => "unchanged",
            SecretUpdate::Clear => "cleared",
            SecretUpdate::Set(_) => "replaced",
        },
    })
}

/// Why a write of a profile was refused by a claim another profile holds.
fn claim_conflict(function: &str, scope: &str, holder: &str) -> StoreError {
    let scope = if scope == "*" {
        "system-wide".to_string()
    } else {
        format!("for company {scope}")
    };
    StoreError::Conflict {
        field: "functions",
        message: format!("profile '{holder}' already sends {function} {scope}; disable it or remove the function from it first"),
    }
}

impl Store {
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn list_profiles(&self) -> Result<Vec<Profile>> {
        let sql = format!("SELECT {PROFILE_COLUMNS} FROM email_profiles ORDER BY name");
        let rows: Vec<ProfileRow> = on_pool!(self, |p| sqlx::query_as(&sql).fetch_all(p).await)?;
        let links: Vec<(String, String)> = on_pool!(self, |p| sqlx::query_as(
            "SELECT profile, company FROM email_profile_companies ORDER BY profile, company"
        )
        .fetch_all(p)
        .await)?;
        rows.into_iter()
            .map(|row| {
                let companies = links
                    .iter()
                    .filter(|(p, _)| *p == row.name)
                    .map(|(_, c)| CompanyCode::parse(c).map_err(|e| corrupt("company code", c, e)))
                    .collect::<Result<Vec<_>>>()?;
                row.into_profile(companies)
            })
            .collect()
    }

    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn get_profile(&self, name: &ProfileName) -> Result<Profile> {
        let sql = format!("SELECT {PROFILE_COLUMNS} FROM email_profiles WHERE lower(name) = lower($1)");
        let row: Option<ProfileRow> = on_pool!(self, |p| sqlx::query_as(&sql).bind(name.as_str()).fetch_optional(p).await)?;
        let Some(row) = row else {
            return Err(StoreError::NotFound {
                what: "email profile",
                key: name.to_string(),
            });
        };
        let companies: Vec<String> = on_pool!(self, |p| sqlx::query_scalar(
            "SELECT company FROM email_profile_companies WHERE profile = $1 ORDER BY company"
        )
        .bind(&row.name)
        .fetch_all(p)
        .await)?;
        let companies = companies
            .iter()
            .map(|c| CompanyCode::parse(c).map_err(|e| corrupt("company code", c, e)))
            .collect::<Result<Vec<_>>>()?;
        row.into_profile(companies)
    }

    /// The profile's secret (`smtp.password` or `graph_direct.client_secret`), decrypted.
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn profile_secret(&self, name: &ProfileName) -> Result<Option<crate::domain::Secret>> {
        let sealed: Option<Option<String>> = on_pool!(self, |p| sqlx::query_scalar(
            "SELECT secret FROM email_profiles WHERE lower(name) = lower($1)"
        )
        .bind(name.as_str())
        .fetch_optional(p)
        .await)?;
        match sealed.flatten() {
            None => Ok(None),
            Some(s) => Ok(Some(self.keyring.open(&s, &profile_secret_aad(name))?)),
        }
    }

    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn create_profile(&self, actor: &str, p: &NewProfile) -> Result<Profile> {
        self.write_profile(actor, p, false).await
    }

    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn replace_profile(&self, actor: &str, p: &NewProfile) -> Result<Profile> {
        self.write_profile(actor, p, true).await
    }

    /// Creates (`replace` false) or replaces a profile in one transaction: companies and
    /// tenant checked, secret sealed or kept, companies and claims rewritten, audited.
    async fn write_profile(&self, actor: &str, p: &NewProfile, replace: bool) -> Result<Profile> {
        let now = Utc::now();
        let kind = p.settings.secret_kind();
        let functions = serde_json::to_string(&p.functions).map_err(anyhow::Error::from)?;
        let settings = serde_json::to_string(&p.settings).map_err(anyhow::Error::from)?;
        let companies = match &p.apply_to {
            ApplyTo::System => Vec::new(),
            ApplyTo::Companies(cs) => cs.clone(),
        };
        let scopes = p.apply_to.scopes();
        let tenant = p.settings.tenant();
        let detail = profile_audit(p);
        // The claim another profile already holds, found before writing (a unique violation
        // would end a PostgreSQL transaction before we could ask who holds it).
        let saved = in_tx!(self, |tx| {
            let existing: Option<(String, Option<String>, Option<String>)> =
                sqlx::query_as("SELECT name, secret_kind, secret FROM email_profiles WHERE lower(name) = lower($1)")
                    .bind(p.name.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
            match (&existing, replace) {
                (Some((name, _, _)), false) => {
                    return Err(StoreError::Conflict {
                        field: "name",
                        message: format!("an email profile is already named '{name}'"),
                    });
                }
                (None, true) => {
                    return Err(StoreError::NotFound {
                        what: "email profile",
                        key: p.name.to_string(),
                    });
                }
                _ => {}
            }
            for c in &companies {
                let found: Option<String> = sqlx::query_scalar("SELECT code FROM companies WHERE code = $1")
                    .bind(c.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
                if found.is_none() {
                    return Err(StoreError::Invalid {
                        field: "apply_to.companies",
                        message: format!("no company has code '{c}'"),
                    });
                }
            }
            if let Some((field, t)) = tenant {
                let found: Option<String> = sqlx::query_scalar("SELECT code FROM tenants WHERE code = $1")
                    .bind(t.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
                if found.is_none() {
                    return Err(StoreError::Invalid {
                        field,
                        message: format!("no tenant has code '{t}'"),
                    });
                }
            }
            // The stored name keeps its spelling on a replace.
            let stored_name = existing.as_ref().map_or_else(|| p.name.as_str().to_string(), |(n, _, _)| n.clone());
            let aad = profile_secret_aad(&p.name);
            let secret = match (&p.secret, &existing) {
                (SecretUpdate::Set(s), _) if kind.is_some() => Some(self.keyring.seal(s, &aad)),
                (SecretUpdate::Keep, Some((_, old_kind, old))) if old_kind.as_deref() == kind.map(SecretKind::as_str) => old.clone(),
                _ => None,
            };
            if let Some(k) = kind
                && secret.is_none()
            {
                return Err(StoreError::Invalid {
                    field: k.field(),
                    message: "is required".into(),
                });
            }
            if p.enabled {
                for f in &p.functions {
                    for scope in &scopes {
                        let holder: Option<String> = sqlx::query_scalar(
                            "SELECT profile FROM email_profile_claims WHERE function = $1 AND scope = $2 AND profile <> $3",
                        )
                        .bind(f.as_str())
                        .bind(scope.key())
                        .bind(&stored_name)
                        .fetch_optional(&mut *tx)
                        .await?;
                        if let Some(holder) = holder {
                            return Err(claim_conflict(f.as_str(), scope.key(), &holder));
                        }
                    }
                }
            }
            let written = if replace {
                sqlx::query("DELETE FROM email_profile_claims WHERE profile = $1")
                    .bind(&stored_name)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM email_profile_companies WHERE profile = $1")
                    .bind(&stored_name)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "UPDATE email_profiles SET description = $2, provider = $3, system_wide = $4, enabled = $5, functions = $6, \
                     settings = $7, tenant_code = $8, secret_kind = $9, secret = $10, updated_at = $11 WHERE name = $1",
                )
                .bind(&stored_name)
                .bind(&p.description)
                .bind(p.settings.provider().as_str())
                .bind(matches!(p.apply_to, ApplyTo::System))
                .bind(p.enabled)
                .bind(&functions)
                .bind(&settings)
                .bind(tenant.map(|(_, t)| t.as_str()))
                .bind(kind.filter(|_| secret.is_some()).map(SecretKind::as_str))
                .bind(&secret)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map(drop)
            } else {
                sqlx::query(&format!(
                    "INSERT INTO email_profiles ({PROFILE_COLUMNS}, provider, tenant_code) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10, $11)"
                ))
                .bind(&stored_name)
                .bind(&p.description)
                .bind(matches!(p.apply_to, ApplyTo::System))
                .bind(p.enabled)
                .bind(&functions)
                .bind(&settings)
                .bind(kind.filter(|_| secret.is_some()).map(SecretKind::as_str))
                .bind(&secret)
                .bind(now)
                .bind(p.settings.provider().as_str())
                .bind(tenant.map(|(_, t)| t.as_str()))
                .execute(&mut *tx)
                .await
                .map(drop)
            };
            match written {
                Err(e) if is_unique_violation(&e) => {
                    return Err(StoreError::Conflict {
                        field: "name",
                        message: format!("an email profile is already named '{}'", p.name),
                    });
                }
                other => other?,
            }
            for c in &companies {
                sqlx::query("INSERT INTO email_profile_companies (profile, company) VALUES ($1, $2)")
                    .bind(&stored_name)
                    .bind(c.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
            let mut raced = None;
            if p.enabled {
                'claims: for f in &p.functions {
                    for scope in &scopes {
                        let claimed = sqlx::query("INSERT INTO email_profile_claims (function, scope, profile) VALUES ($1, $2, $3)")
                            .bind(f.as_str())
                            .bind(scope.key())
                            .bind(&stored_name)
                            .execute(&mut *tx)
                            .await;
                        match claimed {
                            // Another request claimed it since the check above.
                            Err(e) if is_unique_violation(&e) => {
                                raced = Some((*f, scope.clone()));
                                break 'claims;
                            }
                            other => other?,
                        };
                    }
                }
            }
            if let Some(r) = raced {
                // Returning drops the transaction, which rolls everything back.
                return Err(self.claim_race(r).await);
            }
            let action = if replace { "profile.update" } else { "profile.create" };
            audit!(tx, actor, action, stored_name.as_str(), detail);
            stored_name
        });
        self.get_profile(&ProfileName::parse(&saved).map_err(|e| corrupt("profile name", &saved, e))?)
            .await
    }

    /// The answer for a claim lost to a concurrent write: who holds it now (asked on another
    /// connection: the losing transaction may be unusable).
    async fn claim_race(&self, (function, scope): (Function, Scope)) -> StoreError {
        let holder: std::result::Result<Option<String>, sqlx::Error> = on_pool!(self, |p| sqlx::query_scalar(
            "SELECT profile FROM email_profile_claims WHERE function = $1 AND scope = $2"
        )
        .bind(function.as_str())
        .bind(scope.key())
        .fetch_optional(p)
        .await);
        let holder = holder.ok().flatten();
        claim_conflict(function.as_str(), scope.key(), holder.as_deref().unwrap_or("another profile"))
    }

    /// Which profile sends for `company` and `function` (SPEC §2), `None` when none does.
    /// An unknown company is an error naming `company`.
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn resolve_profile(&self, company: &CompanyCode, function: Function) -> Result<Option<crate::domain::Resolution>> {
        if let Err(StoreError::NotFound { .. }) = self.get_company(company).await {
            return Err(StoreError::Invalid {
                field: "company",
                message: format!("no company has code '{company}'"),
            });
        }
        let profiles: Vec<_> = self.list_profiles().await?.iter().map(Profile::summary).collect();
        Ok(crate::domain::resolve(&profiles, company, function))
    }

    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn delete_profile(&self, actor: &str, name: &ProfileName) -> Result<()> {
        in_tx!(self, |tx| {
            let stored: Option<String> = sqlx::query_scalar("SELECT name FROM email_profiles WHERE lower(name) = lower($1)")
                .bind(name.as_str())
                .fetch_optional(&mut *tx)
                .await?;
            let Some(stored) = stored else {
                return Err(StoreError::NotFound {
                    what: "email profile",
                    key: name.to_string(),
                });
            };
            // Children first: SQLite enforces ON DELETE CASCADE only with foreign keys on,
            // and saying it costs nothing.
            for table in ["email_profile_claims", "email_profile_companies"] {
                sqlx::query(&format!("DELETE FROM {table} WHERE profile = $1"))
                    .bind(&stored)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query("DELETE FROM email_profiles WHERE name = $1")
                .bind(&stored)
                .execute(&mut *tx)
                .await?;
            audit!(tx, actor, "profile.delete", stored.as_str(), serde_json::json!({}));
        });
        Ok(())
    }
}
