//! The OAuth 2.0 / OpenID Connect client side of the Microsoft identity platform: endpoint
//! discovery, PKCE, and the token requests (authorization code, refresh, client credentials,
//! on-behalf-of, device code). MicrosoftDocs/entra-docs `docs/identity-platform/`:
//! v2-oauth2-auth-code-flow.md, v2-oauth2-client-creds-grant-flow.md,
//! v2-oauth2-on-behalf-of-flow.md, v2-oauth2-device-code.md, reference-error-codes.md.

use crate::domain::Secret;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use serde::{Deserialize, Serialize};
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

/// 32 random bytes, base64url: used for states and nonces.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A fresh PKCE pair, made by oauth2-rs (32 random bytes, S256).
pub fn pkce() -> Pkce {
    let (challenge, verifier) = oauth2::PkceCodeChallenge::new_random_sha256();
    Pkce {
        verifier: Secret::new(verifier.into_secret()),
        challenge: challenge.as_str().to_string(),
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

    /// Worth trying again later: no answer, or the platform said it is busy
    /// (`temporarily_unavailable`, `server_error`: reference-error-codes.md).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport(_) => true,
            Self::Refused { error, .. } => error == "temporarily_unavailable" || error == "server_error",
            Self::Malformed(_) => false,
        }
    }

    pub fn claims(&self) -> Option<&str> {
        match self {
            Self::Refused { claims, .. } => claims.as_deref(),
            _ => None,
        }
    }
}

/// What Entra's token endpoint answers when it refuses (reference-error-codes.md): the OAuth
/// `error` and `error_description` (with the AADSTS code), plus `error_codes` and the
/// `claims` challenge, which oauth2-rs's standard error type would drop.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EntraError {
    pub error: String,
    #[serde(default)]
    pub error_description: String,
    #[serde(default)]
    pub error_codes: Vec<u64>,
    #[serde(default)]
    pub claims: Option<String>,
}

impl std::fmt::Display for EntraError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error, self.error_description)
    }
}

impl oauth2::ErrorResponse for EntraError {}

/// A token type as the server names it (`Bearer`, in any case).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AnyTokenType(String);

impl oauth2::TokenType for AnyTokenType {}

/// A successful token answer as oauth2-rs parses it, with what Entra adds (the ID token) and
/// lifetimes sent as strings by some servers.
#[derive(Debug, Serialize, Deserialize)]
pub struct EntraTokens {
    access_token: oauth2::AccessToken,
    #[serde(default = "bearer")]
    token_type: AnyTokenType,
    #[serde(default, deserialize_with = "seconds")]
    expires_in: Option<u64>,
    #[serde(default)]
    refresh_token: Option<oauth2::RefreshToken>,
    #[serde(default, rename = "scope", deserialize_with = "scope_list")]
    scopes: Option<Vec<oauth2::Scope>>,
    #[serde(default)]
    id_token: Option<String>,
}

fn bearer() -> AnyTokenType {
    AnyTokenType("Bearer".into())
}

impl oauth2::TokenResponse for EntraTokens {
    type TokenType = AnyTokenType;

    fn access_token(&self) -> &oauth2::AccessToken {
        &self.access_token
    }

    fn token_type(&self) -> &AnyTokenType {
        &self.token_type
    }

    fn expires_in(&self) -> Option<Duration> {
        self.expires_in.map(Duration::from_secs)
    }

    fn refresh_token(&self) -> Option<&oauth2::RefreshToken> {
        self.refresh_token.as_ref()
    }

    fn scopes(&self) -> Option<&Vec<oauth2::Scope>> {
        self.scopes.as_ref()
    }
}

fn scope_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<oauth2::Scope>>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.map(|s| s.split_whitespace().map(|x| oauth2::Scope::new(x.to_string())).collect()))
}

impl From<EntraTokens> for TokenSet {
    fn from(t: EntraTokens) -> Self {
        Self {
            access_token: Secret::new(t.access_token.into_secret()),
            refresh_token: t.refresh_token.map(|r| Secret::new(r.into_secret())),
            id_token: t.id_token.map(Secret::new),
            expires_in: t.expires_in,
            scope: t.scopes.map(|s| s.iter().map(|x| x.as_str()).collect::<Vec<_>>().join(" ")),
        }
    }
}

