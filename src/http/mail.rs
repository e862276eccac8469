//! `POST /api/v1/mail` and the outbox's status and control (SPEC §6, "Mail"), and
//! `POST /api/v1/uploads` for attachments too large to send inline.
//!
//! Everything is checked before anything is queued — addresses, recipients, content, the
//! profile, the operator, every attachment and their total size — and the message, its
//! attachments and its idempotency record are written in one transaction.

use super::{AppState, Caller, Client, parse_json};
use crate::domain::{
    AttachmentSource, CompanyCode, Content, MAX_ATTACHMENT_BYTES, MailInput, MailRequest, OperatorCode, Provider, StoredMessage,
    attachment_name, content_type, too_large,
};
use crate::error::{ApiError, Problem};
use crate::store::StoreError;
use crate::store::blobs::BlobError;
use crate::store::models::{Role, SigninState};
use crate::store::outbox::{Begun, MailState, MailView, NewAttachment, NewMail};
use crate::store::uploads::Upload;
use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// An in-progress idempotency record older than this belongs to a request that died.
const STALE_IDEMPOTENCY_MS: i64 = 5 * 60 * 1000;

/// `POST /api/v1/mail`, under the mail body limit.
pub fn send_routes() -> Router<AppState> {
    Router::new().route("/api/v1/mail", post(send).get(list))
}

/// The rest: small bodies, or (uploads) streamed and bounded here.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/mail/{id}", get(show))
        .route("/api/v1/mail/{id}/retry", post(retry))
        .route("/api/v1/mail/{id}/cancel", post(cancel))
}

pub fn upload_routes() -> Router<AppState> {
    Router::new().route("/api/v1/uploads", post(upload))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Queued {
    pub id: String,
    pub state: MailState,
    pub profile: String,
    pub provider: Provider,
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(raw) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = raw
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| (0x21..0x7f).contains(&b)))
        .ok_or_else(|| ApiError::validation("Idempotency-Key", "must be 1 to 255 visible ASCII characters"))?;
    Ok(Some(key.to_string()))
}

fn queued_response(status: StatusCode, body: &Value, replayed: bool) -> Response {
    let mut r = (status, Json(body.clone())).into_response();
    if let Some(id) = body["id"].as_str()
        && let Ok(v) = HeaderValue::from_str(&format!("/api/v1/mail/{id}"))
    {
        r.headers_mut().insert(header::LOCATION, v);
    }
    if replayed {
        r.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    r
}

#[utoipa::path(post, path = "/api/v1/mail", tag = "mail", security(("api_key" = [])),
    params(("X-Operator" = Option<String>, Header, description = "The operator a graph_delegate profile sends as"),
           ("Idempotency-Key" = Option<String>, Header, description = "A repeat with the same body answers the first answer again")),
    request_body(content = MailInput, content_type = "application/json"),
    responses((status = 202, body = Queued, description = "Queued; `Location` names it"),
              (status = 401, body = Problem, content_type = "application/problem+json"),
              (status = 409, body = Problem, content_type = "application/problem+json", description = "The first request with this key is still in progress"),
              (status = 413, body = Problem, content_type = "application/problem+json"),
              (status = 422, body = Problem, content_type = "application/problem+json")))]
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn send(State(state): State<AppState>, Client(caller): Client, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    super::require_json(&headers)?;
    let key = idempotency_key(&headers)?;
    let operator = headers.get("x-operator").and_then(|v| v.to_str().ok()).map(str::to_string);
    let Some(key) = key else {
        let answer = queue(&state, &caller, operator.as_deref(), &body, None).await?;
        return Ok(queued_response(StatusCode::ACCEPTED, &answer, false));
    };
    let mut hasher = Sha256::new();
    hasher.update(operator.as_deref().unwrap_or_default().as_bytes());
    hasher.update(b"\n");
    hasher.update(&body);
    let hash = hex::encode(hasher.finalize());
    match state
        .store
        .begin_idempotent(&caller.0.id, &key, &hash, STALE_IDEMPOTENCY_MS)
        .await?
    {
        Begun::Replay { status, response } => Ok(queued_response(
            StatusCode::from_u16(status).unwrap_or(StatusCode::ACCEPTED),
            &response,
            true,
        )),
        Begun::Mismatch => Err(ApiError::validation(
            "Idempotency-Key",
            "was used with a different request; use a new key for a new message",
        )),
        Begun::InProgress => {
            let mut r = ApiError::Conflict {
                field: "Idempotency-Key".into(),
                message: "the first request with this key is still in progress; retry shortly".into(),
            }
            .into_response();
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            Ok(r)
        }
        Begun::Fresh => match queue(&state, &caller, operator.as_deref(), &body, Some(&key)).await {
            Ok(answer) => Ok(queued_response(StatusCode::ACCEPTED, &answer, false)),
            Err(e) => {
                // A refused request leaves the key free for the corrected one.
                state.store.abandon_idempotent(&caller.0.id, &key).await?;
                Err(e)
            }
        },
    }
}

