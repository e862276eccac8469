//! What the emulator starts with: tenants, their users and app registrations, from a TOML or
//! JSON file (`officebridge emulator --seed FILE`) or the built-in demo.

use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {
    #[serde(default)]
    pub tenants: Vec<SeedTenant>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedTenant {
    /// The directory (tenant) id, a GUID.
    pub id: String,
    /// Its verified domain, usable in place of the id in URLs (`contoso.onmicrosoft.com`).
    pub domain: String,
    #[serde(default)]
    pub users: Vec<SeedUser>,
    #[serde(default)]
    pub apps: Vec<SeedApp>,
    /// The organisation's contacts (`/contacts`): people outside it, kept in the directory.
    #[serde(default)]
    pub org_contacts: Vec<SeedOrgContact>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedOrgContact {
    pub display_name: String,
    pub mail: String,
    #[serde(default)]
    pub company: Option<String>,
}

/// A personal contact in a user's mailbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedContact {
    pub display_name: String,
    pub email: String,
    #[serde(default)]
    pub company: Option<String>,
    /// A folder path below Contacts (`Customers/Key accounts`); the Contacts folder itself when absent.
    #[serde(default)]
    pub folder: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedUser {
    /// The object id, a GUID.
    pub id: String,
    pub user_principal_name: String,
    pub display_name: String,
    #[serde(default)]
    pub mail: Option<String>,
    /// Whether sign-in asks for a second factor.
    #[serde(default)]
    pub mfa: bool,
    #[serde(default)]
    pub contacts: Vec<SeedContact>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedApp {
    /// The application (client) id, a GUID.
    pub client_id: String,
    #[serde(default)]
    pub display_name: String,
    /// Client secret values (an app may have several during a rollover).
    #[serde(default)]
    pub secrets: Vec<String>,
    #[serde(default)]
    pub redirect_uris: Vec<SeedRedirect>,
    /// Delegated Microsoft Graph permissions users have consented to (`User.Read`, …).
    #[serde(default)]
    pub delegated_scopes: Vec<String>,
    /// Microsoft Graph application permissions granted with admin consent (`Mail.Send`, …).
    #[serde(default)]
    pub app_roles: Vec<String>,
    /// Office 365 Exchange Online application permissions with admin consent
    /// (`SMTP.SendAsApp`), in tokens for `https://outlook.office365.com`.
    #[serde(default)]
    pub exchange_roles: Vec<String>,
    /// Scopes of the app's own API (Expose an API: `access_as_user`).
    #[serde(default)]
    pub exposed_scopes: Vec<String>,
    /// Application ID URIs of the app's own API (`api://localhost/{client id}`).
    #[serde(default)]
    pub identifier_uris: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedRedirect {
    pub uri: String,
    /// `public_client` (mobile and desktop), `spa` or `web`.
    pub platform: String,
}

/// The demo tenant of `serve --dev` and of a bare `officebridge emulator`.
pub const DEMO_TENANT_ID: &str = "7e1a1c3d-5b2f-4e8a-9c6d-0f1e2d3c4b5a";
pub const DEMO_DOMAIN: &str = "demo.onmicrosoft.com";
pub const DEMO_CLIENT_ID: &str = "3c5e7a9b-1d2f-4a6c-8e0b-2d4f6a8c0e1b";
pub const DEMO_USER: &str = "demo@demo.onmicrosoft.com";
/// A second app registration of the demo tenant that holds only the mail application
/// permissions, as an administrator would register one for a `graph_direct` profile.
pub const DEMO_MAILER_CLIENT_ID: &str = "5d7f9b1c-3e4a-4c8e-a0b2-4f6a8c0e2d3b";
pub const DEMO_MAILER_SECRET: &str = "demo-mailer-secret";

impl Seed {
    pub fn demo() -> Self {
        Self {
            tenants: vec![SeedTenant {
                id: DEMO_TENANT_ID.into(),
                domain: DEMO_DOMAIN.into(),
                users: vec![
                    SeedUser {
                        id: "b0c1d2e3-f4a5-4b6c-8d7e-9f0a1b2c3d4e".into(),
                        user_principal_name: DEMO_USER.into(),
                        display_name: "Demo Operator".into(),
                        mail: Some(DEMO_USER.into()),
                        mfa: false,
                        contacts: vec![
                            SeedContact {
                                display_name: "Ada Lovelace".into(),
                                email: "ada@fabrikam.com".into(),
                                company: Some("Fabrikam".into()),
                                folder: None,
                            },
                            SeedContact {
                                display_name: "Alan Turing".into(),
                                email: "alan@fabrikam.com".into(),
                                company: Some("Fabrikam".into()),
                                folder: None,
                            },
                            SeedContact {
                                display_name: "Grace Hopper".into(),
                                email: "grace@northwind.example".into(),
                                company: Some("Northwind".into()),
                                folder: Some("Customers".into()),
                            },
                            SeedContact {
                                display_name: "Katherine Johnson".into(),
                                email: "katherine@northwind.example".into(),
                                company: Some("Northwind".into()),
                                folder: Some("Customers/Key accounts".into()),
                            },
                        ],
                    },
                    SeedUser {
                        id: "c1d2e3f4-a5b6-4c7d-9e8f-0a1b2c3d4e5f".into(),
                        user_principal_name: "mfa.user@demo.onmicrosoft.com".into(),
                        display_name: "MFA User".into(),
                        mail: Some("mfa.user@demo.onmicrosoft.com".into()),
                        mfa: true,
                        contacts: vec![],
                    },
                ],
                org_contacts: vec![SeedOrgContact {
                    display_name: "Contoso Accounts Payable".into(),
                    mail: "ap@contoso.example".into(),
                    company: Some("Contoso".into()),
                }],
                apps: vec![
                    SeedApp {
                        client_id: DEMO_CLIENT_ID.into(),
                        display_name: "officebridge (demo)".into(),
                        secrets: vec!["demo-client-secret".into()],
                        redirect_uris: vec![
                            SeedRedirect {
                                uri: "https://localhost".into(),
                                platform: "public_client".into(),
                            },
                            SeedRedirect {
                                uri: "http://localhost".into(),
                                platform: "public_client".into(),
                            },
                            // officebridge's own sign-in callback when it runs locally (any port).
                            SeedRedirect {
                                uri: "http://localhost/auth/callback".into(),
                                platform: "public_client".into(),
                            },
                            // The same by the loopback literal, for OFFICEBRIDGE_PUBLIC_URL=http://127.0.0.1:PORT.
                            SeedRedirect {
                                uri: "http://127.0.0.1/auth/callback".into(),
                                platform: "public_client".into(),
                            },
                        ],
                        delegated_scopes: [
                            "User.Read",
                            "offline_access",
                            "openid",
                            "profile",
                            "Files.ReadWrite",
                            "Contacts.Read",
                            "People.Read",
                            "User.ReadBasic.All",
                            "Mail.Send",
                            "Mail.ReadWrite",
                        ]
                        .map(String::from)
                        .to_vec(),
                        app_roles: [
                            "Mail.Send",
                            "Mail.ReadWrite",
                            "User.Read.All",
                            "OrgContact.Read.All",
                            "Contacts.Read",
                        ]
                        .map(String::from)
                        .to_vec(),
                        exchange_roles: vec!["SMTP.SendAsApp".into()],
                        exposed_scopes: vec!["access_as_user".into()],
                        identifier_uris: vec![format!("api://localhost/{DEMO_CLIENT_ID}")],
                    },
                    SeedApp {
                        client_id: DEMO_MAILER_CLIENT_ID.into(),
                        display_name: "officebridge mailer (demo)".into(),
                        secrets: vec![DEMO_MAILER_SECRET.into()],
                        redirect_uris: vec![],
                        delegated_scopes: vec![],
                        app_roles: ["Mail.Send", "Mail.ReadWrite"].map(String::from).to_vec(),
                        exchange_roles: vec!["SMTP.SendAsApp".into()],
                        exposed_scopes: vec![],
                        identifier_uris: vec![],
                    },
                ],
            }],
        }
    }

    /// Reads a seed file: TOML unless the name ends in `.json`.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read the seed file {}", path.display()))?;
        let seed: Seed = if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json")) {
            serde_json::from_str(&text).with_context(|| format!("{} is not a valid seed", path.display()))?
        } else {
            toml::from_str(&text).with_context(|| format!("{} is not a valid seed", path.display()))?
        };
        Ok(seed)
    }
}
