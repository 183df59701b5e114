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
use crate::grpc::purge::PurgerService;
use crate::grpc::sign::SignerService;
use crate::proto::purger_server::PurgerServer;
use crate::proto::signer_server::SignerServer;
use crate::purge::{PurgeError, PurgeOptions, Purger};
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
    /// The purge service could not start (store, target clients).
    #[error("purge: {0}")]
    Purge(#[from] PurgeError),
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
    purger: Arc<Purger>,
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
        Self::bind_with(config, PurgeOptions::default()).await
    }

    /// [`Server::bind`] with purge credentials or store supplied by the caller (tests,
    /// embedding) instead of the standard sources.
    pub async fn bind_with(config: Config, purge: PurgeOptions) -> Result<Server, ServerError> {
        let purger = Purger::new(&config, purge).await?;
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
            purger,
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
            purger,
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

        let purger_server = PurgerServer::new(PurgerService::new(Arc::clone(&purger)))
            .max_decoding_message_size(max_msg.saturating_mul(4));
        // Resumes unfinished purges from the store, then polls and sends as room frees.
        let (purge_stop_tx, purge_stop_rx) = tokio::sync::oneshot::channel::<()>();
        let purge_worker = tokio::spawn(Arc::clone(&purger).run(async {
            let _ = purge_stop_rx.await;
        }));

        // Ready: keys are loaded.
        health_reporter
            .set_serving::<SignerServer<Arc<SignerService>>>()
            .await;
        health_reporter
            .set_serving::<PurgerServer<PurgerService>>()
            .await;

        let reload = tokio::spawn(reload_on_sighup(config.clone(), Arc::clone(&keys)));

        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let serving = TonicServer::builder()
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(signer_server)
            .add_service(purger_server)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
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
        let _ = purge_stop_tx.send(());
        let _ = purge_worker.await;
        tracing::info!("cdnsign stopped");
        result
    }
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
