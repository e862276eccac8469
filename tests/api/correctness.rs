//! Issue 19: grids written or read back wrong without a word. Each test reproduces one
//! defect; workbooks are read back by calamine, not by our own importer, where the workbook
//! itself is in question.

use crate::helpers::{Answer, Backend, TestApp, spawn_app};
use base64::Engine;
use calamine::{Data, Reader, Xlsx};
use serde_json::{Value, json};
use std::io::{Cursor, Read};

async fn app() -> TestApp {
    spawn_app(Backend::Sqlite).await.unwrap()
}

async fn export(app: &TestApp, content_type: &str, body: impl Into<reqwest::Body>, query: &str) -> (u16, Vec<u8>, Value) {
    let r = app.client_post(&format!("/api/v1/exports{query}"), content_type, body, &[]).await;
    let status = r.status().as_u16();
    let bytes = r.bytes().await.unwrap().to_vec();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, bytes, json)
}

fn cells(xlsx: &[u8], sheet: &str) -> calamine::Range<Data> {
    let mut book: Xlsx<_> = Xlsx::new(Cursor::new(xlsx.to_vec())).unwrap();
    book.worksheet_range(sheet).unwrap()
}

fn zip_part(xlsx: &[u8], name: &str) -> String {
    let mut archive = zip::ZipArchive::new(Cursor::new(xlsx)).unwrap();
    let mut text = String::new();
    archive.by_name(name).unwrap().read_to_string(&mut text).unwrap();
    text
}

async fn import(app: &TestApp, body: Value) -> Answer {
    app.client_post_json("/api/v1/imports", &body).await
}

fn b64(xlsx: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(xlsx)
}

/// Item 1: long numeric ids stay exactly what they were.
#[tokio::test]
async fn long_ids_are_never_rounded() {
    let app = app().await;
    let (status, xlsx, _) = export(
        &app,
        "text/csv",
        "Id,Qty\n9007199254740993,1\n12345678901234567890,2\n",
        "?sheet=Ids",
    )
    .await;
    assert_eq!(status, 200);
    let range = cells(&xlsx, "Ids");
    assert_eq!(range.get_value((1, 0)), Some(&Data::String("9007199254740993".into())));
    assert_eq!(range.get_value((2, 0)), Some(&Data::String("12345678901234567890".into())));
    assert_eq!(range.get_value((1, 1)), Some(&Data::Float(1.0)), "short numbers are still numbers");
    // Part numbers in scientific notation are codes.
    let (_, xlsx, _) = export(&app, "text/csv", "Part,Qty\n1E5,1\n2E10,2\n", "?sheet=Parts").await;
    assert_eq!(cells(&xlsx, "Parts").get_value((1, 0)), Some(&Data::String("1E5".into())));
    // A JSON number a double cannot hold in a currency column is refused, naming the cell.
    let grid = r#"{"sheets":[{"columns":[{"key":"id","type":"currency","currency":"EUR"}],"rows":[[1],[9007199254740993]]}]}"#;
    let (status, _, problem) = export(&app, "application/json", grid, "").await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "sheets[0].rows[1].id");
    // The same id as text in a text column is kept exactly.
    let grid = r#"{"sheets":[{"name":"T","columns":[{"key":"id","type":"text"}],"rows":[[9007199254740993]]}]}"#;
    let (status, xlsx, _) = export(&app, "application/json", grid, "").await;
    assert_eq!(status, 200);
    assert_eq!(cells(&xlsx, "T").get_value((1, 0)), Some(&Data::String("9007199254740993".into())));
    // A declared decimal column refuses text it would round.
    let (status, _, problem) = export(&app, "text/csv", "Id\n12345678901234567890\n", "?columns=Id=decimal").await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "line[2].Id");
}

/// Item 2: with `\r\n` line ends, errors name the line at fault, not the one before.
#[tokio::test]
async fn crlf_errors_name_the_right_line() {
    let app = app().await;
    for ends in ["\n", "\r\n"] {
        let csv = ["a,b", "1,2", "3,4", "5,x"].join(ends) + ends;
        let (status, _, problem) = export(&app, "text/csv", csv, "?columns=b=integer").await;
        assert_eq!(status, 422);
        assert_eq!(problem["errors"][0]["field"], "line[4].b", "line ends {ends:?}");
        let csv = ["a,b", "1,2", "3"].join(ends) + ends;
        let (_, _, problem) = export(&app, "text/csv", csv, "").await;
        assert_eq!(problem["errors"][0]["field"], "line[3]", "line ends {ends:?}");
    }
}

