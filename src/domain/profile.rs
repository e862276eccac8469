//! Email profiles (SPEC §2 "Email profiles", the source's Emailing Profiles program): which
//! mailbox, through which provider, sends which business functions for which companies.
//! Parsed here once, every field error reported at once; the store checks what needs the
//! database (companies and tenants that exist, the function claim rule).

use super::tenant::{secret_field, secret_update};
use super::{ClientId, CompanyCode, EmailAddress, FieldError, SecretField, SecretUpdate, TenantCode, Validator};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;

/// What a message is sent for. The order is SPEC §2's; `Ord` keeps stored lists stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Function {
    Default,
    SystemAdministration,
    UserInterface,
    ElectronicSignatures,
    AllReports,
    DocumentFlowManager,
    AllDocuments,
    DocumentsRemittance,
    DocumentsAccountsReceivable,
    DocumentQuotations,
    DocumentInventoryMovements,
    DocumentPurchasing,
    DocumentQuality,
}

impl Function {
    pub const ALL: [Function; 13] = [
        Self::Default,
        Self::SystemAdministration,
        Self::UserInterface,
        Self::ElectronicSignatures,
        Self::AllReports,
        Self::DocumentFlowManager,
        Self::AllDocuments,
        Self::DocumentsRemittance,
        Self::DocumentsAccountsReceivable,
        Self::DocumentQuotations,
        Self::DocumentInventoryMovements,
        Self::DocumentPurchasing,
        Self::DocumentQuality,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::SystemAdministration => "system_administration",
            Self::UserInterface => "user_interface",
            Self::ElectronicSignatures => "electronic_signatures",
            Self::AllReports => "all_reports",
            Self::DocumentFlowManager => "document_flow_manager",
            Self::AllDocuments => "all_documents",
            Self::DocumentsRemittance => "documents_remittance",
            Self::DocumentsAccountsReceivable => "documents_accounts_receivable",
            Self::DocumentQuotations => "document_quotations",
            Self::DocumentInventoryMovements => "document_inventory_movements",
            Self::DocumentPurchasing => "document_purchasing",
            Self::DocumentQuality => "document_quality",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        Self::ALL.into_iter().find(|f| f.as_str() == raw).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|f| f.as_str()).collect();
            format!("'{raw}' is not a function; the functions are {}", names.join(", "))
        })
    }

    /// The six document functions that fall back to `all_documents` before `default`.
    pub fn is_specific_document(self) -> bool {
        matches!(
            self,
            Self::DocumentsRemittance
                | Self::DocumentsAccountsReceivable
                | Self::DocumentQuotations
                | Self::DocumentInventoryMovements
                | Self::DocumentPurchasing
                | Self::DocumentQuality
        )
    }
}

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a profile's mail leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    Smtp,
    /// Microsoft Graph Delegate Sender: as the signed-in operator (interactive).
    GraphDelegate,
    /// Microsoft Graph Direct Sender: an application permission, as a fixed mailbox.
    GraphDirect,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Smtp => "smtp",
            Self::GraphDelegate => "graph_delegate",
            Self::GraphDirect => "graph_direct",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw.trim() {
            "smtp" => Ok(Self::Smtp),
            "graph_delegate" => Ok(Self::GraphDelegate),
            "graph_direct" => Ok(Self::GraphDirect),
            other => Err(format!("'{other}' is not a provider; use smtp, graph_delegate or graph_direct")),
        }
    }
}

/// Where a profile applies: everywhere, or to some companies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyTo {
    System,
    Companies(Vec<CompanyCode>),
}

/// The scope a claim or a resolution is made in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    System,
    Company(CompanyCode),
}

impl Scope {
    /// How the scope is stored in a claim: `*` for the system, else the company code (which
    /// cannot contain `*`).
    pub fn key(&self) -> &str {
        match self {
            Self::System => "*",
            Self::Company(c) => c.as_str(),
        }
    }
}

impl ApplyTo {
    pub fn scopes(&self) -> Vec<Scope> {
        match self {
            Self::System => vec![Scope::System],
            Self::Companies(cs) => cs.iter().cloned().map(Scope::Company).collect(),
        }
    }
}

