//! The export engine: ERP grids (JSON, NDJSON, CSV) to typed XLSX in bounded memory, and
//! edited workbooks back. Knows nothing of HTTP or the database.

/// Reading edited workbooks back, with problems and the change set.
/// CSV as Excel writes it: charsets, delimiters, decimal commas.
pub mod csv_input;
pub mod import;
/// Exports off the async runtime: bounded concurrency, background jobs, expiry.
pub mod jobs;
/// Columns, types, cells and Excel's limits.
pub mod model;
/// The JSON, NDJSON and CSV readers, and [`read::export`], the whole pipeline.
pub mod read;
/// Parallel deflate of the workbook's zip, between rust_xlsxwriter and the output.
pub mod repack;
/// The constant-memory XLSX writer.
pub mod writer;
