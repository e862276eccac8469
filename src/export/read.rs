//! Readers of the three grid formats. NDJSON and CSV are read as streams — one row in
//! memory at a time — so their memory does not grow with the number of rows. The JSON grid
//! document is one value and is parsed whole; large grids should come as NDJSON or CSV.

use super::model::{Cell, Column, ColumnSpec, ColumnType, GridError, GridMeta, GridOptions, Overflow, Sheet, SheetSpec, Total};
use super::writer::{ExportError, Report, XlsxExport};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, Seek, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

/// The three input formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputFormat {
    /// The grid document of SPEC §3.1 (`application/json`).
    Json,
    /// A sheet header line, then one row per line (`application/x-ndjson`).
    Ndjson,
    /// A header row, then records (`text/csv`).
    Csv,
}

impl InputFormat {
    /// The format a file name's extension implies.
    pub fn from_path(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "json" => Some(Self::Json),
            "ndjson" | "jsonl" => Some(Self::Ndjson),
            "csv" => Some(Self::Csv),
            _ => None,
        }
    }

    /// The format a media type names (parameters ignored).
    pub fn from_media_type(media: &str) -> Option<Self> {
        match media.split(';').next()?.trim().to_ascii_lowercase().as_str() {
            "application/json" => Some(Self::Json),
            "application/x-ndjson" | "application/ndjson" | "application/jsonl" => Some(Self::Ndjson),
            "text/csv" => Some(Self::Csv),
            _ => None,
        }
    }
}

/// The top-level options and properties, shared by the grid document and the NDJSON header.
#[derive(Debug, Default, Deserialize)]
struct MetaFields {
    title: Option<String>,
    author: Option<String>,
    company: Option<String>,
    #[serde(default)]
    overflow: Overflow,
    #[serde(default)]
    truncate: bool,
    #[serde(default)]
    table: bool,
}

impl MetaFields {
    fn into_meta(self) -> GridMeta {
        GridMeta {
            title: self.title,
            author: self.author,
            company: self.company,
            options: GridOptions {
                overflow: self.overflow,
                truncate: self.truncate,
                table: self.table,
            },
        }
    }
}

/// The grid document (SPEC §3.1).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GridDocument {
    title: Option<String>,
    author: Option<String>,
    company: Option<String>,
    #[serde(default)]
    overflow: Overflow,
    #[serde(default)]
    truncate: bool,
    #[serde(default)]
    table: bool,
    pub sheets: Vec<SheetDocument>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SheetDocument {
    name: Option<String>,
    columns: Vec<ColumnSpec>,
    #[serde(default)]
    totals: BTreeMap<String, Total>,
    #[serde(default)]
    pub rows: Vec<Value>,
}

impl SheetDocument {
    pub fn spec(&self) -> SheetSpec {
        SheetSpec {
            name: self.name.clone(),
            columns: self.columns.clone(),
            totals: self.totals.clone(),
        }
    }
}

/// The NDJSON header line: the sheet declaration plus the grid's options.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NdjsonHeader {
    title: Option<String>,
    author: Option<String>,
    company: Option<String>,
    #[serde(default)]
    overflow: Overflow,
    #[serde(default)]
    truncate: bool,
    #[serde(default)]
    table: bool,
    name: Option<String>,
    columns: Vec<ColumnSpec>,
    #[serde(default)]
    totals: BTreeMap<String, Total>,
}

/// Converts one JSON row (an array in column order, or an object keyed by column key).
pub fn json_row(columns: &[Column], row: &Value, at: &str) -> Result<Vec<Cell>, GridError> {
    let cell = |c: &Column, v: &Value| c.from_json(v).map_err(|m| GridError::new(format!("{at}.{}", c.key), m));
    match row {
        Value::Array(values) => {
            if values.len() != columns.len() {
                return Err(GridError::new(
                    at,
                    format!("has {} cells; the sheet has {} columns", values.len(), columns.len()),
                ));
            }
            columns.iter().zip(values).map(|(c, v)| cell(c, v)).collect()
        }
        Value::Object(map) => {
            if let Some(unknown) = map.keys().find(|k| !columns.iter().any(|c| &c.key == *k)) {
                return Err(GridError::new(format!("{at}.{unknown}"), "names no column of this sheet"));
            }
            columns
                .iter()
                .map(|c| map.get(&c.key).map_or(Ok(Cell::Empty), |v| cell(c, v)))
                .collect()
        }
        _ => Err(GridError::new(
            at,
            "a row must be an array in column order or an object keyed by column key",
        )),
    }
}

