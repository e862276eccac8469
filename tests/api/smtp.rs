//! SMTP delivery (issue 14) against an SMTP server we did not write: nodemailer's
//! `smtp-server`, set up by `tests/smtp/server.mjs` (installed by the README's test command)
//! with STARTTLS, implicit TLS, plain and STARTTLS-hidden listeners, a throwaway CA, AUTH
//! PLAIN/LOGIN, XOAUTH2 checked against the emulator's JWKS, magic recipients for chosen
//! replies, and a spool we read. The outbox is drained with `Outbox::run_once` — no sleeps.
//! Exchange Online's replies: "Authenticate an IMAP, POP or SMTP connection using OAuth" and
//! "SMTP AUTH client submission" (Exchange docs: `535 5.7.139`, `550 5.7.30`, `432 4.3.2`).

use crate::helpers::{Answer, Backend};
use crate::onedrive::{Linked, on_both, with_tenant};
use officebridge::emulator::seed::DEMO_TENANT_ID;
use serde_json::{Value, json};
use std::path::PathBuf;
use tokio::io::AsyncBufReadExt;

pub const SMTP_USER: &str = "mailer@contoso.com";
pub const SMTP_PASSWORD: &str = "correct horse battery staple";

pub struct SmtpPeer {
    pub ports: Value,
    pub ca: PathBuf,
    pub spool: tempfile::TempDir,
    /// Killed with the peer (`kill_on_drop`).
    _child: tokio::process::Child,
}

