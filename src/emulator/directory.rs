//! Contacts, people and the directory in Microsoft Graph v1.0, from
//! microsoftgraph/microsoft-graph-docs-contrib: `api-reference/v1.0/api/user-list-contacts.md`
//! (the default Contacts folder; `$top`, `$select`, `$filter` on `emailAddresses`),
//! `user-list-contactfolders.md`, `contactfolder-list-contacts.md`,
//! `contactfolder-list-childfolders.md`, `user-list-people.md` (`$search`, relevance),
//! `user-list.md` and `concepts/aad-advanced-queries.md` (`$search` needs
//! `ConsistencyLevel: eventual`; `$count`), `orgcontact-list.md`, `concepts/paging.md`
//! (`@odata.nextLink`).

use super::Emulator;
use super::graph::{GraphFailure, authenticate, permitted, subject};
use super::seed::{SeedContact, SeedTenant, SeedUser};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::HashMap;

/// A stable id for a folder path (`Customers/Key accounts`).
fn folder_id(path: &str) -> String {
    let digest = <sha2::Sha256 as sha2::Digest>::digest(path.to_lowercase().as_bytes());
    format!("AAMkFolder{}", hex::encode(&digest[..12]))
}

fn contact_json(user: &SeedUser, i: usize, c: &SeedContact) -> Value {
    let (given, surname) = c.display_name.split_once(' ').unwrap_or((c.display_name.as_str(), ""));
    json!({
        "id": format!("AAMkContact{}{i:04}", &user.id[..8]),
        "displayName": c.display_name,
        "givenName": given,
        "surname": surname,
        "companyName": c.company,
        "emailAddresses": [{"name": c.display_name, "address": c.email}],
        "parentFolderId": c.folder.as_deref().map_or_else(|| folder_id(""), folder_id),
    })
}

/// The caller's claims, and whether they hold one of the delegated `scopes` or application `roles`.
fn authorize(emu: &Emulator, headers: &HeaderMap, scopes: &[&str], roles: &[&str]) -> Result<Value, GraphFailure> {
    let claims = authenticate(emu, headers)?;
    let allowed = permitted(&claims, scopes, roles);
    if !allowed {
        return Err(GraphFailure::new(
            StatusCode::FORBIDDEN,
            "ErrorAccessDenied",
            "Access is denied. Check credentials and try again.",
        ));
    }
    Ok(claims)
}

/// The tenant the token was issued in (tokens are only issued for seeded tenants).
fn token_tenant(emu: &Emulator, claims: &Value) -> SeedTenant {
    emu.tenant(claims["tid"].as_str().unwrap_or_default()).expect("token tenant exists")
}

/// `$filter=emailAddresses/any(a:a/address eq 'x@y')` — the one filter the contacts lookup needs.
fn address_filter(filter: &str) -> Option<String> {
    let inner = filter.trim().strip_prefix("emailAddresses/any(")?.strip_suffix(')')?;
    let (var, cond) = inner.split_once(':')?;
    let value = cond.trim().strip_prefix(&format!("{}/address eq ", var.trim()))?;
    Some(value.trim().trim_matches('\'').to_lowercase())
}