/// Entra's `message` beside the standard device-authorization fields.
#[derive(Debug, Serialize, Deserialize)]
pub struct EntraDeviceFields {
    #[serde(default)]
    message: Option<String>,
}

impl oauth2::ExtraDeviceAuthorizationFields for EntraDeviceFields {}

/// oauth2-rs's client as Entra needs it: its error and token types, the client secret in
/// the request body (AuthType::RequestBody; Entra accepts Basic too, but documents the body).
type EntraClient = oauth2::Client<
    EntraError,
    EntraTokens,
    oauth2::basic::BasicTokenIntrospectionResponse,
    oauth2::StandardRevocableToken,
    oauth2::basic::BasicRevocationErrorResponse,
    oauth2::EndpointSet,
    oauth2::EndpointMaybeSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointSet,
>;

fn client(ep: &Endpoints, app: &ClientApp) -> Result<EntraClient, OAuthError> {
    let url = |what: &str, e: url::ParseError| OAuthError::Malformed(format!("the {what} endpoint is not a URL: {e}"));
    let device = ep
        .device
        .as_deref()
        .map(|d| oauth2::DeviceAuthorizationUrl::new(d.to_string()).map_err(|e| url("device authorization", e)))
        .transpose()?;
    let mut c = oauth2::Client::new(oauth2::ClientId::new(app.client_id.clone()))
        .set_auth_uri(oauth2::AuthUrl::new(ep.authorize.clone()).map_err(|e| url("authorization", e))?)
        .set_token_uri(oauth2::TokenUrl::new(ep.token.clone()).map_err(|e| url("token", e))?)
        .set_device_authorization_url_option(device)
        .set_auth_type(oauth2::AuthType::RequestBody);
    if let Some(secret) = &app.secret {
        c = c.set_client_secret(oauth2::ClientSecret::new(secret.expose_secret().to_string()));
    }
    Ok(c)
}

/// How long one call to the identity platform may take: a token answer is small and quick,
/// so a stalled one is a failure to report, not to wait for (the shared client allows
/// minutes, for upload fragments).
const TOKEN_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The shared client as oauth2-rs's HTTP client, with the token-call timeout. A named type
/// with a boxed future rather than a closure: a closure's borrowed future is not `Send` for
/// every lifetime, which axum's handlers need.
struct TokenHttp<'h>(&'h reqwest::Client);

impl<'c> oauth2::AsyncHttpClient<'c> for TokenHttp<'_> {
    type Error = reqwest::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<oauth2::HttpResponse, reqwest::Error>> + Send + 'c>>;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        Box::pin(send(self.0, request))
    }
}

/// Sends one of oauth2-rs's requests through the shared client, with the token-call timeout.
async fn send(http: &reqwest::Client, request: oauth2::HttpRequest) -> Result<oauth2::HttpResponse, reqwest::Error> {
    let (parts, body) = request.into_parts();
    let response = http
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .timeout(TOKEN_CALL_TIMEOUT)
        .send()
        .await?;
    let mut answer = oauth2::http::Response::builder().status(response.status());
    if let Some(headers) = answer.headers_mut() {
        *headers = response.headers().clone();
    }
    let body = response.bytes().await?.to_vec();
    Ok(answer.body(body).expect("status and headers came from a response"))
}

impl<E: oauth2::ErrorResponse + Into<EntraError> + 'static> From<oauth2::RequestTokenError<reqwest::Error, E>> for OAuthError {
    fn from(e: oauth2::RequestTokenError<reqwest::Error, E>) -> Self {
        match e {
            oauth2::RequestTokenError::ServerResponse(refusal) => {
                let r: EntraError = refusal.into();
                Self::Refused {
                    error: r.error,
                    description: r.error_description,
                    codes: r.error_codes,
                    claims: r.claims.filter(|c| !c.is_empty()),
                }
            }
            oauth2::RequestTokenError::Request(e) => Self::Transport(e),
            oauth2::RequestTokenError::Parse(e, _) => Self::Malformed(format!("the token answer does not parse: {e}")),
            oauth2::RequestTokenError::Other(m) => Self::Malformed(m),
        }
    }
}