/// Describes a serde_json error without its position suffix (the field path says where).
fn json_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    text.split(" at line ").next().unwrap_or(&text).to_string()
}

/// Options for one export.
#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    /// Column types for CSV (`Name=type[:arg…],…`); missing ones are inferred.
    pub columns: Option<String>,
    /// Sheet name for CSV input.
    pub sheet_name: Option<String>,
    /// Title, when the input carries none (CSV).
    pub title: Option<String>,
    /// Where constant-memory mode keeps its per-sheet temporary files.
    pub tempdir: Option<std::path::PathBuf>,
    /// Rows per sheet, header included (Excel's limit unless lowered for tests).
    pub max_rows: Option<u32>,
}

fn new_export(meta: GridMeta, opts: &ExportOptions, progress: Arc<AtomicU64>) -> Result<XlsxExport, ExportError> {
    let mut export = XlsxExport::new(meta);
    export.set_progress(progress);
    if let Some(dir) = &opts.tempdir {
        export.set_tempdir(dir)?;
    }
    if let Some(rows) = opts.max_rows {
        export.set_max_rows(rows);
    }
    Ok(export)
}

/// Reads a grid in `format` from `input` and writes the workbook to `out`. `progress`
/// counts rows as they are written.
///
/// # Errors
///
/// [`ExportError::Grid`] names the field, line or cell at fault; the other variants are
/// I/O failures. On error, what was written to `out` is not a workbook and must be discarded.
pub fn export<R: BufRead, W: Write + Seek + Send>(
    format: InputFormat,
    input: R,
    out: W,
    opts: &ExportOptions,
    progress: Arc<AtomicU64>,
) -> Result<Report, ExportError> {
    match format {
        InputFormat::Json => export_json(input, out, opts, progress),
        InputFormat::Ndjson => export_ndjson(input, out, opts, progress),
        InputFormat::Csv => export_csv(input, out, opts, progress),
    }
}

/// Parses a grid document, naming the field at fault.
pub fn parse_grid_document<R: std::io::Read>(input: R) -> Result<GridDocument, GridError> {
    let mut de = serde_json::Deserializer::from_reader(input);
    let doc: GridDocument = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let inner = e.inner();
        if inner.is_syntax() || inner.is_eof() {
            GridError::new("body", format!("is not valid JSON: {inner}"))
        } else {
            let path = e.path().to_string();
            GridError::new(if path == "." { "body".to_string() } else { path }, json_message(inner))
        }
    })?;
    de.end().map_err(|e| GridError::new("body", format!("is not valid JSON: {e}")))?;
    if doc.sheets.is_empty() {
        return Err(GridError::new("sheets", "must contain at least one sheet"));
    }
    Ok(doc)
}

fn export_json<R: BufRead, W: Write + Seek + Send>(
    input: R,
    out: W,
    opts: &ExportOptions,
    progress: Arc<AtomicU64>,
) -> Result<Report, ExportError> {
    let doc = parse_grid_document(input)?;
    let meta = MetaFields {
        title: doc.title.clone().or_else(|| opts.title.clone()),
        author: doc.author.clone(),
        company: doc.company.clone(),
        overflow: doc.overflow,
        truncate: doc.truncate,
        table: doc.table,
    };
    // Every sheet is checked before anything is written, so a bad last sheet costs nothing.
    let sheets: Vec<Sheet> = doc
        .sheets
        .iter()
        .enumerate()
        .map(|(i, s)| s.spec().check(&format!("sheets[{i}]."), &format!("Sheet{}", i + 1)))
        .collect::<Result<_, _>>()?;
    let mut export = new_export(meta.into_meta(), opts, progress)?;
    for (i, (sheet, sdoc)) in sheets.iter().zip(&doc.sheets).enumerate() {
        let locate = move |r: u64| format!("sheets[{i}].rows[{r}]");
        let rows = sdoc
            .rows
            .iter()
            .enumerate()
            .map(|(r, row)| json_row(&sheet.columns, row, &locate(r as u64)));
        export.write_sheet(sheet, rows, &locate)?;
    }
    export.save(out)
}

