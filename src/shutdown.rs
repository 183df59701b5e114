//! The production shutdown signal: SIGTERM (Kubernetes, systemd) or SIGINT (Ctrl-C).
//!
//! The first starts the graceful shutdown (drain, then `shutdown_grace_seconds` for calls in
//! flight). A second, while that runs, ends the process at once with the shell's status for
//! that signal (143 for SIGTERM, 130 for SIGINT): an operator who presses Ctrl-C twice does
//! not wait out the grace period.

/// Completes on the first SIGTERM or SIGINT; from then on a second one exits the process.
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (mut term, mut int) = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => (term, int),
            (Err(e), _) | (_, Err(e)) => {
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
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
