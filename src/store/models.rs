//! What the store returns. These serialize to the wire shapes of SPEC §6, which are a
//! contract with ERP clients: change them only with an API version bump.

use crate::domain::{Authority, ClientId, DirectoryId, EmailAddress, GraphEndpoint, OperatorCode, Platform, RedirectUrl, TenantCode};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

/// Whether a write-only secret is stored; the value itself is never returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct SecretState {
    pub set: bool,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Tenant {
    #[schema(value_type = String, example = "CONTOSO")]
    pub code: TenantCode,
    pub description: String,
    #[schema(value_type = String, example = "72f988bf-86f1-41af-91ab-2d7cd011db47")]
    pub tenant_id: DirectoryId,
    #[schema(value_type = String, example = "0b3f2a7e-5d1c-4c8e-9a3b-2f6d8e1c4b7a")]
    pub client_id: ClientId,
    pub platform: Platform,
    #[schema(value_type = String, example = "https://localhost")]
    pub redirect_url: RedirectUrl,
    pub client_secret: SecretState,
    #[schema(value_type = String, example = "https://login.microsoftonline.com")]
    pub authority: Authority,
    #[schema(value_type = String, example = "https://graph.microsoft.com")]
    pub graph_endpoint: GraphEndpoint,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Whether an operator's Microsoft account is linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SigninState {
    /// Never signed in.
    Never,
    /// A refresh token is stored.
    Linked,
    /// The refresh token was refused or expired; the operator must sign in again.
    SigninRequired,
}

impl SigninState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Never => "never",
            Self::Linked => "linked",
            Self::SigninRequired => "signin_required",
        }
    }

    pub(crate) fn from_db(raw: &str) -> Option<Self> {
        match raw {
            "linked" => Some(Self::Linked),
            "signin_required" => Some(Self::SigninRequired),
            "never" => Some(Self::Never),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Operator {
    #[schema(value_type = String, example = "jdoe")]
    pub code: OperatorCode,
    pub enabled: bool,
    #[schema(value_type = Option<String>, example = "CONTOSO")]
    pub tenant: Option<TenantCode>,
    #[schema(value_type = Option<String>, example = "jdoe@contoso.com")]
    pub email: Option<EmailAddress>,
    pub signin: SigninState,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub use crate::domain::NewOperator;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Company {
    pub code: String,
    pub name: String,
}

/// What an API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Tenants, operators, email profiles, API keys, the audit log.
    Admin,
    /// Exports, contacts and mail, on behalf of the operator named in `X-Operator`.
    Client,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Client => "client",
        }
    }

    pub(crate) fn from_db(raw: &str) -> Option<Self> {
        match raw {
            "admin" => Some(Self::Admin),
            "client" => Some(Self::Client),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    /// The API key name, or `cli:<user>` for the command line.
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: serde_json::Value,
}

/// An operator sign-in waiting for its callback (kept 10 minutes, used once).
#[derive(Debug, Clone)]
pub struct PendingSignin {
    pub operator: OperatorCode,
    pub verifier: crate::domain::Secret,
    pub nonce: String,
    pub redirect_uri: String,
    pub expires_at: DateTime<Utc>,
}

/// An email profile's provider settings as reads show them: every setting, and the
/// write-only secret only as whether it is set.
#[derive(Debug, Clone, Serialize)]
pub enum SettingsView {
    #[serde(rename = "smtp")]
    Smtp {
        #[serde(flatten)]
        settings: crate::domain::SmtpSettings,
        #[serde(skip_serializing_if = "Option::is_none")]
        password: Option<SecretState>,
    },
    #[serde(rename = "graph_delegate")]
    GraphDelegate(crate::domain::GraphDelegateSettings),
    #[serde(rename = "graph_direct")]
    GraphDirect {
        #[serde(flatten)]
        settings: crate::domain::GraphDirectSettings,
        #[serde(skip_serializing_if = "Option::is_none")]
        client_secret: Option<SecretState>,
    },
}

/// An email profile as the API answers it (SPEC §6 "Email profile").
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Profile {
    #[schema(value_type = String, example = "AR-STATEMENTS")]
    pub name: crate::domain::ProfileName,
    pub description: String,
    pub provider: crate::domain::Provider,
    /// `"system"` or `{"companies": [...]}`.
    #[schema(value_type = Object)]
    pub apply_to: crate::domain::ApplyTo,
    pub enabled: bool,
    pub functions: Vec<crate::domain::Function>,
    /// The provider's settings under its name (`smtp`, `graph_delegate`, `graph_direct`).
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub settings: SettingsView,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Profile {
    /// What resolution needs of it.
    pub fn summary(&self) -> crate::domain::ProfileSummary {
        crate::domain::ProfileSummary {
            name: self.name.clone(),
            provider: self.provider,
            apply_to: self.apply_to.clone(),
            enabled: self.enabled,
            functions: self.functions.iter().copied().collect(),
        }
    }
}
