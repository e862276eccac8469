//! `POST /api/v1/exports` and `/api/v1/imports` over HTTP (SPEC §3.1, §6; issue 3).

use crate::helpers::{Answer, Backend, TestApp, spawn_app_with};
use crate::on_both_backends;
use officebridge::export::import::{ImportRequest, import};
use officebridge::export::read::parse_grid_document;
use serde_json::{Value, json};

/// SPEC §3.1's example grid, with `rows`.
pub fn spec_grid(rows: Value) -> Value {
    json!({
        "title": "Open sales orders",
        "author": "jdoe",
        "sheets": [{
            "name": "Orders",
            "columns": [
                {"key": "order", "header": "Order", "type": "text"},
                {"key": "date", "header": "Order date", "type": "date"},
                {"key": "qty", "header": "Qty", "type": "integer"},
                {"key": "price", "header": "Unit price", "type": "currency", "currency": "USD", "decimals": 2},
                {"key": "disc", "header": "Discount", "type": "percent"},
                {"key": "ok", "header": "Shipped", "type": "boolean"},
                {"key": "link", "header": "Document", "type": "hyperlink"}
            ],
            "rows": rows,
            "totals": {"qty": "sum", "price": "sum"}
        }]
    })
}

pub fn spec_rows() -> Value {
    json!([
        ["SO-000123", "2026-11-01", 3, 12.5, 0.1, true, "https://erp.example.com/so/123"],
        {"order": "SO-000124", "date": "2026-11-02", "qty": 7, "price": 3.25, "disc": 0, "ok": false, "link": null}
    ])
}

/// Reads an exported workbook back with the grid's own columns.
pub fn read_back(grid: &Value, xlsx: Vec<u8>) -> Vec<serde_json::Map<String, Value>> {
    let doc = parse_grid_document(grid.to_string().as_bytes()).unwrap();
    let (columns, _) = officebridge::export::import::import_columns(None, Some(&doc), None, &Default::default()).unwrap();
    let result = import(
        std::io::Cursor::new(xlsx),
        &ImportRequest {
            columns: &columns,
            sheet: None,
            key: None,
            original: None,
            limits: &Default::default(),
            deadline: None,
        },
    )
    .unwrap();
    assert!(result.problems.is_empty(), "{:?}", result.problems);
    result.rows
}

on_both_backends!(
    json_grid_downloads_a_typed_workbook,
    ndjson_and_csv_are_accepted,
    export_bad_input_is_422_naming_the_field,
    export_needs_a_client_key_and_a_known_media_type,
    async_export_reports_progress_and_serves_the_file,
    failed_async_export_says_why,
    import_returns_rows_problems_and_changes,
    shutdown_finishes_background_exports_first,
);

/// SIGTERM while a background export runs: the process ends only once the job has finished
/// and its workbook is complete (issue 11: background work is supervised and drained).
async fn shutdown_finishes_background_exports_first(mut app: TestApp) {
    let csv: String = std::iter::once("order,qty\n".to_string())
        .chain((0..200_000).map(|i| format!("SO-{i},{i}\n")))
        .collect();
    let resp = app
        .client_post("/api/v1/exports", "text/csv", csv, &[("prefer", "respond-async")])
        .await;
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    app.stop().await.expect("a clean shutdown");
    let file = app.data_dir().join("exports").join(format!("{id}.xlsx"));
    let bytes = std::fs::read(&file).expect("the job's workbook was written before the process ended");
    let mut book: calamine::Xlsx<_> = calamine::open_workbook_from_rs(std::io::Cursor::new(bytes)).expect("a complete workbook");
    let sheet = calamine::Reader::worksheet_range_at(&mut book, 0).unwrap().unwrap();
    assert_eq!(sheet.height(), 200_001, "header and every row");
}

