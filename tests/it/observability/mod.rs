//! What a platform team's tools see, from the real binary: every metric family triggered
//! at least once and the scrape linted by `promtool check metrics`; error details decoded
//! by Python grpcio + grpcio-status (`metrics.rs`); traces received by an OTLP receiver
//! built from the official protobuf definitions, with the caller's trace id and the right
//! parents, and JSON log lines carrying the call's ids (`traces.rs`). Both purge on the
//! CloudFront fake's distribution named here.

mod metrics;
mod traces;

const DIST: &str = "EOBSERVE00001";
