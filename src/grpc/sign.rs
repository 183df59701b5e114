//! `cdnsign.v1.Signer`: decodes a batch, checks request-wide limits, and hands the whole
//! batch (validation, policy writing, RSA, rendering) to the signing pool (see
//! `super::batch`). The tokio worker only awaits, except for a batch of a few ECDSA
//! signatures, which it signs itself (cheaper than two thread hand-offs; see
//! `signing::pool`).

use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

pub use super::batch::SignerService;
pub(super) use super::batch::{BatchFields, Output, count_errors, count_outcomes, unix_now};
use super::cookies::{check_attributes, cookie_response};
use super::layers::{credentials_of, reauthenticate};
use super::status::{ApiError, item_error};
use crate::auth::Caller;
use crate::proto;
use crate::proto::signer_server::Signer;
use crate::signing::validate::ItemSpec;
use crate::signing::{AsItemSpec, BatchStats, SignError, SignedItem};

impl AsItemSpec for proto::SignItem {
    fn item_spec(&self) -> ItemSpec<'_> {
        ItemSpec {
            url: &self.url,
            policy_resource: &self.policy_resource,
            expires_at: self.expires_at,
            ttl_seconds: self.ttl_seconds,
            not_before: self.not_before,
            ip_range: &self.ip_range,
            key_id: &self.key_id,
            custom_policy: self.custom_policy,
            bare_resource: self.bare_resource,
        }
    }
}

/// The URL batches of `SignUrls` and `SignUrlsStream`.
impl SignerService {
    /// Signs one URL batch; shared by the unary and streaming methods.
    async fn sign_url_batch(
        &self,
        caller: &Caller,
        req: proto::SignUrlsRequest,
        batch_index: u64,
    ) -> Result<proto::SignUrlsResponse, Status> {
        let call = self.call_config();
        Self::check_limits(&call.limits, req.items.len())?;
        self.charge_rate(caller, req.items.len())?;
        self.metrics.batch_urls.record(req.items.len() as f64);
        let ctx = self.context(
            &call,
            &BatchFields {
                caller,
                key_id: &req.key_id,
                expires_at: req.expires_at,
                ttl_seconds: req.ttl_seconds,
                custom_policy: req.custom_policy,
            },
            req.items.len(),
        );
        Ok(self
            .sign_items(
                caller,
                call,
                req.items,
                ctx,
                Output::Url,
                move |results, stats| url_response(results, stats, batch_index),
            )
            .await?)
    }
}

/// The caller the auth layer resolved. Fails closed if the layer is missing.
pub(super) fn caller_of<T>(request: &Request<T>) -> Result<Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("no caller identity"))
}

fn url_response(
    results: Vec<Result<SignedItem, SignError>>,
    stats: BatchStats,
    batch_index: u64,
) -> proto::SignUrlsResponse {
    use proto::sign_url_result::Outcome;
    let results = results
        .into_iter()
        .enumerate()
        .map(|(i, r)| match r {
            Ok(item) => proto::SignUrlResult {
                outcome: Some(Outcome::SignedUrl(item.signed_url())),
                index: u32::try_from(i).unwrap_or(u32::MAX),
                expires_at: item.expires,
                key_id: item.key.id().to_owned(),
            },
            Err(e) => proto::SignUrlResult {
                outcome: Some(Outcome::Error(item_error(i, &e))),
                index: u32::try_from(i).unwrap_or(u32::MAX),
                expires_at: 0,
                key_id: String::new(),
            },
        })
        .collect();
    proto::SignUrlsResponse {
        results,
        batch_index,
        signed: u32::try_from(stats.signed).unwrap_or(u32::MAX),
        failed: u32::try_from(stats.failed).unwrap_or(u32::MAX),
    }
}

/// How many stream responses may wait for the transport before the server stops reading
/// the client's next batch.
const STREAM_BUFFER: usize = 2;

/// The stream's method, as the audit log names it.
const STREAM_METHOD: &str = "/cdnsign.v1.Signer/SignUrlsStream";

