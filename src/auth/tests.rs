//! Unit tests of [`super`]: tokens, credentials after a reload, certificate subjects
//! and SANs, configuration problems, and buckets kept across a reload.

use super::*;

fn hex(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn client(name: &str, token: &str) -> ClientConfig {
    ClientConfig {
        name: name.into(),
        token_sha256: hex(token),
        keys: vec!["K".into()],
        url_prefixes: vec!["https://d/hls/".into()],
        urls_per_second: Some(10),
        ..ClientConfig::default()
    }
}

#[test]
fn tokens_are_matched_by_hash() {
    let token = "s3cret-token";
    let a = Authenticator::build(&[client("gen", token)], false, 100, None).expect("auth");
    let header = |v: &str| http::HeaderValue::from_str(v).expect("header");
    assert!(matches!(
        a.authenticate(Some(&header("Bearer s3cret-token")), None),
        Ok(Caller::Client(g)) if g.name == "gen"
    ));
    assert_eq!(
        a.authenticate(Some(&header("Bearer wrong")), None)
            .map(|_| ()),
        Err(AuthError::Unknown)
    );
    assert_eq!(
        a.authenticate(Some(&header("Basic abc")), None).map(|_| ()),
        Err(AuthError::Malformed)
    );
    assert_eq!(
        a.authenticate(None, None).map(|_| ()),
        Err(AuthError::Missing)
    );
    let dbg = format!("{a:?}");
    assert!(!dbg.contains(token));
}

#[test]
fn credentials_resolve_against_the_authenticator_given_and_never_show_the_token() {
    let token = "s3cret-token";
    let header = http::HeaderValue::from_str("Bearer s3cret-token").expect("header");
    let creds = Credentials::new(Some(&header), None);
    let before = Authenticator::build(&[client("gen", token)], false, 100, None).expect("auth");
    assert!(matches!(
        creds.authenticate(&before),
        Ok(Caller::Client(g)) if g.name == "gen"
    ));
    // The same credentials after a reload that dropped the token.
    let after = Authenticator::build(&[client("gen", "rotated")], false, 100, None).expect("auth");
    assert_eq!(
        creds.authenticate(&after).map(|_| ()),
        Err(AuthError::Unknown)
    );
    // No credentials: anonymous only while the config allows it.
    let none = Credentials::new(None, None);
    let open = Authenticator::build(&[], true, 100, None).expect("auth");
    assert!(matches!(none.authenticate(&open), Ok(Caller::Anonymous)));
    assert_eq!(
        none.authenticate(&after).map(|_| ()),
        Err(AuthError::Missing)
    );
    let dbg = format!("{creds:?}");
    assert!(!dbg.contains(token), "{dbg}");
}

/// One CN whose value reads `gen, O=Acme` is not the subject `CN=gen, O=Acme` (two
/// attributes): values are escaped as RFC 4514 says before they are compared.
#[test]
fn a_subject_value_cannot_pose_as_another_attribute() {
    let der = |name: &str| {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tls")
            .join(name);
        let pem = std::fs::read(&path).expect("fixture");
        openssl_free_pem_to_der(&pem)
    };
    let mut c = client("acme-gen", "t");
    c.token_sha256.clear();
    c.cert_subject = "CN=gen, O=Acme".into();
    let a = Authenticator::build(&[c], false, 100, None).expect("auth");
    let two_rdns = der("two-rdn-client.pem");
    assert!(matches!(
        a.authenticate(None, Some(&two_rdns)),
        Ok(Caller::Client(g)) if g.name == "acme-gen"
    ));
    let one_cn = der("comma-cn-client.pem");
    assert_eq!(
        a.authenticate(None, Some(&one_cn)).map(|_| ()),
        Err(AuthError::Unknown),
        "the CN 'gen, O=Acme' is not CN=gen, O=Acme"
    );
    // Written escaped, that CN is a subject a client can name.
    let mut c = client("comma", "t");
    c.token_sha256.clear();
    c.cert_subject = "CN=gen\\, O=Acme".into();
    let a = Authenticator::build(&[c], false, 100, None).expect("auth");
    assert!(matches!(
        a.authenticate(None, Some(&one_cn)),
        Ok(Caller::Client(g)) if g.name == "comma"
    ));
    let mut escaped = String::new();
    escape_rfc4514(" #a,b+c\"d\\e<f>g;h\u{1} ", &mut escaped);
    assert_eq!(escaped, "\\ #a\\,b\\+c\\\"d\\\\e\\<f\\>g\\;h\\01\\ ");
    let mut escaped = String::new();
    escape_rfc4514("#x", &mut escaped);
    assert_eq!(escaped, "\\#x");
}

/// A cert_san that names its SAN type matches only that type: a URI SAN cannot pass
/// for a configured DNS name. Without a type, any of DNS, URI and email matches.
#[test]
fn a_typed_cert_san_matches_only_its_type() {
    let der = |name: &str| {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tls")
            .join(name);
        openssl_free_pem_to_der(&std::fs::read(&path).expect("fixture"))
    };
    // client.pem has the DNS SAN playlist-generator.internal; uri-san-client.pem a URI
    // SAN with the same text.
    let dns = der("client.pem");
    let uri = der("uri-san-client.pem");
    let build = |san: &str| {
        let mut c = client("gen", "t");
        c.token_sha256.clear();
        c.cert_san = san.into();
        Authenticator::build(&[c], false, 100, None).expect("auth")
    };
    let typed = build("DNS:playlist-generator.internal");
    assert!(typed.authenticate(None, Some(&dns)).is_ok());
    assert_eq!(
        typed.authenticate(None, Some(&uri)).map(|_| ()),
        Err(AuthError::Unknown),
        "a URI SAN is not the DNS name"
    );
    let untyped = build("playlist-generator.internal");
    assert!(untyped.authenticate(None, Some(&dns)).is_ok());
    assert!(untyped.authenticate(None, Some(&uri)).is_ok(), "any type");
    assert_eq!(san_key("URI:spiffe://acme/gen"), "uri:spiffe://acme/gen");
    assert_eq!(san_key("uri://x"), "*:uri://x");
    assert_eq!(san_key("email:Ops@Example.com"), "email:ops@example.com");
}

/// The first certificate of a PEM file, as DER.
fn openssl_free_pem_to_der(pem: &[u8]) -> Vec<u8> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).expect("pem");
    pem.contents
}

