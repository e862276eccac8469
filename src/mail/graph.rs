//! Delivery through Microsoft Graph (`graph_delegate`: `/me` with the operator's token;
//! `graph_direct`: `/users/{from}` with the application token), in steps each committed
//! before the next network call, so a message found half-way after a crash can be finished
//! without sending it twice. Graph has no idempotency key (`sendMail` answers 202 without
//! an id), so the message is made findable instead:
//!
//! 1. a draft is created carrying a single-value extended property whose value is the outbox
//!    id (api/singlevaluelegacyextendedproperty-post-singlevalueextendedproperties.md), with
//!    `Prefer: IdType="ImmutableId"` so its id survives the move to Sent Items
//!    (concepts/outlook-immutable-id.md, "Immutable ID with sending mail");
//! 2. attachments under 3 MB are posted to it, larger ones go through an upload session in
//!    ranges of at most 4 MB without an `Authorization` header
//!    (api/attachment-createuploadsession.md, concepts/outlook-large-attachments.md);
//! 3. "submitting" is committed, then the draft is sent (api/message-send.md, 202).
//!
//! Recovery: a message whose draft was requested but not recorded has its orphan drafts
//! found by the property and deleted before a new one is made; a message found
//! "submitting" is looked up in Sent Items by the property
//! (api/singlevaluelegacyextendedproperty-get.md, `$filter` with `Any`), allowing Exchange a
//! grace period to file the copy (concepts/outlook-things-to-know-about-send-mail.md); a
//! draft still in Drafts after it is sent again; neither is `failed` for a person to look at.

use super::outbox::{CrashPoint, Failure, Outbox, RunError};
use crate::domain::{OperatorCode, ProfileName, Recipient, StoredMessage};
use crate::graph::{GraphError, Principal, base_url, encode_segment};
use crate::identity::oauth::ClientApp;
use crate::store::blobs::now_ms;
use crate::store::models::SettingsView;
use crate::store::outbox::{Attachment, Claimed, Finish, Outcome, Reason, Step};
use base64::Engine;
use serde_json::{Value, json};
use std::time::Duration;

/// Our property set's GUID: the extended property is `String {GUID} Name OfficebridgeOutboxId`.
pub const PROPERTY_SET: &str = "f2a7c5e1-6b0d-4c3e-9a8f-1d2e3c4b5a69";
/// Attachments of this size or more go through an upload session.
pub const SMALL_ATTACHMENT: u64 = 3 * 1024 * 1024;
/// The largest range one upload-session request carries.
pub const FRAGMENT: u64 = 4 * 1024 * 1024;
const PREFER_IMMUTABLE: (&str, &str) = ("Prefer", "IdType=\"ImmutableId\"");

pub fn property_id() -> String {
    format!("String {{{PROPERTY_SET}}} Name OfficebridgeOutboxId")
}

/// The Graph message resource for a stored message (resources/message.md). Graph keeps one
/// body per message: the HTML one when both are given.
pub fn message_json(m: &StoredMessage, outbox_id: &str) -> Value {
    let list = |rs: &[Recipient]| -> Value {
        rs.iter()
            .map(|r| match &r.name {
                Some(name) => json!({"emailAddress": {"address": r.address.as_str(), "name": name}}),
                None => json!({"emailAddress": {"address": r.address.as_str()}}),
            })
            .collect()
    };
    let body = match (&m.html, &m.text) {
        (Some(html), _) => json!({"contentType": "HTML", "content": html}),
        (None, Some(text)) => json!({"contentType": "Text", "content": text}),
        (None, None) => json!({"contentType": "Text", "content": ""}),
    };
    json!({
        "subject": m.subject,
        "body": body,
        "toRecipients": list(&m.to),
        "ccRecipients": list(&m.cc),
        "bccRecipients": list(&m.bcc),
        "replyTo": list(&m.reply_to),
        "importance": m.importance.as_str(),
        "singleValueExtendedProperties": [{"id": property_id(), "value": outbox_id}],
    })
}

