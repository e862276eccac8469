//! Shared grids (SPEC §3.6): the ERP shares a grid with an operator, the Excel pane inserts it
//! into a workbook in blocks and publishes the edits back as a change set.
//!
//! A grid is read by the export's own readers ([`crate::export::read::read_into`]) — the same
//! bodies, the same checks, the same typed cells — and kept in the database by
//! [`Collector`], a few hundred rows at a time, so any instance serves it and its size costs
//! no memory. Its cells are stored as the values Excel's `Range.values` takes: numbers,
//! text, booleans, and dates as serial numbers.

use crate::export::model::{Cell, Column, ColumnSpec, ColumnType, GridError, Sheet, SheetSpec};
use crate::export::read::SheetSink;
use crate::export::writer::ExportError;
use crate::store::grids::GridRecord;
use crate::store::{Store, StoreError};
use serde_json::Value;

/// A stored cell: what `Range.values` takes (dates as serial numbers, `null` when empty).
pub fn cell_value(cell: &Cell) -> Value {
    match cell {
        Cell::Empty => Value::Null,
        Cell::Text(s) | Cell::Url(s) => Value::String(s.clone()),
        Cell::Bool(b) => Value::Bool(*b),
        Cell::Number(x) | Cell::Serial(x) => serde_json::Number::from_f64(*x).map_or(Value::Null, Value::Number),
    }
}

/// A stored cell back as the column's typed cell.
pub fn value_cell(v: &Value, column: &Column) -> Cell {
    match v {
        Value::String(s) if column.kind == ColumnType::Hyperlink => Cell::Url(s.clone()),
        Value::String(s) => Cell::Text(s.clone()),
        Value::Bool(b) => Cell::Bool(*b),
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or_default();
            match column.kind {
                ColumnType::Date | ColumnType::Datetime | ColumnType::Time => Cell::Serial(x),
                _ => Cell::Number(x),
            }
        }
        _ => Cell::Empty,
    }
}

/// A cell as the pane writes it into `Range.values`. Excel reads a string that starts with
/// `=` as a formula (and `+`, `-`, `@` as the start of one), so such text goes with the
/// apostrophe that tells Excel "this is text", which Excel keeps out of the value.
pub fn excel_value(v: &Value) -> Value {
    match v {
        Value::String(s) if s.starts_with(['=', '+', '-', '@']) => Value::String(format!("'{s}")),
        Value::Null => Value::String(String::new()),
        other => other.clone(),
    }
}

/// The columns as stored: their specs, checked again when read.
pub fn columns_json(columns: &[Column]) -> String {
    let specs: Vec<ColumnSpec> = columns
        .iter()
        .map(|c| ColumnSpec {
            key: c.key.clone(),
            header: Some(c.header.clone()),
            kind: c.kind.as_str().to_string(),
            currency: c.currency.clone(),
            decimals: Some(c.decimals),
            width: c.width,
            format: c.date_format.as_ref().map(|f| f.declared.clone()),
        })
        .collect();
    serde_json::to_string(&specs).expect("column specs serialise")
}

/// The stored columns, checked.
pub fn columns_from_json(text: &str) -> anyhow::Result<Vec<Column>> {
    let specs: Vec<ColumnSpec> = serde_json::from_str(text)?;
    let sheet = SheetSpec {
        name: None,
        columns: specs,
        totals: Default::default(),
    }
    .check("", "Sheet1")?;
    Ok(sheet.columns)
}

/// Rows stored per round trip to the database.
const BATCH: usize = 1000;

/// Takes the one sheet of a grid's body and stores it as it is parsed: the record once the
/// sheet is declared (its columns and key), then the rows a batch at a time. Runs on a
/// blocking thread (the readers are synchronous) and waits for each insert there.
pub struct Collector {
    store: Store,
    runtime: tokio::runtime::Handle,
    /// The record to write: id, operator and times set; name, key and columns from the sheet.
    pub record: GridRecord,
    /// The key column the body named (`"key"`, or `?key=` for CSV).
    pub key: Option<String>,
    max_cells: u64,
    pending: Vec<String>,
    /// Whether the record is in the database (then a failure must delete it).
    pub begun: bool,
    /// Set when the grid passed `grids.max_cells` (a 413, not a 422).
    pub too_large: bool,
}

impl Collector {
    pub fn new(store: Store, runtime: tokio::runtime::Handle, record: GridRecord, max_cells: u64) -> Self {
        Self {
            store,
            runtime,
            record,
            key: None,
            max_cells,
            pending: Vec::with_capacity(BATCH),
            begun: false,
            too_large: false,
        }
    }

    fn store_error(e: StoreError) -> ExportError {
        ExportError::Io(std::io::Error::other(e.to_string()))
    }

    fn flush(&mut self) -> Result<(), ExportError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let first = self.record.rows - self.pending.len() as u64;
        self.runtime
            .block_on(self.store.append_grid_rows(&self.record.id, first, &self.pending))
            .map_err(Collector::store_error)?;
        self.pending.clear();
        Ok(())
    }

    /// Stores what is still pending.
    pub fn finish(&mut self) -> Result<(), ExportError> {
        self.flush()
    }
}

