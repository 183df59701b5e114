//! The `cdnsign` binary: `serve` runs the gRPC service; `check-config` validates a config;
//! `sign`, `cookies` and `verify` are offline tools for operators and scripts (see
//! `cdnsign --help`).

use std::process::ExitCode;

use clap::Parser as _;

use cdnsign::cli::{Cli, Command};
use cdnsign::config::Config;
use cdnsign::{server, shutdown, telemetry};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let config = match Config::load(args.config.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    // Say every problem at once, keys and clients included (as check-config).
                    let all = cdnsign::live::Live::load(args.config.as_deref(), None).err();
                    eprintln!("cdnsign: {}", all.unwrap_or(e));
                    return ExitCode::from(2);
                }
            };
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cdnsign: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            // Inside the runtime: a trace exporter, when configured, runs on it; the
            // signals are watched from before the server starts.
            let (telemetry, shutdown) = {
                let _in_runtime = runtime.enter();
                (telemetry::init(&config.log), shutdown::signal())
            };
            let result = runtime.block_on(server::run(config, shutdown));
            telemetry.shutdown();
            match result {
                Ok(()) => ExitCode::SUCCESS,
                // Keys, clients or TLS files: a configuration error, printed once.
                Err(server::ServerError::Config(e)) => {
                    eprintln!("cdnsign: {e}");
                    ExitCode::from(2)
                }
                Err(e) => {
                    tracing::error!(error = %e, "cdnsign failed");
                    ExitCode::FAILURE
                }
            }
        }
        other => cdnsign::cli::run_offline(other),
    }
}
