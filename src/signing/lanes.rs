//! Filling multi-buffer lanes across requests: single-URL calls arriving together share one
//! 8-lane computation.
//!
//! The model is Envoy's `cryptomb` private key provider: a queue per key, flushed to the
//! signing pool as soon as it holds [`SigningKey::lanes`] signatures, or when the first of
//! them has waited `[signing] multibuffer_flush_us` (a lone signature never waits longer
//! than that). One change, Nagle-like: a signature that finds the pool idle (nothing
//! running, no flush waiting to start) is flushed at once; lanes are a throughput tool, and
//! an idle pool has no throughput problem. Queues form as soon as the pool is busy. Requests submit from the gRPC worker and await their signature; the worker
//! is free meanwhile, and the private-key work still only runs on the pool (a flush is a
//! pool job with an [`OnPool`] token).
//!
//! A timer flush of fewer signatures than [`SigningKey::min_lane_fill`] (3 for the
//! multi-buffer backend: 8 lanes cost about what 3 OpenSSL signatures cost) signs them one
//! by one with OpenSSL instead: a lone caller gets an OpenSSL signature's latency, not an
//! 8-lane computation's.
//!
//! One timer thread (`cdnsign-lanes`) per [`Lanes`] watches the deadlines; it only moves
//! queues to the pool, it never signs.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::keys::{CryptoError, SigningKey};
use super::pool::{OnPool, SigningPool};
use super::validate::BatchContext;
use super::{AsItemSpec, BatchStats, Plan, SignError, SignedItem};
use crate::metrics::{MULTIBUFFER_FLUSH_LANES, MULTIBUFFER_FLUSHES};

type Reply = oneshot::Sender<Result<Vec<u8>, CryptoError>>;

/// Signatures waiting for one key's next flush.
struct Queue {
    key: Arc<SigningKey>,
    msgs: Vec<Vec<u8>>,
    replies: Vec<Reply>,
    /// When the first of them must be flushed at the latest.
    deadline: Instant,
}

#[derive(Default)]
struct State {
    queues: Vec<Queue>,
    closed: bool,
}

/// Flushes so far, by what triggered them.
#[derive(Debug, Default)]
pub struct FlushCounts {
    /// Flushes of a full queue (every lane used).
    pub full: AtomicU64,
    /// Flushes of a queue whose first signature had waited `multibuffer_flush_us`.
    pub timer: AtomicU64,
    /// Flushes made at once because the pool was idle.
    pub idle: AtomicU64,
    /// Of the timer and idle flushes, those too small to be worth a lane computation
    /// ([`SigningKey::min_lane_fill`]), signed one by one with OpenSSL.
    pub one_by_one: AtomicU64,
    /// Signatures flushed, over all flushes.
    pub signatures: AtomicU64,
}

struct Shared {
    pool: Arc<SigningPool>,
    flush_after: Duration,
    state: Mutex<State>,
    wake: Condvar,
    counts: FlushCounts,
    /// Flush jobs handed to the pool and not started yet.
    pending: AtomicUsize,
    /// Test builds: told of every flush handed to the pool.
    #[cfg(test)]
    flushed: tokio::sync::Notify,
}

/// The cross-request lane queues of one server. Dropping it flushes what is queued and
/// stops the timer thread.
pub struct Lanes {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Lanes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lanes")
            .field("flush_after", &self.shared.flush_after)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Copy)]
enum Trigger {
    Full,
    Timer,
    Idle,
}

impl Lanes {
    /// Queues flushing to `pool` when full or after `flush_after`.
    pub fn new(pool: Arc<SigningPool>, flush_after: Duration) -> std::io::Result<Lanes> {
        let shared = Arc::new(Shared {
            pool,
            flush_after,
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            counts: FlushCounts::default(),
            pending: AtomicUsize::new(0),
            #[cfg(test)]
            flushed: tokio::sync::Notify::new(),
        });
        let timer = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("cdnsign-lanes".into())
            .spawn(move || timer.run_timer())?;
        Ok(Lanes { shared })
    }

