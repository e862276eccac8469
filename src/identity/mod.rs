//! Microsoft identity: the OAuth flows ([`oauth`]), the token store ([`tokens`]) and the
//! validation of the add-in's single sign-on tokens ([`sso`]).

pub mod oauth;
pub mod sso;
pub mod tokens;

/// A sign-in link: officebridge's `/auth/signin` with a token only officebridge can make.
/// The token is sealed by the keyring (AES-GCM: nobody can forge or alter one) and names the
/// operator, when it expires and a nonce that the first use spends, so a link is short-lived
/// and single-use. Links are issued only to callers with an API key (a `signin-required`
/// answer, `POST /api/v1/operators/{code}/signin`, the CLI): an anonymous caller can neither
/// start a sign-in for an operator nor learn whether one exists.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct SigninLink {
    #[schema(value_type = String)]
    pub operator: crate::domain::OperatorCode,
    /// Where the operator signs in, once, before `expires_at`.
    pub url: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// What a link's token carries once opened.
#[derive(Debug, Clone)]
pub struct LinkClaims {
    pub operator: crate::domain::OperatorCode,
    pub nonce: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

const LINK_AAD: &str = "signin-link/v1";

/// Issues a sign-in link for `operator`, good for `lifetime`.
pub fn signin_link(
    keyring: &crate::store::secrets::Keyring,
    public_url: &url::Url,
    operator: &crate::domain::OperatorCode,
    lifetime: std::time::Duration,
) -> SigninLink {
    let expires_at = chrono::Utc::now() + chrono::Duration::from_std(lifetime).unwrap_or(chrono::Duration::minutes(15));
    let payload = format!("{operator}\n{}\n{}", expires_at.timestamp(), oauth::random_token());
    let token = keyring.seal(&crate::domain::Secret::new(payload), LINK_AAD);
    let mut url = public_url.join("/auth/signin").expect("a path joins");
    url.query_pairs_mut().append_pair("link", &token);
    SigninLink {
        operator: operator.clone(),
        url: url.to_string(),
        expires_at,
    }
}

/// Opens a link's token: `None` when it was not made by this installation, is damaged or
/// has expired. Whether it was already used is the store's to say (its nonce).
pub fn open_signin_link(keyring: &crate::store::secrets::Keyring, token: &str) -> Option<LinkClaims> {
    let payload = keyring.open(token, LINK_AAD).ok()?;
    let mut parts = payload.expose_secret().splitn(3, '\n');
    let operator = crate::domain::OperatorCode::parse(parts.next()?).ok()?;
    let expires_at = chrono::DateTime::from_timestamp(parts.next()?.parse().ok()?, 0)?;
    let nonce = parts.next()?.to_string();
    (expires_at > chrono::Utc::now()).then_some(LinkClaims {
        operator,
        nonce,
        expires_at,
    })
}
