//! Companies and email profiles over HTTP (issue 12): the SPEC §6 wire format, write-only
//! secrets, the claim rule, resolution, and every bad input of the issue — each leaving
//! nothing written and nothing audited.

use crate::helpers::{TestApp, tenant_body};
use crate::on_both_backends;
use serde_json::{Value, json};

on_both_backends!(
    companies_crud_and_a_company_in_use_is_409,
    the_spec_profile_round_trips_with_its_password_write_only,
    bad_profiles_are_422_naming_the_field_and_write_nothing,
    the_claim_rule_is_409_naming_the_first_profile,
    resolve_answers_which_profile_and_why,
    profile_secrets_are_kept_replaced_and_cleared_as_the_tenant_secret_is,
    template_previews_render_or_name_what_is_missing,
    resolution_through_the_store_for_every_function,
);

/// The resolution rule against stored profiles, for every function: the company's own, the
/// system's, the all_documents and default fallbacks, each passed over once disabled.
async fn resolution_through_the_store_for_every_function(app: TestApp) {
    use officebridge::domain::{CompanyCode, Function, ProfileInput, ProfileName};
    companies(&app, &["ACME"]).await;
    let acme = CompanyCode::parse("ACME").unwrap();
    let save = |name: &str, scope: Value, function: Function, enabled: bool| {
        let mut p = system_profile(name, &[function.as_str()]);
        p["apply_to"] = scope;
        p["enabled"] = json!(enabled);
        let input: ProfileInput = serde_json::from_value(p).unwrap();
        input.parse(None).unwrap()
    };
    let company = || json!({"companies": ["ACME"]});
    let system = || json!("system");
    let store = &app.store;
    let actor = "test";
    // The fallbacks stay for the whole test: company and system all_documents and default.
    let fallbacks = [
        ("C-DOCS", company(), Function::AllDocuments),
        ("S-DOCS", system(), Function::AllDocuments),
        ("C-DEF", company(), Function::Default),
        ("S-DEF", system(), Function::Default),
    ];
    for (name, scope, f) in &fallbacks {
        store.create_profile(actor, &save(name, scope.clone(), *f, true)).await.unwrap();
    }
    let answer = |r: Option<officebridge::domain::Resolution>| r.map(|r| (r.profile.to_string(), r.scope, r.function));
    for f in Function::ALL
        .into_iter()
        .filter(|f| !matches!(f, Function::AllDocuments | Function::Default))
    {
        let own = format!("OWN-{}", f.as_str());
        let sys = format!("SYS-{}", f.as_str());
        store.create_profile(actor, &save(&own, company(), f, true)).await.unwrap();
        store.create_profile(actor, &save(&sys, system(), f, true)).await.unwrap();
        assert_eq!(
            answer(store.resolve_profile(&acme, f).await.unwrap()),
            Some((own.clone(), "company", f)),
            "{f}"
        );
        store.replace_profile(actor, &save(&own, company(), f, false)).await.unwrap();
        assert_eq!(
            answer(store.resolve_profile(&acme, f).await.unwrap()),
            Some((sys.clone(), "system", f)),
            "{f}"
        );
        store.replace_profile(actor, &save(&sys, system(), f, false)).await.unwrap();
        let fallback = if f.is_specific_document() {
            ("C-DOCS".to_string(), "company", Function::AllDocuments)
        } else {
            ("C-DEF".to_string(), "company", Function::Default)
        };
        assert_eq!(answer(store.resolve_profile(&acme, f).await.unwrap()), Some(fallback), "{f}");
        for name in [&own, &sys] {
            store.delete_profile(actor, &ProfileName::parse(name).unwrap()).await.unwrap();
        }
    }
    // The fallbacks in order, each disabled in turn.
    let order = [
        (Function::DocumentQuality, vec!["C-DOCS", "S-DOCS", "C-DEF", "S-DEF"]),
        (Function::AllDocuments, vec!["C-DOCS", "S-DOCS", "C-DEF", "S-DEF"]),
        (Function::AllReports, vec!["C-DEF", "S-DEF"]),
    ];
    for (f, expected) in order {
        for (i, name) in expected.iter().enumerate() {
            let got = store.resolve_profile(&acme, f).await.unwrap().map(|r| r.profile.to_string());
            assert_eq!(got.as_deref(), Some(*name), "{f}, step {i}");
            let (n, scope, func) = fallbacks.iter().find(|(n, _, _)| n == name).unwrap();
            store.replace_profile(actor, &save(n, scope.clone(), *func, false)).await.unwrap();
        }
        assert_eq!(store.resolve_profile(&acme, f).await.unwrap(), None, "{f}: every profile disabled");
        for (n, scope, func) in &fallbacks {
            store.replace_profile(actor, &save(n, scope.clone(), *func, true)).await.unwrap();
        }
    }
}

