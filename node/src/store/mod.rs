//! The node's durable state: one redb file (`node.redb`) under the data dir.
//!
//! redb gives ACID transactions with a single writer; a committed write survives a crash, so
//! "acknowledged" in this crate means "committed here". Values are CBOR behind typed
//! [`Tree`] handles (one redb table per kind of record); raw byte payloads such as blob chunks go
//! through [`RawTree`] without re-encoding. Each module declares the trees it owns as constants,
//! e.g. `const JOBS: Tree<JobRecord> = Tree::new("jobs");`.
//!
//! Calls are synchronous and may wait for the disk: async callers with large writes should use
//! `tokio::task::spawn_blocking`.

use std::{
    marker::PhantomData,
    path::{Path, PathBuf},
    sync::Arc,
};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Serialize, de::DeserializeOwned};

use crate::cbor::{self, CodecError};

/// The file name of the store inside a node's data dir.
pub const DB_FILE: &str = "node.redb";

/// Largest typed value accepted when decoding from disk (raw trees are not capped).
pub const MAX_VALUE_BYTES: usize = 16 * 1024 * 1024;

/// Errors from the durable store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file could not be opened or created (locked by another process, corrupt...).
    #[error("cannot open store {path}: {reason}")]
    Open {
        /// The file.
        path: String,
        /// redb's explanation.
        reason: String,
    },
    /// A read or write failed inside redb.
    #[error("store I/O failed: {0}")]
    Io(String),
    /// A stored value could not be encoded or decoded as the tree's type.
    #[error("bad value in tree {tree}: {source}")]
    Codec {
        /// The tree holding the value.
        tree: &'static str,
        /// Why.
        source: CodecError,
    },
}

macro_rules! io_err {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::Io(e.to_string()) }
        }
    )*};
}
io_err!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// A typed tree: byte-string keys, CBOR values of type `V`.
pub struct Tree<V> {
    name: &'static str,
    _value: PhantomData<fn() -> V>,
}

impl<V> Tree<V> {
    /// Declares a tree; the name is its on-disk identity, so renaming one loses its data.
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            _value: PhantomData,
        }
    }

    /// The tree's name.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    const fn def(&self) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
        TableDefinition::new(self.name)
    }
}

impl<V> Clone for Tree<V> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<V> Copy for Tree<V> {}

/// A tree of raw byte values (blob chunks and other payloads stored as-is).
pub type RawTree = Tree<Vec<u8>>;

/// Marker for trees whose values are plain bytes with no encoding at all (bulk payloads such
/// as blob chunks: no CBOR wrapping, so one copy fewer each way). Read and write them only with
/// [`Db::get_plain`]/[`Db::put_plain`]/[`Batch::put_plain`]; `get`/`put` do not compile for them.
#[derive(Debug)]
pub enum Plain {}

/// A tree of plain byte values (see [`Plain`]).
pub type PlainTree = Tree<Plain>;

/// A cloneable handle to the node's store.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Database>,
    dir: Arc<PathBuf>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Db")
    }
}

