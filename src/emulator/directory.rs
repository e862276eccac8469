//! Contacts, people and the directory in Microsoft Graph v1.0, from
//! microsoftgraph/microsoft-graph-docs-contrib: `api-reference/v1.0/api/user-list-contacts.md`
//! (the default Contacts folder; `$top`, `$select`, `$filter` on `emailAddresses` and
//! `startswith(displayName,…)`), `user-list-contactfolders.md` (the default folder is not
//! listed: Microsoft's known issue), `contactfolder-list-contacts.md`,
//! `contactfolder-list-childfolders.md`, `contact-delta.md` (per folder, `@odata.nextLink` then
//! `@odata.deltaLink`, `@removed`), `user-list-people.md` and `concepts/people-example.md`
//! (`$search` on name and address word prefixes with fuzzy matching, negative relevance
//! scores, `X-PeopleQuery-QuerySources`), `concepts/search-query-parameter.md` (at most 250
//! people per search; directory `$search` tokenisation: spaces, case changes, symbols, digits;
//! other properties match as `startswith`), `user-list.md` and `concepts/aad-advanced-queries.md`
//! (`$search` and `$count` need `ConsistencyLevel: eventual`; `$top` 1–999), `orgcontact-list.md`,
//! `concepts/paging.md` (`@odata.nextLink`), `auth-limit-mailbox-access.md` (application
//! access policies).

use super::Emulator;
use super::graph::{GraphFailure, authenticate, mailbox_subject, permitted};
use super::seed::{SeedContact, SeedTenant, SeedUser};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::HashMap;

/// A stable id for a folder path (`Customers/Key accounts`; `""` is the default Contacts folder).
fn folder_id(path: &str) -> String {
    let digest = <sha2::Sha256 as sha2::Digest>::digest(path.to_lowercase().as_bytes());
    format!("AAMkFolder{}", hex::encode(&digest[..12]))
}

/// A contact's id: stable while its owner, folder, name and address stay the same, so a
/// replaced contact list shows as additions and removals in `contacts/delta`.
fn contact_id(owner: &SeedUser, c: &SeedContact, nth: usize) -> String {
    let key = format!(
        "{}|{}|{}|{}|{nth}",
        owner.id,
        c.folder.as_deref().unwrap_or("").to_lowercase(),
        c.display_name,
        c.email.to_lowercase()
    );
    let digest = <sha2::Sha256 as sha2::Digest>::digest(key.as_bytes());
    format!("AAMkContact{}", hex::encode(&digest[..12]))
}

/// Every contact of a user as Graph describes it, with the folder path it lives in.
fn all_contacts(owner: &SeedUser) -> Vec<(String, Value)> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    owner
        .contacts
        .iter()
        .map(|c| {
            let path = c.folder.clone().unwrap_or_default();
            let nth = seen.entry(format!("{path}|{}|{}", c.display_name, c.email)).or_default();
            let id = contact_id(owner, c, *nth);
            *nth += 1;
            let (given, surname) = c.display_name.split_once(' ').unwrap_or((c.display_name.as_str(), ""));
            let addresses = if c.email.is_empty() {
                json!([])
            } else {
                json!([{"name": c.display_name, "address": c.email}])
            };
            let v = json!({
                "id": id,
                "displayName": c.display_name,
                "givenName": given,
                "surname": surname,
                "companyName": c.company,
                "emailAddresses": addresses,
                "parentFolderId": folder_id(&path),
            });
            (path, v)
        })
        .collect()
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

fn contacts_owner(emu: &Emulator, headers: &HeaderMap, user: Option<&str>) -> Result<SeedUser, GraphFailure> {
    let claims = authorize(
        emu,
        headers,
        &["Contacts.Read", "Contacts.ReadWrite"],
        &["Contacts.Read", "Contacts.ReadWrite"],
    )?;
    mailbox_subject(emu, &claims, user)
}

