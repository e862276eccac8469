//! The outbox and Graph delivery (issue 13) against the emulator, drained step by step with
//! `Outbox::run_once` — no sleeps. Graph behaviour from microsoft-graph-docs-contrib:
//! `concepts/outlook-immutable-id.md` (the id survives the send with `Prefer:
//! IdType="ImmutableId"`), `api/singlevaluelegacyextendedproperty-get.md` (`$filter` with
//! `Any`), `api/attachment-createuploadsession.md` and `concepts/outlook-large-attachments.md`
//! (3 MB and more through an upload session, ranges of at most 4 MB, no `Authorization`),
//! `concepts/outlook-things-to-know-about-send-mail.md`, `concepts/throttling-limits.md`.

use crate::helpers::Backend;
use crate::onedrive::{Linked, OPERATOR, linked, on_both};
use base64::Engine;
use officebridge::emulator::seed::DEMO_USER;
use officebridge::mail::outbox::CrashPoint;
use serde_json::{Value, json};

on_both!(
    a_direct_message_is_sent_once_with_its_attachments_byte_identical(direct),
    a_crash_at_every_step_loses_nothing_and_doubles_nothing(direct),
    bad_mail_is_refused_naming_the_field_and_queues_nothing(direct),
    the_same_idempotency_key_queues_one_message(direct),
    graph_faults_retry_or_fail_as_graph_means_them(direct),
    a_delegate_message_is_sent_from_the_operators_mailbox(direct),
    a_direct_profile_sends_through_its_own_app_registration(direct),
    a_report_output_is_kept_listed_and_mailed_with_its_files(direct),
    a_bad_report_output_is_refused_and_nothing_is_kept(direct),
    the_cli_lists_shows_retries_and_cancels_messages(direct),
    eight_workers_on_one_mailbox_never_meet_outlooks_concurrency_limit(direct),
    each_permanent_graph_refusal_fails_at_once_with_graphs_word(direct),
    a_delegate_message_waits_for_the_operators_sign_in_then_goes(direct),
);

/// Linked operator, company ACME, a graph_direct profile for `default` from the demo user's
/// mailbox and a graph_delegate one for `user_interface`; no background workers.
pub async fn direct(b: Backend) -> Option<Linked> {
    let l = linked(b, |s| {
        s.mail.workers = 0;
        s.mail.sent_grace_ms = 0;
        s.mail.retry_base_ms = 0;
    })
    .await?;
    let a = l.app.admin_put("/api/v1/companies/ACME", &json!({"name": "Acme Ltd"})).await;
    assert_eq!(a.status, 201, "{}", a.text);
    let p = l
        .app
        .admin_post(
            "/api/v1/profiles",
            &json!({"name": "DIRECT", "provider": "graph_direct", "apply_to": "system", "functions": ["default"],
                    "graph_direct": {"tenant": "DEMO", "from": DEMO_USER}}),
        )
        .await;
    assert_eq!(p.status, 201, "{}", p.text);
    let p = l
        .app
        .admin_post(
            "/api/v1/profiles",
            &json!({"name": "DELEGATE", "provider": "graph_delegate", "apply_to": "system", "functions": ["user_interface"],
                    "graph_delegate": {"tenant": "DEMO"}}),
        )
        .await;
    assert_eq!(p.status, 201, "{}", p.text);
    Some(l)
}

fn mail(subject: &str) -> Value {
    json!({"company": "ACME", "function": "default", "to": ["ap@fabrikam.com", {"address": "jo@fabrikam.com", "name": "Jo Smith"}],
           "subject": subject, "text": "Your statement is attached.", "html": "<p>Your statement is attached.</p>"})
}

async fn post_mail(l: &Linked, body: &Value, headers: &[(&str, &str)]) -> crate::helpers::Answer {
    let mut r = l.app.http.post(l.app.url("/api/v1/mail")).bearer_auth(&l.app.client_key).json(body);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    crate::helpers::Answer::from(r.send().await.unwrap()).await
}

pub async fn mailbox(l: &Linked) -> Value {
    emulator_mailbox(&l.browser, &l.emu).await
}

