//! Outlook mail in Microsoft Graph v1.0, from microsoftgraph/microsoft-graph-docs-contrib:
//! `api-reference/v1.0/api/user-sendmail.md` (`202`, no body, `saveToSentItems` default true),
//! `api-reference/v1.0/api/user-post-messages.md` (drafts, `201`), `message-get.md`,
//! `message-delete.md` (`204`), `message-send.md` (`202`), `resources/message.md`
//! (`internetMessageHeaders`: only custom `x-` headers), `concepts/errors.md`. Limits not spelled
//! out there follow Exchange Online's: 4 MB per request (`413`) and 500 recipients per message.
//!
//! For the outbox (issue 13): single-value extended properties set on create, returned only
//! through `$expand` and found with `$filter=singleValueExtendedProperties/Any(ep: ep/id eq
//! '…' and ep/value eq '…')` (`api/singlevaluelegacyextendedproperty-get.md`); immutable ids
//! with `Prefer: IdType="ImmutableId"` — the same id before and after a draft is sent,
//! while the default id of a sent draft is no longer found (`ErrorItemNotFound`) and its Sent
//! Items copy has another (`concepts/outlook-immutable-id.md`); a configurable delay before
//! the copy appears in Sent Items ("Getting the message in the Sent Items folder might not
//! succeed immediately after sending"); and the 150 MB per 5 minutes upload budget per
//! mailbox (`concepts/throttling-limits.md`, "Outlook service limits").

use super::Emulator;
use super::graph::{GraphFailure, authenticate, graph_error, mailbox_subject, permitted};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use chrono::Utc;
use serde::{Deserialize, Serialize};
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
    /// Large-attachment upload sessions by the token in their upload URL.
    pub sessions: HashMap<String, AttachmentSession>,
    pub settings: MailSettings,
    /// Bytes uploaded per mailbox (user id), for the 150 MB per 5 minutes budget.
    pub uploaded: HashMap<String, std::collections::VecDeque<(std::time::Instant, u64)>>,
}

/// `POST /_emulator/mail-settings`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MailSettings {
    /// Milliseconds between a send's 202 and the copy appearing in Sent Items.
    pub sent_items_delay_ms: u64,
    /// The upload budget per mailbox: bytes per window.
    pub upload_budget_bytes: u64,
    pub upload_budget_window_secs: u64,
}

impl Default for MailSettings {
    fn default() -> Self {
        Self {
            sent_items_delay_ms: 0,
            upload_budget_bytes: 150 * 1024 * 1024,
            upload_budget_window_secs: 300,
        }
    }
}

pub async fn set_settings(State(emu): State<Emulator>, Json(settings): Json<MailSettings>) -> StatusCode {
    emu.mail().settings = settings;
    StatusCode::NO_CONTENT
}

/// Counts `bytes` against the mailbox's upload budget; `Err` with the seconds to wait when
/// it is spent.
fn spend_upload(emu: &Emulator, user_id: &str, bytes: u64) -> Result<(), u64> {
    let mut mail = emu.mail();
    let window = std::time::Duration::from_secs(mail.settings.upload_budget_window_secs);
    let limit = mail.settings.upload_budget_bytes;
    let now = std::time::Instant::now();
    let used = mail.uploaded.entry(user_id.to_string()).or_default();
    while used.front().is_some_and(|(t, _)| now.duration_since(*t) >= window) {
        used.pop_front();
    }
    let total: u64 = used.iter().map(|(_, b)| b).sum();
    if total + bytes > limit {
        let oldest = used.front().map_or(window, |(t, _)| window.saturating_sub(now.duration_since(*t)));
        return Err(oldest.as_secs().max(1));
    }
    used.push_back((now, bytes));
    Ok(())
}

fn budget_spent(headers: &HeaderMap, wait: u64) -> Response {
    let mut r = graph_error(
        headers,
        StatusCode::TOO_MANY_REQUESTS,
        "ApplicationThrottled",
        "The mailbox's upload limit (150 MB in 5 minutes) is reached.",
    );
    if let Ok(v) = axum::http::HeaderValue::from_str(&wait.to_string()) {
        r.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
    }
    r
}

