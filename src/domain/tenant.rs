//! A Microsoft 365 tenant record (the source's AdmOfficeTenants), parsed from API or CLI input.

use super::{Authority, FieldError, GraphEndpoint, RedirectUrl, Secret, TenantCode, Validator};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The directory (tenant) id: a GUID or a verified domain such as `contoso.onmicrosoft.com`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct DirectoryId(String);

impl DirectoryId {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let value = raw.trim().to_ascii_lowercase();
        if let Ok(guid) = uuid::Uuid::parse_str(&value) {
            return Ok(Self(guid.hyphenated().to_string()));
        }
        // `common`, `organizations` and `consumers` are multi-tenant authorities: a tenant
        // record must pin one directory, or users of any organisation could sign in to it.
        if ["common", "organizations", "consumers"].contains(&value.as_str()) {
            return Err(format!(
                "'{value}' is a multi-tenant alias; give the directory's GUID or verified domain"
            ));
        }
        let labels: Vec<&str> = value.split('.').collect();
        let label_ok = |l: &&str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        if value.len() <= 253 && labels.len() >= 2 && labels.iter().all(label_ok) {
            Ok(Self(value))
        } else {
            Err("must be a GUID or a verified domain name such as contoso.onmicrosoft.com".into())
        }
    }

    pub fn from_stored(value: String) -> Self {
        Self(value)
    }

    /// A directory id (GUID) rather than a verified domain.
    pub fn is_guid(&self) -> bool {
        uuid::Uuid::parse_str(&self.0).is_ok()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The application (client) id of an Entra app registration: always a GUID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ClientId(String);

impl ClientId {
    pub fn parse(raw: &str) -> Result<Self, String> {
        uuid::Uuid::parse_str(raw.trim())
            .map(|g| Self(g.hyphenated().to_string()))
            .map_err(|_| "must be a GUID such as 0b3f2a7e-5d1c-4c8e-9a3b-2f6d8e1c4b7a".to_string())
    }

    pub fn from_stored(value: String) -> Self {
        Self(value)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for ClientId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// The platform of the delegated app registration, which decides the redirect rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    PublicClient,
    Spa,
}

impl Platform {
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw.trim() {
            "public_client" => Ok(Self::PublicClient),
            "spa" => Ok(Self::Spa),
            _ => Err("must be 'public_client' or 'spa'".into()),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::PublicClient => "public_client",
            Self::Spa => "spa",
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a write does to a write-only secret field.
#[derive(Debug, Clone, Default)]
pub enum SecretUpdate {
    /// Leave the stored value as it is (field absent, or `{"set": true}` echoed from a GET).
    #[default]
    Keep,
    /// Remove it (`null` or `{"set": false}`).
    Clear,
    /// Store a new value.
    Set(Secret),
}

/// The write-only secret as it may arrive: the value itself, or the `{"set": bool}` marker
/// that reads return, so a client may PUT back what it got from a GET.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum SecretField {
    Value(Secret),
    Marker { set: bool },
}

/// Deserializes a write-only field so that absent (`None`), `null` (`Some(None)`) and a value
/// or marker (`Some(Some(..))`) stay apart.
pub(super) fn secret_field<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<SecretField>>, D::Error> {
    Option::<SecretField>::deserialize(d).map(Some)
}

/// A tenant as the API and the CLI receive it. Every field is optional here so that all
/// missing and invalid fields are reported together by [`TenantInput::parse`].
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantInput {
    /// Short unique code, such as `CONTOSO` (required when creating).
    pub code: Option<String>,
    pub description: Option<String>,
    /// Directory (tenant) id: a GUID or a verified domain.
    pub tenant_id: Option<String>,
    /// Application (client) id of the Entra app registration (GUID).
    pub client_id: Option<String>,
    /// `public_client` (default) or `spa`.
    pub platform: Option<String>,
    /// Defaults to `https://localhost` for `public_client`; required for `spa`.
    pub redirect_url: Option<String>,
    /// Write-only. A string sets it, `null` clears it, absent or `{"set": true}` keeps it.
    #[serde(default, deserialize_with = "secret_field")]
    #[schema(value_type = Option<String>)]
    pub client_secret: Option<Option<SecretField>>,
    /// Defaults to `https://login.microsoftonline.com`.
    pub authority: Option<String>,
    /// Defaults to `https://graph.microsoft.com`.
    pub graph_endpoint: Option<String>,
    /// Legacy Exchange Web Services URL: accepted for compatibility and ignored.
    pub exchange_web_service: Option<String>,
}

/// A fully parsed tenant, ready to store.
#[derive(Debug, Clone)]
pub struct NewTenant {
    pub code: TenantCode,
    pub description: String,
    pub tenant_id: DirectoryId,
    pub client_id: ClientId,
    pub platform: Platform,
    pub redirect_url: RedirectUrl,
    pub client_secret: SecretUpdate,
    pub authority: Authority,
    pub graph_endpoint: GraphEndpoint,
    /// Notes for the caller about accepted-but-ignored input.
    pub warnings: Vec<String>,
}

impl TenantInput {
    /// Parses every field; `path_code` is the code from the URL of a replace, which the body
    /// may repeat but not contradict.
    pub fn parse(self, path_code: Option<&str>, emulator: Option<&str>) -> Result<NewTenant, Vec<FieldError>> {
        let mut v = Validator::default();
        let code = match (path_code, self.code.as_deref()) {
            (Some(p), Some(b)) if TenantCode::parse(p).ok() != TenantCode::parse(b).ok() => {
                v.push("code", "must match the code in the URL");
                None
            }
            (Some(p), _) => v.field("code", TenantCode::parse(p)),
            (None, Some(b)) => v.field("code", TenantCode::parse(b)),
            (None, None) => {
                v.push("code", "is required");
                None
            }
        };
        let description = self.description.unwrap_or_default();
        if description.chars().count() > 200 {
            v.push("description", "must be at most 200 characters");
        }
        let tenant_id = v.required("tenant_id", self.tenant_id.as_deref(), DirectoryId::parse);
        let client_id = v.required("client_id", self.client_id.as_deref(), ClientId::parse);
        let platform = v.field("platform", Platform::parse(self.platform.as_deref().unwrap_or("public_client")));
        let redirect_url = platform.and_then(|p| match (self.redirect_url.as_deref(), p) {
            (Some(raw), _) => v.field("redirect_url", RedirectUrl::parse(raw, p)),
            (None, Platform::PublicClient) => v.field("redirect_url", RedirectUrl::parse("https://localhost", p)),
            (None, Platform::Spa) => {
                v.push("redirect_url", "is required for an spa tenant (the web UI's https URL)");
                None
            }
        });
        let authority = match self.authority.as_deref() {
            Some(raw) => v.field("authority", Authority::parse(raw, emulator)),
            None => Some(Authority::global()),
        };
        let graph_endpoint = match self.graph_endpoint.as_deref() {
            Some(raw) => v.field("graph_endpoint", GraphEndpoint::parse(raw, emulator)),
            None => Some(GraphEndpoint::global()),
        };
        let client_secret = secret_update(&mut v, "client_secret", self.client_secret);
        let warnings = match self.exchange_web_service.as_deref().map(str::trim) {
            Some(ews) if !ews.is_empty() => vec![
                "exchange_web_service is ignored: Exchange Web Services is retired in Exchange Online; officebridge uses Microsoft Graph"
                    .to_string(),
            ],
            _ => Vec::new(),
        };
        v.finish(|| NewTenant {
            code: code.expect("checked"),
            description,
            tenant_id: tenant_id.expect("checked"),
            client_id: client_id.expect("checked"),
            platform: platform.expect("checked"),
            redirect_url: redirect_url.expect("checked"),
            client_secret,
            authority: authority.expect("checked"),
            graph_endpoint: graph_endpoint.expect("checked"),
            warnings,
        })
    }
}

/// What a write does to a write-only field, checked: a string sets it (not empty, at most
/// 1024 characters), `null` or `{"set": false}` clears it, absent or `{"set": true}` keeps it.
pub(super) fn secret_update(v: &mut Validator, field: &str, raw: Option<Option<SecretField>>) -> SecretUpdate {
    match raw {
        None | Some(Some(SecretField::Marker { set: true })) => SecretUpdate::Keep,
        Some(None) | Some(Some(SecretField::Marker { set: false })) => SecretUpdate::Clear,
        Some(Some(SecretField::Value(s))) if s.expose_secret().trim().is_empty() => {
            v.push(field, "must not be empty (use null to clear it)");
            SecretUpdate::Keep
        }
        Some(Some(SecretField::Value(s))) if s.expose_secret().len() > 1024 => {
            v.push(field, "must be at most 1024 characters");
            SecretUpdate::Keep
        }
        Some(Some(SecretField::Value(s))) => SecretUpdate::Set(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> TenantInput {
        TenantInput {
            code: Some("contoso".into()),
            tenant_id: Some("72F988BF-86F1-41AF-91AB-2D7CD011DB47".into()),
            client_id: Some("0b3f2a7e-5d1c-4c8e-9a3b-2f6d8e1c4b7a".into()),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_fill_platform_redirect_and_clouds() {
        let t = input().parse(None, None).unwrap();
        assert_eq!(t.code.as_str(), "CONTOSO");
        assert_eq!(t.tenant_id.as_str(), "72f988bf-86f1-41af-91ab-2d7cd011db47");
        assert_eq!(t.platform, Platform::PublicClient);
        assert_eq!(t.redirect_url.as_str(), "https://localhost");
        assert_eq!(t.authority.as_str(), "https://login.microsoftonline.com");
        assert_eq!(t.graph_endpoint.as_str(), "https://graph.microsoft.com");
        assert!(t.warnings.is_empty());
    }

    #[test]
    fn every_bad_field_is_reported_at_once() {
        let bad = TenantInput {
            code: None,
            tenant_id: Some("common".into()),
            client_id: Some("not-a-guid".into()),
            platform: Some("spa".into()),
            redirect_url: Some("http://erp.contoso.com".into()),
            ..Default::default()
        };
        let errors = bad.parse(None, None).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["code", "tenant_id", "client_id", "redirect_url"]);
    }

    #[test]
    fn path_code_must_match_body_code() {
        let errors = input().parse(Some("FABRIKAM"), None).unwrap_err();
        assert_eq!(errors[0].field, "code");
        assert!(input().parse(Some("CONTOSO"), None).is_ok());
    }

    #[test]
    fn exchange_web_service_is_a_warning() {
        let t = TenantInput {
            exchange_web_service: Some("https://outlook.office365.com/EWS/Exchange.asmx".into()),
            ..input()
        };
        assert_eq!(t.parse(None, None).unwrap().warnings.len(), 1);
    }
}
