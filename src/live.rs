//! The configuration in force, and how SIGHUP replaces it.
//!
//! Everything that can change while the server runs is built from a validated [`Config`]
//! into one [`Live`] value: the keys (parsed), the `[signing]` limits and default key, the
//! clients (tokens, certificate names, keys, prefixes, TTLs, rates, purge targets), and the
//! TLS certificate and client CA. [`LiveConfig`] swaps whole values atomically: a call
//! reads one snapshot from start to end, and the first call after a swap sees only the new
//! one (a revoked token is `UNAUTHENTICATED` from then on).
//!
//! A reload re-reads the file and the environment and builds a new value; if anything is
//! wrong, nothing changes, every problem is logged, and
//! `cdnsign_config_reloads_total{outcome="failure"}` counts it. Settings the running server
//! cannot change (listen addresses, the pool size, purge targets...) are named in a warning
//! when they differ; they apply at the next start.

use std::sync::Arc;

use arc_swap::ArcSwap;
use metrics::Counter;
use tokio_rustls::rustls;

use crate::auth::{AUDIT_TARGET, Authenticator};
use crate::config::{Config, ConfigError};
use crate::conn::AcceptSettings;
use crate::metrics::{CONFIG_RELOADS, KeyMetrics};
use crate::signing::keys::{Backend, KeyKind, KeySet};
use crate::signing::selection::Selection;

