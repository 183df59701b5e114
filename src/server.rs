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
use tonic::transport::Server as TonicServer;

use crate::config::{Config, ConfigError};
use crate::conn::{AcceptSettings, Slots};
use crate::grpc::layers::{AuthLayer, MessageLimitLayer, ObserveLayer, ShedLayer};
use crate::grpc::purge::PurgerService;
use crate::grpc::sign::SignerService;
use crate::linger::{LINGER, Lingering};
use crate::live::{Live, LiveConfig};
use crate::proto::purger_server::PurgerServer;
use crate::proto::signer_server::SignerServer;
use crate::purge::{PurgeError, PurgeOptions, Purger};
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
    /// The configuration did not build (keys, clients, TLS files).
    #[error(transparent)]
    Config(#[from] ConfigError),
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
    live: Arc<LiveConfig>,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    pool: Arc<SigningPool>,
    purger: Arc<Purger>,
    connections: Slots,
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
        let live = Live::build(config, None)?;
        let purger = Purger::new(&live.config.purge, &live.config.targets, purge).await?;
        for c in &live.config.clients {
            for t in c.purge_targets.iter().filter(|t| !purger.has_target(t)) {
                tracing::warn!(
                    client = %c.name,
                    purge_target = %t,
                    "clients.purge_targets names a target no [[targets]] entry has: its purges will be NOT_FOUND"
                );
            }
        }
        let config = &live.config;
        tracing::info!(
            keys = live.keys.len(),
            backend = live.selection.backend().as_str(),
            "signing keys loaded"
        );
        crate::metrics::set_build_info(live.selection.backend().as_str());
        live.selection.log();
        if live.keys.is_empty() {
            tracing::warn!("no [[keys]] configured: every signing request will fail");
        }
        if config.signing.allow_variable_time_rsa
            && config.signing.backend == crate::signing::keys::Backend::PureRust
        {
            tracing::warn!(
                "signing.allow_variable_time_rsa = true: RSA keys sign with the rsa crate, whose \
                 private-key operation is not constant-time (RUSTSEC-2023-0071); an attacker who \
                 can time many signatures may recover the key"
            );
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
            live: Arc::new(LiveConfig::new(live)),
            listener,
            metrics_listener,
            pool: Arc::new(pool),
            purger,
            connections: Slots::new(
                metrics::gauge!(crate::metrics::GRPC_CONNECTIONS),
                metrics::counter!(crate::metrics::GRPC_CONNECTIONS_REFUSED),
            ),
        })
    }

    /// The bound address (the real port when the config said `:0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or(self.live.snapshot().config.server.listen)
    }

    /// The signing pool (tests hold it busy or fill its queue to exercise overload).
    pub fn pool(&self) -> Arc<SigningPool> {
        Arc::clone(&self.pool)
    }

    /// The configuration in force (tests reload it without a signal).
    pub fn live(&self) -> Arc<LiveConfig> {
        Arc::clone(&self.live)
    }

    /// The open client connections, under `[server] max_connections` (tests wait on it for
    /// a closed connection's place).
    pub fn connections(&self) -> Slots {
        self.connections.clone()
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
            live,
            listener,
            metrics_listener,
            pool,
            purger,
            connections,
        } = self;
        let config = live.snapshot().config.clone();
        let mut background = tokio::task::JoinSet::new();
        if let (Some(l), Some(handle)) = (metrics_listener, crate::metrics::install()) {
            if let Ok(a) = l.local_addr() {
                tracing::info!(addr = %a, "metrics listening on /metrics");
            }
            background.spawn(crate::metrics::serve(l, handle));
        }
        background.spawn(sample_pool(Arc::clone(&pool), PoolGauges::new(&pool)));
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

        let signer = Arc::new(SignerService::new(Arc::clone(&live), Arc::clone(&pool)));
        // Message sizes are enforced by MessageLimitLayer (RESOURCE_EXHAUSTED naming the live
        // limit, from the frame header); tonic's own check would answer OUT_OF_RANGE.
        let signer_server = SignerServer::new(signer)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);

        let purger_server =
            PurgerServer::new(PurgerService::new(Arc::clone(&purger), Arc::clone(&live)))
                .max_decoding_message_size(usize::MAX);
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
        background.spawn(reload_on_sighup(Arc::clone(&live)));

        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let lingering = Lingering::default();
        // Each new connection takes the connection limit, and with TLS its handshake's
        // certificate and client CA, from the live configuration: a reload applies to the
        // next connection. (Turning TLS on or off waits for a restart: see `live`.)
        let accept_settings = Arc::clone(&live) as Arc<dyn AcceptSettings>;
        // Outermost first: every call gets a span and metrics, then an identity, then a
        // place under the concurrency limit, then its message size checked as it arrives.
        // tonic sends the GOAWAY at the age only when it has no grace of its own (given
        // one, tonic 0.14 closes the connection at age + grace without a GOAWAY); the grace
        // is enforced by each connection instead (`conn`, `max_connection_life`).
        let mut builder = TonicServer::builder();
        if config.server.max_connection_age_seconds > 0 {
            builder = builder.max_connection_age(Duration::from_secs(
                config.server.max_connection_age_seconds,
            ));
        }
        let serving = builder
            .layer(ObserveLayer::new(&[
                FILE_DESCRIPTOR_SET,
                tonic_health::pb::FILE_DESCRIPTOR_SET,
                tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            ]))
            .layer(AuthLayer::new(Arc::clone(&live)))
            .layer(ShedLayer::new(config.server.max_concurrent_requests))
            .layer(MessageLimitLayer::new(Arc::clone(&live)))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(signer_server)
            .add_service(purger_server)
            .serve_with_incoming_shutdown(
                crate::conn::incoming(listener, lingering.clone(), accept_settings, connections),
                async {
                    let _ = stop_rx.await;
                },
            );
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
                health_reporter
                    .set_not_serving::<PurgerServer<PurgerService>>()
                    .await;
                health_reporter.set_service_status("", tonic_health::ServingStatus::NotServing).await;
                // Keep serving while load balancers notice NOT_SERVING (timings as reloaded).
                let timings = live.snapshot().config.server.clone();
                let drain = Duration::from_secs(timings.drain_seconds);
                // The transport may end by itself during the drain: then that is the result
                // (polling the finished future again would panic).
                let drained = if drain.is_zero() {
                    None
                } else {
                    tokio::time::timeout(drain, &mut serving).await.ok()
                };
                match drained {
                    Some(r) => r.map_err(ServerError::from),
                    None => {
                        let _ = stop_tx.send(());
                        let grace = Duration::from_secs(timings.shutdown_grace_seconds);
                        match tokio::time::timeout(grace, &mut serving).await {
                            Ok(r) => r.map_err(ServerError::from),
                            Err(_) => {
                                tracing::warn!(?grace, "grace period over; closing remaining connections");
                                Ok(())
                            }
                        }
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

/// The pool's gauges, made (and the thread count set) before the server takes calls.
struct PoolGauges {
    queued: metrics::Gauge,
    queued_items: metrics::Gauge,
    busy: metrics::Gauge,
}

impl PoolGauges {
    fn new(pool: &SigningPool) -> PoolGauges {
        metrics::gauge!(crate::metrics::POOL_THREADS).set(pool.threads() as f64);
        let gauges = PoolGauges {
            queued: metrics::gauge!(crate::metrics::POOL_QUEUE_DEPTH),
            queued_items: metrics::gauge!(crate::metrics::POOL_QUEUED_ITEMS),
            busy: metrics::gauge!(crate::metrics::POOL_BUSY),
        };
        gauges.sample(pool);
        gauges
    }

    fn sample(&self, pool: &SigningPool) {
        self.queued.set(pool.queued() as f64);
        self.queued_items.set(pool.queued_items() as f64);
        self.busy.set(pool.busy() as f64);
    }
}

/// Samples the pool's queue depth, queued items and busy count into gauges once a second.
async fn sample_pool(pool: Arc<SigningPool>, gauges: PoolGauges) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        gauges.sample(&pool);
    }
}

/// Reloads the whole configuration on SIGHUP (see [`crate::live`]). A bad file keeps the
/// old configuration serving.
async fn reload_on_sighup(live: Arc<LiveConfig>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot install SIGHUP handler; config reload disabled");
            return;
        };
        while hup.recv().await.is_some() {
            // File reads and key parsing are blocking work: off the async workers.
            let live = Arc::clone(&live);
            let _ = tokio::task::spawn_blocking(move || live.reload()).await;
        }
    }
    #[cfg(not(unix))]
    {
        let _ = live;
        std::future::pending::<()>().await;
    }
}
