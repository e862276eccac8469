//! Readers of the three grid formats. NDJSON and CSV are read as streams — one row in
//! memory at a time — so their memory does not grow with the number of rows. The JSON grid
//! document is one value: its sheets are read whole, but each row is kept as its own JSON
//! text and converted to cells only when written, so a document costs about its own size
//! in memory (a `serde_json::Value` tree of it cost 40 times that); large grids should still
//! come as NDJSON or CSV.

use super::model::{Cell, Column, ColumnSpec, ColumnType, GridError, GridMeta, GridOptions, Overflow, Sheet, SheetSpec, Total};
use super::writer::{ExportError, Report, XlsxExport};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::{BTreeMap, HashMap};
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

/// Declares a header struct with the workbook properties and options that both the grid
/// document and the NDJSON header line carry at their top level (serde's `flatten` cannot be
/// combined with `deny_unknown_fields`, so the shared fields are spliced in instead).
macro_rules! with_grid_options {
    ($(#[$m:meta])* $vis:vis struct $name:ident { $($field:tt)* }) => {
        $(#[$m])*
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        $vis struct $name {
            title: Option<String>,
            author: Option<String>,
            company: Option<String>,
            #[serde(default)]
            overflow: Overflow,
            #[serde(default)]
            truncate: bool,
            #[serde(default)]
            table: bool,
            /// The key column, which matches edited rows to the grid's (a shared grid's).
            key: Option<String>,
            $($field)*
        }

        impl $name {
            /// The workbook properties and options; `title` stands in when the input has none.
            fn meta(&self, title: Option<&String>) -> GridMeta {
                GridMeta {
                    title: self.title.clone().or_else(|| title.cloned()),
                    author: self.author.clone(),
                    company: self.company.clone(),
                    key: self.key.clone(),
                    options: GridOptions { overflow: self.overflow, truncate: self.truncate, table: self.table },
                }
            }
        }
    };
}

with_grid_options!(
    /// The grid document (SPEC §3.1).
    pub struct GridDocument {
        pub sheets: Vec<SheetDocument>,
    }
);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SheetDocument {
    name: Option<String>,
    columns: Vec<ColumnSpec>,
    #[serde(default)]
    totals: BTreeMap<String, Total>,
    /// Each row's JSON text, converted by [`json_row`] when it is needed.
    #[serde(default)]
    pub rows: Vec<Box<RawValue>>,
}

with_grid_options!(
    /// The NDJSON header line: the sheet declaration plus the grid's options.
    struct NdjsonHeader {
        name: Option<String>,
        columns: Vec<ColumnSpec>,
        #[serde(default)]
        totals: BTreeMap<String, Total>,
    }
);

impl SheetDocument {
    pub fn spec(&self) -> SheetSpec {
        SheetSpec {
            name: self.name.clone(),
            columns: self.columns.clone(),
            totals: self.totals.clone(),
        }
    }
}

/// Each column's position by key, for [`json_row`].
pub fn column_keys(columns: &[Column]) -> HashMap<&str, usize> {
    columns.iter().enumerate().map(|(i, c)| (c.key.as_str(), i)).collect()
}

/// Which cell a failed row deserialization was at, for the error's field path.
#[derive(Default)]
struct RowContext {
    column: std::cell::Cell<Option<usize>>,
    unknown: std::cell::RefCell<Option<String>>,
}

/// Deserializes one JSON row straight into typed cells, with no `serde_json::Value` tree in
/// between: NDJSON is the format for large grids, and building and dropping a tree per row
/// was the largest cost of an export after compression. Conversions are the columns' own
/// (`Column::from_*`), shared with [`json_row`].
struct RowSeed<'a> {
    columns: &'a [Column],
    keys: &'a HashMap<&'a str, usize>,
    ctx: &'a RowContext,
}

impl<'de> serde::de::DeserializeSeed<'de> for RowSeed<'_> {
    type Value = Vec<Cell>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Vec<Cell>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for RowSeed<'_> {
    type Value = Vec<Cell>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a row: an array in column order or an object keyed by column key")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Cell>, A::Error> {
        let mut cells = Vec::with_capacity(self.columns.len());
        for (i, column) in self.columns.iter().enumerate() {
            self.ctx.column.set(Some(i));
            match seq.next_element_seed(CellSeed(column))? {
                Some(cell) => cells.push(cell),
                None => {
                    self.ctx.column.set(None);
                    return Err(serde::de::Error::custom(format_args!(
                        "has {i} cells; the sheet has {} columns",
                        self.columns.len()
                    )));
                }
            }
        }
        self.ctx.column.set(None);
        let mut extra = 0;
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
            extra += 1;
        }
        if extra > 0 {
            return Err(serde::de::Error::custom(format_args!(
                "has {} cells; the sheet has {} columns",
                self.columns.len() + extra,
                self.columns.len()
            )));
        }
        Ok(cells)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Vec<Cell>, A::Error> {
        let mut cells = vec![Cell::Empty; self.columns.len()];
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let Some(&i) = self.keys.get(key.as_ref()) else {
                *self.ctx.unknown.borrow_mut() = Some(key.into_owned());
                return Err(serde::de::Error::custom("names no column of this sheet"));
            };
            self.ctx.column.set(Some(i));
            cells[i] = map.next_value_seed(CellSeed(&self.columns[i]))?;
        }
        self.ctx.column.set(None);
        Ok(cells)
    }
}

