//! Delivery by SMTP (SPEC §3.4, issue 14), on lettre's connection-level client so that every
//! step — connect, TLS, EHLO, AUTH, MAIL, RCPT, DATA — is seen, timed and classified:
//!
//! - `starttls` upgrades before anything else is said and refuses to go on (credentials
//!   unsent) when the server does not offer STARTTLS; `tls` is TLS from the first byte;
//!   `none` only when the profile allows it. Certificates are checked against the Mozilla
//!   roots and `mail.smtp_root_certificates`; there is no way to accept an invalid one.
//! - AUTH PLAIN or LOGIN with the profile's password; XOAUTH2 with an application token of
//!   the profile's tenant for Exchange Online (`SMTP.SendAsApp`), refreshed once when the
//!   server refuses it (`535 5.7.3`).
//! - The message gets a `Message-ID` made from the outbox id, the same on every attempt, so a
//!   copy sent twice is recognisably the same message.
//! - SMTP has no idempotency key, and RFC 1047 describes its duplicate window: the server has
//!   the message but the client never hears the final reply. "submitting" is committed before
//!   the data is written; a reply lost after the final dot (a timeout, a dropped connection)
//!   or a process that stopped there (found "submitting" on the next claim) is *ambiguous*,
//!   and the profile's `on_ambiguous` decides: `hold` (a person releases or cancels it) or
//!   `resend` (sent again, the attempt saying so).
//!
//! Connections are kept open per profile for the next message, at most 3 per Microsoft 365
//! mailbox (Exchange Online's limit: `432 4.3.2` beyond it) and `mail.smtp_connections`
//! elsewhere.

use super::outbox::{Failure, Outbox, RunError};
use crate::config::MailSettings;
use crate::domain::{Importance, OnAmbiguous, ProfileName, Recipient, Secret, SmtpAuth, SmtpSecurity, SmtpSettings, StoredMessage};
use crate::identity::tokens::EXCHANGE_SCOPE;
use crate::store::models::SettingsView;
use crate::store::outbox::{Claimed, Finish, Outcome, Reason, Step};
use lettre::message::header::{ContentType, Header, HeaderName, HeaderValue};
use lettre::message::{Attachment as MimeAttachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
// `AsyncNetworkStream` is deprecated as "not meant to be public", but it is lettre's only way
// to put its TLS on a socket we opened (to turn Nagle off); see `SmtpClient::connect`.
#[allow(deprecated)]
use lettre::transport::smtp::client::AsyncNetworkStream;
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, Certificate, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use lettre::{Address, Message};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Exchange Online accepts at most 3 concurrent SMTP connections per mailbox.
const M365_CONNECTIONS: usize = 3;
/// What a held message waits for, said in its reason.
const HELD: &str = "held for a person to release (send again) or cancel (on_ambiguous: hold)";
/// How long a `554 5.2.0` (submission quota exceeded) waits before the next try: Exchange
/// counts its recipient rate limit over 24 hours.
const QUOTA_WAIT: Duration = Duration::from_secs(3600);

/// One step of a delivery, as `POST /api/v1/profiles/{name}/test` reports it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StepReport {
    /// `connect`, `tls`, `ehlo`, `auth`, `token`, `mail`, `rcpt`, `data`, `send`.
    pub step: String,
    pub ok: bool,
    /// The server's reply, or what went wrong.
    pub detail: String,
    pub ms: u64,
}

/// Where a failure happened: what it means depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connect,
    Tls,
    Auth,
    Envelope,
    /// Writing the data, before the final dot: the server cannot have the message.
    Data,
    /// The final dot written, its reply awaited: the RFC 1047 window.
    Reply,
}

impl Phase {
    fn step(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Tls => "tls",
            Self::Auth => "auth",
            Self::Envelope => "mail",
            Self::Data | Self::Reply => "data",
        }
    }
}

/// What went wrong, with the server's words when it said any.
#[derive(Debug, Clone)]
enum Fault {
    Reply {
        code: u16,
        enhanced: Option<String>,
        text: String,
    },
    Timeout,
    Network(String),
    /// A certificate or TLS handshake problem; will not change by retrying.
    Tls(String),
    /// The server lacks what the profile needs (STARTTLS, an AUTH mechanism, 8BITMIME).
    Unsupported(String),
}

impl Fault {
    fn of(e: &lettre::transport::smtp::Error) -> Self {
        use std::error::Error as _;
        let source = e.source().map(|s| s.to_string()).unwrap_or_default();
        if let Some(code) = e.status() {
            let code: u16 = code.to_string().parse().unwrap_or(0);
            return Self::Reply {
                code,
                enhanced: enhanced_code(&source),
                text: source,
            };
        }
        // rustls' verdicts reach us as the text of an I/O error inside lettre's connection
        // error ("invalid peer certificate: UnknownIssuer", "received fatal alert: …").
        let tls_verdict = ["invalid peer certificate", "peer is incompatible", "fatal alert", "certificate"]
            .iter()
            .any(|w| source.contains(w));
        if e.is_timeout() {
            Self::Timeout
        } else if e.is_tls() || tls_verdict {
            Self::Tls(source)
        } else if e.is_client() {
            Self::Unsupported(source)
        } else {
            Self::Network(if source.is_empty() { e.to_string() } else { source })
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Reply { code, text, .. } => format!("{code} {text}"),
            Self::Timeout => "no answer in time".into(),
            Self::Network(m) => format!("the connection failed: {m}"),
            Self::Tls(m) => format!("TLS failed: {m}"),
            Self::Unsupported(m) => m.clone(),
        }
    }
}

