//! CloudFront policy documents and the encodings around them.
//!
//! The JSON is written by hand rather than through `serde_json` for two reasons: the
//! bytes must match botocore's `CloudFrontSigner` exactly (key order, no whitespace), and
//! it is the hot path. That is only safe because [`super::validate`] guarantees a resource
//! never contains a character JSON would escape (`"`, `\`, control characters, non-ASCII).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use base64::Engine as _;
use base64::alphabet::Alphabet;
use base64::engine::{GeneralPurpose, GeneralPurposeConfig};

/// Standard base64 with CloudFront's substitutions `+`→`-` and `/`→`~`. The engine
/// writes no padding; [`cf_base64`] appends CloudFront's `_` padding itself, because a
/// base64 engine's pad byte is always `=`.
const CF_ALPHABET: Alphabet =
    match Alphabet::new("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-~") {
        Ok(a) => a,
        Err(_) => panic!("CloudFront base64 alphabet is valid"),
    };
const CF_ENGINE: GeneralPurpose = GeneralPurpose::new(
    &CF_ALPHABET,
    GeneralPurposeConfig::new().with_encode_padding(false),
);

/// Encodes bytes in CloudFront's URL-safe base64 (`+`→`-`, `=`→`_`, `/`→`~`).
pub fn cf_base64(bytes: &[u8]) -> String {
    let mut out = CF_ENGINE.encode(bytes);
    let pad = (3 - bytes.len() % 3) % 3;
    out.extend(std::iter::repeat_n('_', pad));
    out
}

/// Decodes CloudFront's URL-safe base64; `None` when the text is not valid.
pub fn cf_base64_decode(text: &str) -> Option<Vec<u8>> {
    let standard: String = text
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '=',
            '~' => '/',
            other => other,
        })
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(standard)
        .ok()
}

/// A client address restriction (`IpAddress.AWS:SourceIp`): an address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpRange {
    addr: IpAddr,
    prefix: u8,
}

/// Why an IP range did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpRangeError {
    /// The address part is not an IPv4 or IPv6 address.
    #[error("not an IPv4 or IPv6 address or CIDR")]
    BadAddress,
    /// The prefix length is not a number or exceeds the address width.
    #[error("prefix length must be 0-{max} for this address family")]
    BadPrefix {
        /// 32 for IPv4, 128 for IPv6.
        max: u8,
    },
}

impl IpRange {
    /// The address as given (host bits are kept: CloudFront matches on the prefix).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// Prefix length; a bare address parses as /32 or /128.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` falls inside this range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpRange {
    type Err = IpRangeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| IpRangeError::BadAddress)?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => {
                // Only plain decimal digits: `u8::from_str` would accept a leading `+`.
                if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(IpRangeError::BadPrefix { max });
                }
                let n: u8 = p.parse().map_err(|_| IpRangeError::BadPrefix { max })?;
                if n > max {
                    return Err(IpRangeError::BadPrefix { max });
                }
                n
            }
        };
        Ok(IpRange { addr, prefix })
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// What a policy says, before it is written out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySpec<'a> {
    /// The resource (URL or wildcard pattern), already validated.
    pub resource: &'a str,
    /// `DateLessThan`, unix seconds.
    pub expires: i64,
    /// `DateGreaterThan`, unix seconds.
    pub not_before: Option<i64>,
    /// `IpAddress.AWS:SourceIp`.
    pub ip: Option<IpRange>,
}

