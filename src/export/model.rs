//! The grid model: columns, their types, and how a raw value becomes a typed cell.

use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Excel's hard limits (support.microsoft.com, "Excel specifications and limits").
pub mod limits {
    /// Rows per worksheet, header included.
    pub const MAX_ROWS: u32 = 1_048_576;
    /// Columns per worksheet.
    pub const MAX_COLUMNS: usize = 16_384;
    /// Characters in one cell.
    pub const MAX_CELL_CHARS: usize = 32_767;
    /// Hyperlinks per worksheet.
    pub const MAX_HYPERLINKS: u32 = 65_530;
    /// Characters in a hyperlink's URL.
    pub const MAX_URL_CHARS: usize = 2_079;
    /// Characters in a sheet name.
    pub const MAX_SHEET_NAME_CHARS: usize = 31;
    /// Integers beyond 15 significant digits lose precision in Excel's doubles.
    pub const MAX_EXACT_INTEGER: i64 = 999_999_999_999_999;
}

/// A column's type, which decides the cell type and number format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    Text,
    Integer,
    Decimal,
    Currency,
    Percent,
    Date,
    Datetime,
    Time,
    Boolean,
    Hyperlink,
}

impl ColumnType {
    pub const ALL: [ColumnType; 10] = [
        Self::Text,
        Self::Integer,
        Self::Decimal,
        Self::Currency,
        Self::Percent,
        Self::Date,
        Self::Datetime,
        Self::Time,
        Self::Boolean,
        Self::Hyperlink,
    ];

    pub fn parse(raw: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == raw.trim().to_ascii_lowercase())
            .ok_or_else(|| {
                format!(
                    "unknown column type '{raw}'; expected one of: {}",
                    Self::ALL.map(|t| t.as_str()).join(", ")
                )
            })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Integer => "integer",
            Self::Decimal => "decimal",
            Self::Currency => "currency",
            Self::Percent => "percent",
            Self::Date => "date",
            Self::Datetime => "datetime",
            Self::Time => "time",
            Self::Boolean => "boolean",
            Self::Hyperlink => "hyperlink",
        }
    }

    fn is_numeric(self) -> bool {
        matches!(self, Self::Integer | Self::Decimal | Self::Currency | Self::Percent)
    }
}

/// A column as the grid document declares it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    pub key: String,
    #[serde(default)]
    pub header: Option<String>,
    #[serde(rename = "type")]
    pub kind: String,
    /// ISO 4217 code, for `currency`.
    #[serde(default)]
    pub currency: Option<String>,
    /// Digits after the decimal point, for `decimal`, `currency` and `percent`.
    #[serde(default)]
    pub decimals: Option<u8>,
    /// Column width in characters; computed from the data when absent.
    #[serde(default)]
    pub width: Option<f64>,
    /// How `date` and `datetime` values are written in the input when not ISO 8601:
    /// `DD/MM/YYYY`, `MM/DD/YYYY`, `D.M.YYYY`, `DD/MM/YYYY hh:mm[:ss]`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

/// A checked column.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub key: String,
    pub header: String,
    pub kind: ColumnType,
    pub currency: Option<String>,
    pub decimals: u8,
    pub width: Option<f64>,
    /// A `date`/`datetime` column's input format: as declared, and as chrono parses it.
    pub date_format: Option<DateFormat>,
}

/// A date format as declared (`DD/MM/YYYY`) and as chrono parses it (`%d/%m/%Y`).
#[derive(Debug, Clone, PartialEq)]
pub struct DateFormat {
    pub declared: String,
    chrono: String,
}

