//! JSON batching (microsoft-graph-docs-contrib `concepts/json-batching.md`): up to 20
//! requests in one `POST /v1.0/$batch`, each run through the emulator's own routes (so each is
//! authenticated, faulted and throttled on its own), `dependsOn` for ordering, and `424` for
//! every request whose dependency failed. A malformed batch is a `400`; otherwise `200`.

use super::Emulator;
use super::graph::graph_error;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use tower::ServiceExt;

const MAX_REQUESTS: usize = 20;

struct Item {
    id: String,
    method: Method,
    url: String,
    headers: Map<String, Value>,
    body: Option<Value>,
    depends_on: Vec<String>,
}

fn parse(body: &[u8]) -> Result<Vec<Item>, String> {
    let doc: Value = serde_json::from_slice(body).map_err(|_| "Unable to read the batch request body as JSON.".to_string())?;
    let requests = doc["requests"]
        .as_array()
        .ok_or("The batch request must have a 'requests' array.")?;
    if requests.len() > MAX_REQUESTS {
        return Err(format!(
            "The batch holds {} requests; at most {MAX_REQUESTS} are allowed.",
            requests.len()
        ));
    }
    let mut items = Vec::new();
    for r in requests {
        let id = r["id"]
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or("Every request needs an 'id'.")?
            .to_string();
        if items.iter().any(|i: &Item| i.id.eq_ignore_ascii_case(&id)) {
            return Err(format!("The request id '{id}' is used more than once."));
        }
        let method = r["method"]
            .as_str()
            .and_then(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).ok())
            .ok_or_else(|| format!("Request '{id}' needs a valid 'method'."))?;
        let url = r["url"]
            .as_str()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| format!("Request '{id}' needs a 'url'."))?;
        if url.starts_with("http://") || url.starts_with("https://") {
            return Err(format!("Request '{id}': the url must be relative, such as /me/messages."));
        }
        let headers = r["headers"].as_object().cloned().unwrap_or_default();
        let body = r.get("body").cloned().filter(|b| !b.is_null());
        if body.is_some() && !headers.keys().any(|k| k.eq_ignore_ascii_case("content-type")) {
            return Err(format!("Write request id : {id} does not contain Content-Type header or body."));
        }
        let depends_on = match &r["dependsOn"] {
            Value::Null => vec![],
            Value::Array(a) => a.iter().filter_map(|d| d.as_str().map(String::from)).collect(),
            _ => return Err(format!("Request '{id}': dependsOn must be an array of ids.")),
        };
        items.push(Item {
            id,
            method,
            url: format!("/v1.0/{}", url.trim_start_matches('/')),
            headers,
            body,
            depends_on,
        });
    }
    for item in &items {
        for dep in &item.depends_on {
            if !items.iter().any(|i| i.id.eq_ignore_ascii_case(dep)) {
                return Err(format!("Request '{}' depends on '{dep}', which is not in the batch.", item.id));
            }
        }
    }
    Ok(items)
}

async fn run_one(emu: &Emulator, outer: &HeaderMap, item: &Item) -> Value {
    let mut req = Request::builder().method(item.method.clone()).uri(&item.url);
    if let Some(auth) = outer.get(header::AUTHORIZATION) {
        req = req.header(header::AUTHORIZATION, auth);
    }
    for (k, v) in &item.headers {
        if let Some(v) = v.as_str() {
            req = req.header(k.as_str(), v);
        }
    }
    let json_body = item
        .headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("content-type") && v.as_str().is_some_and(|v| v.contains("json")));
    let body = match &item.body {
        None => Body::empty(),
        // A non-JSON body travels base64-encoded (json-batching.md, "body").
        Some(Value::String(s)) if !json_body => Body::from(base64::engine::general_purpose::STANDARD.decode(s).unwrap_or_default()),
        Some(v) => Body::from(v.to_string()),
    };
    let Ok(req) = req.body(body) else {
        return json!({"id": item.id, "status": 400, "body": {"error": {"code": "BadRequest", "message": "The request could not be built."}}});
    };
    let resp = emu.router().oneshot(req).await.expect("the router is infallible");
    let status = resp.status().as_u16();
    let mut headers = Map::new();
    for (k, v) in resp.headers() {
        if let Ok(v) = v.to_str() {
            headers.insert(k.as_str().to_string(), json!(v));
        }
    }
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap_or_default();
    let mut out = json!({"id": item.id, "status": status, "headers": headers});
    if !bytes.is_empty() {
        out["body"] = serde_json::from_slice(&bytes).unwrap_or_else(|_| json!(base64::engine::general_purpose::STANDARD.encode(&bytes)));
    }
    out
}

/// `POST /v1.0/$batch`.
pub async fn batch(State(emu): State<Emulator>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let items = match parse(&body) {
        Ok(items) => items,
        Err(message) => return graph_error(&headers, StatusCode::BAD_REQUEST, "BadRequest", &message),
    };
    let mut done: HashMap<String, u16> = HashMap::new();
    let mut responses = Vec::new();
    // Runs whatever has its dependencies finished, in the order given, until nothing is left.
    let mut pending: Vec<&Item> = items.iter().collect();
    while !pending.is_empty() {
        let ready = pending
            .iter()
            .position(|i| i.depends_on.iter().all(|d| done.contains_key(&d.to_ascii_lowercase())));
        let Some(index) = ready else {
            return graph_error(
                &headers,
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "The dependsOn references form a cycle.",
            );
        };
        let item = pending.remove(index);
        let failed_dependency = item
            .depends_on
            .iter()
            .any(|d| done.get(&d.to_ascii_lowercase()).is_some_and(|s| *s >= 400));
        let answer = if failed_dependency {
            json!({
                "id": item.id, "status": 424,
                "body": {"error": {"code": "FailedDependency", "message": "The request depends on a request that failed."}},
            })
        } else {
            run_one(&emu, &headers, item).await
        };
        done.insert(item.id.to_ascii_lowercase(), answer["status"].as_u64().unwrap_or(500) as u16);
        responses.push(answer);
    }
    Json(json!({"responses": responses})).into_response()
}
