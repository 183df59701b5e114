//! `run`: the load loop, RSS sampling and the `openssl speed` comparison.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cdnsign::proto::signer_client::SignerClient;
use cdnsign::proto::{SignItem, SignUrlsRequest, SignUrlsResponse, sign_url_result};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use crate::{Mode, OpensslAlg, RunArgs};

/// Longest measured run accepted, seconds.
const MAX_DURATION: f64 = 600.0;
/// Per-RPC deadline.
const RPC_TIMEOUT: Duration = Duration::from_secs(30);
const HOST: &str = "https://d111111abcdef8.cloudfront.net";

/// Latency percentiles, microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Latency {
    pub(crate) p50: u64,
    pub(crate) p90: u64,
    pub(crate) p99: u64,
    pub(crate) max: u64,
    pub(crate) mean: f64,
}

/// Server RSS during the run, KiB.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Rss {
    /// Before any load.
    pub(crate) start: u64,
    /// First sample of the measured window.
    pub(crate) window_start: u64,
    /// Largest sample.
    pub(crate) max: u64,
    /// Last sample of the measured window.
    pub(crate) end: u64,
    /// (seconds since start, KiB) every 5 s.
    pub(crate) series: Vec<(f64, u64)>,
}

/// CPU used during the measured window, in cores (CPU seconds per wall second), from
/// `/proc/<pid>/stat` utime + stime.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct CpuSplit {
    /// The server process.
    pub(crate) server_cores: f64,
    /// This load generator.
    pub(crate) client_cores: f64,
}

/// One run's result, one JSON line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RunResult {
    pub(crate) label: String,
    pub(crate) mode: Mode,
    pub(crate) key_id: String,
    pub(crate) algorithm: String,
    pub(crate) batch: usize,
    pub(crate) playlist: bool,
    pub(crate) concurrency: usize,
    pub(crate) connections: usize,
    /// Load generator runtime threads (0 = one per core).
    #[serde(default)]
    pub(crate) client_threads: usize,
    pub(crate) rate: Option<f64>,
    pub(crate) seconds: f64,
    pub(crate) requests: u64,
    pub(crate) urls: u64,
    pub(crate) failed_items: u64,
    pub(crate) rpc_errors: u64,
    pub(crate) urls_per_s: f64,
    pub(crate) requests_per_s: f64,
    pub(crate) latency_us: Latency,
    /// Paced runs: how late the load generator sent requests (included in `latency_us`).
    #[serde(default)]
    pub(crate) send_lag_us: Option<Latency>,
    pub(crate) openssl_speed_sign_per_s: Option<f64>,
    pub(crate) openssl_multi: usize,
    /// The CPUs `openssl speed` ran on (`--openssl-cpus`), if pinned.
    #[serde(default)]
    pub(crate) openssl_cpus: Option<String>,
    pub(crate) ratio_to_openssl: Option<f64>,
    /// `openssl speed ALG` on one process (sign/s of CPU time: not hurt by other load).
    #[serde(default)]
    pub(crate) openssl_speed_1core_sign_per_s: Option<f64>,
    /// URLs per server CPU-second / one-process openssl speed: how close the server's own
    /// CPU time comes to raw signing, whatever else runs on the machine.
    #[serde(default)]
    pub(crate) cpu_efficiency: Option<f64>,
    pub(crate) rss_kib: Option<Rss>,
    #[serde(default)]
    pub(crate) cpu: Option<CpuSplit>,
    pub(crate) loadavg_before: String,
    pub(crate) loadavg_after: String,
}

