//! Issue 10: the findings of an attack on what had landed, each reproduced. Every test here
//! failed (or took the server down) before its fix.

use crate::helpers::{Answer, Backend, TestApp, spawn_app_with};
use crate::on_both_backends;
use crate::onedrive::{Linked, OPERATOR, csv, on_both, small, unlinked};
use base64::Engine;
use officebridge::config::Settings;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::time::Duration;

/// A workbook written by rust_xlsxwriter: `cells` is (row, column, text) on `Sheet1`.
fn workbook(cells: &[(u32, u16, &str)]) -> Vec<u8> {
    let mut book = rust_xlsxwriter::Workbook::new();
    let sheet = book.add_worksheet();
    for (r, c, text) in cells {
        sheet.write_string(*r, *c, *text).unwrap();
    }
    book.save_to_buffer().unwrap()
}

async fn import(app: &TestApp, xlsx: &[u8], columns: Value) -> Answer {
    let body = json!({
        "workbook": base64::engine::general_purpose::STANDARD.encode(xlsx),
        "columns": columns,
    });
    app.client_post_json("/api/v1/imports", &body).await
}

fn sku() -> Value {
    json!([{"key": "sku", "type": "text"}])
}

async fn sqlite_app(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_with(Backend::Sqlite, tweak).await.unwrap()
}

/// Item 1: two cells at `A1` and `XFD1048576` are a 17-billion-cell box to calamine's
/// `worksheet_range` (6 GB and growing when found); read as a stream, they are two cells.
#[tokio::test]
async fn a_workbook_with_two_far_apart_cells_imports_as_two_cells() {
    let app = sqlite_app(|_| {}).await;
    let xlsx = workbook(&[(0, 0, "sku"), (1, 0, "A-1"), (1_048_575, 16_383, "far away")]);
    assert!(xlsx.len() < 8 * 1024, "the workbook is small: {} bytes", xlsx.len());
    let a = import(&app, &xlsx, sku()).await;
    assert_eq!(a.status, 200, "{}", a.text);
    // Row 2 holds A-1; row 1,048,576 holds only a cell under no known column.
    assert_eq!(a.json["rows"], json!([{"sku": "A-1"}, {"sku": null}]));
}

/// Item 1: a sheet that inflates past `import.max_part_bytes` is refused before calamine
/// reads it, naming the part and the setting.
#[tokio::test]
async fn a_part_that_inflates_past_the_bound_is_413() {
    let app = sqlite_app(|s| s.import.max_part_bytes = 256 * 1024).await;
    let mut cells = vec![(0, 0, "sku")];
    cells.extend((1..20_000).map(|r| (r, 0u16, "A-1")));
    let xlsx = workbook(&cells);
    assert!(xlsx.len() < 256 * 1024, "compressed it is under the bound: {}", xlsx.len());
    let a = import(&app, &xlsx, sku()).await;
    a.assert_problem(413, Some("workbook"));
    assert!(
        a.text.contains("xl/worksheets/sheet1.xml") && a.text.contains("import.max_part_bytes"),
        "{}",
        a.text
    );
}

/// Item 1: all parts together are bounded too (`import.max_inflated_bytes`).
#[tokio::test]
async fn all_parts_together_are_bounded() {
    let app = sqlite_app(|s| s.import.max_inflated_bytes = 8 * 1024).await;
    let a = import(&app, &workbook(&[(0, 0, "sku"), (1, 0, "A-1")]), sku()).await;
    a.assert_problem(413, Some("workbook"));
    assert!(a.text.contains("import.max_inflated_bytes"), "{}", a.text);
}