impl Serialize for ApplyTo {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::System => s.serialize_str("system"),
            Self::Companies(cs) => {
                use serde::ser::SerializeMap;
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("companies", cs)?;
                m.end()
            }
        }
    }
}

/// SMTP transport security.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS (port 587, the recommended setup).
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only with `allow_insecure`.
    None,
}

/// How an SMTP profile authenticates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "auth", rename_all = "snake_case")]
pub enum SmtpAuth {
    None,
    /// AUTH PLAIN/LOGIN with `username` and the write-only password.
    Password {
        username: String,
    },
    /// OAuth (XOAUTH2) with a token from `tenant`'s app registration by client credentials
    /// (Exchange's `SMTP.SendAsApp`).
    Xoauth2 {
        tenant: TenantCode,
    },
}

/// What to do with a message whose SMTP delivery may or may not have happened (the
/// connection broke after the data was sent, before the server's answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnAmbiguous {
    /// Stop and let a person decide (never sent twice).
    Hold,
    /// Send again with the same `Message-ID` (never lost, maybe twice; the recipient's
    /// mail system can tell the copies apart by it). `retry` is the older name.
    #[serde(alias = "retry")]
    Resend,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_insecure: bool,
    pub from: EmailAddress,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_name: Option<String>,
    #[serde(flatten)]
    pub auth: SmtpAuth,
    pub on_ambiguous: OnAmbiguous,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphDelegateSettings {
    pub tenant: TenantCode,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphDirectSettings {
    pub tenant: TenantCode,
    pub from: EmailAddress,
    /// A separate app registration holding the application permission; the tenant's own
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<ClientId>,
}

/// A provider with its settings (never the secret: that is sealed apart).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderSettings {
    Smtp(SmtpSettings),
    GraphDelegate(GraphDelegateSettings),
    GraphDirect(GraphDirectSettings),
}

impl ProviderSettings {
    pub fn provider(&self) -> Provider {
        match self {
            Self::Smtp(_) => Provider::Smtp,
            Self::GraphDelegate(_) => Provider::GraphDelegate,
            Self::GraphDirect(_) => Provider::GraphDirect,
        }
    }

    /// The tenant the profile uses, with the field that named it.
    pub fn tenant(&self) -> Option<(&'static str, &TenantCode)> {
        match self {
            Self::Smtp(SmtpSettings {
                auth: SmtpAuth::Xoauth2 { tenant },
                ..
            }) => Some(("smtp.tenant", tenant)),
            Self::Smtp(_) => None,
            Self::GraphDelegate(g) => Some(("graph_delegate.tenant", &g.tenant)),
            Self::GraphDirect(g) => Some(("graph_direct.tenant", &g.tenant)),
        }
    }

    /// Which write-only secret the settings use, if any: `smtp.password` or
    /// `graph_direct.client_secret`.
    pub fn secret_kind(&self) -> Option<SecretKind> {
        match self {
            Self::Smtp(SmtpSettings {
                auth: SmtpAuth::Password { .. },
                ..
            }) => Some(SecretKind::SmtpPassword),
            // The secret of the separate app registration; the tenant's own is the tenant's.
            Self::GraphDirect(GraphDirectSettings { client_id: Some(_), .. }) => Some(SecretKind::GraphClientSecret),
            _ => None,
        }
    }
}

/// The one write-only field a profile may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    SmtpPassword,
    GraphClientSecret,
}

impl SecretKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SmtpPassword => "smtp_password",
            Self::GraphClientSecret => "graph_client_secret",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "smtp_password" => Some(Self::SmtpPassword),
            "graph_client_secret" => Some(Self::GraphClientSecret),
            _ => None,
        }
    }

    /// The input field it comes from.
    pub fn field(self) -> &'static str {
        match self {
            Self::SmtpPassword => "smtp.password",
            Self::GraphClientSecret => "graph_direct.client_secret",
        }
    }
}

/// A profile's name: 1–50 characters, no control characters and no `/` (it is a path
/// segment); unique without regard to case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ProfileName(String);