/// One consistent configuration, ready to serve.
#[derive(Debug)]
pub struct Live {
    /// What it was built from.
    pub config: Config,
    /// The parsed keys.
    pub keys: Arc<KeySet>,
    /// Which backend signs each algorithm, and why.
    pub selection: Selection,
    /// Who may call, and their grants.
    pub auth: Authenticator,
    /// TLS for new connections (`[server.tls]`).
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Live {
    /// Reads the config file (or the built-in dev config) and the environment and builds
    /// it, reporting every problem at once: unknown keys and broken rules in the sources,
    /// and, whenever they parse, unreadable keys, bad clients and TLS files too.
    pub fn load(
        path: Option<&std::path::Path>,
        previous: Option<&Live>,
    ) -> Result<Live, ConfigError> {
        let (config, problems) = Config::load_reporting(path)?;
        Self::build_reporting(config, previous, problems)
    }

    /// Loads keys, resolves clients and reads TLS files for `config`, or lists every
    /// problem. `previous` (on reload) lends rate-limit buckets whose limits are unchanged.
    pub fn build(config: Config, previous: Option<&Live>) -> Result<Live, ConfigError> {
        Self::build_reporting(config, previous, Vec::new())
    }

    fn build_reporting(
        config: Config,
        previous: Option<&Live>,
        mut problems: Vec<String>,
    ) -> Result<Live, ConfigError> {
        let selection = Selection::resolve(&config.signing.selection_wanted())
            .map_err(|p| problems.push(p))
            .ok();
        let keys = match &selection {
            Some(sel) => {
                match KeySet::load_with(&config.key_specs(), config.signing.backend, sel.engine()) {
                    Ok(keys) => Some(keys),
                    Err(errors) => {
                        problems.extend(errors.iter().map(ToString::to_string));
                        None
                    }
                }
            }
            None => None,
        };
        if let Some(keys) = &keys {
            problems.extend(variable_time_rsa(&config, keys));
        }
        let auth = Authenticator::build(
            &config.clients,
            config.server.allow_unauthenticated,
            config.signing.max_batch,
            previous.map(|p| &p.auth),
        )
        .map_err(|p| problems.extend(p))
        .ok();
        let tls = tls_config(&config).map_err(|p| problems.push(p)).ok();
        match (selection, keys, auth, tls) {
            (Some(selection), Some(keys), Some(auth), Some(tls)) if problems.is_empty() => {
                Ok(Live {
                    keys: Arc::new(keys),
                    selection,
                    auth,
                    tls: tls.map(Arc::new),
                    config,
                })
            }
            _ => Err(ConfigError {
                origin: config.source.describe(),
                problems,
            }),
        }
    }

    /// One line for logs and `check-config`.
    pub fn summary(&self) -> String {
        let c = &self.config;
        format!(
            "{} keys, {} clients, {} purge targets, gRPC on {}{}, metrics on {}, signing with {}",
            self.keys.len(),
            self.auth.clients(),
            c.targets.len(),
            c.server.listen,
            if self.tls.is_some() { " (TLS)" } else { "" },
            c.metrics
                .listen
                .map_or_else(|| "(off)".to_owned(), |a| a.to_string()),
            self.selection.backend().as_str(),
        )
    }
}

/// RUSTSEC-2023-0071: the `rsa` crate's private-key operation is not constant-time. A
/// server reachable over the network must not use it unless the operator says so.
fn variable_time_rsa(config: &Config, keys: &KeySet) -> Vec<String> {
    if config.signing.backend != Backend::PureRust || config.signing.allow_variable_time_rsa {
        return Vec::new();
    }
    let mut ids: Vec<&str> = keys
        .iter()
        .filter(|k| k.kind() == KeyKind::Rsa)
        .map(|k| k.id())
        .collect();
    ids.sort_unstable();
    ids.iter()
        .map(|id| {
            format!(
                "keys: {id} is an RSA key and signing.backend = \"pure-rust\": the rsa crate's \
                 private-key operation is not constant-time (RUSTSEC-2023-0071, Marvin), so a \
                 network service refuses it; use the openssl backend, or set \
                 signing.allow_variable_time_rsa = true to accept the risk"
            )
        })
        .collect()
}

/// Reads `[server.tls]` into a rustls config.
fn tls_config(config: &Config) -> Result<Option<rustls::ServerConfig>, String> {
    let Some(tls) = &config.server.tls else {
        return Ok(None);
    };
    let read = |what: &str, p: &std::path::Path| {
        let path = config.resolve(p);
        std::fs::read(&path).map_err(|e| format!("server.tls.{what}: {}: {e}", path.display()))
    };
    let cert = read("cert", &tls.cert)?;
    let key = read("key", &tls.key)?;
    let ca = tls
        .client_ca
        .as_ref()
        .map(|p| read("client_ca", p))
        .transpose()?;
    crate::conn::server_config(&cert, &key, ca.as_deref(), tls.client_auth_optional)
        .map(Some)
        .map_err(|e| format!("server.tls: {e}"))
}

/// Settings a running server cannot change; a reload that changes them warns and leaves
/// them as they were until the next start.
pub fn restart_needed(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut differs = |name, changed: bool| {
        if changed {
            out.push(name);
        }
    };
    differs("server.listen", old.server.listen != new.server.listen);
    differs(
        "server.max_concurrent_requests",
        old.server.max_concurrent_requests != new.server.max_concurrent_requests,
    );
    differs(
        "server.tls (turning TLS on or off)",
        old.server.tls.is_some() != new.server.tls.is_some(),
    );
    differs(
        "server.max_connection_age_seconds",
        old.server.max_connection_age_seconds != new.server.max_connection_age_seconds
            || old.server.max_connection_age_grace_seconds
                != new.server.max_connection_age_grace_seconds,
    );
    differs("metrics.listen", old.metrics.listen != new.metrics.listen);
    differs(
        "signing.threads",
        old.signing.threads != new.signing.threads,
    );
    differs(
        "signing.multibuffer_flush_us",
        old.signing.multibuffer_flush_us != new.signing.multibuffer_flush_us,
    );
    differs("log", !same(&old.log, &new.log));
    differs("[purge]", !same(&old.purge, &new.purge));
    differs("[[targets]]", !same(&old.targets, &new.targets));
    out
}

/// Puts back into `new` the settings [`restart_needed`] names, as `old` has them: they are
/// what the process still runs with, so the summary, `check-config`'s view of the live
/// config and the next reload's comparison see the values in force (a second reload of the
/// same edit warns again).
fn keep_restart_only(old: &Live, new: &mut Live) {
    let (was, now) = (&old.config, &mut new.config);
    now.server.listen = was.server.listen;
    now.server.max_concurrent_requests = was.server.max_concurrent_requests;
    if was.server.tls.is_some() != now.server.tls.is_some() {
        now.server.tls.clone_from(&was.server.tls);
        new.tls.clone_from(&old.tls);
    }
    now.server.max_connection_age_seconds = was.server.max_connection_age_seconds;
    now.server.max_connection_age_grace_seconds = was.server.max_connection_age_grace_seconds;
    now.metrics.listen = was.metrics.listen;
    now.signing.threads = was.signing.threads;
    now.signing.multibuffer_flush_us = was.signing.multibuffer_flush_us;
    now.log.clone_from(&was.log);
    now.purge.clone_from(&was.purge);
    now.targets.clone_from(&was.targets);
}

/// Compares config sections through their serialised form.
fn same<T: serde::Serialize>(a: &T, b: &T) -> bool {
    serde_json::to_value(a).ok() == serde_json::to_value(b).ok()
}

/// The configuration in force, swapped whole.
pub struct LiveConfig {
    current: ArcSwap<Live>,
    success: Counter,
    failure: Counter,
    keys: KeyMetrics,
}

impl std::fmt::Debug for LiveConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveConfig").finish_non_exhaustive()
    }
}

