//! Metric handles made once (at server start, or when a key is loaded) and kept where
//! they are used, so the signing path never looks a metric up by name.

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

use super::{
    BATCH_ITEMS, COOKIES_SIGNED, ITEM_ERRORS, KEY_RELOAD_TIMESTAMP, KEY_RELOADS, KEYS_LOADED,
    SIGN_BATCHES, SIGN_DURATION, SIGN_QUEUE_FULL, SIGN_QUEUE_WAIT, SIGNATURES, URLS_SIGNED,
};

/// Counters for one key, made when the key is loaded and kept on it.
#[derive(Clone)]
pub struct KeyCounters {
    /// URLs signed.
    pub urls: Counter,
    /// Cookie sets signed.
    pub cookies: Counter,
    /// Private-key operations.
    pub signatures: Counter,
}

impl KeyCounters {
    /// Handles labelled with the key id (from config) and its algorithm label (a bounded
    /// value such as `rsa_sha1`, from the signing module's enums).
    pub fn new(key_id: &str, algorithm: &'static str) -> KeyCounters {
        let labels = [
            ("key_id", key_id.to_owned()),
            ("algorithm", algorithm.to_owned()),
        ];
        KeyCounters {
            urls: counter!(URLS_SIGNED, &labels),
            cookies: counter!(COOKIES_SIGNED, &labels),
            signatures: counter!(SIGNATURES, &labels),
        }
    }
}

impl std::fmt::Debug for KeyCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyCounters")
    }
}

/// The item error codes, as label values.
pub const ITEM_ERROR_CODES: [&str; 4] = [
    "invalid_argument",
    "not_found",
    "permission_denied",
    "internal",
];

/// Signing-path handles, made once per server.
#[derive(Clone)]
pub struct SignMetrics {
    item_errors: [Counter; 4],
    /// Items per URL request.
    pub batch_urls: Histogram,
    /// Items per cookie request.
    pub batch_cookies: Histogram,
    /// Queue wait.
    pub queue_wait: Histogram,
    /// Pool run time.
    pub sign_time: Histogram,
    /// Batches signed on the pool.
    pub batches_on_pool: Counter,
    /// Batches signed on the calling thread.
    pub batches_here: Counter,
    /// Small batches whose signatures shared lane flushes with other requests.
    pub batches_shared: Counter,
    /// Requests refused because the pool queue was full.
    pub queue_full: Counter,
}

impl std::fmt::Debug for SignMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignMetrics")
    }
}

impl Default for SignMetrics {
    fn default() -> Self {
        SignMetrics::new()
    }
}

impl SignMetrics {
    /// Makes every handle.
    pub fn new() -> SignMetrics {
        SignMetrics {
            item_errors: ITEM_ERROR_CODES.map(|code| counter!(ITEM_ERRORS, "code" => code)),
            batch_urls: histogram!(BATCH_ITEMS, "kind" => "url"),
            batch_cookies: histogram!(BATCH_ITEMS, "kind" => "cookie"),
            queue_wait: histogram!(SIGN_QUEUE_WAIT),
            sign_time: histogram!(SIGN_DURATION),
            batches_on_pool: counter!(SIGN_BATCHES, "site" => "pool"),
            batches_here: counter!(SIGN_BATCHES, "site" => "caller_thread"),
            batches_shared: counter!(SIGN_BATCHES, "site" => "shared_lanes"),
            queue_full: counter!(SIGN_QUEUE_FULL),
        }
    }

    /// The error counter for a label from [`ITEM_ERROR_CODES`].
    pub fn item_error(&self, code: &'static str) -> &Counter {
        let i = ITEM_ERROR_CODES
            .iter()
            .position(|c| *c == code)
            .unwrap_or(ITEM_ERROR_CODES.len() - 1);
        &self.item_errors[i]
    }
}

/// Key-cache gauges and counters.
#[derive(Clone)]
pub struct KeyMetrics {
    loaded: Gauge,
    success: Counter,
    failure: Counter,
    success_ts: Gauge,
    failure_ts: Gauge,
}

impl std::fmt::Debug for KeyMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyMetrics")
    }
}

impl Default for KeyMetrics {
    fn default() -> Self {
        KeyMetrics::new()
    }
}

impl KeyMetrics {
    /// Makes every handle.
    pub fn new() -> KeyMetrics {
        KeyMetrics {
            loaded: gauge!(KEYS_LOADED),
            success: counter!(KEY_RELOADS, "outcome" => "success"),
            failure: counter!(KEY_RELOADS, "outcome" => "failure"),
            success_ts: gauge!(KEY_RELOAD_TIMESTAMP, "outcome" => "success"),
            failure_ts: gauge!(KEY_RELOAD_TIMESTAMP, "outcome" => "failure"),
        }
    }

    /// Records a load that put `keys` keys in service.
    pub fn loaded(&self, keys: usize) {
        self.loaded.set(keys as f64);
        self.success.increment(1);
        self.success_ts.set(unix_now_f64());
    }

    /// Records a failed reload (the old set keeps serving).
    pub fn failed(&self) {
        self.failure.increment(1);
        self.failure_ts.set(unix_now_f64());
    }
}

fn unix_now_f64() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
