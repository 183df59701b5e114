//! The gRPC methods this server exposes, read from the services' own descriptor sets (so a
//! new RPC is labelled correctly without a list to keep up to date), with their metric
//! handles by the go-grpc-prometheus conventions dashboards already use:
//!
//! - `grpc_server_started_total{grpc_type, grpc_service, grpc_method}`
//! - `grpc_server_handled_total{grpc_type, grpc_service, grpc_method, grpc_code}`
//! - `grpc_server_handling_seconds{grpc_type, grpc_service, grpc_method}`
//!
//! `grpc_code` is the Go name of the status (`OK`, `InvalidArgument`, `Unauthenticated`,
//! ...), `grpc_type` one of `unary`, `client_stream`, `server_stream`, `bidi_stream`. The
//! older `cdnsign_grpc_requests_total{method, code}` and
//! `cdnsign_grpc_request_duration_seconds{method}` stay for one release (see docs).

use std::sync::OnceLock;

use metrics::{Counter, Histogram, counter, histogram};
use prost::Message as _;

use crate::metrics::{
    GRPC_DURATION, GRPC_REQUESTS, GRPC_SERVER_HANDLED, GRPC_SERVER_HANDLING_SECONDS,
    GRPC_SERVER_STARTED,
};

/// gRPC status codes by number, as go-grpc-prometheus labels them (`codes.Code.String()`).
pub const GO_CODES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// The same codes as the older `cdnsign_grpc_requests_total` labels them (kept unchanged
/// for one release).
const LEGACY_CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// How a method streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallType {
    /// One message each way.
    Unary,
    /// A stream of requests, one response.
    ClientStream,
    /// One request, a stream of responses.
    ServerStream,
    /// Streams both ways.
    BidiStream,
}

impl CallType {
    fn from_streaming(client: bool, server: bool) -> CallType {
        match (client, server) {
            (false, false) => CallType::Unary,
            (true, false) => CallType::ClientStream,
            (false, true) => CallType::ServerStream,
            (true, true) => CallType::BidiStream,
        }
    }

    /// The `grpc_type` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            CallType::Unary => "unary",
            CallType::ClientStream => "client_stream",
            CallType::ServerStream => "server_stream",
            CallType::BidiStream => "bidi_stream",
        }
    }
}

/// One method and its handles.
struct Method {
    path: String,
    service: &'static str,
    name: &'static str,
    kind: CallType,
    started: Counter,
    handling: Histogram,
    handled: [OnceLock<Counter>; 17],
    legacy_requests: [OnceLock<Counter>; 17],
    legacy_duration: Histogram,
}

/// Every method the server exposes (plus `unknown` for anything else), with its handles.
pub struct CallTable {
    methods: Vec<Method>,
}

impl std::fmt::Debug for CallTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallTable")
            .field("methods", &self.methods.len())
            .finish()
    }
}

/// Label values live as long as the process: the table is built once per server from
/// compiled-in descriptors, so leaking the few strings keeps the handles simple.
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

