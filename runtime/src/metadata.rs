//! The metadata store: one embedded transactional database (redb) under the persistent
//! root holding images, snapshots, sandboxes, containers and leases.
//!
//! Every state change is one transaction, so a crash at any point leaves either the old
//! or the new state, never half of one; start-up reconciles the filesystem against it.
//! Values are JSON: small, self-describing and easy to inspect when debugging a node.

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{de::DeserializeOwned, Serialize};
use std::any::Any;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// A kind of record kept in its own table, keyed by a string id.
pub trait Record: Serialize + DeserializeOwned {
    /// The table's name; must be unique across record types.
    const TABLE: &'static str;
}

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("metadata database: {0}")]
    Db(String),
    #[error("metadata record {table}/{key} is corrupt: {source}")]
    Corrupt { table: &'static str, key: String, source: serde_json::Error },
}

macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl From<$t> for MetadataError {
            fn from(e: $t) -> Self { MetadataError::Db(e.to_string()) }
        }
    )*};
}
db_err!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

pub type Result<T> = std::result::Result<T, MetadataError>;

fn table<R: Record>() -> TableDefinition<'static, &'static str, &'static [u8]> {
    TableDefinition::new(R::TABLE)
}

pub struct MetadataStore {
    db: redb::Database,
    decoded: Arc<DecodedTables>,
}

/// A decoded table shared by readers, as of one generation of the table.
type Shared<R> = Arc<Vec<(String, Arc<R>)>>;

/// Decoded copies of whole tables for [`MetadataStore::list_shared`]: the kubelet lists
/// pods and containers every second, and decoding every record each time was most of
/// what a list cost. Each table has a generation, bumped after every commit that wrote
/// it; a copy is good while the generation it was read at is current.
#[derive(Default)]
struct DecodedTables {
    tables: Mutex<HashMap<&'static str, TableCopy>>,
}

#[derive(Default)]
struct TableCopy {
    generation: u64,
    copy: Option<(u64, Arc<dyn Any + Send + Sync>)>,
}

impl DecodedTables {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<&'static str, TableCopy>> {
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl MetadataStore {
    /// Opens (creating if needed) the database file at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        Ok(Self { db: redb::Database::create(path)?, decoded: Arc::default() })
    }

    pub fn read(&self) -> Result<ReadTxn> {
        Ok(ReadTxn { txn: self.db.begin_read()? })
    }

    /// Starts a write transaction. Writers are serialised by redb; keep them short.
    pub fn write(&self) -> Result<WriteTxn> {
        Ok(WriteTxn {
            txn: self.db.begin_write()?,
            decoded: self.decoded.clone(),
            written: Vec::new(),
        })
    }

    /// The whole table, decoded, shared with other readers: decoded again only after a
    /// commit wrote to it. Reflects every commit that returned before this call.
    pub fn list_shared<R: Record + Send + Sync + 'static>(&self) -> Result<Shared<R>> {
        let generation = {
            let tables = self.decoded.lock();
            let entry = tables.get(R::TABLE);
            if let Some(TableCopy { generation, copy: Some((at, copy)) }) = entry {
                if at == generation {
                    if let Ok(copy) = copy.clone().downcast::<Vec<(String, Arc<R>)>>() {
                        return Ok(copy);
                    }
                }
            }
            entry.map_or(0, |e| e.generation)
        };
        // Read after taking the generation: a commit racing with this read bumps the
        // generation after it lands, so a copy missing it is never current.
        let list = self.read()?.list::<R>()?;
        let copy: Shared<R> = Arc::new(list.into_iter().map(|(k, r)| (k, Arc::new(r))).collect());
        let mut tables = self.decoded.lock();
        let entry = tables.entry(R::TABLE).or_default();
        if entry.copy.as_ref().is_none_or(|(at, _)| *at < generation) {
            entry.copy = Some((generation, copy.clone()));
        }
        Ok(copy)
    }

    /// Reads one record outside any explicit transaction.
    pub fn get<R: Record>(&self, key: &str) -> Result<Option<R>> {
        self.read()?.get(key)
    }

    /// Lists one table outside any explicit transaction.
    pub fn list<R: Record>(&self) -> Result<Vec<(String, R)>> {
        self.read()?.list()
    }

    /// The first `limit` keys of a table that start with `prefix`, in order (so a key equal
    /// to `prefix` comes first). Reads keys only: finding the id a request names must not
    /// cost a decode of every record, which made each call O(table size).
    pub fn keys_with_prefix<R: Record>(&self, prefix: &str, limit: usize) -> Result<Vec<String>> {
        self.read()?.keys_with_prefix::<R>(prefix, limit)
    }
}

