//! Which backend signs each algorithm: decided when a configuration is built, from
//! `[signing] backend` and `[signing] multibuffer`, said in the start log line and in
//! `cdnsign_signing_backend_info{algorithm, backend}`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::keys::{Backend, EngineRef, HashAlg, KeyKind, algorithm_label};

pub use super::backend::LIB_ENV;
use super::backend::{Engine, engine_path, load_engine};

/// `[signing] multibuffer`: whether RSA-2048 and ECDSA P-256 sign in crypto_mb's 8 lanes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MultibufferMode {
    /// When the library loads and the CPU runs it (AVX-512 IFMA); OpenSSL otherwise.
    #[default]
    Auto,
    /// Never: OpenSSL signs everything.
    Off,
    /// Always: the server refuses to start (and a reload is refused) without it, naming
    /// what is missing.
    Required,
}

impl MultibufferMode {
    /// The config value.
    pub fn as_str(self) -> &'static str {
        match self {
            MultibufferMode::Auto => "auto",
            MultibufferMode::Off => "off",
            MultibufferMode::Required => "required",
        }
    }
}

/// What a [`Selection`] is decided from: `[signing] backend`, `multibuffer` and
/// `multibuffer_flush_us`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wanted {
    /// `[signing] backend`.
    pub backend: Backend,
    /// `[signing] multibuffer`.
    pub multibuffer: MultibufferMode,
    /// `[signing] multibuffer_flush_us`, the longest a lane queue waits to fill.
    pub flush_after: Duration,
}

/// The algorithms, as the `algorithm` label of the signing metrics names them.
const ALGORITHMS: [(KeyKind, HashAlg); 4] = [
    (KeyKind::Rsa, HashAlg::Sha1),
    (KeyKind::Rsa, HashAlg::Sha256),
    (KeyKind::EcdsaP256, HashAlg::Sha1),
    (KeyKind::EcdsaP256, HashAlg::Sha256),
];

/// The backend each algorithm signs with, and why.
#[derive(Debug, Clone)]
pub struct Selection {
    backend: Backend,
    engine: Option<std::sync::Arc<Engine>>,
    reason: String,
    flush_after: Duration,
}

impl Selection {
    /// Decides for `signing`; an error (naming what is missing) only when
    /// `multibuffer = "required"` cannot be met. The library is the one
    /// `CDNSIGN_CRYPTO_MB_LIB` names, else the first found in the default locations.
    pub fn resolve(signing: &Wanted) -> Result<Selection, String> {
        let lib = std::env::var_os(LIB_ENV)
            .filter(|p| !p.is_empty())
            .map(std::path::PathBuf::from);
        Self::resolve_with(signing, lib.as_deref())
    }

    /// [`resolve`](Self::resolve) with the library file given (`None`: the default
    /// locations).
    pub fn resolve_with(
        signing: &Wanted,
        lib: Option<&std::path::Path>,
    ) -> Result<Selection, String> {
        let mode = signing.multibuffer;
        let flush_after = signing.flush_after;
        let plain = |reason: String| Selection {
            backend: signing.backend,
            engine: None,
            reason,
            flush_after,
        };
        let required = |why: &str| {
            format!(
                "signing.multibuffer = \"required\", but {why}; set multibuffer = \"auto\" to \
                 sign with OpenSSL instead"
            )
        };
        if signing.backend != Backend::Openssl {
            let why = format!(
                "signing.backend = \"{}\" (multi-buffer signing runs over OpenSSL keys)",
                signing.backend.as_str()
            );
            return match mode {
                MultibufferMode::Required => Err(required(&why)),
                _ => Ok(plain(why)),
            };
        }
        if mode == MultibufferMode::Off {
            return Ok(plain("signing.multibuffer = \"off\"".into()));
        }
        match load_engine(lib) {
            Ok(engine) => Ok(Selection {
                backend: Backend::Multibuffer,
                reason: format!(
                    "crypto_mb loaded from {}, CPU has AVX-512 IFMA (signing.multibuffer = \"{}\")",
                    engine_path(&engine).display(),
                    mode.as_str()
                ),
                engine: Some(engine),
                flush_after,
            }),
            Err(why) if mode == MultibufferMode::Required => Err(required(&why)),
            Err(why) => Ok(plain(why)),
        }
    }

