//! Accepting connections: plain TCP or TLS, with what the server knows of each peer.
//!
//! TLS is terminated here rather than by tonic so that the certificate and the client CA
//! can change on SIGHUP: each handshake uses the TLS config in force when the connection
//! arrived ([`AcceptSettings`]), and connections already open keep theirs. Each connection
//! first takes a place under `[server] max_connections` ([`limit`]); at the limit it is
//! closed at once. Handshakes run in
//! their own tasks with a deadline, so a slow or silent client never holds up the next
//! accept. Accept errors (out of file descriptors, say) back off instead of spinning.

use std::future::Future as _;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::rustls;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use crate::linger::{Gentle, Lingering};

/// What the server knows about the other end of a connection, in every request's
/// extensions.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    /// The client's address.
    pub remote: Option<SocketAddr>,
    /// The client certificate (DER) it presented over mTLS, verified against the client CA.
    pub certificate: Option<Arc<[u8]>>,
}

pub mod limit;

pub use limit::{Slot, Slots};

/// What a connection arriving now is accepted with (the live configuration's, on reload).
pub trait AcceptSettings: Send + Sync + 'static {
    /// The TLS config for its handshake; `None`: plain TCP.
    fn tls_config(&self) -> Option<Arc<rustls::ServerConfig>>;
    /// Most connections open at once, this one included (`[server] max_connections`).
    fn max_connections(&self) -> usize;
    /// How long a connection may live at most, past which its reads and writes fail and it
    /// is closed: `max_connection_age_seconds` plus `max_connection_age_grace_seconds`,
    /// when both are set (tonic sends the GOAWAY at the age; see `server`).
    fn max_connection_life(&self) -> Option<Duration>;
}

/// An accepted connection, holding its place under `[server] max_connections` until the
/// server drops it.
#[derive(Debug)]
pub struct Conn {
    io: Io,
    peer: Peer,
    _slot: Slot,
    /// When the connection's grace after its maximum age ends.
    end_of_life: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Conn {
    /// An error once the connection has outlived its age and grace; the connection's task
    /// is woken then (the timer is polled with the read's context).
    fn past_end_of_life(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        let end = self.end_of_life.as_mut()?;
        end.as_mut().poll(cx).is_ready().then(|| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                "connection past server.max_connection_age_seconds + max_connection_age_grace_seconds",
            )
        })
    }
}

#[derive(Debug)]
enum Io {
    /// Plain TCP.
    Plain(Gentle),
    /// TLS over TCP.
    Tls(Box<TlsStream<Gentle>>),
}

