//! The add-in's single sign-on token (`GET /api/v1/me`), validated as entra-docs
//! `docs/identity-platform/access-tokens.md` ("Validate tokens") and SPEC §3.5 say, then
//! exchanged on-behalf-of (`v2-oauth2-on-behalf-of-flow.md`); `claims-challenge.md` for the
//! `interaction_required` answer. Forged tokens are signed here with the emulator's own keys,
//! so each one differs from a valid token in exactly the rule it tests.

use crate::helpers::{Answer, Backend, TestApp, spawn_app_with};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use officebridge::emulator::Emulator;
use officebridge::emulator::keys::KeySet;
use officebridge::emulator::seed::{DEMO_CLIENT_ID, DEMO_TENANT_ID, DEMO_USER, Seed};
use serde_json::{Value, json};

struct Sso {
    app: TestApp,
    emu: Emulator,
    http: reqwest::Client,
}

async fn setup(backend: Backend) -> Option<Sso> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let emu = Emulator::new(Seed::demo(), &base);
    let router = emu.router();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let app = spawn_app_with(backend, |s| {
        s.allow_emulator = true;
        s.emulator_url = Some(base.clone());
    })
    .await?;
    for (code, tid, authority) in [
        ("DEMO", DEMO_TENANT_ID, base.as_str()),
        ("OTHER", "0c9e8f7a-1b2c-4d3e-8f4a-5b6c7d8e9f0a", base.as_str()),
    ] {
        let t = app
            .admin_post(
                "/api/v1/tenants",
                &json!({
                    "code": code, "description": code, "tenant_id": tid, "client_id": DEMO_CLIENT_ID,
                    "platform": "public_client", "redirect_url": "http://localhost",
                    "client_secret": "demo-client-secret", "authority": authority, "graph_endpoint": authority,
                }),
            )
            .await;
        assert_eq!(t.status, 201, "{}", t.text);
    }
    app.admin_put(
        "/api/v1/operators/JDOE",
        &json!({"enabled": true, "tenant": "DEMO", "email": DEMO_USER}),
    )
    .await;
    app.admin_put(
        "/api/v1/operators/BOB",
        &json!({"enabled": true, "tenant": "OTHER", "email": "bob@other.example"}),
    )
    .await;
    Some(Sso {
        app,
        emu,
        http: reqwest::Client::new(),
    })
}

impl Sso {
    /// The claims of a valid token for officebridge's API, as the emulator issues it.
    fn claims(&self) -> Value {
        let now = chrono::Utc::now().timestamp();
        let user = &Seed::demo().tenants[0].users[0];
        assert_eq!(user.user_principal_name, DEMO_USER);
        json!({
            "aud": DEMO_CLIENT_ID,
            "iss": format!("{}/{DEMO_TENANT_ID}/v2.0", self.emu.base_url),
            "iat": now, "nbf": now, "exp": now + 3600,
            "azp": "ea5a67f6-b6f3-4338-b240-c655ddc3cc8e",
            "oid": user.id, "sub": user.id, "tid": DEMO_TENANT_ID,
            "preferred_username": DEMO_USER, "name": user.display_name,
            "scp": "access_as_user", "ver": "2.0", "amr": ["pwd"],
        })
    }

    fn sign(&self, claims: &Value) -> String {
        self.emu.keys().sign(claims, None)
    }

    fn with(&self, change: impl FnOnce(&mut Value)) -> String {
        let mut c = self.claims();
        change(&mut c);
        self.sign(&c)
    }

    async fn me(&self, token: &str, operator: Option<&str>) -> Answer {
        let mut req = self.http.get(self.app.url("/api/v1/me")).bearer_auth(token);
        if let Some(op) = operator {
            req = req.header("x-operator", op);
        }
        Answer::from(req.send().await.unwrap()).await
    }

    async fn jwks_fetches(&self) -> usize {
        let log = crate::helpers::emulator_requests(&self.http, &self.emu.base_url).await;
        log.iter()
            .filter(|r| r["path"].as_str().unwrap().ends_with("/discovery/v2.0/keys"))
            .count()
    }
}

fn unsigned(header: Value, claims: &Value) -> String {
    format!("{}.{}.", B64.encode(header.to_string()), B64.encode(claims.to_string()))
}

