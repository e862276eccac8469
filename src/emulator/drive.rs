//! OneDrive in Microsoft Graph v1.0, from microsoftgraph/microsoft-graph-docs-contrib:
//! `api-reference/v1.0/api/driveitem-put-content.md` (simple upload, up to 250 MB, conflict
//! behaviour `replace` by default), `api-reference/v1.0/api/driveitem-createuploadsession.md`
//! (upload sessions: fragments under 60 MiB in multiples of 320 KiB, in order, `202` with
//! `nextExpectedRanges`, `416` for a fragment already received, `201` with the driveItem,
//! `GET` status, `DELETE` cancel, `404` once expired, `deferCommit`),
//! `api-reference/v1.0/api/driveitem-get.md`, `api-reference/v1.0/resources/driveitem.md`.

use super::Emulator;
use super::graph::{authenticate, graph_error, permitted, subject};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use std::collections::HashMap;

/// Simple uploads take files up to 250 MB (driveitem-put-content.md).
pub const SIMPLE_UPLOAD_LIMIT: usize = 250 * 1000 * 1000;
/// Fragments: under 60 MiB each, in multiples of 320 KiB except the last.
pub const FRAGMENT_LIMIT: usize = 60 * 1024 * 1024;
pub const FRAGMENT_UNIT: u64 = 320 * 1024;
/// How long an upload session lives without activity.
const SESSION_HOURS: i64 = 24;

/// A file in a user's OneDrive.
#[derive(Debug, Clone)]
pub struct Item {
    pub id: String,
    pub user_id: String,
    /// The folder path below the root, without slashes at either end (`officebridge/exports`).
    pub folder: String,
    pub name: String,
    pub content: Vec<u8>,
    pub created: DateTime<Utc>,
    pub modified: DateTime<Utc>,
    pub version: u32,
}

/// An upload session and the bytes it has received so far.
#[derive(Debug, Clone)]
pub struct Session {
    pub user_id: String,
    pub tenant_id: String,
    pub folder: String,
    pub name: String,
    pub conflict: Conflict,
    pub defer_commit: bool,
    pub total: Option<u64>,
    pub received: Vec<u8>,
    pub expires: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    Fail,
    Replace,
    Rename,
}

impl Conflict {
    fn parse(raw: Option<&str>, default: Conflict) -> Result<Conflict, String> {
        match raw {
            None => Ok(default),
            Some("fail") => Ok(Conflict::Fail),
            Some("replace") => Ok(Conflict::Replace),
            Some("rename") => Ok(Conflict::Rename),
            Some(other) => Err(format!("Invalid value '{other}' for @microsoft.graph.conflictBehavior.")),
        }
    }
}

/// The drive's state: items by id, sessions by the token in their upload URL.
#[derive(Debug, Default)]
pub struct DriveState {
    pub items: HashMap<String, Item>,
    pub sessions: HashMap<String, Session>,
    /// Sharing links by (item, type, scope, app): createLink answers an existing one again.
    pub links: HashMap<(String, String, String, String), Value>,
}

fn mime_type(name: &str) -> &'static str {
    match name.rsplit('.').next().map(str::to_ascii_lowercase).as_deref() {
        Some("xlsx") => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        Some("pdf") => "application/pdf",
        Some("csv") => "text/csv",
        Some("txt") => "text/plain",
        _ => "application/octet-stream",
    }
}