/// One Graph delivery: whose token, which mailbox.
pub struct GraphDelivery {
    who: Principal,
    /// `{graph}/v1.0/me` or `{graph}/v1.0/users/{from}`.
    base: String,
    /// The mailbox the upload budget counts against.
    mailbox: String,
}

type Outcome2 = Result<Finish, Failure>;

impl GraphDelivery {
    /// Reads the profile and tenant the message is sent through.
    pub async fn prepare(ob: &Outbox, claim: &Claimed) -> Result<Self, Failure> {
        Self::for_profile(ob, &claim.profile, claim.operator.as_deref()).await
    }

    /// The delivery of profile `profile` (as `operator` for `graph_delegate`).
    pub async fn for_profile(ob: &Outbox, profile: &str, operator: Option<&str>) -> Result<Self, Failure> {
        let name = ProfileName::parse(profile).map_err(Failure::permanent)?;
        let profile = ob.store.get_profile(&name).await.map_err(Failure::from_store)?;
        match &profile.settings {
            SettingsView::GraphDelegate(s) => {
                let Some(op) = operator else {
                    return Err(Failure::permanent(
                        "a graph_delegate message needs the operator it was queued for".into(),
                    ));
                };
                let op = OperatorCode::parse(op).map_err(Failure::permanent)?;
                let tenant = ob.store.get_tenant(&s.tenant).await.map_err(Failure::from_store)?;
                Ok(Self {
                    base: format!("{}/me", base_url(&tenant)),
                    mailbox: format!("op:{op}"),
                    who: Principal::Operator(op),
                })
            }
            SettingsView::GraphDirect { settings, .. } => {
                let tenant = ob.store.get_tenant(&settings.tenant).await.map_err(Failure::from_store)?;
                let from = settings.from.as_str().to_string();
                // The profile's own app registration, when it names one, holds the permission.
                let app = match &settings.client_id {
                    None => None,
                    Some(id) => Some(ClientApp {
                        client_id: id.as_str().to_string(),
                        secret: ob.store.profile_secret(&name).await.map_err(Failure::from_store)?,
                    }),
                };
                Ok(Self {
                    base: format!("{}/users/{}", base_url(&tenant), encode_segment(&from)),
                    mailbox: from.clone(),
                    who: Principal::App {
                        tenant: settings.tenant.clone(),
                        mailbox: from,
                        app,
                    },
                })
            }
            SettingsView::Smtp { .. } => Err(Failure::permanent(format!(
                "profile {name} no longer sends through Microsoft Graph"
            ))),
        }
    }

    /// Sends `message` at once with `sendMail` (no draft, no outbox), for a profile's test;
    /// answers Graph's `request-id`.
    pub async fn send_now(&self, ob: &Outbox, message: &StoredMessage) -> Result<String, Failure> {
        let mut m = message_json(message, &uuid::Uuid::new_v4().to_string());
        m.as_object_mut().expect("a message object").remove("singleValueExtendedProperties");
        let body = json!({"message": m, "saveToSentItems": true});
        let url = format!("{}/sendMail", self.base);
        let resp = self.call(ob, |http| http.post(&url).json(&body)).await?;
        Ok(resp
            .headers()
            .get("request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none given")
            .to_string())
    }

    /// Who the delivery acts as, for a profile's test report.
    pub fn principal(&self) -> &Principal {
        &self.who
    }

    async fn call(&self, ob: &Outbox, build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder) -> Result<reqwest::Response, Failure> {
        // Never replayed inside the call: the outbox decides about retries, step by step.
        ob.graph.send(&self.who, false, build).await.map_err(|e| Failure::from_graph(&e))
    }

    async fn json(&self, ob: &Outbox, build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder) -> Result<Value, Failure> {
        let resp = self.call(ob, build).await?;
        resp.json::<Value>()
            .await
            .map_err(|e| Failure::from_graph(&GraphError::Transport(e.without_url().to_string())))
    }

