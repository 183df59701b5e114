//! What verification found: a [`Verdict`] with every [`Problem`] CloudFront would refuse
//! the request for, each of one [`Reason`].

/// Why CloudFront would refuse a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Missing or unreadable signing parameters, policy or cookies.
    Malformed,
    /// The signature does not match the policy under the key.
    Signature,
    /// `DateLessThan` has passed.
    Expired,
    /// `DateGreaterThan` has not passed yet.
    NotYetValid,
    /// The policy's resource does not match the URL.
    Resource,
    /// The client IP is outside the policy's `IpAddress`.
    Ip,
    /// `Key-Pair-Id` names no loaded key.
    UnknownKey,
}

/// One reason, with a message naming the values involved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The kind of problem.
    pub reason: Reason,
    /// What exactly is wrong.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// What verification found. `valid()` only when the signature checks out and no
/// problem was found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// The signature matches the policy under the given key.
    pub signature_valid: bool,
    /// `Key-Pair-Id` from the URL.
    pub key_pair_id: Option<String>,
    /// Custom (`Policy=`) rather than canned (`Expires=`).
    pub custom: bool,
    /// The policy JSON that was (or would have been) signed.
    pub policy: Option<String>,
    /// The URL with the signing parameters removed.
    pub unsigned_url: String,
    /// The policy's `Resource`.
    pub resource: Option<String>,
    /// `DateLessThan`.
    pub expires: Option<i64>,
    /// `DateGreaterThan`.
    pub not_before: Option<i64>,
    /// `IpAddress` / `AWS:SourceIp`.
    pub ip_range: Option<String>,
    /// Everything that makes CloudFront refuse this URL now; empty when valid.
    pub problems: Vec<Problem>,
}

impl Verdict {
    /// Valid signature and nothing else wrong.
    pub fn valid(&self) -> bool {
        self.signature_valid && self.problems.is_empty()
    }

    pub(super) fn problem(&mut self, reason: Reason, message: impl Into<String>) {
        self.problems.push(Problem {
            reason,
            message: message.into(),
        });
    }
}