/// Checks everything, stores the attachments' contents, queues the message; answers the
/// `202` body.
pub(super) async fn queue(
    state: &AppState,
    caller: &Caller,
    operator: Option<&str>,
    body: &[u8],
    key: Option<&str>,
) -> Result<Value, ApiError> {
    let input: MailInput = parse_json(body)?;
    let request = input.parse().map_err(ApiError::Validation)?;
    let company = match state.store.get_company(&request.company).await {
        Ok(c) => c,
        Err(StoreError::NotFound { .. }) => {
            return Err(ApiError::validation(
                "company",
                format!("no company has code '{}'", request.company),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let Some(resolution) = state.store.resolve_profile(&request.company, request.function).await? else {
        return Err(ApiError::Validation(vec![
            crate::domain::FieldError::new(
                "function",
                format!(
                    "no enabled email profile sends {} for company {}: add one for the company or the system (or a default)",
                    request.function, request.company
                ),
            ),
            crate::domain::FieldError::new(
                "company",
                format!("company {} has no profile for {}", request.company, request.function),
            ),
        ]));
    };
    let profile = state.store.get_profile(&resolution.profile).await?;
    let operator = check_sender(state, &profile, operator).await?;
    let message = render(state, &request, &company.name)?;
    let attachments = gather(state, caller, &request).await?;
    let id = uuid::Uuid::new_v4();
    let answer = json!({"id": id.to_string(), "state": "queued", "profile": resolution.profile.as_str(), "provider": resolution.provider});
    let mail = NewMail {
        id,
        api_key: caller.0.id.clone(),
        company: request.company.to_string(),
        function: request.function.as_str().to_string(),
        profile: resolution.profile.to_string(),
        provider: resolution.provider.as_str().to_string(),
        operator: operator.map(|o| o.to_string()),
        message,
        attachments,
    };
    state.store.enqueue_mail(&mail, key.map(|k| (k, 202, &answer))).await?;
    state.outbox.notify();
    Ok(answer)
}

/// The operator a profile needs: for `graph_delegate`, one linked to the profile's tenant.
async fn check_sender(
    state: &AppState,
    profile: &crate::store::models::Profile,
    operator: Option<&str>,
) -> Result<Option<OperatorCode>, ApiError> {
    use crate::store::models::SettingsView;
    // A named operator must exist, whatever the profile: their mail counts in their contact
    // lookup's ranking.
    let named = match operator {
        Some(raw) => Some(super::operator_named(state, raw).await?),
        None => None,
    };
    match &profile.settings {
        SettingsView::GraphDelegate(s) => {
            let op = named.ok_or_else(|| {
                ApiError::validation(
                    "X-Operator",
                    format!("is required: profile {} sends as the operator (graph_delegate)", profile.name),
                )
            })?;
            let code = op.code.clone();
            if op.tenant.as_ref() != Some(&s.tenant) {
                return Err(ApiError::validation(
                    "X-Operator",
                    format!(
                        "operator {code} does not belong to tenant {}, which profile {} sends through",
                        s.tenant, profile.name
                    ),
                ));
            }
            if op.signin != SigninState::Linked {
                return Err(ApiError::SigninRequired {
                    operator: code,
                    signin_url: None,
                });
            }
            Ok(Some(code))
        }
        SettingsView::GraphDirect { .. } | SettingsView::Smtp { .. } => Ok(named.map(|o| o.code)),
    }
}

/// The subject and bodies as they will be sent: given, or rendered now from the template.
fn render(state: &AppState, request: &MailRequest, company_name: &str) -> Result<StoredMessage, ApiError> {
    use crate::mail::templates::TemplateError;
    let (subject, text, html) = match &request.content {
        Content::Given { subject, text, html } => (subject.clone(), text.clone(), html.clone()),
        Content::Template { name, variables } => {
            let r = state
                .templates
                .render(name, &request.company, company_name, variables)
                .map_err(|e| match e {
                    TemplateError::Unknown(_) => ApiError::validation("template", e.to_string()),
                    other => other.into(),
                })?;
            (r.subject, Some(r.text), Some(r.html))
        }
    };
    Ok(StoredMessage {
        to: request.to.clone(),
        cc: request.cc.clone(),
        bcc: request.bcc.clone(),
        reply_to: request.reply_to.clone(),
        subject,
        text,
        html,
        importance: request.importance,
    })
}

fn blob_error(field: &str, e: BlobError) -> ApiError {
    match e {
        BlobError::TooLarge { .. } => ApiError::validation(field, too_large(MAX_ATTACHMENT_BYTES + 1)),
        BlobError::Body(m) => ApiError::MalformedBody(m),
        BlobError::Store(s) => s.into(),
    }
}

/// Every attachment's content in the database, their total bounded.
async fn gather(state: &AppState, caller: &Caller, request: &MailRequest) -> Result<Vec<NewAttachment>, ApiError> {
    // First what each names, so an unknown id is refused before any content is copied.
    enum Found {
        Inline(usize),
        Upload(Upload),
        Export(std::path::PathBuf, u64, String),
        Report(Vec<crate::store::reports::ReportFile>),
    }
    let mut found = Vec::with_capacity(request.attachments.len());
    let mut errors = Vec::new();
    let mut total: u64 = 0;
    for (i, a) in request.attachments.iter().enumerate() {
        match a {
            AttachmentSource::Inline { bytes, .. } => {
                total += bytes.len() as u64;
                found.push(Found::Inline(i));
            }
            AttachmentSource::Upload(id) => match state.store.get_upload(id, &caller.0.id).await {
                Ok(u) => {
                    total += u.size;
                    found.push(Found::Upload(u));
                }
                Err(StoreError::NotFound { .. }) => errors.push(crate::domain::FieldError::new(
                    format!("attachments[{i}].upload"),
                    "no upload of this API key has this id (or it expired)",
                )),
                Err(e) => return Err(e.into()),
            },
            AttachmentSource::Export(id) => match super::exports::finished_export(state, &caller.0.id, *id) {
                Ok((path, size, name)) => {
                    total += size;
                    found.push(Found::Export(path, size, name));
                }
                Err(m) => errors.push(crate::domain::FieldError::new(format!("attachments[{i}].export"), m)),
            },
            AttachmentSource::Report { id, file } => match state.store.report_files(id, &caller.0.id, *file).await {
                Ok(files) => {
                    total += files.iter().map(|f| f.size).sum::<u64>();
                    found.push(Found::Report(files));
                }
                Err(StoreError::NotFound { .. }) => errors.push(crate::domain::FieldError::new(
                    format!("attachments[{i}].report"),
                    "no report output of this API key has this id and file (or it expired)",
                )),
                Err(e) => return Err(e.into()),
            },
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    if total > MAX_ATTACHMENT_BYTES {
        return Err(ApiError::validation("attachments", too_large(total)));
    }
    let mut out = Vec::with_capacity(found.len());
    for f in found {
        match f {
            Found::Inline(i) => {
                let AttachmentSource::Inline { name, content_type, bytes } = &request.attachments[i] else {
                    unreachable!("recorded for an inline attachment")
                };
                let blob = state
                    .store
                    .write_blob_bytes(bytes)
                    .await
                    .map_err(|e| blob_error(&format!("attachments[{i}]"), e))?;
                out.push(NewAttachment {
                    name: name.clone(),
                    content_type: content_type.clone(),
                    blob,
                });
            }
            Found::Upload(u) => out.push(NewAttachment {
                name: u.name,
                content_type: u.content_type,
                blob: u.blob,
            }),
            Found::Export(path, size, name) => {
                let file = tokio::fs::File::open(&path)
                    .await
                    .map_err(|_| ApiError::validation("attachments", "an export named here has just expired"))?;
                let stream = tokio_util::io::ReaderStream::with_capacity(file, 1 << 16);
                let blob = state
                    .store
                    .write_blob(stream, size)
                    .await
                    .map_err(|e| blob_error("attachments", e))?;
                out.push(NewAttachment {
                    name,
                    content_type: super::exports::XLSX.to_string(),
                    blob,
                });
            }
            Found::Report(files) => out.extend(files.into_iter().map(|f| NewAttachment {
                name: f.name,
                content_type: f.content_type,
                blob: f.blob,
            })),
        }
    }
    Ok(out)
}

/// A client key sees its own messages; an admin key every one.
fn visible_to(caller: &Caller) -> Option<&str> {
    (caller.0.role != Role::Admin).then_some(caller.0.id.as_str())
}

#[utoipa::path(get, path = "/api/v1/mail/{id}", tag = "mail", security(("api_key" = [])),
    params(("id" = String, Path, description = "The message id")),
    responses((status = 200, body = MailView), (status = 404, body = Problem, content_type = "application/problem+json")))]
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn show(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> Result<Json<MailView>, ApiError> {
    Ok(Json(state.store.get_mail(&id, visible_to(&caller)).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `queued`, `sending`, `retrying`, `held`, `sent`, `failed` or `cancelled`.
    pub state: Option<String>,
    pub company: Option<String>,
    /// 1 to 200; 50 when absent.
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MailPage {
    pub messages: Vec<MailView>,
    /// The cursor of the next page; absent on the last.
    pub next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/mail", tag = "mail", security(("api_key" = [])), params(ListQuery),
    responses((status = 200, body = MailPage), (status = 422, body = Problem, content_type = "application/problem+json")))]
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn list(State(state): State<AppState>, caller: Caller, Query(q): Query<ListQuery>) -> Result<Json<MailPage>, ApiError> {
    let wanted = match q.state.as_deref() {
        Some(s) => Some(MailState::parse_filter(s).map_err(|m| ApiError::validation("state", m))?),
        None => None,
    };
    let company = match q.company.as_deref() {
        Some(c) => Some(CompanyCode::parse(c).map_err(|m| ApiError::validation("company", m))?),
        None => None,
    };
    let limit = crate::domain::page_limit(q.limit).map_err(|m| ApiError::validation("limit", m))?;
    let messages = state
        .store
        .list_mail(
            visible_to(&caller),
            wanted,
            company.as_ref().map(CompanyCode::as_str),
            limit,
            q.cursor.as_deref(),
        )
        .await?;
    let next_cursor = crate::store::outbox::next_cursor(&messages, limit);
    Ok(Json(MailPage { messages, next_cursor }))
}

#[utoipa::path(post, path = "/api/v1/mail/{id}/retry", tag = "mail", security(("api_key" = [])),
    params(("id" = String, Path, description = "The message id")),
    responses((status = 200, body = MailView), (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 409, body = Problem, content_type = "application/problem+json", description = "Only a failed or held message is retried")))]
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn retry(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> Result<Json<MailView>, ApiError> {
    let view = state.store.retry_mail(caller.actor(), &id, visible_to(&caller)).await?;
    state.outbox.notify();
    Ok(Json(view))
}

#[utoipa::path(post, path = "/api/v1/mail/{id}/cancel", tag = "mail", security(("api_key" = [])),
    params(("id" = String, Path, description = "The message id")),
    responses((status = 200, body = MailView), (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 409, body = Problem, content_type = "application/problem+json", description = "Only a message not being sent is cancelled")))]
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn cancel(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> Result<Json<MailView>, ApiError> {
    Ok(Json(state.store.cancel_mail(caller.actor(), &id, visible_to(&caller)).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    /// The file name the attachment will have.
    pub name: Option<String>,
    /// Its MIME type; the request's `Content-Type` when absent.
    pub content_type: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/uploads", tag = "mail", security(("api_key" = [])), params(UploadQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The file, streamed"),
    responses((status = 201, body = Upload), (status = 413, body = Problem, content_type = "application/problem+json"),
              (status = 422, body = Problem, content_type = "application/problem+json")))]
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn upload(
    State(state): State<AppState>,
    Client(caller): Client,
    Query(q): Query<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let name = match q.name.as_deref() {
        Some(n) => attachment_name(n).map_err(|m| ApiError::validation("name", m))?,
        None => return Err(ApiError::validation("name", "is required: the file name the attachment will have")),
    };
    let ctype = match q
        .content_type
        .as_deref()
        .or_else(|| headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()))
    {
        Some(c) => content_type(c).map_err(|m| ApiError::validation("content_type", m))?,
        None => "application/octet-stream".to_string(),
    };
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > MAX_ATTACHMENT_BYTES
    {
        return Err(ApiError::too_large("body", too_large(len)));
    }
    let blob = state
        .store
        .write_blob(body.into_data_stream(), MAX_ATTACHMENT_BYTES)
        .await
        .map_err(|e| match e {
            BlobError::TooLarge { .. } => ApiError::too_large("body", "an upload is at most 150 MB (Outlook's limit for a message)"),
            other => blob_error("body", other),
        })?;
    let ttl = (state.settings.mail.upload_retention_secs * 1000) as i64;
    let upload = state.store.create_upload(&caller.0.id, &name, &ctype, &blob, ttl).await?;
    Ok((StatusCode::CREATED, Json(upload)).into_response())
}
