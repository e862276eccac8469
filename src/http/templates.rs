//! `/api/v1/templates`: the mail templates there are, and a preview of one for a company
//! with given variables — what a message would say, before it is queued.

use super::{ApiJson, AppState, Caller};
use crate::domain::CompanyCode;
use crate::error::{ApiError, Problem};
use crate::mail::templates::Rendered;
use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;

/// This resource's routes, merged by [`super::router`].
pub fn routes() -> axum::Router<AppState> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/api/v1/templates", get(list))
        .route("/api/v1/templates/{name}/preview", post(preview))
}

/// `POST /api/v1/templates/{name}/preview`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewInput {
    /// The company the message is for (its overrides apply; `company.name` is filled in).
    pub company: String,
    /// The template's variables.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub variables: serde_json::Value,
}

#[utoipa::path(get, path = "/api/v1/templates", tag = "templates", security(("api_key" = [])),
    responses((status = 200, body = [String]), (status = 401, body = Problem)))]
pub async fn list(State(state): State<AppState>, _: Caller) -> Json<Vec<String>> {
    Json(state.templates.names())
}

#[utoipa::path(post, path = "/api/v1/templates/{name}/preview", tag = "templates", security(("api_key" = [])), request_body = PreviewInput,
    responses((status = 200, body = Rendered), (status = 404, body = Problem), (status = 422, body = Problem, description = "a missing variable (named), an unknown company, a subject with a line break")))]
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn preview(
    State(state): State<AppState>,
    _: Caller,
    Path(name): Path<String>,
    ApiJson(input): ApiJson<PreviewInput>,
) -> Result<Json<Rendered>, ApiError> {
    let code = CompanyCode::parse(&input.company).map_err(|m| ApiError::validation("company", m))?;
    let company = match state.store.get_company(&code).await {
        Err(crate::store::StoreError::NotFound { .. }) => {
            return Err(ApiError::validation("company", format!("no company has code '{code}'")));
        }
        other => other?,
    };
    // Reading overrides from disk and rendering are blocking work, bounded by the fuel.
    let templates = state.templates.clone();
    let rendered = tokio::task::spawn_blocking(move || templates.render(&name, &code, &company.name, &input.variables))
        .await
        .map_err(anyhow::Error::from)??;
    Ok(Json(rendered))
}