/// The demo user's mailbox in the emulator at `emu`: `drafts` and `sent`.
pub async fn emulator_mailbox(http: &reqwest::Client, emu: &str) -> Value {
    http.get(format!("{emu}/_emulator/mail/{DEMO_USER}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The sent messages carrying outbox id `id` in our extended property.
fn sent_with(box_: &Value, id: &str) -> Vec<Value> {
    box_["sent"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| {
            m["singleValueExtendedProperties"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["value"] == id))
        })
        .cloned()
        .collect()
}

async fn status(l: &Linked, id: &str) -> Value {
    let r = l.app.get_with(&format!("/api/v1/mail/{id}"), Some(&l.app.client_key)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json
}

fn pseudo_random(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| ((i * 31 + seed as usize * 7) % 251) as u8).collect()
}

async fn upload(l: &Linked, name: &str, bytes: Vec<u8>) -> Value {
    let r = l
        .app
        .http
        .post(l.app.url(&format!("/api/v1/uploads?name={name}")))
        .bearer_auth(&l.app.client_key)
        .header("content-type", "application/pdf")
        .body(bytes)
        .send()
        .await
        .unwrap();
    let a = crate::helpers::Answer::from(r).await;
    assert_eq!(a.status, 201, "{}", a.text);
    a.json
}

fn attachment_bytes(a: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(a["contentBytes"].as_str().unwrap())
        .unwrap()
}

/// `outbox_messages{state}` as a scrape of this app's `/metrics` reports it. The recorder is
/// shared by every app in the test process and another app's scrape may set the gauge in
/// between, so a value is taken when two scrapes in a row agree.
async fn depth_gauge(l: &Linked, state: &str) -> i64 {
    let prefix = format!("outbox_messages{{state=\"{state}\"}} ");
    let mut last = None;
    for _ in 0..10 {
        let m = l.app.get_with("/metrics", None).await;
        let value = m
            .text
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {prefix} in:\n{}", m.text))
            .trim()
            .parse::<f64>()
            .unwrap() as i64;
        if last == Some(value) {
            return value;
        }
        last = Some(value);
    }
    panic!("{prefix} never read the same twice")
}

async fn a_direct_message_is_sent_once_with_its_attachments_byte_identical(l: Linked) {
    let big = pseudo_random(9 * 1024 * 1024 + 123, 1);
    let up = upload(&l, "ledger.pdf", big.clone()).await;
    assert_eq!(up["size"], big.len());
    let small = b"%PDF-1.7 small".to_vec();
    let mut body = mail("Statement for November");
    body["attachments"] = json!([
        {"name": "note.pdf", "content_type": "application/pdf", "content_base64": base64::engine::general_purpose::STANDARD.encode(&small)},
        {"upload": up["id"]}
    ]);
    let q = post_mail(&l, &body, &[]).await;
    assert_eq!(q.status, 202, "{}", q.text);
    let id = q.json["id"].as_str().unwrap().to_string();
    assert_eq!(
        (q.json["state"].as_str(), q.json["provider"].as_str()),
        (Some("queued"), Some("graph_direct"))
    );
    assert_eq!(q.location(), Some(format!("/api/v1/mail/{id}")));
    assert_eq!(status(&l, &id).await["state"], "queued");
    assert_eq!(depth_gauge(&l, "queued").await, 1, "/metrics shows the queued message");
    assert_eq!(l.app.outbox.drain().await.unwrap(), 1);
    let s = status(&l, &id).await;
    assert_eq!(s["state"], "sent", "{s}");
    assert_eq!(depth_gauge(&l, "sent").await, 1);
    assert_eq!(depth_gauge(&l, "queued").await, 0);
    assert_eq!(s["attempts"][0]["outcome"], "sent");
    assert!(s["internet_message_id"].as_str().unwrap().starts_with('<'));
    let b = mailbox(&l).await;
    let sent = sent_with(&b, &id);
    assert_eq!(sent.len(), 1, "sent exactly once");
    assert!(b["drafts"].as_array().unwrap().is_empty(), "no draft left behind");
    let atts = sent[0]["attachments"].as_array().unwrap();
    assert_eq!(atts.len(), 2);
    assert_eq!(attachment_bytes(&atts[0]), small);
    assert_eq!(attachment_bytes(&atts[1]), big, "the 9 MB attachment arrived byte-identical");
    assert_eq!(sent[0]["body"]["contentType"], "HTML");
    // The large one went through an upload session: ranges of at most 4 MB, no Authorization.
    let log = crate::helpers::emulator_requests(&l.browser, &l.emu).await;
    let puts: Vec<&Value> = log
        .iter()
        .filter(|r| r["path"].as_str().unwrap().starts_with("/_attachments/"))
        .collect();
    assert_eq!(puts.len(), 3, "9 MB in 4 MB ranges");
    assert!(puts.iter().all(|r| r["authorization"] == false));
    // Nothing more to do.
    assert_eq!(l.app.outbox.drain().await.unwrap(), 0);
}

async fn expire_leases(l: &Linked) {
    l.app.raw_text("UPDATE outbox SET lease_until_ms = 0 WHERE state = 'sending'").await;
}

async fn a_crash_at_every_step_loses_nothing_and_doubles_nothing(l: Linked) {
    let big = pseudo_random(5 * 1024 * 1024, 2);
    let up = upload(&l, "big.pdf", big.clone()).await;
    for point in [
        CrashPoint::AfterClaim,
        CrashPoint::AfterDraftRequested,
        CrashPoint::AfterDraft,
        CrashPoint::MidAttachment,
        CrashPoint::AfterSubmitting,
        CrashPoint::AfterSend,
    ] {
        let mut body = mail(&format!("crash {point:?}"));
        body["attachments"] = json!([{"upload": up["id"]}]);
        let q = post_mail(&l, &body, &[]).await;
        assert_eq!(q.status, 202, "{}", q.text);
        let id = q.json["id"].as_str().unwrap().to_string();
        l.app.outbox.crash_at(Some(point));
        let crashed = l.app.outbox.run_once().await;
        assert!(crashed.is_err(), "{point:?}: the delivery stopped");
        assert_eq!(status(&l, &id).await["state"], "sending", "{point:?}: left to its lease");
        // Nobody takes it while the lease holds.
        assert_eq!(l.app.outbox.drain().await.unwrap(), 0, "{point:?}");
        expire_leases(&l).await;
        assert!(l.app.outbox.drain().await.unwrap() >= 1, "{point:?}: taken over");
        let s = status(&l, &id).await;
        assert_eq!(s["state"], "sent", "{point:?}: {s}");
        let b = mailbox(&l).await;
        let sent = sent_with(&b, &id);
        assert_eq!(sent.len(), 1, "{point:?}: sent exactly once");
        let atts = sent[0]["attachments"].as_array().unwrap();
        assert_eq!(atts.len(), 1, "{point:?}: one attachment, not two");
        assert_eq!(attachment_bytes(&atts[0]), big, "{point:?}: byte-identical");
        assert!(b["drafts"].as_array().unwrap().is_empty(), "{point:?}: no orphan draft");
    }
}

/// A request, extra headers, the expected status and the field the problem names.
type Case<'a> = (Value, &'a [(&'a str, &'a str)], u16, &'a str);

async fn bad_mail_is_refused_naming_the_field_and_queues_nothing(l: Linked) {
    let with = |f: &dyn Fn(&mut Value)| {
        let mut m = mail("x");
        f(&mut m);
        m
    };
    let cases: Vec<Case> = vec![
        (with(&|m| m["to"] = json!(["not an address"])), &[], 422, "to[0]"),
        (
            with(&|m| m["to"] = json!((0..501).map(|i| format!("a{i}@b.com")).collect::<Vec<_>>())),
            &[],
            422,
            "to",
        ),
        (
            with(&|m| m["attachments"] = json!([{"upload": uuid::Uuid::new_v4().to_string()}])),
            &[],
            422,
            "attachments[0].upload",
        ),
        (
            with(&|m| m["attachments"] = json!([{"export": uuid::Uuid::new_v4().to_string()}])),
            &[],
            422,
            "attachments[0].export",
        ),
        (
            with(&|m| m["attachments"] = json!([{"report": uuid::Uuid::new_v4().to_string()}])),
            &[],
            422,
            "attachments[0].report",
        ),
        (with(&|m| m["template"] = json!("statement")), &[], 422, "template"),
        (
            json!({"company": "ACME", "function": "default", "to": ["a@b.com"]}),
            &[],
            422,
            "subject",
        ),
        (
            json!({"company": "ACME", "function": "default", "to": ["a@b.com"], "template": "test", "variables": {}}),
            &[],
            422,
            "variables.",
        ),
        (with(&|m| m["company"] = json!("NOPE")), &[], 422, "company"),
        (with(&|m| m["function"] = json!("sending_spam")), &[], 422, "function"),
        (with(&|m| m["function"] = json!("user_interface")), &[], 422, "X-Operator"),
        (
            with(&|m| m["function"] = json!("user_interface")),
            &[("x-operator", "NOBODY")],
            422,
            "X-Operator",
        ),
        // A direct profile needs no operator, but one that is named must exist.
        (with(&|_| {}), &[("x-operator", "NOBODY")], 422, "X-Operator"),
        (with(&|m| m["importance"] = json!("urgent")), &[], 422, "importance"),
        (with(&|_| {}), &[("idempotency-key", "")], 422, "Idempotency-Key"),
    ];
    for (body, headers, status, field) in cases {
        let a = post_mail(&l, &body, headers).await;
        assert_eq!(a.status, status, "{field}: {}", a.text);
        assert_eq!(a.content_type, "application/problem+json", "{field}");
        let fields: Vec<&str> = a.json["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert!(fields.iter().any(|f| f.starts_with(field)), "{field} in {fields:?}");
    }
    // Attachments over 150 MB in all (two uploads of 80 MB each).
    let up = upload(&l, "half.bin", vec![7u8; 80 * 1024 * 1024]).await;
    let mut big = mail("too big");
    big["attachments"] = json!([{"upload": up["id"]}, {"upload": up["id"]}]);
    let a = post_mail(&l, &big, &[]).await;
    assert_eq!(a.status, 422, "{}", a.text);
    assert_eq!(a.json["errors"][0]["field"], "attachments");
    // A disabled profile sends nothing: no profile for default any more.
    let mut p = l.app.admin_get("/api/v1/profiles/DIRECT").await.json;
    p["enabled"] = json!(false);
    for k in ["created_at", "updated_at"] {
        p.as_object_mut().unwrap().remove(k);
    }
    let put = l.app.admin_put("/api/v1/profiles/DIRECT", &p).await;
    assert_eq!(put.status, 200, "{}", put.text);
    let a = post_mail(&l, &mail("disabled"), &[]).await;
    assert_eq!(a.status, 422, "{}", a.text);
    let listed = l.app.get_with("/api/v1/mail", Some(&l.app.client_key)).await;
    assert_eq!(listed.json["messages"].as_array().unwrap().len(), 0, "nothing was queued");
    assert_eq!(l.app.raw_text("SELECT id FROM outbox").await.len(), 0);
    assert_eq!(l.app.raw_text("SELECT message_id FROM outbox_attachments").await.len(), 0);
}

async fn the_same_idempotency_key_queues_one_message(l: Linked) {
    let body = mail("once");
    let answers = futures_util::future::join_all((0..20).map(|_| post_mail(&l, &body, &[("idempotency-key", "stmt-4711-nov")]))).await;
    let ids: std::collections::BTreeSet<String> = answers
        .iter()
        .filter(|a| a.status == 202)
        .map(|a| a.json["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 1, "one message for one key");
    for a in &answers {
        assert!(a.status == 202 || a.status == 409, "{}", a.text);
        if a.status == 409 {
            assert_eq!(a.header("retry-after").as_deref(), Some("1"));
        }
    }
    let again = post_mail(&l, &body, &[("idempotency-key", "stmt-4711-nov")]).await;
    assert_eq!(again.status, 202);
    assert_eq!(again.header("idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(again.json["id"].as_str(), ids.iter().next().map(String::as_str));
    let changed = post_mail(&l, &mail("another body"), &[("idempotency-key", "stmt-4711-nov")]).await;
    assert_eq!(changed.status, 422, "{}", changed.text);
    assert_eq!(changed.json["errors"][0]["field"], "Idempotency-Key");
    assert_eq!(l.app.raw_text("SELECT id FROM outbox").await.len(), 1);
    // Another key is another message.
    let other = post_mail(&l, &body, &[("idempotency-key", "stmt-4712-nov")]).await;
    assert_eq!(other.status, 202);
    assert_eq!(l.app.raw_text("SELECT id FROM outbox").await.len(), 2);
}

async fn graph_faults_retry_or_fail_as_graph_means_them(l: Linked) {
    // The mailbox is percent-encoded in the path (demo%40…): matched by the wildcard.
    let path = "/v1.0/users/*/messages".to_string();
    // 503 with Retry-After: retrying, then sent.
    l.fault(json!([{"method": "POST", "path": path, "status": 503, "retry_after": "0"}]))
        .await;
    let id = post_mail(&l, &mail("transient"), &[]).await.json["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(l.app.outbox.drain().await.unwrap(), 2);
    let s = status(&l, &id).await;
    assert_eq!(s["state"], "sent", "{s}");
    assert_eq!(s["attempts"][0]["outcome"], "transient");
    assert_eq!(s["attempts"][1]["outcome"], "sent");
    // A permanent refusal fails at once with Graph's code and message; retry puts it back.
    l.fault(
        json!([{"method": "POST", "path": format!("{path}/*/send"), "status": 400, "code": "ErrorInvalidRecipients",
                    "message": "At least one recipient is not valid."}]),
    )
    .await;
    let id = post_mail(&l, &mail("permanent"), &[]).await.json["id"]
        .as_str()
        .unwrap()
        .to_string();
    l.app.outbox.drain().await.unwrap();
    let s = status(&l, &id).await;
    assert_eq!(s["state"], "failed", "{s}");
    assert_eq!(s["error"]["code"], "ErrorInvalidRecipients");
    assert_eq!(s["attempts"][0]["outcome"], "permanent");
    let cancel = l.app.client_post_json(&format!("/api/v1/mail/{id}/cancel"), &json!({})).await;
    assert_eq!(cancel.status, 409, "a failed message is not cancelled: {}", cancel.text);
    let retried = l.app.client_post_json(&format!("/api/v1/mail/{id}/retry"), &json!({})).await;
    assert_eq!(retried.status, 200, "{}", retried.text);
    l.app.outbox.drain().await.unwrap();
    assert_eq!(status(&l, &id).await["state"], "sent");
    assert_eq!(sent_with(&mailbox(&l).await, &id).len(), 1);
    // A queued message can be cancelled and is then never sent.
    let id = post_mail(&l, &mail("cancelled"), &[]).await.json["id"]
        .as_str()
        .unwrap()
        .to_string();
    let c = l.app.client_post_json(&format!("/api/v1/mail/{id}/cancel"), &json!({})).await;
    assert_eq!((c.status, c.json["state"].as_str()), (200, Some("cancelled")), "{}", c.text);
    assert_eq!(l.app.outbox.drain().await.unwrap(), 0);
    assert!(sent_with(&mailbox(&l).await, &id).is_empty());
    // The list filters by state; an admin key sees them too.
    let failed = l.app.get_with("/api/v1/mail?state=cancelled", Some(&l.app.admin_key)).await;
    assert_eq!(failed.json["messages"].as_array().unwrap().len(), 1, "{}", failed.text);
}

async fn a_delegate_message_is_sent_from_the_operators_mailbox(l: Linked) {
    let mut body = mail("as the operator");
    body["function"] = json!("user_interface");
    let q = post_mail(&l, &body, &[("x-operator", OPERATOR)]).await;
    assert_eq!((q.status, q.json["provider"].as_str()), (202, Some("graph_delegate")), "{}", q.text);
    let id = q.json["id"].as_str().unwrap().to_string();
    l.app.outbox.drain().await.unwrap();
    assert_eq!(status(&l, &id).await["state"], "sent");
    assert_eq!(sent_with(&mailbox(&l).await, &id).len(), 1);
    let log = crate::helpers::emulator_requests(&l.browser, &l.emu).await;
    assert!(log.iter().any(|r| r["path"] == "/v1.0/me/messages"), "a draft through /me");
}

/// A `graph_direct` profile naming its own app registration gets its token from that app's
/// client credentials, not the tenant's: a wrong secret of that app fails the message with
/// the identity platform's word (AADSTS7000215, `reference-error-codes.md` in entra-docs)
/// although the tenant's own secret is right; the right one sends.
async fn a_direct_profile_sends_through_its_own_app_registration(l: Linked) {
    use officebridge::emulator::seed::{DEMO_MAILER_CLIENT_ID, DEMO_MAILER_SECRET};
    let profile = |secret: &str| {
        json!({"name": "OWN-APP", "provider": "graph_direct", "apply_to": "system", "functions": ["document_quotations"],
               "graph_direct": {"tenant": "DEMO", "from": DEMO_USER, "client_id": DEMO_MAILER_CLIENT_ID, "client_secret": secret}})
    };
    let p = l.app.admin_post("/api/v1/profiles", &profile("not-the-secret")).await;
    assert_eq!(p.status, 201, "{}", p.text);
    let mut body = mail("Quotation Q-7");
    body["function"] = json!("document_quotations");
    let q = post_mail(&l, &body, &[]).await;
    assert_eq!(q.status, 202, "{}", q.text);
    assert_eq!(q.json["profile"], "OWN-APP");
    let id = q.json["id"].as_str().unwrap().to_string();
    l.app.outbox.drain().await.unwrap();
    let s = status(&l, &id).await;
    assert_eq!(s["state"], "failed", "the profile's app was asked, with its wrong secret: {s}");
    assert!(s["error"]["detail"].as_str().unwrap().contains("7000215"), "{s}");
    assert!(sent_with(&mailbox(&l).await, &id).is_empty());
    let p = l.app.admin_put("/api/v1/profiles/OWN-APP", &profile(DEMO_MAILER_SECRET)).await;
    assert_eq!(p.status, 200, "{}", p.text);
    let r = l.app.client_post_json(&format!("/api/v1/mail/{id}/retry"), &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    l.app.outbox.drain().await.unwrap();
    let s = status(&l, &id).await;
    assert_eq!(s["state"], "sent", "{s}");
    assert_eq!(sent_with(&mailbox(&l).await, &id).len(), 1);
}

/// A `multipart/form-data` body (RFC 7578) built by hand: `metadata` then the files.
fn multipart(metadata: &Value, files: &[(&str, &str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "officebridge-test-7f3a9c";
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"metadata\"\r\nContent-Type: application/json\r\n\r\n{metadata}\r\n"
        )
        .as_bytes(),
    );
    for (name, ctype, data) in files {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: {ctype}\r\n\r\n")
                .as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn post_report(l: &Linked, metadata: &Value, files: &[(&str, &str, &[u8])]) -> crate::helpers::Answer {
    let (ctype, body) = multipart(metadata, files);
    post_report_body(l, ctype, body).await
}

async fn post_report_body(l: &Linked, ctype: String, body: Vec<u8>) -> crate::helpers::Answer {
    let r = l
        .app
        .http
        .post(l.app.url("/api/v1/reports"))
        .bearer_auth(&l.app.client_key)
        .header("content-type", ctype)
        .body(body)
        .send()
        .await
        .unwrap();
    crate::helpers::Answer::from(r).await
}

async fn reports_of(l: &Linked, operator: &str) -> Vec<Value> {
    let r = l
        .app
        .get_with(&format!("/api/v1/reports?operator={operator}"), Some(&l.app.client_key))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json["reports"].as_array().unwrap().clone()
}

/// The source's "emailing SRS outputs": the report server posts a PDF for an operator and
/// company, asks for it to be mailed; it is kept, listed for the operator, downloadable
/// byte-identical, and the message carries it.
async fn a_report_output_is_kept_listed_and_mailed_with_its_files(l: Linked) {
    // all_reports resolves to the system default (DIRECT) when no profile claims it.
    let pdf = pseudo_random(5 * 1024 * 1024 + 17, 3);
    let csv = b"Customer;Balance\r\n4711;1.250,00\r\n".to_vec();
    let meta = json!({"company": "ACME", "operator": OPERATOR, "report": "ARSSTM", "title": "Statement 4711",
                      "document": {"type": "statement", "number": "4711-11"},
                      "email": {"to": ["ap@fabrikam.com"], "subject": "Your statement", "text": "Attached."}});
    let r = post_report(
        &l,
        &meta,
        &[("statement 4711.pdf", "application/pdf", &pdf), ("lines.csv", "text/csv", &csv)],
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.json["id"].as_str().unwrap().to_string();
    assert_eq!(r.json["files"][0]["size"], pdf.len());
    assert_eq!(r.json["files"][1]["name"], "lines.csv");
    let mail_id = r.json["mail"]["id"].as_str().unwrap().to_string();
    assert_eq!(r.json["mail"]["state"], "queued");
    let m = status(&l, &mail_id).await;
    assert_eq!(
        (m["function"].as_str(), m["attachments"].as_u64()),
        (Some("all_reports"), Some(2)),
        "{m}"
    );

    let listed = reports_of(&l, OPERATOR).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["document"]["number"], "4711-11");
    assert_eq!(listed[0]["mail"], mail_id.as_str());
    assert!(reports_of(&l, "NOBODY").await.is_empty());

    let f = l
        .app
        .http
        .get(l.app.url(&format!("/api/v1/reports/{id}/files/1")))
        .bearer_auth(&l.app.client_key)
        .send()
        .await
        .unwrap();
    assert_eq!(f.status(), 200);
    assert_eq!(f.headers()["content-type"], "application/pdf");
    assert!(
        f.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("statement%204711.pdf")
    );
    assert_eq!(f.bytes().await.unwrap().to_vec(), pdf, "the file comes back byte-identical");
    let missing = l
        .app
        .get_with(&format!("/api/v1/reports/{id}/files/3"), Some(&l.app.client_key))
        .await;
    assert_eq!(missing.status, 404);

    assert_eq!(l.app.outbox.drain().await.unwrap(), 1);
    let sent = sent_with(&mailbox(&l).await, &mail_id);
    assert_eq!(sent.len(), 1);
    let atts = sent[0]["attachments"].as_array().unwrap();
    assert_eq!(attachment_bytes(&atts[0]), pdf, "the 5 MB report arrived byte-identical");
    assert_eq!(attachment_bytes(&atts[1]), csv);
}

async fn a_bad_report_output_is_refused_and_nothing_is_kept(l: Linked) {
    let pdf: &[u8] = b"%PDF-1.7";
    let ok = json!({"company": "ACME", "operator": OPERATOR, "report": "ARSSTM"});
    let with = |f: &dyn Fn(&mut Value)| {
        let mut m = ok.clone();
        f(&mut m);
        m
    };
    let cases: Vec<(Value, u16, &str)> = vec![
        (with(&|m| m["company"] = json!("NOPE")), 422, "metadata.company"),
        (with(&|m| m["operator"] = json!("NOBODY")), 422, "metadata.operator"),
        (with(&|m| m["report"] = json!("  ")), 422, "metadata.report"),
        (with(&|m| m["colour"] = json!("red")), 422, "metadata.colour"),
        (
            with(&|m| m["email"] = json!({"to": ["not an address"], "subject": "s", "text": "t"})),
            422,
            "metadata.email.to[0]",
        ),
        (
            with(&|m| m["email"] = json!({"to": ["a@b.com"], "subject": "s", "text": "t", "attachments": []})),
            422,
            "metadata.email.attachments",
        ),
        // The sender is checked only when queueing, after the files are stored (a
        // graph_delegate profile for an operator who never signed in): refused, and the
        // stored output removed with it.
        (
            json!({"company": "ACME", "operator": "NEWBIE", "report": "ARSSTM",
                   "email": {"to": ["a@b.com"], "subject": "s", "text": "t", "function": "user_interface"}}),
            401,
            "",
        ),
    ];
    let op = l
        .app
        .admin_put(
            "/api/v1/operators/NEWBIE",
            &json!({"enabled": true, "tenant": "DEMO", "email": "newbie@demo.onmicrosoft.com"}),
        )
        .await;
    assert_eq!(op.status, 201, "{}", op.text);
    for (meta, want, field) in cases {
        let r = post_report(&l, &meta, &[("a.pdf", "application/pdf", pdf)]).await;
        assert_eq!(r.status, want, "{meta}: {}", r.text);
        assert_eq!(r.content_type, "application/problem+json", "{meta}");
        if !field.is_empty() {
            let named = r.json["errors"].as_array().unwrap().iter().any(|e| e["field"] == field);
            assert!(named, "{meta}: names {field}: {}", r.text);
        }
    }
    let no_file = post_report(&l, &ok, &[]).await;
    assert_eq!(no_file.status, 422, "{}", no_file.text);
    // Files before the metadata: refused before anything is stored.
    let (ctype, body) = multipart(&ok, &[("a.pdf", "application/pdf", pdf)]);
    let text = String::from_utf8(body)
        .unwrap()
        .replacen("name=\"metadata\"", "name=\"file\"; filename=\"x.json\"", 1);
    let r = post_report_body(&l, ctype, text.into_bytes()).await;
    assert_eq!(r.status, 422, "{}", r.text);
    let not_multipart = l.app.client_post_json("/api/v1/reports", &ok).await;
    assert_eq!(not_multipart.status, 415, "{}", not_multipart.text);
    assert!(reports_of(&l, OPERATOR).await.is_empty(), "nothing was kept");
    assert!(
        reports_of(&l, "NEWBIE").await.is_empty(),
        "the output of the refused message was removed"
    );
    let queued = l.app.get_with("/api/v1/mail", Some(&l.app.client_key)).await;
    assert!(queued.json["messages"].as_array().unwrap().is_empty(), "nothing was queued");
}

/// `officebridge outbox …`, the real binary on the app's own database.
fn cli(l: &Linked, args: &[&str]) -> (bool, Value, String) {
    cli_in(l, "outbox", args)
}

/// Runs `officebridge COMMAND ARGS…` on the app's database: success, stdout as JSON, stderr.
pub fn cli_in(l: &Linked, command: &str, args: &[&str]) -> (bool, Value, String) {
    let dir = l.app.data_dir();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_officebridge"));
    for (k, _) in std::env::vars() {
        if k.starts_with("OFFICEBRIDGE_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .current_dir(dir)
        .env("OFFICEBRIDGE_DATABASE_URL", &l.app.database_url)
        .env("OFFICEBRIDGE_MASTER_KEY", l.app.master_key.expose_secret())
        .arg(command)
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    (
        out.status.success(),
        serde_json::from_str(&stdout).unwrap_or(Value::Null),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

async fn the_cli_lists_shows_retries_and_cancels_messages(l: Linked) {
    l.fault(
        json!([{"method": "POST", "path": "/v1.0/users/*/messages/*/send", "status": 400, "code": "ErrorInvalidRecipients",
                    "message": "At least one recipient is not valid."}]),
    )
    .await;
    let failing = post_mail(&l, &mail("refused"), &[]).await.json["id"].as_str().unwrap().to_string();
    l.app.outbox.drain().await.unwrap();
    let waiting = post_mail(&l, &mail("waiting"), &[]).await.json["id"].as_str().unwrap().to_string();

    let (ok, list, err) = cli(&l, &["list", "--state", "failed"]);
    assert!(ok, "{err}");
    let ids: Vec<&str> = list["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [failing.as_str()]);
    let (ok, shown, err) = cli(&l, &["show", &failing]);
    assert!(ok, "{err}");
    assert_eq!(shown["error"]["code"], "ErrorInvalidRecipients", "{shown}");

    let (ok, cancelled, err) = cli(&l, &["cancel", &waiting]);
    assert!(ok, "{err}");
    assert_eq!(cancelled["state"], "cancelled");
    let (ok, _, err) = cli(&l, &["cancel", &failing]);
    assert!(!ok && err.contains("failed"), "a failed message is not cancelled: {err}");
    let (ok, retried, err) = cli(&l, &["retry", &failing]);
    assert!(ok, "{err}");
    assert_eq!(retried["state"], "queued");
    assert_eq!(l.app.outbox.drain().await.unwrap(), 1, "the server sends what the CLI put back");
    assert_eq!(status(&l, &failing).await["state"], "sent");

    let (ok, _, err) = cli(&l, &["list", "--state", "lost"]);
    assert!(!ok && err.contains("--state"), "{err}");
    let (ok, _, err) = cli(&l, &["show", &uuid::Uuid::new_v4().to_string()]);
    assert!(!ok && err.contains("does not exist"), "{err}");
    let audit = l.app.admin_get("/api/v1/audit?limit=20").await;
    assert!(
        audit.text.contains("mail.retry") && audit.text.contains("mail.cancel"),
        "{}",
        audit.text
    );
}

/// Two instances behind a load balancer share one outbox on PostgreSQL (`FOR UPDATE SKIP
/// LOCKED`): 500 messages queued through both, drained by both at once, two workers each —
/// every message in Sent Items exactly once, none left. SQLite serves one instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_drain_one_outbox_once_each() {
    use futures_util::StreamExt;
    let Some(l) = direct(Backend::Postgres).await else {
        eprintln!("skipped: OFFICEBRIDGE_TEST_POSTGRES_URL is not set");
        return;
    };
    let peer = l.app.spawn_peer(|_| {}).await;
    let apps = [&l.app, &peer];
    let ids: Vec<String> = futures_util::stream::iter(0..500)
        .map(|i| {
            let app = apps[i % 2];
            let body = mail(&format!("Statement {i}"));
            async move {
                let r = app
                    .http
                    .post(app.url("/api/v1/mail"))
                    .bearer_auth(&app.client_key)
                    .header("Idempotency-Key", format!("statement-{i}"))
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202);
                r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string()
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let drains = [l.app.outbox.drain(), l.app.outbox.drain(), peer.outbox.drain(), peer.outbox.drain()];
    let counts: Vec<usize> = futures_util::future::join_all(drains)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(
        counts.iter().sum::<usize>(),
        500,
        "each message delivered by one worker: {counts:?}"
    );
    assert!(
        counts[0] + counts[1] > 0 && counts[2] + counts[3] > 0,
        "both instances worked: {counts:?}"
    );
    let b = mailbox(&l).await;
    assert_eq!(b["sent"].as_array().unwrap().len(), 500, "0 sent twice");
    for id in &ids {
        assert_eq!(sent_with(&b, id).len(), 1, "{id} sent exactly once");
    }
    let left = l.app.get_with("/api/v1/mail?state=queued", Some(&l.app.client_key)).await;
    assert!(left.json["messages"].as_array().unwrap().is_empty(), "0 left: {}", left.text);
    assert!(b["drafts"].as_array().unwrap().is_empty());
}

/// Outlook allows 4 concurrent requests per app and mailbox (`concepts/throttling-limits.md`,
/// "Outlook service limits"; the emulator enforces it): eight workers draining 200 messages
/// from one mailbox keep under it, so not one request is answered 429.
async fn eight_workers_on_one_mailbox_never_meet_outlooks_concurrency_limit(l: Linked) {
    use futures_util::StreamExt;
    let ids: Vec<String> = futures_util::stream::iter(0..200)
        .map(|i| {
            let l = &l;
            async move {
                let r = post_mail(l, &mail(&format!("Invoice {i}")), &[]).await;
                assert_eq!(r.status, 202, "{}", r.text);
                r.json["id"].as_str().unwrap().to_string()
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    // Graph's latency, so that requests overlap as they do against Exchange: the emulator
    // counts a request in flight while it waits.
    l.fault(json!([{"method": "POST", "path": "/v1.0/users/*/messages/*/send", "delay_ms": 20, "times": 1000}]))
        .await;
    let counts = futures_util::future::join_all((0..8).map(|_| l.app.outbox.drain())).await;
    let total: usize = counts.into_iter().map(|r| r.unwrap()).sum();
    assert_eq!(total, 200);
    let log = crate::helpers::emulator_requests(&l.browser, &l.emu).await;
    let throttled = log.iter().filter(|r| r["status"] == 429).count();
    assert_eq!(throttled, 0, "no request met the per-mailbox limit");
    let b = mailbox(&l).await;
    for id in &ids {
        assert_eq!(sent_with(&b, id).len(), 1, "{id} sent exactly once");
    }
}

/// The refusals a person must act on fail at once, with Graph's code and message, after one
/// attempt, leaving no draft: `ErrorSendAsDenied` (403, the mailbox may not send as `from`),
/// `ErrorAccessDenied` (403, an application access policy: `auth-limit-mailbox-access.md`),
/// `MailboxNotEnabledForRESTAPI` (404: Exchange's "REST API is not yet supported for this
/// mailbox", KB 4462988), `ErrorMessageSizeExceeded` (413) and `ErrorInvalidRecipients`
/// (400) — on the draft's creation and on the send (`concepts/errors.md`).
async fn each_permanent_graph_refusal_fails_at_once_with_graphs_word(l: Linked) {
    let refusals = [
        (403, "ErrorSendAsDenied", "/send"),
        (403, "ErrorAccessDenied", ""),
        (404, "MailboxNotEnabledForRESTAPI", ""),
        (413, "ErrorMessageSizeExceeded", "/send"),
        (400, "ErrorInvalidRecipients", "/send"),
    ];
    for (status_code, code, at) in refusals {
        let path = if at.is_empty() {
            "/v1.0/users/*/messages".to_string()
        } else {
            format!("/v1.0/users/*/messages/*{at}")
        };
        l.fault(json!([{"method": "POST", "path": path, "status": status_code, "code": code, "message": format!("{code} (emulated)")}]))
            .await;
        let id = post_mail(&l, &mail(code), &[]).await.json["id"].as_str().unwrap().to_string();
        l.app.outbox.drain().await.unwrap();
        let s = status(&l, &id).await;
        assert_eq!(s["state"], "failed", "{code}: {s}");
        assert_eq!(
            (s["error"]["code"].as_str(), s["error"]["status"].as_u64()),
            (Some(code), Some(status_code)),
            "{s}"
        );
        assert!(
            s["error"]["detail"].as_str().unwrap().contains("(emulated)"),
            "Graph's message is kept: {s}"
        );
        assert_eq!(s["attempts"].as_array().unwrap().len(), 1, "{code}: not retried");
        assert_eq!(s["attempts"][0]["outcome"], "permanent");
        let b = mailbox(&l).await;
        assert!(sent_with(&b, &id).is_empty(), "{code}");
        assert!(
            b["drafts"].as_array().unwrap().is_empty(),
            "{code}: no draft left behind: {}",
            b["drafts"]
        );
    }
}

/// A delegate operator whose sign-in lapsed (the refresh token revoked: `invalid_grant`,
/// v2-oauth2-auth-code-flow.md): the message waits in `retrying` with `signin_required` —
/// not failed, not retried in a loop — and leaves as soon as they sign in again.
async fn a_delegate_message_waits_for_the_operators_sign_in_then_goes(l: Linked) {
    let mut body = mail("after sign-in");
    body["function"] = json!("user_interface");
    let q = post_mail(&l, &body, &[("x-operator", OPERATOR)]).await;
    assert_eq!(q.status, 202, "{}", q.text);
    let id = q.json["id"].as_str().unwrap().to_string();
    l.revoke_refresh_tokens().await;
    // The cached access token is refused once, so the refresh token is needed.
    l.fault(json!([{"method": "POST", "path": "/v1.0/me/messages", "status": 401, "times": 1}]))
        .await;
    l.app.outbox.drain().await.unwrap();
    let s = status(&l, &id).await;
    assert_eq!(s["state"], "retrying", "{s}");
    assert_eq!(s["error"]["kind"], "signin_required", "{s}");
    assert_eq!(l.app.outbox.drain().await.unwrap(), 0, "not due again before the sign-in");
    assert_eq!(l.sign_in(OPERATOR, DEMO_USER).await.status, 200);
    assert_eq!(l.app.outbox.drain().await.unwrap(), 1, "due at once after the sign-in");
    assert_eq!(status(&l, &id).await["state"], "sent");
    assert_eq!(sent_with(&mailbox(&l).await, &id).len(), 1);
}
