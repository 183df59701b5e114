//! Config loading tests: sources, defaults, validation and the errors that name the key.

use std::net::SocketAddr;

use super::*;

#[test]
fn builtin_dev_config_loads_and_uses_the_compiled_in_key() {
    let c = Config::load(None).expect("dev config");
    assert_eq!(c.server.listen.ip().to_string(), "127.0.0.1");
    assert!(c.server.allow_unauthenticated);
    let specs = c.key_specs();
    assert_eq!(specs.len(), 1);
    assert!(matches!(specs[0].pem, PemSource::Builtin(_)));
    assert!(DEV_KEY_PEM.contains("TEST ONLY"));
}

#[test]
fn issue_keys_parse_and_relative_paths_resolve() {
    let toml = r#"
[server]
listen = "127.0.0.1:50051"
allow_unauthenticated = true
[metrics]
listen = "127.0.0.1:9464"
[signing]
default_key_id = "K2JCJMDEHXQW5F"
max_ttl_seconds = 604800
max_batch = 10000
threads = 0
[[keys]]
id = "K2JCJMDEHXQW5F"
path = "config/dev-keys/TEST-ONLY-cloudfront.pem"
"#;
    let c = Config::from_toml_str(toml, Path::new("/etc/cdnsign")).expect("parse");
    assert_eq!(c.signing.max_batch, 10000);
    assert_eq!(
        c.key_specs()[0].pem,
        PemSource::File(PathBuf::from(
            "/etc/cdnsign/config/dev-keys/TEST-ONLY-cloudfront.pem"
        ))
    );
}

#[test]
fn example_config_documents_a_valid_config() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let text = std::fs::read_to_string(dir.join("example.toml")).expect("example");
    let c = Config::from_toml_str(&text, &dir).expect("example.toml parses");
    assert_eq!(c.keys.len(), 1);
    assert!(!c.server.allow_unauthenticated);
}

#[test]
fn metrics_can_be_switched_off() {
    let c = Config::from_toml_str(
        "[server]\nallow_unauthenticated = true\n[metrics]\nlisten = \"\"\n",
        Path::new("."),
    )
    .expect("parse");
    assert_eq!(c.metrics.listen, None);
    let c = Config::from_toml_str("[server]\nallow_unauthenticated = true\n", Path::new("."))
        .expect("parse");
    assert_eq!(
        c.metrics.listen,
        Some(SocketAddr::from(([127, 0, 0, 1], 9464)))
    );
}

#[test]
fn inconsistent_configs_are_refused_with_the_key_named() {
    let err = Config::from_toml_str(
        "[server]\nallow_unauthenticated = true\n[signing]\ndefault_key_id = \"NOPE\"\n",
        Path::new("."),
    )
    .expect_err("unknown default key");
    assert!(err.to_string().contains("default_key_id"), "{err}");
    let err = Config::from_toml_str(
        "[server]\nallow_unauthenticated = true\n[signing]\nmax_batch = 0\n",
        Path::new("."),
    )
    .expect_err("zero batch");
    assert!(err.to_string().contains("max_batch"), "{err}");
    let err = Config::from_toml_str(
        "[server]\nallow_unauthenticated = true\n[signing]\nmax_batch = \"x\"\n",
        Path::new("."),
    )
    .expect_err("type");
    assert!(err.to_string().contains("max_batch"), "{err}");
    let err = Config::from_toml_str("[server]\nlisten = \"127.0.0.1:1\"\n", Path::new("."))
        .expect_err("nobody may call");
    assert!(err.to_string().contains("allow_unauthenticated"), "{err}");
}