    /// How long a signature may wait for company.
    pub fn flush_after(&self) -> Duration {
        self.shared.flush_after
    }

    /// Flushes so far.
    pub fn counts(&self) -> &FlushCounts {
        &self.shared.counts
    }

    /// Queues a signature of `msg` with `key` (a key with more than one lane) and returns
    /// where its result will arrive.
    pub fn submit(
        &self,
        key: &Arc<SigningKey>,
        msg: &[u8],
    ) -> oneshot::Receiver<Result<Vec<u8>, CryptoError>> {
        let (tx, rx) = oneshot::channel();
        let lanes = key.lanes().max(1);
        let mut state = self.shared.lock();
        let at = match state.queues.iter().position(|q| Arc::ptr_eq(&q.key, key)) {
            Some(i) => i,
            None => {
                state.queues.push(Queue {
                    key: Arc::clone(key),
                    msgs: Vec::with_capacity(lanes),
                    replies: Vec::with_capacity(lanes),
                    deadline: Instant::now() + self.shared.flush_after,
                });
                // A new deadline: the timer may have to wake earlier than it planned.
                self.shared.wake.notify_one();
                state.queues.len() - 1
            }
        };
        let queue = &mut state.queues[at];
        queue.msgs.push(msg.to_vec());
        queue.replies.push(tx);
        let trigger = if queue.msgs.len() >= lanes || state.closed {
            Some(Trigger::Full)
        } else if self.shared.pool_idle() {
            Some(Trigger::Idle)
        } else {
            None
        };
        if let Some(trigger) = trigger {
            let queue = state.queues.swap_remove(at);
            drop(state);
            self.shared.flush(queue, trigger);
        }
        rx
    }
}

impl Drop for Lanes {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
    }
}