impl DateFormat {
    /// Reads `DD`/`D` (day), `MM`/`M` (month), `YYYY`/`YY` (year), `hh`/`HH`, `mm`, `ss` and the
    /// separators `/ . - : ,` space and `T`; `datetime` says whether a time may be in it.
    ///
    /// # Errors
    ///
    /// What is wrong with it, for a 422 naming the column's `format`.
    pub fn parse(declared: &str, datetime: bool) -> Result<Self, String> {
        let mut chrono = String::new();
        let mut rest = declared.trim();
        let (mut day, mut month, mut year, mut time) = (false, false, false, false);
        while !rest.is_empty() {
            let tokens: [(&str, &str); 11] = [
                ("YYYY", "%Y"),
                ("YY", "%y"),
                ("DD", "%d"),
                ("D", "%d"),
                ("MM", "%m"),
                ("M", "%m"),
                ("hh", "%H"),
                ("HH", "%H"),
                ("mm", "%M"),
                ("ss", "%S"),
                ("T", "T"),
            ];
            if let Some((t, c)) = tokens.iter().find(|(t, _)| rest.starts_with(t)) {
                match *t {
                    "YYYY" | "YY" => year = true,
                    "DD" | "D" => day = true,
                    "MM" | "M" => month = true,
                    "hh" | "HH" | "mm" | "ss" => time = true,
                    _ => {}
                }
                chrono.push_str(c);
                rest = &rest[t.len()..];
                continue;
            }
            let ch = rest.chars().next().expect("not empty");
            if !"/.-:, ".contains(ch) {
                return Err(format!(
                    "'{declared}' is not a date format: use DD, MM, YYYY (or D, M, YY), hh, mm, ss and the separators / . - : , space"
                ));
            }
            chrono.push(ch);
            rest = &rest[ch.len_utf8()..];
        }
        if !(day && month && year) {
            return Err(format!("'{declared}' does not say the day, the month and the year (DD, MM, YYYY)"));
        }
        if time && !datetime {
            return Err(format!(
                "'{declared}' has a time, which a date column does not hold (declare it datetime)"
            ));
        }
        Ok(Self {
            declared: declared.trim().to_string(),
            chrono,
        })
    }

    fn date(&self, s: &str) -> Result<NaiveDate, String> {
        NaiveDate::parse_from_str(s.trim(), &self.chrono)
            .map_err(|_| format!("'{}' does not match the column's date format {}", clip(s), self.declared))
    }

    /// The format's date part, for a `datetime` value given without its time.
    fn date_part(&self) -> &str {
        match self.chrono.find("%H") {
            Some(i) => self.chrono[..i].trim_end_matches([' ', 'T', ',', '-', ':']),
            None => &self.chrono,
        }
    }

    fn datetime(&self, s: &str) -> Result<NaiveDateTime, String> {
        let s = s.trim();
        NaiveDateTime::parse_from_str(s, &self.chrono)
            .or_else(|_| NaiveDate::parse_from_str(s, self.date_part()).map(|d| d.and_hms_opt(0, 0, 0).expect("midnight")))
            .map_err(|_| format!("'{}' does not match the column's date format {}", clip(s), self.declared))
    }
}

/// An aggregate for a totals row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Total {
    Sum,
    Average,
    Count,
    Min,
    Max,
}

impl Total {
    /// The SUBTOTAL function number: the 10x forms ignore rows hidden by the autofilter,
    /// so the total follows what the user filtered.
    pub fn subtotal_code(self) -> u16 {
        match self {
            Self::Average => 101,
            Self::Count => 103,
            Self::Max => 104,
            Self::Min => 105,
            Self::Sum => 109,
        }
    }
}

/// A typed cell, ready to write.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Empty,
    Text(String),
    Number(f64),
    Bool(bool),
    /// An Excel serial date-time (days since 1899-12-30, fractional day = time).
    Serial(f64),
    Url(String),
}

/// Where a cell problem is: a field path for the caller, and the row and column for people.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct CellRef {
    /// 1-based data row (the header is not counted).
    pub row: u64,
    pub column: String,
}

/// Grid-level options (top level of the grid document, or the NDJSON header line).
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GridOptions {
    /// `continue` (default): rows beyond Excel's limit go on to sheets `Name (2)`, …;
    /// `error`: refuse the grid instead.
    #[serde(default)]
    pub overflow: Overflow,
    /// Cut strings longer than 32,767 characters (and report them) instead of refusing.
    #[serde(default)]
    pub truncate: bool,
    /// Write each sheet as an Excel table instead of a plain autofilter range.
    #[serde(default)]
    pub table: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Overflow {
    #[default]
    Continue,
    Error,
}

/// Workbook properties.
#[derive(Debug, Clone, Default)]
pub struct GridMeta {
    pub title: Option<String>,
    pub author: Option<String>,
    pub company: Option<String>,
    /// The key column a shared grid's edits are matched by (exports ignore it).
    pub key: Option<String>,
    pub options: GridOptions,
}

/// A sheet's declaration, without its rows.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SheetSpec {
    #[serde(default)]
    pub name: Option<String>,
    pub columns: Vec<ColumnSpec>,
    /// Column key → aggregate.
    #[serde(default)]
    pub totals: BTreeMap<String, Total>,
}

