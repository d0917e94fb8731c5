//! The `logferry` command line: parse arguments, load config, run, map outcomes to exit codes
//! (0 clean stop, 1 config error, 2 runtime failure).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use logferry::config::fluent_bit::{self, defaults::ConfigFile};
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
    ///
    /// With neither --config nor --fluent-bit-config: /fluent-bit/etc/fluent-bit.conf (where
    /// ECS mounts the FireLens config) when it exists, else /etc/logferry/logferry.toml; the
    /// environment variables LOGFERRY_DEFAULT_FLUENT_BIT_CONFIG and LOGFERRY_DEFAULT_CONFIG
    /// move those two defaults.
    Run {
        #[command(flatten)]
        file: ConfigArgs,
    },
    /// Check a config file without starting anything: prints one line per problem.
    Validate {
        #[command(flatten)]
        file: ConfigArgs,
    },
    /// Load-test a running logferry (or any forward server) with PackedForward messages.
    Loadgen(logferry::loadgen::LoadgenArgs),
    /// Print an Amazon MSK IAM (SASL/OAUTHBEARER) token as JSON {"token", "expiry_ms",
    /// "region"}, signed with credentials from the AWS default chain, for other Kafka tools.
    MskToken(logferry::sink::kafka::MskTokenArgs),
    /// Send a sink's dead letters again (after the cause was fixed) and mark the files
    /// replayed. Exit 0 only when every record was delivered.
    ReplayDeadLetters(logferry::sink::dead_letter::replay::ReplayArgs),
    /// Exit 0 when a running logferry's /health answers 200 (for container HEALTHCHECKs).
    Healthcheck {
        /// The health URL (plain HTTP on a local address).
        #[arg(long, default_value = "http://127.0.0.1:2020/health")]
        url: String,
    },
}

/// Which config file to read (at most one of the two flags).
#[derive(clap::Args)]
struct ConfigArgs {
    /// The native TOML config file.
    #[arg(
        long,
        short = 'c',
        env = "LOGFERRY_CONFIG",
        conflicts_with = "fluent_bit_config"
    )]
    config: Option<PathBuf>,
    /// A Fluent Bit classic config file (such as the one FireLens generates), translated to
    /// logferry's own config; see docs/firelens.md.
    #[arg(long, env = "LOGFERRY_FLUENT_BIT_CONFIG")]
    fluent_bit_config: Option<PathBuf>,
}

impl ConfigArgs {
    /// The file named by a flag, or the default one with why it was chosen.
    fn file(self) -> (ConfigFile, Option<String>) {
        match (self.config, self.fluent_bit_config) {
            (Some(path), _) => (ConfigFile::Native(path), None),
            (None, Some(path)) => (ConfigFile::FluentBit(path), None),
            (None, None) => {
                let (file, why) = fluent_bit::defaults::choose(&|name| std::env::var(name).ok());
                (file, Some(why))
            }
        }
    }
}

/// jemalloc rather than glibc malloc: measured on the forward → Kinesis path (see
/// docs/performance.md), small short-lived allocations are markedly cheaper.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// glibc's malloc serves only the C libraries (librdkafka above all: each Kafka record is a
/// message it allocates, ~400 bytes, and frees once delivered). By default glibc gives the
/// free top of its heaps back to the OS as soon as 128 KiB are free, and maps every block
/// over a (moving) threshold afresh: under a steady Kafka flow that returned and faulted in
/// the same pages over and over (42-58k page faults per 500k records). Kept up to 64 MiB of
/// free heap, and blocks up to 4 MiB served from the heap (librdkafka's largest are its
/// ~1 MB message sets): page faults about halved (22-28k), CPU -4% on the Kafka bench (medians
/// of 9 runs, docs/performance.md). The bound still returns a burst's memory beyond 64 MiB.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_c_heap() {
    // SAFETY: mallopt only sets malloc's parameters; called first thing in `main`, before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_c_heap() {}

fn main() -> ExitCode {
    tune_c_heap();
    // Every rustls configuration names its provider; this covers any that would not.
    logferry::tls::install_default_crypto_provider();
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { file } => {
            let (file, why) = file.file();
            if let Some(why) = why {
                eprintln!("{why}");
            }
            match file.load() {
                Ok(_) => {
                    println!("{}: ok", file.path().display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Run { file } => {
            let (file, why) = file.file();
            let config = match file.load() {
                Ok(c) => c,
                Err(e) => {
                    if let Some(why) = &why {
                        eprintln!("{why}");
                    }
                    eprintln!("{e}");
                    return ExitCode::from(1);
                }
            };
            init_logging(&config.service);
            tracing::info!(config = %file.path().display(), kind = file.kind(),
                reason = why.as_deref().unwrap_or("named on the command line"),
                "configuration loaded");
            run(config)
        }
        Command::MskToken(args) => {
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("cannot start the async runtime: {e}");
                    return ExitCode::from(2);
                }
            };
            match runtime.block_on(logferry::sink::kafka::msk_token_command(&args)) {
                Ok(json) => {
                    println!("{json}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("msk-token failed: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Healthcheck { url } => match healthcheck(&url) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("unhealthy: {e:#}");
                ExitCode::from(1)
            }
        },
        Command::ReplayDeadLetters(args) => replay_dead_letters(&args),
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
    let runtime = match runtime_for(&config.service) {
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

/// `logferry replay-dead-letters`: exit 0 all delivered, 1 config error, 2 anything else.
fn replay_dead_letters(args: &logferry::sink::dead_letter::replay::ReplayArgs) -> ExitCode {
    use logferry::sink::dead_letter::replay;
    let config = match replay::load_config(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    init_logging(&config.service);
    let runtime = match runtime_for(&config.service) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(replay::run(config, args)) {
        Ok(summary) => {
            println!("{summary}");
            if summary.all_delivered() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            }
        }
        Err(e @ replay::ReplayError::NoSuchSink { .. })
        | Err(e @ replay::ReplayError::NoFiles(_)) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("replay-dead-letters failed: {e}");
            ExitCode::from(2)
        }
    }
}

/// The async runtime `[service] worker_threads` asks for (multi-threaded even with one worker:
/// blocking threads such as the tail readers enter it with `Handle::block_on`).
fn runtime_for(service: &ServiceConfig) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = service.workers() {
        builder.worker_threads(workers);
    }
    builder.enable_all().build()
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

/// One `GET` of the health URL over plain HTTP/1.0; 200 is healthy.
fn healthcheck(url: &str) -> anyhow::Result<()> {
    use anyhow::{bail, Context};
    use std::io::{Read, Write};
    let rest = url
        .strip_prefix("http://")
        .context("only http:// URLs are supported")?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let timeout = std::time::Duration::from_secs(5);
    let addr = std::net::ToSocketAddrs::to_socket_addrs(host)
        .with_context(|| format!("resolving {host}"))?
        .next()
        .with_context(|| format!("{host} resolves to no address"))?;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {host}"))?;
    stream.set_read_timeout(Some(timeout))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        let body = response.split("\r\n\r\n").nth(1).unwrap_or("");
        bail!("{url} answered {status}: {body}");
    }
    Ok(())
}
