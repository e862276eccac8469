//! One search: the five sources at once, each bounded by the budget, answered as they come.
//!
//! - `personal`: the local index ([`super::index`]);
//! - `people`: `/me/people?$search="…"` with `X-PeopleQuery-QuerySources: Mailbox,Directory`
//!   (user-list-people.md, people-example.md) — ranked by its order, not `relevanceScore`,
//!   which is negative when searching; delegated only;
//! - `directory`: `/users?$search="displayName:…" OR "mail:…"` with `ConsistencyLevel:
//!   eventual` (aad-advanced-queries.md); the address is `mail`, never a guest's `#EXT#`
//!   principal name; users without a mailbox are skipped;
//! - `org_contacts`: `/contacts` with the same search;
//! - `erp`: the company's ERP contacts, in the database.
//!
//! A 429 is reported with its `Retry-After` and the source skipped until then; a newer
//! search for the same mailbox ends an older one still waiting (its type-ahead moved on),
//! which releases the older one's Graph requests.

use super::index::Index;
use super::{Contact, ErpFacts, Found, Kind, SearchAnswer, Source, SourceError, SourceStatus, merge};
use crate::domain::CompanyCode;
use crate::error::ApiError;
use crate::graph::{Graph, GraphError, Principal};
use crate::store::Store;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Whose mailbox and directory a search reads.
#[derive(Debug, Clone)]
pub struct Target {
    /// The index key: `op:CODE` for an operator, `app:TENANT:mailbox` for an application lookup.
    pub owner: String,
    pub principal: Principal,
    /// `{graph}/v1.0`.
    pub base: String,
    /// `{base}/me` or `{base}/users/{mailbox}`.
    pub root: String,
    /// An application lookup (no person signed in).
    pub application: bool,
    /// The operator, whose mail through officebridge counts as relevance.
    pub operator: Option<String>,
}

/// One search's question.
#[derive(Debug, Clone)]
pub struct Query {
    pub text: String,
    pub limit: usize,
    pub company: Option<CompanyCode>,
}

/// How many entries each Graph source is asked for: enough to merge, bounded.
const PER_SOURCE: usize = 25;

pub struct Lookup {
    store: Store,
    graph: Arc<Graph>,
    budget: Duration,
    index: Arc<Index>,
    /// Per mailbox and source, until when a 429 told us to stay away.
    throttled: Mutex<HashMap<(String, Source), Instant>>,
    /// Per mailbox, the newest search's number.
    current: Mutex<HashMap<String, watch::Sender<u64>>>,
    /// Application lookups' mailboxes found in their tenant, and when.
    checked: Mutex<HashMap<String, Instant>>,
    first_index: Duration,
}

/// How long a mailbox found in its tenant is believed to stay there.
const CHECKED_FOR: Duration = Duration::from_secs(600);

impl Lookup {
    pub fn new(store: Store, graph: Arc<Graph>, settings: &crate::config::ContactsSettings, spawner: crate::workers::Spawner) -> Self {
        let index = Index::new(store.clone(), graph.clone(), Duration::from_secs(settings.refresh_secs), spawner);
        Self {
            store,
            graph,
            budget: Duration::from_millis(settings.source_budget_ms),
            index: Arc::new(index),
            throttled: Mutex::default(),
            current: Mutex::default(),
            checked: Mutex::default(),
            first_index: Duration::from_millis(settings.first_index_ms),
        }
    }

    /// Refuses an application lookup of a mailbox that is not a user of `tenant` (a
    /// directory read, remembered for a while). Other failures are left to the sources,
    /// which report them.
    pub async fn check_mailbox(
        &self,
        who: &Principal,
        base: &str,
        mailbox: &str,
        tenant: &crate::domain::TenantCode,
    ) -> Result<(), ApiError> {
        let key = format!("{tenant}|{}", mailbox.to_lowercase());
        if self
            .checked
            .lock()
            .expect("checked lock")
            .get(&key)
            .is_some_and(|at| at.elapsed() < CHECKED_FOR)
        {
            return Ok(());
        }
        let url = format!("{base}/users/{}?$select=id", crate::graph::encode_segment(mailbox));
        match self.graph.get_once(who, false, |h| h.get(&url)).await {
            Ok(_) => {
                let mut checked = self.checked.lock().expect("checked lock");
                checked.retain(|_, at| at.elapsed() < CHECKED_FOR);
                checked.insert(key, Instant::now());
                Ok(())
            }
            Err(GraphError::Api { status: 404, .. }) => Err(ApiError::validation(
                "mailbox",
                format!("{mailbox} is not a user of tenant {tenant}"),
            )),
            Err(GraphError::Token(e)) => Err(e.into()),
            Err(_) => Ok(()),
        }
    }

