//! ECDSA P-256 signatures of prehashed messages, 8 lanes per call, nonces from OpenSSL.

use std::ptr;

use foreign_types_shared::{ForeignType as _, ForeignTypeRef as _};
use openssl::bn::{BigNum, BigNumRef};
use openssl::ec::EcKeyRef;
use openssl::nid::Nid;
use openssl::pkey::Private;
use openssl_sys::BIGNUM;

use crate::rsa::pointers;
use crate::{CryptoMb, LANES, MbError, lane_status};

/// The order n of the P-256 group (FIPS 186-4 D.1.2.3), big-endian.
const P256_ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

unsafe extern "C" {
    /// OpenSSL (>= 1.1.1): a uniform random number in [0, range) from the private DRBG,
    /// the generator OpenSSL itself uses for ECDSA nonces. Not declared by `openssl-sys`.
    fn BN_priv_rand_range(r: *mut BIGNUM, range: *const BIGNUM) -> std::ffi::c_int;
}

/// A P-256 private scalar, copied out of an OpenSSL key.
pub struct P256Key {
    d: BigNum,
}

impl std::fmt::Debug for P256Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("P256Key(<redacted>)")
    }
}

impl P256Key {
    /// `None` unless `ec` is on P-256 (prime256v1).
    pub fn from_openssl(ec: &EcKeyRef<Private>) -> Option<P256Key> {
        if ec.group().curve_name() != Some(Nid::X9_62_PRIME256V1) {
            return None;
        }
        Some(P256Key {
            d: ec.private_key().to_owned().ok()?,
        })
    }
}

/// One signature to make: the message digest as a 32-byte big-endian integer (a shorter
/// digest, SHA-1's 20 bytes, right-aligned after zero bytes, as ECDSA reads it) and the key.
#[derive(Debug, Clone, Copy)]
pub struct P256Lane<'a> {
    /// The digest, left-padded with zeros to 32 bytes.
    pub digest: &'a [u8; 32],
    /// Key.
    pub key: &'a P256Key,
}

/// An ECDSA signature: r and s, 32 bytes big-endian each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct P256Signature {
    /// r.
    pub r: [u8; 32],
    /// s.
    pub s: [u8; 32],
}

impl P256Signature {
    /// DER `ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }`: what OpenSSL's
    /// `EVP_DigestSign` and `openssl dgst -sign` write.
    pub fn to_der(&self) -> Vec<u8> {
        fn integer(out: &mut Vec<u8>, be: &[u8; 32]) {
            let first = be.iter().position(|&b| b != 0).unwrap_or(be.len() - 1);
            let digits = &be[first..];
            let pad = digits[0] & 0x80 != 0;
            out.push(0x02);
            out.push((digits.len() + usize::from(pad)) as u8);
            if pad {
                out.push(0);
            }
            out.extend_from_slice(digits);
        }
        let mut body = Vec::with_capacity(70);
        integer(&mut body, &self.r);
        integer(&mut body, &self.s);
        let mut der = Vec::with_capacity(body.len() + 2);
        der.push(0x30);
        der.push(body.len() as u8);
        der.extend_from_slice(&body);
        der
    }
}

/// A fresh nonce in [1, n) from OpenSSL's private DRBG.
fn nonce(order: &BigNumRef) -> Result<BigNum, MbError> {
    let k = BigNum::new()?;
    loop {
        // SAFETY: `k` and `order` are valid, distinct BIGNUMs owned for this call
        // (`BN_priv_rand_range` writes `k`, reads `order`); its prototype is OpenSSL's
        // (bn.h, OpenSSL >= 1.1.1, which the `openssl` crate requires of libcrypto).
        let ok = unsafe { BN_priv_rand_range(k.as_ptr(), order.as_ptr()) };
        if ok != 1 {
            return Err(openssl::error::ErrorStack::get().into());
        }
        if k.num_bits() > 0 {
            return Ok(k);
        }
    }
}

impl CryptoMb {
    /// Signs up to 8 digests (`mbx_nistp256_ecdsa_sign_ssl_mb8`), one result per lane in
    /// order, each with its own nonce from OpenSSL's private CSPRNG.
    pub fn p256_sign(
        &self,
        lanes: &[P256Lane<'_>],
    ) -> Result<Vec<Result<P256Signature, MbError>>, MbError> {
        let n = self.check_lanes(lanes.len())?;
        let order = BigNum::from_slice(&P256_ORDER)?;
        let nonces = lanes
            .iter()
            .map(|_| nonce(&order))
            .collect::<Result<Vec<_>, _>>()?;
        let mut r = [[0u8; 32]; LANES];
        let mut s = [[0u8; 32]; LANES];
        let mut r_ptr = [ptr::null_mut::<u8>(); LANES];
        let mut s_ptr = [ptr::null_mut::<u8>(); LANES];
        for (slot, buf) in r_ptr.iter_mut().zip(r.iter_mut()).take(n) {
            *slot = buf.as_mut_ptr();
        }
        for (slot, buf) in s_ptr.iter_mut().zip(s.iter_mut()).take(n) {
            *slot = buf.as_mut_ptr();
        }
        let msg = pointers(lanes, |l| l.digest.as_ptr());
        let eph = pointers(&nonces, |k| k.as_ptr().cast_const());
        let reg = pointers(lanes, |l| l.key.d.as_ptr().cast_const());
        // SAFETY: a function of the prototype `mbx_nistp256_ecdsa_sign_ssl_mb8`
        // (ec_nistp256.h) from the library `self` keeps loaded. Every array holds 8
        // pointers: lanes 0..n point at live data (32-byte digests and private-key BIGNUMs
        // borrowed for this call, nonce BIGNUMs in `nonces`, 32-byte r and s outputs in `r`
        // and `s`), lanes n..8 are null, which the library reports per lane without
        // touching them. It reads the digests and BIGNUMs, writes 32 bytes per r and s,
        // and keeps nothing. The scratch buffer is only handed on to internal functions that
        // ignore it (Envoy's cryptomb provider passes NULL as well).
        let status = unsafe {
            (self.fns.p256_sign)(
                r_ptr.as_ptr(),
                s_ptr.as_ptr(),
                msg.as_ptr(),
                eph.as_ptr(),
                reg.as_ptr(),
                ptr::null_mut(),
            )
        };
        Ok((0..n)
            .map(|i| match lane_status(status, i) {
                0 => Ok(P256Signature { r: r[i], s: s[i] }),
                st => Err(MbError::Lane(st)),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_of_small_and_high_bit_integers() {
        let mut r = [0u8; 32];
        r[31] = 1;
        let mut s = [0u8; 32];
        s[0] = 0x80;
        let der = P256Signature { r, s }.to_der();
        assert_eq!(&der[..5], &[0x30, 3 + 35, 0x02, 1, 1]);
        assert_eq!(&der[5..8], &[0x02, 33, 0]);
        assert_eq!(der.len(), 2 + 3 + 35);
    }
}
