//! Settings: built-in defaults, then a TOML file, then `OFFICEBRIDGE_*` environment variables
//! (`__` separates a section from its key), with `*_FILE` variants for secrets.

use crate::domain::Secret;
use anyhow::{Context, bail};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The commented example configuration, printed by `officebridge default-config`.
pub const EXAMPLE_TOML: &str = include_str!("../officebridge.example.toml");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HttpSettings {
    pub json_body_limit: usize,
    pub request_timeout_secs: u64,
    /// Seconds a connection may take to send a request's headers.
    pub header_read_timeout_secs: u64,
}

/// Where Prometheus metrics are served.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MetricsSettings {
    /// A listener of their own (e.g. `127.0.0.1:9090`), so they are not on the public port;
    /// unset, `/metrics` is served beside the API.
    pub listen: Option<SocketAddr>,
}

/// Bounds on sign-in state that anybody can make officebridge keep.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SigninSettings {
    /// Seconds a sign-in link issued by the API stays usable.
    pub link_lifetime_secs: u64,
    /// Open links and sign-ins kept per operator (the oldest are dropped) ...
    pub max_pending_per_operator: usize,
    /// ... and in all.
    pub max_pending: usize,
}

impl Default for SigninSettings {
    fn default() -> Self {
        Self {
            link_lifetime_secs: 900,
            max_pending_per_operator: 5,
            max_pending: 1000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportSettings {
    /// Exports running at once; the rest wait in line.
    pub max_concurrent: usize,
    /// Seconds a finished background export stays downloadable.
    pub retention_secs: u64,
    /// Largest NDJSON or CSV body (streamed, so memory does not depend on it).
    pub max_body_bytes: u64,
    /// Largest JSON grid document or import request (parsed whole).
    pub max_json_bytes: u64,
    /// Longest NDJSON line, in bytes.
    pub max_line_bytes: usize,
    /// Seconds a request body may send nothing before the export is abandoned.
    pub body_idle_timeout_secs: u64,
    /// Bodies are spooled to disk before an export takes a slot; at most this many bytes in all...
    pub max_spool_bytes: u64,
    /// ... and this many for one API key.
    pub max_spool_bytes_per_key: u64,
    /// Background exports waiting or running, in all ...
    pub max_queued_jobs: usize,
    /// ... and for one API key.
    pub max_queued_jobs_per_key: usize,
}

impl Default for ExportSettings {
    fn default() -> Self {
        Self {
            max_concurrent: 2,
            retention_secs: 3600,
            max_body_bytes: 4 << 30,
            max_json_bytes: 64 << 20,
            max_line_bytes: 16 << 20,
            body_idle_timeout_secs: 30,
            max_spool_bytes: 16 << 30,
            max_spool_bytes_per_key: 8 << 30,
            max_queued_jobs: 64,
            max_queued_jobs_per_key: 16,
        }
    }
}

/// Mail: templates, and the outbox's workers, retries and retention.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct MailSettings {
    /// A folder whose `{template}/…` and `companies/{CODE}/{template}/…` files win, piece by
    /// piece, over the built-in templates.
    pub templates_dir: Option<PathBuf>,
    /// Outbox workers in this instance; 0: this instance only queues (others deliver).
    pub workers: usize,
    /// Seconds a worker holds a message; a worker that dies leaves it to be taken over after.
    pub lease_secs: u64,
    /// First retry delay in milliseconds, doubled each attempt (with jitter) ...
    pub retry_base_ms: u64,
    /// ... up to this many seconds.
    pub retry_cap_secs: u64,
    /// Attempts before a message fails.
    pub max_attempts: u32,
    /// Seconds after queueing when an undelivered message fails.
    pub max_age_secs: u64,
    /// Milliseconds Exchange is given to file a sent message in Sent Items before a send
    /// whose answer was lost is judged.
    pub sent_grace_ms: u64,
    /// How often an idle worker looks for due messages (other instances queue too).
    pub poll_ms: u64,
    /// Largest `POST /api/v1/mail` body (inline base64 attachments); larger files go through
    /// `POST /api/v1/uploads`.
    pub max_json_bytes: u64,
    /// Seconds an upload stays attachable.
    pub upload_retention_secs: u64,
    /// Seconds a report output stays listed and attachable.
    pub report_retention_secs: u64,
    /// Outlook's upload budget per mailbox: bytes ...
    pub upload_budget_bytes: u64,
    /// ... per this many seconds.
    pub upload_budget_window_secs: u64,
    /// Extra root certificates (PEM files) trusted for SMTP servers, beside the Mozilla
    /// roots: a company CA in front of an internal relay. There is no switch to accept
    /// invalid certificates.
    pub smtp_root_certificates: Vec<PathBuf>,
    /// Seconds an SMTP server has to answer a command (connect, EHLO, STARTTLS, AUTH, MAIL,
    /// RCPT, DATA).
    pub smtp_command_timeout_secs: u64,
    /// Seconds an SMTP server has to accept the message's data and answer the final dot
    /// (RFC 5321 §4.5.3.2 suggests 10 minutes); a timeout here is the RFC 1047 window.
    pub smtp_data_timeout_secs: u64,
    /// SMTP connections open at once per server (for Microsoft 365 hosts at most 3 per
    /// mailbox, Exchange Online's limit), kept open for the next message.
    pub smtp_connections: usize,
    /// Seconds an open SMTP connection is kept for the next message; 0: a connection per
    /// message.
    pub smtp_idle_secs: u64,
}

impl Default for MailSettings {
    fn default() -> Self {
        Self {
            templates_dir: None,
            workers: 4,
            lease_secs: 300,
            retry_base_ms: 30_000,
            retry_cap_secs: 3600,
            max_attempts: 10,
            max_age_secs: 3 * 24 * 3600,
            sent_grace_ms: 120_000,
            poll_ms: 1000,
            max_json_bytes: 16 << 20,
            upload_retention_secs: 24 * 3600,
            report_retention_secs: 7 * 24 * 3600,
            upload_budget_bytes: 150 << 20,
            upload_budget_window_secs: 300,
            smtp_root_certificates: Vec::new(),
            smtp_command_timeout_secs: 60,
            smtp_data_timeout_secs: 600,
            smtp_connections: 8,
            smtp_idle_secs: 30,
        }
    }
}

/// Bounds on an imported workbook, checked before anything is built from it (issue 10): an
/// XLSX is a zip, and a few kilobytes of it can inflate to gigabytes or name cells a million
/// rows apart.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ImportSettings {
    /// Largest inflated size of any one part of the workbook (a sheet, the shared strings).
    pub max_part_bytes: u64,
    /// Largest inflated size of all its parts together.
    pub max_inflated_bytes: u64,
    /// Most cells the imported sheet may hold (every `<c>` element counts, empty or not).
    pub max_cells: u64,
    /// Longest text in one cell, in characters (Excel's own limit is 32,767).
    pub max_cell_chars: usize,
    /// Most rows of an import's `original` grid (each is kept in memory for the change set).
    pub max_original_rows: usize,
    /// Seconds an import may take once it has its slot.
    pub timeout_secs: u64,
}

impl Default for ImportSettings {
    fn default() -> Self {
        Self {
            max_part_bytes: 128 << 20,
            max_inflated_bytes: 256 << 20,
            max_cells: 2_000_000,
            max_cell_chars: 32_767,
            max_original_rows: 1_048_576,
            timeout_secs: 120,
        }
    }
}

/// Contact lookup (SPEC §3.3): how long each source may take, how fresh the index of
/// personal contacts is kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ContactsSettings {
    /// Milliseconds each source of a search may take; the whole answer comes within it.
    pub source_budget_ms: u64,
    /// Seconds before a mailbox's index of personal contacts is refreshed again (with
    /// `contacts/delta`, in the background; the search answers from the index meanwhile).
    pub refresh_secs: u64,
    /// Milliseconds the first indexing of a mailbox may take before a browse answers.
    pub first_index_ms: u64,
}