    /// The messages of a well-known folder carrying our property with this outbox id.
    async fn find(&self, ob: &Outbox, folder: &str, outbox_id: &str) -> Result<Vec<Value>, Failure> {
        let filter = format!(
            "singleValueExtendedProperties/Any(ep: ep/id eq '{}' and ep/value eq '{outbox_id}')",
            property_id()
        );
        let url = format!("{}/mailFolders/{folder}/messages", self.base);
        let found = self
            .json(ob, |http| {
                http.get(&url)
                    .header(PREFER_IMMUTABLE.0, PREFER_IMMUTABLE.1)
                    .query(&[("$filter", filter.as_str()), ("$select", "id,internetMessageId,isDraft")])
            })
            .await?;
        Ok(found["value"].as_array().cloned().unwrap_or_default())
    }

    pub async fn run(&self, ob: &Outbox, claim: &Claimed, owner: &str) -> Result<Outcome2, RunError> {
        let lease = ob.policy.lease_ms;
        let mut draft = claim.draft_id.clone();
        let mut imid = claim.internet_message_id.clone();
        let mut attachments = claim.attachments.clone();
        let mut step = claim.step;
        if step == Step::Submitting {
            match self.confirm(ob, claim).await {
                Ok(Some(finish)) => return Ok(Ok(finish)),
                Ok(None) => step = Step::Draft, // still a draft after the grace: send it again
                Err(f) => return Ok(Err(f)),
            }
        }
        if matches!(step, Step::New | Step::Drafting) {
            if step == Step::Drafting {
                // The create may have happened: remove what it left before making another.
                let orphans = match self.find(ob, "drafts", &claim.id).await {
                    Ok(o) => o,
                    Err(f) => return Ok(Err(f)),
                };
                for o in orphans {
                    match self.delete_draft(ob, o["id"].as_str().unwrap_or_default()).await {
                        Ok(()) | Err(Failure::Permanent(_)) => {} // already gone is gone
                        Err(f) => return Ok(Err(f)),
                    }
                }
                ob.store
                    .mail_attachments_reset(&claim.id)
                    .await
                    .map_err(crate::store::outbox::StepError::from)?;
                attachments.iter_mut().for_each(|a| a.delivered = false);
            }
            ob.store.mail_step(&claim.id, owner, Step::Drafting, None, lease).await?;
            let body = message_json(&claim.message, &claim.id);
            let url = format!("{}/messages", self.base);
            let created = self
                .json(ob, |http| {
                    http.post(&url).header(PREFER_IMMUTABLE.0, PREFER_IMMUTABLE.1).json(&body)
                })
                .await;
            ob.checkpoint(CrashPoint::AfterDraftRequested)?;
            let created = match created {
                Ok(c) => c,
                Err(f) => return Ok(Err(f)),
            };
            let Some(id) = created["id"].as_str().map(String::from) else {
                return Ok(Err(Failure::permanent("Microsoft Graph created a draft without an id".into())));
            };
            imid = created["internetMessageId"].as_str().map(String::from);
            ob.store
                .mail_step(&claim.id, owner, Step::Draft, Some((&id, imid.as_deref())), lease)
                .await?;
            draft = Some(id);
            ob.checkpoint(CrashPoint::AfterDraft)?;
        } else if attachments.iter().any(|a| !a.delivered) {
            // Found mid-way: an attachment whose upload finished before the crash is on the
            // draft already though not recorded.
            let draft_id = draft.clone().unwrap_or_default();
            if let Err(f) = self.adopt_attachments(ob, claim, owner, &draft_id, &mut attachments).await? {
                return Ok(Err(f));
            }
        }
        let Some(draft) = draft else {
            return Ok(Err(Failure::permanent("the draft's id was not recorded".into())));
        };
        for a in attachments.iter().filter(|a| !a.delivered) {
            if let Err(wait) = ob.budget.take(
                &self.mailbox,
                a.size as u64,
                ob.policy.upload_budget_bytes,
                ob.policy.upload_budget_window,
            ) {
                return Ok(Ok(Finish::Retry {
                    at_ms: now_ms() + wait.as_millis() as i64,
                    reason: Reason {
                        kind: "throttled".into(),
                        detail: "the mailbox's upload budget (150 MB in 5 minutes) is spent; waiting for it".into(),
                        code: None,
                        status: None,
                    },
                    attempt: None,
                }));
            }
            let done = if (a.size as u64) < SMALL_ATTACHMENT {
                self.small_attachment(ob, &draft, a).await
            } else {
                self.large_attachment(ob, &draft, a).await?
            };
            if let Err(f) = done {
                if matches!(f, Failure::Permanent(_)) {
                    self.discard_draft(ob, claim, owner, &draft).await?;
                }
                return Ok(Err(f));
            }
            ob.store.mail_attachment_delivered(&claim.id, owner, a.n, lease).await?;
        }
        ob.store.mail_step(&claim.id, owner, Step::Submitting, None, lease).await?;
        ob.checkpoint(CrashPoint::AfterSubmitting)?;
        let url = format!("{}/messages/{}/send", self.base, encode_segment(&draft));
        let sent = self
            .call(ob, |http| {
                http.post(&url)
                    .header(PREFER_IMMUTABLE.0, PREFER_IMMUTABLE.1)
                    .header(reqwest::header::CONTENT_LENGTH, "0")
            })
            .await;
        ob.checkpoint(CrashPoint::AfterSend)?;
        Ok(match sent {
            Ok(_) => Ok(Finish::Sent {
                internet_message_id: imid,
                detail: "Microsoft Graph accepted the send (202)".into(),
            }),
            // Refused outright: the draft is unsent. A lapsed sign-in resumes with it; a
            // permanent refusal fails the message, and its draft is not left in the mailbox.
            Err(f @ Failure::Signin(_)) => {
                ob.store.mail_step(&claim.id, owner, Step::Draft, None, lease).await?;
                Err(f)
            }
            Err(f @ Failure::Permanent(_)) => {
                self.discard_draft(ob, claim, owner, &draft).await?;
                Err(f)
            }
            Err(Failure::Transient { reason, after }) if reason.status == Some(429) => {
                ob.store.mail_step(&claim.id, owner, Step::Draft, None, lease).await?;
                Err(Failure::Transient { reason, after })
            }
            // No answer or a 5xx: whether it was sent is found out on the next claim.
            Err(Failure::Transient { reason, .. } | Failure::Ambiguous(reason)) => Err(Failure::Ambiguous(reason)),
        })
    }