/// The RFC 3463 enhanced status code a reply's text starts with (`5.7.139`).
fn enhanced_code(text: &str) -> Option<String> {
    let word = text.split_whitespace().next()?;
    let mut parts = word.split('.');
    let class = parts.next()?;
    let (subject, detail) = (parts.next()?, parts.next()?);
    let digits = |s: &str, max: usize| !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit());
    (matches!(class, "2" | "4" | "5") && digits(subject, 3) && digits(detail, 3) && parts.next().is_none()).then(|| word.to_string())
}

fn reason(kind: &str, detail: String, code: Option<String>) -> Reason {
    Reason {
        kind: kind.into(),
        detail,
        code,
        status: None,
    }
}

/// How a failure at `phase` is treated (RFC 5321 §4.2.1, RFC 3463 and Exchange Online's
/// documented replies). `Err` is the RFC 1047 window, for `on_ambiguous` to decide.
fn classify(phase: Phase, fault: &Fault, host: &str) -> Result<Failure, Reason> {
    let at = |what: String| format!("{} at {}: {what}", host, phase.step());
    match fault {
        Fault::Reply { code, enhanced, text } => {
            let shown = enhanced.clone().map_or_else(|| code.to_string(), |e| format!("{code} {e}"));
            let hint = match (*code, enhanced.as_deref()) {
                (535, Some("5.7.139")) => Some(
                    "SMTP AUTH is disabled for this tenant or mailbox; enable it for the mailbox (Set-CASMailbox -SmtpClientAuthenticationDisabled $false) or use auth: xoauth2",
                ),
                (550, Some("5.7.30")) => Some("basic authentication is not supported for client submission; use auth: xoauth2"),
                (554, Some("5.2.252")) => Some("SendAsDenied: the signed-in mailbox may not send as the profile's from address"),
                (535, Some("5.7.3")) => Some(
                    "the token was refused; the app needs Exchange's SMTP.SendAsApp permission and a mailbox permission for its service principal (Add-MailboxPermission)",
                ),
                _ => None,
            };
            let detail = at(match hint {
                Some(h) => format!("{code} {text} ({h})"),
                None => format!("{code} {text}"),
            });
            if (*code, enhanced.as_deref()) == (554, Some("5.2.0")) {
                return Ok(Failure::Transient {
                    reason: reason(
                        "throttled",
                        format!("{detail}; the submission quota is spent, trying again in an hour"),
                        Some(shown),
                    ),
                    after: Some(QUOTA_WAIT),
                });
            }
            // The enhanced code's class wins over the reply's (RFC 3463 §2).
            let class = enhanced
                .as_deref()
                .and_then(|e| e.chars().next())
                .unwrap_or(if *code >= 500 { '5' } else { '4' });
            Ok(if class == '4' {
                Failure::Transient {
                    reason: reason(
                        if *code == 432 || *code == 421 { "throttled" } else { "transient" },
                        detail,
                        Some(shown),
                    ),
                    after: None,
                }
            } else {
                Failure::Permanent(reason("permanent", detail, Some(shown)))
            })
        }
        Fault::Timeout | Fault::Network(_) if phase == Phase::Reply => Err(reason(
            "ambiguous",
            at(format!(
                "{} after the message's data was sent, before the server's reply (the RFC 1047 window): the server may have the message",
                fault.describe()
            )),
            None,
        )),
        Fault::Timeout | Fault::Network(_) => Ok(Failure::Transient {
            reason: reason("transient", at(fault.describe()), None),
            after: None,
        }),
        Fault::Tls(_) | Fault::Unsupported(_) => Ok(Failure::permanent(at(fault.describe()))),
    }
}

/// `Importance:` (RFC 2156 §5.3.4), which Outlook and most clients show.
#[derive(Debug, Clone)]
struct ImportanceHeader(&'static str);

impl Header for ImportanceHeader {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Importance")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        match s.trim().to_ascii_lowercase().as_str() {
            "low" => Ok(Self("low")),
            "normal" => Ok(Self("normal")),
            "high" => Ok(Self("high")),
            other => Err(format!("'{other}' is not an importance").into()),
        }
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.to_string())
    }
}

/// The `Message-ID` of an outbox message: the same on every attempt.
pub fn message_id(outbox_id: &str, from: &str) -> String {
    let domain = from.rsplit_once('@').map_or("officebridge.invalid", |(_, d)| d);
    format!("<{outbox_id}.officebridge@{domain}>")
}

fn address(r: &str) -> Result<Address, Failure> {
    r.parse::<Address>()
        .map_err(|e| Failure::permanent(format!("'{r}' cannot be sent by SMTP: {e}")))
}

fn mailbox(r: &Recipient) -> Result<Mailbox, Failure> {
    Ok(Mailbox::new(r.name.clone(), address(r.address.as_str())?))
}

