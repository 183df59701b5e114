//! A key that signs in crypto_mb lanes, with OpenSSL behind it for every lane that fails.

use std::sync::Arc;

use cdnsign_cryptomb::{LANES, MbError, P256Key, P256Lane, RSA2048_BYTES, Rsa2048Key, RsaLane};
use metrics::Counter;

use super::calibrate;
use super::engine::Engine;
use super::pkcs1;
use crate::signing::algorithm::{HashAlg, KeyKind, algorithm_label};
use crate::signing::backend::openssl::{OpensslKey, digest, parse_pkey};
use crate::signing::backend::{Parsed, PrivateKey, rsa_off_pool};
use crate::signing::errors::{CryptoError, KeyError};

/// The key material the lanes use.
enum LaneKey {
    Rsa(Rsa2048Key),
    P256(P256Key),
}

/// A digest of a message, as the lanes take it: 20 (SHA-1) or 32 (SHA-256) bytes.
#[derive(Debug, Clone, Copy)]
pub struct Digest {
    bytes: [u8; 32],
    len: usize,
}

impl Digest {
    /// Hashes `msg`.
    pub fn of(hash: HashAlg, msg: &[u8]) -> Digest {
        let (bytes, len) = digest(hash, msg);
        Digest { bytes, len }
    }

    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// As a 32-byte big-endian integer (a SHA-1 digest after 12 zero bytes), the way
    /// ECDSA on P-256 reads a shorter digest.
    fn right_aligned(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out[32 - self.len..].copy_from_slice(self.as_slice());
        out
    }
}

/// Why a lane was re-signed with OpenSSL (the `reason` label of
/// `cdnsign_multibuffer_fallbacks_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fallback {
    /// The RSA signature did not verify with the public key.
    VerifyFailed,
    /// The library reported an error for the lane or the call.
    LaneError,
}

impl Fallback {
    fn as_str(self) -> &'static str {
        match self {
            Fallback::VerifyFailed => "verify_failed",
            Fallback::LaneError => "lane_error",
        }
    }
}

/// A private key that signs up to 8 digests per crypto_mb call.
pub struct MbKey {
    id: String,
    hash: HashAlg,
    algorithm: &'static str,
    engine: Arc<Engine>,
    lane_key: LaneKey,
    fallback: OpensslKey,
    verify_failed: Counter,
    lane_error: Counter,
    /// The fewest signatures worth a lane computation on this CPU ([`calibrate`]).
    min_lane_fill: usize,
    /// Test builds: lanes (bit i = lane i) whose next RSA result is corrupted before the
    /// check, to prove the check catches it.
    #[cfg(test)]
    pub(crate) corrupt_next: std::sync::atomic::AtomicU8,
    /// Test builds: lanes the check caught (the metric's recorder is process-global).
    #[cfg(test)]
    pub(crate) verify_failures_seen: std::sync::atomic::AtomicU64,
}

/// Parses `pem` for the multi-buffer backend: RSA-2048 and P-256 keys sign in lanes; any
/// other key OpenSSL accepts signs with OpenSSL (CloudFront's keys are all one of the two).
pub(crate) fn parse(
    id: &str,
    pem: &str,
    hash: HashAlg,
    engine: &Arc<Engine>,
) -> Result<Parsed, KeyError> {
    let (kind, bits, pkey) = parse_pkey(id, pem)?;
    let lane_key = match kind {
        KeyKind::Rsa => pkey
            .rsa()
            .ok()
            .and_then(|r| Rsa2048Key::from_openssl(&r))
            .map(LaneKey::Rsa),
        KeyKind::EcdsaP256 => pkey
            .ec_key()
            .ok()
            .and_then(|e| P256Key::from_openssl(&e))
            .map(LaneKey::P256),
    };
    let fallback = OpensslKey::new(kind, pkey);
    let key: Box<dyn PrivateKey> = match lane_key {
        Some(lane_key) => {
            let algorithm = algorithm_label(kind, hash);
            let counter = |reason: Fallback| {
                metrics::counter!(
                    crate::metrics::MULTIBUFFER_FALLBACKS,
                    "algorithm" => algorithm,
                    "reason" => reason.as_str()
                )
            };
            let mut key = MbKey {
                id: id.to_owned(),
                hash,
                algorithm,
                engine: Arc::clone(engine),
                lane_key,
                fallback,
                verify_failed: counter(Fallback::VerifyFailed),
                lane_error: counter(Fallback::LaneError),
                min_lane_fill: LANES,
                #[cfg(test)]
                corrupt_next: std::sync::atomic::AtomicU8::new(0),
                #[cfg(test)]
                verify_failures_seen: std::sync::atomic::AtomicU64::new(0),
            };
            key.min_lane_fill = key.measure_min_lane_fill();
            Box::new(key)
        }
        None => Box::new(fallback),
    };
    Ok(Parsed { kind, bits, key })
}