impl PolicySpec<'_> {
    /// Writes the custom policy JSON in botocore's key order: `DateLessThan`, `IpAddress`,
    /// `DateGreaterThan`.
    pub fn custom_json(&self) -> String {
        use fmt::Write as _;
        let mut out = String::with_capacity(self.resource.len() + 160);
        out.push_str(r#"{"Statement":[{"Resource":""#);
        out.push_str(self.resource);
        let _ = write!(
            out,
            r#"","Condition":{{"DateLessThan":{{"AWS:EpochTime":{}}}"#,
            self.expires
        );
        if let Some(ip) = self.ip {
            let _ = write!(out, r#","IpAddress":{{"AWS:SourceIp":"{ip}"}}"#);
        }
        if let Some(start) = self.not_before {
            let _ = write!(out, r#","DateGreaterThan":{{"AWS:EpochTime":{start}}}"#);
        }
        out.push_str("}}]}");
        out
    }
}

/// Writes the canned policy for `url`, byte-exact with CloudFront and botocore.
pub fn canned_json(url: &str, expires: i64) -> String {
    use fmt::Write as _;
    let mut out = String::with_capacity(url.len() + 90);
    out.push_str(r#"{"Statement":[{"Resource":""#);
    out.push_str(url);
    let _ = write!(
        out,
        r#"","Condition":{{"DateLessThan":{{"AWS:EpochTime":{expires}}}}}}}]}}"#
    );
    out
}

/// CloudFront's wildcard match: `*` matches any run of characters (including none),
/// `?` exactly one. Linear time, no recursion, so hostile patterns cannot blow up.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        // A `*` in the pattern is always a wildcard, even where the text has a `*` too.
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn canned_policy_is_byte_exact() {
        assert_eq!(
            canned_json("https://d111111abcdef8.cloudfront.net/a.ts", 1767225600),
            r#"{"Statement":[{"Resource":"https://d111111abcdef8.cloudfront.net/a.ts","Condition":{"DateLessThan":{"AWS:EpochTime":1767225600}}}]}"#
        );
    }

    #[test]
    fn custom_policy_orders_conditions_like_botocore() {
        let spec = PolicySpec {
            resource: "https://d.example/hls/*",
            expires: 20,
            not_before: Some(10),
            ip: Some("192.0.2.0/24".parse().expect("cidr")),
        };
        assert_eq!(
            spec.custom_json(),
            r#"{"Statement":[{"Resource":"https://d.example/hls/*","Condition":{"DateLessThan":{"AWS:EpochTime":20},"IpAddress":{"AWS:SourceIp":"192.0.2.0/24"},"DateGreaterThan":{"AWS:EpochTime":10}}}]}"#
        );
        let minimal = PolicySpec {
            resource: "r",
            expires: 5,
            not_before: None,
            ip: None,
        };
        assert_eq!(
            minimal.custom_json(),
            r#"{"Statement":[{"Resource":"r","Condition":{"DateLessThan":{"AWS:EpochTime":5}}}]}"#
        );
    }

    #[test]
    fn custom_policy_is_valid_json() {
        let spec = PolicySpec {
            resource: "https://d.example/x?y=1",
            expires: 2000000000,
            not_before: Some(1),
            ip: Some("2001:db8::/32".parse().expect("cidr")),
        };
        let v: serde_json::Value = serde_json::from_str(&spec.custom_json()).expect("json");
        assert_eq!(
            v["Statement"][0]["Condition"]["IpAddress"]["AWS:SourceIp"],
            "2001:db8::/32"
        );
    }

    #[test]
    fn base64_substitutions() {
        // 0xfb 0xff -> "+/8=" in standard base64.
        assert_eq!(cf_base64(&[0xfb, 0xff]), "-~8_");
        assert_eq!(cf_base64(&[0xfb]), "-w__");
        assert_eq!(cf_base64(b"abc"), "YWJj");
        assert_eq!(cf_base64_decode("-~8_").as_deref(), Some(&[0xfb, 0xff][..]));
        assert_eq!(cf_base64_decode("-w__").as_deref(), Some(&[0xfb][..]));
        assert_eq!(cf_base64_decode("!!"), None);
    }

    #[test]
    fn ip_ranges() {
        let bare: IpRange = "203.0.113.7".parse().expect("ip");
        assert_eq!(bare.to_string(), "203.0.113.7/32");
        let v6: IpRange = "2001:db8::1".parse().expect("ip");
        assert_eq!(v6.to_string(), "2001:db8::1/128");
        assert!(
            "192.0.2.0/24"
                .parse::<IpRange>()
                .expect("cidr")
                .contains("192.0.2.200".parse().expect("ip"))
        );
        assert!(
            !"192.0.2.0/24"
                .parse::<IpRange>()
                .expect("cidr")
                .contains("192.0.3.1".parse().expect("ip"))
        );
        assert!(
            "0.0.0.0/0"
                .parse::<IpRange>()
                .expect("cidr")
                .contains("8.8.8.8".parse().expect("ip"))
        );
        assert_eq!(
            "10.0.0.0/33".parse::<IpRange>(),
            Err(IpRangeError::BadPrefix { max: 32 })
        );
        assert_eq!(
            "10.0.0.0/+8".parse::<IpRange>(),
            Err(IpRangeError::BadPrefix { max: 32 })
        );
        assert_eq!("nope".parse::<IpRange>(), Err(IpRangeError::BadAddress));
        assert_eq!(
            "::/129".parse::<IpRange>(),
            Err(IpRangeError::BadPrefix { max: 128 })
        );
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("https://d/hls/*", "https://d/hls/a/b.ts"));
        assert!(wildcard_match("https://d/hls/*", "https://d/hls/"));
        assert!(!wildcard_match("https://d/hls/*", "https://d/other"));
        assert!(wildcard_match("https://d/seg?.ts", "https://d/seg1.ts"));
        assert!(!wildcard_match("https://d/seg?.ts", "https://d/seg10.ts"));
        assert!(wildcard_match("http*://d/*.ts", "https://d/x/y.ts"));
        assert!(wildcard_match("*", ""));
        assert!(!wildcard_match("", "x"));
        assert!(wildcard_match("a*b*c", "aXXbYYc"));
        // A '*' in the text does not stop the pattern's '*' from matching more.
        assert!(wildcard_match("https://d/hls*", "https://d/hls*/x"));
        assert!(!wildcard_match("a*b*c", "aXXbYY"));
    }

    proptest! {
        #[test]
        fn base64_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let enc = cf_base64(&bytes);
            prop_assert!(enc.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_~".contains(&b)));
            prop_assert_eq!(cf_base64_decode(&enc), Some(bytes));
        }

        #[test]
        fn literal_pattern_matches_itself(s in "[a-z0-9/:.]{0,40}") {
            prop_assert!(wildcard_match(&s, &s));
            let star = format!("{s}*");
            let text = format!("{}tail", s);
            prop_assert!(wildcard_match(&star, &text));
        }

        #[test]
        fn wildcard_never_panics(p in ".{0,30}", t in ".{0,30}") {
            let _ = wildcard_match(&p, &t);
        }

        #[test]
        fn ip_parse_never_panics(s in ".{0,50}") {
            let _ = s.parse::<IpRange>();
        }
    }
}