fn item_json(emu: &Emulator, item: &Item) -> Value {
    let user = emu.users_by_id(&item.user_id);
    let owner = user
        .as_ref()
        .map_or("user".to_string(), |u| u.user_principal_name.replace(['@', '.'], "_"));
    let parent_path = if item.folder.is_empty() {
        "/drive/root:".to_string()
    } else {
        format!("/drive/root:/{}", item.folder)
    };
    json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#drives('me')/items/$entity",
        "id": item.id,
        "name": item.name,
        "size": item.content.len(),
        "eTag": format!("\"{{{}}},{}\"", item.id, item.version),
        "cTag": format!("\"c:{{{}}},{}\"", item.id, item.version),
        "createdDateTime": item.created.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "lastModifiedDateTime": item.modified.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        // Office documents open in Office for the web through Doc.aspx, as OneDrive for Business links them.
        "webUrl": format!("{}/personal/{owner}/_layouts/15/Doc.aspx?sourcedoc=%7B{}%7D&file={}&action=default&mobileredirect=true", emu.base_url, item.id, urlencode(&item.name)),
        "file": {"mimeType": mime_type(&item.name)},
        "parentReference": {"driveType": "business", "driveId": format!("b!{}", item.user_id.replace('-', "")), "path": parent_path},
    })
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Where a drive request points, parsed from the path after `/drive/`.
#[derive(Debug, PartialEq)]
enum Target {
    /// `root:/{path}:/content` or `items/{parent}:/{name}:/content`.
    Content { folder: String, name: String },
    /// `root:/{path}:/createUploadSession` or `items/{parent}:/{name}:/createUploadSession`.
    UploadSession { folder: String, name: String },
    /// `items/{id}`.
    Item(String),
    /// `items/{id}/content`.
    ItemContent(String),
    /// `items/{id}/createLink`.
    CreateLink(String),
    /// `root:/{folder}:/children` (driveitem-list-children.md).
    Children(String),
}

/// Splits `a/b/c.xlsx` into (`a/b`, `c.xlsx`).
fn split_path(path: &str) -> Option<(String, String)> {
    let path = path.trim_matches('/');
    let (folder, name) = path.rsplit_once('/').unwrap_or(("", path));
    (!name.is_empty()).then(|| (folder.to_string(), name.to_string()))
}

fn parse_target(emu: &Emulator, user_id: &str, rest: &str) -> Option<Target> {
    let colon_action = |inner: &str| -> Option<(String, String)> {
        // `…:/{path}:/{action}`
        let (path, action) = inner.rsplit_once(":/")?;
        Some((path.to_string(), action.to_string()))
    };
    if let Some(inner) = rest.strip_prefix("root:/") {
        let (path, action) = colon_action(inner)?;
        if action == "children" {
            return Some(Target::Children(path.trim_matches('/').to_string()));
        }
        let (folder, name) = split_path(&path)?;
        return match action.as_str() {
            "content" => Some(Target::Content { folder, name }),
            "createUploadSession" => Some(Target::UploadSession { folder, name }),
            _ => None,
        };
    }
    let items = rest.strip_prefix("items/")?;
    if let Some((parent, tail)) = items.split_once(":/") {
        let (name, action) = colon_action(&format!("x:/{tail}")).map(|(p, a)| (p.trim_start_matches("x:/").to_string(), a))?;
        let folder = if parent == "root" {
            String::new()
        } else {
            let drive = emu.drive();
            let parent_item = drive.items.get(parent).filter(|i| i.user_id == user_id)?;
            format!("{}/{}", parent_item.folder, parent_item.name).trim_matches('/').to_string()
        };
        return match action.as_str() {
            "content" => Some(Target::Content { folder, name }),
            "createUploadSession" => Some(Target::UploadSession { folder, name }),
            _ => None,
        };
    }
    match items.split_once('/') {
        Some((id, "content")) => Some(Target::ItemContent(id.to_string())),
        Some((id, "createLink")) => Some(Target::CreateLink(id.to_string())),
        None => Some(Target::Item(items.to_string())),
        _ => None,
    }
}

/// The name a conflict resolves to, or `None` when it must fail.
fn resolve_name(emu: &Emulator, user_id: &str, folder: &str, name: &str, conflict: Conflict) -> Option<(String, Option<String>)> {
    let drive = emu.drive();
    let existing = |n: &str| {
        drive
            .items
            .values()
            .find(|i| i.user_id == user_id && i.folder.eq_ignore_ascii_case(folder) && i.name.eq_ignore_ascii_case(n))
            .map(|i| i.id.clone())
    };
    match (existing(name), conflict) {
        (None, _) => Some((name.to_string(), None)),
        (Some(id), Conflict::Replace) => Some((name.to_string(), Some(id))),
        (Some(_), Conflict::Fail) => None,
        (Some(_), Conflict::Rename) => {
            // OneDrive appends " 1", " 2", … before the extension.
            let (stem, ext) = name
                .rsplit_once('.')
                .map_or((name.to_string(), String::new()), |(s, e)| (s.to_string(), format!(".{e}")));
            (1..)
                .map(|n| format!("{stem} {n}{ext}"))
                .find(|candidate| existing(candidate).is_none())
                .map(|n| (n, None))
        }
    }
}

