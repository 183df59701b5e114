//! Whole prepared items: what an accepted item signs (key, URL, policy, expiry) and that
//! nothing signed escapes the grant.

use cdnsign::signing::policy::{IpRange, canned_json};
use cdnsign::signing::validate::{self, BatchContext, ItemSpec, Prepared};
use cdnsign::signing::{Field, SignError};
use serde::Deserialize;

use crate::url_model::{model_has_dot_segment, model_inside};
use crate::*;

/// What a granted item may have signed: its key is granted, and the URL and the policy's
/// Resource, exactly as signed, are inside a prefix by the model, without dot segments.
/// `pattern`: the Resource is read with wildcards (a custom policy's, whether the caller
/// gave it or it is the URL; a canned policy's is the URL, checked as one).
fn check_granted(p: &Prepared, resource: &str, pattern: bool) {
    assert_eq!(p.key.id(), KEY_SHA1, "signed with a key outside the grant");
    assert!(
        model_inside(&p.url, false),
        "URL {:?} signed outside the grant",
        p.url
    );
    assert!(
        !model_has_dot_segment(&p.url, false),
        "URL {:?} signed with a dot segment",
        p.url
    );
    // Every string the Resource matches starts with its text before the first wildcard.
    assert!(
        model_inside(resource, true),
        "Resource {resource:?} signed outside the grant"
    );
    if pattern {
        assert!(
            !model_has_dot_segment(resource, true),
            "Resource {resource:?} signed with a dot segment"
        );
    }
}

