//! Assembles the server: key cache, signing pool, gRPC services (signing, health,
//! reflection), key reload on SIGHUP, and graceful shutdown.
//!
//! [`run`] is what `main` calls; tests use [`Server::bind`] on `127.0.0.1:0` and pass their
//! own shutdown future (the mini-redis pattern).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server as TonicServer;

use crate::config::Config;
use crate::grpc::sign::SignerService;
use crate::proto::signer_server::SignerServer;
use crate::signing::keys::{KeyError, KeySet, KeyStore};
use crate::signing::pool::SigningPool;

/// Descriptor set of our protos, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("cdnsign_descriptor");

/// The server could not start or failed while serving.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Binding the listen address failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// The configured keys did not load.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// The signing pool could not start.
    #[error("signing pool: {0}")]
    Pool(#[from] rayon::ThreadPoolBuildError),
    /// Reflection service setup.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The transport failed.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// A bound, ready-to-serve server; keys are loaded and the pool is running.
pub struct Server {
    config: Config,
    listener: TcpListener,
    keys: Arc<KeyStore>,
    pool: Arc<SigningPool>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("listen", &self.listener.local_addr().ok())
            .finish_non_exhaustive()
    }
}

/// Binds and serves until `shutdown` completes, then drains in-flight requests for up to
/// `[server] shutdown_grace_seconds`.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    Server::bind(config).await?.serve(shutdown).await
}

impl Server {
    /// Loads keys, starts the signing pool and binds the gRPC listener.
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        let keys = KeySet::load(&config.key_specs(), config.signing.backend)?;
        tracing::info!(
            keys = keys.len(),
            backend = config.signing.backend.as_str(),
            "signing keys loaded"
        );
        if keys.is_empty() {
            tracing::warn!("no [[keys]] configured: every signing request will fail");
        }
        let pool = SigningPool::new(config.signing.threads)?;
        let addr = config.server.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        Ok(Server {
            config,
            listener,
            keys: Arc::new(KeyStore::new(keys)),
            pool: Arc::new(pool),
        })
    }

    /// The bound address (the real port when the config said `:0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or(self.config.server.listen)
    }

    /// Serves until `shutdown` completes.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), ServerError> {
        let Server {
            config,
            listener,
            keys,
            pool,
        } = self;
        let addr = listener.local_addr().unwrap_or(config.server.listen);
        if config.server.allow_unauthenticated {
            tracing::warn!(
                "server.allow_unauthenticated = true: any process that reaches {addr} may sign; dev only"
            );
        }

        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;

        let max_msg = config.server.max_message_bytes;
        let signer = Arc::new(SignerService::new(
            Arc::clone(&keys),
            Arc::clone(&pool),
            config.signing.clone(),
            max_msg,
        ));
        // Decode up to 4x the limit so an oversized batch gets INVALID_ARGUMENT naming the
        // limit; past that the transport refuses it without buffering it.
        let signer_server = SignerServer::new(signer)
            .max_decoding_message_size(max_msg.saturating_mul(4))
            .max_encoding_message_size(usize::MAX);

        // Ready: keys are loaded.
        health_reporter
            .set_serving::<SignerServer<Arc<SignerService>>>()
            .await;

        let reload = tokio::spawn(reload_on_sighup(config.clone(), Arc::clone(&keys)));

        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let serving = TonicServer::builder()
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(signer_server)
            .serve_with_incoming_shutdown(incoming_nodelay(listener), async {
                let _ = stop_rx.await;
            });
        tracing::info!(%addr, "cdnsign gRPC listening");
        tokio::pin!(serving);

        let result = tokio::select! {
            r = &mut serving => r.map_err(ServerError::from),
            () = shutdown => {
                tracing::info!("shutdown requested: health NOT_SERVING, draining in-flight requests");
                health_reporter
                    .set_not_serving::<SignerServer<Arc<SignerService>>>()
                    .await;
                health_reporter.set_service_status("", tonic_health::ServingStatus::NotServing).await;
                let _ = stop_tx.send(());
                let grace = Duration::from_secs(config.server.shutdown_grace_seconds);
                match tokio::time::timeout(grace, &mut serving).await {
                    Ok(r) => r.map_err(ServerError::from),
                    Err(_) => {
                        tracing::warn!(?grace, "grace period over; closing remaining connections");
                        Ok(())
                    }
                }
            }
        };
        reload.abort();
        tracing::info!("cdnsign stopped");
        result
    }
}

/// Accepted connections with Nagle's algorithm off. tonic applies its `tcp_nodelay` setting
/// only to listeners it binds itself, not to an incoming stream; without this, small unary
/// responses waited for the client's delayed ACK (~40 ms on Linux) and single-URL calls had a
/// bimodal p90 of 44 ms in the load test.
fn incoming_nodelay(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt as _;
    TcpListenerStream::new(listener).map(|conn| {
        if let Ok(stream) = &conn {
            let _ = stream.set_nodelay(true);
        }
        conn
    })
}

/// Reloads keys on SIGHUP. A bad key file or config keeps the old key set serving.
async fn reload_on_sighup(config: Config, keys: Arc<KeyStore>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot install SIGHUP handler; key reload disabled");
            return;
        };
        while hup.recv().await.is_some() {
            reload_keys(&config, &keys);
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (config, keys);
        std::future::pending::<()>().await;
    }
}

/// Re-reads the config and every key; swaps the set only if all of it loads.
pub fn reload_keys(config: &Config, keys: &KeyStore) -> bool {
    let fresh = config
        .reload()
        .map_err(|e| e.to_string())
        .and_then(|c| KeySet::load(&c.key_specs(), c.signing.backend).map_err(|e| e.to_string()));
    match fresh {
        Ok(set) => {
            tracing::info!(keys = set.len(), "signing keys reloaded");
            keys.replace(set);
            true
        }
        Err(error) => {
            tracing::error!(%error, "key reload failed; still serving the previous keys");
            false
        }
    }
}