impl SmtpPeer {
    /// Starts the server; `None` (skipped) outside CI when it is not installed.
    pub async fn start() -> Option<Self> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smtp");
        if !crate::helpers::tool_available(
            dir.join("node_modules/smtp-server").exists(),
            "smtp-server (npm ci --prefix tests/smtp)",
        ) {
            return None;
        }
        let spool = tempfile::tempdir().unwrap();
        let config = json!({"spool": spool.path(), "user": SMTP_USER, "password": SMTP_PASSWORD});
        let mut child = tokio::process::Command::new("node")
            .arg(dir.join("server.mjs"))
            .arg(config.to_string())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs");
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let ready: Value = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
            .await
            .expect("the SMTP server starts")
            .unwrap()
            .map(|l| serde_json::from_str(&l).unwrap())
            .expect("the SMTP server prints its ports");
        Some(Self {
            ports: ready["ports"].clone(),
            ca: PathBuf::from(ready["ca"].as_str().unwrap()),
            spool,
            _child: child,
        })
    }

    pub fn port(&self, listener: &str) -> u16 {
        self.ports[listener].as_u64().unwrap() as u16
    }

    /// Each spooled message: its record and its raw bytes, in arrival order.
    pub fn messages(&self) -> Vec<(Value, Vec<u8>)> {
        let mut names: Vec<_> = std::fs::read_dir(self.spool.path())
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".json"))
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|n| {
                let meta: Value = serde_json::from_slice(&std::fs::read(self.spool.path().join(&n)).unwrap()).unwrap();
                let raw = std::fs::read(self.spool.path().join(n.replace(".json", ".eml"))).unwrap();
                (meta, raw)
            })
            .collect()
    }

    /// The copies that arrived of the message with this Message-ID.
    pub fn copies(&self, message_id: &str) -> Vec<(Value, Vec<u8>)> {
        self.messages().into_iter().filter(|(m, _)| m["message_id"] == message_id).collect()
    }

    /// Every AUTH attempt the server saw.
    pub fn auth_log(&self) -> Vec<Value> {
        std::fs::read_to_string(self.spool.path().join("auth.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// From now on the server refuses this token (as Exchange refuses an expired one).
    pub fn revoke(&self, uti: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.spool.path().join("revoked"))
            .unwrap();
        writeln!(f, "{uti}").unwrap();
    }

    /// Where the server finds the emulator's signing keys.
    pub fn trust_issuer(&self, emu: &str) {
        std::fs::write(
            self.spool.path().join("jwks"),
            format!("{emu}/{DEMO_TENANT_ID}/discovery/v2.0/keys"),
        )
        .unwrap();
    }
}

pub struct Smtp {
    pub l: Linked,
    pub peer: SmtpPeer,
}

/// The emulator's tenant, company ACME, an SMTP server whose CA the app trusts, no
/// background workers, retries due at once, a 1 s wait for the final reply.
pub async fn smtp_setup(b: Backend) -> Option<Smtp> {
    smtp_with(b, true, |_| {}).await
}

pub async fn smtp_with(b: Backend, trust_ca: bool, tweak: impl FnOnce(&mut officebridge::config::Settings)) -> Option<Smtp> {
    let peer = SmtpPeer::start().await?;
    let ca = peer.ca.clone();
    let l = with_tenant(b, |s| {
        s.mail.workers = 0;
        s.mail.retry_base_ms = 0;
        s.mail.smtp_data_timeout_secs = 1;
        s.mail.smtp_command_timeout_secs = 5;
        if trust_ca {
            s.mail.smtp_root_certificates = vec![ca];
        }
        tweak(s);
    })
    .await?;
    peer.trust_issuer(&l.emu);
    let a = l.app.admin_put("/api/v1/companies/ACME", &json!({"name": "Acme Ltd"})).await;
    assert_eq!(a.status, 201, "{}", a.text);
    Some(Smtp { l, peer })
}

impl Smtp {
    /// An SMTP profile on `listener` for `function`, with `smtp` fields over the defaults
    /// (STARTTLS, PLAIN/LOGIN as the test user).
    pub async fn profile(&self, name: &str, function: &str, listener: &str, smtp: Value) -> Answer {
        let mut s = json!({"host": "localhost", "port": self.peer.port(listener), "from": SMTP_USER,
                           "from_name": "Contoso Accounts", "username": SMTP_USER, "password": SMTP_PASSWORD});
        for (k, v) in smtp.as_object().unwrap() {
            if v.is_null() {
                s.as_object_mut().unwrap().remove(k);
            } else {
                s[k] = v.clone();
            }
        }
        self.l
            .app
            .admin_post(
                "/api/v1/profiles",
                &json!({"name": name, "provider": "smtp", "apply_to": "system", "functions": [function], "smtp": s}),
            )
            .await
    }

    /// [`Smtp::profile`], which must be saved.
    pub async fn add(&self, name: &str, function: &str, listener: &str, smtp: Value) {
        let p = self.profile(name, function, listener, smtp).await;
        assert_eq!(p.status, 201, "{}", p.text);
    }

    pub async fn queue(&self, body: &Value) -> String {
        let r = self.l.app.client_post_json("/api/v1/mail", body).await;
        assert_eq!(r.status, 202, "{}", r.text);
        r.json["id"].as_str().unwrap().to_string()
    }

    pub async fn status(&self, id: &str) -> Value {
        let r = self
            .l
            .app
            .get_with(&format!("/api/v1/mail/{id}"), Some(&self.l.app.client_key))
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.json
    }

    pub async fn drain(&self) -> usize {
        self.l.app.outbox.drain().await.unwrap()
    }
}

/// Profile fields: no TLS and no AUTH (the plain listener).
fn insecure_no_auth() -> Value {
    json!({"security": "none", "allow_insecure": true, "auth": "none", "username": null, "password": null})
}

/// Profile fields: XOAUTH2 with the demo tenant's token.
fn xoauth2() -> Value {
    json!({"auth": "xoauth2", "tenant": "DEMO", "username": null, "password": null})
}

fn mail(function: &str, to: &str, subject: &str) -> Value {
    json!({"company": "ACME", "function": function, "to": [to], "subject": subject, "text": "Your statement is attached."})
}

/// The Message-ID officebridge gives outbox message `id` sent from the test mailbox.
fn mid(id: &str) -> String {
    officebridge::mail::smtp::message_id(id, SMTP_USER)
}

on_both!(
    each_listener_and_auth_method_delivers(smtp_setup),
    a_wrong_password_fails_at_once_with_the_servers_reply(smtp_setup),
    starttls_that_is_not_offered_is_refused_before_credentials_are_sent(smtp_setup),
    transient_replies_are_retried_and_permanent_ones_fail_at_once(smtp_setup),
    the_rfc_1047_window_holds_or_resends_as_the_profile_says(smtp_setup),
    non_ascii_subjects_and_names_decode_in_pythons_email_parser(smtp_setup),
    a_20_mb_attachment_arrives_byte_identical(smtp_setup),
    exchanges_documented_refusals_fail_with_a_hint(smtp_setup),
);

async fn each_listener_and_auth_method_delivers(s: Smtp) {
    s.add("STARTTLS-PLAIN", "default", "starttls", json!({})).await;
    s.add("TLS-LOGIN", "all_reports", "tls", json!({"security": "tls"})).await;
    s.add("XOAUTH2", "system_administration", "starttls", xoauth2()).await;
    s.add("PLAIN-NONE", "user_interface", "plain", insecure_no_auth()).await;

    let cases = [
        ("default", "starttls", true, Some("PLAIN")),
        ("all_reports", "tls", true, Some("LOGIN")),
        ("system_administration", "starttls", true, Some("XOAUTH2")),
        ("user_interface", "plain", false, None),
    ];
    let mut ids = vec![];
    for (function, ..) in cases {
        ids.push(
            s.queue(&mail(function, "ap@fabrikam.com", &format!("Statement by {function}")))
                .await,
        );
    }
    assert_eq!(s.drain().await, 4);
    for (id, (function, listener, secure, method)) in ids.iter().zip(cases) {
        let st = s.status(id).await;
        assert_eq!(st["state"], "sent", "{function}: {st}");
        assert_eq!(st["internet_message_id"], mid(id), "{st}");
        assert_eq!(st["attempts"][0]["outcome"], "sent", "{st}");
        let copies = s.peer.copies(&mid(id));
        assert_eq!(copies.len(), 1, "{function}: exactly one copy arrives");
        let (meta, raw) = &copies[0];
        assert_eq!(meta["listener"], listener, "{meta}");
        assert_eq!(meta["secure"], secure, "{meta}");
        assert_eq!(meta["auth"]["method"].as_str(), method, "{meta}");
        assert_eq!(meta["from"], SMTP_USER);
        assert_eq!(meta["to"], json!(["ap@fabrikam.com"]));
        let text = String::from_utf8_lossy(raw);
        assert!(text.contains(&format!("Subject: Statement by {function}")), "{text}");
    }
    // The XOAUTH2 token was one for Exchange Online, checked by the server against the
    // emulator's keys.
    let (meta, _) = &s.peer.copies(&mid(&ids[2]))[0];
    assert!(meta["auth"]["uti"].as_str().is_some_and(|u| !u.is_empty()), "{meta}");
}

async fn a_wrong_password_fails_at_once_with_the_servers_reply(s: Smtp) {
    s.add("WRONG", "default", "starttls", json!({"password": "not it"})).await;
    let id = s.queue(&mail("default", "ap@fabrikam.com", "never")).await;
    assert_eq!(s.drain().await, 1);
    let st = s.status(&id).await;
    assert_eq!(st["state"], "failed", "{st}");
    assert_eq!(st["error"]["kind"], "permanent", "{st}");
    assert_eq!(st["error"]["code"], "535 5.7.8", "{st}");
    let detail = st["error"]["detail"].as_str().unwrap();
    assert!(detail.contains("auth") && detail.contains("authentication failed"), "{detail}");
    assert!(!detail.contains("not it"), "the password is never shown: {detail}");
    assert_eq!(st["attempts"].as_array().unwrap().len(), 1, "{st}");
    assert!(s.peer.messages().is_empty());
    assert_eq!(s.drain().await, 0, "a permanent failure is not retried");
}

async fn starttls_that_is_not_offered_is_refused_before_credentials_are_sent(s: Smtp) {
    s.add("HIDDEN", "default", "hidden", json!({})).await;
    let id = s.queue(&mail("default", "ap@fabrikam.com", "downgraded")).await;
    assert_eq!(s.drain().await, 1);
    let st = s.status(&id).await;
    assert_eq!(st["state"], "failed", "{st}");
    assert!(st["error"]["detail"].as_str().unwrap().contains("STARTTLS"), "{st}");
    assert!(s.peer.auth_log().is_empty(), "no AUTH was tried: {:?}", s.peer.auth_log());
    assert!(s.peer.messages().is_empty());
}

on_both!(an_unknown_ca_is_refused_then_trusted_once_configured(untrusted));

async fn untrusted(b: Backend) -> Option<Smtp> {
    smtp_with(b, false, |_| {}).await
}

async fn an_unknown_ca_is_refused_then_trusted_once_configured(s: Smtp) {
    s.add("CA", "default", "tls", json!({"security": "tls"})).await;
    let id = s.queue(&mail("default", "ap@fabrikam.com", "trust me")).await;
    assert_eq!(s.drain().await, 1, "{}", s.status(&id).await);
    let st = s.status(&id).await;
    assert_eq!(st["state"], "failed", "{st}");
    let detail = st["error"]["detail"].as_str().unwrap();
    assert!(detail.contains("tls") && detail.to_lowercase().contains("certificate"), "{detail}");
    assert!(s.peer.auth_log().is_empty(), "nothing was sent over the untrusted connection");

    // A second instance that trusts the CA takes the retried message.
    let ca = s.peer.ca.clone();
    let trusting = s.l.app.spawn_peer(|set| set.mail.smtp_root_certificates = vec![ca]).await;
    let r = s.l.app.client_post_json(&format!("/api/v1/mail/{id}/retry"), &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(trusting.outbox.drain().await.unwrap(), 1);
    assert_eq!(s.status(&id).await["state"], "sent");
    assert_eq!(s.peer.copies(&mid(&id)).len(), 1);
}

async fn transient_replies_are_retried_and_permanent_ones_fail_at_once(s: Smtp) {
    s.add("DOCS", "default", "starttls", json!({})).await;
    let mut transient = vec![];
    for (to, tries) in [
        ("data-421-4.4.2-x1@fabrikam.com", 1),
        ("data-451-4.3.0-x2@fabrikam.com", 2),
        ("data-432-4.3.2-x1@fabrikam.com", 1),
    ] {
        transient.push((s.queue(&mail("default", to, to)).await, tries));
    }
    let refused = s.queue(&mail("default", "rcpt-550-5.1.1@fabrikam.com", "no such user")).await;
    // Each pass delivers what is due; retries are due at once here.
    for _ in 0..4 {
        s.drain().await;
    }
    for (id, tries) in transient {
        let st = s.status(&id).await;
        assert_eq!(st["state"], "sent", "{st}");
        let outcomes: Vec<&str> = st["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["outcome"].as_str().unwrap())
            .collect();
        let mut expected = vec!["transient"; tries];
        expected.push("sent");
        assert_eq!(outcomes, expected, "{st}");
        assert_eq!(s.peer.copies(&mid(&id)).len(), 1, "refused deliveries are not spooled");
    }
    let st = s.status(&refused).await;
    assert_eq!(st["state"], "failed", "{st}");
    assert_eq!(st["error"]["code"], "550 5.1.1", "{st}");
    assert!(
        st["error"]["detail"].as_str().unwrap().contains("rcpt-550-5.1.1@fabrikam.com"),
        "{st}"
    );
    assert_eq!(st["attempts"].as_array().unwrap().len(), 1, "{st}");
}

async fn the_rfc_1047_window_holds_or_resends_as_the_profile_says(s: Smtp) {
    s.add("HOLD", "default", "starttls", json!({"on_ambiguous": "hold"})).await;
    let p = s
        .profile("RESEND", "all_reports", "starttls", json!({"on_ambiguous": "resend"}))
        .await;
    assert_eq!(p.json["smtp"]["on_ambiguous"], "resend", "{}", p.text);
    // The reply to the final dot comes after our 1 s, the first time; or never, the
    // connection dropped with the message spooled.
    let held = s.queue(&mail("default", "hang-3000-x1@fabrikam.com", "held")).await;
    let dropped = s.queue(&mail("default", "close-x1@fabrikam.com", "dropped")).await;
    let resent = s.queue(&mail("all_reports", "hang-3000-x1@fabrikam.com", "resent")).await;
    // The resend is due at once here: the same drain sends it again.
    assert_eq!(s.drain().await, 4);

    for id in [&held, &dropped] {
        let st = s.status(id).await;
        assert_eq!(st["state"], "held", "{st}");
        assert_eq!(st["error"]["kind"], "ambiguous", "{st}");
        assert!(st["error"]["detail"].as_str().unwrap().contains("RFC 1047"), "{st}");
        assert_eq!(st["attempts"][0]["outcome"], "ambiguous", "{st}");
        assert_eq!(s.peer.copies(&mid(id)).len(), 1, "the server has it once");
    }
    let st = s.status(&resent).await;
    assert_eq!(st["state"], "sent", "{st}");
    assert_eq!(st["attempts"][0]["outcome"], "ambiguous", "{st}");
    assert!(st["attempts"][0]["detail"].as_str().unwrap().contains("sent again"), "{st}");
    assert_eq!(st["attempts"][1]["outcome"], "sent", "{st}");
    let copies = s.peer.copies(&mid(&resent));
    assert_eq!(copies.len(), 2, "sent twice, with the same Message-ID");

    // Held messages wait for a person.
    assert_eq!(s.drain().await, 0);
    assert_eq!(s.status(&held).await["state"], "held");
    assert_eq!(s.peer.copies(&mid(&held)).len(), 1, "a held message is not sent again");

    // Released by a person, it goes again; cancelled, it stays as it is.
    let r = s.l.app.client_post_json(&format!("/api/v1/mail/{held}/retry"), &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r =
        s.l.app
            .client_post_json(&format!("/api/v1/mail/{dropped}/cancel"), &json!({}))
            .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(s.drain().await, 1);
    assert_eq!(s.status(&held).await["state"], "sent");
    assert_eq!(s.peer.copies(&mid(&held)).len(), 2);
    assert_eq!(s.status(&dropped).await["state"], "cancelled");
}

async fn non_ascii_subjects_and_names_decode_in_pythons_email_parser(s: Smtp) {
    if !crate::helpers::python_has("email") {
        return;
    }
    s.add("INTL", "default", "starttls", json!({"from_name": "Société Générale — Compta"}))
        .await;
    let subject = "Relevé de compte — März 2026 ✓ 請求書";
    let body = json!({"company": "ACME", "function": "default",
        "to": [{"address": "joerg@fabrikam.com", "name": "Jörg Müller, Einkauf"}],
        "cc": [{"address": "zoe@fabrikam.com", "name": "Zoë \"Z\" Ünal"}],
        "bcc": ["audit@contoso.com"],
        "subject": subject, "text": "Grüße — voilà ✓", "html": "<p>Grüße — voilà ✓</p>", "importance": "high",
        "attachments": [{"name": "Rechnung_Ü_№7.pdf", "content_type": "application/pdf", "content_base64": "JVBERi0xLjQK"}]});
    let id = s.queue(&body).await;
    assert_eq!(s.drain().await, 1);
    assert_eq!(s.status(&id).await["state"], "sent");
    let (meta, raw) = s.peer.copies(&mid(&id)).remove(0);
    assert_eq!(
        meta["to"],
        json!(["joerg@fabrikam.com", "zoe@fabrikam.com", "audit@contoso.com"]),
        "Bcc in the envelope"
    );
    let script = r#"
import email, email.policy, json, sys
m = email.message_from_bytes(open(sys.argv[1], 'rb').read(), policy=email.policy.default)
att = [p for p in m.iter_attachments()]
print(json.dumps({
  "subject": m["subject"], "from_name": m["from"].addresses[0].display_name, "from": m["from"].addresses[0].addr_spec,
  "to_name": m["to"].addresses[0].display_name, "cc_name": m["cc"].addresses[0].display_name,
  "bcc": m["bcc"], "importance": m["importance"], "message_id": m["message-id"],
  "text": m.get_body(("plain",)).get_content().strip(), "html": m.get_body(("html",)).get_content().strip(),
  "file": att[0].get_filename(), "file_bytes": att[0].get_content().hex(),
}))
"#;
    let got: Value = serde_json::from_str(&python_reads(&s, script, &raw)).unwrap();
    assert_eq!(got["subject"], subject);
    assert_eq!(got["from_name"], "Société Générale — Compta");
    assert_eq!(got["from"], SMTP_USER);
    assert_eq!(got["to_name"], "Jörg Müller, Einkauf");
    assert_eq!(got["cc_name"], "Zoë \"Z\" Ünal");
    assert_eq!(got["bcc"], Value::Null, "no Bcc header");
    assert_eq!(got["importance"], "high");
    assert_eq!(got["message_id"], mid(&id));
    assert_eq!(got["text"], "Grüße — voilà ✓");
    assert_eq!(got["html"], "<p>Grüße — voilà ✓</p>");
    assert_eq!(got["file"], "Rechnung_Ü_№7.pdf");
    assert_eq!(got["file_bytes"], hex(b"%PDF-1.4\n"));
}

/// What a Python `script` printed for the raw message (its path is `sys.argv[1]`).
fn python_reads(s: &Smtp, script: &str, raw: &[u8]) -> String {
    let eml = s.peer.spool.path().join("read.eml");
    std::fs::write(&eml, raw).unwrap();
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&eml)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

async fn a_20_mb_attachment_arrives_byte_identical(s: Smtp) {
    if !crate::helpers::python_has("email") {
        return;
    }
    s.add("BIG", "default", "tls", json!({"security": "tls"})).await;
    let bytes: Vec<u8> = (0..20 * 1024 * 1024).map(|i: usize| ((i * 131 + i / 4099) % 256) as u8).collect();
    let r =
        s.l.app
            .http
            .post(s.l.app.url("/api/v1/uploads?name=ledger.bin"))
            .bearer_auth(&s.l.app.client_key)
            .header("content-type", "application/octet-stream")
            .body(bytes.clone())
            .send()
            .await
            .unwrap();
    let up = Answer::from(r).await;
    assert_eq!(up.status, 201, "{}", up.text);
    let mut body = mail("default", "ap@fabrikam.com", "the ledger");
    body["attachments"] = json!([{"upload": up.json["id"]}]);
    let id = s.queue(&body).await;
    // 27 MB of base64 takes longer than the test's 1 s answer time to write, which is
    // not the reply's wait: the data timeout covers writing and the reply together.
    let peer = s.l.app.spawn_peer(|set| set.mail.smtp_data_timeout_secs = 60).await;
    assert_eq!(peer.outbox.drain().await.unwrap(), 1);
    assert_eq!(s.status(&id).await["state"], "sent");
    let (_, raw) = s.peer.copies(&mid(&id)).remove(0);
    let script = r#"
import email, email.policy, hashlib, sys
m = email.message_from_bytes(open(sys.argv[1], 'rb').read(), policy=email.policy.default)
a = next(m.iter_attachments())
print(a.get_filename(), hashlib.sha256(a.get_content()).hexdigest())
"#;
    let out = python_reads(&s, script, &raw);
    let digest = {
        use sha2::Digest;
        hex(&sha2::Sha256::digest(&bytes))
    };
    assert_eq!(out.trim(), format!("ledger.bin {digest}"));
}

async fn exchanges_documented_refusals_fail_with_a_hint(s: Smtp) {
    s.add(
        "DISABLED",
        "default",
        "starttls",
        json!({"username": "smtp-auth-disabled@contoso.com"}),
    )
    .await;
    s.add("QUOTA", "all_reports", "starttls", json!({})).await;
    let disabled = s.queue(&mail("default", "ap@fabrikam.com", "auth disabled")).await;
    let quota = s.queue(&mail("all_reports", "data-554-5.2.0@fabrikam.com", "over quota")).await;
    assert_eq!(s.drain().await, 2);
    let st = s.status(&disabled).await;
    assert_eq!(st["state"], "failed", "{st}");
    assert_eq!(st["error"]["code"], "535 5.7.139", "{st}");
    assert!(st["error"]["detail"].as_str().unwrap().contains("xoauth2"), "{st}");
    // A spent submission quota waits long, not a backoff step.
    let st = s.status(&quota).await;
    assert_eq!(st["state"], "retrying", "{st}");
    assert_eq!(st["error"]["kind"], "throttled", "{st}");
    let next = chrono::DateTime::parse_from_rfc3339(st["next_attempt_at"].as_str().unwrap()).unwrap();
    assert!(next > chrono::Utc::now() + chrono::Duration::minutes(50), "{st}");
}

on_both!(an_xoauth2_token_the_server_refuses_is_refreshed_once_and_the_message_sent(no_reuse));

async fn no_reuse(b: Backend) -> Option<Smtp> {
    smtp_with(b, true, |s| s.mail.smtp_idle_secs = 0).await
}

async fn an_xoauth2_token_the_server_refuses_is_refreshed_once_and_the_message_sent(s: Smtp) {
    s.add("OAUTH", "default", "starttls", xoauth2()).await;
    let first = s.queue(&mail("default", "ap@fabrikam.com", "first")).await;
    assert_eq!(s.drain().await, 1);
    let (meta, _) = s.peer.copies(&mid(&first)).remove(0);
    let uti = meta["auth"]["uti"].as_str().unwrap().to_string();
    // The cached token now counts as expired at the server.
    s.peer.revoke(&uti);
    let second = s.queue(&mail("default", "ap@fabrikam.com", "second")).await;
    assert_eq!(s.drain().await, 1);
    let st = s.status(&second).await;
    assert_eq!(st["state"], "sent", "{st}");
    assert_eq!(st["attempts"].as_array().unwrap().len(), 1, "refreshed within the attempt: {st}");
    let (meta, _) = s.peer.copies(&mid(&second)).remove(0);
    assert_ne!(meta["auth"]["uti"], uti, "a new token");
    let tries = s.peer.auth_log().into_iter().filter(|a| a["method"] == "XOAUTH2").count();
    assert_eq!(tries, 3, "first, refused, refreshed");
}

on_both!(a_crash_at_every_step_is_recovered_as_the_profile_says(smtp_setup));

async fn a_crash_at_every_step_is_recovered_as_the_profile_says(s: Smtp) {
    use officebridge::mail::outbox::CrashPoint;
    s.add("HOLD", "default", "starttls", json!({"on_ambiguous": "hold"})).await;
    s.add("RESEND", "all_reports", "starttls", json!({"on_ambiguous": "resend"})).await;
    for (function, hold) in [("default", true), ("all_reports", false)] {
        for point in [CrashPoint::AfterClaim, CrashPoint::AfterSubmitting, CrashPoint::AfterSend] {
            let id = s.queue(&mail(function, "ap@fabrikam.com", &format!("{function} {point:?}"))).await;
            s.l.app.outbox.crash_at(Some(point));
            assert!(s.l.app.outbox.run_once().await.is_err(), "{point:?}: the delivery stopped");
            assert_eq!(s.status(&id).await["state"], "sending", "{point:?}: left to its lease");
            s.l.app
                .raw_text("UPDATE outbox SET lease_until_ms = 0 WHERE state = 'sending'")
                .await;
            s.drain().await;
            let st = s.status(&id).await;
            let copies = s.peer.copies(&mid(&id)).len();
            // "submitting" is committed before the data: a stop after it is the window,
            // whether or not the data had left (the server drops an unfinished DATA).
            let (state, expected_copies) = match (point, hold) {
                (CrashPoint::AfterClaim, _) => ("sent", 1),
                (CrashPoint::AfterSubmitting, true) => ("held", 0),
                (CrashPoint::AfterSubmitting, false) => ("sent", 1),
                (_, true) => ("held", 1),
                (_, false) => ("sent", 2),
            };
            assert_eq!(st["state"], state, "{function} {point:?}: {st}");
            assert_eq!(copies, expected_copies, "{function} {point:?}: {st}");
            if state == "held" {
                assert_eq!(st["error"]["kind"], "ambiguous", "{st}");
            }
            if point != CrashPoint::AfterClaim && !hold {
                let last = st["attempts"].as_array().unwrap().last().unwrap().clone();
                assert!(last["detail"].as_str().unwrap().contains("sent again"), "{st}");
            }
        }
    }
}

on_both!(a_profiles_test_message_reports_every_step_or_the_one_that_failed(smtp_setup));

async fn a_profiles_test_message_reports_every_step_or_the_one_that_failed(s: Smtp) {
    s.add("GOOD", "default", "starttls", json!({})).await;
    s.add("BADPASS", "all_reports", "tls", json!({"security": "tls", "password": "wrong"}))
        .await;
    s.add("PLAIN", "user_interface", "plain", insecure_no_auth()).await;
    let app = &s.l.app;

    let r = app
        .admin_post("/api/v1/profiles/GOOD/test", &json!({"to": "it@fabrikam.com"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let steps: Vec<&str> = r.json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["connect", "tls", "auth", "mail", "rcpt", "data"], "{}", r.text);
    assert!(r.json["steps"].as_array().unwrap().iter().all(|s| s["ok"] == true), "{}", r.text);
    assert!(
        r.json["steps"][5]["detail"].as_str().unwrap().contains("250"),
        "the server's reply: {}",
        r.text
    );
    let got = s.peer.messages();
    assert_eq!(got.len(), 1, "sent now, not queued");
    assert_eq!(got[0].0["to"], json!(["it@fabrikam.com"]));
    assert!(String::from_utf8_lossy(&got[0].1).contains("officebridge test message (profile GOOD)"));
    assert_eq!(s.drain().await, 0, "nothing was queued");

    let r = app
        .admin_post("/api/v1/profiles/BADPASS/test", &json!({"to": "it@fabrikam.com"}))
        .await;
    r.assert_problem(502, None);
    assert_eq!(r.json["type"], "/problems/profile-test-failed");
    assert_eq!(r.json["step"], "auth", "{}", r.text);
    assert!(r.json["detail"].as_str().unwrap().contains("535"), "{}", r.text);
    assert!(!r.text.contains("wrong"), "the password is never shown: {}", r.text);
    let steps: Vec<(&str, bool)> = r.json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["step"].as_str().unwrap(), s["ok"].as_bool().unwrap()))
        .collect();
    assert_eq!(steps, [("connect", true), ("auth", false)], "{}", r.text);

    app.admin_post("/api/v1/profiles/GOOD/test", &json!({"to": "not an address"}))
        .await
        .assert_problem(422, Some("to"));
    app.admin_post("/api/v1/profiles/GOOD/test", &json!({}))
        .await
        .assert_problem(422, Some("to"));
    app.admin_post("/api/v1/profiles/NOPE/test", &json!({"to": "it@fabrikam.com"}))
        .await
        .assert_problem(404, None);
    let r = app
        .client_post_json("/api/v1/profiles/GOOD/test", &json!({"to": "it@fabrikam.com"}))
        .await;
    r.assert_problem(403, None);

    // The same from the command line.
    let (ok, out, err) = crate::mail::cli_in(&s.l, "profiles", &["test", "PLAIN", "--to", "cli@fabrikam.com"]);
    assert!(ok, "{err}");
    assert_eq!(out["steps"][0]["step"], "connect", "{out}");
    assert_eq!(s.peer.messages().len(), 2);
    let (ok, out, err) = crate::mail::cli_in(&s.l, "profiles", &["test", "BADPASS", "--to", "cli@fabrikam.com"]);
    assert!(!ok);
    assert_eq!(out["failed_step"], "tls", "the CLI does not trust the test CA: {out}");
    assert!(err.contains("failed at tls"), "{err}");
}

on_both!(a_graph_profiles_test_message_reports_the_token_and_the_request_id(graph_test));

async fn graph_test(b: Backend) -> Option<Linked> {
    crate::mail::direct(b).await
}

async fn a_graph_profiles_test_message_reports_the_token_and_the_request_id(l: Linked) {
    let r = l
        .app
        .admin_post("/api/v1/profiles/DIRECT/test", &json!({"to": "it@fabrikam.com"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["steps"][0]["step"], "token", "{}", r.text);
    assert_eq!(r.json["steps"][1]["step"], "send", "{}", r.text);
    assert!(r.json["steps"][1]["detail"].as_str().unwrap().contains("request-id"), "{}", r.text);
    let b = crate::mail::mailbox(&l).await;
    let sent = b["sent"].as_array().unwrap();
    assert!(
        sent.iter().any(|m| m["subject"] == "officebridge test message (profile DIRECT)"),
        "{b}"
    );
    // A delegate profile needs the operator it sends as.
    l.app
        .admin_post("/api/v1/profiles/DELEGATE/test", &json!({"to": "it@fabrikam.com"}))
        .await
        .assert_problem(422, Some("X-Operator"));
    let r = Answer::from(
        l.app
            .http
            .post(l.app.url("/api/v1/profiles/DELEGATE/test"))
            .bearer_auth(&l.app.admin_key)
            .header("X-Operator", crate::onedrive::OPERATOR)
            .json(&json!({"to": "it@fabrikam.com"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.json["steps"][0]["detail"].as_str().unwrap().contains("delegated"), "{}", r.text);
}

on_both!(a_message_that_may_have_reached_the_server_stays_marked_through_later_failures(
    smtp_setup
));

/// A delivery stopped after the server took the data; the next one fails before its data (a
/// wrong password); the message is retried: its resend still says an earlier delivery may
/// have arrived — the mark is not lost to the failure in between.
async fn a_message_that_may_have_reached_the_server_stays_marked_through_later_failures(s: Smtp) {
    use officebridge::mail::outbox::CrashPoint;
    s.add("RESEND", "default", "starttls", json!({"on_ambiguous": "resend"})).await;
    let id = s.queue(&mail("default", "ap@fabrikam.com", "marked")).await;
    s.l.app.outbox.crash_at(Some(CrashPoint::AfterSend));
    assert!(s.l.app.outbox.run_once().await.is_err());
    assert_eq!(s.peer.copies(&mid(&id)).len(), 1, "the server has it");

    let profile = |password: &str| {
        json!({"name": "RESEND", "provider": "smtp", "apply_to": "system", "functions": ["default"],
               "smtp": {"host": "localhost", "port": s.peer.port("starttls"), "from": SMTP_USER, "username": SMTP_USER,
                        "password": password, "on_ambiguous": "resend"}})
    };
    let r = s.l.app.admin_put("/api/v1/profiles/RESEND", &profile("wrong")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    s.l.app
        .raw_text("UPDATE outbox SET lease_until_ms = 0 WHERE state = 'sending'")
        .await;
    assert_eq!(s.drain().await, 1);
    assert_eq!(s.status(&id).await["state"], "failed");

    let r = s.l.app.admin_put("/api/v1/profiles/RESEND", &profile(SMTP_PASSWORD)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s.l.app.client_post_json(&format!("/api/v1/mail/{id}/retry"), &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(s.drain().await, 1);
    let st = s.status(&id).await;
    assert_eq!(st["state"], "sent", "{st}");
    let last = st["attempts"].as_array().unwrap().last().unwrap().clone();
    assert!(last["detail"].as_str().unwrap().contains("sent again"), "{st}");
    assert_eq!(s.peer.copies(&mid(&id)).len(), 2);
}
