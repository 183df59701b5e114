//! The public halves of the configured keys, for verification on the server
//! (`VerifyUrls`, `VerifyCookies`).
//!
//! Each is derived from the same PEM the signing key was loaded from, and proven to be its
//! half: a probe message signed with the loaded key must verify with it. A key file
//! replaced on disk since the last (re)load therefore never verifies in that key's name.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use super::keys::{KeySet, KeySpec, PemSource};
use super::pool::OnPool;
use super::verify::VerifyKey;

/// Signed with each loaded key and verified with its derived public half.
const PROBE: &[u8] = b"cdnsign: public half of a loaded key";

/// Public keys by key id; a key whose half could not be had says why.
#[derive(Debug, Default)]
pub struct PublicKeys {
    keys: HashMap<String, Result<VerifyKey, String>>,
}

impl PublicKeys {
    /// Derives the public half of every key in `specs` that `loaded` holds (runs one
    /// private-key operation per key, hence on the pool).
    pub fn derive(specs: &[KeySpec], loaded: &KeySet, on_pool: &OnPool) -> PublicKeys {
        let mut keys = HashMap::with_capacity(specs.len());
        for spec in specs {
            let Some(signing) = loaded.get(&spec.id) else {
                continue;
            };
            let pem = match &spec.pem {
                PemSource::Builtin(text) => Ok((*text).to_owned()),
                PemSource::File(path) => std::fs::read_to_string(path)
                    .map_err(|e| format!("key {}: cannot read its file again: {e}", spec.id)),
            };
            let public = pem.and_then(|pem| {
                VerifyKey::from_pem(&pem).map_err(|e| format!("key {}: {e}", spec.id))
            });
            let checked = public.and_then(|public| {
                let sig = signing
                    .sign(PROBE, on_pool)
                    .map_err(|e| format!("key {}: {e}", spec.id))?;
                if public.verify(signing.hash(), PROBE, &sig) {
                    Ok(public)
                } else {
                    Err(format!(
                        "key {}: its file changed since it was loaded; reload (SIGHUP) to verify with it",
                        spec.id
                    ))
                }
            });
            keys.insert(spec.id.clone(), checked);
        }
        PublicKeys { keys }
    }

    /// The key `id` names, or why there is none.
    pub fn get(&self, id: &str) -> Result<&VerifyKey, String> {
        match self.keys.get(id) {
            Some(Ok(k)) => Ok(k),
            Some(Err(why)) => Err(why.clone()),
            None => Err(format!(
                "Key-Pair-Id {id:?} names no key loaded on this server"
            )),
        }
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.values().filter(|k| k.is_ok()).count()
    }

    /// No usable key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Public keys derived from one key set (held weakly: a reload frees the old set).
type Derived = (Weak<KeySet>, Arc<PublicKeys>);

/// The public keys of the key set in force, derived again when a reload swaps it. Clones
/// share one cache.
#[derive(Debug, Clone, Default)]
pub struct PublicKeyCache {
    inner: Arc<Mutex<Option<Derived>>>,
}

impl PublicKeyCache {
    /// The public halves of `loaded` (derived from `specs()` on first use after each
    /// reload, on the pool thread `on_pool` proves this is).
    pub fn get(
        &self,
        loaded: &Arc<KeySet>,
        specs: impl FnOnce() -> Vec<KeySpec>,
        on_pool: &OnPool,
    ) -> Arc<PublicKeys> {
        let mut cached = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((set, keys)) = cached.as_ref()
            && set.upgrade().is_some_and(|s| Arc::ptr_eq(&s, loaded))
        {
            return Arc::clone(keys);
        }
        let keys = Arc::new(PublicKeys::derive(&specs(), loaded, on_pool));
        *cached = Some((Arc::downgrade(loaded), Arc::clone(&keys)));
        keys
    }
}