/// A checked sheet declaration.
#[derive(Debug, Clone)]
pub struct Sheet {
    pub name: String,
    pub columns: Vec<Column>,
    /// (column index, aggregate), in column order.
    pub totals: Vec<(usize, Total)>,
}

/// An error in the grid's structure (`field` is a path such as `sheets[0].columns[2].type`)
/// or in one of its cells.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct GridError {
    pub field: String,
    pub message: String,
    pub kind: GridErrorKind,
}

/// Whether the input could not be read as its format at all, or was read and broke a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GridErrorKind {
    /// The body as a whole is not JSON (a syntax error in the grid document).
    Syntax,
    /// A field, a cell or one line of a stream is at fault (an NDJSON line that is not JSON
    /// is one of these: it names the line, and the stream around it was readable).
    Field,
}

impl GridError {
    /// A field or cell at fault.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
            kind: GridErrorKind::Field,
        }
    }

    /// The body is not JSON at all.
    pub fn syntax(message: impl std::fmt::Display) -> Self {
        Self {
            field: "body".into(),
            message: format!("is not valid JSON: {message}"),
            kind: GridErrorKind::Syntax,
        }
    }
}

impl SheetSpec {
    /// Checks the declaration; `at` is the path prefix for errors (`sheets[0]`).
    pub fn check(&self, at: &str, default_name: &str) -> Result<Sheet, GridError> {
        if self.columns.is_empty() {
            return Err(GridError::new(format!("{at}columns"), "must list at least one column"));
        }
        if self.columns.len() > limits::MAX_COLUMNS {
            return Err(GridError::new(
                format!("{at}columns"),
                format!("has {} columns; Excel allows at most {}", self.columns.len(), limits::MAX_COLUMNS),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        let mut columns = Vec::with_capacity(self.columns.len());
        for (i, spec) in self.columns.iter().enumerate() {
            let field = |name: &str| format!("{at}columns[{i}].{name}");
            if spec.key.is_empty() {
                return Err(GridError::new(field("key"), "must not be empty"));
            }
            if !seen.insert(spec.key.as_str()) {
                return Err(GridError::new(field("key"), format!("duplicate column key '{}'", spec.key)));
            }
            let kind = ColumnType::parse(&spec.kind).map_err(|m| GridError::new(field("type"), m))?;
            let currency = match (kind, spec.currency.as_deref()) {
                (ColumnType::Currency, Some(c)) if c.len() == 3 && c.chars().all(|ch| ch.is_ascii_uppercase()) => Some(c.to_string()),
                (ColumnType::Currency, Some(_)) => {
                    return Err(GridError::new(field("currency"), "must be an ISO 4217 code such as USD"));
                }
                (_, _) => None,
            };
            let decimals = spec.decimals.unwrap_or(match kind {
                ColumnType::Percent => 0,
                _ => 2,
            });
            if decimals > 10 {
                return Err(GridError::new(field("decimals"), "must be between 0 and 10"));
            }
            if let Some(w) = spec.width
                && !(0.0..=255.0).contains(&w)
            {
                return Err(GridError::new(field("width"), "must be between 0 and 255 characters"));
            }
            let header = spec.header.clone().unwrap_or_else(|| spec.key.clone());
            if header.chars().count() > limits::MAX_CELL_CHARS {
                return Err(GridError::new(
                    field("header"),
                    format!("is longer than {} characters", limits::MAX_CELL_CHARS),
                ));
            }
            let date_format = match (kind, spec.format.as_deref()) {
                (_, None) => None,
                (ColumnType::Date | ColumnType::Datetime, Some(f)) => {
                    Some(DateFormat::parse(f, kind == ColumnType::Datetime).map_err(|m| GridError::new(field("format"), m))?)
                }
                (_, Some(_)) => return Err(GridError::new(field("format"), "is only for date and datetime columns")),
            };
            columns.push(Column {
                key: spec.key.clone(),
                header,
                kind,
                currency,
                decimals,
                width: spec.width,
                date_format,
            });
        }
        let mut totals = Vec::new();
        for (key, total) in &self.totals {
            let Some(idx) = columns.iter().position(|c| &c.key == key) else {
                return Err(GridError::new(format!("{at}totals.{key}"), "names no column of this sheet"));
            };
            if *total != Total::Count && !columns[idx].kind.is_numeric() {
                return Err(GridError::new(
                    format!("{at}totals.{key}"),
                    format!("{total:?} needs a numeric column; '{key}' is {}", columns[idx].kind.as_str()).to_lowercase(),
                ));
            }
            totals.push((idx, *total));
        }
        totals.sort_by_key(|(i, _)| *i);
        Ok(Sheet {
            name: self.name.clone().unwrap_or_else(|| default_name.to_string()),
            columns,
            totals,
        })
    }
}

/// The Excel serial number of a date (days since 1899-12-30, which absorbs Excel's 1900
/// leap-year bug for every date from 1900-03-01 on; earlier 1900 dates are shifted by one
/// exactly as Excel shows them).
fn serial_of(date: NaiveDate) -> Result<f64, String> {
    if date.year() < 1900 || date.year() > 9999 {
        return Err(format!("{date} is outside Excel's date range (1900-01-01 to 9999-12-31)"));
    }
    let epoch = NaiveDate::from_ymd_opt(1899, 12, 30).expect("valid");
    let mut days = (date - epoch).num_days() as f64;
    // Excel believes 1900-02-29 existed: serials before 1900-03-01 are one lower.
    if date < NaiveDate::from_ymd_opt(1900, 3, 1).expect("valid") {
        days -= 1.0;
    }
    Ok(days)
}

fn time_fraction(t: NaiveTime) -> f64 {
    (t.num_seconds_from_midnight() as f64 + t.nanosecond() as f64 / 1e9) / 86_400.0
}

/// What a cell of an array or object gets told.
pub const NOT_A_SINGLE_VALUE: &str = "must be a single value, not an array or object";

/// Parses `YYYY-MM-DD` (by hand: it is the hottest conversion of a typical export, and
/// chrono's format interpreter costs several times more).
pub fn parse_date(raw: &str) -> Result<NaiveDate, String> {
    let b = raw.trim().as_bytes();
    let digits = |r: std::ops::Range<usize>| {
        b[r].iter()
            .try_fold(0u32, |acc, d| d.is_ascii_digit().then(|| acc * 10 + u32::from(d - b'0')))
    };
    let parsed = if b.len() == 10 && b[4] == b'-' && b[7] == b'-' {
        match (digits(0..4), digits(5..7), digits(8..10)) {
            (Some(y), Some(m), Some(d)) => NaiveDate::from_ymd_opt(y as i32, m, d),
            _ => None,
        }
    } else {
        None
    };
    parsed.ok_or_else(|| format!("'{}' is not a date (YYYY-MM-DD)", clip(raw)))
}

/// Parses `YYYY-MM-DD[T ]HH:MM[:SS[.fff]]`, optionally with `Z` or an offset, which is
/// converted to UTC: Excel cells carry no time zone.
pub fn parse_datetime(raw: &str) -> Result<NaiveDateTime, String> {
    let s = raw.trim();
    if let Ok(dt) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(dt.naive_utc());
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(s, fmt) {
            return Ok(dt);
        }
    }
    Err(format!("'{}' is not a date-time (YYYY-MM-DDTHH:MM:SS)", clip(raw)))
}

/// Parses `HH:MM[:SS[.fff]]`.
pub fn parse_time(raw: &str) -> Result<NaiveTime, String> {
    let s = raw.trim();
    NaiveTime::parse_from_str(s, "%H:%M:%S%.f")
        .or_else(|_| NaiveTime::parse_from_str(s, "%H:%M"))
        .map_err(|_| format!("'{}' is not a time (HH:MM:SS)", clip(raw)))
}

/// Shortens a value for an error message.
pub fn clip(raw: &str) -> String {
    if raw.chars().count() > 40 {
        format!("{}…", raw.chars().take(40).collect::<String>())
    } else {
        raw.to_string()
    }
}

fn finite(x: f64) -> Result<f64, String> {
    if x.is_finite() {
        // -0 would show as "-0" in some readers; Excel itself has no negative zero.
        Ok(if x == 0.0 { 0.0 } else { x })
    } else {
        Err("NaN and infinities cannot be stored in an Excel cell".into())
    }
}

/// A decimal number's significant digits and the power of ten after its first one, from
/// its text (`-0012.3400e2` → `("1234", 4)`); `None` when it is not plain decimal text.
fn decimal_digits(text: &str) -> Option<(String, i64)> {
    let t = text.trim().trim_start_matches(['-', '+']);
    let (mantissa, exp) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], t[i + 1..].parse::<i64>().ok()?),
        None => (t, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int.is_empty() && frac.is_empty() || !int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit()) {
        return None;
    }
    let all = format!("{int}{frac}");
    let lead = all.len() - all.trim_start_matches('0').len();
    let digits = all.trim_matches('0').to_string();
    Some((digits, int.len() as i64 - lead as i64 + exp))
}