/// The device flow's errors come as oauth2-rs's standard type (it reads
/// `authorization_pending` and `slow_down` itself); what is left of them is kept.
impl From<oauth2::DeviceCodeErrorResponse> for EntraError {
    fn from(e: oauth2::DeviceCodeErrorResponse) -> Self {
        Self {
            error: e.error().as_ref().to_string(),
            error_description: e.error_description().cloned().unwrap_or_default(),
            error_codes: Vec::new(),
            claims: None,
        }
    }
}

fn scopes(scope: &str) -> impl Iterator<Item = oauth2::Scope> + '_ {
    scope.split_whitespace().map(|s| oauth2::Scope::new(s.to_string()))
}

/// The URL the browser is sent to (v2-oauth2-auth-code-flow.md, "Request an authorization
/// code"), built by oauth2-rs; `nonce`, `response_mode`, `prompt` and `login_hint` are
/// OpenID Connect and Entra parameters it passes through.
pub fn authorize_url(ep: &Endpoints, app: &ClientApp, r: &AuthorizeRequest) -> Result<String, OAuthError> {
    let redirect = oauth2::RedirectUrl::new(r.redirect_uri.to_string())
        .map_err(|e| OAuthError::Malformed(format!("the redirect URI is not a URL: {e}")))?;
    let state = r.state.to_string();
    let client = client(ep, app)?;
    let mut request = client
        .authorize_url(move || oauth2::CsrfToken::new(state))
        .set_redirect_uri(std::borrow::Cow::Owned(redirect))
        .add_scopes(scopes(r.scope))
        .add_extra_param("response_mode", "query")
        .add_extra_param("nonce", r.nonce)
        .add_extra_param("code_challenge", r.challenge)
        .add_extra_param("code_challenge_method", "S256")
        .add_extra_param("prompt", "select_account");
    if let Some(hint) = r.login_hint {
        request = request.add_extra_param("login_hint", hint);
    }
    Ok(request.url().0.to_string())
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
    let redirect = oauth2::RedirectUrl::new(redirect_uri.to_string())
        .map_err(|e| OAuthError::Malformed(format!("the redirect URI is not a URL: {e}")))?;
    let call = TokenHttp(http);
    let tokens = client(ep, app)?
        .exchange_code(oauth2::AuthorizationCode::new(code.to_string()))
        .set_pkce_verifier(oauth2::PkceCodeVerifier::new(verifier.expose_secret().to_string()))
        .set_redirect_uri(std::borrow::Cow::Owned(redirect))
        .add_extra_param("scope", scope)
        .request_async(&call)
        .await?;
    Ok(tokens.into())
}

pub async fn refresh(
    http: &reqwest::Client,
    ep: &Endpoints,
    app: &ClientApp,
    refresh_token: &Secret,
    scope: &str,
) -> Result<TokenSet, OAuthError> {
    let token = oauth2::RefreshToken::new(refresh_token.expose_secret().to_string());
    let call = TokenHttp(http);
    let tokens = client(ep, app)?
        .exchange_refresh_token(&token)
        .add_scopes(scopes(scope))
        .request_async(&call)
        .await?;
    Ok(tokens.into())
}

/// Client credentials; `scope` is `{resource}/.default`.
pub async fn client_credentials(http: &reqwest::Client, ep: &Endpoints, app: &ClientApp, scope: &str) -> Result<TokenSet, OAuthError> {
    let call = TokenHttp(http);
    let tokens = client(ep, app)?
        .exchange_client_credentials()
        .add_scopes(scopes(scope))
        .request_async(&call)
        .await?;
    Ok(tokens.into())
}

