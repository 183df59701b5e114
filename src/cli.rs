//! Command line: `serve`, `check-config`, `health` (a probe of a running server), and the
//! offline tools `sign`, `cookies`, `sign-playlist` ([`playlist`]) and `verify`, which use
//! the same validation, policy and signing code as the service.

pub mod playlist;

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand};

use crate::signing::keys::{Backend, HashAlg, KeySet, KeySpec, PemSource};
use crate::signing::pool::{SigningPool, Site};
use crate::signing::sign_batch;
use crate::signing::validate::{BatchContext, ItemSpec};
use crate::signing::verify::{VerifyKey, verify_url};

/// `--version`: the package version and the git revision it was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("CDNSIGN_REVISION"),
    ")"
);

/// cdnsign: sign CloudFront URLs and cookies, and purge CDN caches, over gRPC.
#[derive(Debug, Parser)]
#[command(name = "cdnsign", version = VERSION)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC service (no --config: the built-in dev config with its TEST ONLY key).
    Serve(ServeArgs),
    /// Print one signed URL on stdout.
    Sign(SignArgs),
    /// Print the CloudFront cookies for one resource, one `Name=Value` per line.
    Cookies(SignArgs),
    /// Sign every URI of an HLS playlist or DASH MPD and print the playlist rewritten.
    SignPlaylist(playlist::SignPlaylistArgs),
    /// Check a signed URL: prints valid/invalid and why; exit 0 only when valid.
    Verify(VerifyArgs),
    /// Load and validate the configuration as `serve` would (file, CDNSIGN_* environment,
    /// keys parsed, clients resolved, TLS files read, targets checked) without binding a
    /// port: exit 0 with a one-line summary, or exit 2 listing every problem.
    CheckConfig(ServeArgs),
    /// Ask a running server's gRPC health service whether it is SERVING (for a Docker
    /// HEALTHCHECK): exit 0 if so, 1 otherwise (not serving, unreachable, timed out).
    Health(HealthArgs),
}

/// `health` flags.
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// The server's gRPC address (plaintext).
    #[arg(long, default_value = "127.0.0.1:50051", env = "CDNSIGN_HEALTH_ADDR")]
    pub addr: String,
    /// The service to ask about ("" is the whole server; e.g. cdnsign.v1.Signer).
    #[arg(long, default_value = "")]
    pub service: String,
    /// Seconds to wait for the connection and the answer.
    #[arg(long, default_value_t = 3.0)]
    pub timeout: f64,
}

/// `serve` flags.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML config file.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// `sign` / `cookies` flags.
#[derive(Debug, Args)]
pub struct SignArgs {
    /// PEM private key (PKCS#1 or PKCS#8, RSA-2048 or ECDSA P-256).
    #[arg(long)]
    pub key_file: PathBuf,
    /// CloudFront key pair id / public key id.
    #[arg(long)]
    pub key_pair_id: String,
    /// URL to sign (or a bare object name with --bare).
    #[arg(long)]
    pub url: String,
    /// Expiry, unix seconds.
    #[arg(long, required_unless_present = "ttl", conflicts_with = "ttl")]
    pub expires: Option<i64>,
    /// Expiry relative to now, seconds.
    #[arg(long)]
    pub ttl: Option<i64>,
    /// Start of validity, unix seconds (implies a custom policy).
    #[arg(long)]
    pub not_before: Option<i64>,
    /// Client IP or CIDR (implies a custom policy).
    #[arg(long)]
    pub ip: Option<String>,
    /// Policy resource, wildcards allowed (implies a custom policy).
    #[arg(long)]
    pub resource: Option<String>,
    /// Use a custom policy even without the options above.
    #[arg(long)]
    pub custom: bool,
    /// The URL is a bare object name (legacy streaming form).
    #[arg(long)]
    pub bare: bool,
    /// Digest: sha1 (CloudFront's default) or sha256.
    #[arg(long, value_enum, default_value = "sha1")]
    pub hash: HashArg,
    /// Crypto backend.
    #[arg(long, value_enum)]
    pub backend: Option<BackendArg>,
}

/// `--hash` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum HashArg {
    /// SHA-1.
    Sha1,
    /// SHA-256.
    Sha256,
}

/// `--backend` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum BackendArg {
    /// The `openssl` crate.
    Openssl,
    /// The pure-Rust `rsa` crate.
    PureRust,
}