async fn template_previews_render_or_name_what_is_missing(app: TestApp) {
    companies(&app, &["ACME"]).await;
    let names = app.admin_get("/api/v1/templates").await;
    assert_eq!(names.json, json!(["document", "password_reset", "report", "test"]));
    let vars = json!({"document": {"kind": "Invoice", "number": "INV-7"}, "recipient": {"name": "Bo <b@x>"}});
    let r = app
        .admin_post("/api/v1/templates/document/preview", &json!({"company": "ACME", "variables": vars}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["subject"], "Invoice INV-7 from ACME Ltd");
    assert!(r.json["html"].as_str().unwrap().contains("Bo &lt;b@x&gt;"), "{}", r.text);
    assert!(r.json["text"].as_str().unwrap().contains("Bo <b@x>"));
    // The client key (the ERP) may preview too.
    let as_client = app
        .http
        .post(app.url("/api/v1/templates/test/preview"))
        .bearer_auth(&app.client_key)
        .json(&json!({"company": "ACME", "variables": {"profile": "AR"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(as_client.status(), 200);

    let missing = app
        .admin_post(
            "/api/v1/templates/document/preview",
            &json!({"company": "ACME", "variables": {"recipient": {"name": "A"}, "document": {"kind": "Invoice"}}}),
        )
        .await;
    missing.assert_problem(422, Some("variables.document.number"));
    app.admin_post(
        "/api/v1/templates/document/preview",
        &json!({"company": "NOSUCH", "variables": vars}),
    )
    .await
    .assert_problem(422, Some("company"));
    let injected = json!({"document": {"kind": "Invoice\r\nBcc: x@evil.example", "number": "1"}, "recipient": {"name": "A"}});
    app.admin_post(
        "/api/v1/templates/document/preview",
        &json!({"company": "ACME", "variables": injected}),
    )
    .await
    .assert_problem(422, Some("subject"));
    app.admin_post("/api/v1/templates/nosuch/preview", &json!({"company": "ACME"}))
        .await
        .assert_problem(404, None);
    app.admin_post("/api/v1/templates/document/preview", &json!({"company": "ACME", "vars": {}}))
        .await
        .assert_problem(422, Some("vars"));
}

async fn companies(app: &TestApp, codes: &[&str]) {
    for code in codes {
        let a = app
            .admin_put(&format!("/api/v1/companies/{code}"), &json!({"name": format!("{code} Ltd")}))
            .await;
        assert_eq!(a.status, 201, "{}", a.text);
    }
}

fn spec_profile() -> Value {
    json!({
        "name": "AR-STATEMENTS",
        "description": "AR statements from the accounts mailbox",
        "provider": "smtp",
        "apply_to": {"companies": ["ACME", "GLOBEX"]},
        "enabled": true,
        "functions": ["documents_accounts_receivable"],
        "smtp": {"host": "smtp.office365.com", "port": 587, "security": "starttls",
                 "from": "accounts@contoso.com", "from_name": "Contoso Accounts",
                 "auth": "password", "username": "accounts@contoso.com", "password": "S3cret-pw!",
                 "on_ambiguous": "hold"}
    })
}

fn system_profile(name: &str, functions: &[&str]) -> Value {
    json!({"name": name, "provider": "smtp", "apply_to": "system", "functions": functions,
           "smtp": {"host": "mail.contoso.com", "from": "noreply@contoso.com"}})
}

async fn audit_count(app: &TestApp) -> usize {
    app.admin_get("/api/v1/audit?limit=1000").await.json.as_array().unwrap().len()
}

async fn companies_crud_and_a_company_in_use_is_409(app: TestApp) {
    companies(&app, &["acme"]).await;
    let got = app.admin_get("/api/v1/companies/ACME").await;
    assert_eq!(
        (got.status, got.json["code"].as_str(), got.json["name"].as_str()),
        (200, Some("ACME"), Some("acme Ltd"))
    );
    let renamed = app.admin_put("/api/v1/companies/ACME", &json!({"name": "Acme Limited"})).await;
    assert_eq!((renamed.status, renamed.json["name"].as_str()), (200, Some("Acme Limited")));
    app.admin_put("/api/v1/companies/ACME", &json!({"name": ""}))
        .await
        .assert_problem(422, Some("name"));
    app.admin_put("/api/v1/companies/ACME", &json!({"name": "x", "extra": 1}))
        .await
        .assert_problem(422, Some("extra"));
    app.admin_put("/api/v1/companies/A%2FB", &json!({"name": "x"}))
        .await
        .assert_problem(422, Some("code"));
    assert_eq!(app.admin_get("/api/v1/companies").await.json.as_array().unwrap().len(), 1);

    let mut p = system_profile("ACME-DOCS", &["all_documents"]);
    p["apply_to"] = json!({"companies": ["ACME"]});
    assert_eq!(app.admin_post("/api/v1/profiles", &p).await.status, 201);
    let refused = app.admin_delete("/api/v1/companies/ACME").await;
    refused.assert_problem(409, Some("code"));
    assert!(refused.json["detail"].as_str().unwrap().contains("ACME-DOCS"), "{}", refused.text);
    assert_eq!(app.admin_delete("/api/v1/profiles/ACME-DOCS").await.status, 204);
    assert_eq!(app.admin_delete("/api/v1/companies/ACME").await.status, 204);
    app.admin_get("/api/v1/companies/ACME").await.assert_problem(404, None);
    app.admin_delete("/api/v1/companies/ACME").await.assert_problem(404, None);
    let actions: Vec<String> = app
        .admin_get("/api/v1/audit?limit=100")
        .await
        .json
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect();
    for action in ["company.put", "company.delete", "profile.create", "profile.delete"] {
        assert!(actions.iter().any(|a| a == action), "{action} audited: {actions:?}");
    }
}

async fn the_spec_profile_round_trips_with_its_password_write_only(app: TestApp) {
    companies(&app, &["ACME", "GLOBEX"]).await;
    let saved = app.admin_post("/api/v1/profiles", &spec_profile()).await;
    assert_eq!(saved.status, 201, "{}", saved.text);
    assert!(!saved.text.contains("S3cret-pw!"), "{}", saved.text);
    assert_eq!(saved.json["smtp"]["password"], json!({"set": true}));
    assert_eq!(saved.json["apply_to"], json!({"companies": ["ACME", "GLOBEX"]}));
    assert_eq!(saved.json["functions"], json!(["documents_accounts_receivable"]));
    assert_eq!(saved.json["smtp"]["auth"], "password");
    assert_eq!(saved.json["smtp"]["username"], "accounts@contoso.com");
    // Basic SMTP AUTH against Exchange Online is allowed, with a warning.
    assert_eq!(saved.json["warnings"][0]["field"], "smtp.auth", "{}", saved.text);
    let read = app.admin_get("/api/v1/profiles/AR-STATEMENTS").await;
    assert_eq!(read.status, 200);
    assert!(read.json.get("warnings").is_none());
    for key in ["name", "description", "provider", "apply_to", "enabled", "functions", "smtp"] {
        assert_eq!(read.json[key], saved.json[key], "{key}");
    }
    // Names are unique without regard to case, and found without it.
    assert_eq!(app.admin_get("/api/v1/profiles/ar-statements").await.status, 200);
    let mut again = spec_profile();
    again["name"] = json!("ar-statements");
    again["enabled"] = json!(false);
    app.admin_post("/api/v1/profiles", &again).await.assert_problem(409, Some("name"));
    // Stored sealed: the password is not in the database's text.
    let listed = app.admin_get("/api/v1/profiles").await;
    assert_eq!(listed.json.as_array().unwrap().len(), 1);
    let audit = app.admin_get("/api/v1/audit?limit=100").await;
    assert!(!audit.text.contains("S3cret-pw!"), "{}", audit.text);
}

async fn bad_profiles_are_422_naming_the_field_and_write_nothing(app: TestApp) {
    companies(&app, &["ACME"]).await;
    app.admin_post("/api/v1/tenants", &tenant_body("CONTOSO")).await;
    let before = audit_count(&app).await;
    let base = || system_profile("P", &["default"]);
    let with = |path: &[&str], value: Value| {
        let mut p = base();
        let mut at = &mut p;
        for key in &path[..path.len() - 1] {
            at = &mut at[*key];
        }
        at[path[path.len() - 1]] = value;
        p
    };
    let cases: Vec<(Value, &str, u16)> = vec![
        (with(&["name"], json!("x".repeat(51))), "name", 422),
        (with(&["name"], json!("")), "name", 422),
        (with(&["provider"], json!("fax")), "provider", 422),
        (with(&["functions"], json!(["nope"])), "functions[0]", 422),
        (with(&["functions"], json!([])), "functions", 422),
        (with(&["apply_to"], json!({"companies": ["NOSUCH"]})), "apply_to.companies", 422),
        (with(&["apply_to"], json!({"companies": []})), "apply_to.companies", 422),
        (with(&["smtp", "from"], json!("not an address")), "smtp.from", 422),
        (with(&["smtp", "port"], json!(0)), "smtp.port", 422),
        (with(&["smtp", "port"], json!(65536)), "smtp.port", 422),
        (with(&["smtp", "security"], json!("none")), "smtp.security", 422),
        (with(&["smtp", "auth"], json!("xoauth2")), "smtp.tenant", 422),
        (
            {
                let mut p = with(&["smtp", "auth"], json!("xoauth2"));
                p["smtp"]["tenant"] = json!("NOSUCH");
                p
            },
            "smtp.tenant",
            422,
        ),
        (with(&["smtp", "auth"], json!("password")), "smtp.username", 422),
        (
            with(&["graph_direct"], json!({"tenant": "CONTOSO", "from": "a@b.co"})),
            "graph_direct",
            422,
        ),
        (
            json!({"name": "D", "provider": "graph_delegate", "apply_to": "system", "functions": ["all_reports"], "graph_delegate": {"tenant": "CONTOSO"}}),
            "functions",
            422,
        ),
        (
            json!({"name": "G", "provider": "graph_direct", "apply_to": "system", "functions": ["all_reports"], "graph_direct": {"tenant": "CONTOSO"}}),
            "graph_direct.from",
            422,
        ),
        (with(&["unknown"], json!(1)), "unknown", 422),
    ];
    for (body, field, status) in cases {
        let a = app.admin_post("/api/v1/profiles", &body).await;
        a.assert_problem(status, Some(field));
        assert!(!a.text.contains("write-only"));
    }
    // Password auth without a password: required.
    let mut p = base();
    p["smtp"]["auth"] = json!("password");
    p["smtp"]["username"] = json!("u");
    app.admin_post("/api/v1/profiles", &p)
        .await
        .assert_problem(422, Some("smtp.password"));
    assert_eq!(app.admin_get("/api/v1/profiles").await.json, json!([]), "nothing half-written");
    assert_eq!(audit_count(&app).await, before, "nothing audited");
    // The settings blocks of the other providers are fine when they are the chosen one.
    let delegate = json!({"name": "D", "provider": "graph_delegate", "apply_to": "system", "functions": ["user_interface"], "graph_delegate": {"tenant": "CONTOSO"}});
    assert_eq!(app.admin_post("/api/v1/profiles", &delegate).await.status, 201);
    let direct = json!({"name": "G", "provider": "graph_direct", "apply_to": "system", "functions": ["all_reports"], "graph_direct": {"tenant": "CONTOSO", "from": "noreply@contoso.com"}});
    let saved = app.admin_post("/api/v1/profiles", &direct).await;
    assert_eq!(saved.status, 201, "{}", saved.text);
    assert!(
        saved.json["graph_direct"].get("client_secret").is_none(),
        "no separate app, no secret: {}",
        saved.text
    );
    // A tenant an email profile uses cannot be deleted.
    let refused = app.admin_delete("/api/v1/tenants/CONTOSO").await;
    refused.assert_problem(409, Some("code"));
    assert!(
        refused.json["detail"].as_str().unwrap().contains("email profiles"),
        "{}",
        refused.text
    );
}

async fn the_claim_rule_is_409_naming_the_first_profile(app: TestApp) {
    companies(&app, &["ACME", "GLOBEX"]).await;
    assert_eq!(
        app.admin_post("/api/v1/profiles", &system_profile("FIRST", &["default", "all_reports"]))
            .await
            .status,
        201
    );
    // The same function system-wide: refused, naming the first.
    let second = app
        .admin_post("/api/v1/profiles", &system_profile("SECOND", &["all_reports"]))
        .await;
    second.assert_problem(409, Some("functions"));
    assert!(second.json["detail"].as_str().unwrap().contains("'FIRST'"), "{}", second.text);
    // Saved disabled, it may claim it (with a warning) ...
    let mut disabled = system_profile("SECOND", &["all_reports"]);
    disabled["enabled"] = json!(false);
    let saved = app.admin_post("/api/v1/profiles", &disabled).await;
    assert_eq!(saved.status, 201, "{}", saved.text);
    assert_eq!(saved.json["warnings"][0]["field"], "enabled");
    // ... but enabling it is refused.
    let mut enable = disabled.clone();
    enable["enabled"] = json!(true);
    let refused = app.admin_put("/api/v1/profiles/SECOND", &enable).await;
    refused.assert_problem(409, Some("functions"));
    assert!(refused.json["detail"].as_str().unwrap().contains("'FIRST'"));
    assert_eq!(
        app.admin_get("/api/v1/profiles/SECOND").await.json["enabled"],
        false,
        "nothing half-written"
    );
    // A company scope is another scope: a company profile for the same function is fine ...
    let mut acme = system_profile("ACME-REPORTS", &["all_reports"]);
    acme["apply_to"] = json!({"companies": ["ACME"]});
    assert_eq!(app.admin_post("/api/v1/profiles", &acme).await.status, 201);
    // ... and widening another one to that company is refused.
    let mut wide = system_profile("GLOBEX-REPORTS", &["all_reports"]);
    wide["apply_to"] = json!({"companies": ["GLOBEX"]});
    assert_eq!(app.admin_post("/api/v1/profiles", &wide).await.status, 201);
    wide["apply_to"] = json!({"companies": ["GLOBEX", "ACME"]});
    let widened = app.admin_put("/api/v1/profiles/GLOBEX-REPORTS", &wide).await;
    widened.assert_problem(409, Some("functions"));
    assert!(
        widened.json["detail"].as_str().unwrap().contains("'ACME-REPORTS'"),
        "{}",
        widened.text
    );
    // Two racing requests for the same claim: exactly one wins.
    let (race_a, race_b) = (
        system_profile("RACE-A", &["electronic_signatures"]),
        system_profile("RACE-B", &["electronic_signatures"]),
    );
    let (a, b) = tokio::join!(
        app.admin_post("/api/v1/profiles", &race_a),
        app.admin_post("/api/v1/profiles", &race_b),
    );
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(statuses, [201, 409], "{} / {}", a.text, b.text);
}

async fn resolve_answers_which_profile_and_why(app: TestApp) {
    companies(&app, &["ACME", "GLOBEX"]).await;
    let resolve = |company: &str, function: &str| {
        let path = format!("/api/v1/profiles/resolve?company={company}&function={function}");
        let app = &app;
        async move { app.admin_get(&path).await }
    };
    let none = resolve("ACME", "document_quotations").await;
    none.assert_problem(404, None);
    assert_eq!(none.json["type"], "/problems/no-profile");
    let detail = none.json["detail"].as_str().unwrap();
    assert!(detail.contains("ACME") && detail.contains("document_quotations"), "{detail}");

    assert_eq!(
        app.admin_post("/api/v1/profiles", &system_profile("DEFAULT", &["default"]))
            .await
            .status,
        201
    );
    let mut docs = system_profile("DOCS", &["all_documents"]);
    docs["apply_to"] = json!({"companies": ["ACME"]});
    assert_eq!(app.admin_post("/api/v1/profiles", &docs).await.status, 201);
    let r = resolve("ACME", "document_quotations").await;
    assert_eq!(
        r.json,
        json!({"profile": "DOCS", "provider": "smtp", "scope": "company", "function": "all_documents"})
    );
    let r = resolve("GLOBEX", "document_quotations").await;
    assert_eq!(
        r.json,
        json!({"profile": "DEFAULT", "provider": "smtp", "scope": "system", "function": "default"})
    );
    let r = resolve("ACME", "all_reports").await;
    assert_eq!(r.json["profile"], "DEFAULT", "all_documents is only for documents");

    resolve("NOSUCH", "default").await.assert_problem(422, Some("company"));
    resolve("ACME", "fax").await.assert_problem(422, Some("function"));
    app.admin_get("/api/v1/profiles/resolve").await.assert_problem(422, Some("company"));
}

async fn profile_secrets_are_kept_replaced_and_cleared_as_the_tenant_secret_is(app: TestApp) {
    companies(&app, &["ACME", "GLOBEX"]).await;
    app.admin_post("/api/v1/profiles", &spec_profile()).await;
    let name = officebridge::domain::ProfileName::parse("AR-STATEMENTS").unwrap();
    assert_eq!(
        app.store.profile_secret(&name).await.unwrap().unwrap().expose_secret(),
        "S3cret-pw!"
    );
    // Absent or {"set": true}: kept.
    let mut keep = spec_profile();
    keep["smtp"].as_object_mut().unwrap().remove("password");
    assert_eq!(app.admin_put("/api/v1/profiles/AR-STATEMENTS", &keep).await.status, 200);
    keep["smtp"]["password"] = json!({"set": true});
    assert_eq!(app.admin_put("/api/v1/profiles/AR-STATEMENTS", &keep).await.status, 200);
    assert_eq!(
        app.store.profile_secret(&name).await.unwrap().unwrap().expose_secret(),
        "S3cret-pw!"
    );
    // A new one replaces it.
    keep["smtp"]["password"] = json!("N3w-pw");
    assert_eq!(app.admin_put("/api/v1/profiles/AR-STATEMENTS", &keep).await.status, 200);
    assert_eq!(app.store.profile_secret(&name).await.unwrap().unwrap().expose_secret(), "N3w-pw");
    // null clears it, which password auth does not allow.
    keep["smtp"]["password"] = Value::Null;
    app.admin_put("/api/v1/profiles/AR-STATEMENTS", &keep)
        .await
        .assert_problem(422, Some("smtp.password"));
    // Switching to OAuth drops the password.
    app.admin_post("/api/v1/tenants", &tenant_body("CONTOSO")).await;
    let mut oauth = spec_profile();
    oauth["smtp"] = json!({"host": "smtp.office365.com", "from": "accounts@contoso.com", "auth": "xoauth2", "tenant": "CONTOSO"});
    let switched = app.admin_put("/api/v1/profiles/AR-STATEMENTS", &oauth).await;
    assert_eq!(switched.status, 200, "{}", switched.text);
    assert!(switched.json["smtp"].get("password").is_none(), "{}", switched.text);
    assert!(app.store.profile_secret(&name).await.unwrap().is_none());
    // The path names the profile; the body may not name another.
    let mut other = oauth.clone();
    other["name"] = json!("ELSE");
    app.admin_put("/api/v1/profiles/AR-STATEMENTS", &other)
        .await
        .assert_problem(422, Some("name"));
    app.admin_put("/api/v1/profiles/NOSUCH", &system_profile("NOSUCH", &["default"]))
        .await
        .assert_problem(404, None);
}
