//! Contact lookup for To/Cc/Bcc (SPEC §3.3, issue 15): five sources asked at once, each
//! under its own time budget, merged into one list per address and ranked the way Outlook's
//! auto-complete ranks — exact and prefix matches first, then the people this operator works
//! with and mails, then the directory.
//!
//! [`lookup`] runs the sources; [`index`] keeps the local index of personal contacts that
//! the `personal` source searches; this module holds the answer's shape and the ranking.

pub mod index;
pub mod lookup;

use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use unicode_normalization::UnicodeNormalization;

/// What one address is: trimmed, Unicode NFC, lower-cased. Two contacts are one person only
/// when this is equal — never by name.
pub fn normalise(address: &str) -> String {
    address.trim().nfc().collect::<String>().to_lowercase()
}

/// The words of a text, lower-cased and NFC: runs of letters and digits.
pub fn words(text: &str) -> Vec<String> {
    text.nfc()
        .collect::<String>()
        .to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(String::from)
        .collect()
}

/// The text a local search matches: every word of every part, and each part whole (so an
/// address matches as a prefix too), each preceded by a space.
pub fn haystack(parts: &[&str]) -> String {
    let mut out = String::from(" ");
    for part in parts.iter().filter(|p| !p.trim().is_empty()) {
        for w in words(part) {
            out.push_str(&w);
            out.push(' ');
        }
        out.push_str(&normalise(part).replace(char::is_whitespace, ""));
        out.push(' ');
    }
    out
}

/// Where a result came from. The order is the answer's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Personal,
    People,
    Directory,
    OrgContacts,
    Erp,
}

impl Source {
    pub const ALL: [Source; 5] = [Self::Personal, Self::People, Self::Directory, Self::OrgContacts, Self::Erp];

    /// The Graph permission the source needs, named when Graph refuses it.
    pub fn permission(self, application: bool) -> &'static str {
        match (self, application) {
            (Self::Personal, _) => "Contacts.Read",
            (Self::People, _) => "People.Read",
            (Self::Directory, false) => "User.ReadBasic.All",
            (Self::Directory, true) => "User.Read.All",
            (Self::OrgContacts, _) => "OrgContact.Read.All",
            (Self::Erp, _) => "",
        }
    }

    /// What the source searches, for its error messages.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Personal => "personal contacts",
            Self::People => "people list",
            Self::Directory => "directory",
            Self::OrgContacts => "organisational contacts",
            Self::Erp => "ERP contacts",
        }
    }
}

/// What a result is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    User,
    Guest,
    OrgContact,
    PersonalContact,
    Erp,
    External,
}

/// The ERP's own facts about a contact.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ErpFacts {
    pub company: String,
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// One entry a source found.
#[derive(Debug, Clone)]
pub struct Found {
    pub address: String,
    pub name: String,
    pub kind: Kind,
    pub source: Source,
    /// Its place in the people source's relevance order.
    pub relevance: Option<usize>,
    pub erp: Option<ErpFacts>,
}

/// One result: one address, whatever number of sources had it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Contact {
    pub address: String,
    pub name: String,
    pub kind: Kind,
    pub sources: Vec<Source>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub erp: Option<ErpFacts>,
}

/// Why a source did not answer.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SourceError {
    /// `permission_denied`, `not_found`, `bad_request`, `unauthorized`, `unavailable`,
    /// `unreachable`, `graph_error` or `internal`.
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    pub message: String,
}

/// How one source fared (SPEC §6, "Contacts").
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum SourceStatus {
    Ok {
        count: usize,
    },
    Error {
        error: SourceError,
    },
    Timeout,
    /// Skipped until `retry_after` seconds from now.
    Throttled {
        retry_after: u64,
    },
    Unsupported,
    Disabled,
}

/// `GET /api/v1/contacts/search`'s answer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SearchAnswer {
    pub query: String,
    /// Whether a source did not answer within its budget.
    pub partial: bool,
    #[schema(value_type = Object)]
    pub sources: BTreeMap<Source, SourceStatus>,
    pub results: Vec<Contact>,
}

/// Which name wins when sources disagree: the operator's own contact, then the directory,
/// the organisational contact, people, the ERP.
fn name_rank(s: Source) -> u8 {
    match s {
        Source::Personal => 0,
        Source::Directory => 1,
        Source::OrgContacts => 2,
        Source::People => 3,
        Source::Erp => 4,
    }
}

/// How well a result matches the query: 0 the exact address, 1 a prefix of the address or
/// of words of the name (every query word a prefix of one), 2 anything a source matched
/// otherwise (Graph's fuzzy matches).
fn match_tier(query: &str, address: &str, name: &str) -> u8 {
    let q = normalise(query);
    if q == address {
        return 0;
    }
    let name_words = words(name);
    let q_words = words(query);
    let name_prefix = !q_words.is_empty() && q_words.iter().all(|w| name_words.iter().any(|n| n.starts_with(w.as_str())));
    if address.starts_with(&q) || name_prefix { 1 } else { 2 }
}

