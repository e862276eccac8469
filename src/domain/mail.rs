//! A mail request as `POST /api/v1/mail` receives it (SPEC §6, "Mail"), parsed into a
//! [`MailRequest`] that is known to be sendable: addresses are addr-specs, the recipients fit
//! one message, the content is either given or a template, every attachment names one source.
//! What needs the database (the profile, uploads, exports, reports, the total size) is checked
//! by the caller before anything is queued.

use super::{CompanyCode, EmailAddress, FieldError, Function, Validator};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Exchange Online's limit of recipients per message (To, Cc and Bcc together).
pub const MAX_RECIPIENTS: usize = 500;
/// Outlook's limit for a message's attachments together (outlook-large-attachments.md).
pub const MAX_ATTACHMENT_BYTES: u64 = 150 * 1024 * 1024;
/// RFC 5322 §2.1.1: a line is at most 998 characters; a subject is one line.
const MAX_SUBJECT_CHARS: usize = 998;
const MAX_NAME_CHARS: usize = 255;

/// A recipient: `"ap@fabrikam.com"` or `{"address": "jo@fabrikam.com", "name": "Jo Smith"}`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum RecipientInput {
    Address(String),
    Named {
        address: String,
        #[serde(default)]
        name: Option<String>,
    },
}

/// One attachment: inline (`name`, `content_type`, `content_base64`) or a reference to an
/// upload, a finished background export or a report output (`report`, with `file` its
/// number, every file when absent).
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachmentInput {
    pub name: Option<String>,
    pub content_type: Option<String>,
    pub content_base64: Option<String>,
    pub upload: Option<String>,
    pub export: Option<String>,
    pub report: Option<String>,
    pub file: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MailInput {
    pub company: Option<String>,
    pub function: Option<String>,
    #[serde(default)]
    pub to: Vec<RecipientInput>,
    #[serde(default)]
    pub cc: Vec<RecipientInput>,
    #[serde(default)]
    pub bcc: Vec<RecipientInput>,
    #[serde(default)]
    pub reply_to: Vec<RecipientInput>,
    pub subject: Option<String>,
    pub text: Option<String>,
    pub html: Option<String>,
    pub template: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub variables: Option<Value>,
    #[serde(default)]
    pub attachments: Vec<AttachmentInput>,
    pub importance: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    pub address: EmailAddress,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Importance {
    Low,
    #[default]
    Normal,
    High,
}

impl Importance {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Normal => "normal",
            Self::High => "high",
        }
    }
}

/// What the message says: given, or rendered from a template at queue time.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    Given {
        subject: String,
        text: Option<String>,
        html: Option<String>,
    },
    Template {
        name: String,
        variables: Value,
    },
}

