//! Finding and opening `libcrypto_mb.so`, and resolving the functions cdnsign calls.

use std::ffi::c_int;
use std::fmt;
use std::path::{Path, PathBuf};

use libloading::Library;
use openssl_sys::BIGNUM;

/// Where [`CryptoMb::load`] looks when it is given no path, in order: the directory
/// `scripts/install-crypto-mb.sh` installs into (the PyPI build and its Intel runtime), then
/// the dynamic loader's own search (`ldconfig` paths, `LD_LIBRARY_PATH`) by soname: 13 is
/// the PyPI `ipp-crypto` 2026 soname, 11 Debian 13's `libcrypto-mb11`.
pub const DEFAULT_CANDIDATES: [&str; 4] = [
    "/usr/local/lib/cdnsign/libcrypto_mb.so.13",
    "libcrypto_mb.so.13",
    "libcrypto_mb.so.11",
    "libcrypto_mb.so",
];

/// The Intel compiler runtime the PyPI build links (from PyPI `intel-cmplr-lib-rt`),
/// dependencies first. When a candidate is a path, those found beside it are opened first,
/// by full path, so the loader finds them already loaded (by soname) without
/// `LD_LIBRARY_PATH`. Debian's GCC build needs none of them.
pub const RUNTIME_LIBS: [&str; 4] = ["libintlc.so.5", "libimf.so", "libsvml.so", "libirng.so"];

type GetCpuFeatures = unsafe extern "C" fn() -> u64;
type IsApplicable = unsafe extern "C" fn(u64) -> c_int;
pub(crate) type RsaPrivateCrtSsl = unsafe extern "C" fn(
    from: *const *const u8,
    to: *const *mut u8,
    p: *const *const BIGNUM,
    q: *const *const BIGNUM,
    dp: *const *const BIGNUM,
    dq: *const *const BIGNUM,
    iq: *const *const BIGNUM,
    bits: c_int,
) -> u32;
pub(crate) type RsaPublicSsl = unsafe extern "C" fn(
    from: *const *const u8,
    to: *const *mut u8,
    e: *const *const BIGNUM,
    n: *const *const BIGNUM,
    bits: c_int,
) -> u32;
pub(crate) type P256SignSsl = unsafe extern "C" fn(
    sign_r: *const *mut u8,
    sign_s: *const *mut u8,
    msg: *const *const u8,
    eph_skey: *const *const BIGNUM,
    reg_skey: *const *const BIGNUM,
    buffer: *mut u8,
) -> u32;

/// Resolved entry points. Plain function pointers, valid while the [`Library`] that
/// produced them is loaded; [`CryptoMb`] keeps it loaded for its whole life.
#[derive(Clone, Copy)]
pub(crate) struct Fns {
    get_cpu_features: GetCpuFeatures,
    is_applicable: IsApplicable,
    pub(crate) rsa_private_crt: RsaPrivateCrtSsl,
    pub(crate) rsa_public: RsaPublicSsl,
    pub(crate) p256_sign: P256SignSsl,
}

/// An opened `libcrypto_mb`. Dropping it unloads the library; cdnsign keeps one for the
/// whole process.
pub struct CryptoMb {
    pub(crate) fns: Fns,
    path: PathBuf,
    /// `mbx_is_crypto_mb_applicable` at load. The lane functions are only called when it
    /// is true: on other CPUs the library's dispatcher picks code paths that may still use
    /// instructions the CPU lacks (under valgrind, an AVX-IFMA path: SIGILL).
    applicable: bool,
    // Field order is drop order: the library before the runtime it links.
    _lib: Library,
    _runtime: Vec<Library>,
}

impl fmt::Debug for CryptoMb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CryptoMb")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The library could not be used: every place tried, each with why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("crypto_mb not loaded: {}", render(.tried))]
pub struct LoadError {
    /// (candidate, what went wrong), in the order tried.
    pub tried: Vec<(String, String)>,
}

impl LoadError {
    /// Stable short code for logs and metrics.
    pub fn code(&self) -> &'static str {
        "library_not_loaded"
    }
}

fn render(tried: &[(String, String)]) -> String {
    tried
        .iter()
        .map(|(c, why)| format!("{c}: {why}"))
        .collect::<Vec<_>>()
        .join("; ")
}