async fn json_grid_downloads_a_typed_workbook(app: TestApp) {
    let grid = spec_grid(spec_rows());
    let resp = app.client_post("/api/v1/exports", "application/json", grid.to_string(), &[]).await;
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    assert_eq!(
        h["content-type"],
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    );
    assert_eq!(
        h["content-disposition"],
        "attachment; filename=\"Open sales orders.xlsx\"; filename*=UTF-8''Open%20sales%20orders.xlsx"
    );
    assert_eq!(h["x-export-rows"], "2");
    let bytes = resp.bytes().await.unwrap().to_vec();
    assert_eq!(h["content-length"], bytes.len().to_string().as_str());
    assert_eq!(&bytes[..2], b"PK", "an XLSX is a zip file");
    let rows = read_back(&grid, bytes);
    assert_eq!(rows.len(), 2, "the totals row is not data");
    assert_eq!(rows[0]["order"], "SO-000123");
    assert_eq!(rows[0]["date"], "2026-11-01");
    assert_eq!(rows[0]["qty"], 3);
    assert_eq!(rows[0]["price"], 12.5);
    assert_eq!(rows[0]["ok"], true);
    assert_eq!(rows[0]["link"], "https://erp.example.com/so/123");
    assert_eq!(rows[1]["link"], Value::Null);

    // ?destination=download is the default spelled out; onedrive is not available yet.
    let resp = app
        .client_post("/api/v1/exports?destination=download", "application/json", grid.to_string(), &[])
        .await;
    assert_eq!(resp.status(), 200);
    let answer = Answer::from(
        app.client_post("/api/v1/exports?destination=onedrive", "application/json", grid.to_string(), &[])
            .await,
    )
    .await;
    // OneDrive exports act for an operator (tests/api/onedrive.rs has the rest).
    answer.assert_problem(422, Some("X-Operator"));
    Answer::from(
        app.client_post("/api/v1/exports?destination=ftp", "application/json", grid.to_string(), &[])
            .await,
    )
    .await
    .assert_problem(422, Some("destination"));
}

async fn ndjson_and_csv_are_accepted(app: TestApp) {
    let ndjson = "{\"name\":\"Stock\",\"title\":\"Stock list\",\"columns\":[{\"key\":\"sku\",\"type\":\"text\"},{\"key\":\"qty\",\"type\":\"integer\"}]}\n\
                  [\"A-1\", 5]\n\n{\"sku\": \"B-2\", \"qty\": 9}\n";
    let resp = app.client_post("/api/v1/exports", "application/x-ndjson", ndjson, &[]).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-disposition"].to_str().unwrap().contains("Stock list.xlsx"));
    assert_eq!(resp.headers()["x-export-rows"], "2");

    let csv = "Code,Qty,Price,When\n00123,4,2.50,2026-01-31\nX9,5,3,2026-02-01\n";
    let resp = app
        .client_post(
            "/api/v1/exports?columns=Price%3Dcurrency%3AEUR%3A2&sheet=Prices&title=Price%20list",
            "text/csv",
            csv,
            &[],
        )
        .await;
    assert_eq!(resp.status(), 200);
    let bytes = resp.bytes().await.unwrap().to_vec();
    let cols = officebridge::export::import::import_columns(
        Some("Code=text,Qty=integer,Price=currency:EUR:2,When=date"),
        None,
        None,
        &Default::default(),
    )
    .unwrap()
    .0;
    let result = import(
        std::io::Cursor::new(bytes),
        &ImportRequest {
            columns: &cols,
            sheet: Some("Prices"),
            key: None,
            original: None,
            limits: &Default::default(),
            deadline: None,
        },
    )
    .unwrap();
    assert!(result.problems.is_empty(), "{:?}", result.problems);
    assert_eq!(
        result.rows[0]["Code"], "00123",
        "leading zeros are kept: the column was inferred as text"
    );
    assert_eq!(result.rows[0]["Qty"], 4);
    assert_eq!(result.rows[1]["When"], "2026-02-01");
}