/// Stores a file; `Ok(true)` when it was created, `Ok(false)` when it replaced one.
fn store(emu: &Emulator, user_id: &str, folder: &str, name: &str, conflict: Conflict, content: Vec<u8>) -> Result<(Item, bool), ()> {
    let (name, replace) = resolve_name(emu, user_id, folder, name, conflict).ok_or(())?;
    let mut drive = emu.drive();
    let now = Utc::now();
    let item = match replace.and_then(|id| drive.items.get_mut(&id)) {
        Some(existing) => {
            existing.content = content;
            existing.modified = now;
            existing.version += 1;
            return Ok((existing.clone(), false));
        }
        None => Item {
            id: format!("01{}", uuid::Uuid::new_v4().simple().to_string().to_uppercase()),
            user_id: user_id.to_string(),
            folder: folder.to_string(),
            name,
            content,
            created: now,
            modified: now,
            version: 1,
        },
    };
    drive.items.insert(item.id.clone(), item.clone());
    Ok((item, true))
}

fn name_exists(headers: &HeaderMap) -> Response {
    graph_error(
        headers,
        StatusCode::CONFLICT,
        "nameAlreadyExists",
        "The specified item name already exists.",
    )
}

/// `…/drive/{rest}` for `/me` (delegated) and `/users/{id}` (application tokens).
async fn drive_request(
    emu: Emulator,
    user: Option<String>,
    method: Method,
    rest: String,
    query: HashMap<String, String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let claims = match authenticate(&emu, &headers) {
        Ok(c) => c,
        Err(e) => return e.into_response(&headers),
    };
    let tid = claims["tid"].as_str().unwrap_or_default().to_string();
    // The shared lookup answers with Outlook's codes; OneDrive names the same failures its own way.
    let user_id = match subject(&emu, &claims, user.as_deref()) {
        Ok(found) => found.id,
        Err(e) if e.status == StatusCode::FORBIDDEN => {
            return graph_error(&headers, StatusCode::FORBIDDEN, "accessDenied", "Access denied");
        }
        Err(e) if e.status == StatusCode::NOT_FOUND => {
            let who = user.as_deref().unwrap_or("me");
            return graph_error(
                &headers,
                StatusCode::NOT_FOUND,
                "itemNotFound",
                &format!("The user '{who}' does not exist."),
            );
        }
        Err(e) => return e.into_response(&headers),
    };
    let writing = method != Method::GET;
    let (scopes, roles): (&[&str], &[&str]) = if writing {
        (&["Files.ReadWrite", "Files.ReadWrite.All"], &["Files.ReadWrite.All"])
    } else {
        (
            &["Files.ReadWrite", "Files.ReadWrite.All", "Files.Read", "Files.Read.All"],
            &["Files.ReadWrite.All", "Files.Read.All"],
        )
    };
    if !permitted(&claims, scopes, roles) {
        return graph_error(
            &headers,
            StatusCode::FORBIDDEN,
            "accessDenied",
            "Either scp or roles claim need to be present in the token with the permission to access the drive.",
        );
    }
    let Some(target) = parse_target(&emu, &user_id, &rest) else {
        return graph_error(
            &headers,
            StatusCode::BAD_REQUEST,
            "invalidRequest",
            &format!("Invalid request: the path '{rest}' is not supported by this emulator."),
        );
    };
    let conflict_param = query.get("@microsoft.graph.conflictBehavior").map(String::as_str);
    match (method, target) {
        (Method::PUT, Target::Content { folder, name }) => {
            if body.len() > SIMPLE_UPLOAD_LIMIT {
                return graph_error(
                    &headers,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "requestTooLarge",
                    "The request is too large: use an upload session for files over 250 MB.",
                );
            }
            let conflict = match Conflict::parse(conflict_param, Conflict::Replace) {
                Ok(c) => c,
                Err(m) => return graph_error(&headers, StatusCode::BAD_REQUEST, "invalidRequest", &m),
            };
            match store(&emu, &user_id, &folder, &name, conflict, body.to_vec()) {
                Ok((item, created)) => (
                    if created { StatusCode::CREATED } else { StatusCode::OK },
                    Json(item_json(&emu, &item)),
                )
                    .into_response(),
                Err(()) => name_exists(&headers),
            }
        }
        (Method::POST, Target::UploadSession { folder, name }) => {
            let request: Value = if body.is_empty() {
                json!({})
            } else {
                serde_json::from_slice(&body).unwrap_or(Value::Null)
            };
            if !request.is_object() {
                return graph_error(
                    &headers,
                    StatusCode::BAD_REQUEST,
                    "invalidRequest",
                    "The request body is not valid JSON.",
                );
            }
            let behaviour = request["item"]["@microsoft.graph.conflictBehavior"].as_str().or(conflict_param);
            // createUploadSession fails on a name conflict unless told otherwise.
            let conflict = match Conflict::parse(behaviour, Conflict::Fail) {
                Ok(c) => c,
                Err(m) => return graph_error(&headers, StatusCode::BAD_REQUEST, "invalidRequest", &m),
            };
            if conflict == Conflict::Fail && resolve_name(&emu, &user_id, &folder, &name, conflict).is_none() {
                return name_exists(&headers);
            }
            let token = super::opaque();
            let expires = Utc::now() + Duration::hours(SESSION_HOURS);
            let total = request["item"]["fileSize"].as_u64();
            emu.drive().sessions.insert(
                token.clone(),
                Session {
                    user_id,
                    tenant_id: tid,
                    folder,
                    name,
                    conflict,
                    defer_commit: request["deferCommit"].as_bool().unwrap_or(false),
                    total,
                    received: Vec::new(),
                    expires,
                },
            );
            Json(json!({
                "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#microsoft.graph.uploadSession",
                "uploadUrl": format!("{}/_upload/{token}", emu.base_url),
                "expirationDateTime": expires.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "nextExpectedRanges": ["0-"],
            }))
            .into_response()
        }
        (Method::GET, Target::Item(id)) => match emu.drive().items.get(&id).filter(|i| i.user_id == user_id) {
            Some(item) => Json(item_json(&emu, item)).into_response(),
            None => graph_error(&headers, StatusCode::NOT_FOUND, "itemNotFound", "The resource could not be found."),
        },
        (Method::GET, Target::Children(folder)) => {
            // Files only (folders are not items here); a folder nothing was ever put in, or
            // below, does not exist: 404 itemNotFound. `$orderby=lastModifiedDateTime desc`
            // and `$top` as driveitem-list-children.md allows them.
            let drive = emu.drive();
            let below = format!("{}/", folder.to_lowercase());
            if !drive
                .items
                .values()
                .any(|i| i.user_id == user_id && (i.folder.eq_ignore_ascii_case(&folder) || i.folder.to_lowercase().starts_with(&below)))
            {
                return graph_error(&headers, StatusCode::NOT_FOUND, "itemNotFound", "The resource could not be found.");
            }
            let mut items: Vec<&Item> = drive
                .items
                .values()
                .filter(|i| i.user_id == user_id && i.folder.eq_ignore_ascii_case(&folder))
                .collect();
            match query.get("$orderby").map(|o| o.trim().to_ascii_lowercase()).as_deref() {
                None | Some("name") | Some("name asc") => items.sort_by_key(|i| i.name.to_lowercase()),
                Some("lastmodifieddatetime desc") => items.sort_by(|a, b| b.modified.cmp(&a.modified).then(a.name.cmp(&b.name))),
                Some("lastmodifieddatetime") | Some("lastmodifieddatetime asc") => items.sort_by_key(|i| i.modified),
                Some(other) => {
                    return graph_error(
                        &headers,
                        StatusCode::BAD_REQUEST,
                        "invalidRequest",
                        &format!("Invalid request: $orderby '{other}' is not supported by this emulator."),
                    );
                }
            }
            let top = query
                .get("$top")
                .and_then(|t| t.parse::<usize>().ok())
                .unwrap_or(200)
                .clamp(1, 1000);
            let value: Vec<Value> = items.iter().take(top).map(|i| item_json(&emu, i)).collect();
            Json(json!({"value": value})).into_response()
        }
        (Method::GET, Target::ItemContent(id)) => match emu.drive().items.get(&id).filter(|i| i.user_id == user_id) {
            Some(item) => ([(header::CONTENT_TYPE, mime_type(&item.name))], item.content.clone()).into_response(),
            None => graph_error(&headers, StatusCode::NOT_FOUND, "itemNotFound", "The resource could not be found."),
        },
        (Method::GET, Target::Content { folder, name }) => {
            let drive = emu.drive();
            match drive
                .items
                .values()
                .find(|i| i.user_id == user_id && i.folder.eq_ignore_ascii_case(&folder) && i.name.eq_ignore_ascii_case(&name))
            {
                Some(item) => ([(header::CONTENT_TYPE, mime_type(&item.name))], item.content.clone()).into_response(),
                None => graph_error(&headers, StatusCode::NOT_FOUND, "itemNotFound", "The resource could not be found."),
            }
        }
        (Method::POST, Target::CreateLink(id)) => create_link(&emu, &claims, &user_id, &id, &body, &headers),
        _ => graph_error(
            &headers,
            StatusCode::METHOD_NOT_ALLOWED,
            "invalidRequest",
            "The HTTP method is not supported for this resource.",
        ),
    }
}

