//! RSA-2048 private (CRT) and public operations, 8 lanes per call.

use std::ptr;

use foreign_types_shared::ForeignType as _;
use openssl::bn::BigNum;
use openssl::pkey::Private;
use openssl::rsa::RsaRef;

use crate::{CryptoMb, LANES, MbError, lane_status};

/// Bytes of an RSA-2048 modulus, input block and signature.
pub const RSA2048_BYTES: usize = 256;
const BITS: std::ffi::c_int = 2048;

/// The numbers of an RSA-2048 private key the library needs, copied out of an OpenSSL key.
pub struct Rsa2048Key {
    p: BigNum,
    q: BigNum,
    dp: BigNum,
    dq: BigNum,
    iq: BigNum,
    n: BigNum,
    e: BigNum,
}

impl std::fmt::Debug for Rsa2048Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rsa2048Key(<redacted>)")
    }
}

impl Rsa2048Key {
    /// Copies the CRT parameters out of `rsa`; `None` unless it is a 2048-bit key with
    /// all of them (keys from PEM files always have them).
    pub fn from_openssl(rsa: &RsaRef<Private>) -> Option<Rsa2048Key> {
        if rsa.n().num_bits() != BITS {
            return None;
        }
        let own = |b: Option<&openssl::bn::BigNumRef>| b.and_then(|b| b.to_owned().ok());
        Some(Rsa2048Key {
            p: own(rsa.p())?,
            q: own(rsa.q())?,
            dp: own(rsa.dmp1())?,
            dq: own(rsa.dmq1())?,
            iq: own(rsa.iqmp())?,
            n: rsa.n().to_owned().ok()?,
            e: rsa.e().to_owned().ok()?,
        })
    }
}

/// One RSA operation: a 256-byte big-endian input block (for signing, the PKCS#1 v1.5
/// padded digest; for verifying, the signature) and the key.
#[derive(Debug, Clone, Copy)]
pub struct RsaLane<'a> {
    /// Input block, big-endian, numerically below the modulus.
    pub input: &'a [u8; RSA2048_BYTES],
    /// Key.
    pub key: &'a Rsa2048Key,
}

type Block = [u8; RSA2048_BYTES];

impl CryptoMb {
    /// `input^d mod n` for up to 8 lanes (`mbx_rsa_private_crt_ssl_mb8`), one result per
    /// lane in order. The CRT computation is not checked here: verify before release.
    pub fn rsa2048_private_crt(
        &self,
        lanes: &[RsaLane<'_>],
    ) -> Result<Vec<Result<Block, MbError>>, MbError> {
        let n = self.check_lanes(lanes.len())?;
        let mut out = [[0u8; RSA2048_BYTES]; LANES];
        let mut to = [ptr::null_mut::<u8>(); LANES];
        for (slot, block) in to.iter_mut().zip(out.iter_mut()).take(n) {
            *slot = block.as_mut_ptr();
        }
        let from = pointers(lanes, |l| l.input.as_ptr());
        let p = pointers(lanes, |l| l.key.p.as_ptr().cast_const());
        let q = pointers(lanes, |l| l.key.q.as_ptr().cast_const());
        let dp = pointers(lanes, |l| l.key.dp.as_ptr().cast_const());
        let dq = pointers(lanes, |l| l.key.dq.as_ptr().cast_const());
        let iq = pointers(lanes, |l| l.key.iq.as_ptr().cast_const());
        // SAFETY: the function pointer comes from the library `self` keeps loaded and has
        // the prototype of `mbx_rsa_private_crt_ssl_mb8` (rsa.h). Each argument is an array
        // of 8 pointers, as the prototype requires: lanes 0..n point at live data (256-byte
        // inputs borrowed for this call, 256-byte outputs in `out`, BIGNUMs owned by keys
        // borrowed for this call), lanes n..8 are null, which the library reports per lane
        // (MBX_STATUS_NULL_PARAM_ERR) without touching them. The library only reads the
        // inputs and BIGNUMs and writes at most 256 bytes (2048 bits) per output. All the
        // arrays outlive the call, which does not keep any pointer.
        let status = unsafe {
            (self.fns.rsa_private_crt)(
                from.as_ptr(),
                to.as_ptr(),
                p.as_ptr(),
                q.as_ptr(),
                dp.as_ptr(),
                dq.as_ptr(),
                iq.as_ptr(),
                BITS,
            )
        };
        Ok(collect(status, n, out))
    }

    /// `input^e mod n` for up to 8 lanes (`mbx_rsa_public_ssl_mb8`): the signature check.
    pub fn rsa2048_public(
        &self,
        lanes: &[RsaLane<'_>],
    ) -> Result<Vec<Result<Block, MbError>>, MbError> {
        let n = self.check_lanes(lanes.len())?;
        let mut out = [[0u8; RSA2048_BYTES]; LANES];
        let mut to = [ptr::null_mut::<u8>(); LANES];
        for (slot, block) in to.iter_mut().zip(out.iter_mut()).take(n) {
            *slot = block.as_mut_ptr();
        }
        let from = pointers(lanes, |l| l.input.as_ptr());
        let e = pointers(lanes, |l| l.key.e.as_ptr().cast_const());
        let m = pointers(lanes, |l| l.key.n.as_ptr().cast_const());
        // SAFETY: as in `rsa2048_private_crt`: a function of the prototype
        // `mbx_rsa_public_ssl_mb8` (rsa.h) from the loaded library, arrays of 8 pointers
        // with live data in lanes 0..n and nulls after, 256-byte outputs we own, nothing
        // retained after the call.
        let status = unsafe {
            (self.fns.rsa_public)(from.as_ptr(), to.as_ptr(), e.as_ptr(), m.as_ptr(), BITS)
        };
        Ok(collect(status, n, out))
    }
}

impl CryptoMb {
    /// `n` when it fits in one call and the library may run here.
    pub(crate) fn check_lanes(&self, n: usize) -> Result<usize, MbError> {
        if !self.applicable() {
            Err(MbError::NotApplicable)
        } else if n > LANES {
            Err(MbError::TooManyLanes(n))
        } else {
            Ok(n)
        }
    }
}

/// An 8-pointer argument array: `f(lane)` for each lane, null for the unused ones.
pub(crate) fn pointers<L, T>(lanes: &[L], f: impl Fn(&L) -> *const T) -> [*const T; LANES] {
    let mut out = [ptr::null::<T>(); LANES];
    for (slot, lane) in out.iter_mut().zip(lanes) {
        *slot = f(lane);
    }
    out
}

fn collect(status: u32, n: usize, out: [Block; LANES]) -> Vec<Result<Block, MbError>> {
    out.into_iter()
        .take(n)
        .enumerate()
        .map(|(i, block)| match lane_status(status, i) {
            0 => Ok(block),
            s => Err(MbError::Lane(s)),
        })
        .collect()
}