    /// After "submitting": `Some` when the outcome is known or the message must wait; `None`
    /// when the draft is still unsent after the grace period and is to be sent again.
    async fn confirm(&self, ob: &Outbox, claim: &Claimed) -> Result<Option<Finish>, Failure> {
        let found = self.find(ob, "sentitems", &claim.id).await?;
        if let Some(m) = found.first() {
            return Ok(Some(Finish::Sent {
                internet_message_id: m["internetMessageId"]
                    .as_str()
                    .map(String::from)
                    .or(claim.internet_message_id.clone()),
                detail: "found in Sent Items after the send's answer was lost".into(),
            }));
        }
        let submitted = claim.submitted_ms.unwrap_or(claim.created_ms);
        let grace_end = submitted + ob.policy.sent_grace_ms;
        let waiting = |detail: &str| {
            Some(Finish::Retry {
                at_ms: grace_end.max(now_ms() + 1),
                reason: Reason {
                    kind: "unconfirmed".into(),
                    detail: detail.into(),
                    code: None,
                    status: None,
                },
                attempt: None,
            })
        };
        let still_draft = match &claim.draft_id {
            Some(id) => {
                let url = format!("{}/messages/{}", self.base, encode_segment(id));
                match self
                    .json(ob, |http| {
                        http.get(&url)
                            .header(PREFER_IMMUTABLE.0, PREFER_IMMUTABLE.1)
                            .query(&[("$select", "id,isDraft,internetMessageId")])
                    })
                    .await
                {
                    Ok(m) if m["isDraft"] == false => {
                        return Ok(Some(Finish::Sent {
                            internet_message_id: m["internetMessageId"].as_str().map(String::from),
                            detail: "found sent by its immutable id".into(),
                        }));
                    }
                    Ok(_) => true,
                    Err(Failure::Permanent(r)) if r.status == Some(404) => false,
                    Err(f) => return Err(f),
                }
            }
            None => false,
        };
        if now_ms() < grace_end {
            return Ok(waiting("the send was requested; waiting for Exchange to file it in Sent Items"));
        }
        if still_draft {
            return Ok(None);
        }
        Ok(Some(Finish::Failed {
            reason: Reason {
                kind: "unconfirmed".into(),
                detail: "the send was requested but the message is neither in Sent Items nor in Drafts; \
                         check the mailbox before retrying it"
                    .into(),
                code: None,
                status: None,
            },
            outcome: Outcome::Ambiguous,
        }))
    }

