//! ERP operators: their tenant, their address, and the sealed refresh token of their
//! Microsoft sign-in.

use super::models::{NewOperator, Operator, SigninState};
use super::{Db, Result, Store, StoreError, corrupt};
use crate::domain::{OperatorCode, Secret, TenantCode};
use chrono::{DateTime, Utc};

#[derive(sqlx::FromRow)]
struct OperatorRow {
    code: String,
    enabled: bool,
    tenant_code: Option<String>,
    email: Option<String>,
    signin: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<OperatorRow> for Operator {
    type Error = StoreError;

    fn try_from(row: OperatorRow) -> Result<Self> {
        use crate::domain::EmailAddress;
        Ok(Operator {
            code: OperatorCode::parse(&row.code).map_err(|e| corrupt("operator code", &row.code, e))?,
            enabled: row.enabled,
            tenant: row
                .tenant_code
                .map(|c| TenantCode::parse(&c).map_err(|e| corrupt("tenant code", &c, e)))
                .transpose()?,
            email: row
                .email
                .map(|e| EmailAddress::parse(&e).map_err(|why| corrupt("operator address", &e, why)))
                .transpose()?,
            signin: SigninState::from_db(&row.signin).ok_or_else(|| corrupt("sign-in state", &row.signin, "not a state"))?,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

const OPERATOR_COLUMNS: &str = "code, enabled, tenant_code, email, signin, created_at, updated_at";

pub(super) fn operator_token_aad(code: &str) -> String {
    format!("operator/{code}/refresh_token")
}

impl Store {
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn list_operators(&self) -> Result<Vec<Operator>> {
        let sql = format!("SELECT {OPERATOR_COLUMNS} FROM operators ORDER BY code");
        let rows: Vec<OperatorRow> = on_pool!(self, |p| sqlx::query_as(&sql).fetch_all(p).await)?;
        rows.into_iter().map(Operator::try_from).collect()
    }

    /// The operator of `tenant` whose address is `email` (compared without regard to case),
    /// for the add-in, whose token names the user but not the operator.
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn operator_by_email(&self, tenant: &TenantCode, email: &str) -> Result<Option<Operator>> {
        let sql =
            format!("SELECT {OPERATOR_COLUMNS} FROM operators WHERE tenant_code = $1 AND lower(email) = lower($2) ORDER BY code LIMIT 1");
        let row: Option<OperatorRow> = on_pool!(self, |p| sqlx::query_as(&sql)
            .bind(tenant.as_str())
            .bind(email)
            .fetch_optional(p)
            .await)?;
        row.map(Operator::try_from).transpose()
    }

    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn get_operator(&self, code: &OperatorCode) -> Result<Operator> {
        let sql = format!("SELECT {OPERATOR_COLUMNS} FROM operators WHERE code = $1");
        let row: Option<OperatorRow> = on_pool!(self, |p| sqlx::query_as(&sql).bind(code.as_str()).fetch_optional(p).await)?;
        row.map(Operator::try_from).transpose()?.ok_or_else(|| StoreError::NotFound {
            what: "operator",
            key: code.to_string(),
        })
    }

    /// Creates or replaces an operator; returns it and whether it was created. Moving an
    /// operator to another tenant unlinks their Microsoft account: the stored refresh token
    /// belongs to the old tenant.
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn put_operator(&self, actor: &str, op: &NewOperator) -> Result<(Operator, bool)> {
        let now = Utc::now();
        let tenant = op.tenant.as_ref().map(|t| t.as_str().to_string());
        let created = in_tx!(self, |tx| {
            if let Some(t) = &tenant {
                let exists: Option<String> = sqlx::query_scalar("SELECT code FROM tenants WHERE code = $1")
                    .bind(t)
                    .fetch_optional(&mut *tx)
                    .await?;
                if exists.is_none() {
                    return Err(StoreError::Invalid {
                        field: "tenant",
                        message: format!("no tenant has code '{t}'"),
                    });
                }
            }
            let previous: Option<Option<String>> = sqlx::query_scalar("SELECT tenant_code FROM operators WHERE code = $1")
                .bind(op.code.as_str())
                .fetch_optional(&mut *tx)
                .await?;
            match &previous {
                None => {
                    sqlx::query(&format!(
                        "INSERT INTO operators ({OPERATOR_COLUMNS}) VALUES ($1, $2, $3, $4, 'never', $5, $5)"
                    ))
                    .bind(op.code.as_str())
                    .bind(op.enabled)
                    .bind(&tenant)
                    .bind(op.email.as_ref().map(|e| e.as_str()))
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
                Some(old_tenant) => {
                    let moved = *old_tenant != tenant;
                    sqlx::query(
                        "UPDATE operators SET enabled = $2, tenant_code = $3, email = $4, updated_at = $5, \
                         signin = CASE WHEN $6 THEN 'never' ELSE signin END, \
                         refresh_token = CASE WHEN $6 THEN NULL ELSE refresh_token END WHERE code = $1",
                    )
                    .bind(op.code.as_str())
                    .bind(op.enabled)
                    .bind(&tenant)
                    .bind(op.email.as_ref().map(|e| e.as_str()))
                    .bind(now)
                    .bind(moved)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            let action = if previous.is_none() { "operator.create" } else { "operator.update" };
            audit!(
                tx,
                actor,
                action,
                op.code.as_str(),
                serde_json::json!({"enabled": op.enabled, "tenant": tenant, "email": op.email})
            );
            previous.is_none()
        });
        Ok((self.get_operator(&op.code).await?, created))
    }

    /// Records a new refresh token for an operator (sealed) and marks them linked. Refresh
    /// tokens are replaced on every use, so this is called after each redemption.
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn store_refresh_token(&self, code: &OperatorCode, token: &Secret) -> Result<()> {
        let sealed = self.keyring.seal(token, &operator_token_aad(code.as_str()));
        let done = on_pool!(self, |p| sqlx::query(
            "UPDATE operators SET refresh_token = $2, signin = 'linked', updated_at = $3 WHERE code = $1"
        )
        .bind(code.as_str())
        .bind(&sealed)
        .bind(Utc::now())
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
        if done == 0 {
            return Err(StoreError::NotFound {
                what: "operator",
                key: code.to_string(),
            });
        }
        Ok(())
    }

    /// The operator's refresh token, decrypted, when one is stored.
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn operator_refresh_token(&self, code: &OperatorCode) -> Result<Option<Secret>> {
        let sealed: Option<Option<String>> = on_pool!(self, |p| sqlx::query_scalar("SELECT refresh_token FROM operators WHERE code = $1")
            .bind(code.as_str())
            .fetch_optional(p)
            .await)?;
        match sealed.flatten() {
            None => Ok(None),
            Some(s) => Ok(Some(self.keyring.open(&s, &operator_token_aad(code.as_str()))?)),
        }
    }

    /// The identity platform refused the operator's grant: it is forgotten, and the operator
    /// must sign in again.
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn require_signin(&self, code: &OperatorCode) -> Result<()> {
        on_pool!(self, |p| sqlx::query(
            "UPDATE operators SET refresh_token = NULL, signin = 'signin_required', updated_at = $2 WHERE code = $1"
        )
        .bind(code.as_str())
        .bind(Utc::now())
        .execute(p)
        .await
        .map(|_| ()))?;
        Ok(())
    }
}
