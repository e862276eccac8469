//! Sign-in state: pending authorization requests (PKCE verifier sealed, state hashed) and
//! spent sign-in links.

use super::models::PendingSignin;
use super::{Db, Result, Store, StoreError};
use crate::domain::OperatorCode;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

fn signin_verifier_aad(state: &str) -> String {
    format!("signin/{}/verifier", state_hash(state))
}

fn state_hash(state: &str) -> String {
    hex::encode(Sha256::digest(state.as_bytes()))
}

impl Store {
    /// Keeps an authorization request's state for its callback, and drops expired ones and,
    /// past the bounds, the oldest: at most `per_operator` for this operator, `total` in all.
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn put_pending_signin(&self, state: &str, pending: &PendingSignin, per_operator: usize, total: usize) -> Result<()> {
        let now = Utc::now();
        let verifier = self.keyring.seal(&pending.verifier, &signin_verifier_aad(state));
        in_tx!(self, |tx| {
            sqlx::query("DELETE FROM signin_states WHERE expires_at < $1")
                .bind(now)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO signin_states (state_hash, operator_code, verifier, nonce, redirect_uri, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(state_hash(state))
            .bind(pending.operator.as_str())
            .bind(&verifier)
            .bind(&pending.nonce)
            .bind(&pending.redirect_uri)
            .bind(now)
            .bind(pending.expires_at)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "DELETE FROM signin_states WHERE operator_code = $1 AND state_hash NOT IN \
                 (SELECT state_hash FROM signin_states WHERE operator_code = $1 ORDER BY created_at DESC, state_hash LIMIT $2)",
            )
            .bind(pending.operator.as_str())
            .bind(per_operator.max(1) as i64)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "DELETE FROM signin_states WHERE state_hash NOT IN \
                 (SELECT state_hash FROM signin_states ORDER BY created_at DESC, state_hash LIMIT $1)",
            )
            .bind(total.max(1) as i64)
            .execute(&mut *tx)
            .await?;
        });
        Ok(())
    }

    /// Spends a sign-in link's nonce: `false` when it was already spent.
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn spend_signin_link(&self, nonce: &str, operator: &OperatorCode, expires_at: DateTime<Utc>) -> Result<bool> {
        let now = Utc::now();
        let inserted = in_tx!(self, |tx| {
            sqlx::query("DELETE FROM signin_links_used WHERE expires_at < $1")
                .bind(now)
                .execute(&mut *tx)
                .await?;
            let r = sqlx::query(
                "INSERT INTO signin_links_used (nonce, operator_code, expires_at) VALUES ($1, $2, $3) ON CONFLICT (nonce) DO NOTHING",
            )
            .bind(nonce)
            .bind(operator.as_str())
            .bind(expires_at)
            .execute(&mut *tx)
            .await?;
            r.rows_affected() == 1
        });
        Ok(inserted)
    }

    /// Records who an operator was linked to, and how (`operator.signin`).
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn audit_signin(&self, operator: &OperatorCode, account: &str, via: &str) -> Result<()> {
        in_tx!(self, |tx| {
            audit!(
                tx,
                account,
                "operator.signin",
                operator.as_str(),
                serde_json::json!({"account": account, "via": via})
            );
        });
        Ok(())
    }

    /// Records that a sign-in link was issued, and to whom (`operator.signin_link`).
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn audit_signin_link(&self, actor: &str, operator: &OperatorCode, expires_at: DateTime<Utc>) -> Result<()> {
        in_tx!(self, |tx| {
            audit!(
                tx,
                actor,
                "operator.signin_link",
                operator.as_str(),
                serde_json::json!({"expires_at": expires_at})
            );
        });
        Ok(())
    }

    /// Takes (and so spends) a sign-in state: `None` when it is unknown, already used or expired.
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn take_pending_signin(&self, state: &str) -> Result<Option<PendingSignin>> {
        type Row = (String, String, String, String, DateTime<Utc>);
        let row: Option<Row> = on_pool!(self, |p| sqlx::query_as(
            "DELETE FROM signin_states WHERE state_hash = $1 RETURNING operator_code, verifier, nonce, redirect_uri, expires_at"
        )
        .bind(state_hash(state))
        .fetch_optional(p)
        .await)?;
        let Some((operator, verifier, nonce, redirect_uri, expires_at)) = row else {
            return Ok(None);
        };
        if expires_at <= Utc::now() {
            return Ok(None);
        }
        Ok(Some(PendingSignin {
            operator: OperatorCode::parse(&operator).map_err(|e| StoreError::Other(anyhow::anyhow!("stored operator code: {e}")))?,
            verifier: self.keyring.open(&verifier, &signin_verifier_aad(state))?,
            nonce,
            redirect_uri,
            expires_at,
        }))
    }
}
