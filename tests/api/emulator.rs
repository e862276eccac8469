//! The Microsoft 365 emulator against Microsoft's documentation. Each test names the page of
//! MicrosoftDocs/entra-docs or microsoftgraph/microsoft-graph-docs-contrib it checks.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use officebridge::emulator::seed::{DEMO_CLIENT_ID, DEMO_DOMAIN, DEMO_TENANT_ID, DEMO_USER, Seed};
use serde_json::{Value, json};

struct Emu {
    base: String,
    http: reqwest::Client,
}

async fn emulator() -> Emu {
    let (base, _) = officebridge::emulator::spawn("127.0.0.1:0".parse().unwrap(), Seed::demo())
        .await
        .unwrap();
    // Redirects are the protocol here: the tests read them instead of following them.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    Emu { base, http }
}

impl Emu {
    async fn token(&self, tenant: &str, form: &[(&str, &str)]) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}/{tenant}/oauth2/v2.0/token", self.base))
            .form(form)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap())
    }

    async fn app_token(&self) -> String {
        let (status, body) = self
            .token(
                DEMO_TENANT_ID,
                &[
                    ("client_id", DEMO_CLIENT_ID),
                    ("client_secret", "demo-client-secret"),
                    ("scope", "https://graph.microsoft.com/.default"),
                    ("grant_type", "client_credentials"),
                ],
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["access_token"].as_str().unwrap().to_string()
    }

    /// Runs /authorize as a browser would: the sign-in page, the account picked (and MFA
    /// approved when asked), and the redirect's query.
    async fn sign_in(&self, user: &str, extra: &[(&str, &str)]) -> url::Url {
        let mut query = vec![
            ("client_id", DEMO_CLIENT_ID),
            ("response_type", "code"),
            ("redirect_uri", "https://localhost"),
            ("state", "st-123"),
        ];
        query.extend_from_slice(extra);
        let authorize = url::Url::parse_with_params(&format!("{}/{DEMO_TENANT_ID}/oauth2/v2.0/authorize", self.base), &query).unwrap();
        url::Url::parse(&crate::helpers::pick_account(&self.http, authorize.as_str(), user).await).unwrap()
    }
}

fn query(url: &url::Url, key: &str) -> Option<String> {
    url.query_pairs().find(|(k, _)| k == key).map(|(_, v)| v.into_owned())
}

fn claims(jwt: &str) -> (Value, Value) {
    let mut parts = jwt.split('.');
    let header = serde_json::from_slice(&B64.decode(parts.next().unwrap()).unwrap()).unwrap();
    let claims = serde_json::from_slice(&B64.decode(parts.next().unwrap()).unwrap()).unwrap();
    (header, claims)
}

/// The identity platform's error body (v2-oauth2-client-creds-grant-flow.md, "Error response").
fn assert_aad_error(body: &Value, error: &str, code: u64) {
    assert_eq!(body["error"], error, "{body}");
    assert_eq!(body["error_codes"], json!([code]), "{body}");
    let description = body["error_description"].as_str().unwrap();
    assert!(description.starts_with(&format!("AADSTS{code}:")), "{description}");
    assert!(description.contains("Trace ID:") && description.contains("Correlation ID:") && description.contains("Timestamp:"));
    for field in ["timestamp", "trace_id", "correlation_id"] {
        assert!(body[field].is_string(), "{field} missing: {body}");
    }
}