impl CallTable {
    /// The methods of every service in `descriptor_sets` (encoded `FileDescriptorSet`s).
    /// A set that does not decode is skipped with a warning (its calls count as `unknown`).
    pub fn from_descriptor_sets(descriptor_sets: &[&[u8]]) -> CallTable {
        let mut found = Vec::new();
        for bytes in descriptor_sets {
            let set = match prost_types::FileDescriptorSet::decode(*bytes) {
                Ok(s) => s,
                Err(error) => {
                    tracing::warn!(%error, "a service descriptor set does not decode; its calls are labelled unknown");
                    continue;
                }
            };
            for file in set.file {
                let package = file.package.unwrap_or_default();
                for service in file.service {
                    let service_name = match (package.is_empty(), service.name) {
                        (_, None) => continue,
                        (true, Some(s)) => s,
                        (false, Some(s)) => format!("{package}.{s}"),
                    };
                    for m in service.method {
                        let Some(name) = m.name else { continue };
                        let kind = CallType::from_streaming(
                            m.client_streaming.unwrap_or(false),
                            m.server_streaming.unwrap_or(false),
                        );
                        found.push((
                            format!("/{service_name}/{name}"),
                            service_name.clone(),
                            name,
                            kind,
                        ));
                    }
                }
            }
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found.dedup_by(|a, b| a.0 == b.0);
        found.push((
            "unknown".into(),
            "unknown".into(),
            "unknown".into(),
            CallType::Unary,
        ));
        let methods = found
            .into_iter()
            .map(|(path, service, name, kind)| {
                let (service, name) = (leak(service), leak(name));
                let labels = [
                    ("grpc_type", kind.as_str()),
                    ("grpc_service", service),
                    ("grpc_method", name),
                ];
                let legacy = if path == "unknown" {
                    "unknown"
                } else {
                    leak(path.trim_start_matches('/').to_owned())
                };
                Method {
                    started: counter!(GRPC_SERVER_STARTED, &labels),
                    handling: histogram!(GRPC_SERVER_HANDLING_SECONDS, &labels),
                    handled: std::array::from_fn(|_| OnceLock::new()),
                    legacy_requests: std::array::from_fn(|_| OnceLock::new()),
                    legacy_duration: histogram!(GRPC_DURATION, "method" => legacy),
                    path,
                    service,
                    name,
                    kind,
                }
            })
            .collect();
        CallTable { methods }
    }

    /// The index of the method at `path` (`/package.Service/Method`), or of `unknown`.
    pub fn index(&self, path: &str) -> usize {
        let known = &self.methods[..self.methods.len() - 1];
        known
            .binary_search_by(|m| m.path.as_str().cmp(path))
            .unwrap_or(self.methods.len() - 1)
    }

    /// `package.Service/Method` for logs, or `unknown`.
    pub fn label(&self, method: usize) -> &str {
        self.methods[method].path.trim_start_matches('/')
    }

    /// How the method streams.
    pub fn kind(&self, method: usize) -> CallType {
        self.methods[method].kind
    }

    /// A call to `method` started.
    pub fn started(&self, method: usize) {
        self.methods[method].started.increment(1);
    }

    /// A call to `method` ended (its last message sent, or refused) with `code` after
    /// `seconds`.
    pub fn handled(&self, method: usize, code: usize, seconds: f64) {
        let m = &self.methods[method];
        let code = code.min(GO_CODES.len() - 1);
        m.handled[code]
            .get_or_init(|| {
                counter!(
                    GRPC_SERVER_HANDLED,
                    "grpc_type" => m.kind.as_str(),
                    "grpc_service" => m.service,
                    "grpc_method" => m.name,
                    "grpc_code" => GO_CODES[code]
                )
            })
            .increment(1);
        m.handling.record(seconds);
    }

    /// The older families, recorded when response headers go out (unchanged for one
    /// release).
    pub fn legacy(&self, method: usize, code: usize, seconds: f64) {
        let m = &self.methods[method];
        let code = code.min(LEGACY_CODES.len() - 1);
        let method_label = if m.path == "unknown" {
            "unknown"
        } else {
            m.path.trim_start_matches('/')
        };
        m.legacy_requests[code]
            .get_or_init(|| {
                counter!(GRPC_REQUESTS, "method" => method_label.to_owned(), "code" => LEGACY_CODES[code])
            })
            .increment(1);
        m.legacy_duration.record(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> CallTable {
        CallTable::from_descriptor_sets(&[
            crate::server::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            b"\xff\xff not a descriptor set",
        ])
    }

    #[test]
    fn methods_and_their_streaming_come_from_the_descriptors() {
        let t = table();
        let unary = t.index("/cdnsign.v1.Signer/SignUrls");
        assert_eq!(t.label(unary), "cdnsign.v1.Signer/SignUrls");
        assert_eq!(t.kind(unary), CallType::Unary);
        let bidi = t.index("/cdnsign.v1.Signer/SignUrlsStream");
        assert_eq!(t.kind(bidi), CallType::BidiStream);
        let watch = t.index("/cdnsign.v1.Purger/WatchPurge");
        assert_eq!(t.kind(watch), CallType::ServerStream);
        let health = t.index("/grpc.health.v1.Health/Watch");
        assert_eq!(t.kind(health), CallType::ServerStream);
        assert_eq!(t.label(t.index("/x.Y/Z")), "unknown");
        assert_eq!(t.label(t.index("")), "unknown");
    }

    #[test]
    fn codes_are_named_as_go_grpc_prometheus_names_them() {
        assert_eq!(GO_CODES[16], "Unauthenticated");
        assert_eq!(GO_CODES[1], "Canceled");
        assert_eq!(GO_CODES[8], "ResourceExhausted");
        // Recording any code number, even a bogus one, does not panic.
        let t = table();
        t.handled(t.index("/cdnsign.v1.Signer/SignUrls"), 99, 0.1);
        t.legacy(t.index("/x"), 99, 0.1);
    }
}