/// A file the message carries.
pub struct FileBody {
    pub name: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// The message as it goes on the wire: headers encoded (RFC 2047 for names and subjects,
/// RFC 2231 for file names), text and HTML as alternatives, files as attachments; Bcc only
/// in the envelope.
pub fn build(
    m: &StoredMessage,
    settings: &SmtpSettings,
    message_id: String,
    date: std::time::SystemTime,
    files: Vec<FileBody>,
) -> Result<Message, Failure> {
    let from = Mailbox::new(settings.from_name.clone(), address(settings.from.as_str())?);
    let mut b = Message::builder()
        .from(from)
        .subject(m.subject.clone())
        .message_id(Some(message_id))
        .date(date)
        .user_agent(format!("officebridge/{}", env!("CARGO_PKG_VERSION")));
    for r in &m.to {
        b = b.to(mailbox(r)?);
    }
    for r in &m.cc {
        b = b.cc(mailbox(r)?);
    }
    for r in &m.bcc {
        b = b.bcc(mailbox(r)?);
    }
    for r in &m.reply_to {
        b = b.reply_to(mailbox(r)?);
    }
    if m.importance != Importance::Normal {
        b = b.header(ImportanceHeader(m.importance.as_str()));
    }
    let text = m.text.clone();
    let html = m.html.clone();
    let content = match (text, html) {
        (Some(t), Some(h)) => Content::Multi(MultiPart::alternative_plain_html(t, h)),
        (None, Some(h)) => Content::Single(SinglePart::html(h)),
        (Some(t), None) => Content::Single(SinglePart::plain(t)),
        (None, None) => Content::Single(SinglePart::plain(String::new())),
    };
    let bad = |e: lettre::error::Error| Failure::permanent(format!("the message cannot be built: {e}"));
    if files.is_empty() {
        return match content {
            Content::Multi(mp) => b.multipart(mp),
            Content::Single(sp) => b.singlepart(sp),
        }
        .map_err(bad);
    }
    let mut mixed = match content {
        Content::Multi(mp) => MultiPart::mixed().multipart(mp),
        Content::Single(sp) => MultiPart::mixed().singlepart(sp),
    };
    for f in files {
        let ct = ContentType::parse(&f.content_type).unwrap_or(ContentType::parse("application/octet-stream").expect("a content type"));
        mixed = mixed.singlepart(MimeAttachment::new(f.name).body(f.bytes, ct));
    }
    b.multipart(mixed).map_err(bad)
}

enum Content {
    Single(SinglePart),
    Multi(MultiPart),
}

/// How the connection logs in.
#[derive(Clone)]
enum Login {
    None,
    Password { username: String, password: Secret },
    Token { mailbox: String, token: Secret },
}

impl Login {
    /// What a kept connection was logged in with, without the secret itself.
    fn fingerprint(&self) -> String {
        use sha2::Digest;
        let (who, secret) = match self {
            Self::None => return "-".into(),
            Self::Password { username, password } => (username, password),
            Self::Token { mailbox, token } => (mailbox, token),
        };
        let digest = sha2::Sha256::digest(secret.expose_secret().as_bytes());
        format!("{who}\u{1f}{:x}", digest)
    }
}

/// A connection ready for the next transaction.
struct Session {
    conn: AsyncSmtpConnection,
    key: String,
    since: Instant,
}

/// The SMTP side of the outbox: TLS roots, timeouts, kept connections and per-profile limits.
pub struct SmtpClient {
    roots: Vec<Vec<u8>>,
    command_timeout: Duration,
    data_timeout: Duration,
    per_profile: usize,
    /// An idle connection older than this is closed rather than reused (servers drop idle
    /// sessions after a few minutes; a stale one costs a reconnect anyway).
    idle_for: Duration,
    idle: Mutex<HashMap<String, Vec<Session>>>,
    limits: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl std::fmt::Debug for SmtpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpClient")
            .field("roots", &self.roots.len())
            .field("command_timeout", &self.command_timeout)
            .field("data_timeout", &self.data_timeout)
            .finish_non_exhaustive()
    }
}

/// Whether `host` is Exchange Online's SMTP submission endpoint.
fn is_microsoft_365(host: &str) -> bool {
    let h = host.to_ascii_lowercase();
    h == "smtp.office365.com" || h == "smtp-mail.outlook.com" || h.ends_with(".protection.outlook.com") || h.ends_with(".office365.com")
}

impl SmtpClient {
    /// Reads the configured root certificates; a file that is not PEM certificates stops
    /// the start with its name.
    pub fn new(settings: &MailSettings) -> anyhow::Result<Self> {
        use anyhow::Context;
        let mut roots = Vec::new();
        for path in &settings.smtp_root_certificates {
            let pem = std::fs::read(path).with_context(|| format!("mail.smtp_root_certificates: cannot read {}", path.display()))?;
            Certificate::from_pem(&pem)
                .map_err(|e| anyhow::anyhow!("mail.smtp_root_certificates: {} is not a PEM certificate: {e}", path.display()))?;
            roots.push(pem);
        }
        Ok(Self {
            roots,
            command_timeout: Duration::from_secs(settings.smtp_command_timeout_secs.max(1)),
            data_timeout: Duration::from_secs(settings.smtp_data_timeout_secs.max(1)),
            per_profile: settings.smtp_connections.max(1),
            idle_for: Duration::from_secs(settings.smtp_idle_secs),
            idle: Mutex::default(),
            limits: Mutex::default(),
        })
    }

