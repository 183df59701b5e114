//! What a caller may do once it is known who it is: grants (keys, URL prefixes, TTL, purge
//! targets), the literal reading of URLs and resources they are checked against, and rate
//! limits. Identity (tokens, certificates) is [`crate::auth`]'s.
//!
//! Signing code calls [`Grant::covers`], the one function that decides whether a string is
//! inside a grant, with exactly the string it is about to sign.

pub mod grant;
pub mod rate;
pub mod resource;

pub use grant::{Denial, Grant, GrantParts};
pub use rate::{RateError, TokenBucket};
pub use resource::{Prefix, PrefixError, TextKind};
