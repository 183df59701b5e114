//! The embedded engine's redb tables (see `super::embedded`'s module docs) and a purge's
//! record in them: encoding, reading, and writing it with its `active`/`finished` entry.

use redb::{ReadableTable, TableDefinition};

use super::StoreError;
use crate::purge::model::PurgeRecord;

/// id → the purge's JSON record, jobs included.
pub(super) const PURGES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("purges");
/// [`key_slot`] (client and idempotency key) → id.
pub(super) const KEYS: TableDefinition<'_, &str, &str> = TableDefinition::new("keys");
/// sequence → id: newest-first listing.
pub(super) const ORDER: TableDefinition<'_, u64, &str> = TableDefinition::new("order");
/// (target, sequence) → id: listing by target.
pub(super) const BY_TARGET: TableDefinition<'_, (&str, u64), &str> =
    TableDefinition::new("by_target");
/// id → sequence of unfinished purges: what a restart resumes.
pub(super) const ACTIVE: TableDefinition<'_, &str, u64> = TableDefinition::new("active");
/// (finish time, id): what retention deletes.
pub(super) const FINISHED: TableDefinition<'_, (i64, &str), ()> = TableDefinition::new("finished");

/// Where a client's idempotency key is kept: per client, so two clients' keys never meet.
pub(super) fn key_slot(client: &str, key: &str) -> String {
    format!("{client}\u{1f}{key}")
}

/// A redb error: the store cannot answer now.
pub(super) fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// A stored record read back.
pub(super) fn decode(bytes: &[u8]) -> Result<PurgeRecord, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("purge record: {e}")))
}

/// A record as `purges` stores it.
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
