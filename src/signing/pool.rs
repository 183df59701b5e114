//! The dedicated rayon pool every signature is made on.
//!
//! Async handlers hand a whole batch to [`SigningPool::run`] and await a oneshot; the tokio
//! worker is free while RSA runs. The guarantee is structural: [`SigningKey::sign`]
//! requires an [`OnPool`] token, and the only way to get one is to be running inside this
//! pool (`run`, `run_blocking`), checked again at run time in every debug and test build.
//!
//! One exception, for latency: a request of a few ECDSA signatures may run on the calling
//! thread ([`SigningPool::run_here_or_on_pool`] with [`Site::CallerThread`]). An ECDSA P-256
//! signature costs ~23 us, less than the two thread hand-offs to the pool and back (each a
//! cross-CPU wake-up; the profile of single-URL ECDSA calls put ~20% of server CPU and
//! ~0.25 ms of latency there). RSA still cannot run there: only
//! [`SigningKey::sign`] (which needs `OnPool`) contains RSA code; the caller-thread path,
//! [`SigningKey::sign_ecdsa_here`], refuses RSA keys.
//!
//! [`SigningKey::sign`]: super::keys::SigningKey::sign
//! [`SigningKey::sign_ecdsa_here`]: super::keys::SigningKey::sign_ecdsa_here

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

thread_local! {
    /// Set once in each pool thread's start handler.
    static IS_POOL_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// Proof that the current code runs on a signing-pool thread. It has no public
/// constructor; closures given to [`SigningPool`] receive one by reference.
#[derive(Debug)]
pub struct OnPool {
    _private: (),
}

impl OnPool {
    fn here() -> OnPool {
        debug_assert!(
            IS_POOL_THREAD.with(Cell::get),
            "OnPool made off the signing pool (thread {:?})",
            std::thread::current().name()
        );
        OnPool { _private: () }
    }

    /// Whether the calling thread belongs to a signing pool.
    pub fn is_pool_thread() -> bool {
        IS_POOL_THREAD.with(Cell::get)
    }
}

/// Where a batch job runs.
#[derive(Debug, Clone, Copy)]
pub enum Site<'a> {
    /// On a signing-pool thread: any key; the batch may spread over the pool's threads.
    Pool(&'a OnPool),
    /// On the calling thread (a tokio worker): ECDSA only, sequentially; RSA keys refuse.
    CallerThread,
}

/// The pool is gone (shut down) or a job panicked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// The job did not complete: it panicked (a bug, logged with its message) or the pool
    /// was dropped.
    #[error("signing job did not complete")]
    Lost,
}

/// The pool's queue is full: the request was refused before any work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("signing queue full: {queued} items queued, limit {limit}")]
pub struct QueueFull {
    /// Items queued when the request came.
    pub queued: usize,
    /// The limit.
    pub limit: usize,
    /// When there should be room again, from the pool's recent pace.
    pub retry_after: Duration,
}

/// Gauges the pool keeps for metrics.
#[derive(Debug, Default)]
struct Counters {
    queued: AtomicUsize,
    busy: AtomicUsize,
    /// Items admitted ([`SigningPool::admit`]) and not yet finished.
    queued_items: AtomicUsize,
    /// Recent thread time per item, nanoseconds (a moving average).
    item_nanos: AtomicU64,
    /// Jobs skipped because their caller had gone.
    abandoned: AtomicU64,
}

/// A place for `items` items in the pool's queue, given back when dropped (when the job
/// that holds it has run, or was skipped).
#[derive(Debug)]
pub struct Admission {
    counters: Arc<Counters>,
    items: usize,
}

impl Admission {
    /// Records how long the admitted items took on a thread, for the retry estimate.
    pub fn ran(&self, elapsed: Duration) {
        if self.items == 0 {
            return;
        }
        let per_item = (elapsed.as_nanos() / self.items as u128).min(u128::from(u32::MAX)) as u64;
        let old = self.counters.item_nanos.load(Ordering::Relaxed);
        let new = if old == 0 {
            per_item
        } else {
            (old * 7 + per_item) / 8
        };
        self.counters.item_nanos.store(new, Ordering::Relaxed);
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.counters
            .queued_items
            .fetch_sub(self.items, Ordering::AcqRel);
    }
}

/// Timing of one job, for metrics: time waiting for a thread, then time running.
#[derive(Debug, Clone, Copy)]
pub struct JobTiming {
    /// From submission to a thread picking the job up.
    pub queue_wait: Duration,
    /// Running time on the pool.
    pub run: Duration,
}

/// A rayon thread pool reserved for signing.
#[derive(Debug)]
pub struct SigningPool {
    pool: rayon::ThreadPool,
    counters: Arc<Counters>,
}

