//! Reading an edited workbook back (calamine): typed rows, a problem for every cell that does
//! not fit its column, and — given a key column and the original grid — the change set.

use super::model::{Cell, Column, ColumnType, GridError};
use crate::config::ImportSettings;
use calamine::{Data, DataRef, Reader, Xlsx};
use chrono::{Duration, NaiveDate, NaiveTime};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek};
use std::time::Instant;

/// A cell that does not fit its column.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct CellProblem {
    pub sheet: String,
    /// The worksheet row as Excel numbers it (the header is row 1).
    pub row: u32,
    pub column: String,
    /// The cell's content as text.
    pub value: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct FieldChange {
    pub from: Value,
    pub to: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ChangedRow {
    pub key: Value,
    pub fields: BTreeMap<String, FieldChange>,
    /// Set when cells of the row did not fit their columns (listed in `problems`): those
    /// cells are not changes, whatever they hold.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub problems: bool,
}

/// What the edit did to the original grid, by key.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ChangeSet {
    #[schema(value_type = Vec<Object>)]
    pub added: Vec<Map<String, Value>>,
    pub changed: Vec<ChangedRow>,
    pub deleted: Vec<Value>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ImportResult {
    pub sheet: String,
    /// Every data row, keyed by column key, with typed values (dates as `YYYY-MM-DD`).
    #[schema(value_type = Vec<Object>)]
    pub rows: Vec<Map<String, Value>>,
    pub problems: Vec<CellProblem>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes: Option<ChangeSet>,
}

/// The typed JSON value of a cell, the same for a grid's value and a workbook's, so the two
/// compare equal exactly when Excel shows the same thing.
pub fn canonical(cell: &Cell, column: &Column) -> Value {
    match cell {
        Cell::Empty => Value::Null,
        Cell::Text(s) | Cell::Url(s) => Value::String(s.clone()),
        Cell::Bool(b) => Value::Bool(*b),
        Cell::Number(x) if column.kind == ColumnType::Integer => Value::from(*x as i64),
        Cell::Number(x) => serde_json::Number::from_f64(*x).map_or(Value::Null, Value::Number),
        Cell::Serial(x) => Value::String(serial_to_text(*x, column.kind)),
    }
}

/// The date of an Excel serial (the inverse of the writer's, 1900 leap-year bug included).
fn serial_date(days: i64) -> NaiveDate {
    let epoch = NaiveDate::from_ymd_opt(1899, 12, 30).expect("valid");
    // Serials 1–59 are one day later in Excel's calendar than in the real one.
    epoch + Duration::days(if days < 61 { days + 1 } else { days })
}

/// Renders a serial as `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM:SS[.fff]` or `HH:MM:SS[.fff]`,
/// rounded to the millisecond (what a double holds of a time of day).
fn serial_to_text(serial: f64, kind: ColumnType) -> String {
    let total_ms = (serial * 86_400_000.0).round() as i64;
    let (days, ms) = (total_ms.div_euclid(86_400_000), total_ms.rem_euclid(86_400_000));
    let time = NaiveTime::from_num_seconds_from_midnight_opt((ms / 1000) as u32, ((ms % 1000) * 1_000_000) as u32).expect("in range");
    let time_text = if ms % 1000 == 0 {
        time.format("%H:%M:%S").to_string()
    } else {
        time.format("%H:%M:%S%.3f").to_string()
    };
    match kind {
        ColumnType::Time => time_text,
        ColumnType::Datetime => format!("{}T{time_text}", serial_date(days).format("%Y-%m-%d")),
        _ => serial_date(serial.floor() as i64).format("%Y-%m-%d").to_string(),
    }
}

fn data_text(d: &Data) -> String {
    match d {
        Data::Empty => String::new(),
        Data::String(s) | Data::DateTimeIso(s) | Data::DurationIso(s) => s.clone(),
        Data::Float(f) => f.to_string(),
        Data::Int(i) => i.to_string(),
        Data::Bool(b) => if *b { "TRUE" } else { "FALSE" }.into(),
        Data::DateTime(d) => d.as_f64().to_string(),
        Data::Error(e) => e.to_string(),
    }
}

/// Converts a workbook cell to the column's cell type.
fn data_cell(d: &Data, column: &Column) -> Result<Cell, String> {
    use ColumnType as T;
    let number = |x: f64| -> Result<Cell, String> {
        match column.kind {
            T::Integer if x.fract() != 0.0 => Err(format!("{x} is not a whole number")),
            T::Integer | T::Decimal | T::Currency | T::Percent => Ok(Cell::Number(x)),
            T::Date | T::Datetime | T::Time if x >= 0.0 => Ok(Cell::Serial(x)),
            T::Text => Ok(Cell::Text(if x.fract() == 0.0 && x.abs() < 1e15 {
                format!("{}", x as i64)
            } else {
                x.to_string()
            })),
            T::Hyperlink => Ok(Cell::Text(x.to_string())),
            _ => Err(format!("a number is not a valid {} value", column.kind.as_str())),
        }
    };
    match d {
        Data::Empty => Ok(Cell::Empty),
        Data::String(s) | Data::DateTimeIso(s) => column.from_text(s),
        Data::Float(f) => number(*f),
        Data::Int(i) => number(*i as f64),
        Data::DateTime(dt) => number(dt.as_f64()),
        Data::Bool(b) => match column.kind {
            T::Boolean => Ok(Cell::Bool(*b)),
            T::Text => Ok(Cell::Text(if *b { "TRUE" } else { "FALSE" }.into())),
            other => Err(format!("TRUE/FALSE is not a valid {} value", other.as_str())),
        },
        Data::DurationIso(s) => Err(format!("the duration '{s}' is not a valid {} value", column.kind.as_str())),
        Data::Error(e) => Err(format!("the cell holds the Excel error {e}")),
    }
}

/// A grid's rows as typed cells.
pub type Rows = Vec<Vec<Cell>>;

/// What to import.
pub struct ImportRequest<'a> {
    pub columns: &'a [Column],
    /// The sheet to read; the first one when `None`.
    pub sheet: Option<&'a str>,
    /// The key column, for the change set.
    pub key: Option<&'a str>,
    /// The original grid's rows (as exported), for the change set.
    pub original: Option<&'a [Vec<Cell>]>,
    /// What the workbook may hold.
    pub limits: &'a ImportSettings,
    /// When to give up (checked between parts and every few thousand cells).
    pub deadline: Option<Instant>,
}

