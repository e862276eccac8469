//! The Microsoft 365 emulator: the parts of the Microsoft identity platform (v2.0) and
//! Microsoft Graph (v1.0) that officebridge uses, built from Microsoft's documentation — the
//! way Azurite stands in for Azure Storage. One listener serves both, so a tenant record uses
//! the emulator's base URL as its login authority and as its Graph endpoint.
//!
//! State lives in memory, seeded from [`seed::Seed`]. Test hooks live under `/_emulator/`.

pub mod batch;
pub mod directory;
pub mod drive;
pub mod faults;
pub mod graph;
pub mod identity;
pub mod keys;
pub mod mail;
pub mod seed;
pub mod throttle;

use axum::Router;
use axum::routing::{any, get, post};
use chrono::{DateTime, Utc};
use seed::{Seed, SeedApp, SeedTenant, SeedUser};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};

/// An authorization code waiting to be redeemed.
#[derive(Debug, Clone)]
pub struct AuthCode {
    pub tenant_id: String,
    pub client_id: String,
    pub user_id: String,
    pub redirect_uri: String,
    pub scopes: Vec<String>,
    pub challenge: Option<(String, String)>,
    pub nonce: Option<String>,
    pub issued: DateTime<Utc>,
    pub redeemed: bool,
    /// Whether the sign-in passed a second factor (the tokens' `amr` says so).
    pub mfa: bool,
}

/// What a refresh token stands for.
#[derive(Debug, Clone)]
pub struct RefreshGrant {
    pub tenant_id: String,
    pub client_id: String,
    pub user_id: String,
    pub scopes: Vec<String>,
    pub last_used: DateTime<Utc>,
    pub revoked: bool,
    pub mfa: bool,
}

/// A sign-in started at `/authorize`, waiting for the user to pick an account (and pass MFA).
#[derive(Debug, Clone)]
pub struct PendingSignin {
    pub tenant_id: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub scopes: Vec<String>,
    pub state: Option<String>,
    pub challenge: Option<(String, String)>,
    pub nonce: Option<String>,
    pub created: DateTime<Utc>,
}

#[derive(Default)]
struct Inner {
    seed: RwLock<Seed>,
    keys: RwLock<keys::KeySet>,
    codes: Mutex<HashMap<String, AuthCode>>,
    refresh: Mutex<HashMap<String, RefreshGrant>>,
    pending: Mutex<HashMap<String, PendingSignin>>,
    drive: Mutex<drive::DriveState>,
    faults: Mutex<Vec<faults::Fault>>,
    devices: Mutex<HashMap<String, identity::device::DeviceGrant>>,
    mail: Mutex<mail::MailState>,
    requests: Mutex<faults::RequestLog>,
    throttle: Mutex<throttle::ThrottleState>,
    delta: Mutex<directory::DeltaState>,
}

/// A running emulator's state; cheap to clone.
#[derive(Clone)]
pub struct Emulator {
    inner: Arc<Inner>,
    /// The base URL tokens name as their issuer host (`http://127.0.0.1:PORT`).
    pub base_url: String,
}

