//! The PostgreSQL store's connections: a few, made on demand on a runtime of the store's
//! own (so no tokio worker that serves calls ever waits on the database's network), lent
//! out one per operation and remade after a failure (database restarted).

use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;
use tokio_postgres::{Client, Config, NoTls};

use super::StoreError;

/// A driver error as the store reports it (`Unavailable`: the caller may retry).
pub(super) fn db_error(e: tokio_postgres::Error) -> StoreError {
    // The driver's messages name the server's error, never the password.
    StoreError::Unavailable(format!("postgresql: {e}"))
}

/// Most connections one replica opens.
const MAX_CONNECTIONS: usize = 8;

/// Most connections of their own ([`Pool::dedicated`]: a session's advisory lock) open at
/// once; more callers wait here, in the process, not in PostgreSQL's `max_connections`.
const MAX_DEDICATED: usize = 8;

/// The store's own runtime, where connections do their I/O. Dropped without blocking.
struct IoRuntime(Option<tokio::runtime::Runtime>);

impl IoRuntime {
    fn handle(&self) -> Option<tokio::runtime::Handle> {
        self.0.as_ref().map(|r| r.handle().clone())
    }
}

impl Drop for IoRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// A few connections, made on demand and remade after a failure (database restarted).
pub(super) struct Pool {
    cfg: Config,
    io: IoRuntime,
    idle: Mutex<Vec<Client>>,
    permits: Semaphore,
    dedicated: Arc<Semaphore>,
}

/// A connection of its own ([`Pool::dedicated`]), closed when dropped, holding one of the
/// [`MAX_DEDICATED`] places until then.
pub(super) struct Dedicated {
    client: Client,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl std::ops::Deref for Dedicated {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

/// A connection lent out; goes back to the pool when dropped, if still usable.
pub(super) struct Conn<'a> {
    client: Option<Client>,
    pool: &'a Pool,
    _permit: tokio::sync::SemaphorePermit<'a>,
}

impl std::ops::Deref for Conn<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.client.as_ref().expect("present until dropped")
    }
}

impl std::ops::DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().expect("present until dropped")
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.client.take()
            && !c.is_closed()
        {
            self.pool
                .idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(c);
        }
    }
}

impl Pool {
    /// No connection yet: they are made on first use, on a runtime of the pool's own.
    pub(super) fn new(cfg: Config) -> Result<Pool, StoreError> {
        let io = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("cdnsign-store")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Unavailable(format!("store runtime: {e}")))?;
        Ok(Pool {
            cfg,
            io: IoRuntime(Some(io)),
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(MAX_CONNECTIONS),
            dedicated: Arc::new(Semaphore::new(MAX_DEDICATED)),
        })
    }

    /// A connection of its own, outside the pool (closed when dropped); at most
    /// [`MAX_DEDICATED`] at once, later callers waiting for one to close.
    pub(super) async fn dedicated(&self) -> Result<Dedicated, StoreError> {
        let permit = Arc::clone(&self.dedicated)
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Unavailable("store closed".into()))?;
        let cfg = self.cfg.clone();
        let handle = self
            .io
            .handle()
            .ok_or_else(|| StoreError::Unavailable("store closed".into()))?;
        let client = handle
            .clone()
            .spawn(async move {
                let (client, connection) = cfg.connect(NoTls).await.map_err(db_error)?;
                handle.spawn(async move {
                    let _ = connection.await;
                });
                Ok::<_, StoreError>(client)
            })
            .await
            .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))??;
        Ok(Dedicated {
            client,
            _permit: permit,
        })
    }

    /// A pooled connection: an idle one, or a new one while fewer than
    /// [`MAX_CONNECTIONS`] are lent out (else waits for one to come back).
    pub(super) async fn get(&self) -> Result<Conn<'_>, StoreError> {
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::Unavailable("store closed".into()))?;
        loop {
            let c = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            match c {
                Some(c) if !c.is_closed() => {
                    return Ok(Conn {
                        client: Some(c),
                        pool: self,
                        _permit: permit,
                    });
                }
                Some(_) => continue,
                None => break,
            }
        }
        let cfg = self.cfg.clone();
        let handle = self
            .io
            .handle()
            .ok_or_else(|| StoreError::Unavailable("store closed".into()))?;
        let client = handle
            .clone()
            .spawn(async move {
                let (client, connection) = cfg.connect(NoTls).await.map_err(db_error)?;
                handle.spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %e, "postgresql connection closed");
                    }
                });
                Ok::<_, StoreError>(client)
            })
            .await
            .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))??;
        Ok(Conn {
            client: Some(client),
            pool: self,
            _permit: permit,
        })
    }
}
