//! `cdnsign-loadtest`: drives a running cdnsign over gRPC.
//!
//! `run` sends batches of distinct URLs (or a playlist under one wildcard policy) from
//! `--concurrency` workers over `--connections` HTTP/2 connections, unary or streaming,
//! closed-loop or paced at `--rate` requests/s (a pacer thread hands out scheduled starts
//! to free workers; latency then counts from each request's scheduled start, so a stalled
//! server cannot hide its queueing, and the generator's own lateness is reported beside
//! it). It reports URLs/s and
//! latency p50/p90/p99/max from an HDR histogram, samples the server's RSS from
//! `/proc/<pid>/status` during the run, and then measures `openssl speed -multi N` for the
//! same algorithm (detected from the signatures the server returned) so the result is a
//! ratio that carries across machines. Every run is bounded in time (`--duration`, at most
//! 600 s) and in requests (`--max-requests`).
//!
//! `report` turns the JSON lines written by `run --json-out` into a text table and an SVG
//! plot of throughput and latency against batch size. `scripts/loadtest.sh` does it all.

mod host;
mod report;
mod run;
mod workers;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "cdnsign-loadtest",
    version,
    about = "Load generator for cdnsign"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Drive a running server and print (and optionally append as JSON) one result.
    Run(RunArgs),
    /// Summarise JSON result lines as a text table and an SVG plot.
    Report(ReportArgs),
}

/// Unary `SignUrls` or one `SignUrlsStream` per worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum Mode {
    Unary,
    Stream,
}

/// Which `openssl speed` algorithm to compare with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OpensslAlg {
    /// From the signature length in the first response (256 bytes: RSA-2048, else ECDSA).
    Auto,
    Rsa2048,
    Ecdsap256,
    /// Do not run `openssl speed`.
    None,
}

#[derive(Debug, Clone, Args)]
struct RunArgs {
    /// Server address.
    #[arg(long, default_value = "http://127.0.0.1:50151")]
    addr: String,
    /// Requests in flight (workers).
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// HTTP/2 connections the workers share.
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// URLs per request.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Measured seconds (after the warm-up); at most 600.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Unmeasured seconds before measuring.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Stop after this many requests in total, whatever the time.
    #[arg(long, default_value_t = 1_000_000)]
    max_requests: u64,
    /// Unary or streaming.
    #[arg(long, value_enum, default_value = "unary")]
    mode: Mode,
    /// Key id sent with every request (empty: the server's default key).
    #[arg(long, default_value = "")]
    key_id: String,
    /// Every URL of a batch under one wildcard custom policy (one signature per batch).
    #[arg(long)]
    playlist: bool,
    /// Pace requests at this many per second in total instead of closed-loop.
    #[arg(long)]
    rate: Option<f64>,
    /// Threads of the load generator's own runtime (0 = one per core). One thread is the
    /// lightest probe when client and server share the cores: fewer cross-thread wake-ups.
    #[arg(long, default_value_t = 0)]
    client_threads: usize,
    /// Server process to sample RSS from (/proc/PID/status).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Algorithm for `openssl speed`.
    #[arg(long, value_enum, default_value = "auto")]
    openssl_alg: OpensslAlg,
    /// Seconds per `openssl speed` run.
    #[arg(long, default_value_t = 2)]
    openssl_seconds: u32,
    /// `openssl speed -multi` processes (default: the CPUs of --openssl-cpus, else the
    /// cores this process may use).
    #[arg(long)]
    openssl_multi: Option<usize>,
    /// Run `openssl speed` on these CPUs only (`taskset -c` list, e.g. `0-1`): the server's
    /// CPUs, when the server and this generator are pinned apart.
    #[arg(long)]
    openssl_cpus: Option<String>,
    /// Append the result as one JSON line to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// Free-form label stored with the result.
    #[arg(long, default_value = "")]
    label: String,
}

#[derive(Debug, Clone, Args)]
struct ReportArgs {
    /// JSON lines written by `run --json-out`.
    #[arg(long)]
    input: PathBuf,
    /// SVG plot to write.
    #[arg(long)]
    svg: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run::main(args),
        Command::Report(args) => report::main(&args),
    }
}
