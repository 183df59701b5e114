//! Config parser: arbitrary bytes as TOML through `Config::from_toml_str`.
//!
//! Invariants: never panics; an accepted config satisfies what `validate` promises
//! (max_batch >= 1, max_ttl_seconds > 0, max_message_bytes >= 1024, key ids non-empty
//! ASCII alphanumerics, unique, and the default key among them), and its key specs resolve
//! without touching the file system.
#![no_main]

use std::collections::HashSet;
use std::path::Path;

use cdnsign::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Config::from_toml_str(text, Path::new("/nonexistent/cdnsign-fuzz")) else {
        return;
    };
    let s = &config.signing;
    assert!(s.max_batch >= 1);
    assert!(s.max_ttl_seconds > 0);
    assert!(config.server.max_message_bytes >= 1024);
    let mut ids = HashSet::new();
    for k in &config.keys {
        assert!(!k.id.is_empty() && k.id.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert!(ids.insert(k.id.as_str()), "duplicate key id {}", k.id);
    }
    assert!(s.default_key_id.is_empty() || ids.contains(s.default_key_id.as_str()));
    assert_eq!(config.key_specs().len(), config.keys.len());
});