impl Db {
    /// Opens (or creates) the store in `data_dir`, creating the directory if needed.
    pub fn open_dir(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| StoreError::Open {
            path: data_dir.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::open(&data_dir.join(DB_FILE))
    }

    /// Opens (or creates) the store file at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(|e| StoreError::Open {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Ok(Self {
            inner: Arc::new(db),
            dir: Arc::new(dir),
        })
    }

    /// The directory holding the store file (other files of the node's state live beside it,
    /// e.g. blob chunk files).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stores `value` under `key`, replacing any previous value; durable on return.
    pub fn put<V: Serialize>(
        &self,
        tree: Tree<V>,
        key: &[u8],
        value: &V,
    ) -> Result<(), StoreError> {
        self.write(|w| w.put(tree, key, value))
    }

    /// The value under `key`, if any.
    pub fn get<V: DeserializeOwned>(
        &self,
        tree: Tree<V>,
        key: &[u8],
    ) -> Result<Option<V>, StoreError> {
        let txn = self.inner.begin_read()?;
        let table = match txn.open_table(tree.def()) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        match table.get(key)? {
            Some(v) => decode(tree, v.value()).map(Some),
            None => Ok(None),
        }
    }

    /// Whether `key` is present.
    pub fn contains<V>(&self, tree: Tree<V>, key: &[u8]) -> Result<bool, StoreError> {
        let txn = self.inner.begin_read()?;
        let table = match txn.open_table(tree.def()) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        Ok(table.get(key)?.is_some())
    }

    /// Removes `key`; returns whether it was present.
    pub fn remove<V>(&self, tree: Tree<V>, key: &[u8]) -> Result<bool, StoreError> {
        let mut found = false;
        self.write(|w| {
            found = w.remove(tree, key)?;
            Ok(())
        })?;
        Ok(found)
    }

    /// All entries whose key starts with `prefix`, in key order.
    pub fn scan<V: DeserializeOwned>(
        &self,
        tree: Tree<V>,
        prefix: &[u8],
    ) -> Result<Vec<(Vec<u8>, V)>, StoreError> {
        let txn = self.inner.begin_read()?;
        let table = match txn.open_table(tree.def()) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for entry in table.range::<&[u8]>(prefix..)? {
            let (k, v) = entry?;
            let key = k.value();
            if !key.starts_with(prefix) {
                break;
            }
            out.push((key.to_vec(), decode(tree, v.value())?));
        }
        Ok(out)
    }

    /// Number of entries in `tree`.
    pub fn len<V>(&self, tree: Tree<V>) -> Result<u64, StoreError> {
        let txn = self.inner.begin_read()?;
        match txn.open_table(tree.def()) {
            Ok(t) => Ok(t.len()?),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    /// Runs `f` in one write transaction: either all of its writes commit or none do.
    pub fn write<F>(&self, f: F) -> Result<(), StoreError>
    where
        F: FnOnce(&mut Batch<'_>) -> Result<(), StoreError>,
    {
        let txn = self.inner.begin_write()?;
        {
            let mut batch = Batch { txn: &txn };
            f(&mut batch)?;
        }
        txn.commit()?;
        Ok(())
    }
}

/// Writes inside one transaction (see [`Db::write`]).
pub struct Batch<'a> {
    txn: &'a redb::WriteTransaction,
}

impl Batch<'_> {
    /// Stores `value` under `key`.
    pub fn put<V: Serialize>(
        &mut self,
        tree: Tree<V>,
        key: &[u8],
        value: &V,
    ) -> Result<(), StoreError> {
        let bytes = cbor::to_vec(value).map_err(|source| StoreError::Codec {
            tree: tree.name,
            source,
        })?;
        let mut table = self.txn.open_table(tree.def())?;
        table.insert(key, bytes.as_slice())?;
        Ok(())
    }

    /// Stores plain bytes under `key` (no encoding).
    pub fn put_plain(
        &mut self,
        tree: PlainTree,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), StoreError> {
        let mut table = self.txn.open_table(tree.def())?;
        table.insert(key, value)?;
        Ok(())
    }

    /// Removes `key`; returns whether it was present.
    pub fn remove<V>(&mut self, tree: Tree<V>, key: &[u8]) -> Result<bool, StoreError> {
        let mut table = self.txn.open_table(tree.def())?;
        let removed = table.remove(key)?.is_some();
        Ok(removed)
    }

    /// The value under `key` as of this transaction (sees earlier writes in it).
    pub fn get<V: DeserializeOwned>(
        &self,
        tree: Tree<V>,
        key: &[u8],
    ) -> Result<Option<V>, StoreError> {
        let table = self.txn.open_table(tree.def())?;
        let value = table.get(key)?;
        match value {
            Some(v) => decode(tree, v.value()).map(Some),
            None => Ok(None),
        }
    }
}

/// Raw trees store their bytes as a CBOR byte string; this keeps one code path for both kinds.
fn decode<V: DeserializeOwned>(tree: Tree<V>, bytes: &[u8]) -> Result<V, StoreError> {
    // Raw payloads (chunks) can be larger than typed records; both are bounded by what we wrote.
    let limit = MAX_VALUE_BYTES.max(bytes.len().min(256 * 1024 * 1024));
    cbor::from_slice(bytes, limit).map_err(|source| StoreError::Codec {
        tree: tree.name,
        source,
    })
}

/// Helpers for raw trees, whose values are byte strings.
impl Db {
    /// Stores raw bytes.
    pub fn put_raw(&self, tree: RawTree, key: &[u8], bytes: &[u8]) -> Result<(), StoreError> {
        let tree: Tree<&serde_bytes::Bytes> = Tree::new(tree.name);
        self.put(tree, key, &serde_bytes::Bytes::new(bytes))
    }

