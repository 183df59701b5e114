//! `cdnsign.v1.Purger`: a thin adapter from protobuf to [`crate::purge::Purger`].
//!
//! The caller's grant (`[[clients]] purge_targets`, `purge_paths_per_minute`) is enforced
//! here: a client may purge, see and watch only its targets' purges. Every accepted or
//! refused purge is an audit event.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::access::RateError;
use crate::auth::{AUDIT_TARGET, Caller};
use crate::grpc::layers::{credentials_of, reauthenticate};
use crate::grpc::sign::caller_of;
use crate::grpc::status::ApiError;
use crate::live::LiveConfig;
use crate::metrics::RATE_LIMITED;
use crate::proto;
use crate::proto::purger_server::Purger as PurgerApi;
use crate::purge::model::{JobRecord, JobState, PurgeKind, PurgeRecord};
use crate::purge::{PurgeError, PurgeInput, Purger};

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct PurgerService {
    purger: Arc<Purger>,
    /// The clients in force now, for a `WatchPurge` that outlives a reload.
    live: Arc<LiveConfig>,
}

impl PurgerService {
    /// Wraps the domain service.
    pub fn new(purger: Arc<Purger>, live: Arc<LiveConfig>) -> PurgerService {
        PurgerService { purger, live }
    }
}

/// Refuses a target outside the caller's `purge_targets`.
fn check_target(caller: &Caller, target: &str) -> Result<(), Status> {
    match caller.grant() {
        Some(g) if !g.allows_purge_target(target) => {
            tracing::warn!(
                target: AUDIT_TARGET,
                event = "purge_denied",
                client = %g.name,
                purge_target = %target,
                "purge target outside the client's purge_targets"
            );
            Err(Status::permission_denied(format!(
                "client {:?} may not purge target {target:?} (not in its purge_targets)",
                g.name
            )))
        }
        _ => Ok(()),
    }
}

/// The caller's deadline from `grpc-timeout`, if it sent a valid one. The gRPC spec allows
/// at most 8 ASCII digits and one unit letter; anything else is ignored, as the spec says,
/// and no value can overflow the clock.
fn caller_deadline(meta: &tonic::metadata::MetadataMap) -> Option<Instant> {
    Instant::now().checked_add(parse_grpc_timeout(meta.get("grpc-timeout")?.as_bytes())?)
}

fn parse_grpc_timeout(v: &[u8]) -> Option<Duration> {
    let (unit, digits) = v.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// `now + d`, or a day from now when that would overflow (a config value, not a caller's).
fn after(d: Duration) -> Instant {
    Instant::now()
        .checked_add(d)
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400))
}

fn kind_to_proto(k: PurgeKind) -> proto::PurgeKind {
    match k {
        PurgeKind::File => proto::PurgeKind::File,
        PurgeKind::Directory => proto::PurgeKind::Directory,
        PurgeKind::CacheTag => proto::PurgeKind::CacheTag,
        PurgeKind::Prewarm => proto::PurgeKind::Prewarm,
    }
}

fn job_to_proto(j: &JobRecord) -> proto::PurgeJob {
    proto::PurgeJob {
        provider: j.provider.as_str().to_owned(),
        provider_job_id: j.provider_job_id.clone(),
        status: match j.state {
            JobState::Waiting => proto::JobStatus::Waiting,
            JobState::Sending => proto::JobStatus::Sending,
            JobState::InProgress => proto::JobStatus::InProgress,
            JobState::Completed => proto::JobStatus::Completed,
            JobState::Failed => proto::JobStatus::Failed,
        }
        .into(),
        paths: j.paths.len() as u32,
        status_text: j.status_text.clone(),
        detail: j.detail.clone(),
        resource: j.resource.clone(),
        caller_reference: j.caller_reference.clone(),
        paths_billed: j.paths_billed(),
        wildcard_paths: j.wildcards,
    }
}

fn overall(r: &PurgeRecord) -> proto::PurgeStatus {
    if !r.is_finished() {
        proto::PurgeStatus::PurgeInProgress
    } else if r.jobs.iter().any(|j| j.state == JobState::Failed) {
        proto::PurgeStatus::PurgeFailed
    } else {
        proto::PurgeStatus::PurgeCompleted
    }
}

