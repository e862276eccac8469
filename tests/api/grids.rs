//! Shared grids (SPEC §3.6, §6 "Shared grids"): the ERP shares a grid with an operator, the
//! Excel pane reads it in blocks ready for `Range.values` and publishes the edited table
//! back as a change set the ERP picks up.

use crate::helpers::{Answer, Backend, TestApp, spawn_app_with};
use serde_json::{Value, json};

/// An enabled operator of tenant CONTOSO (made with the first one).
async fn operator(app: &TestApp, code: &str) {
    let t = app.admin_post("/api/v1/tenants", &crate::helpers::tenant_body("CONTOSO")).await;
    assert!(t.status == 201 || t.status == 409, "{}", t.text);
    let a = app
        .admin_put(
            &format!("/api/v1/operators/{code}"),
            &json!({"enabled": true, "tenant": "CONTOSO", "email": format!("{}@contoso.example", code.to_lowercase())}),
        )
        .await;
    assert!(a.status == 201 || a.status == 200, "{}", a.text);
}

/// A client-key request acting for `op` (none: the ERP itself).
async fn call(app: &TestApp, method: reqwest::Method, path: &str, op: Option<&str>, content_type: &str, body: String) -> Answer {
    let mut req = app
        .http
        .request(method, app.url(path))
        .bearer_auth(&app.client_key)
        .header("content-type", content_type)
        .body(body);
    if let Some(op) = op {
        req = req.header("x-operator", op);
    }
    Answer::from(req.send().await.unwrap()).await
}

async fn share(app: &TestApp, op: &str, grid: &Value) -> Answer {
    call(
        app,
        reqwest::Method::POST,
        "/api/v1/grids",
        Some(op),
        "application/json",
        grid.to_string(),
    )
    .await
}

async fn get(app: &TestApp, path: &str, op: Option<&str>) -> Answer {
    call(app, reqwest::Method::GET, path, op, "application/json", String::new()).await
}

async fn publish(app: &TestApp, id: &str, op: &str, body: &Value) -> Answer {
    let path = format!("/api/v1/grids/{id}/changes");
    call(app, reqwest::Method::POST, &path, Some(op), "application/json", body.to_string()).await
}

fn stock() -> Value {
    json!({
        "key": "sku",
        "sheets": [{
            "name": "Stock",
            "columns": [
                {"key": "sku", "header": "SKU", "type": "text"},
                {"key": "qty", "header": "Qty", "type": "integer"},
                {"key": "price", "header": "Price", "type": "currency", "currency": "EUR"},
                {"key": "due", "header": "Due", "type": "date"},
                {"key": "note", "header": "Note", "type": "text"},
            ],
            "rows": [
                {"sku": "A-1", "qty": 3, "price": 9.5, "due": "2026-11-01", "note": "=1+1"},
                {"sku": "B-2", "qty": 0, "price": 12, "due": null, "note": "-5"},
                {"sku": "C-3", "qty": 7, "price": 1.25, "due": "2026-12-24", "note": "plain"},
            ],
        }],
    })
}

