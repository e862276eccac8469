//! `/token`: client credentials, authorization code, refresh, on-behalf-of and device code.

use super::*;

/// Client credentials from the body or HTTP Basic (both allowed: v2-oauth2-client-creds-grant-flow.md).
pub(super) fn client_credentials(headers: &HeaderMap, form: &HashMap<String, String>) -> (Option<String>, Option<String>) {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.split_once(':').map(|(u, p)| (u.to_string(), p.to_string())));
    match basic {
        Some((id, secret)) => (Some(id), Some(secret)),
        None => (form.get("client_id").cloned(), form.get("client_secret").cloned()),
    }
}

pub(super) fn is_public_client(app: &SeedApp) -> bool {
    app.redirect_uris
        .iter()
        .any(|r| r.platform == "public_client" || r.platform == "spa")
}

/// `POST /{tenant}/oauth2/v2.0/token`.
pub async fn token(
    State(emu): State<Emulator>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if tenant_ref(&emu, &tenant).is_none() {
        return unknown_tenant(&emu, &tenant);
    }
    let (client_id, secret) = client_credentials(&headers, &form);
    let Some(client_id) = client_id else {
        return aad_error(
            &emu,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_id'.",
            None,
        );
    };
    let Some((app_tenant, app)) = app_in_tenant(&emu, &tenant, &client_id) else {
        return unknown_app(&emu, &client_id, &tenant);
    };
    // A secret that is sent must be right; a confidential flow needs one.
    if let Some(s) = &secret
        && !app.secrets.iter().any(|known| known == s)
    {
        return aad_error(
            &emu,
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            &format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
            ),
            None,
        );
    }
    let grant = form.get("grant_type").map(String::as_str).unwrap_or("");
    let needs_secret = grant == "client_credentials" || grant == OBO_GRANT || !is_public_client(&app);
    if needs_secret && secret.is_none() {
        return aad_error(
            &emu,
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            None,
        );
    }
    match grant {
        "client_credentials" => {
            let scope = form.get("scope").map(String::as_str).unwrap_or("");
            let access_token = if scope == format!("{GRAPH}/.default") || scope == "00000003-0000-0000-c000-000000000000/.default" {
                graph_token(&emu, &app_tenant, &app, None, &[], false)
            } else if scope == format!("{EXCHANGE}/.default") || scope == "00000002-0000-0ff1-ce00-000000000000/.default" {
                // Exchange Online's resource, for SMTP/IMAP/POP OAuth with SMTP.SendAsApp.
                exchange_token(&emu, &app_tenant, &app)
            } else {
                return aad_error(
                    &emu,
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    70011,
                    &format!("The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid."),
                    None,
                );
            };
            let mut r = Json(json!({
                "token_type": "Bearer",
                "expires_in": ACCESS_TOKEN_SECONDS,
                "ext_expires_in": ACCESS_TOKEN_SECONDS,
                "access_token": access_token,
            }))
            .into_response();
            no_store(r.headers_mut());
            r
        }
        "authorization_code" => redeem_code(&emu, &app_tenant, &app, &form),
        "refresh_token" => redeem_refresh(&emu, &app_tenant, &app, &form),
        "urn:ietf:params:oauth:grant-type:device_code" => device::redeem(&emu, &app.client_id, &form),
        OBO_GRANT => on_behalf_of(&emu, &app_tenant, &app, &form),
        "" => aad_error(
            &emu,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'grant_type'.",
            None,
        ),
        other => aad_error(
            &emu,
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            &format!("The app requested an unsupported grant type '{other}'."),
            None,
        ),
    }
}

pub(super) fn redeem_code(emu: &Emulator, tenant: &SeedTenant, app: &SeedApp, form: &HashMap<String, String>) -> Response {
    let invalid = |code: u32, text: &str| aad_error(emu, StatusCode::BAD_REQUEST, "invalid_grant", code, text, None);
    let code = form.get("code").cloned().unwrap_or_default();
    let grant = {
        let mut codes = emu.codes();
        let Some(grant) = codes.get_mut(&code) else {
            return invalid(70000, "The provided value for the 'code' parameter is not valid.");
        };
        if grant.redeemed {
            return invalid(
                54005,
                "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.",
            );
        }
        // Single use: even a failed redemption below spends the code, as a stolen code must not be retried.
        grant.redeemed = true;
        grant.clone()
    };
    if Utc::now() - grant.issued > Duration::minutes(CODE_LIFETIME_MINUTES) {
        return invalid(
            70008,
            "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.",
        );
    }
    if grant.client_id != app.client_id {
        return invalid(
            70000,
            "The provided value for the 'code' parameter is not valid. The code was issued to a different client.",
        );
    }
    if form.get("redirect_uri") != Some(&grant.redirect_uri) {
        return invalid(
            50148,
            "The redirect_uri is not the same as the one used in the authorization request.",
        );
    }
    if let Some((challenge, method)) = &grant.challenge {
        let verifier = form.get("code_verifier").cloned().unwrap_or_default();
        let computed = if method == "S256" {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(<sha2::Sha256 as sha2::Digest>::digest(verifier.as_bytes()))
        } else {
            verifier
        };
        if &computed != challenge {
            return invalid(
                501481,
                "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
            );
        }
    }
    user_tokens(emu, tenant, app, &grant.user_id, &grant.scopes, grant.nonce.as_deref(), grant.mfa)
}