/// The tenant the token was issued in (tokens are only issued for seeded tenants).
fn token_tenant(emu: &Emulator, claims: &Value) -> SeedTenant {
    emu.tenant(claims["tid"].as_str().unwrap_or_default()).expect("token tenant exists")
}

fn invalid_filter() -> GraphFailure {
    GraphFailure::new(
        StatusCode::BAD_REQUEST,
        "ErrorInvalidUrlQueryFilter",
        "The query filter contains one or more invalid nodes.",
    )
}

/// A quoted OData string literal (`'it''s'`), unquoted.
fn literal(raw: &str) -> Option<String> {
    let inner = raw.trim().strip_prefix('\'')?.strip_suffix('\'')?;
    Some(inner.replace("''", "'"))
}

/// A test on one item of a collection.
type Predicate = Box<dyn Fn(&Value) -> bool>;
/// `$search` clauses: property, term, and whether `AND` joins it to the one before.
type Clauses = Vec<(String, String, bool)>;

/// The contact filters Outlook accepts: `emailAddresses/any(a:a/address eq '…')` and
/// `startswith(displayName,'…')`. `startswith` on an address is refused, as Outlook does.
fn contact_filter(filter: &str) -> Result<Predicate, GraphFailure> {
    let f = filter.trim();
    if let Some(inner) = f.strip_prefix("emailAddresses/any(").and_then(|r| r.strip_suffix(')')) {
        let (var, cond) = inner.split_once(':').ok_or_else(invalid_filter)?;
        let value = cond
            .trim()
            .strip_prefix(&format!("{}/address eq ", var.trim()))
            .and_then(literal)
            .ok_or_else(invalid_filter)?
            .to_lowercase();
        return Ok(Box::new(move |c: &Value| {
            c["emailAddresses"]
                .as_array()
                .is_some_and(|a| a.iter().any(|e| e["address"].as_str().is_some_and(|x| x.to_lowercase() == value)))
        }));
    }
    if let Some(args) = f.strip_prefix("startswith(").and_then(|r| r.strip_suffix(')')) {
        let (property, value) = args.split_once(',').ok_or_else(invalid_filter)?;
        if property.trim() != "displayName" {
            return Err(invalid_filter());
        }
        let value = literal(value).ok_or_else(invalid_filter)?.to_lowercase();
        return Ok(Box::new(move |c: &Value| {
            c["displayName"].as_str().is_some_and(|n| n.to_lowercase().starts_with(&value))
        }));
    }
    Err(invalid_filter())
}

fn bad_request(message: impl Into<String>) -> GraphFailure {
    GraphFailure::new(StatusCode::BAD_REQUEST, "BadRequest", message)
}

/// A numeric query option.
fn number(q: &HashMap<String, String>, name: &str, default: usize) -> Result<usize, GraphFailure> {
    match q.get(name) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| bad_request(format!("Invalid value '{v}' for query parameter {name}."))),
    }
}