/// Why an import was refused.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The workbook or the request is at fault: a 422 naming the field.
    #[error(transparent)]
    Grid(#[from] GridError),
    /// The workbook holds more than a bound of [`ImportSettings`] allows: a 413 naming it.
    #[error("{message}")]
    TooLarge { field: String, message: String },
    /// The import ran past its deadline of `secs` seconds.
    #[error("the import did not finish within {secs} seconds")]
    Deadline { secs: u64 },
}

fn too_large(message: String) -> ImportError {
    ImportError::TooLarge {
        field: "workbook".into(),
        message,
    }
}

fn unreadable(e: impl std::fmt::Display) -> ImportError {
    GridError::new("workbook", format!("is not a readable XLSX file: {e}")).into()
}

fn check_deadline(deadline: Option<Instant>, limits: &ImportSettings) -> Result<(), ImportError> {
    match deadline {
        Some(d) if Instant::now() > d => Err(ImportError::Deadline { secs: limits.timeout_secs }),
        _ => Ok(()),
    }
}

/// Workbooks are small in parts; thousands of them is not a spreadsheet.
const MAX_PARTS: usize = 10_000;

/// Inflates every part of the zip into nothing, counting, before calamine reads any of it:
/// the sizes a zip declares can lie, what comes out of the inflater cannot. A part that
/// passes a bound stops the count there, so the cost is bounded by the bounds, not the file.
fn check_parts<R: Read + Seek>(workbook: &mut R, limits: &ImportSettings, deadline: Option<Instant>) -> Result<(), ImportError> {
    let mut zip = zip::ZipArchive::new(&mut *workbook).map_err(unreadable)?;
    if zip.len() > MAX_PARTS {
        return Err(too_large(format!(
            "has {} parts; a workbook may have at most {MAX_PARTS}",
            zip.len()
        )));
    }
    let mut total: u64 = 0;
    for i in 0..zip.len() {
        check_deadline(deadline, limits)?;
        let mut part = zip.by_index(i).map_err(unreadable)?;
        let name = part.name().map_err(unreadable)?.to_string();
        let room = limits.max_part_bytes.min(limits.max_inflated_bytes.saturating_sub(total));
        let inflated = std::io::copy(&mut (&mut part).take(room + 1), &mut std::io::sink()).map_err(unreadable)?;
        if inflated > limits.max_part_bytes {
            return Err(too_large(format!(
                "part '{name}' inflates to more than {} bytes (import.max_part_bytes)",
                limits.max_part_bytes
            )));
        }
        total += inflated;
        if total > limits.max_inflated_bytes {
            return Err(too_large(format!(
                "inflates to more than {} bytes in all (import.max_inflated_bytes)",
                limits.max_inflated_bytes
            )));
        }
    }
    drop(zip);
    workbook.rewind().map_err(unreadable)?;
    Ok(())
}

