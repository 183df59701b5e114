//! A local CloudFront (REST-XML API 2020-05-31: CreateInvalidation, GetInvalidation,
//! ListInvalidations) that behaves as the CloudFront documentation says, where moto does
//! not: limits, CallerReference semantics, InProgress → Completed after a while, throttling.
//!
//! Written in Rust inside the test crate (axum on 127.0.0.1:0), not Python: the tests need
//! to change its behaviour mid-test (throttle the next calls, hide load, complete on
//! demand) and to assert on its state (largest load ever in progress) without an RPC
//! channel, and it starts instantly. It does not check SigV4 (moto's IAM mode does that).
//!
//! Behaviour:
//! - at most 3,000 file paths and 15 wildcard paths in progress per distribution, counting
//!   every invalidation (ours, "foreign" ones seeded by the test, and hidden load that
//!   ListInvalidations does not show); over it: 400 `TooManyInvalidationsInProgress`;
//! - at most 3,000 paths per request (`BatchTooLarge`, 413), `Quantity` must match the
//!   items (`InconsistentQuantities`);
//! - a CallerReference seen before with the same paths returns the existing invalidation;
//!   with other paths: 409 `InvalidationBatchAlreadyExists`;
//! - each invalidation is `InProgress` until `complete_after` has passed, then `Completed`;
//! - `throttle_next` answers the next N calls with 400 `Throttling`, `unavailable_next`
//!   with 503 `ServiceUnavailable`; `create_delay` holds CreateInvalidation's answer (the
//!   invalidation already exists) to open a crash window.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

/// One invalidation the fake holds.
#[derive(Debug, Clone)]
pub struct Inv {
    /// Id.
    pub id: String,
    /// Distribution.
    pub distribution: String,
    /// CallerReference.
    pub caller_reference: String,
    /// Paths.
    pub paths: Vec<String>,
    /// Created.
    pub created: Instant,
    /// Completes at.
    pub completes: Instant,
    /// Created by the test, not by a CreateInvalidation call.
    pub foreign: bool,
}

impl Inv {
    fn in_progress(&self) -> bool {
        Instant::now() < self.completes
    }
    fn counts(&self) -> (usize, usize) {
        let wild = self.paths.iter().filter(|p| p.ends_with('*')).count();
        (self.paths.len() - wild, wild)
    }
}

/// Fake state, shared with the test.
#[derive(Debug)]
pub struct CfState {
    /// Known distributions.
    pub distributions: Vec<String>,
    /// Every invalidation, oldest first.
    pub invalidations: Vec<Inv>,
    /// How long an invalidation stays InProgress.
    pub complete_after: Duration,
    /// Throttle the next N calls.
    pub throttle_next: u32,
    /// 503 the next N calls.
    pub unavailable_next: u32,
    /// In-progress file paths ListInvalidations does not show (another account's tool).
    pub hidden_files: usize,
    /// Refusals: (operation, code).
    pub refused: Vec<(String, String)>,
    /// CreateInvalidation records the invalidation at once but answers only after this
    /// (a process killed meanwhile has sent it without learning its id).
    pub create_delay: Duration,
    /// Largest (files, wildcards) ever in progress at once.
    pub peak: (usize, usize),
    /// Successful CreateInvalidation calls that made a new invalidation.
    pub created: usize,
    /// CreateInvalidation calls answered with an existing invalidation (same reference).
    pub replayed: usize,
    /// Paths that made CloudFront refuse a batch as invalid.
    pub invalid: Vec<String>,
    /// Paths containing one of these are refused as invalid too (a rule of CloudFront's
    /// that cdnsign does not check before sending).
    pub reject_paths: Vec<String>,
    /// The W3C `traceparent` header of every request that carried one.
    pub traceparents: Vec<String>,
}

/// A running fake.
pub struct CloudFrontFake {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    /// Shared state.
    pub state: Arc<Mutex<CfState>>,
    /// Signalled each time a new invalidation is made.
    pub created_signal: Arc<tokio::sync::Notify>,
}

