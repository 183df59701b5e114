//! Span fields stored as one JSON object, for the JSON log lines and the audit stream.
//!
//! tracing-subscriber's own `JsonFields` re-parses a span's stored JSON and writes it out
//! again every time a field is recorded on the span. Every gRPC call records two or three
//! fields on its `grpc` span after creating it (`batch_size`, `key_id`, `client`, the trace
//! ids), and the audit layer keeps every span's fields, so that parse cost was paid on every
//! call whether or not a line was ever written: 3.5% of the server's CPU under single-URL
//! load (perf, docs/performance.md). [`SpanFields`] writes the same object and appends new
//! fields to it in place instead.

use tracing::field::Visit;
use tracing_subscriber::field::{RecordFields, VisitOutput};
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::FormattedFields;
use tracing_subscriber::fmt::format::{JsonVisitor, Writer};

/// Formats span fields as a JSON object; fields recorded later are appended to it.
///
/// A field recorded twice appears twice in the object; JSON readers (serde_json, the fmt
/// layer's event formatter, `jq`) keep the last one, which is the value recorded last.
#[derive(Debug, Default, Clone, Copy)]
pub struct SpanFields;

impl SpanFields {
    /// The formatter.
    pub fn new() -> SpanFields {
        SpanFields
    }
}

/// `fields` as one JSON object, keys in order (the same output as `JsonFields`).
fn object(fields: impl RecordFields) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    let mut visitor = JsonVisitor::new(&mut out);
    fields.record(&mut visitor as &mut dyn Visit);
    visitor.finish()?;
    Ok(out)
}

/// Appends the members of the JSON object `more` to the JSON object `current`.
fn append(current: &mut String, more: &str) -> std::fmt::Result {
    let members = more
        .strip_prefix('{')
        .and_then(|m| m.strip_suffix('}'))
        .ok_or(std::fmt::Error)?;
    if members.is_empty() {
        return Ok(());
    }
    if !current.ends_with('}') {
        return Err(std::fmt::Error);
    }
    current.pop();
    if !current.ends_with('{') {
        current.push(',');
    }
    current.push_str(members);
    current.push('}');
    Ok(())
}

impl<'writer> FormatFields<'writer> for SpanFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> std::fmt::Result {
        // Straight into the span's buffer (one allocation fewer per call than `object`).
        let mut visitor = JsonVisitor::new(&mut writer);
        fields.record(&mut visitor as &mut dyn Visit);
        visitor.finish()
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> std::fmt::Result {
        let more = object(fields)?;
        if current.fields.is_empty() {
            current.fields = more;
            return Ok(());
        }
        append(&mut current.fields, &more)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::registry::LookupSpan as _;

    #[test]
    fn appending_keeps_one_valid_object() {
        let mut s = String::from("{}");
        append(&mut s, r#"{"a":1}"#).expect("append");
        assert_eq!(s, r#"{"a":1}"#);
        append(&mut s, r#"{"b":"x,}"}"#).expect("append");
        append(&mut s, "{}").expect("nothing to add");
        assert_eq!(s, r#"{"a":1,"b":"x,}"}"#);
        let v: Value = serde_json::from_str(&s).expect("JSON");
        assert_eq!(v, json!({"a": 1, "b": "x,}"}));
        let mut broken = String::from("not json");
        assert!(append(&mut broken, r#"{"a":1}"#).is_err());
    }

    /// Records fields on a span under a registry with a fmt layer using `SpanFields`, and
    /// returns the span's stored fields parsed.
    fn stored_after(record: impl FnOnce(&tracing::Span)) -> Value {
        let seen = Arc::new(Mutex::new(String::new()));
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .fmt_fields(SpanFields::new())
                .with_writer(std::io::sink),
        );
        let out = seen.clone();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "grpc",
                method = "SignUrls",
                request_id = "req-1",
                batch_size = tracing::field::Empty,
                key_id = tracing::field::Empty,
                client = tracing::field::Empty
            );
            record(&span);
            let id = span.id().expect("span enabled");
            tracing::dispatcher::get_default(|d| {
                let registry = d
                    .downcast_ref::<tracing_subscriber::Registry>()
                    .expect("registry");
                let data = registry.span(&id).expect("span data");
                let ext = data.extensions();
                let fields = ext
                    .get::<FormattedFields<SpanFields>>()
                    .expect("fields stored");
                *out.lock().expect("lock") = fields.fields.clone();
            });
        });
        let text = seen.lock().expect("lock").clone();
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn fields_recorded_later_join_the_object() {
        let v = stored_after(|span| {
            span.record("batch_size", 500);
            span.record("key_id", "K2JCJMDEHXQW5F");
            span.record("client", "alpha \"quoted\"");
        });
        assert_eq!(
            v,
            json!({
                "method": "SignUrls",
                "request_id": "req-1",
                "batch_size": 500,
                "key_id": "K2JCJMDEHXQW5F",
                "client": "alpha \"quoted\"",
            })
        );
    }

    #[test]
    fn a_field_recorded_twice_reads_as_its_last_value() {
        let v = stored_after(|span| {
            span.record("client", "first");
            span.record("client", "second");
        });
        assert_eq!(v["client"], "second");
        assert_eq!(v["request_id"], "req-1");
    }
}
