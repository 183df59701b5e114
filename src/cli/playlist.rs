//! `cdnsign sign-playlist`: signs a whole HLS or DASH playlist offline with the same code
//! as `SignPlaylist` and prints it rewritten.

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::{BackendArg, HashArg, load_key, unix_now};
use crate::playlist::{self, DEFAULT_MAX_PLAYLIST_BYTES, Mode, SharedOptions};
use crate::signing::pool::{SigningPool, Site};
use crate::signing::validate::BatchContext;

/// `sign-playlist` flags.
#[derive(Debug, Args)]
pub struct SignPlaylistArgs {
    /// PEM private key (PKCS#1 or PKCS#8, RSA-2048 or ECDSA P-256).
    #[arg(long)]
    pub key_file: PathBuf,
    /// CloudFront key pair id / public key id.
    #[arg(long)]
    pub key_pair_id: String,
    /// Where the playlist is served; relative URIs resolve against it.
    #[arg(long)]
    pub base_url: String,
    /// Expiry relative to now, seconds.
    #[arg(long, required_unless_present = "expires", conflicts_with = "expires")]
    pub ttl: Option<i64>,
    /// Expiry, unix seconds.
    #[arg(long)]
    pub expires: Option<i64>,
    /// per-uri: a signed URL per URI; shared-policy: one policy for all; cookies: the
    /// playlist unchanged and the cookies on stderr.
    #[arg(long, value_enum, default_value = "per-uri")]
    pub mode: ModeArg,
    /// Shared policy resource (default: the directory of --base-url followed by `*`).
    #[arg(long)]
    pub resource: Option<String>,
    /// Start of validity, unix seconds (custom policies).
    #[arg(long)]
    pub not_before: Option<i64>,
    /// Client IP or CIDR (custom policies).
    #[arg(long)]
    pub ip: Option<String>,
    /// Digest: sha1 (CloudFront's default) or sha256.
    #[arg(long, value_enum, default_value = "sha1")]
    pub hash: HashArg,
    /// Crypto backend.
    #[arg(long, value_enum)]
    pub backend: Option<BackendArg>,
    /// The playlist file (m3u8 or MPD); `-` reads stdin.
    pub file: PathBuf,
}

/// `--mode` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ModeArg {
    /// PER_URI.
    #[value(alias = "PER_URI", alias = "per_uri")]
    PerUri,
    /// SHARED_POLICY.
    #[value(alias = "SHARED_POLICY", alias = "shared_policy")]
    SharedPolicy,
    /// COOKIES.
    #[value(alias = "COOKIES")]
    Cookies,
}

fn read_playlist(file: &PathBuf) -> Result<String, String> {
    if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("cannot read stdin: {e}"))?;
        return Ok(text);
    }
    std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))
}

/// Prints the rewritten playlist on stdout (byte for byte, nothing added), each URI not
/// signed as `line N: URI: why` on stderr, cookies as `Set-Cookie: Name=Value` on stderr.
/// Exit 0, or 1 when some URI was not signed, or 2 when the playlist was refused.
pub fn sign_playlist(args: &SignPlaylistArgs) -> Result<ExitCode, String> {
    let keys = load_key(&args.key_file, &args.key_pair_id, args.hash, args.backend)?;
    let text = read_playlist(&args.file)?;
    let parsed = playlist::parse(&text, &args.base_url, DEFAULT_MAX_PLAYLIST_BYTES)
        .map_err(|e| e.to_string())?;
    let mode = match args.mode {
        ModeArg::PerUri => Mode::PerUri,
        ModeArg::SharedPolicy => Mode::SharedPolicy,
        ModeArg::Cookies => Mode::Cookies,
    };
    let opts = SharedOptions {
        mode,
        policy_resource: args.resource.as_deref().unwrap_or(""),
        not_before: args.not_before.unwrap_or(0),
        ip_range: args.ip.as_deref().unwrap_or(""),
    };
    let ctx = BatchContext {
        default_key: keys.get(&args.key_pair_id),
        default_key_id: args.key_pair_id.clone(),
        expires_at: args.expires.unwrap_or(0),
        ttl_seconds: args.ttl.unwrap_or(0),
        custom_policy: false,
        // An operator's offline tool: no service TTL limit, only "in the future".
        max_ttl_seconds: i64::MAX,
        now: unix_now(),
        grant: None,
    };
    let pool = SigningPool::new(0).map_err(|e| e.to_string())?;
    let outcome = pool
        .run_blocking(|on_pool| {
            playlist::sign(&text, &parsed, &opts, &ctx, &keys, Site::Pool(on_pool))
        })
        .map_err(|e| e.to_string())?;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(outcome.playlist.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("cannot write the playlist: {e}"))?;
    for e in &outcome.errors {
        eprintln!("line {}: {}: {}", e.line, e.uri, e.kind);
    }
    if let Some(c) = &outcome.cookies {
        for (name, value) in c.cookies() {
            eprintln!("Set-Cookie: {name}={value}");
        }
    }
    Ok(if outcome.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
