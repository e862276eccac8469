//! Microsoft Graph v1.0, from microsoftgraph/microsoft-graph-docs-contrib:
//! `concepts/errors.md` (the error body), `api-reference/v1.0/api/user-get.md` (`/me`).

use super::Emulator;
use super::seed::SeedUser;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::{Value, json};

/// A Graph error: `{"error": {"code", "message", "innerError": {"date", "request-id",
/// "client-request-id"}}}` with the `request-id` header (concepts/errors.md).
pub fn graph_error(headers: &HeaderMap, status: StatusCode, code: &str, message: &str) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let client_request_id = headers
        .get("client-request-id")
        .and_then(|v| v.to_str().ok())
        .map(String::from)
        .unwrap_or_else(|| request_id.clone());
    let body = json!({
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string(),
                "request-id": request_id,
                "client-request-id": client_request_id,
            }
        }
    });
    let mut r = (status, Json(body)).into_response();
    r.headers_mut()
        .insert("request-id", HeaderValue::from_str(&request_id).expect("uuid"));
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\""),
        );
    }
    r
}

/// A Graph error not yet turned into a response (it needs the request's headers for its
/// `client-request-id`); small, so functions can return it in a `Result`.
pub struct GraphFailure {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl GraphFailure {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn into_response(self, headers: &HeaderMap) -> Response {
        graph_error(headers, self.status, self.code, &self.message)
    }
}

/// The claims of the request's Graph token.
pub fn authenticate(emu: &Emulator, headers: &HeaderMap) -> Result<Value, GraphFailure> {
    let fail = |m: &str| GraphFailure::new(StatusCode::UNAUTHORIZED, "InvalidAuthenticationToken", m);
    let token = match headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        None => return Err(fail("Access token is empty.")),
        Some(h) => h
            .strip_prefix("Bearer ")
            .ok_or_else(|| fail("Access token validation failure. Invalid audience."))?,
    };
    let claims = emu.keys().verify(token).map_err(|e| fail(&format!("IDX14100: {e}.")))?;
    let now = Utc::now().timestamp();
    if claims["exp"].as_i64().is_none_or(|exp| exp <= now) || claims["nbf"].as_i64().is_some_and(|nbf| nbf > now + 300) {
        return Err(fail("Lifetime validation failed, the token is expired."));
    }
    if claims["aud"] != "https://graph.microsoft.com" && claims["aud"] != "00000003-0000-0000-c000-000000000000" {
        return Err(fail("Access token validation failure. Invalid audience."));
    }
    Ok(claims)
}

/// Whether a token may call: a user token carrying one of the delegated `scopes`, or an
/// application token holding one of the application `roles`.
pub fn permitted(claims: &Value, scopes: &[&str], roles: &[&str]) -> bool {
    if claims["idtyp"] == "app" {
        claims["roles"]
            .as_array()
            .is_some_and(|r| r.iter().any(|x| roles.iter().any(|w| x == w)))
    } else {
        has_scope(claims, scopes)
    }
}

/// The mailbox user a `/me` or `/users/{id}` request is about.
pub fn subject(emu: &Emulator, claims: &Value, user: Option<&str>) -> Result<SeedUser, GraphFailure> {
    let tid = claims["tid"].as_str().unwrap_or_default();
    match user {
        None if claims["idtyp"] == "app" => Err(GraphFailure::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "/me request is only valid with delegated authentication flow.",
        )),
        None => emu
            .user(tid, claims["oid"].as_str().unwrap_or_default())
            .ok_or_else(|| GraphFailure::new(StatusCode::NOT_FOUND, "ErrorInvalidUser", "The user does not exist.")),
        Some(u) => match emu.user(tid, u) {
            Some(found) if claims["idtyp"] == "app" || Some(found.id.as_str()) == claims["oid"].as_str() => Ok(found),
            Some(_) => Err(GraphFailure::new(
                StatusCode::FORBIDDEN,
                "ErrorAccessDenied",
                "Access is denied. Check credentials and try again.",
            )),
            None => Err(GraphFailure::new(
                StatusCode::NOT_FOUND,
                "ErrorInvalidUser",
                format!("The requested user '{u}' is invalid."),
            )),
        },
    }
}

/// The mailbox a `/me` or `/users/{id}` request to Exchange (mail, contacts, people) is about:
/// [`subject`], and for an application token the app's application access policy
/// (Exchange's `New-ApplicationAccessPolicy`; Graph answers a mailbox outside it with
/// `403 ErrorAccessDenied` "Access to OData is disabled." — `auth-limit-mailbox-access.md`).
pub fn mailbox_subject(emu: &Emulator, claims: &Value, user: Option<&str>) -> Result<SeedUser, GraphFailure> {
    let found = subject(emu, claims, user)?;
    if claims["idtyp"] == "app" {
        let scope = emu
            .app(claims["appid"].as_str().unwrap_or_default())
            .and_then(|(_, app)| app.mailbox_scope);
        if let Some(allowed) = scope {
            let reaches = allowed.iter().any(|a| {
                a.eq_ignore_ascii_case(&found.user_principal_name) || found.mail.as_deref().is_some_and(|m| a.eq_ignore_ascii_case(m))
            });
            if !reaches {
                return Err(GraphFailure::new(
                    StatusCode::FORBIDDEN,
                    "ErrorAccessDenied",
                    "Access to OData is disabled.",
                ));
            }
        }
    }
    Ok(found)
}