    fn tls(&self, host: &str) -> Result<TlsParameters, Fault> {
        let mut b = TlsParameters::builder(host.trim_start_matches('[').trim_end_matches(']').to_string());
        for pem in &self.roots {
            b = b.add_root_certificate(Certificate::from_pem(pem).map_err(|e| Fault::Tls(e.to_string()))?);
        }
        b.build_rustls().map_err(|e| Fault::Tls(e.to_string()))
    }

    /// The connections `s` may have open at once: per mailbox for Microsoft 365 (Exchange
    /// counts them per mailbox, whichever profile opens them), per server else.
    fn limiter(&self, s: &SmtpSettings) -> Arc<Semaphore> {
        let (key, n) = if is_microsoft_365(&s.host) {
            (format!("m365\u{1f}{}", s.from.as_str().to_ascii_lowercase()), M365_CONNECTIONS)
        } else {
            (format!("{}\u{1f}{}", s.host.to_ascii_lowercase(), s.port), self.per_profile)
        };
        self.limits
            .lock()
            .expect("limits lock")
            .entry(key)
            .or_insert_with(|| Arc::new(Semaphore::new(n)))
            .clone()
    }

    async fn permit(&self, s: &SmtpSettings) -> OwnedSemaphorePermit {
        self.limiter(s).acquire_owned().await.expect("the semaphore is never closed")
    }

    fn pool_key(s: &SmtpSettings, login: &Login) -> String {
        format!("{}\u{1f}{}\u{1f}{:?}\u{1f}{}", s.host, s.port, s.security, login.fingerprint())
    }

    fn take_idle(&self, key: &str) -> Option<Session> {
        let mut idle = self.idle.lock().expect("idle lock");
        let list = idle.get_mut(key)?;
        while let Some(s) = list.pop() {
            if s.since.elapsed() < self.idle_for {
                return Some(s);
            }
        }
        None
    }

    fn put_idle(&self, s: Session) {
        let mut idle = self.idle.lock().expect("idle lock");
        let list = idle.entry(s.key.clone()).or_default();
        if list.len() < self.per_profile {
            list.push(s);
        }
    }

    /// Drops every kept connection logged in another way than `key` for the same server
    /// (a rotated password or a refreshed token).
    fn forget_others(&self, s: &SmtpSettings, key: &str) {
        let prefix = format!("{}\u{1f}{}\u{1f}", s.host, s.port);
        self.idle
            .lock()
            .expect("idle lock")
            .retain(|k, _| !k.starts_with(&prefix) || k == key);
    }

    async fn timed<T>(
        &self,
        limit: Duration,
        f: impl std::future::Future<Output = Result<T, lettre::transport::smtp::Error>>,
    ) -> Result<T, Fault> {
        match tokio::time::timeout(limit, f).await {
            Ok(r) => r.map_err(|e| Fault::of(&e)),
            Err(_) => Err(Fault::Timeout),
        }
    }

