//! Graph as a whole: `/me`, errors, faults and throttling, `$batch`, and the answers
//! validated against Microsoft's OpenAPI description.

use super::*;

/// microsoft-graph-docs-contrib: concepts/errors.md (error body, request-id),
/// api-reference/v1.0/api/user-get.md (GET /me); entra-docs signing-key-rollover.md.
#[tokio::test]
async fn graph_me_checks_the_token() {
    let emu = emulator().await;
    let me = |token: Option<String>| {
        let mut req = emu.http.get(format!("{}/v1.0/me", emu.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    let resp = me(None).await.unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().contains_key("request-id"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "InvalidAuthenticationToken");
    assert!(body["error"]["innerError"]["request-id"].is_string() && body["error"]["innerError"]["date"].is_string());

    let user_token = emu.user_token("User.Read").await;
    let profile: Value = me(Some(user_token.clone())).await.unwrap().json().await.unwrap();
    assert_eq!(profile["userPrincipalName"], DEMO_USER);
    assert_eq!(
        profile["@odata.context"],
        "https://graph.microsoft.com/v1.0/$metadata#users/$entity"
    );

    let app = me(Some(emu.app_token().await)).await.unwrap();
    assert_eq!(app.status(), 400, "/me needs a delegated token");
    let mut tampered = user_token.clone();
    tampered.replace_range(tampered.len() - 6.., "AAAAAA");
    assert_eq!(me(Some(tampered)).await.unwrap().status(), 401);

    // After one rotation the old key still verifies; after two it is gone.
    emu.http.post(format!("{}/_emulator/keys/rotate", emu.base)).send().await.unwrap();
    assert_eq!(me(Some(user_token.clone())).await.unwrap().status(), 200);
    emu.http.post(format!("{}/_emulator/keys/rotate", emu.base)).send().await.unwrap();
    assert_eq!(me(Some(user_token)).await.unwrap().status(), 401);
}

/// Scripted faults with Graph's throttling answer (microsoft-graph-docs-contrib:
/// concepts/throttling.md — 429, `Retry-After`, `TooManyRequests`; concepts/errors.md) and the
/// request log, which records whether an Authorization header was sent but never its value.
#[tokio::test]
async fn scripted_faults_and_the_request_log() {
    let emu = emulator().await;
    let token = emu.user_token("User.Read Files.ReadWrite").await;
    let faults = json!([
        {"method": "GET", "path": "/v1.0/me", "status": 429, "retry_after": "0.5", "times": 2},
        {"method": "PUT", "path": "/_upload/*", "status": 503, "retry_after": "1"},
        {"path": "/v1.0/me/drive/items/*", "delay_ms": 300}
    ]);
    assert_eq!(
        emu.http
            .post(format!("{}/_emulator/faults", emu.base))
            .json(&faults)
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    for _ in 0..2 {
        let throttled = emu.get(&token, "/v1.0/me").await;
        assert_eq!(throttled.status(), 429);
        assert_eq!(throttled.headers()["retry-after"], "0.5");
        assert_eq!(throttled.json::<Value>().await.unwrap()["error"]["code"], "TooManyRequests");
    }
    assert_eq!(emu.get(&token, "/v1.0/me").await.status(), 200, "the fault is spent");

    let session: Value = emu
        .post_json(
            &token,
            format!("{}/v1.0/me/drive/root:/f.xlsx:/createUploadSession", emu.base),
            &json!({}),
        )
        .await
        .json()
        .await
        .unwrap();
    let url = session["uploadUrl"].as_str().unwrap();
    let put = || emu.http.put(url).header("content-range", "bytes 0-3/4").body("PK!!").send();
    let failed = put().await.unwrap();
    assert_eq!(
        (failed.status().as_u16(), failed.headers()["retry-after"].to_str().unwrap()),
        (503, "1")
    );
    assert_eq!(failed.json::<Value>().await.unwrap()["error"]["code"], "serviceNotAvailable");
    let item: Value = put().await.unwrap().json().await.unwrap();
    assert_eq!(item["size"], 4, "the failed fragment was not stored; the retry completes the file");

    let started = std::time::Instant::now();
    let slow = emu
        .http
        .get(format!("{}/v1.0/me/drive/items/{}", emu.base, item["id"].as_str().unwrap()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(slow.status(), 200);
    assert!(started.elapsed() >= std::time::Duration::from_millis(300), "the delay was applied");

    let log = crate::helpers::emulator_requests(&emu.http, &emu.base).await;
    let puts: Vec<&Value> = log.iter().filter(|r| r["method"] == "PUT").collect();
    assert_eq!(puts.len(), 2);
    assert!(
        puts.iter()
            .all(|r| r["authorization"] == false && r["content_range"] == "bytes 0-3/4")
    );
    assert_eq!((puts[0]["faulted"].as_bool(), puts[1]["status"].as_u64()), (Some(true), Some(201)));
    assert!(
        !Value::from(log.clone()).to_string().contains(&token),
        "the log never holds a token"
    );
    assert_eq!(
        emu.http
            .delete(format!("{}/_emulator/faults", emu.base))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
}

/// The JSON the emulator answers validates against Microsoft's OpenAPI description of Graph
/// (`../shared/reference/graph/graph-v1.0-subset.openapi.json`, converted from Graph's CSDL),
/// checked by openapi-schema-validator in Python — not by our own code.
#[tokio::test]
async fn graph_answers_validate_against_microsofts_openapi() {
    let spec = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/reference/graph/graph-v1.0-subset.openapi.json"
    );
    let here = std::path::Path::new(spec).exists();
    if !crate::helpers::tool_available(here, "../shared/reference beside the checkout")
        || !crate::helpers::python_has("openapi_schema_validator")
    {
        return;
    }
    let emu = emulator().await;
    let token = emu.user_token("User.Read Files.ReadWrite").await;
    let get = |path: String, auth: bool| {
        let mut req = emu.http.get(format!("{}{path}", emu.base));
        if auth {
            req = req.bearer_auth(&token);
        }
        req.send()
    };
    let mut samples = Vec::new();
    let mut sample = |path: &str, method: &str, status: u16, body: Value| {
        samples.push(json!({"path": path, "method": method, "status": status.to_string(), "body": body}))
    };
    let me = get("/v1.0/me".into(), true).await.unwrap();
    sample("/me", "get", me.status().as_u16(), me.json().await.unwrap());
    let denied = get("/v1.0/me".into(), false).await.unwrap();
    sample("/me", "get", denied.status().as_u16(), denied.json().await.unwrap());
    let item: Value = emu
        .put_content(&token, "officebridge/exports/Check.xlsx", b"PK".to_vec())
        .await
        .json()
        .await
        .unwrap();
    let got = get(format!("/v1.0/me/drive/items/{}", item["id"].as_str().unwrap()), true)
        .await
        .unwrap();
    sample("/drives/{id}/items/{id_1}", "get", got.status().as_u16(), got.json().await.unwrap());
    let missing = get("/v1.0/me/drive/items/nope".into(), true).await.unwrap();
    sample(
        "/drives/{id}/items/{id_1}",
        "get",
        missing.status().as_u16(),
        missing.json().await.unwrap(),
    );
    let session = emu
        .http
        .post(format!(
            "{}/v1.0/me/drive/root:/officebridge/exports/Big.xlsx:/createUploadSession",
            emu.base
        ))
        .bearer_auth(&token)
        .json(&json!({"item": {"@microsoft.graph.conflictBehavior": "rename"}}))
        .send()
        .await
        .unwrap();
    sample(
        "/drives/{id}/items/{id_1}/createUploadSession",
        "post",
        session.status().as_u16(),
        session.json().await.unwrap(),
    );
    let directory_token = emu.user_token("Contacts.Read People.Read User.ReadBasic.All").await;
    for (path, url) in [
        ("/me/contacts", "/v1.0/me/contacts"),
        ("/me/people", "/v1.0/me/people"),
        ("/users", "/v1.0/users"),
    ] {
        let resp = emu.get(&directory_token, url).await;
        sample(path, "get", resp.status().as_u16(), resp.json().await.unwrap());
    }
    let dir = tempfile::tempdir().unwrap();
    let samples_file = dir.path().join("samples.json");
    std::fs::write(&samples_file, serde_json::to_vec(&samples).unwrap()).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/reference/validate_graph.py");
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .arg(spec)
        .arg(&samples_file)
        .output()
        .await
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "responses do not match Microsoft's OpenAPI:\n{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report.lines().filter(|l| l.starts_with("ok")).count(), 8, "{report}");
}

/// microsoft-graph-docs-contrib: concepts/throttling-limits.md ("Outlook service limits": 4
/// concurrent requests and 10,000 requests per 10 minutes per app and mailbox) and
/// concepts/throttling.md (429, Retry-After, TooManyRequests).
#[tokio::test]
async fn outlook_throttling_per_app_and_mailbox() {
    let emu = emulator().await;
    let token = emu.user_token("Contacts.Read Files.ReadWrite").await;
    let post = |path: &str, body: Value| {
        let req = emu.http.post(format!("{}{path}", emu.base)).json(&body);
        async move { assert_eq!(req.send().await.unwrap().status(), 204) }
    };
    // Five slow requests at once: the fifth is over the concurrency limit.
    post(
        "/_emulator/faults",
        json!([{"method": "GET", "path": "/v1.0/me/contacts", "delay_ms": 600, "times": 5}]),
    )
    .await;
    let calls = (0..5).map(|_| {
        let req = emu.http.get(format!("{}/v1.0/me/contacts", emu.base)).bearer_auth(&token);
        async move {
            let r = req.send().await.unwrap();
            let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
            (r.status().as_u16(), retry, r.json::<Value>().await.unwrap())
        }
    });
    let drive_meanwhile = async {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        // OneDrive is not an Outlook resource: not counted.
        emu.put_content(&token, "t.txt", b"x".to_vec()).await.status().as_u16()
    };
    let (answers, drive) = tokio::join!(futures_util::future::join_all(calls), drive_meanwhile);
    assert!(drive == 201 || drive == 200);
    let throttled: Vec<_> = answers.iter().filter(|a| a.0 == 429).collect();
    assert_eq!(throttled.len(), 1, "{answers:?}");
    assert_eq!(answers.iter().filter(|a| a.0 == 200).count(), 4);
    assert_eq!(throttled[0].2["error"]["code"], "TooManyRequests");
    assert!(throttled[0].1.as_deref().is_some_and(|s| s.parse::<u64>().unwrap() >= 1));
    // Slots are released: the next request goes through.
    let next = emu.get(&token, "/v1.0/me/contacts").await;
    assert_eq!(next.status(), 200);

    // The request-rate window (lowered here from 10,000 per 600 s to 3 per 600 s).
    post("/_emulator/limits", json!({"requests_per_window": 3, "window_secs": 600})).await;
    for _ in 0..3 {
        let r = emu.get(&token, "/v1.0/me/people").await;
        assert_ne!(r.status(), 429);
    }
    let over = emu.get(&token, "/v1.0/me/contacts").await;
    assert_eq!(over.status(), 429);
    let wait: u64 = over.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((590..=600).contains(&wait), "Retry-After {wait}");
    // Another mailbox of the same app has its own budget.
    let app = emu.app_token().await;
    let other = emu.get(&app, &format!("/v1.0/users/mfa.user@{DEMO_DOMAIN}/contacts")).await;
    assert_eq!(other.status(), 200);
}

/// microsoft-graph-docs-contrib: concepts/json-batching.md — at most 20 requests, ids unique,
/// Content-Type required with a body, `dependsOn` ordering, 424 for dependents of a failed
/// request, a malformed batch is a 400 and a parseable one a 200.
#[tokio::test]
async fn json_batching() {
    let emu = emulator().await;
    let token = emu.user_token("Files.ReadWrite Contacts.Read User.Read").await;
    let batch = |body: Value| {
        let req = emu.http.post(format!("{}/v1.0/$batch", emu.base)).bearer_auth(&token).json(&body);
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = batch(json!({"requests": [
        {"id": "1", "method": "GET", "url": "/me"},
        {"id": "2", "method": "GET", "url": "me/contacts?$top=1"},
        {"id": "3", "method": "GET", "url": "/me/drive/items/does-not-exist"},
        {"id": "4", "method": "GET", "url": "/me", "dependsOn": ["3"]},
        {"id": "5", "method": "GET", "url": "/me", "dependsOn": ["4"]},
        {"id": "6", "method": "POST", "url": "/me/drive/items/nope/createLink", "headers": {"Content-Type": "application/json"}, "body": {"type": "view"}},
    ]}))
    .await;
    assert_eq!(status, 200, "{body}");
    let by_id: std::collections::HashMap<&str, &Value> = body["responses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].as_str().unwrap(), r))
        .collect();
    assert_eq!(by_id["1"]["status"], 200);
    assert_eq!(by_id["1"]["body"]["userPrincipalName"], DEMO_USER);
    assert_eq!(by_id["2"]["status"], 200);
    assert!(by_id["2"]["body"]["value"].is_array());
    assert_eq!(by_id["3"]["status"], 404);
    assert_eq!(by_id["3"]["body"]["error"]["code"], "itemNotFound");
    assert_eq!(by_id["4"]["status"], 424, "depends on a failed request");
    assert_eq!(by_id["5"]["status"], 424, "depends on a request that failed by dependency");
    assert_eq!(by_id["6"]["status"], 404);
    assert!(
        by_id["1"]["headers"]["content-type"]
            .as_str()
            .unwrap()
            .starts_with("application/json")
    );

    // The batch's own token is each request's: without one every request is a 401.
    let anonymous = emu
        .http
        .post(format!("{}/v1.0/$batch", emu.base))
        .json(&json!({"requests": [{"id": "1", "method": "GET", "url": "/me"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 200);
    assert_eq!(anonymous.json::<Value>().await.unwrap()["responses"][0]["status"], 401);

    let many: Vec<Value> = (0..21)
        .map(|i| json!({"id": i.to_string(), "method": "GET", "url": "/me"}))
        .collect();
    for bad in [
        json!({"requests": many}),
        json!({"requests": [{"id": "1", "method": "GET", "url": "/me"}, {"id": "1", "method": "GET", "url": "/me"}]}),
        json!({"requests": [{"id": "1", "method": "POST", "url": "/me/messages", "body": {}}]}),
        json!({"requests": [{"id": "1", "method": "GET", "url": "/me", "dependsOn": ["9"]}]}),
        json!({"requests": [{"id": "1", "method": "GET", "url": "/me", "dependsOn": ["2"]}, {"id": "2", "method": "GET", "url": "/me", "dependsOn": ["1"]}]}),
        json!({"nothing": []}),
    ] {
        let (status, body) = batch(bad.clone()).await;
        assert_eq!(status, 400, "{bad} -> {body}");
        assert_eq!(body["error"]["code"], "BadRequest");
    }
    let twenty: Vec<Value> = (0..20)
        .map(|i| json!({"id": i.to_string(), "method": "GET", "url": "/me"}))
        .collect();
    assert_eq!(batch(json!({"requests": twenty})).await.0, 200);
}
