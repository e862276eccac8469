//! The token store: Graph access tokens cached in memory per operator (delegated) and per
//! tenant (application), refreshed 5 minutes before they expire, one refresh at a time per
//! key — concurrent callers wait for the refresh in flight instead of starting their own,
//! because every refresh spends the stored refresh token and returns a new one.
//!
//! A cached token is only as good as the records it was obtained under: it is keyed by the
//! operator, their tenant and the tenant's endpoints, the operator's state is read before it
//! is handed out (a disabled operator or one who must sign in gets none), and it is dropped
//! when the operator or the tenant is changed or deleted. A token of a tenant the operator has
//! left must never reach the new tenant's Graph.

use super::oauth::{self, ClientApp, Endpoints, OAuthError};
use crate::domain::{OperatorCode, Secret, TenantCode};
use crate::store::models::{Operator, SigninState, Tenant};
use crate::store::{Store, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What officebridge asks for when an operator signs in (SPEC §2, delegated permissions).
/// Graph scopes are named without a resource: the v2 endpoint reads them as Graph's.
pub const DELEGATED_SCOPES: &str =
    "offline_access openid profile User.Read Files.ReadWrite Contacts.Read People.Read User.ReadBasic.All Mail.Send Mail.ReadWrite";

/// Application permissions: `.default` of Graph, named by its application id so the same
/// scope holds in every national cloud (v2-oauth2-client-creds-grant-flow.md).
pub const APP_SCOPE: &str = "00000003-0000-0000-c000-000000000000/.default";

/// Exchange Online's application permissions (`SMTP.SendAsApp` for SMTP XOAUTH2), for the
/// client credentials grant (Exchange's "Authenticate an IMAP, POP or SMTP connection using
/// OAuth": the scope is `https://outlook.office365.com/.default`).
pub const EXCHANGE_SCOPE: &str = "https://outlook.office365.com/.default";

/// How long before expiry a cached token is replaced.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("operator '{0}' must sign in to Microsoft 365")]
    SigninRequired(OperatorCode),
    /// The operator named by the request cannot use Microsoft 365 as configured.
    #[error("{0}")]
    OperatorNotReady(String),
    /// The tenant lacks a setting this call needs (`field` names the tenant record's field).
    #[error("{message}")]
    TenantNotReady { field: &'static str, message: String },
    #[error(transparent)]
    OAuth(#[from] OAuthError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

struct Cached {
    token: Secret,
    expires: Instant,
}

impl Cached {
    fn of(set: &oauth::TokenSet) -> Self {
        Self {
            token: set.access_token.clone(),
            expires: Instant::now() + Duration::from_secs(set.expires_in.unwrap_or(3600)),
        }
    }

    /// Still good for at least the refresh margin.
    fn fresh(cached: &Option<Cached>) -> Option<Secret> {
        cached
            .as_ref()
            .filter(|c| c.expires > Instant::now() + REFRESH_MARGIN)
            .map(|c| c.token.clone())
    }
}

type Slot = Arc<tokio::sync::Mutex<Option<Cached>>>;

/// A tenant as the identity code needs it.
#[derive(Debug, Clone)]
pub struct TenantAccess {
    pub tenant: Tenant,
    pub app: ClientApp,
    pub endpoints: Endpoints,
}

pub struct Tokens {
    http: reqwest::Client,
    store: Store,
    delegated: Mutex<HashMap<String, Slot>>,
    application: Mutex<HashMap<String, Slot>>,
}

impl Tokens {
    pub fn new(http: reqwest::Client, store: Store) -> Self {
        Self {
            http,
            store,
            delegated: Mutex::default(),
            application: Mutex::default(),
        }
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    fn slot(map: &Mutex<HashMap<String, Slot>>, key: &str) -> Slot {
        map.lock().expect("token map lock").entry(key.to_string()).or_default().clone()
    }

    /// The cache key of a tenant's tokens: its code and everything a token is bound to.
    fn tenant_key(access: &TenantAccess) -> String {
        let t = &access.tenant;
        format!(
            "{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}",
            t.code,
            t.tenant_id.as_str(),
            t.client_id.as_str(),
            t.authority.as_str(),
            t.graph_endpoint.as_str()
        )
    }

    fn operator_key(code: &OperatorCode, access: &TenantAccess) -> String {
        format!("{code}\u{1f}{}", Self::tenant_key(access))
    }

    /// Drops every cached token of the operator (changed, disabled, moved, signed out).
    pub fn forget_operator(&self, code: &OperatorCode) {
        let prefix = format!("{code}\u{1f}");
        self.delegated
            .lock()
            .expect("token map lock")
            .retain(|k, _| !k.starts_with(&prefix));
    }

    /// Drops every cached token obtained through the tenant (replaced or deleted).
    pub fn forget_tenant(&self, code: &TenantCode) {
        let part = format!("\u{1f}{code}\u{1f}");
        let prefix = format!("{code}\u{1f}");
        self.delegated.lock().expect("token map lock").retain(|k, _| !k.contains(&part));
        self.application
            .lock()
            .expect("token map lock")
            .retain(|k, _| !k.starts_with(&prefix));
    }

    /// The tenant record with its decrypted client secret and identity endpoints.
    pub async fn tenant_access(&self, code: &TenantCode) -> Result<TenantAccess, TokenError> {
        let tenant = self.store.get_tenant(code).await?;
        let secret = self.store.tenant_client_secret(code).await?;
        let endpoints = Endpoints::microsoft(tenant.authority.as_str(), tenant.tenant_id.as_str());
        Ok(TenantAccess {
            app: ClientApp {
                client_id: tenant.client_id.as_str().to_string(),
                secret,
            },
            endpoints,
            tenant,
        })
    }

    /// The operator and their tenant, when the operator may use Microsoft 365 at all.
    pub async fn operator_access(&self, code: &OperatorCode) -> Result<(Operator, TenantAccess), TokenError> {
        let operator = self.store.get_operator(code).await?;
        if !operator.enabled {
            return Err(TokenError::OperatorNotReady(format!(
                "operator '{code}' does not have Microsoft 365 integration enabled"
            )));
        }
        let Some(tenant) = operator.tenant.clone() else {
            return Err(TokenError::OperatorNotReady(format!("operator '{code}' has no tenant")));
        };
        let access = self.tenant_access(&tenant).await?;
        Ok((operator, access))
    }

    /// A Graph token for the operator, from the cache or by spending their refresh token.
    pub async fn operator_token(&self, code: &OperatorCode) -> Result<Secret, TokenError> {
        // The records first, the cache second: the cache cannot vouch for an operator who
        // was disabled, moved or signed out since the token was obtained.
        let (operator, access) = self.operator_access(code).await?;
        if operator.signin != SigninState::Linked {
            return Err(TokenError::SigninRequired(code.clone()));
        }
        let slot = Self::slot(&self.delegated, &Self::operator_key(code, &access));
        let mut cached = slot.lock().await;
        if let Some(token) = Cached::fresh(&cached) {
            return Ok(token);
        }
        let Some(refresh_token) = self.store.operator_refresh_token(code).await? else {
            return Err(TokenError::SigninRequired(code.clone()));
        };
        match oauth::refresh(&self.http, &access.endpoints, &access.app, &refresh_token, DELEGATED_SCOPES).await {
            Ok(set) => {
                if let Some(rt) = &set.refresh_token {
                    self.store.store_refresh_token(code, rt).await?;
                }
                *cached = Some(Cached::of(&set));
                Ok(set.access_token)
            }
            Err(e) if e.needs_signin() => {
                tracing::warn!(operator = %code, error = %e, "refresh token refused; the operator must sign in again");
                self.store.require_signin(code).await?;
                *cached = None;
                Err(TokenError::SigninRequired(code.clone()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Records tokens just obtained by a sign-in through `access` (the refresh token is stored
    /// sealed).
    pub async fn signed_in(&self, code: &OperatorCode, access: &TenantAccess, set: &oauth::TokenSet) -> Result<(), TokenError> {
        let Some(rt) = &set.refresh_token else {
            return Err(OAuthError::Malformed("no refresh token was issued; is offline_access granted?".into()).into());
        };
        self.store.store_refresh_token(code, rt).await?;
        // Whatever was cached for the operator belonged to the grant this one replaces.
        self.forget_operator(code);
        *Self::slot(&self.delegated, &Self::operator_key(code, access)).lock().await = Some(Cached::of(set));
        // Mail queued as this operator and held for their sign-in goes now.
        let woken = self.store.wake_signed_in(code.as_str()).await?;
        if woken > 0 {
            tracing::info!(operator = %code, messages = woken, "signed in again: held mail is due");
        }
        Ok(())
    }

    /// Graph refused `used` (401): it is dropped unless another caller already replaced it.
    pub async fn operator_token_rejected(&self, code: &OperatorCode, used: &Secret) {
        Self::forget(&self.delegated, &format!("{code}\u{1f}"), used).await;
    }

    /// Drops `used` from whichever slot under `prefix` holds it.
    async fn forget(map: &Mutex<HashMap<String, Slot>>, prefix: &str, used: &Secret) {
        let slots: Vec<Slot> = map
            .lock()
            .expect("token map lock")
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, s)| s.clone())
            .collect();
        for slot in slots {
            let mut cached = slot.lock().await;
            if cached.as_ref().is_some_and(|c| c.token.same_as(used)) {
                *cached = None;
            }
        }
    }

    /// An application token for the tenant (client credentials), cached.
    pub async fn app_token(&self, code: &TenantCode) -> Result<Secret, TokenError> {
        self.app_token_as(code, None).await
    }

    /// An application token in the tenant for `app`, a separate app registration of that
    /// tenant (a `graph_direct` profile's own), or the tenant's own when `None`; cached per app.
    pub async fn app_token_as(&self, code: &TenantCode, app: Option<&ClientApp>) -> Result<Secret, TokenError> {
        self.app_token_for(code, app, APP_SCOPE).await
    }

    /// An application token for `scope` (Graph's, or Exchange's for SMTP), cached per
    /// tenant, app and scope.
    pub async fn app_token_for(&self, code: &TenantCode, app: Option<&ClientApp>, scope: &str) -> Result<Secret, TokenError> {
        let mut access = self.tenant_access(code).await?;
        let mut key = Self::tenant_key(&access);
        if scope != APP_SCOPE {
            key.push('\u{1f}');
            key.push_str(scope);
        }
        if let Some(app) = app {
            key.push('\u{1f}');
            key.push_str(&app.client_id);
            access.app = app.clone();
        }
        let slot = Self::slot(&self.application, &key);
        let mut cached = slot.lock().await;
        if let Some(token) = Cached::fresh(&cached) {
            return Ok(token);
        }
        if access.app.secret.is_none() {
            return Err(TokenError::TenantNotReady {
                field: "client_secret",
                message: match app {
                    None => format!("tenant '{code}' has no client secret, which application permissions need"),
                    Some(a) => format!(
                        "app registration {} has no client secret, which application permissions need",
                        a.client_id
                    ),
                },
            });
        }
        let set = oauth::client_credentials(&self.http, &access.endpoints, &access.app, scope).await?;
        *cached = Some(Cached::of(&set));
        Ok(set.access_token)
    }

    pub async fn app_token_rejected(&self, code: &TenantCode, used: &Secret) {
        Self::forget(&self.application, &format!("{code}\u{1f}"), used).await;
    }
}