/// Item 1: the number of cells, and the length of one (a 500 MB shared string answered
/// 500 MB of JSON when found).
#[tokio::test]
async fn cell_count_and_cell_length_are_bounded() {
    let app = sqlite_app(|s| {
        s.import.max_cells = 50;
        s.import.max_cell_chars = 1000;
    })
    .await;
    let mut cells = vec![(0, 0, "sku")];
    cells.extend((1..60).map(|r| (r, 0u16, "A-1")));
    let a = import(&app, &workbook(&cells), sku()).await;
    a.assert_problem(413, Some("workbook"));
    assert!(a.text.contains("import.max_cells"), "{}", a.text);

    let long = "x".repeat(1001);
    let a = import(&app, &workbook(&[(0, 0, "sku"), (1, 0, long.as_str())]), sku()).await;
    a.assert_problem(422, Some("workbook.Sheet1!A2"));
    assert!(a.text.contains("import.max_cell_chars"), "{}", a.text);
    // A cell at the bound is fine.
    let ok = "x".repeat(1000);
    let a = import(&app, &workbook(&[(0, 0, "sku"), (1, 0, ok.as_str())]), sku()).await;
    assert_eq!(a.status, 200, "{}", a.text);
}

/// Item 1: a zip that is not one, or whose deflate stream is broken, is a 422, not a 500.
#[tokio::test]
async fn a_damaged_workbook_is_422() {
    let app = sqlite_app(|_| {}).await;
    let mut xlsx = workbook(&[(0, 0, "sku"), (1, 0, "A-1")]);
    // Break the middle of the file (inside some part's deflate data).
    let mid = xlsx.len() / 2;
    for b in &mut xlsx[mid..mid + 64] {
        *b = !*b;
    }
    let a = import(&app, &xlsx, sku()).await;
    a.assert_problem(422, Some("workbook"));
}

/// Item 1: an import runs under a deadline (`import.timeout_secs`).
#[tokio::test]
async fn an_import_past_its_deadline_is_503() {
    let app = sqlite_app(|s| s.import.timeout_secs = 0).await;
    let a = import(&app, &workbook(&[(0, 0, "sku"), (1, 0, "A-1")]), sku()).await;
    a.assert_problem(503, None);
    assert!(a.text.contains("import.timeout_secs"), "{}", a.text);
}

/// Item 2: an import's `original` is bounded by rows before it is converted.
#[tokio::test]
async fn an_original_beyond_the_row_budget_is_413() {
    let app = sqlite_app(|s| s.import.max_original_rows = 3).await;
    let original = json!({"sheets": [{"columns": [{"key": "sku", "type": "text"}], "rows": [["a"], ["b"], ["c"], ["d"]]}]});
    let body = json!({
        "workbook": base64::engine::general_purpose::STANDARD.encode(workbook(&[(0, 0, "sku")])),
        "key": "sku",
        "original": original,
    });
    app.client_post_json("/api/v1/imports", &body)
        .await
        .assert_problem(413, Some("original.sheets[0].rows"));
}