/// `POST …/items/{id}/createLink` (api-reference/v1.0/api/driveitem-createlink.md): a
/// sharing link of a type and scope, `201` when new, `200` with the same permission when the
/// calling app already has one. `embed` exists only in OneDrive personal, which this is not.
fn create_link(emu: &Emulator, claims: &Value, user_id: &str, id: &str, body: &[u8], headers: &HeaderMap) -> Response {
    let bad = |m: &str| graph_error(headers, StatusCode::BAD_REQUEST, "invalidRequest", m);
    let Some(item) = emu.drive().items.get(id).filter(|i| i.user_id == user_id).cloned() else {
        return graph_error(headers, StatusCode::NOT_FOUND, "itemNotFound", "The resource could not be found.");
    };
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return bad("The request body is not valid JSON.");
    };
    let kind = request["type"].as_str().unwrap_or_default().to_string();
    let roles = match kind.as_str() {
        "view" => "read",
        "edit" => "write",
        "embed" => return bad("Embed links are only available for files in OneDrive personal."),
        "" => return bad("The 'type' property is required: view or edit."),
        other => return bad(&format!("Invalid value '{other}' for type.")),
    };
    let scope = request["scope"].as_str().unwrap_or("organization").to_string();
    if !["anonymous", "organization", "users"].contains(&scope.as_str()) {
        return bad(&format!("Invalid value '{scope}' for scope."));
    }
    let app = claims["azp"].as_str().or(claims["appid"].as_str()).unwrap_or_default().to_string();
    let key = (item.id.clone(), kind.clone(), scope.clone(), app.clone());
    if let Some(existing) = emu.drive().links.get(&key) {
        return (StatusCode::OK, Json(existing.clone())).into_response();
    }
    let token = super::opaque();
    let permission = json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "roles": [roles],
        "link": {
            "type": kind,
            "scope": scope,
            "webUrl": format!("{}/:x:/g/personal/{}/{}", emu.base_url, user_id.replace('-', ""), &token[..22]),
            "application": {"id": app, "displayName": emu.app(&app).map(|(_, a)| a.display_name).unwrap_or_default()},
            "preventsDownload": false,
        },
    });
    emu.drive().links.insert(key, permission.clone());
    (StatusCode::CREATED, Json(permission)).into_response()
}

