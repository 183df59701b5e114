//! The steps every signing batch goes through, whatever the RPC: request-wide limits, the
//! caller's rate limit, a place in the pool's queue, the batch context (keys, expiry,
//! grant), where it is signed ([`SignerService::sign_items`]: this worker, shared lane
//! flushes or the pool), and the metrics and audit events of its outcome.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::status::{ApiError, item_error_label};
use crate::auth::{AUDIT_TARGET, Caller};
use crate::config::SigningConfig;
use crate::live::LiveConfig;
use crate::metrics::{ITEMS_DENIED, RATE_LIMITED, SignMetrics};
use crate::signing::keys::{KeyKind, KeySet, SigningKey};
use crate::signing::lanes::{Lanes, sign_batch_shared};
use crate::signing::pool::{Admission, JobTiming, SigningPool};
use crate::signing::validate::BatchContext;
use crate::signing::{AsItemSpec, BatchStats, SignError, SignedItem, sign_batch};

/// State shared by every signing call.
#[derive(Debug)]
pub struct SignerService {
    pub(super) live: Arc<LiveConfig>,
    pub(super) pool: Arc<SigningPool>,
    /// Cross-request lane queues: small requests whose keys sign in lanes share flushes.
    lanes: Option<Lanes>,
    pub(super) metrics: SignMetrics,
    /// Public halves of the loaded keys, for `VerifyUrls` / `VerifyCookies`.
    pub(super) public_keys: crate::signing::public_keys::PublicKeyCache,
}

/// Most items a request may have to share lane flushes with other requests; larger ones
/// fill lanes on their own, on the pool.
const SHARED_MAX_ITEMS: usize = 8;

/// Batch-wide request fields, common to URL and cookie requests.
pub(super) struct BatchFields<'a> {
    pub(super) caller: &'a Caller,
    pub(super) key_id: &'a str,
    pub(super) expires_at: i64,
    pub(super) ttl_seconds: i64,
    pub(super) custom_policy: bool,
}

pub(super) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// What one call signs with: the keys and limits of the configuration in force when it
/// started, whatever a reload does meanwhile.
pub(super) struct CallConfig {
    pub(super) keys: Arc<KeySet>,
    pub(super) limits: SigningConfig,
}

impl SignerService {
    /// A service signing on `pool` with the keys and limits of the live configuration.
    pub fn new(live: Arc<LiveConfig>, pool: Arc<SigningPool>) -> SignerService {
        let flush_after = live.snapshot().selection.flush_after();
        let lanes = match Lanes::new(Arc::clone(&pool), flush_after) {
            Ok(lanes) => Some(lanes),
            Err(error) => {
                tracing::warn!(%error, "cannot start the lane timer thread; requests will not share multi-buffer flushes");
                None
            }
        };
        SignerService {
            live,
            pool,
            lanes,
            metrics: SignMetrics::new(),
            public_keys: crate::signing::public_keys::PublicKeyCache::default(),
        }
    }

    /// The lane queues (tests watch their flushes).
    pub fn lanes(&self) -> Option<&Lanes> {
        self.lanes.as_ref()
    }

    pub(super) fn call_config(&self) -> CallConfig {
        let live = self.live.snapshot();
        CallConfig {
            keys: Arc::clone(&live.keys),
            limits: live.config.signing.clone(),
        }
    }

    pub(super) fn check_limits(limits: &SigningConfig, items: usize) -> Result<(), ApiError> {
        if items == 0 {
            return Err(ApiError::NoItems);
        }
        if items > limits.max_batch {
            return Err(ApiError::TooManyItems {
                count: items,
                max: limits.max_batch,
            });
        }
        Ok(())
    }

    /// A place in the pool's queue for `items` items, unless the batch runs on this thread.
    pub(super) fn admit(
        &self,
        here: bool,
        items: usize,
        limits: &SigningConfig,
    ) -> Result<Option<Admission>, ApiError> {
        if here {
            return Ok(None);
        }
        match self.pool.admit(items, limits.max_queued_items) {
            Ok(a) => Ok(Some(a)),
            Err(full) => {
                self.metrics.queue_full.increment(1);
                Err(ApiError::QueueFull {
                    queued: full.queued,
                    limit: full.limit,
                    retry_after: full.retry_after,
                })
            }
        }
    }

