//! The export engine on its own and through the CLI: workbook structure, an independent
//! reader (openpyxl), the tricky inputs of issue 3, and the export→import round trip.

use crate::exports::{spec_grid, spec_rows};
use crate::helpers::{python_has, tool_available};
use officebridge::export::import::{ImportRequest, import, import_columns};
use officebridge::export::read::{ExportOptions, InputFormat, export, parse_grid_document};
use officebridge::export::writer::{ExportError, Report};
use serde_json::{Value, json};
use std::io::{Cursor, Read};
use std::process::Command;

fn write(format: InputFormat, input: &[u8], opts: &ExportOptions) -> Result<(Vec<u8>, Report), ExportError> {
    let mut out = Cursor::new(Vec::new());
    let report = export(format, input, &mut out, opts, Default::default())?;
    Ok((out.into_inner(), report))
}

fn write_grid(grid: &Value) -> Result<(Vec<u8>, Report), ExportError> {
    write(InputFormat::Json, grid.to_string().as_bytes(), &ExportOptions::default())
}

fn grid_error(result: Result<(Vec<u8>, Report), ExportError>) -> officebridge::export::model::GridError {
    match result {
        Err(ExportError::Grid(g)) => g,
        other => panic!("expected a grid error, got {:?}", other.map(|(_, r)| r)),
    }
}

fn zip_part(xlsx: &[u8], name: &str) -> String {
    let mut archive = zip::ZipArchive::new(Cursor::new(xlsx)).unwrap();
    let mut text = String::new();
    archive.by_name(name).unwrap().read_to_string(&mut text).unwrap();
    text
}

/// Reads a sheet back with explicit columns.
fn import_sheet(xlsx: Vec<u8>, spec: &str, sheet: Option<&str>) -> officebridge::export::import::ImportResult {
    let (columns, _) = import_columns(Some(spec), None, None, &Default::default()).unwrap();
    import(
        Cursor::new(xlsx),
        &ImportRequest {
            columns: &columns,
            sheet,
            key: None,
            original: None,
            limits: &Default::default(),
            deadline: None,
        },
    )
    .unwrap()
}

