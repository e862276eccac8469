//! The OpenAPI document, generated from the handlers' annotations and served at `/openapi.json`.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

struct ApiKeyAuth;

impl Modify for ApiKeyAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An officebridge API key (`officebridge apikeys create`)"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "sso",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "The Office add-in's single sign-on token for officebridge's API (scope access_as_user)",
                    ))
                    .build(),
            ),
        );
    }
}

/// What every operation gets whatever its annotation says: a unique `operationId`
/// (`{tag}_{handler}`: client generators name methods by it, and handlers of different
/// resources share names such as `list`), and problem answers typed
/// `application/problem+json`, which is what the server sends.
struct Conventions;

impl Modify for Conventions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::RefOr;
        use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
        for (path, item) in openapi.paths.paths.iter_mut() {
            let in_path: Vec<&str> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
                .collect();
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
                &mut item.head,
                &mut item.options,
            ];
            for op in operations.into_iter().flatten() {
                // A path parameter the annotation left out is still a path parameter.
                let params = op.parameters.get_or_insert_with(Vec::new);
                for name in &in_path {
                    if !params.iter().any(|p| p.name == *name && p.parameter_in == ParameterIn::Path) {
                        params.push(
                            ParameterBuilder::new()
                                .name(*name)
                                .parameter_in(ParameterIn::Path)
                                .required(utoipa::openapi::Required::True)
                                .schema(Some(
                                    utoipa::openapi::ObjectBuilder::new().schema_type(utoipa::openapi::schema::Type::String),
                                ))
                                .build(),
                        );
                    }
                }
                let tag = op.tags.as_ref().and_then(|t| t.first()).cloned().unwrap_or_default();
                if let Some(id) = &op.operation_id
                    && !tag.is_empty()
                    && !id.starts_with(&format!("{tag}_"))
                {
                    op.operation_id = Some(format!("{tag}_{id}"));
                }
                for (status, answer) in op.responses.responses.iter_mut() {
                    let problem = status.starts_with('4') || status.starts_with('5');
                    if let (true, RefOr::T(response)) = (problem, answer)
                        && let Some(json) = response.content.shift_remove("application/json")
                    {
                        response.content.insert(crate::error::PROBLEM_JSON.to_string(), json);
                    }
                }
            }
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "officebridge", description = "Connects an ERP to Microsoft 365."),
    modifiers(&ApiKeyAuth, &Conventions),
    paths(
        super::health::healthz, super::health::readyz, super::health::metrics,
        super::tenants::list, super::tenants::create, super::tenants::get, super::tenants::replace, super::tenants::delete,
        super::operators::list, super::operators::get, super::operators::put,
        super::apikeys::list, super::apikeys::create, super::apikeys::revoke,
        super::audit::list,
        super::companies::list, super::companies::get, super::companies::put, super::companies::delete,
        super::contacts::search, super::contacts::browse, super::contacts::list_erp, super::contacts::put_erp,
        super::profiles::list, super::profiles::create, super::profiles::get, super::profiles::replace, super::profiles::delete,
        super::profiles::resolution, super::profiles::test,
        super::templates::list, super::templates::preview,
        super::exports::create, super::exports::recent, super::exports::status, super::exports::content, super::exports::events,
        super::imports::create,
        super::mail::send, super::mail::list, super::mail::show, super::mail::retry, super::mail::cancel, super::mail::upload,
        super::reports::create, super::reports::list, super::reports::file,
        super::auth::signin, super::auth::callback, super::auth::issue_link, super::auth::device, super::auth::me,
        super::grids::create, super::grids::list, super::grids::rows, super::grids::publish, super::grids::changes,
        super::addin::excel, super::addin::outlook, super::addin::unified,
    ),
    components(schemas(crate::error::Problem, crate::domain::FieldError, crate::graph::drive::DriveFile))
)]
pub struct ApiDoc;

pub async fn serve() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}