/// One cell, converted by its column as it is parsed.
struct CellSeed<'a>(&'a Column);

impl<'de> serde::de::DeserializeSeed<'de> for CellSeed<'_> {
    type Value = Cell;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Cell, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for CellSeed<'_> {
    type Value = Cell;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a cell value")
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Cell, E> {
        Ok(Cell::Empty)
    }

    fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<Cell, E> {
        self.0.from_bool(b).map_err(E::custom)
    }

    fn visit_i64<E: serde::de::Error>(self, i: i64) -> Result<Cell, E> {
        self.0.from_i64(i).map_err(E::custom)
    }

    fn visit_u64<E: serde::de::Error>(self, u: u64) -> Result<Cell, E> {
        match i64::try_from(u) {
            Ok(i) => self.0.from_i64(i),
            Err(_) => self.0.from_u64(u),
        }
        .map_err(E::custom)
    }

    fn visit_f64<E: serde::de::Error>(self, x: f64) -> Result<Cell, E> {
        self.0.from_f64(x).map_err(E::custom)
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Cell, E> {
        self.0.from_text(s).map_err(E::custom)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<Cell, A::Error> {
        Err(serde::de::Error::custom(super::model::NOT_A_SINGLE_VALUE))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, _: A) -> Result<Cell, A::Error> {
        Err(serde::de::Error::custom(super::model::NOT_A_SINGLE_VALUE))
    }
}

/// Converts one JSON row — an array in column order, or an object keyed by column key —
/// straight from its text into cells; errors name `at` and, where known, the column.
pub fn json_row(columns: &[Column], keys: &HashMap<&str, usize>, text: &str, at: &str) -> Result<Vec<Cell>, GridError> {
    use serde::de::DeserializeSeed;
    let ctx = RowContext::default();
    let mut de = serde_json::Deserializer::from_str(text);
    let result = RowSeed { columns, keys, ctx: &ctx }
        .deserialize(&mut de)
        .and_then(|cells| de.end().map(|()| cells));
    result.map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            return GridError::new(at, format!("is not valid JSON: {}", json_message(&e)));
        }
        let field = match (ctx.unknown.take(), ctx.column.get()) {
            (Some(key), _) => format!("{at}.{key}"),
            (None, Some(i)) => format!("{at}.{}", columns[i].key),
            (None, None) => at.to_string(),
        };
        GridError::new(field, json_message(&e))
    })
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
    /// Longest NDJSON line, in bytes ([`DEFAULT_MAX_LINE_BYTES`] when unset).
    pub max_line_bytes: Option<usize>,
    /// The key column for CSV input (a shared grid's; JSON and NDJSON name it themselves).
    pub key: Option<String>,
    /// CSV: the charset (UTF-8 when unset; a byte order mark wins).
    pub encoding: Option<&'static encoding_rs::Encoding>,
    /// CSV: the field delimiter (sniffed from the header line when unset).
    pub delimiter: Option<u8>,
    /// CSV: whether numbers have decimal commas (`12,50`); when unset, whether the delimiter is `;`.
    pub decimal_comma: Option<bool>,
}

