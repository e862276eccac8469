//! `/authorize`: the account picker, the MFA step, redirect-URI checks and consent.

use super::*;

/// A redirect URI is registered when it matches one of the app's exactly — except that for
/// `http://localhost` the port may differ (native apps pick a free port; how-to-add-redirect-uri.md).
pub(super) fn redirect_registered(app: &SeedApp, uri: &str) -> bool {
    app.redirect_uris.iter().any(|r| {
        if r.uri == uri {
            return true;
        }
        match (url::Url::parse(&r.uri), url::Url::parse(uri)) {
            // reply-url.md, "Localhost exceptions": for http://localhost and the loopback IP
            // literals the port is not compared; scheme, host and path are.
            (Ok(reg), Ok(got)) => {
                let loopback = matches!(reg.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
                reg.scheme() == "http" && got.scheme() == "http" && loopback && reg.host_str() == got.host_str() && reg.path() == got.path()
            }
            _ => false,
        }
    })
}

/// `GET /{tenant}/oauth2/v2.0/authorize`: checks the request and shows the sign-in page.
pub async fn authorize(State(emu): State<Emulator>, Path(tenant): Path<String>, Query(q): Query<HashMap<String, String>>) -> Response {
    if tenant_ref(&emu, &tenant).is_none() {
        return page(
            StatusCode::BAD_REQUEST,
            "Sign in failed",
            &format!("<p>AADSTS90002: Tenant '{}' not found.</p>", escape(&tenant)),
        );
    }
    let client_id = q.get("client_id").map(String::as_str).unwrap_or("");
    let app = app_in_tenant(&emu, &tenant, client_id);
    let Some((app_tenant, app)) = app else {
        return page(
            StatusCode::BAD_REQUEST,
            "Sign in failed",
            &format!(
                "<p>AADSTS700016: Application with identifier '{}' was not found in the directory '{}'.</p>",
                escape(client_id),
                escape(&tenant)
            ),
        );
    };
    let redirect_uri = q.get("redirect_uri").cloned().unwrap_or_default();
    // An unregistered redirect URI is never redirected to: the error is shown here.
    if !redirect_registered(&app, &redirect_uri) {
        return page(
            StatusCode::BAD_REQUEST,
            "Sign in failed",
            &format!(
                "<p>AADSTS50011: The redirect URI '{}' specified in the request does not match the redirect URIs configured for the application '{}'.</p>",
                escape(&redirect_uri),
                escape(client_id)
            ),
        );
    }
    let state = q.get("state").map(String::as_str);
    if q.get("response_type").map(String::as_str) != Some("code") {
        return redirect_error(
            &redirect_uri,
            state,
            "unsupported_response_type",
            "AADSTS700054: response_type must be 'code' for this emulator.",
        );
    }
    let Some(scope) = q.get("scope").filter(|s| !s.trim().is_empty()) else {
        return redirect_error(
            &redirect_uri,
            state,
            "invalid_request",
            "AADSTS900144: The request body must contain the following parameter: 'scope'.",
        );
    };
    let scopes = match scopes_granted(&emu, &app_tenant.id, &app, scope) {
        Ok(s) => s,
        Err(missing) => {
            return redirect_error(
                &redirect_uri,
                state,
                "consent_required",
                &format!(
                    "AADSTS65001: The user or administrator has not consented to use the application with ID '{client_id}'. Scope '{missing}' is not granted."
                ),
            );
        }
    };
    let challenge = match (q.get("code_challenge"), q.get("code_challenge_method").map(String::as_str)) {
        (None, _) => None,
        (Some(c), None | Some("plain")) => Some((c.clone(), "plain".to_string())),
        (Some(c), Some("S256")) => Some((c.clone(), "S256".to_string())),
        (Some(_), Some(other)) => {
            return redirect_error(
                &redirect_uri,
                state,
                "invalid_request",
                &format!("AADSTS501491: Invalid code_challenge_method '{other}'."),
            );
        }
    };
    if q.get("prompt").map(String::as_str) == Some("none") {
        return redirect_error(
            &redirect_uri,
            state,
            "login_required",
            "AADSTS50058: A silent sign-in request was sent but no user is signed in.",
        );
    }
    let id = opaque();
    emu.pending().insert(
        id.clone(),
        PendingSignin {
            tenant_id: app_tenant.id.clone(),
            client_id: app.client_id.clone(),
            redirect_uri,
            scopes,
            state: state.map(String::from),
            challenge,
            nonce: q.get("nonce").cloned(),
            created: Utc::now(),
        },
    );
    let buttons: String = app_tenant
        .users
        .iter()
        .map(|u| {
            format!(
                "<form method=\"post\"><input type=\"hidden\" name=\"request\" value=\"{id}\"><input type=\"hidden\" name=\"user\" value=\"{}\">\
                 <button type=\"submit\">{} <small>({})</small></button></form>",
                escape(&u.user_principal_name),
                escape(&u.display_name),
                escape(&u.user_principal_name)
            )
        })
        .collect();
    let mut r = page(
        StatusCode::OK,
        "Pick an account",
        &format!("<p>to continue to {}</p>{buttons}", escape(&app.display_name)),
    );
    // Tests complete the sign-in by posting `request` and `user` back to this URL.
    r.headers_mut()
        .insert("x-emulator-signin-request", HeaderValue::from_str(&id).expect("ascii"));
    r
}

/// `POST /{tenant}/oauth2/v2.0/authorize`: the user picked an account (and, for users who
/// need it, approved the second factor); redirects to the app with a code.
pub async fn authorize_submit(State(emu): State<Emulator>, Form(form): Form<HashMap<String, String>>) -> Response {
    let request = form.get("request").cloned().unwrap_or_default();
    let Some(pending) = emu.pending().get(&request).cloned() else {
        return page(
            StatusCode::BAD_REQUEST,
            "Sign in failed",
            "<p>AADSTS90014: The sign-in request is unknown or has expired. Start again.</p>",
        );
    };
    if Utc::now() - pending.created > Duration::minutes(CODE_LIFETIME_MINUTES) {
        emu.pending().remove(&request);
        return page(
            StatusCode::BAD_REQUEST,
            "Sign in failed",
            "<p>The sign-in request has expired. Start again.</p>",
        );
    }
    let upn = form.get("user").cloned().unwrap_or_default();
    let Some(user) = emu.user(&pending.tenant_id, &upn) else {
        return page(
            StatusCode::BAD_REQUEST,
            "Sign in failed",
            &format!(
                "<p>AADSTS50034: The user account {} does not exist in the directory.</p>",
                escape(&upn)
            ),
        );
    };
    if user.mfa && form.contains_key("decline") {
        // The user denied the second-factor prompt: the app hears access_denied
        // (reference-error-codes.md, AADSTS500121) and no code is issued.
        emu.pending().remove(&request);
        return redirect_error(
            &pending.redirect_uri,
            pending.state.as_deref(),
            "access_denied",
            "AADSTS500121: Authentication failed during strong authentication request.",
        );
    }
    if user.mfa && form.get("mfa").map(String::as_str) != Some("approved") {
        let mut r = page(
            StatusCode::OK,
            "Approve sign in request",
            &format!(
                "<p>{} needs a second factor.</p><form method=\"post\"><input type=\"hidden\" name=\"request\" value=\"{request}\">\
                 <input type=\"hidden\" name=\"user\" value=\"{}\"><input type=\"hidden\" name=\"mfa\" value=\"approved\">\
                 <button type=\"submit\">Approve</button> <button type=\"submit\" name=\"decline\" value=\"1\">Decline</button></form>",
                escape(&user.display_name),
                escape(&user.user_principal_name)
            ),
        );
        r.headers_mut().insert("x-emulator-mfa", HeaderValue::from_static("required"));
        return r;
    }
    emu.pending().remove(&request);
    let code = opaque();
    emu.codes().insert(
        code.clone(),
        AuthCode {
            tenant_id: pending.tenant_id,
            client_id: pending.client_id,
            user_id: user.id,
            redirect_uri: pending.redirect_uri.clone(),
            scopes: pending.scopes,
            challenge: pending.challenge,
            nonce: pending.nonce,
            issued: Utc::now(),
            redeemed: false,
            mfa: user.mfa,
        },
    );
    let mut url = url::Url::parse(&pending.redirect_uri).expect("registered redirect URIs parse");
    url.query_pairs_mut().append_pair("code", &code);
    if let Some(s) = &pending.state {
        url.query_pairs_mut().append_pair("state", s);
    }
    (StatusCode::FOUND, [(header::LOCATION, url.to_string())]).into_response()
}