/// Merges what the sources found into one entry per address and ranks them:
/// 1. the match — the exact address, then a prefix of the address or the name's words, then
///    the rest;
/// 2. how often this operator mailed the address through officebridge (`sends`), more first;
/// 3. the people source's relevance order (present before absent);
/// 4. entries some source other than the directory and organisational contacts had, before
///    directory-only ones;
/// 5. the name, then the address (ties are broken deterministically).
pub fn merge(query: &str, found: Vec<Found>, sends: &HashMap<String, i64>, limit: usize) -> Vec<Contact> {
    struct Entry {
        contact: Contact,
        name_from: u8,
        relevance: Option<usize>,
    }
    let mut by_address: HashMap<String, Entry> = HashMap::new();
    for f in found {
        let key = normalise(&f.address);
        if key.is_empty() {
            continue;
        }
        let e = by_address.entry(key).or_insert_with(|| Entry {
            contact: Contact {
                address: f.address.trim().to_string(),
                name: f.name.clone(),
                kind: f.kind,
                sources: vec![],
                erp: None,
            },
            name_from: u8::MAX,
            relevance: None,
        });
        if !f.name.trim().is_empty() && name_rank(f.source) < e.name_from {
            e.contact.name = f.name.trim().to_string();
            e.name_from = name_rank(f.source);
        }
        e.contact.kind = e.contact.kind.min(f.kind);
        if !e.contact.sources.contains(&f.source) {
            e.contact.sources.push(f.source);
            e.contact.sources.sort();
        }
        if let Some(r) = f.relevance {
            e.relevance = Some(e.relevance.map_or(r, |x| x.min(r)));
        }
        if e.contact.erp.is_none() {
            e.contact.erp = f.erp;
        }
    }
    let mut entries: Vec<(String, Entry)> = by_address.into_iter().collect();
    entries.sort_by_cached_key(|(address, e)| {
        let directory_only = e
            .contact
            .sources
            .iter()
            .all(|s| matches!(s, Source::Directory | Source::OrgContacts));
        (
            match_tier(query, address, &e.contact.name),
            std::cmp::Reverse(sends.get(address).copied().unwrap_or(0)),
            e.relevance.unwrap_or(usize::MAX),
            directory_only,
            e.contact.name.to_lowercase(),
            address.clone(),
        )
    });
    entries.into_iter().take(limit).map(|(_, e)| e.contact).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(address: &str, name: &str, kind: Kind, source: Source, relevance: Option<usize>) -> Found {
        Found {
            address: address.into(),
            name: name.into(),
            kind,
            source,
            relevance,
            erp: None,
        }
    }

    #[test]
    fn addresses_are_one_when_normalised_and_names_never_merge() {
        // "é" precomposed and as e + combining acute: one address after NFC.
        let a = "Jos\u{e9}@Fabrikam.com ";
        let b = "jose\u{301}@fabrikam.com";
        assert_eq!(normalise(a), normalise(b));
        let merged = merge(
            "jo",
            vec![
                found(a, "José Ruiz", Kind::PersonalContact, Source::Personal, None),
                found(b, "J. Ruiz", Kind::User, Source::Directory, None),
                found("jo@other.example", "José Ruiz", Kind::External, Source::People, Some(0)),
            ],
            &HashMap::new(),
            10,
        );
        assert_eq!(merged.len(), 2, "same name, two addresses: two people");
        let jose = merged.iter().find(|c| c.sources.len() == 2).unwrap();
        assert_eq!(
            (jose.name.as_str(), jose.kind),
            ("José Ruiz", Kind::User),
            "the personal name, the directory kind"
        );
        assert_eq!(jose.sources, [Source::Personal, Source::Directory]);
    }

    #[test]
    fn ranking_puts_exact_then_prefix_then_relevance_then_directory_then_name() {
        let sends = HashMap::from([("zed@x.example".to_string(), 3)]);
        let merged = merge(
            "ja",
            vec![
                found("dir.only@x.example", "Jane Directory", Kind::User, Source::Directory, None),
                found("person@x.example", "Jane Person", Kind::User, Source::People, Some(1)),
                found("first@x.example", "Jamie First", Kind::User, Source::People, Some(0)),
                found("zed@x.example", "Jasper Zed", Kind::PersonalContact, Source::Personal, None),
                found("fuzzy@x.example", "Tyler Lee", Kind::User, Source::People, Some(2)),
                found("ja", "Exact", Kind::External, Source::People, Some(9)),
                found("contact@x.example", "Jack Contact", Kind::PersonalContact, Source::Personal, None),
            ],
            &sends,
            10,
        );
        let order: Vec<&str> = merged.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            order,
            [
                "Exact",
                "Jasper Zed",
                "Jamie First",
                "Jane Person",
                "Jack Contact",
                "Jane Directory",
                "Tyler Lee"
            ]
        );
        assert_eq!(merge("ja", vec![], &sends, 10).len(), 0);
    }

    #[test]
    fn haystacks_hold_words_and_whole_addresses() {
        let h = haystack(&["Jo Smith", "Jo.Smith@Fabrikam.com"]);
        assert!(h.contains(" jo ") && h.contains(" smith ") && h.contains(" fabrikam "), "{h}");
        assert!(h.contains(" jo.smith@fabrikam.com "), "{h}");
        assert_eq!(words("O'Brien, Ann-Marie"), ["o", "brien", "ann", "marie"]);
    }
}
