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
    /// Empty for a contact saved without an address (Graph answers `emailAddresses: []`).
    #[serde(default)]
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
    /// `Guest` for a B2B guest (its principal name has `#EXT#`); a member when absent.
    #[serde(default)]
    pub user_type: Option<String>,
    /// Colleagues this user works with, most relevant first (principal names): the
    /// mailbox's own people (`/me/people`), ahead of their personal contacts and the directory.
    #[serde(default)]
    pub works_with: Vec<String>,
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
    /// An Exchange application access policy: the only mailboxes (addresses) the app's
    /// application permissions reach; every mailbox when absent.
    #[serde(default)]
    pub mailbox_scope: Option<Vec<String>>,
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

fn contact(name: &str, email: &str, company: &str, folder: Option<&str>) -> SeedContact {
    SeedContact {
        display_name: name.into(),
        email: email.into(),
        company: Some(company.into()),
        folder: folder.map(String::from),
    }
}

/// A member of the demo tenant with a mailbox at `{alias}@demo.onmicrosoft.com`.
fn colleague(id: &str, alias: &str, name: &str, mfa: bool) -> SeedUser {
    let upn = format!("{alias}@{DEMO_DOMAIN}");
    SeedUser {
        id: id.into(),
        user_principal_name: upn.clone(),
        display_name: name.into(),
        mail: Some(upn),
        mfa,
        contacts: vec![],
        user_type: None,
        works_with: vec![],
    }
}

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
                            contact("Ada Lovelace", "ada@fabrikam.com", "Fabrikam", None),
                            contact("Alan Turing", "alan@fabrikam.com", "Fabrikam", None),
                            // The same address as Jo Smith below, saved under another name.
                            contact("Joanna Smith", "jo.smith@fabrikam.com", "Fabrikam", None),
                            // Saved without an address: never a recipient.
                            contact("Reception desk", "", "Fabrikam", None),
                            contact("Grace Hopper", "grace@northwind.example", "Northwind", Some("Customers")),
                            contact(
                                "Katherine Johnson",
                                "katherine@northwind.example",
                                "Northwind",
                                Some("Customers/Key accounts"),
                            ),
                            contact("Jo Smith", "jo.smith@fabrikam.com", "Fabrikam", Some("Suppliers")),
                            contact("Jasper Quinn", "jasper@wingtip.example", "Wingtip", Some("Suppliers")),
                        ],
                        user_type: None,
                        works_with: vec![format!("jane.doe@{DEMO_DOMAIN}"), "mfa.user@demo.onmicrosoft.com".into()],
                    },
                    colleague("c1d2e3f4-a5b6-4c7d-9e8f-0a1b2c3d4e5f", "mfa.user", "MFA User", true),
                    colleague("d2e3f4a5-b6c7-4d8e-8f90-1b2c3d4e5f60", "jane.doe", "Jane Doe", false),
                    colleague("e3f4a5b6-c7d8-4e9f-9012-2c3d4e5f6071", "james.brown", "James Brown", false),
                    colleague("f4a5b6c7-d8e9-4f01-a123-3d4e5f607182", "janet.ito", "Janet Ito", false),
                    // A user without a mailbox (a service account): never a recipient.
                    SeedUser {
                        mail: None,
                        ..colleague("a5b6c7d8-e9f0-4a12-b234-4e5f60718293", "jamie.scanner", "Jamie Scanner", false)
                    },
                    // A B2B guest: the principal name is not an address; `mail` is.
                    SeedUser {
                        id: "b6c7d8e9-f0a1-4b23-8345-5f6071829304".into(),
                        user_principal_name: format!("jack_fabrikam.com#EXT#@{DEMO_DOMAIN}"),
                        display_name: "Jack Guest".into(),
                        mail: Some("jack@fabrikam.com".into()),
                        mfa: false,
                        contacts: vec![],
                        user_type: Some("Guest".into()),
                        works_with: vec![],
                    },
                ],
                org_contacts: vec![
                    SeedOrgContact {
                        display_name: "Contoso Accounts Payable".into(),
                        mail: "ap@contoso.example".into(),
                        company: Some("Contoso".into()),
                    },
                    SeedOrgContact {
                        display_name: "Jade Supplier".into(),
                        mail: "jade@wingtip.example".into(),
                        company: Some("Wingtip".into()),
                    },
                ],
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
                        mailbox_scope: None,
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
                        // An application access policy: this app reaches the demo mailbox only.
                        mailbox_scope: Some(vec![DEMO_USER.into()]),
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