impl LiveConfig {
    /// Serves `live` until a reload replaces it.
    pub fn new(live: Live) -> LiveConfig {
        let keys = KeyMetrics::new();
        keys.loaded(live.keys.len());
        live.selection.publish();
        LiveConfig {
            current: ArcSwap::from_pointee(live),
            success: metrics::counter!(CONFIG_RELOADS, "outcome" => "success"),
            failure: metrics::counter!(CONFIG_RELOADS, "outcome" => "failure"),
            keys,
        }
    }

    /// The configuration in force now; hold it for a whole call.
    pub fn snapshot(&self) -> Arc<Live> {
        self.current.load_full()
    }

    /// Re-reads the config's source (file and environment) and swaps in the result, or
    /// keeps the current one and says why. Logs, audits and counts either way.
    pub fn reload(&self) -> Result<(), ConfigError> {
        let old = self.snapshot();
        let built = Live::load(old.config.source.path(), Some(&old));
        match built {
            Ok(mut live) => {
                let restart = restart_needed(&old.config, &live.config);
                keep_restart_only(&old, &mut live);
                if !restart.is_empty() {
                    tracing::warn!(
                        settings = %restart.join(", "),
                        "config reloaded, but these settings changed and need a restart to take effect; the old values stay in force"
                    );
                }
                let summary = live.summary();
                self.keys.loaded(live.keys.len());
                if live.selection.backend() != old.selection.backend() {
                    live.selection.log();
                }
                live.selection.publish();
                self.current.store(Arc::new(live));
                self.success.increment(1);
                tracing::info!(%summary, "config reloaded");
                tracing::info!(target: AUDIT_TARGET, event = "config_reload", outcome = "success", %summary, "configuration replaced");
                Ok(())
            }
            Err(error) => {
                self.failure.increment(1);
                self.keys.failed();
                for problem in &error.problems {
                    tracing::error!(origin = %error.origin, %problem, "config reload refused");
                }
                tracing::error!(
                    problems = error.problems.len(),
                    "config reload failed; still serving the previous configuration"
                );
                tracing::warn!(target: AUDIT_TARGET, event = "config_reload", outcome = "failure", problems = error.problems.len(), "configuration reload refused");
                Err(error)
            }
        }
    }
}

impl AcceptSettings for LiveConfig {
    fn tls_config(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.current.load().tls.clone()
    }

