//! TLS for the OTLP exporter, from the standard variables (the `TRACES_` one first):
//!
//! | variable | effect |
//! | --- | --- |
//! | `OTEL_EXPORTER_OTLP_CERTIFICATE` | PEM file of the CA(s) to trust instead of the system roots |
//! | `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE`, `OTEL_EXPORTER_OTLP_CLIENT_KEY` | PEM files of a client certificate and its key, for mTLS (both or neither) |
//!
//! An `https://` endpoint is verified against the system roots unless a CA file is given.
//! The files are read when the exporter starts; an error names the variable and the file,
//! never their contents.

use std::path::PathBuf;
use std::time::Duration;

use hyper_rustls::{ConfigBuilderExt as _, HttpsConnector};
use hyper_util::client::legacy::connect::HttpConnector;
use opentelemetry_http::hyper::HyperClient;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// One variable naming a file: (the variable that was set, its path).
type FileVar = (String, PathBuf);

/// The TLS files the variables name (none set: system roots, no client certificate).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA(s) to trust instead of the system roots.
    pub ca: Option<FileVar>,
    /// Client certificate and key, for mTLS.
    pub client: Option<(FileVar, FileVar)>,
}

/// One PEM file, read and checked: its bytes (for tonic) and what rustls parsed of them.
struct Pem<T> {
    bytes: Vec<u8>,
    parsed: T,
}

/// What the files hold, read and checked at start, whichever protocol uses them.
struct Material {
    ca: Option<Pem<Vec<CertificateDer<'static>>>>,
    client: Option<(
        Pem<Vec<CertificateDer<'static>>>,
        Pem<PrivateKeyDer<'static>>,
    )>,
}

