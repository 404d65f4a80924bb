//! `webhook-log-exporter`: parse flags, start logging, run.

use std::process::ExitCode;

use clap::Parser;
use webhook_log_exporter::cli::{Cli, main as run};
use webhook_log_exporter::logging;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_level, cli.log_format);
    run(cli).await
}
