//! What a [`Purger`](super::Purger) is built from: this replica's name, the store (opened
//! now, or retried in the background until it opens) and a provider per `[[targets]]`
//! entry.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::PurgeError;
use super::aliyun::{Aliyun, AliyunCredentials, AliyunProvider};
use super::cloudfront::{self, CloudFront, CloudFrontProvider, Limits};
use super::config::{ProviderKind, PurgeConfig, TargetConfig};
use super::provider::Provider;
use super::retry::Backoff;
use super::scheduler::Providers;
use super::store::embedded::EmbeddedStore;
use super::store::postgres::PgStore;
use super::store::{PurgeStore, StoreError, StoreSlot};

/// This replica's name in queue leases: host, process and a random part.
pub(super) fn replica_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "cdnsign".into());
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &random[..8])
}

/// Keeps trying to open a store that could not open at start, until it does or the
/// server is gone.
pub(super) fn open_later(slot: Weak<StoreSlot>, cfg: PurgeConfig) {
    tokio::spawn(async move {
        let mut wait = Duration::from_secs(1);
        loop {
            tokio::time::sleep(wait).await;
            let Some(slot) = slot.upgrade() else {
                return;
            };
            match open_store(&cfg).await {
                Ok(store) => {
                    tracing::info!(engine = store.engine(), "purge store opened");
                    slot.fill(store);
                    return;
                }
                Err(e) => slot.set_reason(e.to_string()),
            }
            wait = (wait * 2).min(Duration::from_secs(30));
        }
    });
}

pub(super) async fn open_store(cfg: &PurgeConfig) -> Result<Arc<dyn PurgeStore>, StoreError> {
    match &cfg.database_url {
        Some(url) => Ok(Arc::new(PgStore::connect(url.expose()).await?)),
        // `data_dir = ""`: no embedded store (a Deployment of several replicas, where one
        // pod's private store would split purges between pods): PostgreSQL or nothing.
        None if cfg.data_dir.as_os_str().is_empty() => Err(StoreError::Unavailable(
            "no purge store: [purge] database_url is not set and data_dir is \"\" (no embedded store); set database_url (CDNSIGN_PURGE__DATABASE_URL)".into(),
        )),
        None => {
            let dir = cfg.data_dir.clone();
            let store = tokio::task::spawn_blocking(move || EmbeddedStore::open(&dir))
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))??;
            Ok(Arc::new(store))
        }
    }
}

/// A provider for every `[[targets]]` entry: CloudFront clients share one AWS SDK config
/// (`aws_credentials`, default: the standard AWS chain); Aliyun targets sign with
/// `aliyun_credentials` (default: `ALIBABA_CLOUD_ACCESS_KEY_*` from the environment).
pub(super) async fn providers(
    cfg: &PurgeConfig,
    targets: &[TargetConfig],
    aws_credentials: Option<aws_sdk_cloudfront::config::SharedCredentialsProvider>,
    aliyun_credentials: Option<AliyunCredentials>,
) -> Result<Providers, PurgeError> {
    let backoff = Backoff {
        base: Duration::from_millis(cfg.retry_base_ms),
        max: Duration::from_millis(cfg.retry_max_ms),
    };
    let mut providers = Providers::default();
    let has_cf = targets
        .iter()
        .any(|t| t.provider == ProviderKind::Cloudfront);
    let shared = if has_cf {
        Some(cloudfront::sdk_config(aws_credentials).await)
    } else {
        None
    };
    let aliyun_creds = aliyun_credentials.or_else(AliyunCredentials::from_env);
    let limits = Limits {
        per_request: cfg.cloudfront_max_paths_per_request as usize,
        max_files: cfg.cloudfront_max_files_in_progress,
        max_wildcards: cfg.cloudfront_max_wildcards_in_progress,
        collapse_threshold: cfg.cloudfront_collapse_threshold,
    };
    for t in targets {
        let provider: Arc<dyn Provider> = match (t.provider, &shared) {
            (ProviderKind::Cloudfront, Some(shared)) => Arc::new(CloudFrontProvider::new(
                t.clone(),
                CloudFront::new(shared, t.endpoint.as_deref()),
                limits,
                backoff,
            )),
            (ProviderKind::Cloudfront, None) => continue,
            (ProviderKind::Aliyun, _) => {
                if aliyun_creds.is_none() {
                    tracing::warn!(
                        target_name = %t.name,
                        "ALIBABA_CLOUD_ACCESS_KEY_ID / ALIBABA_CLOUD_ACCESS_KEY_SECRET not set: purges of this aliyun target will fail"
                    );
                }
                let api = Aliyun::new(t.endpoint.as_deref(), t.signature, aliyun_creds.clone())
                    .map_err(|reason| PurgeError::Invalid {
                        field: "targets.endpoint",
                        reason,
                    })?;
                Arc::new(AliyunProvider::new(
                    t.clone(),
                    api,
                    backoff,
                    Duration::from_secs(cfg.aliyun_quota_backoff_seconds),
                ))
            }
        };
        providers.add(provider);
    }
    Ok(providers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_empty_data_dir_without_a_database_opens_no_store() {
        let cfg = PurgeConfig {
            data_dir: std::path::PathBuf::new(),
            database_url: None,
            ..PurgeConfig::default()
        };
        match open_store(&cfg).await {
            Err(StoreError::Unavailable(m)) => {
                assert!(m.contains("database_url") && m.contains("data_dir"), "{m}");
            }
            Ok(s) => panic!("opened a {} store", s.engine()),
            Err(e) => panic!("{e}"),
        }
    }
}
