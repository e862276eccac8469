//! The OAuth 2.0 / OpenID Connect client side of the Microsoft identity platform: endpoint
//! discovery, PKCE, and the token requests (authorization code, refresh, client credentials,
//! on-behalf-of, device code). MicrosoftDocs/entra-docs `docs/identity-platform/`:
//! v2-oauth2-auth-code-flow.md, v2-oauth2-client-creds-grant-flow.md,
//! v2-oauth2-on-behalf-of-flow.md, v2-oauth2-device-code.md, reference-error-codes.md.

use crate::domain::Secret;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::time::Duration;

/// Where a tenant's identity platform answers.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub authorize: String,
    pub token: String,
    pub device: Option<String>,
    pub jwks: String,
    /// The `iss` of the tokens it issues for our API.
    pub issuer: String,
}

impl Endpoints {
    /// Microsoft's documented layout under an authority (`https://login.microsoftonline.com`,
    /// a national cloud, or the emulator): `{authority}/{tenant}/oauth2/v2.0/...`. The issuer is
    /// `{authority}/{tid}/v2.0` (access-tokens.md) — known without a network round trip.
    pub fn microsoft(authority: &str, tenant: &str) -> Self {
        let base = format!("{}/{tenant}", authority.trim_end_matches('/'));
        Self {
            authorize: format!("{base}/oauth2/v2.0/authorize"),
            token: format!("{base}/oauth2/v2.0/token"),
            device: Some(format!("{base}/oauth2/v2.0/devicecode")),
            jwks: format!("{base}/discovery/v2.0/keys"),
            issuer: format!("{base}/v2.0"),
        }
    }

    /// Reads an OpenID Connect discovery document (any standard provider).
    pub async fn discover(http: &reqwest::Client, url: &str) -> Result<Self, OAuthError> {
        #[derive(Deserialize)]
        struct Doc {
            issuer: String,
            authorization_endpoint: String,
            token_endpoint: String,
            jwks_uri: String,
            device_authorization_endpoint: Option<String>,
        }
        let resp = http.get(url).send().await.map_err(OAuthError::Transport)?;
        if !resp.status().is_success() {
            return Err(OAuthError::Malformed(format!("discovery answered {}", resp.status())));
        }
        let doc: Doc = resp
            .json()
            .await
            .map_err(|e| OAuthError::Malformed(format!("discovery document: {e}")))?;
        Ok(Self {
            authorize: doc.authorization_endpoint,
            token: doc.token_endpoint,
            device: doc.device_authorization_endpoint,
            jwks: doc.jwks_uri,
            issuer: doc.issuer,
        })
    }
}

/// The app registration we act as.
#[derive(Debug, Clone)]
pub struct ClientApp {
    pub client_id: String,
    /// Confidential clients only; public clients (desktop, localhost) have none.
    pub secret: Option<Secret>,
}

/// A PKCE pair (RFC 7636, S256).
pub struct Pkce {
    pub verifier: Secret,
    pub challenge: String,
}

/// 32 random bytes, base64url: used for verifiers, states and nonces.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn pkce() -> Pkce {
    let verifier = random_token();
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    Pkce {
        verifier: Secret::new(verifier),
        challenge,
    }
}

/// One authorization request (authorization code flow with PKCE S256).
pub struct AuthorizeRequest<'a> {
    pub redirect_uri: &'a str,
    pub scope: &'a str,
    pub state: &'a str,
    pub nonce: &'a str,
    pub challenge: &'a str,
    pub login_hint: Option<&'a str>,
}

/// The URL the browser is sent to (v2-oauth2-auth-code-flow.md, "Request an authorization code").
pub fn authorize_url(ep: &Endpoints, app: &ClientApp, r: &AuthorizeRequest) -> Result<String, url::ParseError> {
    let mut url = url::Url::parse(&ep.authorize)?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("client_id", &app.client_id)
            .append_pair("response_type", "code")
            .append_pair("redirect_uri", r.redirect_uri)
            .append_pair("response_mode", "query")
            .append_pair("scope", r.scope)
            .append_pair("state", r.state)
            .append_pair("nonce", r.nonce)
            .append_pair("code_challenge", r.challenge)
            .append_pair("code_challenge_method", "S256")
            .append_pair("prompt", "select_account");
        if let Some(hint) = r.login_hint {
            q.append_pair("login_hint", hint);
        }
    }
    Ok(url.to_string())
}