impl MbKey {
    /// How many signatures a lane computation must carry to beat OpenSSL one by one with
    /// this kind of key on this CPU: measured the first time such a key is loaded.
    fn measure_min_lane_fill(&self) -> usize {
        let digests: Vec<Digest> = (0..LANES)
            .map(|i| {
                Digest::of(
                    self.hash,
                    format!("cdnsign lane calibration {i}").as_bytes(),
                )
            })
            .collect();
        calibrate::min_lane_fill(
            self.algorithm,
            || drop(self.sign_digests(&digests)),
            || drop(self.fallback.sign_digest(self.hash, digests[0].as_slice())),
        )
    }

    /// The digest this key signs over.
    pub fn hash(&self) -> HashAlg {
        self.hash
    }

    /// Signs up to [`LANES`] digests in one library call (more are split into calls of
    /// 8). Every result is a finished signature: RSA lanes are verified with the public key
    /// and any lane that failed is re-signed with OpenSSL.
    pub fn sign_digests(&self, digests: &[Digest]) -> Vec<Result<Vec<u8>, CryptoError>> {
        let mut out = Vec::with_capacity(digests.len());
        for chunk in digests.chunks(LANES) {
            match &self.lane_key {
                LaneKey::Rsa(key) => self.sign_rsa(key, chunk, &mut out),
                LaneKey::P256(key) => self.sign_p256(key, chunk, &mut out),
            }
        }
        out
    }

    fn sign_rsa(
        &self,
        key: &Rsa2048Key,
        digests: &[Digest],
        out: &mut Vec<Result<Vec<u8>, CryptoError>>,
    ) {
        let mb = self.engine.mb();
        let blocks: Vec<[u8; RSA2048_BYTES]> = digests
            .iter()
            .map(|d| pkcs1::encode(self.hash, d.as_slice()))
            .collect();
        let lanes: Vec<RsaLane<'_>> = blocks.iter().map(|input| RsaLane { input, key }).collect();
        let sigs: Vec<Result<[u8; RSA2048_BYTES], MbError>> = match mb.rsa2048_private_crt(&lanes) {
            Ok(sigs) => sigs,
            Err(e) => vec![Err(e); lanes.len()],
        };
        #[cfg(test)]
        let sigs = self.corrupt(sigs);
        // The check before release: s^e mod n must give the padded block back. A fault in
        // the CRT computation would otherwise leak the key's factors with the signature.
        let zero = [0u8; RSA2048_BYTES];
        let checks: Vec<RsaLane<'_>> = sigs
            .iter()
            .map(|s| RsaLane {
                input: s.as_ref().unwrap_or(&zero),
                key,
            })
            .collect();
        let back = match mb.rsa2048_public(&checks) {
            Ok(back) => back,
            Err(e) => vec![Err(e); checks.len()],
        };
        for (lane, ((sig, back), digest)) in sigs.iter().zip(&back).zip(digests).enumerate() {
            let verdict = match (sig, back) {
                (Ok(sig), Ok(back)) if *back == blocks[lane] => Ok(sig.to_vec()),
                (Ok(_), Ok(_)) => Err((Fallback::VerifyFailed, "signature did not verify")),
                (Err(e), _) | (_, Err(e)) => Err((Fallback::LaneError, e.code())),
            };
            out.push(verdict.or_else(|(why, detail)| self.fall_back(lane, why, detail, digest)));
        }
    }

    fn sign_p256(
        &self,
        key: &P256Key,
        digests: &[Digest],
        out: &mut Vec<Result<Vec<u8>, CryptoError>>,
    ) {
        let aligned: Vec<[u8; 32]> = digests.iter().map(Digest::right_aligned).collect();
        let lanes: Vec<P256Lane<'_>> = aligned
            .iter()
            .map(|digest| P256Lane { digest, key })
            .collect();
        let sigs = match self.engine.mb().p256_sign(&lanes) {
            Ok(sigs) => sigs,
            Err(e) => vec![Err(e); lanes.len()],
        };
        for (lane, (sig, digest)) in sigs.into_iter().zip(digests).enumerate() {
            out.push(match sig {
                Ok(sig) => Ok(sig.to_der()),
                Err(e) => self.fall_back(lane, Fallback::LaneError, e.code(), digest),
            });
        }
    }