type ResponseStream = Pin<Box<dyn Stream<Item = Result<proto::SignUrlsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Signer for Arc<SignerService> {
    async fn sign_urls(
        &self,
        request: Request<proto::SignUrlsRequest>,
    ) -> Result<Response<proto::SignUrlsResponse>, Status> {
        let caller = caller_of(&request)?;
        self.sign_url_batch(&caller, request.into_inner(), 0)
            .await
            .map(Response::new)
    }

    async fn sign_cookies(
        &self,
        request: Request<proto::SignCookiesRequest>,
    ) -> Result<Response<proto::SignCookiesResponse>, Status> {
        let caller = caller_of(&request)?;
        let req = request.into_inner();
        let call = self.call_config();
        SignerService::check_limits(&call.limits, req.items.len())?;
        let attrs = req.attributes.clone().unwrap_or_default();
        check_attributes(&attrs)?;
        self.charge_rate(&caller, req.items.len())?;
        self.metrics.batch_cookies.record(req.items.len() as f64);
        let ctx = self.context(
            &call,
            &BatchFields {
                caller: &caller,
                key_id: &req.key_id,
                expires_at: req.expires_at,
                ttl_seconds: req.ttl_seconds,
                custom_policy: req.custom_policy,
            },
            req.items.len(),
        );
        let response = self
            .sign_items(
                &caller,
                call,
                req.items,
                ctx,
                Output::Cookie,
                move |results, stats| cookie_response(results, stats, &attrs),
            )
            .await?;
        Ok(Response::new(response))
    }

    async fn sign_playlist(
        &self,
        request: Request<proto::SignPlaylistRequest>,
    ) -> Result<Response<proto::SignPlaylistResponse>, Status> {
        let caller = caller_of(&request)?;
        self.sign_playlist_call(&caller, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn verify_urls(
        &self,
        request: Request<proto::VerifyUrlsRequest>,
    ) -> Result<Response<proto::VerifyUrlsResponse>, Status> {
        caller_of(&request)?;
        self.verify_urls_call(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn verify_cookies(
        &self,
        request: Request<proto::VerifyCookiesRequest>,
    ) -> Result<Response<proto::VerifyCookiesResponse>, Status> {
        caller_of(&request)?;
        self.verify_cookies_call(request.into_inner())
            .await
            .map(Response::new)
    }

    type SignUrlsStreamStream = ResponseStream;

    async fn sign_urls_stream(
        &self,
        request: Request<Streaming<proto::SignUrlsRequest>>,
    ) -> Result<Response<Self::SignUrlsStreamStream>, Status> {
        caller_of(&request)?;
        // Each message is signed as whoever these credentials are under the configuration
        // in force when it arrives: a reload that revokes the token ends the stream, one
        // that narrows the grant narrows the next batch.
        let credentials = credentials_of(&request)?;
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let service = Arc::clone(self);
        tokio::spawn(async move {
            let max = service.live.snapshot().config.signing.max_stream_batches;
            let mut batch_index = 0u64;
            loop {
                let msg = match inbound.message().await {
                    Ok(Some(msg)) => msg,
                    Ok(None) => break,
                    Err(status) => {
                        // An oversized message, or the client's stream broke: say so (if
                        // the client still listens) rather than end the stream as if OK.
                        tracing::debug!(%status, "SignUrlsStream: client stream ended with error");
                        let _ = tx.send(Err(status)).await;
                        break;
                    }
                };
                if max != 0 && batch_index >= max {
                    let _ = tx.send(Err(ApiError::StreamTooLong { max }.into())).await;
                    break;
                }
                let caller = match reauthenticate(&service.live, &credentials, STREAM_METHOD) {
                    Ok(caller) => caller,
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        break;
                    }
                };
                let response = service.sign_url_batch(&caller, msg, batch_index).await;
                let failed = response.is_err();
                // Waiting here is the backpressure: the next batch is not read until the
                // transport has room for this response.
                if tx.send(response).await.is_err() || failed {
                    break;
                }
                batch_index += 1;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
