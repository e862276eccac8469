//! The XLSX writer: rust_xlsxwriter in constant-memory mode, so a grid of any length is
//! written with bounded memory (each row goes to a temporary file as soon as the next starts).

use super::model::{Cell, Column, GridError, GridMeta, Overflow, Sheet, Total, display_width, limits};
use super::repack::Repack;
use rust_xlsxwriter::{DocProperties, Format, Formula, Table, TableColumn, Url, Workbook, Worksheet, XlsxError};
use serde::Serialize;
use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why an export stopped: the grid's fault (a 422 at the HTTP edge), or ours.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Grid(#[from] GridError),
    #[error("writing the workbook failed: {0}")]
    Write(#[from] XlsxError),
    #[error("reading the grid failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Something the writer changed in a cell rather than refuse the grid.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Note {
    pub sheet: String,
    /// 1-based data row of the grid (the header is not counted).
    pub row: u64,
    pub column: String,
    pub message: String,
}

/// A file name stem from a title that is valid in a header, on a file system and in OneDrive
/// (which refuses `" * : < > ? / \ |`): at most 120 characters, `export` when nothing is left.
pub fn file_stem(title: &str) -> String {
    let base: String = title
        .chars()
        .filter(|c| !c.is_control() && !is_format_char(*c) && !"/\\:*?\"<>|".contains(*c))
        .collect::<String>()
        .trim()
        .chars()
        .take(120)
        .collect();
    if base.is_empty() { "export".to_string() } else { base }
}

/// Unicode format characters (general category Cf) that can disguise a file name: the bidi
/// overrides and isolates (U+202E turns `gpj.exe` into what reads as `exe.jpg`), zero-width
/// characters and joiners, the word joiner and invisible operators, the BOM, soft hyphen,
/// Arabic letter mark and Mongolian vowel separator, and the tag characters.
fn is_format_char(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{206F}'
        | '\u{FEFF}'
        | '\u{FFF9}'..='\u{FFFB}'
        | '\u{E0000}'..='\u{E007F}')
}

/// What was written.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct Report {
    /// The workbook's title property, if the grid gave one.
    pub title: Option<String>,
    /// Data rows written, over all sheets.
    pub rows: u64,
    /// The worksheet names, continuation sheets included.
    pub sheets: Vec<String>,
    /// Cells changed on the way (truncated strings, links written as text). The first 1,000.
    pub notes: Vec<Note>,
    /// How many notes did not fit in `notes`.
    pub notes_omitted: u64,
}

impl Report {
    /// The workbook's file name: its title, else its first sheet's, made safe by [`file_stem`].
    pub fn file_name(&self) -> String {
        let name = self
            .title
            .as_deref()
            .or(self.sheets.first().map(String::as_str))
            .unwrap_or("export");
        format!("{}.xlsx", file_stem(name))
    }

    fn note(&mut self, sheet: &str, row: u64, column: &str, message: impl Into<String>) {
        if self.notes.len() < 1000 {
            self.notes.push(Note {
                sheet: sheet.to_string(),
                row,
                column: column.to_string(),
                message: message.into(),
            });
        } else {
            self.notes_omitted += 1;
        }
    }
}

/// Makes a name Excel accepts: no `: \ / ? * [ ]`, no leading or trailing apostrophe, at most
/// 31 characters, never the reserved `History`, never empty.
pub fn clean_sheet_name(raw: &str) -> String {
    let cleaned: String = raw
        .chars()
        .map(|c| if ":\\/?*[]".contains(c) || c.is_control() { '_' } else { c })
        .collect();
    let cleaned = cleaned.trim().trim_matches('\'').trim();
    let mut name: String = cleaned.chars().take(limits::MAX_SHEET_NAME_CHARS).collect();
    if name.trim().is_empty() {
        name = "Sheet".into();
    }
    if name.eq_ignore_ascii_case("history") {
        name.push('_');
    }
    name
}

/// Hands out worksheet names, unique without regard to case as Excel requires.
#[derive(Default)]
struct SheetNames(HashSet<String>);