/// Where the parsed sheets go: a workbook being written ([`XlsxExport`]) or a grid kept for
/// the add-in ([`crate::grids`]). Both get the same checked sheets and typed rows, so a grid
/// is refused or accepted exactly as its export would be.
pub trait SheetSink {
    /// Takes one sheet's rows; the first `Err` row stops it, and it returns that error.
    fn write_sheet<I>(&mut self, sheet: &Sheet, rows: I, locate: &dyn Fn(u64) -> String) -> Result<(), ExportError>
    where
        I: IntoIterator<Item = Result<Vec<Cell>, GridError>>;
}

impl SheetSink for XlsxExport {
    fn write_sheet<I>(&mut self, sheet: &Sheet, rows: I, locate: &dyn Fn(u64) -> String) -> Result<(), ExportError>
    where
        I: IntoIterator<Item = Result<Vec<Cell>, GridError>>,
    {
        XlsxExport::write_sheet(self, sheet, rows, locate)
    }
}

/// The longest NDJSON line read when the caller sets no bound: far more than any row of
/// 16,384 columns of 32,767 characters needs in practice, far less than memory.
pub const DEFAULT_MAX_LINE_BYTES: usize = 16 << 20;

/// Why a line could not be read.
enum LineError {
    TooLong(usize),
    Io(std::io::Error),
}

/// Reads one line (through its `\n`) into `line`, which is cleared first; `Ok(0)` at the end
/// of the input. A line longer than `max` bytes is refused once `max` bytes of it have been
/// read, so its length costs no memory (`BufRead::read_line` would grow to any length).
fn read_line_bounded<R: BufRead>(input: &mut R, line: &mut String, max: usize) -> Result<usize, LineError> {
    line.clear();
    let mut bytes = std::mem::take(line).into_bytes();
    let mut read = 0;
    loop {
        let available = match input.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(LineError::Io(e)),
        };
        if available.is_empty() {
            break;
        }
        let (chunk, done) = match memchr_newline(available) {
            Some(i) => (&available[..=i], true),
            None => (available, false),
        };
        if bytes.len() + chunk.len() > max {
            return Err(LineError::TooLong(max));
        }
        bytes.extend_from_slice(chunk);
        let n = chunk.len();
        input.consume(n);
        read += n;
        if done {
            break;
        }
    }
    *line = String::from_utf8(bytes).map_err(|_| {
        LineError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "stream did not contain valid UTF-8",
        ))
    })?;
    Ok(read)
}

fn memchr_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

