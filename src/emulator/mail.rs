//! Outlook mail in Microsoft Graph v1.0, from microsoftgraph/microsoft-graph-docs-contrib:
//! `api-reference/v1.0/api/user-sendmail.md` (`202`, no body, `saveToSentItems` default true),
//! `api-reference/v1.0/api/user-post-messages.md` (drafts, `201`), `message-get.md`,
//! `message-delete.md` (`204`), `message-send.md` (`202`), `resources/message.md`
//! (`internetMessageHeaders`: only custom `x-` headers), `concepts/errors.md`. Limits not spelled
//! out there follow Exchange Online's: 4 MB per request (`413`) and 500 recipients per message.

use super::Emulator;
use super::graph::{GraphFailure, authenticate, graph_error, permitted, subject};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use chrono::Utc;
use serde_json::{Map, Value, json};
use std::collections::HashMap;

/// A JSON request to Outlook must stay under 4 MB; larger attachments go through an upload session.
pub const REQUEST_LIMIT: usize = 4 * 1024 * 1024;
pub const MAX_RECIPIENTS: usize = 500;

/// A user's mailbox: drafts and sent items, by message id.
#[derive(Debug, Default)]
pub struct Mailbox {
    pub drafts: Vec<Value>,
    pub sent: Vec<Value>,
}

#[derive(Debug, Default)]
pub struct MailState {
    pub mailboxes: HashMap<String, Mailbox>,
}

/// Checks a message as Outlook would and returns it normalised (id, folder, timestamps added).
fn check_message(message: &Value, require_recipients: bool) -> Result<Map<String, Value>, GraphFailure> {
    let bad = |code: &'static str, text: &str| GraphFailure::new(StatusCode::BAD_REQUEST, code, text);
    let Some(obj) = message.as_object() else {
        return Err(bad("ErrorInvalidRequest", "The message must be a JSON object."));
    };
    let mut count = 0;
    for field in ["toRecipients", "ccRecipients", "bccRecipients", "replyTo"] {
        let Some(list) = obj.get(field) else { continue };
        let Some(list) = list.as_array() else {
            return Err(bad(
                "ErrorInvalidRequest",
                &format!("'{field}' must be a collection of recipients."),
            ));
        };
        for r in list {
            let address = r["emailAddress"]["address"].as_str().unwrap_or_default();
            let valid = address
                .rsplit_once('@')
                .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !address.contains(char::is_whitespace));
            if !valid {
                return Err(bad(
                    "ErrorInvalidRecipients",
                    &format!("At least one recipient is not valid., Recipient '{address}' is not resolved."),
                ));
            }
        }
        if field != "replyTo" {
            count += list.len();
        }
    }
    if count > MAX_RECIPIENTS {
        return Err(bad(
            "ErrorTooManyRecipients",
            &format!("A message can't have more than {MAX_RECIPIENTS} recipients; this one has {count}."),
        ));
    }
    if require_recipients && count == 0 {
        return Err(bad(
            "ErrorInvalidRecipients",
            "At least one recipient is required, but none were found.",
        ));
    }
    if let Some(list) = obj.get("internetMessageHeaders").and_then(Value::as_array) {
        for h in list {
            let name = h["name"].as_str().unwrap_or_default();
            if !name.to_ascii_lowercase().starts_with("x-") {
                return Err(bad(
                    "InvalidInternetMessageHeader",
                    &format!("The internet message header name '{name}' should start with 'x-' or 'X-'."),
                ));
            }
        }
    }
    if let Some(list) = obj.get("attachments").and_then(Value::as_array) {
        for a in list {
            let bytes = a["contentBytes"].as_str().unwrap_or_default();
            if a["@odata.type"] == "#microsoft.graph.fileAttachment" && base64::engine::general_purpose::STANDARD.decode(bytes).is_err() {
                return Err(bad("ErrorInvalidRequest", "The attachment's contentBytes is not valid base64."));
            }
        }
    }
    let mut normalised = obj.clone();
    normalised.insert("id".into(), json!(format!("AAMk{}", uuid::Uuid::new_v4().simple())));
    normalised.insert(
        "createdDateTime".into(),
        json!(Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
    );
    Ok(normalised)
}