impl Default for ContactsSettings {
    fn default() -> Self {
        Self {
            source_budget_ms: 400,
            refresh_secs: 300,
            first_index_ms: 10_000,
        }
    }
}

/// Grids the ERP shares with operators for the Excel pane (SPEC §3.6).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct GridSettings {
    /// Hours a shared grid (and the change set published for it) is kept.
    pub retention_hours: u64,
    /// The most cells (rows × columns) one grid may hold.
    pub max_cells: u64,
    /// The most rows one `GET …/rows` answers (its `limit`).
    pub max_block_rows: u64,
}

impl Default for GridSettings {
    fn default() -> Self {
        Self {
            retention_hours: 24,
            max_cells: 5_000_000,
            max_block_rows: 50_000,
        }
    }
}

/// The Office add-in's manifests and panes (SPEC §3.6).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct AddinSettings {
    /// The add-in's id (a GUID), which must never change once the add-in is deployed; when
    /// unset it is derived from `public_url` (stable while that stays the same).
    pub id: Option<uuid::Uuid>,
    /// The name Office shows (at most 30 characters: the unified manifest's short name).
    pub name: String,
    /// Who publishes the add-in, as Office shows it.
    pub provider: String,
    /// The page Office links as the add-in's support page; this server's `/` when unset.
    pub support_url: Option<url::Url>,
    /// The tenant whose app registration the manifests name, when several are configured.
    pub tenant: Option<String>,
    /// Where the panes load Office.js from: Microsoft's CDN (the only outside script).
    pub office_js_url: String,
}

