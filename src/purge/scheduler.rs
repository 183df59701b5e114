//! Sending purges, on every replica at once: claim, admit, send, poll.
//!
//! Jobs form one queue per provider resource (a CloudFront distribution, an Aliyun domain).
//! A replica works a queue only while it holds the queue's lease in the store: the main
//! loop ([`Scheduler::run`]) claims queues of its own `[[targets]]` whose lease is free or
//! expired (a queue of a target this replica lacks is left to one that has it), and runs a worker
//! task for each; the worker renews the lease while it works and gives it up when the
//! queue is empty. A replica that dies stops renewing, its leases expire after
//! `[purge] lease_seconds`, and another replica's loop claims them and finishes the work.
//!
//! One pass of a worker over its queue, oldest purge first (`pass`; step 3 in `send`):
//! 1. jobs found `Sending` (a crash, a lost answer) are reconciled with the provider before
//!    anything is sent again (CloudFront: the same CallerReference returns the existing
//!    invalidation; Aliyun: its tasks are looked up by ObjectPath);
//! 2. jobs in progress are polled;
//! 3. waiting jobs are sent in order while there is room (CloudFront's in-progress limits,
//!    counted from ListInvalidations and every replica's jobs in the store); a job larger
//!    than the room is cut, and the part that fits goes out as a request of its own. Each
//!    job is stored as `Sending` before the provider is called, and with the provider's ids
//!    straight after; a store that fails stops the pass, so a failed save never causes a
//!    resend (the job is reconciled instead).
//!
//! Every write names the lease; a worker whose lease was taken over writes nothing more.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::Instrument as _;

