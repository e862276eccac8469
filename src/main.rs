#![forbid(unsafe_code)]

use clap::Parser;

// mimalloc rather than glibc's malloc: an export parses rows on one thread and writes them
// on another, so every cell's string is freed on a thread other than the one that allocated it,
// which glibc serialises on its arena lock. Measured on the 1M-row benchmark: 10-15% less wall
// time, the same peak memory (bench/README.md). Transparent huge pages are off (`no_thp`): with
// them the heap grows in 2 MiB steps and the peak RSS doubles.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = officebridge::cli::Cli::parse();
    match officebridge::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", officebridge::error::error_chain(&e));
            std::process::ExitCode::FAILURE
        }
    }
}