/// Item 3: spaces around a link are trimmed before it is judged and written.
#[tokio::test]
async fn links_with_spaces_are_trimmed() {
    let app = app().await;
    let grid = json!({"sheets": [{"name": "L", "columns": [{"key": "link", "type": "hyperlink"}],
        "rows": [["  https://lead.example.com/so/7 "], ["javascript:alert(1)"]]}]});
    let (status, xlsx, _) = export(&app, "application/json", grid.to_string(), "").await;
    assert_eq!(status, 200);
    let rels = zip_part(&xlsx, "xl/worksheets/_rels/sheet1.xml.rels");
    assert!(rels.contains("Target=\"https://lead.example.com/so/7\""), "{rels}");
    assert!(!rels.contains("%20"), "{rels}");
    assert_eq!(rels.matches("<Relationship ").count(), 1, "javascript: stays text: {rels}");
}

/// Item 4: a `count` total over text and booleans caches the real count (readers without a
/// calculation engine showed 0).
#[tokio::test]
async fn count_totals_count_text_and_booleans() {
    let app = app().await;
    let grid = json!({"sheets": [{"name": "C",
        "columns": [{"key": "order", "type": "text"}, {"key": "ok", "type": "boolean"}, {"key": "qty", "type": "integer"}],
        "totals": {"order": "count", "ok": "count", "qty": "count"},
        "rows": [["SO-1", true, 1], ["SO-2", null, null], ["SO-3", false, 3]]}]});
    let (status, xlsx, _) = export(&app, "application/json", grid.to_string(), "").await;
    assert_eq!(status, 200);
    let range = cells(&xlsx, "C");
    let totals: Vec<Option<&Data>> = (0..3).map(|c| range.get_value((4, c))).collect();
    assert_eq!(
        totals,
        vec![Some(&Data::Float(3.0)), Some(&Data::Float(2.0)), Some(&Data::Float(2.0))]
    );
}

/// Item 5: a `mailto:` link shows the value as given, so the same workbook imports as no change.
#[tokio::test]
async fn mailto_links_round_trip() {
    let app = app().await;
    let grid = json!({"sheets": [{"name": "M", "columns": [{"key": "id", "type": "text"}, {"key": "mail", "type": "hyperlink"}],
        "rows": [["A", "mailto:ap@example.com"]]}]});
    let (_, xlsx, _) = export(&app, "application/json", grid.to_string(), "").await;
    assert_eq!(
        cells(&xlsx, "M").get_value((1, 1)),
        Some(&Data::String("mailto:ap@example.com".into()))
    );
    let a = import(&app, json!({"workbook": b64(&xlsx), "key": "id", "original": grid})).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json["changes"], json!({"added": [], "changed": [], "deleted": []}));
}

/// Item 6: rows a user adds below the totals row are data; the totals row is not.
#[tokio::test]
async fn rows_below_the_totals_row_are_data() {
    let app = app().await;
    let mut book = rust_xlsxwriter::Workbook::new();
    let ws = book.add_worksheet().set_name("Orders").unwrap();
    for (r, (order, qty)) in [("order", "qty"), ("SO-1", "1"), ("SO-2", "2")].iter().enumerate() {
        ws.write_string(r as u32, 0, *order).unwrap();
        if r == 0 {
            ws.write_string(0, 1, *qty).unwrap();
        } else {
            ws.write_number(r as u32, 1, qty.parse::<f64>().unwrap()).unwrap();
        }
    }
    // The exporter's totals row, then a row the user typed under it.
    ws.write_string(3, 0, "Total").unwrap();
    ws.write_formula(3, 1, rust_xlsxwriter::Formula::new("SUBTOTAL(109,B2:B3)").set_result("3"))
        .unwrap();
    ws.write_string(4, 0, "SO-5").unwrap();
    ws.write_number(4, 1, 5.0).unwrap();
    let xlsx = book.save_to_buffer().unwrap();
    let original = json!({"sheets": [{"name": "Orders", "columns": [{"key": "order", "type": "text"}, {"key": "qty", "type": "integer"}],
        "totals": {"qty": "sum"}, "rows": [["SO-1", 1], ["SO-2", 2]]}]});
    let a = import(&app, json!({"workbook": b64(&xlsx), "key": "order", "original": original})).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json["changes"]["added"], json!([{"order": "SO-5", "qty": 5}]), "{}", a.text);
    assert!(a.json["problems"].as_array().unwrap().is_empty(), "{}", a.text);
    assert_eq!(a.json["rows"].as_array().unwrap().len(), 3);
}

