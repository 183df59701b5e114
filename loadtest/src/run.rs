//! `run`: one measured run (the workers in `workers`, the machine's figures from `host`)
//! and its result, printed and appended as a JSON line.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::host::{CpuSplit, Rss, cpu_list_len, cpu_window, loadavg, openssl_speed, sample_rss};
use crate::workers::{Plan, connect, run_workers, spawn_pacer};
use crate::{Mode, OpensslAlg, RunArgs};

/// Longest measured run accepted, seconds.
const MAX_DURATION: f64 = 600.0;

/// Latency percentiles, microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Latency {
    pub(crate) p50: u64,
    pub(crate) p90: u64,
    pub(crate) p99: u64,
    pub(crate) max: u64,
    pub(crate) mean: f64,
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

impl RunResult {
    /// The run, for a person reading the terminal.
    fn print(&self, first_error: Option<&str>) {
        let multi = self.openssl_multi;
        println!(
            "{} {} key={} alg={} batch={}{} concurrency={} connections={}{}",
            if self.label.is_empty() {
                "run"
            } else {
                &self.label
            },
            match self.mode {
                Mode::Unary => "unary",
                Mode::Stream => "stream",
            },
            if self.key_id.is_empty() {
                "(default)"
            } else {
                &self.key_id
            },
            self.algorithm,
            self.batch,
            if self.playlist { " playlist" } else { "" },
            self.concurrency,
            self.connections,
            self.rate
                .map(|r| format!(" rate={r}/s"))
                .unwrap_or_default(),
        );
        println!(
            "  {:.1} s measured: {} requests, {} URLs, {} failed items, {} RPC errors",
            self.seconds, self.requests, self.urls, self.failed_items, self.rpc_errors
        );
        println!(
            "  throughput: {:.0} URLs/s ({:.1} requests/s)",
            self.urls_per_s, self.requests_per_s
        );
        println!(
            "  latency: p50 {}  p90 {}  p99 {}  max {}",
            ms(self.latency_us.p50),
            ms(self.latency_us.p90),
            ms(self.latency_us.p99),
            ms(self.latency_us.max)
        );
        if let Some(l) = &self.send_lag_us {
            println!(
                "  load generator's own lateness (counted in the latency above): p50 {}  p99 {}  max {}",
                ms(l.p50),
                ms(l.p99),
                ms(l.max)
            );
        }
        let on = self
            .openssl_cpus
            .as_deref()
            .map(|c| format!(" on CPUs {c}"))
            .unwrap_or_default();
        match (self.openssl_speed_sign_per_s, self.ratio_to_openssl) {
            (Some(s), Some(r)) => println!(
                "  openssl speed -multi {multi} {}{on}: {s:.0} sign/s; URLs/s / openssl = {r:.3}",
                self.algorithm
            ),
            (Some(s), None) => println!(
                "  openssl speed -multi {multi} {}{on}: {s:.0} sign/s (playlist: one signature per batch, no ratio)",
                self.algorithm
            ),
            _ => println!("  openssl speed: not measured"),
        }
        if let Some(r) = &self.rss_kib {
            println!(
                "  server RSS: {:.1} MiB before, {:.1} MiB at window start, {:.1} MiB max, {:.1} MiB at end (growth {:+.1} MiB)",
                r.start as f64 / 1024.0,
                r.window_start as f64 / 1024.0,
                r.max as f64 / 1024.0,
                r.end as f64 / 1024.0,
                (r.end as f64 - r.window_start as f64) / 1024.0
            );
        }
        if let Some(c) = &self.cpu {
            println!(
                "  CPU during the window: server {:.2} cores, load generator {:.2} cores (of {multi})",
                c.server_cores, c.client_cores
            );
        }
        if let (Some(s1), Some(e)) = (self.openssl_speed_1core_sign_per_s, self.cpu_efficiency) {
            println!(
                "  openssl speed {} (1 process): {s1:.0} sign/s; URLs per server CPU-second / that = {e:.3}",
                self.algorithm
            );
        }
        println!(
            "  load average before {} / after {}",
            self.loadavg_before, self.loadavg_after
        );
        if let Some(e) = first_error {
            println!("  first error: {e}");
        }
    }
}

async fn drive(args: RunArgs) -> Result<ExitCode, String> {
    let loadavg_before = loadavg();
    let clients = connect(&args).await?;

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
    let cpu_task = cpu_window(args.server_pid, plan.measure_from, plan.deadline);

    let args = Arc::new(args);
    let totals = run_workers(&clients, &args, &plan).await?;
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
            Rss::from_samples(&samples, warmup.as_secs_f64())
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
        OpensslAlg::Auto => totals
            .signature_len
            .map(|n| if n >= 200 { "rsa2048" } else { "ecdsap256" }),
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

    let per_s = |n: u64| {
        if seconds > 0.0 {
            n as f64 / seconds
        } else {
            0.0
        }
    };
    let urls_per_s = per_s(totals.urls);
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
        requests: totals.requests,
        urls: totals.urls,
        failed_items: totals.failed_items,
        rpc_errors: totals.rpc_errors,
        urls_per_s,
        requests_per_s: per_s(totals.requests),
        latency_us: if totals.hist.is_empty() {
            Latency::default()
        } else {
            percentiles(&totals.hist)
        },
        send_lag_us: (!totals.lag.is_empty()).then(|| percentiles(&totals.lag)),
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
        rss_kib: rss,
        cpu,
        loadavg_before,
        loadavg_after,
    };
    result.print(totals.first_error.as_deref());

    if let Some(path) = &args.json_out {
        let line = serde_json::to_string(&result).map_err(|e| format!("json: {e}"))?;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        writeln!(f, "{line}").map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(if result.urls == 0 || result.rpc_errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
