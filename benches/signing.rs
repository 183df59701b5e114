//! Criterion benches for the signing core. Throughput is in elements (policies, signatures,
//! signed URLs) per second, comparable with `openssl speed` (see `scripts/bench.sh`).
//!
//! - `policy/*`: writing and encoding policies, and full item preparation (validation +
//!   policy), no crypto.
//! - `sign/<backend>/<algorithm>`: one private-key operation on a one-thread signing pool
//!   (so per core), for every compiled backend and RSA-SHA1, RSA-SHA256, ECDSA-P256-SHA256.
//! - `sign/multibuffer/<algorithm>-8-lanes`: one 8-lane crypto_mb flush (8 signatures,
//!   verified before release for RSA), per signature, on one pool thread: compare with
//!   `sign/openssl/<algorithm>`. Only where crypto_mb loads and the CPU has AVX-512 IFMA.
//! - `batch/<backend>/<algorithm>`: `sign_batch` of 1,000 distinct URLs on a pool with one
//!   thread per core, rendered as signed URLs: the service's work minus gRPC.
//! - `batch/.../playlist-wildcard`: 1,000 segment URLs under one wildcard policy (one
//!   signature).
//!
//! `CDNSIGN_BENCH_QUICK=1 cargo bench` runs everything with tiny measurement times (CI:
//! keeps the benches compiling and running, well under a minute); plain `cargo bench` is
//! the full run. Signing can only happen on the pool (`OnPool`), so every timed loop runs
//! inside `SigningPool::run_blocking` via `iter_custom`.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use cdnsign::signing::keys::{Backend, HashAlg, KeySet, SigningKey};
use cdnsign::signing::policy::{PolicySpec, canned_json, cf_base64};
use cdnsign::signing::pool::{SigningPool, Site};
use cdnsign::signing::sign_batch;
use cdnsign::signing::validate::{self, BatchContext, ItemSpec};
use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput, measurement::WallTime};

const RSA_KEY: &str = "config/dev-keys/TEST-ONLY-cloudfront.pem";
const EC_KEY: &str = "tests/fixtures/keys/ec-p256.pem";
const NOW: i64 = 1_700_000_000;
const BATCH: usize = 1_000;

fn quick() -> bool {
    std::env::var_os("CDNSIGN_BENCH_QUICK").is_some_and(|v| !v.is_empty() && v != "0")
}

fn read(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Tiny times in quick mode, criterion's defaults otherwise.
fn tune(group: &mut BenchmarkGroup<'_, WallTime>, slow: bool) {
    if quick() {
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(100))
            .measurement_time(Duration::from_millis(if slow { 300 } else { 400 }));
    } else if slow {
        group
            .sample_size(20)
            .measurement_time(Duration::from_secs(8));
    }
    if slow {
        // Each iteration is long: the same iteration count per sample, not 1..n.
        group.sampling_mode(SamplingMode::Flat);
    }
}

/// (label, key file, digest) for each algorithm CloudFront accepts.
const ALGORITHMS: [(&str, &str, HashAlg); 3] = [
    ("rsa2048-sha1", RSA_KEY, HashAlg::Sha1),
    ("rsa2048-sha256", RSA_KEY, HashAlg::Sha256),
    ("ecdsa-p256-sha256", EC_KEY, HashAlg::Sha256),
];

fn key(id: &str, file: &str, hash: HashAlg, backend: Backend) -> SigningKey {
    SigningKey::from_pem(id, &read(file), hash, backend).expect("bench key")
}

fn segment_url(i: usize) -> String {
    format!("https://d111111abcdef8.cloudfront.net/hls/tenant-0042/1080p/seg-{i:09}.ts")
}

fn bench_policy(c: &mut Criterion) {
    let mut g = c.benchmark_group("policy");
    tune(&mut g, false);
    g.throughput(Throughput::Elements(1));
    let url = segment_url(1234);
    g.bench_function("canned-json", |b| {
        b.iter(|| canned_json(black_box(&url), black_box(1_767_225_600)))
    });
    let spec = PolicySpec {
        resource: "https://d111111abcdef8.cloudfront.net/hls/tenant-0042/*",
        expires: 1_767_225_600,
        not_before: Some(1_767_220_000),
        ip: Some("192.0.2.0/24".parse().expect("cidr")),
    };
    g.bench_function("custom-json+base64", |b| {
        b.iter(|| cf_base64(black_box(&spec).custom_json().as_bytes()))
    });
    let sig = vec![0xa5u8; 256];
    g.bench_function("base64-rsa-signature", |b| {
        b.iter(|| cf_base64(black_box(&sig)))
    });

    let keys = KeySet::from_keys([key("K1", EC_KEY, HashAlg::Sha256, Backend::compiled()[0])]);
    let ctx = BatchContext {
        default_key: keys.get("K1"),
        default_key_id: "K1".into(),
        expires_at: 0,
        ttl_seconds: 3600,
        custom_policy: false,
        max_ttl_seconds: 86_400,
        now: NOW,
        grant: None,
    };
    let item = ItemSpec {
        url: &url,
        ..ItemSpec::default()
    };
    g.bench_function("prepare-item", |b| {
        b.iter(|| validate::prepare(black_box(&item), &ctx, &keys).expect("valid"))
    });
    g.finish();
}