/// One used cell of the sheet: where it is, what it holds, and whether it is one of the
/// exporter's totals (a `SUBTOTAL` formula).
struct SheetCell {
    row: u32,
    col: u32,
    data: Data,
    subtotal: bool,
}

fn text_len(d: &Data) -> usize {
    match d {
        Data::String(s) | Data::DateTimeIso(s) | Data::DurationIso(s) => s.chars().count(),
        _ => 0,
    }
}

/// The sheet's used cells, read as a stream, in row-major order. calamine's
/// `worksheet_range` allocates the whole rows × columns box around the used cells (two cells
/// at `A1` and `XFD1048576` are 17 billion); this keeps only the cells that are there.
fn sheet_cells<R: Read + Seek>(
    book: &mut Xlsx<R>,
    sheet: &str,
    limits: &ImportSettings,
    deadline: Option<Instant>,
) -> Result<Vec<SheetCell>, ImportError> {
    let mut reader = book
        .worksheet_cells_reader(sheet)
        .map_err(|e| GridError::new("workbook", format!("sheet '{sheet}' cannot be read: {e}")))?;
    let mut cells = Vec::new();
    let mut seen: u64 = 0;
    while let Some(c) = reader
        .next_cell_with_formula()
        .map_err(|e| GridError::new("workbook", format!("sheet '{sheet}' cannot be read: {e}")))?
    {
        seen += 1;
        if seen > limits.max_cells {
            return Err(too_large(format!(
                "sheet '{sheet}' holds more than {} cells (import.max_cells)",
                limits.max_cells
            )));
        }
        if seen % 4096 == 0 {
            check_deadline(deadline, limits)?;
        }
        let subtotal = c.formula.as_deref().is_some_and(is_exporter_total);
        if matches!(c.value, DataRef::Empty) && !subtotal {
            continue;
        }
        let data = Data::from(c.value);
        if text_len(&data) > limits.max_cell_chars {
            let (row, col) = c.pos;
            return Err(GridError::new(
                format!("workbook.{sheet}!{}", cell_name(row, col)),
                format!("holds more than {} characters (import.max_cell_chars)", limits.max_cell_chars),
            )
            .into());
        }
        cells.push(SheetCell {
            row: c.pos.0,
            col: c.pos.1,
            data,
            subtotal,
        });
    }
    // Sheets are written row by row, but nothing requires it.
    cells.sort_by_key(|c| (c.row, c.col));
    Ok(cells)
}

/// Whether a grid's sheet name and a workbook's are the same sheet: equal without regard to
/// case, or equal once cleaned the way the exporter cleans names.
fn same_sheet(grid_name: &str, workbook_name: &str) -> bool {
    use super::writer::clean_sheet_name;
    grid_name.eq_ignore_ascii_case(workbook_name)
        || clean_sheet_name(grid_name).eq_ignore_ascii_case(workbook_name)
        || clean_sheet_name(workbook_name).eq_ignore_ascii_case(grid_name)
}

/// Whether a formula is one of the exporter's totals: `SUBTOTAL(101..109, range)`.
fn is_exporter_total(formula: &str) -> bool {
    let f = formula.trim_start_matches('=').trim().to_ascii_uppercase();
    f.strip_prefix("SUBTOTAL(")
        .and_then(|rest| rest.split_once(','))
        .and_then(|(code, _)| code.trim().parse::<u32>().ok())
        .is_some_and(|code| (101..=109).contains(&code))
}