async fn a_grid_is_shared_read_in_blocks_and_its_edits_come_back(app: TestApp) {
    operator(&app, "JDOE").await;
    let shared = share(&app, "JDOE", &stock()).await;
    assert_eq!(shared.status, 201, "{}", shared.text);
    let id = shared.json["id"].as_str().unwrap().to_string();
    assert_eq!(shared.json["name"], "Stock");
    assert_eq!(shared.json["rows"], 3);
    assert_eq!(shared.json["key"], "sku");
    assert_eq!(shared.json["columns"][3]["format"], "yyyy-mm-dd");
    assert!(shared.json["expires_at"].as_str().is_some());

    let listed = get(&app, "/api/v1/grids", Some("JDOE")).await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    assert_eq!(listed.json["items"][0]["id"], id.as_str());

    // Blocks ready for Range.values: dates as serial numbers, empty cells as "", text Excel
    // would read as a formula with the apostrophe that keeps it text.
    let first = get(&app, &format!("/api/v1/grids/{id}/rows?offset=0&limit=2"), Some("JDOE")).await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(first.json["rows"][0], json!(["A-1", 3.0, 9.5, 46327.0, "'=1+1"]));
    assert_eq!(first.json["rows"][1], json!(["B-2", 0.0, 12.0, "", "'-5"]));
    assert_eq!(first.json["formats"][0], "@");
    assert_eq!(first.json["formats"][1], "#,##0");
    assert_eq!(first.json["next_offset"], 2);
    assert_eq!(first.json["total"], 3);
    let rest = get(&app, &format!("/api/v1/grids/{id}/rows?offset=2"), Some("JDOE")).await;
    assert_eq!(rest.json["rows"].as_array().unwrap().len(), 1);
    assert_eq!(rest.json["next_offset"], Value::Null);

    // The operator edits: A-1's quantity, B-2 deleted, D-4 added, and a bad cell in C-3.
    let header = json!(["SKU", "Qty", "Price", "Due", "Note"]);
    let with_problem = json!({"header": header, "rows": [
        ["A-1", 5, 9.5, 46327, "=1+1"],
        ["C-3", "seven", 1.25, 46380, "plain"],
        ["D-4", 1, 2, "", "new"],
    ]});
    let a = publish(&app, &id, "JDOE", &with_problem).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json["published"], false, "not published while a cell does not fit");
    assert_eq!(a.json["problems"][0]["column"], "qty");
    assert_eq!(a.json["problems"][0]["row"], 3, "the worksheet row, the header being row 1");
    assert_eq!(a.json["problems"][0]["value"], "seven");
    get(&app, &format!("/api/v1/grids/{id}/changes"), None)
        .await
        .assert_problem(404, None);

    let fixed = json!({"header": header, "rows": [
        ["A-1", 5, 9.5, 46327, "=1+1"],
        ["C-3", 7, 1.25, 46380, "plain"],
        ["D-4", 1, 2, "", "new"],
    ]});
    let b = publish(&app, &id, "JDOE", &fixed).await;
    assert_eq!(b.status, 200, "{}", b.text);
    assert_eq!(b.json["published"], true);
    assert_eq!(b.json["problems"], json!([]));
    let changes = &b.json["changes"];
    assert_eq!(changes["changed"], json!([{"key": "A-1", "fields": {"qty": {"from": 3, "to": 5}}}]));
    assert_eq!(changes["deleted"], json!(["B-2"]));
    assert_eq!(changes["added"][0]["sku"], "D-4");
    assert_eq!(changes["added"][0]["due"], Value::Null);
    // The ERP picks it up with its client key alone.
    let picked = get(&app, &format!("/api/v1/grids/{id}/changes"), None).await;
    assert_eq!(picked.status, 200, "{}", picked.text);
    assert_eq!(&picked.json["changes"], changes);
    assert_eq!(picked.json["operator"], "JDOE");
    assert!(app.audit_actions().await.iter().any(|a| a == "grid.publish"));
}

async fn ndjson_and_csv_grids_name_their_key(app: TestApp) {
    operator(&app, "JDOE").await;
    let ndjson = "{\"name\":\"Orders\",\"key\":\"id\",\"columns\":[{\"key\":\"id\",\"type\":\"text\"},{\"key\":\"amount\",\"type\":\"decimal\"}]}\n[\"SO-1\",10.5]\n[\"SO-2\",3]\n";
    let a = call(
        &app,
        reqwest::Method::POST,
        "/api/v1/grids",
        Some("JDOE"),
        "application/x-ndjson",
        ndjson.into(),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.text);
    assert_eq!((a.json["name"].as_str(), a.json["rows"].as_u64()), (Some("Orders"), Some(2)));
    let csv = "Sku,Qty\nA-1,3\nB-2,4\n";
    let b = call(
        &app,
        reqwest::Method::POST,
        "/api/v1/grids?key=Sku&sheet=Counts",
        Some("JDOE"),
        "text/csv",
        csv.into(),
    )
    .await;
    assert_eq!(b.status, 201, "{}", b.text);
    assert_eq!(b.json["name"], "Counts");
    assert_eq!(b.json["columns"][1]["type"], "integer", "inferred as the export infers");
    let listed = get(&app, "/api/v1/grids", Some("JDOE")).await;
    assert_eq!(listed.json["items"][0]["name"], "Counts", "newest first");
    assert_eq!(listed.json["items"].as_array().unwrap().len(), 2);
}

