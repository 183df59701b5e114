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

use crate::auth::{AuthLayer, Authenticator, ShedLayer};
use crate::config::Config;
use crate::grpc::layers::ObserveLayer;
use crate::grpc::purge::PurgerService;
use crate::grpc::sign::SignerService;
use crate::linger::{Gentle, LINGER, Lingering};
use crate::metrics::KeyMetrics;
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
    /// Binding the metrics address failed.
    #[error("cannot listen for metrics on {addr}: {source}")]
    MetricsBind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
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
    /// TLS files could not be read or used.
    #[error("tls: {0}")]
    Tls(String),
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
    metrics_listener: Option<TcpListener>,
    keys: Arc<KeyStore>,
    key_metrics: KeyMetrics,
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
        // The recorder must exist before any handle is made (keys carry theirs).
        let prometheus = crate::metrics::install();
        let key_metrics = KeyMetrics::new();
        let purger = Purger::new(&config, purge).await?;
        let keys = KeySet::load(&config.key_specs(), config.signing.backend)?;
        key_metrics.loaded(keys.len());
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
        let metrics_listener = match (config.metrics.listen, prometheus) {
            (Some(addr), Some(_)) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| ServerError::MetricsBind { addr, source })?,
            ),
            _ => None,
        };
        Ok(Server {
            config,
            listener,
            metrics_listener,
            keys: Arc::new(KeyStore::new(keys)),
            key_metrics,
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

    /// The bound metrics address, if metrics are served.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown` completes.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), ServerError> {
        let Server {
            config,
            listener,
            metrics_listener,
            keys,
            key_metrics,
            pool,
            purger,
        } = self;
        let mut background = tokio::task::JoinSet::new();
        if let (Some(l), Some(handle)) = (metrics_listener, crate::metrics::install()) {
            if let Ok(a) = l.local_addr() {
                tracing::info!(addr = %a, "metrics listening on /metrics");
            }
            background.spawn(crate::metrics::serve(l, handle));
        }
        background.spawn(sample_pool(Arc::clone(&pool)));
        let serving_gauge = metrics::gauge!(crate::metrics::SERVING);
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

        serving_gauge.set(1.0);
        background.spawn(reload_on_sighup(
            config.clone(),
            Arc::clone(&keys),
            key_metrics,
        ));

        let auth = Authenticator::from_config(&config).map_err(ServerError::Tls)?;
        let mut builder = TonicServer::builder();
        if let Some(tls) = tls_config(&config)? {
            builder = builder.tls_config(tls)?;
        }
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let lingering = Lingering::default();
        // Outermost first: every call gets a span and metrics, then an identity, then a
        // place under the concurrency limit.
        let serving = builder
            .layer(ObserveLayer::new())
            .layer(AuthLayer::new(Arc::new(auth)))
            .layer(ShedLayer::new(config.server.max_concurrent_requests))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(signer_server)
            .add_service(purger_server)
            .serve_with_incoming_shutdown(incoming(listener, lingering.clone()), async {
                let _ = stop_rx.await;
            });
        tracing::info!(%addr, "cdnsign gRPC listening");
        tokio::pin!(serving);

        let result = tokio::select! {
            r = &mut serving => r.map_err(ServerError::from),
            () = shutdown => {
                tracing::info!("shutdown requested: health NOT_SERVING, draining in-flight requests");
                serving_gauge.set(0.0);
                health_reporter
                    .set_not_serving::<SignerServer<Arc<SignerService>>>()
                    .await;
                health_reporter.set_service_status("", tonic_health::ServingStatus::NotServing).await;
                // Keep serving while load balancers notice NOT_SERVING.
                let drain = Duration::from_secs(config.server.drain_seconds);
                if !drain.is_zero() {
                    let _ = tokio::time::timeout(drain, &mut serving).await;
                }
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
        // Closed connections finish delivering their last bytes (see `linger`).
        lingering.settled(LINGER).await;
        background.shutdown().await;
        let _ = purge_stop_tx.send(());
        let _ = purge_worker.await;
        tracing::info!("cdnsign stopped");
        result
    }
}

/// Accepted connections with Nagle's algorithm off, closing gently ([`Gentle`]). tonic
/// applies its `tcp_nodelay` setting only to listeners it binds itself, not to an incoming
/// stream; without this, small unary responses waited for the client's delayed ACK (~40 ms
/// on Linux) and single-URL calls had a bimodal p90 of 44 ms in the load test.
fn incoming(
    listener: TcpListener,
    lingering: Lingering,
) -> impl tokio_stream::Stream<Item = std::io::Result<Gentle>> {
    use tokio_stream::StreamExt as _;
    TcpListenerStream::new(listener).map(move |conn| {
        conn.map(|stream| {
            let _ = stream.set_nodelay(true);
            lingering.wrap(stream)
        })
    })
}

/// Reads `[server.tls]`: the server identity, and the client CA for mTLS.
fn tls_config(config: &Config) -> Result<Option<tonic::transport::ServerTlsConfig>, ServerError> {
    use tonic::transport::{Certificate, Identity, ServerTlsConfig};
    let Some(tls) = &config.server.tls else {
        return Ok(None);
    };
    let read = |p: &std::path::Path| {
        let path = config.resolve(p);
        std::fs::read(&path).map_err(|e| ServerError::Tls(format!("{}: {e}", path.display())))
    };
    let mut out =
        ServerTlsConfig::new().identity(Identity::from_pem(read(&tls.cert)?, read(&tls.key)?));
    if let Some(ca) = &tls.client_ca {
        out = out
            .client_ca_root(Certificate::from_pem(read(ca)?))
            .client_auth_optional(tls.client_auth_optional);
    }
    Ok(Some(out))
}

/// Samples the pool's queue depth and busy count into gauges once a second.
async fn sample_pool(pool: Arc<SigningPool>) {
    let queued = metrics::gauge!(crate::metrics::POOL_QUEUE_DEPTH);
    let busy = metrics::gauge!(crate::metrics::POOL_BUSY);
    metrics::gauge!(crate::metrics::POOL_THREADS).set(pool.threads() as f64);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        queued.set(pool.queued() as f64);
        busy.set(pool.busy() as f64);
    }
}

/// Reloads keys on SIGHUP. A bad key file or config keeps the old key set serving.
async fn reload_on_sighup(config: Config, keys: Arc<KeyStore>, key_metrics: KeyMetrics) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot install SIGHUP handler; key reload disabled");
            return;
        };
        while hup.recv().await.is_some() {
            reload_keys(&config, &keys, &key_metrics);
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (config, keys, key_metrics);
        std::future::pending::<()>().await;
    }
}

/// Re-reads the config and every key; swaps the set only if all of it loads.
pub fn reload_keys(config: &Config, keys: &KeyStore, key_metrics: &KeyMetrics) -> bool {
    let fresh = config
        .reload()
        .map_err(|e| e.to_string())
        .and_then(|c| KeySet::load(&c.key_specs(), c.signing.backend).map_err(|e| e.to_string()));
    match fresh {
        Ok(set) => {
            tracing::info!(keys = set.len(), "signing keys reloaded");
            tracing::info!(target: crate::auth::AUDIT_TARGET, event = "key_reload", outcome = "success", keys = set.len(), "key set replaced");
            key_metrics.loaded(set.len());
            keys.replace(set);
            true
        }
        Err(error) => {
            key_metrics.failed();
            tracing::error!(%error, "key reload failed; still serving the previous keys");
            tracing::warn!(target: crate::auth::AUDIT_TARGET, event = "key_reload", outcome = "failure", %error, "key reload failed");
            false
        }
    }
}
