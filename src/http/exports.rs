//! `/api/v1/exports`: a grid in (JSON, NDJSON or CSV), a workbook out — while the caller
//! waits, or as a background job with `Prefer: respond-async`.

use super::AppState;
use super::Client;
use crate::domain::OperatorCode;
use crate::error::{ApiError, Problem};
use crate::export::jobs::{Delivery, ExportJobs, Job, JobFailure, JobState, SpoolClaim};
use crate::export::read::{ExportOptions, InputFormat};
use crate::export::writer::{Report, file_stem};
use crate::graph::drive::{self, DriveFile};
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio_util::io::ReaderStream;
use uuid::Uuid;

/// This resource's routes, merged by [`super::router`].
pub fn routes() -> axum::Router<AppState> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/api/v1/exports", post(create))
        .route("/api/v1/exports/recent", get(recent))
        .route("/api/v1/exports/{id}", get(status))
        .route("/api/v1/exports/{id}/content", get(content))
        .route("/api/v1/exports/{id}/events", get(events))
}

pub const XLSX: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// `download` (default): the workbook is the answer. `onedrive`: into the OneDrive of the
    /// operator named by `X-Operator` (`201` with the driveItem).
    pub destination: Option<String>,
    /// CSV column types, `Name=type[:arg…],…` (missing ones are inferred).
    pub columns: Option<String>,
    /// Sheet name for CSV.
    pub sheet: Option<String>,
    /// Workbook title for CSV (the grid document and NDJSON header carry their own).
    pub title: Option<String>,
    /// CSV field delimiter: `,`, `;`, `tab` or `|` (default: the one the header line holds).
    pub delimiter: Option<String>,
    /// CSV decimal separator: `.` or `,` (default: `,` when the delimiter is `;`).
    pub decimal: Option<String>,
}

/// A grid body's query parameters that only CSV has, as exports and shared grids take them.
#[derive(Debug, Default)]
pub(super) struct CsvQuery {
    pub columns: Option<String>,
    pub sheet: Option<String>,
    pub title: Option<String>,
    pub delimiter: Option<String>,
    pub decimal: Option<String>,
}

/// What a grid body is and how to read it, before a byte of it is read: its format (415 for
/// another media type), the most bytes it may have (413 when its `Content-Length` already
/// says more), and the readers' options — the CSV charset from the media type (415 for an
/// unknown one; JSON and NDJSON are UTF-8), delimiter and decimal separator.
pub(super) fn grid_body(state: &AppState, headers: &HeaderMap, q: CsvQuery) -> Result<(InputFormat, u64, ExportOptions), ApiError> {
    use crate::export::csv_input;
    let media = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let Some(format) = InputFormat::from_media_type(media) else {
        return Err(ApiError::UnsupportedMediaType(
            "send the grid as application/json, application/x-ndjson or text/csv".into(),
        ));
    };
    let limit = match format {
        InputFormat::Json => state.settings.export.max_json_bytes,
        _ => state.settings.export.max_body_bytes,
    };
    if headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .is_some_and(|n| n > limit)
    {
        return Err(too_large(limit));
    }
    let encoding = match csv_input::charset_of(media) {
        None => None,
        Some(label) => {
            let enc = csv_input::encoding(label).map_err(ApiError::UnsupportedMediaType)?;
            if format != InputFormat::Csv && enc != encoding_rs::UTF_8 {
                return Err(ApiError::UnsupportedMediaType(format!(
                    "charset '{label}': JSON and NDJSON grids are UTF-8 (RFC 8259)"
                )));
            }
            Some(enc)
        }
    };
    if format != InputFormat::Csv && (q.delimiter.is_some() || q.decimal.is_some()) {
        return Err(ApiError::validation("delimiter", "delimiter and decimal are for CSV bodies"));
    }
    let delimiter = q
        .delimiter
        .as_deref()
        .map(csv_input::delimiter)
        .transpose()
        .map_err(|m| ApiError::validation("delimiter", m))?;
    let decimal_comma = q
        .decimal
        .as_deref()
        .map(csv_input::decimal)
        .transpose()
        .map_err(|m| ApiError::validation("decimal", m))?;
    let opts = ExportOptions {
        columns: q.columns,
        sheet_name: q.sheet,
        title: q.title,
        max_line_bytes: Some(state.settings.export.max_line_bytes),
        encoding,
        delimiter,
        decimal_comma,
        ..Default::default()
    };
    Ok((format, limit, opts))
}

