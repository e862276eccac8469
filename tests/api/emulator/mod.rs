//! The Microsoft 365 emulator against Microsoft's documentation. Each test names the page of
//! MicrosoftDocs/entra-docs or microsoftgraph/microsoft-graph-docs-contrib it checks.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use officebridge::emulator::seed::{DEMO_CLIENT_ID, DEMO_DOMAIN, DEMO_TENANT_ID, DEMO_USER, Seed};
use serde_json::{Value, json};

mod directory;
mod drive;
mod graph;
mod identity;
mod mail;

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

    /// `POST url` with a bearer token and a JSON body.
    async fn post_json(&self, token: &str, url: impl reqwest::IntoUrl, body: &Value) -> reqwest::Response {
        self.http.post(url).bearer_auth(token).json(body).send().await.unwrap()
    }

    /// `GET url` without credentials (test hooks, discovery, keys).
    async fn get_unauthenticated(&self, url: impl reqwest::IntoUrl) -> reqwest::Response {
        self.http.get(url).send().await.unwrap()
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
