//! Compiles `proto/` with a protoc that ships inside a crate, so a fresh
//! machine needs no system `protoc`. Also emits the descriptor set that
//! server reflection serves, and `CDNSIGN_REVISION` (the git revision, for `--version`
//! and `cdnsign_build_info`): from the environment when set (a Docker build has no
//! `.git`), else from `git`, else `unknown`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/cdnsign/v1/signer.proto",
        "proto/cdnsign/v1/purger.proto",
    ];
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("cdnsign_descriptor.bin"))
        .compile_with_config(config, &protos, &["proto"])?;
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    revision();
    Ok(())
}

fn git(args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
}

fn revision() {
    println!("cargo:rerun-if-env-changed=CDNSIGN_REVISION");
    let from_env = std::env::var("CDNSIGN_REVISION")
        .ok()
        .filter(|r| !r.trim().is_empty());
    let revision = from_env.or_else(|| {
        // Rebuild when HEAD moves (a commit, a checkout).
        if let Some(head) = git(&["rev-parse", "--path-format=absolute", "--git-path", "HEAD"]) {
            println!("cargo:rerun-if-changed={head}");
        }
        if let Some(refs) = git(&["rev-parse", "--path-format=absolute", "--git-common-dir"]) {
            println!("cargo:rerun-if-changed={refs}/refs/heads");
        }
        git(&["rev-parse", "--short=12", "HEAD"])
    });
    // Only plain characters reach a label and `--version`.
    let revision: String = revision
        .unwrap_or_else(|| "unknown".into())
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-._+".contains(*c))
        .take(64)
        .collect();
    println!("cargo:rustc-env=CDNSIGN_REVISION={revision}");
}