fn export_ndjson<R: BufRead, W: Write + Seek + Send>(
    mut input: R,
    out: W,
    opts: &ExportOptions,
    progress: Arc<AtomicU64>,
) -> Result<Report, ExportError> {
    let mut line = String::new();
    let mut number: u64 = 0;
    // The header is the first line that is not blank.
    let header: NdjsonHeader = loop {
        line.clear();
        number += 1;
        if input.read_line(&mut line)? == 0 {
            return Err(GridError::new("line[1]", "the input is empty; the first line must be the sheet header").into());
        }
        if !line.trim().is_empty() {
            break serde_json::from_str(&line).map_err(|e| {
                GridError::new(
                    format!("line[{number}]"),
                    format!("is not a valid sheet header ({})", json_message(&e)),
                )
            })?;
        }
    };
    let spec = SheetSpec {
        name: header.name.clone(),
        columns: header.columns,
        totals: header.totals,
    };
    let sheet = spec
        .check("", "Sheet1")
        .map_err(|e| GridError::new(format!("line[{number}].{}", e.field), e.message))?;
    let meta = MetaFields {
        title: header.title.or_else(|| opts.title.clone()),
        author: header.author,
        company: header.company,
        overflow: header.overflow,
        truncate: header.truncate,
        table: header.table,
    };
    let mut export = new_export(meta.into_meta(), opts, progress)?;
    // Data row r (0-based) sits on a line number only this iterator knows; it records it.
    let line_of = std::cell::Cell::new(number);
    let rows = std::iter::from_fn(|| {
        loop {
            line.clear();
            number += 1;
            match input.read_line(&mut line) {
                Ok(0) => return None,
                Ok(_) if line.trim().is_empty() => continue,
                Ok(_) => {}
                Err(e) => return Some(Err(GridError::new(format!("line[{number}]"), format!("could not be read: {e}")))),
            }
            line_of.set(number);
            let at = format!("line[{number}]");
            return Some(
                serde_json::from_str::<Value>(&line)
                    .map_err(|e| GridError::new(&at, format!("is not valid JSON: {}", json_message(&e))))
                    .and_then(|v| json_row(&sheet.columns, &v, &at)),
            );
        }
    });
    export.write_sheet(&sheet, rows, &|_| format!("line[{}]", line_of.get()))?;
    export.save(out)
}

/// Parses a column spec: `Name=type[:arg[:arg]]`, comma-separated. Arguments: currency code
/// and decimals for `currency` (`price=currency:USD:2`), decimals for `decimal` and
/// `percent` (`rate=percent:1`). A name alone means "infer the type".
pub fn parse_column_spec(spec: &str) -> Result<Vec<(String, Option<ColumnSpec>)>, GridError> {
    let mut out = Vec::new();
    for (i, item) in spec.split(',').map(str::trim).filter(|s| !s.is_empty()).enumerate() {
        let field = format!("columns[{i}]");
        let (name, ty) = match item.split_once('=') {
            Some((n, t)) => (n.trim(), Some(t.trim())),
            None => (item, None),
        };
        if name.is_empty() {
            return Err(GridError::new(field, format!("'{item}' has no column name")));
        }
        let Some(ty) = ty else {
            out.push((name.to_string(), None));
            continue;
        };
        let mut parts = ty.split(':');
        let kind = ColumnType::parse(parts.next().unwrap_or("")).map_err(|m| GridError::new(&field, m))?;
        let args: Vec<&str> = parts.collect();
        let decimals = |s: &str| {
            s.parse::<u8>()
                .map_err(|_| GridError::new(&field, format!("'{s}' is not a number of decimals")))
        };
        let (currency, decimals) = match (kind, args.as_slice()) {
            (_, []) => (None, None),
            (ColumnType::Currency, [code]) => (Some(code.to_string()), None),
            (ColumnType::Currency, [code, d]) => (Some(code.to_string()), Some(decimals(d)?)),
            (ColumnType::Decimal | ColumnType::Percent, [d]) => (None, Some(decimals(d)?)),
            _ => return Err(GridError::new(field, format!("'{ty}' has arguments its type does not take"))),
        };
        out.push((
            name.to_string(),
            Some(ColumnSpec {
                key: name.to_string(),
                header: None,
                kind: kind.as_str().into(),
                currency,
                decimals,
                width: None,
            }),
        ));
    }
    Ok(out)
}