impl SigningPool {
    /// Starts `threads` threads (0 = one per core), named `cdnsign-sign-N`.
    pub fn new(threads: usize) -> Result<SigningPool, rayon::ThreadPoolBuildError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("cdnsign-sign-{i}"))
            .start_handler(|_| IS_POOL_THREAD.with(|c| c.set(true)))
            // Without a handler rayon aborts the process on a panic in a spawned job.
            // With one, the job's oneshot sender drops and the caller gets PoolError::Lost.
            .panic_handler(|payload| {
                tracing::error!(panic = panic_message(&*payload), "signing job panicked");
            })
            .build()?;
        Ok(SigningPool {
            pool,
            counters: Arc::default(),
        })
    }

    /// Number of threads.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Jobs waiting for a thread.
    pub fn queued(&self) -> usize {
        self.counters.queued.load(Ordering::Relaxed)
    }

    /// Jobs running now.
    pub fn busy(&self) -> usize {
        self.counters.busy.load(Ordering::Relaxed)
    }

    /// Items admitted and not finished.
    pub fn queued_items(&self) -> usize {
        self.counters.queued_items.load(Ordering::Relaxed)
    }

    /// Jobs skipped so far because their caller had gone before their turn came.
    pub fn abandoned(&self) -> u64 {
        self.counters.abandoned.load(Ordering::Relaxed)
    }

    /// Reserves room for `items` items, or refuses when that would take the queue past
    /// `limit`. An idle pool admits any request, so a batch larger than the limit can run
    /// when nothing else is waiting.
    pub fn admit(&self, items: usize, limit: usize) -> Result<Admission, QueueFull> {
        let before = self
            .counters
            .queued_items
            .fetch_add(items, Ordering::AcqRel);
        let admission = Admission {
            counters: Arc::clone(&self.counters),
            items,
        };
        if before > 0 && before.saturating_add(items) > limit {
            drop(admission);
            let per_item = Duration::from_nanos(self.counters.item_nanos.load(Ordering::Relaxed));
            let threads = self.threads().max(1) as u32;
            let drain =
                per_item.saturating_mul(u32::try_from(before).unwrap_or(u32::MAX)) / threads;
            return Err(QueueFull {
                queued: before,
                limit,
                retry_after: drain.clamp(Duration::from_millis(100), Duration::from_secs(30)),
            });
        }
        Ok(admission)
    }

    /// Runs `job` on the pool and awaits its result without blocking the async worker.
    pub async fn run<F, R>(&self, job: F) -> Result<(R, JobTiming), PoolError>
    where
        F: FnOnce(&OnPool) -> R + Send + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let counters = Arc::clone(&self.counters);
        let submitted = Instant::now();
        // Traces (debug spans: free unless a trace exporter wants them): the wait for a
        // pool thread, then the job, both children of the caller's span.
        let caller = tracing::Span::current();
        let queue_span = tracing::debug_span!("sign.queue");
        counters.queued.fetch_add(1, Ordering::Relaxed);
        self.pool.spawn(move || {
            drop(queue_span);
            counters.queued.fetch_sub(1, Ordering::Relaxed);
            // The caller has gone (deadline passed, call cancelled): sign nothing for nobody.
            if tx.is_closed() {
                counters.abandoned.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(crate::metrics::SIGN_ABANDONED).increment(1);
                return;
            }
            counters.busy.fetch_add(1, Ordering::Relaxed);
            // Decrement `busy` even if the job panics.
            let busy = BusyGuard(&counters);
            let started = Instant::now();
            let out =
                tracing::debug_span!(parent: &caller, "sign.job").in_scope(|| job(&OnPool::here()));
            let timing = JobTiming {
                queue_wait: started - submitted,
                run: started.elapsed(),
            };
            // Not busy any more once the caller can see the result.
            drop(busy);
            // The caller may have gone away (deadline, cancelled stream): nothing to do.
            let _ = tx.send((out, timing));
        });
        rx.await.map_err(|_| PoolError::Lost)
    }

    /// Runs `job` right here when `here` is true (the caller has checked it is a few ECDSA
    /// signatures, see the module docs), else on the pool as [`run`](Self::run) does. A
    /// panic in `job` is caught on either path and becomes [`PoolError::Lost`].
    pub async fn run_here_or_on_pool<F, R>(
        &self,
        here: bool,
        job: F,
    ) -> Result<(R, JobTiming), PoolError>
    where
        F: FnOnce(Site<'_>) -> R + Send + 'static,
        R: Send + 'static,
    {
        if !here {
            return self.run(move |on_pool| job(Site::Pool(on_pool))).await;
        }
        let started = Instant::now();
        let span = tracing::debug_span!("sign.job", site = "caller_thread");
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            span.in_scope(|| job(Site::CallerThread))
        }))
        .map_err(|payload| {
            tracing::error!(panic = panic_message(&*payload), "signing job panicked");
            PoolError::Lost
        })?;
        let timing = JobTiming {
            queue_wait: Duration::ZERO,
            run: started.elapsed(),
        };
        Ok((out, timing))
    }

    /// Runs `job` on the pool without waiting for it (the lane queues' flushes, which
    /// answer their callers themselves). A panic in `job` is logged by the pool.
    pub(crate) fn spawn<F>(&self, job: F)
    where
        F: FnOnce(&OnPool) + Send + 'static,
    {
        let counters = Arc::clone(&self.counters);
        self.pool.spawn(move || {
            counters.busy.fetch_add(1, Ordering::Relaxed);
            let _busy = BusyGuard(&counters);
            job(&OnPool::here());
        });
    }

    /// Runs `job` on the pool and blocks the calling thread until it is done. For the CLI
    /// and benches; never call it from async code.
    pub fn run_blocking<F, R>(&self, job: F) -> R
    where
        F: FnOnce(&OnPool) -> R + Send,
        R: Send,
    {
        self.pool.install(|| job(&OnPool::here()))
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("<non-string panic>")
}

