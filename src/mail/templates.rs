//! Mail templates: `templates/` at the repository root, embedded in the binary, rendered with
//! minijinja. A template is a folder with `subject.txt`, `body.html` and `body.txt`; they may
//! extend `layout.html` / `layout.txt` and include `partials/…`.
//!
//! An override folder (`mail.templates_dir`) may hold `companies/{CODE}/{path}` and `{path}`
//! files; each piece (a subject, a body, the layout, a partial) is looked up there first — the
//! company's, then the installation's — and falls back to the built-in one, so a company can
//! replace only its layout.
//!
//! Strict about what is missing: an undefined variable is an error naming it, never a blank;
//! a subject that renders with a line break is refused (it would end the header). HTML is
//! auto-escaped, text is not. Rendering is bounded by minijinja's fuel and recursion limits,
//! so an uploaded template cannot hang the server.

use crate::domain::CompanyCode;
use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior, Value};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The built-in templates, embedded (file path under `templates/`, source).
const BUILTIN: &[(&str, &str)] = &[
    ("layout.html", include_str!("../../templates/layout.html")),
    ("layout.txt", include_str!("../../templates/layout.txt")),
    ("partials/footer.html", include_str!("../../templates/partials/footer.html")),
    ("partials/footer.txt", include_str!("../../templates/partials/footer.txt")),
    ("document/subject.txt", include_str!("../../templates/document/subject.txt")),
    ("document/body.html", include_str!("../../templates/document/body.html")),
    ("document/body.txt", include_str!("../../templates/document/body.txt")),
    ("report/subject.txt", include_str!("../../templates/report/subject.txt")),
    ("report/body.html", include_str!("../../templates/report/body.html")),
    ("report/body.txt", include_str!("../../templates/report/body.txt")),
    ("test/subject.txt", include_str!("../../templates/test/subject.txt")),
    ("test/body.html", include_str!("../../templates/test/body.html")),
    ("test/body.txt", include_str!("../../templates/test/body.txt")),
    (
        "password_reset/subject.txt",
        include_str!("../../templates/password_reset/subject.txt"),
    ),
    ("password_reset/body.html", include_str!("../../templates/password_reset/body.html")),
    ("password_reset/body.txt", include_str!("../../templates/password_reset/body.txt")),
];

/// The three pieces every template has.
const PIECES: [&str; 3] = ["subject.txt", "body.html", "body.txt"];

/// Instructions one rendering may execute, and how deep includes, macros and blocks may nest:
/// far more than a mail needs, far less than a loop meant to hang the server.
const FUEL: u64 = 200_000;
const RECURSION_LIMIT: usize = 32;
/// Largest override file read, in bytes.
const MAX_SOURCE_BYTES: u64 = 256 * 1024;

/// A rendered message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Rendered {
    pub subject: String,
    pub html: String,
    pub text: String,
}

/// Why a template did not render.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("there is no template '{0}'")]
    Unknown(String),
    /// A variable the template uses was not given; `variable` is its dotted path.
    #[error("{template}: the variable '{variable}' is not given")]
    Missing { template: String, variable: String },
    #[error("{template}: the subject renders with a line break")]
    SubjectLineBreak { template: String },
    /// The template itself is wrong (syntax, a filter misused, too much work).
    #[error("{template}: {message}")]
    Invalid { template: String, message: String },
}

/// The templates of an installation: the built-in ones and, optionally, an override folder.
#[derive(Debug, Clone)]
pub struct Templates {
    overrides: Option<PathBuf>,
}

/// A template path as written in `{% include %}` or asked for: lower-case letters, digits,
/// `_`, `-`, `.` and `/` between parts, never `..` — it is also a path under the override
/// folder.
fn safe_path(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name.split('/').all(|part| {
            !part.is_empty() && part != "." && part != ".." && part.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        })
}

fn builtin(path: &str) -> Option<&'static str> {
    BUILTIN.iter().find(|(p, _)| *p == path).map(|(_, s)| *s)
}

/// Reads an override file, if there is one (bounded in size).
fn read_override(dir: &Path, path: &str) -> Result<Option<String>, minijinja::Error> {
    let file = dir.join(path);
    let io = |e: std::io::Error| minijinja::Error::new(ErrorKind::InvalidOperation, format!("{path}: {e}"));
    match std::fs::metadata(&file) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(e)),
        Ok(m) if !m.is_file() => Ok(None),
        Ok(m) if m.len() > MAX_SOURCE_BYTES => Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("{path} is larger than {MAX_SOURCE_BYTES} bytes"),
        )),
        Ok(_) => std::fs::read_to_string(&file).map(Some).map_err(io),
    }
}

impl Templates {
    pub fn new(overrides: Option<PathBuf>) -> Self {
        Self { overrides }
    }

