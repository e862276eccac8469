//! The local index of a mailbox's personal contacts, in every folder. Graph cannot search
//! personal contacts, and walking folders on each keystroke would spend the mailbox's 4
//! concurrent requests, so each folder is kept in the database and refreshed with
//! `contacts/delta` from its stored `deltaLink` (microsoft-graph-docs-contrib
//! `api-reference/v1.0/api/contact-delta.md`, `concepts/delta-query-overview.md`).
//!
//! The default Contacts folder is not listed by `/contactFolders` (Microsoft's known issue);
//! its id comes from a contact's `parentFolderId`. One refresh runs at a time per mailbox;
//! searches wait for the first one (within their budget) and never for a later one.

use super::SourceStatus;
use super::lookup::{Target, failure, store_failure as internal};
use crate::graph::{Graph, GraphError};
use crate::store::Store;
use crate::store::contacts::{IndexedContact, IndexedFolder};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Most folders walked in one mailbox: a bound on what one refresh costs.
const MAX_FOLDERS: usize = 500;

type Outcome = Option<Result<(), SourceStatus>>;

pub struct Index {
    store: Store,
    graph: Arc<Graph>,
    refresh_after: Duration,
    spawner: crate::workers::Spawner,
    running: Mutex<HashMap<String, watch::Receiver<Outcome>>>,
}

impl Index {
    pub fn new(store: Store, graph: Arc<Graph>, refresh_after: Duration, spawner: crate::workers::Spawner) -> Self {
        Self {
            store,
            graph,
            refresh_after,
            spawner,
            running: Mutex::default(),
        }
    }

    /// Makes the index of `target` usable: the first time, a refresh the caller waits for;
    /// afterwards a refresh in the background when it is older than `refresh_after`.
    pub async fn ensure(self: &Arc<Self>, target: &Target) -> Result<(), SourceStatus> {
        let (folders, oldest) = self.store.contact_index(&target.owner).await.map_err(|e| internal(&e))?;
        let stale = oldest.is_none_or(|ms| {
            chrono::Utc::now().timestamp_millis() - ms > i64::try_from(self.refresh_after.as_millis()).unwrap_or(i64::MAX)
        });
        if !stale {
            return Ok(());
        }
        let mut rx = self.refresh(target);
        if !folders.is_empty() {
            // An index to answer from: this search does not wait for the refresh.
            return Ok(());
        }
        let done = rx.wait_for(Option::is_some).await.map_err(|_| internal(&"the refresh stopped"))?;
        done.clone().expect("waited for an outcome")
    }

    /// Starts a refresh of `target` unless one is running; answers its outcome's channel.
    pub fn refresh(self: &Arc<Self>, target: &Target) -> watch::Receiver<Outcome> {
        let mut running = self.running.lock().expect("index lock");
        if let Some(rx) = running.get(&target.owner)
            && rx.borrow().is_none()
        {
            return rx.clone();
        }
        let (tx, rx) = watch::channel(None);
        running.insert(target.owner.clone(), rx.clone());
        let (this, target) = (self.clone(), target.clone());
        self.spawner.spawn("contacts-index", async move {
            let outcome = this.run(&target).await;
            if let Err(e) = &outcome {
                tracing::warn!(owner = %target.owner, status = ?e, "indexing personal contacts failed");
            }
            let _ = tx.send(Some(outcome));
            this.running.lock().expect("index lock").remove(&target.owner);
        });
        rx
    }

    async fn get(&self, target: &Target, url: &str) -> Result<Value, SourceStatus> {
        self.graph
            .get_once(&target.principal, true, |h| h.get(url).header("Prefer", "odata.maxpagesize=200"))
            .await
            .map_err(|e| failure(super::Source::Personal, target.application, e))
    }

