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
    /// The SDK's answer to `query`, or why there is none. Never panics while holding the
    /// process (a panic there would poison it for every later test in this process): a
    /// failure is the fake's refusal of that one request, visible in the test that made it.
    pub(super) fn ask(&self, query: Value) -> Result<Value, String> {
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
        let mut guard = cell
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (child, out) = &mut *guard;
        let stdin = child.stdin.as_mut().ok_or("the SDK signer has no stdin")?;
        writeln!(stdin, "{query}").map_err(|e| format!("ask the SDK signer: {e}"))?;
        stdin
            .flush()
            .map_err(|e| format!("ask the SDK signer: {e}"))?;
        let mut line = String::new();
        out.read_line(&mut line)
            .map_err(|e| format!("the SDK signer's answer: {e}"))?;
        drop(guard);
        let v: Value = serde_json::from_str(&line)
            .map_err(|e| format!("the SDK signer's answer {line:?}: {e}"))?;
        match v.get("error") {
            Some(e) => Err(format!("the SDK signer: {e}")),
            None => Ok(v),
        }
    }
}
