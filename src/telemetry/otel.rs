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
//! | `OTEL_EXPORTER_OTLP_CERTIFICATE`, `..._CLIENT_CERTIFICATE`, `..._CLIENT_KEY` (and their `TRACES_` forms) | TLS for an `https://` endpoint: the CA to trust instead of the system roots, and a client certificate for mTLS ([`super::otel_tls`]) |
//!
//! Spans are batched and exported from the tokio runtime, so [`start`] must run inside it.
//! An `http://` endpoint is plain (a collector or agent beside the pod); `https://` is
//! verified, with either protocol. TLS files set for an `http://` endpoint are refused,
//! rather than silently unused.

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry_otlp::{
    Protocol, WithExportConfig as _, WithHttpConfig as _, WithTonicConfig as _,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;

use super::otel_tls::TlsFiles;

/// Why traces are not exported, or how they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// No endpoint, or switched off.
    Off(&'static str),
    /// Export.
    Export(Export),
}

/// How traces are exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// `grpc`, `http/protobuf` or `http/json`.
    pub protocol: Protocol,
    /// The endpoint is `https://`: verified TLS (with `tls`'s files, if any).
    pub https: bool,
    /// The TLS files the variables name.
    pub tls: TlsFiles,
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
    let Some(endpoint) =
        set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT"))
    else {
        return Ok(Plan::Off("no OTEL_EXPORTER_OTLP_ENDPOINT"));
    };
    let https = endpoint
        .get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("https://"));
    let tls = TlsFiles::from_vars(set)?;
    if !https && !tls.is_empty() {
        return Err(format!(
            "{} set, but the OTLP endpoint is not https://: use an https:// endpoint or unset them",
            tls.names().join(", ")
        ));
    }
    let protocol = set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|| set("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_else(|| "http/protobuf".into());
    let protocol = match protocol.as_str() {
        "grpc" => Protocol::Grpc,
        "http/protobuf" => Protocol::HttpBinary,
        "http/json" => Protocol::HttpJson,
        other => {
            return Err(format!(
                "OTEL_EXPORTER_OTLP_PROTOCOL={other:?} is not one of grpc, http/protobuf, http/json"
            ));
        }
    };
    Ok(Plan::Export(Export {
        protocol,
        https,
        tls,
    }))
}

/// How long one OTLP/HTTP export may take over https (the SDK's default timeout).
const HTTPS_EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the tracer provider for `export` (inside the tokio runtime). An unreadable TLS
/// file is an error naming its variable.
pub fn start(export: &Export) -> Result<SdkTracerProvider, String> {
    let protocol = export.protocol;
    let exporter = match protocol {
        Protocol::Grpc => {
            let builder = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_protocol(protocol);
            if export.https {
                builder.with_tls_config(export.tls.tonic()?).build()
            } else {
                builder.build()
            }
        }
        _ => {
            let builder = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(protocol);
            if export.https {
                builder
                    .with_http_client(export.tls.http_client(HTTPS_EXPORT_TIMEOUT)?)
                    .build()
            } else {
                builder.build()
            }
        }
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
        assert_eq!(protocol_of(&[ep]), Some(Protocol::HttpBinary));
        assert_eq!(
            protocol_of(&[ep, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]),
            Some(Protocol::Grpc)
        );
        assert_eq!(
            protocol_of(&[
                ep,
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json")
            ]),
            Some(Protocol::HttpJson)
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
            protocol_of(&[(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://127.0.0.1:4317/v1/traces"
            )]),
            Some(Protocol::HttpBinary)
        );
    }

    fn protocol_of(vars: &[(&str, &str)]) -> Option<Protocol> {
        match plan_of(vars) {
            Ok(Plan::Export(e)) => Some(e.protocol),
            _ => None,
        }
    }

    #[test]
    fn https_endpoints_are_verified_and_tls_files_for_plain_http_are_refused() {
        let https = (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "HTTPS://collector.example:4317",
        );
        let Ok(Plan::Export(e)) = plan_of(&[https]) else {
            panic!("export")
        };
        assert!(e.https && e.tls.is_empty(), "{e:?}: system roots");
        let Ok(Plan::Export(e)) = plan_of(&[https, ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/ca.pem")])
        else {
            panic!("export")
        };
        assert!(e.https && !e.tls.is_empty(), "{e:?}");
        // The per-signal endpoint decides.
        let err = plan_of(&[
            https,
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://127.0.0.1:4318/v1/traces",
            ),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/ca.pem"),
        ])
        .expect_err("TLS files with http://");
        assert!(
            err.contains("OTEL_EXPORTER_OTLP_CERTIFICATE") && err.contains("https://"),
            "{err}"
        );
        assert!(
            plan_of(&[https, ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/k.pem")]).is_err(),
            "a key without its certificate"
        );
    }
}
