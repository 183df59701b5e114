//! The CloudFront API through the official AWS SDK (`aws-sdk-cloudfront`, API
//! 2020-05-31): CreateInvalidation, GetInvalidation, ListInvalidations. The SDK signs
//! (SigV4) with the standard AWS credential chain; its own retries are off, so the
//! scheduler and [`mod@crate::purge::retry`] alone decide.

use std::time::Duration;

use tracing::Instrument as _;

use aws_sdk_cloudfront::Client;
use aws_sdk_cloudfront::config::retry::RetryConfig;
use aws_sdk_cloudfront::config::timeout::TimeoutConfig;
use aws_sdk_cloudfront::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_cloudfront::types::{InvalidationBatch, Paths};

use crate::purge::config::ProviderKind;
use crate::purge::error::{ErrorClass, ProviderError};

/// One CloudFront API endpoint (the real one or an override), with its SDK client.
#[derive(Clone, Debug)]
pub struct CloudFront {
    client: Client,
}

/// An invalidation as CloudFront reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalidation {
    /// CloudFront's id.
    pub id: String,
    /// `InProgress` or `Completed`.
    pub status: String,
    /// Paths in the batch, when CloudFront said (GetInvalidation).
    pub paths: Vec<String>,
}

impl Invalidation {
    /// CloudFront says it is done (`Completed`; moto writes `COMPLETED`).
    pub fn is_completed(&self) -> bool {
        self.status.eq_ignore_ascii_case("Completed")
    }
}

fn error<E>(
    op: &str,
    e: SdkError<E, aws_sdk_cloudfront::config::http::HttpResponse>,
) -> ProviderError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    if let Some((code, message, class)) = credentials_failure(&e) {
        return ProviderError {
            provider: ProviderKind::Cloudfront,
            operation: op.to_owned(),
            code: code.to_owned(),
            message,
            http_status: None,
            class,
        };
    }
    let (code, message, status) = match &e {
        SdkError::ServiceError(se) => (
            se.err().code().unwrap_or("Unknown").to_owned(),
            se.err().message().unwrap_or_default().to_owned(),
            Some(se.raw().status().as_u16()),
        ),
        SdkError::TimeoutError(_) => ("Timeout".to_owned(), "request timed out".to_owned(), None),
        SdkError::DispatchFailure(d) => (
            "DispatchFailure".to_owned(),
            if d.is_io() || d.is_timeout() {
                "connection failed".to_owned()
            } else {
                "request could not be sent".to_owned()
            },
            None,
        ),
        SdkError::ResponseError(_) => (
            "ResponseError".to_owned(),
            "unreadable response".to_owned(),
            None,
        ),
        SdkError::ConstructionFailure(_) => (
            "ConstructionFailure".to_owned(),
            "request could not be built (credentials or configuration)".to_owned(),
            None,
        ),
        _ => (
            "Unknown".to_owned(),
            "unexpected SDK error".to_owned(),
            None,
        ),
    };
    let class = classify(&code, status);
    ProviderError {
        provider: ProviderKind::Cloudfront,
        operation: op.to_owned(),
        code,
        message,
        http_status: status,
        class,
    }
}

