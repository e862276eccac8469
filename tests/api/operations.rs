//! Health, readiness, metrics, the OpenAPI document and unknown routes (SPEC §3.7).

use crate::helpers::TestApp;
use crate::on_both_backends;

on_both_backends!(probes_metrics_and_openapi);

async fn probes_metrics_and_openapi(app: TestApp) {
    let health = app.get_with("/healthz", None).await;
    assert_eq!((health.status, health.text.as_str()), (200, "ok"));
    let ready = app.get_with("/readyz", None).await;
    assert_eq!((ready.status, ready.text.as_str()), (200, "ready"));

    app.admin_get("/api/v1/tenants/NOPE").await;
    let metrics = app.get_with("/metrics", None).await;
    assert!(metrics.content_type.starts_with("text/plain"));
    let line = metrics
        .text
        .lines()
        .find(|l| l.starts_with("http_requests_total") && l.contains("route=\"/api/v1/tenants/{code}\"") && l.contains("status=\"404\""))
        .unwrap_or_else(|| panic!("no labelled counter in:\n{}", metrics.text));
    assert!(!line.contains("NOPE"), "metrics must use the matched route, not the raw URI");

    let doc = app.get_with("/openapi.json", None).await;
    assert_eq!(doc.status, 200);
    assert!(doc.json["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/v1/tenants",
        "/api/v1/tenants/{code}",
        "/api/v1/operators/{code}",
        "/api/v1/apikeys",
        "/healthz",
    ] {
        assert!(doc.json["paths"].get(path).is_some(), "{path} missing from the OpenAPI document");
    }
    assert!(doc.json["components"]["securitySchemes"]["api_key"].is_object());

    app.get_with("/no/such/route", None).await.assert_problem(404, None);
}

/// The OpenAPI document validates (openapi-spec-validator, a tool we did not write), every
/// operation id is unique, every parameter is where the route really takes it, and problems
/// are typed `application/problem+json` (issue 18, item 3).
#[tokio::test]
async fn the_openapi_document_is_valid_and_generator_friendly() {
    let app = crate::helpers::spawn_app(crate::helpers::Backend::Sqlite).await.unwrap();
    let doc = app.get_with("/openapi.json", None).await.json;
    let mut ids = std::collections::HashSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let in_path: Vec<String> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(String::from)
            .collect();
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path} has no operationId"));
            assert!(ids.insert(id.to_string()), "operationId {id} repeats ({method} {path})");
            for p in op["parameters"].as_array().into_iter().flatten() {
                let name = p["name"].as_str().unwrap();
                if p["in"] == "path" {
                    assert!(
                        in_path.iter().any(|n| n == name),
                        "{method} {path}: '{name}' is declared in the path but is not in it"
                    );
                }
            }
            for name in &in_path {
                let declared = op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|p| p["in"] == "path" && p["name"] == *name);
                assert!(declared, "{method} {path}: path parameter '{name}' is not declared");
            }
            for (status, answer) in op["responses"].as_object().unwrap() {
                if status.starts_with('4') || status.starts_with('5') {
                    if let Some(content) = answer["content"].as_object() {
                        assert!(
                            content.keys().all(|k| k == "application/problem+json" || k == "text/html"),
                            "{method} {path} {status}: problems are application/problem+json, not {:?}",
                            content.keys().collect::<Vec<_>>()
                        );
                    }
                }
            }
        }
    }
    // Every later route extends the document: the mail chain is described, not only served.
    for (path, method) in [
        ("/api/v1/mail", "post"),
        ("/api/v1/mail", "get"),
        ("/api/v1/mail/{id}", "get"),
        ("/api/v1/mail/{id}/retry", "post"),
        ("/api/v1/mail/{id}/cancel", "post"),
        ("/api/v1/uploads", "post"),
        ("/api/v1/reports", "post"),
        ("/api/v1/reports", "get"),
        ("/api/v1/reports/{id}/files/{n}", "get"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{method} {path} is not in the document");
    }
    assert!(
        doc["paths"]["/api/v1/mail"]["post"]["requestBody"]["content"]["application/json"]["schema"].is_object(),
        "the mail request has a schema"
    );
    if crate::helpers::python_has("openapi_spec_validator") {
        let file = app.data_dir().join("openapi.json");
        std::fs::write(&file, doc.to_string()).unwrap();
        let out = std::process::Command::new("python3")
            .args([
                "-c",
                "import json,sys; from openapi_spec_validator import validate; validate(json.load(open(sys.argv[1]))); print('valid')",
            ])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openapi-spec-validator: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