impl Shared {
    /// Nothing runs on the pool and no flush waits to start.
    fn pool_idle(&self) -> bool {
        self.pool.busy() == 0
            && self.pool.queued() == 0
            && self.pending.load(Ordering::Acquire) == 0
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The timer thread: flushes every queue whose deadline has passed; at close, flushes
    /// everything and ends.
    fn run_timer(self: &Arc<Self>) {
        let mut state = self.lock();
        loop {
            let now = Instant::now();
            let mut due = Vec::new();
            let mut i = 0;
            while i < state.queues.len() {
                if state.closed || state.queues[i].deadline <= now {
                    due.push(state.queues.swap_remove(i));
                } else {
                    i += 1;
                }
            }
            if !due.is_empty() {
                drop(state);
                for queue in due {
                    self.flush(queue, Trigger::Timer);
                }
                state = self.lock();
                continue;
            }
            if state.closed {
                return;
            }
            let next = state.queues.iter().map(|q| q.deadline).min();
            state = match next {
                None => self
                    .wake
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(deadline) => {
                    self.wake
                        .wait_timeout(state, deadline.saturating_duration_since(now))
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
    }

    /// Signs a queue's messages in one pool job and answers each waiter.
    fn flush(self: &Arc<Self>, queue: Queue, trigger: Trigger) {
        let counter = match trigger {
            Trigger::Full => &self.counts.full,
            Trigger::Timer => &self.counts.timer,
            Trigger::Idle => &self.counts.idle,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.counts
            .signatures
            .fetch_add(queue.msgs.len() as u64, Ordering::Relaxed);
        // A few signatures cost less one by one than one lane computation.
        let one_by_one = queue.msgs.len() < queue.key.min_lane_fill();
        let label = match (trigger, one_by_one) {
            (Trigger::Full, _) => "full",
            (Trigger::Timer, false) => "timer",
            (Trigger::Timer, true) => "timer_one_by_one",
            (Trigger::Idle, false) => "idle",
            (Trigger::Idle, true) => "idle_one_by_one",
        };
        if one_by_one {
            self.counts.one_by_one.fetch_add(1, Ordering::Relaxed);
        }
        metrics::counter!(MULTIBUFFER_FLUSHES, "trigger" => label).increment(1);
        metrics::histogram!(MULTIBUFFER_FLUSH_LANES).record(queue.msgs.len() as f64);
        self.pending.fetch_add(1, Ordering::AcqRel);
        #[cfg(test)]
        self.flushed.notify_one();
        let shared = Arc::clone(self);
        self.pool.spawn(move |on_pool: &OnPool| {
            // Running now (counted in the pool's busy threads).
            shared.pending.fetch_sub(1, Ordering::AcqRel);
            let Queue {
                key, msgs, replies, ..
            } = queue;
            let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
            let sigs = if one_by_one {
                key.sign_one_by_one(&refs, on_pool)
            } else {
                key.sign_lanes(&refs, on_pool)
            };
            for (reply, sig) in replies.into_iter().zip(sigs) {
                // The caller may have gone (deadline, cancel): its signature is dropped.
                let _ = reply.send(sig);
            }
        });
    }
}

/// Signs a small batch whose keys all sign in lanes, sharing flushes with concurrent
/// requests: items are validated and rendered here (no crypto), signatures come from the
/// lane queues. Results as [`super::sign_batch`] gives them.
pub async fn sign_batch_shared<T: AsItemSpec + Sync>(
    items: &[T],
    ctx: &BatchContext,
    keys: &super::keys::KeySet,
    lanes: &Lanes,
) -> (Vec<Result<SignedItem, SignError>>, BatchStats) {
    let plan = Plan::new(items, ctx, keys, super::pool::Site::CallerThread);
    let pending: Vec<_> = plan
        .groups()
        .map(|(key, msg)| lanes.submit(key, msg))
        .collect();
    let mut signed = Vec::with_capacity(pending.len());
    for (g, ((key, msg), rx)) in plan.groups().zip(pending).enumerate() {
        let sig = rx.await.unwrap_or_else(|_| {
            Err(CryptoError::new(
                "cdnsign",
                "signing job did not complete".into(),
            ))
        });
        signed.push(plan.group_out(g, key, msg, sig));
    }
    plan.finish(signed)
}

#[cfg(all(test, feature = "openssl-backend"))]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::signing::backend::multibuffer::tests::{
        NOW, ctx, engine_or_skip, keyset, repo_file, url,
    };
    use crate::signing::keys::{Backend, KeySet};
    use crate::signing::validate::ItemSpec;
    use crate::signing::verify::{VerifyKey, verify_url};

    /// Holds the pool's only thread until the returned sender is dropped or sent to.
    async fn hold(
        pool: &Arc<SigningPool>,
    ) -> (std::sync::mpsc::Sender<()>, tokio::task::JoinHandle<()>) {
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (started, running) = oneshot::channel::<()>();
        let p = Arc::clone(pool);
        let blocker = tokio::spawn(async move {
            let _ = p
                .run(move |_| {
                    let _ = started.send(());
                    let _ = released.recv();
                })
                .await;
        });
        running.await.expect("blocker started");
        (release, blocker)
    }

    fn verify(signed: &str, public: &str) {
        let vk = VerifyKey::from_pem(&repo_file(public)).expect("public key");
        assert!(verify_url(signed, &vk, NOW + 1, None).valid(), "{signed}");
    }

    /// Eight single-URL calls released together by a barrier while the pool is busy: with
    /// a flush timer of an hour, they complete by filling one queue to 8 and sharing its
    /// flush.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_single_url_calls_share_one_flush() {
        let Some(engine) = engine_or_skip("concurrent_single_url_calls_share_one_flush") else {
            return;
        };
        let pool = Arc::new(SigningPool::new(1).expect("pool"));
        let lanes =
            Arc::new(Lanes::new(Arc::clone(&pool), Duration::from_secs(3600)).expect("lanes"));
        let keys = Arc::new(keyset(Backend::Multibuffer, Some(&engine)));
        let (release, blocker) = hold(&pool).await;
        let barrier = Arc::new(tokio::sync::Barrier::new(8));
        let calls: Vec<_> = (0..8)
            .map(|i| {
                let (lanes, keys, barrier) =
                    (Arc::clone(&lanes), Arc::clone(&keys), Arc::clone(&barrier));
                tokio::spawn(async move {
                    let u = url(i);
                    let item = [ItemSpec {
                        url: &u,
                        ..ItemSpec::default()
                    }];
                    barrier.wait().await;
                    let (mut results, stats) =
                        sign_batch_shared(&item, &ctx(&keys, "KRSA1"), &keys, &lanes).await;
                    assert_eq!(stats.signed, 1);
                    results.remove(0).expect("signed").signed_url()
                })
            })
            .collect();
        // The eighth call fills the queue and hands its flush to the (busy) pool.
        lanes.shared.flushed.notified().await;
        release.send(()).expect("release");
        blocker.await.expect("blocker");
        for call in calls {
            verify(
                &call.await.expect("task"),
                "config/dev-keys/TEST-ONLY-cloudfront.pub.pem",
            );
        }
        let counts = lanes.counts();
        assert_eq!(counts.full.load(Ordering::SeqCst), 1);
        assert_eq!(counts.timer.load(Ordering::SeqCst), 0);
        assert_eq!(counts.idle.load(Ordering::SeqCst), 0);
        assert_eq!(counts.one_by_one.load(Ordering::SeqCst), 0);
        assert_eq!(counts.signatures.load(Ordering::SeqCst), 8);
    }

    /// A lone signature on a busy pool waits at most `multibuffer_flush_us`, then the timer
    /// flushes it alone, signed with OpenSSL (cheaper than 8 lanes for one signature).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lone_signature_on_a_busy_pool_is_flushed_by_the_timer() {
        let Some(engine) =
            engine_or_skip("a_lone_signature_on_a_busy_pool_is_flushed_by_the_timer")
        else {
            return;
        };
        let pool = Arc::new(SigningPool::new(1).expect("pool"));
        let lanes = Lanes::new(Arc::clone(&pool), Duration::from_micros(100)).expect("lanes");
        let keys = keyset(Backend::Multibuffer, Some(&engine));
        let key = keys.get("KEC256").expect("key");
        let (release, blocker) = hold(&pool).await;
        let rx = lanes.submit(&key, b"a policy");
        lanes.shared.flushed.notified().await;
        release.send(()).expect("release");
        blocker.await.expect("blocker");
        let der = rx.await.expect("answered").expect("signed");
        openssl::ecdsa::EcdsaSig::from_der(&der).expect("DER");
        let counts = lanes.counts();
        assert_eq!(counts.timer.load(Ordering::SeqCst), 1);
        assert_eq!(counts.one_by_one.load(Ordering::SeqCst), 1);
        assert_eq!(counts.full.load(Ordering::SeqCst), 0);
    }

    /// On an idle pool a signature does not wait for company at all.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_an_idle_pool_a_signature_is_flushed_at_once() {
        let Some(engine) = engine_or_skip("on_an_idle_pool_a_signature_is_flushed_at_once") else {
            return;
        };
        let pool = Arc::new(SigningPool::new(1).expect("pool"));
        let lanes = Lanes::new(pool, Duration::from_secs(3600)).expect("lanes");
        let keys: KeySet = keyset(Backend::Multibuffer, Some(&engine));
        let u = url(1);
        let item = [ItemSpec {
            url: &u,
            key_id: "KEC256",
            ..ItemSpec::default()
        }];
        let (results, _) = sign_batch_shared(&item, &ctx(&keys, "KRSA1"), &keys, &lanes).await;
        verify(
            &results[0].as_ref().expect("signed").signed_url(),
            "tests/fixtures/keys/ec-p256.pub.pem",
        );
        let counts = lanes.counts();
        assert_eq!(counts.idle.load(Ordering::SeqCst), 1);
        assert_eq!(counts.one_by_one.load(Ordering::SeqCst), 1);
        assert_eq!(counts.timer.load(Ordering::SeqCst), 0);
    }
}
