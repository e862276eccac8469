//! `/api/v1/contacts`: the lookup for To/Cc/Bcc and browsing personal contacts (SPEC §3.3,
//! §6 "Contacts"); `/api/v1/companies/{code}/contacts`: the ERP's own contacts.
//!
//! A search is for the operator named by `X-Operator` (client key) or the add-in's user
//! (its single sign-on token); with `tenant` and `mailbox` (client key) it is an application
//! lookup of that mailbox, for server-side reporting with nobody signed in.

use super::grids::PaneCaller;
use super::{AppState, Client};
use crate::contacts::SearchAnswer;
use crate::contacts::lookup::{Query as LookupQuery, Target};
use crate::domain::{CompanyCode, EmailAddress, TenantCode};
use crate::error::{ApiError, Problem};
use crate::graph::{Principal, base_url, encode_segment};
use crate::store::StoreError;
use crate::store::contacts::{BrowsedContact, ErpContact};
use axum::Json;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};

/// This resource's routes, merged by [`super::router`].
pub fn routes() -> axum::Router<AppState> {
    use axum::routing::get;
    axum::Router::new()
        .route("/api/v1/contacts/search", get(search))
        .route("/api/v1/contacts", get(browse))
}

/// The ERP contact lists: bulk bodies, merged with the exports' limits.
pub fn erp_routes() -> axum::Router<AppState> {
    use axum::routing::get;
    axum::Router::new().route("/api/v1/companies/{code}/contacts", get(list_erp).put(put_erp))
}

/// The longest query, in characters.
const MAX_QUERY: usize = 256;
/// The most contacts one company may publish.
const MAX_ERP_CONTACTS: usize = 100_000;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    /// What the operator typed: 1–256 characters.
    pub q: Option<String>,
    /// Most results, 1–50 (10).
    pub limit: Option<String>,
    /// A company whose ERP contacts are searched too (the `erp` source; `disabled` without).
    pub company: Option<String>,
    /// An application lookup: the tenant whose application permissions are used ...
    pub tenant: Option<String>,
    /// ... and the mailbox whose personal contacts are searched.
    pub mailbox: Option<String>,
}

fn parse_query(raw: Option<&str>) -> Result<String, ApiError> {
    let q = raw.unwrap_or("").trim();
    if q.is_empty() {
        return Err(ApiError::validation("q", "is required and must not be blank"));
    }
    if q.chars().count() > MAX_QUERY {
        return Err(ApiError::validation("q", format!("must be at most {MAX_QUERY} characters")));
    }
    if q.chars().any(char::is_control) {
        return Err(ApiError::validation("q", "must not hold control characters"));
    }
    Ok(q.to_string())
}

/// Who a call acts for: an operator (delegated) or a mailbox (application permissions).
async fn target(state: &AppState, parts: &mut Parts, tenant: Option<&str>, mailbox: Option<&str>) -> Result<Target, ApiError> {
    if PaneCaller::bears_token(&parts.headers) && (tenant.is_some() || mailbox.is_some()) {
        return Err(ApiError::validation("tenant", "an application lookup needs a client API key"));
    }
    let (operator, sso) = match PaneCaller::from_request_parts(parts, state).await? {
        PaneCaller::Operator { operator, sso, .. } => (Some(operator), sso),
        PaneCaller::Erp { .. } => (None, None),
    };
    if let Some(caller) = sso {
        let principal = super::auth::on_behalf_of(state, &caller, "Contacts.Read People.Read User.ReadBasic.All").await?;
        let base = base_url(&caller.access.tenant);
        return Ok(Target {
            owner: format!("op:{}", caller.operator.code),
            principal,
            root: format!("{base}/me"),
            base,
            application: false,
            operator: Some(caller.operator.code.to_string()),
        });
    }
    match (tenant, mailbox) {
        (None, None) => {
            let op = operator.ok_or_else(|| {
                ApiError::validation(
                    "X-Operator",
                    "is required: name the operator the search is for (or tenant and mailbox)",
                )
            })?;
            // Before any source runs: an operator who must sign in again gets the usual 401.
            state.tokens.operator_token(&op.code).await?;
            let tenant = state
                .store
                .get_tenant(op.tenant.as_ref().expect("a linked operator has a tenant"))
                .await?;
            let base = base_url(&tenant);
            Ok(Target {
                owner: format!("op:{}", op.code),
                principal: Principal::Operator(op.code.clone()),
                root: format!("{base}/me"),
                base,
                application: false,
                operator: Some(op.code.to_string()),
            })
        }
        (Some(t), Some(m)) => {
            let code = TenantCode::parse(t).map_err(|e| ApiError::validation("tenant", e))?;
            let tenant = match state.store.get_tenant(&code).await {
                Ok(t) => t,
                Err(StoreError::NotFound { .. }) => return Err(ApiError::validation("tenant", format!("no tenant has code '{code}'"))),
                Err(e) => return Err(e.into()),
            };
            if let Some(op) = &operator
                && op.tenant.as_ref() != Some(&code)
            {
                return Err(ApiError::Forbidden(format!(
                    "operator {} does not belong to tenant {code}, whose mailbox {m} was asked for",
                    op.code
                )));
            }
            let mailbox = EmailAddress::parse(m).map_err(|e| ApiError::validation("mailbox", e))?;
            let principal = Principal::App {
                tenant: code.clone(),
                mailbox: mailbox.as_str().to_string(),
                app: None,
            };
            let base = base_url(&tenant);
            state.contacts.check_mailbox(&principal, &base, mailbox.as_str(), &code).await?;
            Ok(Target {
                owner: format!("app:{code}:{}", mailbox.as_str().to_lowercase()),
                principal,
                root: format!("{base}/users/{}", encode_segment(mailbox.as_str())),
                base,
                application: true,
                operator: None,
            })
        }
        (Some(_), None) => Err(ApiError::validation("mailbox", "is required with tenant (an application lookup)")),
        (None, Some(_)) => Err(ApiError::validation("tenant", "is required with mailbox (an application lookup)")),
    }
}