    /// Removes the draft of a message that failed for good, so a failed message leaves no
    /// clutter in the sending mailbox. "Drafting" is committed first: should the delete not
    /// happen (a crash, an error), a retry of the message finds the draft by its outbox id
    /// and removes it before making a new one, as after any interrupted create.
    async fn discard_draft(&self, ob: &Outbox, claim: &Claimed, owner: &str, draft: &str) -> Result<(), RunError> {
        ob.store
            .mail_step(&claim.id, owner, Step::Drafting, None, ob.policy.lease_ms)
            .await?;
        if let Err(f) = self.delete_draft(ob, draft).await {
            tracing::info!(message = %claim.id, reason = ?f, "the failed message's draft stays until a retry removes it");
        }
        Ok(())
    }

    /// Deletes a draft by its immutable id (Graph reads an id as immutable only when told so).
    async fn delete_draft(&self, ob: &Outbox, id: &str) -> Result<(), Failure> {
        let url = format!("{}/messages/{}", self.base, encode_segment(id));
        self.call(ob, |http| http.delete(&url).header(PREFER_IMMUTABLE.0, PREFER_IMMUTABLE.1))
            .await
            .map(|_| ())
    }

    /// Marks as delivered the unrecorded attachments the draft already has (by name, as
    /// many as it has of each).
    async fn adopt_attachments(
        &self,
        ob: &Outbox,
        claim: &Claimed,
        owner: &str,
        draft: &str,
        attachments: &mut [Attachment],
    ) -> Result<Result<(), Failure>, RunError> {
        let url = format!("{}/messages/{}/attachments", self.base, encode_segment(draft));
        let present = match self
            .json(ob, |http| {
                http.get(&url)
                    .header(PREFER_IMMUTABLE.0, PREFER_IMMUTABLE.1)
                    .query(&[("$select", "id,name,size")])
            })
            .await
        {
            Ok(v) => v,
            Err(f) => return Ok(Err(f)),
        };
        let mut names: Vec<String> = present["value"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["name"].as_str().map(String::from))
            .collect();
        // Those recorded account for their own copies first.
        for a in attachments.iter().filter(|a| a.delivered) {
            if let Some(i) = names.iter().position(|n| *n == a.name) {
                names.remove(i);
            }
        }
        for a in attachments.iter_mut().filter(|a| !a.delivered) {
            if let Some(i) = names.iter().position(|n| *n == a.name) {
                names.remove(i);
                ob.store
                    .mail_attachment_delivered(&claim.id, owner, a.n, ob.policy.lease_ms)
                    .await?;
                a.delivered = true;
            }
        }
        Ok(Ok(()))
    }