/// `A1`-style name of a zero-based cell position.
fn cell_name(row: u32, col: u32) -> String {
    let mut letters = Vec::new();
    let mut n = col + 1;
    while n > 0 {
        letters.push(b'A' + ((n - 1) % 26) as u8);
        n = (n - 1) / 26;
    }
    letters.reverse();
    format!("{}{}", String::from_utf8(letters).expect("ASCII"), row + 1)
}

/// One worksheet row: its zero-based number and its cells by column.
struct SheetRow<'a> {
    row: u32,
    cells: &'a [SheetCell],
}

impl SheetRow<'_> {
    fn get(&self, col: u32) -> &Data {
        self.cells
            .binary_search_by_key(&col, |c| c.col)
            .map_or(&Data::Empty, |i| &self.cells[i].data)
    }

    /// The exporter's totals row: it holds the `SUBTOTAL` formulas the exporter writes.
    fn is_totals(&self) -> bool {
        self.cells.iter().any(|c| c.subtotal)
    }
}

/// Reads the workbook.
///
/// # Errors
///
/// [`ImportError::Grid`] when the workbook cannot be read, the sheet does not exist, or the
/// key names no column; [`ImportError::TooLarge`] when it holds more than `req.limits`
/// allows; [`ImportError::Deadline`] past `req.deadline`. Cell-level trouble is not an error:
/// it is listed in `problems`.
///
/// # Examples
///
/// A workbook exported from a CSV, read back with the same columns:
///
/// ```
/// use officebridge::config::ImportSettings;
/// use officebridge::export::import::{import, import_columns, ImportRequest};
/// use officebridge::export::read::{export, ExportOptions, InputFormat};
/// use std::io::Cursor;
///
/// let mut xlsx = Cursor::new(Vec::new());
/// export(InputFormat::Csv, "Sku,Qty\nA-1,3\n".as_bytes(), &mut xlsx, &ExportOptions::default(), Default::default())?;
///
/// let limits = ImportSettings::default();
/// let (columns, _) = import_columns(Some("Sku=text,Qty=integer"), None, None, &limits)?;
/// let req = ImportRequest { columns: &columns, sheet: None, key: None, original: None, limits: &limits, deadline: None };
/// let result = import(Cursor::new(xlsx.into_inner()), &req)?;
/// assert_eq!(result.rows[0]["Qty"], 3);
/// assert!(result.problems.is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn import<R: Read + Seek>(mut workbook: R, req: &ImportRequest) -> Result<ImportResult, ImportError> {
    check_parts(&mut workbook, req.limits, req.deadline)?;
    let mut book: Xlsx<_> = Xlsx::new(workbook).map_err(unreadable)?;
    let names = book.sheet_names();
    let sheet = match req.sheet {
        Some(s) => names
            .iter()
            .find(|n| same_sheet(s, n))
            .cloned()
            .ok_or_else(|| GridError::new("sheet", format!("the workbook has no sheet '{s}' (it has: {})", names.join(", "))))?,
        None => names.first().cloned().ok_or_else(|| GridError::new("workbook", "has no sheets"))?,
    };
    let key_index = match req.key {
        Some(k) => Some(
            req.columns
                .iter()
                .position(|c| c.key == k)
                .ok_or_else(|| GridError::new("key", format!("'{k}' names no column")))?,
        ),
        None => None,
    };
    let cells = sheet_cells(&mut book, &sheet, req.limits, req.deadline)?;
    drop(book);
    let sheet_rows: Vec<SheetRow> = cells
        .chunk_by(|a, b| a.row == b.row)
        .map(|cells| SheetRow { row: cells[0].row, cells })
        .collect();
    let mut problems = Vec::new();
    let (header, data_rows) = match sheet_rows.split_first() {
        Some((h, rest)) => (Some(h), rest),
        None => (None, &[][..]),
    };
    let header_row = header.map_or(0, |h| h.row);
    let header: Vec<(u32, String)> = header
        .map(|h| h.cells.iter().map(|c| (c.col, data_text(&c.data).trim().to_lowercase())).collect())
        .unwrap_or_default();
    let positions: Vec<Option<u32>> = req
        .columns
        .iter()
        .map(|c| {
            header
                .iter()
                .find(|(_, h)| *h == c.header.trim().to_lowercase() || *h == c.key.to_lowercase())
                .map(|(col, _)| *col)
        })
        .collect();
    for (c, p) in req.columns.iter().zip(&positions) {
        if p.is_none() {
            problems.push(CellProblem {
                sheet: sheet.clone(),
                row: header_row + 1,
                column: c.key.clone(),
                value: String::new(),
                reason: format!("no column headed '{}' in the header row", c.header),
            });
        }
    }
    // The exporter's totals row is not data, wherever it is: a user who adds rows under it
    // (a natural thing to do in Excel) has rows after it, and those are data.
    let data_rows: Vec<&SheetRow> = data_rows.iter().filter(|r| !r.is_totals()).collect();
    // Every row becomes one value per column, whatever it holds: bound that product too.
    let values = data_rows.len() as u64 * req.columns.len() as u64;
    if values > req.limits.max_cells {
        return Err(too_large(format!(
            "{} rows of {} columns are more than {} values (import.max_cells)",
            data_rows.len(),
            req.columns.len(),
            req.limits.max_cells
        )));
    }
    let mut rows = Vec::with_capacity(data_rows.len());
    let mut row_info = Vec::with_capacity(data_rows.len());
    for raw in data_rows {
        let excel_row = raw.row + 1;
        let mut obj = Map::new();
        let mut bad = Vec::new();
        for (i, (c, p)) in req.columns.iter().zip(&positions).enumerate() {
            let d = p.map_or(&Data::Empty, |p| raw.get(p));
            let cell = data_cell(d, c).unwrap_or_else(|reason| {
                problems.push(CellProblem {
                    sheet: sheet.clone(),
                    row: excel_row,
                    column: c.key.clone(),
                    value: data_text(d),
                    reason,
                });
                bad.push(i);
                Cell::Empty
            });
            obj.insert(c.key.clone(), canonical(&cell, c));
        }
        rows.push(obj);
        row_info.push(RowInfo {
            number: excel_row,
            problem_columns: bad,
        });
    }
    let changes = match (key_index, req.original) {
        (Some(k), Some(original)) => {
            let original: Vec<Vec<Value>> = original.iter().map(|r| canonical_row(r, req.columns)).collect();
            Some(change_set(req.columns, k, &original, &rows, &row_info, &sheet, &mut problems))
        }
        _ => None,
    };
    Ok(ImportResult {
        sheet,
        rows,
        problems,
        changes,
    })
}

