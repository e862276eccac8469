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