/// Fills the fields the purge-shaped responses share.
macro_rules! purge_shape {
    ($ty:ident, $r:expr, { $($extra:tt)* }) => {{
        let r: &PurgeRecord = $r;
        proto::$ty {
            purge_id: r.id.clone(),
            target: r.target.clone(),
            kind: kind_to_proto(r.kind).into(),
            jobs: r.jobs.iter().map(job_to_proto).collect(),
            rejected: r
                .rejected
                .iter()
                .map(|x| proto::RejectedPath {
                    path: x.path.clone(),
                    reason: x.reason.clone(),
                })
                .collect(),
            status: overall(r).into(),
            paths_billed: r.jobs.iter().map(|j| u64::from(j.paths_billed())).sum(),
            created_at_ms: r.created_at_ms,
            idempotency_key: r.idempotency_key.clone(),
            quota: r
                .quota
                .iter()
                .map(|q| proto::ProviderQuota {
                    provider: q.provider.as_str().to_owned(),
                    resource: q.resource.clone(),
                    url_remain: q.url_remain,
                    dir_remain: q.dir_remain,
                    preload_remain: q.preload_remain,
                })
                .collect(),
            $($extra)*
        }
    }};
}

fn get_response(r: &PurgeRecord) -> proto::GetPurgeResponse {
    purge_shape!(GetPurgeResponse, r, {})
}

fn watch_response(r: &PurgeRecord) -> proto::WatchPurgeResponse {
    purge_shape!(WatchPurgeResponse, r, {})
}

/// The watch's method, as the audit log names it.
const WATCH_METHOD: &str = "/cdnsign.v1.Purger/WatchPurge";

type WatchStream = Pin<Box<dyn Stream<Item = Result<proto::WatchPurgeResponse, Status>> + Send>>;

#[tonic::async_trait]
impl PurgerApi for PurgerService {
    async fn purge(
        &self,
        request: Request<proto::PurgeRequest>,
    ) -> Result<Response<proto::PurgeResponse>, Status> {
        // Leave a little of the caller's deadline for storing and answering.
        let deadline = caller_deadline(request.metadata())
            .map(|d| d.checked_sub(Duration::from_millis(250)).unwrap_or(d))
            .unwrap_or_else(|| {
                after(Duration::from_secs(
                    self.purger.config().background_deadline_seconds,
                ))
            });
        let caller = caller_of(&request)?;
        let req = request.into_inner();
        check_target(&caller, &req.target)?;
        if let Some(g) = caller.grant()
            && let Some(per_minute) = g.purge_paths_per_minute
        {
            // The bucket lives in the store, so the rate holds across replicas.
            let n = req.paths.len() as u64;
            if let Err(retry_after) = self.purger.take_paths(&g.name, n, per_minute).await? {
                metrics::counter!(RATE_LIMITED, "client" => g.name.clone(), "kind" => "purge_paths")
                    .increment(1);
                tracing::warn!(
                    target: AUDIT_TARGET,
                    event = "rate_limited",
                    client = %g.name,
                    paths = req.paths.len(),
                    "purge refused by the client's rate limit"
                );
                let source = if retry_after.is_finite() {
                    RateError::Exceeded {
                        rate: f64::from(per_minute) / 60.0,
                        retry_after,
                    }
                } else {
                    RateError::TooLarge {
                        asked: n,
                        burst: f64::from(per_minute),
                    }
                };
                return Err(ApiError::RateLimited {
                    client: g.name.clone(),
                    limit: "purge_paths_per_minute",
                    source,
                }
                .into());
            }
        }
        let (target, paths) = (req.target.clone(), req.paths.len());
        let kind = match proto::PurgeKind::try_from(req.kind) {
            Ok(proto::PurgeKind::Unspecified | proto::PurgeKind::File) => PurgeKind::File,
            Ok(proto::PurgeKind::Directory) => PurgeKind::Directory,
            Ok(proto::PurgeKind::CacheTag) => PurgeKind::CacheTag,
            Ok(proto::PurgeKind::Prewarm) => PurgeKind::Prewarm,
            Err(_) => {
                return Err(PurgeError::Invalid {
                    field: "kind",
                    reason: format!("unknown kind {}", req.kind),
                }
                .into());
            }
        };
        let view = self
            .purger
            .purge(
                PurgeInput {
                    target: req.target,
                    paths: req.paths,
                    kind,
                    idempotency_key: req.idempotency_key,
                    client: caller.grant().map(|g| g.name.clone()).unwrap_or_default(),
                    max_wait_ms: i64::from(req.max_wait_seconds) * 1000,
                },
                deadline,
            )
            .await
            .inspect_err(|e| {
                tracing::warn!(
                    target: AUDIT_TARGET,
                    event = "purge",
                    outcome = "refused",
                    client = caller.name(),
                    purge_target = %target,
                    paths,
                    reason = e.label(),
                    error = %e,
                    "purge refused"
                );
            })?;
        tracing::info!(
            target: AUDIT_TARGET,
            event = "purge",
            outcome = if view.deduplicated { "deduplicated" } else { "accepted" },
            client = caller.name(),
            purge_target = %target,
            paths,
            purge_id = %view.record.id,
            jobs = view.record.jobs.len(),
            rejected = view.record.rejected.len(),
            "purge accepted"
        );
        Ok(Response::new(purge_shape!(PurgeResponse, &view.record, {
            deduplicated: view.deduplicated,
        })))
    }