#[utoipa::path(get, path = "/api/v1/contacts/search", tag = "contacts", security(("api_key" = []), ("sso" = [])),
    params(SearchParams, ("X-Operator" = Option<String>, Header, description = "The operator the search is for (client key)")),
    responses((status = 200, body = SearchAnswer), (status = 401, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem)))]
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn search(State(state): State<AppState>, mut parts: Parts) -> Result<Json<SearchAnswer>, ApiError> {
    let super::Params(p) = super::Params::<SearchParams>::from_request_parts(&mut parts, &state).await?;
    let text = parse_query(p.q.as_deref())?;
    let limit = super::whole_number(p.limit.as_deref(), "limit", 1..=50, 10)? as usize;
    let company = match p.company.as_deref() {
        None => None,
        Some(raw) => {
            let code = CompanyCode::parse(raw).map_err(|m| ApiError::validation("company", m))?;
            match state.store.get_company(&code).await {
                Ok(_) => Some(code),
                Err(StoreError::NotFound { .. }) => {
                    return Err(ApiError::validation("company", format!("no company has code '{code}'")));
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    let target = target(&state, &mut parts, p.tenant.as_deref(), p.mailbox.as_deref()).await?;
    let query = LookupQuery { text, limit, company };
    Ok(Json(state.contacts.search(&target, &query).await))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct BrowseParams {
    /// Where the previous page ended (its `next_cursor`).
    pub cursor: Option<String>,
    /// Contacts per page, 1–500 (100).
    pub limit: Option<String>,
    /// One folder's id (a contact's `folder_id`).
    pub folder: Option<String>,
}

/// One page of personal contacts.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ContactPage {
    pub items: Vec<BrowsedContact>,
    pub next_cursor: Option<String>,
}

/// What a cursor holds: whose listing it belongs to, and the last entry seen.
#[derive(Serialize, Deserialize)]
struct Cursor {
    /// A digest of the owner and folder, so a cursor cannot be replayed on another listing.
    l: String,
    n: String,
    c: String,
    a: String,
}

fn listing(owner: &str, folder: Option<&str>) -> String {
    let digest = <sha2::Sha256 as sha2::Digest>::digest(format!("{owner}|{}", folder.unwrap_or("")).as_bytes());
    hex::encode(&digest[..8])
}

#[utoipa::path(get, path = "/api/v1/contacts", tag = "contacts", security(("api_key" = []), ("sso" = [])),
    params(BrowseParams, ("X-Operator" = Option<String>, Header, description = "The operator whose contacts are listed (client key)")),
    responses((status = 200, body = ContactPage), (status = 401, body = Problem), (status = 422, body = Problem), (status = 502, body = Problem)))]
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn browse(State(state): State<AppState>, mut parts: Parts) -> Result<Json<ContactPage>, ApiError> {
    let super::Params(p) = super::Params::<BrowseParams>::from_request_parts(&mut parts, &state).await?;
    let limit = super::whole_number(p.limit.as_deref(), "limit", 1..=500, 100)? as usize;
    let target = target(&state, &mut parts, None, None).await?;
    let folder = p.folder.as_deref().filter(|f| !f.is_empty());
    let key = listing(&target.owner, folder);
    let after = match p.cursor.as_deref().filter(|c| !c.is_empty()) {
        None => None,
        Some(raw) => {
            let bad = || ApiError::validation("cursor", "is not a cursor this listing handed out");
            let c: Cursor = B64.decode(raw).ok().and_then(|b| serde_json::from_slice(&b).ok()).ok_or_else(bad)?;
            if c.l != key {
                return Err(bad());
            }
            Some((c.n, c.c, c.a))
        }
    };
    state.contacts.ensure_index(&target).await?;
    let mut items = state
        .store
        .browse_personal_contacts(&target.owner, folder, after.as_ref(), limit + 1)
        .await?;
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        let last = items.last().expect("limit is at least 1");
        let c = Cursor {
            l: key,
            n: last.name.to_lowercase(),
            c: last.contact_id.clone(),
            a: crate::contacts::normalise(&last.address),
        };
        Some(B64.encode(serde_json::to_vec(&c).expect("serializes")))
    } else {
        None
    };
    Ok(Json(ContactPage { items, next_cursor }))
}

fn company_code(raw: &str) -> Result<CompanyCode, ApiError> {
    CompanyCode::parse(raw).map_err(|_| ApiError::NotFound(format!("company '{raw}' does not exist")))
}

#[utoipa::path(get, path = "/api/v1/companies/{code}/contacts", tag = "contacts", security(("api_key" = [])),
    responses((status = 200, body = [ErpContact]), (status = 404, body = Problem)))]
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn list_erp(State(state): State<AppState>, _: Client, Path(code): Path<String>) -> Result<Json<Vec<ErpContact>>, ApiError> {
    Ok(Json(state.store.list_erp_contacts(&company_code(&code)?).await?))
}