impl LineError {
    fn at(self, number: u64) -> GridError {
        match self {
            Self::TooLong(max) => GridError::new(
                format!("line[{number}]"),
                format!("is longer than {max} bytes (export.max_line_bytes)"),
            ),
            Self::Io(e) => GridError::new(format!("line[{number}]"), format!("could not be read: {e}")),
        }
    }
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
///
/// # Examples
///
/// A CSV with one declared column (the other is inferred) into a workbook in memory:
///
/// ```
/// use officebridge::export::read::{export, ExportOptions, InputFormat};
/// use std::io::Cursor;
///
/// let csv = "Code,Amount\n00123,12.50\nA-7,3\n";
/// let opts = ExportOptions {
///     columns: Some("Code=text".into()),
///     title: Some("Invoices".into()),
///     ..Default::default()
/// };
/// let mut xlsx = Cursor::new(Vec::new());
/// let report = export(InputFormat::Csv, csv.as_bytes(), &mut xlsx, &opts, Default::default())?;
/// assert_eq!(report.rows, 2);
/// assert!(xlsx.get_ref().starts_with(b"PK"), "an XLSX is a zip");
/// # Ok::<(), officebridge::export::writer::ExportError>(())
/// ```
pub fn export<R: BufRead + Send, W: Write + Seek + Send>(
    format: InputFormat,
    input: R,
    out: W,
    opts: &ExportOptions,
    progress: Arc<AtomicU64>,
) -> Result<Report, ExportError> {
    read_into(format, input, opts, |meta| new_export(meta, opts, progress))?.save(out)
}

/// Reads a grid in `format` from `input` into the sink `make` builds from the grid's
/// properties, and hands the sink back once every sheet is in it.
///
/// # Errors
///
/// [`ExportError::Grid`] names the field, line or cell at fault; the sink's own errors pass
/// through.
pub fn read_into<R: BufRead + Send, S: SheetSink + Send>(
    format: InputFormat,
    input: R,
    opts: &ExportOptions,
    make: impl FnOnce(GridMeta) -> Result<S, ExportError>,
) -> Result<S, ExportError> {
    match format {
        InputFormat::Json => read_json(input, opts, make),
        InputFormat::Ndjson => read_ndjson(input, opts, make),
        InputFormat::Csv => read_csv(input, opts, make),
    }
}

/// Skips a UTF-8 byte order mark, which Windows tools put before JSON as readily as before CSV.
fn skip_bom<R: BufRead>(input: &mut R) -> std::io::Result<()> {
    if input.fill_buf()?.starts_with(b"\xEF\xBB\xBF") {
        input.consume(3);
    }
    Ok(())
}

/// Parses a grid document (SPEC §3.1), naming the field at fault.
///
/// # Errors
///
/// A [`GridError`] of kind `Syntax` when the input is not JSON, else one naming the field
/// (`sheets[0].title`) and the rule it breaks. Column types and cells are checked later,
/// by the export.
///
/// # Examples
///
/// ```
/// use officebridge::export::model::GridErrorKind;
/// use officebridge::export::read::parse_grid_document;
///
/// let doc = r#"{"sheets":[{"name":"Stock","columns":[{"key":"qty","type":"integer"}],"rows":[{"qty":3}]}]}"#;
/// let grid = parse_grid_document(doc.as_bytes()).unwrap();
/// assert_eq!(grid.sheets.len(), 1);
///
/// let cut_short = r#"{"sheets":[{"columns":"#;
/// let e = parse_grid_document(cut_short.as_bytes()).unwrap_err();
/// assert_eq!(e.kind, GridErrorKind::Syntax);
/// assert_eq!(e.field, "body");
/// ```
pub fn parse_grid_document<R: BufRead>(mut input: R) -> Result<GridDocument, GridError> {
    skip_bom(&mut input).map_err(|e| GridError::new("body", format!("could not be read: {e}")))?;
    let mut de = serde_json::Deserializer::from_reader(input);
    let doc: GridDocument = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let inner = e.inner();
        if inner.is_syntax() || inner.is_eof() {
            GridError::syntax(inner)
        } else {
            let path = e.path().to_string();
            GridError::new(if path == "." { "body".to_string() } else { path }, json_message(inner))
        }
    })?;
    de.end().map_err(GridError::syntax)?;
    if doc.sheets.is_empty() {
        return Err(GridError::new("sheets", "must contain at least one sheet"));
    }
    Ok(doc)
}

fn read_json<R: BufRead, S: SheetSink>(
    input: R,
    opts: &ExportOptions,
    make: impl FnOnce(GridMeta) -> Result<S, ExportError>,
) -> Result<S, ExportError> {
    let doc = parse_grid_document(input)?;
    let meta = doc.meta(opts.title.as_ref());
    // Every sheet is checked before anything is written, so a bad last sheet costs nothing.
    let sheets: Vec<Sheet> = doc
        .sheets
        .iter()
        .enumerate()
        .map(|(i, s)| s.spec().check(&format!("sheets[{i}]."), &format!("Sheet{}", i + 1)))
        .collect::<Result<_, _>>()?;
    let mut sink = make(meta)?;
    for (i, (sheet, sdoc)) in sheets.iter().zip(&doc.sheets).enumerate() {
        let locate = move |r: u64| format!("sheets[{i}].rows[{r}]");
        let keys = column_keys(&sheet.columns);
        let rows = sdoc
            .rows
            .iter()
            .enumerate()
            .map(|(r, row)| json_row(&sheet.columns, &keys, row.get(), &locate(r as u64)));
        sink.write_sheet(sheet, rows, &locate)?;
    }
    Ok(sink)
}