/// What a worker measured.
struct WorkerOut {
    hist: Histogram<u64>,
    /// Paced runs: scheduled start to the moment the request is handed to the client.
    lag: Histogram<u64>,
    requests: u64,
    urls: u64,
    failed_items: u64,
    rpc_errors: u64,
    first_error: Option<String>,
    signature_len: Option<usize>,
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn request_template(args: &RunArgs, worker: usize) -> SignUrlsRequest {
    let resource = format!("{HOST}/hls/w{worker}/*");
    let items = (0..args.batch)
        .map(|i| SignItem {
            url: format!("{HOST}/hls/w{worker}/1080p/seg-{i:09}.ts"),
            policy_resource: if args.playlist {
                resource.clone()
            } else {
                String::new()
            },
            ..SignItem::default()
        })
        .collect();
    SignUrlsRequest {
        items,
        key_id: args.key_id.clone(),
        ttl_seconds: 3600,
        ..SignUrlsRequest::default()
    }
}

/// Bytes of the first signed URL's signature (CloudFront base64: 4 chars per 3 bytes).
fn signature_len(resp: &SignUrlsResponse) -> Option<usize> {
    resp.results.iter().find_map(|r| match &r.outcome {
        Some(sign_url_result::Outcome::SignedUrl(url)) => {
            let sig = url.split('&').find_map(|p| p.strip_prefix("Signature="))?;
            Some(sig.trim_end_matches('_').len() * 3 / 4)
        }
        _ => None,
    })
}

struct Plan {
    measure_from: Instant,
    deadline: Instant,
    max_requests: u64,
    sent: AtomicU64,
    /// Paced runs: scheduled starts handed out by the pacer thread, first come first served.
    tickets: Option<tokio::sync::Mutex<mpsc::UnboundedReceiver<Instant>>>,
}

impl Plan {
    /// The next request's scheduled start, or `None` when the run is over.
    async fn next(&self) -> Option<Instant> {
        if self.sent.fetch_add(1, Ordering::Relaxed) >= self.max_requests {
            return None;
        }
        let at = match &self.tickets {
            // A worker waits here only while it is free, so a ticket that waits in the
            // queue because every worker is busy still counts from its scheduled start.
            Some(tickets) => tickets.lock().await.recv().await?,
            None => Instant::now(),
        };
        (at < self.deadline).then_some(at)
    }
}

/// Paces a `--rate` run: hands out one scheduled start every `1 / rate` seconds until the
/// deadline. A plain thread with `std::thread::sleep` (high-resolution timer, ~50-100 us
/// late) rather than tokio's 1 ms timer wheel, whose rounding would otherwise be counted
/// as server latency.
fn spawn_pacer(
    start: Instant,
    deadline: Instant,
    rate: f64,
    tx: mpsc::UnboundedSender<Instant>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let interval = Duration::from_secs_f64(1.0 / rate);
    std::thread::Builder::new()
        .name("pacer".into())
        .spawn(move || {
            let mut k: u32 = 0;
            loop {
                let at = start + interval * k;
                if at >= deadline {
                    break;
                }
                if let Some(wait) = at.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                if tx.send(at).is_err() {
                    break;
                }
                k = k.saturating_add(1);
            }
        })
}

/// Records how late the generator itself sends a paced request (pacer + task wake-up), so
/// a reader can tell the load generator's share of the latency from the server's.
fn lag(out: &mut WorkerOut, plan: &Plan, scheduled: Instant) {
    let now = Instant::now();
    if plan.tickets.is_some() && scheduled >= plan.measure_from {
        let us = u64::try_from((now - scheduled).as_micros()).unwrap_or(u64::MAX);
        let _ = out.lag.record(us.max(1));
    }
}

fn record(
    out: &mut WorkerOut,
    plan: &Plan,
    scheduled: Instant,
    resp: Result<SignUrlsResponse, tonic::Status>,
) {
    let done = Instant::now();
    // Counted by completion time: responses completing inside the window, whenever they
    // started. (Counting only requests started inside the window dropped the long ones
    // straddling its edges and under-counted big batches.)
    let counted = done >= plan.measure_from && done <= plan.deadline;
    match resp {
        Ok(resp) => {
            if out.signature_len.is_none() {
                out.signature_len = signature_len(&resp);
            }
            if counted {
                let us = u64::try_from((done - scheduled).as_micros()).unwrap_or(u64::MAX);
                let _ = out.hist.record(us.max(1));
                out.requests += 1;
                out.urls += u64::from(resp.signed);
                out.failed_items += u64::from(resp.failed);
            }
            if resp.failed > 0 && out.first_error.is_none() {
                out.first_error = resp.results.iter().find_map(|r| match &r.outcome {
                    Some(sign_url_result::Outcome::Error(e)) => {
                        Some(format!("{}: {}", e.field, e.message))
                    }
                    _ => None,
                });
            }
        }
        Err(status) => {
            out.rpc_errors += 1;
            if out.first_error.is_none() {
                out.first_error = Some(status.to_string());
            }
        }
    }
}

async fn worker(
    mut client: SignerClient<Channel>,
    args: Arc<RunArgs>,
    plan: Arc<Plan>,
    id: usize,
) -> WorkerOut {
    let mut out = WorkerOut {
        hist: Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds"),
        lag: Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds"),
        requests: 0,
        urls: 0,
        failed_items: 0,
        rpc_errors: 0,
        first_error: None,
        signature_len: None,
    };
    let template = request_template(&args, id);
    match args.mode {
        Mode::Unary => {
            while let Some(at) = plan.next().await {
                lag(&mut out, &plan, at);
                let mut req = tonic::Request::new(template.clone());
                req.set_timeout(RPC_TIMEOUT);
                let resp = client.sign_urls(req).await.map(tonic::Response::into_inner);
                record(&mut out, &plan, at, resp);
            }
        }
        Mode::Stream => {
            let (tx, rx) = mpsc::channel::<SignUrlsRequest>(1);
            let mut inbound = match client.sign_urls_stream(ReceiverStream::new(rx)).await {
                Ok(r) => r.into_inner(),
                Err(status) => {
                    record(&mut out, &plan, Instant::now(), Err(status));
                    return out;
                }
            };
            while let Some(at) = plan.next().await {
                lag(&mut out, &plan, at);
                if tx.send(template.clone()).await.is_err() {
                    record(
                        &mut out,
                        &plan,
                        at,
                        Err(tonic::Status::unavailable("stream closed")),
                    );
                    break;
                }
                let resp = match tokio::time::timeout(RPC_TIMEOUT, inbound.message()).await {
                    Ok(Ok(Some(r))) => Ok(r),
                    Ok(Ok(None)) => Err(tonic::Status::unavailable("server ended the stream")),
                    Ok(Err(status)) => Err(status),
                    Err(_) => Err(tonic::Status::deadline_exceeded("no response in 30 s")),
                };
                let failed = resp.is_err();
                record(&mut out, &plan, at, resp);
                if failed {
                    break;
                }
            }
        }
    }
    out
}

/// utime + stime of a process, seconds (clock ticks are 100 Hz on Linux).
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Samples RSS every 250 ms until told to stop; returns (seconds since start, KiB).
async fn sample_rss(
    pid: u32,
    start: Instant,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> Vec<(f64, u64)> {
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Some(kib) = rss_kib(pid) {
                    samples.push((start.elapsed().as_secs_f64(), kib));
                }
            }
            _ = &mut stop => break,
        }
    }
    samples
}

