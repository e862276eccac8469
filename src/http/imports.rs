//! `/api/v1/imports`: an edited workbook back in, typed rows and problems out, and the change
//! set against the original grid.

use super::{ApiJson, AppState, Client};
use crate::error::{ApiError, Problem};
use crate::export::import::{ImportError, ImportRequest, ImportResult, import, import_columns};
use crate::export::model::ColumnSpec;
use crate::export::read::GridDocument;
use axum::Json;
use axum::extract::State;
use base64::Engine;
use serde::Deserialize;

/// This resource's routes, merged by [`super::router`].
pub fn routes() -> axum::Router<AppState> {
    use axum::routing::post;
    axum::Router::new().route("/api/v1/imports", post(create))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportInput {
    /// The XLSX file, base64.
    pub workbook: String,
    /// The grid's columns; optional when `original` is given (its sheet's columns are used).
    pub columns: Option<Vec<ColumnSpec>>,
    /// The sheet to read (default: the first).
    pub sheet: Option<String>,
    /// The key column, for the change set.
    pub key: Option<String>,
    /// The grid document the workbook was exported from.
    #[schema(value_type = Option<Object>)]
    pub original: Option<GridDocument>,
}

#[utoipa::path(post, path = "/api/v1/imports", tag = "imports", security(("api_key" = [])), request_body = ImportInput,
    responses((status = 200, body = ImportResult), (status = 400, body = Problem), (status = 413, body = Problem), (status = 422, body = Problem), (status = 503, body = Problem)))]
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn create(
    State(state): State<AppState>,
    Client(_caller): Client,
    ApiJson(input): ApiJson<ImportInput>,
) -> Result<Json<ImportResult>, ApiError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(input.workbook.trim())
        .map_err(|_| ApiError::validation("workbook", "must be the XLSX file in base64"))?;
    // An import is as heavy as an export: it waits for the same slots, then has a deadline.
    let _slot = state.exports.slot().await;
    let limits = state.settings.import.clone();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(limits.timeout_secs);
    let result = tokio::task::spawn_blocking(move || {
        // The columns as a spec string would lose nothing, but the structured form is what
        // grid documents already carry; both paths end in the same checks.
        let spec_columns = match &input.columns {
            Some(cols) => Some(
                crate::export::model::SheetSpec {
                    name: None,
                    columns: cols.clone(),
                    totals: Default::default(),
                }
                .check("", "Sheet1")?
                .columns,
            ),
            None => None,
        };
        let (mut columns, original) =
            import_columns(None, input.original.as_ref(), input.sheet.as_deref(), &limits).or_else(|e| match (&spec_columns, e) {
                (Some(_), ImportError::Grid(_)) if input.original.is_none() => Ok((Vec::new(), None)),
                (_, e) => Err(e),
            })?;
        if let Some(c) = spec_columns {
            columns = c;
        }
        let req = ImportRequest {
            columns: &columns,
            sheet: input.sheet.as_deref(),
            key: input.key.as_deref(),
            original: original.as_deref(),
            limits: &limits,
            deadline: Some(deadline),
        };
        import(std::io::Cursor::new(bytes), &req)
    })
    .await
    .map_err(anyhow::Error::from)?;
    Ok(Json(result?))
}
