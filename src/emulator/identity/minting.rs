//! Tokens as the identity platform mints them: Graph v1 tokens, v2 tokens for an app's own
//! API, ID tokens.

use super::*;

/// An application token for Exchange Online (`aud` `https://outlook.office365.com`, the
/// app's Exchange roles such as `SMTP.SendAsApp`), as client credentials with the scope
/// `https://outlook.office365.com/.default` issue it for SMTP, IMAP and POP OAuth.
pub(super) fn exchange_token(emu: &Emulator, tenant: &SeedTenant, app: &SeedApp) -> String {
    let mut claims = app_claims(tenant, app, EXCHANGE);
    claims["roles"] = json!(app.exchange_roles);
    emu.keys().sign(&claims, None)
}

/// What every v1 access token of an app carries.
fn app_claims(tenant: &SeedTenant, app: &SeedApp, aud: &str) -> serde_json::Value {
    let now = Utc::now().timestamp();
    json!({
        "aud": aud,
        "iss": format!("https://sts.windows.net/{}/", tenant.id),
        "iat": now, "nbf": now, "exp": now + ACCESS_TOKEN_SECONDS + 1,
        "appid": app.client_id,
        "app_displayname": app.display_name,
        "tid": tenant.id,
        "ver": "1.0",
        "uti": opaque()[..22].to_string(),
        "idtyp": "app",
        "oid": service_principal(app),
        "sub": service_principal(app),
    })
}

/// The service principal's object id: stable per app, distinct from the client id.
fn service_principal(app: &SeedApp) -> String {
    let digest = <sha2::Sha256 as sha2::Digest>::digest(app.client_id.as_bytes());
    let sp: [u8; 16] = digest[..16].try_into().expect("16 bytes");
    uuid::Builder::from_random_bytes(sp).into_uuid().to_string()
}

/// A Graph-audience access token as the identity platform issues it: v1 issuer, a `nonce`
/// in the header (access-tokens.md: "tokens for Microsoft Graph ... can't be validated").
pub(super) fn graph_token(
    emu: &Emulator,
    tenant: &SeedTenant,
    app: &SeedApp,
    user: Option<&crate::emulator::seed::SeedUser>,
    scopes: &[String],
    mfa: bool,
) -> String {
    let mut claims = app_claims(tenant, app, GRAPH);
    match user {
        Some(u) => {
            claims["idtyp"] = json!("user");
            claims["oid"] = json!(u.id);
            claims["sub"] = json!(u.id);
            claims["upn"] = json!(u.user_principal_name);
            claims["unique_name"] = json!(u.user_principal_name);
            claims["name"] = json!(u.display_name);
            claims["amr"] = amr(mfa);
            claims["scp"] = json!(
                scopes
                    .iter()
                    .filter(|s| !OIDC_SCOPES[3..].contains(&s.as_str()))
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
        None => claims["roles"] = json!(app.app_roles),
    }
    emu.keys().sign(&claims, Some(json!({"nonce": opaque()})))
}

pub(super) fn id_token(
    emu: &Emulator,
    tenant: &SeedTenant,
    app: &SeedApp,
    user: &crate::emulator::seed::SeedUser,
    nonce: Option<&str>,
) -> String {
    let now = Utc::now().timestamp();
    let mut claims = json!({
        "aud": app.client_id,
        "iss": format!("{}/{}/v2.0", emu.base_url, tenant.id),
        "iat": now, "nbf": now, "exp": now + 3600,
        "name": user.display_name,
        "oid": user.id,
        "preferred_username": user.user_principal_name,
        "sub": user.id,
        "tid": tenant.id,
        "ver": "2.0",
    });
    if let Some(n) = nonce {
        claims["nonce"] = json!(n);
    }
    emu.keys().sign(&claims, None)
}

pub(super) fn amr(mfa: bool) -> serde_json::Value {
    if mfa { json!(["pwd", "mfa"]) } else { json!(["pwd"]) }
}

/// A v2 access token for an app's own API (access-tokens.md, access-token-claims-reference.md):
/// `aud` the API's client id, `iss` the tenant's v2 issuer, `scp`, `azp` the calling client.
pub(super) fn api_token(
    emu: &Emulator,
    tenant: &SeedTenant,
    client: &SeedApp,
    api: &SeedApp,
    user: &crate::emulator::seed::SeedUser,
    scopes: &[String],
    mfa: bool,
) -> String {
    let now = Utc::now().timestamp();
    let names: Vec<&str> = scopes.iter().filter_map(|s| s.rsplit_once('/').map(|(_, n)| n)).collect();
    emu.keys().sign(
        &json!({
            "aud": api.client_id,
            "iss": format!("{}/{}/v2.0", emu.base_url, tenant.id),
            "iat": now, "nbf": now, "exp": now + ACCESS_TOKEN_SECONDS + 1,
            "azp": client.client_id,
            "azpacr": "0",
            "name": user.display_name,
            "oid": user.id,
            "preferred_username": user.user_principal_name,
            "scp": names.join(" "),
            "sub": user.id,
            "tid": tenant.id,
            "amr": amr(mfa),
            "ver": "2.0",
        }),
        None,
    )
}

/// Issues access (and refresh and ID) tokens for a user: for Graph, or for the app's own API
/// when that is what the scopes name.
pub fn user_tokens(
    emu: &Emulator,
    tenant: &SeedTenant,
    app: &SeedApp,
    user_id: &str,
    scopes: &[String],
    nonce: Option<&str>,
    mfa: bool,
) -> Response {
    let Some(user) = emu.user(&tenant.id, user_id) else {
        return aad_error(
            emu,
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            50034,
            "The user account does not exist in the directory.",
            None,
        );
    };
    let mut body = json!({
        "token_type": "Bearer",
        "scope": scopes.iter().filter(|s| !OIDC_SCOPES.contains(&s.as_str())).map(|s| format!("{GRAPH}/{s}")).chain(scopes.iter().filter(|s| OIDC_SCOPES.contains(&s.as_str())).cloned()).collect::<Vec<_>>().join(" "),
        "expires_in": ACCESS_TOKEN_SECONDS,
        "ext_expires_in": ACCESS_TOKEN_SECONDS,
        "access_token": match scopes.iter().find(|s| is_api_scope(s)).and_then(|s| api_app(emu, &tenant.id, s)) {
            Some(api) => api_token(emu, tenant, app, &api, &user, scopes, mfa),
            None => graph_token(emu, tenant, app, Some(&user), scopes, mfa),
        },
    });
    if scopes.iter().any(|s| is_api_scope(s)) {
        body["scope"] = json!(
            scopes
                .iter()
                .filter(|s| !OIDC_SCOPES.contains(&s.as_str()))
                .cloned()
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    if scopes.iter().any(|s| s == "offline_access") {
        let refresh = opaque();
        emu.refresh_grants().insert(
            refresh.clone(),
            RefreshGrant {
                tenant_id: tenant.id.clone(),
                client_id: app.client_id.clone(),
                user_id: user.id.clone(),
                scopes: scopes.to_vec(),
                last_used: Utc::now(),
                revoked: false,
                mfa,
            },
        );
        body["refresh_token"] = json!(refresh);
    }
    if scopes.iter().any(|s| s == "openid") {
        body["id_token"] = json!(id_token(emu, tenant, app, &user, nonce));
    }
    let mut r = Json(body).into_response();
    no_store(r.headers_mut());
    r
}
