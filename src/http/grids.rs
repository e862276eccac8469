//! `/api/v1/grids`: grids the ERP shares with an operator for the Excel pane, read in blocks
//! ready for `Range.values`, and the change sets published back (SPEC §3.6, §6 "Shared
//! grids").
//!
//! The ERP shares with a client key and `X-Operator`; the pane reads and publishes as its
//! user (the single sign-on token), or a client key naming that operator. A grid is its
//! operator's: another operator, or a token of another tenant, gets a 403.

use super::{ApiJson, AppState, Params, SsoCaller, bearer_token};
use crate::error::{ApiError, Problem};
use crate::export::import::{CellProblem, ChangeSet, canonical_row, compare_table};
use crate::export::model::Column;
use crate::export::read::InputFormat;
use crate::grids::{columns_from_json, excel_value, value_cell};
use crate::store::grids::GridRecord;
use crate::store::models::Operator;
use axum::Json;
use axum::body::Body;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Bulk bodies: merged with the exports' limits.
pub fn routes() -> axum::Router<AppState> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/api/v1/grids", post(create).get(list))
        .route("/api/v1/grids/{id}/rows", get(rows))
        .route("/api/v1/grids/{id}/changes", post(publish).get(changes))
}

/// Who calls a pane endpoint: an operator (the pane's user by its single sign-on token, kept
/// for the on-behalf-of exchange, or a client key naming one in `X-Operator`), or the ERP
/// itself (a client key alone).
pub enum PaneCaller {
    Operator {
        operator: Operator,
        actor: String,
        sso: Option<Box<SsoCaller>>,
    },
    Erp {
        actor: String,
    },
}

impl PaneCaller {
    pub fn operator(self) -> Result<(Operator, String), ApiError> {
        match self {
            Self::Operator { operator, actor, .. } => Ok((operator, actor)),
            Self::Erp { .. } => Err(ApiError::validation("X-Operator", "is required: name the operator the grid is for")),
        }
    }

    /// Refuses a grid that is not this caller's.
    fn may_use(&self, grid: &GridRecord) -> Result<(), ApiError> {
        match self {
            Self::Operator { operator, .. } if operator.code.as_str() != grid.operator => {
                Err(ApiError::Forbidden(format!("grid {} is shared with another operator", grid.id)))
            }
            _ => Ok(()),
        }
    }
}

impl FromRequestParts<AppState> for PaneCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if Self::bears_token(&parts.headers) {
            let caller = SsoCaller::from_request_parts(parts, state).await?;
            let actor = format!("operator:{}", caller.operator.code);
            return Ok(Self::Operator {
                operator: caller.operator.clone(),
                actor,
                sso: Some(Box::new(caller)),
            });
        }
        let caller = super::Client::from_request_parts(parts, state).await?;
        let actor = caller.0.actor().to_string();
        let Some(operator) = super::named_operator(state, &parts.headers).await? else {
            return Ok(Self::Erp { actor });
        };
        Ok(Self::Operator {
            operator,
            actor,
            sso: None,
        })
    }
}

