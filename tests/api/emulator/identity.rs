//! The identity platform: discovery, the token endpoint's grants and errors, authorize, MFA,
//! device code, on-behalf-of, and a third-party OAuth client against it.

use super::*;

/// entra-docs: docs/identity-platform/v2-protocols-oidc.md ("Find your app's OpenID configuration document URI").
#[tokio::test]
async fn discovery_documents_per_tenant_and_for_common() {
    let emu = emulator().await;
    for tenant in [DEMO_TENANT_ID, DEMO_DOMAIN] {
        let doc: Value = emu
            .get_unauthenticated(format!("{}/{tenant}/v2.0/.well-known/openid-configuration", emu.base))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(doc["issuer"], format!("{}/{DEMO_TENANT_ID}/v2.0", emu.base));
        assert_eq!(doc["token_endpoint"], format!("{}/{DEMO_TENANT_ID}/oauth2/v2.0/token", emu.base));
        assert_eq!(doc["jwks_uri"], format!("{}/{DEMO_TENANT_ID}/discovery/v2.0/keys", emu.base));
        assert_eq!(doc["id_token_signing_alg_values_supported"], json!(["RS256"]));
    }
    let common: Value = emu
        .get_unauthenticated(format!("{}/common/v2.0/.well-known/openid-configuration", emu.base))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        common["issuer"],
        format!("{}/{{tenantid}}/v2.0", emu.base),
        "the multi-tenant issuer is a template"
    );
    let unknown = emu
        .get_unauthenticated(format!("{}/nope.example/v2.0/.well-known/openid-configuration", emu.base))
        .await;
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
        .get_unauthenticated(format!("{}/{DEMO_TENANT_ID}/discovery/v2.0/keys", emu.base))
        .await
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
    // reply-url.md, "Localhost exceptions": the port of a loopback redirect is not compared —
    // for localhost and for 127.0.0.1 alike — but the host and the path are.
    for (uri, registered) in [
        ("http://localhost:5123/auth/callback", true),
        ("http://127.0.0.1:5123/auth/callback", true),
        ("http://127.0.0.1:5123/elsewhere", false),
        ("http://127.0.0.2:5123/auth/callback", false),
    ] {
        let resp = authorize(vec![
            ("client_id", DEMO_CLIENT_ID),
            ("response_type", "code"),
            ("redirect_uri", uri),
            ("scope", "User.Read"),
        ])
        .await
        .unwrap();
        let status = resp.status();
        let page = resp.text().await.unwrap();
        assert_eq!(!page.contains("AADSTS50011"), registered, "{uri}: {status}");
    }
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
    // The step page offers Approve and Decline (issue 18: it had no button); pressing one
    // sends only what the page renders.
    let page = step.text().await.unwrap();
    let approve = form_submission(&page, "Approve");
    assert_eq!(login_fields(emu, approve).await, 200);
    let (status, tokens) = poll(mfa["device_code"].as_str().unwrap().into()).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(claims(tokens["access_token"].as_str().unwrap()).1["amr"], json!(["pwd", "mfa"]));

    let declined = start().await;
    let step = login(vec![
        ("user_code", declined["user_code"].as_str().unwrap().into()),
        ("user", "mfa.user@demo.onmicrosoft.com".into()),
    ])
    .await
    .unwrap();
    let decline = form_submission(&step.text().await.unwrap(), "Decline");
    assert_eq!(login_fields(emu, decline).await, 200);
    assert_eq!(
        poll(declined["device_code"].as_str().unwrap().into()).await.1["error"],
        "authorization_declined"
    );
}

/// What a browser sends when `button` (by its label) of the page's form is pressed: the
/// form's inputs with their values, and the button's own name and value if it has one.
fn form_submission(html: &str, button: &str) -> Vec<(String, String)> {
    let attr = |tag: &str, name: &str| {
        let key = format!("{name}=\"");
        tag.find(&key).map(|i| {
            let rest = &tag[i + key.len()..];
            rest[..rest.find('"').unwrap()].to_string()
        })
    };
    assert!(html.contains("<form"), "the page has a form: {html}");
    let form = html
        .split("<form")
        .skip(1)
        .map(|f| &f[..f.find("</form>").unwrap()])
        .find(|f| {
            f.split("<button")
                .skip(1)
                .any(|t| t[t.find('>').unwrap() + 1..].starts_with(button))
        })
        .unwrap_or_else(|| panic!("no form with a {button} button in {html}"));
    let mut fields: Vec<(String, String)> = form
        .split("<input")
        .skip(1)
        .filter_map(|t| {
            let tag = &t[..t.find('>').unwrap()];
            Some((attr(tag, "name")?, attr(tag, "value").unwrap_or_default()))
        })
        .collect();
    let pressed = form
        .split("<button")
        .skip(1)
        .find(|t| t[t.find('>').unwrap() + 1..].starts_with(button))
        .unwrap_or_else(|| panic!("no {button} button in {form}"));
    let tag = &pressed[..pressed.find('>').unwrap()];
    if let (Some(name), Some(value)) = (attr(tag, "name"), attr(tag, "value")) {
        fields.push((name, value));
    }
    fields
}

/// The authorization page and its second-factor step, driven by the fields they render (the
/// device-code page's step is the same; issue 18).
#[tokio::test]
async fn the_sign_in_pages_are_completed_through_what_they_render() {
    let emu = emulator().await;
    let endpoint = format!("{}/{DEMO_TENANT_ID}/oauth2/v2.0/authorize", emu.base);
    for (button, approved) in [("Approve", true), ("Decline", false)] {
        let url = url::Url::parse_with_params(
            &endpoint,
            &[
                ("client_id", DEMO_CLIENT_ID),
                ("response_type", "code"),
                ("redirect_uri", "https://localhost"),
                ("scope", "User.Read"),
                ("state", "s1"),
            ],
        )
        .unwrap();
        let picker = emu.http.get(url).send().await.unwrap().text().await.unwrap();
        let pick = form_submission(&picker, "MFA User");
        let step = emu.http.post(&endpoint).form(&pick).send().await.unwrap();
        assert_eq!(step.headers()["x-emulator-mfa"], "required");
        let press = form_submission(&step.text().await.unwrap(), button);
        let back = emu.http.post(&endpoint).form(&press).send().await.unwrap();
        assert_eq!(back.status(), 302, "{button}");
        let location = url::Url::parse(back.headers()["location"].to_str().unwrap()).unwrap();
        assert_eq!(query(&location, "state").as_deref(), Some("s1"));
        if approved {
            assert!(query(&location, "code").is_some(), "{location}");
        } else {
            assert_eq!(query(&location, "error").as_deref(), Some("access_denied"), "{location}");
            assert!(query(&location, "code").is_none());
        }
    }
}

async fn login_fields(emu: &Emu, fields: Vec<(String, String)>) -> u16 {
    let resp = emu
        .http
        .post(format!("{}/devicelogin", emu.base))
        .form(&fields)
        .send()
        .await
        .unwrap();
    resp.status().as_u16()
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
