//! Criterion benches for whole playlists: a 10,000-segment HLS media playlist read,
//! signed and rewritten (`playlist::parse` + `playlist::sign`, the service's work minus
//! gRPC) in each mode, with RSA-2048/SHA-1 and ECDSA P-256/SHA-256, on a pool with one
//! thread per core. Throughput is in URIs per second; the private-key operations each
//! mode uses are printed once per bench (`signatures:` lines).
//!
//! `CDNSIGN_BENCH_QUICK=1` runs 200 segments with tiny measurement times (CI: keeps the
//! bench compiling and running); plain `cargo bench --bench playlist` is the full run.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use cdnsign::playlist::{self, Mode, SharedOptions};
use cdnsign::signing::keys::{Backend, HashAlg, KeySet, SigningKey};
use cdnsign::signing::pool::{OnPool, SigningPool, Site};
use cdnsign::signing::validate::BatchContext;
use criterion::{Criterion, SamplingMode, Throughput};

const BASE: &str = "https://d111111abcdef8.cloudfront.net/hls/tenant-0042/1080p/index.m3u8";

fn quick() -> bool {
    std::env::var_os("CDNSIGN_BENCH_QUICK").is_some_and(|v| !v.is_empty() && v != "0")
}

fn read(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A VOD media playlist as a packager writes it: fMP4 init segment, `segments` segments.
fn media_playlist(segments: usize) -> String {
    let mut t = String::from(
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:4\n#EXT-X-PLAYLIST-TYPE:VOD\n\
         #EXT-X-MAP:URI=\"init.mp4\"\n",
    );
    for i in 0..segments - 1 {
        t.push_str(&format!("#EXTINF:4.000000,\nseg-{i:06}.m4s\n"));
    }
    t.push_str("#EXT-X-ENDLIST\n");
    t
}

fn bench_playlists(c: &mut Criterion) {
    let segments = if quick() { 200 } else { 10_000 };
    let text = media_playlist(segments);
    let pool = SigningPool::new(0).expect("pool");
    let mut g = c.benchmark_group("playlist");
    g.throughput(Throughput::Elements(segments as u64));
    g.sampling_mode(SamplingMode::Flat);
    if quick() {
        g.sample_size(10)
            .warm_up_time(Duration::from_millis(100))
            .measurement_time(Duration::from_millis(500));
    } else {
        g.sample_size(10).measurement_time(Duration::from_secs(20));
    }
    for (label, file, hash) in [
        (
            "rsa2048-sha1",
            "config/dev-keys/TEST-ONLY-cloudfront.pem",
            HashAlg::Sha1,
        ),
        (
            "ecdsa-p256-sha256",
            "tests/fixtures/keys/ec-p256.pem",
            HashAlg::Sha256,
        ),
    ] {
        let keys = KeySet::from_keys([SigningKey::from_pem(
            "K1",
            &read(file),
            hash,
            Backend::compiled()[0],
        )
        .expect("key")]);
        for mode in [Mode::PerUri, Mode::SharedPolicy, Mode::Cookies] {
            let opts = SharedOptions {
                mode,
                ..SharedOptions::default()
            };
            let run = |on_pool: &OnPool| {
                let ctx = BatchContext {
                    default_key: keys.get("K1"),
                    default_key_id: "K1".into(),
                    ttl_seconds: 3600,
                    max_ttl_seconds: 86_400,
                    now: 1_700_000_000,
                    ..BatchContext::default()
                };
                let parsed = playlist::parse(&text, BASE, usize::MAX).expect("parse");
                playlist::sign(&text, &parsed, &opts, &ctx, &keys, Site::Pool(on_pool))
                    .expect("sign")
            };
            let once = pool.run_blocking(|p| run(p));
            assert_eq!(once.uris, segments);
            eprintln!(
                "signatures: playlist/{label}/{mode}: {} private-key operations for {} URIs",
                once.stats.signatures, once.uris
            );
            g.bench_function(format!("{label}/{mode}/{segments}-segments"), |b| {
                b.iter_custom(|iters| {
                    pool.run_blocking(|on_pool| {
                        let started = Instant::now();
                        for _ in 0..iters {
                            black_box(run(on_pool));
                        }
                        started.elapsed()
                    })
                })
            });
        }
    }
    g.finish();
}

criterion::criterion_group!(benches, bench_playlists);
criterion::criterion_main!(benches);