/// A background export as `GET /api/v1/exports/{id}` shows it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct JobStatus {
    #[schema(value_type = String)]
    pub id: Uuid,
    /// `queued`, `running`, `done` or `failed`.
    pub state: &'static str,
    pub rows_written: u64,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// When a finished job and its file are forgotten.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<Report>,
    /// Where the workbook is, once done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// With `destination=onedrive`, once uploaded: `{id, name, size, webUrl}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub onedrive: Option<DriveFile>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Problem>,
}

/// A background export's delivery: the upload to the operator's OneDrive, answering the
/// driveItem or the problem a waiting caller would have got.
#[derive(Debug)]
pub struct ToOneDrive;

impl Delivery for ToOneDrive {
    type Receipt = DriveFile;
    type Failure = Problem;
}

/// The export jobs of this server.
pub type Jobs = ExportJobs<ToOneDrive>;

fn status_of(jobs: &Jobs, job: &Job<ToOneDrive>) -> JobStatus {
    let (name, report, content, onedrive, error) = match job.state() {
        JobState::Queued => ("queued", None, None, None, None),
        JobState::Running => ("running", None, None, None, None),
        JobState::Done { report, delivered, .. } => (
            "done",
            Some(report),
            Some(format!("/api/v1/exports/{}/content", job.id)),
            delivered,
            None,
        ),
        JobState::Failed(failure) => {
            let problem = match failure {
                JobFailure::Delivery(problem) => problem,
                JobFailure::Grid(g) => ApiError::from(crate::export::writer::ExportError::Grid(g)).to_problem(),
                JobFailure::Internal(message) => ApiError::Unavailable(message).to_problem(),
            };
            ("failed", None, None, None, Some(problem))
        }
    };
    JobStatus {
        id: job.id,
        state: name,
        rows_written: ExportJobs::rows(job),
        created_at: job.created_at,
        expires_at: jobs.expires_at(job),
        report,
        content,
        onedrive,
        error,
    }
}

/// A `Content-Disposition` whose file name cannot break the header or a file system:
/// an ASCII fallback plus the UTF-8 name (RFC 6266, RFC 8187).
pub fn content_disposition(title: &str) -> String {
    attachment_disposition(&format!("{}.xlsx", file_stem(title)))
}

