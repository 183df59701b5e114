//! Whether a request may run: its signature (ACS3 or RPC v1), clock, nonce, version, throttle.

use std::collections::{BTreeMap, HashMap};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use cdnsign::purge::aliyun::sha256_hex;
use serde_json::{Value, json};

use super::oracle::ORACLE;
use super::{AliyunState, Refusal, form_decode, now_unix, parse_iso};

/// A request as it arrived on the wire, its query and form body decoded.
pub(super) struct Request<'a> {
    method: &'a Method,
    uri: &'a Uri,
    headers: &'a HeaderMap,
    body: &'a Bytes,
    query: Vec<(String, String)>,
    form: Vec<(String, String)>,
}

impl<'a> Request<'a> {
    pub(super) fn new(
        method: &'a Method,
        uri: &'a Uri,
        headers: &'a HeaderMap,
        body: &'a Bytes,
    ) -> Request<'a> {
        let query = form_decode(uri.query().unwrap_or_default());
        let body_str = String::from_utf8_lossy(body).into_owned();
        let form = if headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"))
        {
            form_decode(&body_str)
        } else {
            Vec::new()
        };
        Request {
            method,
            uri,
            headers,
            body,
            query,
            form,
        }
    }

    /// A header's value, `""` when absent or not text.
    fn header(&self, k: &str) -> &'a str {
        self.headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// Query then form parameters (a form value wins).
    fn all_params(&self) -> BTreeMap<String, String> {
        let mut all: BTreeMap<String, String> = self.query.iter().cloned().collect();
        all.extend(self.form.iter().cloned());
        all
    }

    /// The action a refusal is recorded under: `x-acs-action` when ACS3-signed, none for
    /// another Authorization, else the `Action` parameter.
    pub(super) fn action(&self) -> String {
        let auth = self.header("authorization");
        if auth.is_empty() {
            self.all_params().get("Action").cloned().unwrap_or_default()
        } else if auth.starts_with("ACS3-HMAC-SHA256 ") {
            self.header("x-acs-action").to_owned()
        } else {
            String::new()
        }
    }
}

/// A request whose AccessKey and signature checked out.
pub(super) struct Signed {
    /// `v1` or `v3`.
    pub(super) signature: &'static str,
    /// API version asked for.
    pub(super) version: String,
    /// SignatureNonce.
    pub(super) nonce: String,
    /// When it was signed, `YYYY-MM-DDTHH:MM:SSZ`.
    pub(super) timestamp: String,
    /// Business parameters.
    pub(super) params: BTreeMap<String, String>,
}

/// Checks the AccessKey and the signature: ACS3-HMAC-SHA256 when there is an
/// Authorization header, RPC v1 HMAC-SHA1 parameters otherwise.
pub(super) fn authenticate(
    keys: &HashMap<String, String>,
    request: &Request<'_>,
) -> Result<Signed, Refusal> {
    let auth = request.header("authorization");
    if auth.is_empty() {
        v1(keys, request)
    } else {
        v3(keys, request, auth)
    }
}

/// ACS3-HMAC-SHA256: the Authorization header signs host and every x-acs-* header.
fn v3(
    keys: &HashMap<String, String>,
    request: &Request<'_>,
    auth: &str,
) -> Result<Signed, Refusal> {
    let Some(rest) = auth.strip_prefix("ACS3-HMAC-SHA256 ") else {
        return Err(Refusal::bad(
            "IncompleteSignature",
            "The request signature does not conform to Aliyun standards.",
        ));
    };
    let mut fields = HashMap::new();
    for part in rest.split(',') {
        if let Some((k, v)) = part.trim().split_once('=') {
            fields.insert(k.to_owned(), v.to_owned());
        }
    }
    let (Some(ak), Some(signed), Some(sig)) = (
        fields.get("Credential"),
        fields.get("SignedHeaders"),
        fields.get("Signature"),
    ) else {
        return Err(Refusal::bad(
            "IncompleteSignature",
            "Authorization lacks Credential, SignedHeaders or Signature.",
        ));
    };
    let signed: Vec<&str> = signed.split(';').collect();
    for required in [
        "host",
        "x-acs-action",
        "x-acs-version",
        "x-acs-date",
        "x-acs-signature-nonce",
        "x-acs-content-sha256",
    ] {
        if !signed.contains(&required) {
            return Err(Refusal::bad(
                "IncompleteSignature",
                format!("SignedHeaders must include {required}."),
            ));
        }
    }
    for (name, _) in request.headers.iter() {
        let n = name.as_str();
        if n.starts_with("x-acs-") && !signed.contains(&n) {
            return Err(Refusal::bad(
                "IncompleteSignature",
                format!("Header {n} is not signed."),
            ));
        }
    }
    let Some(secret) = keys.get(ak.as_str()).cloned() else {
        return Err(unknown_key());
    };
    let payload = sha256_hex(request.body);
    if payload != request.header("x-acs-content-sha256") {
        return Err(Refusal::bad(
            "SignatureDoesNotMatch",
            "The request body does not match x-acs-content-sha256.",
        ));
    }
    // The official SDK computes what the signature must be, from the request as received.
    let signed_headers: serde_json::Map<String, Value> = signed
        .iter()
        .map(|h| ((*h).to_owned(), Value::from(request.header(h))))
        .collect();
    let query_map: serde_json::Map<String, Value> = request
        .query
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
        .collect();
    let expected = ORACLE
        .ask(json!({
            "kind": "v3",
            "method": request.method.as_str(),
            "path": request.uri.path(),
            "query": query_map,
            "headers": signed_headers,
            "payload_hash": payload,
            "ak": ak,
            "secret": secret,
        }))
        .map_err(oracle_failed)?;
    let expected = expected["authorization"].as_str().unwrap_or_default();
    if !expected.ends_with(&format!("Signature={sig}")) {
        return Err(signature_mismatch());
    }
    Ok(Signed {
        signature: "v3",
        version: request.header("x-acs-version").to_owned(),
        nonce: request.header("x-acs-signature-nonce").to_owned(),
        timestamp: request.header("x-acs-date").to_owned(),
        params: request.all_params(),
    })
}

