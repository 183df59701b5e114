//! Prometheus metrics: names as constants, label values from enums or from config (key
//! ids, target names), never from a caller's string; handles made once.
//!
//! The recorder is process-global (the `metrics` facade); [`install`] sets it up once and
//! later calls reuse it, so several servers in one test process share it. Each server
//! serves `/metrics` on its own `[metrics] listen` address ([`serve`]). The names and the
//! recorder are here; the handles the signing path keeps in `handles`.

mod endpoint;
mod handles;

use std::sync::OnceLock;

use metrics::gauge;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub use endpoint::{HEADER_READ_TIMEOUT, MAX_CONNECTIONS, serve, serve_limited};
pub use handles::{ITEM_ERROR_CODES, KeyCounters, KeyMetrics, SignMetrics};

/// URLs signed, by `key_id` and `algorithm`.
pub const URLS_SIGNED: &str = "cdnsign_urls_signed_total";
/// Cookie sets signed, by `key_id` and `algorithm`.
pub const COOKIES_SIGNED: &str = "cdnsign_cookies_signed_total";
/// Private-key operations, by `key_id` and `algorithm` (less than items when policies
/// are shared).
pub const SIGNATURES: &str = "cdnsign_signatures_total";
/// Items refused, by `code`.
pub const ITEM_ERRORS: &str = "cdnsign_item_errors_total";
/// Items per signing request, by `kind` (`url`, `cookie`).
pub const BATCH_ITEMS: &str = "cdnsign_batch_items";
/// Time a batch waited for a pool thread.
pub const SIGN_QUEUE_WAIT: &str = "cdnsign_sign_queue_wait_seconds";
/// Time a batch ran (validation, policies, signatures, rendering), on the pool or, for a
/// few ECDSA signatures, on the calling thread.
pub const SIGN_DURATION: &str = "cdnsign_sign_duration_seconds";
/// Signing batches by `site`: `pool`, or `caller_thread` for the few-ECDSA-signature
/// requests signed on the gRPC worker (`[signing] inline_ecdsa_max_items`).
pub const SIGN_BATCHES: &str = "cdnsign_sign_batches_total";
/// Batches waiting for a pool thread.
pub const POOL_QUEUE_DEPTH: &str = "cdnsign_pool_queue_depth";
/// Batches running on the pool now.
pub const POOL_BUSY: &str = "cdnsign_pool_busy_threads";
/// 1 for the backend each `algorithm` signs with (`openssl`, `pure-rust`, `multibuffer`),
/// 0 for the others.
pub const SIGNING_BACKEND_INFO: &str = "cdnsign_signing_backend_info";
/// Multi-buffer lanes re-signed with OpenSSL, by `algorithm` and `reason`
/// (`verify_failed`, `lane_error`).
pub const MULTIBUFFER_FALLBACKS: &str = "cdnsign_multibuffer_fallbacks_total";
/// Cross-request lane flushes, by `trigger`: `full`, `timer`, `idle` (a pool thread was free),
/// `freed` (another flush ended); `*_one_by_one` when too few for a lane computation and
/// signed one by one with OpenSSL.
pub const MULTIBUFFER_FLUSHES: &str = "cdnsign_multibuffer_flushes_total";
/// Signatures per cross-request lane flush (1 to 8).
pub const MULTIBUFFER_FLUSH_LANES: &str = "cdnsign_multibuffer_flush_lanes";
/// The fewest signatures worth one multi-buffer lane computation, by `algorithm`, as
/// measured on this CPU at start (fewer sign one by one with OpenSSL).
pub const MULTIBUFFER_MIN_LANE_FILL: &str = "cdnsign_multibuffer_min_lane_fill";
/// Signing pool size.
pub const POOL_THREADS: &str = "cdnsign_pool_threads";
/// Keys in the live key set.
pub const KEYS_LOADED: &str = "cdnsign_keys_loaded";
/// Configuration reloads (SIGHUP), by `outcome` (`success`, `failure`).
pub const CONFIG_RELOADS: &str = "cdnsign_config_reloads_total";
/// Signing batches dropped before signing because their caller had gone (deadline passed
/// or call cancelled).
pub const SIGN_ABANDONED: &str = "cdnsign_sign_batches_abandoned_total";
/// Signing requests refused because the pool's queue was full (`[signing] max_queued_items`).
pub const SIGN_QUEUE_FULL: &str = "cdnsign_sign_queue_full_total";
/// Items admitted to the signing pool and not finished.
pub const POOL_QUEUED_ITEMS: &str = "cdnsign_pool_queued_items";
/// Key (re)loads, by `outcome` (`success`, `failure`).
pub const KEY_RELOADS: &str = "cdnsign_key_reloads_total";
/// Unix time of the last key load, by `outcome`.
pub const KEY_RELOAD_TIMESTAMP: &str = "cdnsign_key_reload_timestamp_seconds";
/// gRPC calls, by `method` and `code`.
pub const GRPC_REQUESTS: &str = "cdnsign_grpc_requests_total";
/// gRPC call latency (to response headers), by `method`.
pub const GRPC_DURATION: &str = "cdnsign_grpc_request_duration_seconds";
/// gRPC calls started, go-grpc-prometheus style: `grpc_type`, `grpc_service`, `grpc_method`.
pub const GRPC_SERVER_STARTED: &str = "grpc_server_started_total";
/// gRPC calls finished (a stream at its end), with `grpc_code` (`OK`, `Unauthenticated`...).
pub const GRPC_SERVER_HANDLED: &str = "grpc_server_handled_total";
/// gRPC call duration to the end of the response (a stream's whole life).
pub const GRPC_SERVER_HANDLING_SECONDS: &str = "grpc_server_handling_seconds";
/// Always 1: `version`, `revision` (git) and `backend` (RSA signing backend) as labels.
pub const BUILD_INFO: &str = "cdnsign_build_info";
/// Whether the server reports SERVING (1) or is draining (0).
pub const SERVING: &str = "cdnsign_serving";
/// Calls refused for lack of a valid identity, by `reason`.
pub const AUTH_FAILURES: &str = "cdnsign_auth_failures_total";
/// Calls refused by the concurrency limit (load shedding).
pub const REQUESTS_SHED: &str = "cdnsign_requests_shed_total";
/// Gauge: client connections open on the gRPC port (TLS handshakes included).
pub const GRPC_CONNECTIONS: &str = "cdnsign_grpc_connections";
/// Counter: connections closed on arrival because `server.max_connections` were open.
pub const GRPC_CONNECTIONS_REFUSED: &str = "cdnsign_grpc_connections_refused_total";
/// Calls refused by a client's rate limit, by `client` (a configured name) and `kind`.
pub const RATE_LIMITED: &str = "cdnsign_rate_limited_total";
/// Items refused by authorization, by `client`.
pub const ITEMS_DENIED: &str = "cdnsign_items_denied_total";
/// Purge paths, by `provider` and `outcome`.
pub const PURGE_PATHS: &str = "cdnsign_purge_paths_total";
/// Paths a merged purge request did not have to send (duplicates, paths covered by a
/// wildcard of the same request), by `provider`.
pub const PURGE_PATHS_MERGED: &str = "cdnsign_purge_paths_merged_total";
/// Paths the provider bills for (a wildcard or tag counts once, a merged duplicate not at
/// all), by `target` (a configured name).
pub const PURGE_PATHS_BILLED: &str = "cdnsign_purge_paths_billed_total";
/// Purge jobs (one provider request each), by `provider` and `outcome`.
pub const PURGE_JOBS: &str = "cdnsign_purge_jobs_total";
/// Upstream (CDN API) request latency, by `provider` and `operation`.
pub const UPSTREAM_DURATION: &str = "cdnsign_upstream_request_duration_seconds";
/// Upstream retries, by `provider` and `operation`.
pub const UPSTREAM_RETRIES: &str = "cdnsign_upstream_retries_total";
/// Aliyun refresh quota remaining today, by `kind` (`url`, `dir`, `preload`).
pub const ALIYUN_QUOTA_REMAINING: &str = "cdnsign_aliyun_quota_remaining";

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const LANE_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
const BATCH_BUCKETS: &[f64] = &[
    1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 50000.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
static PROCESS: OnceLock<metrics_process::Collector> = OnceLock::new();

/// The git revision this binary was built from (`build.rs`: git, or `CDNSIGN_REVISION`).
pub const REVISION: &str = env!("CDNSIGN_REVISION");

/// Sets `cdnsign_build_info{version, revision, backend}` to 1 (`backend`: the RSA signing
/// backend in use, a fixed name).
pub fn set_build_info(backend: &'static str) {
    gauge!(
        BUILD_INFO,
        "version" => env!("CARGO_PKG_VERSION"),
        "revision" => REVISION,
        "backend" => backend
    )
    .set(1.0);
}

/// Samples the `process_*` metrics (CPU seconds, resident memory, open descriptors...).
fn collect_process() {
    PROCESS
        .get_or_init(|| {
            let c = metrics_process::Collector::default();
            c.describe();
            c
        })
        .collect();
}

/// The scrape page now: process metrics sampled, then everything rendered.
pub fn render(handle: &PrometheusHandle) -> String {
    collect_process();
    handle.render()
}

/// Installs the global Prometheus recorder (first call only) and returns its handle;
/// `None` if another recorder was installed first.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(BATCH_ITEMS.into()), BATCH_BUCKETS)
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(MULTIBUFFER_FLUSH_LANES.into()),
                        LANE_BUCKETS,
                    )
                });
            match builder.and_then(|b| b.install_recorder()) {
                Ok(handle) => {
                    describe();
                    collect_process();
                    Some(handle)
                }
                Err(error) => {
                    tracing::warn!(%error, "metrics recorder not installed");
                    None
                }
            }
        })
        .clone()
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(URLS_SIGNED, "URLs signed, by key and algorithm");
    describe_counter!(COOKIES_SIGNED, "Cookie sets signed, by key and algorithm");
    describe_counter!(
        SIGNATURES,
        "Private-key signing operations, by key and algorithm"
    );
    describe_counter!(ITEM_ERRORS, "Batch items refused, by gRPC code");
    describe_histogram!(BATCH_ITEMS, Unit::Count, "Items per signing request");
    describe_histogram!(
        SIGN_QUEUE_WAIT,
        Unit::Seconds,
        "Time a batch waited for a signing thread"
    );
    describe_histogram!(
        SIGN_DURATION,
        Unit::Seconds,
        "Time a batch took to sign, on the pool or on the calling thread"
    );
    describe_counter!(
        SIGN_BATCHES,
        "Signing batches, by where they ran: pool, caller_thread for small ECDSA requests, shared_lanes for small requests sharing multi-buffer flushes"
    );
    describe_gauge!(POOL_QUEUE_DEPTH, "Batches waiting for a signing thread");
    describe_gauge!(POOL_BUSY, "Batches running on the signing pool");
    describe_gauge!(POOL_THREADS, "Signing pool threads");
    describe_gauge!(
        SIGNING_BACKEND_INFO,
        "1 for the backend each algorithm signs with (openssl, pure-rust, multibuffer), 0 for the others"
    );
    describe_counter!(
        MULTIBUFFER_FALLBACKS,
        "Multi-buffer signatures re-signed with OpenSSL, by algorithm and reason (verify_failed, lane_error)"
    );
    describe_counter!(
        MULTIBUFFER_FLUSHES,
        "Cross-request multi-buffer lane flushes, by trigger (full, timer, idle, freed; *_one_by_one when signed one by one)"
    );
    describe_histogram!(
        MULTIBUFFER_FLUSH_LANES,
        Unit::Count,
        "How many signatures each cross-request multi-buffer flush computed"
    );
    describe_gauge!(
        MULTIBUFFER_MIN_LANE_FILL,
        "Fewest signatures worth one multi-buffer lane computation on this CPU, by algorithm (measured at start; fewer sign one by one with OpenSSL)"
    );
    describe_gauge!(KEYS_LOADED, "Keys in the live key set");
    describe_counter!(KEY_RELOADS, "Key set loads, by outcome");
    describe_counter!(
        CONFIG_RELOADS,
        "Configuration reloads (SIGHUP), by outcome; a failure leaves the old config serving"
    );
    describe_counter!(
        SIGN_ABANDONED,
        "Signing batches dropped unsigned because the caller had gone (deadline or cancel)"
    );
    describe_counter!(
        SIGN_QUEUE_FULL,
        "Signing requests refused because the pool queue was full (signing.max_queued_items)"
    );
    describe_gauge!(
        POOL_QUEUED_ITEMS,
        "Items admitted to the signing pool and not yet finished"
    );
    describe_gauge!(
        KEY_RELOAD_TIMESTAMP,
        Unit::Seconds,
        "Unix time of the last key load, by outcome"
    );
    describe_counter!(
        GRPC_REQUESTS,
        "gRPC calls, by method and status code (deprecated: use grpc_server_handled_total)"
    );
    describe_counter!(
        GRPC_SERVER_STARTED,
        "gRPC calls started, by grpc_type, grpc_service and grpc_method"
    );
    describe_counter!(
        GRPC_SERVER_HANDLED,
        "gRPC calls completed (streams at their end), by grpc_type, grpc_service, grpc_method and grpc_code"
    );
    describe_histogram!(
        GRPC_SERVER_HANDLING_SECONDS,
        Unit::Seconds,
        "gRPC call duration until the response ended, by grpc_type, grpc_service and grpc_method"
    );
    describe_gauge!(
        BUILD_INFO,
        "Always 1, labelled with the version, git revision and RSA signing backend"
    );
    describe_counter!(
        AUTH_FAILURES,
        "Calls refused for lack of a valid identity, by reason"
    );
    describe_counter!(
        REQUESTS_SHED,
        "Calls refused at once because server.max_concurrent_requests were in flight"
    );
    describe_gauge!(
        GRPC_CONNECTIONS,
        "Client connections open on the gRPC port, TLS handshakes included"
    );
    describe_counter!(
        GRPC_CONNECTIONS_REFUSED,
        "Connections closed on arrival because server.max_connections were open"
    );
    describe_counter!(
        RATE_LIMITED,
        "Calls refused by a client's rate limit, by client and kind"
    );
    describe_counter!(
        ITEMS_DENIED,
        "Batch items refused because the client's grant does not cover them, by client"
    );
    describe_counter!(
        PURGE_PATHS,
        "Purge paths, by provider and outcome (completed, failed, rejected)"
    );
    describe_counter!(
        PURGE_PATHS_MERGED,
        "Purge paths a merged provider request did not send (duplicates, paths covered by a wildcard), by provider"
    );
    describe_counter!(
        PURGE_PATHS_BILLED,
        "Purge paths the provider bills (a wildcard or tag counts once, a merged duplicate not at all), by target"
    );
    describe_counter!(
        PURGE_JOBS,
        "Purge jobs (provider requests), by provider and outcome (submitted, completed, failed)"
    );
    describe_histogram!(
        UPSTREAM_DURATION,
        Unit::Seconds,
        "CDN provider API call latency, by provider and operation"
    );
    describe_counter!(
        UPSTREAM_RETRIES,
        "Retried CDN provider API calls, by provider and operation"
    );
    describe_gauge!(
        ALIYUN_QUOTA_REMAINING,
        "Aliyun refresh/preload quota left today, by kind"
    );

    describe_histogram!(
        GRPC_DURATION,
        Unit::Seconds,
        "gRPC call latency to response headers (deprecated: use grpc_server_handling_seconds)"
    );
    describe_gauge!(
        SERVING,
        "1 while the server reports SERVING, 0 while draining"
    );
}