impl CloudFrontFake {
    /// Starts on 127.0.0.1:0 with one distribution.
    pub async fn start(distribution: &str, complete_after: Duration) -> CloudFrontFake {
        let state = Arc::new(Mutex::new(CfState {
            distributions: vec![distribution.to_owned()],
            invalidations: Vec::new(),
            complete_after,
            throttle_next: 0,
            unavailable_next: 0,
            hidden_files: 0,
            create_delay: Duration::ZERO,
            refused: Vec::new(),
            peak: (0, 0),
            created: 0,
            replayed: 0,
            invalid: Vec::new(),
            reject_paths: Vec::new(),
            traceparents: Vec::new(),
        }));
        let created_signal = Arc::new(tokio::sync::Notify::new());
        let app = Router::new()
            .route(
                "/2020-05-31/distribution/{dist}/invalidation",
                axum::routing::post(create).get(list),
            )
            .route(
                "/2020-05-31/distribution/{dist}/invalidation/{id}",
                axum::routing::get(get),
            )
            .with_state((Arc::clone(&state), Arc::clone(&created_signal)))
            .layer(axum::middleware::from_fn({
                let seen = Arc::clone(&state);
                move |req: axum::extract::Request, next: axum::middleware::Next| {
                    if let Some(tp) = req
                        .headers()
                        .get("traceparent")
                        .and_then(|v| v.to_str().ok())
                        && let Ok(mut st) = seen.lock()
                    {
                        st.traceparents.push(tp.to_owned());
                    }
                    next.run(req)
                }
            }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        CloudFrontFake {
            endpoint: format!("http://{addr}"),
            state,
            created_signal,
        }
    }

    /// Adds someone else's in-progress invalidation.
    pub fn seed_foreign(&self, distribution: &str, paths: Vec<String>, lasts: Duration) {
        let mut st = self.state.lock().expect("state");
        let n = st.invalidations.len();
        st.invalidations.push(Inv {
            id: format!("IFOREIGN{n:05}"),
            distribution: distribution.to_owned(),
            caller_reference: format!("foreign-{n}"),
            paths,
            created: Instant::now(),
            completes: Instant::now() + lasts,
            foreign: true,
        });
    }

    /// Invalidations created through the API.
    pub fn ours(&self) -> Vec<Inv> {
        self.state
            .lock()
            .expect("state")
            .invalidations
            .iter()
            .filter(|i| !i.foreign)
            .cloned()
            .collect()
    }

    /// Error codes answered.
    pub fn refused(&self) -> Vec<String> {
        self.state
            .lock()
            .expect("state")
            .refused
            .iter()
            .map(|(_, c)| c.clone())
            .collect()
    }
}

fn valid_path(p: &str) -> bool {
    if let Some(tag) = p.strip_prefix('#') {
        return !tag.is_empty()
            && tag.len() <= 256
            && tag.bytes().all(|b| (33..=126).contains(&b) && b != b',');
    }
    let stars = p.matches('*').count();
    p.starts_with('/')
        && p.len() <= 4_000
        && (stars == 0 || (stars == 1 && p.ends_with('*')))
        && p.bytes().all(|b| b.is_ascii_graphic())
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn unesc(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

fn tags<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(&after[..j]);
        rest = &after[j + close.len()..];
    }
    out
}

fn xml(status: StatusCode, body: String) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", "text/xml".parse().expect("header"));
    headers.insert("x-amz-request-id", "fake-request".parse().expect("header"));
    (
        status,
        headers,
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{body}"),
    )
        .into_response()
}

fn error(st: &mut CfState, op: &str, status: StatusCode, code: &str, message: &str) -> Response {
    st.refused.push((op.to_owned(), code.to_owned()));
    xml(
        status,
        format!(
            "<ErrorResponse xmlns=\"http://cloudfront.amazonaws.com/doc/2020-05-31/\"><Error><Type>Sender</Type><Code>{code}</Code><Message>{}</Message></Error><RequestId>fake-request</RequestId></ErrorResponse>",
            esc(message)
        ),
    )
}

fn fault(st: &mut CfState, op: &str) -> Option<Response> {
    if st.throttle_next > 0 {
        st.throttle_next -= 1;
        return Some(error(
            st,
            op,
            StatusCode::BAD_REQUEST,
            "Throttling",
            "Rate exceeded",
        ));
    }
    if st.unavailable_next > 0 {
        st.unavailable_next -= 1;
        return Some(error(
            st,
            op,
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "CloudFront is unavailable",
        ));
    }
    None
}

fn inv_xml(inv: &Inv) -> String {
    let items: String = inv
        .paths
        .iter()
        .map(|p| format!("<Path>{}</Path>", esc(p)))
        .collect();
    format!(
        "<Invalidation xmlns=\"http://cloudfront.amazonaws.com/doc/2020-05-31/\"><Id>{}</Id><Status>{}</Status><CreateTime>2026-01-02T03:04:05Z</CreateTime><InvalidationBatch><Paths><Quantity>{}</Quantity><Items>{items}</Items></Paths><CallerReference>{}</CallerReference></InvalidationBatch></Invalidation>",
        inv.id,
        if inv.in_progress() {
            "InProgress"
        } else {
            "Completed"
        },
        inv.paths.len(),
        esc(&inv.caller_reference)
    )
}

fn load(st: &CfState, dist: &str) -> (usize, usize) {
    st.invalidations
        .iter()
        .filter(|i| i.distribution == dist && i.in_progress())
        .map(Inv::counts)
        .fold((st.hidden_files, 0), |(f, w), (a, b)| (f + a, w + b))
}

type Shared = (Arc<Mutex<CfState>>, Arc<tokio::sync::Notify>);

async fn create(
    State((state, created_signal)): State<Shared>,
    Path(dist): Path<String>,
    body: Bytes,
) -> Response {
    let before = state.lock().expect("state").created;
    let resp = create_now(&state, dist, &body);
    if state.lock().expect("state").created > before {
        created_signal.notify_one();
    }
    let delay = state.lock().expect("state").create_delay;
    if resp.status() == StatusCode::CREATED && !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    resp
}

fn create_now(state: &Mutex<CfState>, dist: String, body: &Bytes) -> Response {
    let op = "CreateInvalidation";
    let mut st = state.lock().expect("state");
    if let Some(r) = fault(&mut st, op) {
        return r;
    }
    if !st.distributions.contains(&dist) {
        return error(
            &mut st,
            op,
            StatusCode::NOT_FOUND,
            "NoSuchDistribution",
            "The specified distribution does not exist.",
        );
    }
    let body = String::from_utf8_lossy(body);
    let paths: Vec<String> = tags(&body, "Path").into_iter().map(unesc).collect();
    let quantity: usize = tags(&body, "Quantity")
        .first()
        .and_then(|q| q.parse().ok())
        .unwrap_or(usize::MAX);
    let Some(reference) = tags(&body, "CallerReference").first().map(|r| unesc(r)) else {
        return error(
            &mut st,
            op,
            StatusCode::BAD_REQUEST,
            "MissingBody",
            "CallerReference is required.",
        );
    };
    if quantity != paths.len() || paths.is_empty() {
        return error(
            &mut st,
            op,
            StatusCode::BAD_REQUEST,
            "InconsistentQuantities",
            "Quantity does not match Items.",
        );
    }
    // Every path as CloudFront documents it: a leading '/', at most 4,000 characters as
    // sent, '*' only at the end, unsafe characters percent-encoded; cache tags '#' + 1-256
    // visible ASCII characters other than ','. One bad path refuses the whole batch.
    let refused_here = |p: &String| st.reject_paths.iter().any(|r| p.contains(r.as_str()));
    if let Some(bad) = paths
        .iter()
        .find(|p| !valid_path(p) || refused_here(p))
        .cloned()
    {
        let msg = format!("Your request contains one or more invalid invalidation paths: {bad}");
        st.invalid.push(bad);
        return error(
            &mut st,
            op,
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            &msg,
        );
    }
    if paths.len() > 3_000 {
        return error(
            &mut st,
            op,
            StatusCode::PAYLOAD_TOO_LARGE,
            "BatchTooLarge",
            "Invalidation batch specified is too large.",
        );
    }
    if let Some(existing) = st
        .invalidations
        .iter()
        .find(|i| i.distribution == dist && i.caller_reference == reference)
        .cloned()
    {
        if existing.paths == paths {
            st.replayed += 1;
            return xml(StatusCode::CREATED, inv_xml(&existing));
        }
        return error(
            &mut st,
            op,
            StatusCode::CONFLICT,
            "InvalidationBatchAlreadyExists",
            "The CallerReference was used before with a different invalidation batch.",
        );
    }
    let wild = paths.iter().filter(|p| p.ends_with('*')).count();
    let (files_now, wild_now) = load(&st, &dist);
    if files_now + paths.len() - wild > 3_000 || wild_now + wild > 15 {
        return error(
            &mut st,
            op,
            StatusCode::BAD_REQUEST,
            "TooManyInvalidationsInProgress",
            "Processing your request will cause you to exceed the maximum number of in-progress wildcard invalidations.",
        );
    }
    let n = st.invalidations.len();
    let inv = Inv {
        id: format!("I{n:012}"),
        distribution: dist,
        caller_reference: reference,
        paths,
        created: Instant::now(),
        completes: Instant::now() + st.complete_after,
        foreign: false,
    };
    let body = inv_xml(&inv);
    st.invalidations.push(inv);
    st.created += 1;
    let dist = st.invalidations[n].distribution.clone();
    let now = load(&st, &dist);
    st.peak = (st.peak.0.max(now.0 - st.hidden_files), st.peak.1.max(now.1));
    xml(StatusCode::CREATED, body)
}

async fn get(
    State((state, _)): State<Shared>,
    Path((dist, id)): Path<(String, String)>,
) -> Response {
    let mut st = state.lock().expect("state");
    if let Some(r) = fault(&mut st, "GetInvalidation") {
        return r;
    }
    match st
        .invalidations
        .iter()
        .find(|i| i.distribution == dist && i.id == id)
    {
        Some(inv) => xml(StatusCode::OK, inv_xml(inv)),
        None => error(
            &mut st,
            "GetInvalidation",
            StatusCode::NOT_FOUND,
            "NoSuchInvalidation",
            "The specified invalidation does not exist.",
        ),
    }
}

async fn list(
    State((state, _)): State<Shared>,
    Path(dist): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut st = state.lock().expect("state");
    if let Some(r) = fault(&mut st, "ListInvalidations") {
        return r;
    }
    let max: usize = q
        .get("MaxItems")
        .and_then(|m| m.parse().ok())
        .unwrap_or(100);
    let marker = q.get("Marker").cloned().unwrap_or_default();
    let mut all: Vec<&Inv> = st
        .invalidations
        .iter()
        .filter(|i| i.distribution == dist)
        .collect();
    all.reverse(); // newest first
    let start = if marker.is_empty() {
        0
    } else {
        all.iter()
            .position(|i| i.id == marker)
            .map_or(all.len(), |p| p + 1)
    };
    let page: Vec<&Inv> = all.iter().skip(start).take(max).copied().collect();
    let truncated = start + page.len() < all.len();
    let items: String = page
        .iter()
        .map(|i| {
            format!(
                "<InvalidationSummary><Id>{}</Id><CreateTime>2026-01-02T03:04:05Z</CreateTime><Status>{}</Status></InvalidationSummary>",
                i.id,
                if i.in_progress() { "InProgress" } else { "Completed" }
            )
        })
        .collect();
    let next = if truncated {
        format!(
            "<NextMarker>{}</NextMarker>",
            page.last().map(|i| i.id.as_str()).unwrap_or_default()
        )
    } else {
        String::new()
    };
    xml(
        StatusCode::OK,
        format!(
            "<InvalidationList xmlns=\"http://cloudfront.amazonaws.com/doc/2020-05-31/\"><Marker>{}</Marker>{next}<MaxItems>{max}</MaxItems><IsTruncated>{truncated}</IsTruncated><Quantity>{}</Quantity><Items>{items}</Items></InvalidationList>",
            esc(&marker),
            page.len()
        ),
    )
}