    /// Reads raw bytes.
    pub fn get_raw(&self, tree: RawTree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let v: Option<serde_bytes::ByteBuf> = self.get(Tree::new(tree.name), key)?;
        Ok(v.map(|b| b.into_vec()))
    }

    /// Stores plain bytes (no encoding); durable on return.
    pub fn put_plain(&self, tree: PlainTree, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.write(|w| w.put_plain(tree, key, value))
    }

    /// Reads plain bytes.
    pub fn get_plain(&self, tree: PlainTree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.inner.begin_read()?;
        let table = match txn.open_table(tree.def()) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(table.get(key)?.map(|v| v.value().to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Rec {
        id: u64,
        name: String,
    }

    const RECS: Tree<Rec> = Tree::new("recs");
    const CHUNKS: RawTree = Tree::new("chunks");
    const PLAIN: PlainTree = Tree::new("plain");

    #[test]
    fn plain_bytes_round_trip_unencoded() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_dir(dir.path()).unwrap();
        db.put_plain(PLAIN, b"k", &[1, 2, 3]).unwrap();
        db.write(|b| b.put_plain(PLAIN, b"j", b"xyz")).unwrap();
        assert_eq!(db.get_plain(PLAIN, b"k").unwrap(), Some(vec![1, 2, 3]));
        assert_eq!(db.get_plain(PLAIN, b"j").unwrap(), Some(b"xyz".to_vec()));
        assert_eq!(db.get_plain(PLAIN, b"none").unwrap(), None);
        assert!(db.contains(PLAIN, b"k").unwrap());
        assert_eq!(db.len(PLAIN).unwrap(), 2);
    }

    #[test]
    fn put_get_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Db::open_dir(dir.path()).unwrap();
            db.put(
                RECS,
                b"a",
                &Rec {
                    id: 1,
                    name: "one".into(),
                },
            )
            .unwrap();
            db.put_raw(CHUNKS, b"c1", &[7u8; 4096]).unwrap();
        }
        let db = Db::open_dir(dir.path()).unwrap();
        assert_eq!(
            db.get(RECS, b"a").unwrap(),
            Some(Rec {
                id: 1,
                name: "one".into()
            })
        );
        assert_eq!(db.get_raw(CHUNKS, b"c1").unwrap().unwrap(), vec![7u8; 4096]);
        assert_eq!(db.get(RECS, b"missing").unwrap(), None);
    }

    #[test]
    fn missing_tree_reads_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_dir(dir.path()).unwrap();
        assert_eq!(db.get(RECS, b"x").unwrap(), None);
        assert!(db.scan(RECS, b"").unwrap().is_empty());
        assert_eq!(db.len(RECS).unwrap(), 0);
        assert!(!db.remove(RECS, b"x").unwrap());
    }

    #[test]
    fn scan_returns_prefix_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_dir(dir.path()).unwrap();
        for (k, id) in [("job/2", 2), ("job/1", 1), ("peer/1", 9)] {
            db.put(RECS, k.as_bytes(), &Rec { id, name: k.into() })
                .unwrap();
        }
        let ids: Vec<u64> = db
            .scan(RECS, b"job/")
            .unwrap()
            .into_iter()
            .map(|(_, r)| r.id)
            .collect();
        assert_eq!(ids, vec![1, 2]);
    }

    #[test]
    fn failed_batch_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_dir(dir.path()).unwrap();
        let res = db.write(|w| {
            w.put(
                RECS,
                b"a",
                &Rec {
                    id: 1,
                    name: "a".into(),
                },
            )?;
            Err(StoreError::Io("abort".into()))
        });
        assert!(res.is_err());
        assert_eq!(db.get(RECS, b"a").unwrap(), None);
    }

    #[test]
    fn wrong_type_is_a_codec_error() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_dir(dir.path()).unwrap();
        db.put_raw(CHUNKS, b"k", b"not a record").unwrap();
        let as_rec: Tree<Rec> = Tree::new("chunks");
        assert!(matches!(
            db.get(as_rec, b"k"),
            Err(StoreError::Codec { tree: "chunks", .. })
        ));
    }
}
