//! Logging setup: human text on a terminal or JSON lines, filtered by `RUST_LOG` (else
//! `[log] filter`). Logs go to stderr so CLI output on stdout stays clean.
//!
//! Audit events (target [`crate::auth::AUDIT_TARGET`]: purges, denied requests, key
//! reloads, refused identities) always go out as JSON lines, whatever the log format and
//! filter, so they can be shipped and kept apart from the operational log.

use tracing_subscriber::filter::{EnvFilter, LevelFilter, filter_fn};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{Layer as _, fmt};

use crate::auth::AUDIT_TARGET;
use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. Safe to call more than once (later calls are no-ops).
pub fn init(log: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let not_audit = filter_fn(|meta| meta.target() != AUDIT_TARGET);
    let main = match log.format {
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .with_filter(not_audit)
            .with_filter(filter)
            .boxed(),
        LogFormat::Text => fmt::layer()
            .with_writer(std::io::stderr)
            // Colour only on a terminal: escape codes in files and pipes are noise.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_filter(not_audit)
            .with_filter(filter)
            .boxed(),
    };
    let audit = fmt::layer()
        .json()
        .flatten_event(true)
        .with_writer(std::io::stderr)
        .with_filter(filter_fn(|meta| meta.target() == AUDIT_TARGET))
        .with_filter(LevelFilter::INFO);
    let _ = tracing_subscriber::registry()
        .with(main)
        .with(audit)
        .try_init();
}
