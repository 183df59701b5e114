//! JSON log lines with the call's identifiers at the top level: `request_id`, `trace_id`,
//! `span_id`, `peer`, `client` and `method`, taken from the spans the event happened in
//! (innermost wins; an event's own field of the same name is kept). So a call's `grpc call`
//! line and its audit events join on `request_id`, and on `trace_id` with the caller's
//! traces, without digging into the nested `span`/`spans` objects (still there).

use super::span_fields::SpanFields;
use serde_json::{Map, Value};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{Format, Json, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Span fields copied to the top of each line.
const LIFTED: [&str; 6] = [
    "request_id",
    "trace_id",
    "span_id",
    "peer",
    "client",
    "method",
];

/// The event formatter for `[log] format = "json"` and the audit stream.
#[derive(Debug)]
pub struct JsonLines {
    inner: Format<Json>,
}

impl JsonLines {
    /// One flattened JSON object per line.
    pub fn new() -> JsonLines {
        JsonLines {
            inner: tracing_subscriber::fmt::format().json().flatten_event(true),
        }
    }
}

impl Default for JsonLines {
    fn default() -> Self {
        JsonLines::new()
    }
}

impl<S> FormatEvent<S, SpanFields> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, SpanFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let mut lifted = Map::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let ext = span.extensions();
                let Some(fields) = ext.get::<FormattedFields<SpanFields>>() else {
                    continue;
                };
                if !LIFTED.iter().any(|k| fields.fields.contains(k)) {
                    continue;
                }
                if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(&fields.fields) {
                    for key in LIFTED {
                        if let Some(v) = map.get(key) {
                            lifted.insert(key.to_owned(), v.clone());
                        }
                    }
                }
            }
        }
        if lifted.is_empty() {
            return writer.write_str(&line);
        }
        match serde_json::from_str::<Value>(line.trim_end()) {
            Ok(Value::Object(mut map)) => {
                for (k, v) in lifted {
                    map.entry(k).or_insert(v);
                }
                writeln!(writer, "{}", Value::Object(map))
            }
            _ => writer.write_str(&line),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt as _;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::ErrorKind::Other)?
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn call_ids_are_lifted_to_the_top_of_each_line() {
        let sink = Sink::default();
        let out = sink.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .fmt_fields(SpanFields::new())
                .event_format(JsonLines::new())
                .with_writer(move || out.clone()),
        );
        tracing::subscriber::with_default(subscriber, || {
            let call = tracing::info_span!(
                "grpc",
                request_id = "req-1",
                trace_id = "4bf92f3577b34da6a3ce929d0e0e4736",
                span_id = tracing::field::Empty,
                client = tracing::field::Empty
            );
            call.record("span_id", "00f067aa0ba902b7");
            let _in_call = call.enter();
            let inner = tracing::info_span!("purge", client = "alpha");
            let _in_inner = inner.enter();
            tracing::info!(event = "purge", "audit");
            tracing::info!(request_id = "own", "an event's own field wins");
        });
        tracing::info!("outside any span");
        let text = String::from_utf8(sink.0.lock().expect("sink").clone()).expect("utf8");
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["request_id"], "req-1");
        assert_eq!(lines[0]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(lines[0]["span_id"], "00f067aa0ba902b7");
        assert_eq!(lines[0]["client"], "alpha", "innermost span wins");
        assert_eq!(lines[0]["event"], "purge");
        assert_eq!(lines[1]["request_id"], "own");
    }
}
