//! gRPC services: thin adapters from protobuf to the domain modules.
//!
//! - [`layers`]: per-call span, request id, request metrics (tower layers).
//! - [`sign`]: `cdnsign.v1.Signer` (URLs, cookies, streaming), each batch through the
//!   steps in `batch` (limits, rate, admission, where it signs, metrics, audit).
//! - [`playlist`]: `Signer/SignPlaylist` (whole HLS and DASH playlists).
//! - [`verify`]: `Signer/VerifyUrls` and `VerifyCookies`.
//! - [`purge`]: `cdnsign.v1.Purger` (CDN cache purges).
//! - [`status`]: the single mapping from domain errors to gRPC codes.

mod batch;
mod cookies;
pub mod layers;
pub mod playlist;
pub mod purge;
pub mod sign;
pub mod status;
pub mod verify;
