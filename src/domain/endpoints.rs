//! URLs a tenant record points at. They decide where officebridge sends client secrets and
//! tokens, so only Microsoft's own clouds are accepted — anything else (a metadata service
//! such as `http://169.254.169.254/`, an intranet host) would turn the tenant form into an
//! SSRF and credential-exfiltration tool.

use std::fmt;
use url::Url;

/// Login authorities of the Microsoft national clouds
/// (learn.microsoft.com/graph/deployments, "App registration and token service root endpoints").
pub const AUTHORITIES: &[&str] = &[
    "https://login.microsoftonline.com",
    "https://login.microsoftonline.us",
    "https://login.chinacloudapi.cn",
    "https://login.partner.microsoftonline.cn",
];

/// Graph service roots of the national clouds (same page, "Microsoft Graph service root endpoints").
pub const GRAPH_ENDPOINTS: &[&str] = &[
    "https://graph.microsoft.com",
    "https://graph.microsoft.us",
    "https://dod-graph.microsoft.us",
    "https://microsoftgraph.chinacloudapi.cn",
];

/// Parses a service root: an absolute URL with no credentials, query or fragment, that is
/// either one of `allowed` or — when `allow_emulator` — an http(s) URL on a loopback host
/// (the built-in Microsoft 365 emulator). The result has no trailing slash.
/// `emulator`: the configured emulator's URL, when one is allowed (`allow_emulator` with
/// `emulator_url`); it is the only loopback address accepted, so a tenant record cannot point
/// officebridge's credentials at whatever else listens on the machine.
fn parse_root(raw: &str, allowed: &[&str], emulator: Option<&str>) -> Result<String, String> {
    let url = Url::parse(raw.trim()).map_err(|e| format!("is not an absolute URL ({e})"))?;
    if !url.username().is_empty() || url.password().is_some() || url.query().is_some() || url.fragment().is_some() {
        return Err("must not carry credentials, a query or a fragment".into());
    }
    let normalized = url.as_str().trim_end_matches('/').to_string();
    if allowed.contains(&normalized.as_str()) {
        return Ok(normalized);
    }
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    let emulator = emulator.map(|e| e.trim().trim_end_matches('/'));
    if let Some(e) = emulator
        && loopback
        && matches!(url.scheme(), "http" | "https")
        && url.path() == "/"
        && Url::parse(e).is_ok_and(|e| e.as_str().trim_end_matches('/') == normalized)
    {
        return Ok(normalized);
    }
    let mut msg = format!("must be one of Microsoft's national clouds: {}", allowed.join(", "));
    if let Some(e) = emulator {
        msg.push_str(&format!(", or the configured Microsoft 365 emulator, {e}"));
    }
    Err(msg)
}

macro_rules! root_type {
    ($(#[$doc:meta])* $name:ident, $list:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn parse(raw: &str, emulator: Option<&str>) -> Result<Self, String> {
                parse_root(raw, $list, emulator).map(Self)
            }

            /// Takes a value read back from our own database without re-checking the cloud
            /// list: a value stored while the emulator was allowed must still load.
            pub fn from_stored(value: String) -> Self {
                Self(value)
            }

            pub fn global() -> Self {
                Self($list[0].to_string())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

root_type!(
    /// The identity platform's login authority (`https://login.microsoftonline.com`).
    Authority, AUTHORITIES
);
root_type!(
    /// The Microsoft Graph service root (`https://graph.microsoft.com`).
    GraphEndpoint, GRAPH_ENDPOINTS
);

/// A redirect URI registered for the delegated app, checked against its platform.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct RedirectUrl(String);

impl RedirectUrl {
    pub fn parse(raw: &str, platform: super::Platform) -> Result<Self, String> {
        let url = Url::parse(raw.trim()).map_err(|e| format!("is not an absolute URL ({e})"))?;
        if !url.username().is_empty() || url.password().is_some() || url.fragment().is_some() {
            return Err("must not carry credentials or a fragment".into());
        }
        match platform {
            // Desktop ERP clients register the loopback redirect of a public client
            // (Entra: "Mobile and desktop applications").
            super::Platform::PublicClient => {
                let host_ok = url.host_str() == Some("localhost");
                if !(host_ok && matches!(url.scheme(), "http" | "https")) {
                    return Err("for a public_client tenant must be https://localhost or http://localhost".into());
                }
            }
            // A single-page app's redirect is the web UI itself; Entra requires https for it
            // (http only for localhost during development, which production should not use).
            super::Platform::Spa => {
                if url.scheme() != "https" {
                    return Err("for an spa tenant must use https".into());
                }
            }
        }
        Ok(Self(url.as_str().trim_end_matches('/').to_string()))
    }

    pub fn from_stored(value: String) -> Self {
        Self(value)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Platform;

    #[test]
    fn national_clouds_are_accepted_and_normalized() {
        assert_eq!(
            GraphEndpoint::parse("https://graph.microsoft.us/", None).unwrap().as_str(),
            "https://graph.microsoft.us"
        );
        assert!(Authority::parse("https://login.chinacloudapi.cn", None).is_ok());
    }

    #[test]
    fn other_hosts_are_refused_even_with_the_emulator_allowed() {
        for bad in [
            "http://169.254.169.254/",
            "https://graph.microsoft.com.evil.io",
            "https://user:pw@graph.microsoft.com",
            "ftp://graph.microsoft.com",
            "http://graph.microsoft.com",
        ] {
            assert!(GraphEndpoint::parse(bad, Some("http://127.0.0.1:9000")).is_err(), "{bad}");
        }
    }

    #[test]
    fn loopback_only_when_the_emulator_is_allowed_and_only_its_address() {
        let emu = Some("http://127.0.0.1:9000/");
        assert!(Authority::parse("http://127.0.0.1:9000", None).is_err());
        assert!(Authority::parse("http://127.0.0.1:9000", emu).is_ok());
        assert!(Authority::parse("http://127.0.0.1:9000/", emu).is_ok());
        assert!(Authority::parse("http://127.0.0.1:9000/some/path", emu).is_err());
        // Another port, or another name for the same host, is whatever else listens there.
        assert!(Authority::parse("http://127.0.0.1:9001", emu).is_err());
        assert!(Authority::parse("http://localhost:9000", emu).is_err());
        assert!(Authority::parse("http://127.0.0.2:9000", emu).is_err());
    }

    #[test]
    fn redirect_rules_follow_the_platform() {
        assert!(RedirectUrl::parse("https://localhost", Platform::PublicClient).is_ok());
        assert!(RedirectUrl::parse("http://localhost", Platform::PublicClient).is_ok());
        assert!(RedirectUrl::parse("https://erp.contoso.com", Platform::PublicClient).is_err());
        assert!(RedirectUrl::parse("https://erp.contoso.com/ui", Platform::Spa).is_ok());
        assert!(RedirectUrl::parse("http://erp.contoso.com/ui", Platform::Spa).is_err());
    }
}