impl Connected for Conn {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(e) = this.past_end_of_life(cx) {
            return Poll::Ready(Err(e));
        }
        match &mut this.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(e) = this.past_end_of_life(cx) {
            return Poll::Ready(Err(e));
        }
        match &mut this.io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(e) = this.past_end_of_life(cx) {
            return Poll::Ready(Err(e));
        }
        match &mut this.io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// Longest a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections accepted but not yet taken by the server.
const BACKLOG: usize = 64;

/// Accepts on `listener` until the returned stream is dropped, each connection as
/// `settings` say at that moment: over the connection limit it is closed at once (counted by
/// `slots`); with a TLS config, it is a TLS handshake using that config.
pub fn incoming(
    listener: TcpListener,
    lingering: Lingering,
    settings: Arc<dyn AcceptSettings>,
    slots: Slots,
) -> ReceiverStream<io::Result<Conn>> {
    let (tx, rx) = mpsc::channel(BACKLOG);
    tokio::spawn(async move {
        let mut backoff = AcceptBackoff::default();
        // Whether the last connection was refused: one warning per stretch at the limit.
        let mut at_limit = false;
        loop {
            let accepted = tokio::select! {
                () = tx.closed() => return,
                a = listener.accept() => a,
            };
            let (stream, remote) = match accepted {
                Ok(a) => {
                    backoff.reset();
                    a
                }
                Err(error) => {
                    let wait = backoff.failed();
                    tracing::warn!(%error, ?wait, "accept failed; backing off");
                    tokio::select! {
                        () = tx.closed() => return,
                        () = tokio::time::sleep(wait) => continue,
                    }
                }
            };
            let limit = settings.max_connections();
            let Some(slot) = slots.try_take(limit) else {
                if !at_limit {
                    tracing::warn!(
                        limit,
                        peer = %remote,
                        "server.max_connections connections are open: closing new ones until some close (cdnsign_grpc_connections_refused_total)"
                    );
                }
                at_limit = true;
                drop(stream);
                continue;
            };
            at_limit = false;
            // Timed from when the connection is handed to the server (after a TLS
            // handshake), as tonic times the age that sends the GOAWAY.
            let life = settings.max_connection_life();
            let _ = stream.set_nodelay(true);
            let peer = Peer {
                remote: Some(remote),
                certificate: None,
            };
            let gentle = lingering.wrap(stream);
            match settings.tls_config() {
                None => {
                    let conn = Conn {
                        io: Io::Plain(gentle),
                        peer,
                        _slot: slot,
                        end_of_life: end_of_life(life),
                    };
                    if tx.send(Ok(conn)).await.is_err() {
                        return;
                    }
                }
                Some(config) => {
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let conn = handshake(config, gentle, peer, slot, life).await;
                        if let Some(conn) = conn {
                            let _ = tx.send(Ok(conn)).await;
                        }
                    });
                }
            }
        }
    });
    ReceiverStream::new(rx)
}

/// The timer of a connection that may live `life` from now.
fn end_of_life(life: Option<Duration>) -> Option<Pin<Box<tokio::time::Sleep>>> {
    life.map(|l| Box::pin(tokio::time::sleep(l)))
}

async fn handshake(
    config: Arc<rustls::ServerConfig>,
    stream: Gentle,
    mut peer: Peer,
    slot: Slot,
    life: Option<Duration>,
) -> Option<Conn> {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => {
            peer.certificate = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .map(|c| Arc::from(c.as_ref()));
            Some(Conn {
                io: Io::Tls(Box::new(tls)),
                peer,
                _slot: slot,
                end_of_life: end_of_life(life),
            })
        }
        Ok(Err(error)) => {
            tracing::debug!(%error, peer = ?peer.remote, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(peer = ?peer.remote, "TLS handshake timed out");
            None
        }
    }
}

/// Doubling waits after consecutive accept errors, 10 ms up to 1 s.
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    failures: u32,
}

impl AcceptBackoff {
    /// The wait after one more failure.
    pub fn failed(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let ms = 10u64 << (self.failures.min(8) - 1);
        Duration::from_millis(ms.min(1_000))
    }

    /// An accept succeeded.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// Reads PEM files into a rustls server config: the certificate chain and key, and with a
/// client CA, verification of client certificates (required unless `client_optional`).
pub fn server_config(
    cert_pem: &[u8],
    key_pem: &[u8],
    client_ca_pem: Option<&[u8]>,
    client_optional: bool,
) -> Result<rustls::ServerConfig, String> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cert: {e}"))?;
    if certs.is_empty() {
        return Err("cert: no certificate in the file".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("key: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match client_ca_pem {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca) {
                let cert = cert.map_err(|e| format!("client_ca: {e}"))?;
                roots.add(cert).map_err(|e| format!("client_ca: {e}"))?;
            }
            if roots.is_empty() {
                return Err("client_ca: no certificate in the file".into());
            }
            let mut verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            );
            if client_optional {
                verifier = verifier.allow_unauthenticated();
            }
            builder
                .with_client_cert_verifier(verifier.build().map_err(|e| format!("client_ca: {e}"))?)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("cert and key: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_backoff_doubles_to_a_second_and_resets() {
        let mut b = AcceptBackoff::default();
        let waits: Vec<u64> = (0..10).map(|_| b.failed().as_millis() as u64).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
        b.reset();
        assert_eq!(b.failed(), Duration::from_millis(10));
    }
}