/// The columns to import with, and the original rows for the change set: from a column spec
/// (`Name=type,…`, every column typed), or from the original grid's sheet (`sheet`, or its
/// first), or both (the spec then wins for the columns).
pub fn import_columns(
    spec: Option<&str>,
    original: Option<&super::read::GridDocument>,
    sheet: Option<&str>,
    limits: &ImportSettings,
) -> Result<(Vec<Column>, Option<Rows>), ImportError> {
    let original_sheet = match original {
        Some(doc) => {
            // The workbook's sheet may carry the name as given or as the exporter cleaned it
            // (`Stock 2026/Q1` is written as `Stock 2026_Q1`); either finds the original's
            // sheet, and no other sheet's columns are ever taken instead.
            let idx = match sheet {
                Some(name) => {
                    // A sheet without a name is written as `Sheet1`, `Sheet2`, …
                    let names: Vec<String> = doc
                        .sheets
                        .iter()
                        .enumerate()
                        .map(|(i, s)| s.spec().name.unwrap_or_else(|| format!("Sheet{}", i + 1)))
                        .collect();
                    names.iter().position(|n| same_sheet(n, name)).ok_or_else(|| {
                        GridError::new(
                            "sheet",
                            format!("the original has no sheet '{name}' (it has: {})", names.join(", ")),
                        )
                    })?
                }
                None => 0,
            };
            let sdoc = &doc.sheets[idx];
            // Every original row stays in memory for the change set: bounded before parsing.
            if sdoc.rows.len() > limits.max_original_rows {
                return Err(ImportError::TooLarge {
                    field: format!("original.sheets[{idx}].rows"),
                    message: format!(
                        "has {} rows; an import compares at most {} (import.max_original_rows)",
                        sdoc.rows.len(),
                        limits.max_original_rows
                    ),
                });
            }
            let checked = sdoc.spec().check(&format!("original.sheets[{idx}]."), "Sheet1")?;
            let keys = super::read::column_keys(&checked.columns);
            let rows = sdoc
                .rows
                .iter()
                .enumerate()
                .map(|(r, row)| super::read::json_row(&checked.columns, &keys, row.get(), &format!("original.sheets[{idx}].rows[{r}]")))
                .collect::<Result<Vec<_>, _>>()?;
            Some((checked.columns, rows))
        }
        None => None,
    };
    let columns = match (spec, &original_sheet) {
        (Some(spec), _) => {
            let specs = super::read::parse_column_spec(spec)?;
            let mut typed = Vec::with_capacity(specs.len());
            for (i, (name, s)) in specs.into_iter().enumerate() {
                typed.push(s.ok_or_else(|| GridError::new(format!("columns[{i}]"), format!("'{name}' needs a type (Name=type)")))?);
            }
            super::model::SheetSpec {
                name: None,
                columns: typed,
                totals: Default::default(),
            }
            .check("", "Sheet1")?
            .columns
        }
        (None, Some((columns, _))) => columns.clone(),
        (None, None) => {
            return Err(GridError::new("columns", "give the columns, or the original grid to take them from").into());
        }
    };
    Ok((columns, original_sheet.map(|(_, rows)| rows)))
}