/// The significant digits of a number's text (`0.00120` has 2, `12300` has 3).
pub fn significant_digits(text: &str) -> Option<usize> {
    decimal_digits(text).map(|(d, _)| d.len())
}

/// Whether the double parsed from `text` is exactly the number `text` says: its shortest
/// decimal form has the same digits. `9007199254740993` and `12345678901234567890` are not
/// (they come back as `…992` and `…567000`); `0.1` and `0.30000000000000004` are.
pub fn double_holds(text: &str, x: f64) -> bool {
    match (decimal_digits(text), decimal_digits(&format!("{x:e}"))) {
        (Some(a), Some(b)) => a == b || (a.0.is_empty() && b.0.is_empty()),
        _ => true,
    }
}

/// Refuses a whole number a double does not hold exactly (JSON ids beyond 2^53).
fn exact_integer(i: i128) -> Result<f64, String> {
    let x = i as f64;
    if x as i128 == i {
        Ok(if i == 0 { 0.0 } else { x })
    } else {
        Err(format!(
            "{i} cannot be stored exactly as a number (Excel would show {x:.0}); declare the column as text"
        ))
    }
}

/// The URL schemes written as hyperlinks; anything else (javascript:, file:, …) is text.
pub fn is_safe_url(s: &str) -> bool {
    let lower = s.trim_start().get(..8).unwrap_or(s).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://") || lower.starts_with("mailto:")
}