    /// TCP with Nagle's algorithm off (lettre writes the message and its final dot apart:
    /// with Nagle on and the server's delayed ACK, every message waited ~40 ms), TLS from the
    /// first byte for `tls`, then the greeting and EHLO.
    async fn connect(
        &self,
        host: &str,
        port: u16,
        implicit: Option<TlsParameters>,
        hello: &ClientId,
    ) -> Result<AsyncSmtpConnection, (Phase, Fault)> {
        let tcp = match tokio::time::timeout(self.command_timeout, tokio::net::TcpStream::connect((host, port))).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => return Err((Phase::Connect, Fault::Network(e.to_string()))),
            Err(_) => return Err((Phase::Connect, Fault::Timeout)),
        };
        let peer = tcp.peer_addr().map_err(|e| (Phase::Connect, Fault::Network(e.to_string())))?;
        tcp.set_nodelay(true).map_err(|e| (Phase::Connect, Fault::Network(e.to_string())))?;
        let stream: Box<dyn AsyncTokioStream> = match implicit {
            None => Box::new(Stream { inner: tcp, peer }),
            Some(tls) => {
                #[allow(deprecated)] // lettre's own way to put TLS on a stream it did not open
                let mut net = AsyncNetworkStream::use_existing_tokio1(Box::new(Stream { inner: tcp, peer }));
                self.timed(self.command_timeout, net.upgrade_tls(tls)).await.map_err(|f| match f {
                    Fault::Timeout => (Phase::Tls, f),
                    other => (Phase::Tls, Fault::Tls(other.describe())),
                })?;
                Box::new(Stream {
                    inner: tokio_util::compat::FuturesAsyncReadCompatExt::compat(net),
                    peer,
                })
            }
        };
        self.timed(self.command_timeout, AsyncSmtpConnection::connect_with_transport(stream, hello))
            .await
            .map_err(|f| (Phase::Connect, f))
    }

    /// A new connection: TCP (and TLS for `tls`), EHLO, STARTTLS for `starttls`, AUTH.
    async fn open(&self, s: &SmtpSettings, login: &Login, trace: &mut Trace) -> Result<AsyncSmtpConnection, (Phase, Fault)> {
        let hello = ClientId::Domain(s.from.as_str().rsplit_once('@').map_or("localhost", |(_, d)| d).to_string());
        let implicit = match s.security {
            SmtpSecurity::Tls => Some(self.tls(&s.host).map_err(|f| (Phase::Tls, f))?),
            _ => None,
        };
        let t = Instant::now();
        let host = s.host.trim_start_matches('[').trim_end_matches(']').to_string();
        let mut conn = self.connect(&host, s.port, implicit, &hello).await.map_err(|(phase, f)| {
            trace.push(phase.step(), false, f.describe(), t);
            (phase, f)
        })?;
        trace.push(
            "connect",
            true,
            format!(
                "connected to {}:{}{}",
                s.host,
                s.port,
                if s.security == SmtpSecurity::Tls { " with TLS" } else { "" }
            ),
            t,
        );
        if s.security == SmtpSecurity::Starttls {
            let t = Instant::now();
            if !conn.can_starttls() {
                conn.abort().await;
                let f = Fault::Unsupported(
                    "the server does not offer STARTTLS, which the profile requires; nothing more was sent (no credentials)".into(),
                );
                trace.push("tls", false, f.describe(), t);
                return Err((Phase::Tls, f));
            }
            let tls = self.tls(&s.host).map_err(|f| (Phase::Tls, f))?;
            if let Err(f) = self.timed(self.command_timeout, conn.starttls(tls, &hello)).await {
                trace.push("tls", false, f.describe(), t);
                return Err((
                    Phase::Tls,
                    if matches!(f, Fault::Reply { .. } | Fault::Timeout) {
                        f
                    } else {
                        Fault::Tls(f.describe())
                    },
                ));
            }
            trace.push("tls", true, "STARTTLS: the connection is encrypted".into(), t);
        }
        let (mechanisms, credentials, what) = match login {
            Login::None => return Ok(conn),
            Login::Password { username, password } => (
                vec![Mechanism::Plain, Mechanism::Login],
                Credentials::new(username.clone(), password.expose_secret().to_string()),
                format!("as {username}"),
            ),
            Login::Token { mailbox, token } => (
                vec![Mechanism::Xoauth2],
                Credentials::new(mailbox.clone(), token.expose_secret().to_string()),
                format!("XOAUTH2 as {mailbox}"),
            ),
        };
        let t = Instant::now();
        match self.timed(self.command_timeout, conn.auth(&mechanisms, &credentials)).await {
            Ok(r) => {
                trace.push("auth", true, format!("{what}: {}", reply_text(&r)), t);
                Ok(conn)
            }
            Err(f) => {
                trace.push("auth", false, format!("{what}: {}", f.describe()), t);
                conn.abort().await;
                Err((Phase::Auth, f))
            }
        }
    }

    /// One transaction on an open connection. `submitting` is called once the server is
    /// ready for the data (after `354`), before a byte of it is written.
    async fn transaction(
        &self,
        conn: &mut AsyncSmtpConnection,
        envelope: &lettre::address::Envelope,
        bytes: &[u8],
        trace: &mut Trace,
        submitting: impl std::future::Future<Output = Result<(), RunError>>,
    ) -> Result<Result<String, (Phase, Fault)>, RunError> {
        let mut params = vec![];
        let non_ascii = envelope
            .from()
            .into_iter()
            .chain(envelope.to())
            .any(|a| !AsRef::<str>::as_ref(a).is_ascii());
        if non_ascii {
            if !conn.server_info().supports_feature(Extension::SmtpUtfEight) {
                return Ok(Err((
                    Phase::Envelope,
                    Fault::Unsupported("the server does not accept non-ASCII addresses (SMTPUTF8)".into()),
                )));
            }
            params.push(MailParameter::SmtpUtfEight);
        }
        if !bytes.is_ascii() {
            params.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        let t = Instant::now();
        match self
            .timed(self.command_timeout, conn.command(Mail::new(envelope.from().cloned(), params)))
            .await
        {
            Ok(r) => trace.push("mail", true, reply_text(&r), t),
            Err(f) => {
                trace.push("mail", false, f.describe(), t);
                return Ok(Err((Phase::Envelope, f)));
            }
        }
        for to in envelope.to() {
            let t = Instant::now();
            match self.timed(self.command_timeout, conn.command(Rcpt::new(to.clone(), vec![]))).await {
                Ok(r) => trace.push("rcpt", true, format!("{to}: {}", reply_text(&r)), t),
                Err(f) => {
                    trace.push("rcpt", false, format!("{to}: {}", f.describe()), t);
                    return Ok(Err((Phase::Envelope, f)));
                }
            }
        }
        let t = Instant::now();
        if let Err(f) = self.timed(self.command_timeout, conn.command(Data)).await {
            trace.push("data", false, f.describe(), t);
            return Ok(Err((Phase::Envelope, f)));
        }
        submitting.await?;
        // lettre writes each part the iterator yields before asking for the next, then the
        // final dot, then reads the reply: once the iterator is spent, a failure is in the
        // RFC 1047 window.
        let written = AtomicBool::new(false);
        let parts = [bytes].into_iter().chain(std::iter::from_fn(|| {
            written.store(true, Ordering::SeqCst);
            None
        }));
        let t = Instant::now();
        match self.timed(self.data_timeout, conn.message_iter(parts)).await {
            Ok(r) => {
                let text = reply_text(&r);
                trace.push("data", true, format!("{} bytes: {text}", bytes.len()), t);
                Ok(Ok(text))
            }
            Err(f) => {
                trace.push("data", false, f.describe(), t);
                let phase = if written.load(Ordering::SeqCst) || matches!(f, Fault::Reply { .. }) {
                    Phase::Reply
                } else {
                    Phase::Data
                };
                Ok(Err((phase, f)))
            }
        }
    }
}