impl SheetNames {
    /// `base` (already clean) or `base (2)`, `base (3)`, … — cutting `base` so the suffix fits.
    fn unique(&mut self, base: &str, start: u32) -> String {
        let mut n = start;
        loop {
            let candidate = if n <= 1 {
                base.to_string()
            } else {
                let suffix = format!(" ({n})");
                let keep = limits::MAX_SHEET_NAME_CHARS - suffix.chars().count();
                format!("{}{suffix}", base.chars().take(keep).collect::<String>().trim_end())
            };
            if self.0.insert(candidate.to_lowercase()) {
                return candidate;
            }
            n += 1;
        }
    }
}

/// Running aggregates for one totals column, so the totals row carries cached results that
/// readers without a calculation engine (calamine, previews) can show.
#[derive(Clone, Copy)]
struct Aggregate {
    total: Total,
    col: usize,
    sum: f64,
    count: u64,
    min: f64,
    max: f64,
}

impl Aggregate {
    fn new(col: usize, total: Total) -> Self {
        Self {
            total,
            col,
            sum: 0.0,
            count: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }

    /// A cell that is not a number: only a count (`SUBTOTAL(103, …)`, which counts every
    /// non-empty cell) sees it.
    fn add_other(&mut self) {
        self.count += 1;
    }

    fn add(&mut self, x: f64) {
        self.sum += x;
        self.count += 1;
        self.min = self.min.min(x);
        self.max = self.max.max(x);
    }

    fn result(&self) -> f64 {
        match self.total {
            Total::Sum => self.sum,
            Total::Count => self.count as f64,
            Total::Average if self.count > 0 => self.sum / self.count as f64,
            Total::Min if self.count > 0 => self.min,
            Total::Max if self.count > 0 => self.max,
            _ => 0.0,
        }
    }
}

fn count_other(aggregates: &mut [Aggregate], col: usize) {
    for agg in aggregates.iter_mut().filter(|a| a.col == col) {
        agg.add_other();
    }
}

/// How many rows are looked at to size the columns: enough to be representative, few
/// enough that a million-row export does not pay for it.
const WIDTH_SAMPLE_ROWS: u64 = 1000;

/// An upper bound of a sheet's XML, kept as rows are written, decides whether the workbook
/// needs ZIP64 records: a part of 4 GiB or more cannot be stored without them, and with them
/// LibreOffice (7.4) refuses the whole file — so they are used only when a sheet could need them.
mod xml_bound {
    /// A row's own tags: `<row r="1048576" spans="1:16384" ...>` and `</row>`.
    pub const ROW: u64 = 96;
    /// A cell's tags, text aside: `<c r="XFD1048576" s="65535" t="inlineStr"><is><t
    /// xml:space="preserve">` and the closing tags; a number's up-to-24 characters fit too.
    pub const CELL: u64 = 96;
    /// A byte of text escaped takes at most 7 bytes (`_x001F_` for a control character).
    pub const TEXT_FACTOR: u64 = 7;
    /// Everything in a sheet's XML but its rows: dimension, columns, pane, filter, the list of
    /// up to 65,530 hyperlinks.
    pub const SHEET: u64 = 16 << 20;
}

/// One open worksheet and what is known about it.
struct OpenSheet {
    name: String,
    /// The worksheet's index in the workbook (cheaper than looking it up by name per row).
    index: usize,
    rows: u32,
    hyperlinks: u32,
    widths: Vec<usize>,
    aggregates: Vec<Aggregate>,
    /// At least as many bytes as the sheet's XML (see [`xml_bound`]).
    xml_bound: u64,
}

/// Writes grids into one workbook.
///
/// # Examples
///
/// ```
/// use officebridge::export::{model::*, writer::XlsxExport};
/// let spec: SheetSpec = serde_json::from_value(serde_json::json!({
///     "name": "Orders", "columns": [{"key": "qty", "type": "integer"}]
/// })).unwrap();
/// let sheet = spec.check("", "Sheet1").unwrap();
/// let mut export = XlsxExport::new(GridMeta::default());
/// export.write_sheet(&sheet, vec![Ok(vec![Cell::Number(3.0)])], &|i| format!("rows[{i}]")).unwrap();
/// let mut out = std::io::Cursor::new(Vec::new());
/// let report = export.save(&mut out).unwrap();
/// assert_eq!(report.rows, 1);
/// ```
pub struct XlsxExport {
    workbook: Workbook,
    meta: GridMeta,
    names: SheetNames,
    report: Report,
    progress: Arc<AtomicU64>,
    max_rows: u32,
    /// A sheet whose XML may reach this many bytes makes the workbook use ZIP64 records.
    zip64_from: u64,
    /// Threads `save` deflates on, through [`Repack`]; with one, the crate deflates itself
    /// (there the repack would only add work).
    deflate_threads: usize,
}

impl XlsxExport {
    pub fn new(meta: GridMeta) -> Self {
        let mut workbook = Workbook::new();
        let mut props = DocProperties::new();
        if let Some(t) = &meta.title {
            props = props.set_title(t);
        }
        if let Some(a) = &meta.author {
            props = props.set_author(a);
        }
        if let Some(c) = &meta.company {
            props = props.set_company(c);
        }
        workbook.set_properties(&props);
        let report = Report {
            title: meta.title.clone(),
            ..Report::default()
        };
        Self {
            workbook,
            meta,
            names: SheetNames::default(),
            report,
            progress: Arc::default(),
            max_rows: limits::MAX_ROWS,
            zip64_from: u64::from(u32::MAX),
            deflate_threads: std::thread::available_parallelism().map_or(1, usize::from),
        }
    }

