//! Logging and traces.
//!
//! Logs: human text on a terminal or JSON lines ([`json::JsonLines`]), filtered by
//! `RUST_LOG` (else `[log] filter`), on stderr so CLI output on stdout stays clean. Audit
//! events (target [`crate::auth::AUDIT_TARGET`]: purges, denied requests, key reloads,
//! refused identities) always go out as JSON lines, whatever the log format and filter, so
//! they can be shipped and kept apart from the operational log.
//!
//! Traces: OpenTelemetry over OTLP when the standard `OTEL_*` variables ask for it
//! ([`otel`]); the caller's W3C `traceparent` is honoured either way ([`crate::trace_context`]).
//! Spans: the call (`grpc`), the signing pool queue wait (`sign.queue`) and job
//! (`sign.job`, on the pool thread), and each provider HTTP request.

pub mod json;
pub mod otel;
pub mod otel_tls;
pub mod span_fields;

use opentelemetry::trace::TracerProvider as _;
use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets, filter_fn};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{Layer as _, fmt};

use crate::auth::AUDIT_TARGET;
use crate::config::{LogConfig, LogFormat};
use span_fields::SpanFields;

/// What [`init`] set up; [`Telemetry::shutdown`] flushes spans not yet exported.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports what is batched and stops the exporter (call before the runtime ends).
    pub fn shutdown(self) {
        if let Some(p) = self.provider
            && let Err(error) = p.shutdown()
        {
            tracing::warn!(%error, "OpenTelemetry exporter did not shut down cleanly");
        }
    }
}

/// Installs the global subscriber (later calls are no-ops) and, when the environment asks
/// for it, the OTLP trace exporter. Call inside the tokio runtime (the exporter runs there).
pub fn init(log: &LogConfig) -> Telemetry {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let not_audit = filter_fn(|meta| meta.target() != AUDIT_TARGET);
    let main = match log.format {
        LogFormat::Json => fmt::layer()
            .fmt_fields(SpanFields::new())
            .event_format(json::JsonLines::new())
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
        .fmt_fields(SpanFields::new())
        .event_format(json::JsonLines::new())
        .with_writer(std::io::stderr)
        // Spans too, so an audit event carries its call's ids (request_id, trace_id...).
        .with_filter(filter_fn(|meta| {
            meta.is_span() || meta.target() == AUDIT_TARGET
        }))
        .with_filter(LevelFilter::INFO);

    let plan = otel::plan(|k| std::env::var(k).ok());
    let mut problem = None;
    let provider = match &plan {
        Ok(otel::Plan::Export(export)) => match otel::start(export) {
            Ok(p) => Some(p),
            Err(e) => {
                problem = Some(e);
                None
            }
        },
        Ok(otel::Plan::Off(_)) => None,
        Err(e) => {
            problem = Some(e.clone());
            None
        }
    };
    // Only with an exporter: no tracing layer, no cost, otherwise. Our own spans down to
    // debug (the pool's), everyone else's from info.
    let traces = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("cdnsign"))
            .with_filter(
                Targets::new()
                    .with_default(LevelFilter::INFO)
                    .with_target("cdnsign", LevelFilter::DEBUG),
            )
    });
    crate::trace_context::set_exporting(provider.is_some());
    let _ = tracing_subscriber::registry()
        .with(main)
        .with(audit)
        .with(traces)
        .try_init();
    match (&plan, &problem) {
        (_, Some(e)) => tracing::warn!(error = %e, "traces are not exported"),
        (Ok(otel::Plan::Export(export)), None) => {
            tracing::info!(protocol = ?export.protocol, https = export.https, "exporting traces over OTLP");
        }
        (Ok(otel::Plan::Off(why)), None) => tracing::debug!(why, "traces not exported"),
        (Err(_), None) => {}
    }
    Telemetry { provider }
}
