//! Filling multi-buffer lanes across requests: single-URL calls arriving together share one
//! 8-lane computation.
//!
//! The model is Envoy's `cryptomb` private key provider: a queue per key, flushed to the
//! signing pool as soon as it holds [`SigningKey::lanes`] signatures, or when the first of
//! them has waited `[signing] multibuffer_flush_us`. Three changes, Nagle-like:
//! - a signature that finds a pool thread free (and no flush waiting to start) is flushed
//!   at once: lanes only wait for company while every thread is taken;
//! - a flush that ends with no other flush waiting to start takes the oldest waiting queue
//!   with it, however full;
//! - a queue past its deadline while every pool thread is taken and a lane flush is running
//!   or waiting stays open (handed to the pool it would only wait there, unable to gain
//!   lanes); that flush's end takes it.
//!
//! Lanes are a throughput tool: queues form only while the pool is busy, and the pool never
//! idles while signatures wait; the timer is the backstop (a thread the scheduler may be
//! slow to wake on a loaded machine). Requests submit from the gRPC worker and await their
//! signature; the worker is free meanwhile, and the private-key work still only runs on the
//! pool (a flush is a pool job with an [`OnPool`] token).
//!
//! A flush of fewer signatures than [`SigningKey::min_lane_fill`] (what one 8-lane
//! computation costs in OpenSSL signatures, measured on the CPU at start: 3 to 5) signs
//! them one by one with OpenSSL instead: less CPU, and a lone caller gets an OpenSSL
//! signature's latency, not an 8-lane computation's.
//!
//! One timer thread (`cdnsign-lanes`) per [`Lanes`] watches the deadlines; it only moves
//! queues to the pool, it never signs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::keys::{CryptoError, SigningKey};
use super::pool::{OnPool, SigningPool};
use super::validate::BatchContext;
use super::{AsItemSpec, BatchStats, Plan, SignError, SignedItem};

mod flushes;

pub use flushes::FlushCounts;
use flushes::{FlushKind, FlushMetrics, Trigger};

type Reply = oneshot::Sender<Result<Vec<u8>, CryptoError>>;

/// Signatures waiting for one key's next flush.
struct Queue {
    key: Arc<SigningKey>,
    msgs: Vec<Vec<u8>>,
    replies: Vec<Reply>,
    /// Traces (debug spans, free unless a trace exporter wants them): each submitter's
    /// span, the flush's `sign.job` parent (the first) or links (the others).
    callers: Vec<tracing::Span>,
    /// Each submitter's `sign.queue` span: the wait for its flush to start.
    waits: Vec<tracing::Span>,
    /// When the first of them must be flushed at the latest.
    deadline: Instant,
}

#[derive(Default)]
struct State {
    queues: Vec<Queue>,
    closed: bool,
}

struct Shared {
    pool: Arc<SigningPool>,
    flush_after: Duration,
    state: Mutex<State>,
    wake: Condvar,
    counts: FlushCounts,
    metrics: FlushMetrics,
    /// Flush jobs handed to the pool and not started yet.
    pending: AtomicUsize,
    /// Flush jobs running on the pool now.
    running: AtomicUsize,
    /// Test builds: told of every flush handed to the pool.
    #[cfg(test)]
    flushed: tokio::sync::Notify,
    /// Test builds: told when the timer leaves a queue past its deadline to the next
    /// flush's end.
    #[cfg(test)]
    deferred: tokio::sync::Notify,
    /// Test builds: how far the tests moved the queues' clock forward, in microseconds,
    /// so a deadline passes when a test says so rather than when a sleep ends.
    #[cfg(test)]
    clock_skew_us: std::sync::atomic::AtomicU64,
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

impl Lanes {
    /// Queues flushing to `pool` when full or after `flush_after`.
    pub fn new(pool: Arc<SigningPool>, flush_after: Duration) -> std::io::Result<Lanes> {
        let shared = Arc::new(Shared {
            pool,
            flush_after,
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            counts: FlushCounts::default(),
            metrics: FlushMetrics::new(),
            pending: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            #[cfg(test)]
            flushed: tokio::sync::Notify::new(),
            #[cfg(test)]
            deferred: tokio::sync::Notify::new(),
            #[cfg(test)]
            clock_skew_us: std::sync::atomic::AtomicU64::new(0),
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
                    callers: Vec::with_capacity(lanes),
                    waits: Vec::with_capacity(lanes),
                    deadline: self.shared.now() + self.shared.flush_after,
                });
                // A new deadline: the timer may have to wake earlier than it planned.
                self.shared.wake.notify_one();
                state.queues.len() - 1
            }
        };
        let queue = &mut state.queues[at];
        queue.msgs.push(msg.to_vec());
        queue.replies.push(tx);
        queue.callers.push(tracing::Span::current());
        queue
            .waits
            .push(tracing::debug_span!("sign.queue", lanes = true));
        let trigger = if queue.msgs.len() >= lanes || state.closed {
            Some(Trigger::Full)
        } else if self.shared.thread_free() {
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

#[cfg(test)]
impl Lanes {
    /// Moves the queues' clock forward by `by` and wakes the timer (under the state lock,
    /// so the wake-up cannot fall between the timer's decision and its wait).
    pub(crate) fn advance_clock(&self, by: Duration) {
        let _state = self.shared.lock();
        let us = u64::try_from(by.as_micros()).unwrap_or(u64::MAX);
        self.shared.clock_skew_us.fetch_add(us, Ordering::AcqRel);
        self.shared.wake.notify_one();
    }
}

impl Drop for Lanes {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
    }
}

impl Shared {
    /// The queues' clock: `Instant::now()`, moved forward in tests by
    /// [`Lanes::advance_clock`].
    fn now(&self) -> Instant {
        #[cfg(test)]
        {
            Instant::now() + Duration::from_micros(self.clock_skew_us.load(Ordering::Acquire))
        }
        #[cfg(not(test))]
        {
            Instant::now()
        }
    }

