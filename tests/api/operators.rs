//! `/api/v1/operators` (SPEC §2 Operators, §6).

use crate::helpers::{TestApp, tenant_body};
use crate::on_both_backends;
use serde_json::json;

on_both_backends!(put_creates_then_replaces, operator_bad_input);

async fn put_creates_then_replaces(app: TestApp) {
    assert_eq!(app.admin_post("/api/v1/tenants", &tenant_body("CONTOSO")).await.status, 201);
    let created = app
        .admin_put(
            "/api/v1/operators/jdoe",
            &json!({"enabled": true, "tenant": "contoso", "email": "jdoe@contoso.com"}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(created.json["code"], "jdoe");
    assert_eq!(created.json["tenant"], "CONTOSO");
    assert_eq!(created.json["email"], "jdoe@contoso.com");
    assert_eq!(created.json["signin"], "never");
    let replaced = app
        .admin_put("/api/v1/operators/jdoe", &json!({"enabled": false, "tenant": "CONTOSO"}))
        .await;
    assert_eq!(replaced.status, 200);
    assert_eq!(replaced.json["enabled"], false);
    assert_eq!(replaced.json["email"], serde_json::Value::Null);
    assert_eq!(app.admin_get("/api/v1/operators/jdoe").await.json["enabled"], false);
    assert_eq!(app.admin_get("/api/v1/operators").await.json.as_array().unwrap().len(), 1);
    app.admin_get("/api/v1/operators/nobody").await.assert_problem(404, None);
    assert_eq!(app.audit_actions().await, ["operator.update", "operator.create", "tenant.create"]);
}

async fn operator_bad_input(app: TestApp) {
    let cases = [
        (json!({"enabled": true, "tenant": "NOPE"}), "tenant"),
        (json!({"enabled": true}), "tenant"),
        (json!({"enabled": true, "tenant": "CONTOSO", "email": "not-an-address"}), "email"),
        (json!({"enabled": "yes"}), "enabled"),
        (json!({"enabled": true, "tenant": "CONTOSO", "password": "x"}), "password"),
    ];
    assert_eq!(app.admin_post("/api/v1/tenants", &tenant_body("CONTOSO")).await.status, 201);
    for (body, field) in cases {
        app.admin_put("/api/v1/operators/jdoe", &body)
            .await
            .assert_problem(422, Some(field));
    }
    app.admin_put("/api/v1/operators/bad%20code", &json!({"enabled": false}))
        .await
        .assert_problem(422, Some("code"));
    assert_eq!(app.admin_get("/api/v1/operators").await.json, json!([]));
}
