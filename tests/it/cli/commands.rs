//! The one-shot commands: `sign`, `cookies`, `verify` and `check-config`, and what bad
//! input gets.

use super::{cdnsign, cdnsign_env, key, public_key, write_config};
use crate::common::{KEY_ID, repo};

#[test]
fn sign_prints_the_botocore_url_alone() {
    let vectors: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo("tests/fixtures/cloudfront_vectors.json")).expect("read"),
    )
    .expect("json");
    // The CLI refuses expiries in the past, so use a vector whose expiry is far ahead.
    let future = vectors["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .find(|c| c["kind"] == "canned" && c["expires"].as_i64() > Some(1_900_000_000))
        .expect("a canned vector with a future expiry");
    let (code, out, err) = cdnsign(&[
        "sign",
        "--key-file",
        &key(),
        "--key-pair-id",
        KEY_ID,
        "--url",
        future["url"].as_str().expect("url"),
        "--expires",
        &future["expires"].as_i64().expect("e").to_string(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        format!("{}\n", future["signed_url"].as_str().expect("signed"))
    );
}

#[test]
fn custom_flags_and_verify_round_trip() {
    let (code, url, err) = cdnsign(&[
        "sign",
        "--key-file",
        &key(),
        "--key-pair-id",
        KEY_ID,
        "--url",
        "https://d111111abcdef8.cloudfront.net/hls/abc/seg1.ts",
        "--ttl",
        "600",
        "--resource",
        "https://d111111abcdef8.cloudfront.net/hls/abc/*",
        "--ip",
        "192.0.2.0/24",
    ]);
    assert_eq!(code, 0, "{err}");
    let url = url.trim();
    assert!(
        url.contains("?Policy=") && !url.contains("Expires="),
        "{url}"
    );
    let (code, out, _) = cdnsign(&[
        "verify",
        "--public-key",
        &public_key(),
        "--client-ip",
        "192.0.2.7",
        url,
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("valid: custom policy"), "{out}");
    let (code, out, _) = cdnsign(&[
        "verify",
        "--public-key",
        &public_key(),
        "--client-ip",
        "203.0.113.1",
        url,
    ]);
    assert_eq!(code, 1);
    assert!(out.contains("outside 192.0.2.0/24"), "{out}");
    let (code, out, _) = cdnsign(&[
        "verify",
        "--public-key",
        &public_key(),
        "--now",
        "4000000000",
        url,
    ]);
    assert_eq!(code, 1);
    assert!(out.contains("expired"), "{out}");
    let wrong_key = repo("tests/fixtures/keys/rsa2.pub.pem")
        .display()
        .to_string();
    let (code, out, _) = cdnsign(&["verify", "--public-key", &wrong_key, url]);
    assert_eq!(code, 1);
    assert!(out.contains("signature does not match"), "{out}");
}

#[test]
fn cookies_print_one_pair_per_line() {
    let (code, out, err) = cdnsign(&[
        "cookies",
        "--key-file",
        &key(),
        "--key-pair-id",
        KEY_ID,
        "--url",
        "https://d.example/a.ts",
        "--expires",
        "4000000000",
    ]);
    assert_eq!(code, 0, "{err}");
    let names: Vec<&str> = out
        .lines()
        .map(|l| l.split('=').next().unwrap_or(""))
        .collect();
    assert_eq!(
        names,
        [
            "CloudFront-Expires",
            "CloudFront-Signature",
            "CloudFront-Key-Pair-Id"
        ]
    );
}

#[test]
fn bad_input_exits_non_zero_with_a_message() {
    for (args, needle) in [
        (
            vec!["--url", "https://d/a", "--expires", "1"],
            "not in the future",
        ),
        (vec!["--url", "https://d/\"a", "--ttl", "60"], "url:"),
        (vec!["--url", "ftp://d/a", "--ttl", "60"], "scheme"),
        (
            vec!["--url", "https://d/a", "--ttl", "60", "--ip", "1.2.3.4/40"],
            "ip_range",
        ),
    ] {
        let key_file = key();
        let mut full = vec!["sign", "--key-file", &key_file, "--key-pair-id", KEY_ID];
        full.extend(args.iter());
        let (code, out, err) = cdnsign(&full);
        assert_ne!(code, 0, "{args:?}");
        assert!(out.is_empty(), "nothing on stdout: {out}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let (code, _, err) = cdnsign(&[
        "sign",
        "--key-file",
        &repo("tests/fixtures/keys/not-a-key.pem")
            .display()
            .to_string(),
        "--key-pair-id",
        KEY_ID,
        "--url",
        "https://d/a",
        "--ttl",
        "60",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("key K2JCJMDEHXQW5F"), "{err}");
}

#[test]
fn check_config_validates_what_serve_would_without_binding() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Port 1 cannot be bound by this user: check-config must not try.
    let good = write_config(
        dir.path(),
        &format!(
            "[server]\nlisten = \"127.0.0.1:1\"\n[signing]\ndefault_key_id = \"{KEY_ID}\"\n[[keys]]\nid = \"{KEY_ID}\"\npath = \"{}\"\n[[clients]]\nname = \"gen\"\ntoken_sha256 = \"{}\"\nkeys = [\"{KEY_ID}\"]\nurl_prefixes = [\"https://d/hls/\"]\n",
            key(),
            crate::common::sha256_hex("t")
        ),
    );
    let path = good.to_str().expect("utf-8");
    let (code, out, err) = cdnsign_env(
        &["check-config", "--config", path],
        // Not config: no `__`, left alone.
        &[("CDNSIGN_TEST_PYTHON", "/x"), ("CDNSIGN_SOMETHING", "1")],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.starts_with("config OK: ") && out.contains("1 keys, 1 clients"),
        "{out}"
    );

    // A typo in an environment override names the variable.
    let (code, _, err) = cdnsign_env(
        &["check-config", "--config", path],
        &[("CDNSIGN_SIGNING__MAX_BATHC", "3")],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("CDNSIGN_SIGNING__MAX_BATHC"), "{err}");

    // An environment value that reads as a number, for a text key: refused with the quoted
    // form to use; quoted, it is text (here a key id the file does not have).
    let (code, _, err) = cdnsign_env(
        &["check-config", "--config", path],
        &[("CDNSIGN_SIGNING__DEFAULT_KEY_ID", "12345")],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(r#"quote it (CDNSIGN_SIGNING__DEFAULT_KEY_ID='"12345"')"#),
        "{err}"
    );
    let (code, _, err) = cdnsign_env(
        &["check-config", "--config", path],
        &[("CDNSIGN_SIGNING__DEFAULT_KEY_ID", r#""12345""#)],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(r#"default_key_id "12345" is not one of the [[keys]] ids"#),
        "{err}"
    );

    // Every problem of a bad file, each printed once, exit 2: from check-config and serve.
    let bad = write_config(
        dir.path(),
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[logg]\nformat = \"json\"\n[[keys]]\nid = \"{KEY_ID}\"\npath = \"/nonexistent/key.pem\"\n[[clients]]\nname = \"gen\"\ntoken_sha256 = \"{}\"\nkeys = [\"{KEY_ID}\"]\nurl_per_second = 5\nurl_prefixes = [\"https://d/*\"]\n",
            crate::common::sha256_hex("t")
        ),
    );
    let path = bad.to_str().expect("utf-8");
    for args in [
        ["check-config", "--config", path],
        ["serve", "--config", path],
    ] {
        let (code, out, err) = cdnsign_env(&args, &[]);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(
            err.contains("unknown key \"logg\"") && err.contains("unknown key \"url_per_second\""),
            "{args:?}: {err}"
        );
        assert_eq!(
            err.matches("url_per_second").count(),
            1,
            "printed once: {err}"
        );
        if args[0] == "check-config" {
            // Keys and clients are checked once the file parses cleanly; here it did not.
            assert!(!out.contains("config OK"), "{out}");
        }
    }
    let semantics = write_config(
        dir.path(),
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[[keys]]\nid = \"{KEY_ID}\"\npath = \"/nonexistent/key.pem\"\n[[clients]]\nname = \"gen\"\ntoken_sha256 = \"{}\"\nkeys = [\"{KEY_ID}\"]\nurl_prefixes = [\"https://d/*\"]\n",
            crate::common::sha256_hex("t")
        ),
    );
    let path = semantics.to_str().expect("utf-8");
    for args in [
        ["check-config", "--config", path],
        ["serve", "--config", path],
    ] {
        let (code, out, err) = cdnsign_env(&args, &[]);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(
            err.contains("/nonexistent/key.pem") && err.contains("wildcards"),
            "{args:?}: {err}"
        );
        assert_eq!(
            err.matches("/nonexistent/key.pem").count(),
            1,
            "printed once: {err}"
        );
    }
}
