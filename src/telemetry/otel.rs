//! OpenTelemetry traces over OTLP, configured by the standard environment variables and off
//! unless an endpoint is set:
//!
//! | variable | effect |
//! | --- | --- |
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` | where to send; unset: no exporter, no tracing layer, no cost |
//! | `OTEL_EXPORTER_OTLP_PROTOCOL` / `..._TRACES_PROTOCOL` | `grpc`, `http/protobuf` (the spec's default) or `http/json` |
//! | `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES` | the resource (`service.name` defaults to `cdnsign`) |
//! | `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG` | the sampler (default `parentbased_always_on`) |
//! | `OTEL_SDK_DISABLED=true`, `OTEL_TRACES_EXPORTER=none` | off, whatever else is set |
//!
//! Spans are batched and exported from the tokio runtime, so [`start`] must run inside it.
//! Endpoints are plain `http://` (a collector or agent beside the pod); TLS to a remote
//! collector is the collector's job.

use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;

/// Why traces are not exported, or how they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// No endpoint, or switched off.
    Off(&'static str),
    /// Export with this protocol.
    Export(Protocol),
}

/// Reads the plan from `var` (the environment, or a test's map).
pub fn plan(var: impl Fn(&str) -> Option<String>) -> Result<Plan, String> {
    let set = |k: &str| {
        var(k)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    if set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(Plan::Off("OTEL_SDK_DISABLED=true"));
    }
    if set("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none")) {
        return Ok(Plan::Off("OTEL_TRACES_EXPORTER=none"));
    }
    if let Some(other) = set("OTEL_TRACES_EXPORTER").filter(|v| !v.eq_ignore_ascii_case("otlp")) {
        return Err(format!(
            "OTEL_TRACES_EXPORTER={other:?} is not supported (otlp or none)"
        ));
    }
    if set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
        && set("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
    {
        return Ok(Plan::Off("no OTEL_EXPORTER_OTLP_ENDPOINT"));
    }
    let protocol = set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|| set("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_else(|| "http/protobuf".into());
    match protocol.as_str() {
        "grpc" => Ok(Plan::Export(Protocol::Grpc)),
        "http/protobuf" => Ok(Plan::Export(Protocol::HttpBinary)),
        "http/json" => Ok(Plan::Export(Protocol::HttpJson)),
        other => Err(format!(
            "OTEL_EXPORTER_OTLP_PROTOCOL={other:?} is not one of grpc, http/protobuf, http/json"
        )),
    }
}

/// Builds the tracer provider for `protocol` (inside the tokio runtime).
pub fn start(protocol: Protocol) -> Result<SdkTracerProvider, String> {
    let exporter = match protocol {
        Protocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_protocol(protocol)
            .build(),
        _ => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(protocol)
            .build(),
    }
    .map_err(|e| format!("OTLP exporter: {e}"))?;
    let mut resource = Resource::builder();
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.trim().is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name="));
    if !named {
        resource = resource.with_service_name("cdnsign");
    }
    let resource = resource
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    let processor =
        opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
            exporter,
            opentelemetry_sdk::runtime::Tokio,
        )
        .build();
    // The sampler comes from OTEL_TRACES_SAMPLER / _ARG (the SDK reads them).
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn plan_of(vars: &[(&str, &str)]) -> Result<Plan, String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        plan(|k| map.get(k).cloned())
    }

    #[test]
    fn off_unless_an_endpoint_is_set_and_protocols_as_the_spec_names_them() {
        assert!(matches!(plan_of(&[]), Ok(Plan::Off(_))));
        let ep = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        assert_eq!(plan_of(&[ep]), Ok(Plan::Export(Protocol::HttpBinary)));
        assert_eq!(
            plan_of(&[ep, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]),
            Ok(Plan::Export(Protocol::Grpc))
        );
        assert_eq!(
            plan_of(&[
                ep,
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json")
            ]),
            Ok(Plan::Export(Protocol::HttpJson))
        );
        assert!(plan_of(&[ep, ("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon")]).is_err());
        assert!(matches!(
            plan_of(&[ep, ("OTEL_SDK_DISABLED", "TRUE")]),
            Ok(Plan::Off("OTEL_SDK_DISABLED=true"))
        ));
        assert!(matches!(
            plan_of(&[ep, ("OTEL_TRACES_EXPORTER", "none")]),
            Ok(Plan::Off(_))
        ));
        assert!(plan_of(&[ep, ("OTEL_TRACES_EXPORTER", "zipkin")]).is_err());
        assert_eq!(
            plan_of(&[(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://127.0.0.1:4317/v1/traces"
            )]),
            Ok(Plan::Export(Protocol::HttpBinary))
        );
    }
}