/// A random opaque value for codes, refresh tokens and request ids.
pub fn opaque() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl Emulator {
    pub fn new(seed: Seed, base_url: &str) -> Self {
        let inner = Inner {
            seed: RwLock::new(seed),
            ..Default::default()
        };
        Self {
            inner: Arc::new(inner),
            base_url: base_url.trim_end_matches('/').to_string(),
        }
    }

    /// The tenant a path segment names: its id or domain (`common`/`organizations` are
    /// resolved by the caller, from the user or app).
    pub fn tenant(&self, id_or_domain: &str) -> Option<SeedTenant> {
        let seed = self.inner.seed.read().expect("seed lock");
        seed.tenants
            .iter()
            .find(|t| t.id.eq_ignore_ascii_case(id_or_domain) || t.domain.eq_ignore_ascii_case(id_or_domain))
            .cloned()
    }

    /// The app registration with this client id, and the tenant it lives in.
    pub fn app(&self, client_id: &str) -> Option<(SeedTenant, SeedApp)> {
        let seed = self.inner.seed.read().expect("seed lock");
        seed.tenants.iter().find_map(|t| {
            t.apps
                .iter()
                .find(|a| a.client_id.eq_ignore_ascii_case(client_id))
                .map(|a| (t.clone(), a.clone()))
        })
    }

    pub fn user(&self, tenant_id: &str, id_or_upn: &str) -> Option<SeedUser> {
        self.tenant(tenant_id)?
            .users
            .into_iter()
            .find(|u| u.id.eq_ignore_ascii_case(id_or_upn) || u.user_principal_name.eq_ignore_ascii_case(id_or_upn))
    }

    /// A user of any tenant, by object id.
    pub fn users_by_id(&self, id: &str) -> Option<SeedUser> {
        self.users_by_upn_or_id(id)
    }

    /// A user of any tenant, by object id or user principal name.
    pub fn users_by_upn_or_id(&self, key: &str) -> Option<SeedUser> {
        let seed = self.inner.seed.read().expect("seed lock");
        seed.tenants
            .iter()
            .flat_map(|t| t.users.iter())
            .find(|u| u.id.eq_ignore_ascii_case(key) || u.user_principal_name.eq_ignore_ascii_case(key))
            .cloned()
    }

    /// Changes a user of any tenant (by object id or principal name); false when there is none.
    pub fn edit_user(&self, key: &str, change: impl FnOnce(&mut SeedUser)) -> bool {
        let mut seed = self.inner.seed.write().expect("seed lock");
        match seed
            .tenants
            .iter_mut()
            .flat_map(|t| t.users.iter_mut())
            .find(|u| u.id.eq_ignore_ascii_case(key) || u.user_principal_name.eq_ignore_ascii_case(key))
        {
            Some(u) => {
                change(u);
                true
            }
            None => false,
        }
    }

    pub fn delta(&self) -> std::sync::MutexGuard<'_, directory::DeltaState> {
        self.inner.delta.lock().expect("delta lock")
    }

    pub fn mail(&self) -> std::sync::MutexGuard<'_, mail::MailState> {
        self.inner.mail.lock().expect("mail lock")
    }

    pub fn devices(&self) -> std::sync::MutexGuard<'_, HashMap<String, identity::device::DeviceGrant>> {
        self.inner.devices.lock().expect("devices lock")
    }

    pub fn faults(&self) -> std::sync::MutexGuard<'_, Vec<faults::Fault>> {
        self.inner.faults.lock().expect("faults lock")
    }

    pub fn log_request(&self, entry: faults::Logged) {
        self.inner.requests.lock().expect("requests lock").push(entry);
    }

    /// The last requests (at most 10,000).
    pub fn requests(&self) -> Vec<faults::Logged> {
        self.inner.requests.lock().expect("requests lock").recent.iter().cloned().collect()
    }

    /// How many requests were answered with each status, all of them.
    pub fn request_counts(&self) -> faults::Counts {
        self.inner.requests.lock().expect("requests lock").counts.clone()
    }

    pub fn throttle(&self) -> std::sync::MutexGuard<'_, throttle::ThrottleState> {
        self.inner.throttle.lock().expect("throttle lock")
    }

    pub fn drive(&self) -> std::sync::MutexGuard<'_, drive::DriveState> {
        self.inner.drive.lock().expect("drive lock")
    }

    pub fn keys(&self) -> std::sync::RwLockReadGuard<'_, keys::KeySet> {
        self.inner.keys.read().expect("keys lock")
    }

    pub fn rotate_keys(&self) {
        self.inner.keys.write().expect("keys lock").rotate();
    }

    pub fn codes(&self) -> std::sync::MutexGuard<'_, HashMap<String, AuthCode>> {
        self.inner.codes.lock().expect("codes lock")
    }

    pub fn refresh_grants(&self) -> std::sync::MutexGuard<'_, HashMap<String, RefreshGrant>> {
        self.inner.refresh.lock().expect("refresh lock")
    }

    pub fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, PendingSignin>> {
        self.inner.pending.lock().expect("pending lock")
    }

    /// Replaces the whole state with `seed` (test hook).
    pub fn reset(&self, seed: Seed) {
        *self.inner.seed.write().expect("seed lock") = seed;
        self.codes().clear();
        self.refresh_grants().clear();
        self.pending().clear();
        *self.drive() = drive::DriveState::default();
        self.faults().clear();
        self.devices().clear();
        *self.mail() = mail::MailState::default();
        *self.inner.requests.lock().expect("requests lock") = faults::RequestLog::default();
        *self.throttle() = throttle::ThrottleState::default();
        *self.delta() = directory::DeltaState::default();
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/{tenant}/v2.0/.well-known/openid-configuration", get(identity::discovery))
            .route("/{tenant}/discovery/v2.0/keys", get(identity::jwks))
            .route(
                "/{tenant}/oauth2/v2.0/authorize",
                get(identity::authorize).post(identity::authorize_submit),
            )
            .route("/{tenant}/oauth2/v2.0/token", post(identity::token))
            .route("/{tenant}/oauth2/v2.0/devicecode", post(identity::device::authorize))
            .route(
                "/devicelogin",
                get(identity::device::login_page).post(identity::device::login_submit),
            )
            .route("/_emulator/devicecode/{user_code}/expire", post(identity::device::expire))
            .route("/v1.0/me", get(graph::me))
            .route("/v1.0/$batch", post(batch::batch))
            .route("/v1.0/me/drive/{*rest}", any(drive::me_drive))
            .route("/v1.0/users/{user}/drive/{*rest}", any(drive::user_drive))
            .route("/v1.0/me/contacts", get(directory::me_contacts))
            .route("/v1.0/users/{user}/contacts", get(directory::user_contacts))
            .route("/v1.0/me/contactFolders", get(directory::contact_folders))
            .route("/v1.0/me/contactFolders/{id}/{*rest}", get(directory::me_folder))
            .route("/v1.0/users/{user}/contactFolders", get(directory::user_contact_folders))
            .route("/v1.0/users/{user}/contactFolders/{id}/{*rest}", get(directory::user_folder))
            .route("/v1.0/me/people", get(directory::people))
            .route("/v1.0/users", get(directory::users))
            .route("/v1.0/users/{user}", get(directory::user_get))
            .route("/v1.0/contacts", get(directory::org_contacts))
            .route("/v1.0/me/sendMail", post(mail::me_mail))
            .route("/v1.0/me/messages", post(mail::me_mail))
            .route("/v1.0/me/messages/{*rest}", any(mail::me_mail))
            .route("/v1.0/me/mailFolders/{*rest}", get(mail::me_mail))
            .route("/v1.0/users/{user}/sendMail", post(mail::user_mail))
            .route("/v1.0/users/{user}/messages", post(mail::user_mail))
            .route("/v1.0/users/{user}/messages/{*rest}", any(mail::user_mail))
            .route("/v1.0/users/{user}/mailFolders/{*rest}", get(mail::user_mail))
            .route("/_emulator/mail/{user}", get(mail::inspect))
            .route("/_emulator/mail-settings", post(mail::set_settings))
            .route("/_attachments/{token}", any(mail::attachment_upload))
            .route("/_upload/{token}", any(drive::upload_url))
            .route("/_emulator/drive/{user}", get(drive::inspect))
            .route("/personal/{owner}/_layouts/15/Doc.aspx", get(drive::web_view))
            .route("/_emulator/faults", post(faults::add).delete(faults::clear))
            .route("/_emulator/requests", get(faults::requests))
            .route("/_emulator/requests/counts", get(faults::counts))
            .route("/_emulator/keys/rotate", post(hooks::rotate_keys))
            .route("/_emulator/reset", post(hooks::reset))
            .route("/_emulator/refresh-tokens/revoke", post(hooks::revoke_refresh_tokens))
            .route("/_emulator/users/{user}/mfa", post(hooks::require_mfa))
            .route("/_emulator/addin-token", post(hooks::addin_token))
            .route("/_emulator/users/{user}/contacts", axum::routing::put(directory::replace_contacts))
            .route("/_emulator/limits", post(throttle::set_limits))
            .layer(axum::middleware::from_fn_with_state(self.clone(), faults::middleware))
            // Outside the faults: a scripted delay holds a concurrency slot, as a slow answer would.
            .layer(axum::middleware::from_fn_with_state(self.clone(), throttle::middleware))
            // Simple uploads take up to 250 MB; axum's default limit is 2 MB.
            .layer(axum::extract::DefaultBodyLimit::max(drive::SIMPLE_UPLOAD_LIMIT + 1))
            .with_state(self.clone())
    }
}