    /// Re-signs one lane with OpenSSL, counting and logging why (no key material, no
    /// message: the key id, the lane and the library's status code).
    fn fall_back(
        &self,
        lane: usize,
        why: Fallback,
        detail: &str,
        digest: &Digest,
    ) -> Result<Vec<u8>, CryptoError> {
        #[cfg(test)]
        if why == Fallback::VerifyFailed {
            self.verify_failures_seen
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        match why {
            Fallback::VerifyFailed => self.verify_failed.increment(1),
            Fallback::LaneError => self.lane_error.increment(1),
        }
        tracing::error!(
            key_id = %self.id,
            algorithm = self.algorithm,
            lane,
            reason = why.as_str(),
            detail,
            "multi-buffer signature failed; re-signed with OpenSSL"
        );
        self.fallback.sign_digest(self.hash, digest.as_slice())
    }

    #[cfg(test)]
    fn corrupt(
        &self,
        mut sigs: Vec<Result<[u8; RSA2048_BYTES], MbError>>,
    ) -> Vec<Result<[u8; RSA2048_BYTES], MbError>> {
        let mask = self
            .corrupt_next
            .swap(0, std::sync::atomic::Ordering::SeqCst);
        for (lane, sig) in sigs.iter_mut().enumerate() {
            if mask & (1 << lane) != 0
                && let Ok(sig) = sig
            {
                sig[RSA2048_BYTES / 2] ^= 0x40;
            }
        }
        sigs
    }
}

impl PrivateKey for MbKey {
    /// One signature: OpenSSL's, which costs a fraction of an 8-lane computation (a fifth
    /// to a third, by CPU: [`calibrate`]).
    fn sign(&self, hash: HashAlg, msg: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let d = Digest::of(hash, msg);
        self.fallback.sign_digest(hash, d.as_slice())
    }

    fn sign_ecdsa_here(&self, hash: HashAlg, msg: &[u8]) -> Result<Vec<u8>, CryptoError> {
        match self.lane_key {
            // One signature on the caller's thread: OpenSSL's single signature costs less
            // than a whole 8-lane computation.
            LaneKey::P256(_) => self.fallback.sign_ecdsa_here(hash, msg),
            LaneKey::Rsa(_) => Err(rsa_off_pool()),
        }
    }

    fn lanes(&self) -> usize {
        LANES
    }

    fn min_lane_fill(&self) -> usize {
        self.min_lane_fill
    }

    fn sign_one_by_one(&self, hash: HashAlg, msgs: &[&[u8]]) -> Vec<Result<Vec<u8>, CryptoError>> {
        msgs.iter()
            .map(|m| {
                let d = Digest::of(hash, m);
                self.fallback.sign_digest(hash, d.as_slice())
            })
            .collect()
    }

    fn sign_lanes(&self, hash: HashAlg, msgs: &[&[u8]]) -> Vec<Result<Vec<u8>, CryptoError>> {
        debug_assert_eq!(hash, self.hash);
        let digests: Vec<Digest> = msgs.iter().map(|m| Digest::of(self.hash, m)).collect();
        self.sign_digests(&digests)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::signing::backend::multibuffer::tests::engine_or_skip;

    #[test]
    fn a_corrupted_lane_is_caught_by_the_check_and_resigned_with_openssl() {
        let Some(engine) =
            engine_or_skip("a_corrupted_lane_is_caught_by_the_check_and_resigned_with_openssl")
        else {
            return;
        };
        let pem = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("config/dev-keys/TEST-ONLY-cloudfront.pem"),
        )
        .expect("key");
        let pem = crate::signing::backend::pem_body(&pem);
        let parsed = parse("K1", pem, HashAlg::Sha1, &engine).expect("parse");
        let ossl = crate::signing::backend::openssl::parse("K1", pem).expect("openssl");
        // Build the MbKey itself to reach its test hook.
        let (kind, _, pkey) = parse_pkey("K1", pem).expect("pkey");
        let rsa = pkey.rsa().expect("rsa");
        let key = MbKey {
            id: "K1".into(),
            hash: HashAlg::Sha1,
            algorithm: "rsa_sha1",
            engine,
            lane_key: LaneKey::Rsa(Rsa2048Key::from_openssl(&rsa).expect("2048")),
            fallback: OpensslKey::new(kind, pkey),
            verify_failed: Counter::noop(),
            lane_error: Counter::noop(),
            min_lane_fill: 3,
            corrupt_next: std::sync::atomic::AtomicU8::new(0),
            verify_failures_seen: std::sync::atomic::AtomicU64::new(0),
        };
        let msgs: Vec<Vec<u8>> = (0..6).map(|i| format!("policy {i}").into_bytes()).collect();
        let want: Vec<Vec<u8>> = msgs
            .iter()
            .map(|m| ossl.key.sign(HashAlg::Sha1, m).expect("openssl"))
            .collect();
        let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();

        // Clean run: every lane from crypto_mb, none re-signed.
        let clean = key.sign_lanes(HashAlg::Sha1, &refs);
        assert_eq!(key.verify_failures_seen.load(Ordering::SeqCst), 0);
        // Lanes 0 and 2 corrupted after the private operation: the check catches both,
        // OpenSSL re-signs them, and every released signature is still the right one.
        key.corrupt_next.store(0b101, Ordering::SeqCst);
        let caught = key.sign_lanes(HashAlg::Sha1, &refs);
        assert_eq!(key.verify_failures_seen.load(Ordering::SeqCst), 2);
        for (i, w) in want.iter().enumerate() {
            assert_eq!(clean[i].as_ref().expect("clean"), w, "lane {i}");
            assert_eq!(caught[i].as_ref().expect("re-signed"), w, "lane {i}");
        }
        // The parse path builds the same kind of key (8 lanes).
        assert_eq!(parsed.key.lanes(), 8);
    }
}