impl TlsFiles {
    /// Reads the variables through `set` (trimmed, empty = unset). A client certificate
    /// without its key, or a key without its certificate, is an error naming both.
    pub fn from_vars(set: impl Fn(&str) -> Option<String>) -> Result<TlsFiles, String> {
        let file = |name: &str| {
            let traces = format!("OTEL_EXPORTER_OTLP_TRACES_{name}");
            let general = format!("OTEL_EXPORTER_OTLP_{name}");
            set(&traces)
                .map(|v| (traces, PathBuf::from(v)))
                .or_else(|| set(&general).map(|v| (general, PathBuf::from(v))))
        };
        let client = match (file("CLIENT_CERTIFICATE"), file("CLIENT_KEY")) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            (Some((var, _)), None) => {
                return Err(format!(
                    "{var} is set without OTEL_EXPORTER_OTLP_CLIENT_KEY: mTLS needs both"
                ));
            }
            (None, Some((var, _))) => {
                return Err(format!(
                    "{var} is set without OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE: mTLS needs both"
                ));
            }
        };
        Ok(TlsFiles {
            ca: file("CERTIFICATE"),
            client,
        })
    }

    /// No TLS variable is set.
    pub fn is_empty(&self) -> bool {
        self.ca.is_none() && self.client.is_none()
    }

    /// The variable names that are set, for a message.
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.ca.iter().map(|(n, _)| n.as_str()).collect();
        if let Some(((cert, _), (key, _))) = &self.client {
            v.extend([cert.as_str(), key.as_str()]);
        }
        v
    }

    fn read((var, path): &FileVar) -> Result<Vec<u8>, String> {
        std::fs::read(path).map_err(|e| format!("{var}: cannot read {}: {e}", path.display()))
    }

    /// The certificates in a PEM file; none is an error.
    fn certs(file: &FileVar) -> Result<Pem<Vec<CertificateDer<'static>>>, String> {
        let (var, path) = file;
        let bytes = Self::read(file)?;
        let parsed = CertificateDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{var}: {}: {e}", path.display()))?;
        if parsed.is_empty() {
            return Err(format!("{var}: {}: no certificate in it", path.display()));
        }
        Ok(Pem { bytes, parsed })
    }

    /// The private key in a PEM file (its bytes never go into a message).
    fn key(file: &FileVar) -> Result<Pem<PrivateKeyDer<'static>>, String> {
        let (var, path) = file;
        let bytes = Self::read(file)?;
        let parsed = PrivateKeyDer::from_pem_slice(&bytes)
            .map_err(|_| format!("{var}: {}: no private key in it", path.display()))?;
        Ok(Pem { bytes, parsed })
    }

    /// Reads and checks every file, so both protocols refuse the same mistakes at start.
    fn load(&self) -> Result<Material, String> {
        Ok(Material {
            ca: self.ca.as_ref().map(Self::certs).transpose()?,
            client: self
                .client
                .as_ref()
                .map(|(cert, key)| Ok::<_, String>((Self::certs(cert)?, Self::key(key)?)))
                .transpose()?,
        })
    }

    /// TLS for OTLP/gRPC (tonic).
    pub fn tonic(&self) -> Result<ClientTlsConfig, String> {
        let m = self.load()?;
        let mut tls = ClientTlsConfig::new();
        tls = match m.ca {
            Some(ca) => tls.ca_certificate(Certificate::from_pem(ca.bytes)),
            None => tls.with_native_roots(),
        };
        if let Some((cert, key)) = m.client {
            tls = tls.identity(Identity::from_pem(cert.bytes, key.bytes));
        }
        Ok(tls)
    }

    /// An HTTPS client for OTLP/HTTP (hyper with rustls on ring, as the rest of the
    /// process), whose requests time out after `timeout`.
    pub fn http_client(
        &self,
        timeout: Duration,
    ) -> Result<HyperClient<HttpsConnector<HttpConnector>>, String> {
        let m = self.load()?;
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("OTLP TLS: {e}"))?;
        let builder = match (m.ca, &self.ca) {
            (Some(ca), Some((var, path))) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in ca.parsed {
                    roots
                        .add(cert)
                        .map_err(|e| format!("{var}: {}: {e}", path.display()))?;
                }
                builder.with_root_certificates(roots)
            }
            _ => builder
                .with_native_roots()
                .map_err(|e| format!("OTLP TLS: the system roots: {e}"))?,
        };
        let config = match (m.client, &self.client) {
            (Some((cert, key)), Some(((cert_var, _), (key_var, _)))) => builder
                .with_client_auth_cert(cert.parsed, key.parsed)
                .map_err(|e| format!("{cert_var} / {key_var}: {e}"))?,
            _ => builder.with_no_client_auth(),
        };
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_only()
            .enable_http1()
            .build();
        Ok(HyperClient::new(connector, timeout, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn files(vars: &[(&str, &str)]) -> Result<TlsFiles, String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        TlsFiles::from_vars(|k| map.get(k).cloned())
    }

    fn repo(rel: &str) -> String {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(rel)
            .display()
            .to_string()
    }

    #[test]
    fn variables_per_signal_first_and_mtls_needs_both_halves() {
        assert!(files(&[]).expect("none").is_empty());
        let f = files(&[
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/general-ca.pem"),
            ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "/traces-ca.pem"),
        ])
        .expect("ca");
        assert_eq!(
            f.ca,
            Some((
                "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE".into(),
                "/traces-ca.pem".into()
            ))
        );
        let err = files(&[("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/c.pem")]).expect_err("half");
        assert!(err.contains("OTEL_EXPORTER_OTLP_CLIENT_KEY"), "{err}");
        let err = files(&[("OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", "/k.pem")]).expect_err("half");
        assert!(err.contains("CLIENT_CERTIFICATE"), "{err}");
        let f = files(&[
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/c.pem"),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/k.pem"),
        ])
        .expect("both");
        assert_eq!(
            f.names(),
            [
                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
                "OTEL_EXPORTER_OTLP_CLIENT_KEY"
            ]
        );
    }

    #[test]
    fn bad_files_are_named_by_variable_and_path_without_their_contents() {
        let missing =
            files(&[("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem")]).expect("vars");
        let err = missing.tonic().expect_err("missing file");
        assert!(
            err.contains("OTEL_EXPORTER_OTLP_CERTIFICATE") && err.contains("/nonexistent/ca.pem"),
            "{err}"
        );
        // A key file given as the CA: no certificate in it, and none of the key is shown.
        let key = repo("tests/fixtures/tls/client.key");
        let not_a_ca = files(&[("OTEL_EXPORTER_OTLP_CERTIFICATE", &key)]).expect("vars");
        let err = not_a_ca
            .http_client(Duration::from_secs(1))
            .expect_err("no certificate");
        assert!(err.contains("no certificate"), "{err}");
        assert!(!err.contains("PRIVATE KEY"), "{err}");
        // The gRPC exporter refuses it at start too, not at its first connection.
        let err = not_a_ca.tonic().expect_err("no certificate (gRPC)");
        assert!(err.contains("no certificate"), "{err}");
        // A certificate given as the key.
        let cert = repo("tests/fixtures/tls/client.pem");
        let swapped = files(&[
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", &cert),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", &cert),
        ])
        .expect("vars");
        let err = swapped
            .http_client(Duration::from_secs(1))
            .expect_err("no key");
        assert!(
            err.contains("OTEL_EXPORTER_OTLP_CLIENT_KEY") && err.contains("no private key"),
            "{err}"
        );
        let err = swapped.tonic().expect_err("no key (gRPC)");
        assert!(err.contains("no private key"), "{err}");
        // The fixtures themselves make a client.
        let good = files(&[
            (
                "OTEL_EXPORTER_OTLP_CERTIFICATE",
                &repo("tests/fixtures/tls/ca.pem"),
            ),
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", &cert),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", &key),
        ])
        .expect("vars");
        good.http_client(Duration::from_secs(1)).expect("client");
        good.tonic().expect("tonic");
    }
}