/// What a token endpoint answers on success.
#[derive(Deserialize)]
pub struct TokenSet {
    pub access_token: Secret,
    #[serde(default)]
    pub refresh_token: Option<Secret>,
    #[serde(default)]
    pub id_token: Option<Secret>,
    /// Seconds; some servers send it as a string.
    #[serde(default, deserialize_with = "seconds")]
    pub expires_in: Option<u64>,
    #[serde(default)]
    pub scope: Option<String>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSet")
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

fn seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        Num(u64),
        Text(String),
    }
    Ok(match Option::<N>::deserialize(d)? {
        Some(N::Num(n)) => Some(n),
        Some(N::Text(s)) => s.parse().ok(),
        None => None,
    })
}

/// An error answer of the token endpoint (`error`, `error_description` with the AADSTS code,
/// `error_codes`, `claims`), or a failure to reach it.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    #[error("the identity platform refused: {error}: {description}")]
    Refused {
        status: u16,
        error: String,
        description: String,
        codes: Vec<u64>,
        /// The claims challenge to pass back to the client (interaction_required, AADSTS50076).
        claims: Option<String>,
    },
    #[error("the identity platform could not be reached: {0}")]
    Transport(#[source] reqwest::Error),
    #[error("the identity platform answered something unexpected: {0}")]
    Malformed(String),
}

impl OAuthError {
    /// The stored grant is dead: the user must sign in again (v2-oauth2-auth-code-flow.md,
    /// "Refresh the access token"; AADSTS700082 = refresh token expired by inactivity,
    /// AADSTS50173/50133 = grant revoked by a password change).
    pub fn needs_signin(&self) -> bool {
        matches!(self, Self::Refused { error, .. } if error == "invalid_grant" || error == "interaction_required")
    }

    pub fn claims(&self) -> Option<&str> {
        match self {
            Self::Refused { claims, .. } => claims.as_deref(),
            _ => None,
        }
    }
}

/// Posts a form to a token endpoint. Redirects are never followed (a redirected token request
/// would carry the grant and secret to another host), see [`http_client`].
async fn token_request(http: &reqwest::Client, url: &str, app: &ClientApp, mut form: Vec<(&str, String)>) -> Result<TokenSet, OAuthError> {
    form.push(("client_id", app.client_id.clone()));
    if let Some(secret) = &app.secret {
        form.push(("client_secret", secret.expose_secret().to_string()));
    }
    post_form(http, url, &form).await
}

/// Posts a form and reads the answer: `T` on success, the OAuth error body otherwise.
async fn post_form<T: serde::de::DeserializeOwned>(http: &reqwest::Client, url: &str, form: &[(&str, String)]) -> Result<T, OAuthError> {
    let resp = http.post(url).form(form).send().await.map_err(OAuthError::Transport)?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(OAuthError::Transport)?;
    if status.is_success() {
        return serde_json::from_slice(&body).map_err(|e| OAuthError::Malformed(format!("{url} answered: {e}")));
    }
    #[derive(Deserialize)]
    struct Refusal {
        error: String,
        #[serde(default)]
        error_description: String,
        #[serde(default)]
        error_codes: Vec<u64>,
        #[serde(default)]
        claims: Option<String>,
    }
    match serde_json::from_slice::<Refusal>(&body) {
        Ok(r) => Err(OAuthError::Refused {
            status: status.as_u16(),
            error: r.error,
            description: r.error_description,
            codes: r.error_codes,
            claims: r.claims.filter(|c| !c.is_empty()),
        }),
        Err(_) => Err(OAuthError::Malformed(format!("{url} answered {status}"))),
    }
}

/// Redeems an authorization code (with its PKCE verifier).
pub async fn redeem_code(
    http: &reqwest::Client,
    ep: &Endpoints,
    app: &ClientApp,
    code: &str,
    verifier: &Secret,
    redirect_uri: &str,
    scope: &str,
) -> Result<TokenSet, OAuthError> {
    let form = vec![
        ("grant_type", "authorization_code".to_string()),
        ("code", code.to_string()),
        ("code_verifier", verifier.expose_secret().to_string()),
        ("redirect_uri", redirect_uri.to_string()),
        ("scope", scope.to_string()),
    ];
    token_request(http, &ep.token, app, form).await
}

pub async fn refresh(
    http: &reqwest::Client,
    ep: &Endpoints,
    app: &ClientApp,
    refresh_token: &Secret,
    scope: &str,
) -> Result<TokenSet, OAuthError> {
    let form = vec![
        ("grant_type", "refresh_token".to_string()),
        ("refresh_token", refresh_token.expose_secret().to_string()),
        ("scope", scope.to_string()),
    ];
    token_request(http, &ep.token, app, form).await
}