async fn export_bad_input_is_422_naming_the_field(app: TestApp) {
    let post = |ct: &'static str, body: String| app.client_post("/api/v1/exports", ct, body, &[]);
    // Not JSON at all: 400 (RFC 9110: a syntax error), naming the body.
    Answer::from(post("application/json", "{\"sheets\": [".into()).await)
        .await
        .assert_problem(400, None);

    // A row at fault, and the field its problem must name.
    let bad_rows = [
        (json!(["SO-1", "2026-11-01", "three", 1, 0, true, null]), "sheets[0].rows[0].qty"),
        (json!(["SO-1", "2026-02-30", 3, 1, 0, true, null]), "sheets[0].rows[0].date"),
        (json!(["SO-1", "2026-01-01", 3]), "sheets[0].rows[0]"),
        (json!(["SO-1", "2026-01-01", 3, 1, 0, true, null, "extra"]), "sheets[0].rows[0]"),
        (json!({"order": "SO-1", "colour": "red"}), "sheets[0].rows[0].colour"),
    ];
    for (row, field) in bad_rows {
        let grid = spec_grid(json!([row]));
        Answer::from(post("application/json", grid.to_string()).await)
            .await
            .assert_problem(422, Some(field));
    }

    let mut bad_type = spec_grid(json!([]));
    bad_type["sheets"][0]["columns"][1]["type"] = json!("money");
    let a = Answer::from(post("application/json", bad_type.to_string()).await).await;
    a.assert_problem(422, Some("sheets[0].columns[1].type"));
    assert!(a.text.contains("unknown column type"));

    let mut dup = spec_grid(json!([]));
    dup["sheets"][0]["columns"][1]["key"] = json!("order");
    Answer::from(post("application/json", dup.to_string()).await)
        .await
        .assert_problem(422, Some("sheets[0].columns[1].key"));

    let wide: Vec<Value> = (0..16_385).map(|i| json!({"key": format!("c{i}"), "type": "integer"})).collect();
    let a = Answer::from(post("application/json", json!({"sheets": [{"columns": wide, "rows": []}]}).to_string()).await).await;
    a.assert_problem(422, Some("sheets[0].columns"));
    assert!(a.text.contains("16384"));

    Answer::from(post("application/json", json!({"sheets": []}).to_string()).await)
        .await
        .assert_problem(422, Some("sheets"));
    Answer::from(post("application/json", json!({"sheetz": []}).to_string()).await)
        .await
        .assert_problem(422, Some("sheetz"));

    let a = Answer::from(
        post(
            "application/x-ndjson",
            "{\"columns\":[{\"key\":\"a\",\"type\":\"integer\"}]}\n[1]\n[2\n".into(),
        )
        .await,
    )
    .await;
    a.assert_problem(422, Some("line[3]"));
    let a = Answer::from(
        post(
            "application/x-ndjson",
            "{\"columns\":[{\"key\":\"a\",\"type\":\"integer\"}]}\n[1]\n[\"x\"]\n".into(),
        )
        .await,
    )
    .await;
    a.assert_problem(422, Some("line[3].a"));
    let a = Answer::from(post("text/csv", "a,b\n1,2\n3\n".into()).await).await;
    a.assert_problem(422, Some("line[3]"));
    let exports_dir = app.data_dir().join("exports");
    assert_eq!(
        std::fs::read_dir(exports_dir).unwrap().count(),
        0,
        "a refused export leaves no file behind"
    );
}

async fn export_needs_a_client_key_and_a_known_media_type(app: TestApp) {
    let grid = spec_grid(spec_rows()).to_string();
    let no_key = app
        .http
        .post(app.url("/api/v1/exports"))
        .header("content-type", "application/json")
        .body(grid.clone())
        .send()
        .await
        .unwrap();
    Answer::from(no_key).await.assert_problem(401, None);
    let admin = app
        .http
        .post(app.url("/api/v1/exports"))
        .bearer_auth(&app.admin_key)
        .header("content-type", "application/json")
        .body(grid.clone())
        .send()
        .await
        .unwrap();
    Answer::from(admin).await.assert_problem(403, None);
    Answer::from(app.client_post("/api/v1/exports", "application/xml", grid, &[]).await)
        .await
        .assert_problem(415, None);
}

