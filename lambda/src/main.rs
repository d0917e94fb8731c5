//! `logferry-lambda`: the Lambda forwarder for CloudWatch Logs subscriptions (direct, or
//! through a Kinesis trigger). It reuses the core crate's decoder, transforms, router, encoders
//! and sinks; see docs/lambda.md.
//!
//! At init (once per container) it loads the configuration and builds the router and sinks
//! (clients, credentials). Each invocation then decodes the event, submits the records with an
//! acknowledgement and answers only once every record was delivered, or fails before the
//! function's timeout (minus `safety_margin`) so that the batch is retried.

mod forwarder;
mod settings;

use std::sync::Arc;
use std::time::Instant;

use lambda_runtime::{service_fn, LambdaEvent};
use logferry::health::Health;
use logferry::metrics::Metrics;
use logferry::source::cloudwatch::Decoder;
use serde_json::Value;

use forwarder::Forwarder;

fn init_logging(level: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // Standard error: standard output may be the `stdout` sink's.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Tells the Runtime API why init failed (`POST /runtime/init/error`), so the invocation that
/// started this container fails with that message instead of a bare exit status. Best effort:
/// the process exits with an error either way.
fn report_init_error(error_type: &str, message: &str) {
    use std::io::{Read, Write};
    let Ok(api) = std::env::var("AWS_LAMBDA_RUNTIME_API") else {
        return;
    };
    let body = serde_json::json!({"errorType": error_type, "errorMessage": message}).to_string();
    let request = format!(
        "POST /2018-06-01/runtime/init/error HTTP/1.1\r\nHost: {api}\r\n\
         Lambda-Runtime-Function-Error-Type: {error_type}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let timeout = std::time::Duration::from_secs(2);
    let sent = (|| -> std::io::Result<()> {
        use std::net::ToSocketAddrs;
        let addr = api
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| std::io::Error::other("no address"))?;
        let mut conn = std::net::TcpStream::connect_timeout(&addr, timeout)?;
        conn.set_read_timeout(Some(timeout))?;
        conn.set_write_timeout(Some(timeout))?;
        conn.write_all(request.as_bytes())?;
        let mut reply = [0u8; 256];
        let _ = conn.read(&mut reply)?;
        Ok(())
    })();
    if let Err(e) = sent {
        eprintln!("logferry-lambda: cannot report the init error to the Runtime API at {api}: {e}");
    }
}

fn main() -> std::process::ExitCode {
    let started = Instant::now();
    // Every rustls configuration names its provider; this covers any that would not.
    logferry::tls::install_default_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("logferry-lambda: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(started))
}

async fn run(started: Instant) -> std::process::ExitCode {
    let vars: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .collect();
    let task_root = std::env::var_os("LAMBDA_TASK_ROOT").map(std::path::PathBuf::from);
    let loaded = match settings::load(&|k| std::env::var(k).ok(), &vars, task_root.as_deref()) {
        Ok(l) => l,
        Err(e) => {
            // Logging is not set up yet (its level is in the config): plain standard error.
            eprintln!("logferry-lambda: configuration error: {e}");
            report_init_error("logferry.ConfigError", &format!("configuration error: {e}"));
            return std::process::ExitCode::FAILURE;
        }
    };
    let service = &loaded.config.service;
    init_logging(
        &service.log_level,
        matches!(service.log_format, logferry::config::LogFormat::Json),
    );

    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let settings::Loaded {
        config,
        source,
        origin,
    } = loaded;
    let built =
        match logferry::pipeline::build(config.sinks, config.transforms, &metrics, &health).await {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the sinks");
                report_init_error("logferry.SinkError", &e.to_string());
                return std::process::ExitCode::FAILURE;
            }
        };
    let forwarder = Arc::new(Forwarder {
        router: built.router,
        decoder: Decoder::new(&source),
        safety_margin: source.safety_margin.get(),
        metrics: metrics.component("cloudwatch_logs", "source"),
    });
    tracing::info!(
        config = %origin,
        sinks = ?built.pending.iter().map(|p| p.sink.as_str()).collect::<Vec<_>>(),
        init_ms = started.elapsed().as_secs_f64() * 1000.0,
        version = logferry::VERSION,
        "logferry-lambda ready"
    );

    let handler = service_fn(move |event: LambdaEvent<Value>| {
        let forwarder = forwarder.clone();
        async move {
            let deadline = event.context.deadline();
            forwarder.handle(&event.payload, deadline).await
        }
    });
    match lambda_runtime::run(handler).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "the Lambda runtime loop stopped");
            std::process::ExitCode::FAILURE
        }
    }
}
