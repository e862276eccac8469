//! `officebridge export` and `officebridge import`.

use super::{ExportArgs, ImportArgs};
use crate::export::import::{ImportRequest, import as read_workbook, import_columns};
use crate::export::read::{ExportOptions, InputFormat, export as run_export, parse_grid_document};
use anyhow::{Context, bail};
use std::io::{BufReader, IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Shows rows written and rows per second on a terminal; nothing otherwise.
struct Progress {
    done: Arc<AtomicBool>,
    ticker: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    fn start(counter: Arc<AtomicU64>) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let ticker = std::io::stderr().is_terminal().then(|| {
            let done = done.clone();
            std::thread::spawn(move || {
                let bar = indicatif::ProgressBar::new_spinner();
                bar.set_style(
                    indicatif::ProgressStyle::with_template("{spinner} {human_pos} rows written ({per_sec}, {elapsed})")
                        .expect("valid template"),
                );
                while !done.load(Ordering::Relaxed) {
                    bar.set_position(counter.load(Ordering::Relaxed));
                    std::thread::sleep(Duration::from_millis(100));
                }
                bar.set_position(counter.load(Ordering::Relaxed));
                bar.finish();
            })
        });
        Self { done, ticker }
    }

    fn stop(mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
    }
}

fn open_input(path: &Path) -> anyhow::Result<Box<dyn Read + Send>> {
    if path.as_os_str() == "-" {
        Ok(Box::new(std::io::stdin()))
    } else {
        Ok(Box::new(
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
        ))
    }
}

/// Writes the workbook and answers what was written.
pub fn export(args: ExportArgs) -> anyhow::Result<crate::export::writer::Report> {
    let stdin = args.input.as_os_str() == "-";
    let format = match (args.format, InputFormat::from_path(&args.input)) {
        (Some(f), _) | (None, Some(f)) => f,
        (None, None) if stdin => bail!("reading standard input needs --format json|ndjson|csv"),
        (None, None) => bail!(
            "cannot tell the format of {} from its extension; give --format json|ndjson|csv",
            args.input.display()
        ),
    };
    let output = match (&args.output, stdin) {
        (Some(o), _) => o.clone(),
        (None, false) => args.input.with_extension("xlsx"),
        (None, true) => bail!("writing from standard input needs -o OUT.xlsx"),
    };
    let stem = |p: &Path| p.file_stem().map(|s| s.to_string_lossy().into_owned());
    use crate::export::csv_input;
    let opts = ExportOptions {
        columns: args.columns.clone(),
        sheet_name: args.sheet.clone().or_else(|| if stdin { None } else { stem(&args.input) }),
        title: if stdin { None } else { stem(&args.input) },
        encoding: args
            .encoding
            .as_deref()
            .map(csv_input::encoding)
            .transpose()
            .map_err(|m| anyhow::anyhow!("--encoding: {m}"))?,
        delimiter: args
            .delimiter
            .as_deref()
            .map(csv_input::delimiter)
            .transpose()
            .map_err(|m| anyhow::anyhow!("--delimiter: {m}"))?,
        decimal_comma: args
            .decimal
            .as_deref()
            .map(csv_input::decimal)
            .transpose()
            .map_err(|m| anyhow::anyhow!("--decimal: {m}"))?,
        ..Default::default()
    };
    // Written beside the target and renamed into place only when complete, so a failed export
    // never leaves something that looks like a workbook.
    let dir = output
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let partial = tempfile::Builder::new()
        .prefix(".officebridge-export-")
        .suffix(".partial")
        .tempfile_in(&dir)?;
    let counter = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(counter.clone());
    let input = BufReader::with_capacity(1 << 16, open_input(&args.input)?);
    let result = run_export(format, input, partial.as_file(), &opts, counter);
    progress.stop();
    let report = result.map_err(|e| anyhow::anyhow!("{e}"))?;
    partial
        .persist(&output)
        .with_context(|| format!("cannot write {}", output.display()))?;
    // The temporary file was private (0600); the workbook is an ordinary file.
    #[cfg(unix)]
    std::fs::set_permissions(&output, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    eprintln!("wrote {} rows to {} ({})", report.rows, output.display(), report.sheets.join(", "));
    for note in &report.notes {
        eprintln!("note: {} row {} column {}: {}", note.sheet, note.row, note.column, note.message);
    }
    if report.notes_omitted > 0 {
        eprintln!("note: {} more notes omitted", report.notes_omitted);
    }
    Ok(report)
}

pub fn import(args: ImportArgs) -> anyhow::Result<()> {
    let original = match &args.original {
        Some(path) => Some(parse_grid_document(BufReader::new(open_input(path)?)).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?),
        None => None,
    };
    // The files are the operator's own; the server's default bounds still keep a bad one from
    // taking the machine's memory.
    let limits = crate::config::ImportSettings::default();
    let (columns, original_rows) =
        import_columns(args.columns.as_deref(), original.as_ref(), args.sheet.as_deref(), &limits).map_err(|e| anyhow::anyhow!("{e}"))?;
    let file = std::fs::File::open(&args.workbook).with_context(|| format!("cannot open {}", args.workbook.display()))?;
    let req = ImportRequest {
        columns: &columns,
        sheet: args.sheet.as_deref(),
        key: args.key.as_deref(),
        original: original_rows.as_deref(),
        limits: &limits,
        deadline: None,
    };
    let result = read_workbook(BufReader::new(file), &req).map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("{}", serde_json::to_string_pretty(&result)?);
    eprintln!(
        "{} rows read from sheet '{}', {} problem(s)",
        result.rows.len(),
        result.sheet,
        result.problems.len()
    );
    Ok(())
}