/// The same for any file: `name` already a safe file name, with its extension.
pub fn attachment_disposition(name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || " ._-()".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded: String = name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"._-".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

fn too_large(limit: u64) -> ApiError {
    ApiError::too_large(
        "body",
        format!("the body is larger than this server accepts ({limit} bytes; see export.max_body_bytes / max_json_bytes)"),
    )
}

#[utoipa::path(post, path = "/api/v1/exports", tag = "exports", security(("api_key" = [])), params(ExportQuery),
    request_body(content = String, description = "The grid: JSON grid document, NDJSON or CSV", content_type = "application/json"),
    responses(
        (status = 200, description = "The workbook", content_type = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
        (status = 202, body = JobStatus, description = "With Prefer: respond-async"),
        (status = 400, body = Problem), (status = 413, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem)))]
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn create(
    State(state): State<AppState>,
    Client(caller): Client,
    Query(q): Query<ExportQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let operator = match q.destination.as_deref() {
        None | Some("download") => None,
        Some("onedrive") => {
            let op = operator_header(&headers)?;
            // Before any work: an operator who must sign in hears so now, not after the export.
            state.tokens.operator_token(&op).await?;
            Some(op)
        }
        Some(other) => {
            return Err(ApiError::validation(
                "destination",
                format!("'{other}' is not download or onedrive"),
            ));
        }
    };
    let csv = CsvQuery {
        columns: q.columns,
        sheet: q.sheet,
        title: q.title,
        delimiter: q.delimiter,
        decimal: q.decimal,
    };
    let (format, limit, opts) = grid_body(&state, &headers, csv)?;
    let respond_async = headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|p| p.trim().eq_ignore_ascii_case("respond-async")));
    if respond_async {
        // Refused before the upload rather than after it.
        state.exports.admit(&caller.0.id)?;
    }
    let (spool, claim) = spool_body(&state, &caller.0.id, body, limit).await?;
    if respond_async {
        state.exports.admit(&caller.0.id)?;
        let deliver = operator.map(|op| -> crate::export::jobs::Deliver<ToOneDrive> {
            let state = state.clone();
            Box::new(move |file: std::fs::File, size: u64, report: Report| {
                Box::pin(async move {
                    to_onedrive(&state, &op, file, size, &report).await.map_err(|e| {
                        // Nobody waits for this answer to pass the router's layer.
                        e.with_signin_link(|op| super::auth::new_link(&state, op).url).to_problem()
                    })
                })
            })
        });
        let job = state
            .exports
            .submit(&state.workers, &caller.0.id, format, spool, claim, opts, deliver);
        let location = format!("/api/v1/exports/{}", job.id);
        return Ok((
            StatusCode::ACCEPTED,
            [(header::LOCATION, location)],
            Json(status_of(&state.exports, &job)),
        )
            .into_response());
    }
    let input = std::fs::File::open(&spool).map_err(anyhow::Error::from)?;
    let finished = state.exports.run(format, input, opts).await?;
    drop((spool, claim));
    if let Some(op) = operator {
        let item = to_onedrive(&state, &op, finished.file, finished.size, &finished.report).await?;
        return Ok((StatusCode::CREATED, Json(item)).into_response());
    }
    Ok(workbook_response(
        &finished.report,
        tokio::fs::File::from_std(finished.file),
        finished.size,
    ))
}

/// Reads the whole body into a file in the export folder before the export takes a slot:
/// a client that sends slowly, or stalls, then holds its own connection and nothing else.
/// The body may go quiet for at most `export.body_idle_timeout_secs` at a time; its bytes
/// count against the spool budget until the export is done with them.
pub(super) async fn spool_body(
    state: &AppState,
    owner: &str,
    body: Body,
    limit: u64,
) -> Result<(tempfile::TempPath, SpoolClaim), ApiError> {
    let idle = Duration::from_secs(state.settings.export.body_idle_timeout_secs);
    let mut claim = state.exports.spool_claim(owner);
    let path = tempfile::Builder::new()
        .prefix("upload-")
        .tempfile_in(state.exports.dir())
        .map_err(anyhow::Error::from)?
        .into_temp_path();
    let mut file = tokio::fs::File::create(&path).await.map_err(anyhow::Error::from)?;
    let mut stream = body.into_data_stream();
    let mut seen: u64 = 0;
    loop {
        let chunk = match tokio::time::timeout(idle, stream.next()).await {
            Err(_) => {
                return Err(ApiError::RequestTimeout(format!(
                    "the body sent nothing for {} seconds (export.body_idle_timeout_secs)",
                    idle.as_secs()
                )));
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(ApiError::MalformedBody(format!("the body could not be read: {e}"))),
            Ok(Some(Ok(chunk))) => chunk,
        };
        seen += chunk.len() as u64;
        if seen > limit {
            return Err(too_large(limit));
        }
        claim.grow(chunk.len() as u64)?;
        file.write_all(&chunk).await.map_err(anyhow::Error::from)?;
    }
    file.flush().await.map_err(anyhow::Error::from)?;
    Ok((path, claim))
}

/// The operator's recent exports in OneDrive.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RecentExports {
    /// The OneDrive folder exports land in.
    pub folder: String,
    /// Newest first, at most 20; each opens in Excel for the web by its `webUrl`.
    pub items: Vec<drive::RecentFile>,
}