fn read_ndjson<R: BufRead + Send, S: SheetSink + Send>(
    mut input: R,
    opts: &ExportOptions,
    make: impl FnOnce(GridMeta) -> Result<S, ExportError>,
) -> Result<S, ExportError> {
    skip_bom(&mut input).map_err(|e| GridError::new("line[1]", format!("could not be read: {e}")))?;
    let mut line = String::new();
    let mut number: u64 = 0;
    let max_line = opts.max_line_bytes.unwrap_or(DEFAULT_MAX_LINE_BYTES);
    // The header is the first line that is not blank.
    let header: NdjsonHeader = loop {
        number += 1;
        if read_line_bounded(&mut input, &mut line, max_line).map_err(|e| e.at(number))? == 0 {
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
    let meta = header.meta(opts.title.as_ref());
    let spec = SheetSpec {
        name: header.name.clone(),
        columns: header.columns,
        totals: header.totals,
    };
    let sheet = spec
        .check("", "Sheet1")
        .map_err(|e| GridError::new(format!("line[{number}].{}", e.field), e.message))?;
    let sink = make(meta)?;
    let keys = column_keys(&sheet.columns);
    let columns = &sheet.columns;
    write_in_parallel(sink, &sheet, move |rows| {
        loop {
            number += 1;
            let parsed = match read_line_bounded(&mut input, &mut line, max_line) {
                Ok(0) => return,
                Ok(_) if line.trim().is_empty() => continue,
                Ok(_) => json_row(columns, &keys, &line, &format!("line[{number}]")),
                Err(e) => Err(e.at(number)),
            };
            if !rows.push((number, parsed)) {
                return;
            }
        }
    })
}

/// A parsed row and the line it came from.
type Parsed = (u64, Result<Vec<Cell>, GridError>);

/// Rows per hand-over between the parsing and the writing thread, and hand-overs in flight:
/// together they bound the rows in memory (4 × 1,024) whatever the length of the grid.
const BATCH_ROWS: usize = 1024;
const BATCHES_IN_FLIGHT: usize = 4;

/// The parsing thread's end of the hand-over.
pub struct RowSender {
    tx: std::sync::mpsc::SyncSender<Vec<Parsed>>,
    batch: Vec<Parsed>,
}

impl RowSender {
    /// Queues a row. `false` means stop parsing: the row was an error, or the writer stopped.
    fn push(&mut self, row: Parsed) -> bool {
        let failed = row.1.is_err();
        self.batch.push(row);
        if (self.batch.len() == BATCH_ROWS || failed) && !self.flush() {
            return false;
        }
        !failed
    }

    fn flush(&mut self) -> bool {
        self.batch.is_empty()
            || self
                .tx
                .send(std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH_ROWS)))
                .is_ok()
    }
}

/// Parses on a second thread while this one writes the sheet, so that parsing and XML
/// generation overlap on two cores instead of taking turns on one. When the writer stops
/// early, the parser stops at its next hand-over.
fn write_in_parallel<S: SheetSink + Send>(mut sink: S, sheet: &Sheet, parse: impl FnOnce(&mut RowSender) + Send) -> Result<S, ExportError> {
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Parsed>>(BATCHES_IN_FLIGHT);
        scope.spawn(move || {
            let mut sender = RowSender {
                tx,
                batch: Vec::with_capacity(BATCH_ROWS),
            };
            parse(&mut sender);
            sender.flush();
        });
        let line_of = std::cell::Cell::new(0u64);
        let rows = rx.into_iter().flatten().map(|(line, row)| {
            line_of.set(line);
            row
        });
        sink.write_sheet(sheet, rows, &|_| format!("line[{}]", line_of.get()))?;
        Ok(sink)
    })
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
        // A date format is the rest of the type, colons and all (`date:DD/MM/YYYY hh:mm`).
        let format = match kind {
            ColumnType::Date | ColumnType::Datetime if !args.is_empty() => Some(args.join(":")),
            _ => None,
        };
        let (currency, decimals) = match (kind, args.as_slice()) {
            (_, []) => (None, None),
            (ColumnType::Date | ColumnType::Datetime, _) => (None, None),
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
                format,
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
        date_format: None,
    };
    let fits = |kind: ColumnType| {
        let c = Column { kind, ..probe.clone() };
        present.iter().all(|v| c.from_text(v).is_ok())
    };
    let leading_zero = present.iter().any(|v| {
        let t = v.trim().trim_start_matches('-');
        t.len() > 1 && t.starts_with('0') && !t.starts_with("0.")
    });
    // A number is inferred only where Excel shows it as written: at most 15 significant
    // digits (a 16-digit id would be rounded), and in plain notation (`1E5` and `2E10` are
    // part numbers far more often than they are 100,000 and 20 billion).
    let not_a_number = leading_zero
        || present.iter().any(|v| {
            let t = v.trim();
            t.contains(['e', 'E']) || super::model::significant_digits(t).is_some_and(|d| d > 15)
        });
    if present
        .iter()
        .all(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "false"))
    {
        ColumnType::Boolean
    } else if !not_a_number && fits(ColumnType::Integer) {
        ColumnType::Integer
    } else if !not_a_number && fits(ColumnType::Decimal) {
        ColumnType::Decimal
    } else if fits(ColumnType::Date) {
        ColumnType::Date
    } else if present.iter().all(|v| v.len() > 10) && fits(ColumnType::Datetime) {
        ColumnType::Datetime
    } else if present
        .iter()
        .all(|v| super::model::is_safe_url(v.trim()) && !v.trim().contains(char::is_whitespace))
    {
        ColumnType::Hyperlink
    } else {
        ColumnType::Text
    }
}