    /// Counts written rows into `counter` (shared with whoever reports progress).
    pub fn set_progress(&mut self, counter: Arc<AtomicU64>) {
        self.progress = counter;
    }

    /// Puts the per-sheet temporary files in `dir` instead of the system temp folder
    /// (which may be a RAM disk, defeating constant memory).
    pub fn set_tempdir(&mut self, dir: &Path) -> Result<(), ExportError> {
        self.workbook.set_tempdir(dir)?;
        Ok(())
    }

    /// Lowers the rows-per-sheet limit (tests exercise continuation sheets with it).
    pub fn set_max_rows(&mut self, rows: u32) {
        self.max_rows = rows.clamp(3, limits::MAX_ROWS);
    }

    /// Lowers the sheet size from which ZIP64 records are used (tests exercise them with it;
    /// the default is 4 GiB, where a zip without them ends).
    pub fn set_zip64_threshold(&mut self, bytes: u64) {
        self.zip64_from = bytes;
    }

    /// Sets the threads the workbook is deflated on (by default one per core; tests exercise
    /// one and several with it).
    pub fn set_deflate_threads(&mut self, threads: usize) {
        self.deflate_threads = threads;
    }

    /// A column's header cell. An Excel table names every column, `Column1` where the header
    /// is empty: the cell says the same, or the table and its header row would disagree.
    fn header_text(table: bool, index: usize, header: &str) -> String {
        if table && header.trim().is_empty() {
            format!("Column{}", index + 1)
        } else {
            header.to_string()
        }
    }

    fn open_sheet(&mut self, sheet: &Sheet, part: u32, header: &Format) -> Result<OpenSheet, ExportError> {
        let name = self.names.unique(&clean_sheet_name(&sheet.name), part);
        let table = self.meta.options.table;
        let ws = self.workbook.add_worksheet_with_constant_memory()?;
        ws.set_name(&name)?;
        for (c, column) in sheet.columns.iter().enumerate() {
            // A column format is applied to every unformatted cell the column gets, which
            // saves a format lookup per cell (measured: ~11% of the write time).
            if let Some(fmt) = column.number_format() {
                ws.set_column_format(c as u16, &Format::new().set_num_format(fmt))?;
            }
            ws.write_string_with_format(0, c as u16, Self::header_text(table, c, &column.header), header)?;
        }
        ws.set_freeze_panes(1, 0)?;
        self.report.sheets.push(name.clone());
        Ok(OpenSheet {
            name,
            index: self.report.sheets.len() - 1,
            rows: 0,
            hyperlinks: 0,
            widths: sheet.columns.iter().map(|c| c.header.chars().count() + 2).collect(),
            aggregates: sheet.totals.iter().map(|(c, t)| Aggregate::new(*c, *t)).collect(),
            xml_bound: xml_bound::SHEET + (xml_bound::ROW + xml_bound::CELL * sheet.columns.len() as u64) * 2,
        })
    }

