//! `webhook-log-exporter`: parse flags, start logging, run.

use std::process::ExitCode;

use clap::Parser;
use webhook_log_exporter::cli::{Cli, main as run, runtime};
use webhook_log_exporter::logging;

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_level, cli.log_format);
    match runtime() {
        Ok(rt) => rt.block_on(run(cli)),
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            ExitCode::FAILURE
        }
    }
}