/// The CSV sheet's columns: the header row's names, typed by the spec or inferred.
fn csv_columns(
    headers: &csv::StringRecord,
    spec: Option<&str>,
    sample: &[csv::StringRecord],
    decimal: bool,
) -> Result<Vec<ColumnSpec>, GridError> {
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
                let values: Vec<std::borrow::Cow<str>> = sample
                    .iter()
                    .map(|r| r.get(c).unwrap_or(""))
                    .map(|v| if decimal { super::csv_input::decimal_comma(v) } else { v.into() })
                    .collect();
                let values: Vec<&str> = values.iter().map(|v| v.as_ref()).collect();
                ColumnSpec {
                    key: h.to_string(),
                    header: None,
                    kind: infer_type(&values).as_str().into(),
                    currency: None,
                    decimals: None,
                    width: None,
                    format: None,
                }
            }
        })
        .collect())
}

fn csv_row(columns: &[Column], record: &csv::StringRecord, line: u64, decimal: bool) -> Result<Vec<Cell>, GridError> {
    if record.len() != columns.len() {
        return Err(GridError::new(
            format!("line[{line}]"),
            format!("has {} fields; the header has {}", record.len(), columns.len()),
        ));
    }
    columns
        .iter()
        .zip(record.iter())
        .map(|(c, v)| {
            let numeric = matches!(
                c.kind,
                ColumnType::Integer | ColumnType::Decimal | ColumnType::Currency | ColumnType::Percent
            );
            let v = if decimal && numeric {
                super::csv_input::decimal_comma(v)
            } else {
                v.into()
            };
            c.from_text(&v).map_err(|m| GridError::new(format!("line[{line}].{}", c.key), m))
        })
        .collect()
}

/// Turns `\r\n` into `\n` as the bytes go by. The csv crate counts a record that follows a
/// `\r\n` as starting on the line before (its `\r` ends the record, its `\n` is only then
/// seen), so with Windows line ends every error named the line above the one at fault. A
/// line break inside a quoted cell becomes `\n`, which is what Excel puts in a cell.
struct CrlfToLf<R> {
    inner: R,
    pending_cr: bool,
}

impl<R: BufRead> std::io::Read for CrlfToLf<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        let buf = self.inner.fill_buf()?;
        if buf.is_empty() {
            // A lone `\r` at the very end is kept.
            return Ok(if std::mem::take(&mut self.pending_cr) {
                out[0] = b'\r';
                1
            } else {
                0
            });
        }
        let mut n = 0;
        if std::mem::take(&mut self.pending_cr) && buf[0] != b'\n' {
            out[0] = b'\r';
            n = 1;
        }
        let mut used = 0;
        while used < buf.len() && n < out.len() {
            let b = buf[used];
            if b == b'\r' {
                match buf.get(used + 1) {
                    Some(b'\n') => {
                        used += 1;
                        continue;
                    }
                    Some(_) => {}
                    None => {
                        // Whether it ends a line is in the next buffer.
                        used += 1;
                        self.pending_cr = true;
                        break;
                    }
                }
            }
            out[n] = b;
            n += 1;
            used += 1;
        }
        self.inner.consume(used);
        if n == 0 {
            return self.read(out);
        }
        Ok(n)
    }
}

