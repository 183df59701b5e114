//! `cdnsign.v1.Signer`: decodes a batch, checks request-wide limits, and hands the whole
//! batch (validation, policy writing, RSA, rendering) to the signing pool. The tokio worker
//! only awaits, except for a batch of a few ECDSA signatures, which it signs itself (cheaper
//! than two thread hand-offs; see `signing::pool`).

use std::pin::Pin;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::cookies::{check_attributes, cookie_response};
use super::status::{ApiError, item_error, item_error_label};
use crate::auth::{AUDIT_TARGET, Caller};
use crate::config::SigningConfig;
use crate::live::LiveConfig;
use crate::metrics::{ITEMS_DENIED, RATE_LIMITED, SignMetrics};
use crate::proto;
use crate::proto::signer_server::Signer;
use crate::signing::keys::{KeyKind, KeySet, SigningKey};
use crate::signing::lanes::{Lanes, sign_batch_shared};
use crate::signing::pool::{Admission, JobTiming, SigningPool};
use crate::signing::validate::{BatchContext, ItemSpec};
use crate::signing::{AsItemSpec, BatchStats, SignError, SignedItem, sign_batch};

impl AsItemSpec for proto::SignItem {
    fn item_spec(&self) -> ItemSpec<'_> {
        ItemSpec {
            url: &self.url,
            policy_resource: &self.policy_resource,
            expires_at: self.expires_at,
            ttl_seconds: self.ttl_seconds,
            not_before: self.not_before,
            ip_range: &self.ip_range,
            key_id: &self.key_id,
            custom_policy: self.custom_policy,
            bare_resource: self.bare_resource,
        }
    }
}

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

    /// Signs one URL batch on the pool; shared by the unary and streaming methods.
    async fn sign_url_batch(
        &self,
        caller: &Caller,
        req: proto::SignUrlsRequest,
        batch_index: u64,
    ) -> Result<proto::SignUrlsResponse, Status> {
        let call = self.call_config();
        Self::check_limits(&call.limits, req.items.len())?;
        self.charge_rate(caller, req.items.len())?;
        self.metrics.batch_urls.record(req.items.len() as f64);
        let items = req.items.len();
        let ctx = self.context(
            &call,
            &BatchFields {
                caller,
                key_id: &req.key_id,
                expires_at: req.expires_at,
                ttl_seconds: req.ttl_seconds,
                custom_policy: req.custom_policy,
            },
            req.items.len(),
        );
        let metrics = self.metrics.clone();
        let here = self.few_ecdsa(&call.limits, &req.items, &ctx, &call.keys);
        if let Some(lanes) = self.shared_lanes(here, &req.items, &ctx, &call.keys) {
            // Room in the pool's queue like any other request: overload is refused first.
            let admission = self.admit(false, items, &call.limits)?;
            let started = std::time::Instant::now();
            let (results, stats) = sign_batch_shared(&req.items, &ctx, &call.keys, lanes).await;
            if let Some(a) = admission {
                a.ran(started.elapsed());
            }
            let denied = count_outcomes(&results, &metrics, Output::Url);
            let response = url_response(results, stats, batch_index);
            self.record_shared(started.elapsed());
            Self::audit_denied(caller, items, denied);
            return Ok(response);
        }
        let admission = self.admit(here, items, &call.limits)?;
        let keys = call.keys;
        let ((response, denied), timing) = self
            .pool
            .run_here_or_on_pool(here, move |site| {
                let started = std::time::Instant::now();
                let (results, stats) = sign_batch(&req.items, &ctx, &keys, site);
                // The results own copies of what they need: free the request (MBs for a
                // 10,000-URL playlist) before the response strings are built.
                drop(req);
                let denied = count_outcomes(&results, &metrics, Output::Url);
                let response = url_response(results, stats, batch_index);
                if let Some(a) = admission {
                    a.ran(started.elapsed());
                }
                (response, denied)
            })
            .await
            .map_err(ApiError::from)?;
        self.record_timing(here, timing);
        Self::audit_denied(caller, items, denied);
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
            && items.iter().all(|item| {
                let ecdsa = |k: &SigningKey| k.kind() == KeyKind::EcdsaP256;
                let id = item.item_spec().key_id;
                // An unknown key signs nothing: its item only gets an error.
                if id.is_empty() {
                    ctx.default_key.as_deref().is_none_or(ecdsa)
                } else {
                    keys.get(id).as_deref().is_none_or(ecdsa)
                }
            })
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
        let in_lanes = |k: &SigningKey| k.lanes() > 1;
        let all = items.iter().all(|item| {
            let id = item.item_spec().key_id;
            // An unknown key signs nothing: its item only gets an error.
            if id.is_empty() {
                ctx.default_key.as_deref().is_none_or(in_lanes)
            } else {
                keys.get(id).as_deref().is_none_or(in_lanes)
            }
        });
        (!here && items.len() <= SHARED_MAX_ITEMS && all).then_some(lanes)
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

/// The caller the auth layer resolved. Fails closed if the layer is missing.
pub(super) fn caller_of<T>(request: &Request<T>) -> Result<Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("no caller identity"))
}

fn url_response(
    results: Vec<Result<SignedItem, SignError>>,
    stats: BatchStats,
    batch_index: u64,
) -> proto::SignUrlsResponse {
    use proto::sign_url_result::Outcome;
    let results = results
        .into_iter()
        .enumerate()
        .map(|(i, r)| match r {
            Ok(item) => proto::SignUrlResult {
                outcome: Some(Outcome::SignedUrl(item.signed_url())),
                index: u32::try_from(i).unwrap_or(u32::MAX),
                expires_at: item.expires,
                key_id: item.key.id().to_owned(),
            },
            Err(e) => proto::SignUrlResult {
                outcome: Some(Outcome::Error(item_error(i, &e))),
                index: u32::try_from(i).unwrap_or(u32::MAX),
                expires_at: 0,
                key_id: String::new(),
            },
        })
        .collect();
    proto::SignUrlsResponse {
        results,
        batch_index,
        signed: u32::try_from(stats.signed).unwrap_or(u32::MAX),
        failed: u32::try_from(stats.failed).unwrap_or(u32::MAX),
    }
}