impl Default for AddinSettings {
    fn default() -> Self {
        Self {
            id: None,
            name: "officebridge".into(),
            provider: "officebridge".into(),
            support_url: None,
            tenant: None,
            office_js_url: "https://appsforoffice.microsoft.com/lib/1/hosted/office.js".into(),
        }
    }
}

impl AddinSettings {
    fn check(&self) -> anyhow::Result<()> {
        // The unified manifest's short name and developer name are at most 30 and 32
        // characters; the XML display name 125.
        if self.name.trim().is_empty() || self.name.chars().count() > 30 {
            bail!("addin.name must be 1 to 30 characters");
        }
        if self.provider.trim().is_empty() || self.provider.chars().count() > 32 {
            bail!("addin.provider must be 1 to 32 characters");
        }
        if self.name.chars().chain(self.provider.chars()).any(char::is_control) {
            bail!("addin.name and addin.provider must not hold control characters");
        }
        if let Some(u) = &self.support_url
            && u.scheme() != "https"
        {
            bail!("addin.support_url must be an https URL");
        }
        Ok(())
    }
}

/// Where exports land in OneDrive and how they are uploaded (SPEC §3.2).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct OneDriveSettings {
    /// The folder in the operator's OneDrive.
    pub folder: String,
    /// Per tenant code, a folder instead of `folder`.
    pub tenant_folders: std::collections::BTreeMap<String, String>,
    /// Per operator code, a folder instead of the tenant's.
    pub operator_folders: std::collections::BTreeMap<String, String>,
    /// Files up to this size are uploaded in one PUT; larger ones in an upload session.
    pub simple_upload_limit: u64,
    /// Upload-session fragment size: a multiple of 320 KiB, at most 60 MiB.
    pub fragment_size: u64,
}

impl Default for OneDriveSettings {
    fn default() -> Self {
        Self {
            folder: "/officebridge/exports".into(),
            tenant_folders: Default::default(),
            operator_folders: Default::default(),
            simple_upload_limit: 4 << 20,
            fragment_size: 10 << 20,
        }
    }
}

impl OneDriveSettings {
    /// The folder for an operator: theirs, else their tenant's, else the default.
    pub fn folder_for(&self, tenant: &str, operator: &str) -> &str {
        self.operator_folders
            .get(operator)
            .or_else(|| self.tenant_folders.get(tenant))
            .unwrap_or(&self.folder)
    }

    fn check(&self) -> anyhow::Result<()> {
        const UNIT: u64 = 320 * 1024;
        if self.fragment_size == 0 || self.fragment_size % UNIT != 0 || self.fragment_size > 60 << 20 {
            bail!("onedrive.fragment_size must be a multiple of 327680 bytes (320 KiB) and at most 60 MiB");
        }
        Ok(())
    }
}

