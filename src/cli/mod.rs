//! The command line. Administration commands work directly on the database named by the
//! configuration, so they need no running server and no API key.

use crate::app::{self, Application};
use crate::config::{EXAMPLE_TOML, Settings};
use crate::domain::{OperatorCode, OperatorInput, Secret, SecretField, TenantCode, TenantInput};
use crate::export::read::InputFormat;
use crate::store::Store;
use crate::store::models::Role;
use crate::store::secrets::{Keyring, MasterKey};
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;

mod export;

#[derive(Debug, Parser)]
#[command(
    name = "officebridge",
    version,
    about = "Connects an ERP to Microsoft 365: typed XLSX exports, OneDrive, contacts, mail."
)]
pub struct Cli {
    /// A TOML configuration file (see `officebridge default-config`).
    #[arg(long, global = true, env = "OFFICEBRIDGE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Development mode: data in ./data, a generated master key, the emulator allowed.
    #[arg(long, global = true)]
    pub dev: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server.
    Serve {
        /// Address to listen on, overriding the configuration (for example 0.0.0.0:8080).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// The URL users and Office reach this server at, overriding `public_url`.
        #[arg(long, value_parser = parse_public_url)]
        public_url: Option<url::Url>,
    },
    /// Print a fully commented example configuration file.
    DefaultConfig,
    /// Create or upgrade the database schema, then exit.
    Migrate,
    /// Generate a new master key and re-encrypt every stored secret with it.
    RotateKey {
        /// Write the new key to this file (mode 600) instead of printing it.
        /// With --dev and no master key configured, ./data/master.key is replaced.
        #[arg(long)]
        new_key_file: Option<PathBuf>,
    },
    /// Manage Microsoft 365 tenants.
    #[command(subcommand)]
    Tenants(TenantsCommand),
    /// Manage ERP operators.
    #[command(subcommand)]
    Operators(OperatorsCommand),
    /// Manage API keys.
    #[command(subcommand)]
    Apikeys(ApiKeysCommand),
    /// Manage the ERP's companies (which email profiles apply to).
    #[command(subcommand)]
    Companies(CompaniesCommand),
    /// Manage email profiles: which mailbox sends what, for whom.
    #[command(subcommand)]
    Profiles(ProfilesCommand),
    /// List the mail templates, or preview one for a company.
    #[command(subcommand)]
    Templates(TemplatesCommand),
    /// The outbox: queued, sent and failed messages; send a failed one again or cancel one.
    #[command(subcommand)]
    Outbox(OutboxCommand),
    /// Run the Microsoft 365 emulator (identity platform and Graph) for development and tests.
    #[cfg(feature = "emulator")]
    Emulator {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: SocketAddr,
        /// A TOML or JSON seed file: tenants, users, app registrations (default: the demo tenant).
        #[arg(long)]
        seed: Option<PathBuf>,
    },
    /// The Office add-in: print a manifest for the Microsoft 365 admin center.
    #[command(subcommand)]
    Addin(AddinCommand),
    /// Write a grid (JSON grid document, NDJSON or CSV) as a typed XLSX workbook.
    Export(ExportArgs),
    /// Read an edited workbook back: typed rows, cell problems, and the change set.
    Import(ImportArgs),
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The grid file, or `-` for standard input.
    pub input: PathBuf,
    /// The workbook to write (default: the input's name with .xlsx).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// The input format (default: from the file extension .json, .ndjson/.jsonl, .csv).
    #[arg(long, value_enum)]
    pub format: Option<InputFormat>,
    /// CSV column types, `Name=type[:arg…],…` (for example `Qty=integer,Price=currency:USD:2`);
    /// columns not named are inferred from the first 1,000 rows.
    #[arg(long)]
    pub columns: Option<String>,
    /// The sheet name for CSV input (default: the file name).
    #[arg(long)]
    pub sheet: Option<String>,
    /// CSV field delimiter: `,`, `;`, `tab` or `|` (default: the one the header line holds).
    #[arg(long)]
    pub delimiter: Option<String>,
    /// CSV charset (`windows-1252`, `utf-16`, …; default UTF-8, a byte order mark wins).
    #[arg(long)]
    pub encoding: Option<String>,
    /// CSV decimal separator, `.` or `,` (default: `,` when the delimiter is `;`).
    #[arg(long)]
    pub decimal: Option<String>,
    /// Upload the workbook to the operator's OneDrive (configured folder, conflicts renamed)
    /// and print `{id, name, size, webUrl}`; with -o a local copy is kept too.
    #[arg(long, requires = "operator")]
    pub onedrive: bool,
    /// The operator whose OneDrive receives the workbook (with --onedrive).
    #[arg(long, requires = "onedrive")]
    pub operator: Option<String>,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The edited workbook.
    pub workbook: PathBuf,
    /// The columns, `Name=type[:arg…],…`, Name as in the header row. Optional with --original.
    #[arg(long)]
    pub columns: Option<String>,
    /// The key column, for the change set.
    #[arg(long)]
    pub key: Option<String>,
    /// The original grid document (JSON) the workbook was exported from.
    #[arg(long)]
    pub original: Option<PathBuf>,
    /// The sheet to read (default: the first).
    #[arg(long)]
    pub sheet: Option<String>,
}

