//! cdnsign's integration tests: one binary (one link of tonic, the AWS SDK and OpenSSL),
//! a module per area, sharing the harness in `common` (the real server on 127.0.0.1:0)
//! and `purge_support` (provider fakes, moto, the binary).
//!
//! The metrics recorder is process-global, so tests here assert metric families and
//! relative changes, never absolute counts that another test could move.

mod common;
mod pg;
mod playlist_support;
mod purge_support;

mod cli;
mod connection_age;
mod grpc_api;
mod multibuffer;
mod observability;
mod operability;
mod playlist_api;
mod playlist_cli;
mod playlist_e2e;
mod purge_aliyun;
mod purge_auth;
mod purge_behaviour;
mod purge_bench;
mod purge_clock_skew;
mod purge_cloudfront_fake;
mod purge_durability;
mod purge_moto;
mod purge_replicas;
mod purge_secrets;
mod purge_store;
mod purge_store_races;
mod sdk_js_vectors;
mod security;
mod vectors;
mod verify_api;
