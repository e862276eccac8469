//! Uploads to OneDrive (microsoft-graph-docs-contrib `api-reference/v1.0/api/`):
//! driveitem-put-content.md below the simple-upload threshold, driveitem-createuploadsession.md
//! above it — fragments read from the file one at a time (never the whole file in memory),
//! resumed from `nextExpectedRanges` after a failed fragment, restarted when the session is
//! gone (404), cancelled when we give up. The upload URL is pre-authenticated: it gets no
//! `Authorization` header, and it is a credential, so it is never logged or returned.

use super::{Graph, GraphError, Principal, Retrier, api_error};
use crate::domain::Secret;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// Fragments must be multiples of 320 KiB (driveitem-createuploadsession.md).
pub const FRAGMENT_UNIT: u64 = 320 * 1024;
/// How many times a vanished session is started again before we give up.
const MAX_RESTARTS: u32 = 3;

#[derive(Debug, Clone)]
pub struct UploadSettings {
    /// Files up to this size go in one PUT.
    pub simple_limit: u64,
    /// Fragment size (a multiple of [`FRAGMENT_UNIT`], at most 60 MiB).
    pub fragment: u64,
}

/// The uploaded file, as `POST /api/v1/exports?destination=onedrive` answers it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DriveFile {
    pub id: String,
    pub name: String,
    pub size: u64,
    /// Opens the workbook in Excel for the web.
    #[serde(rename = "webUrl")]
    pub web_url: String,
}

/// A file in a OneDrive folder, as the Excel pane lists the recent exports.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RecentFile {
    pub id: String,
    pub name: String,
    pub size: u64,
    /// Opens the file in Excel for the web.
    #[serde(rename = "webUrl")]
    pub web_url: String,
    #[serde(rename = "lastModifiedDateTime")]
    pub last_modified: Option<String>,
}