impl PaneCaller {
    /// Whether the request carries the add-in's single sign-on token rather than an API key:
    /// API keys have their own prefix, anything else is the add-in's token.
    pub fn bears_token(headers: &axum::http::HeaderMap) -> bool {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token)
            .unwrap_or("");
        !bearer.starts_with("obk_") && !bearer.is_empty()
    }

    /// Who Graph is called as: the pane's user on-behalf-of, or the operator's own token.
    pub async fn principal(&self, state: &AppState, scope: &str) -> Result<crate::graph::Principal, ApiError> {
        match self {
            Self::Operator { sso: Some(caller), .. } => super::auth::on_behalf_of(state, caller, scope).await,
            Self::Operator { operator, .. } => {
                state.tokens.operator_token(&operator.code).await?;
                Ok(crate::graph::Principal::Operator(operator.code.clone()))
            }
            Self::Erp { .. } => Err(ApiError::validation("X-Operator", "is required: name the operator")),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ShareParams {
    /// CSV: the key column (JSON and NDJSON name it in the body, `"key"`).
    pub key: Option<String>,
    /// CSV column types, `Name=type[:arg…],…`; the others are inferred.
    pub columns: Option<String>,
    /// CSV: the grid's name (the sheet's).
    pub sheet: Option<String>,
    pub title: Option<String>,
    /// CSV field delimiter: `,`, `;`, `tab` or `|` (default: the one the header line holds).
    pub delimiter: Option<String>,
    /// CSV decimal separator: `.` or `,` (default: `,` when the delimiter is `;`).
    pub decimal: Option<String>,
}

/// A column as the pane formats it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GridColumn {
    pub key: String,
    pub header: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// The Excel number format (`null`: General).
    pub format: Option<String>,
}

fn grid_columns(columns: &[Column]) -> Vec<GridColumn> {
    columns
        .iter()
        .map(|c| GridColumn {
            key: c.key.clone(),
            header: c.header.clone(),
            kind: c.kind.as_str().to_string(),
            format: c.number_format(),
        })
        .collect()
}

/// A shared grid, as listed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GridInfo {
    pub id: String,
    pub name: String,
    pub rows: u64,
    pub columns: Vec<GridColumn>,
    /// The key column edits are matched by.
    pub key: String,
    pub operator: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

fn info(g: &GridRecord) -> Result<GridInfo, ApiError> {
    let columns = columns_from_json(&g.columns)?;
    Ok(GridInfo {
        id: g.id.clone(),
        name: g.name.clone(),
        rows: g.rows,
        columns: grid_columns(&columns),
        key: g.key.clone(),
        operator: g.operator.clone(),
        created_at: g.created_at,
        expires_at: g.expires_at,
    })
}

/// A grid that may be read: it exists, it is the caller's, it has not expired.
async fn usable(state: &AppState, caller: &PaneCaller, id: &str) -> Result<GridRecord, ApiError> {
    let grid = state.store.get_grid(id).await?;
    caller.may_use(&grid)?;
    if grid.expires_at <= Utc::now() {
        return Err(ApiError::validation(
            "grid",
            format!(
                "grid {id} expired at {} (grids.retention_hours); share it again",
                grid.expires_at.to_rfc3339()
            ),
        ));
    }
    Ok(grid)
}

#[utoipa::path(post, path = "/api/v1/grids", tag = "grids", security(("api_key" = [])),
    params(ShareParams, ("X-Operator" = String, Header, description = "The operator the grid is shared with")),
    request_body(content = String, description = "The grid: JSON grid document or NDJSON with \"key\", or CSV with ?key=", content_type = "application/json"),
    responses((status = 201, body = GridInfo), (status = 400, body = Problem), (status = 401, body = Problem), (status = 413, body = Problem),
              (status = 415, body = Problem), (status = 422, body = Problem)))]
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn create(
    State(state): State<AppState>,
    caller: PaneCaller,
    Params(q): Params<ShareParams>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<GridInfo>), ApiError> {
    let (operator, actor) = caller.operator()?;
    let key = q.key;
    let csv = super::exports::CsvQuery {
        columns: q.columns,
        sheet: q.sheet,
        title: q.title,
        delimiter: q.delimiter,
        decimal: q.decimal,
    };
    let shaped_by_query = key.is_some() || csv.columns.is_some() || csv.sheet.is_some();
    let (format, limit, mut opts) = super::exports::grid_body(&state, &headers, csv)?;
    if format != InputFormat::Csv && shaped_by_query {
        return Err(ApiError::validation(
            "key",
            "key, columns and sheet are query parameters of CSV only; JSON and NDJSON grids carry them",
        ));
    }
    opts.key = key;
    let (spool, claim) = super::exports::spool_body(&state, &actor, body, limit).await?;
    let now = Utc::now();
    let record = GridRecord {
        id: uuid::Uuid::new_v4().to_string(),
        operator: operator.code.to_string(),
        name: String::new(),
        key: String::new(),
        columns: String::new(),
        rows: 0,
        created_at: now,
        expires_at: now + chrono::Duration::hours(state.settings.grids.retention_hours as i64),
    };
    let input = move || -> std::io::Result<_> {
        let file = std::fs::File::open(&spool)?;
        // The spool and its claim go when the reader is done with the file.
        Ok(GuardedRead {
            inner: std::io::BufReader::new(file),
            _held: (spool, claim),
        })
    };
    let record = crate::grids::share(&state.store, &actor, record, format, input, opts, state.settings.grids.max_cells)
        .await
        .map_err(|e| match e {
            crate::grids::ShareError::TooLarge(m) => ApiError::too_large("body", m),
            crate::grids::ShareError::NoSheet => ApiError::validation("sheets", "the grid has no sheet"),
            crate::grids::ShareError::Read(e) => e.into(),
            crate::grids::ShareError::Store(e) => e.into(),
        })?;
    Ok((StatusCode::CREATED, Json(info(&record)?)))
}