/// The answer to a replaced list.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Replaced {
    pub company: String,
    pub contacts: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ErpContactInput {
    key: String,
    name: String,
    address: String,
    #[serde(default)]
    account: Option<String>,
    #[serde(default)]
    role: Option<String>,
}

/// A bounded line of text: trimmed, 1..=max characters, no control characters.
fn text(field: &str, raw: &str, max: usize) -> Result<String, String> {
    let t = raw.trim();
    if t.is_empty() || t.chars().count() > max || t.chars().any(char::is_control) {
        return Err(format!("{field} must be 1 to {max} characters, without control characters"));
    }
    Ok(t.to_string())
}

impl ErpContactInput {
    fn check(self) -> Result<ErpContact, String> {
        let optional = |field: &str, v: Option<String>| -> Result<Option<String>, String> {
            v.filter(|s| !s.trim().is_empty()).map(|s| text(field, &s, 100)).transpose()
        };
        Ok(ErpContact {
            key: text("key", &self.key, 100)?,
            name: text("name", &self.name, 200)?,
            address: EmailAddress::parse(self.address.trim())
                .map_err(|e| format!("address {e}"))?
                .as_str()
                .to_string(),
            account: optional("account", self.account)?,
            role: optional("role", self.role)?,
        })
    }
}

#[utoipa::path(put, path = "/api/v1/companies/{code}/contacts", tag = "contacts", security(("api_key" = [])),
    request_body(content = [ErpContact], description = "The company's whole list, as a JSON array or NDJSON (application/x-ndjson)"),
    responses((status = 200, body = Replaced), (status = 404, body = Problem), (status = 413, body = Problem), (status = 422, body = Problem, description = "a line breaks a rule; nothing was replaced")))]
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn put_erp(
    State(state): State<AppState>,
    Client(caller): Client,
    Path(code): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Replaced>, ApiError> {
    let company = company_code(&code)?;
    let ndjson = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().to_ascii_lowercase().starts_with("application/x-ndjson"));
    // Each entry with the place a person fixes it at: the line (NDJSON) or the index (JSON).
    let entries: Vec<(String, serde_json::Value)> = if ndjson {
        let text = std::str::from_utf8(&body).map_err(|_| ApiError::MalformedBody("the body is not UTF-8".into()))?;
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l)
                    .map(|v| (format!("line {}", i + 1), v))
                    .map_err(|e| ApiError::validation(format!("line {}", i + 1), format!("is not JSON: {e}")))
            })
            .collect::<Result<_, _>>()?
    } else {
        super::require_json(&headers)?;
        let all: Vec<serde_json::Value> = super::parse_json(&body)?;
        all.into_iter().enumerate().map(|(i, v)| (format!("[{i}]"), v)).collect()
    };
    if entries.len() > MAX_ERP_CONTACTS {
        return Err(ApiError::too_large(
            "body",
            format!("at most {MAX_ERP_CONTACTS} contacts per company"),
        ));
    }
    let mut contacts = Vec::with_capacity(entries.len());
    let mut keys = std::collections::HashMap::new();
    for (place, v) in entries {
        let input: ErpContactInput = serde_json::from_value(v).map_err(|e| ApiError::validation(place.clone(), e.to_string()))?;
        let c = input.check().map_err(|m| ApiError::validation(place.clone(), m))?;
        if let Some(first) = keys.insert(c.key.clone(), place.clone()) {
            return Err(ApiError::validation(place, format!("key '{}' is already used by {first}", c.key)));
        }
        contacts.push(c);
    }
    match state.store.replace_erp_contacts(caller.actor(), &company, &contacts).await {
        Ok(()) => {}
        Err(StoreError::NotFound { .. }) => return Err(ApiError::NotFound(format!("company '{company}' does not exist"))),
        Err(e) => return Err(e.into()),
    }
    Ok(Json(Replaced {
        company: company.to_string(),
        contacts: contacts.len(),
    }))
}
