//! GetInvalidation and ListInvalidations (newest first, paged by Marker).

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::{Inv, Shared, error, esc, fault, inv_xml, xml};

pub(super) async fn get(
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

pub(super) async fn list(
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