/// Exchanges a token for our API (from the add-in) for a Graph token, on behalf of its user
/// (v2-oauth2-on-behalf-of-flow.md). oauth2-rs has no builder for the `jwt-bearer` grant, so
/// this one request is ours; it answers in the same token and error types.
pub async fn on_behalf_of(
    http: &reqwest::Client,
    ep: &Endpoints,
    app: &ClientApp,
    assertion: &str,
    scope: &str,
) -> Result<TokenSet, OAuthError> {
    let mut form = vec![
        ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer".to_string()),
        ("assertion", assertion.to_string()),
        ("requested_token_use", "on_behalf_of".to_string()),
        ("scope", scope.to_string()),
        ("client_id", app.client_id.clone()),
    ];
    if let Some(secret) = &app.secret {
        form.push(("client_secret", secret.expose_secret().to_string()));
    }
    let resp = http
        .post(&ep.token)
        .form(&form)
        .timeout(TOKEN_CALL_TIMEOUT)
        .send()
        .await
        .map_err(OAuthError::Transport)?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(OAuthError::Transport)?;
    if status.is_success() {
        let tokens: EntraTokens =
            serde_json::from_slice(&body).map_err(|e| OAuthError::Malformed(format!("the token answer does not parse: {e}")))?;
        return Ok(tokens.into());
    }
    let refusal: EntraError =
        serde_json::from_slice(&body).map_err(|_| OAuthError::Malformed(format!("the token endpoint answered {status}")))?;
    Err(oauth2::RequestTokenError::<reqwest::Error, EntraError>::ServerResponse(refusal).into())
}

/// A device-code grant in progress (v2-oauth2-device-code.md).
pub struct DeviceCode {
    pub user_code: String,
    pub verification_uri: String,
    pub expires_in: u64,
    pub message: Option<String>,
    grant: oauth2::DeviceAuthorizationResponse<EntraDeviceFields>,
}

pub async fn start_device_code(http: &reqwest::Client, ep: &Endpoints, app: &ClientApp, scope: &str) -> Result<DeviceCode, OAuthError> {
    let call = TokenHttp(http);
    let grant: oauth2::DeviceAuthorizationResponse<EntraDeviceFields> = client(ep, app)?
        .exchange_device_code()
        .map_err(|_| OAuthError::Malformed("this provider has no device authorization endpoint".into()))?
        .add_scopes(scopes(scope))
        .request_async(&call)
        .await?;
    Ok(DeviceCode {
        user_code: grant.user_code().secret().clone(),
        verification_uri: grant.verification_uri().to_string(),
        expires_in: grant.expires_in().as_secs(),
        message: grant.extra_fields().message.clone(),
        grant,
    })
}

/// Polls the token endpoint until the user finishes (or declines, or the code expires):
/// oauth2-rs waits the interval between polls and 5 s more after each `slow_down`.
pub async fn poll_device_code(
    http: &reqwest::Client,
    ep: &Endpoints,
    app: &ClientApp,
    device: &DeviceCode,
) -> Result<TokenSet, OAuthError> {
    let call = TokenHttp(http);
    let client = client(ep, app)?;
    let tokens = client
        .exchange_device_access_token(&device.grant)
        .request_async(&call, tokio::time::sleep, None)
        .await?;
    Ok(tokens.into())
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
    use sha2::{Digest, Sha256};

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

    /// Entra's refusal keeps what oauth2-rs's standard error drops: the AADSTS codes and the
    /// claims challenge (reference-error-codes.md, claims-challenge.md).
    #[test]
    fn refusals_keep_error_codes_and_claims() {
        let body = r#"{"error":"interaction_required","error_description":"AADSTS50076: MFA","error_codes":[50076],"claims":"{\"access_token\":{}}"}"#;
        let refusal: EntraError = serde_json::from_str(body).unwrap();
        let e: OAuthError = oauth2::RequestTokenError::<reqwest::Error, EntraError>::ServerResponse(refusal).into();
        assert!(e.needs_signin());
        assert_eq!(e.claims(), Some("{\"access_token\":{}}"));
        match e {
            OAuthError::Refused { codes, description, .. } => {
                assert_eq!(codes, [50076]);
                assert!(description.starts_with("AADSTS50076"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn entra_token_answers_carry_the_id_token_and_string_lifetimes() {
        let t: EntraTokens = serde_json::from_str(
            r#"{"access_token":"at","token_type":"Bearer","expires_in":"3599","scope":"openid User.Read","id_token":"x.y.z"}"#,
        )
        .unwrap();
        let set = TokenSet::from(t);
        assert_eq!(set.expires_in, Some(3599));
        assert_eq!(set.scope.as_deref(), Some("openid User.Read"));
        assert_eq!(set.id_token.unwrap().expose_secret(), "x.y.z");
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
