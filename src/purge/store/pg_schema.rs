//! The PostgreSQL store's schema: versioned in `cdnsign_schema`, migrations compiled in
//! and applied at start inside one transaction under an advisory lock, so replicas
//! starting together migrate once and the others find it done.

use super::StoreError;
use super::pg_pool::{Pool, db_error};

/// The schema version this build migrates to.
pub const SCHEMA_VERSION: i32 = 1;

/// Migrations, in order: `MIGRATIONS[n]` takes the schema from version `n` to `n + 1`.
/// Each is a file in `migrations/`; an applied one is never edited, a change is a new one.
const MIGRATIONS: [&str; 1] = [include_str!("migrations/0001_initial.sql")];

/// Brings the database's schema to [`SCHEMA_VERSION`], creating it on an empty database;
/// refuses one that is newer ([`StoreError::SchemaTooNew`]).
pub(super) async fn migrate(pool: &Pool) -> Result<(), StoreError> {
    let mut c = pool.get().await?;
    let tx = c.transaction().await.map_err(db_error)?;
    // One replica migrates at a time; the others wait here, then find it done.
    tx.execute("SELECT pg_advisory_xact_lock(7283512094451)", &[])
        .await
        .map_err(db_error)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS cdnsign_schema (version INTEGER NOT NULL)")
        .await
        .map_err(db_error)?;
    let found: i32 = tx
        .query_opt("SELECT version FROM cdnsign_schema", &[])
        .await
        .map_err(db_error)?
        .map_or(0, |r| r.get(0));
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            known: SCHEMA_VERSION,
        });
    }
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.batch_execute(sql).await.map_err(db_error)?;
        tracing::info!(from, to = from + 1, "purge database schema migrated");
    }
    if found == 0 {
        tx.execute(
            "INSERT INTO cdnsign_schema (version) VALUES ($1)",
            &[&SCHEMA_VERSION],
        )
        .await
        .map_err(db_error)?;
    } else if found < SCHEMA_VERSION {
        tx.execute("UPDATE cdnsign_schema SET version = $1", &[&SCHEMA_VERSION])
            .await
            .map_err(db_error)?;
    }
    tx.commit().await.map_err(db_error)
}
