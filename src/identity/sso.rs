//! Validation of the tokens the Office add-in sends (single sign-on through nested app
//! authentication or `getAccessToken`): tokens issued for officebridge's own API, never
//! Graph tokens (entra-docs `docs/identity-platform/access-tokens.md`, "Validate tokens").
//! RS256 only; keys from the issuer's JWKS, cached and refetched on an unknown `kid` at
//! most once a minute per JWKS, so a flood of forged `kid`s cannot flood Microsoft.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Leeway for `exp` and `nbf` (clock skew between us and the identity platform).
const LEEWAY_SECS: u64 = 60;
/// The least time between two fetches of one JWKS.
const REFETCH_INTERVAL: Duration = Duration::from_secs(60);
/// A cached JWKS is refetched when older than this even if every `kid` is known, so a
/// revoked key stops being trusted.
const MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// What a token must be to be accepted.
#[derive(Debug, Clone)]
pub struct Expected {
    pub jwks_url: String,
    /// Exactly (`https://login.microsoftonline.com/{tid}/v2.0` for Entra).
    pub issuer: String,
    /// The client id and the Application ID URI.
    pub audiences: Vec<String>,
    /// A scope the `scp` claim must hold; `None` when not checked.
    pub scope: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SsoError {
    #[error("the token is not a JWT signed with RS256: {0}")]
    Malformed(String),
    #[error("the token's key '{0}' is not published by its issuer")]
    UnknownKey(String),
    #[error("the token is invalid: {0}")]
    Invalid(String),
    #[error("the token does not grant the scope '{0}'")]
    MissingScope(String),
    #[error("the issuer's signing keys could not be fetched: {0}")]
    Keys(String),
}

/// The claims we use.
#[derive(Debug, Clone, Deserialize)]
pub struct SsoClaims {
    #[serde(default)]
    pub tid: Option<String>,
    #[serde(default)]
    pub oid: Option<String>,
    #[serde(default)]
    pub preferred_username: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub scp: Option<String>,
}

struct KeySet {
    keys: HashMap<String, DecodingKey>,
    fetched: Instant,
}

pub struct SsoValidator {
    http: reqwest::Client,
    cache: Mutex<HashMap<String, KeySet>>,
    /// JWKS requests made, for tests and metrics.
    fetches: std::sync::atomic::AtomicU64,
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    #[serde(default)]
    kid: Option<String>,
    kty: String,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(rename = "use", default)]
    usage: Option<String>,
}

/// The `tid` claim, read before validation only to pick the tenant whose rules apply.
pub fn peek_tid(token: &str) -> Option<String> {
    super::oauth::unverified_claims(token)?.get("tid")?.as_str().map(String::from)
}

impl SsoValidator {
    pub fn new(http: reqwest::Client) -> Self {
        Self {
            http,
            cache: Mutex::default(),
            fetches: Default::default(),
        }
    }

    pub fn jwks_fetches(&self) -> u64 {
        self.fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn fetch(&self, url: &str) -> Result<HashMap<String, DecodingKey>, SsoError> {
        self.fetches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let resp = self.http.get(url).send().await.map_err(|e| SsoError::Keys(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(SsoError::Keys(format!("{url} answered {}", resp.status())));
        }
        let jwks: Jwks = resp.json().await.map_err(|e| SsoError::Keys(e.to_string()))?;
        Ok(jwks
            .keys
            .into_iter()
            .filter(|k| k.kty == "RSA" && k.usage.as_deref().is_none_or(|u| u == "sig"))
            .filter_map(|k| {
                let key = DecodingKey::from_rsa_components(k.n.as_deref()?, k.e.as_deref()?).ok()?;
                Some((k.kid?, key))
            })
            .collect())
    }

    /// The key for `kid`: cached, or after one refetch if the cache is old enough to refetch.
    async fn key(&self, url: &str, kid: &str) -> Result<DecodingKey, SsoError> {
        let (hit, may_fetch) = {
            let cache = self.cache.lock().expect("jwks cache lock");
            match cache.get(url) {
                Some(set) => {
                    let age = set.fetched.elapsed();
                    let hit = set.keys.get(kid).cloned().filter(|_| age < MAX_AGE);
                    (hit, age >= REFETCH_INTERVAL)
                }
                None => (None, true),
            }
        };
        if let Some(key) = hit {
            return Ok(key);
        }
        if !may_fetch {
            return Err(SsoError::UnknownKey(kid.to_string()));
        }
        let keys = self.fetch(url).await?;
        let key = keys.get(kid).cloned();
        self.cache.lock().expect("jwks cache lock").insert(
            url.to_string(),
            KeySet {
                keys,
                fetched: Instant::now(),
            },
        );
        key.ok_or_else(|| SsoError::UnknownKey(kid.to_string()))
    }

    pub async fn validate(&self, token: &str, expected: &Expected) -> Result<SsoClaims, SsoError> {
        // `decode_header` refuses `alg: none` (not an algorithm jsonwebtoken knows).
        let header = jsonwebtoken::decode_header(token).map_err(|e| SsoError::Malformed(e.to_string()))?;
        if header.alg != Algorithm::RS256 {
            return Err(SsoError::Malformed(format!("alg {:?} is not accepted", header.alg)));
        }
        let kid = header.kid.ok_or_else(|| SsoError::Malformed("no kid".into()))?;
        let key = self.key(&expected.jwks_url, &kid).await?;
        let mut v = Validation::new(Algorithm::RS256);
        v.leeway = LEEWAY_SECS;
        v.validate_nbf = true;
        v.set_issuer(&[&expected.issuer]);
        v.set_audience(&expected.audiences);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = jsonwebtoken::decode::<SsoClaims>(token, &key, &v).map_err(|e| SsoError::Invalid(e.to_string()))?;
        if let Some(scope) = &expected.scope
            && !data.claims.scp.as_deref().unwrap_or("").split(' ').any(|s| s == scope)
        {
            return Err(SsoError::MissingScope(scope.clone()));
        }
        Ok(data.claims)
    }
}
