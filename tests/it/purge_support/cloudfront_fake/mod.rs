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
//!
//! Here: the state the tests share and assert on, the server, and the XML every operation
//! answers with (invalidations, errors, injected faults). CreateInvalidation's checks are in
//! `create.rs`, GetInvalidation and ListInvalidations in `queries.rs`.

mod create;
mod queries;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use create::create;
use queries::{get, list};

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

    /// Completes every invalidation now (the test's moment, not a timer's).
    pub fn complete_all(&self) {
        let now = Instant::now();
        for inv in &mut self.state.lock().expect("state").invalidations {
            inv.completes = inv.completes.min(now);
        }
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

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
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

type Shared = (Arc<Mutex<CfState>>, Arc<tokio::sync::Notify>);