/// A connection lettre reads and writes through: TCP, or TLS over it for `tls`.
#[derive(Debug)]
struct Stream<S> {
    inner: S,
    peer: std::net::SocketAddr,
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Stream<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Stream<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Sync + Unpin + std::fmt::Debug> AsyncTokioStream for Stream<S> {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        Ok(self.peer)
    }
}

fn reply_text(r: &lettre::transport::smtp::response::Response) -> String {
    format!("{} {}", r.code(), r.message().collect::<Vec<_>>().join(" "))
}

/// The steps of one delivery.
#[derive(Debug, Default)]
pub struct Trace(pub Vec<StepReport>);

impl Trace {
    pub fn push(&mut self, step: &str, ok: bool, detail: String, since: Instant) {
        self.0.push(StepReport {
            step: step.into(),
            ok,
            detail,
            ms: since.elapsed().as_millis() as u64,
        });
    }
}

/// A profile's SMTP settings with what it logs in with.
pub struct Target {
    pub profile: ProfileName,
    pub settings: SmtpSettings,
    password: Option<Secret>,
}

impl Target {
    /// The SMTP profile named `name`.
    pub async fn load(ob: &Outbox, name: &str) -> Result<Self, Failure> {
        let name = ProfileName::parse(name).map_err(Failure::permanent)?;
        let profile = ob.store.get_profile(&name).await.map_err(Failure::from_store)?;
        let SettingsView::Smtp { settings, .. } = profile.settings else {
            return Err(Failure::permanent(format!("profile {name} no longer sends by SMTP")));
        };
        let password = match settings.auth {
            SmtpAuth::Password { .. } => ob.store.profile_secret(&name).await.map_err(Failure::from_store)?,
            _ => None,
        };
        Ok(Self {
            profile: name,
            settings,
            password,
        })
    }

    async fn login(&self, ob: &Outbox) -> Result<Login, Failure> {
        match &self.settings.auth {
            SmtpAuth::None => Ok(Login::None),
            SmtpAuth::Password { username } => match &self.password {
                Some(p) => Ok(Login::Password {
                    username: username.clone(),
                    password: p.clone(),
                }),
                None => Err(Failure::permanent(format!(
                    "profile {} has no SMTP password set (smtp.password)",
                    self.profile
                ))),
            },
            SmtpAuth::Xoauth2 { tenant } => {
                let token = ob
                    .graph
                    .tokens()
                    .app_token_for(tenant, None, EXCHANGE_SCOPE)
                    .await
                    .map_err(|e| Failure::from_token(&e))?;
                Ok(Login::Token {
                    mailbox: self.settings.from.as_str().to_string(),
                    token,
                })
            }
        }
    }

    async fn token_refused(&self, ob: &Outbox, login: &Login) {
        if let (SmtpAuth::Xoauth2 { tenant }, Login::Token { token, .. }) = (&self.settings.auth, login) {
            ob.graph.tokens().app_token_rejected(tenant, token).await;
        }
    }

