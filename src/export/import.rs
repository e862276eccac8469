//! Reading an edited workbook back (calamine): typed rows, a problem for every cell that does
//! not fit its column, and — given a key column and the original grid — the change set.

use super::model::{Cell, Column, ColumnType, GridError};
use calamine::{Data, Reader, Xlsx};
use chrono::{Duration, NaiveDate, NaiveTime};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek};

/// A cell that does not fit its column.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct CellProblem {
    pub sheet: String,
    /// The worksheet row as Excel numbers it (the header is row 1).
    pub row: u32,
    pub column: String,
    /// The cell's content as text.
    pub value: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct FieldChange {
    pub from: Value,
    pub to: Value,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct ChangedRow {
    pub key: Value,
    pub fields: BTreeMap<String, FieldChange>,
}

/// What the edit did to the original grid, by key.
#[derive(Debug, Clone, Default, Serialize, PartialEq, utoipa::ToSchema)]
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
}

/// Reads the workbook.
///
/// # Errors
///
/// A [`GridError`] when the workbook cannot be read, the sheet does not exist, or the key
/// names no column. Cell-level trouble is not an error: it is listed in `problems`.
pub fn import<R: Read + Seek>(workbook: R, req: &ImportRequest) -> Result<ImportResult, GridError> {
    let mut book: Xlsx<_> = Xlsx::new(workbook).map_err(|e| GridError::new("workbook", format!("is not a readable XLSX file: {e}")))?;
    let names = book.sheet_names();
    let sheet = match req.sheet {
        Some(s) => names
            .iter()
            .find(|n| n.eq_ignore_ascii_case(s))
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
    let range = book
        .worksheet_range(&sheet)
        .map_err(|e| GridError::new("workbook", format!("sheet '{sheet}' cannot be read: {e}")))?;
    let formulas = book.worksheet_formula(&sheet).ok();
    let (first_row, first_col) = range.start().unwrap_or((0, 0));
    let mut problems = Vec::new();
    let mut rows_iter = range.rows();
    let header: Vec<String> = rows_iter
        .next()
        .map(|r| r.iter().map(|d| data_text(d).trim().to_lowercase()).collect())
        .unwrap_or_default();
    let positions: Vec<Option<usize>> = req
        .columns
        .iter()
        .map(|c| {
            header
                .iter()
                .position(|h| *h == c.header.trim().to_lowercase() || *h == c.key.to_lowercase())
        })
        .collect();
    for (c, p) in req.columns.iter().zip(&positions) {
        if p.is_none() {
            problems.push(CellProblem {
                sheet: sheet.clone(),
                row: first_row + 1,
                column: c.key.clone(),
                value: String::new(),
                reason: format!("no column headed '{}' in the header row", c.header),
            });
        }
    }
    let data_rows: Vec<&[Data]> = rows_iter.collect();
    // The exporter's totals row is a row of SUBTOTAL formulas: not data.
    let is_totals = |idx: usize| {
        let abs_row = first_row + 1 + idx as u32;
        formulas.as_ref().is_some_and(|f| {
            (0..header.len() as u32).any(|c| {
                f.get_value((abs_row, first_col + c))
                    .is_some_and(|v| v.to_ascii_uppercase().starts_with("SUBTOTAL("))
            })
        })
    };
    let count = if !data_rows.is_empty() && is_totals(data_rows.len() - 1) {
        data_rows.len() - 1
    } else {
        data_rows.len()
    };
    let mut rows = Vec::with_capacity(count);
    let mut cells_by_row: Vec<Vec<Cell>> = Vec::with_capacity(count);
    for (i, raw) in data_rows[..count].iter().enumerate() {
        let excel_row = first_row + 2 + i as u32;
        if raw.iter().all(|d| matches!(d, Data::Empty)) {
            continue;
        }
        let mut obj = Map::new();
        let mut cells = Vec::with_capacity(req.columns.len());
        for (c, p) in req.columns.iter().zip(&positions) {
            let d = p.and_then(|p| raw.get(p)).unwrap_or(&Data::Empty);
            let cell = data_cell(d, c).unwrap_or_else(|reason| {
                problems.push(CellProblem {
                    sheet: sheet.clone(),
                    row: excel_row,
                    column: c.key.clone(),
                    value: data_text(d),
                    reason,
                });
                Cell::Empty
            });
            obj.insert(c.key.clone(), canonical(&cell, c));
            cells.push(cell);
        }
        rows.push(obj);
        cells_by_row.push(cells);
    }
    let changes = match (key_index, req.original) {
        (Some(k), Some(original)) => Some(change_set(req.columns, k, original, &rows, &sheet, first_row, &mut problems)),
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
) -> Result<(Vec<Column>, Option<Rows>), GridError> {
    let original_sheet = match original {
        Some(doc) => {
            let idx = match sheet {
                Some(name) => doc
                    .sheets
                    .iter()
                    .position(|s| s.spec().name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(name)))
                    .unwrap_or(0),
                None => 0,
            };
            let sdoc = &doc.sheets[idx];
            let checked = sdoc.spec().check(&format!("original.sheets[{idx}]."), "Sheet1")?;
            let rows = sdoc
                .rows
                .iter()
                .enumerate()
                .map(|(r, row)| super::read::json_row(&checked.columns, row, &format!("original.sheets[{idx}].rows[{r}]")))
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
            return Err(GridError::new(
                "columns",
                "give the columns, or the original grid to take them from",
            ));
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

fn change_set(
    columns: &[Column],
    key: usize,
    original: &[Vec<Cell>],
    rows: &[Map<String, Value>],
    sheet: &str,
    first_row: u32,
    problems: &mut Vec<CellProblem>,
) -> ChangeSet {
    let key_col = &columns[key];
    let before: Vec<Map<String, Value>> = original
        .iter()
        .map(|cells| {
            columns
                .iter()
                .zip(cells)
                .map(|(c, cell)| (c.key.clone(), canonical(cell, c)))
                .collect()
        })
        .collect();
    let index: HashMap<String, &Map<String, Value>> = before.iter().map(|r| (key_text(&r[&key_col.key]), r)).collect();
    let mut seen = HashMap::new();
    let mut changes = ChangeSet::default();
    for (i, row) in rows.iter().enumerate() {
        let k = &row[&key_col.key];
        if k.is_null() {
            problems.push(CellProblem {
                sheet: sheet.into(),
                row: first_row + 2 + i as u32,
                column: key_col.key.clone(),
                value: String::new(),
                reason: "the key column is empty".into(),
            });
            continue;
        }
        if seen.insert(key_text(k), i).is_some() {
            problems.push(CellProblem {
                sheet: sheet.into(),
                row: first_row + 2 + i as u32,
                column: key_col.key.clone(),
                value: key_text(k),
                reason: "the key appears more than once".into(),
            });
            continue;
        }
        match index.get(&key_text(k)) {
            None => changes.added.push(row.clone()),
            Some(old) => {
                let fields: BTreeMap<String, FieldChange> = columns
                    .iter()
                    .filter(|c| old[&c.key] != row[&c.key])
                    .map(|c| {
                        (
                            c.key.clone(),
                            FieldChange {
                                from: old[&c.key].clone(),
                                to: row[&c.key].clone(),
                            },
                        )
                    })
                    .collect();
                if !fields.is_empty() {
                    changes.changed.push(ChangedRow { key: k.clone(), fields });
                }
            }
        }
    }
    changes.deleted = before
        .iter()
        .map(|r| r[&key_col.key].clone())
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