/// The settings as figment reads them; secrets still raw, file variants unresolved.
#[derive(Serialize, Deserialize)]
struct Raw {
    listen: SocketAddr,
    /// Unset: `http://localhost:8080`, or in `--dev` the listening address.
    public_url: Option<String>,
    data_dir: PathBuf,
    database_url: Option<String>,
    database_url_file: Option<PathBuf>,
    master_key: Option<String>,
    master_key_file: Option<PathBuf>,
    previous_master_keys: Vec<String>,
    /// One key per line.
    previous_master_keys_file: Option<PathBuf>,
    allow_emulator: bool,
    emulator_url: Option<String>,
    log: LogSettings,
    http: HttpSettings,
    metrics: MetricsSettings,
    signin: SigninSettings,
    export: ExportSettings,
    import: ImportSettings,
    mail: MailSettings,
    contacts: ContactsSettings,
    onedrive: OneDriveSettings,
    addin: AddinSettings,
    grids: GridSettings,
}

impl Default for Raw {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".parse().expect("valid"),
            public_url: None,
            data_dir: "./data".into(),
            database_url: None,
            database_url_file: None,
            master_key: None,
            master_key_file: None,
            previous_master_keys: Vec::new(),
            previous_master_keys_file: None,
            allow_emulator: false,
            emulator_url: None,
            log: LogSettings {
                format: LogFormat::Text,
                level: "info".into(),
            },
            http: HttpSettings {
                json_body_limit: 1 << 20,
                request_timeout_secs: 60,
                header_read_timeout_secs: 10,
            },
            metrics: MetricsSettings::default(),
            signin: SigninSettings::default(),
            export: ExportSettings::default(),
            import: ImportSettings::default(),
            mail: MailSettings::default(),
            contacts: ContactsSettings::default(),
            onedrive: OneDriveSettings::default(),
            addin: AddinSettings::default(),
            grids: GridSettings::default(),
        }
    }
}

/// The resolved settings. `Debug` is safe to log: secrets are [`Secret`]s.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub public_url: url::Url,
    /// Whether `public_url` was configured (else `--dev` derives it from `listen`).
    pub public_url_explicit: bool,
    pub data_dir: PathBuf,
    pub database_url: Secret,
    pub master_key: Option<Secret>,
    pub previous_master_keys: Vec<Secret>,
    pub allow_emulator: bool,
    /// The emulator's URL: with `allow_emulator`, the one loopback address a tenant may use.
    pub emulator_url: Option<String>,
    /// Set by `serve --dev`, not by configuration.
    pub dev: bool,
    /// What loading noticed but did not refuse (an `OFFICEBRIDGE_*` variable that names no
    /// setting); reported at start.
    pub warnings: Vec<String>,
    pub log: LogSettings,
    pub http: HttpSettings,
    pub metrics: MetricsSettings,
    pub signin: SigninSettings,
    pub export: ExportSettings,
    pub import: ImportSettings,
    pub mail: MailSettings,
    pub contacts: ContactsSettings,
    pub onedrive: OneDriveSettings,
    pub addin: AddinSettings,
    pub grids: GridSettings,
}

impl Settings {
    /// Where users reach this server when nobody said: the listening address, a loopback one
    /// as `localhost` (what app registrations name; any port matches there). Port 0 is filled
    /// in once the listener has one.
    pub fn public_url_from_listen(&mut self) {
        // 0.0.0.0 listens on every address, this machine's loopback among them.
        let host = if self.listen.ip().is_loopback() || self.listen.ip().is_unspecified() {
            "localhost".to_string()
        } else {
            match self.listen.ip() {
                std::net::IpAddr::V6(ip) => format!("[{ip}]"),
                ip => ip.to_string(),
            }
        };
        if let Ok(url) = url::Url::parse(&format!("http://{host}:{}", self.listen.port())) {
            self.public_url = url;
        }
    }

    /// The emulator a tenant record may point at, when one is allowed.
    pub fn emulator(&self) -> Option<&str> {
        self.emulator_url.as_deref().filter(|_| self.allow_emulator)
    }
}

