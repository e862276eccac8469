//! The identity platform's error answers: the token endpoint's JSON errors and the HTML
//! error pages and redirects of the authorization endpoint.

use super::*;

/// An error of the token endpoint as the identity platform sends it: `error`, an
/// `error_description` that starts with the AADSTS code and ends with trace and correlation
/// ids and a timestamp, `error_codes`, `timestamp`, `trace_id`, `correlation_id`, `error_uri`.
pub fn aad_error(emu: &Emulator, status: StatusCode, error: &str, code: u32, description: &str, claims: Option<&str>) -> Response {
    let trace = uuid::Uuid::new_v4().to_string();
    let correlation = uuid::Uuid::new_v4().to_string();
    let timestamp = Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string();
    let mut body = json!({
        "error": error,
        "error_description": format!("AADSTS{code}: {description} Trace ID: {trace} Correlation ID: {correlation} Timestamp: {timestamp}"),
        "error_codes": [code],
        "timestamp": timestamp,
        "trace_id": trace,
        "correlation_id": correlation,
        "error_uri": format!("{}/error?code={code}", emu.base_url),
    });
    if let Some(c) = claims {
        body["claims"] = json!(c);
    }
    let mut response = (status, Json(body)).into_response();
    no_store(response.headers_mut());
    response
}

pub(super) fn no_store(h: &mut HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store, no-cache"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// A page of the sign-in experience (errors the user sees, not the app).
pub(super) fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title} — Microsoft 365 emulator</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto}}button{{display:block;width:100%;margin:.4rem 0;padding:.6rem}}</style>\
         </head><body><h1>{title}</h1>{body}</body></html>"
    );
    let mut r = (status, Html(html)).into_response();
    no_store(r.headers_mut());
    r
}

/// Sends the user back to the app with an error, as the identity platform does once the
/// redirect URI is known to be registered.
pub(super) fn redirect_error(redirect_uri: &str, state: Option<&str>, error: &str, description: &str) -> Response {
    let mut url = url::Url::parse(redirect_uri).expect("registered redirect URIs parse");
    url.query_pairs_mut()
        .append_pair("error", error)
        .append_pair("error_description", description);
    if let Some(s) = state {
        url.query_pairs_mut().append_pair("state", s);
    }
    (StatusCode::FOUND, [(header::LOCATION, url.to_string())]).into_response()
}