/// Whether the request asks for immutable ids (`Prefer: IdType="ImmutableId"`).
fn immutable(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.replace(' ', "").to_ascii_lowercase().contains("idtype=\"immutableid\""))
}

/// The id a request addresses messages by.
fn id_field(headers: &HeaderMap) -> &'static str {
    if immutable(headers) { "_immutableId" } else { "id" }
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Whether a message in Sent Items can be seen yet.
fn visible(m: &Value) -> bool {
    m["_visibleAtMs"].as_i64().is_none_or(|at| at <= now_ms())
}

/// A message as a request sees it: its id in the asked format, internal fields removed,
/// extended properties only when `$expand`ed, `$select` applied.
fn present(m: &Value, headers: &HeaderMap, query: &HashMap<String, String>) -> Value {
    let mut out = m.clone();
    let Some(obj) = out.as_object_mut() else { return out };
    if immutable(headers)
        && let Some(i) = obj.get("_immutableId").cloned()
    {
        obj.insert("id".into(), i);
    }
    obj.retain(|k, _| !k.starts_with('_'));
    let props = obj.remove("singleValueExtendedProperties");
    if let Some(expand) = query.get("$expand")
        && let Some(inner) = expand.strip_prefix("singleValueExtendedProperties")
    {
        let wanted = inner
            .split_once("id eq '")
            .and_then(|(_, rest)| rest.split_once('\''))
            .map(|(id, _)| id.to_string());
        let list: Vec<Value> = props
            .and_then(|p| p.as_array().cloned())
            .unwrap_or_default()
            .into_iter()
            .filter(|p| {
                wanted
                    .as_deref()
                    .is_none_or(|w| p["id"].as_str().is_some_and(|id| id.eq_ignore_ascii_case(w)))
            })
            .collect();
        if !list.is_empty() {
            obj.insert("singleValueExtendedProperties".into(), Value::Array(list));
        }
    }
    select(out, query)
}

/// `$select=a,b`: only those fields (and `id`).
fn select(mut v: Value, query: &HashMap<String, String>) -> Value {
    if let Some(fields) = query.get("$select")
        && let Some(obj) = v.as_object_mut()
    {
        let keep: Vec<&str> = fields.split(',').map(str::trim).collect();
        obj.retain(|k, _| k == "id" || k == "singleValueExtendedProperties" || keep.contains(&k.as_str()));
    }
    v
}

/// `$filter=singleValueExtendedProperties/Any(ep: ep/id eq 'ID' and ep/value eq 'VALUE')`,
/// the one filter form this emulator reads (singlevaluelegacyextendedproperty-get.md);
/// `None` when absent, `Err` for any other filter.
fn property_filter(query: &HashMap<String, String>) -> Result<Option<(String, String)>, GraphFailure> {
    let Some(f) = query.get("$filter") else { return Ok(None) };
    let unsupported = || {
        GraphFailure::new(
            StatusCode::BAD_REQUEST,
            "ErrorInvalidUrlQueryFilter",
            "The filter expression is not supported by this emulator.",
        )
    };
    let inner = f
        .trim()
        .strip_prefix("singleValueExtendedProperties/Any(")
        .or_else(|| f.trim().strip_prefix("singleValueExtendedProperties/any("))
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(unsupported)?;
    let (var, body) = inner.split_once(':').ok_or_else(unsupported)?;
    let var = var.trim();
    let quoted = |after: &str| -> Option<String> {
        let start = body.find(after)? + after.len();
        let rest = body[start..].trim_start().strip_prefix('\'')?;
        Some(rest[..rest.find('\'')?].to_string())
    };
    let id = quoted(&format!("{var}/id eq")).ok_or_else(unsupported)?;
    let value = quoted(&format!("{var}/value eq")).ok_or_else(unsupported)?;
    Ok(Some((id, value)))
}

