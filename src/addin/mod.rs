//! The Office add-in (SPEC §3.6): the manifests, rendered from the templates in `manifest/`
//! with this installation's public URL, app registration and add-in id, and the icons in
//! `addin/icons/`. Everything is built into the binary, so a deployment is one file.
//!
//! Two kinds of manifest are served because neither installs everywhere: the add-in-only XML
//! manifests (one per host, `TaskPaneApp` for Excel and `MailApp` for Outlook) install on every
//! Office that runs add-ins; the unified manifest for Microsoft 365 (`manifest.json`, both
//! hosts in one extension) does not install on perpetual Office on Windows, nor on Outlook for
//! Mac or mobile (office-js-docs-pr `docs/develop/json-manifest-overview.md`).

use crate::config::Settings;
use uuid::Uuid;

/// The manifest templates, as shipped in `manifest/`.
const EXCEL_XML: &str = include_str!("../../manifest/excel.xml");
const OUTLOOK_XML: &str = include_str!("../../manifest/outlook.xml");
const UNIFIED_JSON: &str = include_str!("../../manifest/manifest.json");

/// The icons, by the name they are served under (`/addin/icons/{name}`). Office asks for 16,
/// 32 and 80 px in the ribbon, 64 and 128 px in its dialogs; the unified manifest's package
/// carries a 192 px colour icon and a 32 px outline.
pub const ICONS: [(&str, &[u8]); 8] = [
    ("icon-16.png", include_bytes!("../../addin/icons/icon-16.png")),
    ("icon-32.png", include_bytes!("../../addin/icons/icon-32.png")),
    ("icon-64.png", include_bytes!("../../addin/icons/icon-64.png")),
    ("icon-80.png", include_bytes!("../../addin/icons/icon-80.png")),
    ("icon-128.png", include_bytes!("../../addin/icons/icon-128.png")),
    ("icon-192.png", include_bytes!("../../addin/icons/icon-192.png")),
    ("icon-color.png", include_bytes!("../../addin/icons/icon-192.png")),
    ("icon-outline.png", include_bytes!("../../addin/icons/icon-outline.png")),
];

/// The panes' files, by the path they are served at: plain HTML, CSS and JavaScript modules,
/// nothing to build. The pane pages themselves are templates ([`pane_html`]).
pub const ASSETS: [(&str, &str, &str); 3] = [
    (
        "/addin/excel/pane.js",
        "text/javascript; charset=utf-8",
        include_str!("../../addin/excel/pane.js"),
    ),
    (
        "/addin/common/session.js",
        "text/javascript; charset=utf-8",
        include_str!("../../addin/common/session.js"),
    ),
    (
        "/addin/common/pane.css",
        "text/css; charset=utf-8",
        include_str!("../../addin/common/pane.css"),
    ),
];

/// The Office stand-in and the page that hosts a pane beside it: served in `--dev` only.
pub const DEV_ASSETS: [(&str, &str, &str); 2] = [
    (
        "/addin/dev/office.js",
        "text/javascript; charset=utf-8",
        include_str!("../../addin/dev/office.js"),
    ),
    (
        "/addin/dev/excel",
        "text/html; charset=utf-8",
        include_str!("../../addin/dev/excel.html"),
    ),
];

const EXCEL_PANE: &str = include_str!("../../addin/excel/index.html");

/// Where the panes load Office.js from, on the stand-in's page of `--dev`.
pub const STAND_IN_OFFICE_JS: &str = "/addin/dev/office.js";

/// A pane's page with its Office.js URL: the same file in production and on the dev page.
pub fn pane_html(office_js: &str) -> String {
    fill(EXCEL_PANE, &[("office_js", office_js.to_string())], crate::domain::escape_html)
}

/// Which manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Host {
    /// The Excel task pane, add-in-only XML.
    Excel,
    /// The Outlook compose pane, add-in-only XML.
    Outlook,
    /// The unified manifest for Microsoft 365 (JSON), both hosts.
    Unified,
}

impl Host {
    pub fn content_type(self) -> &'static str {
        match self {
            Host::Excel | Host::Outlook => "application/xml; charset=utf-8",
            Host::Unified => "application/json",
        }
    }
}

/// Why a manifest cannot be rendered.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Office loads add-ins over https only; `--dev` is the one exception (sideloading on
    /// this machine).
    #[error(
        "public_url must be an https URL for Office to load the add-in (it is {0}); set public_url (OFFICEBRIDGE_PUBLIC_URL) to the address users reach this server at"
    )]
    NotHttps(String),
}

/// The add-in's id: configured (`addin.id`), else derived from the public URL so that it is
/// stable for a deployment without anyone choosing one. Changing `public_url` changes a
/// derived id, which Office sees as another add-in: configure it before deploying.
pub fn addin_id(settings: &Settings) -> Uuid {
    settings
        .addin
        .id
        .unwrap_or_else(|| Uuid::new_v5(&Uuid::NAMESPACE_URL, settings.public_url.as_str().as_bytes()))
}

/// The Outlook add-in is a second add-in (two XML manifests may not share an id); its id
/// follows from the Excel one.
fn outlook_id(id: Uuid) -> Uuid {
    Uuid::new_v5(&id, b"outlook")
}