impl ProfileName {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let name = raw.trim();
        match name.chars().count() {
            0 => return Err("must not be empty".into()),
            n if n > 50 => return Err(format!("must be at most 50 characters (it has {n})")),
            _ => {}
        }
        if let Some(bad) = name.chars().find(|c| c.is_control() || *c == '/') {
            return Err(format!("must not contain {bad:?}"));
        }
        Ok(Self(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProfileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `apply_to` as it arrives: `"system"` or `{"companies": [...]}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum ApplyToInput {
    Word(String),
    Companies { companies: Vec<String> },
}

/// `smtp` as it arrives. Every field optional, so that all errors are reported together.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SmtpInput {
    pub host: Option<String>,
    pub port: Option<i64>,
    /// `starttls` (default), `tls` (implicit) or `none` (only with `allow_insecure`).
    pub security: Option<String>,
    #[serde(default)]
    pub allow_insecure: bool,
    pub from: Option<String>,
    pub from_name: Option<String>,
    /// `none`, `password` (default when a username is given) or `xoauth2`.
    pub auth: Option<String>,
    pub username: Option<String>,
    /// Write-only. A string sets it, `null` clears it, absent or `{"set": true}` keeps it.
    #[serde(default, deserialize_with = "secret_field")]
    #[schema(value_type = Option<String>)]
    pub password: Option<Option<SecretField>>,
    /// With `auth: xoauth2`: the tenant whose app registration gets the token.
    pub tenant: Option<String>,
    /// `hold` (default) or `resend`.
    pub on_ambiguous: Option<String>,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GraphDelegateInput {
    pub tenant: Option<String>,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GraphDirectInput {
    pub tenant: Option<String>,
    pub from: Option<String>,
    pub client_id: Option<String>,
    /// Write-only, with `client_id`.
    #[serde(default, deserialize_with = "secret_field")]
    #[schema(value_type = Option<String>)]
    pub client_secret: Option<Option<SecretField>>,
}

/// An email profile as the API and the CLI receive it (SPEC §6 "Email profile").
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileInput {
    pub name: Option<String>,
    pub description: Option<String>,
    /// `smtp`, `graph_delegate` or `graph_direct`.
    pub provider: Option<String>,
    /// `"system"` or `{"companies": ["ACME"]}`.
    #[schema(value_type = Object)]
    pub apply_to: Option<ApplyToInput>,
    /// Defaults to true.
    pub enabled: Option<bool>,
    pub functions: Option<Vec<String>>,
    pub smtp: Option<SmtpInput>,
    pub graph_delegate: Option<GraphDelegateInput>,
    pub graph_direct: Option<GraphDirectInput>,
}

/// A fully parsed profile, ready to store.
#[derive(Debug, Clone)]
pub struct NewProfile {
    pub name: ProfileName,
    pub description: String,
    pub apply_to: ApplyTo,
    pub enabled: bool,
    pub functions: BTreeSet<Function>,
    pub settings: ProviderSettings,
    /// What the write does to the profile's secret (`smtp.password` or
    /// `graph_direct.client_secret`, whichever [`ProviderSettings::secret_kind`] says).
    pub secret: SecretUpdate,
    /// Accepted, but worth a second look.
    pub warnings: Vec<FieldError>,
}

/// A host name or address for SMTP: letters, digits, `.`, `-`, `:` (IPv6) and `[]`.
fn smtp_host(raw: &str) -> Result<String, String> {
    let host = raw.trim().trim_end_matches('.');
    if host.is_empty() || host.len() > 253 {
        return Err("must be a host name such as smtp.office365.com".into());
    }
    if host.chars().all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c)) {
        Ok(host.to_ascii_lowercase())
    } else {
        Err("must be a host name such as smtp.office365.com".into())
    }
}

impl SmtpInput {
    fn parse(self, v: &mut Validator, warnings: &mut Vec<FieldError>) -> (Option<SmtpSettings>, SecretUpdate) {
        let host = v.required("smtp.host", self.host.as_deref(), smtp_host);
        let port = match self.port {
            Some(p) if (1..=65535).contains(&p) => Some(p as u16),
            Some(p) => {
                v.push("smtp.port", format!("must be from 1 to 65535 (it is {p})"));
                None
            }
            None => Some(587),
        };
        let security = match self.security.as_deref().map(str::trim).unwrap_or("starttls") {
            "starttls" => Some(SmtpSecurity::Starttls),
            "tls" => Some(SmtpSecurity::Tls),
            "none" if self.allow_insecure => Some(SmtpSecurity::None),
            "none" => {
                v.push(
                    "smtp.security",
                    "none sends passwords and mail unencrypted; it needs \"allow_insecure\": true",
                );
                None
            }
            other => {
                v.push("smtp.security", format!("'{other}' is not starttls, tls or none"));
                None
            }
        };
        let from = v.required("smtp.from", self.from.as_deref(), EmailAddress::parse);
        let from_name = self.from_name.map(|n| n.trim().to_string()).filter(|n| !n.is_empty());
        if from_name
            .as_ref()
            .is_some_and(|n| n.chars().count() > 100 || n.chars().any(char::is_control))
        {
            v.push("smtp.from_name", "must be at most 100 characters, without line breaks");
        }
        let auth_word = self
            .auth
            .as_deref()
            .map(str::trim)
            .unwrap_or(if self.username.is_some() { "password" } else { "none" });
        let mut password = SecretUpdate::Keep;
        let auth = match auth_word {
            "none" => {
                for (given, field) in [(self.username.is_some(), "smtp.username"), (self.tenant.is_some(), "smtp.tenant")] {
                    if given {
                        v.push(field, "is only for auth: password or xoauth2");
                    }
                }
                if self.password.is_some() {
                    v.push("smtp.password", "is only for auth: password");
                }
                Some(SmtpAuth::None)
            }
            "password" => {
                if self.tenant.is_some() {
                    v.push("smtp.tenant", "is only for auth: xoauth2");
                }
                password = secret_update(v, "smtp.password", self.password);
                let username = v.required("smtp.username", self.username.as_deref(), |u| {
                    let u = u.trim();
                    if u.is_empty() || u.len() > 256 {
                        Err("must be 1 to 256 characters".to_string())
                    } else {
                        Ok(u.to_string())
                    }
                });
                username.map(|username| SmtpAuth::Password { username })
            }
            "xoauth2" => {
                if self.password.is_some() {
                    v.push("smtp.password", "is not used with auth: xoauth2 (the token comes from the tenant)");
                }
                if self.username.is_some() {
                    v.push("smtp.username", "is not used with auth: xoauth2 (the from address is the mailbox)");
                }
                v.required("smtp.tenant", self.tenant.as_deref(), TenantCode::parse)
                    .map(|tenant| SmtpAuth::Xoauth2 { tenant })
            }
            other => {
                v.push("smtp.auth", format!("'{other}' is not none, password or xoauth2"));
                None
            }
        };
        let on_ambiguous = match self.on_ambiguous.as_deref().map(str::trim).unwrap_or("hold") {
            "hold" => Some(OnAmbiguous::Hold),
            "resend" | "retry" => Some(OnAmbiguous::Resend),
            other => {
                v.push("smtp.on_ambiguous", format!("'{other}' is not hold or resend"));
                None
            }
        };
        if let Some(p @ (25 | 465)) = port {
            warnings.push(FieldError::new(
                "smtp.port",
                format!("port {p} works, but 587 with STARTTLS is the recommended submission port"),
            ));
        }
        if matches!(auth, Some(SmtpAuth::Password { .. })) && host.as_deref() == Some("smtp.office365.com") {
            warnings.push(FieldError::new(
                "smtp.auth",
                "Microsoft is switching basic SMTP AUTH off for Exchange Online (by default for existing tenants from the end of December 2026); use auth: xoauth2",
            ));
        }
        let settings = match (host, port, security, from, auth, on_ambiguous) {
            (Some(host), Some(port), Some(security), Some(from), Some(auth), Some(on_ambiguous)) => Some(SmtpSettings {
                host,
                port,
                security,
                allow_insecure: self.allow_insecure,
                from,
                from_name,
                auth,
                on_ambiguous,
            }),
            _ => None,
        };
        (settings, password)
    }
}

impl ProfileInput {
    /// Parses every field; `path_name` is the name from the URL of a replace, which the body
    /// may repeat but not contradict.
    pub fn parse(self, path_name: Option<&str>) -> Result<NewProfile, Vec<FieldError>> {
        let mut v = Validator::default();
        let mut warnings = Vec::new();
        let name = match (path_name, self.name.as_deref()) {
            (Some(p), Some(b)) if p.trim() != b.trim() => {
                v.push("name", "must match the name in the URL");
                None
            }
            (Some(p), _) => v.field("name", ProfileName::parse(p)),
            (None, Some(b)) => v.field("name", ProfileName::parse(b)),
            (None, None) => {
                v.push("name", "is required");
                None
            }
        };
        let description = self.description.unwrap_or_default().trim().to_string();
        if description.chars().count() > 200 {
            v.push("description", "must be at most 200 characters");
        }
        let provider = v.required("provider", self.provider.as_deref(), Provider::parse);
        let apply_to = match self.apply_to {
            None => {
                v.push("apply_to", "is required: \"system\" or {\"companies\": [...]}");
                None
            }
            Some(ApplyToInput::Word(w)) if w.trim() == "system" => Some(ApplyTo::System),
            Some(ApplyToInput::Word(w)) => {
                v.push("apply_to", format!("'{w}' is not \"system\" or {{\"companies\": [...]}}"));
                None
            }
            Some(ApplyToInput::Companies { companies }) if companies.is_empty() => {
                v.push("apply_to.companies", "must name at least one company (or use \"system\")");
                None
            }
            Some(ApplyToInput::Companies { companies }) => {
                let mut codes = Vec::new();
                for (i, raw) in companies.iter().enumerate() {
                    if let Some(c) = v.field(&format!("apply_to.companies[{i}]"), CompanyCode::parse(raw))
                        && !codes.contains(&c)
                    {
                        codes.push(c);
                    }
                }
                codes.sort();
                Some(ApplyTo::Companies(codes))
            }
        };
        let enabled = self.enabled.unwrap_or(true);
        let functions: BTreeSet<Function> = match self.functions {
            None => {
                v.push("functions", "is required: at least one function");
                BTreeSet::new()
            }
            Some(fs) if fs.is_empty() => {
                v.push("functions", "must list at least one function");
                BTreeSet::new()
            }
            Some(fs) => fs
                .iter()
                .enumerate()
                .filter_map(|(i, f)| v.field(&format!("functions[{i}]"), Function::parse(f)))
                .collect(),
        };
        // Each provider's block, and only that one.
        let blocks = [
            (Provider::Smtp, self.smtp.is_some()),
            (Provider::GraphDelegate, self.graph_delegate.is_some()),
            (Provider::GraphDirect, self.graph_direct.is_some()),
        ];
        for (p, given) in blocks {
            if given && provider.is_some_and(|chosen| chosen != p) {
                v.push(
                    p.as_str(),
                    format!(
                        "holds settings for {}, but the provider is {}",
                        p.as_str(),
                        provider.map_or("", Provider::as_str)
                    ),
                );
            }
        }
        let mut secret = SecretUpdate::Keep;
        let settings = match provider {
            None => None,
            Some(Provider::Smtp) => match self.smtp {
                None => {
                    v.push("smtp", "is required with provider smtp");
                    None
                }
                Some(smtp) => {
                    let (settings, password) = smtp.parse(&mut v, &mut warnings);
                    secret = password;
                    settings.map(ProviderSettings::Smtp)
                }
            },
            Some(Provider::GraphDelegate) => {
                if functions.iter().any(|f| *f != Function::UserInterface) {
                    v.push(
                        "functions",
                        "a graph_delegate profile sends as the operator at the screen, so it may serve only user_interface",
                    );
                }
                let g = self.graph_delegate.unwrap_or_default();
                v.required("graph_delegate.tenant", g.tenant.as_deref(), TenantCode::parse)
                    .map(|tenant| ProviderSettings::GraphDelegate(GraphDelegateSettings { tenant }))
            }
            Some(Provider::GraphDirect) => {
                let g = self.graph_direct.unwrap_or_default();
                let tenant = v.required("graph_direct.tenant", g.tenant.as_deref(), TenantCode::parse);
                let from = v.required("graph_direct.from", g.from.as_deref(), EmailAddress::parse);
                let client_id = g
                    .client_id
                    .as_deref()
                    .and_then(|c| v.field("graph_direct.client_id", ClientId::parse(c)));
                if g.client_id.is_none() && matches!(g.client_secret, Some(Some(SecretField::Value(_)))) {
                    v.push(
                        "graph_direct.client_secret",
                        "is only for a separate app registration: give its client_id too",
                    );
                }
                secret = secret_update(&mut v, "graph_direct.client_secret", g.client_secret);
                match (tenant, from) {
                    (Some(tenant), Some(from)) => Some(ProviderSettings::GraphDirect(GraphDirectSettings { tenant, from, client_id })),
                    _ => None,
                }
            }
        };
        if !enabled {
            warnings.push(FieldError::new(
                "enabled",
                "the profile is saved disabled: it sends nothing until enabled",
            ));
        }
        v.finish(|| NewProfile {
            name: name.expect("checked"),
            description,
            apply_to: apply_to.expect("checked"),
            enabled,
            functions,
            settings: settings.expect("checked"),
            secret,
            warnings,
        })
    }
}

/// What resolution needs to know of a profile.
#[derive(Debug, Clone)]
pub struct ProfileSummary {
    pub name: ProfileName,
    pub provider: Provider,
    pub apply_to: ApplyTo,
    pub enabled: bool,
    pub functions: BTreeSet<Function>,
}

/// Which profile sends for a company and function, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Resolution {
    #[schema(value_type = String)]
    pub profile: ProfileName,
    pub provider: Provider,
    /// `company` or `system`: where the matching profile applies.
    pub scope: &'static str,
    /// The function whose profile matched (`all_documents` or `default` when it fell back).
    pub function: Function,
}

/// Resolves (company, function) to a profile (SPEC §2): the first enabled profile of — the
/// company's for the function; the system's for it; for the six specific document functions,
/// the company's then the system's `all_documents`; the company's then the system's
/// `default`. A pure function: the store hands it every profile.
pub fn resolve(profiles: &[ProfileSummary], company: &CompanyCode, function: Function) -> Option<Resolution> {
    let mut order = vec![function];
    if function.is_specific_document() {
        order.push(Function::AllDocuments);
    }
    if function != Function::Default {
        order.push(Function::Default);
    }
    let company_scope = Scope::Company(company.clone());
    for f in order {
        for (scope, word) in [(&company_scope, "company"), (&Scope::System, "system")] {
            let found = profiles
                .iter()
                .filter(|p| p.enabled && p.functions.contains(&f) && p.apply_to.scopes().contains(scope))
                // The claim rule leaves at most one; the name breaks a tie in data written
                // around the rule.
                .min_by(|a, b| a.name.cmp(&b.name));
            if let Some(p) = found {
                return Some(Resolution {
                    profile: p.name.clone(),
                    provider: p.provider,
                    scope: word,
                    function: f,
                });
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<NewProfile, Vec<FieldError>> {
        serde_json::from_value::<ProfileInput>(v).unwrap().parse(None)
    }

    fn fields(v: serde_json::Value) -> Vec<String> {
        parse(v).unwrap_err().into_iter().map(|e| e.field).collect()
    }

    fn smtp() -> serde_json::Value {
        json!({"name": "AR", "provider": "smtp", "apply_to": "system", "functions": ["default"],
               "smtp": {"host": "smtp.contoso.com", "from": "ar@contoso.com"}})
    }

    #[test]
    fn the_spec_example_parses() {
        let p = parse(json!({
            "name": "AR-STATEMENTS", "description": "AR statements from the accounts mailbox",
            "provider": "smtp", "apply_to": {"companies": ["ACME", "GLOBEX"]}, "enabled": true,
            "functions": ["documents_accounts_receivable"],
            "smtp": {"host": "smtp.office365.com", "port": 587, "security": "starttls",
                     "from": "accounts@contoso.com", "from_name": "Contoso Accounts",
                     "auth": "password", "username": "accounts@contoso.com", "password": "write-only",
                     "on_ambiguous": "hold"}
        }))
        .unwrap();
        assert_eq!(p.apply_to.scopes().len(), 2);
        assert!(matches!(p.secret, SecretUpdate::Set(_)));
        assert_eq!(p.settings.secret_kind(), Some(SecretKind::SmtpPassword));
        // Basic SMTP AUTH against Exchange Online is a warning, not an error.
        assert_eq!(p.warnings.len(), 1);
        assert_eq!(p.warnings[0].field, "smtp.auth");
        assert!(!format!("{p:?}").contains("write-only"), "Debug never shows the password");
    }

    #[test]
    fn defaults_are_587_starttls_no_auth_hold_enabled() {
        let p = parse(smtp()).unwrap();
        let ProviderSettings::Smtp(s) = &p.settings else { panic!() };
        assert_eq!(
            (s.port, s.security, &s.auth, s.on_ambiguous),
            (587, SmtpSecurity::Starttls, &SmtpAuth::None, OnAmbiguous::Hold)
        );
        assert!(p.enabled && p.warnings.is_empty());
    }

    #[test]
    fn every_bad_field_is_reported_at_once() {
        let got = fields(json!({
            "name": "x".repeat(51), "provider": "smtp", "apply_to": {"companies": []}, "functions": ["nope"],
            "smtp": {"host": "smtp.contoso.com", "from": "not an address", "port": 70000, "security": "none"},
            "graph_direct": {"tenant": "C"}
        }));
        assert_eq!(
            got,
            [
                "name",
                "apply_to.companies",
                "functions[0]",
                "graph_direct",
                "smtp.port",
                "smtp.security",
                "smtp.from"
            ]
        );
    }

    #[test]
    fn each_rule_of_the_issue() {
        assert_eq!(fields(json!({"name": "", "provider": "smtp"}))[0], "name");
        assert!(
            fields(json!({"name": "A", "provider": "fax", "apply_to": "system", "functions": ["default"]}))
                .contains(&"provider".to_string())
        );
        assert!(
            fields(
                json!({"name": "A", "provider": "smtp", "apply_to": "system", "functions": [], "smtp": {"host": "h", "from": "a@b.co"}})
            )
            .contains(&"functions".to_string())
        );
        let delegate = fields(
            json!({"name": "A", "provider": "graph_delegate", "apply_to": "system", "functions": ["user_interface", "all_reports"], "graph_delegate": {"tenant": "C"}}),
        );
        assert_eq!(delegate, ["functions"]);
        let direct = fields(
            json!({"name": "A", "provider": "graph_direct", "apply_to": "system", "functions": ["all_reports"], "graph_direct": {"tenant": "C"}}),
        );
        assert_eq!(direct, ["graph_direct.from"]);
        let mut port0 = smtp();
        port0["smtp"]["port"] = json!(0);
        assert_eq!(fields(port0), ["smtp.port"]);
        let mut insecure = smtp();
        insecure["smtp"]["security"] = json!("none");
        assert_eq!(fields(insecure.clone()), ["smtp.security"]);
        insecure["smtp"]["allow_insecure"] = json!(true);
        assert!(parse(insecure).is_ok());
        let mut xoauth2 = smtp();
        xoauth2["smtp"]["auth"] = json!("xoauth2");
        assert_eq!(fields(xoauth2), ["smtp.tenant"]);
    }

    #[test]
    fn warnings_for_ports_25_and_465_and_a_disabled_profile() {
        for port in [25, 465] {
            let mut p = smtp();
            p["smtp"]["port"] = json!(port);
            p["enabled"] = json!(false);
            let w: Vec<String> = parse(p).unwrap().warnings.into_iter().map(|w| w.field).collect();
            assert_eq!(w, ["smtp.port", "enabled"]);
        }
    }

    fn profile(name: &str, apply_to: ApplyTo, enabled: bool, functions: &[Function]) -> ProfileSummary {
        ProfileSummary {
            name: ProfileName::parse(name).unwrap(),
            provider: Provider::Smtp,
            apply_to,
            enabled,
            functions: functions.iter().copied().collect(),
        }
    }

    fn company(c: &str) -> CompanyCode {
        CompanyCode::parse(c).unwrap()
    }

    /// Every function, for a company that has its own profile for it, one that relies on the
    /// system's, and the fallbacks; disabled profiles are passed over at every step.
    #[test]
    fn resolution_for_every_function_scope_and_state() {
        let acme = || ApplyTo::Companies(vec![company("ACME")]);
        for f in Function::ALL {
            // The company's own profile wins over the system's.
            let both = [profile("SYS", ApplyTo::System, true, &[f]), profile("OWN", acme(), true, &[f])];
            let r = resolve(&both, &company("ACME"), f).unwrap();
            assert_eq!((r.profile.as_str(), r.scope, r.function), ("OWN", "company", f));
            // Another company gets the system's.
            let r = resolve(&both, &company("GLOBEX"), f).unwrap();
            assert_eq!((r.profile.as_str(), r.scope, r.function), ("SYS", "system", f));
            // A disabled company profile is passed over.
            let off = [profile("SYS", ApplyTo::System, true, &[f]), profile("OWN", acme(), false, &[f])];
            assert_eq!(resolve(&off, &company("ACME"), f).unwrap().profile.as_str(), "SYS");
            // Nothing enabled at all: no profile.
            let none = [profile("SYS", ApplyTo::System, false, &[f]), profile("OWN", acme(), false, &[f])];
            assert_eq!(resolve(&none, &company("ACME"), f), None);

            // The fallbacks, in order: company all_documents, system all_documents (specific
            // document functions only), company default, system default.
            let fallbacks = [
                profile("C-DOCS", acme(), true, &[Function::AllDocuments]),
                profile("S-DOCS", ApplyTo::System, true, &[Function::AllDocuments]),
                profile("C-DEF", acme(), true, &[Function::Default]),
                profile("S-DEF", ApplyTo::System, true, &[Function::Default]),
            ];
            // A specific document function, and all_documents itself, find all_documents first.
            let expected: Vec<(&str, &str, Function)> = if f.is_specific_document() || f == Function::AllDocuments {
                vec![
                    ("C-DOCS", "company", Function::AllDocuments),
                    ("S-DOCS", "system", Function::AllDocuments),
                    ("C-DEF", "company", Function::Default),
                    ("S-DEF", "system", Function::Default),
                ]
            } else {
                vec![("C-DEF", "company", Function::Default), ("S-DEF", "system", Function::Default)]
            };
            // Disable them one by one from the top: each time the next one answers.
            for skip in 0..expected.len() {
                let mut ps: Vec<ProfileSummary> = fallbacks.to_vec();
                for p in ps.iter_mut() {
                    let rank = expected.iter().position(|(n, _, _)| *n == p.name.as_str());
                    if rank.is_some_and(|r| r < skip) {
                        p.enabled = false;
                    }
                }
                let r = resolve(&ps, &company("ACME"), f).unwrap_or_else(|| panic!("{f}: nothing at step {skip}"));
                assert_eq!((r.profile.as_str(), r.scope, r.function), expected[skip], "{f}, step {skip}");
            }
            // Every fallback disabled: no profile.
            let all_off: Vec<ProfileSummary> = fallbacks
                .iter()
                .cloned()
                .map(|mut p| {
                    p.enabled = false;
                    p
                })
                .collect();
            assert_eq!(resolve(&all_off, &company("ACME"), f), None, "{f}");
        }
    }

    #[test]
    fn non_document_functions_never_fall_back_to_all_documents() {
        let only_docs = [profile("DOCS", ApplyTo::System, true, &[Function::AllDocuments])];
        for f in Function::ALL
            .into_iter()
            .filter(|f| !f.is_specific_document() && *f != Function::AllDocuments)
        {
            assert_eq!(resolve(&only_docs, &company("ACME"), f), None, "{f}");
        }
    }
}