#[test]
fn every_problem_is_reported() {
    let mut bad = client("gen", "t");
    bad.url_prefixes = vec!["https://d/*".into(), "ftp://x/".into()];
    bad.token_sha256 = "abc".into();
    let nameless = ClientConfig::default();
    let twin = client("gen", "t2");
    let mut stuck = client("stuck", "t3");
    stuck.urls_per_second = Some(0);
    stuck.urls_burst = Some(0);
    stuck.purge_paths_per_minute = Some(0);
    let problems =
        Authenticator::build(&[bad, nameless, twin, stuck], false, 1, None).expect_err("invalid");
    let text = problems.join("\n");
    for want in [
        "wildcards",
        "http:// or https://",
        "64 hex digits",
        "name is empty",
        "needs token_sha256",
        "name is used by another client",
        "urls_per_second must be at least 1",
        "urls_burst must be at least 1",
        "purge_paths_per_minute must be at least 1",
    ] {
        assert!(text.contains(want), "{want} missing from:\n{text}");
    }
}

#[test]
fn a_reload_keeps_buckets_whose_rate_did_not_change() {
    let first = Authenticator::build(&[client("gen", "t")], false, 100, None).expect("auth");
    let grant = |a: &Authenticator| Arc::clone(&a.by_name["gen"]);
    let same =
        Authenticator::build(&[client("gen", "t2")], false, 100, Some(&first)).expect("auth");
    assert!(Arc::ptr_eq(
        grant(&first).url_bucket().expect("bucket"),
        grant(&same).url_bucket().expect("bucket")
    ));
    let mut faster = client("gen", "t");
    faster.urls_per_second = Some(20);
    let changed = Authenticator::build(&[faster], false, 100, Some(&first)).expect("auth");
    assert!(!Arc::ptr_eq(
        grant(&first).url_bucket().expect("bucket"),
        grant(&changed).url_bucket().expect("bucket")
    ));
}
