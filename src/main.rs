#![forbid(unsafe_code)]

use clap::Parser;

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