    pub(super) fn context(
        &self,
        call: &CallConfig,
        fields: &BatchFields<'_>,
        items: usize,
    ) -> BatchContext {
        let keys = &call.keys;
        let default_key_id = if fields.key_id.is_empty() {
            call.limits.default_key_id.as_str()
        } else {
            fields.key_id
        };
        let span = tracing::Span::current();
        span.record("batch_size", items);
        // Only a configured key id goes in the span: a caller's unknown string does not.
        let default_key = keys.get(default_key_id);
        if default_key.is_some() {
            span.record("key_id", default_key_id);
        }
        let grant = fields.caller.grant().cloned();
        let max_ttl_seconds = grant
            .as_ref()
            .and_then(|g| g.max_ttl_seconds)
            .map_or(call.limits.max_ttl_seconds, |t| {
                t.min(call.limits.max_ttl_seconds)
            });
        BatchContext {
            default_key,
            default_key_id: default_key_id.to_owned(),
            expires_at: fields.expires_at,
            ttl_seconds: fields.ttl_seconds,
            custom_policy: fields.custom_policy,
            max_ttl_seconds,
            now: unix_now(),
            grant,
        }
    }

    /// Charges the caller's URL rate limit for a whole batch before any work.
    pub(super) fn charge_rate(&self, caller: &Caller, items: usize) -> Result<(), ApiError> {
        let Some(grant) = caller.grant() else {
            return Ok(());
        };
        grant.take_urls(items as u64).map_err(|source| {
            metrics::counter!(RATE_LIMITED, "client" => grant.name.clone(), "kind" => "urls")
                .increment(1);
            tracing::warn!(
                target: AUDIT_TARGET,
                event = "rate_limited",
                client = %grant.name,
                items,
                "signing request refused by the client's rate limit"
            );
            ApiError::RateLimited {
                client: grant.name.clone(),
                limit: "urls_per_second",
                source,
            }
        })
    }

    /// Writes the audit event for items the caller's grant refused.
    pub(super) fn audit_denied(caller: &Caller, items: usize, denied: u64) {
        if denied > 0 {
            metrics::counter!(ITEMS_DENIED, "client" => caller.name().to_owned()).increment(denied);
            tracing::warn!(
                target: AUDIT_TARGET,
                event = "denied",
                client = caller.name(),
                items,
                denied,
                "items outside the client's keys or URL prefixes were refused"
            );
        }
    }

    /// Signs a batch where it costs least: on this worker (a few ECDSA signatures), in lane
    /// flushes shared with concurrent requests (a few items whose keys sign in lanes), or
    /// on the pool; counts the outcomes, writes the audit event for denied items, and builds
    /// the response with `respond` where the batch was signed. `items` is freed before the
    /// response is built (MBs for a 10,000-URL batch).
    pub(super) async fn sign_items<T, R>(
        &self,
        caller: &Caller,
        call: CallConfig,
        items: Vec<T>,
        ctx: BatchContext,
        output: Output,
        respond: impl FnOnce(Vec<Result<SignedItem, SignError>>, BatchStats) -> R + Send + 'static,
    ) -> Result<R, ApiError>
    where
        T: AsItemSpec + Send + Sync + 'static,
        R: Send + 'static,
    {
        let count = items.len();
        let metrics = self.metrics.clone();
        let here = self.few_ecdsa(&call.limits, &items, &ctx, &call.keys);
        if let Some(lanes) = self.shared_lanes(here, &items, &ctx, &call.keys) {
            // Room in the pool's queue like any other request: overload is refused first.
            let admission = self.admit(false, count, &call.limits)?;
            let started = std::time::Instant::now();
            let (results, stats) = sign_batch_shared(&items, &ctx, &call.keys, lanes).await;
            if let Some(a) = admission {
                a.ran(started.elapsed());
            }
            drop(items);
            let denied = count_outcomes(&results, &metrics, output);
            let response = respond(results, stats);
            self.record_shared(started.elapsed());
            Self::audit_denied(caller, count, denied);
            return Ok(response);
        }
        let admission = self.admit(here, count, &call.limits)?;
        let keys = call.keys;
        let ((response, denied), timing) = self
            .pool
            .run_here_or_on_pool(here, move |site| {
                let started = std::time::Instant::now();
                let (results, stats) = sign_batch(&items, &ctx, &keys, site);
                // The results own copies of what they need.
                drop(items);
                let denied = count_outcomes(&results, &metrics, output);
                let response = respond(results, stats);
                if let Some(a) = admission {
                    a.ran(started.elapsed());
                }
                (response, denied)
            })
            .await?;
        self.record_timing(here, timing);
        Self::audit_denied(caller, count, denied);
        Ok(response)
    }
}