/// Reads server-sent events until `done` or `failed`; returns every event's (name, data).
async fn events_until_finished(app: &TestApp, id: &str) -> Vec<(String, Value)> {
    let mut resp = app.client_get(&format!("/api/v1/exports/{id}/events")).await;
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut text = String::new();
    let read = async {
        while let Some(chunk) = resp.chunk().await.unwrap() {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if text.contains("event: done") || text.contains("event: failed") {
                break;
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(60), read)
        .await
        .expect("the job finished within a minute");
    text.split("\n\n")
        .filter_map(|block| {
            let name = block.lines().find_map(|l| l.strip_prefix("event: "))?;
            let data = block.lines().find_map(|l| l.strip_prefix("data: "))?;
            Some((name.to_string(), serde_json::from_str(data).unwrap()))
        })
        .collect()
}

async fn async_export_reports_progress_and_serves_the_file(app: TestApp) {
    let rows: Vec<Value> = (0..5000)
        .map(|i| json!([format!("SO-{i}"), "2026-11-01", i, 1.5, 0.1, true, null]))
        .collect();
    let grid = spec_grid(Value::Array(rows));
    let resp = app
        .client_post(
            "/api/v1/exports",
            "application/json",
            grid.to_string(),
            &[("prefer", "respond-async")],
        )
        .await;
    assert_eq!(resp.status(), 202);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let accepted: Value = resp.json().await.unwrap();
    let id = accepted["id"].as_str().unwrap().to_string();
    assert_eq!(location, format!("/api/v1/exports/{id}"));
    assert!(matches!(accepted["state"].as_str(), Some("queued" | "running")));

    let events = events_until_finished(&app, &id).await;
    let (last_name, last) = events.last().unwrap();
    assert_eq!(last_name, "done");
    assert_eq!(last["rows_written"], 5000);
    assert_eq!(last["report"]["rows"], 5000);
    assert!(events.iter().all(|(n, _)| n == "progress" || n == "done"));

    let status: Value = app.client_get(&location).await.json().await.unwrap();
    assert_eq!(status["state"], "done");
    assert!(status["expires_at"].is_string());
    let content = app.client_get(status["content"].as_str().unwrap()).await;
    assert_eq!(content.status(), 200);
    let rows = read_back(&grid, content.bytes().await.unwrap().to_vec());
    assert_eq!(rows.len(), 5000);
    assert_eq!(rows[4999]["order"], "SO-4999");

    // Another client cannot see it.
    let (_, other) = app
        .store
        .create_api_key("test", "other-client", officebridge::store::models::Role::Client)
        .await
        .unwrap();
    let peek = app
        .http
        .get(app.url(&location))
        .bearer_auth(other.expose_secret())
        .send()
        .await
        .unwrap();
    Answer::from(peek).await.assert_problem(404, None);
    Answer::from(app.client_get("/api/v1/exports/not-a-uuid").await)
        .await
        .assert_problem(404, None);
}

async fn failed_async_export_says_why(app: TestApp) {
    let grid = spec_grid(json!([["SO-1", "not a date", 1, 1, 0, true, null]]));
    let resp = app
        .client_post(
            "/api/v1/exports",
            "application/json",
            grid.to_string(),
            &[("prefer", "respond-async")],
        )
        .await;
    let id = resp.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let events = events_until_finished(&app, &id).await;
    let (name, status) = events.last().unwrap();
    assert_eq!(name, "failed");
    assert_eq!(status["error"]["status"], 422);
    assert_eq!(status["error"]["errors"][0]["field"], "sheets[0].rows[0].date");
    Answer::from(app.client_get(&format!("/api/v1/exports/{id}/content")).await)
        .await
        .assert_problem(409, None);
}

#[tokio::test]
async fn finished_exports_expire() {
    let app = spawn_app_with(Backend::Sqlite, |s| s.export.retention_secs = 1).await.unwrap();
    let resp = app
        .client_post(
            "/api/v1/exports",
            "application/json",
            spec_grid(spec_rows()).to_string(),
            &[("prefer", "respond-async")],
        )
        .await;
    let id = resp.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    assert_eq!(events_until_finished(&app, &id).await.last().unwrap().0, "done");
    let files = || std::fs::read_dir(app.data_dir().join("exports")).unwrap().count();
    assert_eq!(files(), 1);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    Answer::from(app.client_get(&format!("/api/v1/exports/{id}")).await)
        .await
        .assert_problem(404, None);
    assert_eq!(files(), 0, "the expired file is deleted");
}

#[tokio::test]
async fn oversized_bodies_are_413_and_leave_nothing() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.export.max_json_bytes = 2_000;
        s.export.max_body_bytes = 5_000;
    })
    .await
    .unwrap();
    let rows: Vec<Value> = (0..100)
        .map(|i| json!([format!("SO-{i}"), "2026-11-01", i, 1.5, 0.1, true, null]))
        .collect();
    let big = spec_grid(Value::Array(rows)).to_string();
    Answer::from(app.client_post("/api/v1/exports", "application/json", big, &[]).await)
        .await
        .assert_problem(413, None);
    let mut ndjson = String::from("{\"columns\":[{\"key\":\"a\",\"type\":\"text\"}]}\n");
    for i in 0..1000 {
        ndjson.push_str(&format!("[\"row {i}\"]\n"));
    }
    // A stream (no Content-Length) is cut off when it passes the limit.
    let stream = futures_util::stream::iter(
        ndjson
            .into_bytes()
            .chunks(512)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let resp = app
        .client_post("/api/v1/exports", "application/x-ndjson", reqwest::Body::wrap_stream(stream), &[])
        .await;
    Answer::from(resp).await.assert_problem(413, None);
    assert_eq!(
        std::fs::read_dir(app.data_dir().join("exports")).unwrap().count(),
        0,
        "no partial file is left"
    );
}