/// How many stream responses may wait for the transport before the server stops reading
/// the client's next batch.
const STREAM_BUFFER: usize = 2;

type ResponseStream = Pin<Box<dyn Stream<Item = Result<proto::SignUrlsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Signer for Arc<SignerService> {
    async fn sign_urls(
        &self,
        request: Request<proto::SignUrlsRequest>,
    ) -> Result<Response<proto::SignUrlsResponse>, Status> {
        let caller = caller_of(&request)?;
        self.sign_url_batch(&caller, request.into_inner(), 0)
            .await
            .map(Response::new)
    }

    async fn sign_cookies(
        &self,
        request: Request<proto::SignCookiesRequest>,
    ) -> Result<Response<proto::SignCookiesResponse>, Status> {
        let caller = caller_of(&request)?;
        let req = request.into_inner();
        let call = self.call_config();
        SignerService::check_limits(&call.limits, req.items.len())?;
        let items = req.items.len();
        let attrs = req.attributes.clone().unwrap_or_default();
        check_attributes(&attrs)?;
        self.charge_rate(&caller, req.items.len())?;
        self.metrics.batch_cookies.record(req.items.len() as f64);
        let ctx = self.context(
            &call,
            &BatchFields {
                caller: &caller,
                key_id: &req.key_id,
                expires_at: req.expires_at,
                ttl_seconds: req.ttl_seconds,
                custom_policy: req.custom_policy,
            },
            req.items.len(),
        );
        let metrics = self.metrics.clone();
        let here = self.few_ecdsa(&call.limits, &req.items, &ctx, &call.keys);
        if let Some(lanes) = self.shared_lanes(here, &req.items, &ctx, &call.keys) {
            // Room in the pool's queue like any other request: overload is refused first.
            let admission = self.admit(false, items, &call.limits)?;
            let started = std::time::Instant::now();
            let (results, stats) = sign_batch_shared(&req.items, &ctx, &call.keys, lanes).await;
            if let Some(a) = admission {
                a.ran(started.elapsed());
            }
            let denied = count_outcomes(&results, &metrics, Output::Cookie);
            let response = cookie_response(results, stats, &attrs);
            self.record_shared(started.elapsed());
            SignerService::audit_denied(&caller, items, denied);
            return Ok(Response::new(response));
        }
        let admission = self.admit(here, items, &call.limits)?;
        let keys = call.keys;
        let ((response, denied), timing) = self
            .pool
            .run_here_or_on_pool(here, move |site| {
                let started = std::time::Instant::now();
                let (results, stats) = sign_batch(&req.items, &ctx, &keys, site);
                drop(req);
                let denied = count_outcomes(&results, &metrics, Output::Cookie);
                let response = cookie_response(results, stats, &attrs);
                if let Some(a) = admission {
                    a.ran(started.elapsed());
                }
                (response, denied)
            })
            .await
            .map_err(ApiError::from)?;
        self.record_timing(here, timing);
        SignerService::audit_denied(&caller, items, denied);
        Ok(Response::new(response))
    }

    async fn sign_playlist(
        &self,
        request: Request<proto::SignPlaylistRequest>,
    ) -> Result<Response<proto::SignPlaylistResponse>, Status> {
        let caller = caller_of(&request)?;
        self.sign_playlist_call(&caller, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn verify_urls(
        &self,
        request: Request<proto::VerifyUrlsRequest>,
    ) -> Result<Response<proto::VerifyUrlsResponse>, Status> {
        caller_of(&request)?;
        self.verify_urls_call(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn verify_cookies(
        &self,
        request: Request<proto::VerifyCookiesRequest>,
    ) -> Result<Response<proto::VerifyCookiesResponse>, Status> {
        caller_of(&request)?;
        self.verify_cookies_call(request.into_inner())
            .await
            .map(Response::new)
    }

    type SignUrlsStreamStream = ResponseStream;

    async fn sign_urls_stream(
        &self,
        request: Request<Streaming<proto::SignUrlsRequest>>,
    ) -> Result<Response<Self::SignUrlsStreamStream>, Status> {
        let caller = caller_of(&request)?;
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let service = Arc::clone(self);
        tokio::spawn(async move {
            let max = service.live.snapshot().config.signing.max_stream_batches;
            let mut batch_index = 0u64;
            loop {
                let msg = match inbound.message().await {
                    Ok(Some(msg)) => msg,
                    Ok(None) => break,
                    Err(status) => {
                        // An oversized message, or the client's stream broke: say so (if
                        // the client still listens) rather than end the stream as if OK.
                        tracing::debug!(%status, "SignUrlsStream: client stream ended with error");
                        let _ = tx.send(Err(status)).await;
                        break;
                    }
                };
                if max != 0 && batch_index >= max {
                    let _ = tx.send(Err(ApiError::StreamTooLong { max }.into())).await;
                    break;
                }
                let response = service.sign_url_batch(&caller, msg, batch_index).await;
                let failed = response.is_err();
                // Waiting here is the backpressure: the next batch is not read until the
                // transport has room for this response.
                if tx.send(response).await.is_err() || failed {
                    break;
                }
                batch_index += 1;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
