//! Master-key rotation: every sealed secret re-sealed under the new key, all or none.

use super::operators::operator_token_aad;
use super::profiles::profile_secret_aad;
use super::secrets::Keyring;
use super::tenants::tenant_secret_aad;
use super::{Db, Result, Store};
use crate::domain::{ProfileName, TenantCode};
use anyhow::Context;

impl Store {
    /// Re-seals every stored secret under `new`'s current key in one transaction (either all
    /// move or none do), and returns how many were re-sealed. `self` must be able to open them.
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn reseal_secrets(&self, actor: &str, new: &Keyring) -> Result<usize> {
        let count = in_tx!(self, |tx| {
            let tenants: Vec<(String, String)> = sqlx::query_as("SELECT code, client_secret FROM tenants WHERE client_secret IS NOT NULL")
                .fetch_all(&mut *tx)
                .await?;
            let operators: Vec<(String, String)> =
                sqlx::query_as("SELECT code, refresh_token FROM operators WHERE refresh_token IS NOT NULL")
                    .fetch_all(&mut *tx)
                    .await?;
            let profiles: Vec<(String, String)> = sqlx::query_as("SELECT name, secret FROM email_profiles WHERE secret IS NOT NULL")
                .fetch_all(&mut *tx)
                .await?;
            for (name, sealed) in &profiles {
                let aad = profile_secret_aad(&ProfileName::parse(name).map_err(anyhow::Error::msg)?);
                let plain = self.keyring.open(sealed, &aad).with_context(|| format!("email profile {name}"))?;
                sqlx::query("UPDATE email_profiles SET secret = $2 WHERE name = $1")
                    .bind(name)
                    .bind(new.seal(&plain, &aad))
                    .execute(&mut *tx)
                    .await?;
            }
            for (code, sealed) in &tenants {
                let aad = tenant_secret_aad(&TenantCode::parse(code).map_err(anyhow::Error::msg)?);
                let plain = self.keyring.open(sealed, &aad).with_context(|| format!("tenant {code}"))?;
                sqlx::query("UPDATE tenants SET client_secret = $2 WHERE code = $1")
                    .bind(code)
                    .bind(new.seal(&plain, &aad))
                    .execute(&mut *tx)
                    .await?;
            }
            for (code, sealed) in &operators {
                let aad = operator_token_aad(code);
                let plain = self.keyring.open(sealed, &aad).with_context(|| format!("operator {code}"))?;
                sqlx::query("UPDATE operators SET refresh_token = $2 WHERE code = $1")
                    .bind(code)
                    .bind(new.seal(&plain, &aad))
                    .execute(&mut *tx)
                    .await?;
            }
            let count = tenants.len() + operators.len() + profiles.len();
            audit!(tx, actor, "key.rotate", new.current_id(), serde_json::json!({"resealed": count}));
            count
        });
        Ok(count)
    }
}
