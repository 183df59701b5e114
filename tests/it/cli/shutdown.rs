//! `cdnsign serve` and its signals: a second SIGTERM during the graceful shutdown ends the
//! process at once.

use std::time::Duration;

use super::serve::{serve_text, wait_for_log};
use super::{key, write_config};
use crate::common::KEY_ID;

/// The first SIGTERM starts a drain that would last a minute; the second ends the process
/// at once with status 143 (128 + SIGTERM), saying so.
#[test]
fn a_second_sigterm_during_the_drain_exits_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nallow_unauthenticated = true\ndrain_seconds = 60\nshutdown_grace_seconds = 60\n[metrics]\nlisten = \"\"\n[signing]\nthreads = 1\n[[keys]]\nid = \"{KEY_ID}\"\npath = \"{}\"\n",
            key()
        ),
    );
    let (mut process, rx) = serve_text(&config);
    let term = |child: &std::process::Child| {
        let ok = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -TERM");
    };
    term(&process.child);
    wait_for_log(&rx, "shutdown requested");
    term(&process.child);
    wait_for_log(&rx, "exiting at once");
    // The process has gone once its stderr closes (bounded; the drain alone is 60 s).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
            Ok(_) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                panic!("cdnsign still running 20 s after its second SIGTERM")
            }
        }
    }
    let status = process.child.wait().expect("wait");
    assert_eq!(status.code(), Some(143), "{status:?}");
}