fn has_property(m: &Value, id: &str, value: &str) -> bool {
    m["singleValueExtendedProperties"].as_array().is_some_and(|ps| {
        ps.iter()
            .any(|p| p["id"].as_str().is_some_and(|i| i.eq_ignore_ascii_case(id)) && p["value"] == value)
    })
}

/// Attachments of 3 MB or more go through an upload session (message-post-attachments.md,
/// attachment-createuploadsession.md); at most 150 MB; fragments of at most 4 MB
/// (outlook-large-attachments.md).
pub const SMALL_ATTACHMENT_LIMIT: usize = 3 * 1024 * 1024;
pub const LARGE_ATTACHMENT_LIMIT: u64 = 150 * 1024 * 1024;
pub const ATTACHMENT_FRAGMENT_LIMIT: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct AttachmentSession {
    pub user_id: String,
    pub message_id: String,
    /// Which id `message_id` is (`id` or `_immutableId`).
    pub id_field: &'static str,
    pub name: String,
    pub size: u64,
    pub content_type: String,
    pub is_inline: bool,
    pub received: Vec<u8>,
    pub expires: chrono::DateTime<Utc>,
}

fn not_found() -> GraphFailure {
    GraphFailure::new(
        StatusCode::NOT_FOUND,
        "ErrorItemNotFound",
        "The specified object was not found in the store.",
    )
}

/// A file attachment as Graph returns it (resources/fileattachment.md).
fn file_attachment(name: &str, content_type: &str, is_inline: bool, content: &[u8]) -> Value {
    json!({
        "@odata.type": "#microsoft.graph.fileAttachment",
        "id": format!("AAMkAtt{}", uuid::Uuid::new_v4().simple()),
        "name": name,
        "contentType": content_type,
        "size": content.len(),
        "isInline": is_inline,
        "lastModifiedDateTime": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "contentBytes": base64::engine::general_purpose::STANDARD.encode(content),
    })
}