fn bench_sign(c: &mut Criterion) {
    let pool = SigningPool::new(1).expect("pool");
    let msg = canned_json(&segment_url(7), 1_767_225_600);
    for backend in Backend::compiled() {
        let mut g = c.benchmark_group(format!("sign/{}", backend.as_str()));
        tune(&mut g, backend == Backend::PureRust);
        g.throughput(Throughput::Elements(1));
        for (label, file, hash) in ALGORITHMS {
            let k = key("K1", file, hash, backend);
            g.bench_function(label, |b| {
                b.iter_custom(|iters| {
                    pool.run_blocking(|on| {
                        let start = Instant::now();
                        for _ in 0..iters {
                            black_box(k.sign(black_box(msg.as_bytes()), on).expect("sign"));
                        }
                        start.elapsed()
                    })
                })
            });
        }
        g.finish();
    }
}

/// The backends measured: every compiled one, and the multi-buffer one where it runs.
fn backends() -> Vec<Backend> {
    let mut v = Backend::compiled();
    if cdnsign::signing::backend::multibuffer::engine().is_ok() {
        v.push(Backend::Multibuffer);
    }
    v
}

fn bench_multibuffer(c: &mut Criterion) {
    if let Err(why) = cdnsign::signing::backend::multibuffer::engine() {
        println!("SKIPPED sign/multibuffer: {why}");
        return;
    }
    let pool = SigningPool::new(1).expect("pool");
    let policies: Vec<String> = (0..8)
        .map(|i| canned_json(&segment_url(i), 1_767_225_600))
        .collect();
    let msgs: Vec<&[u8]> = policies.iter().map(String::as_bytes).collect();
    let mut g = c.benchmark_group("sign/multibuffer");
    tune(&mut g, false);
    // Per signature: one flush is 8 of them.
    g.throughput(Throughput::Elements(8));
    for (label, file, hash) in ALGORITHMS {
        let k = key("K1", file, hash, Backend::Multibuffer);
        assert_eq!(k.lanes(), 8);
        g.bench_function(format!("{label}-8-lanes"), |b| {
            b.iter_custom(|iters| {
                pool.run_blocking(|on| {
                    let start = Instant::now();
                    for _ in 0..iters {
                        black_box(k.sign_lanes(black_box(&msgs), on));
                    }
                    start.elapsed()
                })
            })
        });
    }
    g.finish();
}

fn bench_batch(c: &mut Criterion) {
    let pool = SigningPool::new(0).expect("pool");
    let urls: Vec<String> = (0..BATCH).map(segment_url).collect();
    let items: Vec<ItemSpec<'_>> = urls
        .iter()
        .map(|u| ItemSpec {
            url: u,
            ..ItemSpec::default()
        })
        .collect();
    let playlist: Vec<ItemSpec<'_>> = urls
        .iter()
        .map(|u| ItemSpec {
            url: u,
            policy_resource: "https://d111111abcdef8.cloudfront.net/hls/tenant-0042/*",
            ..ItemSpec::default()
        })
        .collect();
    for backend in backends() {
        let mut g = c.benchmark_group(format!("batch/{}", backend.as_str()));
        tune(&mut g, true);
        g.throughput(Throughput::Elements(BATCH as u64));
        for (label, file, hash) in ALGORITHMS {
            // pure-rust RSA is ~0.4k signs/s/core: a 1,000 batch takes over a second, too
            // slow for quick mode. The full run measures it.
            if quick() && backend == Backend::PureRust && label.starts_with("rsa") {
                continue;
            }
            let k = key("K1", file, hash, backend);
            let keys = KeySet::from_keys([k]);
            let ctx = BatchContext {
                default_key: keys.get("K1"),
                default_key_id: "K1".into(),
                expires_at: 0,
                ttl_seconds: 3600,
                custom_policy: false,
                max_ttl_seconds: 86_400,
                now: NOW,
                grant: None,
            };
            let run = |items: &[ItemSpec<'_>], expect_sigs: usize| {
                pool.run_blocking(|on| {
                    let (results, stats) = sign_batch(items, &ctx, &keys, Site::Pool(on));
                    assert_eq!(stats.signatures, expect_sigs);
                    let urls: Vec<String> = results
                        .iter()
                        .map(|r| r.as_ref().expect("signed").signed_url())
                        .collect();
                    black_box(urls)
                })
            };
            g.bench_function(format!("{label}/distinct-urls"), |b| {
                b.iter(|| run(&items, BATCH))
            });
            if label == "rsa2048-sha1" {
                g.bench_function(format!("{label}/playlist-wildcard"), |b| {
                    b.iter(|| run(&playlist, 1))
                });
            }
        }
        g.finish();
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_policy(&mut c);
    bench_sign(&mut c);
    bench_multibuffer(&mut c);
    bench_batch(&mut c);
    c.final_summary();
}
