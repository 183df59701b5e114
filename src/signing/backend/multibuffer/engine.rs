//! Loading crypto_mb once per process, and deciding whether it may be used.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use cdnsign_cryptomb::{CryptoMb, LoadError};

use crate::signing::backend::LIB_ENV;

/// A loaded crypto_mb that this CPU runs.
#[derive(Debug)]
pub struct Engine {
    mb: CryptoMb,
}

impl Engine {
    /// The library.
    pub fn mb(&self) -> &CryptoMb {
        &self.mb
    }

    /// Where it was loaded from.
    pub fn path(&self) -> &Path {
        self.mb.path()
    }
}

/// Why the multi-buffer backend cannot be used; the text names what is missing.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Unavailable {
    /// The library did not load (every place tried, each with the loader's reason).
    #[error("{0} (install it with scripts/install-crypto-mb.sh, or set {LIB_ENV})")]
    NotLoaded(LoadError),
    /// It loaded, but this CPU lacks what it needs.
    #[error(
        "crypto_mb loaded from {path}, but this CPU lacks AVX-512 IFMA \
         (mbx_is_crypto_mb_applicable = 0; needs AVX-512 F/DQ/BW/IFMA/VBMI2 and BMI2)"
    )]
    NoIfma {
        /// The library file.
        path: PathBuf,
    },
}

impl Unavailable {
    /// Stable short code for logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Unavailable::NotLoaded(e) => e.code(),
            Unavailable::NoIfma { .. } => "cpu_not_applicable",
        }
    }
}

type Loaded = (Option<PathBuf>, Result<Arc<Engine>, Unavailable>);

/// Libraries loaded so far, by requested path (`None`: the default search). A library is
/// loaded once and never unloaded; keys hold it through `Arc<Engine>`.
static LOADED: Mutex<Vec<Loaded>> = Mutex::new(Vec::new());

/// The engine for `path` (or the default search), loading it the first time.
pub fn engine_at(path: Option<&Path>) -> Result<Arc<Engine>, Unavailable> {
    let mut loaded = LOADED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, result)) = loaded.iter().find(|(p, _)| p.as_deref() == path) {
        return result.clone();
    }
    let result = match CryptoMb::load(path) {
        Ok(mb) if mb.applicable() => Ok(Arc::new(Engine { mb })),
        Ok(mb) => Err(Unavailable::NoIfma {
            path: mb.path().to_owned(),
        }),
        Err(e) => Err(Unavailable::NotLoaded(e)),
    };
    loaded.push((path.map(Path::to_owned), result.clone()));
    result
}

/// The engine as `cdnsign serve` finds it: `CDNSIGN_CRYPTO_MB_LIB` if set, else the
/// default locations.
pub fn engine() -> Result<Arc<Engine>, Unavailable> {
    let path = std::env::var_os(LIB_ENV)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    engine_at(path.as_deref())
}