/// How many CPUs a `taskset -c` list names (`0-1,4` -> 3); `None` if it is not one.
pub(crate) fn cpu_list_len(list: &str) -> Option<usize> {
    let mut n = 0usize;
    for part in list.split(',') {
        let part = part.trim();
        let (lo, hi) = match part.split_once('-') {
            Some((lo, hi)) => (
                lo.trim().parse::<usize>().ok()?,
                hi.trim().parse::<usize>().ok()?,
            ),
            None => {
                let c = part.parse::<usize>().ok()?;
                (c, c)
            }
        };
        if hi < lo {
            return None;
        }
        n = n.checked_add(hi - lo + 1)?;
    }
    (n > 0).then_some(n)
}

/// `openssl speed -seconds S -multi N ALG`, sign/s summed over the processes; on `cpus`
/// only (`taskset -c`) when given.
fn openssl_speed(alg: &str, seconds: u32, multi: usize, cpus: Option<&str>) -> Option<f64> {
    let mut cmd = match cpus {
        Some(list) => {
            let mut c = std::process::Command::new("taskset");
            c.arg("-c").arg(list).arg("openssl");
            c
        }
        None => std::process::Command::new("openssl"),
    };
    cmd.arg("speed").arg("-seconds").arg(seconds.to_string());
    if multi > 1 {
        cmd.arg("-multi").arg(multi.to_string());
    }
    let out = cmd.arg(alg).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        match alg {
            "rsa2048" if f.len() >= 6 && f[0] == "rsa" && f[1] == "2048" && f[2] == "bits" => {
                f[5].parse().ok()
            }
            "ecdsap256" if f.len() >= 7 && f[0] == "256" && f[3].contains("nistp256") => {
                f[6].parse().ok()
            }
            _ => None,
        }
    })
}