/// The SDK loads credentials before it sends anything, and reports a failure as a
/// dispatch failure (as if the request might have gone out). Found in the error's sources:
/// a configuration that cannot give any fails the job; none found (which is also what an
/// instance metadata service that did not answer gives) or a credential service that timed
/// out or failed leaves it unsent, to be tried again after a backoff (for at most an hour
/// from its acceptance: `scheduler::send`).
fn credentials_failure(
    e: &(dyn std::error::Error + 'static),
) -> Option<(&'static str, String, ErrorClass)> {
    use aws_credential_types::provider::error::CredentialsError;
    let mut source = Some(e);
    while let Some(err) = source {
        if let Some(c) = err.downcast_ref::<CredentialsError>() {
            let found = match c {
                CredentialsError::CredentialsNotLoaded(_) => (
                    "CredentialsNotLoaded",
                    "no AWS credentials were found (environment, profile, web identity, container or instance role); nothing was sent",
                    ErrorClass::NotSent,
                ),
                CredentialsError::InvalidConfiguration(_) => (
                    "InvalidCredentialsConfiguration",
                    "the AWS credentials configuration is invalid",
                    ErrorClass::Credentials,
                ),
                CredentialsError::ProviderTimedOut(_) => (
                    "CredentialsTimedOut",
                    "loading AWS credentials timed out; nothing was sent",
                    ErrorClass::NotSent,
                ),
                _ => (
                    "CredentialsUnavailable",
                    "loading AWS credentials failed; nothing was sent",
                    ErrorClass::NotSent,
                ),
            };
            return Some((found.0, found.1.to_owned(), found.2));
        }
        source = err.source();
    }
    None
}

/// Maps a CloudFront error code / HTTP status to what to do about it.
pub fn classify(code: &str, status: Option<u16>) -> ErrorClass {
    match code {
        "Throttling" | "ThrottlingException" | "RequestLimitExceeded" | "TooManyRequests" => {
            ErrorClass::Throttled
        }
        "TooManyInvalidationsInProgress" => ErrorClass::Busy,
        "Timeout" | "DispatchFailure" | "ResponseError" | "ServiceUnavailable"
        | "InternalError" => ErrorClass::Unavailable,
        "AccessDenied"
        | "AccessDeniedException"
        | "InvalidClientTokenId"
        | "SignatureDoesNotMatch"
        | "IncompleteSignature"
        | "MissingAuthenticationToken"
        | "ExpiredToken"
        | "UnrecognizedClientException" => ErrorClass::Denied,
        "NoSuchDistribution" | "NoSuchInvalidation" => ErrorClass::NotFound,
        "InvalidationBatchAlreadyExists" => ErrorClass::Conflict,
        "BatchTooLarge" | "InconsistentQuantities" | "InvalidArgument" | "MissingBody" => {
            ErrorClass::Invalid
        }
        "ConstructionFailure" => ErrorClass::Denied,
        _ => match status {
            Some(429) => ErrorClass::Throttled,
            Some(s) if s >= 500 => ErrorClass::Unavailable,
            Some(401 | 403) => ErrorClass::Denied,
            _ => ErrorClass::Other,
        },
    }
}

/// The shared AWS config: the standard credential chain (or `credentials`), region
/// us-east-1, and an HTTPS client on rustls with ring, the process's one crypto provider.
pub async fn sdk_config(
    credentials: Option<aws_sdk_cloudfront::config::SharedCredentialsProvider>,
) -> aws_config::SdkConfig {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .http_client(http);
    if let Some(c) = credentials {
        loader = loader.credentials_provider(c);
    }
    loader.load().await
}

/// Puts the current trace context (`traceparent`) on every CloudFront request, while
/// traces are exported.
#[derive(Debug)]
struct PropagateTrace;

impl aws_sdk_cloudfront::config::Intercept for PropagateTrace {
    fn name(&self) -> &'static str {
        "PropagateTrace"
    }

    fn modify_before_transmit(
        &self,
        context: &mut aws_sdk_cloudfront::config::interceptors::BeforeTransmitInterceptorContextMut<
            '_,
        >,
        _runtime_components: &aws_sdk_cloudfront::config::RuntimeComponents,
        _cfg: &mut aws_sdk_cloudfront::config::ConfigBag,
    ) -> Result<(), aws_sdk_cloudfront::error::BoxError> {
        let mut trace = http::HeaderMap::new();
        crate::trace_context::inject(&mut trace);
        let headers = context.request_mut().headers_mut();
        for (name, value) in &trace {
            if let Ok(v) = value.to_str() {
                headers.insert(name.as_str().to_owned(), v.to_owned());
            }
        }
        Ok(())
    }
}

/// The span of one CloudFront API call (a client span in traces).
fn call_span(operation: &'static str) -> tracing::Span {
    tracing::info_span!(
        "cloudfront.request",
        otel.kind = "client",
        rpc.system = "aws-api",
        rpc.service = "CloudFront",
        rpc.method = operation
    )
}

/// Records one CloudFront API call's latency.
fn observe(operation: &'static str, started: std::time::Instant) {
    metrics::histogram!(
        crate::metrics::UPSTREAM_DURATION,
        "provider" => "cloudfront",
        "operation" => operation
    )
    .record(started.elapsed().as_secs_f64());
}