    /// The templates there are: every built-in one, and those the override folder adds.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = BUILTIN
            .iter()
            .filter_map(|(p, _)| p.strip_suffix("/subject.txt"))
            .map(String::from)
            .collect();
        if let Some(dir) = &self.overrides
            && let Ok(entries) = std::fs::read_dir(dir)
        {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name != "companies" && safe_path(&name) && e.path().join("subject.txt").is_file() && !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        names.sort();
        names
    }

    fn exists(&self, name: &str, company: &CompanyCode) -> bool {
        let piece = format!("{name}/subject.txt");
        builtin(&piece).is_some()
            || self
                .overrides
                .as_ref()
                .is_some_and(|dir| dir.join(&piece).is_file() || dir.join("companies").join(company.as_str()).join(&piece).is_file())
    }

    /// An environment whose loader finds each piece for `company`: its override, the
    /// installation's, the built-in one.
    fn environment(&self, company: &CompanyCode) -> Environment<'static> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_fuel(Some(FUEL));
        env.set_recursion_limit(RECURSION_LIMIT);
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".html") {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        let overrides = self.overrides.clone();
        let company_dir = overrides.as_ref().map(|d| d.join("companies").join(company.as_str()));
        env.set_loader(move |path| {
            if !safe_path(path) {
                return Err(minijinja::Error::new(
                    ErrorKind::TemplateNotFound,
                    format!("'{path}' is not a template path"),
                ));
            }
            for dir in [company_dir.as_deref(), overrides.as_deref()].into_iter().flatten() {
                if let Some(source) = read_override(dir, path)? {
                    return Ok(Some(source));
                }
            }
            Ok(builtin(path).map(String::from))
        });
        env
    }

    /// Renders template `name` for `company` with `variables` (a JSON object; `company` is
    /// added: `{code, name}`).
    pub fn render(
        &self,
        name: &str,
        company: &CompanyCode,
        company_name: &str,
        variables: &serde_json::Value,
    ) -> Result<Rendered, TemplateError> {
        if !safe_path(name) || name.contains('/') || !self.exists(name, company) {
            return Err(TemplateError::Unknown(name.to_string()));
        }
        let env = self.environment(company);
        let mut context = match variables {
            serde_json::Value::Object(m) => m.clone(),
            serde_json::Value::Null => serde_json::Map::new(),
            _ => {
                return Err(TemplateError::Missing {
                    template: name.into(),
                    variable: "variables (an object)".into(),
                });
            }
        };
        context.insert(
            "company".into(),
            serde_json::json!({"code": company.as_str(), "name": company_name}),
        );
        let context = serde_json::Value::Object(context);
        let mut out = Vec::with_capacity(3);
        for piece in PIECES {
            let path = format!("{name}/{piece}");
            let template = env.get_template(&path).map_err(|e| invalid(&path, &e))?;
            let rendered = template
                .render(Value::from(minijinja::value::Serde(&context)))
                .map_err(|e| failure(&env, &path, &context, &e))?;
            out.push(rendered);
        }
        let text = out.pop().expect("three pieces");
        let html = out.pop().expect("three pieces");
        let subject = out.pop().expect("three pieces");
        let subject = subject.trim().to_string();
        if subject.contains(['\r', '\n']) {
            return Err(TemplateError::SubjectLineBreak { template: name.into() });
        }
        Ok(Rendered { subject, html, text })
    }
}

fn invalid(path: &str, e: &minijinja::Error) -> TemplateError {
    TemplateError::Invalid {
        template: e.name().unwrap_or(path).to_string(),
        message: match e.line() {
            Some(line) => format!("line {line}: {}", e.detail().unwrap_or(&e.kind().to_string())),
            None => e.detail().map_or_else(|| e.kind().to_string(), String::from),
        },
    }
}

/// Names the missing variable of an undefined-value error: the first variable the failing
/// template uses that the context does not hold.
fn failure(env: &Environment<'_>, path: &str, context: &serde_json::Value, e: &minijinja::Error) -> TemplateError {
    if e.kind() != ErrorKind::UndefinedError {
        return invalid(path, e);
    }
    let failing = e.name().unwrap_or(path);
    let used = env.get_template(failing).map(|t| t.undeclared_variables(true)).unwrap_or_default();
    let mut missing: Vec<String> = used.into_iter().filter(|v| !holds(context, v)).collect();
    missing.sort();
    TemplateError::Missing {
        template: match e.line() {
            Some(line) => format!("{failing} line {line}"),
            None => failing.to_string(),
        },
        variable: missing.into_iter().next().unwrap_or_else(|| "a variable".into()),
    }
}