/// Where an attachment's bytes come from.
#[derive(Debug, Clone, PartialEq)]
pub enum AttachmentSource {
    Inline {
        name: String,
        content_type: String,
        bytes: Vec<u8>,
    },
    Upload(uuid::Uuid),
    Export(uuid::Uuid),
    Report {
        id: uuid::Uuid,
        file: Option<u32>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct MailRequest {
    pub company: CompanyCode,
    pub function: Function,
    pub to: Vec<Recipient>,
    pub cc: Vec<Recipient>,
    pub bcc: Vec<Recipient>,
    pub reply_to: Vec<Recipient>,
    pub content: Content,
    pub attachments: Vec<AttachmentSource>,
    pub importance: Importance,
}

/// The message as queued: recipients and the rendered subject and bodies, so a retry sends
/// the same bytes whatever happens to the template afterwards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    pub to: Vec<Recipient>,
    #[serde(default)]
    pub cc: Vec<Recipient>,
    #[serde(default)]
    pub bcc: Vec<Recipient>,
    #[serde(default)]
    pub reply_to: Vec<Recipient>,
    pub subject: String,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub html: Option<String>,
    pub importance: Importance,
}

impl StoredMessage {
    pub fn recipients(&self) -> usize {
        self.to.len() + self.cc.len() + self.bcc.len()
    }
}

/// A display name or subject: one line, bounded.
fn one_line(raw: &str, max: usize) -> Result<String, String> {
    if raw.contains(['\r', '\n']) {
        return Err("must be one line (no line breaks)".into());
    }
    if raw.chars().count() > max {
        return Err(format!("must be at most {max} characters"));
    }
    Ok(raw.trim().to_string())
}

/// A file name as a recipient's mail program will save it: no folders, no control characters.
pub fn attachment_name(raw: &str) -> Result<String, String> {
    let name = one_line(raw, MAX_NAME_CHARS)?;
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.chars().any(|c| c.is_control() || c == '/' || c == '\\') || name == "." || name == ".." {
        return Err("must be a file name without folders or control characters".into());
    }
    Ok(name)
}

/// A MIME type `type/subtype`, parameters allowed.
pub fn content_type(raw: &str) -> Result<String, String> {
    let essence = raw.split(';').next().unwrap_or_default().trim();
    let ok = essence.split_once('/').is_some_and(|(t, s)| {
        let token = |x: &str| !x.is_empty() && x.chars().all(|c| c.is_ascii_alphanumeric() || "!#$&^_.+-".contains(c));
        token(t) && token(s)
    });
    if !ok || raw.contains(['\r', '\n']) {
        return Err("must be a MIME type such as application/pdf".into());
    }
    Ok(raw.trim().to_string())
}

fn reference(raw: &str) -> Result<uuid::Uuid, String> {
    uuid::Uuid::parse_str(raw.trim()).map_err(|_| "must be an id this service returned".to_string())
}

impl MailInput {
    /// Every rule that needs no database, all broken ones reported at once.
    pub fn parse(self) -> Result<MailRequest, Vec<FieldError>> {
        let mut v = Validator::default();
        let company = v.required("company", self.company.as_deref(), CompanyCode::parse);
        let function = v.required("function", self.function.as_deref(), Function::parse);
        let list = |field: &str, input: Vec<RecipientInput>, v: &mut Validator| -> Vec<Recipient> {
            let mut out = Vec::with_capacity(input.len());
            for (i, r) in input.into_iter().enumerate() {
                let (address, name) = match r {
                    RecipientInput::Address(a) => (a, None),
                    RecipientInput::Named { address, name } => (address, name),
                };
                let address = v.field(&format!("{field}[{i}]"), EmailAddress::parse(&address));
                let name = match name {
                    Some(n) => v
                        .field(&format!("{field}[{i}].name"), one_line(&n, MAX_NAME_CHARS))
                        .filter(|n| !n.is_empty()),
                    None => None,
                };
                if let Some(address) = address {
                    out.push(Recipient { address, name });
                }
            }
            out
        };
        let (to, cc, bcc) = (self.to.len(), self.cc.len(), self.bcc.len());
        let to_list = list("to", self.to, &mut v);
        let cc_list = list("cc", self.cc, &mut v);
        let bcc_list = list("bcc", self.bcc, &mut v);
        let reply_to = list("reply_to", self.reply_to, &mut v);
        let total = to + cc + bcc;
        if total == 0 {
            v.push("to", "at least one recipient is required in to, cc or bcc");
        } else if total > MAX_RECIPIENTS {
            v.push(
                "to",
                format!("a message has at most {MAX_RECIPIENTS} recipients in to, cc and bcc together; this one has {total}"),
            );
        }
        let content = match (self.template, self.subject.is_some() || self.text.is_some() || self.html.is_some()) {
            (Some(_), true) => {
                v.push(
                    "template",
                    "give either a template (with variables) or subject, text and html, not both",
                );
                None
            }
            (Some(name), false) => {
                let ok = !name.trim().is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "_-".contains(c));
                if !ok {
                    v.push("template", "must be a template name (letters, digits, '_' and '-')");
                }
                if self.variables.as_ref().is_some_and(|x| !x.is_object() && !x.is_null()) {
                    v.push("variables", "must be an object");
                }
                Some(Content::Template {
                    name,
                    variables: self.variables.unwrap_or(Value::Null),
                })
            }
            (None, true) => {
                if self.variables.is_some() {
                    v.push("variables", "is only used with a template");
                }
                let subject = v.required("subject", self.subject.as_deref(), |s| one_line(s, MAX_SUBJECT_CHARS));
                if self.text.is_none() && self.html.is_none() {
                    v.push("text", "a message needs text, html or both");
                }
                subject.map(|subject| Content::Given {
                    subject,
                    text: self.text,
                    html: self.html,
                })
            }
            (None, false) => {
                v.push("subject", "give subject with text and/or html, or a template with variables");
                None
            }
        };
        let mut attachments = Vec::with_capacity(self.attachments.len());
        for (i, a) in self.attachments.into_iter().enumerate() {
            let at = |f: &str| format!("attachments[{i}].{f}");
            let sources = [
                a.content_base64.is_some(),
                a.upload.is_some(),
                a.export.is_some(),
                a.report.is_some(),
            ];
            if sources.iter().filter(|s| **s).count() != 1 {
                v.push(
                    &format!("attachments[{i}]"),
                    "give exactly one of content_base64, upload, export or report",
                );
                continue;
            }
            if a.file.is_some() && a.report.is_none() {
                v.push(&at("file"), "is only used with report");
            }
            if let Some(b64) = a.content_base64 {
                let name = v.required(&at("name"), a.name.as_deref(), attachment_name);
                let ctype = match a.content_type.as_deref() {
                    Some(c) => v.field(&at("content_type"), content_type(c)),
                    None => Some("application/octet-stream".into()),
                };
                // Line breaks are allowed in base64 (MIME writes them), nothing else extra.
                let compact: String = b64.chars().filter(|c| !c.is_ascii_whitespace()).collect();
                let bytes = v.field(
                    &at("content_base64"),
                    base64::engine::general_purpose::STANDARD
                        .decode(compact)
                        .map_err(|e| format!("is not valid base64: {e}")),
                );
                if let (Some(name), Some(content_type), Some(bytes)) = (name, ctype, bytes) {
                    attachments.push(AttachmentSource::Inline { name, content_type, bytes });
                }
                continue;
            }
            if a.name.is_some() || a.content_type.is_some() {
                v.push(&at("name"), "name and content_type are taken from the upload, export or report");
            }
            let source = if let Some(u) = a.upload {
                v.field(&at("upload"), reference(&u)).map(AttachmentSource::Upload)
            } else if let Some(e) = a.export {
                v.field(&at("export"), reference(&e)).map(AttachmentSource::Export)
            } else {
                let r = a.report.unwrap_or_default();
                v.field(&at("report"), reference(&r))
                    .map(|id| AttachmentSource::Report { id, file: a.file })
            };
            attachments.extend(source);
        }
        let inline: u64 = attachments
            .iter()
            .map(|a| match a {
                AttachmentSource::Inline { bytes, .. } => bytes.len() as u64,
                _ => 0,
            })
            .sum();
        if inline > MAX_ATTACHMENT_BYTES {
            v.push("attachments", too_large(inline));
        }
        let importance = match self.importance.as_deref() {
            None => Some(Importance::Normal),
            Some("low") => Some(Importance::Low),
            Some("normal") => Some(Importance::Normal),
            Some("high") => Some(Importance::High),
            Some(_) => {
                v.push("importance", "must be one of low, normal, high");
                None
            }
        };
        v.finish(|| MailRequest {
            company: company.expect("checked"),
            function: function.expect("checked"),
            to: to_list,
            cc: cc_list,
            bcc: bcc_list,
            reply_to,
            content: content.expect("checked"),
            attachments,
            importance: importance.expect("checked"),
        })
    }
}