    /// Sends `message` now: a kept connection when `reuse`, else a new one (logging in
    /// again once with a new token when an XOAUTH2 token is refused). `submitting` runs
    /// once the server waits for the data.
    async fn send(
        &self,
        ob: &Outbox,
        message: &Message,
        reuse: bool,
        trace: &mut Trace,
        submitting: impl std::future::Future<Output = Result<(), RunError>>,
    ) -> Result<Result<String, Failure>, RunError> {
        let smtp = &ob.smtp;
        let s = &self.settings;
        let _permit = smtp.permit(s).await;
        let mut login = match self.login(ob).await {
            Ok(l) => l,
            Err(f) => return Ok(Err(f)),
        };
        let bytes = message.formatted();
        let envelope = message.envelope();
        let mut key = SmtpClient::pool_key(s, &login);
        let mut kept = if reuse { smtp.take_idle(&key) } else { None };
        let mut refreshed = false;
        let mut conn = loop {
            if let Some(session) = kept.take() {
                break session.conn;
            }
            match smtp.open(s, &login, trace).await {
                Ok(c) => {
                    smtp.forget_others(s, &key);
                    break c;
                }
                Err((
                    Phase::Auth,
                    Fault::Reply {
                        code: 535, ref enhanced, ..
                    },
                )) if !refreshed && matches!(login, Login::Token { .. }) && enhanced.as_deref() != Some("5.7.139") => {
                    // lettre fixes the credentials when a connection logs in: a refused
                    // token means a new token and a new connection, once.
                    refreshed = true;
                    self.token_refused(ob, &login).await;
                    login = match self.login(ob).await {
                        Ok(l) => l,
                        Err(f) => return Ok(Err(f)),
                    };
                    key = SmtpClient::pool_key(s, &login);
                }
                Err((phase, fault)) => return Ok(Err(self.failure(phase, &fault))),
            }
        };
        let mut submitting = Some(submitting);
        let mut outcome = smtp
            .transaction(&mut conn, envelope, &bytes, trace, async {
                match submitting.take() {
                    Some(f) => f.await,
                    None => Ok(()),
                }
            })
            .await?;
        // A kept connection the server has closed meanwhile fails before the data: once more
        // on a new one, nothing having been sent.
        if reuse && matches!(outcome, Err((Phase::Envelope, Fault::Network(_) | Fault::Timeout))) {
            conn = match smtp.open(s, &login, trace).await {
                Ok(c) => c,
                Err((phase, fault)) => return Ok(Err(self.failure(phase, &fault))),
            };
            outcome = smtp
                .transaction(&mut conn, envelope, &bytes, trace, async {
                    match submitting.take() {
                        Some(f) => f.await,
                        None => Ok(()),
                    }
                })
                .await?;
        }
        match outcome {
            Ok(reply) => {
                if reuse && !smtp.idle_for.is_zero() {
                    smtp.put_idle(Session {
                        conn,
                        key,
                        since: Instant::now(),
                    });
                } else {
                    let _ = tokio::time::timeout(smtp.command_timeout, conn.quit()).await;
                }
                Ok(Ok(reply))
            }
            Err((phase, fault)) => {
                conn.abort().await;
                Ok(Err(self.failure(phase, &fault)))
            }
        }
    }

    /// Sends `message` on a new connection that is closed after it (a profile's test).
    pub async fn send_once(&self, ob: &Outbox, message: &Message, trace: &mut Trace) -> Result<String, Failure> {
        match self.send(ob, message, false, trace, async { Ok(()) }).await {
            Ok(r) => r,
            Err(e) => Err(Failure::transient(e.to_string())),
        }
    }

    fn failure(&self, phase: Phase, fault: &Fault) -> Failure {
        classify(phase, fault, &self.settings.host).unwrap_or_else(Failure::Ambiguous)
    }
}