#[test]
fn unknown_keys_are_named_with_their_table_and_source() {
    let err = Config::from_toml_str(
        "[server]\nallow_unauthenticated = true\n[logg]\nformat = \"json\"\n\
         [signing]\nmax_bathc = 3\n[[clients]]\nname = \"gen\"\ntoken_sha256 = \"00\"\n\
         url_per_second = 5\n",
        Path::new("/etc/cdnsign"),
    )
    .expect_err("typos");
    let text = err.to_string();
    assert_eq!(err.problems.len(), 3, "{text}");
    for want in [
        "unknown key \"logg\" at the top level in /etc/cdnsign/inline.toml",
        "unknown key \"max_bathc\" in [signing]",
        "unknown key \"url_per_second\" in [[clients]] entry 1 (name \"gen\")",
    ] {
        assert!(text.contains(want), "{want:?} not in:\n{text}");
    }
}

#[test]
fn every_semantic_problem_is_listed() {
    let err = Config::from_toml_str(
        "[signing]\nmax_batch = 0\nmax_ttl_seconds = 0\ndefault_key_id = \"NOPE\"\n\
         [log]\nfilter = \"a=b=c\"\n",
        Path::new("."),
    )
    .expect_err("invalid");
    assert_eq!(err.problems.len(), 5, "{err}");
}

#[test]
fn purge_targets_parse_with_the_issue_keys_and_bad_ones_are_named() {
    let toml = r#"
[server]
allow_unauthenticated = true
[purge]
data_dir = "/var/lib/cdnsign"
[[targets]]
name = "site"
provider = "cloudfront"
distribution_id = "E2QWRUHAPOMQZL"
endpoint = "http://127.0.0.1:5000"
[[targets]]
name = "site"
provider = "aliyun"
domain = "cdn.example.com"
signature = "v1"
"#;
    let c = Config::from_toml_str(toml, Path::new(".")).expect("parse");
    assert_eq!(c.targets.len(), 2);
    assert_eq!(c.targets[0].resource(), "E2QWRUHAPOMQZL");
    assert_eq!(
        c.targets[1].signature,
        crate::purge::config::SignatureVersion::V1
    );
    assert_eq!(c.purge.data_dir, PathBuf::from("/var/lib/cdnsign"));
    assert_eq!(c.purge.cloudfront_max_files_in_progress, 3000);
    assert_eq!(
        c.purge.cloudfront_collapse_threshold, 0,
        "collapse is off by default"
    );
    let defaults =
        Config::from_toml_str("[server]\nallow_unauthenticated = true\n", Path::new("."))
            .expect("empty");
    assert_eq!(defaults.purge.data_dir, PathBuf::from("./data"));
    assert!(defaults.targets.is_empty());

    let err = Config::from_toml_str(
        "[server]\nallow_unauthenticated = true\n[[targets]]\nname = \"x\"\nprovider = \"cloudfront\"\n",
        Path::new("."),
    )
    .expect_err("no distribution");
    assert!(err.to_string().contains("distribution_id"), "{err}");
    let err = Config::from_toml_str(
        "[server]\nallow_unauthenticated = true\n[[targets]]\nname = \"x\"\nprovider = \"aliyun\"\n",
        Path::new("."),
    )
    .expect_err("no domain");
    assert!(err.to_string().contains("domain"), "{err}");
    let err = Config::from_toml_str(
        "[server]\nallow_unauthenticated = true\n[[targets]]\nname = \"x\"\nprovider = \"akamai\"\n",
        Path::new("."),
    )
    .expect_err("unknown provider");
    assert!(err.to_string().contains("provider"), "{err}");
}

#[test]
fn a_parse_error_on_the_database_url_line_does_not_show_its_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    for text in [
        "[purge]\ndatabase_url = \"postgres://cdn:S3cretPassw0rd@db:5432/cdn\n",
        "[purge]\ndatabase_url = \"postgres://cdn:S3cretPassw0rd@db:5432/cdn\"\ndatabase_url = \"postgres://cdn:S3cretPassw0rd@db:5432/cdn\"\n",
    ] {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).expect("write");
        let err = Config::load(Some(&path)).expect_err("does not parse");
        let shown = format!("{err}");
        assert!(!shown.contains("S3cretPassw0rd"), "{shown}");
        assert!(
            shown.contains("database_url") || shown.contains("line"),
            "{shown}"
        );
    }
}
