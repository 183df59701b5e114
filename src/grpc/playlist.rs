//! `Signer/SignPlaylist`: protobuf in, [`crate::playlist`] on the signing pool, protobuf
//! out. The same limits, grants, rate limit, queue admission and metrics as `SignUrls`,
//! counted in URIs.

use std::time::Instant;

use tonic::Status;

use super::cookies::{check_attributes, cookie_set};
use super::sign::{BatchFields, Output, SignerService, count_errors, count_outcomes};
use super::status::{ApiError, uri_error};
use crate::auth::Caller;
use crate::playlist::{self, Format, Mode, Outcome, Parsed, Plan, PlaylistError, SharedOptions};
use crate::proto;
use crate::signing::keys::KeySet;
use crate::signing::pool::{OnPool, Site};
use crate::signing::sign_batch;
use crate::signing::validate::BatchContext;

fn mode_of(value: i32) -> Result<Mode, ApiError> {
    match proto::PlaylistMode::try_from(value) {
        Ok(proto::PlaylistMode::PerUri) => Ok(Mode::PerUri),
        Ok(proto::PlaylistMode::SharedPolicy) => Ok(Mode::SharedPolicy),
        Ok(proto::PlaylistMode::Cookies) => Ok(Mode::Cookies),
        Err(_) => Err(ApiError::InvalidField {
            field: "mode",
            reason: format!("{value} is not PER_URI, SHARED_POLICY or COOKIES"),
        }),
    }
}

fn format_of(format: Format) -> proto::sign_playlist_response::Format {
    use proto::sign_playlist_response::Format as F;
    match format {
        Format::HlsMaster => F::HlsMaster,
        Format::HlsMedia => F::HlsMedia,
        Format::Dash => F::Dash,
    }
}

/// What the pool job needs besides the parsed playlist.
struct Job {
    text: String,
    parsed: Parsed,
    mode: Mode,
    policy_resource: String,
    not_before: i64,
    ip_range: String,
    ctx: BatchContext,
}

/// Plans, signs (counting outcomes as `SignUrls` does) and rewrites, on a pool thread.
fn sign_on_pool(
    job: &Job,
    keys: &KeySet,
    metrics: &crate::metrics::SignMetrics,
    on_pool: &OnPool,
) -> Result<(Outcome, u64), PlaylistError> {
    let opts = SharedOptions {
        mode: job.mode,
        policy_resource: &job.policy_resource,
        not_before: job.not_before,
        ip_range: &job.ip_range,
    };
    let plan = Plan::new(&job.parsed, &opts, job.ctx.grant.as_deref())?;
    let specs = plan.specs();
    let (results, stats) = sign_batch(&specs, &job.ctx, keys, Site::Pool(on_pool));
    drop(specs);
    // What the caller gets: signed URLs (one per URI item; the shared policy's own item is
    // not one), or one cookie set (the policy item; the URIs are only checked against it).
    let split = results.len() - usize::from(plan.has_policy_item() && !results.is_empty());
    let (uris, policy) = results.split_at(split);
    let denied = if job.mode == Mode::Cookies {
        count_errors(uris, metrics) + count_outcomes(policy, metrics, Output::Cookie)
    } else {
        count_outcomes(uris, metrics, Output::Url) + count_errors(policy, metrics)
    };
    plan.finish(&job.text, results, stats).map(|o| (o, denied))
}

impl SignerService {
    /// Signs one playlist for `caller`.
    pub(super) async fn sign_playlist_call(
        &self,
        caller: &Caller,
        mut req: proto::SignPlaylistRequest,
    ) -> Result<proto::SignPlaylistResponse, Status> {
        let call = self.call_config();
        let mode = mode_of(req.mode)?;
        let attrs = req.attributes.take().unwrap_or_default();
        check_attributes(&attrs)?;
        let max_bytes = call.limits.max_playlist_bytes;
        if req.playlist.len() > max_bytes {
            return Err(PlaylistError::TooLarge {
                bytes: req.playlist.len(),
                max: max_bytes,
            }
            .into());
        }
        // Reading an 8 MiB playlist is CPU work: on the pool, not on this worker.
        let text = std::mem::take(&mut req.playlist);
        let base_url = std::mem::take(&mut req.base_url);
        let max_urls = call.limits.max_batch;
        let ((text, parsed), _) = self
            .pool
            .run(move |_| {
                let parsed = playlist::parse_bounded(&text, &base_url, max_bytes, max_urls);
                (text, parsed)
            })
            .await
            .map_err(ApiError::from)?;
        let parsed = parsed?;
        parsed.check_mode(mode)?;
        let uris = parsed.uri_count();
        if uris > call.limits.max_batch {
            return Err(PlaylistError::TooManyUris {
                count: uris,
                max: call.limits.max_batch,
            }
            .into());
        }
        let ctx = self.context(
            &call,
            &BatchFields {
                caller,
                key_id: &req.key_id,
                expires_at: req.expires_at,
                ttl_seconds: req.ttl_seconds,
                custom_policy: false,
            },
            uris,
        );
        // Key, expiry, start and IP range: one cheap check (no signature) before any charge.
        let opts = SharedOptions {
            mode,
            policy_resource: &req.policy_resource,
            not_before: req.not_before,
            ip_range: &req.ip_range,
        };
        playlist::check_request(&parsed, &opts, &ctx, &call.keys)?;
        self.charge_rate(caller, uris.max(1))?;
        self.metrics.batch_urls.record(uris as f64);
        let admission = self.admit(false, uris.max(1), &call.limits)?;
        let job = Job {
            text,
            parsed,
            mode,
            policy_resource: req.policy_resource,
            not_before: req.not_before,
            ip_range: req.ip_range,
            ctx,
        };
        let keys = call.keys;
        let metrics = self.metrics.clone();
        let (result, timing) = self
            .pool
            .run(move |on_pool| {
                let started = Instant::now();
                let result = sign_on_pool(&job, &keys, &metrics, on_pool);
                drop(job);
                if let Some(a) = admission {
                    a.ran(started.elapsed());
                }
                result
            })
            .await
            .map_err(ApiError::from)?;
        self.record_timing(false, timing);
        let (outcome, denied) = result?;
        SignerService::audit_denied(caller, uris, denied);
        Ok(proto::SignPlaylistResponse {
            errors: outcome.errors.iter().map(uri_error).collect(),
            cookies: outcome.cookies.as_ref().map(|c| cookie_set(c, &attrs)),
            signatures: u32::try_from(outcome.stats.signatures).unwrap_or(u32::MAX),
            format: format_of(outcome.format).into(),
            uris: u32::try_from(outcome.uris).unwrap_or(u32::MAX),
            rewritten: u32::try_from(outcome.rewritten).unwrap_or(u32::MAX),
            expires_at: outcome.expires,
            key_id: outcome.key_id,
            policy_resource: outcome.resource.unwrap_or_default(),
            playlist: outcome.playlist,
        })
    }
}
