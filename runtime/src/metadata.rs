//! The metadata store: one embedded transactional database (redb) under the persistent
//! root holding images, snapshots, sandboxes, containers and leases.
//!
//! Every state change is one transaction, so a crash at any point leaves either the old
//! or the new state, never half of one; start-up reconciles the filesystem against it.
//! Values are JSON: small, self-describing and easy to inspect when debugging a node.

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{de::DeserializeOwned, Serialize};
use std::path::Path;

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
}

impl MetadataStore {
    /// Opens (creating if needed) the database file at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        Ok(Self { db: redb::Database::create(path)? })
    }

    pub fn read(&self) -> Result<ReadTxn> {
        Ok(ReadTxn { txn: self.db.begin_read()? })
    }

    /// Starts a write transaction. Writers are serialised by redb; keep them short.
    pub fn write(&self) -> Result<WriteTxn> {
        Ok(WriteTxn { txn: self.db.begin_write()? })
    }

    /// Reads one record outside any explicit transaction.
    pub fn get<R: Record>(&self, key: &str) -> Result<Option<R>> {
        self.read()?.get(key)
    }

    /// Lists one table outside any explicit transaction.
    pub fn list<R: Record>(&self) -> Result<Vec<(String, R)>> {
        self.read()?.list()
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
        Ok(())
    }

    /// Removes a record; returns whether it existed.
    pub fn delete<R: Record>(&mut self, key: &str) -> Result<bool> {
        Ok(self.txn.open_table(table::<R>())?.remove(key)?.is_some())
    }

    pub fn commit(self) -> Result<()> {
        Ok(self.txn.commit()?)
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
}