/// `GET /api/v1/exports/recent`: the workbooks in the operator's OneDrive export folder, newest
/// first, for the Excel pane.
#[utoipa::path(get, path = "/api/v1/exports/recent", tag = "exports", security(("api_key" = []), ("sso" = [])),
    params(("X-Operator" = Option<String>, Header, description = "The operator (client key)")),
    responses((status = 200, body = RecentExports), (status = 401, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem), (status = 502, body = Problem)))]
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn recent(State(state): State<AppState>, caller: super::grids::PaneCaller) -> Result<Json<RecentExports>, ApiError> {
    let principal = caller.principal(&state, "Files.ReadWrite").await?;
    let (operator, _) = caller.operator()?;
    let tenant = operator
        .tenant
        .clone()
        .ok_or_else(|| ApiError::validation("X-Operator", format!("operator {} has no tenant", operator.code)))?;
    let tenant = state.store.get_tenant(&tenant).await?;
    let folder = state
        .settings
        .onedrive
        .folder_for(tenant.code.as_str(), operator.code.as_str())
        .to_string();
    let items = drive::recent_files(&state.graph, &principal, &crate::graph::base_url(&tenant), &folder, 20).await?;
    Ok(Json(RecentExports { folder, items }))
}

/// The operator a OneDrive export is for (`X-Operator`).
fn operator_header(headers: &HeaderMap) -> Result<OperatorCode, ApiError> {
    let raw = headers
        .get("x-operator")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::validation("X-Operator", "is required with destination=onedrive"))?;
    OperatorCode::parse(raw).map_err(|m| ApiError::validation("X-Operator", m))
}

/// Uploads a finished workbook to the operator's OneDrive folder.
async fn to_onedrive(state: &AppState, op: &OperatorCode, file: std::fs::File, size: u64, report: &Report) -> Result<DriveFile, ApiError> {
    Ok(drive::upload_export(&state.graph, &state.settings.onedrive, op, file, size, &report.file_name()).await?)
}

fn workbook_response(report: &Report, file: tokio::fs::File, size: u64) -> Response {
    let name = report.file_name();
    let name = name.strip_suffix(".xlsx").unwrap_or(&name);
    let mut response = Body::from_stream(ReaderStream::with_capacity(file, 1 << 16)).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(XLSX));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    if let Ok(v) = HeaderValue::from_str(&content_disposition(name)) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert("x-export-rows", HeaderValue::from(report.rows));
    h.insert("x-export-sheets", HeaderValue::from(report.sheets.len()));
    h.insert(
        "x-export-notes",
        HeaderValue::from(report.notes.len() as u64 + report.notes_omitted),
    );
    response
}

/// A finished export of the key `owner` as a file to attach: its path, size and file name;
/// else why it cannot be attached.
pub fn finished_export(state: &AppState, owner: &str, id: Uuid) -> Result<(std::path::PathBuf, u64, String), String> {
    let job = state
        .exports
        .get(id, owner)
        .ok_or("no export of this API key has this id (or it expired)")?;
    match job.state() {
        JobState::Done { report, file, size, .. } => Ok((file, size, report.file_name())),
        JobState::Failed(_) => Err("the export failed; it has no workbook to attach".into()),
        _ => Err("the export is not finished yet".into()),
    }
}

fn find(state: &AppState, caller: &super::Caller, id: &str) -> Result<Arc<Job<ToOneDrive>>, ApiError> {
    Uuid::parse_str(id)
        .ok()
        .and_then(|id| state.exports.get(id, &caller.0.id))
        .ok_or_else(|| ApiError::NotFound(format!("export '{id}' does not exist or has expired")))
}