/// Applies `$top`/`$skip` (with Graph's `@odata.nextLink`) and `$select` to a collection;
/// `count` adds `@odata.count` to the first page only.
#[allow(clippy::too_many_arguments)]
fn page(
    emu: &Emulator,
    path: &str,
    q: &HashMap<String, String>,
    items: Vec<Value>,
    default_top: usize,
    max_top: usize,
    context: &str,
    count: bool,
) -> Result<Value, GraphFailure> {
    let top = number(q, "$top", default_top)?.clamp(1, max_top);
    let skip = number(q, "$skip", 0)?;
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
    let mut body = json!({"@odata.context": format!("https://graph.microsoft.com/v1.0/$metadata#{context}")});
    if count && skip == 0 {
        body["@odata.count"] = json!(total);
    }
    body["value"] = Value::Array(value);
    if skip + top < total {
        let mut next = url::Url::parse(&format!("{}{path}", emu.base_url)).expect("valid");
        for (k, v) in q.iter().filter(|(k, _)| *k != "$skip" && *k != "$top" && *k != "$count") {
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

fn not_found() -> GraphFailure {
    GraphFailure::new(
        StatusCode::NOT_FOUND,
        "ErrorItemNotFound",
        "The specified object was not found in the store.",
    )
}

/// Every folder path of a user below the default Contacts folder, ancestors included.
fn folder_paths(owner: &SeedUser) -> Vec<String> {
    let mut all: Vec<String> = owner.contacts.iter().filter_map(|c| c.folder.clone()).collect();
    for f in all.clone() {
        let mut p = f.as_str();
        while let Some((up, _)) = p.rsplit_once('/') {
            all.push(up.to_string());
            p = up;
        }
    }
    all.sort_by_key(|f| f.to_lowercase());
    all.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
    all
}

/// The folder path an id names: the default folder's own id (from a contact's
/// `parentFolderId`) or one below it.
fn folder_path(owner: &SeedUser, id: &str) -> Result<String, GraphFailure> {
    if id == folder_id("") {
        return Ok(String::new());
    }
    folder_paths(owner).into_iter().find(|f| folder_id(f) == id).ok_or_else(not_found)
}

/// The contacts of one folder (`None`: the default Contacts folder), filtered.
fn contacts(
    emu: &Emulator,
    headers: &HeaderMap,
    user: Option<&str>,
    folder: Option<&str>,
    path: &str,
    q: &HashMap<String, String>,
) -> Result<Value, GraphFailure> {
    let owner = contacts_owner(emu, headers, user)?;
    let wanted = match folder {
        None => String::new(),
        Some(id) => folder_path(&owner, id)?,
    };
    let filter = q.get("$filter").map(|f| contact_filter(f)).transpose()?;
    let items: Vec<Value> = all_contacts(&owner)
        .into_iter()
        .filter(|(p, _)| p.eq_ignore_ascii_case(&wanted))
        .map(|(_, c)| c)
        .filter(|c| filter.as_ref().is_none_or(|f| f(c)))
        .collect();
    page(emu, path, q, items, 10, 1000, "users('me')/contacts", false)
}

/// `/me/contacts` or `/users/{user}/contacts`: the default Contacts folder.
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

/// `…/contactFolders/{id}/contacts`, `…/childFolders` and `…/contacts/delta`, for `/me` and `/users/{user}`.
pub async fn me_folder(
    State(emu): State<Emulator>,
    headers: HeaderMap,
    Path((id, rest)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let path = format!("/v1.0/me/contactFolders/{id}/{rest}");
    respond(&headers, folder_resource(&emu, &headers, None, &id, &rest, &path, &q))
}

pub async fn user_folder(
    State(emu): State<Emulator>,
    headers: HeaderMap,
    Path((user, id, rest)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let path = format!("/v1.0/users/{user}/contactFolders/{id}/{rest}");
    respond(&headers, folder_resource(&emu, &headers, Some(&user), &id, &rest, &path, &q))
}

fn folder_resource(
    emu: &Emulator,
    headers: &HeaderMap,
    user: Option<&str>,
    id: &str,
    rest: &str,
    path: &str,
    q: &HashMap<String, String>,
) -> Result<Value, GraphFailure> {
    match rest {
        "contacts" => contacts(emu, headers, user, Some(id), path, q),
        "childFolders" => folders(emu, headers, user, Some(id), q, path),
        "contacts/delta" => delta(emu, headers, user, id, path, q),
        _ => Err(GraphFailure::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("Resource not found for the segment '{rest}'."),
        )),
    }
}

/// Folders directly below `parent` (`None`: the top level, below the default Contacts folder,
/// which itself is not listed).
fn folders(
    emu: &Emulator,
    headers: &HeaderMap,
    user: Option<&str>,
    parent: Option<&str>,
    q: &HashMap<String, String>,
    path: &str,
) -> Result<Value, GraphFailure> {
    let owner = contacts_owner(emu, headers, user)?;
    let parent_path = match parent {
        None => String::new(),
        Some(id) => folder_path(&owner, id)?,
    };
    let items = folder_paths(&owner)
        .iter()
        .filter(|f| f.rsplit_once('/').map_or("", |(up, _)| up).eq_ignore_ascii_case(&parent_path))
        .map(|f| json!({"id": folder_id(f), "displayName": f.rsplit('/').next().unwrap_or(f), "parentFolderId": folder_id(&parent_path)}))
        .collect();
    page(emu, path, q, items, 10, 1000, "users('me')/contactFolders", false)
}

pub async fn contact_folders(State(emu): State<Emulator>, headers: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Response {
    respond(&headers, folders(&emu, &headers, None, None, &q, "/v1.0/me/contactFolders"))
}

pub async fn user_contact_folders(
    State(emu): State<Emulator>,
    headers: HeaderMap,
    Path(user): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let path = format!("/v1.0/users/{user}/contactFolders");
    respond(&headers, folders(&emu, &headers, Some(&user), None, &q, &path))
}

/// What `contacts/delta` remembers: per delta token, the contacts (id → content digest) the
/// caller has seen; per skip token, the rest of a round being paged through.
#[derive(Default)]
pub struct DeltaState {
    seen: HashMap<String, HashMap<String, String>>,
    rounds: HashMap<String, Round>,
}

struct Round {
    items: Vec<Value>,
    snapshot: HashMap<String, String>,
    scope: String,
}

fn digest(v: &Value) -> String {
    hex::encode(&<sha2::Sha256 as sha2::Digest>::digest(v.to_string().as_bytes())[..12])
}

/// `GET …/contactFolders/{id}/contacts/delta`: the first round answers every contact of the
/// folder, page by page (`Prefer: odata.maxpagesize`, default 100); its last page carries a
/// `@odata.deltaLink`; a later round answers what changed since, removed contacts as
/// `{"id", "@removed": {"reason": "deleted"}}`. Tokens are bound to the folder they were issued for.
fn delta(
    emu: &Emulator,
    headers: &HeaderMap,
    user: Option<&str>,
    id: &str,
    path: &str,
    q: &HashMap<String, String>,
) -> Result<Value, GraphFailure> {
    let owner = contacts_owner(emu, headers, user)?;
    let scope = format!("{}|{id}", owner.id);
    let size = headers
        .get("prefer")
        .and_then(|v| v.to_str().ok())
        .and_then(|p| p.split(',').find_map(|x| x.trim().strip_prefix("odata.maxpagesize=")))
        .and_then(|n| n.trim().parse::<usize>().ok())
        .unwrap_or(100)
        .clamp(1, 1000);
    let expired = || {
        GraphFailure::new(
            StatusCode::GONE,
            "SyncStateNotFound",
            "The sync state generation is not found. Start a new synchronization without a delta token.",
        )
    };
    let mut state = emu.delta();
    let round_token = match q.get("$skiptoken") {
        Some(t) => t.clone(),
        None => {
            let wanted = folder_path(&owner, id)?;
            let now: Vec<Value> = all_contacts(&owner)
                .into_iter()
                .filter(|(p, _)| p.eq_ignore_ascii_case(&wanted))
                .map(|(_, c)| c)
                .collect();
            let snapshot: HashMap<String, String> = now.iter().map(|c| (c["id"].as_str().expect("id").to_string(), digest(c))).collect();
            let before = match q.get("$deltatoken") {
                None => HashMap::new(),
                Some(t) => state.seen.get(&format!("{scope}|{t}")).cloned().ok_or_else(expired)?,
            };
            let mut items: Vec<Value> = now
                .into_iter()
                .filter(|c| before.get(c["id"].as_str().expect("id")) != Some(&digest(c)))
                .collect();
            items.extend(
                before
                    .keys()
                    .filter(|k| !snapshot.contains_key(*k))
                    .map(|k| json!({"id": k, "@removed": {"reason": "deleted"}})),
            );
            let token = super::opaque();
            state.rounds.insert(
                token.clone(),
                Round {
                    items,
                    snapshot,
                    scope: scope.clone(),
                },
            );
            token
        }
    };
    let round = state
        .rounds
        .get_mut(&round_token)
        .filter(|r| r.scope == scope)
        .ok_or_else(expired)?;
    let take = size.min(round.items.len());
    let value: Vec<Value> = round.items.drain(..take).collect();
    let mut body = json!({"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Collection(contact)", "value": value});
    let link = |k: &str, v: &str| {
        let mut u = url::Url::parse(&format!("{}{path}", emu.base_url)).expect("valid");
        u.query_pairs_mut().append_pair(k, v);
        u.to_string()
    };
    if round.items.is_empty() {
        let done = state.rounds.remove(&round_token).expect("present");
        let token = super::opaque();
        state.seen.insert(format!("{scope}|{token}"), done.snapshot);
        body["@odata.deltaLink"] = json!(link("$deltatoken", &token));
    } else {
        body["@odata.nextLink"] = json!(link("$skiptoken", &round_token));
    }
    Ok(body)
}

/// The words of `text` for directory `$search`: split on spaces and symbols, on a change from
/// lower to upper case, and between letters and digits; words joined only by symbols are
/// also one word (`hello.world` → `hello`, `world`, `helloworld`).
pub fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for chunk in text.split_whitespace() {
        let mut words: Vec<String> = Vec::new();
        let mut cur = String::new();
        let mut prev: Option<char> = None;
        for c in chunk.chars() {
            let boundary = match prev {
                None => false,
                Some(p) => {
                    !c.is_alphanumeric()
                        || !p.is_alphanumeric()
                        || (p.is_lowercase() && c.is_uppercase())
                        || (p.is_alphabetic() != c.is_alphabetic())
                }
            };
            if boundary && !cur.is_empty() {
                words.push(std::mem::take(&mut cur));
            }
            if c.is_alphanumeric() {
                cur.push(c);
            }
            prev = Some(c);
        }
        if !cur.is_empty() {
            words.push(cur);
        }
        let joined: String = chunk.chars().filter(|c| c.is_alphanumeric()).collect();
        if words.len() > 1 && !joined.is_empty() {
            words.push(joined);
        }
        out.extend(words.into_iter().map(|w| w.to_lowercase()));
    }
    out
}

/// Directory `$search` on one property: tokenised on `displayName`, `startswith` elsewhere.
fn directory_match(property: &str, value: Option<&str>, term: &str) -> bool {
    let Some(value) = value else { return false };
    if property == "displayName" {
        let have = tokens(value);
        let want = tokens(term);
        !want.is_empty() && want.iter().all(|w| have.iter().any(|h| h.starts_with(w.as_str())))
    } else {
        value.to_lowercase().starts_with(&term.to_lowercase())
    }
}

/// `$search="displayName:ja" OR "mail:ja"`: clauses joined by `OR` or `AND`, each quoted,
/// `\"` and `\\` escaped inside.
fn parse_search(raw: &str) -> Result<Clauses, GraphFailure> {
    let syntax = || {
        GraphFailure::new(
            StatusCode::BAD_REQUEST,
            "Request_UnsupportedQuery",
            "Syntax error: the $search value must be \"property:term\" clauses joined by OR or AND.",
        )
    };
    let chars: Vec<char> = raw.trim().chars().collect();
    let mut clauses = Vec::new();
    let mut i = 0;
    let mut and = false;
    loop {
        if chars.get(i) != Some(&'"') {
            return Err(syntax());
        }
        i += 1;
        let mut clause = String::new();
        loop {
            match chars.get(i) {
                None => return Err(syntax()),
                Some('\\') => {
                    clause.push(*chars.get(i + 1).ok_or_else(syntax)?);
                    i += 2;
                }
                Some('"') => {
                    i += 1;
                    break;
                }
                Some(c) => {
                    clause.push(*c);
                    i += 1;
                }
            }
        }
        let (property, term) = clause.split_once(':').ok_or_else(syntax)?;
        clauses.push((property.trim().to_string(), term.to_string(), and));
        let start = i;
        while i < chars.len() && chars[i] != '"' {
            i += 1;
        }
        let between: String = chars[start..i].iter().collect();
        match between.trim() {
            "" if i == chars.len() => return Ok(clauses),
            "OR" => and = false,
            "AND" => and = true,
            _ => return Err(syntax()),
        }
    }
}

/// Evaluates parsed clauses left to right (`a OR b AND c` as `(a OR b) AND c`).
fn search_matches(clauses: &[(String, String, bool)], field: impl Fn(&str) -> Option<String>) -> bool {
    let mut result = false;
    for (i, (property, term, and)) in clauses.iter().enumerate() {
        let m = directory_match(property, field(property).as_deref(), term);
        result = if i == 0 {
            m
        } else if *and {
            result && m
        } else {
            result || m
        };
    }
    result
}

/// `$search` of a directory collection, which needs `ConsistencyLevel: eventual`, as does `$count`.
fn directory_search(headers: &HeaderMap, q: &HashMap<String, String>) -> Result<(Option<Clauses>, bool), GraphFailure> {
    let eventual = headers
        .get("consistencylevel")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("eventual"));
    let count = q.get("$count").is_some_and(|c| c == "true");
    if (q.contains_key("$search") || count) && !eventual {
        return Err(GraphFailure::new(
            StatusCode::BAD_REQUEST,
            "Request_UnsupportedQuery",
            "Request with $search or $count query parameter only works through MSGraph with a special request header: 'ConsistencyLevel: eventual'",
        ));
    }
    let top = number(q, "$top", 100)?;
    if top == 0 || top > 999 {
        return Err(GraphFailure::new(
            StatusCode::BAD_REQUEST,
            "Request_UnsupportedQuery",
            format!("Invalid page size specified: '{top}'. Must be between 1 and 999 inclusive."),
        ));
    }
    Ok((q.get("$search").map(|s| parse_search(s)).transpose()?, count))
}

/// Whether a word of `text` starts with `term`, or — Graph's fuzzy matching, for terms of
/// four letters and more — a word's prefix differs from it in one letter (`tiler` finds Tyler).
fn fuzzy_match(text: &str, term: &str) -> bool {
    let term: Vec<char> = term.to_lowercase().chars().collect();
    if term.is_empty() {
        return true;
    }
    let lower = text.to_lowercase();
    if lower.starts_with(&term.iter().collect::<String>()) {
        return true;
    }
    lower.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).any(|w| {
        let w: Vec<char> = w.chars().collect();
        if w.len() < term.len() {
            return false;
        }
        let differences = w.iter().zip(&term).filter(|(a, b)| a != b).count();
        differences == 0 || (term.len() >= 4 && differences == 1)
    })
}

/// `GET /v1.0/me/people`: the people the user works with and their personal contacts (the
/// mailbox), most relevant first; with `X-PeopleQuery-QuerySources: Mailbox,Directory` the
/// rest of the directory after them. A search matches every word of the query (a name or an
/// address, quoted), answers at most 250 and scores relevance below zero, as Graph does.
pub async fn people(State(emu): State<Emulator>, headers: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Response {
    let result = (|| {
        let claims = authorize(&emu, &headers, &["People.Read", "People.Read.All"], &["People.Read.All"])?;
        let me = mailbox_subject(&emu, &claims, None)?;
        let tenant = token_tenant(&emu, &claims);
        let search = q.get("$search").map(|s| {
            let s = s.trim();
            s.strip_prefix('"')
                .and_then(|x| x.strip_suffix('"'))
                .unwrap_or(s)
                .replace("\\\"", "\"")
        });
        if search.is_some() && q.contains_key("$skip") {
            return Err(bad_request("$skip is not supported with $search."));
        }
        let directory = headers
            .get("x-peoplequery-querysources")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|s| s.trim().eq_ignore_ascii_case("directory")));
        let person = |id: &str, name: &str, upn: Option<&str>, address: &str, score: f64, subclass: &str| {
            json!({"id": id, "displayName": name, "userPrincipalName": upn,
                   "scoredEmailAddresses": [{"address": address, "relevanceScore": score}],
                   "personType": {"class": "Person", "subclass": subclass}})
        };
        let member = |u: &SeedUser, score: f64| {
            u.mail
                .as_deref()
                .map(|m| person(&u.id, &u.display_name, Some(&u.user_principal_name), m, score, "OrganizationUser"))
        };
        let mut people: Vec<Value> = Vec::new();
        for (i, upn) in me.works_with.iter().enumerate() {
            if let Some(u) = tenant.users.iter().find(|u| u.user_principal_name.eq_ignore_ascii_case(upn)) {
                people.extend(member(u, 20.0 - i as f64));
            }
        }
        for (_, c) in all_contacts(&me) {
            if let Some(address) = c["emailAddresses"][0]["address"].as_str() {
                let name = c["displayName"].as_str().unwrap_or_default();
                people.push(person(
                    c["id"].as_str().unwrap_or_default(),
                    name,
                    None,
                    address,
                    10.0,
                    "PersonalContact",
                ));
            }
        }
        if directory {
            for u in tenant
                .users
                .iter()
                .filter(|u| u.id != me.id && !me.works_with.iter().any(|w| w.eq_ignore_ascii_case(&u.user_principal_name)))
            {
                people.extend(member(u, 1.0));
            }
        }
        if let Some(s) = &search {
            let words: Vec<&str> = s.split_whitespace().collect();
            people.retain(|p| {
                let name = p["displayName"].as_str().unwrap_or("");
                let address = p["scoredEmailAddresses"][0]["address"].as_str().unwrap_or("");
                words.iter().all(|w| fuzzy_match(name, w) || fuzzy_match(address, w))
            });
            // Search scores are negative; their order is the relevance order.
            for (i, p) in people.iter_mut().enumerate() {
                p["scoredEmailAddresses"][0]["relevanceScore"] = json!(-12.25 - i as f64 * 0.01);
            }
            people.truncate(250);
        }
        page(&emu, "/v1.0/me/people", &q, people, 10, 1000, "users('me')/people", false)
    })();
    respond(&headers, result)
}

/// `GET /v1.0/users`: the directory.
pub async fn users(State(emu): State<Emulator>, headers: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Response {
    let result = (|| {
        let claims = authorize(
            &emu,
            &headers,
            &["User.ReadBasic.All", "User.Read.All", "Directory.Read.All"],
            &["User.Read.All", "Directory.Read.All"],
        )?;
        let tenant = token_tenant(&emu, &claims);
        let (search, count) = directory_search(&headers, &q)?;
        let users: Vec<Value> = tenant
            .users
            .iter()
            .filter(|u| {
                search.as_ref().is_none_or(|clauses| {
                    search_matches(clauses, |p| match p {
                        "displayName" => Some(u.display_name.clone()),
                        "mail" => u.mail.clone(),
                        "userPrincipalName" => Some(u.user_principal_name.clone()),
                        _ => None,
                    })
                })
            })
            .map(|u| {
                json!({"id": u.id, "displayName": u.display_name, "mail": u.mail,
                       "userPrincipalName": u.user_principal_name,
                       "userType": u.user_type.as_deref().unwrap_or("Member")})
            })
            .collect();
        page(&emu, "/v1.0/users", &q, users, 100, 999, "users", count)
    })();
    respond(&headers, result)
}

/// `GET /v1.0/users/{id | userPrincipalName}` (user-get.md): one user of the token's tenant.
pub async fn user_get(
    State(emu): State<Emulator>,
    headers: HeaderMap,
    Path(user): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let result = (|| {
        let claims = authorize(
            &emu,
            &headers,
            &["User.ReadBasic.All", "User.Read.All", "Directory.Read.All"],
            &["User.Read.All", "Directory.Read.All"],
        )?;
        let tenant = token_tenant(&emu, &claims);
        let found = tenant
            .users
            .iter()
            .find(|u| u.id.eq_ignore_ascii_case(&user) || u.user_principal_name.eq_ignore_ascii_case(&user))
            .ok_or_else(|| {
                GraphFailure::new(
                    StatusCode::NOT_FOUND,
                    "Request_ResourceNotFound",
                    format!("Resource '{user}' does not exist or one of its queried reference-property objects are not present."),
                )
            })?;
        let full = json!({"id": found.id, "displayName": found.display_name, "mail": found.mail,
                          "userPrincipalName": found.user_principal_name,
                          "userType": found.user_type.as_deref().unwrap_or("Member")});
        let body = page(&emu, "", &q, vec![full], 1, 1, "users/$entity", false)?;
        Ok(body["value"][0].clone())
    })();
    respond(&headers, result)
}

/// `GET /v1.0/contacts`: the organisation's contacts (OrgContact.Read.All), searchable like users.
pub async fn org_contacts(State(emu): State<Emulator>, headers: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Response {
    let result = (|| {
        let claims = authorize(
            &emu,
            &headers,
            &["OrgContact.Read.All", "Directory.Read.All"],
            &["OrgContact.Read.All", "Directory.Read.All"],
        )?;
        let tenant = token_tenant(&emu, &claims);
        let (search, count) = directory_search(&headers, &q)?;
        let items = tenant
            .org_contacts
            .iter()
            .enumerate()
            .filter(|(_, c)| {
                search.as_ref().is_none_or(|clauses| {
                    search_matches(clauses, |p| match p {
                        "displayName" => Some(c.display_name.clone()),
                        "mail" => Some(c.mail.clone()),
                        _ => None,
                    })
                })
            })
            .map(|(i, c)| json!({"id": format!("{}-{i:04}", &tenant.id[..8]), "displayName": c.display_name, "mail": c.mail, "companyName": c.company}))
            .collect();
        page(&emu, "/v1.0/contacts", &q, items, 100, 999, "contacts", count)
    })();
    respond(&headers, result)
}

/// `PUT /_emulator/users/{user}/contacts` (test hook): replaces a user's personal contacts,
/// as the user editing them in Outlook would.
pub async fn replace_contacts(State(emu): State<Emulator>, Path(user): Path<String>, Json(contacts): Json<Vec<SeedContact>>) -> StatusCode {
    if emu.edit_user(&user, |u| u.contacts = contacts) {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenisation_follows_the_documented_examples() {
        assert_eq!(tokens("hello world"), ["hello", "world"]);
        assert_eq!(tokens("HelloWorld"), ["hello", "world", "helloworld"]);
        assert_eq!(tokens("HELLOworld"), ["helloworld"]);
        assert_eq!(tokens("hello.world"), ["hello", "world", "helloworld"]);
        assert_eq!(tokens("hello123world"), ["hello", "123", "world", "hello123world"]);
    }

    #[test]
    fn search_clauses_parse_with_escapes() {
        let c = parse_search(r#""displayName:ja" OR "mail:ja""#).unwrap_or_else(|_| panic!("parses"));
        assert_eq!(c.len(), 2);
        assert_eq!((c[1].0.as_str(), c[1].1.as_str(), c[1].2), ("mail", "ja", false));
        let c = parse_search(r#""displayName:say \"hi\" \\ OR x""#).unwrap_or_else(|_| panic!("parses"));
        assert_eq!(c[0].1, r#"say "hi" \ OR x"#);
        assert!(parse_search("displayName:ja").is_err());
        assert!(parse_search(r#""displayName:ja" XOR "mail:ja""#).is_err());
    }

    #[test]
    fn fuzzy_matching_finds_one_letter_off() {
        assert!(fuzzy_match("Tyler Lee", "tiler"));
        assert!(fuzzy_match("tylerle@example.com", "tylerle"));
        assert!(!fuzzy_match("Tyler Lee", "tx"));
    }
}