/// Item 2: rows of a grid document are kept as their text and converted when written; the
/// field paths of errors are unchanged, whatever order the sheet's keys come in.
#[tokio::test]
async fn json_grid_rows_before_columns_still_convert_and_name_the_cell() {
    let app = sqlite_app(|_| {}).await;
    let doc = r#"{"sheets": [{"rows": [["A-1", 2], {"sku": "A-2", "qty": "many"}], "columns": [{"key": "sku", "type": "text"}, {"key": "qty", "type": "integer"}]}]}"#;
    let a = Answer::from(app.client_post("/api/v1/exports", "application/json", doc, &[]).await).await;
    a.assert_problem(422, Some("sheets[0].rows[1].qty"));
    let good = doc.replace("\"many\"", "3");
    let r = app.client_post("/api/v1/exports", "application/json", good, &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-export-rows"], "2");
}

/// Item 3: one NDJSON line is read only up to `export.max_line_bytes`.
#[tokio::test]
async fn an_ndjson_line_past_the_bound_is_422_naming_it() {
    let app = sqlite_app(|s| s.export.max_line_bytes = 1024).await;
    let body = format!(
        "{{\"columns\":[{{\"key\":\"a\",\"type\":\"text\"}}]}}\n[\"short\"]\n[\"{}\"]\n",
        "x".repeat(5000)
    );
    let a = Answer::from(app.client_post("/api/v1/exports", "application/x-ndjson", body, &[]).await).await;
    a.assert_problem(422, Some("line[3]"));
    assert!(a.text.contains("export.max_line_bytes"), "{}", a.text);
    let fine = "{\"columns\":[{\"key\":\"a\",\"type\":\"text\"}]}\n[\"short\"]\n";
    assert_eq!(
        app.client_post("/api/v1/exports", "application/x-ndjson", fine, &[]).await.status(),
        200
    );
}

on_both!(
    a_moved_operator_gets_no_token_of_the_old_tenant(small),
    sign_in_links_work_once_and_are_audited(unlinked),
    anonymous_signin_requests_keep_nothing(unlinked),
);

/// Item 4: after an operator moves to another tenant, the old tenant's cached token is not
/// used (it was, for up to an hour, sent to the new tenant's Graph).
async fn a_moved_operator_gets_no_token_of_the_old_tenant(l: Linked) {
    assert_eq!(l.export(&csv(3), "Before", &[]).await.status, 201);
    let other = l
        .app
        .admin_post(
            "/api/v1/tenants",
            &json!({
                "code": "OTHER", "description": "another directory",
                "tenant_id": "0c9e8f7a-1b2c-4d3e-8f4a-5b6c7d8e9f0a",
                "client_id": officebridge::emulator::seed::DEMO_CLIENT_ID,
                "platform": "public_client", "redirect_url": "http://localhost",
                "authority": l.emu, "graph_endpoint": l.emu,
            }),
        )
        .await;
    assert_eq!(other.status, 201, "{}", other.text);
    let moved = l
        .app
        .admin_put(
            &format!("/api/v1/operators/{OPERATOR}"),
            &json!({"enabled": true, "tenant": "OTHER", "email": officebridge::emulator::seed::DEMO_USER}),
        )
        .await;
    assert_eq!(moved.status, 200, "{}", moved.text);
    let graph_calls = |log: &[Value]| log.iter().filter(|r| r["path"].as_str().unwrap().starts_with("/v1.0/")).count();
    let before = graph_calls(&l.requests().await);
    let a = l.export(&csv(3), "After", &[]).await;
    a.assert_problem(401, None);
    assert_eq!(a.json["type"], "/problems/signin-required");
    assert_eq!(
        graph_calls(&l.requests().await),
        before,
        "no Graph call with the old tenant's token"
    );
    // Disabled, the same: no cached token is handed out.
    l.app
        .admin_put(
            &format!("/api/v1/operators/{OPERATOR}"),
            &json!({"enabled": false, "tenant": "DEMO"}),
        )
        .await;
    l.export(&csv(3), "Off", &[]).await.assert_problem(422, Some("X-Operator"));
}

/// Item 5: links come from the API, work once, expire, cannot be forged, and every link of
/// an account to an operator is an audit entry.
async fn sign_in_links_work_once_and_are_audited(l: Linked) {
    // An operator without an address: only a link can start its sign-in.
    l.app
        .admin_put("/api/v1/operators/NOADDR", &json!({"enabled": true, "tenant": "DEMO"}))
        .await;
    let link = l.signin_link("NOADDR").await;
    let first = l.browser.get(&link).send().await.unwrap();
    assert_eq!(first.status(), 302);
    let authorize = first.headers()["location"].to_str().unwrap().to_string();
    assert!(!authorize.contains("login_hint"), "no address to hint: {authorize}");
    let again = Answer::from(l.browser.get(&link).send().await.unwrap()).await;
    assert_eq!(again.status, 400, "a link works once");
    assert!(again.text.contains("Sign-in link needed"));
    // Completing the sign-in links the account, and says so in the audit log.
    let callback = crate::helpers::pick_account(&l.browser, &authorize, officebridge::emulator::seed::DEMO_USER).await;
    let done = Answer::from(l.browser.get(callback).send().await.unwrap()).await;
    assert_eq!(done.status, 200, "{}", done.text);
    let audit = l.app.store.list_audit(50).await.unwrap();
    let signin = audit
        .iter()
        .find(|e| e.action == "operator.signin")
        .expect("an operator.signin entry");
    assert_eq!(signin.target, "NOADDR");
    assert!(
        signin.detail.to_string().contains(officebridge::emulator::seed::DEMO_USER),
        "{:?}",
        signin.detail
    );
    assert!(audit.iter().any(|e| e.action == "operator.signin_link" && e.target == "NOADDR"));
    // A link altered by one character is not a link.
    let token = link.split("link=").nth(1).unwrap();
    let decoded = urlencoding_decode(token);
    let mut chars: Vec<char> = decoded.chars().collect();
    let last = chars.len() - 3;
    chars[last] = if chars[last] == 'A' { 'B' } else { 'A' };
    let forged: String = chars.into_iter().collect();
    let mut url = url::Url::parse(&l.app.url("/auth/signin")).unwrap();
    url.query_pairs_mut().append_pair("link", &forged);
    assert_eq!(l.browser.get(url.as_str()).send().await.unwrap().status(), 400);
    // Links need a key, and name an operator that exists.
    let anon = Answer::from(l.browser.post(l.app.url("/api/v1/operators/NOADDR/signin")).send().await.unwrap()).await;
    anon.assert_problem(401, None);
    l.app
        .client_post_json("/api/v1/operators/NOBODY/signin", &json!({}))
        .await
        .assert_problem(404, None);
}

fn urlencoding_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .unwrap()
        .1
        .into_owned()
}

