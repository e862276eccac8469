//! `/api/v1/tenants` (SPEC §2 Tenants, §6 wire format).

use crate::helpers::{TestApp, tenant_body};
use crate::on_both_backends;
use serde_json::json;

on_both_backends!(
    create_get_list_and_wire_shape,
    client_secret_is_write_only_and_encrypted_at_rest,
    replace_keeps_clears_and_audits,
    exchange_web_service_is_accepted_with_a_warning,
    invalid_fields_are_named_and_nothing_is_written,
    malformed_and_unknown_fields,
    duplicate_code_is_a_conflict,
    delete_in_use_names_the_operators,
    spa_tenants_need_https,
);

async fn create_get_list_and_wire_shape(app: TestApp) {
    let created = app.admin_post("/api/v1/tenants", &tenant_body("contoso")).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let t = &created.json;
    assert_eq!(t["code"], "CONTOSO");
    assert_eq!(t["tenant_id"], "72f988bf-86f1-41af-91ab-2d7cd011db47");
    assert_eq!(t["client_id"], "0b3f2a7e-5d1c-4c8e-9a3b-2f6d8e1c4b7a");
    assert_eq!(t["platform"], "public_client");
    assert_eq!(t["redirect_url"], "https://localhost");
    assert_eq!(t["client_secret"], json!({"set": false}));
    assert_eq!(t["authority"], "https://login.microsoftonline.com");
    assert_eq!(t["graph_endpoint"], "https://graph.microsoft.com");
    assert!(t.get("warnings").is_none());

    let got = app.admin_get("/api/v1/tenants/contoso").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json["code"], "CONTOSO");
    let list = app.admin_get("/api/v1/tenants").await;
    assert_eq!(list.json.as_array().unwrap().len(), 1);
    app.admin_get("/api/v1/tenants/NOPE").await.assert_problem(404, None);
    assert_eq!(app.audit_actions().await, ["tenant.create"]);
}

async fn client_secret_is_write_only_and_encrypted_at_rest(app: TestApp) {
    let secret = "Zx8Q~verysecret.value_123";
    let mut body = tenant_body("CONTOSO");
    body["client_secret"] = json!(secret);
    let created = app.admin_post("/api/v1/tenants", &body).await;
    assert_eq!(created.status, 201);
    assert_eq!(created.json["client_secret"], json!({"set": true}));
    assert!(!created.text.contains(secret));
    let got = app.admin_get("/api/v1/tenants/CONTOSO").await;
    assert!(!got.text.contains(secret) && got.json["client_secret"]["set"] == true);

    let raw = app.raw_text("SELECT client_secret FROM tenants").await;
    let stored = raw[0].as_deref().unwrap();
    assert!(stored.starts_with("v1.") && !stored.contains(secret), "stored in clear: {stored}");
    let code = officebridge::domain::TenantCode::parse("CONTOSO").unwrap();
    assert_eq!(
        app.store.tenant_client_secret(&code).await.unwrap().unwrap().expose_secret(),
        secret
    );

    let audit = app.admin_get("/api/v1/audit").await;
    assert!(audit.json[0]["detail"]["client_secret"] == "set" && !audit.text.contains(secret));
}

async fn replace_keeps_clears_and_audits(app: TestApp) {
    let mut body = tenant_body("CONTOSO");
    body["client_secret"] = json!("first-secret");
    assert_eq!(app.admin_post("/api/v1/tenants", &body).await.status, 201);
    let code = officebridge::domain::TenantCode::parse("CONTOSO").unwrap();

    // A GET's body PUT back unchanged keeps the secret ({"set": true} means "keep").
    let got = app.admin_get("/api/v1/tenants/CONTOSO").await.json;
    let mut echo = got.clone();
    for k in ["created_at", "updated_at"] {
        echo.as_object_mut().unwrap().remove(k);
    }
    let replaced = app.admin_put("/api/v1/tenants/CONTOSO", &echo).await;
    assert_eq!(replaced.status, 200, "{}", replaced.text);
    assert_eq!(
        app.store.tenant_client_secret(&code).await.unwrap().unwrap().expose_secret(),
        "first-secret"
    );

    let mut changed = tenant_body("CONTOSO");
    changed["description"] = json!("renamed");
    let replaced = app.admin_put("/api/v1/tenants/CONTOSO", &changed).await;
    assert_eq!(replaced.json["description"], "renamed");
    assert_eq!(replaced.json["client_secret"]["set"], true, "absent keeps the secret");

    changed["client_secret"] = json!(null);
    let cleared = app.admin_put("/api/v1/tenants/CONTOSO", &changed).await;
    assert_eq!(cleared.json["client_secret"]["set"], false);
    assert!(app.store.tenant_client_secret(&code).await.unwrap().is_none());

    let audit = app.store.list_audit(10).await.unwrap();
    assert_eq!(audit[0].detail["client_secret"], "cleared");
    assert_eq!(audit[1].detail["changed"]["description"]["to"], "renamed");
    assert_eq!(audit[1].actor, "test-admin");

    app.admin_put("/api/v1/tenants/FABRIKAM", &tenant_body("FABRIKAM"))
        .await
        .assert_problem(404, None);
    app.admin_put("/api/v1/tenants/CONTOSO", &tenant_body("FABRIKAM"))
        .await
        .assert_problem(422, Some("code"));
}

async fn exchange_web_service_is_accepted_with_a_warning(app: TestApp) {
    let mut body = tenant_body("CONTOSO");
    body["exchange_web_service"] = json!("https://outlook.office365.com/EWS/Exchange.asmx");
    let created = app.admin_post("/api/v1/tenants", &body).await;
    assert_eq!(created.status, 201);
    assert!(
        created.json["warnings"][0]
            .as_str()
            .unwrap()
            .contains("Exchange Web Services is retired")
    );
    assert!(
        app.admin_get("/api/v1/tenants/CONTOSO")
            .await
            .json
            .get("exchange_web_service")
            .is_none()
    );
}