    async fn get_purge(
        &self,
        request: Request<proto::GetPurgeRequest>,
    ) -> Result<Response<proto::GetPurgeResponse>, Status> {
        let caller = caller_of(&request)?;
        // Poll the provider now if the scheduler is free within a second (or the deadline).
        let deadline = caller_deadline(request.metadata())
            .map(|d| d.checked_sub(Duration::from_millis(100)).unwrap_or(d))
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1))
            .min(Instant::now() + Duration::from_secs(1));
        let id = request.into_inner().purge_id;
        check_target(&caller, &self.purger.get(&id).await?.record.target)?;
        let view = self.purger.get_fresh(&id, deadline).await?;
        Ok(Response::new(get_response(&view.record)))
    }

    async fn list_purges(
        &self,
        request: Request<proto::ListPurgesRequest>,
    ) -> Result<Response<proto::ListPurgesResponse>, Status> {
        let caller = caller_of(&request)?;
        let req = request.into_inner();
        if !req.target.is_empty() {
            check_target(&caller, &req.target)?;
        }
        let size = if req.page_size == 0 {
            50
        } else {
            req.page_size as usize
        };
        let target = (!req.target.is_empty()).then_some(req.target.as_str());
        let (recs, next) = self.purger.list(target, size, &req.page_token).await?;
        // A client sees only its targets' purges (pages may come back shorter).
        let visible = |r: &&PurgeRecord| {
            caller
                .grant()
                .is_none_or(|g| g.allows_purge_target(&r.target))
        };
        Ok(Response::new(proto::ListPurgesResponse {
            purges: recs.iter().filter(visible).map(get_response).collect(),
            next_page_token: next,
        }))
    }

    type WatchPurgeStream = WatchStream;

    async fn watch_purge(
        &self,
        request: Request<proto::WatchPurgeRequest>,
    ) -> Result<Response<Self::WatchPurgeStream>, Status> {
        let deadline = caller_deadline(request.metadata());
        let caller = caller_of(&request)?;
        let credentials = credentials_of(&request)?;
        let id = request.into_inner().purge_id;
        let purger = Arc::clone(&self.purger);
        let live = Arc::clone(&self.live);
        let first = purger.get(&id).await?.record;
        check_target(&caller, &first.target)?;
        let mut changes = purger.subscribe();
        let interval = Duration::from_millis(purger.config().watch_interval_ms);
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tokio::spawn(async move {
            let mut last = first;
            if tx.send(Ok(watch_response(&last))).await.is_err() || last.is_finished() {
                return;
            }
            loop {
                let wait = async {
                    loop {
                        match changes.recv().await {
                            Ok(changed) if changed == id => return,
                            Ok(_) => {}
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                                std::future::pending::<()>().await;
                            }
                        }
                    }
                };
                let stop = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = wait => {}
                    () = tokio::time::sleep(interval) => {}
                    () = stop => return,
                    () = tx.closed() => return,
                }
                // Each update is shown to whoever the credentials are now: a reload that
                // revoked the token, or took the target out of the grant, ends the watch.
                let allowed = reauthenticate(&live, &credentials, WATCH_METHOD)
                    .and_then(|caller| check_target(&caller, &last.target));
                if let Err(status) = allowed {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
                let now = match purger.get(&id).await {
                    Ok(v) => v.record,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                };
                if now != last {
                    if tx.send(Ok(watch_response(&now))).await.is_err() {
                        return;
                    }
                    last = now;
                }
                if last.is_finished() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_out_of_spec_are_ignored() {
        assert_eq!(parse_grpc_timeout(b"5S"), Some(Duration::from_secs(5)));
        assert_eq!(
            parse_grpc_timeout(b"99999999H"),
            Some(Duration::from_secs(99_999_999 * 3600))
        );
        assert_eq!(
            parse_grpc_timeout(b"100m"),
            Some(Duration::from_millis(100))
        );
        for bad in [
            &b"18446744073709551615S"[..],
            b"123456789S",
            b"S",
            b"",
            b"-1S",
            b"+1S",
            b"1s",
            b"1 S",
            b"\xff\xffS",
        ] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
        // The largest valid value does not overflow the clock either.
        let mut meta = tonic::metadata::MetadataMap::new();
        meta.insert("grpc-timeout", "99999999H".parse().expect("ascii"));
        let _ = caller_deadline(&meta);
    }
}
