//! The `cdnsign` binary as operators and scripts use it: `sign`, `cookies`, `verify`,
//! `check-config`, and `serve` with a SIGHUP configuration reload. The helpers that run the
//! binary are here; the one-shot commands and the running server are tested in the two files
//! below.

mod commands;
mod serve;
mod shutdown;

use std::process::Command;

use crate::common::repo;

const BIN: &str = env!("CARGO_BIN_EXE_cdnsign");

fn cdnsign(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().expect("run cdnsign");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn key() -> String {
    repo("config/dev-keys/TEST-ONLY-cloudfront.pem")
        .display()
        .to_string()
}

fn public_key() -> String {
    repo("config/dev-keys/TEST-ONLY-cloudfront.pub.pem")
        .display()
        .to_string()
}

fn write_config(dir: &std::path::Path, body: &str) -> std::path::PathBuf {
    let path = dir.join("check.toml");
    std::fs::write(&path, body).expect("write config");
    path
}

fn cdnsign_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run cdnsign");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `cdnsign ARGS` off the async workers (the server under test runs on them).
async fn cdnsign_async(args: &[&str]) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        cdnsign(&refs)
    })
    .await
    .expect("join")
}