async fn run(f: impl AsyncFn(Sso)) {
    f(setup(Backend::Sqlite).await.unwrap()).await;
    match setup(Backend::Postgres).await {
        Some(s) => f(s).await,
        None => eprintln!("skipped: OFFICEBRIDGE_TEST_POSTGRES_URL is not set"),
    }
}

#[tokio::test]
async fn a_valid_token_reaches_graph_on_behalf_of_its_user() {
    run(async |s: Sso| {
        let ok = s.me(&s.sign(&s.claims()), None).await;
        assert_eq!(ok.status, 200, "{}", ok.text);
        assert_eq!(ok.json["operator"], "JDOE");
        assert_eq!(ok.json["tenant"], "DEMO");
        assert_eq!(ok.json["mail"], DEMO_USER, "Graph's /me answered with the user's token");
        // The Graph call on the user's behalf goes through the Graph client: a 503 is retried.
        let fault = s
            .http
            .post(format!("{}/_emulator/faults", s.emu.base_url))
            .json(&json!([{"method": "GET", "path": "/v1.0/me", "status": 503, "retry_after": "0", "times": 1}]))
            .send()
            .await
            .unwrap();
        assert_eq!(fault.status(), 204);
        assert_eq!(s.me(&s.sign(&s.claims()), None).await.status, 200);
        // The operator may be named, when it is the token's user.
        assert_eq!(s.me(&s.sign(&s.claims()), Some("JDOE")).await.status, 200);
        // The Application ID URI is an accepted audience too; nbf/exp within the 60 s leeway.
        let uri = s.with(|c| c["aud"] = json!(format!("api://localhost/{DEMO_CLIENT_ID}")));
        let via_uri = s.me(&uri, None).await;
        assert_eq!(via_uri.status, 200, "{}", via_uri.text);
        let skewed = s.with(|c| c["nbf"] = json!(chrono::Utc::now().timestamp() + 30));
        assert_eq!(s.me(&skewed, None).await.status, 200);
        // Within our leeway but expired for the identity platform: its invalid_grant is a 401
        // (the add-in gets a fresh token), not a 502.
        let stale = s.with(|c| c["exp"] = json!(chrono::Utc::now().timestamp() - 30));
        s.me(&stale, None).await.assert_problem(401, None);
    })
    .await;
}

#[tokio::test]
async fn forged_tokens_are_refused() {
    run(async |s: Sso| {
        let claims = s.claims();
        let cases: Vec<(&str, String)> = vec![
            ("alg none", unsigned(json!({"alg": "none", "typ": "JWT"}), &claims)),
            ("HS256 signed with the public key", {
                let jwks = s.emu.keys().jwks();
                let n = B64.decode(jwks["keys"][0]["n"].as_str().unwrap()).unwrap();
                let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
                h.kid = jwks["keys"][0]["kid"].as_str().map(String::from);
                jsonwebtoken::encode(&h, &claims, &jsonwebtoken::EncodingKey::from_secret(&n)).unwrap()
            }),
            ("wrong aud", s.with(|c| c["aud"] = json!("https://graph.microsoft.com"))),
            (
                "wrong iss",
                s.with(|c| c["iss"] = json!(format!("https://sts.windows.net/{DEMO_TENANT_ID}/"))),
            ),
            (
                "tid not configured",
                s.with(|c| {
                    c["tid"] = json!("11111111-2222-4333-8444-555555555555");
                    c["iss"] = json!(format!("{}/11111111-2222-4333-8444-555555555555/v2.0", s.emu.base_url));
                }),
            ),
            ("expired", s.with(|c| c["exp"] = json!(chrono::Utc::now().timestamp() - 120))),
            ("not yet valid", s.with(|c| c["nbf"] = json!(chrono::Utc::now().timestamp() + 600))),
            ("no access_as_user", s.with(|c| c["scp"] = json!("User.Read"))),
            ("unknown kid", KeySet::new().sign(&claims, None)),
            ("tampered payload", {
                let t = s.sign(&claims);
                let parts: Vec<&str> = t.split('.').collect();
                let mut c = claims.clone();
                c["preferred_username"] = json!("ceo@demo.onmicrosoft.com");
                format!("{}.{}.{}", parts[0], B64.encode(c.to_string()), parts[2])
            }),
            ("not a JWT", "not-a-token".into()),
        ];
        for (name, token) in cases {
            let a = s.me(&token, None).await;
            assert_eq!(a.status, 401, "{name}: {}", a.text);
            assert_eq!(a.content_type, "application/problem+json", "{name}");
        }
        let missing = Answer::from(s.http.get(s.app.url("/api/v1/me")).send().await.unwrap()).await;
        missing.assert_problem(401, None);
    })
    .await;
}

