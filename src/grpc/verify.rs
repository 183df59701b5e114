//! `Signer/VerifyUrls` and `Signer/VerifyCookies`: [`crate::signing::verify`] over gRPC,
//! with the public halves of the keys in force ([`PublicKeys`]). Any authenticated caller
//! may verify (no signing grant is needed); the auth layer has already refused callers
//! without an identity. Runs on the signing pool, admitted like a signing batch.

use std::net::IpAddr;

use tonic::Status;

use super::sign::{SignerService, unix_now};
use super::status::ApiError;
use crate::proto;
use crate::proto::verify_problem::Reason as ProtoReason;
use crate::signing::public_keys::PublicKeys;
use crate::signing::verify::{
    Reason, Verdict, parse_cookie_header, verify_cookies_with, verify_url_with,
};

fn reason(r: Reason) -> ProtoReason {
    match r {
        Reason::Malformed => ProtoReason::Malformed,
        Reason::Signature => ProtoReason::Signature,
        Reason::Expired => ProtoReason::Expired,
        Reason::NotYetValid => ProtoReason::NotYetValid,
        Reason::Resource => ProtoReason::Resource,
        Reason::Ip => ProtoReason::Ip,
        Reason::UnknownKey => ProtoReason::UnknownKey,
    }
}

fn result(index: usize, v: Verdict) -> proto::VerifyResult {
    proto::VerifyResult {
        valid: v.valid(),
        problems: v
            .problems
            .into_iter()
            .map(|p| proto::VerifyProblem {
                reason: reason(p.reason).into(),
                message: p.message,
            })
            .collect(),
        index: u32::try_from(index).unwrap_or(u32::MAX),
        key_pair_id: v.key_pair_id.unwrap_or_default(),
        signature_valid: v.signature_valid,
        custom_policy: v.custom,
        policy: v.policy.unwrap_or_default(),
        resource: v.resource.unwrap_or_default(),
        expires_at: v.expires.unwrap_or_default(),
        not_before: v.not_before.unwrap_or_default(),
        ip_range: v.ip_range.unwrap_or_default(),
        unsigned_url: v.unsigned_url,
    }
}

fn client_ip(text: &str) -> Result<Option<IpAddr>, ApiError> {
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| ApiError::InvalidField {
        field: "client_ip",
        reason: format!("{text:?} is not an IPv4 or IPv6 address"),
    })
}

fn counts(results: &[proto::VerifyResult]) -> (u32, u32) {
    let valid = results.iter().filter(|r| r.valid).count();
    let n = |c: usize| u32::try_from(c).unwrap_or(u32::MAX);
    (n(valid), n(results.len() - valid))
}

impl SignerService {
    /// Runs `check` over `items` on the pool with the public keys in force.
    async fn verify_batch<T: Send + 'static>(
        &self,
        items: Vec<T>,
        check: fn(&T, &PublicKeys) -> Verdict,
    ) -> Result<Vec<proto::VerifyResult>, Status> {
        let call = self.call_config();
        SignerService::check_limits(&call.limits, items.len())?;
        tracing::Span::current().record("batch_size", items.len());
        let admission = self.admit(false, items.len(), &call.limits)?;
        let live = self.live.snapshot();
        let cache = self.public_keys.clone();
        let (results, _) = self
            .pool
            .run(move |on_pool| {
                let keys = cache.get(&live.keys, || live.config.key_specs(), on_pool);
                let out: Vec<proto::VerifyResult> = items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| result(i, check(item, &keys)))
                    .collect();
                drop(admission);
                out
            })
            .await
            .map_err(ApiError::from)?;
        Ok(results)
    }

    /// `VerifyUrls`.
    pub(super) async fn verify_urls_call(
        &self,
        req: proto::VerifyUrlsRequest,
    ) -> Result<proto::VerifyUrlsResponse, Status> {
        let ip = client_ip(&req.client_ip)?;
        let now = if req.now == 0 { unix_now() } else { req.now };
        let items: Vec<(String, i64, Option<IpAddr>)> =
            req.urls.into_iter().map(|u| (u, now, ip)).collect();
        let results = self
            .verify_batch(items, |(url, now, ip), keys| {
                verify_url_with(url, |id| keys.get(id), *now, *ip)
            })
            .await?;
        let (valid, invalid) = counts(&results);
        Ok(proto::VerifyUrlsResponse {
            results,
            valid,
            invalid,
        })
    }

    /// `VerifyCookies`.
    pub(super) async fn verify_cookies_call(
        &self,
        req: proto::VerifyCookiesRequest,
    ) -> Result<proto::VerifyCookiesResponse, Status> {
        let ip = client_ip(&req.client_ip)?;
        let now = if req.now == 0 { unix_now() } else { req.now };
        let items: Vec<(proto::CookieCheck, i64, Option<IpAddr>)> =
            req.items.into_iter().map(|c| (c, now, ip)).collect();
        let results = self
            .verify_batch(items, |(check, now, ip), keys| {
                let mut pairs: Vec<(&str, &str)> = check
                    .cookies
                    .iter()
                    .map(|c| (c.name.as_str(), c.value.as_str()))
                    .collect();
                pairs.extend(parse_cookie_header(&check.cookie_header));
                verify_cookies_with(&check.url, &pairs, |id| keys.get(id), *now, *ip)
            })
            .await?;
        let (valid, invalid) = counts(&results);
        Ok(proto::VerifyCookiesResponse {
            results,
            valid,
            invalid,
        })
    }
}