fn decode<R: Record>(key: &str, bytes: &[u8]) -> Result<R> {
    serde_json::from_slice(bytes).map_err(|source| MetadataError::Corrupt {
        table: R::TABLE,
        key: key.to_string(),
        source,
    })
}

pub struct ReadTxn {
    txn: redb::ReadTransaction,
}

impl ReadTxn {
    pub fn get<R: Record>(&self, key: &str) -> Result<Option<R>> {
        let table = match self.txn.open_table(table::<R>()) {
            Ok(t) => t,
            // A table that was never written to does not exist yet: it is empty.
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        match table.get(key)? {
            Some(v) => decode(key, v.value()).map(Some),
            None => Ok(None),
        }
    }

    pub fn keys_with_prefix<R: Record>(&self, prefix: &str, limit: usize) -> Result<Vec<String>> {
        let table = match self.txn.open_table(table::<R>()) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for entry in table.range(prefix..)? {
            let (k, _) = entry?;
            if out.len() == limit || !k.value().starts_with(prefix) {
                break;
            }
            out.push(k.value().to_string());
        }
        Ok(out)
    }

    pub fn list<R: Record>(&self) -> Result<Vec<(String, R)>> {
        let table = match self.txn.open_table(table::<R>()) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            out.push((k.value().to_string(), decode(k.value(), v.value())?));
        }
        Ok(out)
    }
}

/// A write transaction: nothing is visible to readers until [`commit`](Self::commit);
/// dropping it without committing discards every change.
pub struct WriteTxn {
    txn: redb::WriteTransaction,
    decoded: Arc<DecodedTables>,
    /// Tables this transaction wrote (their shared copies go stale when it commits).
    written: Vec<&'static str>,
}

impl WriteTxn {
    pub fn get<R: Record>(&self, key: &str) -> Result<Option<R>> {
        let table = self.txn.open_table(table::<R>())?;
        let value = table.get(key)?;
        match value {
            Some(v) => decode(key, v.value()).map(Some),
            None => Ok(None),
        }
    }