/// Unknown `kid`s trigger at most one JWKS refetch a minute, however many arrive.
#[tokio::test]
async fn a_flood_of_unknown_kids_does_not_flood_the_jwks_endpoint() {
    run(async |s: Sso| {
        assert_eq!(s.me(&s.sign(&s.claims()), None).await.status, 200);
        let after_first = s.jwks_fetches().await;
        assert_eq!(after_first, 1);
        for i in 0..25 {
            // Signed by a key the issuer does not publish (its kid is unknown).
            let forged = s.emu.keys().sign(&s.claims(), Some(json!({"kid": format!("forged-{i}")})));
            assert_eq!(s.me(&forged, None).await.status, 401);
        }
        assert_eq!(s.jwks_fetches().await, 1, "no refetch within a minute of the last one");
    })
    .await;
}

/// A valid token of tenant A never acts for an operator of tenant B.
#[tokio::test]
async fn a_token_of_one_tenant_cannot_reach_another_tenants_operator() {
    run(async |s: Sso| {
        let a = s.me(&s.sign(&s.claims()), Some("BOB")).await;
        a.assert_problem(403, None);
        // Nor an operator of the same tenant who is someone else.
        s.app
            .admin_put(
                "/api/v1/operators/EVE",
                &json!({"enabled": true, "tenant": "DEMO", "email": "eve@demo.onmicrosoft.com"}),
            )
            .await;
        s.me(&s.sign(&s.claims()), Some("EVE")).await.assert_problem(403, None);
    })
    .await;
}