pub async fn me_drive(
    State(emu): State<Emulator>,
    method: Method,
    Path(rest): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    drive_request(emu, None, method, rest, q, headers, body).await
}

pub async fn user_drive(
    State(emu): State<Emulator>,
    method: Method,
    Path((user, rest)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    drive_request(emu, Some(user), method, rest, q, headers, body).await
}

/// What the upload URL needs to know about a session, without its bytes.
struct SessionView {
    total: Option<u64>,
    received: u64,
    defer_commit: bool,
    expires: DateTime<Utc>,
}

impl SessionView {
    fn of(s: &Session) -> Self {
        Self {
            total: s.total,
            received: s.received.len() as u64,
            defer_commit: s.defer_commit,
            expires: s.expires,
        }
    }
}

fn session_status(s: &SessionView) -> Value {
    json!({
        "expirationDateTime": s.expires.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "nextExpectedRanges": [format!("{}-", s.received)],
    })
}

/// Finishes a session into a file; the session is gone afterwards (unless the name conflicts,
/// when it stays for an explicit commit, as Graph keeps it).
fn complete(emu: &Emulator, headers: &HeaderMap, token: &str) -> Response {
    let Some(mut session) = emu.drive().sessions.remove(token) else {
        return graph_error(headers, StatusCode::NOT_FOUND, "itemNotFound", "The upload session was not found.");
    };
    let content = std::mem::take(&mut session.received);
    match store(emu, &session.user_id, &session.folder, &session.name, session.conflict, content) {
        Ok((item, created)) => (
            if created { StatusCode::CREATED } else { StatusCode::OK },
            Json(item_json(emu, &item)),
        )
            .into_response(),
        Err(()) => graph_error(
            headers,
            StatusCode::CONFLICT,
            "nameAlreadyExists",
            "Another file exists with the same name as the uploaded session. You can redirect the upload session to use a new filename by calling PUT with the new metadata and @microsoft.graph.sourceUrl attribute.",
        ),
    }
}

/// The upload URL: `PUT` a fragment, `GET` the status, `DELETE` to cancel, `POST` (empty) to
/// commit a `deferCommit` session. It is pre-authenticated: an `Authorization` header is refused.
pub async fn upload_url(
    State(emu): State<Emulator>,
    method: Method,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refused) = super::graph::refuse_authorization(&headers, "unauthenticated") {
        return refused;
    }
    let now = Utc::now();
    {
        let mut drive = emu.drive();
        if drive.sessions.get(&token).is_some_and(|s| s.expires <= now) {
            drive.sessions.remove(&token);
        }
    }
    // A view of the session, not a clone: the received bytes can be a gigabyte.
    let Some(session) = emu.drive().sessions.get(&token).map(SessionView::of) else {
        return graph_error(
            &headers,
            StatusCode::NOT_FOUND,
            "itemNotFound",
            "The upload session was not found or has expired.",
        );
    };
    match method {
        Method::GET => Json(session_status(&session)).into_response(),
        Method::DELETE => {
            emu.drive().sessions.remove(&token);
            StatusCode::NO_CONTENT.into_response()
        }
        Method::POST if session.defer_commit && session.total == Some(session.received) => complete(&emu, &headers, &token),
        Method::POST => graph_error(
            &headers,
            StatusCode::BAD_REQUEST,
            "invalidRequest",
            "The upload is not complete or was not started with deferCommit.",
        ),
        Method::PUT => {
            use super::graph::{FragmentRefused, check_fragment};
            let invalid = |m: &str| graph_error(&headers, StatusCode::BAD_REQUEST, "invalidRequest", m);
            let fragment = match check_fragment(&headers, body.len(), FRAGMENT_LIMIT, session.total, session.received) {
                Ok(f) => f,
                Err(FragmentRefused::NoRange) => return invalid("A valid Content-Range header (bytes start-end/total) is required."),
                Err(FragmentRefused::LengthMismatch) => return invalid("The Content-Range does not match the length of the content."),
                Err(FragmentRefused::TooLarge) => {
                    return graph_error(
                        &headers,
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "requestTooLarge",
                        "A fragment must be smaller than 60 MiB.",
                    );
                }
                Err(FragmentRefused::TotalChanged) => return invalid("The total size in Content-Range differs from the upload session's."),
                // A fragment already received, or one that skips ahead.
                Err(FragmentRefused::OutOfOrder { start, next }) => {
                    return graph_error(
                        &headers,
                        StatusCode::RANGE_NOT_SATISFIABLE,
                        "invalidRange",
                        &format!("The fragment starts at {start}; the next expected byte is {next}."),
                    );
                }
            };
            let (length, total) = (fragment.bytes(), fragment.total);
            let last = fragment.is_last();
            if !last && length % FRAGMENT_UNIT != 0 {
                return graph_error(
                    &headers,
                    StatusCode::BAD_REQUEST,
                    "invalidRequest",
                    "A fragment other than the last must be a multiple of 320 KiB (327,680 bytes).",
                );
            }
            {
                let mut drive = emu.drive();
                let s = drive.sessions.get_mut(&token).expect("checked above");
                s.total = Some(total);
                s.received.extend_from_slice(&body);
                s.expires = now + Duration::hours(SESSION_HOURS);
            }
            if last && !session.defer_commit {
                complete(&emu, &headers, &token)
            } else {
                let s = emu.drive().sessions.get(&token).map(SessionView::of).expect("still there");
                (StatusCode::ACCEPTED, Json(session_status(&s))).into_response()
            }
        }
        _ => graph_error(
            &headers,
            StatusCode::METHOD_NOT_ALLOWED,
            "invalidRequest",
            "The HTTP method is not supported on the upload URL.",
        ),
    }
}