    async fn small_attachment(&self, ob: &Outbox, draft: &str, a: &Attachment) -> Result<(), Failure> {
        let bytes = ob
            .store
            .blob_range(&a.blob_id, 0, a.size as u64)
            .await
            .map_err(|e| Failure::unreadable_attachment(&e))?;
        let body = json!({
            "@odata.type": "#microsoft.graph.fileAttachment",
            "name": a.name,
            "contentType": a.content_type,
            "contentBytes": base64::engine::general_purpose::STANDARD.encode(&bytes),
        });
        drop(bytes);
        let url = format!("{}/messages/{}/attachments", self.base, encode_segment(draft));
        self.call(ob, |http| {
            http.post(&url).header(PREFER_IMMUTABLE.0, PREFER_IMMUTABLE.1).json(&body)
        })
        .await
        .map(|_| ())
    }

    /// An upload session, fed range by range from the database; a range that fails is
    /// resumed from the session's `nextExpectedRanges`.
    async fn large_attachment(&self, ob: &Outbox, draft: &str, a: &Attachment) -> Result<Result<(), Failure>, RunError> {
        let size = a.size as u64;
        let url = format!("{}/messages/{}/attachments/createUploadSession", self.base, encode_segment(draft));
        let item = json!({"AttachmentItem": {"attachmentType": "file", "name": a.name, "size": size, "contentType": a.content_type}});
        let session = match self
            .json(ob, |http| {
                http.post(&url).header(PREFER_IMMUTABLE.0, PREFER_IMMUTABLE.1).json(&item)
            })
            .await
        {
            Ok(s) => s,
            Err(f) => return Ok(Err(f)),
        };
        let Some(upload) = session["uploadUrl"].as_str().map(crate::domain::Secret::new) else {
            return Ok(Err(Failure::permanent("the attachment upload session has no uploadUrl".into())));
        };
        let mut next: u64 = 0;
        let mut resumes = 0;
        let mut fragments = 0;
        while next < size {
            let len = FRAGMENT.min(size - next);
            let bytes = match ob.store.blob_range(&a.blob_id, next, len).await {
                Ok(b) => b,
                Err(e) => return Ok(Err(Failure::unreadable_attachment(&e))),
            };
            let range = format!("bytes {next}-{}/{size}", next + len - 1);
            let body = bytes::Bytes::from(bytes);
            // The upload URL carries its own authorization: no token is sent to it.
            let put = ob
                .graph
                .send_anonymous(false, |http| {
                    http.put(upload.expose_secret())
                        .header(reqwest::header::CONTENT_RANGE, range.as_str())
                        .header(reqwest::header::CONTENT_LENGTH, len.to_string())
                        .body(body.clone())
                })
                .await;
            match put {
                Ok(_) => next += len,
                Err(e) if resumes < 5 => {
                    resumes += 1;
                    tracing::debug!(error = %e, "attachment range failed; asking the session where to resume");
                    let status = ob.graph.send_anonymous(true, |http| http.get(upload.expose_secret())).await;
                    let Ok(status) = status else {
                        return Ok(Err(Failure::from_graph(&e)));
                    };
                    let status: Value = status.json().await.unwrap_or(Value::Null);
                    match status["nextExpectedRanges"][0]
                        .as_str()
                        .and_then(|r| r.split('-').next())
                        .and_then(|s| s.parse::<u64>().ok())
                    {
                        Some(resume) => next = resume,
                        None => return Ok(Err(Failure::from_graph(&e))),
                    }
                    tokio::time::sleep(Duration::from_millis(50 * resumes)).await;
                }
                Err(e) => return Ok(Err(Failure::from_graph(&e))),
            }
            fragments += 1;
            if fragments == 1 && next < size {
                ob.checkpoint(CrashPoint::MidAttachment)?;
            }
        }
        Ok(Ok(()))
    }
}