impl Column {
    /// Converts a JSON value to this column's cell.
    pub fn from_json(&self, v: &serde_json::Value) -> Result<Cell, String> {
        use serde_json::Value as V;
        match v {
            V::Null => Ok(Cell::Empty),
            V::String(s) => self.from_text(s),
            V::Number(n) => match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => self.from_i64(i),
                (None, Some(u)) => self.from_u64(u),
                _ => self.from_f64(n.as_f64().unwrap_or(f64::NAN)),
            },
            V::Bool(b) => self.from_bool(*b),
            V::Array(_) | V::Object(_) => Err(NOT_A_SINGLE_VALUE.into()),
        }
    }

    /// Converts a JSON integer.
    pub fn from_i64(&self, i: i64) -> Result<Cell, String> {
        match self.kind {
            ColumnType::Integer => self.integer(i),
            ColumnType::Decimal | ColumnType::Currency | ColumnType::Percent => exact_integer(i128::from(i)).map(Cell::Number),
            ColumnType::Text => Ok(Cell::Text(i.to_string())),
            other => Err(format!("a number is not a valid {} value", other.as_str())),
        }
    }

    /// Converts a JSON integer above `i64::MAX`.
    pub fn from_u64(&self, u: u64) -> Result<Cell, String> {
        match self.kind {
            ColumnType::Integer => Err(format!(
                "{u} has more than 15 digits, which Excel cannot hold exactly; declare the column as text"
            )),
            ColumnType::Text => Ok(Cell::Text(u.to_string())),
            ColumnType::Decimal | ColumnType::Currency | ColumnType::Percent => exact_integer(i128::from(u)).map(Cell::Number),
            _ => self.from_f64(u as f64),
        }
    }

    /// Converts a JSON number with a fraction or exponent.
    pub fn from_f64(&self, x: f64) -> Result<Cell, String> {
        match self.kind {
            ColumnType::Integer if x.fract() == 0.0 && x.abs() < 9.2e18 => self.integer(x as i64),
            ColumnType::Integer => Err(format!("{x} is not a whole number")),
            ColumnType::Decimal | ColumnType::Currency | ColumnType::Percent => finite(x).map(Cell::Number),
            ColumnType::Text => Ok(Cell::Text(x.to_string())),
            other => Err(format!("a number is not a valid {} value", other.as_str())),
        }
    }

    /// Converts a JSON `true` or `false`.
    pub fn from_bool(&self, b: bool) -> Result<Cell, String> {
        match self.kind {
            ColumnType::Boolean => Ok(Cell::Bool(b)),
            ColumnType::Text => Ok(Cell::Text(b.to_string())),
            other => Err(format!("true/false is not a valid {} value", other.as_str())),
        }
    }

    fn integer(&self, i: i64) -> Result<Cell, String> {
        if i.abs() > limits::MAX_EXACT_INTEGER {
            return Err(format!(
                "{i} has more than 15 digits, which Excel cannot hold exactly; declare the column as text"
            ));
        }
        Ok(Cell::Number(i as f64))
    }

    /// Converts a text value (CSV field, or a JSON string) to this column's cell. An empty
    /// string is an empty cell in every column but text.
    pub fn from_text(&self, s: &str) -> Result<Cell, String> {
        if s.is_empty() {
            return Ok(if self.kind == ColumnType::Text {
                Cell::Text(String::new())
            } else {
                Cell::Empty
            });
        }
        let t = s.trim();
        match self.kind {
            ColumnType::Text => Ok(Cell::Text(s.to_string())),
            ColumnType::Integer => t
                .parse::<i64>()
                .map_err(|_| format!("'{}' is not a whole number", clip(s)))
                .and_then(|i| self.integer(i)),
            ColumnType::Decimal | ColumnType::Currency | ColumnType::Percent => {
                let x: f64 = t.parse().map_err(|_| format!("'{}' is not a number", clip(s)))?;
                if !double_holds(t, x) {
                    return Err(format!(
                        "'{}' has more digits than a number cell holds exactly (it would become {x}); declare the column as text",
                        clip(s)
                    ));
                }
                finite(x).map(Cell::Number)
            }
            ColumnType::Date => match &self.date_format {
                Some(f) => serial_of(f.date(s)?).map(Cell::Serial),
                None => serial_of(parse_date(s)?).map(Cell::Serial),
            },
            ColumnType::Datetime => {
                let dt = match &self.date_format {
                    Some(f) => f.datetime(s)?,
                    None => parse_datetime(s)?,
                };
                Ok(Cell::Serial(serial_of(dt.date())? + time_fraction(dt.time())))
            }
            ColumnType::Time => Ok(Cell::Serial(time_fraction(parse_time(s)?))),
            ColumnType::Boolean => match t.to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" => Ok(Cell::Bool(true)),
                "false" | "no" | "0" => Ok(Cell::Bool(false)),
                _ => Err(format!("'{}' is not true or false", clip(s))),
            },
            // Spaces around a link are not part of it (a target of `%20%20https://…` is a
            // broken relative link); inside one they make it something else, kept as text.
            ColumnType::Hyperlink => Ok(if is_safe_url(t) && !t.contains(char::is_whitespace) {
                Cell::Url(t.to_string())
            } else {
                Cell::Text(s.to_string())
            }),
        }
    }

    /// The Excel number format of this column (`None`: General).
    pub fn number_format(&self) -> Option<String> {
        let fraction = |d: u8| {
            if d == 0 {
                String::new()
            } else {
                format!(".{}", "0".repeat(d as usize))
            }
        };
        match self.kind {
            ColumnType::Text => Some("@".into()),
            ColumnType::Integer => Some("#,##0".into()),
            ColumnType::Decimal => Some(format!("#,##0{}", fraction(self.decimals))),
            ColumnType::Currency => {
                let number = format!("#,##0{}", fraction(self.decimals));
                Some(match self.currency.as_deref().map(currency_symbol) {
                    Some(Some(symbol)) => format!("\"{symbol}\"{number};-\"{symbol}\"{number}"),
                    Some(None) => format!(
                        "{number} \"{}\";-{number} \"{}\"",
                        self.currency.as_deref().unwrap_or(""),
                        self.currency.as_deref().unwrap_or("")
                    ),
                    None => number,
                })
            }
            ColumnType::Percent => Some(format!("0{}%", fraction(self.decimals))),
            ColumnType::Date => Some("yyyy-mm-dd".into()),
            ColumnType::Datetime => Some("yyyy-mm-dd hh:mm:ss".into()),
            ColumnType::Time => Some("hh:mm:ss".into()),
            ColumnType::Boolean | ColumnType::Hyperlink => None,
        }
    }
}

