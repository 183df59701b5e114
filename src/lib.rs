//! cdnsign: CloudFront URL and cookie signing at high throughput, over gRPC.
//!
//! Data flow of a signing request:
//!
//! 1. [`grpc::sign`] receives a batch (`cdnsign.v1.Signer`), checks request-wide limits,
//!    takes a snapshot of the key cache and hands the whole batch to the signing pool (a
//!    request of a few ECDSA signatures is signed right there; RSA never is).
//! 2. On the pool ([`signing::pool`]), [`signing::validate`] turns each item into a
//!    policy ([`signing::policy`]) or a per-item error; identical policies are grouped and
//!    signed once with a pre-parsed key ([`signing::keys`]); results render as URLs or
//!    cookies in request order.
//! 3. [`grpc::status`] is the one place domain errors become gRPC codes.
//!
//! Before a call reaches a service, [`grpc::layers`] resolve the caller ([`auth`]: bearer
//! token or mTLS certificate), shed load and bound message sizes; the caller's grant
//! ([`access`]) then limits keys, URL prefixes, TTL and purge targets item by item, on the
//! exact text that is signed.
//!
//! Around it: [`config`] (TOML + `CDNSIGN_*` env, unknown keys refused), [`live`] (the
//! configuration in force, swapped whole on SIGHUP), [`server`] (assembly, health,
//! reflection, graceful shutdown), [`conn`] (plain or TLS connections, with [`linger`]
//! closing them without losing the end of a response), [`metrics`] (Prometheus), [`telemetry`] (logs and
//! OpenTelemetry traces), [`shutdown`] (signals), [`cli`] (offline `sign`/`cookies`/`verify`,
//! and `health`, [`health_probe`]), and
//! [`signing::verify`] (checks a signed URL the way CloudFront would).
//!
//! Whole playlists (HLS, DASH) are read, signed URI by URI or under one shared policy,
//! and written back byte for byte by [`playlist`], served as `SignPlaylist` by
//! [`grpc::playlist`]; `VerifyUrls`/`VerifyCookies` ([`grpc::verify`]) run
//! [`signing::verify`] with the loaded keys' public halves.
//!
//! Cache purging (CloudFront invalidations, Aliyun CDN refreshes) lives in [`purge`], served
//! as `cdnsign.v1.Purger` by [`grpc::purge`].

pub mod access;
pub mod auth;
pub mod cli;
pub mod config;
pub mod conn;
pub mod grpc;
pub mod health_probe;
pub mod linger;
pub mod live;
pub mod metrics;
pub mod playlist;
pub mod purge;
pub mod server;
pub mod shutdown;
pub mod signing;
pub mod telemetry;
pub mod trace_context;

/// Generated protobuf and gRPC code for `cdnsign.v1`.
pub mod proto {
    #![allow(missing_docs, unreachable_pub, clippy::all)]
    tonic::include_proto!("cdnsign.v1");
}
