//! Report outputs (SPEC §6, "Report outputs"): files a report server posts for an operator
//! and company — the source's "emailing SRS outputs" — kept for `mail.report_retention_secs`,
//! mailed through the outbox when asked, listed for the Outlook pane and attachable later.
//!
//! The `metadata` part comes first, so everything it says is checked before a byte of a file
//! is stored; files are streamed into the database, bounded by the attachment limit in all.

use super::exports::attachment_disposition;
use super::{AppState, Caller, Client};
use crate::domain::{CompanyCode, FieldError, MAX_ATTACHMENT_BYTES, MailInput, OperatorCode, attachment_name, content_type, prefix_fields};
use crate::error::{ApiError, Problem};
use crate::store::StoreError;
use crate::store::blobs::{BlobError, BlobInfo};
use crate::store::models::Role;
use crate::store::reports::{NewReport, Report};
use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// Most files in one report output.
const MAX_FILES: usize = 20;
/// Longest `metadata` part: it is a small JSON object.
const MAX_METADATA_BYTES: usize = 1 << 20;

/// Streamed and bounded here, so outside the default body limit (the reads have no body).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/reports", post(create).get(list))
        .route("/api/v1/reports/{id}/files/{n}", get(file))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportMetadata {
    pub company: String,
    /// The operator the output belongs to (the Outlook pane lists it for them).
    pub operator: String,
    /// The report's name in the report server.
    pub report: String,
    pub title: Option<String>,
    pub document: Option<DocumentRef>,
    /// A message to send now with the files attached: the mail request without
    /// `attachments`; `company` defaults to the report's, `function` to `all_reports`.
    #[schema(value_type = Option<Object>)]
    pub email: Option<Map<String, Value>>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DocumentRef {
    #[serde(rename = "type")]
    pub kind: String,
    pub number: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedFile {
    pub n: u32,
    pub name: String,
    pub size: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Created {
    pub id: String,
    pub files: Vec<CreatedFile>,
    /// `{id, state}` of the message, when `email` asked for one.
    #[schema(value_type = Option<Object>)]
    pub mail: Option<Value>,
}

/// A short required text of the metadata.
fn text(v: &mut Vec<FieldError>, field: &str, raw: &str, max: usize) -> String {
    let t = raw.trim();
    if t.is_empty() {
        v.push(FieldError::new(field, "must not be empty"));
    } else if t.chars().count() > max || t.chars().any(char::is_control) {
        v.push(FieldError::new(
            field,
            format!("must be at most {max} characters, without control characters"),
        ));
    }
    t.to_string()
}

/// Checked metadata: what a report row needs, and the mail request to queue, if any.
struct Checked {
    company: CompanyCode,
    operator: OperatorCode,
    report: String,
    title: String,
    document: Option<(String, String)>,
    email: Option<Map<String, Value>>,
}

async fn check(state: &AppState, raw: &[u8]) -> Result<Checked, ApiError> {
    let m: ReportMetadata = super::parse_json(raw).map_err(|e| prefixed(e, "metadata."))?;
    let mut v = Vec::new();
    let company = CompanyCode::parse(&m.company)
        .map_err(|e| v.push(FieldError::new("metadata.company", e)))
        .ok();
    let operator = OperatorCode::parse(&m.operator)
        .map_err(|e| v.push(FieldError::new("metadata.operator", e)))
        .ok();
    let report = text(&mut v, "metadata.report", &m.report, 200);
    let title = match &m.title {
        Some(t) => text(&mut v, "metadata.title", t, 255),
        None => report.clone(),
    };
    let document = m.document.as_ref().map(|d| {
        (
            text(&mut v, "metadata.document.type", &d.kind, 100),
            text(&mut v, "metadata.document.number", &d.number, 100),
        )
    });
    let mut email = m.email;
    if let Some(e) = email.as_mut() {
        if e.contains_key("attachments") {
            v.push(FieldError::new(
                "metadata.email.attachments",
                "the report's files are the attachments: leave it out",
            ));
        }
        e.entry("function").or_insert_with(|| json!("all_reports"));
        e.entry("company").or_insert_with(|| json!(m.company));
        // What needs no database is checked now, before any file is stored; the rest (the
        // profile, the sender) when the message is queued, and the report removed if refused.
        let mut probe = e.clone();
        probe.insert("attachments".into(), json!([{"report": uuid::Uuid::nil().to_string()}]));
        match serde_json::from_value::<MailInput>(Value::Object(probe)) {
            Ok(input) => {
                if let Err(errors) = input.parse() {
                    v.extend(prefix_fields("metadata.email.", errors));
                }
            }
            Err(err) => v.push(FieldError::new("metadata.email", err.to_string())),
        }
    }
    if !v.is_empty() {
        return Err(ApiError::Validation(v));
    }
    let (company, operator) = (company.expect("checked"), operator.expect("checked"));
    match state.store.get_company(&company).await {
        Err(StoreError::NotFound { .. }) => {
            return Err(ApiError::validation("metadata.company", format!("no company has code '{company}'")));
        }
        other => drop(other?),
    }
    match state.store.get_operator(&operator).await {
        Err(StoreError::NotFound { .. }) => {
            return Err(ApiError::validation(
                "metadata.operator",
                format!("no operator has code '{operator}'"),
            ));
        }
        other => drop(other?),
    }
    Ok(Checked {
        company,
        operator,
        report,
        title,
        document,
        email,
    })
}

/// A problem about a part of the request, its fields named from the request's root.
fn prefixed(e: ApiError, prefix: &str) -> ApiError {
    match e {
        ApiError::Validation(fields) => ApiError::Validation(prefix_fields(prefix, fields)),
        other => other,
    }
}

fn multipart_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::MalformedBody(format!("the multipart body could not be read: {e}"))
}

#[utoipa::path(post, path = "/api/v1/reports", tag = "reports", security(("api_key" = [])),
    request_body(content = ReportMetadata, content_type = "multipart/form-data",
                 description = "A `metadata` part (JSON, first), then one or more `file` parts"),
    responses((status = 201, body = Created),
              (status = 400, body = Problem, content_type = "application/problem+json"),
              (status = 413, body = Problem, content_type = "application/problem+json"),
              (status = 415, body = Problem, content_type = "application/problem+json"),
              (status = 422, body = Problem, content_type = "application/problem+json")))]
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn create(
    State(state): State<AppState>,
    Client(caller): Client,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, ApiError> {
    let mut parts = multipart.map_err(|_| ApiError::UnsupportedMediaType("the body must be multipart/form-data".into()))?;
    let first = parts.next_field().await.map_err(multipart_error)?;
    let Some(first) = first.filter(|f| f.name() == Some("metadata")) else {
        return Err(ApiError::validation(
            "metadata",
            "the first part must be `metadata`, the JSON description of the output",
        ));
    };
    let raw = read_small(first, MAX_METADATA_BYTES).await?;
    let checked = check(&state, &raw).await?;
    let mut files: Vec<(String, String, BlobInfo)> = Vec::new();
    let mut total = 0u64;
    while let Some(field) = parts.next_field().await.map_err(multipart_error)? {
        let at = format!("file[{}]", files.len());
        if field.name() != Some("file") {
            return Err(ApiError::validation(
                field.name().unwrap_or("part"),
                "only `metadata` (first) and `file` parts are read",
            ));
        }
        if files.len() == MAX_FILES {
            return Err(ApiError::validation("file", format!("at most {MAX_FILES} files in one output")));
        }
        let name = field
            .file_name()
            .ok_or_else(|| "a file part needs a filename".to_string())
            .and_then(attachment_name)
            .map_err(|m| ApiError::validation(format!("{at}.filename"), m))?;
        let ctype = content_type(field.content_type().unwrap_or("application/octet-stream"))
            .map_err(|m| ApiError::validation(format!("{at}.content_type"), m))?;
        let blob = state
            .store
            .write_blob(field, MAX_ATTACHMENT_BYTES - total)
            .await
            .map_err(|e| match e {
                BlobError::TooLarge { .. } => ApiError::too_large(
                    "file",
                    "a report output's files are at most 150 MB in all (Outlook's limit for a message)",
                ),
                other => ApiError::MalformedBody(format!("{at}: {other}")),
            })?;
        total += blob.size;
        files.push((name, ctype, blob));
    }
    if files.is_empty() {
        return Err(ApiError::validation("file", "at least one `file` part is required"));
    }
    let new = NewReport {
        api_key: caller.0.id.clone(),
        company: checked.company.to_string(),
        operator: checked.operator.to_string(),
        report: checked.report,
        title: checked.title,
        document: checked.document,
        files,
        ttl_ms: (state.settings.mail.report_retention_secs * 1000) as i64,
    };
    let id = state.store.create_report(&new).await?;
    let mail = match checked.email {
        None => None,
        Some(mut e) => {
            e.insert("attachments".into(), json!([{"report": id}]));
            let body = serde_json::to_vec(&Value::Object(e)).expect("JSON");
            match super::mail::queue(&state, &caller, Some(checked.operator.as_str()), &body, None).await {
                Ok(answer) => {
                    let mail_id = answer["id"].as_str().unwrap_or_default().to_string();
                    state.store.set_report_mail(&id, &mail_id).await?;
                    Some(json!({"id": mail_id, "state": answer["state"]}))
                }
                Err(e) => {
                    // Nothing half-written: the output goes with the message it came for.
                    state.store.delete_report(&id).await?;
                    return Err(prefixed(e, "metadata.email."));
                }
            }
        }
    };
    let files = new
        .files
        .iter()
        .enumerate()
        .map(|(i, (name, _, blob))| CreatedFile {
            n: i as u32 + 1,
            name: name.clone(),
            size: blob.size,
        })
        .collect();
    let mut response = (
        StatusCode::CREATED,
        Json(Created {
            id: id.clone(),
            files,
            mail,
        }),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/api/v1/reports/{id}")) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

async fn read_small(mut field: axum::extract::multipart::Field<'_>, limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        if out.len() + chunk.len() > limit {
            return Err(ApiError::too_large(
                "metadata",
                format!("the metadata part is at most {limit} bytes"),
            ));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// The operator whose outputs are listed.
    pub operator: Option<String>,
    /// 1 to 200; 50 when absent.
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReportPage {
    pub reports: Vec<Report>,
}

#[utoipa::path(get, path = "/api/v1/reports", tag = "reports", security(("api_key" = [])), params(ListQuery),
    responses((status = 200, body = ReportPage), (status = 422, body = Problem, content_type = "application/problem+json")))]
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn list(State(state): State<AppState>, Client(caller): Client, Query(q): Query<ListQuery>) -> Result<Json<ReportPage>, ApiError> {
    let Some(raw) = q.operator.as_deref() else {
        return Err(ApiError::validation("operator", "is required: whose report outputs to list"));
    };
    let operator = OperatorCode::parse(raw).map_err(|m| ApiError::validation("operator", m))?;
    let limit = crate::domain::page_limit(q.limit).map_err(|m| ApiError::validation("limit", m))?;
    let reports = state.store.list_reports(&caller.0.id, operator.as_str(), limit).await?;
    Ok(Json(ReportPage { reports }))
}

#[utoipa::path(get, path = "/api/v1/reports/{id}/files/{n}", tag = "reports", security(("api_key" = [])),
    params(("id" = String, Path, description = "The report output"), ("n" = u32, Path, description = "The file, from 1")),
    responses((status = 200, description = "The file, with its content type"), (status = 404, body = Problem, content_type = "application/problem+json")))]
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn file(State(state): State<AppState>, caller: Caller, Path((id, n)): Path<(String, String)>) -> Result<Response, ApiError> {
    let not_found = || ApiError::NotFound(format!("no report output '{id}' with file {n} (or it expired)"));
    let uuid = uuid::Uuid::parse_str(&id).map_err(|_| not_found())?;
    let n: u32 = n.parse().map_err(|_| not_found())?;
    // Outputs belong to the key that posted them; an admin key does not read their content.
    if caller.0.role == Role::Admin {
        return Err(not_found());
    }
    let f = match state.store.report_files(&uuid, &caller.0.id, Some(n)).await {
        Err(StoreError::NotFound { .. }) => return Err(not_found()),
        other => other?,
    };
    let f = f.into_iter().next().ok_or_else(not_found)?;
    let mut response = Body::from_stream(state.store.blob_stream(&f.blob.id, f.blob.size)).into_response();
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&f.content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(f.size));
    if let Ok(v) = HeaderValue::from_str(&attachment_disposition(&f.name)) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}
