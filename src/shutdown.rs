//! The production shutdown signal: SIGTERM (Kubernetes, systemd) or SIGINT (Ctrl-C).
//!
//! The first starts the graceful shutdown (drain, then `shutdown_grace_seconds` for calls in
//! flight). A second, while that runs, ends the process at once with the shell's status for
//! that signal (143 for SIGTERM, 130 for SIGINT): an operator who presses Ctrl-C twice does
//! not wait out the grace period.

use std::future::Future;

/// Watches SIGTERM and SIGINT from now on (call it inside the runtime, before the server
/// starts: a signal between start and the first poll is then not lost to the default
/// action). The future completes on the first; from then on a second exits the process.
pub fn signal() -> impl Future<Output = ()> + Send {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let streams = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => Ok((term, int)),
            (Err(e), _) | (_, Err(e)) => Err(e),
        };
        async move {
            let (mut term, mut int) = match streams {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the server");
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
            let first = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            tracing::info!("{first} received");
            // The same streams: a second signal arriving at any moment from now on is seen.
            tokio::spawn(async move {
                let (second, status) = tokio::select! {
                    _ = term.recv() => ("SIGTERM", 128 + 15),
                    _ = int.recv() => ("SIGINT", 128 + 2),
                };
                tracing::warn!(
                    "{second} received during the graceful shutdown: exiting at once, calls in flight are cut"
                );
                eprintln!("cdnsign: {second} received again: exiting at once");
                std::process::exit(status);
            });
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
