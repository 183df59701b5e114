//! CreateInvalidation: the batch read from the request and checked as CloudFront documents
//! it (paths, Quantity, CallerReference, size, load in progress), then recorded.

use std::sync::Mutex;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::{CfState, Inv, Shared, error, fault, inv_xml, xml};

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

fn load(st: &CfState, dist: &str) -> (usize, usize) {
    st.invalidations
        .iter()
        .filter(|i| i.distribution == dist && i.in_progress())
        .map(Inv::counts)
        .fold((st.hidden_files, 0), |(f, w), (a, b)| (f + a, w + b))
}

pub(super) async fn create(
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