/// Whether a delegated token carries one of `scopes`.
pub fn has_scope(claims: &Value, scopes: &[&str]) -> bool {
    claims["scp"]
        .as_str()
        .is_some_and(|scp| scp.split(' ').any(|s| scopes.iter().any(|w| w.eq_ignore_ascii_case(s))))
}

/// `GET /v1.0/me` (user-get.md; permissions: User.Read and wider).
pub async fn me(State(emu): State<Emulator>, headers: HeaderMap) -> Response {
    let claims = match authenticate(&emu, &headers) {
        Ok(c) => c,
        Err(e) => return e.into_response(&headers),
    };
    if claims["idtyp"] == "app" {
        return graph_error(
            &headers,
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "/me request is only valid with delegated authentication flow.",
        );
    }
    if !has_scope(
        &claims,
        &[
            "User.Read",
            "User.ReadWrite",
            "User.ReadBasic.All",
            "User.Read.All",
            "User.ReadWrite.All",
            "Directory.Read.All",
        ],
    ) {
        return graph_error(
            &headers,
            StatusCode::FORBIDDEN,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
        );
    }
    let tid = claims["tid"].as_str().unwrap_or_default();
    let oid = claims["oid"].as_str().unwrap_or_default();
    let Some(user) = emu.user(tid, oid) else {
        return graph_error(
            &headers,
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            &format!("Resource '{oid}' does not exist or one of its queried reference-property objects are not present."),
        );
    };
    let (given, surname) = user
        .display_name
        .split_once(' ')
        .map_or((user.display_name.as_str(), ""), |(g, s)| (g, s));
    Json(json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users/$entity",
        "businessPhones": [],
        "displayName": user.display_name,
        "givenName": given,
        "jobTitle": null,
        "mail": user.mail,
        "mobilePhone": null,
        "officeLocation": null,
        "preferredLanguage": "en-US",
        "surname": surname,
        "userPrincipalName": user.user_principal_name,
        "id": user.id,
    }))
    .into_response()
}

/// Upload URLs carry their own credential: a request that also sends an `Authorization`
/// header is refused with a 401 (driveitem-createuploadsession.md, outlook-large-attachments.md).
pub fn refuse_authorization(headers: &HeaderMap, code: &str) -> Option<Response> {
    headers.contains_key(header::AUTHORIZATION).then(|| {
        graph_error(
            headers,
            StatusCode::UNAUTHORIZED,
            code,
            "The upload URL is pre-authenticated: do not send an Authorization header.",
        )
    })
}

/// One fragment PUT to an upload URL, as both kinds of upload session check it (OneDrive's
/// driveItem sessions, upload-large-files-sdk.md / driveitem-createuploadsession.md; Outlook's
/// attachment sessions, outlook-large-attachments.md): `Content-Range: bytes start-end/total`
/// matching the body, the session's total, in order, within the size limit. Each caller words
/// the refusal in its own service's error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FragmentRefused {
    /// No `Content-Range`, or not `bytes start-end/total` with start ≤ end < total.
    NoRange,
    /// Larger than the session type allows in one request.
    TooLarge,
    /// The range's length is not the body's.
    LengthMismatch,
    /// The total differs from the session's.
    TotalChanged,
    /// A fragment already received or one that skips ahead; `next` is the byte expected.
    OutOfOrder { start: u64, next: u64 },
}

/// A fragment that passed [`check_fragment`]: its first and last byte and the total.
#[derive(Debug, Clone, Copy)]
pub struct Fragment {
    pub start: u64,
    pub end: u64,
    pub total: u64,
}

impl Fragment {
    pub fn bytes(&self) -> u64 {
        self.end - self.start + 1
    }

    pub fn is_last(&self) -> bool {
        self.end + 1 == self.total
    }
}

/// Checks a fragment of `body_len` bytes against a session that has `received` bytes and,
/// once known, `total`.
pub fn check_fragment(
    headers: &HeaderMap,
    body_len: usize,
    limit: usize,
    total: Option<u64>,
    received: u64,
) -> Result<Fragment, FragmentRefused> {
    let range = (|| {
        let v = headers.get(header::CONTENT_RANGE)?.to_str().ok()?.strip_prefix("bytes ")?;
        let (span, total) = v.split_once('/')?;
        let (start, end) = span.split_once('-')?;
        let (start, end, total): (u64, u64, u64) = (start.trim().parse().ok()?, end.trim().parse().ok()?, total.trim().parse().ok()?);
        (start <= end && end < total).then_some(Fragment { start, end, total })
    })();
    // The size first: a request past the limit is refused whatever its range says.
    if body_len > limit {
        return Err(FragmentRefused::TooLarge);
    }
    let fragment = range.ok_or(FragmentRefused::NoRange)?;
    if fragment.bytes() != body_len as u64 {
        return Err(FragmentRefused::LengthMismatch);
    }
    if total.is_some_and(|t| t != fragment.total) {
        return Err(FragmentRefused::TotalChanged);
    }
    if fragment.start != received {
        return Err(FragmentRefused::OutOfOrder {
            start: fragment.start,
            next: received,
        });
    }
    Ok(fragment)
}