/// Client credentials; `scope` is `{resource}/.default`.
pub async fn client_credentials(http: &reqwest::Client, ep: &Endpoints, app: &ClientApp, scope: &str) -> Result<TokenSet, OAuthError> {
    let form = vec![("grant_type", "client_credentials".to_string()), ("scope", scope.to_string())];
    token_request(http, &ep.token, app, form).await
}

/// Exchanges a token for our API (from the add-in) for a Graph token, on behalf of its user.
pub async fn on_behalf_of(
    http: &reqwest::Client,
    ep: &Endpoints,
    app: &ClientApp,
    assertion: &str,
    scope: &str,
) -> Result<TokenSet, OAuthError> {
    let form = vec![
        ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer".to_string()),
        ("assertion", assertion.to_string()),
        ("requested_token_use", "on_behalf_of".to_string()),
        ("scope", scope.to_string()),
    ];
    token_request(http, &ep.token, app, form).await
}

/// A device-code grant in progress (v2-oauth2-device-code.md).
#[derive(Deserialize)]
pub struct DeviceCode {
    pub device_code: Secret,
    pub user_code: String,
    pub verification_uri: String,
    #[serde(deserialize_with = "required_seconds")]
    pub expires_in: u64,
    #[serde(default = "five", deserialize_with = "required_seconds")]
    pub interval: u64,
    #[serde(default)]
    pub message: Option<String>,
}

fn five() -> u64 {
    5
}

fn required_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    seconds(d)?.ok_or_else(|| serde::de::Error::custom("expected a number of seconds"))
}

pub async fn start_device_code(http: &reqwest::Client, ep: &Endpoints, app: &ClientApp, scope: &str) -> Result<DeviceCode, OAuthError> {
    let url = ep
        .device
        .as_deref()
        .ok_or_else(|| OAuthError::Malformed("this provider has no device authorization endpoint".into()))?;
    post_form(http, url, &[("client_id", app.client_id.clone()), ("scope", scope.to_string())]).await
}

/// Polls the token endpoint until the user finishes (or declines, or the code expires),
/// waiting `interval` between polls and 5 s more after each `slow_down`.
pub async fn poll_device_code(
    http: &reqwest::Client,
    ep: &Endpoints,
    app: &ClientApp,
    device: &DeviceCode,
) -> Result<TokenSet, OAuthError> {
    let mut interval = Duration::from_secs(device.interval.max(1));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(device.expires_in);
    loop {
        tokio::time::sleep(interval).await;
        let form = vec![
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code".to_string()),
            ("device_code", device.device_code.expose_secret().to_string()),
        ];
        match token_request(http, &ep.token, app, form).await {
            Err(OAuthError::Refused { error, .. }) if error == "authorization_pending" && tokio::time::Instant::now() < deadline => {}
            Err(OAuthError::Refused { error, .. }) if error == "slow_down" => interval += Duration::from_secs(5),
            other => return other,
        }
    }
}

/// The claims of a JWT, read without checking its signature. Only for ID tokens received
/// straight from the token endpoint over TLS, where OpenID Connect Core §3.1.3.7 allows the
/// TLS server check in place of the signature check.
pub fn unverified_claims(jwt: &str) -> Option<serde_json::Value> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The shared outbound client: timeouts, a `User-Agent`, and no redirects (oauth2-rs: a
/// followed redirect on a token request is an SSRF and a credential leak).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(concat!("officebridge/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(300))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client with these settings builds")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7636 appendix B: the S256 challenge of a known verifier.
    #[test]
    fn pkce_challenge_is_s256_of_the_verifier() {
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(b"dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"));
        assert_eq!(challenge, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
        let p = pkce();
        assert_eq!(
            p.challenge,
            URL_SAFE_NO_PAD.encode(Sha256::digest(p.verifier.expose_secret().as_bytes()))
        );
        assert!((43..=128).contains(&p.verifier.expose_secret().len()));
        assert_eq!(format!("{:?}", p.verifier), "[redacted]");
    }

    #[test]
    fn token_sets_parse_string_lifetimes_and_redact() {
        let t: TokenSet = serde_json::from_str(r#"{"access_token":"at-secret","expires_in":"3599","refresh_token":"rt-secret"}"#).unwrap();
        assert_eq!(t.expires_in, Some(3599));
        let shown = format!("{t:?}");
        assert!(!shown.contains("secret"), "{shown}");
    }

    #[test]
    fn microsoft_layout() {
        let ep = Endpoints::microsoft("https://login.microsoftonline.com/", "72f988bf-86f1-41af-91ab-2d7cd011db47");
        assert_eq!(
            ep.token,
            "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/token"
        );
        assert_eq!(
            ep.issuer,
            "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0"
        );
    }
}
