//! The embedded engine's redb tables (see `super::embedded`'s module docs) and a purge's
//! record in them: encoding, reading, and writing it with its `active`/`finished` entry.

use redb::{ReadableTable, TableDefinition};

use super::StoreError;
use crate::purge::model::PurgeRecord;

pub(super) const PURGES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("purges");
pub(super) const KEYS: TableDefinition<'_, &str, &str> = TableDefinition::new("keys");
pub(super) const ORDER: TableDefinition<'_, u64, &str> = TableDefinition::new("order");
pub(super) const BY_TARGET: TableDefinition<'_, (&str, u64), &str> =
    TableDefinition::new("by_target");
pub(super) const ACTIVE: TableDefinition<'_, &str, u64> = TableDefinition::new("active");
pub(super) const FINISHED: TableDefinition<'_, (i64, &str), ()> = TableDefinition::new("finished");

/// Where a client's idempotency key is kept: per client, so two clients' keys never meet.
pub(super) fn key_slot(client: &str, key: &str) -> String {
    format!("{client}\u{1f}{key}")
}

pub(super) fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

pub(super) fn decode(bytes: &[u8]) -> Result<PurgeRecord, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("purge record: {e}")))
}

fn encode(rec: &PurgeRecord) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(rec).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// The record `id` in `purges`, from a read or a write transaction's table.
fn read_record(
    purges: &impl ReadableTable<&'static str, &'static [u8]>,
    id: &str,
) -> Result<Option<PurgeRecord>, StoreError> {
    match purges.get(id).map_err(unavailable)? {
        Some(v) => decode(v.value()).map(Some),
        None => Ok(None),
    }
}

/// The record `id`, read in `tx`.
pub(super) fn load(
    tx: &redb::ReadTransaction,
    id: &str,
) -> Result<Option<PurgeRecord>, StoreError> {
    read_record(&tx.open_table(PURGES).map_err(unavailable)?, id)
}

/// The record `id`, read in the write transaction `tx` (what it has written so far).
pub(super) fn load_w(
    tx: &redb::WriteTransaction,
    id: &str,
) -> Result<Option<PurgeRecord>, StoreError> {
    read_record(&tx.open_table(PURGES).map_err(unavailable)?, id)
}

/// Writes a changed record, moving it from `active` to `finished` when it finished.
pub(super) fn write_record(
    tx: &redb::WriteTransaction,
    rec: &PurgeRecord,
    now: i64,
) -> Result<(), StoreError> {
    let bytes = encode(rec)?;
    tx.open_table(PURGES)
        .map_err(unavailable)?
        .insert(rec.id.as_str(), bytes.as_slice())
        .map_err(unavailable)?;
    let mut active = tx.open_table(ACTIVE).map_err(unavailable)?;
    if rec.is_finished() {
        if active
            .remove(rec.id.as_str())
            .map_err(unavailable)?
            .is_some()
        {
            tx.open_table(FINISHED)
                .map_err(unavailable)?
                .insert((now, rec.id.as_str()), ())
                .map_err(unavailable)?;
        }
    } else {
        active
            .insert(rec.id.as_str(), rec.seq)
            .map_err(unavailable)?;
    }
    Ok(())
}