async fn import_returns_rows_problems_and_changes(app: TestApp) {
    let original = spec_grid(spec_rows());
    // The operator's edit: SO-000123's qty 3 → 4, SO-000124 deleted, SO-000125 added, and a
    // price typed as words (the edited sheet's columns are all text, as a user could type).
    let mut edited = spec_grid(json!([
        [
            "SO-000123",
            "2026-11-01",
            "4",
            "12.5",
            "0.1",
            "TRUE",
            "https://erp.example.com/so/123"
        ],
        ["SO-000125", "2026-11-03", "1", "twelve", "0", "FALSE", null]
    ]));
    for c in edited["sheets"][0]["columns"].as_array_mut().unwrap() {
        c["type"] = json!("text");
        c.as_object_mut().unwrap().remove("currency");
    }
    edited["sheets"][0].as_object_mut().unwrap().remove("totals");
    let xlsx = app
        .client_post("/api/v1/exports", "application/json", edited.to_string(), &[])
        .await
        .bytes()
        .await
        .unwrap();
    use base64::Engine;
    let body = json!({
        "workbook": base64::engine::general_purpose::STANDARD.encode(&xlsx),
        "key": "order",
        "original": original,
    });
    let answer = app.client_post_json("/api/v1/imports", &body).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let r = &answer.json;
    assert_eq!(r["sheet"], "Orders");
    assert_eq!(r["rows"][0]["qty"], 4);
    assert_eq!(r["problems"].as_array().unwrap().len(), 1);
    let p = &r["problems"][0];
    assert_eq!(
        (p["row"].as_u64(), p["column"].as_str(), p["value"].as_str()),
        (Some(3), Some("price"), Some("twelve"))
    );
    assert!(p["reason"].as_str().unwrap().contains("not a number"));
    assert_eq!(
        r["changes"]["changed"],
        json!([{"key": "SO-000123", "fields": {"qty": {"from": 3, "to": 4}}}])
    );
    assert_eq!(r["changes"]["deleted"], json!(["SO-000124"]));
    assert_eq!(r["changes"]["added"][0]["order"], "SO-000125");

    let bad = |body: Value| {
        app.http
            .post(app.url("/api/v1/imports"))
            .bearer_auth(&app.client_key)
            .json(&body)
            .send()
    };
    Answer::from(bad(json!({"workbook": "%%%", "original": spec_grid(json!([]))})).await.unwrap())
        .await
        .assert_problem(422, Some("workbook"));
    Answer::from(bad(json!({"workbook": "UEsDBA=="})).await.unwrap())
        .await
        .assert_problem(422, Some("columns"));
    Answer::from(
        bad(json!({"workbook": "UEsDBA==", "original": spec_grid(json!([]))}))
            .await
            .unwrap(),
    )
    .await
    .assert_problem(422, Some("workbook"));
    let enc = base64::engine::general_purpose::STANDARD.encode(&xlsx);
    Answer::from(bad(json!({"workbook": enc, "original": original, "key": "nope"})).await.unwrap())
        .await
        .assert_problem(422, Some("key"));
    Answer::from(bad(json!({"workbook": enc, "original": original, "sheet": "Nope"})).await.unwrap())
        .await
        .assert_problem(422, Some("sheet"));
}