#[test]
fn golden_structure_of_the_spec_example() {
    let mut rows = spec_rows();
    rows.as_array_mut()
        .unwrap()
        .push(json!(["=1+1", "2026-11-03", 1, -0.0, 0, false, "javascript:alert(1)"]));
    let (xlsx, report) = write_grid(&spec_grid(rows)).unwrap();
    assert_eq!((report.rows, report.sheets.clone()), (3, vec!["Orders".to_string()]));
    let sheet = zip_part(&xlsx, "xl/worksheets/sheet1.xml");
    assert!(
        sheet.contains(r#"<pane ySplit="1" topLeftCell="A2" activePane="bottomLeft" state="frozen"/>"#),
        "{sheet}"
    );
    assert!(
        sheet.contains(r#"<autoFilter ref="A1:G4"/>"#),
        "the filter covers header and data, not totals"
    );
    assert_eq!(sheet.matches("<col ").count(), 7, "every column gets a width");
    // Strings are inline string cells; the only formulas are the two SUBTOTALs of the totals row.
    assert_eq!(sheet.matches("<f>").count(), 2);
    assert!(sheet.contains("<f>SUBTOTAL(109,C2:C4)</f><v>11</v>"), "cached total: {sheet}");
    assert!(sheet.contains("<t>=1+1</t>") && sheet.contains("<t>javascript:alert(1)</t>"));
    assert!(!sheet.contains("<v>-0</v>"), "no negative zero");
    let core = zip_part(&xlsx, "docProps/core.xml");
    assert!(core.contains("<dc:title>Open sales orders</dc:title>") && core.contains("<dc:creator>jdoe</dc:creator>"));
    let styles = zip_part(&xlsx, "xl/styles.xml");
    for code in ["yyyy-mm-dd", "#,##0", "&quot;$&quot;#,##0.00;-&quot;$&quot;#,##0.00", "0%"] {
        assert!(styles.contains(&format!("formatCode=\"{code}\"")), "{code} missing from {styles}");
    }
    let rels = zip_part(&xlsx, "xl/worksheets/_rels/sheet1.xml.rels");
    assert_eq!(
        rels.matches("TargetMode=\"External\"").count(),
        1,
        "only the https link is a hyperlink"
    );
}

/// Runs openpyxl on a workbook. A missing openpyxl is a skip outside CI and a failure under
/// it; once openpyxl is there, any failure of the script fails the test.
fn openpyxl(xlsx: &[u8]) -> Option<Value> {
    if !python_has("openpyxl") {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("book.xlsx");
    std::fs::write(&path, xlsx).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/readers/openpyxl_dump.py");
    let out = Command::new("python3").arg(script).arg(&path).output().unwrap();
    assert!(
        out.status.success(),
        "openpyxl could not read the workbook: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

#[test]
fn openpyxl_reads_values_types_and_formats() {
    let mut grid = spec_grid(json!([
        ["SO-000123", "2026-11-01", 3, 12.5, 0.1, true, "https://erp.example.com/so/123"],
        ["注文 طلب 📦🚚", "1900-01-01", -4, 1234567.891, 1, false, "mailto:ap@contoso.com"],
        ["+SUM(A1)", "9999-12-31", 0, 0, 0.005, null, "=HYPERLINK(\"http://x\")"]
    ]));
    grid["sheets"].as_array_mut().unwrap().push(json!({
        "name": "Times: Q1/Q2",
        "columns": [
            {"key": "at", "type": "datetime"}, {"key": "t", "type": "time"},
            {"key": "d", "type": "decimal", "decimals": 3}, {"key": "eur", "type": "currency", "currency": "EUR"}
        ],
        "rows": [["2026-11-01T13:45:30", "06:30:00", 2.5, 7]]
    }));
    let (xlsx, _) = write_grid(&grid).unwrap();
    let Some(book) = openpyxl(&xlsx) else { return };
    assert_eq!(book["properties"], json!({"title": "Open sales orders", "creator": "jdoe"}));
    let orders = &book["sheets"]["Orders"];
    assert_eq!(orders["freeze_panes"], "A2");
    assert_eq!(orders["auto_filter"], "A1:G4");
    let r = &orders["rows"];
    assert!(
        r[0].as_array().unwrap().iter().all(|c| c["bold"] == true && c["t"] == "s"),
        "bold text header"
    );
    let cell = |row: usize, col: usize| &r[row][col];
    assert_eq!(
        (cell(1, 0)["v"].as_str(), cell(1, 0)["t"].as_str(), cell(1, 0)["fmt"].as_str()),
        (Some("SO-000123"), Some("s"), Some("@"))
    );
    assert_eq!(
        (cell(1, 1)["v"].as_str(), cell(1, 1)["fmt"].as_str()),
        (Some("2026-11-01T00:00:00"), Some("yyyy-mm-dd"))
    );
    assert_eq!((cell(1, 2)["v"].as_i64(), cell(1, 2)["fmt"].as_str()), (Some(3), Some("#,##0")));
    assert_eq!(
        (cell(1, 3)["v"].as_f64(), cell(1, 3)["fmt"].as_str()),
        (Some(12.5), Some("\"$\"#,##0.00;-\"$\"#,##0.00"))
    );
    assert_eq!((cell(1, 4)["v"].as_f64(), cell(1, 4)["fmt"].as_str()), (Some(0.1), Some("0%")));
    assert_eq!((cell(1, 5)["v"].as_bool(), cell(1, 5)["t"].as_str()), (Some(true), Some("b")));
    assert_eq!(cell(1, 6)["link"], "https://erp.example.com/so/123");
    assert_eq!(cell(2, 0)["v"], "注文 طلب 📦🚚");
    assert_eq!(cell(2, 1)["v"], "1900-01-01T00:00:00");
    assert_eq!(cell(2, 6)["link"], "mailto:ap@contoso.com");
    assert_eq!(
        (cell(3, 0)["v"].as_str(), cell(3, 0)["t"].as_str()),
        (Some("+SUM(A1)"), Some("s")),
        "never a formula"
    );
    assert_eq!((cell(3, 6)["t"].as_str(), cell(3, 6)["link"].as_str()), (Some("s"), None));
    assert_eq!(cell(3, 1)["v"], "9999-12-31T00:00:00");
    assert_eq!(
        (cell(4, 0)["v"].as_str(), cell(4, 2)["v"].as_str(), cell(4, 2)["t"].as_str()),
        (Some("Total"), Some("=SUBTOTAL(109,C2:C4)"), Some("f"))
    );
    assert_eq!(cell(4, 3)["fmt"], "\"$\"#,##0.00;-\"$\"#,##0.00", "totals keep the column's format");

    let times = &book["sheets"]["Times_ Q1_Q2"];
    let t = &times["rows"][1];
    assert_eq!(
        (t[0]["v"].as_str(), t[0]["fmt"].as_str()),
        (Some("2026-11-01T13:45:30"), Some("yyyy-mm-dd hh:mm:ss"))
    );
    assert_eq!((t[1]["v"].as_str(), t[1]["fmt"].as_str()), (Some("06:30:00"), Some("hh:mm:ss")));
    assert_eq!(t[2]["fmt"], "#,##0.000");
    assert_eq!(t[3]["fmt"], "\"€\"#,##0.00;-\"€\"#,##0.00");
}

/// Converts a workbook's first sheet to CSV with LibreOffice, each cell as it displays. A
/// missing LibreOffice is a skip outside CI and a failure under it (scripts/test installs it).
fn libreoffice_csv(xlsx: &[u8]) -> Option<String> {
    if !tool_available(Command::new("soffice").arg("--version").output().is_ok(), "LibreOffice (soffice)") {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let book = dir.path().join("book.xlsx");
    std::fs::write(&book, xlsx).unwrap();
    // A profile of its own, so tests running at once do not share (and lock) one.
    let profile = format!("-env:UserInstallation=file://{}/profile", dir.path().display());
    let out = Command::new("soffice")
        .args([
            profile.as_str(),
            "--headless",
            "--convert-to",
            "csv:Text - txt - csv (StarCalc):44,34,76",
            "--outdir",
        ])
        .arg(dir.path())
        .arg(&book)
        .output()
        .unwrap();
    // soffice exits 0 even when it cannot load the file; the CSV is the proof.
    let csv = std::fs::read_to_string(dir.path().join("book.csv")).unwrap_or_else(|_| {
        panic!(
            "LibreOffice could not open the workbook: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    Some(csv)
}

#[test]
fn libreoffice_opens_a_large_export_and_shows_its_formats() {
    // 50,000 rows: several MiB of sheet XML, so the workbook's parts are deflated in several
    // chunks on several threads (export::repack) before LibreOffice reads them.
    let mut ndjson = String::from(
        r#"{"name":"Orders","columns":[{"key":"id","type":"text"},{"key":"day","type":"date"},{"key":"qty","type":"integer"},{"key":"price","type":"currency","currency":"USD"},{"key":"rate","type":"percent"},{"key":"ok","type":"boolean"},{"key":"note","type":"text"}]}"#,
    );
    ndjson.push('\n');
    let row = |i: u32| {
        let note = if i % 2 == 0 { "注文 طلب 📦" } else { "=1+1" };
        json!([
            format!("SO-{i:06}"),
            format!("2026-{:02}-{:02}", 1 + i % 12, 1 + i % 28),
            i,
            f64::from(i % 1000) / 100.0,
            f64::from(i % 100) / 100.0,
            i % 3 == 0,
            note
        ])
    };
    for i in 0..50_000 {
        ndjson.push_str(&row(i).to_string());
        ndjson.push('\n');
    }
    let (xlsx, report) = write(InputFormat::Ndjson, ndjson.as_bytes(), &ExportOptions::default()).unwrap();
    assert_eq!(report.rows, 50_000);
    assert!(
        zip_part(&xlsx, "xl/worksheets/sheet1.xml").len() > 3 << 20,
        "the sheet spans several chunks"
    );
    let Some(csv) = libreoffice_csv(&xlsx) else { return };
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 50_001, "header and every row");
    assert_eq!(lines[0], "id,day,qty,price,rate,ok,note");
    assert_eq!(lines[1], "SO-000000,2026-01-01,0,$0.00,0%,TRUE,注文 طلب 📦");
    // A formula-like string is shown as itself, not as the 2 a formula would give; integers
    // have their thousands separator.
    assert_eq!(lines[2], "SO-000001,2026-02-02,1,$0.01,1%,FALSE,=1+1");
    assert_eq!(lines[50_000], r#"SO-049999,2026-08-20,"49,999",$9.99,99%,FALSE,=1+1"#);
}

#[test]
fn long_strings_are_refused_or_truncated_and_reported() {
    let grid = |s: &str, truncate: bool| json!({"truncate": truncate, "sheets": [{"columns": [{"key": "id", "type": "integer"}, {"key": "note", "type": "text"}], "rows": [[1, "short"], [2, s]]}]});
    let max = "é".repeat(32_767);
    let (xlsx, report) = write_grid(&grid(&max, false)).unwrap();
    assert!(report.notes.is_empty());
    assert_eq!(
        import_sheet(xlsx, "id=integer,note=text", None).rows[1]["note"]
            .as_str()
            .unwrap()
            .chars()
            .count(),
        32_767
    );

    let over = "x".repeat(40_000);
    let err = grid_error(write_grid(&grid(&over, false)));
    assert_eq!(err.field, "sheets[0].rows[1].note");
    assert!(err.message.contains("40000") && err.message.contains("32767"), "{}", err.message);

    let (xlsx, report) = write_grid(&grid(&over, true)).unwrap();
    assert_eq!(report.notes.len(), 1);
    assert_eq!((report.notes[0].row, report.notes[0].column.as_str()), (2, "note"));
    assert!(report.notes[0].message.contains("truncated from 40000"));
    assert_eq!(
        import_sheet(xlsx, "id=integer,note=text", None).rows[1]["note"]
            .as_str()
            .unwrap()
            .len(),
        32_767
    );
}

#[test]
fn formula_like_and_unicode_strings_stay_text() {
    let tricky = [
        "=1+1",
        "+SUM(A1)",
        "@cmd",
        "-2+3",
        "=HYPERLINK(\"http://evil\")",
        "中文",
        "עִבְרִית",
        "🚀👩‍💻",
        "  padded  ",
        "a\nb",
    ];
    let rows: Vec<Value> = tricky.iter().map(|s| json!([s])).collect();
    let (xlsx, _) = write_grid(&json!({"sheets": [{"columns": [{"key": "s", "type": "text"}], "rows": rows}]})).unwrap();
    assert!(!zip_part(&xlsx, "xl/worksheets/sheet1.xml").contains("<f>"));
    let back = import_sheet(xlsx, "s=text", None);
    let values: Vec<&str> = back.rows.iter().map(|r| r["s"].as_str().unwrap()).collect();
    assert_eq!(values, tricky);
}

#[test]
fn out_of_range_dates_nan_and_negative_zero() {
    let one = |ty: &str, v: Value| json!({"sheets": [{"columns": [{"key": "x", "type": ty}], "rows": [[v]]}]});
    for bad in ["1899-12-31", "1600-01-01", "10000-01-01"] {
        let err = grid_error(write_grid(&one("date", json!(bad))));
        assert_eq!(err.field, "sheets[0].rows[0].x", "{bad}");
    }
    assert!(
        grid_error(write_grid(&one("datetime", json!("0999-01-01T00:00:00"))))
            .message
            .contains("outside Excel's date range")
    );
    let csv = "x\n1.5\nNaN\n";
    let err = grid_error(write(
        InputFormat::Csv,
        csv.as_bytes(),
        &ExportOptions {
            columns: Some("x=decimal".into()),
            ..Default::default()
        },
    ));
    assert_eq!(err.field, "line[3].x");
    assert!(err.message.contains("NaN"));
    let err = grid_error(write(
        InputFormat::Csv,
        b"x\n-inf\n",
        &ExportOptions {
            columns: Some("x=decimal".into()),
            ..Default::default()
        },
    ));
    assert_eq!(err.field, "line[2].x");
    let (xlsx, _) = write_grid(&one("decimal", json!(-0.0))).unwrap();
    let v = &import_sheet(xlsx, "x=decimal", None).rows[0]["x"];
    assert_eq!(serde_json::to_string(v).unwrap(), "0.0", "negative zero is written as zero");
}

#[test]
fn sheet_names_are_cleaned_and_unique() {
    let sheet = |name: &str| json!({"name": name, "columns": [{"key": "a", "type": "text"}], "rows": [["x"]]});
    let doc = json!({"sheets": [sheet("Orders"), sheet("orders"), sheet("History"), sheet("A/B:C*D?[E]"), sheet(&"Long".repeat(10))]});
    let (_, report) = write_grid(&doc).unwrap();
    assert_eq!(
        report.sheets,
        ["Orders", "orders (2)", "History_", "A_B_C_D__E_", "LongLongLongLongLongLongLongLon"]
    );
}

#[test]
fn continuation_sheets_repeat_the_header_and_totals() {
    let rows: Vec<Value> = (1..=7).map(|i| json!([i])).collect();
    let grid = json!({"sheets": [{"name": "Orders", "columns": [{"key": "n", "type": "integer"}], "rows": rows, "totals": {"n": "sum"}}]});
    // 5 rows per sheet: header + 3 data + totals.
    let opts = ExportOptions {
        max_rows: Some(5),
        ..Default::default()
    };
    let (xlsx, report) = write(InputFormat::Json, grid.to_string().as_bytes(), &opts).unwrap();
    assert_eq!(report.sheets, ["Orders", "Orders (2)", "Orders (3)"]);
    assert_eq!(report.rows, 7);
    let third = zip_part(&xlsx, "xl/worksheets/sheet3.xml");
    // The last sheet has the repeated header, one row, and its own total (a one-cell range is `A2`).
    assert!(
        third.contains("<t>n</t>") && third.contains("<f>SUBTOTAL(109,A2)</f><v>7</v>"),
        "{third}"
    );
    let second = import_sheet(xlsx, "n=integer", Some("Orders (2)"));
    assert_eq!(second.rows.iter().map(|r| r["n"].as_i64().unwrap()).collect::<Vec<_>>(), [4, 5, 6]);

    let mut refuse = grid.clone();
    refuse["overflow"] = json!("error");
    let err = grid_error(write(InputFormat::Json, refuse.to_string().as_bytes(), &opts));
    assert_eq!(err.field, "sheets[0].rows[3]");
    assert!(err.message.contains("overflow"));
}

/// 1,048,577 data rows: one more than a sheet holds after its header, at Excel's real limit.
#[test]
fn a_million_rows_continue_on_a_second_sheet() {
    let mut ndjson = String::with_capacity(10 << 20);
    ndjson.push_str("{\"name\":\"Data\",\"columns\":[{\"key\":\"n\",\"type\":\"integer\"}]}\n");
    for i in 1..=1_048_577u32 {
        ndjson.push_str(&i.to_string());
        ndjson.push('\n');
    }
    // A bare number is not a row: rows are arrays or objects.
    let err = grid_error(write(InputFormat::Ndjson, ndjson.as_bytes(), &ExportOptions::default()));
    assert_eq!(err.field, "line[2]");
    let ndjson = ndjson
        .lines()
        .enumerate()
        .map(|(i, l)| if i == 0 { format!("{l}\n") } else { format!("[{l}]\n") })
        .collect::<String>();
    let (xlsx, report) = write(InputFormat::Ndjson, ndjson.as_bytes(), &ExportOptions::default()).unwrap();
    assert_eq!(report.rows, 1_048_577);
    assert_eq!(report.sheets, ["Data", "Data (2)"]);
    let second = import_sheet(xlsx, "n=integer", Some("Data (2)"));
    assert_eq!(
        second.rows.iter().map(|r| r["n"].as_i64().unwrap()).collect::<Vec<_>>(),
        [1_048_576, 1_048_577]
    );
}

#[test]
fn hyperlinks_beyond_excels_limit_become_text() {
    let mut ndjson = String::from("{\"columns\":[{\"key\":\"u\",\"type\":\"hyperlink\"}]}\n");
    for i in 0..65_531 {
        ndjson.push_str(&format!("[\"https://x.example/{i}\"]\n"));
    }
    let (_, report) = write(InputFormat::Ndjson, ndjson.as_bytes(), &ExportOptions::default()).unwrap();
    assert_eq!(report.notes.len(), 1);
    assert_eq!(report.notes[0].row, 65_531);
    assert!(report.notes[0].message.contains("65530 hyperlinks"));
}

#[test]
fn tables_when_asked() {
    let mut grid = spec_grid(spec_rows());
    grid["table"] = json!(true);
    let (xlsx, _) = write_grid(&grid).unwrap();
    if let Some(book) = openpyxl(&xlsx) {
        assert_eq!(book["sheets"]["Orders"]["tables"], json!({"Table1": "A1:G3"}));
        assert_eq!(book["sheets"]["Orders"]["auto_filter"], Value::Null);
    }
    let mut dup = spec_grid(spec_rows());
    dup["table"] = json!(true);
    dup["sheets"][0]["columns"][1]["header"] = json!("Order");
    assert_eq!(grid_error(write_grid(&dup)).field, "table");
}

#[test]
fn import_reports_cells_that_do_not_fit() {
    let grid = json!({"sheets": [{"name": "S", "columns": [{"key": "q", "type": "text"}, {"key": "d", "type": "text"}], "rows": [["4", "2026-01-01"], ["four", "someday"]]}]});
    let (xlsx, _) = write_grid(&grid).unwrap();
    let result = import_sheet(xlsx, "q=integer,d=date,missing=text", None);
    assert_eq!(result.rows[0]["q"], 4);
    assert_eq!(result.rows[0]["d"], "2026-01-01");
    let problems: Vec<(u32, &str, &str)> = result
        .problems
        .iter()
        .map(|p| (p.row, p.column.as_str(), p.value.as_str()))
        .collect();
    assert_eq!(problems, [(1, "missing", ""), (3, "q", "four"), (3, "d", "someday")]);
}

// ----- the CLI ---------------------------------------------------------------------------

fn cli(dir: &std::path::Path, args: &[&str], stdin: Option<&[u8]>) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_officebridge"))
        .current_dir(dir)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(data) = stdin {
        input.write_all(data).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn cli_exports_and_imports() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("orders.json"), spec_grid(spec_rows()).to_string()).unwrap();
    let (ok, _, err) = cli(d, &["export", "orders.json"], None);
    assert!(ok, "{err}");
    assert!(err.contains("wrote 2 rows to orders.xlsx"), "{err}");
    assert_eq!(files(d), ["orders.json", "orders.xlsx"]);

    let ndjson = b"{\"columns\":[{\"key\":\"a\",\"type\":\"integer\"}]}\n[1]\n[2]\n";
    let (ok, _, err) = cli(d, &["export", "-", "--format", "ndjson", "-o", "piped.xlsx"], Some(ndjson));
    assert!(ok, "{err}");
    let (ok, _, err) = cli(d, &["export", "-"], Some(ndjson));
    assert!(!ok && err.contains("--format"), "{err}");

    std::fs::write(d.join("prices.csv"), "Code,Price\n00123,2.5\n").unwrap();
    let (ok, _, err) = cli(d, &["export", "prices.csv", "--columns", "Price=currency:USD:2"], None);
    assert!(ok, "{err}");

    // The operator edits: qty 3 → 5 (written here by exporting the edited grid).
    let mut edited = spec_grid(spec_rows());
    edited["sheets"][0]["rows"][0][2] = json!(5);
    std::fs::write(d.join("edited.json"), edited.to_string()).unwrap();
    assert!(cli(d, &["export", "edited.json"], None).0);
    let (ok, out, err) = cli(d, &["import", "edited.xlsx", "--original", "orders.json", "--key", "order"], None);
    assert!(ok, "{err}");
    let result: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        result["changes"]["changed"],
        json!([{"key": "SO-000123", "fields": {"qty": {"from": 3, "to": 5}}}])
    );
    let (ok, out, _) = cli(d, &["import", "edited.xlsx", "--columns", "Order=text,Qty=integer"], None);
    assert!(ok);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["rows"][0],
        json!({"Order": "SO-000123", "Qty": 5})
    );
}

#[test]
fn cli_errors_exit_non_zero_and_leave_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let before = files(d);
    let bad = spec_grid(json!([["SO-1", "2026-13-01", 1, 1, 0, true, null]]));
    std::fs::write(d.join("bad.json"), bad.to_string()).unwrap();
    let (ok, _, err) = cli(d, &["export", "bad.json"], None);
    assert!(!ok);
    assert!(err.contains("sheets[0].rows[0].date"), "{err}");
    std::fs::write(
        d.join("bad.ndjson"),
        "{\"columns\":[{\"key\":\"a\",\"type\":\"integer\"}]}\n[1]\n{oops\n",
    )
    .unwrap();
    let (ok, _, err) = cli(d, &["export", "bad.ndjson", "-o", "out.xlsx"], None);
    assert!(!ok && err.contains("line[3]"), "{err}");
    let mut expected = before;
    expected.extend(["bad.json".to_string(), "bad.ndjson".to_string()]);
    expected.sort();
    assert_eq!(files(d), expected, "no workbook and no partial file is left behind");
}

// ----- export then import gives back the same typed values (proptest) ---------------------

mod round_trip {
    use super::*;
    use proptest::prelude::*;

    fn date() -> impl Strategy<Value = String> {
        (1900i32..=9999, 1u32..=12, 1u32..=28).prop_map(|(y, m, d)| format!("{y:04}-{m:02}-{d:02}"))
    }

    fn time() -> impl Strategy<Value = String> {
        (0u32..24, 0u32..60, 0u32..60, prop::option::of(1u32..1000)).prop_map(|(h, m, s, ms)| match ms {
            Some(ms) => format!("{h:02}:{m:02}:{s:02}.{ms:03}"),
            None => format!("{h:02}:{m:02}:{s:02}"),
        })
    }

    fn finite() -> impl Strategy<Value = f64> {
        prop_oneof![-1e12f64..1e12, any::<f64>().prop_filter("finite", |x| x.is_finite())]
    }

    /// One row of every column type, as the canonical JSON the importer returns.
    fn row() -> impl Strategy<Value = Vec<Value>> {
        (
            prop::option::of("\\PC{1,40}"),
            prop::option::of(-999_999_999_999_999i64..=999_999_999_999_999),
            prop::option::of(finite()),
            prop::option::of(finite()),
            prop::option::of(finite()),
            prop::option::of(date()),
            prop::option::of((date(), time())),
            prop::option::of(time()),
            prop::option::of(any::<bool>()),
            prop::option::of("[a-z0-9/]{0,30}"),
        )
            .prop_map(|(text, int, dec, cur, pct, d, dt, t, b, link)| {
                let f = |x: Option<f64>| x.map_or(Value::Null, |x| json!(if x == 0.0 { 0.0 } else { x }));
                vec![
                    text.map_or(Value::Null, Value::from),
                    int.map_or(Value::Null, Value::from),
                    f(dec),
                    f(cur),
                    f(pct),
                    d.map_or(Value::Null, Value::from),
                    dt.map_or(Value::Null, |(d, t)| Value::from(format!("{d}T{t}"))),
                    t.map_or(Value::Null, Value::from),
                    b.map_or(Value::Null, Value::from),
                    link.map_or(Value::Null, |p| Value::from(format!("https://erp.example.com/{p}"))),
                ]
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        #[test]
        fn export_then_import_gives_back_the_same_values(rows in prop::collection::vec(row(), 1..12)) {
            let columns = json!([
                {"key": "text", "type": "text"}, {"key": "int", "type": "integer"},
                {"key": "dec", "type": "decimal", "decimals": 4}, {"key": "cur", "type": "currency", "currency": "ZAR"},
                {"key": "pct", "type": "percent"}, {"key": "date", "type": "date"}, {"key": "dt", "type": "datetime"},
                {"key": "time", "type": "time"}, {"key": "bool", "type": "boolean"}, {"key": "link", "type": "hyperlink"}
            ]);
            let grid = json!({"sheets": [{"name": "P", "columns": columns, "rows": rows}]});
            let (xlsx, _) = write_grid(&grid).unwrap();
            let doc = parse_grid_document(grid.to_string().as_bytes()).unwrap();
            let (cols, _) = import_columns(None, Some(&doc), None, &Default::default()).unwrap();
            let back = import(Cursor::new(xlsx), &ImportRequest { columns: &cols, sheet: None, key: None, original: None, limits: &Default::default(), deadline: None }).unwrap();
            prop_assert!(back.problems.is_empty(), "{:?}", back.problems);
            // Rows whose every cell is empty are not data rows in a workbook.
            let expected: Vec<&Vec<Value>> = rows.iter().filter(|r| r.iter().any(|v| !v.is_null())).collect();
            prop_assert_eq!(back.rows.len(), expected.len());
            for (got, want) in back.rows.iter().zip(expected) {
                let got: Vec<&Value> = cols.iter().map(|c| &got[&c.key]).collect();
                prop_assert_eq!(got, want.iter().collect::<Vec<_>>());
            }
        }

        /// Issue 19, item 5: an untouched export imported against its original is no change,
        /// for every column type and both kinds of link (a `mailto:` link was reported as
        /// changed to its bare address), with the totals row the exporter wrote.
        #[test]
        fn an_untouched_export_imports_as_no_change(rows in prop::collection::vec(row(), 1..12), mailto in any::<bool>()) {
            let columns = json!([
                {"key": "id", "type": "text"},
                {"key": "text", "type": "text"}, {"key": "int", "type": "integer"},
                {"key": "dec", "type": "decimal", "decimals": 4}, {"key": "cur", "type": "currency", "currency": "ZAR"},
                {"key": "pct", "type": "percent"}, {"key": "date", "type": "date"}, {"key": "dt", "type": "datetime"},
                {"key": "time", "type": "time"}, {"key": "bool", "type": "boolean"}, {"key": "link", "type": "hyperlink"}
            ]);
            let rows: Vec<Value> = rows
                .into_iter()
                .enumerate()
                .map(|(i, mut r)| {
                    if mailto && let Some(l) = r[9].as_str() {
                        r[9] = Value::from(format!("mailto:ap{}@example.com", l.len()));
                    }
                    let mut row = vec![Value::from(format!("K{i}"))];
                    row.extend(r);
                    Value::Array(row)
                })
                .collect();
            let grid = json!({"sheets": [{"name": "P", "columns": columns, "rows": rows,
                "totals": {"int": "sum", "text": "count", "bool": "count"}}]});
            let (xlsx, _) = write_grid(&grid).unwrap();
            let doc = parse_grid_document(grid.to_string().as_bytes()).unwrap();
            let (cols, original) = import_columns(None, Some(&doc), None, &Default::default()).unwrap();
            let req = ImportRequest { columns: &cols, sheet: None, key: Some("id"), original: original.as_deref(), limits: &Default::default(), deadline: None };
            let back = import(Cursor::new(xlsx), &req).unwrap();
            prop_assert!(back.problems.is_empty(), "{:?}", back.problems);
            let changes = back.changes.unwrap();
            prop_assert!(changes.added.is_empty() && changes.changed.is_empty() && changes.deleted.is_empty(), "{:?}", changes);
        }
    }
}

/// Issue 3's bad inputs through the CLI: each exits non-zero, names the place, leaves no file.
#[test]
fn cli_bad_inputs_name_the_field_and_leave_nothing() {
    let columns = |extra: &str| format!("{{\"key\":\"id\",\"type\":\"integer\"}},{{\"key\":\"when\",\"type\":\"date\"}}{extra}");
    let wide: String = (0..16_385)
        .map(|i| format!("{{\"key\":\"c{i}\",\"type\":\"text\"}}"))
        .collect::<Vec<_>>()
        .join(",");
    let cases: Vec<(&str, String, &str)> = vec![
        ("malformed.json", "{\"sheets\": [".into(), "body"),
        (
            "bad-line.ndjson",
            format!("{{\"columns\":[{}]}}\n[1,\"2026-01-01\"]\n[2,", columns("")),
            "line[3]",
        ),
        (
            "too-many.json",
            format!("{{\"sheets\":[{{\"columns\":[{}],\"rows\":[[1,\"2026-01-01\",3]]}}]}}", columns("")),
            "sheets[0].rows[0]",
        ),
        ("too-few.ndjson", format!("{{\"columns\":[{}]}}\n[1]\n", columns("")), "line[2]"),
        (
            "wrong-type.json",
            format!(
                "{{\"sheets\":[{{\"columns\":[{}],\"rows\":[[\"one\",\"2026-01-01\"]]}}]}}",
                columns("")
            ),
            "sheets[0].rows[0].id",
        ),
        (
            "unknown-type.json",
            format!(
                "{{\"sheets\":[{{\"columns\":[{}],\"rows\":[]}}]}}",
                columns(",{\"key\":\"x\",\"type\":\"money\"}")
            ),
            "sheets[0].columns[2].type",
        ),
        (
            "duplicate-keys.ndjson",
            format!("{{\"columns\":[{}]}}\n", columns(",{\"key\":\"id\",\"type\":\"text\"}")),
            "line[1].columns[2].key",
        ),
        (
            "too-wide.json",
            format!("{{\"sheets\":[{{\"columns\":[{wide}],\"rows\":[]}}]}}"),
            "sheets[0].columns",
        ),
        ("no-sheets.json", "{\"sheets\":[]}".into(), "sheets"),
        ("bad-date.csv", "id,when\n1,2026-02-30\n".into(), "line[2].when"),
    ];
    for (name, content, field) in cases {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join(name), content).unwrap();
        let spec = "id=integer,when=date";
        let args: Vec<&str> = if name.ends_with(".csv") {
            vec!["export", name, "--columns", spec]
        } else {
            vec!["export", name]
        };
        let (ok, _, err) = cli(d, &args, None);
        assert!(!ok, "{name} was accepted");
        assert!(err.contains(field), "{name}: expected {field} in: {err}");
        assert_eq!(files(d), [name.to_string()], "{name}: no workbook and no partial file is left");
    }
}