use tokio::sync::{Notify, broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::purge::config::PurgeConfig;
use crate::purge::error::ProviderError;
use crate::purge::model::{QueueKey, now_ms};
use crate::purge::provider::Provider;
use crate::purge::retry::Backoff;
use crate::purge::store::{Lease, PurgeStore, StoreError, StoreSlot};

mod pass;
mod send;

/// First errors a pass met, per purge: a purge whose every job failed at once reports it.
#[derive(Debug, Clone, Default)]
pub struct PassReport {
    /// Purge id → the first non-retryable provider error of one of its jobs.
    pub failures: HashMap<String, ProviderError>,
    /// When the earliest job that backs off may be tried again (unix ms).
    pub next_due_ms: Option<i64>,
}

impl PassReport {
    fn merge(&mut self, other: PassReport) {
        for (k, v) in other.failures {
            self.failures.entry(k).or_insert(v);
        }
        self.next_due_ms = match (self.next_due_ms, other.next_due_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

/// The providers of every configured target.
#[derive(Debug, Default)]
pub struct Providers {
    by_target: BTreeMap<String, Vec<Arc<dyn Provider>>>,
    by_queue: HashMap<QueueKey, Arc<dyn Provider>>,
}

impl Providers {
    /// Registers a provider under its target's name.
    pub fn add(&mut self, provider: Arc<dyn Provider>) {
        let t = provider.target();
        let queue = QueueKey {
            provider: provider.kind(),
            resource: t.resource().to_owned(),
        };
        self.by_queue
            .entry(queue)
            .or_insert_with(|| Arc::clone(&provider));
        self.by_target
            .entry(t.name.clone())
            .or_default()
            .push(provider);
    }

    /// The providers a target name fans out to.
    pub fn target(&self, name: &str) -> Option<&[Arc<dyn Provider>]> {
        self.by_target.get(name).map(Vec::as_slice)
    }

    /// Whether a target name is configured.
    pub fn has_target(&self, name: &str) -> bool {
        self.by_target.contains_key(name)
    }

    fn queue(&self, q: &QueueKey) -> Option<&Arc<dyn Provider>> {
        self.by_queue.get(q)
    }

    /// Every queue this replica has a provider for: the only ones it claims.
    fn queues(&self) -> impl Iterator<Item = &QueueKey> {
        self.by_queue.keys()
    }
}

/// A caller waiting for a pass over a queue (Purge, GetPurge): where to send the pass's
/// report, and the caller's span, so the pass and its provider requests join its trace.
struct Kick {
    reply: oneshot::Sender<PassReport>,
    span: tracing::Span,
}

/// Longest the scheduler waits, at shutdown, for its workers to give their leases up.
const WORKERS_STOP: Duration = Duration::from_secs(5);

/// How often a worker looks at its queue in the store (new jobs from other replicas),
/// at most; providers are polled every `[purge] poll_interval_ms`.
const STORE_CHECK: Duration = Duration::from_secs(1);

/// One replica's scheduler (see the module docs).
pub struct Scheduler {
    slot: Arc<StoreSlot>,
    providers: Arc<Providers>,
    cfg: PurgeConfig,
    owner: String,
    backoff: Backoff,
    workers: Mutex<HashMap<QueueKey, mpsc::Sender<Kick>>>,
    changes: broadcast::Sender<String>,
    wake: Notify,
    stop: watch::Sender<bool>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

impl Scheduler {
    /// A scheduler for this replica (`owner` names it in leases).
    pub fn new(
        slot: Arc<StoreSlot>,
        providers: Arc<Providers>,
        cfg: PurgeConfig,
        owner: String,
        changes: broadcast::Sender<String>,
    ) -> Scheduler {
        let backoff = Backoff {
            base: Duration::from_millis(cfg.retry_base_ms),
            max: Duration::from_millis(cfg.retry_max_ms),
        };
        for queue in providers.queues() {
            pass::register_counters(queue.provider);
        }
        Scheduler {
            slot,
            providers,
            cfg,
            owner,
            backoff,
            workers: Mutex::new(HashMap::new()),
            changes,
            wake: Notify::new(),
            stop: watch::channel(false).0,
        }
    }

    /// This replica's name in leases.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    fn lease_ms(&self) -> i64 {
        i64::try_from(self.cfg.lease_seconds.saturating_mul(1000)).unwrap_or(i64::MAX)
    }

    fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.cfg.poll_interval_ms)
    }

    fn workers(&self) -> std::sync::MutexGuard<'_, HashMap<QueueKey, mpsc::Sender<Kick>>> {
        self.workers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claims free queues and runs a worker for each until `shutdown`; deletes purges past
    /// the retention once an hour.
    pub async fn run(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut last_retention: Option<Instant> = None;
        let mut store_down_logged = false;
        loop {
            match self.slot.get() {
                Ok(store) => {
                    store_down_logged = false;
                    if let Err(e) = self.claim_free(&store).await {
                        tracing::warn!(error = %e, "purge scheduler cannot claim work; retrying");
                    }
                    if last_retention.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600)) {
                        last_retention = Some(Instant::now());
                        self.retention(&store).await;
                    }
                }
                Err(e) if !store_down_logged => {
                    store_down_logged = true;
                    tracing::warn!(error = %e, "purge scheduler waiting for the store");
                }
                Err(_) => {}
            }
            tokio::select! {
                () = &mut shutdown => break,
                () = self.wake.notified() => {}
                () = self.slot.ready() => {}
                () = tokio::time::sleep(self.poll_interval()) => {}
            }
        }
        // Workers give their leases up, so another replica can take over at once. All of
        // them get the same 5 s (one in the middle of a pass ends it first): the
        // shutdown's budget does not grow with the number of busy queues.
        let _ = self.stop.send(true);
        let senders: Vec<_> = self.workers().drain().map(|(_, tx)| tx).collect();
        let deadline = Instant::now() + WORKERS_STOP;
        for tx in senders {
            let _ = tokio::time::timeout_at(deadline, tx.closed()).await;
        }
    }

    async fn claim_free(self: &Arc<Self>, store: &Arc<dyn PurgeStore>) -> Result<(), StoreError> {
        for _ in 0..64 {
            // Only queues this replica has a provider for (during a rollout another
            // replica's config may have targets this one lacks: their jobs wait for it).
            let among: Vec<QueueKey> = {
                let workers = self.workers();
                self.providers
                    .queues()
                    .filter(|q| !workers.contains_key(*q))
                    .cloned()
                    .collect()
            };
            if among.is_empty() {
                return Ok(());
            }
            let Some(lease) = store
                .claim(&self.owner, now_ms(), self.lease_ms(), &among)
                .await?
            else {
                return Ok(());
            };
            tracing::debug!(queue = %lease.queue, epoch = lease.epoch, "claimed purge queue");
            self.start_worker(Arc::clone(store), lease, None);
        }
        Ok(())
    }

    async fn retention(&self, store: &Arc<dyn PurgeStore>) {
        let days = i64::from(self.cfg.retention_days);
        let cutoff = now_ms().saturating_sub(days.saturating_mul(86_400_000));
        match store.delete_finished_before(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(purges = n, days, "deleted finished purges past retention"),
            Err(e) => tracing::warn!(error = %e, "retention: cannot delete old purges"),
        }
    }

    /// Wakes the main loop (new work was stored).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Runs a pass now on each of `queues` that this replica holds or can claim, and waits
    /// for them until `deadline`. Queues another replica works are left to it.
    pub async fn kick(self: &Arc<Self>, queues: &[QueueKey], deadline: Instant) -> PassReport {
        let mut report = PassReport::default();
        let Ok(store) = self.slot.get() else {
            return report;
        };
        let mut set = tokio::task::JoinSet::new();
        for q in queues {
            let (me, store, q) = (Arc::clone(self), Arc::clone(&store), q.clone());
            set.spawn(
                async move { me.kick_one(&store, &q).await }.instrument(tracing::Span::current()),
            );
        }
        let collect = async {
            while let Some(done) = set.join_next().await {
                if let Ok(Some(r)) = done {
                    report.merge(r);
                }
            }
        };
        let _ = tokio::time::timeout_at(deadline, collect).await;
        // Past the caller's deadline the kicks go on on their own rather than being aborted:
        // one cut off between claiming a queue and starting its worker would leave the lease
        // held and the queue idle until the lease expired.
        set.detach_all();
        report
    }

    async fn kick_one(
        self: &Arc<Self>,
        store: &Arc<dyn PurgeStore>,
        queue: &QueueKey,
    ) -> Option<PassReport> {
        if self.providers.queue(queue).is_none() {
            // Another replica's config has this target; this one's does not (a rollout,
            // or a target removed here): its jobs wait for a replica that has it.
            tracing::warn!(queue = %queue, "purge jobs wait for a replica configured with this queue's target; this replica has no [[targets]] entry for it");
            return None;
        }
        for _ in 0..2 {
            let (reply, rx) = oneshot::channel();
            let tx = Kick {
                reply,
                span: tracing::Span::current(),
            };
            let local = self.workers().get(queue).cloned();
            let sent = match local {
                Some(worker) => worker.send(tx).await.is_ok(),
                None => match store
                    .claim_queue(queue, &self.owner, now_ms(), self.lease_ms())
                    .await
                {
                    Ok(Some(lease)) => {
                        self.start_worker(Arc::clone(store), lease, Some(tx));
                        true
                    }
                    // Another replica works it.
                    Ok(None) => return None,
                    Err(e) => {
                        tracing::warn!(error = %e, queue = %queue, "cannot claim purge queue");
                        return None;
                    }
                },
            };
            if sent && let Ok(report) = rx.await {
                return Some(report);
            }
            // The worker was finishing as we asked: ask again (it may have to be claimed).
        }
        None
    }

    fn start_worker(
        self: &Arc<Self>,
        store: Arc<dyn PurgeStore>,
        lease: Lease,
        first: Option<Kick>,
    ) {
        let (tx, rx) = mpsc::channel(16);
        self.workers().insert(lease.queue.clone(), tx.clone());
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let queue = lease.queue.clone();
            me.worker(store, lease, rx, first).await;
            let mut workers = me.workers();
            if workers.get(&queue).is_some_and(|t| t.same_channel(&tx)) {
                workers.remove(&queue);
            }
        });
    }

    async fn worker(
        &self,
        store: Arc<dyn PurgeStore>,
        mut lease: Lease,
        mut kicks: mpsc::Receiver<Kick>,
        first: Option<Kick>,
    ) {
        let lease_ms = self.lease_ms();
        let mut pending: Vec<Kick> = first.into_iter().collect();
        let mut stop = self.stop.subscribe();
        let mut last_poll: Option<Instant> = None;
        loop {
            let renew_every = Duration::from_millis((lease_ms / 3).max(100) as u64);
            let keep = async {
                let mut tick = tokio::time::interval(renew_every);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    match store.renew(&lease, now_ms(), lease_ms).await {
                        Ok(_) => {}
                        Err(StoreError::LeaseLost(_)) => return,
                        Err(e) => tracing::warn!(error = %e, "cannot renew purge queue lease"),
                    }
                }
            };
            // Providers are polled every poll interval; the store is looked at more often,
            // so jobs another replica accepted for this queue go out within a second.
            // A caller waiting on a pass (GetPurge, Purge) gets a fresh poll too.
            let poll = !pending.is_empty()
                || last_poll.is_none_or(|t: Instant| t.elapsed() >= self.poll_interval());
            if poll {
                last_poll = Some(Instant::now());
            }
            // A pass a caller waits for is part of its trace (the others follow from it);
            // a background pass has no span.
            let pass_span = pending.first().map_or_else(
                tracing::Span::none,
                |k| tracing::info_span!(parent: &k.span, "purge.pass", queue = %lease.queue),
            );
            for k in pending.iter().skip(1) {
                pass_span.follows_from(&k.span);
            }
            let outcome = tokio::select! {
                r = self.pass(&store, &lease, poll).instrument(pass_span) => Some(r),
                () = keep => None,
            };
            let (more, report) = match outcome {
                Some(Ok(done)) => done,
                None | Some(Err(StoreError::LeaseLost(_))) => {
                    tracing::info!(queue = %lease.queue, "purge queue lease taken over; stopping its worker");
                    break;
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, queue = %lease.queue, "purge pass stopped: store failed; the queue will be claimed again");
                    break;
                }
            };
            for k in pending.drain(..) {
                let _ = k.reply.send(report.clone());
            }
            if !more {
                let _ = store.release(&lease).await;
                break;
            }
            // Next pass at the poll interval, or sooner when a job's backoff ends first.
            let check = self.poll_interval().min(STORE_CHECK);
            let nap = report.next_due_ms.map_or(check, |due| {
                let ms = u64::try_from(due.saturating_sub(now_ms())).unwrap_or(0);
                check.min(Duration::from_millis(ms.max(10)))
            });
            tokio::select! {
                k = kicks.recv() => match k {
                    Some(k) => pending.push(k),
                    None => break,
                },
                () = tokio::time::sleep(nap) => {}
                _ = stop.changed() => {
                    let _ = store.release(&lease).await;
                    break;
                }
            }
            while let Ok(k) = kicks.try_recv() {
                pending.push(k);
            }
            match store.renew(&lease, now_ms(), lease_ms).await {
                Ok(l) => lease = l,
                Err(StoreError::LeaseLost(_)) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot renew purge queue lease");
                    break;
                }
            }
        }
    }
}
