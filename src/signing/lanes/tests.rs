//! Lane queue tests: shared, timer, idle and freed flushes, with the pool held busy by a
//! blocker job and flushes awaited through a notification, never a sleep.
use std::sync::atomic::Ordering;

use super::*;
use crate::signing::backend::multibuffer::Engine;
use crate::signing::backend::multibuffer::tests::{
    NOW, ctx, engine_or_skip, keyset_with_fill, repo_file, url,
};
use crate::signing::keys::KeySet;
use crate::signing::validate::ItemSpec;
use crate::signing::verify::{VerifyKey, verify_url};

/// One pool thread held by a blocker job until [`Held::release`].
struct Held {
    release: std::sync::mpsc::Sender<()>,
    blocker: tokio::task::JoinHandle<()>,
}

impl Held {
    /// Lets the blocker end, and waits until it has.
    async fn release(self) {
        self.release.send(()).expect("release");
        self.blocker.await.expect("blocker");
    }
}

/// Holds one pool thread (the only one, in a one-thread pool) until released.
async fn hold(pool: &Arc<SigningPool>) -> Held {
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
    Held { release, blocker }
}

/// A pool of `threads`, lane queues on it flushing after `flush_after`, and the test keys
/// on the multi-buffer backend, fewer than 3 signatures signing one by one (pinned: the
/// measured break-even differs by CPU).
fn rig(
    engine: &Arc<Engine>,
    threads: usize,
    flush_after: Duration,
) -> (Arc<SigningPool>, Lanes, KeySet) {
    let pool = Arc::new(SigningPool::new(threads).expect("pool"));
    let lanes = Lanes::new(Arc::clone(&pool), flush_after).expect("lanes");
    (pool, lanes, keyset_with_fill(engine, 3))
}

/// An ECDSA signature's answer: signed, and DER.
fn assert_der(answer: Result<Result<Vec<u8>, CryptoError>, oneshot::error::RecvError>) {
    let der = answer.expect("answered").expect("signed");
    openssl::ecdsa::EcdsaSig::from_der(&der).expect("DER");
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
    let (pool, lanes, keys) = rig(&engine, 1, Duration::from_secs(3600));
    let (lanes, keys) = (Arc::new(lanes), Arc::new(keys));
    let held = hold(&pool).await;
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
    held.release().await;
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
    let Some(engine) = engine_or_skip("a_lone_signature_on_a_busy_pool_is_flushed_by_the_timer")
    else {
        return;
    };
    let (pool, lanes, keys) = rig(&engine, 1, Duration::from_secs(3600));
    let key = keys.get("KEC256").expect("key");
    let held = hold(&pool).await;
    let rx = lanes.submit(&key, b"a policy");
    assert_eq!(
        lanes.counts().timer.load(Ordering::SeqCst),
        0,
        "before its deadline"
    );
    lanes.advance_clock(Duration::from_secs(3601));
    lanes.shared.flushed.notified().await;
    held.release().await;
    assert_der(rx.await);
    let counts = lanes.counts();
    assert_eq!(counts.timer.load(Ordering::SeqCst), 1);
    assert_eq!(counts.one_by_one.load(Ordering::SeqCst), 1);
    assert_eq!(counts.full.load(Ordering::SeqCst), 0);
}

/// A queue waiting on a busy pool goes as soon as a flush ends, not at its deadline
/// (an hour here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_queue_goes_when_a_flush_ends() {
    let Some(engine) = engine_or_skip("a_waiting_queue_goes_when_a_flush_ends") else {
        return;
    };
    let (pool, lanes, keys) = rig(&engine, 1, Duration::from_secs(3600));
    let (rsa, ec) = (
        keys.get("KRSA1").expect("rsa"),
        keys.get("KEC256").expect("ec"),
    );
    let held = hold(&pool).await;
    let full: Vec<_> = (0..8)
        .map(|i| lanes.submit(&rsa, format!("p{i}").as_bytes()))
        .collect();
    let waiting = lanes.submit(&ec, b"an EC policy");
    assert_eq!(lanes.counts().full.load(Ordering::SeqCst), 1);
    held.release().await;
    for rx in full {
        rx.await.expect("answered").expect("signed");
    }
    waiting.await.expect("answered").expect("signed");
    let counts = lanes.counts();
    assert_eq!(counts.freed.load(Ordering::SeqCst), 1);
    assert_eq!(counts.timer.load(Ordering::SeqCst), 0);
}

