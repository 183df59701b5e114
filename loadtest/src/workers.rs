//! The load itself: one task per `--concurrency` worker sending `SignUrls` (unary or on a
//! stream), flat out or paced by `--rate`, each recording latency and counts of what
//! completed inside the measured window.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cdnsign::proto::signer_client::SignerClient;
use cdnsign::proto::{SignItem, SignUrlsRequest, SignUrlsResponse, sign_url_result};
use hdrhistogram::Histogram;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use crate::{Mode, RunArgs};

/// Per-RPC deadline.
const RPC_TIMEOUT: Duration = Duration::from_secs(30);
const HOST: &str = "https://d111111abcdef8.cloudfront.net";

/// Opens `--connections` HTTP/2 connections to `--addr`.
pub(crate) async fn connect(args: &RunArgs) -> Result<Vec<SignerClient<Channel>>, String> {
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
    Ok(clients)
}

/// What one worker, or all of them together, measured.
pub(crate) struct Totals {
    /// Latency of the requests that completed in the window, microseconds.
    pub(crate) hist: Histogram<u64>,
    /// Paced runs: how late the generator itself sent them.
    pub(crate) lag: Histogram<u64>,
    pub(crate) requests: u64,
    pub(crate) urls: u64,
    pub(crate) failed_items: u64,
    pub(crate) rpc_errors: u64,
    pub(crate) first_error: Option<String>,
    /// Bytes of a signature seen (tells RSA-2048 from ECDSA for `--openssl-alg auto`).
    pub(crate) signature_len: Option<usize>,
}

impl Totals {
    fn new() -> Totals {
        Totals {
            hist: histogram(),
            lag: histogram(),
            requests: 0,
            urls: 0,
            failed_items: 0,
            rpc_errors: 0,
            first_error: None,
            signature_len: None,
        }
    }

    /// Adds what another worker measured.
    fn add(&mut self, out: Totals) -> Result<(), String> {
        self.hist
            .add(&out.hist)
            .map_err(|e| format!("histogram: {e}"))?;
        self.lag
            .add(&out.lag)
            .map_err(|e| format!("histogram: {e}"))?;
        self.requests += out.requests;
        self.urls += out.urls;
        self.failed_items += out.failed_items;
        self.rpc_errors += out.rpc_errors;
        self.first_error = self.first_error.take().or(out.first_error);
        self.signature_len = self.signature_len.or(out.signature_len);
        Ok(())
    }
}

/// Runs `--concurrency` workers over `clients` (round robin) until `plan` ends, and adds
/// up what they measured.
pub(crate) async fn run_workers(
    clients: &[SignerClient<Channel>],
    args: &Arc<RunArgs>,
    plan: &Arc<Plan>,
) -> Result<Totals, String> {
    let handles: Vec<_> = (0..args.concurrency)
        .map(|id| {
            let client = clients[id % clients.len()].clone();
            tokio::spawn(worker(client, Arc::clone(args), Arc::clone(plan), id))
        })
        .collect();
    let mut t = Totals::new();
    for h in handles {
        t.add(h.await.map_err(|e| format!("worker failed: {e}"))?)?;
    }
    Ok(t)
}

/// 1 us to 120 s at 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds")
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

/// What every worker shares: the window, the request budget and (paced runs) the tickets.
pub(crate) struct Plan {
    pub(crate) measure_from: Instant,
    pub(crate) deadline: Instant,
    pub(crate) max_requests: u64,
    pub(crate) sent: AtomicU64,
    /// Paced runs: scheduled starts handed out by the pacer thread, first come first served.
    pub(crate) tickets: Option<tokio::sync::Mutex<mpsc::UnboundedReceiver<Instant>>>,
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
pub(crate) fn spawn_pacer(
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
fn lag(out: &mut Totals, plan: &Plan, scheduled: Instant) {
    let now = Instant::now();
    if plan.tickets.is_some() && scheduled >= plan.measure_from {
        let us = u64::try_from((now - scheduled).as_micros()).unwrap_or(u64::MAX);
        let _ = out.lag.record(us.max(1));
    }
}

fn record(
    out: &mut Totals,
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
) -> Totals {
    let mut out = Totals::new();
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