/// Item 7: a sheet whose name the exporter had to clean is found by either name, and a name
/// that matches no sheet of the original is an error, never another sheet's columns.
#[tokio::test]
async fn cleaned_sheet_names_import_against_their_original() {
    let app = app().await;
    let grid = json!({"sheets": [
        {"name": "Orders", "columns": [{"key": "order", "type": "text"}], "rows": [["SO-1"]]},
        {"name": "Stock 2026/Q1", "columns": [{"key": "sku", "type": "text"}, {"key": "qty", "type": "integer"}], "rows": [["A-1", 5]]}
    ]});
    let (_, xlsx, _) = export(&app, "application/json", grid.to_string(), "").await;
    for sheet in ["Stock 2026_Q1", "Stock 2026/Q1", "stock 2026_q1"] {
        let a = import(
            &app,
            json!({"workbook": b64(&xlsx), "sheet": sheet, "key": "sku", "original": grid}),
        )
        .await;
        assert_eq!(a.status, 200, "{sheet}: {}", a.text);
        assert_eq!(a.json["sheet"], "Stock 2026_Q1");
        assert_eq!(a.json["changes"], json!({"added": [], "changed": [], "deleted": []}), "{sheet}");
    }
    let a = import(
        &app,
        json!({"workbook": b64(&xlsx), "sheet": "Nope", "key": "sku", "original": grid}),
    )
    .await;
    a.assert_problem(422, Some("sheet"));
}

/// Item 8: a cell that does not parse is a problem, not also a change to empty.
#[tokio::test]
async fn a_problem_cell_is_not_a_change() {
    let app = app().await;
    let mut book = rust_xlsxwriter::Workbook::new();
    let ws = book.add_worksheet().set_name("P").unwrap();
    ws.write_string(0, 0, "order").unwrap();
    ws.write_string(0, 1, "price").unwrap();
    ws.write_string(0, 2, "qty").unwrap();
    ws.write_string(1, 0, "SO-1").unwrap();
    ws.write_string(1, 1, "twelve").unwrap();
    ws.write_number(1, 2, 4.0).unwrap();
    let xlsx = book.save_to_buffer().unwrap();
    let original = json!({"sheets": [{"name": "P", "columns": [{"key": "order", "type": "text"},
        {"key": "price", "type": "decimal"}, {"key": "qty", "type": "integer"}], "rows": [["SO-1", 12.5, 3]]}]});
    let a = import(&app, json!({"workbook": b64(&xlsx), "key": "order", "original": original})).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json["problems"][0]["column"], "price");
    assert_eq!(
        a.json["changes"]["changed"],
        json!([{"key": "SO-1", "fields": {"qty": {"from": 3, "to": 4}}, "problems": true}])
    );
}

/// Item 9: a byte order mark before JSON or NDJSON is accepted, as before CSV; a table column
/// with an empty header has the same name in its cell and in the table.
#[tokio::test]
async fn boms_and_empty_table_headers() {
    let app = app().await;
    let grid = "\u{feff}{\"sheets\":[{\"columns\":[{\"key\":\"a\",\"type\":\"text\"}],\"rows\":[[\"x\"]]}]}";
    assert_eq!(export(&app, "application/json", grid, "").await.0, 200);
    let nd = "\u{feff}{\"columns\":[{\"key\":\"a\",\"type\":\"text\"}]}\n[\"x\"]\n";
    assert_eq!(export(&app, "application/x-ndjson", nd, "").await.0, 200);
    let grid = json!({"table": true, "sheets": [{"name": "T", "columns": [{"key": "a", "type": "text", "header": ""}, {"key": "b", "type": "text"}],
        "rows": [["x", "y"]]}]});
    let (status, xlsx, body) = export(&app, "application/json", grid.to_string(), "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(cells(&xlsx, "T").get_value((0, 0)), Some(&Data::String("Column1".into())));
    let table = zip_part(&xlsx, "xl/tables/table1.xml");
    assert!(table.contains("name=\"Column1\""), "{table}");
}
