//! The OneDrive half of `bench/upload.py`: uploads FILE to operator DEMO's OneDrive in the
//! emulator at EMULATOR_URL through the same code as `POST /api/v1/exports?destination=onedrive`
//! (token store, Graph client, upload session in 10 MiB fragments), and prints one JSON line:
//! bytes, seconds, and the peak RSS the upload added.
//! `cargo run --release --example bench_upload -- EMULATOR_URL FILE`

use officebridge::config::OneDriveSettings;
use officebridge::domain::{OperatorCode, Secret};
use officebridge::graph::{Graph, RetryPolicy};
use officebridge::identity::{oauth, tokens::Tokens};
use officebridge::store::Store;
use officebridge::store::secrets::{Keyring, MasterKey};
use std::sync::Arc;
use std::time::Instant;

/// `VmHWM` or `VmRSS` from /proc/self/status, in bytes.
fn proc_status(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("Linux");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
        .expect("field present")
        * 1024
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (emulator, path) = match (args.get(1), args.get(2)) {
        (Some(e), Some(p)) => (e.clone(), p.clone()),
        _ => anyhow::bail!("usage: bench_upload EMULATOR_URL FILE"),
    };
    let dir = tempfile::tempdir()?;
    let (key, _) = MasterKey::generate();
    let url = Secret::new(format!("sqlite://{}/bench.db", dir.path().display()));
    let store = Store::connect(&url, Keyring::new(key, vec![])).await?;
    officebridge::dev::seed_dev_tenant(&store, &emulator).await?;
    let tokens = Arc::new(Tokens::new(oauth::http_client(), store));
    let op = OperatorCode::parse(officebridge::dev::DEV_OPERATOR).map_err(anyhow::Error::msg)?;
    tokens.operator_token(&op).await?; // the refresh is not what is measured
    let graph = Graph::new(tokens, RetryPolicy::default());
    let cfg = OneDriveSettings::default();
    let file = std::fs::File::open(&path)?;
    let size = file.metadata()?.len();
    // Reset the high-water mark (proc(5), clear_refs "5") so the peak is the upload's own.
    std::fs::write("/proc/self/clear_refs", "5")?;
    let before = proc_status("VmRSS:");
    let started = Instant::now();
    let item = officebridge::graph::drive::upload_export(&graph, &cfg, &op, file, size, "bench.bin").await?;
    let seconds = started.elapsed().as_secs_f64();
    let peak = proc_status("VmHWM:");
    anyhow::ensure!(item.size == size, "uploaded {} of {size} bytes", item.size);
    println!(
        "{}",
        serde_json::json!({
            "bytes": size,
            "seconds": seconds,
            "rss_before": before,
            "peak_rss": peak,
            "peak_added": peak.saturating_sub(before),
            "fragment": cfg.fragment_size,
        })
    );
    Ok(())
}
