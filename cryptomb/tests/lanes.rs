//! crypto_mb against OpenSSL: lanes 1..8, byte-identical RSA, ECDSA that OpenSSL verifies.
//! Each test prints that it is skipped, by name, where the library is absent or the CPU
//! lacks AVX-512 IFMA; the loading tests run everywhere.

use cdnsign_cryptomb::{
    CryptoMb, LANES, MbError, P256Key, P256Lane, RSA2048_BYTES, Rsa2048Key, RsaLane,
};
use openssl::bn::BigNum;
use openssl::ec::EcKey;
use openssl::ecdsa::EcdsaSig;
use openssl::rsa::{Padding, Rsa};

/// Says a test is skipped, on stderr past the harness's capture (the suite's output shows it).
fn skip(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The library when it loads and this CPU runs it; else prints the skip and gives `None`
/// (fails instead with `CDNSIGN_TEST_REQUIRE_MULTIBUFFER=1`, which scripts/test.sh sets on
/// CPUs with AVX-512 IFMA and memcheck.sh clears: valgrind does not emulate AVX-512).
fn usable(test: &str) -> Option<CryptoMb> {
    let path = std::env::var_os("CDNSIGN_CRYPTO_MB_LIB").map(std::path::PathBuf::from);
    let loaded = CryptoMb::load(path.as_deref());
    if std::env::var_os("CDNSIGN_TEST_REQUIRE_MULTIBUFFER").is_some_and(|v| v == "1") {
        match &loaded {
            Ok(mb) if mb.applicable() => {}
            Ok(mb) => panic!(
                "{test}: CDNSIGN_TEST_REQUIRE_MULTIBUFFER=1, but {} says this CPU cannot run it",
                mb.path().display()
            ),
            Err(e) => panic!("{test}: CDNSIGN_TEST_REQUIRE_MULTIBUFFER=1, but {e}"),
        }
    }
    match loaded {
        Ok(mb) if mb.applicable() => Some(mb),
        Ok(mb) => {
            skip(format_args!(
                "SKIPPED {test}: {} loaded but this CPU lacks AVX-512 IFMA (features {:#x})",
                mb.path().display(),
                mb.cpu_features()
            ));
            None
        }
        Err(e) => {
            skip(format_args!("SKIPPED {test}: {e}"));
            None
        }
    }
}

fn padded(rsa: &Rsa<openssl::pkey::Private>, seed: u8) -> [u8; RSA2048_BYTES] {
    // A PKCS#1 v1.5 type-1 block over a fake SHA-1 DigestInfo: below the modulus.
    let mut block = [0xffu8; RSA2048_BYTES];
    block[0] = 0;
    block[1] = 1;
    block[RSA2048_BYTES - 36] = 0;
    for (i, b) in block[RSA2048_BYTES - 35..].iter_mut().enumerate() {
        *b = seed.wrapping_mul(31).wrapping_add(i as u8);
    }
    assert!(BigNum::from_slice(&block).expect("bn") < *rsa.n());
    block
}

#[test]
fn loading_a_missing_library_names_it() {
    let err = CryptoMb::load(Some(std::path::Path::new("/nonexistent/libcrypto_mb.so")))
        .expect_err("missing");
    assert_eq!(err.tried.len(), 1);
    assert!(
        err.to_string().contains("/nonexistent/libcrypto_mb.so"),
        "{err}"
    );
    assert_eq!(err.code(), "library_not_loaded");
    // A file that is not a shared object is refused too, with the loader's reason.
    let not_elf = std::env::current_exe().expect("exe").with_extension("txt");
    std::fs::write(&not_elf, "not a library").expect("write");
    let err = CryptoMb::load(Some(&not_elf)).expect_err("not elf");
    assert!(
        err.to_string().contains(&*not_elf.to_string_lossy()),
        "{err}"
    );
    let _ = std::fs::remove_file(not_elf);
}

#[test]
fn rsa_lanes_1_to_8_match_openssl_byte_for_byte() {
    let Some(mb) = usable("rsa_lanes_1_to_8_match_openssl_byte_for_byte") else {
        return;
    };
    let rsas: Vec<_> = (0..2).map(|_| Rsa::generate(2048).expect("rsa")).collect();
    let keys: Vec<_> = rsas
        .iter()
        .map(|r| Rsa2048Key::from_openssl(r).expect("2048"))
        .collect();
    for n in 1..=LANES {
        let inputs: Vec<_> = (0..n).map(|i| padded(&rsas[i % 2], i as u8)).collect();
        let lanes: Vec<_> = inputs
            .iter()
            .enumerate()
            .map(|(i, input)| RsaLane {
                input,
                key: &keys[i % 2],
            })
            .collect();
        let sigs = mb.rsa2048_private_crt(&lanes).expect("call");
        assert_eq!(sigs.len(), n);
        for (i, sig) in sigs.iter().enumerate() {
            let sig = sig.as_ref().expect("lane ok");
            let mut want = vec![0u8; RSA2048_BYTES];
            rsas[i % 2]
                .private_encrypt(&inputs[i], &mut want, Padding::NONE)
                .expect("openssl");
            assert_eq!(&sig[..], &want[..], "lanes {n}, lane {i}");
        }
        // The public operation gives the input back.
        let sig_blocks: Vec<[u8; RSA2048_BYTES]> =
            sigs.into_iter().map(|s| s.expect("ok")).collect();
        let back: Vec<_> = sig_blocks
            .iter()
            .enumerate()
            .map(|(i, input)| RsaLane {
                input,
                key: &keys[i % 2],
            })
            .collect();
        for (i, r) in mb.rsa2048_public(&back).expect("call").iter().enumerate() {
            assert_eq!(
                r.as_ref().expect("lane ok"),
                &inputs[i],
                "lanes {n}, lane {i}"
            );
        }
    }
}

#[test]
fn p256_lanes_1_to_8_verify_with_openssl() {
    let Some(mb) = usable("p256_lanes_1_to_8_verify_with_openssl") else {
        return;
    };
    let group =
        openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).expect("g");
    let ecs: Vec<_> = (0..3)
        .map(|_| EcKey::generate(&group).expect("ec"))
        .collect();
    let keys: Vec<_> = ecs
        .iter()
        .map(|e| P256Key::from_openssl(e).expect("p256"))
        .collect();
    for n in 1..=LANES {
        // SHA-256 digests, and a SHA-1 one right-aligned in lane 0.
        let digests: Vec<[u8; 32]> = (0..n)
            .map(|i| {
                let msg = format!("message {i} of {n}");
                if i == 0 {
                    let mut d = [0u8; 32];
                    d[12..].copy_from_slice(&openssl::sha::sha1(msg.as_bytes()));
                    d
                } else {
                    openssl::sha::sha256(msg.as_bytes())
                }
            })
            .collect();
        let lanes: Vec<_> = digests
            .iter()
            .enumerate()
            .map(|(i, digest)| P256Lane {
                digest,
                key: &keys[i % 3],
            })
            .collect();
        let sigs = mb.p256_sign(&lanes).expect("call");
        for (i, sig) in sigs.iter().enumerate() {
            let sig = sig.as_ref().expect("lane ok");
            let der = sig.to_der();
            let parsed = EcdsaSig::from_der(&der).expect("DER");
            let digest: &[u8] = if i == 0 {
                &digests[0][12..]
            } else {
                &digests[i]
            };
            assert!(
                parsed.verify(digest, &ecs[i % 3]).expect("verify"),
                "lanes {n}, lane {i}"
            );
            assert!(!parsed.verify(digest, &ecs[(i + 1) % 3]).expect("verify"));
        }
        // Fresh nonces: the same digest and key never give the same signature twice.
        if n == 2 {
            let again = mb.p256_sign(&lanes).expect("call");
            assert_ne!(again[0], sigs[0]);
        }
    }
}