/// Items 5 and 8: 200 anonymous `/auth/signin` requests wrote 200 rows; now they write
/// none, and the sign-ins in progress per operator are bounded, oldest dropped.
async fn anonymous_signin_requests_keep_nothing(l: Linked) {
    async fn count(l: &Linked) -> u32 {
        l.app.raw_text("SELECT CAST(count(*) AS TEXT) FROM signin_states").await[0]
            .clone()
            .unwrap()
            .parse()
            .unwrap()
    }
    for i in 0..200 {
        let path = format!("/auth/signin?operator={}", if i % 2 == 0 { OPERATOR } else { "NOBODY" });
        assert_eq!(l.browser.get(l.app.url(&path)).send().await.unwrap().status(), 400);
    }
    assert_eq!(count(&l).await, 0);
    for _ in 0..8 {
        let link = l.signin_link(OPERATOR).await;
        assert_eq!(l.browser.get(link).send().await.unwrap().status(), 302);
    }
    assert_eq!(count(&l).await, 5, "signin.max_pending_per_operator");
}

/// Item 6: two uploads that send one chunk and stall no longer hold both export slots; each
/// is dropped after `export.body_idle_timeout_secs` with a 408.
#[tokio::test]
async fn stalled_uploads_hold_no_export_slot() {
    let app = sqlite_app(|s| {
        s.export.max_concurrent = 2;
        s.export.body_idle_timeout_secs = 2;
    })
    .await;
    let mut stalled = Vec::new();
    let mut senders = Vec::new();
    for _ in 0..2 {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
        tx.send(Ok(b"{\"columns\":[{\"key\":\"a\",\"type\":\"integer\"}]}\n".to_vec()))
            .await
            .unwrap();
        let body = reqwest::Body::wrap_stream(futures_util::stream::poll_fn({
            let mut rx = rx;
            move |cx| rx.poll_recv(cx)
        }));
        let req = app
            .http
            .post(app.url("/api/v1/exports"))
            .bearer_auth(&app.client_key)
            .header("content-type", "application/x-ndjson")
            .body(body);
        stalled.push(tokio::spawn(req.send()));
        senders.push(tx);
    }
    // While both stall, another export goes through at once.
    let r = app.client_post("/api/v1/exports", "text/csv", "a,b\n1,2\n", &[]).await;
    assert_eq!(r.status(), 200);
    for s in stalled {
        let a = Answer::from(s.await.unwrap().unwrap()).await;
        a.assert_problem(408, None);
        assert!(a.text.contains("export.body_idle_timeout_secs"), "{}", a.text);
    }
    drop(senders);
    let left = std::fs::read_dir(app.data_dir().join("exports")).unwrap().count();
    assert_eq!(left, 0, "no spooled body is left behind");
}

