//! EMSA-PKCS1-v1_5 (RFC 8017 9.2) for RSA-2048: the block the private key exponentiates,
//! byte for byte what OpenSSL builds, so the signatures are identical.

use cdnsign_cryptomb::RSA2048_BYTES;

use crate::signing::algorithm::HashAlg;

/// DER `DigestInfo` prefixes (RFC 8017 9.2, note 1).
const SHA1_PREFIX: [u8; 15] = [
    0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14,
];
const SHA256_PREFIX: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

/// `00 01 FF..FF 00 DigestInfo(hash, digest)`, 256 bytes. `digest` must be the hash's
/// length (20 or 32 bytes).
pub fn encode(hash: HashAlg, digest: &[u8]) -> [u8; RSA2048_BYTES] {
    let prefix: &[u8] = match hash {
        HashAlg::Sha1 => &SHA1_PREFIX,
        HashAlg::Sha256 => &SHA256_PREFIX,
    };
    let t_len = prefix.len() + digest.len();
    let mut block = [0xffu8; RSA2048_BYTES];
    block[0] = 0x00;
    block[1] = 0x01;
    block[RSA2048_BYTES - t_len - 1] = 0x00;
    block[RSA2048_BYTES - t_len..RSA2048_BYTES - digest.len()].copy_from_slice(prefix);
    block[RSA2048_BYTES - digest.len()..].copy_from_slice(digest);
    block
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_openssl_pkcs1_padding_of_the_digest_info() {
        // OpenSSL's RSA_padding_add_PKCS1_type_1 over the DER DigestInfo, recovered
        // by a raw public operation on an OpenSSL signature.
        let rsa = openssl::rsa::Rsa::generate(2048).expect("rsa");
        let pkey = openssl::pkey::PKey::from_rsa(rsa.clone()).expect("pkey");
        for (hash, md) in [
            (HashAlg::Sha1, openssl::hash::MessageDigest::sha1()),
            (HashAlg::Sha256, openssl::hash::MessageDigest::sha256()),
        ] {
            let msg = b"{\"Statement\":[]}";
            let mut signer = openssl::sign::Signer::new(md, &pkey).expect("signer");
            signer.update(msg).expect("update");
            let sig = signer.sign_to_vec().expect("sign");
            let mut block = vec![0u8; RSA2048_BYTES];
            rsa.public_decrypt(&sig, &mut block, openssl::rsa::Padding::NONE)
                .expect("raw");
            let digest = openssl::hash::hash(md, msg).expect("hash");
            assert_eq!(&encode(hash, &digest)[..], &block[..], "{hash:?}");
        }
    }
}