#[test]
fn more_than_eight_lanes_is_an_error_not_a_call() {
    let Some(mb) = usable("more_than_eight_lanes_is_an_error_not_a_call") else {
        return;
    };
    let rsa = Rsa::generate(2048).expect("rsa");
    let key = Rsa2048Key::from_openssl(&rsa).expect("2048");
    let input = padded(&rsa, 1);
    let lanes = vec![
        RsaLane {
            input: &input,
            key: &key
        };
        9
    ];
    assert_eq!(
        mb.rsa2048_private_crt(&lanes).expect_err("nine"),
        MbError::TooManyLanes(9)
    );
    // Not a 2048-bit key: no key, so no call with the wrong size.
    assert!(Rsa2048Key::from_openssl(&Rsa::generate(1024).expect("rsa")).is_none());
}

/// Where the library loads but cannot run (a CPU without IFMA, or valgrind, which does not
/// emulate AVX-512), no call reaches it: its dispatcher would pick a code path with
/// instructions the CPU may lack (under valgrind: an AVX-IFMA path, SIGILL).
#[test]
fn without_ifma_every_lane_reports_an_error() {
    let path = std::env::var_os("CDNSIGN_CRYPTO_MB_LIB").map(std::path::PathBuf::from);
    let mb = match CryptoMb::load(path.as_deref()) {
        Ok(mb) if !mb.applicable() => mb,
        Ok(_) => {
            skip(format_args!(
                "SKIPPED without_ifma_every_lane_reports_an_error: this CPU has AVX-512 IFMA"
            ));
            return;
        }
        Err(e) => {
            skip(format_args!(
                "SKIPPED without_ifma_every_lane_reports_an_error: {e}"
            ));
            return;
        }
    };
    let rsa = Rsa::generate(2048).expect("rsa");
    let key = Rsa2048Key::from_openssl(&rsa).expect("2048");
    let input = padded(&rsa, 3);
    let lanes = vec![
        RsaLane {
            input: &input,
            key: &key
        };
        3
    ];
    assert_eq!(mb.rsa2048_private_crt(&lanes), Err(MbError::NotApplicable));
    assert_eq!(mb.rsa2048_public(&lanes), Err(MbError::NotApplicable));
    let group =
        openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).expect("g");
    let ec = EcKey::generate(&group).expect("ec");
    let key = P256Key::from_openssl(&ec).expect("p256");
    let digest = [7u8; 32];
    let lanes = vec![
        P256Lane {
            digest: &digest,
            key: &key
        };
        8
    ];
    assert_eq!(mb.p256_sign(&lanes), Err(MbError::NotApplicable));
}
