//! The `logferry` command line: parse arguments, load config, run, map outcomes to exit codes
//! (0 clean stop, 1 config error, 2 runtime failure).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use logferry::config::{Config, LogFormat, ServiceConfig};

#[derive(Parser)]
#[command(
    name = "logferry",
    version,
    about = "Ships logs from ECS (FireLens), EKS and CloudWatch Logs to Kinesis Data Streams and Kafka/MSK.",
    long_about = "logferry reads log records (Fluent forward protocol, stdin) and delivers them to \
                  sinks with bounded memory and at-least-once delivery.\n\n\
                  Exit codes: 0 clean stop, 1 configuration error, 2 runtime failure."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the pipeline described by a config file until SIGTERM/SIGINT or end of input.
    Run {
        /// The TOML config file.
        #[arg(long, short = 'c', env = "LOGFERRY_CONFIG")]
        config: PathBuf,
    },
    /// Check a config file without starting anything: prints one line per problem.
    Validate {
        /// The TOML config file.
        #[arg(long, short = 'c', env = "LOGFERRY_CONFIG")]
        config: PathBuf,
    },
    /// Load-test a running logferry (or any forward server) with PackedForward messages.
    Loadgen(logferry::loadgen::LoadgenArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { config } => match Config::load(&config) {
            Ok(_) => {
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(1)
            }
        },
        Command::Run { config } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(1);
                }
            };
            init_logging(&config.service);
            run(config)
        }
        Command::Loadgen(args) => {
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("cannot start the async runtime: {e}");
                    return ExitCode::from(2);
                }
            };
            match runtime.block_on(logferry::loadgen::run(args)) {
                Ok(report) => {
                    println!("{report}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("loadgen failed: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

fn run(config: Config) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async {
        let stop = async {
            match logferry::shutdown::signal().await {
                Ok(name) => name.to_string(),
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for signals; stopping");
                    "signal handler failure".to_string()
                }
            }
        };
        let running = match logferry::pipeline::start(config, stop).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("{e}");
                return ExitCode::from(2);
            }
        };
        tracing::info!(version = logferry::VERSION, http = ?running.http_addr, "logferry is running");
        let report = running.wait().await;
        if report.undelivered > 0 {
            tracing::error!(undelivered = report.undelivered,
                "stopped with records not delivered within the grace period");
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        }
    })
}

fn init_logging(service: &ServiceConfig) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // The AWS signer traces requests it signs and aws-config debug-logs access key ids:
        // keep them quiet whatever the level, so no credential detail reaches the log.
        EnvFilter::new(format!(
            "logferry={0},{0},aws_sigv4=info,aws_config=info",
            service.log_level
        ))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match service.log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}
