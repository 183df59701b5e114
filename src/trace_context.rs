//! W3C trace context (`traceparent`, `tracestate`) in and out.
//!
//! In: [`adopt`] gives a call's span the caller's trace. When traces are exported
//! ([`crate::telemetry::otel`]), the span's parent becomes the caller's span; either way the span
//! records `trace_id` and `span_id`, so every JSON log line of the call carries them.
//!
//! Out: [`inject`] writes the current span's context into a provider request's headers
//! (only while exporting: without an exporter there is no span id anyone could look up).

use std::sync::atomic::{AtomicBool, Ordering};

use http::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether spans go to an OTLP exporter (set once by [`crate::telemetry::init`]).
pub(crate) fn set_exporting(on: bool) {
    EXPORTING.store(on, Ordering::Relaxed);
}

/// Whether spans go to an OTLP exporter.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// A parsed `traceparent` header (W3C Trace Context level 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// 16 bytes, not all zero.
    pub trace_id: [u8; 16],
    /// The caller's span, 8 bytes, not all zero.
    pub parent_id: [u8; 8],
    /// Trace flags (bit 0: sampled).
    pub flags: u8,
}

fn hex_into(s: &str, out: &mut [u8]) -> Option<()> {
    if s.len() != out.len() * 2
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(())
}

/// Parses a `traceparent` value as the spec says: `version-traceid-parentid-flags`,
/// lower-case hex, version `ff` invalid, all-zero ids invalid; a future version may carry
/// more fields after the four.
pub fn parse(value: &str) -> Option<TraceParent> {
    let mut parts = value.trim().split('-');
    let version = parts.next()?;
    let (trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?);
    let mut v = [0u8; 1];
    hex_into(version, &mut v)?;
    if v[0] == 0xff || (v[0] == 0 && parts.next().is_some()) {
        return None;
    }
    let mut tp = TraceParent {
        trace_id: [0; 16],
        parent_id: [0; 8],
        flags: 0,
    };
    hex_into(trace, &mut tp.trace_id)?;
    hex_into(parent, &mut tp.parent_id)?;
    let mut f = [0u8; 1];
    hex_into(flags, &mut f)?;
    tp.flags = f[0];
    if tp.trace_id == [0; 16] || tp.parent_id == [0; 8] {
        return None;
    }
    Some(tp)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// Gives `span` (a call's span, not entered yet) the caller's trace from `headers`, and
/// records `trace_id` and `span_id` on it.
pub fn adopt(span: &tracing::Span, headers: &HeaderMap) {
    let caller = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(parse);
    if exporting() {
        if caller.is_some() {
            let cx = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
            // Fails only if the span is disabled (filtered out): then nothing to link.
            let _ = span.set_parent(cx);
        }
        let cx = span.context();
        let ours = cx.span().span_context().clone();
        if ours.is_valid() {
            span.record("trace_id", tracing::field::display(ours.trace_id()));
            span.record("span_id", tracing::field::display(ours.span_id()));
        }
    } else if let Some(tp) = caller {
        // Not exporting: the caller's trace id, and an id of our own for this call.
        span.record("trace_id", tracing::field::display(hex(&tp.trace_id)));
        let own: [u8; 8] = uuid::Uuid::new_v4().as_bytes()[..8]
            .try_into()
            .unwrap_or([1; 8]);
        span.record("span_id", tracing::field::display(hex(&own)));
    }
}

/// Writes the current span's trace context (`traceparent`, `tracestate`) into an outgoing
/// request's headers, while exporting.
pub fn inject(headers: &mut HeaderMap) {
    if !exporting() {
        return;
    }
    let cx = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(headers));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_parsed_as_the_spec_says() {
        let ok = parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").expect("valid");
        assert_eq!(hex(&ok.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex(&ok.parent_id), "00f067aa0ba902b7");
        assert_eq!(ok.flags, 1);
        // A later version may add fields; version 00 may not.
        assert!(parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra").is_some());
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0\u{e9}",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