    pub fn list<R: Record>(&self) -> Result<Vec<(String, R)>> {
        let table = self.txn.open_table(table::<R>())?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            out.push((k.value().to_string(), decode(k.value(), v.value())?));
        }
        Ok(out)
    }

    pub fn put<R: Record>(&mut self, key: &str, record: &R) -> Result<()> {
        let bytes = serde_json::to_vec(record).map_err(|source| MetadataError::Corrupt {
            table: R::TABLE,
            key: key.to_string(),
            source,
        })?;
        self.txn.open_table(table::<R>())?.insert(key, bytes.as_slice())?;
        self.wrote(R::TABLE);
        Ok(())
    }

    /// Removes a record; returns whether it existed.
    pub fn delete<R: Record>(&mut self, key: &str) -> Result<bool> {
        let existed = self.txn.open_table(table::<R>())?.remove(key)?.is_some();
        if existed {
            self.wrote(R::TABLE);
        }
        Ok(existed)
    }

    fn wrote(&mut self, table: &'static str) {
        if !self.written.contains(&table) {
            self.written.push(table);
        }
    }

    /// Commits and waits until the change is on disk (an fsync, milliseconds on a busy
    /// node's disk).
    pub fn commit(self) -> Result<()> {
        self.finish()
    }

    /// Commits without waiting for the disk: readers see the change at once, and the
    /// next [`commit`](Self::commit) makes it durable along with its own. A crash before
    /// that loses it (never half of it), so use it only where the state the crash leaves
    /// is one start-up (or repeating the call) repairs anyway.
    pub fn commit_unsynced(mut self) -> Result<()> {
        self.txn
            .set_durability(redb::Durability::None)
            .map_err(|e| MetadataError::Db(e.to_string()))?;
        self.finish()
    }

    /// Whether the transaction changed anything (a commit of nothing still syncs).
    pub fn is_empty(&self) -> bool {
        self.written.is_empty()
    }

    fn finish(self) -> Result<()> {
        self.txn.commit()?;
        let mut tables = self.decoded.lock();
        for t in self.written {
            tables.entry(t).or_default().generation += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Thing {
        n: u32,
    }
    impl Record for Thing {
        const TABLE: &'static str = "things";
    }

    #[test]
    fn commit_persists_and_drop_discards() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        {
            let store = MetadataStore::open(&path).unwrap();
            assert_eq!(store.get::<Thing>("a").unwrap(), None);
            assert!(store.list::<Thing>().unwrap().is_empty());
            let mut tx = store.write().unwrap();
            tx.put("a", &Thing { n: 1 }).unwrap();
            tx.put("b", &Thing { n: 2 }).unwrap();
            tx.commit().unwrap();
            let mut tx = store.write().unwrap();
            tx.put("c", &Thing { n: 3 }).unwrap();
            assert!(tx.delete::<Thing>("a").unwrap());
            drop(tx); // aborted
        }
        let store = MetadataStore::open(&path).unwrap();
        let all = store.list::<Thing>().unwrap();
        assert_eq!(all, vec![("a".into(), Thing { n: 1 }), ("b".into(), Thing { n: 2 })]);
        let mut tx = store.write().unwrap();
        assert!(tx.delete::<Thing>("a").unwrap());
        assert!(!tx.delete::<Thing>("a").unwrap());
        tx.commit().unwrap();
        assert_eq!(store.get::<Thing>("a").unwrap(), None);
    }

    #[test]
    fn an_unsynced_commit_is_seen_at_once_and_kept_by_the_next_synced_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        {
            let store = MetadataStore::open(&path).unwrap();
            let mut tx = store.write().unwrap();
            tx.put("a", &Thing { n: 1 }).unwrap();
            tx.commit_unsynced().unwrap();
            assert_eq!(store.get::<Thing>("a").unwrap(), Some(Thing { n: 1 }));
            assert_eq!(store.list_shared::<Thing>().unwrap().len(), 1);
            let mut tx = store.write().unwrap();
            tx.put("b", &Thing { n: 2 }).unwrap();
            tx.commit().unwrap();
        }
        let store = MetadataStore::open(&path).unwrap();
        let keys: Vec<String> =
            store.list::<Thing>().unwrap().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["a", "b"]);
    }

    #[test]
    fn keys_with_a_prefix_in_order_without_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let store = MetadataStore::open(&dir.path().join("meta.redb")).unwrap();
        assert!(store.keys_with_prefix::<Thing>("a", 2).unwrap().is_empty());
        let mut tx = store.write().unwrap();
        for k in ["ab", "abc", "abd", "b", "aa"] {
            tx.put(k, &Thing { n: 1 }).unwrap();
        }
        tx.commit().unwrap();
        assert_eq!(store.keys_with_prefix::<Thing>("ab", 2).unwrap(), ["ab", "abc"]);
        assert_eq!(store.keys_with_prefix::<Thing>("ab", 5).unwrap(), ["ab", "abc", "abd"]);
        assert_eq!(store.keys_with_prefix::<Thing>("abd", 2).unwrap(), ["abd"]);
        assert_eq!(store.keys_with_prefix::<Thing>("ac", 2).unwrap(), Vec::<String>::new());
        assert_eq!(store.keys_with_prefix::<Thing>("", 2).unwrap(), ["aa", "ab"]);
    }

    #[test]
    fn shared_lists_follow_commits_and_are_reused_until_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = MetadataStore::open(&dir.path().join("meta.redb")).unwrap();
        assert!(store.list_shared::<Thing>().unwrap().is_empty());
        let mut tx = store.write().unwrap();
        tx.put("a", &Thing { n: 1 }).unwrap();
        tx.commit().unwrap();
        let first = store.list_shared::<Thing>().unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(*first[0].1, Thing { n: 1 });
        // Nothing written: the same copy.
        assert!(Arc::ptr_eq(&first, &store.list_shared::<Thing>().unwrap()));
        // An aborted write, and a write to another table, leave it current.
        let mut tx = store.write().unwrap();
        tx.put("b", &Thing { n: 2 }).unwrap();
        drop(tx);
        let mut tx = store.write().unwrap();
        tx.put("x", &super::super::sandbox::record::NameRecord { sandbox_id: "p".into() }).unwrap();
        tx.commit().unwrap();
        assert!(Arc::ptr_eq(&first, &store.list_shared::<Thing>().unwrap()));
        // A committed change is seen by the next list.
        let mut tx = store.write().unwrap();
        tx.put("a", &Thing { n: 5 }).unwrap();
        tx.put("b", &Thing { n: 6 }).unwrap();
        tx.commit().unwrap();
        let now = store.list_shared::<Thing>().unwrap();
        let got: Vec<u32> = now.iter().map(|(_, t)| t.n).collect();
        assert_eq!(got, [5, 6]);
        let mut tx = store.write().unwrap();
        assert!(tx.delete::<Thing>("a").unwrap());
        tx.commit().unwrap();
        assert_eq!(store.list_shared::<Thing>().unwrap().len(), 1);
    }
}