/// `verify` flags.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Public key PEM (a private key PEM works too).
    #[arg(long)]
    pub public_key: PathBuf,
    /// Check expiry and start against this time instead of now (unix seconds).
    #[arg(long)]
    pub now: Option<i64>,
    /// Check an IpAddress condition against this client address.
    #[arg(long)]
    pub client_ip: Option<IpAddr>,
    /// The signed URL.
    pub url: String,
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Runs `sign`, `cookies` or `verify`.
pub fn run_offline(command: Command) -> ExitCode {
    let result = match command {
        Command::Serve(_) => Err("serve is not an offline command".to_owned()),
        Command::Sign(args) => sign(&args, false),
        Command::Cookies(args) => sign(&args, true),
        Command::SignPlaylist(args) => playlist::sign_playlist(&args),
        Command::Verify(args) => verify(&args),
        Command::CheckConfig(args) => check_config(&args),
        Command::Health(args) => {
            let timeout = std::time::Duration::try_from_secs_f64(args.timeout.clamp(0.05, 600.0))
                .unwrap_or(std::time::Duration::from_secs(3));
            return crate::health_probe::check(&args.addr, &args.service, timeout);
        }
    };
    match result {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("cdnsign: {msg}");
            ExitCode::from(2)
        }
    }
}

fn check_config(args: &ServeArgs) -> Result<ExitCode, String> {
    let live = crate::live::Live::load(args.config.as_deref(), None).map_err(|e| e.to_string())?;
    println!(
        "config OK: {}: {}",
        live.config.source.describe(),
        live.summary()
    );
    Ok(ExitCode::SUCCESS)
}

/// Loads one key from a PEM file for the offline commands.
pub(crate) fn load_key(
    key_file: &std::path::Path,
    key_pair_id: &str,
    hash: HashArg,
    backend: Option<BackendArg>,
) -> Result<KeySet, String> {
    if key_pair_id.is_empty() || !key_pair_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err("--key-pair-id must be ASCII letters and digits".into());
    }
    let backend = match backend {
        None => Backend::default(),
        Some(BackendArg::Openssl) => Backend::Openssl,
        Some(BackendArg::PureRust) => Backend::PureRust,
    };
    let spec = KeySpec {
        id: key_pair_id.to_owned(),
        pem: PemSource::File(key_file.to_owned()),
        hash: match hash {
            HashArg::Sha1 => HashAlg::Sha1,
            HashArg::Sha256 => HashAlg::Sha256,
        },
    };
    KeySet::load(&[spec], backend).map_err(|e| e.to_string())
}

fn sign(args: &SignArgs, cookies: bool) -> Result<ExitCode, String> {
    let keys = load_key(&args.key_file, &args.key_pair_id, args.hash, args.backend)?;
    let item = ItemSpec {
        url: &args.url,
        policy_resource: args.resource.as_deref().unwrap_or(""),
        expires_at: args.expires.unwrap_or(0),
        ttl_seconds: args.ttl.unwrap_or(0),
        not_before: args.not_before.unwrap_or(0),
        ip_range: args.ip.as_deref().unwrap_or(""),
        key_id: "",
        custom_policy: args.custom,
        bare_resource: args.bare,
    };
    let ctx = BatchContext {
        default_key: keys.get(&args.key_pair_id),
        default_key_id: args.key_pair_id.clone(),
        expires_at: 0,
        ttl_seconds: 0,
        custom_policy: false,
        // An operator's offline tool: no service TTL limit, only "in the future".
        max_ttl_seconds: i64::MAX,
        now: unix_now(),
        grant: None,
    };
    let pool = SigningPool::new(1).map_err(|e| e.to_string())?;
    let (mut results, _) =
        pool.run_blocking(|on_pool| sign_batch(&[item], &ctx, &keys, Site::Pool(on_pool)));
    let signed = results
        .pop()
        .ok_or_else(|| "no result".to_owned())?
        .map_err(|e| e.to_string())?;
    if cookies {
        for (name, value) in signed.cookies() {
            println!("{name}={value}");
        }
    } else {
        println!("{}", signed.signed_url());
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(args: &VerifyArgs) -> Result<ExitCode, String> {
    let pem = std::fs::read_to_string(&args.public_key)
        .map_err(|e| format!("cannot read {}: {e}", args.public_key.display()))?;
    let key = VerifyKey::from_pem(&pem).map_err(|e| e.to_string())?;
    let verdict = verify_url(
        &args.url,
        &key,
        args.now.unwrap_or_else(unix_now),
        args.client_ip,
    );
    if verdict.valid() {
        println!(
            "valid: {} policy, key {}, expires {}",
            if verdict.custom { "custom" } else { "canned" },
            verdict.key_pair_id.as_deref().unwrap_or("?"),
            verdict.expires.map_or("?".to_owned(), |e| e.to_string())
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!("invalid:");
        for p in &verdict.problems {
            println!("  - {p}");
        }
        Ok(ExitCode::from(1))
    }
}