struct BusyGuard<'a>(&'a Counters);

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_run_on_named_pool_threads_not_tokio_workers() {
        assert!(
            !OnPool::is_pool_thread(),
            "test body runs on a tokio worker"
        );
        let pool = SigningPool::new(2).expect("pool");
        let (name, _) = pool
            .run(|_| {
                (
                    std::thread::current().name().map(str::to_owned),
                    OnPool::is_pool_thread(),
                )
            })
            .await
            .expect("run");
        let (thread, flag) = name;
        assert!(flag);
        assert!(
            thread
                .as_deref()
                .is_some_and(|n| n.starts_with("cdnsign-sign-")),
            "{thread:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn run_here_or_on_pool_picks_the_thread_it_is_told() {
        let pool = SigningPool::new(1).expect("pool");
        let where_ = |site: Site<'_>| (matches!(site, Site::Pool(_)), OnPool::is_pool_thread());
        let (here, timing) = pool.run_here_or_on_pool(true, where_).await.expect("here");
        assert_eq!(here, (false, false), "ran on the caller's thread");
        assert_eq!(timing.queue_wait, Duration::ZERO);
        let (there, _) = pool.run_here_or_on_pool(false, where_).await.expect("pool");
        assert_eq!(there, (true, true), "ran on a pool thread");
        let lost = pool
            .run_here_or_on_pool(true, |_| -> () { panic!("boom here") })
            .await;
        assert_eq!(lost.map(|_| ()), Err(PoolError::Lost));
    }

    #[tokio::test]
    async fn a_panicking_job_is_lost_not_fatal() {
        let pool = SigningPool::new(1).expect("pool");
        let r: Result<((), JobTiming), PoolError> = pool.run(|_| panic!("boom")).await;
        assert_eq!(r.map(|_| ()), Err(PoolError::Lost));
        // The pool still works afterwards.
        assert_eq!(pool.run(|_| 7).await.expect("run").0, 7);
        assert_eq!(pool.busy(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_whose_caller_has_gone_is_not_run() {
        use std::future::Future as _;
        use std::sync::atomic::AtomicBool;

        let pool = Arc::new(SigningPool::new(1).expect("pool"));
        // Hold the only thread until released.
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let (started_tx, started_rx) = oneshot::channel::<()>();
        let p = Arc::clone(&pool);
        let blocker = tokio::spawn(async move {
            p.run(move |_| {
                let _ = started_tx.send(());
                let _ = release_rx.recv();
            })
            .await
        });
        started_rx.await.expect("blocker started");

        let ran = Arc::new(AtomicBool::new(false));
        let r = Arc::clone(&ran);
        let mut victim = Box::pin(pool.run(move |_| r.store(true, Ordering::SeqCst)));
        // Poll once: the job is queued behind the blocker. Then the caller goes away.
        std::future::poll_fn(|cx| {
            assert!(victim.as_mut().poll(cx).is_pending());
            std::task::Poll::Ready(())
        })
        .await;
        assert_eq!(pool.queued(), 1);
        drop(victim);

        release_tx.send(()).expect("release");
        blocker.await.expect("join").expect("blocker ran");
        // Jobs from outside the pool run in order: once this one has run, so has the victim.
        pool.run(|_| ()).await.expect("after");
        assert!(!ran.load(Ordering::SeqCst), "an abandoned job was signed");
        assert_eq!(pool.abandoned(), 1);
    }

    #[test]
    fn admission_bounds_the_queue_but_never_starves_a_big_batch() {
        let pool = SigningPool::new(1).expect("pool");
        let big = pool.admit(100, 15).expect("an idle pool takes any batch");
        let refused = pool.admit(1, 15).expect_err("over the limit");
        assert_eq!((refused.queued, refused.limit), (100, 15));
        assert!(refused.retry_after >= Duration::from_millis(100));
        drop(big);
        let a = pool.admit(10, 15).expect("room");
        assert!(pool.admit(10, 15).is_err());
        let b = pool.admit(5, 15).expect("fits exactly");
        assert_eq!(pool.queued_items(), 15);
        drop((a, b));
        assert_eq!(pool.queued_items(), 0);
    }
}
