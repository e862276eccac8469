//! The device code flow, from MicrosoftDocs/entra-docs `docs/identity-platform/v2-oauth2-device-code.md`
//! and RFC 8628 (`slow_down`): `/devicecode` hands out a user code, the user signs in at
//! `/devicelogin` on another device, and the client polls `/token` meanwhile.

use super::{aad_error, app_in_tenant, scopes_granted, unknown_app, user_tokens};
use crate::emulator::{Emulator, escape, opaque};
use axum::Form;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use std::collections::HashMap;

/// Device codes live 15 minutes; clients poll every 5 seconds (the documented defaults).
const EXPIRES_IN: i64 = 900;
const INTERVAL: i64 = 5;

#[derive(Debug, Clone, PartialEq)]
pub enum DeviceStatus {
    Pending,
    Approved(String),
    Declined,
}

#[derive(Debug, Clone)]
pub struct DeviceGrant {
    pub tenant_id: String,
    pub client_id: String,
    pub scopes: Vec<String>,
    pub user_code: String,
    pub expires: DateTime<Utc>,
    pub last_poll: Option<DateTime<Utc>>,
    pub status: DeviceStatus,
}

/// A user code as Microsoft shows them: nine characters, no look-alikes.
fn user_code() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut bytes = [0u8; 9];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    bytes.iter().map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect()
}

/// `POST /{tenant}/oauth2/v2.0/devicecode`.
pub async fn authorize(State(emu): State<Emulator>, Path(tenant): Path<String>, Form(form): Form<HashMap<String, String>>) -> Response {
    let client_id = form.get("client_id").cloned().unwrap_or_default();
    let Some((app_tenant, app)) = app_in_tenant(&emu, &tenant, &client_id) else {
        return unknown_app(&emu, &client_id, &tenant);
    };
    let Some(scope) = form.get("scope").filter(|s| !s.trim().is_empty()) else {
        return aad_error(
            &emu,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'scope'.",
            None,
        );
    };
    let scopes = match scopes_granted(&emu, &app_tenant.id, &app, scope) {
        Ok(s) => s,
        Err(missing) => {
            return aad_error(
                &emu,
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                65001,
                &format!(
                    "The user or administrator has not consented to use the application with ID '{client_id}'. Scope '{missing}' is not granted."
                ),
                None,
            );
        }
    };
    let device_code = opaque();
    let code = user_code();
    emu.devices().insert(
        device_code.clone(),
        DeviceGrant {
            tenant_id: app_tenant.id,
            client_id,
            scopes,
            user_code: code.clone(),
            expires: Utc::now() + Duration::seconds(EXPIRES_IN),
            last_poll: None,
            status: DeviceStatus::Pending,
        },
    );
    let uri = format!("{}/devicelogin", emu.base_url);
    Json(json!({
        "device_code": device_code,
        "user_code": code,
        "verification_uri": uri,
        "expires_in": EXPIRES_IN,
        "interval": INTERVAL,
        "message": format!("To sign in, use a web browser to open the page {uri} and enter the code {code} to authenticate."),
    }))
    .into_response()
}

/// The token endpoint's `urn:ietf:params:oauth:grant-type:device_code` grant.
pub fn redeem(emu: &Emulator, client_id: &str, form: &HashMap<String, String>) -> Response {
    let error = |error: &str, code: u32, text: &str| aad_error(emu, StatusCode::BAD_REQUEST, error, code, text, None);
    let device_code = form.get("device_code").cloned().unwrap_or_default();
    let now = Utc::now();
    let grant = {
        let mut devices = emu.devices();
        let Some(grant) = devices
            .get_mut(&device_code)
            .filter(|g| g.client_id.eq_ignore_ascii_case(client_id))
        else {
            return error(
                "bad_verification_code",
                70019,
                "The provided value for the input parameter 'device_code' is not valid.",
            );
        };
        if grant.expires <= now {
            return error(
                "expired_token",
                70020,
                "The provided value for the input parameter 'device_code' is not valid. This device code has expired.",
            );
        }
        let too_soon = grant.last_poll.is_some_and(|t| now - t < Duration::seconds(INTERVAL));
        grant.last_poll = Some(now);
        match &grant.status {
            DeviceStatus::Declined => return error("authorization_declined", 70019, "The end user denied the authorization request."),
            // Polling faster than the interval while the user has not finished is `slow_down` (RFC 8628 §3.5).
            DeviceStatus::Pending if too_soon => {
                return error(
                    "slow_down",
                    70016,
                    "OAuth 2.0 device flow error. Poll less often: wait the interval between requests.",
                );
            }
            DeviceStatus::Pending => {
                return error(
                    "authorization_pending",
                    70016,
                    "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
                );
            }
            DeviceStatus::Approved(_) => {}
        }
        devices.remove(&device_code).expect("present")
    };
    let DeviceStatus::Approved(user_id) = &grant.status else {
        unreachable!("checked above")
    };
    let (tenant, app) = emu.app(&grant.client_id).expect("the app existed at /devicecode");
    // Approval passed the user's second factor where one was required.
    let mfa = emu.user(&tenant.id, user_id).is_some_and(|u| u.mfa);
    user_tokens(emu, &tenant, &app, user_id, &grant.scopes, None, mfa)
}