/// How many CSV records are looked at to infer column types.
const INFER_ROWS: usize = 1000;

/// Guesses a column's type from sample values: the narrowest type all non-empty values fit.
/// A number with a leading zero (`00123`) is text: ERP codes must keep their zeros.
fn infer_type(values: &[&str]) -> ColumnType {
    let present: Vec<&str> = values.iter().copied().filter(|v| !v.trim().is_empty()).collect();
    if present.is_empty() {
        return ColumnType::Text;
    }
    let probe = Column {
        key: String::new(),
        header: String::new(),
        kind: ColumnType::Text,
        currency: None,
        decimals: 2,
        width: None,
    };
    let fits = |kind: ColumnType| {
        let c = Column { kind, ..probe.clone() };
        present.iter().all(|v| c.from_text(v).is_ok())
    };
    let leading_zero = present.iter().any(|v| {
        let t = v.trim().trim_start_matches('-');
        t.len() > 1 && t.starts_with('0') && !t.starts_with("0.")
    });
    if present
        .iter()
        .all(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "false"))
    {
        ColumnType::Boolean
    } else if !leading_zero && fits(ColumnType::Integer) {
        ColumnType::Integer
    } else if !leading_zero && fits(ColumnType::Decimal) {
        ColumnType::Decimal
    } else if fits(ColumnType::Date) {
        ColumnType::Date
    } else if present.iter().all(|v| v.len() > 10) && fits(ColumnType::Datetime) {
        ColumnType::Datetime
    } else if present
        .iter()
        .all(|v| super::model::is_safe_url(v) && !v.contains(char::is_whitespace))
    {
        ColumnType::Hyperlink
    } else {
        ColumnType::Text
    }
}

/// The CSV sheet's columns: the header row's names, typed by the spec or inferred.
fn csv_columns(headers: &csv::StringRecord, spec: Option<&str>, sample: &[csv::StringRecord]) -> Result<Vec<ColumnSpec>, GridError> {
    let given = spec.map(parse_column_spec).transpose()?.unwrap_or_default();
    for (i, (name, _)) in given.iter().enumerate() {
        if !headers.iter().any(|h| h == name) {
            return Err(GridError::new(
                format!("columns[{i}]"),
                format!("'{name}' is not a column of the CSV header"),
            ));
        }
    }
    Ok(headers
        .iter()
        .enumerate()
        .map(|(c, h)| match given.iter().find(|(n, _)| n == h).and_then(|(_, s)| s.clone()) {
            Some(s) => s,
            None => {
                let values: Vec<&str> = sample.iter().map(|r| r.get(c).unwrap_or("")).collect();
                ColumnSpec {
                    key: h.to_string(),
                    header: None,
                    kind: infer_type(&values).as_str().into(),
                    currency: None,
                    decimals: None,
                    width: None,
                }
            }
        })
        .collect())
}

fn csv_row(columns: &[Column], record: &csv::StringRecord, line: u64) -> Result<Vec<Cell>, GridError> {
    if record.len() != columns.len() {
        return Err(GridError::new(
            format!("line[{line}]"),
            format!("has {} fields; the header has {}", record.len(), columns.len()),
        ));
    }
    columns
        .iter()
        .zip(record.iter())
        .map(|(c, v)| c.from_text(v).map_err(|m| GridError::new(format!("line[{line}].{}", c.key), m)))
        .collect()
}