/// The message for attachments over the limit, in megabytes as users think of them.
pub fn too_large(total: u64) -> String {
    format!(
        "attachments are at most 150 MB in all (Outlook's limit); these are {:.1} MB",
        total as f64 / (1024.0 * 1024.0)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(v: Value) -> Vec<String> {
        serde_json::from_value::<MailInput>(v)
            .unwrap()
            .parse()
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    fn base() -> Value {
        json!({"company": "ACME", "function": "default", "to": ["ap@fabrikam.com"], "subject": "Hi", "text": "Hello"})
    }

    #[test]
    fn the_spec_example_parses() {
        let m: MailInput = serde_json::from_value(json!({
            "company": "ACME", "function": "documents_accounts_receivable",
            "to": ["ap@fabrikam.com", {"address": "jo@fabrikam.com", "name": "Jo Smith"}],
            "cc": [], "bcc": [], "reply_to": [],
            "subject": "Statement for November", "text": "…", "html": "<p>…</p>",
            "attachments": [
                {"name": "statement.pdf", "content_type": "application/pdf", "content_base64": "JVBERi0="},
                {"upload": "6c1f0a52-6d8e-4a51-9a43-5d0b7a3f8e11"}
            ],
            "importance": "high"
        }))
        .unwrap();
        let r = m.parse().unwrap();
        assert_eq!(r.to.len(), 2);
        assert_eq!(r.to[1].name.as_deref(), Some("Jo Smith"));
        assert_eq!(r.importance, Importance::High);
        assert!(matches!(&r.attachments[0], AttachmentSource::Inline { bytes, .. } if bytes.starts_with(b"%PDF-")));
    }

    #[test]
    fn every_rule_names_its_field() {
        let mut m = base();
        m["to"] = json!(["not an address", {"address": "x@y.com", "name": "a\nb"}]);
        m["importance"] = json!("urgent");
        m["attachments"] = json!([{"content_base64": "!!!", "name": "a/b"}, {}, {"upload": "nope"}]);
        let got = fields(m);
        for f in [
            "to[0]",
            "to[1].name",
            "importance",
            "attachments[0].content_base64",
            "attachments[0].name",
            "attachments[1]",
            "attachments[2].upload",
        ] {
            assert!(got.contains(&f.to_string()), "{f} in {got:?}");
        }
    }

    #[test]
    fn content_is_a_template_or_given_never_both_nor_neither() {
        let mut both = base();
        both["template"] = json!("statement");
        assert_eq!(fields(both), ["template"]);
        let neither = json!({"company": "ACME", "function": "default", "to": ["a@b.com"]});
        assert_eq!(fields(neither), ["subject"]);
        let no_body = json!({"company": "ACME", "function": "default", "to": ["a@b.com"], "subject": "x"});
        assert_eq!(fields(no_body), ["text"]);
    }

    #[test]
    fn recipients_are_bounded() {
        let mut m = base();
        m["to"] = json!((0..300).map(|i| format!("a{i}@b.com")).collect::<Vec<_>>());
        m["bcc"] = json!((0..201).map(|i| format!("c{i}@b.com")).collect::<Vec<_>>());
        assert_eq!(fields(m.clone()), ["to"]);
        m["bcc"] = json!((0..200).map(|i| format!("c{i}@b.com")).collect::<Vec<_>>());
        assert!(serde_json::from_value::<MailInput>(m).unwrap().parse().is_ok());
        let mut none = base();
        none["to"] = json!([]);
        assert_eq!(fields(none), ["to"]);
    }
}