// The policy shape, parsed strictly: unknown or duplicate keys fail the parse, so a
// resource that smuggled in a second `Resource` or `Condition` could not go unnoticed.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Policy {
    #[serde(rename = "Statement")]
    statement: Vec<Statement>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Statement {
    #[serde(rename = "Resource")]
    resource: String,
    #[serde(rename = "Condition")]
    condition: Condition,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Condition {
    #[serde(rename = "DateLessThan")]
    date_less_than: EpochTime,
    #[serde(rename = "IpAddress")]
    ip_address: Option<SourceIp>,
    #[serde(rename = "DateGreaterThan")]
    date_greater_than: Option<EpochTime>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EpochTime {
    #[serde(rename = "AWS:EpochTime")]
    epoch: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceIp {
    #[serde(rename = "AWS:SourceIp")]
    source_ip: String,
}

/// The expiry `prepare` must choose, by the documented precedence: the item's
/// `expires_at` or `ttl_seconds`, else the batch's (`None`: no valid expiry to model).
fn model_expiry(spec: &ItemSpec<'_>, ctx: &BatchContext) -> Option<i64> {
    let pick = |e: i64, t: i64| match (e, t) {
        (0, 0) => None,
        (e, 0) => Some(Some(e)),
        (0, t) if t > 0 => Some(ctx.now.checked_add(t)),
        _ => Some(None),
    };
    let expires = match pick(spec.expires_at, spec.ttl_seconds) {
        Some(e) => e?,
        None => pick(ctx.expires_at, ctx.ttl_seconds)??,
    };
    (expires > ctx.now && expires - ctx.now <= ctx.max_ttl_seconds).then_some(expires)
}

/// Checks the result of `validate::prepare` for one item.
///
/// On success: the key is the one asked for; the URL is the cleaned URL; the policy is
/// strict JSON whose one statement has exactly the Resource (cleaned `policy_resource`,
/// else the URL), DateLessThan (the modelled expiry), DateGreaterThan and IpAddress (each
/// present iff asked, with the asked value) requested; a canned policy is byte-equal to
/// `canned_json(url, expires)`. On failure: the error is a validation error, never a
/// crypto one, and names a field.
pub fn check_prepared(
    spec: &ItemSpec<'_>,
    ctx: &BatchContext,
    result: &Result<Prepared, SignError>,
) {
    let p = match result {
        Err(SignError::Crypto(e)) => panic!("prepare did crypto: {e}"),
        Err(e) => {
            assert!(e.field().is_some(), "error with no field: {e}");
            return;
        }
        Ok(p) => p,
    };

    // Key.
    if spec.key_id.is_empty() {
        let default = ctx
            .default_key
            .as_ref()
            .expect("signed with no default key");
        assert!(Arc::ptr_eq(&p.key, default), "not the batch default key");
    } else {
        assert_eq!(p.key.id(), spec.key_id, "signed with another key");
    }

    // URL.
    let url = validate::clean_text(Field::Url, spec.url).expect("accepted URL cleans");
    assert_eq!(p.url, url, "prepared URL is not the cleaned URL");
    assert_safe_text(&p.url);
    if !spec.bare_resource {
        assert!(
            check_url_shape(&p.url),
            "accepted a URL of the wrong shape: {:?}",
            p.url
        );
    } else {
        assert!(
            !p.url.contains("://"),
            "bare resource with a scheme: {:?}",
            p.url
        );
    }
    assert!(
        !p.url
            .split_once('?')
            .is_some_and(|(_, q)| q.split('&').any(|kv| {
                let name = kv.split_once('=').map_or(kv, |(n, _)| n);
                [
                    "Expires",
                    "Policy",
                    "Signature",
                    "Key-Pair-Id",
                    "Hash-Algorithm",
                ]
                .contains(&name)
            })),
        "URL already carries a signing parameter: {:?}",
        p.url
    );

    // Expiry.
    assert_eq!(Some(p.expires), model_expiry(spec, ctx), "wrong expiry");

    // What was asked.
    let resource = match spec.policy_resource {
        "" => p.url.clone(),
        r => validate::clean_text(Field::PolicyResource, r)
            .expect("accepted resource cleans")
            .into_owned(),
    };
    assert_safe_text(&resource);
    let not_before = (spec.not_before != 0).then_some(spec.not_before);
    let ip = match spec.ip_range {
        "" => None,
        text => Some(text.parse::<IpRange>().expect("accepted ip_range parses")),
    };
    let custom = spec.custom_policy
        || ctx.custom_policy
        || !spec.policy_resource.is_empty()
        || not_before.is_some()
        || ip.is_some();
    assert_eq!(p.custom, custom, "custom flag");

    // The policy parses back to exactly that.
    let policy: Policy = serde_json::from_str(&p.policy)
        .unwrap_or_else(|e| panic!("policy is not the expected JSON ({e}): {}", p.policy));
    assert_eq!(policy.statement.len(), 1, "{}", p.policy);
    let st = &policy.statement[0];
    assert_eq!(st.resource, resource, "Resource in {}", p.policy);
    assert_eq!(st.condition.date_less_than.epoch, p.expires, "DateLessThan");
    assert_eq!(
        st.condition.date_greater_than.as_ref().map(|d| d.epoch),
        not_before,
        "DateGreaterThan in {}",
        p.policy
    );
    match (&st.condition.ip_address, ip) {
        (None, None) => {}
        (Some(got), Some(want)) => {
            assert_eq!(got.source_ip, want.to_string(), "SourceIp");
            assert_eq!(
                got.source_ip.parse::<IpRange>().ok(),
                Some(want),
                "SourceIp round trip"
            );
        }
        (got, want) => panic!(
            "IpAddress present={} but asked={}: {}",
            got.is_some(),
            want.is_some(),
            p.policy
        ),
    }
    if !custom {
        assert_eq!(
            p.policy,
            canned_json(&p.url, p.expires),
            "canned policy bytes"
        );
    }
    if let Some(nb) = not_before {
        assert!(
            0 < nb && nb < p.expires,
            "not_before {nb} vs expiry {}",
            p.expires
        );
    }
    if ctx.grant.is_some() {
        check_granted(p, &st.resource, custom || !spec.policy_resource.is_empty());
    }
}

/// Prepares one item and checks it.
pub fn prepare_and_check(spec: &ItemSpec<'_>, ctx: &BatchContext) {
    let result = validate::prepare(spec, ctx, keys());
    check_prepared(spec, ctx, &result);
}