async fn invalid_fields_are_named_and_nothing_is_written(app: TestApp) {
    let cases = [
        ("client_id", json!("not-a-guid")),
        ("tenant_id", json!("common")),
        ("tenant_id", json!("not a domain")),
        // SSRF: the cloud metadata service, and lookalike hosts.
        ("graph_endpoint", json!("http://169.254.169.254/")),
        ("graph_endpoint", json!("https://graph.microsoft.com.attacker.example")),
        ("authority", json!("http://127.0.0.1:9999")),
        ("redirect_url", json!("https://erp.contoso.com")),
        ("platform", json!("desktop")),
        ("code", json!("BAD CODE")),
    ];
    for (field, value) in cases {
        let mut body = tenant_body("CONTOSO");
        body[field] = value.clone();
        let answer = app.admin_post("/api/v1/tenants", &body).await;
        answer.assert_problem(422, Some(field));
        assert!(answer.json["errors"].to_string().len() < 2000);
    }
    let mut body = tenant_body("CONTOSO");
    body.as_object_mut().unwrap().remove("client_id");
    app.admin_post("/api/v1/tenants", &body)
        .await
        .assert_problem(422, Some("client_id"));

    assert_eq!(app.admin_get("/api/v1/tenants").await.json, json!([]));
    assert!(app.audit_actions().await.is_empty(), "a refused write must not be audited");
}

async fn malformed_and_unknown_fields(app: TestApp) {
    // A syntax error is a 400: the body is not JSON at all (RFC 9110 §15.5.1).
    let answer = app
        .admin_raw(reqwest::Method::POST, "/api/v1/tenants", "application/json", "{\"code\": \"A\",")
        .await;
    answer.assert_problem(400, None);
    assert!(answer.json["detail"].as_str().unwrap().contains("not valid JSON"));

    let mut body = tenant_body("CONTOSO");
    body["colour"] = json!("blue");
    app.admin_post("/api/v1/tenants", &body).await.assert_problem(422, Some("colour"));

    let mut body = tenant_body("CONTOSO");
    body["client_id"] = json!(42);
    app.admin_post("/api/v1/tenants", &body)
        .await
        .assert_problem(422, Some("client_id"));

    app.admin_raw(reqwest::Method::POST, "/api/v1/tenants", "text/plain", "{}")
        .await
        .assert_problem(415, None);
    let huge = format!("{{\"description\": \"{}\"}}", "x".repeat(2 << 20));
    let answer = app
        .admin_raw(reqwest::Method::POST, "/api/v1/tenants", "application/json", &huge)
        .await;
    assert_eq!(answer.status, 413, "{}", answer.text);
    assert_eq!(app.admin_get("/api/v1/tenants").await.json, json!([]));
}

async fn duplicate_code_is_a_conflict(app: TestApp) {
    assert_eq!(app.admin_post("/api/v1/tenants", &tenant_body("CONTOSO")).await.status, 201);
    let again = app.admin_post("/api/v1/tenants", &tenant_body("contoso")).await;
    again.assert_problem(409, Some("code"));
    assert!(again.json["detail"].as_str().unwrap().contains("CONTOSO"));
    assert_eq!(app.audit_actions().await, ["tenant.create"]);
}

async fn delete_in_use_names_the_operators(app: TestApp) {
    assert_eq!(app.admin_post("/api/v1/tenants", &tenant_body("CONTOSO")).await.status, 201);
    for op in ["jdoe", "asmith"] {
        let put = app
            .admin_put(&format!("/api/v1/operators/{op}"), &json!({"enabled": true, "tenant": "CONTOSO"}))
            .await;
        assert_eq!(put.status, 201, "{}", put.text);
    }
    let refused = app.admin_delete("/api/v1/tenants/CONTOSO").await;
    refused.assert_problem(409, None);
    let detail = refused.json["detail"].as_str().unwrap();
    assert!(detail.contains("asmith") && detail.contains("jdoe"), "{detail}");
    assert_eq!(app.admin_get("/api/v1/tenants/CONTOSO").await.status, 200);

    for op in ["jdoe", "asmith"] {
        app.admin_put(&format!("/api/v1/operators/{op}"), &json!({"enabled": false})).await;
    }
    assert_eq!(app.admin_delete("/api/v1/tenants/CONTOSO").await.status, 204);
    app.admin_get("/api/v1/tenants/CONTOSO").await.assert_problem(404, None);
    app.admin_delete("/api/v1/tenants/CONTOSO").await.assert_problem(404, None);
    assert_eq!(app.audit_actions().await.first().map(String::as_str), Some("tenant.delete"));
}

async fn spa_tenants_need_https(app: TestApp) {
    let mut body = tenant_body("WEB");
    body["platform"] = json!("spa");
    body["redirect_url"] = json!("http://erp.contoso.com/ui");
    app.admin_post("/api/v1/tenants", &body)
        .await
        .assert_problem(422, Some("redirect_url"));
    body.as_object_mut().unwrap().remove("redirect_url");
    app.admin_post("/api/v1/tenants", &body)
        .await
        .assert_problem(422, Some("redirect_url"));
    body["redirect_url"] = json!("https://erp.contoso.com/ui");
    let ok = app.admin_post("/api/v1/tenants", &body).await;
    assert_eq!(ok.status, 201, "{}", ok.text);
    assert_eq!(ok.json["redirect_url"], "https://erp.contoso.com/ui");
}