/// `…/sendMail`, `…/messages`, `…/messages/{id}`, `…/messages/{id}/send` for `/me` and `/users/{id}`.
async fn mail_request(emu: Emulator, user: Option<String>, method: Method, rest: String, headers: HeaderMap, body: Bytes) -> Response {
    let claims = match authenticate(&emu, &headers) {
        Ok(c) => c,
        Err(e) => return e.into_response(&headers),
    };
    if body.len() > REQUEST_LIMIT {
        return graph_error(
            &headers,
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            "The request is larger than 4 MB: add large attachments through an upload session.",
        );
    }
    // Sending as another user needs "Send As" rights this emulator does not model: `subject`
    // lets an application token name any mailbox and a user token only its own.
    let user_id = match subject(&emu, &claims, user.as_deref()) {
        Ok(found) => found.id,
        Err(e) => return e.into_response(&headers),
    };
    let sending = rest == "sendMail" || rest.ends_with("/send");
    let allowed = if sending {
        permitted(&claims, &["Mail.Send"], &["Mail.Send"])
    } else {
        permitted(&claims, &["Mail.ReadWrite"], &["Mail.ReadWrite"])
    };
    if !allowed {
        return graph_error(
            &headers,
            StatusCode::FORBIDDEN,
            "ErrorAccessDenied",
            "Access is denied. Check credentials and try again.",
        );
    }
    let parse = || -> Result<Value, GraphFailure> {
        if body.is_empty() {
            return Err(GraphFailure::new(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "Empty Payload. JSON content expected.",
            ));
        }
        serde_json::from_slice(&body)
            .map_err(|_| GraphFailure::new(StatusCode::BAD_REQUEST, "BadRequest", "Unable to read JSON request payload."))
    };
    let segments: Vec<&str> = rest.split('/').collect();
    match (method, segments.as_slice()) {
        (Method::POST, ["sendMail"]) => {
            let request = match parse() {
                Ok(v) => v,
                Err(e) => return e.into_response(&headers),
            };
            let mut message = match check_message(&request["message"], true) {
                Ok(m) => m,
                Err(e) => return e.into_response(&headers),
            };
            message.insert("isDraft".into(), json!(false));
            message.insert(
                "sentDateTime".into(),
                json!(Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            );
            // The emulator records every sent message for tests; `saveToSentItems` says whether
            // the user would find it in Sent Items.
            let save = request["saveToSentItems"]
                .as_bool()
                .unwrap_or(request["saveToSentItems"] != "false");
            message.insert("savedToSentItems".into(), json!(save));
            emu.mail().mailboxes.entry(user_id).or_default().sent.push(Value::Object(message));
            StatusCode::ACCEPTED.into_response()
        }
        (Method::POST, ["messages"]) => {
            let request = match parse() {
                Ok(v) => v,
                Err(e) => return e.into_response(&headers),
            };
            let mut message = match check_message(&request, false) {
                Ok(m) => m,
                Err(e) => return e.into_response(&headers),
            };
            message.insert("isDraft".into(), json!(true));
            message.insert("parentFolderId".into(), json!("drafts"));
            let draft = Value::Object(message);
            emu.mail().mailboxes.entry(user_id).or_default().drafts.push(draft.clone());
            (StatusCode::CREATED, Json(draft)).into_response()
        }
        (Method::GET, ["messages", id]) => {
            let mail = emu.mail();
            let mailbox = mail.mailboxes.get(&user_id);
            match mailbox.and_then(|m| m.drafts.iter().chain(m.sent.iter()).find(|x| x["id"] == *id)) {
                Some(m) => Json(m.clone()).into_response(),
                None => graph_error(
                    &headers,
                    StatusCode::NOT_FOUND,
                    "ErrorItemNotFound",
                    "The specified object was not found in the store.",
                ),
            }
        }
        (Method::DELETE, ["messages", id]) => {
            let mut mail = emu.mail();
            let mailbox = mail.mailboxes.entry(user_id).or_default();
            let before = mailbox.drafts.len();
            mailbox.drafts.retain(|x| x["id"] != *id);
            if mailbox.drafts.len() == before {
                return graph_error(
                    &headers,
                    StatusCode::NOT_FOUND,
                    "ErrorItemNotFound",
                    "The specified object was not found in the store.",
                );
            }
            StatusCode::NO_CONTENT.into_response()
        }
        (Method::POST, ["messages", id, "send"]) => {
            let mut mail = emu.mail();
            let mailbox = mail.mailboxes.entry(user_id).or_default();
            let Some(pos) = mailbox.drafts.iter().position(|x| x["id"] == *id) else {
                return graph_error(
                    &headers,
                    StatusCode::NOT_FOUND,
                    "ErrorItemNotFound",
                    "The specified object was not found in the store.",
                );
            };
            let mut message = mailbox.drafts[pos].clone();
            if let Err(e) = check_message(&message, true) {
                return e.into_response(&headers);
            }
            mailbox.drafts.remove(pos);
            message["isDraft"] = json!(false);
            message["parentFolderId"] = json!("sentitems");
            message["savedToSentItems"] = json!(true);
            message["sentDateTime"] = json!(Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
            mailbox.sent.push(message);
            StatusCode::ACCEPTED.into_response()
        }
        _ => graph_error(
            &headers,
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("Resource not found for the segment '{rest}'."),
        ),
    }
}

pub async fn me_send(State(emu): State<Emulator>, headers: HeaderMap, body: Bytes) -> Response {
    mail_request(emu, None, Method::POST, "sendMail".into(), headers, body).await
}

pub async fn me_messages(State(emu): State<Emulator>, method: Method, headers: HeaderMap, body: Bytes) -> Response {
    mail_request(emu, None, method, "messages".into(), headers, body).await
}

pub async fn me_message(
    State(emu): State<Emulator>,
    method: Method,
    Path(rest): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    mail_request(emu, None, method, format!("messages/{rest}"), headers, body).await
}

pub async fn user_send(State(emu): State<Emulator>, Path(user): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    mail_request(emu, Some(user), Method::POST, "sendMail".into(), headers, body).await
}

pub async fn user_messages(
    State(emu): State<Emulator>,
    method: Method,
    Path(user): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    mail_request(emu, Some(user), method, "messages".into(), headers, body).await
}

pub async fn user_message(
    State(emu): State<Emulator>,
    method: Method,
    Path((user, rest)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    mail_request(emu, Some(user), method, format!("messages/{rest}"), headers, body).await
}

/// Test hook: `GET /_emulator/mail/{user}` — the messages a user sent and their drafts.
pub async fn inspect(State(emu): State<Emulator>, Path(user): Path<String>) -> Response {
    let Some(found) = emu.users_by_upn_or_id(&user) else {
        return (StatusCode::NOT_FOUND, "no such user").into_response();
    };
    let mail = emu.mail();
    let (sent, drafts) = mail
        .mailboxes
        .get(&found.id)
        .map_or((vec![], vec![]), |m| (m.sent.clone(), m.drafts.clone()));
    Json(json!({"sent": sent, "drafts": drafts})).into_response()
}