fn export_csv<R: BufRead, W: Write + Seek + Send>(
    input: R,
    out: W,
    opts: &ExportOptions,
    progress: Arc<AtomicU64>,
) -> Result<Report, ExportError> {
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(input);
    let csv_error = |e: csv::Error| {
        let line = e.position().map_or(0, |p| p.line());
        GridError::new(format!("line[{line}]"), format!("is not valid CSV: {e}"))
    };
    let headers = reader.headers().map_err(csv_error)?.clone();
    if headers.is_empty() || headers.iter().all(str::is_empty) {
        return Err(GridError::new("line[1]", "the first line must be the header row").into());
    }
    // The first records are held back to infer types, then written like the rest.
    let mut sample = Vec::new();
    let mut records = reader.records();
    for record in records.by_ref().take(INFER_ROWS) {
        sample.push(record.map_err(csv_error)?);
    }
    let spec = SheetSpec {
        name: opts.sheet_name.clone(),
        columns: csv_columns(&headers, opts.columns.as_deref(), &sample)?,
        totals: BTreeMap::new(),
    };
    let sheet = spec.check("", "Sheet1")?;
    let meta = MetaFields {
        title: opts.title.clone(),
        ..Default::default()
    };
    let mut export = new_export(meta.into_meta(), opts, progress)?;
    let line_of = std::cell::Cell::new(1u64);
    let rows = sample.into_iter().map(Ok).chain(records.map(|r| r.map_err(csv_error))).map(|r| {
        let record = r?;
        let line = record.position().map_or(0, |p| p.line());
        line_of.set(line);
        csv_row(&sheet.columns, &record, line)
    });
    export.write_sheet(&sheet, rows, &|_| format!("line[{}]", line_of.get()))?;
    export.save(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_specs_parse_with_arguments() {
        let cols = parse_column_spec("Order=text, Price=currency:EUR:3,Rate=percent:1,Qty").unwrap();
        assert_eq!(cols.len(), 4);
        let price = cols[1].1.as_ref().unwrap();
        assert_eq!(
            (price.kind.as_str(), price.currency.as_deref(), price.decimals),
            ("currency", Some("EUR"), Some(3))
        );
        assert!(cols[3].1.is_none());
        assert_eq!(parse_column_spec("a=money").unwrap_err().field, "columns[0]");
        assert!(parse_column_spec("a=text:5").is_err());
    }

    #[test]
    fn inference_keeps_leading_zeros_as_text() {
        assert_eq!(infer_type(&["1", "2", ""]), ColumnType::Integer);
        assert_eq!(infer_type(&["1.5", "2"]), ColumnType::Decimal);
        assert_eq!(infer_type(&["00123", "00456"]), ColumnType::Text);
        assert_eq!(infer_type(&["0.5", "0"]), ColumnType::Decimal);
        assert_eq!(infer_type(&["2026-01-01"]), ColumnType::Date);
        assert_eq!(infer_type(&["2026-01-01T10:00:00"]), ColumnType::Datetime);
        assert_eq!(infer_type(&["true", "FALSE"]), ColumnType::Boolean);
        assert_eq!(infer_type(&["https://a.example/x"]), ColumnType::Hyperlink);
        assert_eq!(infer_type(&["", ""]), ColumnType::Text);
    }

    #[test]
    fn json_rows_as_arrays_and_objects() {
        let spec: SheetSpec =
            serde_json::from_value(serde_json::json!({"columns": [{"key": "a", "type": "integer"}, {"key": "b", "type": "text"}]}))
                .unwrap();
        let sheet = spec.check("", "S").unwrap();
        assert_eq!(
            json_row(&sheet.columns, &serde_json::json!([1, "x"]), "r").unwrap(),
            vec![Cell::Number(1.0), Cell::Text("x".into())]
        );
        assert_eq!(
            json_row(&sheet.columns, &serde_json::json!({"b": "y"}), "r").unwrap(),
            vec![Cell::Empty, Cell::Text("y".into())]
        );
        assert_eq!(
            json_row(&sheet.columns, &serde_json::json!({"c": 1}), "r").unwrap_err().field,
            "r.c"
        );
        assert_eq!(
            json_row(&sheet.columns, &serde_json::json!(["x", "y"]), "r").unwrap_err().field,
            "r.a"
        );
        assert_eq!(json_row(&sheet.columns, &serde_json::json!([1]), "r").unwrap_err().field, "r");
    }
}