async fn a_grid_is_its_operators_only(app: TestApp) {
    operator(&app, "JDOE").await;
    operator(&app, "BOB").await;
    let id = share(&app, "JDOE", &stock()).await.json["id"].as_str().unwrap().to_string();
    get(&app, &format!("/api/v1/grids/{id}/rows"), Some("BOB"))
        .await
        .assert_problem(403, None);
    let body = json!({"header": ["SKU", "Qty", "Price", "Due", "Note"], "rows": []});
    publish(&app, &id, "BOB", &body).await.assert_problem(403, None);
    get(&app, &format!("/api/v1/grids/{id}/changes"), Some("BOB"))
        .await
        .assert_problem(403, None);
    assert_eq!(get(&app, "/api/v1/grids", Some("BOB")).await.json["items"], json!([]));
    get(&app, "/api/v1/grids/nope/rows", Some("JDOE")).await.assert_problem(404, None);
}

async fn bad_grids_and_bad_publishes_are_refused(app: TestApp) {
    operator(&app, "JDOE").await;
    // No operator, no key, a key naming no column, two sheets.
    let a = call(
        &app,
        reqwest::Method::POST,
        "/api/v1/grids",
        None,
        "application/json",
        stock().to_string(),
    )
    .await;
    a.assert_problem(422, Some("X-Operator"));
    let mut no_key = stock();
    no_key.as_object_mut().unwrap().remove("key");
    share(&app, "JDOE", &no_key).await.assert_problem(422, Some("key"));
    let mut wrong_key = stock();
    wrong_key["key"] = json!("nope");
    share(&app, "JDOE", &wrong_key).await.assert_problem(422, Some("key"));
    let mut two = stock();
    let sheet = two["sheets"][0].clone();
    two["sheets"].as_array_mut().unwrap().push(sheet);
    share(&app, "JDOE", &two).await.assert_problem(422, Some("sheets"));
    // A bad cell, as the export refuses it; the query parameters of CSV on a JSON body.
    let mut bad_cell = stock();
    bad_cell["sheets"][0]["rows"][2]["qty"] = json!("many");
    share(&app, "JDOE", &bad_cell)
        .await
        .assert_problem(422, Some("sheets[0].rows[2].qty"));
    let q = call(
        &app,
        reqwest::Method::POST,
        "/api/v1/grids?key=sku",
        Some("JDOE"),
        "application/json",
        stock().to_string(),
    )
    .await;
    q.assert_problem(422, Some("key"));
    // Nothing of the refused grids was left behind.
    assert_eq!(get(&app, "/api/v1/grids", Some("JDOE")).await.json["items"], json!([]));
    assert_eq!(app.raw_text("SELECT id FROM grids").await, Vec::<Option<String>>::new());
    assert_eq!(app.raw_text("SELECT grid_id FROM grid_rows").await, Vec::<Option<String>>::new());

    let id = share(&app, "JDOE", &stock()).await.json["id"].as_str().unwrap().to_string();
    for (q, field) in [
        ("offset=4", "offset"),
        ("offset=-1", "offset"),
        ("limit=0", "limit"),
        ("limit=50001", "limit"),
        ("limit=ten", "limit"),
        ("colour=red", "query"),
    ] {
        get(&app, &format!("/api/v1/grids/{id}/rows?{q}"), Some("JDOE"))
            .await
            .assert_problem(422, Some(field));
    }
    let header = json!(["SKU", "Qty", "Price", "Due", "Note"]);
    for (body, field) in [
        (json!({"header": ["SKU", "Qty", "Price", "Due"], "rows": []}), "header"),
        (
            json!({"header": ["SKU", "Qty", "Price", "Due", "Note", "Extra"], "rows": []}),
            "header[5]",
        ),
        (json!({"header": header, "rows": [["A-1", 3]]}), "rows[0]"),
        (json!({"header": header, "rows": [["A-1", {"x": 1}, 9.5, 46327, ""]]}), "rows[0][1]"),
        // The JSON extractor names the body, and its message the missing field.
        (json!({"header": header}), "body"),
    ] {
        publish(&app, &id, "JDOE", &body).await.assert_problem(422, Some(field));
    }
    // An expired grid: 422 naming it.
    app.raw_exec(&format!("UPDATE grids SET expires_ms = 1 WHERE id = '{id}'")).await;
    get(&app, &format!("/api/v1/grids/{id}/rows"), Some("JDOE"))
        .await
        .assert_problem(422, Some("grid"));
    publish(&app, &id, "JDOE", &json!({"header": header, "rows": []}))
        .await
        .assert_problem(422, Some("grid"));
    assert_eq!(get(&app, "/api/v1/grids", Some("JDOE")).await.json["items"], json!([]));
}