/// The Application ID URI the add-in's single sign-on token is issued for: what the app
/// registration's "Expose an API" must be set to, and an audience the API accepts. Its host
/// and port are the add-in's own: Office refuses a `Resource` on another domain with 13004
/// ("all other parts of the domain name (including port, if any) should be the same as for
/// the add-in", office-js-docs-pr `docs/develop/troubleshoot-sso-in-office-add-ins.md`).
pub fn application_id_uri(settings: &Settings, client_id: &str) -> String {
    let url = &settings.public_url;
    let host = url.host_str().unwrap_or("localhost");
    match url.port() {
        Some(port) => format!("api://{host}:{port}/{client_id}"),
        None => format!("api://{host}/{client_id}"),
    }
}

/// Renders one manifest for the app registration `client_id`.
pub fn render(host: Host, settings: &Settings, client_id: &str) -> Result<String, ManifestError> {
    let url = &settings.public_url;
    if url.scheme() != "https" && !settings.dev {
        return Err(ManifestError::NotHttps(url.to_string()));
    }
    let base = url.as_str().trim_end_matches('/').to_string();
    let origin = url.origin().ascii_serialization();
    let version = env!("CARGO_PKG_VERSION");
    let id = addin_id(settings);
    let a = &settings.addin;
    let support = a.support_url.as_ref().map(|u| u.to_string()).unwrap_or_else(|| format!("{base}/"));
    let values: [(&str, String); 14] = [
        ("id", id.to_string()),
        ("outlook_id", outlook_id(id).to_string()),
        // XML: one to four numbers of at most five digits; the crate version is three.
        ("version", version.split(['-', '+']).next().unwrap_or(version).to_string()),
        ("semver", version.to_string()),
        ("name", a.name.clone()),
        ("provider", a.provider.clone()),
        ("excel_description", EXCEL_DESCRIPTION.to_string()),
        ("outlook_description", OUTLOOK_DESCRIPTION.to_string()),
        ("base", base),
        ("origin", origin),
        ("host", url.host_str().unwrap_or("localhost").to_string()),
        ("client_id", client_id.to_string()),
        ("resource", application_id_uri(settings, client_id)),
        ("support_url", support),
    ];
    let (template, escape): (&str, fn(&str) -> String) = match host {
        Host::Excel => (EXCEL_XML, crate::domain::escape_html),
        Host::Outlook => (OUTLOOK_XML, crate::domain::escape_html),
        Host::Unified => (UNIFIED_JSON, json_escape),
    };
    Ok(fill(template, &values, escape))
}

pub const EXCEL_DESCRIPTION: &str = "ERP grids in Excel: insert the data the ERP shares with you, edit it, publish the changes back.";
pub const OUTLOOK_DESCRIPTION: &str =
    "ERP contacts in Outlook: add customers' and suppliers' contacts to To, Cc or Bcc, attach ERP documents.";

/// Replaces each `{{ name }}` with its escaped value. The templates hold nothing else, so a
/// template engine would add only ways to get the escaping wrong.
fn fill(template: &str, values: &[(&str, String)], escape: fn(&str) -> String) -> String {
    let mut out = String::with_capacity(template.len() + 1024);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").expect("the shipped templates close every placeholder");
        let name = after[..end].trim();
        let value = values
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("the shipped templates name only known values ({name})"));
        out.push_str(&escape(&value.1));
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

fn json_escape(s: &str) -> String {
    let quoted = serde_json::Value::String(s.to_string()).to_string();
    quoted[1..quoted.len() - 1].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_placeholder_of_every_template_is_filled_and_escaped() {
        let mut s = crate::config::Settings::load(None).unwrap();
        s.public_url = url::Url::parse("https://erp.example.com/ob/").unwrap();
        s.addin.name = "R&D <ERP> \"bridge\"".into();
        for host in [Host::Excel, Host::Outlook] {
            let xml = render(host, &s, "0b3f2a7e-5d1c-4c8e-9a3b-2f6d8e1c4b7a").unwrap();
            assert!(!xml.contains("{{"), "{xml}");
            assert!(xml.contains("R&amp;D &lt;ERP&gt; &quot;bridge&quot;"), "{xml}");
            assert!(xml.contains("https://erp.example.com/ob/addin/icons/icon-16.png"), "{xml}");
            assert!(xml.contains("api://erp.example.com/0b3f2a7e-5d1c-4c8e-9a3b-2f6d8e1c4b7a"), "{xml}");
        }
        let json: serde_json::Value =
            serde_json::from_str(&render(Host::Unified, &s, "0b3f2a7e-5d1c-4c8e-9a3b-2f6d8e1c4b7a").unwrap()).unwrap();
        assert_eq!(json["name"]["short"], "R&D <ERP> \"bridge\"");
        assert_eq!(json["id"], addin_id(&s).to_string());
    }

    #[test]
    fn plain_http_is_refused_outside_dev() {
        let mut s = crate::config::Settings::load(None).unwrap();
        s.public_url = url::Url::parse("http://erp.example.com/").unwrap();
        assert!(matches!(render(Host::Excel, &s, "x"), Err(ManifestError::NotHttps(_))));
        s.dev = true;
        assert!(render(Host::Excel, &s, "x").is_ok());
    }

    #[test]
    fn the_derived_id_is_stable_and_the_outlook_id_differs() {
        let mut s = crate::config::Settings::load(None).unwrap();
        s.public_url = url::Url::parse("https://erp.example.com/").unwrap();
        assert_eq!(addin_id(&s), addin_id(&s));
        assert_ne!(outlook_id(addin_id(&s)), addin_id(&s));
        let fixed = Uuid::parse_str("c6890c26-5bbb-40ed-a321-37f07909a2f0").unwrap();
        s.addin.id = Some(fixed);
        assert_eq!(addin_id(&s), fixed);
    }
}