/// A reader that keeps something alive (the spooled body's file and claim) while it reads.
struct GuardedRead<R, H> {
    inner: R,
    _held: H,
}

impl<R: std::io::Read, H> std::io::Read for GuardedRead<R, H> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf)
    }
}

impl<R: std::io::BufRead, H> std::io::BufRead for GuardedRead<R, H> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.inner.fill_buf()
    }
    fn consume(&mut self, n: usize) {
        self.inner.consume(n)
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GridList {
    pub items: Vec<GridInfo>,
}

#[utoipa::path(get, path = "/api/v1/grids", tag = "grids", security(("api_key" = []), ("sso" = [])),
    params(("X-Operator" = Option<String>, Header, description = "The operator (client key)")),
    responses((status = 200, body = GridList), (status = 401, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem)))]
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn list(State(state): State<AppState>, caller: PaneCaller) -> Result<Json<GridList>, ApiError> {
    let (operator, _) = caller.operator()?;
    let grids = state.store.list_grids(operator.code.as_str(), Utc::now()).await?;
    Ok(Json(GridList {
        items: grids.iter().map(info).collect::<Result<_, _>>()?,
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RowsParams {
    /// The first row, 0-based (0).
    pub offset: Option<String>,
    /// Rows at most, 1 to `grids.max_block_rows` (5,000).
    pub limit: Option<String>,
}

/// A block of rows, ready for `Range.values`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RowBlock {
    pub offset: u64,
    /// One array per row, one value per column: numbers, text, booleans, dates as Excel
    /// serial numbers, `""` for an empty cell; text Excel would read as a formula starts
    /// with `'`.
    #[schema(value_type = Vec<Vec<Object>>)]
    pub rows: Vec<Vec<Value>>,
    /// Each column's Excel number format (`null`: General), for `Range.numberFormat`.
    pub formats: Vec<Option<String>>,
    pub total: u64,
    /// Where the next block starts; `null` after the last.
    pub next_offset: Option<u64>,
}

#[utoipa::path(get, path = "/api/v1/grids/{id}/rows", tag = "grids", security(("api_key" = []), ("sso" = [])), params(RowsParams),
    responses((status = 200, body = RowBlock), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn rows(
    State(state): State<AppState>,
    caller: PaneCaller,
    Path(id): Path<String>,
    Params(q): Params<RowsParams>,
) -> Result<Json<RowBlock>, ApiError> {
    let grid = usable(&state, &caller, &id).await?;
    let max = state.settings.grids.max_block_rows;
    let offset = super::whole_number(q.offset.as_deref(), "offset", 0..=grid.rows, 0)?;
    let limit = super::whole_number(q.limit.as_deref(), "limit", 1..=max, 5_000.min(max))?;
    let columns = columns_from_json(&grid.columns)?;
    let stored = state.store.grid_rows(&id, offset, limit).await?;
    let rows = stored
        .iter()
        .map(|text| {
            let cells: Vec<Value> = serde_json::from_str(text).map_err(anyhow::Error::from)?;
            Ok(cells.iter().map(excel_value).collect())
        })
        .collect::<Result<Vec<Vec<Value>>, ApiError>>()?;
    let end = offset + rows.len() as u64;
    Ok(Json(RowBlock {
        offset,
        rows,
        formats: columns.iter().map(Column::number_format).collect(),
        total: grid.rows,
        next_offset: (end < grid.rows).then_some(end),
    }))
}

/// The table as the pane read it back.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishInput {
    /// The table's header row.
    pub header: Vec<String>,
    /// The data rows, as `Range.values` gives them.
    #[schema(value_type = Vec<Vec<Object>>)]
    pub rows: Vec<Vec<Value>>,
    /// Publish even though cells do not fit their columns (those cells are not changes).
    #[serde(default)]
    pub publish_with_problems: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PublishAnswer {
    pub changes: ChangeSet,
    pub problems: Vec<CellProblem>,
    /// Whether this change set is now the one the ERP picks up.
    pub published: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub published_at: Option<DateTime<Utc>>,
}

#[utoipa::path(post, path = "/api/v1/grids/{id}/changes", tag = "grids", security(("api_key" = []), ("sso" = [])), request_body = PublishInput,
    responses((status = 200, body = PublishAnswer), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn publish(
    State(state): State<AppState>,
    caller: PaneCaller,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<PublishInput>,
) -> Result<Json<PublishAnswer>, ApiError> {
    let grid = usable(&state, &caller, &id).await?;
    let (operator, _) = caller.operator()?;
    let columns = columns_from_json(&grid.columns)?;
    let cells = input.rows.len() as u64 * columns.len().max(1) as u64;
    if cells > state.settings.grids.max_cells {
        return Err(ApiError::too_large(
            "rows",
            format!("more than {} cells (grids.max_cells)", state.settings.grids.max_cells),
        ));
    }
    let key = columns
        .iter()
        .position(|c| c.key == grid.key)
        .ok_or_else(|| anyhow::anyhow!("grid {id}'s key names no column"))?;
    // The original, a block at a time, as the canonical values the table's are compared with.
    let mut original = Vec::with_capacity(grid.rows as usize);
    let mut offset = 0;
    while offset < grid.rows {
        for text in state.store.grid_rows(&id, offset, 10_000).await? {
            let stored: Vec<Value> = serde_json::from_str(&text).map_err(anyhow::Error::from)?;
            let cells: Vec<_> = stored.iter().zip(&columns).map(|(v, c)| value_cell(v, c)).collect();
            original.push(canonical_row(&cells, &columns));
        }
        offset += 10_000;
    }
    let (changes, problems) = compare_table(&columns, key, &original, &grid.name, &input.header, &input.rows)
        .map_err(|e| ApiError::validation(e.field, e.message))?;
    let publish = problems.is_empty() || input.publish_with_problems;
    let published_at = if publish {
        let body = serde_json::json!({"changes": changes, "problems": problems}).to_string();
        Some(state.store.publish_grid_changes(&id, operator.code.as_str(), &body).await?)
    } else {
        None
    };
    Ok(Json(PublishAnswer {
        changes,
        problems,
        published: publish,
        published_at,
    }))
}

/// The change set last published, as the ERP picks it up.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Published {
    pub grid: String,
    pub published_at: DateTime<Utc>,
    pub operator: String,
    pub changes: ChangeSet,
    pub problems: Vec<CellProblem>,
}

#[utoipa::path(get, path = "/api/v1/grids/{id}/changes", tag = "grids", security(("api_key" = []), ("sso" = [])),
    responses((status = 200, body = Published), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn changes(State(state): State<AppState>, caller: PaneCaller, Path(id): Path<String>) -> Result<Json<Published>, ApiError> {
    let grid = state.store.get_grid(&id).await?;
    caller.may_use(&grid)?;
    let p = state
        .store
        .grid_changes(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("nothing has been published for grid {id} yet")))?;
    #[derive(Deserialize)]
    struct Body {
        changes: ChangeSet,
        problems: Vec<CellProblem>,
    }
    let body: Body = serde_json::from_str(&p.body).map_err(anyhow::Error::from)?;
    Ok(Json(Published {
        grid: id,
        published_at: p.published_at,
        operator: p.operator,
        changes: body.changes,
        problems: body.problems,
    }))
}