impl SheetSink for &mut Collector {
    fn write_sheet<I>(&mut self, sheet: &Sheet, rows: I, locate: &dyn Fn(u64) -> String) -> Result<(), ExportError>
    where
        I: IntoIterator<Item = Result<Vec<Cell>, GridError>>,
    {
        if self.begun {
            return Err(GridError::new("sheets", "a shared grid has one sheet; share each sheet as its own grid").into());
        }
        let key = self.key.clone().ok_or_else(|| {
            GridError::new(
                "key",
                "is required: name the key column edits are matched by (\"key\" in the body, ?key= for CSV)",
            )
        })?;
        if !sheet.columns.iter().any(|c| c.key == key) {
            return Err(GridError::new("key", format!("'{key}' names no column of the grid")).into());
        }
        self.record.name = sheet.name.clone();
        self.record.key = key;
        self.record.columns = columns_json(&sheet.columns);
        self.runtime
            .block_on(self.store.begin_grid(&self.record))
            .map_err(Collector::store_error)?;
        self.begun = true;
        let width = sheet.columns.len().max(1) as u64;
        for row in rows {
            let row = row?;
            self.record.rows += 1;
            if self.record.rows * width > self.max_cells {
                self.too_large = true;
                return Err(GridError::new(
                    locate(self.record.rows - 1),
                    format!("the grid holds more than {} cells (grids.max_cells)", self.max_cells),
                )
                .into());
            }
            let cells: Vec<Value> = row.iter().map(cell_value).collect();
            self.pending.push(Value::Array(cells).to_string());
            if self.pending.len() == BATCH {
                self.flush()?;
            }
        }
        Ok(())
    }
}

/// Why a grid was not shared.
#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    /// Over `grids.max_cells`.
    #[error("{0}")]
    TooLarge(String),
    #[error("the grid has no sheet")]
    NoSheet,
    /// The body is not a grid, or breaks a rule (as an export would refuse it).
    #[error(transparent)]
    Read(#[from] ExportError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Shares a grid: reads `input` (opened on the blocking thread) in `format` into the
/// database as `record` (id, operator and times set), then makes it visible. A grid refused
/// on the way leaves nothing behind.
pub async fn share<R: std::io::BufRead + Send + 'static>(
    store: &Store,
    actor: &str,
    record: GridRecord,
    format: crate::export::read::InputFormat,
    input: impl FnOnce() -> std::io::Result<R> + Send + 'static,
    opts: crate::export::read::ExportOptions,
    max_cells: u64,
) -> Result<GridRecord, ShareError> {
    let mut collector = Collector::new(store.clone(), tokio::runtime::Handle::current(), record, max_cells);
    // Parsing is synchronous: on a blocking thread, which waits for each batch's insert.
    let (collector, read) = tokio::task::spawn_blocking(move || {
        let read = input().map_err(ExportError::from).and_then(|reader| {
            crate::export::read::read_into(format, reader, &opts, |meta| {
                collector.key = meta.key;
                Ok(&mut collector)
            })
            .map(drop)
        });
        let read = read.and_then(|()| collector.finish());
        (collector, read)
    })
    .await
    .map_err(|e| ShareError::Read(ExportError::Io(std::io::Error::other(e.to_string()))))?;
    let stored = match read {
        Ok(()) if collector.begun => store
            .finish_grid(actor, &collector.record.id, collector.record.rows)
            .await
            .map_err(ShareError::from),
        Ok(()) => Err(ShareError::NoSheet),
        Err(e) if collector.too_large => Err(ShareError::TooLarge(e.to_string())),
        Err(e) => Err(e.into()),
    };
    if let Err(e) = stored {
        // Nothing half-written: the rows stored so far go with the record.
        if collector.begun
            && let Err(d) = store.delete_grid(&collector.record.id).await
        {
            tracing::warn!(error = %d, grid = %collector.record.id, "removing a grid that failed failed; the sweep takes it");
        }
        return Err(e);
    }
    Ok(collector.record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_that_excel_would_read_as_a_formula_goes_as_text() {
        assert_eq!(excel_value(&Value::from("=1+1")), Value::from("'=1+1"));
        assert_eq!(excel_value(&Value::from("-5")), Value::from("'-5"));
        assert_eq!(excel_value(&Value::from("@SUM")), Value::from("'@SUM"));
        assert_eq!(excel_value(&Value::from("A=1")), Value::from("A=1"));
        assert_eq!(excel_value(&Value::from(-5.5)), Value::from(-5.5));
        assert_eq!(excel_value(&Value::Null), Value::from(""));
    }

    #[test]
    fn stored_cells_come_back_as_the_columns_cells() {
        let sheet = SheetSpec {
            name: None,
            columns: serde_json::from_str(r#"[{"key":"d","type":"date"},{"key":"q","type":"integer"},{"key":"u","type":"hyperlink"}]"#)
                .unwrap(),
            totals: Default::default(),
        }
        .check("", "S")
        .unwrap();
        let cols = columns_from_json(&columns_json(&sheet.columns)).unwrap();
        assert_eq!(cols, sheet.columns);
        for (cell, col) in [
            (Cell::Serial(46_327.0), &cols[0]),
            (Cell::Number(3.0), &cols[1]),
            (Cell::Url("https://x.example/".into()), &cols[2]),
            (Cell::Empty, &cols[1]),
        ] {
            assert_eq!(value_cell(&cell_value(&cell), col), cell);
        }
    }
}