/// Item 6: spooled bytes and queued jobs are bounded per key and in total (503 naming the
/// setting, nothing left on disk).
#[tokio::test]
async fn spool_and_queue_are_bounded() {
    let app = sqlite_app(|s| s.export.max_spool_bytes_per_key = 64).await;
    let a = Answer::from(
        app.client_post("/api/v1/exports", "text/csv", format!("a\n{}\n", "1\n".repeat(100)), &[])
            .await,
    )
    .await;
    a.assert_problem(503, None);
    assert!(a.text.contains("export.max_spool_bytes_per_key"), "{}", a.text);
    assert_eq!(std::fs::read_dir(app.data_dir().join("exports")).unwrap().count(), 0);
    assert_eq!(app.client_post("/api/v1/exports", "text/csv", "a\n1\n", &[]).await.status(), 200);

    let app = sqlite_app(|s| s.export.max_queued_jobs_per_key = 0).await;
    let a = Answer::from(
        app.client_post("/api/v1/exports", "text/csv", "a\n1\n", &[("prefer", "respond-async")])
            .await,
    )
    .await;
    a.assert_problem(503, None);
    assert!(a.text.contains("export.max_queued_jobs_per_key"), "{}", a.text);
    let app = sqlite_app(|s| s.export.max_queued_jobs = 0).await;
    let a = Answer::from(
        app.client_post("/api/v1/exports", "text/csv", "a\n1\n", &[("prefer", "respond-async")])
            .await,
    )
    .await;
    assert!(a.text.contains("export.max_queued_jobs"), "{}", a.text);
}

/// Item 6: a connection that never finishes its headers is closed after
/// `http.header_read_timeout_secs` (it was held for over 70 s).
#[tokio::test]
async fn a_connection_that_never_finishes_its_headers_is_closed() {
    let app = sqlite_app(|s| s.http.header_read_timeout_secs = 1).await;
    let addr = app.address.trim_start_matches("http://").to_string();
    let closed = tokio::task::spawn_blocking(move || {
        let mut tcp = std::net::TcpStream::connect(addr).unwrap();
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").unwrap();
        // Far longer than the timeout: the server must close first.
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut buf = Vec::new();
        tcp.read_to_end(&mut buf).map(|_| buf)
    })
    .await
    .unwrap();
    let answer = closed.expect("the server closed the connection before our 20 s gave up");
    // hyper may answer 408 before closing; it must not answer the request.
    assert!(!String::from_utf8_lossy(&answer).contains("200 OK"));
}

/// Item 7: made-up methods do not make new metric series; metrics can have their own listener.
#[tokio::test]
async fn metrics_labels_are_a_fixed_set_and_can_move_off_the_api_port() {
    let app = sqlite_app(|s| s.metrics.listen = Some("127.0.0.1:0".parse().unwrap())).await;
    for i in 0..50 {
        let method = reqwest::Method::from_bytes(format!("INVENTED{i}").as_bytes()).unwrap();
        app.http.request(method, app.url("/api/v1/tenants")).send().await.unwrap();
    }
    let on_api = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(on_api.status(), 404, "metrics are not on the API port when they have their own");
    let metrics = app.metrics_address.clone().expect("metrics listener");
    let text = app
        .http
        .get(format!("{metrics}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("method=\"OTHER\""), "{text}");
    assert!(!text.contains("INVENTED"), "made-up methods are not labels");
}

on_both_backends!(
    an_endpoint_change_needs_the_secret_again,
    one_directory_is_one_tenant_record,
    callback_pages_and_bearer_scheme,
);