/// Test hook: the files in a user's drive (`GET /_emulator/drive/{user}`), content as base64.
pub async fn inspect(State(emu): State<Emulator>, Path(user): Path<String>) -> Response {
    use base64::Engine;
    let Some(found) = emu.users_by_upn_or_id(&user) else {
        return (StatusCode::NOT_FOUND, "no such user").into_response();
    };
    let drive = emu.drive();
    let files: Vec<Value> = drive
        .items
        .values()
        .filter(|i| i.user_id == found.id)
        .map(|i| json!({"id": i.id, "path": format!("{}/{}", i.folder, i.name).trim_start_matches('/'), "size": i.content.len(), "content": base64::engine::general_purpose::STANDARD.encode(&i.content)}))
        .collect();
    let sessions = drive.sessions.values().filter(|s| s.user_id == found.id).count();
    Json(json!({"files": files, "open_upload_sessions": sessions})).into_response()
}

/// `GET /personal/{owner}/_layouts/15/Doc.aspx?sourcedoc={id}`: where a driveItem's `webUrl`
/// leads — the emulator's stand-in for Excel for the web, the workbook's sheets as HTML tables
/// (the first 200 rows of each), so the links the panes and exports hand out go somewhere.
pub async fn web_view(State(emu): State<Emulator>, Query(q): Query<HashMap<String, String>>) -> Response {
    use calamine::Reader;
    let id = q
        .get("sourcedoc")
        .map(|s| s.trim_matches(['{', '}']).to_string())
        .unwrap_or_default();
    let Some(item) = emu.drive().items.get(&id).cloned() else {
        return (
            StatusCode::NOT_FOUND,
            axum::response::Html("<h1>This file no longer exists.</h1>".to_string()),
        )
            .into_response();
    };
    // A preview, not a spreadsheet: a workbook read whole costs memory in its size.
    if item.content.len() > 20 << 20 {
        return axum::response::Html(format!(
            "<h1>{} is too large for the emulator's preview.</h1>",
            super::escape(&item.name)
        ))
        .into_response();
    }
    let esc = super::escape;
    let mut html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{0} — Excel (emulator)</title><style>body{{font:13px system-ui,sans-serif;margin:0}}header{{background:#217346;color:#fff;padding:8px 14px}}h2{{font-size:14px;margin:14px}}table{{border-collapse:collapse;margin:0 14px 14px}}td,th{{border:1px solid #e1dfdd;padding:1px 6px;white-space:nowrap}}th{{background:#f3f2f1}}</style></head><body><header>{0} <small>(the Microsoft 365 emulator's stand-in for Excel for the web)</small></header>",
        esc(&item.name)
    );
    match calamine::open_workbook_from_rs::<calamine::Xlsx<_>, _>(std::io::Cursor::new(item.content.clone())) {
        Err(e) => html.push_str(&format!(
            "<p>This file is not a workbook the emulator can show: {}</p>",
            esc(&e.to_string())
        )),
        Ok(mut book) => {
            for name in book.sheet_names() {
                html.push_str(&format!("<h2>{}</h2><table>", esc(&name)));
                if let Ok(range) = book.worksheet_range(&name) {
                    for row in range.rows().take(200) {
                        html.push_str("<tr>");
                        for cell in row {
                            html.push_str(&format!("<td>{}</td>", esc(&cell.to_string())));
                        }
                        html.push_str("</tr>");
                    }
                    if range.height() > 200 {
                        html.push_str(&format!(
                            "<tr><th colspan=\"{}\">… {} more rows</th></tr>",
                            range.width().max(1),
                            range.height() - 200
                        ));
                    }
                }
                html.push_str("</table>");
            }
        }
    }
    html.push_str("</body></html>");
    axum::response::Html(html).into_response()
}