fn page(status: StatusCode, body: &str) -> Response {
    (status, Html(format!("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Device sign-in — Microsoft 365 emulator</title></head><body>{body}</body></html>"))).into_response()
}

/// `GET /devicelogin`: where the user enters the code.
pub async fn login_page() -> Response {
    page(
        StatusCode::OK,
        "<h1>Enter code</h1><form method=\"post\"><label>Code <input name=\"user_code\"></label>\
         <label>Account <input name=\"user\" placeholder=\"user@contoso.onmicrosoft.com\"></label>\
         <button type=\"submit\">Continue</button> <button type=\"submit\" name=\"decline\" value=\"1\">Decline</button></form>",
    )
}

/// `POST /devicelogin`: the user entered the code and signed in (approving MFA where asked), or declined.
pub async fn login_submit(State(emu): State<Emulator>, Form(form): Form<HashMap<String, String>>) -> Response {
    let code = form.get("user_code").map(|c| c.trim().to_ascii_uppercase()).unwrap_or_default();
    let mut devices = emu.devices();
    let Some(grant) = devices
        .values_mut()
        .find(|g| g.user_code == code && g.status == DeviceStatus::Pending && g.expires > Utc::now())
    else {
        return page(StatusCode::BAD_REQUEST, "<p>That code is not valid or has expired.</p>");
    };
    if form.contains_key("decline") {
        grant.status = DeviceStatus::Declined;
        return page(StatusCode::OK, "<p>You declined the sign-in. You may close this window.</p>");
    }
    let upn = form.get("user").cloned().unwrap_or_default();
    let Some(user) = emu.user(&grant.tenant_id, &upn) else {
        return page(
            StatusCode::BAD_REQUEST,
            "<p>AADSTS50034: The user account does not exist in the directory.</p>",
        );
    };
    if user.mfa && form.get("mfa").map(String::as_str) != Some("approved") {
        // The same step as the authorize page's: approve or decline, with what the first form
        // carried, so a person (or a test reading the page) can finish it.
        let hidden = |name: &str, value: &str| format!("<input type=\"hidden\" name=\"{name}\" value=\"{}\">", escape(value));
        let body = format!(
            "<h1>Approve sign in request</h1><p>{} needs a second factor.</p><form method=\"post\">{}{}{}\
             <button type=\"submit\">Approve</button> <button type=\"submit\" name=\"decline\" value=\"1\">Decline</button></form>",
            escape(&upn),
            hidden("user_code", &code),
            hidden("user", &upn),
            hidden("mfa", "approved"),
        );
        let mut r = page(StatusCode::OK, &body);
        r.headers_mut()
            .insert("x-emulator-mfa", axum::http::HeaderValue::from_static("required"));
        return r;
    }
    grant.status = DeviceStatus::Approved(user.id);
    page(StatusCode::OK, "<p>You have signed in. You may close this window.</p>")
}

/// Test hook: `POST /_emulator/devicecode/{user_code}/expire`.
pub async fn expire(State(emu): State<Emulator>, Path(code): Path<String>) -> StatusCode {
    match emu.devices().values_mut().find(|g| g.user_code == code) {
        Some(g) => {
            g.expires = Utc::now();
            StatusCode::NO_CONTENT
        }
        None => StatusCode::NOT_FOUND,
    }
}