/// Symbols for the currencies ERP users meet most; others are shown by their code.
fn currency_symbol(code: &str) -> Option<&'static str> {
    Some(match code {
        "USD" | "AUD" | "CAD" | "NZD" | "SGD" | "HKD" | "MXN" => "$",
        "EUR" => "€",
        "GBP" => "£",
        "JPY" | "CNY" => "¥",
        "INR" => "₹",
        "ZAR" => "R",
        "KRW" => "₩",
        "BRL" => "R$",
        _ => return None,
    })
}

/// The character count of a cell as shown, for column widths.
pub fn display_width(cell: &Cell, column: &Column) -> usize {
    match cell {
        Cell::Empty => 0,
        Cell::Text(s) | Cell::Url(s) => s.lines().map(|l| l.chars().count()).max().unwrap_or(0),
        Cell::Bool(_) => 5,
        Cell::Number(x) => {
            let digits = format!("{:.*}", column.decimals as usize, x.abs()).len();
            digits + digits / 3 + 2 + column.currency.as_ref().map_or(0, |c| c.len())
        }
        Cell::Serial(_) => match column.kind {
            ColumnType::Datetime => 19,
            ColumnType::Time => 8,
            _ => 10,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(kind: ColumnType) -> Column {
        Column {
            key: "k".into(),
            header: "K".into(),
            kind,
            currency: None,
            decimals: 2,
            width: None,
            date_format: None,
        }
    }

    #[test]
    fn declared_date_formats_read_dates_as_written() {
        let mut date = col(ColumnType::Date);
        date.date_format = Some(DateFormat::parse("DD/MM/YYYY", false).unwrap());
        assert_eq!(date.from_text("31/12/2026").unwrap(), Cell::Serial(46_387.0));
        assert_eq!(date.from_text("1/2/2026").unwrap(), date.from_text("01/02/2026").unwrap());
        let e = date.from_text("2026-12-31").unwrap_err();
        assert!(e.contains("DD/MM/YYYY"), "{e}");
        let mut us = col(ColumnType::Datetime);
        us.date_format = Some(DateFormat::parse("MM/DD/YYYY hh:mm", true).unwrap());
        assert_eq!(us.from_text("12/31/2026 12:00").unwrap(), Cell::Serial(46_387.5));
        assert_eq!(
            us.from_text("12/31/2026").unwrap(),
            Cell::Serial(46_387.0),
            "a date alone is midnight"
        );
        for bad in ["DD/MM", "QQ/MM/YYYY", "", "MM-YYYY"] {
            assert!(DateFormat::parse(bad, false).is_err(), "{bad}");
        }
        assert!(DateFormat::parse("DD/MM/YYYY hh:mm", false).is_err(), "a time in a date column");
    }

    #[test]
    fn dates_become_excel_serials_with_the_1900_bug() {
        let date = col(ColumnType::Date);
        assert_eq!(date.from_text("1900-01-01").unwrap(), Cell::Serial(1.0));
        assert_eq!(date.from_text("1900-02-28").unwrap(), Cell::Serial(59.0));
        assert_eq!(date.from_text("1900-03-01").unwrap(), Cell::Serial(61.0));
        assert_eq!(date.from_text("2026-11-01").unwrap(), Cell::Serial(46_327.0));
        assert!(date.from_text("1899-12-31").unwrap_err().contains("outside Excel's date range"));
        assert!(date.from_text("10000-01-01").is_err());
        assert!(date.from_text("2026-02-30").is_err());
    }

    #[test]
    fn datetimes_and_times() {
        let dt = col(ColumnType::Datetime);
        assert_eq!(dt.from_text("2026-11-01T12:00:00").unwrap(), Cell::Serial(46_327.5));
        assert_eq!(dt.from_text("2026-11-01T14:00:00+02:00").unwrap(), Cell::Serial(46_327.5));
        assert_eq!(col(ColumnType::Time).from_text("06:00").unwrap(), Cell::Serial(0.25));
    }

    #[test]
    fn numbers_are_checked() {
        let int = col(ColumnType::Integer);
        assert_eq!(int.from_json(&serde_json::json!(3)).unwrap(), Cell::Number(3.0));
        assert!(int.from_json(&serde_json::json!(3.5)).is_err());
        assert!(
            int.from_json(&serde_json::json!(1_000_000_000_000_000i64))
                .unwrap_err()
                .contains("15 digits")
        );
        let dec = col(ColumnType::Decimal);
        assert_eq!(dec.from_text("-0").unwrap(), Cell::Number(0.0));
        assert!(matches!(dec.from_text("-0").unwrap(), Cell::Number(z) if z.is_sign_positive()));
        for bad in ["NaN", "inf", "-infinity"] {
            assert!(dec.from_text(bad).unwrap_err().contains("NaN"), "{bad}");
        }
        assert!(dec.from_json(&serde_json::json!(true)).is_err());
    }

    #[test]
    fn numbers_a_double_cannot_hold_are_refused_not_rounded() {
        let dec = col(ColumnType::Currency);
        for text in ["9007199254740993", "12345678901234567890", "0.12345678901234567891"] {
            assert!(dec.from_text(text).unwrap_err().contains("declare the column as text"), "{text}");
        }
        for text in ["0.1", "0.30000000000000004", "1e-7", "-12.50", "1.5E3"] {
            assert!(dec.from_text(text).is_ok(), "{text}");
        }
        assert!(dec.from_json(&serde_json::json!(9_007_199_254_740_993u64)).is_err());
        assert!(dec.from_json(&serde_json::json!(12_345_678_901_234_567_890u64)).is_err());
        assert_eq!(
            dec.from_json(&serde_json::json!(9_007_199_254_740_992u64)).unwrap(),
            Cell::Number(9_007_199_254_740_992.0)
        );
        assert_eq!(significant_digits("0.00120"), Some(2));
        assert_eq!(significant_digits("12300"), Some(3));
    }

    #[test]
    fn only_safe_schemes_become_links() {
        let link = col(ColumnType::Hyperlink);
        assert_eq!(
            link.from_text("https://x.example/a").unwrap(),
            Cell::Url("https://x.example/a".into())
        );
        assert_eq!(link.from_text("MAILTO:a@b.c").unwrap(), Cell::Url("MAILTO:a@b.c".into()));
        // Issue 19: spaces around a link are trimmed, not turned into %20 in a relative target.
        assert_eq!(
            link.from_text("  https://lead.example.com/so/7 ").unwrap(),
            Cell::Url("https://lead.example.com/so/7".into())
        );
        assert_eq!(
            link.from_text("https://a.example/x y").unwrap(),
            Cell::Text("https://a.example/x y".into())
        );
        assert_eq!(
            link.from_text("javascript:alert(1)").unwrap(),
            Cell::Text("javascript:alert(1)".into())
        );
        assert_eq!(
            link.from_text("file:///etc/passwd").unwrap(),
            Cell::Text("file:///etc/passwd".into())
        );
    }

    #[test]
    fn formats_per_type() {
        let mut usd = col(ColumnType::Currency);
        usd.currency = Some("USD".into());
        assert_eq!(usd.number_format().unwrap(), "\"$\"#,##0.00;-\"$\"#,##0.00");
        usd.currency = Some("XOF".into());
        assert_eq!(usd.number_format().unwrap(), "#,##0.00 \"XOF\";-#,##0.00 \"XOF\"");
        let mut pct = col(ColumnType::Percent);
        pct.decimals = 1;
        assert_eq!(pct.number_format().unwrap(), "0.0%");
    }

    #[test]
    fn sheet_spec_errors_name_the_field() {
        let spec: SheetSpec = serde_json::from_value(serde_json::json!({
            "columns": [{"key": "a", "type": "text"}, {"key": "a", "type": "integer"}]
        }))
        .unwrap();
        assert_eq!(spec.check("sheets[0].", "S").unwrap_err().field, "sheets[0].columns[1].key");
        let spec: SheetSpec = serde_json::from_value(serde_json::json!({"columns": [{"key": "a", "type": "money"}]})).unwrap();
        let err = spec.check("", "S").unwrap_err();
        assert_eq!(err.field, "columns[0].type");
        assert!(err.message.contains("unknown column type 'money'"));
        let spec: SheetSpec =
            serde_json::from_value(serde_json::json!({"columns": [{"key": "a", "type": "text"}], "totals": {"a": "sum"}})).unwrap();
        assert_eq!(spec.check("", "S").unwrap_err().field, "totals.a");
    }
}