fn percentiles(h: &Histogram<u64>) -> Latency {
    Latency {
        p50: h.value_at_quantile(0.50),
        p90: h.value_at_quantile(0.90),
        p99: h.value_at_quantile(0.99),
        max: h.max(),
        mean: h.mean(),
    }
}

fn ms(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}

pub(crate) fn main(args: RunArgs) -> ExitCode {
    if !(args.duration > 0.0 && args.duration <= MAX_DURATION)
        || args.warmup < 0.0
        || args.warmup > 60.0
    {
        eprintln!(
            "cdnsign-loadtest: --duration must be in (0, {MAX_DURATION}] and --warmup in [0, 60]"
        );
        return ExitCode::from(2);
    }
    if args.concurrency == 0 || args.connections == 0 || args.batch == 0 {
        eprintln!("cdnsign-loadtest: --concurrency, --connections and --batch must be at least 1");
        return ExitCode::from(2);
    }
    if args.rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
        eprintln!("cdnsign-loadtest: --rate must be positive");
        return ExitCode::from(2);
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if args.client_threads > 0 {
        builder.worker_threads(args.client_threads);
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cdnsign-loadtest: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(drive(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cdnsign-loadtest: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn drive(args: RunArgs) -> Result<ExitCode, String> {
    let loadavg_before = loadavg();
    let mut clients = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let channel = Endpoint::from_shared(args.addr.clone())
            .map_err(|e| format!("bad --addr {}: {e}", args.addr))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", args.addr))?;
        clients.push(
            SignerClient::new(channel)
                .max_decoding_message_size(256 * 1024 * 1024)
                .max_encoding_message_size(256 * 1024 * 1024),
        );
    }

    let start = Instant::now();
    let warmup = Duration::from_secs_f64(args.warmup);
    let measured = Duration::from_secs_f64(args.duration);
    let deadline = start + warmup + measured;
    let (tickets, pacer) = match args.rate {
        Some(rate) => {
            let (tx, rx) = mpsc::unbounded_channel();
            let pacer = spawn_pacer(start, deadline, rate, tx)
                .map_err(|e| format!("cannot start the pacer thread: {e}"))?;
            (Some(tokio::sync::Mutex::new(rx)), Some(pacer))
        }
        None => (None, None),
    };
    let plan = Arc::new(Plan {
        measure_from: start + warmup,
        deadline,
        max_requests: args.max_requests,
        sent: AtomicU64::new(0),
        tickets,
    });

    let rss_task = args.server_pid.map(|pid| {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        (stop_tx, tokio::spawn(sample_rss(pid, start, stop_rx)))
    });

    // CPU of server and client over the measured window only.
    let cpu_task = {
        let server = args.server_pid.map(|p| p.to_string());
        let (from, until) = (plan.measure_from, plan.deadline);
        tokio::spawn(async move {
            tokio::time::sleep_until(from.into()).await;
            let s0 = server.as_deref().and_then(cpu_seconds);
            let c0 = cpu_seconds("self");
            tokio::time::sleep_until(until.into()).await;
            let wall = from.elapsed().as_secs_f64();
            let s1 = server.as_deref().and_then(cpu_seconds);
            let c1 = cpu_seconds("self");
            match (s0, s1, c0, c1) {
                (Some(s0), Some(s1), Some(c0), Some(c1)) if wall > 0.0 => Some(CpuSplit {
                    server_cores: (s1 - s0) / wall,
                    client_cores: (c1 - c0) / wall,
                }),
                _ => None,
            }
        })
    };

    let args = Arc::new(args);
    let mut handles = Vec::with_capacity(args.concurrency);
    for id in 0..args.concurrency {
        let client = clients[id % clients.len()].clone();
        handles.push(tokio::spawn(worker(
            client,
            Arc::clone(&args),
            Arc::clone(&plan),
            id,
        )));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds");
    let mut lag_hist = hist.clone();
    let (mut requests, mut urls, mut failed_items, mut rpc_errors) = (0u64, 0u64, 0u64, 0u64);
    let mut first_error = None;
    let mut sig_len = None;
    for h in handles {
        let out = h.await.map_err(|e| format!("worker failed: {e}"))?;
        hist.add(&out.hist).map_err(|e| format!("histogram: {e}"))?;
        lag_hist
            .add(&out.lag)
            .map_err(|e| format!("histogram: {e}"))?;
        requests += out.requests;
        urls += out.urls;
        failed_items += out.failed_items;
        rpc_errors += out.rpc_errors;
        first_error = first_error.or(out.first_error);
        sig_len = sig_len.or(out.signature_len);
    }
    // The window actually measured: cut short when --max-requests ran out first.
    // Every worker is done; dropping the plan's ticket queue stops the pacer.
    let measure_from = plan.measure_from;
    drop(plan);
    if let Some(pacer) = pacer {
        let _ = pacer.join();
    }
    let window_end = Instant::now().min(deadline);
    let seconds = window_end
        .saturating_duration_since(measure_from)
        .as_secs_f64();

    let rss = match rss_task {
        Some((stop, task)) => {
            let _ = stop.send(());
            let samples = task.await.unwrap_or_default();
            let w0 = warmup.as_secs_f64();
            let in_window: Vec<u64> = samples
                .iter()
                .filter(|(t, _)| *t >= w0)
                .map(|(_, k)| *k)
                .collect();
            let mut series = Vec::new();
            let mut next = 0.0;
            for &(t, k) in &samples {
                if t >= next {
                    series.push(((t * 10.0).round() / 10.0, k));
                    next += 5.0;
                }
            }
            samples.first().map(|&(_, first)| Rss {
                start: first,
                window_start: in_window.first().copied().unwrap_or(first),
                max: samples.iter().map(|(_, k)| *k).max().unwrap_or(first),
                end: in_window.last().copied().unwrap_or(first),
                series,
            })
        }
        None => None,
    };
    // The CPU task ends at the deadline; if --max-requests ended the run early, skip it.
    let cpu = if Instant::now() + Duration::from_millis(50) >= deadline {
        cpu_task.await.ok().flatten()
    } else {
        cpu_task.abort();
        None
    };
    let loadavg_after = loadavg();

    let cpus = args.openssl_cpus.clone();
    let multi = args
        .openssl_multi
        .or_else(|| cpus.as_deref().and_then(cpu_list_len))
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let alg = match args.openssl_alg {
        OpensslAlg::Rsa2048 => Some("rsa2048"),
        OpensslAlg::Ecdsap256 => Some("ecdsap256"),
        OpensslAlg::None => None,
        OpensslAlg::Auto => sig_len.map(|n| if n >= 200 { "rsa2048" } else { "ecdsap256" }),
    };
    let (speed, speed1) = match alg {
        Some(alg) => {
            let seconds = args.openssl_seconds;
            tokio::task::spawn_blocking(move || {
                let cpus = cpus.as_deref();
                (
                    openssl_speed(alg, seconds, multi, cpus),
                    openssl_speed(alg, seconds, 1, cpus),
                )
            })
            .await
            .unwrap_or((None, None))
        }
        None => (None, None),
    };

    let urls_per_s = if seconds > 0.0 {
        urls as f64 / seconds
    } else {
        0.0
    };
    let lat = if hist.is_empty() {
        Latency::default()
    } else {
        percentiles(&hist)
    };
    let result = RunResult {
        label: args.label.clone(),
        mode: args.mode,
        key_id: args.key_id.clone(),
        algorithm: alg.unwrap_or("unknown").to_owned(),
        batch: args.batch,
        playlist: args.playlist,
        concurrency: args.concurrency,
        connections: args.connections,
        client_threads: args.client_threads,
        rate: args.rate,
        seconds,
        requests,
        urls,
        failed_items,
        rpc_errors,
        urls_per_s,
        requests_per_s: if seconds > 0.0 {
            requests as f64 / seconds
        } else {
            0.0
        },
        latency_us: lat.clone(),
        send_lag_us: (!lag_hist.is_empty()).then(|| percentiles(&lag_hist)),
        openssl_speed_sign_per_s: speed,
        openssl_multi: multi,
        openssl_cpus: args.openssl_cpus.clone(),
        ratio_to_openssl: speed
            .filter(|s| *s > 0.0 && !args.playlist)
            .map(|s| urls_per_s / s),
        openssl_speed_1core_sign_per_s: speed1,
        cpu_efficiency: match (speed1, &cpu) {
            (Some(s1), Some(c)) if s1 > 0.0 && c.server_cores > 0.0 && !args.playlist => {
                Some(urls_per_s / c.server_cores / s1)
            }
            _ => None,
        },
        rss_kib: rss.clone(),
        cpu: cpu.clone(),
        loadavg_before,
        loadavg_after,
    };

    println!(
        "{} {} key={} alg={} batch={}{} concurrency={} connections={}{}",
        if result.label.is_empty() {
            "run"
        } else {
            &result.label
        },
        match args.mode {
            Mode::Unary => "unary",
            Mode::Stream => "stream",
        },
        if args.key_id.is_empty() {
            "(default)"
        } else {
            &args.key_id
        },
        result.algorithm,
        args.batch,
        if args.playlist { " playlist" } else { "" },
        args.concurrency,
        args.connections,
        args.rate
            .map(|r| format!(" rate={r}/s"))
            .unwrap_or_default(),
    );
    println!(
        "  {:.1} s measured: {} requests, {} URLs, {} failed items, {} RPC errors",
        seconds, requests, urls, failed_items, rpc_errors
    );
    println!(
        "  throughput: {:.0} URLs/s ({:.1} requests/s)",
        urls_per_s, result.requests_per_s
    );
    println!(
        "  latency: p50 {}  p90 {}  p99 {}  max {}",
        ms(lat.p50),
        ms(lat.p90),
        ms(lat.p99),
        ms(lat.max)
    );
    if let Some(l) = &result.send_lag_us {
        println!(
            "  load generator's own lateness (counted in the latency above): p50 {}  p99 {}  max {}",
            ms(l.p50),
            ms(l.p99),
            ms(l.max)
        );
    }
    let on = result
        .openssl_cpus
        .as_deref()
        .map(|c| format!(" on CPUs {c}"))
        .unwrap_or_default();
    match (speed, result.ratio_to_openssl) {
        (Some(s), Some(r)) => println!(
            "  openssl speed -multi {multi} {}{on}: {s:.0} sign/s; URLs/s / openssl = {r:.3}",
            result.algorithm
        ),
        (Some(s), None) => println!(
            "  openssl speed -multi {multi} {}{on}: {s:.0} sign/s (playlist: one signature per batch, no ratio)",
            result.algorithm
        ),
        _ => println!("  openssl speed: not measured"),
    }
    if let Some(r) = &rss {
        println!(
            "  server RSS: {:.1} MiB before, {:.1} MiB at window start, {:.1} MiB max, {:.1} MiB at end (growth {:+.1} MiB)",
            r.start as f64 / 1024.0,
            r.window_start as f64 / 1024.0,
            r.max as f64 / 1024.0,
            r.end as f64 / 1024.0,
            (r.end as f64 - r.window_start as f64) / 1024.0
        );
    }
    if let Some(c) = &cpu {
        println!(
            "  CPU during the window: server {:.2} cores, load generator {:.2} cores (of {multi})",
            c.server_cores, c.client_cores
        );
    }
    if let (Some(s1), Some(e)) = (speed1, result.cpu_efficiency) {
        println!(
            "  openssl speed {} (1 process): {s1:.0} sign/s; URLs per server CPU-second / that = {e:.3}",
            result.algorithm
        );
    }
    println!(
        "  load average before {} / after {}",
        result.loadavg_before, result.loadavg_after
    );
    if let Some(e) = &first_error {
        println!("  first error: {e}");
    }

    if let Some(path) = &args.json_out {
        let line = serde_json::to_string(&result).map_err(|e| format!("json: {e}"))?;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        writeln!(f, "{line}").map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(if urls == 0 || rpc_errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::cpu_list_len;

    #[test]
    fn cpu_lists_are_counted_as_taskset_reads_them() {
        assert_eq!(cpu_list_len("0"), Some(1));
        assert_eq!(cpu_list_len("0-1"), Some(2));
        assert_eq!(cpu_list_len("0-1,4"), Some(3));
        assert_eq!(cpu_list_len(" 2 - 3 , 6 "), Some(3));
        assert_eq!(cpu_list_len("3-1"), None);
        assert_eq!(cpu_list_len("a"), None);
        assert_eq!(cpu_list_len(""), None);
    }
}
