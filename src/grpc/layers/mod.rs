//! Cross-cutting concerns as tower layers around every gRPC service, outermost first:
//!
//! - [`ObserveLayer`]: per-call span, request id, call log line and request metrics;
//! - [`AuthLayer`]: resolves the caller's identity against the live configuration;
//! - [`ShedLayer`]: the concurrency limit, held until a response (stream) ends;
//! - [`MessageLimitLayer`]: refuses an oversized request message from its frame header,
//!   before it is read.
//!
//! Health and reflection calls pass the auth and shed layers untouched (probes).

mod auth;
mod call_table;
mod message_limit;
mod observe;
mod shed;

pub use auth::{Auth, AuthLayer, credentials_of, reauthenticate};
pub use call_table::{CallTable, CallType, GO_CODES};
pub use message_limit::{MessageLimit, MessageLimitLayer};
pub use observe::{Observe, ObserveLayer, REQUEST_ID_HEADER};
pub use shed::{Shed, ShedLayer};

use std::future::Future;
use std::pin::Pin;

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

/// Takes the service that `poll_ready` readied, leaving a fresh clone in its place (the
/// usual tower pattern for moving a service into a boxed future).
pub(crate) fn take_ready<S: Clone>(slot: &mut S) -> S {
    let clone = slot.clone();
    std::mem::replace(slot, clone)
}