/// Whether the context holds a dotted path (`document.number`).
fn holds(context: &serde_json::Value, path: &str) -> bool {
    let mut at = context;
    for key in path.split('.') {
        match at.get(key) {
            Some(next) => at = next,
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn acme() -> CompanyCode {
        CompanyCode::parse("ACME").unwrap()
    }

    fn document() -> serde_json::Value {
        json!({"document": {"kind": "Invoice", "number": "INV-1001"}, "recipient": {"name": "Ann <ann@x>"}})
    }

    #[test]
    fn every_builtin_template_renders_with_its_variables() {
        let t = Templates::new(None);
        assert_eq!(t.names(), ["document", "password_reset", "report", "test"]);
        let cases = [
            ("document", document()),
            ("report", json!({"report": {"name": "Aged debtors"}})),
            ("test", json!({"profile": "AR"})),
            ("password_reset", json!({"code": "481516", "expires_minutes": 10})),
        ];
        for (name, vars) in cases {
            let r = t.render(name, &acme(), "Acme Ltd", &vars).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(
                !r.subject.is_empty() && r.html.contains("Acme Ltd") && r.text.contains("Acme Ltd"),
                "{name}: {r:?}"
            );
        }
    }

    #[test]
    fn html_is_escaped_and_text_is_not() {
        let r = Templates::new(None).render("document", &acme(), "Acme & Co", &document()).unwrap();
        assert_eq!(r.subject, "Invoice INV-1001 from Acme & Co");
        assert!(r.html.contains("Dear Ann &lt;ann@x&gt;,"), "{}", r.html);
        assert!(r.html.contains("Acme &amp; Co"));
        assert!(r.text.contains("Dear Ann <ann@x>,"), "{}", r.text);
    }

    #[test]
    fn a_missing_variable_is_named_not_rendered_blank() {
        let e = Templates::new(None)
            .render(
                "document",
                &acme(),
                "Acme",
                &json!({"document": {"kind": "Invoice"}, "recipient": {"name": "A"}}),
            )
            .unwrap_err();
        match e {
            TemplateError::Missing { variable, template } => {
                assert_eq!(variable, "document.number");
                assert!(template.starts_with("document/subject.txt"), "{template}");
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn overrides_win_piece_by_piece_company_first() {
        let dir = tempfile::tempdir().unwrap();
        let company = dir.path().join("companies/ACME");
        std::fs::create_dir_all(&company).unwrap();
        // ACME replaces only its layout; everybody gets a new text footer.
        std::fs::write(
            company.join("layout.html"),
            "<main>ACME LAYOUT {% block content %}{% endblock %}</main>",
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("partials")).unwrap();
        std::fs::write(dir.path().join("partials/footer.txt"), "Installation footer for {{ company.name }}").unwrap();
        let t = Templates::new(Some(dir.path().to_path_buf()));
        let acme_mail = t.render("document", &acme(), "Acme", &document()).unwrap();
        assert!(acme_mail.html.starts_with("<main>ACME LAYOUT"), "{}", acme_mail.html);
        assert!(acme_mail.text.contains("Installation footer for Acme"), "{}", acme_mail.text);
        assert_eq!(acme_mail.subject, "Invoice INV-1001 from Acme", "the subject stays built-in");
        let other = t
            .render("document", &CompanyCode::parse("GLOBEX").unwrap(), "Globex", &document())
            .unwrap();
        assert!(!other.html.contains("ACME LAYOUT") && other.text.contains("Installation footer for Globex"));
        // A template only the override folder has.
        std::fs::create_dir_all(dir.path().join("dunning")).unwrap();
        for (piece, body) in [("subject.txt", "Reminder"), ("body.html", "<p>Pay</p>"), ("body.txt", "Pay")] {
            std::fs::write(dir.path().join("dunning").join(piece), body).unwrap();
        }
        assert!(t.names().contains(&"dunning".to_string()));
        assert_eq!(t.render("dunning", &acme(), "Acme", &json!({})).unwrap().text, "Pay");
    }

    #[test]
    fn bad_templates_are_refused_not_run_forever() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, subject: &str, html: &str| {
            std::fs::create_dir_all(dir.path().join(name)).unwrap();
            std::fs::write(dir.path().join(name).join("subject.txt"), subject).unwrap();
            std::fs::write(dir.path().join(name).join("body.html"), html).unwrap();
            std::fs::write(dir.path().join(name).join("body.txt"), "t").unwrap();
        };
        write(
            "spin",
            "s",
            "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}",
        );
        write("deep", "s", "{% include 'deep/body.html' %}");
        write("crlf", "Line one\r\nBcc: victim@example.com", "h");
        write("escape", "s", "{% include '../../etc/passwd' %}");
        write("syntax", "s", "{% if %}");
        let t = Templates::new(Some(dir.path().to_path_buf()));
        let started = std::time::Instant::now();
        for name in ["spin", "deep", "escape", "syntax"] {
            assert!(
                matches!(t.render(name, &acme(), "A", &json!({})), Err(TemplateError::Invalid { .. })),
                "{name}"
            );
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "bounded");
        assert!(matches!(
            t.render("crlf", &acme(), "A", &json!({})),
            Err(TemplateError::SubjectLineBreak { .. })
        ));
        assert!(matches!(t.render("../x", &acme(), "A", &json!({})), Err(TemplateError::Unknown(_))));
        assert!(matches!(
            t.render("nosuch", &acme(), "A", &json!({})),
            Err(TemplateError::Unknown(_))
        ));
    }
}