    fn close_sheet(&mut self, sheet: &Sheet, open: OpenSheet, bold: &Format) -> Result<(), ExportError> {
        if open.xml_bound >= self.zip64_from {
            self.workbook.use_zip_large_file(true);
        }
        let ws: &mut Worksheet = self.workbook.worksheet_from_index(open.index)?;
        let last_col = (sheet.columns.len() - 1) as u16;
        let last_data = open.rows; // header is row 0
        if open.rows > 0 && !open.aggregates.is_empty() {
            let row = last_data + 1;
            if sheet.totals.first().is_none_or(|(c, _)| *c != 0) {
                ws.write_string_with_format(row, 0, "Total", bold)?;
            }
            for agg in &open.aggregates {
                let range = rust_xlsxwriter::utility::cell_range(1, agg.col as u16, last_data, agg.col as u16);
                let formula = Formula::new(format!("SUBTOTAL({},{range})", agg.total.subtotal_code())).set_result(agg.result().to_string());
                // A count is a plain number whatever it counts; the other totals look like their column.
                let format = match (agg.total, sheet.columns[agg.col].number_format()) {
                    (Total::Count, _) | (_, None) => bold.clone(),
                    (_, Some(f)) => bold.clone().set_num_format(f),
                };
                ws.write_formula_with_format(row, agg.col as u16, formula, &format)?;
            }
        }
        if self.meta.options.table {
            let columns: Vec<TableColumn> = sheet
                .columns
                .iter()
                .enumerate()
                .map(|(i, c)| TableColumn::new().set_header(Self::header_text(true, i, &c.header)))
                .collect();
            ws.add_table(0, 0, last_data.max(1), last_col, &Table::new().set_columns(&columns))?;
        } else {
            ws.autofilter(0, 0, last_data, last_col)?;
        }
        for (c, column) in sheet.columns.iter().enumerate() {
            let width = column.width.unwrap_or_else(|| open.widths[c].clamp(8, 60) as f64 + 1.0);
            ws.set_column_width(c as u16, width)?;
        }
        Ok(())
    }

    /// Writes one grid sheet. `rows` yields each row's cells in column order; `locate` names
    /// a 0-based row for error messages (`sheets[0].rows[12]`, `line[14]`).
    pub fn write_sheet<I>(&mut self, sheet: &Sheet, rows: I, locate: &dyn Fn(u64) -> String) -> Result<(), ExportError>
    where
        I: IntoIterator<Item = Result<Vec<Cell>, GridError>>,
    {
        if self.meta.options.table {
            let mut headers = HashSet::new();
            if let Some(dup) = sheet.columns.iter().find(|c| !headers.insert(c.header.to_lowercase())) {
                return Err(GridError::new("table", format!("an Excel table needs unique headers; '{}' repeats", dup.header)).into());
            }
        }
        let header = Format::new().set_bold();
        let data_rows_per_sheet = self.max_rows - 1 - u32::from(!sheet.totals.is_empty());
        let mut part = 1;
        let mut open = self.open_sheet(sheet, part, &header)?;
        let mut index: u64 = 0;
        for row in rows {
            let cells = row?;
            if cells.len() != sheet.columns.len() {
                return Err(GridError::new(
                    locate(index),
                    format!("has {} cells; the sheet has {} columns", cells.len(), sheet.columns.len()),
                )
                .into());
            }
            if open.rows == data_rows_per_sheet {
                if self.meta.options.overflow == Overflow::Error {
                    return Err(GridError::new(
                        locate(index),
                        format!("the grid has more than {data_rows_per_sheet} rows, Excel's limit per sheet (set overflow to continue for continuation sheets)"),
                    )
                    .into());
                }
                self.close_sheet(sheet, open, &header)?;
                part += 1;
                open = self.open_sheet(sheet, part, &header)?;
            }
            open.rows += 1;
            self.write_row(sheet, &mut open, index, cells, locate)?;
            index += 1;
            self.progress.fetch_add(1, Ordering::Relaxed);
        }
        self.report.rows += index;
        self.close_sheet(sheet, open, &header)
    }

