//! Shutdown: which signals stop the process, and the token that tells every task to stop.
//!
//! The sequence itself (stop sources, flush transforms, drain sinks within the grace period)
//! lives in [`crate::pipeline`]; this module only turns SIGTERM/SIGINT into a future.

pub use tokio_util::sync::CancellationToken;

/// Waits for SIGTERM (what ECS and Kubernetes send) or SIGINT (Ctrl-C) and names it.
pub async fn signal() -> std::io::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}
