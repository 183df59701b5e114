//! The PostgreSQL store's `[purge] database_url`: parsed (gaps filled from the standard
//! `PG*` variables) and described for logs without the password. Apart from the store, so
//! configuration checks can use it without depending on the store.

use std::time::Duration;

use tokio_postgres::Config;

/// Reads `database_url` and fills what it leaves out from the standard `PG*` variables.
/// The error never repeats the URL (it may hold a password).
pub fn connection_config(url: &str) -> Result<Config, String> {
    let mut cfg: Config = url.parse().map_err(|_| {
        "[purge] database_url is not a valid postgres:// URL or key=value string".to_owned()
    })?;
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if cfg.get_password().is_none()
        && let Some(p) = env("PGPASSWORD")
    {
        cfg.password(p);
    }
    if cfg.get_user().is_none()
        && let Some(u) = env("PGUSER")
    {
        cfg.user(u);
    }
    if cfg.get_hosts().is_empty() {
        cfg.host(env("PGHOST").as_deref().unwrap_or("localhost"));
    }
    if cfg.get_ports().is_empty()
        && let Some(p) = env("PGPORT").and_then(|p| p.parse().ok())
    {
        cfg.port(p);
    }
    if cfg.get_dbname().is_none()
        && let Some(d) = env("PGDATABASE")
    {
        cfg.dbname(d);
    }
    if cfg.get_connect_timeout().is_none() {
        cfg.connect_timeout(Duration::from_secs(5));
    }
    cfg.application_name("cdnsign");
    Ok(cfg)
}

/// `user@host:port/db`, for logs: never the password.
pub fn describe(cfg: &Config) -> String {
    let host = match cfg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    format!(
        "{}@{host}:{}/{}",
        cfg.get_user().unwrap_or("?"),
        cfg.get_ports().first().copied().unwrap_or(5432),
        cfg.get_dbname()
            .unwrap_or_else(|| cfg.get_user().unwrap_or("?")),
    )
}