/// Picks the value of a secret from the setting itself or its `_file` variant (not both).
fn secret_from(name: &str, value: Option<String>, file: Option<PathBuf>) -> anyhow::Result<Option<Secret>> {
    match (value, file) {
        (Some(_), Some(_)) => bail!("set either {name} or {name}_file, not both"),
        (Some(v), None) => Ok(Some(Secret::new(v))),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {name}_file {}", path.display()))?;
            Ok(Some(Secret::new(text.trim().to_string())))
        }
        (None, None) => Ok(None),
    }
}

impl Settings {
    /// Loads defaults, then `file` (if given; it must exist), then the environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut fig = Figment::from(Serialized::defaults(Raw::default()));
        if let Some(path) = file {
            if !path.exists() {
                bail!(
                    "config file {} does not exist (print an example with `officebridge default-config`)",
                    path.display()
                );
            }
            fig = fig.merge(Toml::file(path));
        }
        fig = fig.merge(Env::prefixed("OFFICEBRIDGE_").split("__"));
        let raw: Raw = fig.extract().context("invalid configuration")?;
        raw.onedrive.check()?;
        raw.addin.check()?;
        if raw.grids.retention_hours == 0 || raw.grids.max_cells == 0 || raw.grids.max_block_rows == 0 {
            bail!("grids.retention_hours, grids.max_cells and grids.max_block_rows must be at least 1");
        }
        if !(10..=30_000).contains(&raw.contacts.source_budget_ms) {
            bail!("contacts.source_budget_ms must be 10 to 30000 milliseconds");
        }
        let public_url_explicit = raw.public_url.is_some();
        let public_url =
            url::Url::parse(raw.public_url.as_deref().unwrap_or("http://localhost:8080")).context("public_url is not an absolute URL")?;
        let warnings = unknown_variables(std::env::vars_os().filter_map(|(k, _)| k.into_string().ok()));
        let previous_master_keys = match (raw.previous_master_keys, raw.previous_master_keys_file) {
            (keys, None) => keys.into_iter().map(Secret::new).collect(),
            (keys, Some(_)) if !keys.is_empty() => bail!("set either previous_master_keys or previous_master_keys_file, not both"),
            (_, Some(path)) => std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read previous_master_keys_file {}", path.display()))?
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(|l| Secret::new(l.to_string()))
                .collect(),
        };
        let database_url = secret_from("database_url", raw.database_url, raw.database_url_file)?
            .unwrap_or_else(|| Secret::new(format!("sqlite://{}", raw.data_dir.join("officebridge.db").display())));
        Ok(Self {
            listen: raw.listen,
            public_url,
            public_url_explicit,
            data_dir: raw.data_dir,
            database_url,
            master_key: secret_from("master_key", raw.master_key, raw.master_key_file)?,
            previous_master_keys,
            allow_emulator: raw.allow_emulator,
            emulator_url: raw.emulator_url,
            dev: false,
            warnings,
            log: raw.log,
            http: raw.http,
            metrics: raw.metrics,
            signin: raw.signin,
            export: raw.export,
            import: raw.import,
            mail: raw.mail,
            contacts: raw.contacts,
            onedrive: raw.onedrive,
            addin: raw.addin,
            grids: raw.grids,
        })
    }
}

/// The `OFFICEBRIDGE_*` variables among `names` that name no setting (a typo such as
/// `OFFICEBRIDGE_MASTER_KEY_FIEL` would otherwise be ignored without a word).
/// `OFFICEBRIDGE_TEST_*` belong to the test suite and are not settings.
fn unknown_variables(names: impl Iterator<Item = String>) -> Vec<String> {
    let known = serde_json::to_value(Raw::default()).expect("the defaults serialize");
    names
        .filter(|name| name.starts_with("OFFICEBRIDGE_") && !name.starts_with("OFFICEBRIDGE_TEST_"))
        .filter(|name| {
            let path = name["OFFICEBRIDGE_".len()..].to_ascii_lowercase();
            let mut at = &known;
            for key in path.split("__") {
                match at.get(key) {
                    Some(next) => at = next,
                    None => return true,
                }
            }
            false
        })
        .map(|name| format!("{name} names no setting and is ignored (see `officebridge default-config`)"))
        .collect()
}

