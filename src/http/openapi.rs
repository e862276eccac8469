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

#[derive(OpenApi)]
#[openapi(
    info(title = "officebridge", description = "Connects an ERP to Microsoft 365."),
    modifiers(&ApiKeyAuth),
    paths(
        super::health::healthz, super::health::readyz, super::health::metrics,
        super::tenants::list, super::tenants::create, super::tenants::get, super::tenants::replace, super::tenants::delete,
        super::operators::list, super::operators::get, super::operators::put,
        super::apikeys::list, super::apikeys::create, super::apikeys::revoke,
        super::audit::list,
        super::companies::list, super::companies::get, super::companies::put, super::companies::delete,
        super::profiles::list, super::profiles::create, super::profiles::get, super::profiles::replace, super::profiles::delete,
        super::profiles::resolution,
        super::templates::list, super::templates::preview,
        super::exports::create, super::exports::status, super::exports::content, super::exports::events,
        super::imports::create,
        super::auth::signin, super::auth::callback, super::auth::issue_link, super::auth::device, super::auth::me,
    ),
    components(schemas(crate::error::Problem, crate::domain::FieldError, crate::graph::drive::DriveFile))
)]
pub struct ApiDoc;

pub async fn serve() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}