    /// The index of `target`'s personal contacts, built first if it never was (browsing
    /// needs all of it, not a budget's worth).
    pub async fn ensure_index(&self, target: &Target) -> Result<(), ApiError> {
        match tokio::time::timeout(self.first_index, self.index.ensure(target)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(SourceStatus::Error { error })) => Err(ApiError::Upstream {
                status: axum::http::StatusCode::BAD_GATEWAY,
                message: error.message,
            }),
            Ok(Err(SourceStatus::Throttled { retry_after })) => Err(ApiError::Unavailable(format!(
                "Microsoft Graph throttled the mailbox: try again in {retry_after} seconds"
            ))),
            Ok(Err(_)) | Err(_) => Err(ApiError::Unavailable(
                "the personal contacts are still being indexed: try again in a few seconds".into(),
            )),
        }
    }

    /// Runs every source at once and answers within the budget.
    pub async fn search(&self, target: &Target, query: &Query) -> SearchAnswer {
        let deadline = tokio::time::Instant::now() + self.budget;
        let (mine, mut newer) = self.begin(&target.owner);
        let mut sources: BTreeMap<Source, SourceStatus> = BTreeMap::new();
        let mut pending = futures_util::stream::FuturesUnordered::new();
        for source in Source::ALL {
            if let Some(status) = self.skip(target, query, source) {
                sources.insert(source, status);
                continue;
            }
            let fut = self.run(target, query, source);
            pending.push(async move { (source, fut.await) });
        }
        let mut found: Vec<Found> = Vec::new();
        loop {
            tokio::select! {
                next = pending.next() => match next {
                    None => break,
                    Some((source, Ok(items))) => {
                        sources.insert(source, SourceStatus::Ok { count: items.len() });
                        found.extend(items);
                    }
                    Some((source, Err(status))) => {
                        if let SourceStatus::Throttled { retry_after } = status {
                            self.throttled
                                .lock()
                                .expect("throttle lock")
                                .insert((target.owner.clone(), source), Instant::now() + Duration::from_secs(retry_after));
                        }
                        sources.insert(source, status);
                    }
                },
                _ = tokio::time::sleep_until(deadline) => break,
                _ = newer.wait_for(|n| *n != mine) => break,
            }
        }
        // Whatever has not answered is dropped here, its requests with it.
        drop(pending);
        let partial = Source::ALL.iter().any(|s| !sources.contains_key(s));
        for s in Source::ALL {
            sources.entry(s).or_insert(SourceStatus::Timeout);
        }
        let sends = match &target.operator {
            Some(op) => self.store.recipient_counts(op).await.unwrap_or_default(),
            None => HashMap::new(),
        };
        let results: Vec<Contact> = merge(&query.text, found, &sends, query.limit);
        SearchAnswer {
            query: query.text.clone(),
            partial,
            sources,
            results,
        }
    }

    /// Numbers this search for its mailbox; the receiver sees any newer one.
    fn begin(&self, owner: &str) -> (u64, watch::Receiver<u64>) {
        let mut current = self.current.lock().expect("current lock");
        let tx = current.entry(owner.to_string()).or_insert_with(|| watch::channel(0).0);
        tx.send_modify(|n| *n += 1);
        (*tx.borrow(), tx.subscribe())
    }

    /// The status of a source not asked this time.
    fn skip(&self, target: &Target, query: &Query, source: Source) -> Option<SourceStatus> {
        match source {
            Source::Erp if query.company.is_none() => return Some(SourceStatus::Disabled),
            Source::People if target.application => return Some(SourceStatus::Unsupported),
            _ => {}
        }
        let mut throttled = self.throttled.lock().expect("throttle lock");
        let key = (target.owner.clone(), source);
        match throttled.get(&key) {
            Some(until) if *until > Instant::now() => Some(SourceStatus::Throttled {
                retry_after: until.saturating_duration_since(Instant::now()).as_secs().max(1),
            }),
            Some(_) => {
                throttled.remove(&key);
                None
            }
            None => None,
        }
    }

    fn run<'a>(&'a self, target: &'a Target, query: &'a Query, source: Source) -> BoxFuture<'a, Result<Vec<Found>, SourceStatus>> {
        match source {
            Source::Personal => Box::pin(self.personal(target, query)),
            Source::People => Box::pin(self.people(target, query)),
            Source::Directory => Box::pin(self.directory(target, query, false)),
            Source::OrgContacts => Box::pin(self.directory(target, query, true)),
            Source::Erp => Box::pin(self.erp(query)),
        }
    }

    async fn personal(&self, target: &Target, query: &Query) -> Result<Vec<Found>, SourceStatus> {
        self.index.ensure(target).await?;
        let rows = self
            .store
            .search_personal_contacts(&target.owner, &query.text, PER_SOURCE)
            .await
            .map_err(|e| store_failure(&e))?;
        Ok(rows
            .into_iter()
            .map(|c| Found {
                address: c.address,
                name: c.name,
                kind: Kind::PersonalContact,
                source: Source::Personal,
                relevance: None,
                erp: None,
            })
            .collect())
    }

    async fn people(&self, target: &Target, query: &Query) -> Result<Vec<Found>, SourceStatus> {
        let url = format!("{}/people", target.root);
        let search = format!("\"{}\"", escape(&query.text));
        let top = PER_SOURCE.to_string();
        let page = self
            .graph
            .get_once(&target.principal, true, |h| {
                h.get(&url)
                    .query(&[
                        ("$search", search.as_str()),
                        ("$top", top.as_str()),
                        ("$select", "displayName,scoredEmailAddresses,personType,userPrincipalName"),
                    ])
                    .header("X-PeopleQuery-QuerySources", "Mailbox,Directory")
            })
            .await
            .map_err(|e| failure(Source::People, target.application, e))?;
        Ok(items(&page)
            .enumerate()
            .filter_map(|(i, p)| {
                let address = p["scoredEmailAddresses"][0]["address"].as_str()?.to_string();
                let kind = match p["personType"]["subclass"].as_str() {
                    Some("OrganizationUser") if is_guest(p) => Kind::Guest,
                    Some("OrganizationUser") => Kind::User,
                    Some("PersonalContact") => Kind::PersonalContact,
                    Some("OrganizationContact") => Kind::OrgContact,
                    _ => Kind::External,
                };
                Some(Found {
                    address,
                    name: p["displayName"].as_str().unwrap_or_default().to_string(),
                    kind,
                    source: Source::People,
                    relevance: Some(i),
                    erp: None,
                })
            })
            .collect())
    }

    /// The directory's users (`org == false`) or its organisational contacts.
    async fn directory(&self, target: &Target, query: &Query, org: bool) -> Result<Vec<Found>, SourceStatus> {
        let (path, source, select) = if org {
            ("contacts", Source::OrgContacts, "id,displayName,mail")
        } else {
            ("users", Source::Directory, "id,displayName,mail,userPrincipalName,userType")
        };
        let url = format!("{}/{path}", target.base);
        let term = escape(&query.text);
        let search = format!("\"displayName:{term}\" OR \"mail:{term}\"");
        let top = PER_SOURCE.to_string();
        let page = self
            .graph
            .get_once(&target.principal, false, |h| {
                h.get(&url)
                    .query(&[
                        ("$search", search.as_str()),
                        ("$count", "true"),
                        ("$top", top.as_str()),
                        ("$select", select),
                    ])
                    .header("ConsistencyLevel", "eventual")
            })
            .await
            .map_err(|e| failure(source, target.application, e))?;
        Ok(items(&page)
            .filter_map(|u| {
                // No mailbox, no recipient; a guest's principal name is not an address.
                let address = u["mail"].as_str().filter(|m| m.contains('@'))?.to_string();
                let kind = match (org, is_guest(u)) {
                    (true, _) => Kind::OrgContact,
                    (false, true) => Kind::Guest,
                    (false, false) => Kind::User,
                };
                Some(Found {
                    address,
                    name: u["displayName"].as_str().unwrap_or_default().to_string(),
                    kind,
                    source,
                    relevance: None,
                    erp: None,
                })
            })
            .collect())
    }

    async fn erp(&self, query: &Query) -> Result<Vec<Found>, SourceStatus> {
        let company = query.company.as_ref().expect("skipped without a company");
        let rows = self
            .store
            .search_erp_contacts(company, &query.text, PER_SOURCE)
            .await
            .map_err(|e| store_failure(&e))?;
        Ok(rows
            .into_iter()
            .map(|c| Found {
                address: c.address,
                name: c.name,
                kind: Kind::Erp,
                source: Source::Erp,
                relevance: None,
                erp: Some(ErpFacts {
                    company: company.to_string(),
                    key: c.key,
                    account: c.account,
                    role: c.role,
                }),
            })
            .collect())
    }
}

