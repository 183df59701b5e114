//! Gentle close for accepted connections (nginx calls it lingering close).
//!
//! Linux answers `close()` on a socket that still has unread bytes in its receive buffer
//! with a RST, and drops whatever of our response is still in the send buffer. An HTTP/2
//! client keeps sending small frames (WINDOW_UPDATE as it reads, PING) until it has read
//! everything, so when hyper finishes a connection at shutdown and drops the socket, the
//! client could lose the end of a response the server had finished: the shutdown test saw
//! "connection reset" on an 8,000-URL batch that had been answered. Here, dropping a
//! [`Gentle`] stream hands the socket to a task that sends FIN, reads and discards until the
//! client closes its side (or [`LINGER`] passes), and only then closes it. The server waits
//! for those tasks (bounded) before it returns.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Longest a closed connection keeps reading what the client still sends.
pub const LINGER: Duration = Duration::from_secs(2);

/// Counts connections that are lingering, so shutdown can wait for them.
#[derive(Debug, Clone, Default)]
pub struct Lingering(Arc<(AtomicUsize, Notify)>);

impl Lingering {
    /// Wraps an accepted connection.
    pub fn wrap(&self, stream: TcpStream) -> Gentle {
        Gentle {
            inner: Some(stream),
            lingering: self.clone(),
        }
    }

    /// Connections lingering now.
    pub fn count(&self) -> usize {
        self.0.0.load(Ordering::Acquire)
    }

    /// Waits until no connection lingers, or `max`.
    pub async fn settled(&self, max: Duration) {
        let _ = tokio::time::timeout(max, async {
            loop {
                // Registered before the check, so a wake-up in between is not missed.
                let notified = self.0.1.notified();
                if self.count() == 0 {
                    return;
                }
                notified.await;
            }
        })
        .await;
    }

    fn enter(&self) -> LingerGuard {
        self.0.0.fetch_add(1, Ordering::AcqRel);
        LingerGuard(self.clone())
    }
}

struct LingerGuard(Lingering);

impl Drop for LingerGuard {
    fn drop(&mut self) {
        if self.0.0.0.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.0.1.notify_waiters();
        }
    }
}

/// An accepted TCP connection that closes gently when dropped (see the module docs).
#[derive(Debug)]
pub struct Gentle {
    /// Always `Some` until dropped.
    inner: Option<TcpStream>,
    lingering: Lingering,
}

fn gone() -> io::Error {
    io::Error::from(io::ErrorKind::NotConnected)
}

impl AsyncRead for Gentle {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.inner.as_mut() {
            Some(s) => Pin::new(s).poll_read(cx, buf),
            None => Poll::Ready(Err(gone())),
        }
    }
}

impl AsyncWrite for Gentle {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.inner.as_mut() {
            Some(s) => Pin::new(s).poll_write(cx, buf),
            None => Poll::Ready(Err(gone())),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.inner.as_mut() {
            Some(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            None => Poll::Ready(Err(gone())),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.inner.as_mut() {
            Some(s) => Pin::new(s).poll_flush(cx),
            None => Poll::Ready(Err(gone())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.inner.as_mut() {
            Some(s) => Pin::new(s).poll_shutdown(cx),
            None => Poll::Ready(Err(gone())),
        }
    }
}

impl Connected for Gentle {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        match &self.inner {
            Some(s) => s.connect_info(),
            None => TcpConnectInfo {
                local_addr: None,
                remote_addr: None,
            },
        }
    }
}

impl Drop for Gentle {
    fn drop(&mut self) {
        let Some(mut stream) = self.inner.take() else {
            return;
        };
        // Outside a runtime (never, in the server) the socket simply closes.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let guard = self.lingering.enter();
        runtime.spawn(async move {
            let _guard = guard;
            let _ = tokio::time::timeout(LINGER, async {
                // FIN after whatever is queued; then drain until the client's FIN.
                let _ = stream.shutdown().await;
                let mut sink = [0u8; 4096];
                while let Ok(n) = stream.read(&mut sink).await {
                    if n == 0 {
                        break;
                    }
                }
            })
            .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// The server side writes a response and is dropped while the client's late bytes are
    /// still unread: the client must still read the whole response and then a clean EOF,
    /// not a reset.
    #[tokio::test]
    async fn a_dropped_connection_delivers_everything_then_fin() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let lingering = Lingering::default();
        let mut client = TcpStream::connect(addr).await.expect("connect");
        let (accepted, _) = listener.accept().await.expect("accept");

        // The client's "WINDOW_UPDATE": bytes the server never reads, there (peeked, not
        // read) before the server closes: without lingering, the close would reset.
        client.write_all(b"late frame").await.expect("client write");
        let mut peeked = [0u8; 4];
        accepted
            .peek(&mut peeked)
            .await
            .expect("late bytes arrived");
        let mut server = lingering.wrap(accepted);
        let response = vec![7u8; 1 << 20];
        server.write_all(&response).await.expect("server write");
        drop(server);
        assert_eq!(lingering.count(), 1, "the socket lingers after drop");

        let mut got = Vec::new();
        client
            .read_to_end(&mut got)
            .await
            .expect("no reset: the whole response, then EOF");
        assert_eq!(got.len(), response.len());
        drop(client);
        lingering.settled(Duration::from_secs(5)).await;
        assert_eq!(
            lingering.count(),
            0,
            "the linger task ends at the client's FIN"
        );
    }
}