/// Item 9: a kept secret does not follow a change of endpoint, and only the configured
/// emulator's address passes the loopback exception.
async fn an_endpoint_change_needs_the_secret_again(app: TestApp) {
    let mut body = crate::helpers::tenant_body("CONTOSO");
    body["client_secret"] = json!("s3cret-value");
    assert_eq!(app.admin_post("/api/v1/tenants", &body).await.status, 201);
    body.as_object_mut().unwrap().remove("client_secret");
    body["graph_endpoint"] = json!("https://graph.microsoft.us");
    let a = app.admin_put("/api/v1/tenants/CONTOSO", &body).await;
    a.assert_problem(422, Some("client_secret"));
    let t = app.admin_get("/api/v1/tenants/CONTOSO").await;
    assert_eq!(t.json["graph_endpoint"], "https://graph.microsoft.com", "nothing changed");
    body["client_secret"] = json!("s3cret-for-us-gov");
    assert_eq!(app.admin_put("/api/v1/tenants/CONTOSO", &body).await.status, 200);
    // Unchanged endpoints keep the secret without repeating it.
    body.as_object_mut().unwrap().remove("client_secret");
    body["description"] = json!("renamed");
    let kept = app.admin_put("/api/v1/tenants/CONTOSO", &body).await;
    assert_eq!(kept.status, 200, "{}", kept.text);
    assert_eq!(kept.json["client_secret"]["set"], true);
    // This app allows no emulator: no loopback endpoint at all.
    body["authority"] = json!("http://127.0.0.1:1");
    app.admin_put("/api/v1/tenants/CONTOSO", &body)
        .await
        .assert_problem(422, Some("authority"));
}

/// Item 10: two tenant records for one directory are refused, naming the other.
async fn one_directory_is_one_tenant_record(app: TestApp) {
    assert_eq!(
        app.admin_post("/api/v1/tenants", &crate::helpers::tenant_body("CONTOSO"))
            .await
            .status,
        201
    );
    let mut twin = crate::helpers::tenant_body("TWIN");
    twin["tenant_id"] = json!("72F988BF-86F1-41AF-91AB-2D7CD011DB47");
    let a = app.admin_post("/api/v1/tenants", &twin).await;
    a.assert_problem(409, Some("tenant_id"));
    assert!(a.text.contains("CONTOSO"), "{}", a.text);
    twin["tenant_id"] = json!("0c9e8f7a-1b2c-4d3e-8f4a-5b6c7d8e9f0a");
    assert_eq!(app.admin_post("/api/v1/tenants", &twin).await.status, 201);
    twin["tenant_id"] = json!("72f988bf-86f1-41af-91ab-2d7cd011db47");
    app.admin_put("/api/v1/tenants/TWIN", &twin)
        .await
        .assert_problem(409, Some("tenant_id"));
}

/// Item 11: the callback page's headers, the case of the `Authorization` scheme, an
/// unauthenticated `/me` that names no directory, a private SQLite file.
async fn callback_pages_and_bearer_scheme(app: TestApp) {
    let page = app.http.get(app.url("/auth/callback?code=x")).send().await.unwrap();
    let h = page.headers();
    assert!(h["content-security-policy"].to_str().unwrap().contains("default-src 'none'"));
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["x-content-type-options"], "nosniff");
    for scheme in ["BEARER", "bearer", "Bearer"] {
        let r = app
            .http
            .get(app.url("/api/v1/tenants"))
            .header("authorization", format!("{scheme} {}", app.admin_key))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{scheme}");
    }
    assert_eq!(
        app.admin_post("/api/v1/tenants", &crate::helpers::tenant_body("CONTOSO"))
            .await
            .status,
        201
    );
    // A token for an unconfigured directory and one for a configured directory that fails
    // validation get the same answer.
    let token = |tid: &str| {
        let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!("{}.{}.c2ln", b64(json!({"alg": "RS256", "kid": "k"})), b64(json!({"tid": tid})))
    };
    let me = |tid: &'static str| {
        let app = &app;
        let t = token(tid);
        async move { Answer::from(app.http.get(app.url("/api/v1/me")).bearer_auth(t).send().await.unwrap()).await }
    };
    let unknown = me("0c9e8f7a-1b2c-4d3e-8f4a-5b6c7d8e9f0a").await;
    unknown.assert_problem(401, None);
    assert!(
        !unknown.text.contains("72f988bf") && !unknown.text.contains("0c9e8f7a"),
        "{}",
        unknown.text
    );
    if app.backend == Backend::Sqlite {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(app.data_dir().join("officebridge.db"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
