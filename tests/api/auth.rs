//! API keys: `Authorization: Bearer`, roles, revocation (SPEC §3.5, last point).

use crate::helpers::{Answer, TestApp};
use crate::on_both_backends;
use serde_json::json;

on_both_backends!(
    missing_wrong_and_revoked_keys_are_401,
    client_key_on_admin_route_is_403,
    api_keys_are_shown_once_and_stored_hashed
);

async fn missing_wrong_and_revoked_keys_are_401(app: TestApp) {
    let none = app.get_with("/api/v1/tenants", None).await;
    none.assert_problem(401, None);
    let wrong = app.get_with("/api/v1/tenants", Some("obk_not-a-real-key")).await;
    wrong.assert_problem(401, None);
    let basic = app
        .http
        .get(app.url("/api/v1/tenants"))
        .basic_auth("admin", Some(&app.admin_key))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.headers()["www-authenticate"], "Bearer realm=\"officebridge\"");
    Answer::from(basic).await.assert_problem(401, None);

    let created = app.admin_post("/api/v1/apikeys", &json!({"name": "temp", "role": "admin"})).await;
    let key = created.json["key"].as_str().unwrap().to_string();
    assert_eq!(app.get_with("/api/v1/tenants", Some(&key)).await.status, 200);
    assert_eq!(
        app.admin_delete(&format!("/api/v1/apikeys/{}", created.json["id"].as_str().unwrap()))
            .await
            .status,
        204
    );
    app.get_with("/api/v1/tenants", Some(&key)).await.assert_problem(401, None);
}

async fn client_key_on_admin_route_is_403(app: TestApp) {
    for path in ["/api/v1/tenants", "/api/v1/operators", "/api/v1/apikeys", "/api/v1/audit"] {
        app.get_with(path, Some(&app.client_key)).await.assert_problem(403, None);
    }
    let post = app
        .http
        .post(app.url("/api/v1/tenants"))
        .bearer_auth(&app.client_key)
        .json(&crate::helpers::tenant_body("CONTOSO"))
        .send()
        .await
        .unwrap();
    Answer::from(post).await.assert_problem(403, None);
    assert_eq!(app.admin_get("/api/v1/tenants").await.json, json!([]));
}

async fn api_keys_are_shown_once_and_stored_hashed(app: TestApp) {
    let created = app
        .admin_post("/api/v1/apikeys", &json!({"name": "erp-web", "role": "client"}))
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let key = created.json["key"].as_str().unwrap();
    assert!(key.starts_with("obk_") && key.len() > 40);
    let list = app.admin_get("/api/v1/apikeys").await;
    assert!(!list.text.contains(key), "a list must never show a key");
    assert!(
        list.json
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["name"] == "erp-web" && k["role"] == "client")
    );
    let hashes = app.raw_text("SELECT key_hash FROM api_keys").await;
    assert!(
        hashes
            .iter()
            .all(|h| h.as_deref().is_some_and(|h| h.len() == 64 && !h.contains(key)))
    );

    app.admin_post("/api/v1/apikeys", &json!({"name": "erp-web", "role": "client"}))
        .await
        .assert_problem(409, Some("name"));
    app.admin_post("/api/v1/apikeys", &json!({"name": "x", "role": "root"}))
        .await
        .assert_problem(422, Some("role"));
    app.admin_post("/api/v1/apikeys", &json!({"name": " ", "role": "client"}))
        .await
        .assert_problem(422, Some("name"));
    app.admin_delete("/api/v1/apikeys/nope").await.assert_problem(404, None);
}