/// entra-docs: docs/identity-platform/v2-protocols-oidc.md ("Find your app's OpenID configuration document URI").
#[tokio::test]
async fn discovery_documents_per_tenant_and_for_common() {
    let emu = emulator().await;
    for tenant in [DEMO_TENANT_ID, DEMO_DOMAIN] {
        let doc: Value = emu
            .http
            .get(format!("{}/{tenant}/v2.0/.well-known/openid-configuration", emu.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(doc["issuer"], format!("{}/{DEMO_TENANT_ID}/v2.0", emu.base));
        assert_eq!(doc["token_endpoint"], format!("{}/{DEMO_TENANT_ID}/oauth2/v2.0/token", emu.base));
        assert_eq!(doc["jwks_uri"], format!("{}/{DEMO_TENANT_ID}/discovery/v2.0/keys", emu.base));
        assert_eq!(doc["id_token_signing_alg_values_supported"], json!(["RS256"]));
    }
    let common: Value = emu
        .http
        .get(format!("{}/common/v2.0/.well-known/openid-configuration", emu.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        common["issuer"],
        format!("{}/{{tenantid}}/v2.0", emu.base),
        "the multi-tenant issuer is a template"
    );
    let unknown = emu
        .http
        .get(format!("{}/nope.example/v2.0/.well-known/openid-configuration", emu.base))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 400);
    assert_aad_error(&unknown.json().await.unwrap(), "invalid_tenant", 90002);
}

/// entra-docs: docs/identity-platform/v2-oauth2-client-creds-grant-flow.md ("Get a token", "Error response");
/// docs/identity-platform/access-tokens.md (Graph tokens carry a header nonce); the JWKS is
/// checked with the RSA key rebuilt from its published `n` and `e`, not with the emulator's code.
#[tokio::test]
async fn client_credentials_tokens_and_errors() {
    let emu = emulator().await;
    let (status, body) = emu
        .token(
            DEMO_DOMAIN,
            &[
                ("client_id", DEMO_CLIENT_ID),
                ("client_secret", "demo-client-secret"),
                ("scope", "https://graph.microsoft.com/.default"),
                ("grant_type", "client_credentials"),
            ],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        (body["token_type"].as_str(), body["expires_in"].as_i64()),
        (Some("Bearer"), Some(3599))
    );
    let token = body["access_token"].as_str().unwrap();
    let (header, c) = claims(token);
    assert_eq!(header["alg"], "RS256");
    assert!(header["nonce"].is_string());
    assert_eq!(c["aud"], "https://graph.microsoft.com");
    assert_eq!(c["iss"], format!("https://sts.windows.net/{DEMO_TENANT_ID}/"));
    assert_eq!(
        (c["tid"].as_str(), c["idtyp"].as_str(), c["appid"].as_str()),
        (Some(DEMO_TENANT_ID), Some("app"), Some(DEMO_CLIENT_ID))
    );
    assert!(c["roles"].as_array().unwrap().contains(&json!("Mail.Send")));

    // The signature verifies with the key as published.
    let jwks: Value = emu
        .http
        .get(format!("{}/{DEMO_TENANT_ID}/discovery/v2.0/keys", emu.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .expect("the signing key is published");
    assert_eq!((jwk["kty"].as_str(), jwk["use"].as_str()), (Some("RSA"), Some("sig")));
    let n = rsa::BigUint::from_bytes_be(&B64.decode(jwk["n"].as_str().unwrap()).unwrap());
    let e = rsa::BigUint::from_bytes_be(&B64.decode(jwk["e"].as_str().unwrap()).unwrap());
    let key = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(rsa::RsaPublicKey::new(n, e).unwrap());
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let signature = rsa::pkcs1v15::Signature::try_from(B64.decode(signature).unwrap().as_slice()).unwrap();
    rsa::signature::Verifier::verify(&key, signed.as_bytes(), &signature).expect("RS256 signature verifies with the JWKS key");

    let cc = |secret: Option<&'static str>, scope: &'static str| {
        let mut form = vec![
            ("client_id", DEMO_CLIENT_ID),
            ("scope", scope),
            ("grant_type", "client_credentials"),
        ];
        if let Some(s) = secret {
            form.push(("client_secret", s));
        }
        form
    };
    let (status, body) = emu
        .token(DEMO_TENANT_ID, &cc(Some("wrong"), "https://graph.microsoft.com/.default"))
        .await;
    assert_eq!(status, 401);
    assert_aad_error(&body, "invalid_client", 7000215);
    let (status, body) = emu.token(DEMO_TENANT_ID, &cc(None, "https://graph.microsoft.com/.default")).await;
    assert_eq!(status, 401);
    assert_aad_error(&body, "invalid_client", 7000218);
    let (status, body) = emu
        .token(
            DEMO_TENANT_ID,
            &cc(Some("demo-client-secret"), "https://graph.microsoft.com/Mail.Send"),
        )
        .await;
    assert_eq!(status, 400);
    assert_aad_error(&body, "invalid_scope", 70011);
    let (status, body) = emu
        .token(
            DEMO_TENANT_ID,
            &[
                ("client_id", "00000000-0000-0000-0000-000000000001"),
                ("grant_type", "client_credentials"),
            ],
        )
        .await;
    assert_eq!(status, 400);
    assert_aad_error(&body, "unauthorized_client", 700016);
    let (_, body) = emu
        .token(
            DEMO_TENANT_ID,
            &[("client_id", DEMO_CLIENT_ID), ("client_secret", "demo-client-secret")],
        )
        .await;
    assert_aad_error(&body, "invalid_request", 900144);
    let (_, body) = emu
        .token(
            DEMO_TENANT_ID,
            &[
                ("client_id", DEMO_CLIENT_ID),
                ("client_secret", "demo-client-secret"),
                ("grant_type", "password"),
            ],
        )
        .await;
    assert_aad_error(&body, "unsupported_grant_type", 70003);
    // HTTP Basic client authentication is accepted too.
    let resp = emu
        .http
        .post(format!("{}/{DEMO_TENANT_ID}/oauth2/v2.0/token", emu.base))
        .basic_auth(DEMO_CLIENT_ID, Some("demo-client-secret"))
        .form(&[
            ("scope", "https://graph.microsoft.com/.default"),
            ("grant_type", "client_credentials"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store, no-cache");
}

/// entra-docs: docs/identity-platform/v2-oauth2-auth-code-flow.md ("Request an authorization
/// code", "Redeem a code for an access token", "Refresh the access token"), RFC 7636 (PKCE).
#[tokio::test]
async fn authorization_code_with_pkce_then_refresh() {
    let emu = emulator().await;
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let challenge = B64.encode(<sha2::Sha256 as sha2::Digest>::digest(verifier.as_bytes()));
    let pkce = [
        ("scope", "openid profile offline_access User.Read Files.ReadWrite"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
        ("nonce", "n-0S6_WzA2Mj"),
    ];
    let back = emu.sign_in(DEMO_USER, &pkce).await;
    assert_eq!(back.as_str().split('?').next(), Some("https://localhost/"));
    assert_eq!(query(&back, "state").as_deref(), Some("st-123"));
    let code = query(&back, "code").unwrap();
    let emu = &emu;
    let redeem = |code: String, verifier: &'static str, redirect: &'static str| async move {
        emu.token(
            DEMO_TENANT_ID,
            &[
                ("client_id", DEMO_CLIENT_ID),
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", redirect),
                ("code_verifier", verifier),
            ],
        )
        .await
    };
    let (status, tokens) = redeem(code.clone(), verifier, "https://localhost").await;
    assert_eq!(status, 200, "{tokens}");
    let (_, access) = claims(tokens["access_token"].as_str().unwrap());
    assert_eq!((access["idtyp"].as_str(), access["upn"].as_str()), (Some("user"), Some(DEMO_USER)));
    assert!(access["scp"].as_str().unwrap().split(' ').any(|s| s == "Files.ReadWrite"));
    let (_, id) = claims(tokens["id_token"].as_str().unwrap());
    assert_eq!(id["aud"], DEMO_CLIENT_ID);
    assert_eq!(id["nonce"], "n-0S6_WzA2Mj");
    assert_eq!(id["iss"], format!("{}/{DEMO_TENANT_ID}/v2.0", emu.base));
    assert_eq!(id["ver"], "2.0");

    // A code is single use.
    let (status, body) = redeem(code, verifier, "https://localhost").await;
    assert_eq!(status, 400);
    assert_aad_error(&body, "invalid_grant", 54005);
    // PKCE and the redirect URI are checked.
    let code = query(&emu.sign_in(DEMO_USER, &pkce).await, "code").unwrap();
    assert_aad_error(
        &redeem(code, "not-the-verifier-not-the-verifier-not-the-ver", "https://localhost")
            .await
            .1,
        "invalid_grant",
        501481,
    );
    let code = query(&emu.sign_in(DEMO_USER, &pkce).await, "code").unwrap();
    assert_aad_error(&redeem(code, verifier, "http://localhost").await.1, "invalid_grant", 50148);

    // Refreshing answers a new refresh token every time; revoked sessions answer invalid_grant.
    let refresh = tokens["refresh_token"].as_str().unwrap().to_string();
    let (status, renewed) = emu
        .token(
            DEMO_TENANT_ID,
            &[
                ("client_id", DEMO_CLIENT_ID),
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh),
            ],
        )
        .await;
    assert_eq!(status, 200, "{renewed}");
    assert_ne!(renewed["refresh_token"], json!(refresh));
    assert!(renewed["access_token"].is_string());
    let (_, wider) = emu
        .token(
            DEMO_TENANT_ID,
            &[
                ("client_id", DEMO_CLIENT_ID),
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh),
                ("scope", "Mail.Send"),
            ],
        )
        .await;
    assert_aad_error(&wider, "invalid_grant", 65001);
    emu.http
        .post(format!("{}/_emulator/refresh-tokens/revoke", emu.base))
        .send()
        .await
        .unwrap();
    let (status, body) = emu
        .token(
            DEMO_TENANT_ID,
            &[
                ("client_id", DEMO_CLIENT_ID),
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh),
            ],
        )
        .await;
    assert_eq!(status, 400);
    assert_aad_error(&body, "invalid_grant", 50173);
}

/// entra-docs: docs/identity-platform/v2-oauth2-auth-code-flow.md ("Error response"),
/// reference-error-codes.md (AADSTS50011, AADSTS65001, AADSTS50058); MFA as a second step.
#[tokio::test]
async fn authorize_errors_and_mfa() {
    let emu = emulator().await;
    let authorize = |params: Vec<(&'static str, &'static str)>| {
        emu.http
            .get(format!("{}/{DEMO_TENANT_ID}/oauth2/v2.0/authorize", emu.base))
            .query(&params)
            .send()
    };
    // An unregistered redirect URI is shown an error page, never redirected to.
    let resp = authorize(vec![
        ("client_id", DEMO_CLIENT_ID),
        ("response_type", "code"),
        ("redirect_uri", "https://evil.example/cb"),
        ("scope", "User.Read"),
    ])
    .await
    .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.headers().get("location").is_none());
    assert!(resp.text().await.unwrap().contains("AADSTS50011"));
    let resp = authorize(vec![
        ("client_id", "00000000-0000-0000-0000-000000000009"),
        ("response_type", "code"),
        ("redirect_uri", "https://localhost"),
        ("scope", "User.Read"),
    ])
    .await
    .unwrap();
    assert!(resp.text().await.unwrap().contains("AADSTS700016"));
    // Known redirect: errors go back to the app, with the state.
    let resp = authorize(vec![
        ("client_id", DEMO_CLIENT_ID),
        ("response_type", "code"),
        ("redirect_uri", "https://localhost"),
        ("scope", "Sites.FullControl.All"),
        ("state", "s1"),
    ])
    .await
    .unwrap();
    assert_eq!(resp.status(), 302);
    let back = url::Url::parse(resp.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(
        (query(&back, "error").as_deref(), query(&back, "state").as_deref()),
        (Some("consent_required"), Some("s1"))
    );
    assert!(query(&back, "error_description").unwrap().starts_with("AADSTS65001"));
    let resp = authorize(vec![
        ("client_id", DEMO_CLIENT_ID),
        ("response_type", "code"),
        ("redirect_uri", "https://localhost"),
        ("scope", "User.Read"),
        ("prompt", "none"),
    ])
    .await
    .unwrap();
    let back = url::Url::parse(resp.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(query(&back, "error").as_deref(), Some("login_required"));
    // A loopback redirect may use any port (native apps pick a free one).
    let resp = authorize(vec![
        ("client_id", DEMO_CLIENT_ID),
        ("response_type", "code"),
        ("redirect_uri", "http://localhost:53117"),
        ("scope", "User.Read"),
    ])
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);

    // A user who needs MFA gets a second step before the code.
    let back = emu.sign_in("mfa.user@demo.onmicrosoft.com", &[("scope", "User.Read")]).await;
    assert!(query(&back, "code").is_some());
}

/// microsoft-graph-docs-contrib: concepts/errors.md (error body, request-id),
/// api-reference/v1.0/api/user-get.md (GET /me); entra-docs signing-key-rollover.md.
#[tokio::test]
async fn graph_me_checks_the_token() {
    let emu = emulator().await;
    let me = |token: Option<String>| {
        let mut req = emu.http.get(format!("{}/v1.0/me", emu.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    let resp = me(None).await.unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().contains_key("request-id"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "InvalidAuthenticationToken");
    assert!(body["error"]["innerError"]["request-id"].is_string() && body["error"]["innerError"]["date"].is_string());

    let user_token = emu.user_token("User.Read").await;
    let profile: Value = me(Some(user_token.clone())).await.unwrap().json().await.unwrap();
    assert_eq!(profile["userPrincipalName"], DEMO_USER);
    assert_eq!(
        profile["@odata.context"],
        "https://graph.microsoft.com/v1.0/$metadata#users/$entity"
    );

    let app = me(Some(emu.app_token().await)).await.unwrap();
    assert_eq!(app.status(), 400, "/me needs a delegated token");
    let mut tampered = user_token.clone();
    tampered.replace_range(tampered.len() - 6.., "AAAAAA");
    assert_eq!(me(Some(tampered)).await.unwrap().status(), 401);

    // After one rotation the old key still verifies; after two it is gone.
    emu.http.post(format!("{}/_emulator/keys/rotate", emu.base)).send().await.unwrap();
    assert_eq!(me(Some(user_token.clone())).await.unwrap().status(), 200);
    emu.http.post(format!("{}/_emulator/keys/rotate", emu.base)).send().await.unwrap();
    assert_eq!(me(Some(user_token)).await.unwrap().status(), 401);
}

impl Emu {
    /// A delegated Graph token for the demo user with `scope`.
    async fn user_token(&self, scope: &str) -> String {
        let back = self.sign_in(DEMO_USER, &[("scope", scope)]).await;
        let (status, tokens) = self
            .token(
                DEMO_TENANT_ID,
                &[
                    ("client_id", DEMO_CLIENT_ID),
                    ("grant_type", "authorization_code"),
                    ("code", &query(&back, "code").unwrap()),
                    ("redirect_uri", "https://localhost"),
                ],
            )
            .await;
        assert_eq!(status, 200, "{tokens}");
        tokens["access_token"].as_str().unwrap().to_string()
    }

    /// `GET {base}{path}` with a bearer token.
    async fn get(&self, token: &str, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    async fn put_content(&self, token: &str, path: &str, bytes: Vec<u8>) -> reqwest::Response {
        self.put_content_with(token, path, bytes, None).await
    }

    /// A simple upload with `@microsoft.graph.conflictBehavior` when `conflict` is given.
    async fn put_content_with(&self, token: &str, path: &str, bytes: Vec<u8>, conflict: Option<&str>) -> reqwest::Response {
        let mut req = self
            .http
            .put(format!("{}/v1.0/me/drive/root:/{path}:/content", self.base))
            .bearer_auth(token)
            .body(bytes);
        if let Some(c) = conflict {
            req = req.query(&[("@microsoft.graph.conflictBehavior", c)]);
        }
        req.send().await.unwrap()
    }
}

/// microsoft-graph-docs-contrib: api-reference/v1.0/api/driveitem-createlink.md — 201 with a
/// permission for a new link, 200 with the same one when the app asks again, roles by type,
/// `embed` refused outside OneDrive personal, Files.ReadWrite needed.
#[tokio::test]
async fn onedrive_create_link() {
    let emu = emulator().await;
    let token = emu.user_token("Files.ReadWrite").await;
    let item: Value = emu.put_content(&token, "Shared.xlsx", b"PK".to_vec()).await.json().await.unwrap();
    let id = item["id"].as_str().unwrap();
    let link = |body: Value, token: String| {
        let req = emu
            .http
            .post(format!("{}/v1.0/me/drive/items/{id}/createLink", emu.base))
            .bearer_auth(token)
            .json(&body);
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, first) = link(json!({"type": "view", "scope": "organization"}), token.clone()).await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["roles"], json!(["read"]));
    assert_eq!(first["link"]["type"], "view");
    assert_eq!(first["link"]["scope"], "organization");
    assert!(first["link"]["webUrl"].as_str().unwrap().starts_with("http"));
    assert_eq!(first["link"]["application"]["id"], DEMO_CLIENT_ID);
    let (status, again) = link(json!({"type": "view", "scope": "organization"}), token.clone()).await;
    assert_eq!((status, &again["id"]), (200, &first["id"]), "an existing link is returned");
    let (status, edit) = link(json!({"type": "edit"}), token.clone()).await;
    assert_eq!(
        (status, &edit["roles"], &edit["link"]["scope"]),
        (201, &json!(["write"]), &json!("organization"))
    );
    for bad in [json!({"type": "embed"}), json!({}), json!({"type": "view", "scope": "world"})] {
        let (status, body) = link(bad, token.clone()).await;
        assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalidRequest")), "{body}");
    }
    let missing = emu
        .http
        .post(format!("{}/v1.0/me/drive/items/nope/createLink", emu.base))
        .bearer_auth(&token)
        .json(&json!({"type": "view"}))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let read_only = emu.user_token("User.Read").await;
    let (status, body) = link(json!({"type": "view"}), read_only).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("accessDenied")));
}

/// microsoft-graph-docs-contrib: api-reference/v1.0/api/driveitem-put-content.md (simple upload,
/// `replace` by default, conflict behaviour), driveitem-get.md, resources/driveitem.md.
#[tokio::test]
async fn onedrive_simple_upload_and_items() {
    let emu = emulator().await;
    let token = emu.user_token("Files.ReadWrite").await;
    let resp = emu
        .put_content(&token, "officebridge/exports/Orders.xlsx", b"PK first".to_vec())
        .await;
    assert_eq!(resp.status(), 201);
    let item: Value = resp.json().await.unwrap();
    assert_eq!((item["name"].as_str(), item["size"].as_u64()), (Some("Orders.xlsx"), Some(8)));
    assert_eq!(
        item["file"]["mimeType"],
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    );
    assert_eq!(item["parentReference"]["path"], "/drive/root:/officebridge/exports");
    assert!(item["webUrl"].as_str().unwrap().contains("Doc.aspx") && item["webUrl"].as_str().unwrap().contains("Orders.xlsx"));
    let id = item["id"].as_str().unwrap().to_string();

    // PUT replaces by default; rename and fail are asked for by query.
    let replaced = emu
        .put_content(&token, "officebridge/exports/Orders.xlsx", b"PK second!".to_vec())
        .await;
    assert_eq!(replaced.status(), 200);
    assert_eq!(replaced.json::<Value>().await.unwrap()["id"], id.as_str());
    let unsupported = emu
        .http
        .put(format!("{}/v1.0/me/drive/root:/Orders.xlsx:/thumbnails", emu.base))
        .bearer_auth(&token)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(unsupported.status(), 400);
    let renamed = emu
        .put_content_with(&token, "officebridge/exports/Orders.xlsx", b"PK third".to_vec(), Some("rename"))
        .await;
    assert_eq!(renamed.status(), 201);
    assert_eq!(renamed.json::<Value>().await.unwrap()["name"], "Orders 1.xlsx");
    let failed = emu
        .put_content_with(&token, "officebridge/exports/Orders.xlsx", b"x".to_vec(), Some("fail"))
        .await;
    assert_eq!(failed.status(), 409);
    assert_eq!(failed.json::<Value>().await.unwrap()["error"]["code"], "nameAlreadyExists");

    let got: Value = emu.get(&token, &format!("/v1.0/me/drive/items/{id}")).await.json().await.unwrap();
    assert_eq!(got["size"], 10);
    let content = emu.get(&token, &format!("/v1.0/me/drive/items/{id}/content")).await;
    assert_eq!(content.bytes().await.unwrap().as_ref(), b"PK second!");
    let missing = emu.get(&token, "/v1.0/me/drive/items/nope").await;
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.json::<Value>().await.unwrap()["error"]["code"], "itemNotFound");

    // Permissions: User.Read alone cannot write; no token is a 401; the app has no Files role.
    let weak = emu.user_token("User.Read").await;
    assert_eq!(emu.put_content(&weak, "a.xlsx", vec![1]).await.status(), 403);
    assert_eq!(
        emu.http
            .put(format!("{}/v1.0/me/drive/root:/a.xlsx:/content", emu.base))
            .body("x")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let app = emu.app_token().await;
    let resp = emu
        .http
        .put(format!("{}/v1.0/users/{DEMO_USER}/drive/root:/a.xlsx:/content", emu.base))
        .bearer_auth(&app)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
}

/// microsoft-graph-docs-contrib: api-reference/v1.0/api/driveitem-createuploadsession.md
/// (fragments, nextExpectedRanges, 416, Authorization on the upload URL, status, cancel, deferCommit).
#[tokio::test]
async fn onedrive_upload_sessions_follow_the_fragment_rules() {
    let emu = emulator().await;
    let token = emu.user_token("Files.ReadWrite").await;
    let unit = 327_680usize;
    let file: Vec<u8> = (0..(2 * unit + 1000)).map(|i| (i % 251) as u8).collect();
    let create = |body: Value| {
        emu.http
            .post(format!(
                "{}/v1.0/me/drive/root:/officebridge/exports/Big.xlsx:/createUploadSession",
                emu.base
            ))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    let session: Value = create(json!({"item": {"@microsoft.graph.conflictBehavior": "rename"}}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = session["uploadUrl"].as_str().unwrap().to_string();
    assert!(session["expirationDateTime"].is_string());
    let put = |range: (usize, usize), auth: bool| {
        let mut req = emu
            .http
            .put(&url)
            .header("content-range", format!("bytes {}-{}/{}", range.0, range.1 - 1, file.len()))
            .body(file[range.0..range.1].to_vec());
        if auth {
            req = req.bearer_auth(&token);
        }
        req.send()
    };
    assert_eq!(
        put((0, unit), true).await.unwrap().status(),
        401,
        "the upload URL must not get the Authorization header"
    );
    let resp = put((0, 1000), false).await.unwrap();
    assert_eq!(resp.status(), 400, "a fragment that is not the last must be a multiple of 320 KiB");
    let resp = put((0, unit), false).await.unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["nextExpectedRanges"],
        json!([format!("{unit}-")])
    );
    assert_eq!(put((0, unit), false).await.unwrap().status(), 416, "a fragment already received");
    assert_eq!(
        put((2 * unit, file.len()), false).await.unwrap().status(),
        416,
        "a fragment out of order"
    );
    let status: Value = emu.http.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(status["nextExpectedRanges"], json!([format!("{unit}-")]));
    assert_eq!(put((unit, 2 * unit), false).await.unwrap().status(), 202);
    let done = put((2 * unit, file.len()), false).await.unwrap();
    assert_eq!(done.status(), 201);
    let item: Value = done.json().await.unwrap();
    assert_eq!(
        (item["name"].as_str(), item["size"].as_u64()),
        (Some("Big.xlsx"), Some(file.len() as u64))
    );
    let stored = emu
        .http
        .get(format!("{}/v1.0/me/drive/items/{}/content", emu.base, item["id"].as_str().unwrap()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        stored.bytes().await.unwrap().to_vec(),
        file,
        "the bytes in OneDrive equal the bytes sent"
    );
    assert_eq!(emu.http.get(&url).send().await.unwrap().status(), 404, "a finished session is gone");

    // The name is taken now: the default conflict behaviour of a session is to fail.
    let taken = create(json!({})).await.unwrap();
    assert_eq!(taken.status(), 409);
    // Cancel.
    let session: Value = create(json!({"item": {"@microsoft.graph.conflictBehavior": "rename"}}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cancel = session["uploadUrl"].as_str().unwrap();
    assert_eq!(emu.http.delete(cancel).send().await.unwrap().status(), 204);
    assert_eq!(emu.http.get(cancel).send().await.unwrap().status(), 404);
    // deferCommit: the last fragment answers 202, an empty POST commits.
    let session: Value = create(json!({"item": {"@microsoft.graph.conflictBehavior": "rename"}, "deferCommit": true}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let deferred = session["uploadUrl"].as_str().unwrap();
    let resp = emu
        .http
        .put(deferred)
        .header("content-range", "bytes 0-9/10")
        .body(vec![7u8; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let committed = emu.http.post(deferred).header("content-length", "0").send().await.unwrap();
    assert_eq!(committed.status(), 201);
    assert_eq!(committed.json::<Value>().await.unwrap()["name"], "Big 1.xlsx");
    let drive: Value = emu
        .http
        .get(format!("{}/_emulator/drive/{DEMO_USER}", emu.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(drive["open_upload_sessions"], 0);
    assert_eq!(drive["files"].as_array().unwrap().len(), 2);
}

/// Scripted faults with Graph's throttling answer (microsoft-graph-docs-contrib:
/// concepts/throttling.md — 429, `Retry-After`, `TooManyRequests`; concepts/errors.md) and the
/// request log, which records whether an Authorization header was sent but never its value.
#[tokio::test]
async fn scripted_faults_and_the_request_log() {
    let emu = emulator().await;
    let token = emu.user_token("User.Read Files.ReadWrite").await;
    let faults = json!([
        {"method": "GET", "path": "/v1.0/me", "status": 429, "retry_after": "0.5", "times": 2},
        {"method": "PUT", "path": "/_upload/*", "status": 503, "retry_after": "1"},
        {"path": "/v1.0/me/drive/items/*", "delay_ms": 300}
    ]);
    assert_eq!(
        emu.http
            .post(format!("{}/_emulator/faults", emu.base))
            .json(&faults)
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    for _ in 0..2 {
        let throttled = emu.get(&token, "/v1.0/me").await;
        assert_eq!(throttled.status(), 429);
        assert_eq!(throttled.headers()["retry-after"], "0.5");
        assert_eq!(throttled.json::<Value>().await.unwrap()["error"]["code"], "TooManyRequests");
    }
    assert_eq!(emu.get(&token, "/v1.0/me").await.status(), 200, "the fault is spent");

    let session: Value = emu
        .http
        .post(format!("{}/v1.0/me/drive/root:/f.xlsx:/createUploadSession", emu.base))
        .bearer_auth(&token)
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = session["uploadUrl"].as_str().unwrap();
    let put = || emu.http.put(url).header("content-range", "bytes 0-3/4").body("PK!!").send();
    let failed = put().await.unwrap();
    assert_eq!(
        (failed.status().as_u16(), failed.headers()["retry-after"].to_str().unwrap()),
        (503, "1")
    );
    assert_eq!(failed.json::<Value>().await.unwrap()["error"]["code"], "serviceNotAvailable");
    let item: Value = put().await.unwrap().json().await.unwrap();
    assert_eq!(item["size"], 4, "the failed fragment was not stored; the retry completes the file");

    let started = std::time::Instant::now();
    let slow = emu
        .http
        .get(format!("{}/v1.0/me/drive/items/{}", emu.base, item["id"].as_str().unwrap()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(slow.status(), 200);
    assert!(started.elapsed() >= std::time::Duration::from_millis(300), "the delay was applied");

    let log = crate::helpers::emulator_requests(&emu.http, &emu.base).await;
    let puts: Vec<&Value> = log.iter().filter(|r| r["method"] == "PUT").collect();
    assert_eq!(puts.len(), 2);
    assert!(
        puts.iter()
            .all(|r| r["authorization"] == false && r["content_range"] == "bytes 0-3/4")
    );
    assert_eq!((puts[0]["faulted"].as_bool(), puts[1]["status"].as_u64()), (Some(true), Some(201)));
    assert!(
        !Value::from(log.clone()).to_string().contains(&token),
        "the log never holds a token"
    );
    assert_eq!(
        emu.http
            .delete(format!("{}/_emulator/faults", emu.base))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
}

/// A standard OAuth client we did not write — Python authlib — runs discovery, client
/// credentials, authorization code with PKCE, ID-token validation against the JWKS, and refresh.
#[tokio::test]
async fn a_third_party_oauth_client_speaks_to_the_emulator() {
    if !crate::helpers::python_has("authlib, requests") {
        return;
    }
    let emu = emulator().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oauth/authlib_client.py");
    let out = tokio::process::Command::new("python3")
        .args([script, &emu.base, DEMO_DOMAIN, DEMO_CLIENT_ID, "demo-client-secret", DEMO_USER])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "authlib failed against the emulator: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["client_credentials"],
        json!({"aud": "https://graph.microsoft.com", "idtyp": "app"})
    );
    assert_eq!(
        report["authorization_code"],
        json!({"preferred_username": DEMO_USER, "has_refresh_token": true})
    );
    assert_eq!(report["refresh"], json!({"new_refresh_token": true, "access_token": true}));
}

/// The JSON the emulator answers validates against Microsoft's OpenAPI description of Graph
/// (`../shared/reference/graph/graph-v1.0-subset.openapi.json`, converted from Graph's CSDL),
/// checked by openapi-schema-validator in Python — not by our own code.
#[tokio::test]
async fn graph_answers_validate_against_microsofts_openapi() {
    let spec = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/reference/graph/graph-v1.0-subset.openapi.json"
    );
    let here = std::path::Path::new(spec).exists();
    if !crate::helpers::tool_available(here, "../shared/reference beside the checkout")
        || !crate::helpers::python_has("openapi_schema_validator")
    {
        return;
    }
    let emu = emulator().await;
    let token = emu.user_token("User.Read Files.ReadWrite").await;
    let get = |path: String, auth: bool| {
        let mut req = emu.http.get(format!("{}{path}", emu.base));
        if auth {
            req = req.bearer_auth(&token);
        }
        req.send()
    };
    let mut samples = Vec::new();
    let mut sample = |path: &str, method: &str, status: u16, body: Value| {
        samples.push(json!({"path": path, "method": method, "status": status.to_string(), "body": body}))
    };
    let me = get("/v1.0/me".into(), true).await.unwrap();
    sample("/me", "get", me.status().as_u16(), me.json().await.unwrap());
    let denied = get("/v1.0/me".into(), false).await.unwrap();
    sample("/me", "get", denied.status().as_u16(), denied.json().await.unwrap());
    let item: Value = emu
        .put_content(&token, "officebridge/exports/Check.xlsx", b"PK".to_vec())
        .await
        .json()
        .await
        .unwrap();
    let got = get(format!("/v1.0/me/drive/items/{}", item["id"].as_str().unwrap()), true)
        .await
        .unwrap();
    sample("/drives/{id}/items/{id_1}", "get", got.status().as_u16(), got.json().await.unwrap());
    let missing = get("/v1.0/me/drive/items/nope".into(), true).await.unwrap();
    sample(
        "/drives/{id}/items/{id_1}",
        "get",
        missing.status().as_u16(),
        missing.json().await.unwrap(),
    );
    let session = emu
        .http
        .post(format!(
            "{}/v1.0/me/drive/root:/officebridge/exports/Big.xlsx:/createUploadSession",
            emu.base
        ))
        .bearer_auth(&token)
        .json(&json!({"item": {"@microsoft.graph.conflictBehavior": "rename"}}))
        .send()
        .await
        .unwrap();
    sample(
        "/drives/{id}/items/{id_1}/createUploadSession",
        "post",
        session.status().as_u16(),
        session.json().await.unwrap(),
    );
    let directory_token = emu.user_token("Contacts.Read People.Read User.ReadBasic.All").await;
    for (path, url) in [
        ("/me/contacts", "/v1.0/me/contacts"),
        ("/me/people", "/v1.0/me/people"),
        ("/users", "/v1.0/users"),
    ] {
        let resp = emu.get(&directory_token, url).await;
        sample(path, "get", resp.status().as_u16(), resp.json().await.unwrap());
    }
    let dir = tempfile::tempdir().unwrap();
    let samples_file = dir.path().join("samples.json");
    std::fs::write(&samples_file, serde_json::to_vec(&samples).unwrap()).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/reference/validate_graph.py");
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .arg(spec)
        .arg(&samples_file)
        .output()
        .await
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "responses do not match Microsoft's OpenAPI:\n{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report.lines().filter(|l| l.starts_with("ok")).count(), 8, "{report}");
}

/// entra-docs: docs/identity-platform/v2-oauth2-device-code.md (device authorization response,
/// "Expected errors"); RFC 8628 §3.5 (`slow_down`).
#[tokio::test]
async fn device_code_flow() {
    let emu = emulator().await;
    let emu = &emu;
    let start = || async {
        let resp = emu
            .http
            .post(format!("{}/{DEMO_TENANT_ID}/oauth2/v2.0/devicecode", emu.base))
            .form(&[("client_id", DEMO_CLIENT_ID), ("scope", "User.Read offline_access openid")])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.json::<Value>().await.unwrap()
    };
    let poll = |device_code: String| async move {
        emu.token(
            DEMO_TENANT_ID,
            &[
                ("client_id", DEMO_CLIENT_ID),
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("device_code", &device_code),
            ],
        )
        .await
    };
    let login = |form: Vec<(&'static str, String)>| emu.http.post(format!("{}/devicelogin", emu.base)).form(&form).send();

    let auth = start().await;
    let (device, code) = (
        auth["device_code"].as_str().unwrap().to_string(),
        auth["user_code"].as_str().unwrap().to_string(),
    );
    assert_eq!((auth["expires_in"].as_i64(), auth["interval"].as_i64()), (Some(900), Some(5)));
    assert_eq!(auth["verification_uri"], format!("{}/devicelogin", emu.base));
    assert!(auth["message"].as_str().unwrap().contains(&code));
    let (status, body) = poll(device.clone()).await;
    assert_eq!(status, 400);
    assert_aad_error(&body, "authorization_pending", 70016);
    assert_eq!(
        poll(device.clone()).await.1["error"],
        "slow_down",
        "polling faster than the interval"
    );
    assert_eq!(
        emu.http.get(format!("{}/devicelogin", emu.base)).send().await.unwrap().status(),
        200
    );
    let signed_in = login(vec![("user_code", code.to_lowercase()), ("user", DEMO_USER.into())])
        .await
        .unwrap();
    assert!(signed_in.text().await.unwrap().contains("You have signed in"));
    let (status, tokens) = poll(device.clone()).await;
    assert_eq!(status, 200, "{tokens}");
    assert!(tokens["refresh_token"].is_string() && tokens["id_token"].is_string());
    assert_eq!(claims(tokens["access_token"].as_str().unwrap()).1["upn"], DEMO_USER);
    assert_aad_error(&poll(device).await.1, "bad_verification_code", 70019);

    let auth = start().await;
    login(vec![
        ("user_code", auth["user_code"].as_str().unwrap().into()),
        ("decline", "1".into()),
    ])
    .await
    .unwrap();
    assert_eq!(
        poll(auth["device_code"].as_str().unwrap().into()).await.1["error"],
        "authorization_declined"
    );

    let auth = start().await;
    let expire = emu
        .http
        .post(format!(
            "{}/_emulator/devicecode/{}/expire",
            emu.base,
            auth["user_code"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(expire.status(), 204);
    assert_aad_error(&poll(auth["device_code"].as_str().unwrap().into()).await.1, "expired_token", 70020);

    let mfa = start().await;
    let step = login(vec![
        ("user_code", mfa["user_code"].as_str().unwrap().into()),
        ("user", "mfa.user@demo.onmicrosoft.com".into()),
    ])
    .await
    .unwrap();
    assert_eq!(step.headers()["x-emulator-mfa"], "required");
    assert_eq!(
        poll(mfa["device_code"].as_str().unwrap().into()).await.1["error"],
        "authorization_pending",
        "MFA not yet approved"
    );
}

/// entra-docs: docs/identity-platform/v2-oauth2-on-behalf-of-flow.md (request, `aud` of the
/// assertion, error response with a claims challenge), access-token-claims-reference.md (v2
/// claims of a token for an app's own API).
#[tokio::test]
async fn on_behalf_of_exchanges_an_api_token_for_graph() {
    let emu = emulator().await;
    let api_scope = format!("api://localhost/{DEMO_CLIENT_ID}/access_as_user");
    let api_token = emu.user_token(&api_scope).await;
    let (_, c) = claims(&api_token);
    assert_eq!(
        (c["aud"].as_str(), c["ver"].as_str(), c["scp"].as_str()),
        (Some(DEMO_CLIENT_ID), Some("2.0"), Some("access_as_user"))
    );
    assert_eq!(c["iss"], format!("{}/{DEMO_TENANT_ID}/v2.0", emu.base));
    assert_eq!((c["azp"].as_str(), c["tid"].as_str()), (Some(DEMO_CLIENT_ID), Some(DEMO_TENANT_ID)));
    assert_eq!(c["amr"], json!(["pwd"]));

    let obo = |assertion: String, scope: &'static str, secret: Option<&'static str>| {
        let mut form = vec![
            ("client_id", DEMO_CLIENT_ID.to_string()),
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer".to_string()),
            ("assertion", assertion),
            ("scope", scope.to_string()),
            ("requested_token_use", "on_behalf_of".to_string()),
        ];
        if let Some(s) = secret {
            form.push(("client_secret", s.to_string()));
        }
        emu.http
            .post(format!("{}/{DEMO_TENANT_ID}/oauth2/v2.0/token", emu.base))
            .form(&form)
            .send()
    };
    let resp = obo(
        api_token.clone(),
        "https://graph.microsoft.com/User.Read offline_access",
        Some("demo-client-secret"),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let graph: Value = resp.json().await.unwrap();
    let (_, g) = claims(graph["access_token"].as_str().unwrap());
    assert_eq!(
        (g["aud"].as_str(), g["upn"].as_str(), g["scp"].as_str()),
        (Some("https://graph.microsoft.com"), Some(DEMO_USER), Some("User.Read"))
    );
    assert!(graph["refresh_token"].is_string());

    // A token for another audience (here: Graph's own) cannot be redeemed.
    let graph_token = graph["access_token"].as_str().unwrap().to_string();
    let resp = obo(graph_token, "https://graph.microsoft.com/User.Read", Some("demo-client-secret"))
        .await
        .unwrap();
    assert_aad_error(&resp.json().await.unwrap(), "invalid_grant", 50013);
    let resp = obo(api_token.clone(), "https://graph.microsoft.com/User.Read", None).await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_aad_error(&resp.json().await.unwrap(), "invalid_client", 7000218);
    let resp = obo(
        api_token.clone(),
        "https://graph.microsoft.com/Sites.FullControl.All",
        Some("demo-client-secret"),
    )
    .await
    .unwrap();
    assert_aad_error(&resp.json().await.unwrap(), "invalid_grant", 65001);

    // Conditional Access now demands MFA: the middle tier gets a claims challenge to pass on.
    let hook = emu
        .http
        .post(format!("{}/_emulator/users/{DEMO_USER}/mfa", emu.base))
        .json(&json!({"required": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(hook.status(), 204);
    let resp = obo(api_token, "https://graph.microsoft.com/User.Read", Some("demo-client-secret"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_aad_error(&body, "interaction_required", 50076);
    let challenge: Value = serde_json::from_str(body["claims"].as_str().unwrap()).unwrap();
    assert_eq!(challenge["access_token"]["capolids"]["essential"], true);

    // One token is for one resource: Graph and an API scope cannot be asked together.
    let mixed = format!("User.Read {api_scope}");
    let resp = emu
        .http
        .get(format!("{}/{DEMO_TENANT_ID}/oauth2/v2.0/authorize", emu.base))
        .query(&[
            ("client_id", DEMO_CLIENT_ID),
            ("response_type", "code"),
            ("redirect_uri", "https://localhost"),
            ("scope", mixed.as_str()),
        ])
        .send()
        .await
        .unwrap();
    let back = url::Url::parse(resp.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(query(&back, "error").as_deref(), Some("consent_required"));
}

/// microsoft-graph-docs-contrib: api-reference/v1.0/api/user-sendmail.md (202, no body,
/// saveToSentItems), user-post-messages.md, message-get.md, message-send.md, message-delete.md,
/// resources/message.md (x- headers); Exchange Online limits (4 MB request, 500 recipients).
#[tokio::test]
async fn mail_send_drafts_and_limits() {
    let emu = emulator().await;
    let token = emu.user_token("Mail.Send Mail.ReadWrite").await;
    let post =
        |path: String, token: String, body: Value| emu.http.post(format!("{}{path}", emu.base)).bearer_auth(token).json(&body).send();
    let message = |to: Vec<&str>| {
        json!({
            "subject": "Invoice INV-1001",
            "body": {"contentType": "HTML", "content": "<p>Please find attached.</p>"},
            "toRecipients": to.iter().map(|a| json!({"emailAddress": {"address": a}})).collect::<Vec<_>>(),
            "internetMessageHeaders": [{"name": "x-officebridge-id", "value": "m-1"}],
            "attachments": [{"@odata.type": "#microsoft.graph.fileAttachment", "name": "INV-1001.pdf", "contentType": "application/pdf", "contentBytes": "JVBERi0xLjQ="}]
        })
    };
    let sent = post(
        "/v1.0/me/sendMail".into(),
        token.clone(),
        json!({"message": message(vec!["ap@fabrikam.com"])}),
    )
    .await
    .unwrap();
    assert_eq!(sent.status(), 202);
    assert!(sent.bytes().await.unwrap().is_empty(), "sendMail answers no body");
    let quiet = post(
        "/v1.0/me/sendMail".into(),
        token.clone(),
        json!({"message": message(vec!["ap@fabrikam.com"]), "saveToSentItems": false}),
    )
    .await
    .unwrap();
    assert_eq!(quiet.status(), 202);
    let mailbox: Value = emu
        .http
        .get(format!("{}/_emulator/mail/{DEMO_USER}", emu.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sent = mailbox["sent"].as_array().unwrap();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0]["subject"], "Invoice INV-1001");
    assert_eq!(sent[0]["attachments"][0]["contentBytes"], "JVBERi0xLjQ=");
    assert_eq!(
        (sent[0]["savedToSentItems"].as_bool(), sent[1]["savedToSentItems"].as_bool()),
        (Some(true), Some(false))
    );

    let expect = |status: u16, code: &'static str| {
        move |resp: reqwest::Response| async move {
            assert_eq!(resp.status(), status);
            assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], code);
        }
    };
    expect(400, "ErrorInvalidRecipients")(
        post("/v1.0/me/sendMail".into(), token.clone(), json!({"message": message(vec![])}))
            .await
            .unwrap(),
    )
    .await;
    expect(400, "ErrorInvalidRecipients")(
        post(
            "/v1.0/me/sendMail".into(),
            token.clone(),
            json!({"message": message(vec!["not an address"])}),
        )
        .await
        .unwrap(),
    )
    .await;
    let many: Vec<String> = (0..501).map(|i| format!("r{i}@fabrikam.com")).collect();
    expect(400, "ErrorTooManyRecipients")(
        post(
            "/v1.0/me/sendMail".into(),
            token.clone(),
            json!({"message": message(many.iter().map(String::as_str).collect())}),
        )
        .await
        .unwrap(),
    )
    .await;
    let mut bad_header = message(vec!["ap@fabrikam.com"]);
    bad_header["internetMessageHeaders"] = json!([{"name": "Priority", "value": "urgent"}]);
    expect(400, "InvalidInternetMessageHeader")(
        post("/v1.0/me/sendMail".into(), token.clone(), json!({"message": bad_header}))
            .await
            .unwrap(),
    )
    .await;
    let mut big = message(vec!["ap@fabrikam.com"]);
    big["attachments"][0]["contentBytes"] = json!("A".repeat(4 * 1024 * 1024 + 4));
    expect(413, "RequestEntityTooLarge")(
        post("/v1.0/me/sendMail".into(), token.clone(), json!({"message": big}))
            .await
            .unwrap(),
    )
    .await;

    // Drafts: create, read, send; delete another.
    let draft = post("/v1.0/me/messages".into(), token.clone(), message(vec!["ap@fabrikam.com"]))
        .await
        .unwrap();
    assert_eq!(draft.status(), 201);
    let draft: Value = draft.json().await.unwrap();
    assert_eq!(draft["isDraft"], true);
    let id = draft["id"].as_str().unwrap();
    let got: Value = emu.get(&token, &format!("/v1.0/me/messages/{id}")).await.json().await.unwrap();
    assert_eq!(got["subject"], "Invoice INV-1001");
    assert_eq!(
        post(format!("/v1.0/me/messages/{id}/send"), token.clone(), json!({}))
            .await
            .unwrap()
            .status(),
        202
    );
    let after: Value = emu.get(&token, &format!("/v1.0/me/messages/{id}")).await.json().await.unwrap();
    assert_eq!(
        (after["isDraft"].as_bool(), after["parentFolderId"].as_str()),
        (Some(false), Some("sentitems"))
    );
    let other: Value = post("/v1.0/me/messages".into(), token.clone(), json!({"subject": "draft"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let delete = |id: String| {
        emu.http
            .delete(format!("{}/v1.0/me/messages/{id}", emu.base))
            .bearer_auth(&token)
            .send()
    };
    assert_eq!(delete(other["id"].as_str().unwrap().into()).await.unwrap().status(), 204);
    assert_eq!(delete(other["id"].as_str().unwrap().into()).await.unwrap().status(), 404);

    // Application permission sends as a mailbox; /me needs a user; Mail.Send is required.
    let app = emu.app_token().await;
    let as_app = post(
        format!("/v1.0/users/{DEMO_USER}/sendMail"),
        app.clone(),
        json!({"message": message(vec!["ap@fabrikam.com"])}),
    )
    .await
    .unwrap();
    assert_eq!(as_app.status(), 202);
    assert_eq!(
        post("/v1.0/me/sendMail".into(), app, json!({"message": message(vec!["a@b.com"])}))
            .await
            .unwrap()
            .status(),
        400
    );
    let weak = emu.user_token("User.Read").await;
    expect(403, "ErrorAccessDenied")(
        post("/v1.0/me/sendMail".into(), weak, json!({"message": message(vec!["a@b.com"])}))
            .await
            .unwrap(),
    )
    .await;
}

/// microsoft-graph-docs-contrib: api-reference/v1.0/api/user-list-contacts.md, user-list-contactfolders.md,
/// contactfolder-list-childfolders.md, user-list-people.md, user-list.md, orgcontact-list.md,
/// concepts/aad-advanced-queries.md (ConsistencyLevel), concepts/paging.md (@odata.nextLink).
#[tokio::test]
async fn contacts_people_and_directory_search() {
    let emu = emulator().await;
    let token = emu.user_token("Contacts.Read People.Read User.ReadBasic.All").await;
    let get = |url: String, extra: Option<(&'static str, &'static str)>| {
        let mut req = emu
            .http
            .get(if url.starts_with("http") {
                url
            } else {
                format!("{}{url}", emu.base)
            })
            .bearer_auth(&token);
        if let Some((k, v)) = extra {
            req = req.header(k, v);
        }
        req.send()
    };
    let json_of = |r: reqwest::Response| async move { (r.status().as_u16(), r.json::<Value>().await.unwrap()) };
    let names = |v: &Value| {
        v["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["displayName"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };

    // The default Contacts folder, one page at a time.
    let (_, first) = json_of(get("/v1.0/me/contacts?$top=1".into(), None).await.unwrap()).await;
    assert_eq!(names(&first), ["Ada Lovelace"]);
    let next = first["@odata.nextLink"].as_str().unwrap().to_string();
    let (_, second) = json_of(get(next, None).await.unwrap()).await;
    assert_eq!(names(&second), ["Alan Turing"]);
    assert!(second.get("@odata.nextLink").is_none());
    let (_, selected) = json_of(get("/v1.0/me/contacts?$select=displayName".into(), None).await.unwrap()).await;
    let keys: Vec<&String> = selected["value"][0].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["displayName", "id"]);
    let (_, filtered) = json_of(
        get(
            "/v1.0/me/contacts?$filter=emailAddresses/any(a:a/address eq 'ALAN@fabrikam.com')".into(),
            None,
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(names(&filtered), ["Alan Turing"]);
    let (status, bad) = json_of(get("/v1.0/me/contacts?$filter=displayName eq 'x'".into(), None).await.unwrap()).await;
    assert_eq!((status, bad["error"]["code"].as_str()), (400, Some("ErrorInvalidUrlQueryFilter")));

    // Folders and child folders.
    let (_, folders) = json_of(get("/v1.0/me/contactFolders".into(), None).await.unwrap()).await;
    assert_eq!(names(&folders), ["Customers"]);
    let customers = folders["value"][0]["id"].as_str().unwrap().to_string();
    let (_, in_customers) = json_of(get(format!("/v1.0/me/contactFolders/{customers}/contacts"), None).await.unwrap()).await;
    assert_eq!(names(&in_customers), ["Grace Hopper"]);
    let (_, children) = json_of(
        get(format!("/v1.0/me/contactFolders/{customers}/childFolders"), None)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(names(&children), ["Key accounts"]);
    let key_accounts = children["value"][0]["id"].as_str().unwrap().to_string();
    let (_, in_key) = json_of(get(format!("/v1.0/me/contactFolders/{key_accounts}/contacts"), None).await.unwrap()).await;
    assert_eq!(names(&in_key), ["Katherine Johnson"]);

    // People: relevance puts personal contacts first; search matches word prefixes.
    let (_, people) = json_of(get("/v1.0/me/people?$search=\"gr\"".into(), None).await.unwrap()).await;
    assert_eq!(names(&people), ["Grace Hopper"]);
    assert_eq!(people["value"][0]["personType"]["subclass"], "PersonalContact");
    let (_, colleagues) = json_of(get("/v1.0/me/people?$search=mfa".into(), None).await.unwrap()).await;
    assert_eq!(colleagues["value"][0]["personType"]["subclass"], "OrganizationUser");

    // The directory: $search needs ConsistencyLevel: eventual.
    let (status, refused) = json_of(get("/v1.0/users?$search=\"displayName:mfa\"".into(), None).await.unwrap()).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (400, Some("Request_UnsupportedQuery")));
    let (status, found) = json_of(
        get(
            "/v1.0/users?$search=\"displayName:mfa\"&$count=true".into(),
            Some(("ConsistencyLevel", "eventual")),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        (names(&found), found["@odata.count"].as_u64()),
        (vec!["MFA User".to_string()], Some(1))
    );

    // Organisational contacts need OrgContact.Read.All (the demo app has it as an application role).
    let (status, _) = json_of(get("/v1.0/contacts".into(), None).await.unwrap()).await;
    assert_eq!(status, 403);
    let app = emu.app_token().await;
    let org: Value = emu.get(&app, "/v1.0/contacts").await.json().await.unwrap();
    assert_eq!(org["value"][0]["mail"], "ap@contoso.example");
    let theirs: Value = emu
        .get(&app, &format!("/v1.0/users/{DEMO_USER}/contacts"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        theirs["value"].as_array().unwrap().len(),
        2,
        "application permission reads a mailbox's contacts"
    );
}

/// microsoft-graph-docs-contrib: concepts/throttling-limits.md ("Outlook service limits": 4
/// concurrent requests and 10,000 requests per 10 minutes per app and mailbox) and
/// concepts/throttling.md (429, Retry-After, TooManyRequests).
#[tokio::test]
async fn outlook_throttling_per_app_and_mailbox() {
    let emu = emulator().await;
    let token = emu.user_token("Contacts.Read Files.ReadWrite").await;
    let post = |path: &str, body: Value| {
        let req = emu.http.post(format!("{}{path}", emu.base)).json(&body);
        async move { assert_eq!(req.send().await.unwrap().status(), 204) }
    };
    // Five slow requests at once: the fifth is over the concurrency limit.
    post(
        "/_emulator/faults",
        json!([{"method": "GET", "path": "/v1.0/me/contacts", "delay_ms": 600, "times": 5}]),
    )
    .await;
    let calls = (0..5).map(|_| {
        let req = emu.http.get(format!("{}/v1.0/me/contacts", emu.base)).bearer_auth(&token);
        async move {
            let r = req.send().await.unwrap();
            let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
            (r.status().as_u16(), retry, r.json::<Value>().await.unwrap())
        }
    });
    let drive_meanwhile = async {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        // OneDrive is not an Outlook resource: not counted.
        emu.put_content(&token, "t.txt", b"x".to_vec()).await.status().as_u16()
    };
    let (answers, drive) = tokio::join!(futures_util::future::join_all(calls), drive_meanwhile);
    assert!(drive == 201 || drive == 200);
    let throttled: Vec<_> = answers.iter().filter(|a| a.0 == 429).collect();
    assert_eq!(throttled.len(), 1, "{answers:?}");
    assert_eq!(answers.iter().filter(|a| a.0 == 200).count(), 4);
    assert_eq!(throttled[0].2["error"]["code"], "TooManyRequests");
    assert!(throttled[0].1.as_deref().is_some_and(|s| s.parse::<u64>().unwrap() >= 1));
    // Slots are released: the next request goes through.
    let next = emu.get(&token, "/v1.0/me/contacts").await;
    assert_eq!(next.status(), 200);

    // The request-rate window (lowered here from 10,000 per 600 s to 3 per 600 s).
    post("/_emulator/limits", json!({"requests_per_window": 3, "window_secs": 600})).await;
    for _ in 0..3 {
        let r = emu.get(&token, "/v1.0/me/people").await;
        assert_ne!(r.status(), 429);
    }
    let over = emu.get(&token, "/v1.0/me/contacts").await;
    assert_eq!(over.status(), 429);
    let wait: u64 = over.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((590..=600).contains(&wait), "Retry-After {wait}");
    // Another mailbox of the same app has its own budget.
    let app = emu.app_token().await;
    let other = emu.get(&app, &format!("/v1.0/users/mfa.user@{DEMO_DOMAIN}/contacts")).await;
    assert_eq!(other.status(), 200);
}

/// microsoft-graph-docs-contrib: concepts/json-batching.md — at most 20 requests, ids unique,
/// Content-Type required with a body, `dependsOn` ordering, 424 for dependents of a failed
/// request, a malformed batch is a 400 and a parseable one a 200.
#[tokio::test]
async fn json_batching() {
    let emu = emulator().await;
    let token = emu.user_token("Files.ReadWrite Contacts.Read User.Read").await;
    let batch = |body: Value| {
        let req = emu.http.post(format!("{}/v1.0/$batch", emu.base)).bearer_auth(&token).json(&body);
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = batch(json!({"requests": [
        {"id": "1", "method": "GET", "url": "/me"},
        {"id": "2", "method": "GET", "url": "me/contacts?$top=1"},
        {"id": "3", "method": "GET", "url": "/me/drive/items/does-not-exist"},
        {"id": "4", "method": "GET", "url": "/me", "dependsOn": ["3"]},
        {"id": "5", "method": "GET", "url": "/me", "dependsOn": ["4"]},
        {"id": "6", "method": "POST", "url": "/me/drive/items/nope/createLink", "headers": {"Content-Type": "application/json"}, "body": {"type": "view"}},
    ]}))
    .await;
    assert_eq!(status, 200, "{body}");
    let by_id: std::collections::HashMap<&str, &Value> = body["responses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].as_str().unwrap(), r))
        .collect();
    assert_eq!(by_id["1"]["status"], 200);
    assert_eq!(by_id["1"]["body"]["userPrincipalName"], DEMO_USER);
    assert_eq!(by_id["2"]["status"], 200);
    assert!(by_id["2"]["body"]["value"].is_array());
    assert_eq!(by_id["3"]["status"], 404);
    assert_eq!(by_id["3"]["body"]["error"]["code"], "itemNotFound");
    assert_eq!(by_id["4"]["status"], 424, "depends on a failed request");
    assert_eq!(by_id["5"]["status"], 424, "depends on a request that failed by dependency");
    assert_eq!(by_id["6"]["status"], 404);
    assert!(
        by_id["1"]["headers"]["content-type"]
            .as_str()
            .unwrap()
            .starts_with("application/json")
    );

    // The batch's own token is each request's: without one every request is a 401.
    let anonymous = emu
        .http
        .post(format!("{}/v1.0/$batch", emu.base))
        .json(&json!({"requests": [{"id": "1", "method": "GET", "url": "/me"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 200);
    assert_eq!(anonymous.json::<Value>().await.unwrap()["responses"][0]["status"], 401);

    let many: Vec<Value> = (0..21)
        .map(|i| json!({"id": i.to_string(), "method": "GET", "url": "/me"}))
        .collect();
    for bad in [
        json!({"requests": many}),
        json!({"requests": [{"id": "1", "method": "GET", "url": "/me"}, {"id": "1", "method": "GET", "url": "/me"}]}),
        json!({"requests": [{"id": "1", "method": "POST", "url": "/me/messages", "body": {}}]}),
        json!({"requests": [{"id": "1", "method": "GET", "url": "/me", "dependsOn": ["9"]}]}),
        json!({"requests": [{"id": "1", "method": "GET", "url": "/me", "dependsOn": ["2"]}, {"id": "2", "method": "GET", "url": "/me", "dependsOn": ["1"]}]}),
        json!({"nothing": []}),
    ] {
        let (status, body) = batch(bad.clone()).await;
        assert_eq!(status, 400, "{bad} -> {body}");
        assert_eq!(body["error"]["code"], "BadRequest");
    }
    let twenty: Vec<Value> = (0..20)
        .map(|i| json!({"id": i.to_string(), "method": "GET", "url": "/me"}))
        .collect();
    assert_eq!(batch(json!({"requests": twenty})).await.0, 200);
}

/// microsoft-graph-docs-contrib: api-reference/v1.0/api/message-post-attachments.md (under
/// 3 MB, 201), attachment-createuploadsession.md (3–150 MB, 201 uploadSession),
/// concepts/outlook-large-attachments.md (PUT ranges without Authorization, at most 4 MB, 200
/// with nextExpectedRanges, final 201 with Location and no body), mailfolder well-known names.
#[tokio::test]
async fn message_attachments_and_folders() {
    use base64::engine::general_purpose::STANDARD;
    let emu = emulator().await;
    let token = emu.user_token("Mail.ReadWrite Mail.Send").await;
    let url = |p: &str| format!("{}/v1.0/me/{p}", emu.base);
    let draft: Value = emu
        .http
        .post(url("messages"))
        .bearer_auth(&token)
        .json(&json!({"subject": "Invoice", "toRecipients": [{"emailAddress": {"address": "ap@contoso.example"}}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = draft["id"].as_str().unwrap().to_string();

    // A small attachment is posted whole.
    let small = emu
        .http
        .post(url(&format!("messages/{id}/attachments")))
        .bearer_auth(&token)
        .json(&json!({"@odata.type": "#microsoft.graph.fileAttachment", "name": "a.txt", "contentType": "text/plain", "contentBytes": STANDARD.encode("hello")}))
        .send()
        .await
        .unwrap();
    assert_eq!(small.status(), 201);
    let small: Value = small.json().await.unwrap();
    assert_eq!((small["name"].as_str(), small["size"].as_u64()), (Some("a.txt"), Some(5)));

    // 3 MB or more must use an upload session.
    let big = vec![7u8; 3 * 1024 * 1024 + 10];
    let refused = emu
        .http
        .post(url(&format!("messages/{id}/attachments")))
        .bearer_auth(&token)
        .json(&json!({"@odata.type": "#microsoft.graph.fileAttachment", "name": "big.bin", "contentBytes": STANDARD.encode(&big[..3 * 1024 * 1024])}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 413);
    let session = |size: u64| {
        let req = emu
            .http
            .post(url(&format!("messages/{id}/attachments/createUploadSession")))
            .bearer_auth(&token)
            .json(&json!({"AttachmentItem": {"attachmentType": "file", "name": "big.bin", "size": size}}));
        async move { req.send().await.unwrap() }
    };
    assert_eq!(session(1000).await.status(), 400, "under 3 MB is refused");
    assert_eq!(session(151 * 1024 * 1024).await.status(), 400, "over 150 MB is refused");
    let created = session(big.len() as u64).await;
    assert_eq!(created.status(), 201);
    let upload: Value = created.json().await.unwrap();
    assert_eq!(upload["nextExpectedRanges"], json!(["0-"]));
    let upload_url = upload["uploadUrl"].as_str().unwrap().to_string();
    let put = |from: usize, to: usize, auth: bool| {
        let mut req = emu
            .http
            .put(&upload_url)
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("bytes {from}-{}/{}", to - 1, big.len()))
            .body(big[from..to].to_vec());
        if auth {
            req = req.bearer_auth(&token);
        }
        async move { req.send().await.unwrap() }
    };
    assert_eq!(put(0, 1024, true).await.status(), 401, "no Authorization on the upload URL");
    let too_big = emu
        .http
        .put(&upload_url)
        .header("content-range", format!("bytes 0-{}/{}", 4 * 1024 * 1024, big.len()))
        .body(vec![0u8; 4 * 1024 * 1024 + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(too_big.status(), 413, "fragments of at most 4 MB");
    let first = put(0, 2 * 1024 * 1024, false).await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.json::<Value>().await.unwrap()["nextExpectedRanges"], json!(["2097152"]));
    assert_eq!(put(0, 1024, false).await.status(), 416, "bytes in order");
    let last = put(2 * 1024 * 1024, big.len(), false).await;
    assert_eq!(last.status(), 201);
    assert!(
        last.headers()["location"]
            .to_str()
            .unwrap()
            .contains(&format!("/messages/{id}/attachments/"))
    );
    assert!(last.bytes().await.unwrap().is_empty());
    assert_eq!(put(0, 1024, false).await.status(), 404, "the finished session is gone");

    let listed: Value = emu
        .http
        .get(url(&format!("messages/{id}/attachments")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = listed["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a.txt", "big.bin"]);
    let stored = STANDARD.decode(listed["value"][1]["contentBytes"].as_str().unwrap()).unwrap();
    assert!(stored == big, "the attachment holds the uploaded bytes");

    // Drafts and Sent Items.
    let folder = |name: &str| {
        let req = emu.http.get(url(&format!("mailFolders/{name}/messages"))).bearer_auth(&token);
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    assert_eq!(folder("drafts").await.1["value"].as_array().unwrap().len(), 1);
    assert_eq!(folder("SentItems").await.1["value"].as_array().unwrap().len(), 0);
    let sent = emu
        .http
        .post(url(&format!("messages/{id}/send")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 202);
    assert_eq!(folder("drafts").await.1["value"].as_array().unwrap().len(), 0);
    let sent_items = folder("sentitems").await.1;
    assert_eq!(sent_items["value"][0]["attachments"].as_array().unwrap().len(), 2);
    assert_eq!(folder("nowhere").await.0, 404);
    // A session for a message that does not exist.
    let orphan = emu
        .http
        .post(url("messages/nope/attachments/createUploadSession"))
        .bearer_auth(&token)
        .json(&json!({"AttachmentItem": {"attachmentType": "file", "name": "x", "size": 4_000_000}}))
        .send()
        .await
        .unwrap();
    assert_eq!(orphan.status(), 404);
}
