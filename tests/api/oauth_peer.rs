//! Our OAuth code against an OAuth 2.0 / OpenID Connect server we did not write (npm
//! `oauth2-mock-server@8`, installed by the README's test command into `tests/oauth/`), so it
//! is not tuned to our own emulator: discovery, authorization code + PKCE S256, refresh,
//! client credentials, and validating a token by the issuer's JWKS.

use officebridge::domain::Secret;
use officebridge::identity::oauth::{self, AuthorizeRequest, ClientApp, Endpoints};
use officebridge::identity::sso::{Expected, SsoValidator};
use tokio::io::AsyncBufReadExt;

struct Peer {
    issuer: String,
    _child: tokio::process::Child,
}

/// Starts the server on a free port; `None` (skipped) outside CI when it is not installed.
async fn peer() -> Option<Peer> {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oauth/node_modules/oauth2-mock-server/dist/oauth2-mock-server.mjs");
    if !crate::helpers::tool_available(script.exists(), "oauth2-mock-server (npm ci --prefix tests/oauth)") {
        return None;
    }
    let mut child = tokio::process::Command::new("node")
        .arg(&script)
        .args(["-p", "0"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let issuer = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.strip_prefix("OAuth 2 issuer is ") {
                return url.trim().to_string();
            }
        }
        panic!("oauth2-mock-server exited before it listened");
    })
    .await
    .expect("oauth2-mock-server starts");
    Some(Peer { issuer, _child: child })
}

#[tokio::test]
async fn auth_code_pkce_refresh_client_credentials_and_jwks_against_a_third_party_server() {
    let Some(peer) = peer().await else { return };
    let http = oauth::http_client();
    let ep = Endpoints::discover(&http, &format!("{}/.well-known/openid-configuration", peer.issuer))
        .await
        .unwrap();
    assert_eq!(ep.issuer, peer.issuer);
    let app = ClientApp {
        client_id: "officebridge-test".into(),
        secret: None,
    };

    // Authorization code + PKCE, through the same URL builder /auth/signin uses.
    let pkce = oauth::pkce();
    let state = oauth::random_token();
    let nonce = oauth::random_token();
    let redirect = "http://localhost:8080/auth/callback";
    let scope = "openid offline_access";
    let url = oauth::authorize_url(
        &ep,
        &app,
        &AuthorizeRequest {
            redirect_uri: redirect,
            scope,
            state: &state,
            nonce: &nonce,
            challenge: &pkce.challenge,
            login_hint: None,
        },
    )
    .unwrap();
    let back = http.get(&url).send().await.unwrap();
    assert_eq!(back.status(), 302, "redirects are not followed");
    let location = url::Url::parse(back.headers()["location"].to_str().unwrap()).unwrap();
    assert!(location.as_str().starts_with(redirect));
    let q: std::collections::HashMap<_, _> = location.query_pairs().into_owned().collect();
    assert_eq!(q["state"], state);

    // A wrong verifier is refused: the server checked our S256 challenge.
    let wrong = oauth::redeem_code(&http, &ep, &app, &q["code"], &Secret::new(oauth::random_token()), redirect, scope).await;
    assert!(wrong.is_err(), "a wrong code_verifier must fail");
    // The mock forgets a code's challenge once tried, so a second authorization gives a fresh code.
    let back = http.get(&url).send().await.unwrap();
    let location = url::Url::parse(back.headers()["location"].to_str().unwrap()).unwrap();
    let code = location.query_pairs().find(|(k, _)| k == "code").unwrap().1.into_owned();
    let tokens = oauth::redeem_code(&http, &ep, &app, &code, &pkce.verifier, redirect, scope)
        .await
        .expect("the right verifier redeems the code");
    assert!(!tokens.access_token.expose_secret().is_empty());
    let id_token = tokens.id_token.clone().expect("an ID token");
    let claims = oauth::unverified_claims(id_token.expose_secret()).unwrap();
    assert_eq!(claims["nonce"], nonce.as_str(), "the nonce comes back in the ID token");

    // Refresh.
    let refreshed = oauth::refresh(&http, &ep, &app, tokens.refresh_token.as_ref().unwrap(), scope)
        .await
        .unwrap();
    assert!(refreshed.refresh_token.is_some() && !refreshed.access_token.expose_secret().is_empty());
    assert_ne!(
        refreshed.refresh_token.as_ref().unwrap().expose_secret(),
        tokens.refresh_token.as_ref().unwrap().expose_secret(),
        "a new refresh token"
    );

    // Client credentials.
    let confidential = ClientApp {
        client_id: "officebridge-daemon".into(),
        secret: Some(Secret::new("s3cret")),
    };
    let app_token = oauth::client_credentials(&http, &ep, &confidential, "https://graph.example/.default")
        .await
        .unwrap();
    assert!(app_token.expires_in.is_some_and(|s| s > 0));

    // The ID token validates by the issuer's JWKS (RS256, iss, aud); tampering breaks it.
    let validator = SsoValidator::new(http.clone());
    let expected = Expected {
        jwks_url: ep.jwks.clone(),
        issuer: ep.issuer.clone(),
        audiences: vec![app.client_id.clone()],
        scope: None,
    };
    validator
        .validate(id_token.expose_secret(), &expected)
        .await
        .expect("a genuine token validates");
    let wrong_aud = Expected {
        audiences: vec!["someone-else".into()],
        ..expected.clone()
    };
    assert!(validator.validate(id_token.expose_secret(), &wrong_aud).await.is_err());
    let wrong_iss = Expected {
        issuer: "http://localhost:1".into(),
        ..expected.clone()
    };
    assert!(validator.validate(id_token.expose_secret(), &wrong_iss).await.is_err());
    let mut parts: Vec<String> = id_token.expose_secret().split('.').map(String::from).collect();
    parts[2] = parts[2].chars().rev().collect();
    assert!(validator.validate(&parts.join("."), &expected).await.is_err());
    assert_eq!(validator.jwks_fetches(), 1, "the JWKS is cached");
}