    /// The backend keys are parsed with ([`Backend::Multibuffer`] when the lanes are on).
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The multi-buffer engine, when the lanes are on.
    pub(crate) fn engine(&self) -> EngineRef<'_> {
        self.engine.as_ref()
    }

    /// Whether RSA-2048 and ECDSA P-256 sign in lanes.
    pub fn multibuffer(&self) -> bool {
        self.backend == Backend::Multibuffer
    }

    /// Why this backend (the library's path, or what is missing).
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// `[signing] multibuffer_flush_us`.
    pub fn flush_after(&self) -> Duration {
        self.flush_after
    }

    /// (algorithm label, backend label) for every algorithm CloudFront accepts.
    pub fn report(&self) -> Vec<(&'static str, &'static str)> {
        ALGORITHMS
            .iter()
            .map(|&(kind, hash)| (algorithm_label(kind, hash), self.backend.as_str()))
            .collect()
    }

    /// Sets `cdnsign_signing_backend_info{algorithm, backend}`: 1 for the backend each
    /// algorithm uses, 0 for the others this build has.
    pub fn publish(&self) {
        let mut all = Backend::compiled();
        if cfg!(feature = "openssl-backend") {
            all.push(Backend::Multibuffer);
        }
        for (algorithm, chosen) in self.report() {
            for b in &all {
                let value = if b.as_str() == chosen { 1.0 } else { 0.0 };
                metrics::gauge!(
                    crate::metrics::SIGNING_BACKEND_INFO,
                    "algorithm" => algorithm,
                    "backend" => b.as_str()
                )
                .set(value);
            }
        }
    }

    /// The start (and reload) log line: which path each algorithm uses, and why.
    pub fn log(&self) {
        let paths = self
            .report()
            .iter()
            .map(|(a, b)| format!("{a}={b}"))
            .collect::<Vec<_>>()
            .join(" ");
        tracing::info!(
            backends = %paths,
            reason = %self.reason,
            flush_us = self.flush_after.as_micros() as u64,
            "signing backends"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signing(mode: MultibufferMode) -> Wanted {
        Wanted {
            backend: Backend::default(),
            multibuffer: mode,
            flush_after: Duration::from_micros(100),
        }
    }

    const MISSING: &str = "/nonexistent/cdnsign-test/libcrypto_mb.so";

    #[test]
    fn a_missing_library_falls_back_to_openssl_unless_required() {
        let missing = Some(std::path::Path::new(MISSING));
        let auto = Selection::resolve_with(&signing(MultibufferMode::Auto), missing)
            .expect("auto falls back");
        assert!(!auto.multibuffer());
        assert_eq!(auto.backend(), Backend::default());
        assert!(auto.reason().contains(MISSING), "{}", auto.reason());
        assert!(
            auto.report()
                .iter()
                .all(|(_, b)| *b == Backend::default().as_str())
        );
        let err = Selection::resolve_with(&signing(MultibufferMode::Required), missing)
            .expect_err("required refuses");
        assert!(err.contains("required") && err.contains(MISSING), "{err}");
    }

    #[test]
    fn off_means_openssl_whatever_is_installed() {
        let off = Selection::resolve_with(&signing(MultibufferMode::Off), None).expect("off");
        assert!(!off.multibuffer());
        assert!(off.reason().contains("\"off\""), "{}", off.reason());
    }

    #[cfg(feature = "openssl-backend")]
    #[test]
    fn auto_uses_the_lanes_where_the_library_runs() {
        let Some(_) = crate::signing::backend::multibuffer::tests::engine_or_skip(
            "auto_uses_the_lanes_where_the_library_runs",
        ) else {
            return;
        };
        let auto = Selection::resolve_with(&signing(MultibufferMode::Auto), None).expect("auto");
        assert!(auto.multibuffer(), "{}", auto.reason());
        assert!(auto.report().contains(&("rsa_sha1", "multibuffer")));
        assert!(auto.report().contains(&("ecdsa_sha256", "multibuffer")));
        Selection::resolve_with(&signing(MultibufferMode::Required), None).expect("required");
    }
}