/// Test hooks: seed and reset state, rotate keys, revoke refresh tokens.
mod hooks {
    use super::{Emulator, seed::Seed};
    use axum::Json;
    use axum::extract::State;
    use axum::http::StatusCode;

    pub async fn rotate_keys(State(emu): State<Emulator>) -> StatusCode {
        emu.rotate_keys();
        StatusCode::NO_CONTENT
    }

    pub async fn reset(State(emu): State<Emulator>, Json(seed): Json<Seed>) -> StatusCode {
        emu.reset(seed);
        StatusCode::NO_CONTENT
    }

    /// Turns a user's MFA requirement on or off (`{"required": true}`), as a Conditional Access
    /// policy added after the user signed in would.
    pub async fn require_mfa(
        State(emu): State<Emulator>,
        axum::extract::Path(user): axum::extract::Path<String>,
        Json(body): Json<serde_json::Value>,
    ) -> StatusCode {
        let required = body["required"].as_bool().unwrap_or(true);
        if emu.edit_user(&user, |u| u.mfa = required) {
            StatusCode::NO_CONTENT
        } else {
            StatusCode::NOT_FOUND
        }
    }

    /// Mints the token Office's `Office.auth.getAccessToken` hands an add-in: issued to Office
    /// (`azp`) for the app registration's own API (`aud` its client id, `scp` its exposed
    /// scope), for a user of the tenant that holds the app — the token a real Office would
    /// get for the demo user (office-js-docs-pr `docs/develop/sso-in-office-add-ins.md`). For
    /// the Office stand-in of `serve --dev` and the browser tests. Body: `{"user",
    /// "client_id", "mfa"?}`.
    pub async fn addin_token(
        State(emu): State<Emulator>,
        Json(body): Json<serde_json::Value>,
    ) -> Result<Json<serde_json::Value>, (StatusCode, String)> {
        let bad = |m: String| (StatusCode::BAD_REQUEST, m);
        let client_id = body["client_id"].as_str().unwrap_or_default();
        let user = body["user"].as_str().unwrap_or_default();
        let (tenant, app) = emu.app(client_id).ok_or_else(|| bad(format!("no app registration {client_id}")))?;
        let scope = app
            .exposed_scopes
            .first()
            .cloned()
            .ok_or_else(|| bad(format!("app {client_id} exposes no API scope")))?;
        let u = tenant
            .users
            .iter()
            .find(|u| u.user_principal_name.eq_ignore_ascii_case(user))
            .ok_or_else(|| bad(format!("no user {user} in the app's tenant")))?;
        let now = chrono::Utc::now().timestamp();
        let amr = if body["mfa"].as_bool().unwrap_or(false) {
            vec!["pwd", "mfa"]
        } else {
            vec!["pwd"]
        };
        let claims = serde_json::json!({
            "aud": client_id,
            "iss": format!("{}/{}/v2.0", emu.base_url, tenant.id),
            "iat": now, "nbf": now, "exp": now + 3600,
            // Office's own client id: Office asks for the token, not the add-in.
            "azp": "ea5a67f6-b6f3-4338-b240-c655ddc3cc8e",
            "oid": u.id, "sub": u.id, "tid": tenant.id,
            "preferred_username": u.user_principal_name, "name": u.display_name,
            "scp": scope, "ver": "2.0", "amr": amr,
        });
        Ok(Json(serde_json::json!({"access_token": emu.keys().sign(&claims, None)})))
    }

    /// Makes every refresh token fail as revoked (`invalid_grant`), as when an admin revokes
    /// a user's sessions.
    pub async fn revoke_refresh_tokens(State(emu): State<Emulator>) -> StatusCode {
        emu.refresh_grants().values_mut().for_each(|g| g.revoked = true);
        StatusCode::NO_CONTENT
    }
}

/// Binds `addr` and serves the emulator in the background; returns its base URL.
pub async fn spawn(addr: SocketAddr, seed: Seed) -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let base = format!("http://{}", listener.local_addr()?);
    let router = Emulator::new(seed, &base).router();
    let handle = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "the Microsoft 365 emulator stopped");
        }
    });
    Ok((base, handle))
}

/// Escapes text for the emulator's HTML pages. Its own copy: the emulator stands for
/// Microsoft's service and shares no code with the product it is used to test.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