impl CryptoMb {
    /// Opens `path` if given (and nothing else), else the first of [`DEFAULT_CANDIDATES`]
    /// that opens and has every function cdnsign calls.
    pub fn load(path: Option<&Path>) -> Result<CryptoMb, LoadError> {
        let candidates: Vec<PathBuf> = match path {
            Some(p) => vec![p.to_owned()],
            None => DEFAULT_CANDIDATES.iter().map(PathBuf::from).collect(),
        };
        let mut tried = Vec::new();
        for candidate in candidates {
            match Self::open(&candidate) {
                Ok(mb) => return Ok(mb),
                Err(why) => tried.push((candidate.display().to_string(), why)),
            }
        }
        Err(LoadError { tried })
    }

    fn open(candidate: &Path) -> Result<CryptoMb, String> {
        // A bare soname is left to the dynamic loader's search; a path must exist.
        let is_path = candidate.components().count() > 1;
        if is_path && !candidate.exists() {
            return Err("no such file".into());
        }
        let mut runtime = Vec::new();
        if let Some(dir) = candidate.parent().filter(|_| is_path) {
            for name in RUNTIME_LIBS {
                let dep = dir.join(name);
                if dep.exists() {
                    runtime.push(open_library(&dep)?);
                }
            }
        }
        let lib = open_library(candidate)?;
        let fns = Fns {
            get_cpu_features: symbol(&lib, b"mbx_get_cpu_features\0")?,
            is_applicable: symbol(&lib, b"mbx_is_crypto_mb_applicable\0")?,
            rsa_private_crt: symbol(&lib, b"mbx_rsa_private_crt_ssl_mb8\0")?,
            rsa_public: symbol(&lib, b"mbx_rsa_public_ssl_mb8\0")?,
            p256_sign: symbol(&lib, b"mbx_nistp256_ecdsa_sign_ssl_mb8\0")?,
        };
        let mut mb = CryptoMb {
            fns,
            path: candidate.to_owned(),
            applicable: false,
            _lib: lib,
            _runtime: runtime,
        };
        mb.applicable = mb.detect_applicable();
        Ok(mb)
    }

    /// The file (or soname) that was opened.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The CPU features the library detected (`mbx_get_cpu_features`, its `mbcpCPUID_*`
    /// bits).
    pub fn cpu_features(&self) -> u64 {
        // SAFETY: `get_cpu_features` was resolved from `self._lib`, which is loaded for as
        // long as `self` lives; the C function takes no arguments, only reads CPUID and
        // returns a plain integer.
        unsafe { (self.fns.get_cpu_features)() }
    }

    /// Whether this CPU runs the library's AVX-512 code (`mbx_is_crypto_mb_applicable` on
    /// the detected features: AVX-512 F/DQ/BW/IFMA/VBMI2, BMI2, enabled by the OS). When it
    /// is false, every lane function returns [`MbError::NotApplicable`] without calling the
    /// library.
    ///
    /// [`MbError::NotApplicable`]: crate::MbError::NotApplicable
    pub fn applicable(&self) -> bool {
        self.applicable
    }

    fn detect_applicable(&self) -> bool {
        let features = self.cpu_features();
        // SAFETY: resolved from the library `self` keeps loaded; the function takes an
        // integer by value and returns one, touching no memory of ours.
        unsafe { (self.fns.is_applicable)(features) != 0 }
    }
}

fn open_library(path: &Path) -> Result<Library, String> {
    // SAFETY: opening a shared object runs its initialisers. The candidates are cdnsign's
    // install directory, an operator-chosen path (`CDNSIGN_CRYPTO_MB_LIB`) or sonames the
    // system loader resolves, i.e. code the operator installed for this purpose; crypto_mb
    // and the Intel runtime have no initialisers with preconditions on the caller.
    unsafe { Library::new(path) }.map_err(|e| e.to_string())
}

fn symbol<T: Copy>(lib: &Library, name: &[u8]) -> Result<T, String> {
    // SAFETY: every call site names a crypto_mb function and asks for the function-pointer
    // type written from its prototype in crypto_mb's headers (rsa.h, ec_nistp256.h,
    // cpu_features.h), so the pointer is used with the right signature. The copied pointer
    // outlives the `Symbol` borrow but not the library: `CryptoMb` stores both together and
    // drops them together.
    unsafe { lib.get::<T>(name) }
        .map(|s| *s)
        .map_err(|e| e.to_string())
}