    fn write_row(
        &mut self,
        sheet: &Sheet,
        open: &mut OpenSheet,
        index: u64,
        cells: Vec<Cell>,
        locate: &dyn Fn(u64) -> String,
    ) -> Result<(), ExportError> {
        let r = open.rows;
        let sample = index < WIDTH_SAMPLE_ROWS;
        let truncate = self.meta.options.truncate;
        let ws = self.workbook.worksheet_from_index(open.index)?;
        let mut text_bytes = 0;
        open.xml_bound += xml_bound::ROW + xml_bound::CELL * cells.len() as u64;
        for (c, cell) in cells.into_iter().enumerate() {
            let column: &Column = &sheet.columns[c];
            if sample {
                open.widths[c] = open.widths[c].max(display_width(&cell, column));
            }
            let col = c as u16;
            match cell {
                Cell::Empty => {}
                Cell::Number(x) | Cell::Serial(x) => {
                    ws.write_number(r, col, x)?;
                    for agg in open.aggregates.iter_mut().filter(|a| a.col == c) {
                        agg.add(x);
                    }
                }
                Cell::Bool(b) => {
                    ws.write_boolean(r, col, b)?;
                    count_other(&mut open.aggregates, c);
                }
                Cell::Text(mut s) => {
                    // Byte length bounds the character count, so most strings skip the count.
                    if s.len() > limits::MAX_CELL_CHARS && s.chars().count() > limits::MAX_CELL_CHARS {
                        let chars = s.chars().count();
                        if !truncate {
                            return Err(GridError::new(
                                format!("{}.{}", locate(index), column.key),
                                format!(
                                    "is {chars} characters long; an Excel cell holds at most {} (set truncate to cut it)",
                                    limits::MAX_CELL_CHARS
                                ),
                            )
                            .into());
                        }
                        s = s.chars().take(limits::MAX_CELL_CHARS).collect();
                        self.report.note(
                            &open.name,
                            index + 1,
                            &column.key,
                            format!("truncated from {chars} to {} characters", limits::MAX_CELL_CHARS),
                        );
                    }
                    // Always a string cell: "=SUM(A1)", "+1", "@cmd" stay text, never formulas.
                    text_bytes += s.len();
                    ws.write_string(r, col, s)?;
                    count_other(&mut open.aggregates, c);
                }
                Cell::Url(u) => {
                    text_bytes += u.len();
                    count_other(&mut open.aggregates, c);
                    let fits = u.chars().count() <= limits::MAX_URL_CHARS && open.hyperlinks < limits::MAX_HYPERLINKS;
                    // The cell shows the value as given: rust_xlsxwriter would show `mailto:`
                    // links without their scheme, and an untouched workbook would import as
                    // changed.
                    if fits && ws.write_url(r, col, Url::new(&u).set_text(&u)).is_ok() {
                        open.hyperlinks += 1;
                    } else {
                        let why = if open.hyperlinks >= limits::MAX_HYPERLINKS {
                            format!("written as text: Excel allows {} hyperlinks per sheet", limits::MAX_HYPERLINKS)
                        } else {
                            "written as text: Excel does not accept this URL as a link".to_string()
                        };
                        self.report.note(&open.name, index + 1, &column.key, why);
                        let text: String = u.chars().take(limits::MAX_CELL_CHARS).collect();
                        ws.write_string(r, col, text)?;
                    }
                }
            }
        }
        open.xml_bound += xml_bound::TEXT_FACTOR * text_bytes as u64;
        Ok(())
    }