#[derive(Debug, Args)]
pub struct TenantFields {
    /// Free text shown to administrators.
    #[arg(long)]
    description: Option<String>,
    /// Directory (tenant) id: a GUID or a verified domain.
    #[arg(long)]
    tenant_id: Option<String>,
    /// Application (client) id of the Entra app registration.
    #[arg(long)]
    client_id: Option<String>,
    /// public_client (default) or spa.
    #[arg(long)]
    platform: Option<String>,
    /// Redirect URL registered for the app (public_client: https://localhost).
    #[arg(long)]
    redirect_url: Option<String>,
    /// Read the client secret from this file, or `-` for standard input. (Never as an
    /// argument: the process list would show it.)
    #[arg(long)]
    client_secret_file: Option<PathBuf>,
    /// Remove the stored client secret.
    #[arg(long, conflicts_with = "client_secret_file")]
    clear_client_secret: bool,
    /// Login authority (default https://login.microsoftonline.com).
    #[arg(long)]
    authority: Option<String>,
    /// Graph endpoint (default https://graph.microsoft.com).
    #[arg(long)]
    graph_endpoint: Option<String>,
    /// Legacy Exchange Web Services URL: accepted and ignored.
    #[arg(long)]
    exchange_web_service: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum TenantsCommand {
    /// Add a tenant.
    Add {
        /// Short unique code, such as CONTOSO.
        #[arg(long)]
        code: String,
        #[command(flatten)]
        fields: TenantFields,
    },
    /// List tenants (JSON).
    List,
    /// Show one tenant (JSON).
    Show { code: String },
    /// Change a tenant: only the fields given change.
    Update {
        code: String,
        #[command(flatten)]
        fields: TenantFields,
    },
    /// Remove a tenant no operator uses.
    Remove { code: String },
}

#[derive(Debug, Subcommand)]
pub enum OperatorsCommand {
    /// Create or replace an operator.
    Set {
        code: String,
        /// Tenant code; required when enabled.
        #[arg(long)]
        tenant: Option<String>,
        /// The operator's Microsoft 365 address.
        #[arg(long)]
        email: Option<String>,
        /// Whether Microsoft 365 integration is on.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        enabled: bool,
    },
    /// List operators (JSON).
    List,
    /// Show one operator (JSON).
    Show { code: String },
}

#[derive(Debug, Subcommand)]
pub enum CompaniesCommand {
    /// Create a company or rename it.
    Set {
        code: String,
        #[arg(long)]
        name: String,
    },
    /// List companies (JSON).
    List,
    /// Show one company (JSON).
    Show { code: String },
    /// Remove a company no email profile names.
    Remove { code: String },
}

#[derive(Debug, Subcommand)]
pub enum ProfilesCommand {
    /// Add a profile from its JSON (the API's format; `-` reads standard input).
    Add { file: PathBuf },
    /// List profiles (JSON; secrets only as whether they are set).
    List,
    /// Show one profile (JSON).
    Show { name: String },
    /// Replace a profile with the JSON in FILE (a secret left out or `{"set": true}` is kept).
    Update { name: String, file: PathBuf },
    /// Remove a profile.
    Remove { name: String },
    /// Send the built-in test message through a profile now (not queued) and show what each
    /// step answered (JSON); fails naming the step that did not work.
    Test {
        name: String,
        /// The address the test message goes to.
        #[arg(long)]
        to: String,
        /// The operator a graph_delegate profile sends as.
        #[arg(long)]
        operator: Option<String>,
    },
    /// Which profile would send for a company and function, and why.
    Resolve {
        #[arg(long)]
        company: String,
        #[arg(long)]
        function: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum OutboxCommand {
    /// Messages, newest first (JSON), with `next_cursor` when there are more.
    List {
        /// queued, sending, retrying, held, sent, failed or cancelled.
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        company: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// `next_cursor` of the previous page.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// One message: state, attempts, the reason it failed (JSON).
    Show { id: String },
    /// Put a failed or held message back in the queue (a running server sends it).
    Retry { id: String },
    /// Take a message that is not being sent out of the queue.
    Cancel { id: String },
}

#[derive(Debug, Subcommand)]
pub enum AddinCommand {
    /// Print a manifest as `GET /addin/…` serves it, for an administrator to upload to the
    /// Microsoft 365 admin center (Integrated apps).
    Manifest {
        /// `excel` and `outlook`: the add-in-only XML manifests; `unified`: the unified
        /// manifest for Microsoft 365 (both hosts).
        #[arg(long, value_enum)]
        host: crate::addin::Host,
        /// The tenant whose app registration the manifest names (default: `addin.tenant`,
        /// or the only tenant).
        #[arg(long)]
        tenant: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TemplatesCommand {
    /// The templates there are (built-in and overrides).
    List,
    /// Render a template: its subject, HTML and text, as JSON.
    Preview {
        name: String,
        #[arg(long)]
        company: String,
        /// A JSON object of variables (`-` reads standard input).
        #[arg(long)]
        variables: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ApiKeysCommand {
    /// Create a key; it is printed once and only its hash is stored.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, value_enum)]
        role: Role,
    },
    /// List keys (never their values).
    List,
    /// Revoke a key by id or name.
    Revoke { id_or_name: String },
}

/// `--public-url`: an absolute http(s) URL.
fn parse_public_url(raw: &str) -> Result<url::Url, String> {
    match url::Url::parse(raw) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(u),
        Ok(_) => Err("must be an http or https URL with a host, such as https://officebridge.contoso.com".into()),
        Err(e) => Err(format!("is not a URL ({e}); give one such as https://officebridge.contoso.com")),
    }
}

fn load_settings(cli: &Cli) -> anyhow::Result<Settings> {
    #[allow(unused_mut)] // only --dev, built with the emulator, changes them
    let mut settings = Settings::load(cli.config.as_deref())?;
    // Before logging is set up (the settings say how), so on standard error.
    for warning in &settings.warnings {
        eprintln!("warning: {warning}");
    }
    if cli.dev {
        #[cfg(feature = "emulator")]
        crate::dev::prepare_dev(&mut settings)?;
        #[cfg(not(feature = "emulator"))]
        anyhow::bail!("--dev needs the Microsoft 365 emulator, and this build has none (built without the `emulator` feature)");
    }
    Ok(settings)
}

async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    Store::connect(&settings.database_url, app::keyring(settings)?).await
}

/// Who the audit log records for a command-line change.
fn cli_actor() -> String {
    format!("cli:{}", std::env::var("USER").unwrap_or_else(|_| "unknown".into()))
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A file's text, or standard input's for `-`.
fn read_text(path: &PathBuf) -> anyhow::Result<String> {
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        return Ok(text);
    }
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

fn read_secret_file(path: &PathBuf) -> anyhow::Result<String> {
    Ok(read_text(path)?.trim_end_matches(['\r', '\n']).to_string())
}

/// Field errors as one message, for the terminal.
fn field_errors(errors: Vec<crate::domain::FieldError>) -> anyhow::Error {
    anyhow::anyhow!(
        errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ")
    )
}

impl TenantFields {
    /// Lays these flags over `base` (the stored tenant for an update, empty for an add).
    fn into_input(self, code: String, base: Option<crate::store::models::Tenant>) -> anyhow::Result<TenantInput> {
        let b = base.as_ref();
        let client_secret = match (self.client_secret_file, self.clear_client_secret) {
            (Some(path), _) => Some(Some(SecretField::Value(Secret::new(read_secret_file(&path)?)))),
            (None, true) => Some(None),
            (None, false) => None,
        };
        Ok(TenantInput {
            code: Some(code),
            description: self.description.or_else(|| b.map(|t| t.description.clone())),
            tenant_id: self.tenant_id.or_else(|| b.map(|t| t.tenant_id.as_str().into())),
            client_id: self.client_id.or_else(|| b.map(|t| t.client_id.as_str().into())),
            platform: self.platform.or_else(|| b.map(|t| t.platform.as_str().into())),
            redirect_url: self.redirect_url.or_else(|| b.map(|t| t.redirect_url.as_str().into())),
            client_secret,
            authority: self.authority.or_else(|| b.map(|t| t.authority.as_str().into())),
            graph_endpoint: self.graph_endpoint.or_else(|| b.map(|t| t.graph_endpoint.as_str().into())),
            exchange_web_service: self.exchange_web_service,
        })
    }
}

async fn tenants(settings: &Settings, cmd: TenantsCommand) -> anyhow::Result<()> {
    let store = open_store(settings).await?;
    let actor = cli_actor();
    match cmd {
        TenantsCommand::Add { code, fields } => {
            let tenant = fields
                .into_input(code, None)?
                .parse(None, settings.emulator())
                .map_err(field_errors)?;
            tenant.warnings.iter().for_each(|w| eprintln!("warning: {w}"));
            print_json(&store.create_tenant(&actor, &tenant).await?)
        }
        TenantsCommand::List => print_json(&store.list_tenants().await?),
        TenantsCommand::Show { code } => print_json(&store.get_tenant(&TenantCode::parse(&code).map_err(anyhow::Error::msg)?).await?),
        TenantsCommand::Update { code, fields } => {
            let existing = store.get_tenant(&TenantCode::parse(&code).map_err(anyhow::Error::msg)?).await?;
            let tenant = fields
                .into_input(code.clone(), Some(existing))?
                .parse(Some(&code), settings.emulator())
                .map_err(field_errors)?;
            tenant.warnings.iter().for_each(|w| eprintln!("warning: {w}"));
            print_json(&store.replace_tenant(&actor, &tenant).await?)
        }
        TenantsCommand::Remove { code } => {
            store
                .delete_tenant(&actor, &TenantCode::parse(&code).map_err(anyhow::Error::msg)?)
                .await?;
            eprintln!("tenant {code} removed");
            Ok(())
        }
    }
}

async fn operators(settings: &Settings, cmd: OperatorsCommand) -> anyhow::Result<()> {
    let store = open_store(settings).await?;
    match cmd {
        OperatorsCommand::Set {
            code,
            tenant,
            email,
            enabled,
        } => {
            let op = OperatorInput { enabled, tenant, email }.parse(&code).map_err(field_errors)?;
            print_json(&store.put_operator(&cli_actor(), &op).await?.0)
        }
        OperatorsCommand::List => print_json(&store.list_operators().await?),
        OperatorsCommand::Show { code } => print_json(&store.get_operator(&OperatorCode::parse(&code).map_err(anyhow::Error::msg)?).await?),
    }
}

async fn companies(settings: &Settings, cmd: CompaniesCommand) -> anyhow::Result<()> {
    use crate::domain::CompanyCode;
    let store = open_store(settings).await?;
    let code = |raw: &str| CompanyCode::parse(raw).map_err(|m| anyhow::anyhow!("code: {m}"));
    match cmd {
        CompaniesCommand::Set { code: raw, name } => {
            let code = code(&raw)?;
            let name = crate::http::companies::CompanyInput { name }
                .parse()
                .map_err(|e| anyhow::anyhow!("name: {e}"))?;
            store.put_company(&cli_actor(), &code, &name).await?;
            print_json(&store.get_company(&code).await?)
        }
        CompaniesCommand::List => print_json(&store.list_companies().await?),
        CompaniesCommand::Show { code: raw } => print_json(&store.get_company(&code(&raw)?).await?),
        CompaniesCommand::Remove { code: raw } => {
            let code = code(&raw)?;
            store.delete_company(&cli_actor(), &code).await?;
            eprintln!("company {code} removed");
            Ok(())
        }
    }
}

/// A profile's JSON from a file or standard input, parsed as the API parses it.
fn read_profile(file: &PathBuf, name: Option<&str>) -> anyhow::Result<crate::domain::NewProfile> {
    let text = read_text(file)?;
    let input: crate::domain::ProfileInput = crate::http::parse_json(text.as_bytes()).map_err(|e| match e {
        crate::error::ApiError::Validation(errors) => field_errors(errors),
        other => anyhow::anyhow!("{}: {other}", file.display()),
    })?;
    let profile = input.parse(name).map_err(field_errors)?;
    for w in &profile.warnings {
        eprintln!("warning: {}: {}", w.field, w.message);
    }
    Ok(profile)
}

async fn profiles(settings: &Settings, cmd: ProfilesCommand) -> anyhow::Result<()> {
    use crate::domain::{CompanyCode, Function, ProfileName};
    let store = open_store(settings).await?;
    let name = |raw: &str| ProfileName::parse(raw).map_err(|m| anyhow::anyhow!("name: {m}"));
    match cmd {
        ProfilesCommand::Add { file } => {
            let profile = read_profile(&file, None)?;
            print_json(&store.create_profile(&cli_actor(), &profile).await?)
        }
        ProfilesCommand::List => print_json(&store.list_profiles().await?),
        ProfilesCommand::Show { name: raw } => print_json(&store.get_profile(&name(&raw)?).await?),
        ProfilesCommand::Update { name: raw, file } => {
            let profile = read_profile(&file, Some(name(&raw)?.as_str()))?;
            print_json(&store.replace_profile(&cli_actor(), &profile).await?)
        }
        ProfilesCommand::Remove { name: raw } => {
            let name = name(&raw)?;
            store.delete_profile(&cli_actor(), &name).await?;
            eprintln!("email profile {name} removed");
            Ok(())
        }
        ProfilesCommand::Test { name: raw, to, operator } => {
            let profile = store.get_profile(&name(&raw)?).await?;
            let to = crate::domain::EmailAddress::parse(&to).map_err(|m| anyhow::anyhow!("--to: {m}"))?;
            let tokens = std::sync::Arc::new(crate::identity::tokens::Tokens::new(
                crate::identity::oauth::http_client(),
                store.clone(),
            ));
            let graph = std::sync::Arc::new(crate::graph::Graph::new(tokens, crate::graph::RetryPolicy::default()));
            let outbox = crate::mail::outbox::Outbox::new(store.clone(), graph, &settings.mail)?;
            match crate::mail::profile_test::run(&outbox, &profile, &to, operator.as_deref()).await {
                Ok(steps) => print_json(
                    &serde_json::json!({"profile": profile.name, "provider": profile.provider, "to": to.as_str(), "steps": steps}),
                ),
                Err(f) => {
                    print_json(&serde_json::json!({"profile": profile.name, "failed_step": f.step, "steps": f.steps}))?;
                    anyhow::bail!("the test message failed at {}: {}", f.step, f.detail)
                }
            }
        }
        ProfilesCommand::Resolve { company, function } => {
            let company = CompanyCode::parse(&company).map_err(|m| anyhow::anyhow!("--company: {m}"))?;
            let function = Function::parse(&function).map_err(|m| anyhow::anyhow!("--function: {m}"))?;
            match store.resolve_profile(&company, function).await? {
                Some(r) => print_json(&r),
                None => anyhow::bail!("{}", crate::error::ApiError::NoProfile { company, function }),
            }
        }
    }
}

async fn outbox(settings: &Settings, cmd: OutboxCommand) -> anyhow::Result<()> {
    use crate::store::outbox::MailState;
    let store = open_store(settings).await?;
    match cmd {
        OutboxCommand::List {
            state,
            company,
            limit,
            cursor,
        } => {
            let state = state
                .as_deref()
                .map(MailState::parse_filter)
                .transpose()
                .map_err(|m| anyhow::anyhow!("--state: {m}"))?;
            let company = company
                .as_deref()
                .map(crate::domain::CompanyCode::parse)
                .transpose()
                .map_err(|m| anyhow::anyhow!("--company: {m}"))?;
            let limit = crate::domain::page_limit(Some(limit)).map_err(|m| anyhow::anyhow!("--limit: {m}"))?;
            let messages = store
                .list_mail(None, state, company.as_ref().map(|c| c.as_str()), limit, cursor.as_deref())
                .await?;
            let next_cursor = crate::store::outbox::next_cursor(&messages, limit);
            print_json(&serde_json::json!({"messages": messages, "next_cursor": next_cursor}))
        }
        OutboxCommand::Show { id } => print_json(&store.get_mail(&id, None).await?),
        OutboxCommand::Retry { id } => print_json(&store.retry_mail(&cli_actor(), &id, None).await?),
        OutboxCommand::Cancel { id } => print_json(&store.cancel_mail(&cli_actor(), &id, None).await?),
    }
}

async fn templates(settings: &Settings, cmd: TemplatesCommand) -> anyhow::Result<()> {
    let templates = crate::mail::templates::Templates::new(settings.mail.templates_dir.clone());
    match cmd {
        TemplatesCommand::List => print_json(&templates.names()),
        TemplatesCommand::Preview { name, company, variables } => {
            let code = crate::domain::CompanyCode::parse(&company).map_err(|m| anyhow::anyhow!("--company: {m}"))?;
            let company = open_store(settings).await?.get_company(&code).await?;
            let variables: serde_json::Value = match variables {
                None => serde_json::Value::Null,
                Some(path) => serde_json::from_str(&read_text(&path)?).context("--variables: not JSON")?,
            };
            print_json(&templates.render(&name, &code, &company.name, &variables)?)
        }
    }
}

async fn apikeys(settings: &Settings, cmd: ApiKeysCommand) -> anyhow::Result<()> {
    let store = open_store(settings).await?;
    match cmd {
        ApiKeysCommand::Create { name, role } => {
            let (key, token) = store.create_api_key(&cli_actor(), &name, role).await?;
            eprintln!(
                "API key '{}' ({}) created. It is shown only now; store it safely:",
                key.name,
                key.role.as_str()
            );
            println!("{}", token.expose_secret());
            Ok(())
        }
        ApiKeysCommand::List => print_json(&store.list_api_keys().await?),
        ApiKeysCommand::Revoke { id_or_name } => {
            let key = store.revoke_api_key(&cli_actor(), &id_or_name).await?;
            eprintln!("API key '{}' ({}) revoked", key.name, key.id);
            Ok(())
        }
    }
}

/// Writes the new key where it will be used *before* re-sealing, so that a crash after the
/// commit never leaves secrets sealed under a key nobody kept.
async fn rotate_key(cli: &Cli, settings: &Settings, new_key_file: Option<PathBuf>) -> anyhow::Result<()> {
    let store = open_store(settings).await?;
    let (new_key, encoded) = MasterKey::generate();
    let dev_key_file =
        (cli.dev && Settings::load(cli.config.as_deref())?.master_key.is_none()).then(|| settings.data_dir.join("master.key"));
    let staged = match (&new_key_file, &dev_key_file) {
        (Some(path), _) => Some(path.clone()),
        (None, Some(dev)) => Some(dev.with_extension("key.new")),
        (None, None) => None,
    };
    if let Some(path) = &staged {
        app::write_private(path, encoded.expose_secret())?;
    }
    let count = store.reseal_secrets(&cli_actor(), &Keyring::new(new_key.clone(), vec![])).await?;
    if let (None, Some(dev)) = (&new_key_file, &dev_key_file) {
        std::fs::rename(staged.as_ref().expect("staged"), dev)?;
    }
    eprintln!("re-encrypted {count} secret(s) under key {}", new_key.id());
    match staged {
        Some(path) if dev_key_file.is_none() || new_key_file.is_some() => {
            eprintln!(
                "the new master key is in {}; configure it as master_key_file and restart every instance",
                path.display()
            )
        }
        Some(_) => eprintln!("dev mode: {} now holds the new key", dev_key_file.expect("dev").display()),
        None => {
            eprintln!("the new master key follows; configure it as master_key and restart every instance:");
            println!("{}", encoded.expose_secret());
        }
    }
    Ok(())
}

async fn serve(cli: &Cli, mut settings: Settings, listen: Option<SocketAddr>, public_url: Option<url::Url>) -> anyhow::Result<()> {
    if let Some(addr) = listen {
        settings.listen = addr;
    }
    match public_url {
        Some(url) => {
            settings.public_url = url;
            settings.public_url_explicit = true;
        }
        // In development the browser comes back to wherever this server listens.
        None if settings.dev && !settings.public_url_explicit => settings.public_url_from_listen(),
        None => {}
    }
    crate::telemetry::init_logs(&settings.log);
    #[cfg(feature = "emulator")]
    let emulator = if cli.dev {
        Some(crate::dev::start_emulator(&mut settings).await?)
    } else {
        None
    };
    #[cfg(not(feature = "emulator"))]
    let _ = cli;
    #[cfg(feature = "emulator")]
    let data_dir = settings.data_dir.clone();
    let application = Application::build(settings).await?;
    #[cfg(feature = "emulator")]
    if let Some(emulator) = &emulator {
        crate::dev::provision(application.store(), emulator, &data_dir).await?;
    }
    println!("officebridge listening on http://{}", application.local_addr());
    tracing::info!(addr = %application.local_addr(), backend = application.store().backend(), "listening");
    application.run(app::shutdown_signal()).await
}

/// `officebridge export INPUT --onedrive --operator CODE`: the export as usual, then the same
/// upload (and the same token store) as `POST /api/v1/exports?destination=onedrive`.
async fn export_to_onedrive(settings: &Settings, mut args: ExportArgs) -> anyhow::Result<()> {
    use crate::domain::OperatorCode;
    let code = OperatorCode::parse(args.operator.as_deref().unwrap_or_default()).map_err(|m| anyhow::anyhow!("--operator: {m}"))?;
    let scratch = tempfile::tempdir()?;
    let keep = args.output.is_some();
    if !keep {
        let stem = args
            .input
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "export".into());
        args.output = Some(scratch.path().join(format!("{stem}.xlsx")));
    }
    let output = args.output.clone().expect("set above");
    let report = tokio::task::spawn_blocking(move || export::export(args)).await??;
    let store = open_store(settings).await?;
    let tokens = std::sync::Arc::new(crate::identity::tokens::Tokens::new(
        crate::identity::oauth::http_client(),
        store.clone(),
    ));
    let graph = crate::graph::Graph::new(tokens, crate::graph::RetryPolicy::default());
    let file = std::fs::File::open(&output)?;
    let size = file.metadata()?.len();
    match crate::graph::drive::upload_export(&graph, &settings.onedrive, &code, file, size, &report.file_name()).await {
        Ok(item) => print_json(&item),
        Err(crate::graph::GraphError::Token(crate::identity::tokens::TokenError::SigninRequired(op))) => {
            let link = crate::identity::signin_link(
                store.keyring(),
                &settings.public_url,
                &op,
                std::time::Duration::from_secs(settings.signin.link_lifetime_secs),
            );
            anyhow::bail!(
                "operator {op} must sign in to Microsoft 365 first: open {} (valid once, until {}; or use the device-code sign-in)",
                link.url,
                link.expires_at
            )
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Export(args) = &cli.command
        && args.onedrive
    {
        let settings = load_settings(&cli)?;
        let Command::Export(args) = cli.command else {
            unreachable!("matched above")
        };
        return export_to_onedrive(&settings, args).await;
    }
    // These need neither configuration nor database.
    match cli.command {
        Command::DefaultConfig => {
            print!("{EXAMPLE_TOML}");
            return Ok(());
        }
        Command::Export(args) => {
            return tokio::task::spawn_blocking(move || export::export(args)).await?.map(drop);
        }
        Command::Import(args) => return tokio::task::spawn_blocking(move || export::import(args)).await?,
        #[cfg(feature = "emulator")]
        Command::Emulator { listen, seed } => return crate::dev::run_emulator(listen, seed).await,
        _ => {}
    }
    let settings = load_settings(&cli)?;
    match cli.command {
        Command::Serve { listen, ref public_url } => serve(&cli, settings, listen, public_url.clone()).await,
        #[cfg(feature = "emulator")]
        Command::Emulator { .. } => unreachable!("handled above"),
        Command::DefaultConfig | Command::Export(_) | Command::Import(_) => unreachable!("handled above"),
        Command::Migrate => {
            open_store(&settings).await?;
            eprintln!("database schema is up to date");
            Ok(())
        }
        Command::RotateKey { ref new_key_file } => rotate_key(&cli, &settings, new_key_file.clone()).await,
        Command::Tenants(cmd) => tenants(&settings, cmd).await,
        Command::Operators(cmd) => operators(&settings, cmd).await,
        Command::Apikeys(cmd) => apikeys(&settings, cmd).await,
        Command::Companies(cmd) => companies(&settings, cmd).await,
        Command::Profiles(cmd) => profiles(&settings, cmd).await,
        Command::Outbox(cmd) => outbox(&settings, cmd).await,
        Command::Templates(cmd) => templates(&settings, cmd).await,
        Command::Addin(cmd) => addin(&settings, cmd).await,
    }
}

async fn addin(settings: &Settings, cmd: AddinCommand) -> anyhow::Result<()> {
    let store = open_store(settings).await?;
    match cmd {
        AddinCommand::Manifest { host, tenant } => {
            let tenant = crate::http::addin::manifest_tenant(&store, tenant.as_deref(), settings.addin.tenant.as_deref())
                .await
                .map_err(|e| match e {
                    crate::error::ApiError::Validation(errors) => field_errors(errors),
                    other => anyhow::anyhow!("{other}"),
                })?;
            print!("{}", crate::addin::render(host, settings, tenant.client_id.as_str())?);
            Ok(())
        }
    }
}