impl SignerService {
    /// Whether a batch is at most `[signing] inline_ecdsa_max_items` ECDSA signatures, which
    /// cost less on this thread than the hand-off to the pool and back (see
    /// `signing::pool`). Any RSA key sends the batch to the pool.
    fn few_ecdsa<T: AsItemSpec>(
        &self,
        limits: &SigningConfig,
        items: &[T],
        ctx: &BatchContext,
        keys: &KeySet,
    ) -> bool {
        items.len() <= limits.inline_ecdsa_max_items
            && every_key(items, ctx, keys, |k| k.kind() == KeyKind::EcdsaP256)
    }

    /// The lane queues, when a request should share flushes with others: not signed here
    /// (few ECDSA), at most [`SHARED_MAX_ITEMS`] items, and every key it names signs in
    /// lanes. Validation and rendering then run on this worker (no crypto); the signatures
    /// on the pool, in flushes shared with concurrent requests.
    fn shared_lanes<T: AsItemSpec>(
        &self,
        here: bool,
        items: &[T],
        ctx: &BatchContext,
        keys: &KeySet,
    ) -> Option<&Lanes> {
        let lanes = self.lanes.as_ref()?;
        (!here && items.len() <= SHARED_MAX_ITEMS && every_key(items, ctx, keys, |k| k.lanes() > 1))
            .then_some(lanes)
    }

    fn record_shared(&self, elapsed: std::time::Duration) {
        self.metrics.batches_shared.increment(1);
        self.metrics.sign_time.record(elapsed.as_secs_f64());
    }

    pub(super) fn record_timing(&self, here: bool, timing: JobTiming) {
        if here {
            self.metrics.batches_here.increment(1);
        } else {
            self.metrics.batches_on_pool.increment(1);
            self.metrics
                .queue_wait
                .record(timing.queue_wait.as_secs_f64());
        }
        self.metrics.sign_time.record(timing.run.as_secs_f64());
    }
}

/// Whether every key the items name (or the batch default) is `pred`. An unknown key signs
/// nothing (its item only gets an error), so it does not count against.
fn every_key<T: AsItemSpec>(
    items: &[T],
    ctx: &BatchContext,
    keys: &KeySet,
    pred: impl Fn(&SigningKey) -> bool,
) -> bool {
    items.iter().all(|item| {
        let id = item.item_spec().key_id;
        if id.is_empty() {
            ctx.default_key.as_deref().is_none_or(&pred)
        } else {
            keys.get(id).as_deref().is_none_or(&pred)
        }
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Output {
    Url,
    Cookie,
}

/// Counts signed items per key (consecutive runs of one key add in one step) and errors
/// per code. Runs on the pool, with handles made at key load and server start.
pub(super) fn count_outcomes(
    results: &[Result<SignedItem, SignError>],
    metrics: &SignMetrics,
    output: Output,
) -> u64 {
    let mut denied = 0;
    let mut run: Option<(&SignedItem, u64)> = None;
    let flush = |run: Option<(&SignedItem, u64)>| {
        if let Some((item, n)) = run {
            let c = item.key.counters();
            match output {
                Output::Url => c.urls.increment(n),
                Output::Cookie => c.cookies.increment(n),
            }
        }
    };
    for r in results {
        match r {
            Ok(item) => match &mut run {
                Some((last, n)) if Arc::ptr_eq(&last.key, &item.key) => *n += 1,
                _ => {
                    flush(run.take());
                    run = Some((item, 1));
                }
            },
            Err(e) => {
                if matches!(e, SignError::Denied { .. }) {
                    denied += 1;
                }
                metrics.item_error(item_error_label(e)).increment(1);
            }
        }
    }
    flush(run);
    denied
}

/// Counts only the errors of `results` (items whose success is not a URL or cookie set of
/// its own, such as a cookie playlist's URIs, covered by one cookie set); returns how many
/// were grant denials.
pub(super) fn count_errors(
    results: &[Result<SignedItem, SignError>],
    metrics: &SignMetrics,
) -> u64 {
    let mut denied = 0;
    for e in results.iter().filter_map(|r| r.as_ref().err()) {
        if matches!(e, SignError::Denied { .. }) {
            denied += 1;
        }
        metrics.item_error(item_error_label(e)).increment(1);
    }
    denied
}