/// The files of `folder` in the user's OneDrive (`root:/{folder}:/children`,
/// driveitem-list-children.md), newest first, at most `top`. A folder that does not exist
/// (nothing exported yet: Graph's 404) has none.
pub async fn recent_files(graph: &Graph, who: &Principal, base: &str, folder: &str, top: u32) -> Result<Vec<RecentFile>, GraphError> {
    let path: Vec<String> = folder.split('/').filter(|s| !s.is_empty()).map(super::encode_segment).collect();
    let url = format!("{base}/me/drive/root:/{}:/children", path.join("/"));
    let top = top.to_string();
    let page = graph
        .get_once(who, false, |h| {
            h.get(&url).query(&[
                ("$orderby", "lastModifiedDateTime desc"),
                ("$top", top.as_str()),
                ("$select", "id,name,size,webUrl,lastModifiedDateTime,file,folder"),
            ])
        })
        .await;
    let page = match page {
        Ok(v) => v,
        Err(GraphError::Api { status: 404, .. }) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(page["value"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|i| i["folder"].is_null())
        .map(|i| RecentFile {
            id: i["id"].as_str().unwrap_or_default().to_string(),
            name: i["name"].as_str().unwrap_or_default().to_string(),
            size: i["size"].as_u64().unwrap_or_default(),
            web_url: i["webUrl"].as_str().unwrap_or_default().to_string(),
            last_modified: i["lastModifiedDateTime"].as_str().map(String::from),
        })
        .collect())
}

/// Percent-encodes a path for Graph's `root:/{path}:` addressing, keeping the slashes.
fn encode_path(folder: &str, name: &str) -> String {
    let mut segments: Vec<&str> = folder.split('/').filter(|s| !s.is_empty()).collect();
    segments.push(name);
    segments.iter().map(|s| super::encode_segment(s)).collect::<Vec<_>>().join("/")
}

async fn item(resp: reqwest::Response) -> Result<DriveFile, GraphError> {
    resp.json::<DriveFile>()
        .await
        .map_err(|e| GraphError::Local(format!("the driveItem could not be read: {}", e.without_url())))
}

#[derive(Deserialize)]
struct SessionStatus {
    #[serde(rename = "nextExpectedRanges", default)]
    next_expected_ranges: Vec<String>,
}

/// The first byte the server still wants (`"12345-"` or `"12345-67890"`).
fn next_offset(status: &SessionStatus) -> Option<u64> {
    status.next_expected_ranges.first()?.split('-').next()?.parse().ok()
}

fn unreadable(e: std::io::Error) -> GraphError {
    GraphError::Local(format!("the export file could not be read: {e}"))
}

/// Uploads `file` (`size` bytes) as `folder/name` to the principal's drive at `base` (the
/// tenant's [`super::base_url`]) with conflict behaviour `rename`.
#[allow(clippy::too_many_arguments)] // each is a different thing the upload needs; a struct would only rename them
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn upload(
    graph: &Graph,
    who: &Principal,
    base: &str,
    file: std::fs::File,
    size: u64,
    folder: &str,
    name: &str,
    settings: &UploadSettings,
) -> Result<DriveFile, GraphError> {
    let mut file = tokio::fs::File::from_std(file);
    let drive = match who {
        Principal::Operator(_) | Principal::OnBehalfOf { .. } => format!("{base}/me/drive"),
        Principal::App { mailbox, .. } => format!("{base}/users/{mailbox}/drive"),
    };
    let path = encode_path(folder, name);
    if size <= settings.simple_limit {
        let mut buf = Vec::with_capacity(size as usize);
        file.seek(std::io::SeekFrom::Start(0)).await.map_err(unreadable)?;
        file.read_to_end(&mut buf).await.map_err(unreadable)?;
        let bytes = bytes::Bytes::from(buf);
        let url = format!("{drive}/root:/{path}:/content?@microsoft.graph.conflictBehavior=rename");
        let resp = graph
            .send(who, true, |http| {
                http.put(&url)
                    .header("content-type", "application/octet-stream")
                    .body(bytes.clone())
            })
            .await?;
        return item(resp).await;
    }
    let create = format!("{drive}/root:/{path}:/createUploadSession");
    let body = serde_json::json!({"item": {"@microsoft.graph.conflictBehavior": "rename", "name": name}});
    let mut restarts = 0;
    loop {
        let resp = graph.send(who, true, |http| http.post(&create).json(&body)).await?;
        #[derive(Deserialize)]
        struct Created {
            #[serde(rename = "uploadUrl")]
            upload_url: Secret,
        }
        let session: Created = resp
            .json()
            .await
            .map_err(|e| GraphError::Local(format!("the upload session could not be read: {}", e.without_url())))?;
        match send_fragments(graph, &session.upload_url, &mut file, size, settings.fragment).await {
            Ok(done) => return Ok(done),
            Err(e) if e.status() == Some(404) && restarts < MAX_RESTARTS => {
                restarts += 1;
                tracing::warn!(restarts, "the upload session expired or vanished; starting a new one");
            }
            Err(e) => {
                cancel(graph, &session.upload_url).await;
                return Err(e);
            }
        }
    }
}

/// Uploads a finished export to the operator's OneDrive, in the folder configured for them
/// (operator, else tenant, else the default).
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn upload_export(
    graph: &Graph,
    cfg: &crate::config::OneDriveSettings,
    op: &crate::domain::OperatorCode,
    file: std::fs::File,
    size: u64,
    name: &str,
) -> Result<DriveFile, GraphError> {
    let (_, access) = graph.tokens().operator_access(op).await?;
    let folder = cfg.folder_for(access.tenant.code.as_str(), op.as_str());
    let settings = UploadSettings {
        simple_limit: cfg.simple_upload_limit,
        fragment: cfg.fragment_size,
    };
    let who = Principal::Operator(op.clone());
    let item = upload(graph, &who, &super::base_url(&access.tenant), file, size, folder, name, &settings).await?;
    tracing::info!(operator = %op, item = %item.id, size = item.size, "export uploaded to OneDrive");
    Ok(item)
}

/// Sends the file from the first byte the session wants to the end.
async fn send_fragments(
    graph: &Graph,
    upload_url: &Secret,
    source: &mut tokio::fs::File,
    size: u64,
    fragment: u64,
) -> Result<DriveFile, GraphError> {
    let mut offset = 0u64;
    let mut retry = Retrier::new(graph.policy());
    loop {
        let len = fragment.min(size - offset);
        source.seek(std::io::SeekFrom::Start(offset)).await.map_err(unreadable)?;
        let mut buf = vec![0u8; len as usize];
        source.read_exact(&mut buf).await.map_err(unreadable)?;
        let bytes = bytes::Bytes::from(buf);
        let range = format!("bytes {}-{}/{}", offset, offset + len - 1, size);
        let outcome = graph
            .http()
            .put(upload_url.expose_secret())
            .header("content-range", &range)
            .header("content-length", len)
            .body(bytes)
            .send()
            .await;
        let failed = match outcome {
            Ok(r) if r.status().as_u16() == 202 => {
                let status: SessionStatus = r.json().await.map_err(GraphError::transport)?;
                offset = next_offset(&status).unwrap_or(offset + len);
                continue;
            }
            Ok(r) if r.status().is_success() => return item(r).await,
            // An overlapping or out-of-order fragment: ask where the server is (this spends
            // an attempt, so a confused session cannot loop for ever).
            Ok(r) if r.status().as_u16() == 416 => {
                retry.wait(api_error(r).await, Some(std::time::Duration::ZERO), true).await?;
                None
            }
            Ok(r) if super::retryable(r.status().as_u16()) => Some(Ok(r)),
            // 404: the session is gone (the caller starts a new one); other errors are final.
            Ok(r) => return Err(api_error(r).await),
            Err(e) => Some(Err(e)),
        };
        if let Some(outcome) = failed {
            retry.after(outcome, true).await?;
        }
        // A failed fragment may have been partly received: the session says where to resume.
        let status = graph.send_anonymous(true, |http| http.get(upload_url.expose_secret())).await?;
        let status: SessionStatus = status.json().await.map_err(GraphError::transport)?;
        offset =
            next_offset(&status).ok_or_else(|| GraphError::Local("the upload session expects no more bytes but did not finish".into()))?;
    }
}

/// Deletes an upload session we are giving up on, so no orphaned session is left behind.
async fn cancel(graph: &Graph, upload_url: &Secret) {
    if let Err(e) = graph.http().delete(upload_url.expose_secret()).send().await {
        tracing::warn!(error = %e.without_url(), "could not cancel an upload session");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_encoded_by_segment() {
        assert_eq!(
            encode_path("/officebridge/exports", "Q1 Orders #2.xlsx"),
            "officebridge/exports/Q1%20Orders%20%232.xlsx"
        );
        assert_eq!(encode_path("", "a.xlsx"), "a.xlsx");
        assert_eq!(encode_path("/ü/", "100%.xlsx"), "%C3%BC/100%25.xlsx");
    }

    #[test]
    fn next_offsets() {
        let s = |r: &[&str]| SessionStatus {
            next_expected_ranges: r.iter().map(|s| s.to_string()).collect(),
        };
        assert_eq!(next_offset(&s(&["26-"])), Some(26));
        assert_eq!(next_offset(&s(&["0-99", "200-"])), Some(0));
        assert_eq!(next_offset(&s(&[])), None);
    }
}