fn key_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Where an imported row came from, and which of its cells did not fit their column.
struct RowInfo {
    number: u32,
    problem_columns: Vec<usize>,
}

/// A row's typed JSON values, as [`canonical`] gives them.
pub fn canonical_row(row: &[Cell], columns: &[Column]) -> Vec<Value> {
    row.iter().zip(columns).map(|(c, col)| canonical(c, col)).collect()
}

/// The values of an Excel table as the add-in reads them (`Range.values`: numbers, text,
/// booleans, dates as serial numbers, `""` for an empty cell), under `header`, compared with
/// the grid's `original` rows (canonical values) by the `key` column: the change set and a
/// problem for every cell that does not fit its column, exactly as an imported workbook's.
/// Problems name the worksheet row as if the table's header were row 1.
///
/// # Errors
///
/// A [`GridError`] naming `header` or `rows[i]` when the table is not the grid's shape: a
/// column missing or unknown, a row of another length, a value that is not a cell's.
pub fn compare_table(
    columns: &[Column],
    key: usize,
    original: &[Vec<Value>],
    sheet: &str,
    header: &[String],
    rows: &[Vec<Value>],
) -> Result<(ChangeSet, Vec<CellProblem>), GridError> {
    let names: Vec<String> = header.iter().map(|h| h.trim().to_lowercase()).collect();
    let mut positions = Vec::with_capacity(columns.len());
    for c in columns {
        let at = names
            .iter()
            .position(|h| *h == c.header.trim().to_lowercase() || *h == c.key.to_lowercase())
            .ok_or_else(|| {
                GridError::new(
                    "header",
                    format!("has no column '{}' (the grid's columns must all be there)", c.header),
                )
            })?;
        positions.push(at);
    }
    if let Some(extra) = (0..names.len()).find(|i| !positions.contains(i)) {
        return Err(GridError::new(
            format!("header[{extra}]"),
            format!("'{}' is not a column of the grid", header[extra]),
        ));
    }
    let mut problems = Vec::new();
    let mut objects = Vec::with_capacity(rows.len());
    let mut info = Vec::with_capacity(rows.len());
    for (r, values) in rows.iter().enumerate() {
        if values.len() != header.len() {
            return Err(GridError::new(
                format!("rows[{r}]"),
                format!("has {} values; the header has {}", values.len(), header.len()),
            ));
        }
        let excel_row = r as u32 + 2;
        let mut obj = Map::new();
        let mut bad = Vec::new();
        for (i, (c, p)) in columns.iter().zip(&positions).enumerate() {
            let data = match &values[*p] {
                Value::Null => Data::Empty,
                Value::String(s) if s.is_empty() => Data::Empty,
                Value::String(s) => Data::String(s.clone()),
                Value::Number(n) => Data::Float(n.as_f64().unwrap_or_default()),
                Value::Bool(b) => Data::Bool(*b),
                _ => {
                    return Err(GridError::new(
                        format!("rows[{r}][{p}]"),
                        "must be a number, text or a boolean (a cell's value)",
                    ));
                }
            };
            let cell = data_cell(&data, c).unwrap_or_else(|reason| {
                problems.push(CellProblem {
                    sheet: sheet.to_string(),
                    row: excel_row,
                    column: c.key.clone(),
                    value: data_text(&data),
                    reason,
                });
                bad.push(i);
                Cell::Empty
            });
            obj.insert(c.key.clone(), canonical(&cell, c));
        }
        objects.push(obj);
        info.push(RowInfo {
            number: excel_row,
            problem_columns: bad,
        });
    }
    let changes = change_set(columns, key, original, &objects, &info, sheet, &mut problems);
    Ok((changes, problems))
}