    /// Walks the folders and brings each one up to date.
    async fn run(&self, target: &Target) -> Result<(), SourceStatus> {
        let root = &target.root;
        let first = self.get(target, &format!("{root}/contacts?$top=1&$select=parentFolderId")).await?;
        let mut folders: Vec<(String, String)> = Vec::new();
        if let Some(id) = first["value"][0]["parentFolderId"].as_str() {
            folders.push((id.to_string(), "Contacts".to_string()));
        }
        let mut queue = vec![(format!("{root}/contactFolders?$top=100"), String::new())];
        while let Some((mut url, parent)) = queue.pop() {
            loop {
                let page = self.get(target, &url).await?;
                for f in page["value"].as_array().into_iter().flatten() {
                    let (Some(id), Some(name)) = (f["id"].as_str(), f["displayName"].as_str()) else {
                        continue;
                    };
                    let path = if parent.is_empty() {
                        name.to_string()
                    } else {
                        format!("{parent}/{name}")
                    };
                    if folders.len() >= MAX_FOLDERS {
                        break;
                    }
                    folders.push((id.to_string(), path.clone()));
                    let child = crate::graph::encode_segment(id);
                    queue.push((format!("{root}/contactFolders/{child}/childFolders?$top=100"), path));
                }
                match page["@odata.nextLink"].as_str() {
                    Some(next) if folders.len() < MAX_FOLDERS => url = next.to_string(),
                    _ => break,
                }
            }
        }
        let (known, _) = self.store.contact_index(&target.owner).await.map_err(|e| internal(&e))?;
        let links: HashMap<&str, Option<&str>> = known.iter().map(|f| (f.folder_id.as_str(), f.delta_link.as_deref())).collect();
        for (id, name) in &folders {
            let link = links.get(id.as_str()).copied().flatten();
            self.sync_folder(target, id, name, link).await?;
        }
        let keep: Vec<String> = folders.into_iter().map(|(id, _)| id).collect();
        self.store
            .prune_contact_folders(&target.owner, &keep)
            .await
            .map_err(|e| internal(&e))
    }

    /// One folder's delta round, from its `deltaLink` (a full round without one, or when
    /// Graph no longer knows the sync state: `410 Gone`).
    async fn sync_folder(&self, target: &Target, id: &str, name: &str, link: Option<&str>) -> Result<(), SourceStatus> {
        let initial = format!(
            "{}/contactFolders/{}/contacts/delta?$select=displayName,emailAddresses,companyName",
            target.root,
            crate::graph::encode_segment(id)
        );
        let mut full = link.is_none();
        let mut url = link.map_or_else(|| initial.clone(), String::from);
        let mut upserts: Vec<IndexedContact> = Vec::new();
        let mut removed: Vec<String> = Vec::new();
        let delta_link = loop {
            let page = match self
                .graph
                .get_once(&target.principal, true, |h| h.get(&url).header("Prefer", "odata.maxpagesize=200"))
                .await
            {
                Ok(p) => p,
                Err(GraphError::Api { status: 410, .. }) if !full => {
                    (full, url) = (true, initial.clone());
                    upserts.clear();
                    removed.clear();
                    continue;
                }
                Err(e) => return Err(failure(super::Source::Personal, target.application, e)),
            };
            for c in page["value"].as_array().into_iter().flatten() {
                let Some(contact_id) = c["id"].as_str() else { continue };
                // A removed contact, and a changed one (whose old addresses go first).
                removed.push(contact_id.to_string());
                if c.get("@removed").is_some() {
                    continue;
                }
                let mut seen = Vec::new();
                for a in c["emailAddresses"].as_array().into_iter().flatten() {
                    let Some(address) = a["address"].as_str().map(str::trim).filter(|a| a.contains('@')) else {
                        continue;
                    };
                    let key = super::normalise(address);
                    if seen.contains(&key) {
                        continue;
                    }
                    seen.push(key);
                    upserts.push(IndexedContact {
                        contact_id: contact_id.to_string(),
                        folder_id: id.to_string(),
                        name: c["displayName"]
                            .as_str()
                            .filter(|n| !n.trim().is_empty())
                            .or(a["name"].as_str())
                            .unwrap_or(address)
                            .to_string(),
                        address: address.to_string(),
                        company: c["companyName"].as_str().map(String::from),
                    });
                }
            }
            if let Some(next) = page["@odata.nextLink"].as_str() {
                url = next.to_string();
            } else {
                break page["@odata.deltaLink"].as_str().map(String::from);
            }
        };
        let folder = IndexedFolder {
            folder_id: id.to_string(),
            name: name.to_string(),
            delta_link,
        };
        self.store
            .apply_contact_delta(&target.owner, &folder, full, &upserts, &removed)
            .await
            .map_err(|e| internal(&e))
    }
}