#[utoipa::path(get, path = "/api/v1/exports/{id}", tag = "exports", security(("api_key" = [])),
    responses((status = 200, body = JobStatus), (status = 404, body = Problem)))]
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn status(State(state): State<AppState>, Client(caller): Client, Path(id): Path<String>) -> Result<Json<JobStatus>, ApiError> {
    let job = find(&state, &caller, &id)?;
    Ok(Json(status_of(&state.exports, &job)))
}

#[utoipa::path(get, path = "/api/v1/exports/{id}/content", tag = "exports", security(("api_key" = [])),
    responses((status = 200, content_type = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"), (status = 404, body = Problem), (status = 409, body = Problem)))]
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn content(State(state): State<AppState>, Client(caller): Client, Path(id): Path<String>) -> Result<Response, ApiError> {
    let job = find(&state, &caller, &id)?;
    match job.state() {
        JobState::Done { report, file, size, .. } => {
            let file = tokio::fs::File::open(&file)
                .await
                .map_err(|_| ApiError::NotFound(format!("export '{id}' has expired")))?;
            Ok(workbook_response(&report, file, size))
        }
        JobState::Failed(_) => Err(ApiError::Conflict {
            field: "id".into(),
            message: format!("export '{id}' failed; its status says why"),
        }),
        _ => Err(ApiError::Conflict {
            field: "id".into(),
            message: format!("export '{id}' is not finished yet"),
        }),
    }
}

#[utoipa::path(get, path = "/api/v1/exports/{id}/events", tag = "exports", security(("api_key" = [])),
    responses((status = 200, content_type = "text/event-stream", description = "`progress` events with the job status, then one `done` or `failed`")))]
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn events(State(state): State<AppState>, Client(caller): Client, Path(id): Path<String>) -> Result<impl IntoResponse, ApiError> {
    let job = find(&state, &caller, &id)?;
    let jobs = state.exports.clone();
    let stream = futures_util::stream::unfold(Some((job, jobs, None::<(&'static str, u64)>)), |step| async move {
        let (job, jobs, last) = step?;
        loop {
            let status = status_of(&jobs, &job);
            let current = (status.state, status.rows_written);
            let finished = matches!(status.state, "done" | "failed");
            if Some(current) != last || finished {
                let event = Event::default()
                    .event(if finished { status.state } else { "progress" })
                    .json_data(&status)
                    .expect("serializable");
                let next = if finished { None } else { Some((job, jobs, Some(current))) };
                return Some((Ok::<_, std::convert::Infallible>(event), next));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

#[cfg(test)]
mod tests {
    use super::content_disposition;

    #[test]
    fn file_names_cannot_break_the_header_or_a_path() {
        let cd = content_disposition("Q1 \"final\"\r\nSet-Cookie: x=1/../..\\etc");
        assert!(!cd.contains('\r') && !cd.contains('\n'));
        assert_eq!(cd.matches('"').count(), 2, "only the quotes around the ASCII name: {cd}");
        assert!(!cd.contains('/') && !cd.contains('\\'));
        let cd = content_disposition("Заказы 2026");
        assert!(
            cd.starts_with("attachment; filename=\"______ 2026.xlsx\"; filename*=UTF-8''%D0%97"),
            "{cd}"
        );
        assert!(content_disposition("  ").contains("filename=\"export.xlsx\""));
        // Bidi overrides and zero-width characters cannot disguise the name (issue 10).
        let cd = content_disposition("invoice\u{202E}xslx.exe\u{200B}\u{2066}");
        assert!(cd.contains("filename=\"invoicexslx.exe.xlsx\""), "{cd}");
        assert!(
            !cd.contains("%E2%80%AE") && !cd.contains("%E2%80%8B") && !cd.contains("%E2%81%A6"),
            "{cd}"
        );
    }
}