    /// A flush handed to the pool now would start at once.
    fn thread_free(&self) -> bool {
        self.pool.queued() == 0
            && self.pending.load(Ordering::Acquire) == 0
            && self.pool.busy() < self.pool.threads()
    }

    /// A lane flush is running or waiting to start: its end ([`Shared::after_flush`])
    /// will take the oldest waiting queue.
    fn flush_in_progress(&self) -> bool {
        self.pending.load(Ordering::Acquire) + self.running.load(Ordering::Acquire) > 0
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The timer thread: flushes every queue whose deadline has passed; at close, flushes
    /// everything and ends.
    ///
    /// A queue past its deadline while every pool thread is taken and a lane flush is
    /// running or waiting is left where it is: handed to the pool it would only wait
    /// behind that flush, unable to gain lanes, and that flush's end takes it
    /// ([`Shared::after_flush`]) with whatever joined it meanwhile. (Flushed on the
    /// timer instead, a busy pool filled with part-empty 8-lane computations: measured,
    /// two thirds of the flushes of 32 single-URL callers, 4.4 signatures each.)
    fn run_timer(self: &Arc<Self>) {
        let mut state = self.lock();
        loop {
            let now = self.now();
            // Under the state lock: a flush ending now takes the lock after this decision
            // (`after_flush`), so a deferred queue is always seen by one of the two.
            let defer = !state.closed && self.flush_in_progress() && !self.thread_free();
            let mut due = Vec::new();
            let mut i = 0;
            while i < state.queues.len() {
                if state.closed || (!defer && state.queues[i].deadline <= now) {
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
            #[cfg(test)]
            if defer && state.queues.iter().any(|q| q.deadline <= now) {
                self.deferred.notify_one();
            }
            // Deferred queues wait for a flush's end, not for the timer.
            let next = state
                .queues
                .iter()
                .map(|q| q.deadline)
                .filter(|d| *d > now)
                .min();
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
        // A few signatures cost less one by one than one lane computation.
        let one_by_one = queue.msgs.len() < queue.key.min_lane_fill();
        let kind = FlushKind::of(trigger, one_by_one);
        let label = kind.label();
        self.counts.record(trigger, one_by_one, queue.msgs.len());
        self.metrics.record(kind, queue.msgs.len());
        self.pending.fetch_add(1, Ordering::AcqRel);
        #[cfg(test)]
        self.flushed.notify_one();
        let shared = Arc::clone(self);
        self.pool.spawn(move |on_pool: &OnPool| {
            // Running now (counted in the pool's busy threads).
            shared.running.fetch_add(1, Ordering::AcqRel);
            shared.pending.fetch_sub(1, Ordering::AcqRel);
            let Queue {
                key,
                msgs,
                replies,
                callers,
                waits,
                ..
            } = queue;
            drop(waits);
            // One job for several calls: a child of the first caller's span, linked from
            // the others'.
            let job = match callers.first() {
                Some(first) => tracing::debug_span!(
                    parent: first,
                    "sign.job",
                    signatures = msgs.len(),
                    flush = label
                ),
                None => tracing::Span::none(),
            };
            for other in callers.iter().skip(1) {
                job.follows_from(other);
            }
            let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
            let sigs = job.in_scope(|| {
                if one_by_one {
                    key.sign_one_by_one(&refs, on_pool)
                } else {
                    key.sign_lanes(&refs, on_pool)
                }
            });
            for (reply, sig) in replies.into_iter().zip(sigs) {
                // The caller may have gone (deadline, cancel): its signature is dropped.
                let _ = reply.send(sig);
            }
            shared.running.fetch_sub(1, Ordering::AcqRel);
            shared.after_flush();
        });
    }

    /// As a flush ends: if no other flush waits to start, the oldest waiting queue goes
    /// now rather than at its deadline.
    fn after_flush(self: &Arc<Self>) {
        let mut state = self.lock();
        if self.pending.load(Ordering::Acquire) > 0 {
            return;
        }
        let oldest = state
            .queues
            .iter()
            .enumerate()
            .min_by_key(|(_, q)| q.deadline)
            .map(|(i, _)| i);
        if let Some(i) = oldest {
            let queue = state.queues.swap_remove(i);
            drop(state);
            self.flush(queue, Trigger::Freed);
        }
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
mod tests;