pub(super) fn redeem_refresh(emu: &Emulator, tenant: &SeedTenant, app: &SeedApp, form: &HashMap<String, String>) -> Response {
    let invalid = |code: u32, text: &str| aad_error(emu, StatusCode::BAD_REQUEST, "invalid_grant", code, text, None);
    let token = form.get("refresh_token").cloned().unwrap_or_default();
    let grant = {
        let mut grants = emu.refresh_grants();
        let Some(grant) = grants.get_mut(&token) else {
            return invalid(
                9002313,
                "Invalid request. Request is malformed or invalid: the refresh token is not valid.",
            );
        };
        if grant.revoked {
            return invalid(
                50173,
                "The provided grant has expired due to it being revoked, a fresh auth token is needed.",
            );
        }
        if Utc::now() - grant.last_used > Duration::days(REFRESH_INACTIVITY_DAYS) {
            return invalid(700082, "The refresh token has expired due to inactivity.");
        }
        if grant.client_id != app.client_id {
            return invalid(70000, "The refresh token was issued to a different client.");
        }
        grant.last_used = Utc::now();
        grant.clone()
    };
    // A narrower scope may be asked for; a wider one needs a new sign-in.
    let scopes = match form.get("scope") {
        Some(s) => {
            let (graph, oidc) = split_scopes(s);
            if let Some(extra) = graph.iter().find(|g| !grant.scopes.iter().any(|h| h.eq_ignore_ascii_case(g))) {
                return aad_error(
                    emu,
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    65001,
                    &format!(
                        "The user or administrator has not consented to use the application with ID '{}'. Scope '{extra}' was not granted at sign-in.",
                        app.client_id
                    ),
                    None,
                );
            }
            graph.into_iter().chain(oidc).collect()
        }
        None => grant.scopes.clone(),
    };
    user_tokens(emu, tenant, app, &grant.user_id, &scopes, None, grant.mfa)
}

/// The on-behalf-of grant (v2-oauth2-on-behalf-of-flow.md): a middle tier trades the token a
/// client sent it — whose `aud` must be the middle tier itself — for a Graph token for the same
/// user. A user who must now pass MFA gets `interaction_required` with a claims challenge.
pub(super) fn on_behalf_of(emu: &Emulator, tenant: &SeedTenant, app: &SeedApp, form: &HashMap<String, String>) -> Response {
    let invalid = |code: u32, text: &str| aad_error(emu, StatusCode::BAD_REQUEST, "invalid_grant", code, text, None);
    if form.get("requested_token_use").map(String::as_str) != Some("on_behalf_of") {
        return aad_error(
            emu,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'requested_token_use' with the value 'on_behalf_of'.",
            None,
        );
    }
    let Some(assertion) = form.get("assertion") else {
        return aad_error(
            emu,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'assertion'.",
            None,
        );
    };
    let claims = match emu.keys().verify(assertion) {
        Ok(c) => c,
        Err(_) => return invalid(50013, "Assertion failed signature validation."),
    };
    if claims["exp"].as_i64().is_none_or(|exp| exp <= Utc::now().timestamp()) {
        return invalid(500133, "Assertion is not within its valid time range.");
    }
    let aud = claims["aud"].as_str().unwrap_or_default();
    if !aud.eq_ignore_ascii_case(&app.client_id) && !app.identifier_uris.iter().any(|u| u.eq_ignore_ascii_case(aud)) {
        return invalid(50013, "Assertion audience does not match the Client app presenting the assertion.");
    }
    if claims["tid"].as_str() != Some(tenant.id.as_str()) {
        return invalid(50013, "Assertion was issued by another tenant.");
    }
    let Some(user) = emu.user(&tenant.id, claims["oid"].as_str().unwrap_or_default()) else {
        return invalid(50034, "The user account does not exist in the directory.");
    };
    let scope = form.get("scope").cloned().unwrap_or_default();
    let scopes = match scopes_granted(emu, &tenant.id, app, &scope) {
        Ok(s) if !s.is_empty() => s,
        Ok(_) => {
            return aad_error(
                emu,
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'scope'.",
                None,
            );
        }
        Err(missing) => {
            return invalid(
                65001,
                &format!(
                    "The user or administrator has not consented to use the application with ID '{}'. Scope '{missing}' is not granted.",
                    app.client_id
                ),
            );
        }
    };
    let passed_mfa = claims["amr"].as_array().is_some_and(|a| a.iter().any(|m| m == "mfa"));
    if user.mfa && !passed_mfa {
        let challenge = format!(
            "{{\"access_token\":{{\"capolids\":{{\"essential\":true,\"values\":[\"{}\"]}}}}}}",
            uuid::Uuid::new_v4()
        );
        return aad_error(
            emu,
            StatusCode::BAD_REQUEST,
            "interaction_required",
            50076,
            &format!(
                "Due to a configuration change made by your administrator, or because you moved to a new location, you must use multi-factor authentication to access '{GRAPH}'."
            ),
            Some(&challenge),
        );
    }
    user_tokens(emu, tenant, app, &user.id, &scopes, None, passed_mfa)
}