/// On an idle pool a signature does not wait for company at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_an_idle_pool_a_signature_is_flushed_at_once() {
    let Some(engine) = engine_or_skip("on_an_idle_pool_a_signature_is_flushed_at_once") else {
        return;
    };
    let (_pool, lanes, keys) = rig(&engine, 1, Duration::from_secs(3600));
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

/// While a lane flush waits for the busy pool, a queue past its deadline is not handed to
/// the pool behind it (where it could gain no lanes): it keeps filling, and goes, with
/// everything that joined it, as that flush ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_past_its_deadline_keeps_filling_while_a_flush_is_ahead_of_it() {
    let Some(engine) =
        engine_or_skip("a_queue_past_its_deadline_keeps_filling_while_a_flush_is_ahead_of_it")
    else {
        return;
    };
    // Deadlines pass only when the test moves the queues' clock (a 100 us deadline raced
    // the eight submits below on a loaded machine and flushed the RSA queue part-full).
    let (pool, lanes, keys) = rig(&engine, 1, Duration::from_secs(3600));
    let (rsa, ec) = (
        keys.get("KRSA1").expect("rsa"),
        keys.get("KEC256").expect("ec"),
    );
    let held = hold(&pool).await;
    // A full RSA flush waits for the held pool thread.
    let full: Vec<_> = (0..8)
        .map(|i| lanes.submit(&rsa, format!("p{i}").as_bytes()))
        .collect();
    assert_eq!(lanes.counts().full.load(Ordering::SeqCst), 1);
    // An EC signature whose deadline passes meanwhile: the timer leaves it queued.
    let first = lanes.submit(&ec, b"EC policy 0");
    lanes.advance_clock(Duration::from_secs(3601));
    tokio::time::timeout(Duration::from_secs(60), lanes.shared.deferred.notified())
        .await
        .expect("the timer left the EC queue waiting for the flush ahead of it");
    let later: Vec<_> = (1..4)
        .map(|i| lanes.submit(&ec, format!("EC policy {i}").as_bytes()))
        .collect();
    held.release().await;
    for rx in full {
        rx.await.expect("answered").expect("signed");
    }
    for rx in std::iter::once(first).chain(later) {
        assert_der(rx.await);
    }
    let counts = lanes.counts();
    assert_eq!(counts.timer.load(Ordering::SeqCst), 0);
    assert_eq!(counts.freed.load(Ordering::SeqCst), 1);
    // One flush of 8 and one of 4: the EC queue went whole, in lanes.
    assert_eq!(counts.signatures.load(Ordering::SeqCst), 12);
    assert_eq!(counts.one_by_one.load(Ordering::SeqCst), 0);
}

/// A signature that finds one of the pool's threads free goes at once, even while the
/// other thread is busy: queues only wait for company while every thread is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_free_pool_thread_takes_a_signature_at_once() {
    let Some(engine) = engine_or_skip("a_free_pool_thread_takes_a_signature_at_once") else {
        return;
    };
    let (pool, lanes, keys) = rig(&engine, 2, Duration::from_secs(3600));
    let key = keys.get("KEC256").expect("key");
    let held = hold(&pool).await;
    let rx = lanes.submit(&key, b"a policy");
    // Answered while the blocker still holds the other thread (a flush timer of an hour).
    assert_der(
        tokio::time::timeout(Duration::from_secs(60), rx)
            .await
            .expect("flushed to the free thread at once"),
    );
    held.release().await;
    let counts = lanes.counts();
    assert_eq!(counts.idle.load(Ordering::SeqCst), 1);
    assert_eq!(counts.timer.load(Ordering::SeqCst), 0);
}

/// Each flush kind counts on its own handle, labelled as the metric documents it.
#[test]
fn flush_kinds_index_their_own_handles_and_labels() {
    let mut labels = std::collections::HashSet::new();
    for (i, kind) in FlushKind::ALL.iter().enumerate() {
        assert_eq!(*kind as usize, i, "ALL is in declaration order");
        assert!(labels.insert(kind.label()), "{} twice", kind.label());
    }
    assert_eq!(FlushKind::of(Trigger::Full, true).label(), "full");
    assert_eq!(
        FlushKind::of(Trigger::Timer, true).label(),
        "timer_one_by_one"
    );
    assert_eq!(FlushKind::of(Trigger::Idle, false).label(), "idle");
    assert_eq!(
        FlushKind::of(Trigger::Freed, true).label(),
        "freed_one_by_one"
    );
}
