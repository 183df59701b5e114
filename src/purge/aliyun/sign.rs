//! Alibaba Cloud request signatures and their encodings: the RPC signature
//! (`SignatureVersion=1.0`, HMAC-SHA1 over `METHOD&%2F&percentEncode(sorted query)`, key
//! `secret + "&"`) and `ACS3-HMAC-SHA256` (V3: SHA-256 of the canonical request, HMAC-SHA256
//! with the secret, in the `Authorization` header). Both are pinned by vectors the official
//! Python SDKs produced (`tests/fixtures/aliyun_vectors.json`, `scripts/gen_aliyun_vectors.py`).

use std::collections::BTreeMap;

use base64::Engine as _;
use hmac::{KeyInit, Mac};
use sha2::Digest as _;

/// An AccessKey secret. Its `Debug` and `Display` never show it.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// AccessKey pair (`ALIBABA_CLOUD_ACCESS_KEY_ID` / `ALIBABA_CLOUD_ACCESS_KEY_SECRET`).
#[derive(Clone)]
pub struct AliyunCredentials {
    /// AccessKey id (shown abbreviated in Debug).
    pub access_key_id: String,
    /// AccessKey secret.
    pub secret: Secret,
}

impl std::fmt::Debug for AliyunCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown: String = self.access_key_id.chars().take(4).collect();
        f.debug_struct("AliyunCredentials")
            .field("access_key_id", &format_args!("{shown}…"))
            .field("secret", &self.secret)
            .finish()
    }
}

impl AliyunCredentials {
    /// Reads `ALIBABA_CLOUD_ACCESS_KEY_ID` and `ALIBABA_CLOUD_ACCESS_KEY_SECRET`.
    pub fn from_env() -> Option<AliyunCredentials> {
        let id = std::env::var("ALIBABA_CLOUD_ACCESS_KEY_ID").ok()?;
        let secret = std::env::var("ALIBABA_CLOUD_ACCESS_KEY_SECRET").ok()?;
        if id.is_empty() || secret.is_empty() {
            return None;
        }
        Some(AliyunCredentials {
            access_key_id: id,
            secret: Secret(secret),
        })
    }
}

/// RFC 3986 percent-encoding: everything but `A-Z a-z 0-9 - _ . ~`, UTF-8, upper-case hex.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `k=v&…` over sorted keys, both percent-encoded.
pub fn canonical_query<'a>(params: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut pairs: Vec<(String, String)> = params
        .into_iter()
        .map(|(k, v)| (percent_encode(k), percent_encode(v)))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// RPC signature (SignatureVersion 1.0): string to sign and base64 HMAC-SHA1.
pub fn sign_v1(method: &str, params: &BTreeMap<String, String>, secret: &str) -> (String, String) {
    let canonical = canonical_query(params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let string_to_sign = format!("{method}&%2F&{}", percent_encode(&canonical));
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(format!("{secret}&").as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(string_to_sign.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    (string_to_sign, sig)
}

/// Lower-case hex of SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&sha2::Sha256::digest(data))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A request to sign with ACS3-HMAC-SHA256.
#[derive(Debug, Clone)]
pub struct V3Request<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// Path, `/` for RPC APIs.
    pub path: &'a str,
    /// Query parameters (unencoded).
    pub query: &'a [(String, String)],
    /// Headers to sign (any case; all of them are signed).
    pub headers: &'a [(String, String)],
    /// Hex SHA-256 of the body (`x-acs-content-sha256`).
    pub payload_hash: &'a str,
}

/// The canonical request, the signed header list and the `Authorization` value.
pub fn sign_v3(req: &V3Request<'_>, access_key_id: &str, secret: &str) -> (String, String) {
    let query = canonical_query(req.query.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in req.headers {
        headers
            .entry(k.to_ascii_lowercase())
            .or_default()
            .push(v.trim().to_owned());
    }
    let mut canonical_headers = String::new();
    for (k, vs) in &mut headers {
        vs.sort();
        canonical_headers.push_str(&format!("{k}:{}\n", vs.join(",")));
    }
    let signed: Vec<&str> = headers.keys().map(String::as_str).collect();
    let signed = signed.join(";");
    let canonical_request = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method, req.path, query, canonical_headers, signed, req.payload_hash
    );
    let string_to_sign = format!(
        "ACS3-HMAC-SHA256\n{}",
        sha256_hex(canonical_request.as_bytes())
    );
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(string_to_sign.as_bytes());
    let sig = hex(&mac.finalize().into_bytes());
    (
        canonical_request,
        format!(
            "ACS3-HMAC-SHA256 Credential={access_key_id},SignedHeaders={signed},Signature={sig}"
        ),
    )
}

/// UTC `YYYY-MM-DDTHH:MM:SSZ` for unix seconds.
pub fn iso8601(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_rpc_signature_example() {
        let mut p = BTreeMap::new();
        for (k, v) in [
            ("AccessKeyId", "testid"),
            ("Action", "DescribeRegions"),
            ("Format", "XML"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"),
            ("SignatureVersion", "1.0"),
            ("Timestamp", "2016-02-23T12:46:24Z"),
            ("Version", "2014-05-26"),
        ] {
            p.insert(k.to_owned(), v.to_owned());
        }
        let (sts, sig) = sign_v1("GET", &p, "testsecret");
        assert!(sts.starts_with("GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeRegions"));
        assert_eq!(sig, "OLeaidS1JvxuMvnyHOwuJ+uX5qY=");
    }

    #[test]
    fn encoding_and_dates() {
        assert_eq!(percent_encode("a b*~/+é"), "a%20b%2A~%2F%2B%C3%A9");
        assert_eq!(iso8601(1_456_231_584), "2016-02-23T12:46:24Z");
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00Z");
    }
}