#[cfg(test)]
// figment::Jail's closures must return figment::Error, which is large; that is its API, not ours.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses_and_matches_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, EXAMPLE_TOML).unwrap();
        figment::Jail::expect_with(|_| {
            let s = Settings::load(Some(&path)).unwrap();
            assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
            assert_eq!(s.database_url.expose_secret(), "sqlite://./data/officebridge.db");
            assert!(s.master_key.is_none());
            assert_eq!(
                serde_json::to_value(&s.mail).unwrap(),
                serde_json::to_value(MailSettings::default()).unwrap(),
                "the example's [mail] says the defaults"
            );
            Ok(())
        });
    }

    #[test]
    fn environment_overrides_file_and_file_variants_read_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("key");
        std::fs::write(&key_file, "a2V5\n").unwrap();
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.toml", "listen = \"127.0.0.1:1\"\n[log]\nformat = \"text\"\nlevel = \"info\"\n")?;
            jail.set_env("OFFICEBRIDGE_LISTEN", "127.0.0.1:2");
            jail.set_env("OFFICEBRIDGE_LOG__FORMAT", "json");
            jail.set_env("OFFICEBRIDGE_MASTER_KEY_FILE", key_file.display().to_string());
            let s = Settings::load(Some(Path::new("c.toml"))).unwrap();
            assert_eq!(s.listen.port(), 2);
            assert_eq!(s.log.format, LogFormat::Json);
            assert_eq!(s.master_key.as_ref().unwrap().expose_secret(), "a2V5");
            jail.set_env("OFFICEBRIDGE_MASTER_KEY", "also");
            assert!(Settings::load(None).unwrap_err().to_string().contains("not both"));
            Ok(())
        });
    }

    #[test]
    fn unknown_variables_are_reported_and_known_ones_are_not() {
        let names = [
            "OFFICEBRIDGE_MASTER_KEY_FIEL",
            "OFFICEBRIDGE_MASTER_KEY_FILE",
            "OFFICEBRIDGE_EXPORT__MAX_CONCURRENT",
            "OFFICEBRIDGE_EXPORT__MAX_CONCURENT",
            "OFFICEBRIDGE_METRICS__LISTEN",
            "OFFICEBRIDGE_PREVIOUS_MASTER_KEYS_FILE",
            "OFFICEBRIDGE_TEST_POSTGRES_URL",
            "PATH",
        ];
        let warnings = unknown_variables(names.iter().map(|n| n.to_string()));
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].starts_with("OFFICEBRIDGE_MASTER_KEY_FIEL "));
        assert!(warnings[1].starts_with("OFFICEBRIDGE_EXPORT__MAX_CONCURENT "));
    }

    #[test]
    fn previous_master_keys_come_from_a_file_one_per_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("old-keys");
        std::fs::write(&file, "b2xkMQ==\n\n  b2xkMg==  \n").unwrap();
        figment::Jail::expect_with(|jail| {
            jail.set_env("OFFICEBRIDGE_PREVIOUS_MASTER_KEYS_FILE", file.display().to_string());
            let s = Settings::load(None).unwrap();
            let keys: Vec<&str> = s.previous_master_keys.iter().map(|k| k.expose_secret()).collect();
            assert_eq!(keys, ["b2xkMQ==", "b2xkMg=="]);
            Ok(())
        });
    }

    #[test]
    fn debug_output_redacts_secrets() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("OFFICEBRIDGE_MASTER_KEY", "TOPSECRETKEY");
            jail.set_env("OFFICEBRIDGE_DATABASE_URL", "postgres://u:PASSWORD123@h/db");
            let s = Settings::load(None).unwrap();
            let dbg = format!("{s:?}");
            assert!(!dbg.contains("TOPSECRETKEY") && !dbg.contains("PASSWORD123"), "{dbg}");
            Ok(())
        });
    }
}