/// RPC v1: HMAC-SHA1 over the query and form parameters, signed in `Signature`.
fn v1(keys: &HashMap<String, String>, request: &Request<'_>) -> Result<Signed, Refusal> {
    let mut all = request.all_params();
    for required in [
        "AccessKeyId",
        "Signature",
        "SignatureMethod",
        "SignatureVersion",
        "SignatureNonce",
        "Timestamp",
        "Version",
        "Action",
    ] {
        if all.get(required).is_none_or(|v| v.is_empty()) {
            return Err(Refusal::bad(
                format!("Missing{required}"),
                format!("{required} is mandatory for this action."),
            ));
        }
    }
    if all["SignatureMethod"] != "HMAC-SHA1" || all["SignatureVersion"] != "1.0" {
        return Err(Refusal::bad(
            "InvalidSignatureMethod",
            "Specified signature method is not supported.",
        ));
    }
    let Some(secret) = keys.get(&all["AccessKeyId"]).cloned() else {
        return Err(unknown_key());
    };
    let sig = all.remove("Signature").unwrap_or_default();
    let expected = ORACLE
        .ask(json!({
            "kind": "v1",
            "method": request.method.as_str(),
            "params": all,
            "secret": secret,
        }))
        .map_err(oracle_failed)?;
    if expected["signature"].as_str() != Some(sig.as_str()) {
        return Err(signature_mismatch());
    }
    let version = all["Version"].clone();
    let nonce = all["SignatureNonce"].clone();
    let timestamp = all["Timestamp"].clone();
    for k in [
        "AccessKeyId",
        "SignatureMethod",
        "SignatureVersion",
        "SignatureNonce",
        "Timestamp",
        "Version",
        "Action",
        "Format",
        "SignatureType",
    ] {
        all.remove(k);
    }
    Ok(Signed {
        signature: "v1",
        version,
        nonce,
        timestamp,
        params: all,
    })
}

fn unknown_key() -> Refusal {
    Refusal::new(
        StatusCode::NOT_FOUND,
        "InvalidAccessKeyId.NotFound",
        "Specified access key is not found.",
    )
}

/// The SDK signer could not judge the request: refused under a code no real answer has,
/// so the test that sent it fails naming it.
fn oracle_failed(why: String) -> Refusal {
    Refusal::bad("FakeOracleError", why)
}

fn signature_mismatch() -> Refusal {
    Refusal::bad(
        "SignatureDoesNotMatch",
        "Specified signature is not matched with our calculation.",
    )
}

/// After the signature: timestamp well formed and within 15 minutes, nonce never seen
/// (recorded here), Version 2018-05-10, and the throttle (`throttle_next`, spared by
/// DescribeRefreshQuota).
pub(super) fn admit(st: &mut AliyunState, signed: &Signed, action: &str) -> Result<(), Refusal> {
    match parse_iso(&signed.timestamp) {
        None => {
            return Err(Refusal::bad(
                "InvalidTimeStamp.Format",
                "Specified time stamp or date value is not well formatted.",
            ));
        }
        Some(t) if (t - now_unix()).abs() > 15 * 60 => {
            return Err(Refusal::bad(
                "InvalidTimeStamp.Expired",
                "Specified time stamp or date value is expired.",
            ));
        }
        Some(_) => {}
    }
    if signed.nonce.is_empty() || !st.nonces.insert(signed.nonce.clone()) {
        return Err(Refusal::bad(
            "SignatureNonceUsed",
            "Specified signature nonce was used already.",
        ));
    }
    if signed.version != "2018-05-10" {
        return Err(Refusal::bad(
            "InvalidVersion",
            "Specified parameter Version is not valid.",
        ));
    }
    if st.throttle_next > 0 && action != "DescribeRefreshQuota" {
        st.throttle_next -= 1;
        return Err(Refusal::bad(
            "Throttling.User",
            "Request was denied due to user flow control.",
        ));
    }
    Ok(())
}