/// Adds an attachment to a draft; `None` when the draft does not exist.
fn attach(emu: &Emulator, user_id: &str, by: &str, message_id: &str, attachment: Value) -> Option<Value> {
    let mut mail = emu.mail();
    let draft = mail.mailboxes.get_mut(user_id)?.drafts.iter_mut().find(|d| d[by] == message_id)?;
    if !draft["attachments"].is_array() {
        draft["attachments"] = json!([]);
    }
    draft["attachments"].as_array_mut().expect("set above").push(attachment.clone());
    draft["hasAttachments"] = json!(true);
    Some(attachment)
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
    if let Some(props) = obj.get("singleValueExtendedProperties") {
        let ok = props.as_array().is_some_and(|ps| {
            ps.iter()
                .all(|p| p["id"].as_str().is_some_and(|id| id.split_whitespace().count() >= 3) && p["value"].is_string())
        });
        if !ok {
            return Err(bad(
                "ErrorInvalidExtendedProperty",
                "singleValueExtendedProperties must be a collection of {id: '{type} {guid} Name {name}', value: string}.",
            ));
        }
    }
    let mut normalised = obj.clone();
    normalised.insert("id".into(), json!(format!("AAMk{}", uuid::Uuid::new_v4().simple())));
    normalised.insert("_immutableId".into(), json!(format!("AAkALg{}", uuid::Uuid::new_v4().simple())));
    normalised.insert(
        "createdDateTime".into(),
        json!(Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
    );
    Ok(normalised)
}

/// `…/sendMail`, `…/messages`, `…/messages/{id}`, `…/messages/{id}/send` for `/me` and `/users/{id}`.
#[allow(clippy::too_many_arguments)]
async fn mail_request(
    emu: Emulator,
    user: Option<String>,
    method: Method,
    rest: String,
    query: HashMap<String, String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let by = id_field(&headers);
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
    let user_id = match mailbox_subject(&emu, &claims, user.as_deref()) {
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
            message.insert(
                "internetMessageId".into(),
                json!(format!("<{}@emulator.officebridge>", uuid::Uuid::new_v4().simple())),
            );
            let draft = Value::Object(message);
            emu.mail().mailboxes.entry(user_id).or_default().drafts.push(draft.clone());
            (StatusCode::CREATED, Json(present(&draft, &headers, &query))).into_response()
        }
        (Method::GET, ["messages", id]) => {
            let mail = emu.mail();
            let mailbox = mail.mailboxes.get(&user_id);
            let found = mailbox.and_then(|m| m.drafts.iter().chain(m.sent.iter().filter(|x| visible(x))).find(|x| x[by] == *id));
            match found {
                Some(m) => Json(present(m, &headers, &query)).into_response(),
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
            mailbox.drafts.retain(|x| x[by] != *id);
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
            let delay = mail.settings.sent_items_delay_ms as i64;
            let mailbox = mail.mailboxes.entry(user_id).or_default();
            let Some(pos) = mailbox.drafts.iter().position(|x| x[by] == *id) else {
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
            // Moved to Sent Items: a new default id, the same immutable one.
            message["id"] = json!(format!("AAMk{}", uuid::Uuid::new_v4().simple()));
            message["_visibleAtMs"] = json!(now_ms() + delay);
            message["sentDateTime"] = json!(Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
            mailbox.sent.push(message);
            StatusCode::ACCEPTED.into_response()
        }
        (Method::POST, ["messages", id, "attachments"]) => {
            let request = match parse() {
                Ok(v) => v,
                Err(e) => return e.into_response(&headers),
            };
            if request["@odata.type"] != "#microsoft.graph.fileAttachment" {
                return graph_error(
                    &headers,
                    StatusCode::BAD_REQUEST,
                    "ErrorInvalidRequest",
                    "This emulator accepts #microsoft.graph.fileAttachment attachments.",
                );
            }
            let Some(content) = request["contentBytes"]
                .as_str()
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            else {
                return graph_error(
                    &headers,
                    StatusCode::BAD_REQUEST,
                    "ErrorInvalidRequest",
                    "The attachment's contentBytes is missing or not valid base64.",
                );
            };
            if content.len() >= SMALL_ATTACHMENT_LIMIT {
                return graph_error(
                    &headers,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "ErrorAttachmentSizeLimitExceeded",
                    "Attachments of 3 MB or more must be added through an upload session (attachments/createUploadSession).",
                );
            }
            if let Err(wait) = spend_upload(&emu, &user_id, content.len() as u64) {
                return budget_spent(&headers, wait);
            }
            let name = request["name"].as_str().unwrap_or("attachment");
            let content_type = request["contentType"].as_str().unwrap_or("application/octet-stream");
            let attachment = file_attachment(name, content_type, request["isInline"].as_bool().unwrap_or(false), &content);
            match attach(&emu, &user_id, by, id, attachment) {
                Some(a) => (StatusCode::CREATED, Json(a)).into_response(),
                None => not_found().into_response(&headers),
            }
        }
        (Method::GET, ["messages", id, "attachments"]) => {
            let mail = emu.mail();
            let message = mail
                .mailboxes
                .get(&user_id)
                .and_then(|m| m.drafts.iter().chain(m.sent.iter().filter(|x| visible(x))).find(|x| x[by] == *id));
            match message {
                Some(m) => {
                    let list: Vec<Value> = m["attachments"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .into_iter()
                        .map(|a| select(a, &query))
                        .collect();
                    Json(json!({"value": list})).into_response()
                }
                None => not_found().into_response(&headers),
            }
        }
        (Method::POST, ["messages", id, "attachments", "createUploadSession"]) => {
            let request = match parse() {
                Ok(v) => v,
                Err(e) => return e.into_response(&headers),
            };
            let item = &request["AttachmentItem"];
            let (Some(name), Some(size)) = (item["name"].as_str(), item["size"].as_u64()) else {
                return graph_error(
                    &headers,
                    StatusCode::BAD_REQUEST,
                    "ErrorInvalidRequest",
                    "AttachmentItem needs attachmentType 'file', a name and a size.",
                );
            };
            if item["attachmentType"] != "file" {
                return graph_error(
                    &headers,
                    StatusCode::BAD_REQUEST,
                    "ErrorInvalidRequest",
                    "attachmentType must be 'file'.",
                );
            }
            if size < SMALL_ATTACHMENT_LIMIT as u64 {
                return graph_error(
                    &headers,
                    StatusCode::BAD_REQUEST,
                    "ErrorAttachmentSizeShouldNotBeLessThanMinimumSize",
                    "Attachment size must be greater than the minimum size of 3 MB: post smaller attachments to the message's attachments.",
                );
            }
            if size > LARGE_ATTACHMENT_LIMIT {
                return graph_error(
                    &headers,
                    StatusCode::BAD_REQUEST,
                    "ErrorAttachmentSizeLimitExceeded",
                    "The attachment is larger than the 150 MB limit.",
                );
            }
            let exists = emu
                .mail()
                .mailboxes
                .get(&user_id)
                .is_some_and(|m| m.drafts.iter().any(|d| d[by] == *id));
            if !exists {
                return not_found().into_response(&headers);
            }
            let token = super::opaque();
            let expires = Utc::now() + chrono::Duration::hours(2);
            emu.mail().sessions.insert(
                token.clone(),
                AttachmentSession {
                    user_id,
                    message_id: id.to_string(),
                    id_field: by,
                    name: name.to_string(),
                    size,
                    content_type: item["contentType"].as_str().unwrap_or("application/octet-stream").to_string(),
                    is_inline: item["isInline"].as_bool().unwrap_or(false),
                    received: Vec::new(),
                    expires,
                },
            );
            (
                StatusCode::CREATED,
                Json(json!({
                    "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#microsoft.graph.uploadSession",
                    "uploadUrl": format!("{}/_attachments/{token}", emu.base_url),
                    "expirationDateTime": expires.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    "nextExpectedRanges": ["0-"],
                })),
            )
                .into_response()
        }
        (Method::GET, ["mailFolders", folder, "messages"]) => {
            let wanted = match property_filter(&query) {
                Ok(w) => w,
                Err(e) => return e.into_response(&headers),
            };
            let mail = emu.mail();
            let mailbox = mail.mailboxes.get(&user_id);
            let messages: Vec<Value> = match folder.to_ascii_lowercase().as_str() {
                "drafts" => mailbox.map(|m| m.drafts.clone()).unwrap_or_default(),
                // Messages sent with saveToSentItems=false never reach Sent Items, and a sent
                // copy appears there only once Exchange has filed it.
                "sentitems" => mailbox
                    .map(|m| {
                        m.sent
                            .iter()
                            .filter(|x| x["savedToSentItems"] != false && visible(x))
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default(),
                _ => return not_found().into_response(&headers),
            };
            let messages: Vec<Value> = messages
                .iter()
                .filter(|m| wanted.as_ref().is_none_or(|(id, value)| has_property(m, id, value)))
                .map(|m| present(m, &headers, &query))
                .collect();
            Json(json!({"value": messages})).into_response()
        }
        _ => graph_error(
            &headers,
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("Resource not found for the segment '{rest}'."),
        ),
    }
}

/// The pre-authenticated upload URL of a large attachment: `PUT` byte ranges in order (at most
/// 4 MB each; `200` with `nextExpectedRanges`, then `201` with a `Location` and no body),
/// `DELETE` to cancel; expired or unknown sessions are `404` (outlook-large-attachments.md).
pub async fn attachment_upload(
    State(emu): State<Emulator>,
    method: Method,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    use axum::http::header;
    if let Some(refused) = super::graph::refuse_authorization(&headers, "InvalidAuthenticationToken") {
        return refused;
    }
    let now = Utc::now();
    let session = {
        let mut mail = emu.mail();
        mail.sessions.retain(|_, s| s.expires > now);
        mail.sessions.get(&token).map(|s| (s.size, s.received.len() as u64, s.expires))
    };
    let Some((size, received, expires)) = session else {
        return not_found().into_response(&headers);
    };
    let status = |next: u64| {
        json!({
            "expirationDateTime": expires.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "nextExpectedRanges": [next.to_string()],
        })
    };
    let bad = |m: &str| graph_error(&headers, StatusCode::BAD_REQUEST, "ErrorInvalidRequest", m);
    match method {
        Method::DELETE => {
            emu.mail().sessions.remove(&token);
            StatusCode::NO_CONTENT.into_response()
        }
        Method::GET => Json(status(received)).into_response(),
        Method::PUT => {
            use super::graph::{FragmentRefused, check_fragment};
            let fragment = match check_fragment(&headers, body.len(), ATTACHMENT_FRAGMENT_LIMIT, Some(size), received) {
                Ok(f) => f,
                Err(FragmentRefused::NoRange) => return bad("A Content-Range header (bytes start-end/total) is required."),
                Err(FragmentRefused::TooLarge) => {
                    return graph_error(
                        &headers,
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "RequestEntityTooLarge",
                        "Upload at most 4 MB per request.",
                    );
                }
                Err(FragmentRefused::LengthMismatch | FragmentRefused::TotalChanged) => {
                    return bad("The Content-Range does not match the content or the attachment's size.");
                }
                Err(FragmentRefused::OutOfOrder { next, .. }) => {
                    return graph_error(
                        &headers,
                        StatusCode::RANGE_NOT_SATISFIABLE,
                        "ErrorInvalidRequest",
                        &format!("Bytes must be uploaded in order; the next expected byte is {next}."),
                    );
                }
            };
            let end = fragment.end;
            let user = emu.mail().sessions.get(&token).map(|s| s.user_id.clone()).unwrap_or_default();
            if let Err(wait) = spend_upload(&emu, &user, body.len() as u64) {
                return budget_spent(&headers, wait);
            }
            let finished = {
                let mut mail = emu.mail();
                let s = mail.sessions.get_mut(&token).expect("checked above");
                s.received.extend_from_slice(&body);
                if s.received.len() as u64 == s.size {
                    mail.sessions.remove(&token)
                } else {
                    None
                }
            };
            let Some(done) = finished else {
                return Json(status(end + 1)).into_response();
            };
            let attachment = file_attachment(&done.name, &done.content_type, done.is_inline, &done.received);
            let id = attachment["id"].as_str().unwrap_or_default().to_string();
            if attach(&emu, &done.user_id, done.id_field, &done.message_id, attachment).is_none() {
                return not_found().into_response(&headers);
            }
            let location = format!(
                "{}/v1.0/users/{}/messages/{}/attachments/{id}",
                emu.base_url, done.user_id, done.message_id
            );
            (StatusCode::CREATED, [(header::LOCATION, location)]).into_response()
        }
        _ => bad("The HTTP method is not supported on the upload URL."),
    }
}

fn query_of(uri: &axum::http::Uri) -> HashMap<String, String> {
    url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

/// Every `/v1.0/me/…` mail route: what follows `/me/` says what is asked.
pub async fn me_mail(State(emu): State<Emulator>, method: Method, uri: axum::http::Uri, headers: HeaderMap, body: Bytes) -> Response {
    let rest = uri.path().strip_prefix("/v1.0/me/").unwrap_or_default().to_string();
    mail_request(emu, None, method, rest, query_of(&uri), headers, body).await
}

/// Every `/v1.0/users/{user}/…` mail route.
pub async fn user_mail(
    State(emu): State<Emulator>,
    method: Method,
    Path(params): Path<HashMap<String, String>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let user = params.get("user").cloned().unwrap_or_default();
    let rest = uri
        .path()
        .strip_prefix("/v1.0/users/")
        .and_then(|p| p.split_once('/'))
        .map(|(_, rest)| rest.to_string())
        .unwrap_or_default();
    let query = query_of(&uri);
    mail_request(emu, Some(user), method, rest, query, headers, body).await
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
