//! Reference (a) of `bench/`: the benchmark grid written by a minimal program calling
//! rust_xlsxwriter directly in constant-memory mode, with a format set on each cell — no
//! parsing, no checks. `cargo run --release --example bench_bare -- ROWS OUT.xlsx`.
//! The values are computed exactly as `bench/data.py` computes them.

use rust_xlsxwriter::{ExcelDateTime, Format, Workbook, XlsxError};

const STATUS: [&str; 4] = ["NEW", "OPEN", "CLOSED", "HOLD"];
const CURRENCY: [&str; 5] = ["EUR", "USD", "GBP", "ZAR", "JPY"];
const HEADERS: [&str; 12] = [
    "Customer",
    "Description",
    "Reference",
    "Date",
    "Qty",
    "Price",
    "Amount",
    "Cost",
    "Shipped",
    "Discount",
    "Status",
    "Currency",
];

fn main() -> Result<(), XlsxError> {
    let args: Vec<String> = std::env::args().collect();
    let n: u32 = args.get(1).and_then(|a| a.parse().ok()).expect("usage: bench_bare ROWS OUT.xlsx");
    let out = args.get(2).expect("usage: bench_bare ROWS OUT.xlsx");
    let mut wb = Workbook::new();
    let bold = Format::new().set_bold();
    let date = Format::new().set_num_format("yyyy-mm-dd");
    let int = Format::new().set_num_format("#,##0");
    let usd = Format::new().set_num_format("\"$\"#,##0.00;-\"$\"#,##0.00");
    let dec = Format::new().set_num_format("#,##0.00");
    let eur = Format::new().set_num_format("\"€\"#,##0.00;-\"€\"#,##0.00");
    let pct = Format::new().set_num_format("0%");
    let epoch = ExcelDateTime::from_ymd(2020, 1, 1)?.to_excel();
    let ws = wb.add_worksheet_with_constant_memory()?;
    ws.set_name("Bench")?;
    for (c, h) in HEADERS.iter().enumerate() {
        ws.write_string_with_format(0, c as u16, *h, &bold)?;
    }
    for i in 0..n {
        let r = i + 1;
        ws.write_string(r, 0, format!("Customer {}", i % 9973))?;
        ws.write_string(r, 1, format!("Line item description {i}"))?;
        ws.write_string(r, 2, format!("REF-{i:08}"))?;
        ws.write_number_with_format(r, 3, epoch + f64::from(i % 2000), &date)?;
        ws.write_number_with_format(r, 4, f64::from(i % 1000), &int)?;
        ws.write_number_with_format(r, 5, f64::from(i % 10000) / 100.0, &usd)?;
        ws.write_number_with_format(r, 6, (u64::from(i) * 37 % 10_000_000) as f64 / 100.0, &dec)?;
        ws.write_number_with_format(r, 7, f64::from(i % 777) * 1.25, &eur)?;
        ws.write_boolean(r, 8, i % 3 == 0)?;
        ws.write_number_with_format(r, 9, f64::from(i % 100) / 100.0, &pct)?;
        ws.write_string(r, 10, STATUS[(i % 4) as usize])?;
        ws.write_string(r, 11, CURRENCY[(i % 5) as usize])?;
    }
    ws.set_freeze_panes(1, 0)?;
    ws.autofilter(0, 0, n, 11)?;
    wb.save(out)
}