/// The outbox's SMTP delivery of one claimed message.
pub async fn deliver(ob: &Outbox, claim: &Claimed, owner: &str) -> Result<Result<Finish, Failure>, RunError> {
    let target = match Target::load(ob, &claim.profile).await {
        Ok(t) => t,
        Err(f) => return Ok(Err(f)),
    };
    let lease = ob.policy.lease_ms;
    let on_ambiguous = target.settings.on_ambiguous;
    // Found "submitting": an earlier delivery stopped with the data on its way (the process
    // ended, or the reply was lost and the profile resends), and whether the server has the
    // message is not known. The step stays "submitting" until a delivery ends — sent, held, or
    // failed before the data — so a process that stops again meanwhile leaves the same mark.
    let after_crash = claim.step == Step::Submitting;
    if after_crash {
        let why = "an earlier delivery stopped while the message's data was being sent, before the server's reply was recorded: the server may have the message";
        match on_ambiguous {
            OnAmbiguous::Hold => {
                return Ok(Ok(Finish::Held {
                    reason: reason("ambiguous", format!("{why}; {HELD}"), None),
                    outcome: Outcome::Ambiguous,
                }));
            }
            OnAmbiguous::Resend => {}
        }
    }
    let mut files = Vec::with_capacity(claim.attachments.len());
    for a in &claim.attachments {
        match ob.store.blob_range(&a.blob_id, 0, a.size as u64).await {
            Ok(bytes) => files.push(FileBody {
                name: a.name.clone(),
                content_type: a.content_type.clone(),
                bytes,
            }),
            Err(e) => return Ok(Err(Failure::unreadable_attachment(&e))),
        }
    }
    let mid = message_id(&claim.id, target.settings.from.as_str());
    let date = std::time::UNIX_EPOCH + Duration::from_millis(claim.created_ms.max(0) as u64);
    let message = match build(&claim.message, &target.settings, mid.clone(), date, files) {
        Ok(m) => m,
        Err(f) => return Ok(Err(f)),
    };
    let mut trace = Trace::default();
    let submitting = async {
        ob.store.mail_step(&claim.id, owner, Step::Submitting, None, lease).await?;
        ob.checkpoint(super::outbox::CrashPoint::AfterSubmitting)
    };
    let sent = target.send(ob, &message, true, &mut trace, submitting).await?;
    drop(message);
    let resent = if after_crash {
        " (sent again: an earlier delivery may have reached the server; on_ambiguous: resend)"
    } else {
        ""
    };
    match sent {
        Ok(reply) => {
            ob.checkpoint(super::outbox::CrashPoint::AfterSend)?;
            Ok(Ok(Finish::Sent {
                internet_message_id: Some(mid),
                detail: format!("{} accepted it: {reply}{resent}", target.settings.host),
            }))
        }
        Err(f) => {
            // Anything but the window: this delivery's data did not arrive, and the next try
            // starts over — unless an earlier one may have reached the server.
            if !matches!(f, Failure::Ambiguous(_)) && !after_crash && trace.0.iter().any(|s| s.step == "data") {
                ob.store.mail_step(&claim.id, owner, Step::New, None, lease).await?;
            }
            match (f, on_ambiguous) {
                (Failure::Ambiguous(r), OnAmbiguous::Hold) => Ok(Ok(Finish::Held {
                    reason: Reason {
                        detail: format!("{}; {HELD}", r.detail),
                        ..r
                    },
                    outcome: Outcome::Ambiguous,
                })),
                (Failure::Ambiguous(r), OnAmbiguous::Resend) => Ok(Err(Failure::Ambiguous(Reason {
                    detail: format!(
                        "{}; it will be sent again with the same Message-ID (on_ambiguous: resend)",
                        r.detail
                    ),
                    ..r
                }))),
                (f, _) => Ok(Err(f)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enhanced_codes_are_read_from_the_reply_text() {
        assert_eq!(enhanced_code("5.7.139 Authentication unsuccessful").as_deref(), Some("5.7.139"));
        assert_eq!(
            enhanced_code("4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded").as_deref(),
            Some("4.3.2")
        );
        assert_eq!(enhanced_code("Error: authentication failed"), None);
        assert_eq!(enhanced_code("1.2.3 no"), None);
        assert_eq!(enhanced_code("5.7 short"), None);
    }

    fn reply(code: u16, text: &str) -> Fault {
        Fault::Reply {
            code,
            enhanced: enhanced_code(text),
            text: text.into(),
        }
    }

    #[test]
    fn replies_are_classified_by_enhanced_code_then_class() {
        let kind = |p, f: &Fault| match classify(p, f, "smtp.test") {
            Ok(Failure::Transient { reason, after }) => format!("transient:{}:{}", reason.kind, after.is_some()),
            Ok(Failure::Permanent(r)) => format!("permanent:{}", r.code.unwrap_or_default()),
            Ok(other) => format!("{other:?}"),
            Err(_) => "ambiguous".into(),
        };
        assert_eq!(kind(Phase::Envelope, &reply(451, "4.3.0 try later")), "transient:transient:false");
        assert_eq!(
            kind(Phase::Auth, &reply(432, "4.3.2 too many connections")),
            "transient:throttled:false"
        );
        assert_eq!(
            kind(
                Phase::Reply,
                &reply(554, "5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException")
            ),
            "transient:throttled:true"
        );
        assert_eq!(kind(Phase::Envelope, &reply(550, "5.1.1 unknown")), "permanent:550 5.1.1");
        assert_eq!(kind(Phase::Auth, &reply(535, "Error: authentication failed")), "permanent:535");
        // The enhanced class wins over the reply's.
        assert_eq!(kind(Phase::Envelope, &reply(550, "4.7.0 greylisted")), "transient:transient:false");
        assert_eq!(kind(Phase::Reply, &Fault::Timeout), "ambiguous");
        assert_eq!(kind(Phase::Data, &Fault::Network("reset".into())), "transient:transient:false");
        assert_eq!(kind(Phase::Tls, &Fault::Tls("unknown issuer".into())), "permanent:");
        match classify(
            Phase::Auth,
            &reply(535, "5.7.139 Authentication unsuccessful"),
            "smtp.office365.com",
        ) {
            Ok(Failure::Permanent(r)) => assert!(r.detail.contains("Set-CASMailbox"), "{}", r.detail),
            other => panic!("{other:?}"),
        }
    }

    fn settings(host: &str, from: &str) -> SmtpSettings {
        SmtpSettings {
            host: host.into(),
            port: 587,
            security: SmtpSecurity::Starttls,
            allow_insecure: false,
            from: crate::domain::EmailAddress::parse(from).unwrap(),
            from_name: None,
            auth: SmtpAuth::None,
            on_ambiguous: OnAmbiguous::Hold,
        }
    }

    #[test]
    fn microsoft_365_gets_three_connections_per_mailbox_others_the_setting() {
        let client = SmtpClient::new(&MailSettings {
            smtp_connections: 8,
            ..MailSettings::default()
        })
        .unwrap();
        let a = client.limiter(&settings("smtp.office365.com", "ar@contoso.com"));
        assert_eq!(a.available_permits(), 3);
        // The same mailbox through another profile shares the three; another mailbox has its own.
        let again = client.limiter(&settings("SMTP.office365.com", "AR@contoso.com"));
        assert!(Arc::ptr_eq(&a, &again));
        let other = client.limiter(&settings("smtp.office365.com", "ap@contoso.com"));
        assert!(!Arc::ptr_eq(&a, &other));
        assert_eq!(
            client.limiter(&settings("relay.contoso.com", "ar@contoso.com")).available_permits(),
            8
        );
        assert!(is_microsoft_365("contoso-com.mail.protection.outlook.com"));
        assert!(!is_microsoft_365("smtp.gmail.com"));
    }

    #[test]
    fn the_message_id_is_the_outbox_ids() {
        assert_eq!(message_id("8d1c", "ar@contoso.com"), "<8d1c.officebridge@contoso.com>");
    }
}