impl CloudFront {
    /// Builds a client from the shared AWS config (credentials chain), region us-east-1,
    /// SDK retries off, the endpoint overridden when given.
    pub fn new(shared: &aws_config::SdkConfig, endpoint: Option<&str>) -> CloudFront {
        let mut b = aws_sdk_cloudfront::config::Builder::from(shared)
            .region(aws_sdk_cloudfront::config::Region::new("us-east-1"))
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(Duration::from_secs(20))
                    .build(),
            )
            .interceptor(PropagateTrace);
        if let Some(e) = endpoint {
            b = b.endpoint_url(e);
        }
        CloudFront {
            client: Client::from_conf(b.build()),
        }
    }

    /// CreateInvalidation. A repeat with the same CallerReference and batch returns the
    /// existing invalidation (CloudFront's documented behaviour).
    pub async fn create(
        &self,
        distribution_id: &str,
        caller_reference: &str,
        paths: &[String],
    ) -> Result<Invalidation, ProviderError> {
        let invalid = |m: String| ProviderError {
            provider: ProviderKind::Cloudfront,
            operation: "CreateInvalidation".into(),
            code: "ClientBuild".into(),
            message: m,
            http_status: None,
            class: ErrorClass::Invalid,
        };
        let batch_paths = Paths::builder()
            .quantity(paths.len() as i32)
            .set_items(Some(paths.to_vec()))
            .build()
            .map_err(|e| invalid(e.to_string()))?;
        let batch = InvalidationBatch::builder()
            .paths(batch_paths)
            .caller_reference(caller_reference)
            .build()
            .map_err(|e| invalid(e.to_string()))?;
        let started = std::time::Instant::now();
        let out = self
            .client
            .create_invalidation()
            .distribution_id(distribution_id)
            .invalidation_batch(batch)
            .send()
            .instrument(call_span("CreateInvalidation"))
            .await;
        observe("CreateInvalidation", started);
        let out = out.map_err(|e| error("CreateInvalidation", e))?;
        let inv = out.invalidation().ok_or_else(|| ProviderError {
            provider: ProviderKind::Cloudfront,
            operation: "CreateInvalidation".into(),
            code: "MissingInvalidation".into(),
            message: "response holds no Invalidation".into(),
            http_status: None,
            class: ErrorClass::Unavailable,
        })?;
        Ok(Invalidation {
            id: inv.id().to_owned(),
            status: inv.status().to_owned(),
            paths: paths.to_vec(),
        })
    }

    /// GetInvalidation.
    pub async fn get(
        &self,
        distribution_id: &str,
        id: &str,
    ) -> Result<Invalidation, ProviderError> {
        let started = std::time::Instant::now();
        let out = self
            .client
            .get_invalidation()
            .distribution_id(distribution_id)
            .id(id)
            .send()
            .instrument(call_span("GetInvalidation"))
            .await;
        observe("GetInvalidation", started);
        let out = out.map_err(|e| error("GetInvalidation", e))?;
        let inv = out.invalidation().ok_or_else(|| ProviderError {
            provider: ProviderKind::Cloudfront,
            operation: "GetInvalidation".into(),
            code: "MissingInvalidation".into(),
            message: "response holds no Invalidation".into(),
            http_status: None,
            class: ErrorClass::Unavailable,
        })?;
        let paths = inv
            .invalidation_batch()
            .and_then(|b| b.paths())
            .map(|p| p.items().to_vec())
            .unwrap_or_default();
        Ok(Invalidation {
            id: inv.id().to_owned(),
            status: inv.status().to_owned(),
            paths,
        })
    }

    /// Ids of the distribution's invalidations that are `InProgress` (ListInvalidations,
    /// newest first, at most `max_pages` pages of 100).
    pub async fn in_progress(
        &self,
        distribution_id: &str,
        max_pages: usize,
    ) -> Result<Vec<String>, ProviderError> {
        let mut ids = Vec::new();
        let mut marker: Option<String> = None;
        for _ in 0..max_pages {
            let started = std::time::Instant::now();
            let out = self
                .client
                .list_invalidations()
                .distribution_id(distribution_id)
                .max_items(100)
                .set_marker(marker.take())
                .send()
                .instrument(call_span("ListInvalidations"))
                .await;
            observe("ListInvalidations", started);
            let out = out.map_err(|e| error("ListInvalidations", e))?;
            let Some(list) = out.invalidation_list() else {
                break;
            };
            ids.extend(
                list.items()
                    .iter()
                    .filter(|s| !s.status().eq_ignore_ascii_case("Completed"))
                    .map(|s| s.id().to_owned()),
            );
            match (list.is_truncated(), list.next_marker()) {
                (true, Some(m)) if !m.is_empty() => marker = Some(m.to_owned()),
                _ => break,
            }
        }
        Ok(ids)
    }
}