fn items(page: &Value) -> impl Iterator<Item = &Value> {
    page["value"].as_array().into_iter().flatten()
}

fn is_guest(u: &Value) -> bool {
    u["userType"].as_str().is_some_and(|t| t.eq_ignore_ascii_case("guest"))
        || u["userPrincipalName"].as_str().is_some_and(|p| p.contains("#EXT#"))
}

/// The query inside a quoted `$search` value: `\` and `"` escaped, so quotes, `OR` and
/// `topic:` in what the operator typed stay text and cannot change the search's meaning.
pub fn escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The database failed under a source (or the index): logged, reported without detail.
pub fn store_failure(e: &dyn std::fmt::Display) -> SourceStatus {
    tracing::error!(error = %e, "a contact source could not read or write the database");
    SourceStatus::Error {
        error: SourceError {
            kind: "internal",
            status: None,
            code: None,
            message: "the database could not be read".into(),
        },
    }
}

/// A Graph failure as a source's status, naming the permission when Graph refused one.
pub fn failure(source: Source, application: bool, e: GraphError) -> SourceStatus {
    match e {
        GraphError::Api {
            status: 429, retry_after, ..
        } => SourceStatus::Throttled {
            retry_after: retry_after.map_or(30, |d| d.as_secs_f64().ceil() as u64).max(1),
        },
        GraphError::Api { status, code, message, .. } => {
            let kind = match status {
                400 => "bad_request",
                401 => "unauthorized",
                403 => "permission_denied",
                404 => "not_found",
                500..=599 => "unavailable",
                _ => "graph_error",
            };
            let what = source.describe();
            let message = if status == 403 && message.contains("Access to OData is disabled") {
                format!("the {what} could not be searched: the mailbox is outside the app's application access policy: {message}")
            } else if status == 403 {
                format!(
                    "the {what} could not be searched: the app registration lacks {} ({} permission, with consent): {message}",
                    source.permission(application),
                    if application { "application" } else { "delegated" }
                )
            } else {
                format!("the {what} could not be searched: {message}")
            };
            SourceStatus::Error {
                error: SourceError {
                    kind,
                    status: Some(status),
                    code: Some(code),
                    message,
                },
            }
        }
        GraphError::Transport(m) => SourceStatus::Error {
            error: SourceError {
                kind: "unreachable",
                status: None,
                code: None,
                message: format!("Microsoft Graph could not be reached: {m}"),
            },
        },
        other => SourceStatus::Error {
            error: SourceError {
                kind: "graph_error",
                status: None,
                code: None,
                message: other.to_string(),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_text_is_escaped_inside_its_quotes() {
        assert_eq!(escape(r#"a" OR "mail:x"#), r#"a\" OR \"mail:x"#);
        assert_eq!(escape(r"back\slash"), r"back\\slash");
    }

    #[test]
    fn a_refusal_names_the_permission_and_a_429_its_wait() {
        let denied = failure(
            Source::Directory,
            false,
            GraphError::Api {
                status: 403,
                code: "Authorization_RequestDenied".into(),
                message: "Insufficient privileges to complete the operation.".into(),
                request_id: None,
                retry_after: None,
            },
        );
        let SourceStatus::Error { error } = denied else {
            panic!("an error")
        };
        assert_eq!((error.kind, error.status), ("permission_denied", Some(403)));
        assert!(error.message.contains("User.ReadBasic.All"), "{}", error.message);
        let throttled = failure(
            Source::People,
            false,
            GraphError::Api {
                status: 429,
                code: "TooManyRequests".into(),
                message: "slow down".into(),
                request_id: None,
                retry_after: Some(Duration::from_millis(2500)),
            },
        );
        assert_eq!(throttled, SourceStatus::Throttled { retry_after: 3 });
    }
}