/// A client-key POST of raw bytes acting for `op`.
async fn post_bytes(app: &TestApp, path: &str, op: &str, content_type: &str, body: Vec<u8>) -> Answer {
    let req = app
        .http
        .post(app.url(path))
        .bearer_auth(&app.client_key)
        .header("content-type", content_type)
        .header("x-operator", op)
        .body(body);
    Answer::from(req.send().await.unwrap()).await
}

/// CSVs as Excel writes them (issue 18, item 4): Windows-1252 with `;` and decimal commas
/// (Excel's plain "CSV" where the decimal separator is a comma), UTF-16 "Unicode Text" with
/// tabs, read by the export's own readers — shown here through a shared grid's typed rows.
async fn csvs_as_excel_writes_them_are_read_right(app: TestApp) {
    operator(&app, "JDOE").await;
    let ansi = b"Artikel;Preis;Menge\r\nCaf\xe9;12,50;3\r\nTh\xe9;1.234,56;4\r\n".to_vec();
    let a = post_bytes(
        &app,
        "/api/v1/grids?key=Artikel",
        "JDOE",
        "text/csv; charset=windows-1252",
        ansi.clone(),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.text);
    let types: Vec<&str> = a.json["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["text", "decimal", "integer"]);
    let rows = get(
        &app,
        &format!("/api/v1/grids/{}/rows", a.json["id"].as_str().unwrap()),
        Some("JDOE"),
    )
    .await;
    assert_eq!(rows.json["rows"], json!([["Café", 12.5, 3.0], ["Thé", 1234.56, 4.0]]));
    // UTF-16 with its byte order mark and tabs: found without being told.
    let unicode: Vec<u8> = [0xFF, 0xFE]
        .into_iter()
        .chain("Code\tName\r\nX-1\tZoë\r\n".encode_utf16().flat_map(u16::to_le_bytes))
        .collect();
    let b = post_bytes(&app, "/api/v1/grids?key=Code", "JDOE", "text/csv", unicode).await;
    assert_eq!(b.status, 201, "{}", b.text);
    let rows = get(
        &app,
        &format!("/api/v1/grids/{}/rows", b.json["id"].as_str().unwrap()),
        Some("JDOE"),
    )
    .await;
    assert_eq!(rows.json["rows"], json!([["X-1", "Zoë"]]));
    // The same through an export: a workbook.
    let x = app
        .client_post("/api/v1/exports", "text/csv; charset=windows-1252", ansi.clone(), &[])
        .await;
    assert_eq!(x.status(), 200);
    // Bad input: Windows-1252 sent as UTF-8; a charset nobody knows; a delimiter the file does
    // not use; a delimiter or decimal that is neither.
    let c = post_bytes(&app, "/api/v1/grids?key=Artikel", "JDOE", "text/csv", ansi.clone()).await;
    c.assert_problem(422, None);
    assert!(c.text.contains("CSV UTF-8"), "{}", c.text);
    let d = post_bytes(&app, "/api/v1/grids?key=Artikel", "JDOE", "text/csv; charset=klingon", ansi.clone()).await;
    d.assert_problem(415, None);
    assert!(d.text.contains("klingon"), "{}", d.text);
    let e = post_bytes(
        &app,
        "/api/v1/grids?key=Artikel&delimiter=,",
        "JDOE",
        "text/csv; charset=windows-1252",
        ansi.clone(),
    )
    .await;
    e.assert_problem(422, Some("delimiter"));
    assert!(e.text.contains("';'-separated"), "{}", e.text);
    post_bytes(&app, "/api/v1/grids?key=Artikel&delimiter=x", "JDOE", "text/csv", ansi.clone())
        .await
        .assert_problem(422, Some("delimiter"));
    post_bytes(&app, "/api/v1/grids?key=Artikel&decimal=;", "JDOE", "text/csv", ansi)
        .await
        .assert_problem(422, Some("decimal"));
    post_bytes(
        &app,
        "/api/v1/grids",
        "JDOE",
        "application/json; charset=utf-16",
        stock().to_string().into_bytes(),
    )
    .await
    .assert_problem(415, None);
}

crate::on_both_backends!(
    csvs_as_excel_writes_them_are_read_right,
    a_grid_is_shared_read_in_blocks_and_its_edits_come_back,
    ndjson_and_csv_grids_name_their_key,
    a_grid_is_its_operators_only,
    bad_grids_and_bad_publishes_are_refused,
);

/// A grid over `grids.max_cells` is a 413, and nothing of it stays.
#[tokio::test]
async fn a_grid_over_the_configured_size_is_refused_whole() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(app) = spawn_app_with(backend, |s| s.grids.max_cells = 5_000).await else {
            continue;
        };
        operator(&app, "JDOE").await;
        let mut csv = String::from("Sku,Qty\n");
        for i in 0..3_000 {
            csv.push_str(&format!("S-{i},{i}\n"));
        }
        let a = call(&app, reqwest::Method::POST, "/api/v1/grids?key=Sku", Some("JDOE"), "text/csv", csv).await;
        a.assert_problem(413, None);
        assert!(a.json["detail"].as_str().unwrap().contains("grids.max_cells"), "{}", a.text);
        assert_eq!(app.raw_text("SELECT id FROM grids").await, Vec::<Option<String>>::new());
        assert_eq!(app.raw_text("SELECT grid_id FROM grid_rows").await, Vec::<Option<String>>::new());
        // Under the bound, in several batches: every row is there, in order.
        let mut csv = String::from("Sku,Qty\n");
        for i in 0..2_400 {
            csv.push_str(&format!("S-{i},{i}\n"));
        }
        let ok = call(&app, reqwest::Method::POST, "/api/v1/grids?key=Sku", Some("JDOE"), "text/csv", csv).await;
        assert_eq!(ok.status, 201, "{}", ok.text);
        let id = ok.json["id"].as_str().unwrap();
        let block = get(&app, &format!("/api/v1/grids/{id}/rows?offset=1999&limit=2"), Some("JDOE")).await;
        assert_eq!(block.json["rows"], json!([["S-1999", 1999.0], ["S-2000", 2000.0]]));
    }
}