    /// Finishes the workbook into `out` and returns what was written.
    pub fn save<W: Write + Send>(mut self, out: W) -> Result<Report, ExportError> {
        if self.deflate_threads <= 1 {
            self.workbook.save_to_writer(out)?;
            return Ok(self.report);
        }
        // The crate's own deflate pass only has to be quick: `Repack` inflates each part and
        // deflates it again, at the default level, on every core.
        self.workbook.set_zip_compression_level(1);
        let mut repack = Repack::new(out, self.deflate_threads);
        self.workbook.save_to_writer(&mut repack)?;
        repack.finish()?;
        Ok(self.report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::model::SheetSpec;

    #[test]
    fn sheet_names_are_cleaned_cut_and_made_unique() {
        assert_eq!(clean_sheet_name("Sales: Q1/Q2 [draft]?"), "Sales_ Q1_Q2 _draft__");
        assert_eq!(clean_sheet_name("'quoted'"), "quoted");
        assert_eq!(clean_sheet_name("history"), "history_");
        assert_eq!(clean_sheet_name("   "), "Sheet");
        assert_eq!(clean_sheet_name(&"x".repeat(40)).chars().count(), 31);
        let mut names = SheetNames::default();
        assert_eq!(names.unique("Orders", 1), "Orders");
        assert_eq!(names.unique("orders", 1), "orders (2)");
        assert_eq!(names.unique("Orders", 2), "Orders (3)");
        let long = "y".repeat(31);
        assert_eq!(names.unique(&long, 1), long);
        let second = names.unique(&long, 1);
        assert_eq!(second.chars().count(), 31);
        assert!(second.ends_with(" (2)"));
    }

    /// The length of each part's local-header extra field: 0 without ZIP64 records, 20 with.
    fn local_extra_lengths(zip: &[u8]) -> Vec<u16> {
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip)).unwrap();
        (0..archive.len())
            .map(|i| {
                let at = archive.by_index_raw(i).unwrap().header_start() as usize;
                u16::from_le_bytes([zip[at + 28], zip[at + 29]])
            })
            .collect()
    }

    fn export_with(threshold: Option<u64>, deflate_threads: usize) -> Vec<u8> {
        let spec: SheetSpec = serde_json::from_value(serde_json::json!({
            "name": "Orders", "columns": [{"key": "id", "type": "text"}, {"key": "qty", "type": "integer"}]
        }))
        .unwrap();
        let sheet = spec.check("", "Sheet1").unwrap();
        let mut export = XlsxExport::new(GridMeta::default());
        if let Some(bytes) = threshold {
            export.set_zip64_threshold(bytes);
        }
        export.set_deflate_threads(deflate_threads);
        let rows = (0..100).map(|i| Ok(vec![Cell::Text(format!("SO-{i}")), Cell::Number(f64::from(i))]));
        export.write_sheet(&sheet, rows, &|i| format!("rows[{i}]")).unwrap();
        let mut out = Vec::new();
        export.save(&mut out).unwrap();
        out
    }

    #[test]
    fn zip64_records_only_when_a_sheet_could_pass_4_gib_with_or_without_parallel_deflate() {
        // LibreOffice 7.4 cannot open a workbook whose parts carry ZIP64 records.
        let plain = export_with(None, 2);
        assert!(
            local_extra_lengths(&plain).iter().all(|&n| n == 0),
            "{:?}",
            local_extra_lengths(&plain)
        );
        // A sheet whose bound reaches the threshold switches the whole workbook to them; the
        // bound of 100 short rows is far above 1 KiB and far below 4 GiB.
        let large = export_with(Some(1024), 2);
        assert!(
            local_extra_lengths(&large).iter().all(|&n| n == 20),
            "{:?}",
            local_extra_lengths(&large)
        );
        let sheet = |zip: &[u8]| {
            let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip)).unwrap();
            let mut xml = String::new();
            std::io::Read::read_to_string(&mut archive.by_name("xl/worksheets/sheet1.xml").unwrap(), &mut xml).unwrap();
            xml
        };
        assert_eq!(sheet(&plain), sheet(&large), "the same sheet either way");
        // On one core the crate deflates on its own, at the default level: the same parts.
        for threshold in [None, Some(1024)] {
            let single = export_with(threshold, 1);
            let parallel = export_with(threshold, 2);
            assert_eq!(local_extra_lengths(&single), local_extra_lengths(&parallel));
            assert_eq!(sheet(&single), sheet(&parallel));
        }
    }
}