    fn max_connections(&self) -> usize {
        self.current.load().config.server.max_connections
    }

    fn max_connection_life(&self) -> Option<std::time::Duration> {
        let server = &self.current.load().config.server;
        (server.max_connection_age_seconds > 0 && server.max_connection_age_grace_seconds > 0).then(
            || {
                std::time::Duration::from_secs(
                    server
                        .max_connection_age_seconds
                        .saturating_add(server.max_connection_age_grace_seconds),
                )
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config(extra: &str) -> Config {
        let key =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("config/dev-keys/TEST-ONLY-cloudfront.pem");
        Config::from_toml_str(
            &format!(
                "[server]\nallow_unauthenticated = true\n[[keys]]\nid = \"K1\"\npath = \"{}\"\n{extra}",
                key.display()
            ),
            Path::new("."),
        )
        .expect("config")
    }

    #[test]
    fn restart_settings_are_named() {
        let a = config("");
        let mut b = config("");
        assert!(restart_needed(&a, &b).is_empty());
        b.server.listen = "127.0.0.1:1".parse().expect("addr");
        b.signing.max_batch = 5;
        b.purge.max_paths = 1;
        assert_eq!(restart_needed(&a, &b), ["server.listen", "[purge]"]);
    }

    #[test]
    fn a_reload_keeps_restart_only_settings_as_they_run_and_names_them_again() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("cdnsign.toml");
        let key =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("config/dev-keys/TEST-ONLY-cloudfront.pem");
        let write = |listen: &str, max_batch: usize| {
            std::fs::write(
                &path,
                format!(
                    "[server]\nallow_unauthenticated = true\nlisten = \"{listen}\"\n[metrics]\nlisten = \"\"\n[signing]\nmax_batch = {max_batch}\n[[keys]]\nid = \"K1\"\npath = \"{}\"\n",
                    key.display()
                ),
            )
            .expect("write");
        };
        write("127.0.0.1:7001", 100);
        let live = LiveConfig::new(Live::load(Some(&path), None).expect("load"));
        write("127.0.0.1:7002", 200);
        live.reload().expect("reload");
        let now = live.snapshot();
        assert_eq!(now.config.signing.max_batch, 200, "reloadable: applied");
        assert_eq!(
            now.config.server.listen,
            "127.0.0.1:7001".parse().expect("addr"),
            "restart-only: the value the process runs with"
        );
        // Reloading the same edit again still names the setting that needs a restart.
        let again = Live::load(Some(&path), Some(&now)).expect("load");
        assert_eq!(
            restart_needed(&now.config, &again.config),
            ["server.listen"]
        );
    }

    #[test]
    fn every_build_problem_is_listed() {
        let c = config(
            "[[keys]]\nid = \"K2\"\npath = \"/nonexistent/key.pem\"\n[[clients]]\nname = \"c\"\ntoken_sha256 = \"zz\"\n[server.tls]\ncert = \"/nonexistent/cert.pem\"\nkey = \"/nonexistent/key.pem\"\n",
        );
        let err = Live::build(c, None).expect_err("problems");
        let text = err.to_string();
        assert_eq!(err.problems.len(), 3, "{text}");
        assert!(
            text.contains("K2") && text.contains("64 hex") && text.contains("server.tls.cert"),
            "{text}"
        );
    }

    #[test]
    fn pure_rust_rsa_is_refused_unless_allowed() {
        if !Backend::compiled().contains(&Backend::PureRust) {
            return;
        }
        let err = Live::build(config("[signing]\nbackend = \"pure-rust\"\n"), None)
            .expect_err("variable-time RSA refused");
        assert!(err.to_string().contains("RUSTSEC-2023-0071"), "{err}");
        Live::build(
            config("[signing]\nbackend = \"pure-rust\"\nallow_variable_time_rsa = true\n"),
            None,
        )
        .expect("allowed");
    }
}
