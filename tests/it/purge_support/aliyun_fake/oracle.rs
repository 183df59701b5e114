//! The official Alibaba Cloud SDK's signer, in a Python process the fake asks per request.

use std::sync::Mutex;

use serde_json::Value;

/// The official SDK's signer, in a Python process of its own
/// (`tests/python/aliyun_signer.py`), asked one JSON line per request.
pub(super) struct Oracle(
    std::sync::OnceLock<
        Mutex<(
            std::process::Child,
            std::io::BufReader<std::process::ChildStdout>,
        )>,
    >,
);

pub(super) static ORACLE: Oracle = Oracle(std::sync::OnceLock::new());

impl Oracle {
    pub(super) fn ask(&self, query: Value) -> Value {
        use std::io::{BufRead as _, Write as _};
        let cell = self.0.get_or_init(|| {
            let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/python/aliyun_signer.py");
            let mut child = std::process::Command::new(crate::purge_support::python())
                .arg(script)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("start the Aliyun SDK signer (scripts/setup.sh installs its venv)");
            let out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
            Mutex::new((child, out))
        });
        let mut guard = cell.lock().expect("oracle");
        let (child, out) = &mut *guard;
        let stdin = child.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{query}").expect("ask the SDK signer");
        stdin.flush().expect("flush");
        let mut line = String::new();
        out.read_line(&mut line).expect("the SDK signer answers");
        let v: Value = serde_json::from_str(&line).expect("JSON from the SDK signer");
        assert!(v.get("error").is_none(), "SDK signer: {v}");
        v
    }
}
