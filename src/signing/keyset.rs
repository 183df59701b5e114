//! [`KeySet`]: the immutable set of parsed keys a configuration serves, looked up by id.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use super::keys::{Backend, EngineRef, KeyError, KeySpec, PemSource, SigningKey};

/// An immutable set of parsed keys, looked up by id.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: HashMap<String, Arc<SigningKey>>,
}

impl KeySet {
    /// Reads and parses every key; any failure fails the whole set, so a reload never
    /// half-applies. The error is the first key that failed.
    pub fn load(specs: &[KeySpec], backend: Backend) -> Result<KeySet, KeyError> {
        Self::load_all(specs, backend).map_err(|mut errors| errors.swap_remove(0))
    }

    /// [`load`](Self::load), reporting every key that failed (never an empty list).
    pub fn load_all(specs: &[KeySpec], backend: Backend) -> Result<KeySet, Vec<KeyError>> {
        Self::load_with(specs, backend, None)
    }

    /// [`load_all`](Self::load_all) with the multi-buffer engine chosen at start: with
    /// `Some(engine)` and the OpenSSL backend, RSA-2048 and P-256 keys sign in its lanes.
    pub(crate) fn load_with(
        specs: &[KeySpec],
        backend: Backend,
        engine: EngineRef<'_>,
    ) -> Result<KeySet, Vec<KeyError>> {
        let backend = match (backend, engine) {
            (Backend::Openssl, Some(_)) => Backend::Multibuffer,
            (b, _) => b,
        };
        let mut keys = HashMap::with_capacity(specs.len());
        let mut errors = Vec::new();
        for spec in specs {
            let pem = match &spec.pem {
                PemSource::Builtin(text) => std::borrow::Cow::Borrowed(*text),
                PemSource::File(path) => match read_key_file(&spec.id, path) {
                    Ok(text) => std::borrow::Cow::Owned(text),
                    Err(e) => {
                        errors.push(e);
                        continue;
                    }
                },
            };
            match SigningKey::parse(&spec.id, &pem, spec.hash, backend, engine) {
                Ok(key) => {
                    if keys.insert(spec.id.clone(), Arc::new(key)).is_some() {
                        errors.push(KeyError::Duplicate(spec.id.clone()));
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(KeySet { keys })
        } else {
            Err(errors)
        }
    }

    /// Builds a set from already parsed keys (tests, benches).
    pub fn from_keys(keys: impl IntoIterator<Item = SigningKey>) -> KeySet {
        KeySet {
            keys: keys
                .into_iter()
                .map(|k| (k.id().to_owned(), Arc::new(k)))
                .collect(),
        }
    }

    /// The key with this id.
    pub fn get(&self, id: &str) -> Option<Arc<SigningKey>> {
        self.keys.get(id).cloned()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// No keys at all.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// All keys, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<SigningKey>> {
        self.keys.values()
    }
}

fn read_key_file(id: &str, path: &Path) -> Result<String, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        id: id.to_owned(),
        path: path.to_owned(),
        source,
    })?;
    warn_if_world_readable(id, path);
    Ok(text)
}

#[cfg(unix)]
fn warn_if_world_readable(id: &str, path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                key_id = id,
                path = %path.display(),
                mode = format_args!("{:o}", mode & 0o777),
                "private key file is readable by group or others; chmod 600 it"
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_world_readable(_id: &str, _path: &Path) {}