fn change_set(
    columns: &[Column],
    key: usize,
    original: &[Vec<Value>],
    rows: &[Map<String, Value>],
    info: &[RowInfo],
    sheet: &str,
    problems: &mut Vec<CellProblem>,
) -> ChangeSet {
    let key_col = &columns[key];
    let original_value = |r: &[Value], c: usize| r[c].clone();
    // The index holds row numbers, not copies: the original is already in memory once.
    let index: HashMap<String, usize> = original
        .iter()
        .enumerate()
        .map(|(i, r)| (key_text(&original_value(r, key)), i))
        .collect();
    let mut seen = HashMap::new();
    let mut changes = ChangeSet::default();
    for (i, row) in rows.iter().enumerate() {
        let k = &row[&key_col.key];
        let problem = |reason: &str, value: String| CellProblem {
            sheet: sheet.into(),
            row: info[i].number,
            column: key_col.key.clone(),
            value,
            reason: reason.into(),
        };
        if k.is_null() {
            problems.push(problem("the key column is empty", String::new()));
            continue;
        }
        if seen.insert(key_text(k), i).is_some() {
            problems.push(problem("the key appears more than once", key_text(k)));
            continue;
        }
        match index.get(&key_text(k)) {
            None => changes.added.push(row.clone()),
            Some(&o) => {
                let old = &original[o];
                let bad = &info[i].problem_columns;
                let fields: BTreeMap<String, FieldChange> = columns
                    .iter()
                    .enumerate()
                    // A cell that did not parse is a problem, not a change to empty.
                    .filter(|(c, _)| !bad.contains(c))
                    .filter_map(|(c, col)| {
                        let from = original_value(old, c);
                        (from != row[&col.key]).then(|| {
                            (
                                col.key.clone(),
                                FieldChange {
                                    from,
                                    to: row[&col.key].clone(),
                                },
                            )
                        })
                    })
                    .collect();
                if !fields.is_empty() {
                    changes.changed.push(ChangedRow {
                        key: k.clone(),
                        fields,
                        problems: !bad.is_empty(),
                    });
                }
            }
        }
    }
    changes.deleted = original
        .iter()
        .map(|r| original_value(r, key))
        .filter(|k| !seen.contains_key(&key_text(k)))
        .collect();
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_render_back_to_the_text_they_came_from() {
        let col = |kind| Column {
            key: "k".into(),
            header: "k".into(),
            kind,
            currency: None,
            decimals: 2,
            width: None,
            date_format: None,
        };
        for (kind, text) in [
            (ColumnType::Date, "1900-01-01"),
            (ColumnType::Date, "1900-02-28"),
            (ColumnType::Date, "1900-03-01"),
            (ColumnType::Date, "9999-12-31"),
            (ColumnType::Datetime, "2026-11-01T13:45:30.125"),
            (ColumnType::Time, "23:59:59.999"),
            (ColumnType::Time, "00:00:00"),
        ] {
            let c = col(kind);
            let cell = c.from_text(text).unwrap();
            assert_eq!(canonical(&cell, &c), Value::String(text.into()), "{kind:?}");
        }
    }
}