fn read_csv<R: BufRead + Send, S: SheetSink + Send>(
    input: R,
    opts: &ExportOptions,
    make: impl FnOnce(GridMeta) -> Result<S, ExportError>,
) -> Result<S, ExportError> {
    use super::csv_input::{Decoded, holds, sniff};
    let mut input = Decoded::new(input, opts.encoding.unwrap_or(encoding_rs::UTF_8));
    let head = input.fill_buf().map_err(|e| GridError::new("body", e.to_string()))?;
    let found = sniff(head);
    let delimiter = match opts.delimiter {
        Some(d) if !holds(head, d) && holds(head, found) && found != d => {
            return Err(GridError::new(
                "delimiter",
                format!(
                    "the header line holds no '{}' but does hold '{}': the file is '{}'-separated",
                    d as char, found as char, found as char
                )
                .replace('\t', "tab"),
            )
            .into());
        }
        Some(d) => d,
        None => found,
    };
    let decimal = opts.decimal_comma.unwrap_or(delimiter == b';');
    let input = CrlfToLf {
        inner: input,
        pending_cr: false,
    };
    let mut reader = csv::ReaderBuilder::new().flexible(true).delimiter(delimiter).from_reader(input);
    let csv_error = |e: csv::Error| {
        let line = e.position().map_or(0, |p| p.line());
        // Bytes not of the charset: the decoder said which it expected.
        if let csv::ErrorKind::Io(io) = e.kind()
            && io.kind() == std::io::ErrorKind::InvalidData
        {
            return GridError::new(format!("line[{line}]"), io.to_string());
        }
        GridError::new(format!("line[{line}]"), format!("is not valid CSV: {e}"))
    };
    let headers = reader.headers().map_err(csv_error)?.clone();
    if headers.is_empty() || headers.iter().all(str::is_empty) {
        return Err(GridError::new("line[1]", "the first line must be the header row").into());
    }
    // The first records are held back to infer types, then written like the rest.
    let mut sample = Vec::new();
    let mut records = reader.into_records();
    for record in records.by_ref().take(INFER_ROWS) {
        sample.push(record.map_err(csv_error)?);
    }
    let spec = SheetSpec {
        name: opts.sheet_name.clone(),
        columns: csv_columns(&headers, opts.columns.as_deref(), &sample, decimal)?,
        totals: BTreeMap::new(),
    };
    let sheet = spec.check("", "Sheet1")?;
    let meta = GridMeta {
        title: opts.title.clone(),
        key: opts.key.clone(),
        ..Default::default()
    };
    let sink = make(meta)?;
    let columns = &sheet.columns;
    write_in_parallel(sink, &sheet, move |rows| {
        let records = sample.into_iter().map(Ok).chain(records.map(|r| r.map_err(csv_error)));
        for record in records {
            let parsed = match record {
                Ok(record) => {
                    let line = record.position().map_or(0, |p| p.line());
                    (line, csv_row(columns, &record, line, decimal))
                }
                Err(e) => (0, Err(e)),
            };
            if !rows.push(parsed) {
                return;
            }
        }
    })
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
    fn crlf_becomes_lf_across_buffer_boundaries() {
        use std::io::Read;
        let text = "a,b\r\n1,2\r\n\"x\ry\",3\r\nlast\r";
        for cap in [1, 2, 3, 7, 64] {
            let mut r = CrlfToLf {
                inner: std::io::BufReader::with_capacity(cap, text.as_bytes()),
                pending_cr: false,
            };
            let mut out = String::new();
            r.read_to_string(&mut out).unwrap();
            assert_eq!(out, "a,b\n1,2\n\"x\ry\",3\nlast\r", "buffer of {cap}");
        }
    }

    #[test]
    fn inference_keeps_long_ids_and_scientific_codes_as_text() {
        // Issue 19: 9007199254740993 became …992 and 12345678901234567890 became …567000.
        assert_eq!(infer_type(&["9007199254740993", "12345678901234567890"]), ColumnType::Text);
        assert_eq!(infer_type(&["1234567890123456"]), ColumnType::Text, "16 digits: Excel shows 15");
        assert_eq!(infer_type(&["123456789012345"]), ColumnType::Integer);
        assert_eq!(infer_type(&["0.123456789012345"]), ColumnType::Decimal);
        assert_eq!(infer_type(&["1E5", "2E10"]), ColumnType::Text);
        assert_eq!(
            infer_type(&["100", "2E3"]),
            ColumnType::Text,
            "one code in the column makes it text"
        );
        assert_eq!(infer_type(&["  https://lead.example.com/so/7  "]), ColumnType::Hyperlink);
    }

    #[test]
    fn json_rows_as_arrays_and_objects() {
        let spec: SheetSpec =
            serde_json::from_value(serde_json::json!({"columns": [{"key": "a", "type": "integer"}, {"key": "b", "type": "text"}]}))
                .unwrap();
        let sheet = spec.check("", "S").unwrap();
        let keys = column_keys(&sheet.columns);
        let json_row = |columns: &[Column], v: &serde_json::Value, at: &str| json_row(columns, &keys, &v.to_string(), at);
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