/// claims-challenge.md: when Conditional Access wants MFA the on-behalf-of exchange answers
/// `interaction_required` with claims; the add-in gets a 401 whose WWW-Authenticate carries them.
#[tokio::test]
async fn interaction_required_goes_back_as_a_claims_challenge() {
    run(async |s: Sso| {
        let r = s
            .http
            .post(format!("{}/_emulator/users/{DEMO_USER}/mfa", s.emu.base_url))
            .json(&json!({"required": true}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        let resp = s
            .http
            .get(s.app.url("/api/v1/me"))
            .bearer_auth(s.sign(&s.claims()))
            .send()
            .await
            .unwrap();
        let challenge = resp.headers()["www-authenticate"].to_str().unwrap().to_string();
        let a = Answer::from(resp).await;
        a.assert_problem(401, None);
        assert_eq!(a.json["type"], "/problems/interaction-required");
        assert!(challenge.contains("error=\"insufficient_claims\""), "{challenge}");
        let claims = challenge.split("claims=\"").nth(1).unwrap().trim_end_matches('"');
        let decoded = base64::engine::general_purpose::STANDARD.decode(claims).unwrap();
        let claims: Value = serde_json::from_slice(&decoded).unwrap();
        assert!(claims["access_token"]["capolids"].is_object(), "{claims}");
        // With MFA done (amr contains mfa), the exchange succeeds.
        let mfa = s.with(|c| c["amr"] = json!(["pwd", "mfa"]));
        assert_eq!(s.me(&mfa, None).await.status, 200);
        s.emu.reset(Seed::demo());
    })
    .await;
}

/// The Outlook pane searches contacts with its single sign-on token: the sources read the
/// user's mailbox and directory with the on-behalf-of token, and a token never searches as
/// another operator.
#[tokio::test]
async fn a_valid_token_searches_contacts_on_behalf_of_its_user() {
    run(async |s: Sso| {
        let token = s.sign(&s.claims());
        let search = |q: &str, operator: Option<&str>| {
            let mut req = s.http.get(s.app.url(&format!("/api/v1/contacts/search?q={q}"))).bearer_auth(&token);
            if let Some(op) = operator {
                req = req.header("x-operator", op);
            }
            req.send()
        };
        let a = Answer::from(search("ada", None).await.unwrap()).await;
        assert_eq!(a.status, 200, "{}", a.text);
        assert_eq!(a.json["sources"]["personal"]["status"], "ok", "{}", a.text);
        assert_eq!(a.json["sources"]["people"]["status"], "ok", "{}", a.text);
        assert_eq!(a.json["sources"]["directory"]["status"], "ok", "{}", a.text);
        let first = &a.json["results"][0];
        assert_eq!(first["address"], "ada@fabrikam.com", "{}", a.text);
        assert!(first["sources"].as_array().unwrap().contains(&json!("personal")), "{}", a.text);
        // The mailbox read is the token's user's own (`/me/…`), with a delegated token.
        let log = crate::helpers::emulator_requests(&s.http, &s.emu.base_url).await;
        assert!(log.iter().any(|r| r["path"] == "/v1.0/me/people" && r["status"] == 200), "{log:?}");
        assert!(log.iter().any(|r| r["path"] == "/v1.0/users" && r["status"] == 200), "{log:?}");
        // Naming the token's own operator is fine; another tenant's operator is not.
        let named = Answer::from(search("ada", Some("JDOE")).await.unwrap()).await;
        assert_eq!(named.status, 200, "{}", named.text);
        Answer::from(search("ada", Some("BOB")).await.unwrap())
            .await
            .assert_problem(403, None);
        // Without a token or key: 401.
        let bare = Answer::from(s.http.get(s.app.url("/api/v1/contacts/search?q=ada")).send().await.unwrap()).await;
        bare.assert_problem(401, None);
    })
    .await;
}

/// The Excel pane reads and publishes grids with its single sign-on token: its user's
/// grids only; a token for another audience is a 401, another tenant's operator's grid a 403.
#[tokio::test]
async fn a_valid_token_reaches_its_users_grids_only() {
    run(async |s: Sso| {
        let grid = json!({"key": "sku", "sheets": [{"name": "Stock",
            "columns": [{"key": "sku", "type": "text"}, {"key": "qty", "type": "integer"}],
            "rows": [["A-1", 3]]}]});
        let share = |op: &'static str| {
            s.http
                .post(s.app.url("/api/v1/grids"))
                .bearer_auth(&s.app.client_key)
                .header("x-operator", op)
                .json(&grid)
                .send()
        };
        let mine = Answer::from(share("JDOE").await.unwrap()).await;
        assert_eq!(mine.status, 201, "{}", mine.text);
        let theirs = Answer::from(share("BOB").await.unwrap()).await;
        assert_eq!(theirs.status, 201, "{}", theirs.text);
        let token = s.sign(&s.claims());
        let get = |path: String, token: String| s.http.get(s.app.url(&path)).bearer_auth(token).send();
        let listed = Answer::from(get("/api/v1/grids".into(), token.clone()).await.unwrap()).await;
        assert_eq!(listed.status, 200, "{}", listed.text);
        let items = listed.json["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{}", listed.text);
        assert_eq!(items[0]["id"], mine.json["id"]);
        let rows = Answer::from(
            get(format!("/api/v1/grids/{}/rows", mine.json["id"].as_str().unwrap()), token.clone())
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(rows.status, 200, "{}", rows.text);
        assert_eq!(rows.json["rows"], json!([["A-1", 3.0]]));
        let published = s
            .http
            .post(s.app.url(&format!("/api/v1/grids/{}/changes", mine.json["id"].as_str().unwrap())))
            .bearer_auth(&token)
            .json(&json!({"header": ["sku", "qty"], "rows": [["A-1", 4]]}))
            .send()
            .await
            .unwrap();
        let published = Answer::from(published).await;
        assert_eq!(published.status, 200, "{}", published.text);
        assert_eq!(published.json["changes"]["changed"][0]["fields"]["qty"]["to"], 4);
        let foreign = format!("/api/v1/grids/{}/rows", theirs.json["id"].as_str().unwrap());
        Answer::from(get(foreign, token.clone()).await.unwrap())
            .await
            .assert_problem(403, None);
        let wrong_audience = s.with(|c| c["aud"] = json!("https://graph.microsoft.com"));
        Answer::from(get("/api/v1/grids".into(), wrong_audience).await.unwrap())
            .await
            .assert_problem(401, None);
    })
    .await;
}