/// Applies `$top`/`$skip` (with Graph's `@odata.nextLink`) and `$select` to a collection.
fn page(
    emu: &Emulator,
    path: &str,
    q: &HashMap<String, String>,
    items: Vec<Value>,
    default_top: usize,
    context: &str,
) -> Result<Value, GraphFailure> {
    let number = |name: &str, default: usize| -> Result<usize, GraphFailure> {
        match q.get(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| {
                GraphFailure::new(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    format!("Invalid value '{v}' for query parameter {name}."),
                )
            }),
        }
    };
    let top = number("$top", default_top)?.clamp(1, 1000);
    let skip = number("$skip", 0)?;
    let total = items.len();
    let select: Option<Vec<String>> = q.get("$select").map(|s| s.split(',').map(|f| f.trim().to_string()).collect());
    let value: Vec<Value> = items
        .into_iter()
        .skip(skip)
        .take(top)
        .map(|item| match &select {
            // `id` always comes back, as Graph returns it with any $select.
            Some(fields) => Value::Object(
                item.as_object()
                    .expect("object")
                    .iter()
                    .filter(|(k, _)| *k == "id" || fields.contains(k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
            None => item,
        })
        .collect();
    let mut body = json!({"@odata.context": format!("https://graph.microsoft.com/v1.0/$metadata#{context}"), "value": value});
    if skip + top < total {
        let mut next = url::Url::parse(&format!("{}{path}", emu.base_url)).expect("valid");
        for (k, v) in q.iter().filter(|(k, _)| *k != "$skip" && *k != "$top") {
            next.query_pairs_mut().append_pair(k, v);
        }
        next.query_pairs_mut()
            .append_pair("$top", &top.to_string())
            .append_pair("$skip", &(skip + top).to_string());
        body["@odata.nextLink"] = json!(next.to_string());
    }
    Ok(body)
}

fn respond(headers: &HeaderMap, r: Result<Value, GraphFailure>) -> Response {
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(headers),
    }
}

/// The contacts of one folder (`""` is the default Contacts folder), filtered.
fn contacts(
    emu: &Emulator,
    headers: &HeaderMap,
    user: Option<&str>,
    folder: Option<&str>,
    path: &str,
    q: &HashMap<String, String>,
) -> Result<Value, GraphFailure> {
    let claims = authorize(
        emu,
        headers,
        &["Contacts.Read", "Contacts.ReadWrite"],
        &["Contacts.Read", "Contacts.ReadWrite"],
    )?;
    let owner = subject(emu, &claims, user)?;
    let folder_path = match folder {
        None => String::new(),
        Some(id) => owner
            .contacts
            .iter()
            .filter_map(|c| c.folder.clone())
            .find(|f| folder_id(f) == id)
            .ok_or_else(|| {
                GraphFailure::new(
                    StatusCode::NOT_FOUND,
                    "ErrorItemNotFound",
                    "The specified object was not found in the store.",
                )
            })?,
    };
    let wanted = match q.get("$filter") {
        None => None,
        Some(f) => Some(address_filter(f).ok_or_else(|| {
            GraphFailure::new(
                StatusCode::BAD_REQUEST,
                "ErrorInvalidUrlQueryFilter",
                "The query filter contains one or more invalid nodes.",
            )
        })?),
    };
    let items: Vec<Value> = owner
        .contacts
        .iter()
        .enumerate()
        .filter(|(_, c)| c.folder.as_deref().unwrap_or("").eq_ignore_ascii_case(&folder_path))
        .filter(|(_, c)| wanted.as_ref().is_none_or(|w| c.email.eq_ignore_ascii_case(w)))
        .map(|(i, c)| contact_json(&owner, i, c))
        .collect();
    page(emu, path, q, items, 10, "users('me')/contacts")
}

pub async fn me_contacts(State(emu): State<Emulator>, headers: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Response {
    respond(&headers, contacts(&emu, &headers, None, None, "/v1.0/me/contacts", &q))
}

pub async fn user_contacts(
    State(emu): State<Emulator>,
    headers: HeaderMap,
    Path(user): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let path = format!("/v1.0/users/{user}/contacts");
    respond(&headers, contacts(&emu, &headers, Some(&user), None, &path, &q))
}

pub async fn folder_contacts(
    State(emu): State<Emulator>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let path = format!("/v1.0/me/contactFolders/{id}/contacts");
    respond(&headers, contacts(&emu, &headers, None, Some(&id), &path, &q))
}

/// Folders directly below `parent` (`""`: the top level below the default Contacts folder).
fn folders(
    emu: &Emulator,
    headers: &HeaderMap,
    parent: Option<&str>,
    q: &HashMap<String, String>,
    path: &str,
) -> Result<Value, GraphFailure> {
    let claims = authorize(
        emu,
        headers,
        &["Contacts.Read", "Contacts.ReadWrite"],
        &["Contacts.Read", "Contacts.ReadWrite"],
    )?;
    let owner = subject(emu, &claims, None)?;
    let mut all: Vec<String> = owner.contacts.iter().filter_map(|c| c.folder.clone()).collect();
    // Every ancestor of a folder that holds contacts is a folder too.
    for f in all.clone() {
        let mut p = f.as_str();
        while let Some((up, _)) = p.rsplit_once('/') {
            all.push(up.to_string());
            p = up;
        }
    }
    all.sort();
    all.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
    let parent_path = match parent {
        None => String::new(),
        Some(id) => all.iter().find(|f| folder_id(f) == id).cloned().ok_or_else(|| {
            GraphFailure::new(
                StatusCode::NOT_FOUND,
                "ErrorItemNotFound",
                "The specified object was not found in the store.",
            )
        })?,
    };
    let items = all
        .iter()
        .filter(|f| f.rsplit_once('/').map_or("", |(up, _)| up).eq_ignore_ascii_case(&parent_path))
        .map(|f| json!({"id": folder_id(f), "displayName": f.rsplit('/').next().unwrap_or(f), "parentFolderId": folder_id(&parent_path)}))
        .collect();
    page(emu, path, q, items, 10, "users('me')/contactFolders")
}

pub async fn contact_folders(State(emu): State<Emulator>, headers: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Response {
    respond(&headers, folders(&emu, &headers, None, &q, "/v1.0/me/contactFolders"))
}

pub async fn child_folders(
    State(emu): State<Emulator>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let path = format!("/v1.0/me/contactFolders/{id}/childFolders");
    respond(&headers, folders(&emu, &headers, Some(&id), &q, &path))
}

/// Whether `text` has a word that starts with `term` (Graph's search matches word prefixes).
fn prefix_match(text: &str, term: &str) -> bool {
    let term = term.to_lowercase();
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .any(|w| !w.is_empty() && w.starts_with(&term))
        || text.to_lowercase().starts_with(&term)
}

/// `GET /v1.0/me/people`: colleagues and personal contacts, most relevant first.
pub async fn people(State(emu): State<Emulator>, headers: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Response {
    let result = (|| {
        let claims = authorize(&emu, &headers, &["People.Read", "People.Read.All"], &["People.Read.All"])?;
        let me = subject(&emu, &claims, None)?;
        let tenant = token_tenant(&emu, &claims);
        let search = q.get("$search").map(|s| s.trim_matches('"').to_string());
        // Relevance: people the user has as contacts rank above colleagues, then by name.
        let mut people: Vec<(u8, Value)> = tenant
            .users
            .iter()
            .filter(|u| u.id != me.id)
            .map(|u| (1, json!({"id": u.id, "displayName": u.display_name, "userPrincipalName": u.user_principal_name, "scoredEmailAddresses": [{"address": u.mail.clone().unwrap_or_else(|| u.user_principal_name.clone()), "relevanceScore": 8.0}], "personType": {"class": "Person", "subclass": "OrganizationUser"}})))
            .chain(me.contacts.iter().enumerate().map(|(i, c)| (2, json!({"id": format!("AAMkPerson{i:04}"), "displayName": c.display_name, "userPrincipalName": null, "scoredEmailAddresses": [{"address": c.email, "relevanceScore": 10.0}], "personType": {"class": "Person", "subclass": "PersonalContact"}}))))
            .filter(|(_, p)| search.as_ref().is_none_or(|s| prefix_match(p["displayName"].as_str().unwrap_or(""), s) || prefix_match(p["scoredEmailAddresses"][0]["address"].as_str().unwrap_or(""), s)))
            .collect();
        people.sort_by(|a, b| {
            b.0.cmp(&a.0)
                .then_with(|| a.1["displayName"].as_str().cmp(&b.1["displayName"].as_str()))
        });
        page(
            &emu,
            "/v1.0/me/people",
            &q,
            people.into_iter().map(|(_, p)| p).collect(),
            10,
            "users('me')/people",
        )
    })();
    respond(&headers, result)
}

/// `GET /v1.0/users`: the directory; `$search="displayName:…"` needs `ConsistencyLevel: eventual`.
pub async fn users(State(emu): State<Emulator>, headers: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Response {
    let result = (|| {
        let claims = authorize(
            &emu,
            &headers,
            &["User.ReadBasic.All", "User.Read.All", "Directory.Read.All"],
            &["User.Read.All", "Directory.Read.All"],
        )?;
        let tenant = token_tenant(&emu, &claims);
        let eventual = headers
            .get("consistencylevel")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("eventual"));
        let search = match q.get("$search") {
            None => None,
            Some(_) if !eventual => {
                return Err(GraphFailure::new(
                    StatusCode::BAD_REQUEST,
                    "Request_UnsupportedQuery",
                    "Request with $search query parameter only works through MSGraph with a special request header: 'ConsistencyLevel: eventual'",
                ));
            }
            Some(s) => {
                let inner = s.trim().trim_matches('"');
                let Some((property, term)) = inner.split_once(':') else {
                    return Err(GraphFailure::new(
                        StatusCode::BAD_REQUEST,
                        "Request_UnsupportedQuery",
                        "Syntax error: the $search value must be \"property:term\".",
                    ));
                };
                Some((property.to_string(), term.to_string()))
            }
        };
        let users: Vec<Value> = tenant
            .users
            .iter()
            .filter(|u| {
                search.as_ref().is_none_or(|(p, t)| match p.as_str() {
                    "displayName" => prefix_match(&u.display_name, t),
                    "mail" => u.mail.as_deref().is_some_and(|m| prefix_match(m, t)),
                    "userPrincipalName" => prefix_match(&u.user_principal_name, t),
                    _ => false,
                })
            })
            .map(|u| json!({"id": u.id, "displayName": u.display_name, "mail": u.mail, "userPrincipalName": u.user_principal_name}))
            .collect();
        let count = users.len();
        let mut body = page(&emu, "/v1.0/users", &q, users, 100, "users")?;
        if q.get("$count").is_some_and(|c| c == "true") {
            if !eventual {
                return Err(GraphFailure::new(
                    StatusCode::BAD_REQUEST,
                    "Request_UnsupportedQuery",
                    "$count is only supported with the ConsistencyLevel header set to 'eventual'.",
                ));
            }
            body["@odata.count"] = json!(count);
        }
        Ok(body)
    })();
    respond(&headers, result)
}

/// `GET /v1.0/contacts`: the organisation's contacts (OrgContact.Read.All).
pub async fn org_contacts(State(emu): State<Emulator>, headers: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Response {
    let result = (|| {
        let claims = authorize(
            &emu,
            &headers,
            &["OrgContact.Read.All", "Directory.Read.All"],
            &["OrgContact.Read.All", "Directory.Read.All"],
        )?;
        let tenant = token_tenant(&emu, &claims);
        let items = tenant
            .org_contacts
            .iter()
            .enumerate()
            .map(|(i, c)| json!({"id": format!("{}-{i:04}", &tenant.id[..8]), "displayName": c.display_name, "mail": c.mail, "companyName": c.company}))
            .collect();
        page(&emu, "/v1.0/contacts", &q, items, 100, "contacts")
    })();
    respond(&headers, result)
}
