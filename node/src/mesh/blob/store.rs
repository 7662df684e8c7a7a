//! Blobs in the node's store. Chunk bytes live in one file per blob under `<data dir>/blobs/`
//! (named by the blob id, each chunk at its offset in the blob, written with `pwrite`); redb
//! keeps the index: manifests by blob id, the bitfield of durable chunks of each incomplete
//! blob, a completion marker per blob, the list of blobs still wanted (so a restarted node
//! resumes its fetches) and per-blob allow-lists.
//!
//! Durability is decoupled from receiving, as in a BitTorrent client's fast resume:
//! - [`BlobStore::write_chunks`] writes verified chunks to the file (the page cache) and marks
//!   them held in memory at once, so they are served to peers and count for the fetch right
//!   away. It neither syncs nor commits.
//! - [`BlobStore::checkpoint`] makes what was written durable: it takes the held bitfield,
//!   `fdatasync`s the file, then commits that bitfield (or the completion marker). The index
//!   therefore never claims a chunk that is not on disk. Fetches checkpoint every
//!   [`CHECKPOINT_BYTES`] or [`CHECKPOINT_EVERY`], and once more after their last chunk.
//! - Loading an incomplete blob whose file exists re-hashes the chunks the index does not claim
//!   and keeps those that match the manifest. A node killed (or a machine that lost power)
//!   between a write and its checkpoint therefore keeps every chunk that reached the file
//!   intact, and never trusts one that did not.
//!
//! On this machine's disk an `fdatasync` per batch of chunks held the store to 330-390 MB/s, below
//! what the transport delivers; a checkpoint every few hundred megabytes costs next to nothing.
//!
//! All calls block on the disk: async code calls them through `spawn_blocking`.

use std::{
    collections::{HashMap, HashSet},
    fs::{File, OpenOptions},
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError, RwLock},
    time::{SystemTime, UNIX_EPOCH},
};

use libp2p::PeerId;
use serde::{Deserialize, Serialize};

use crate::{
    hash::Hash32,
    mesh::blob::{Bitfield, BlobError, BlobId, Manifest},
    store::{Batch, Db, RawTree, StoreError, Tree},
};

/// Canonical manifest bytes by blob id.
pub(crate) const MANIFESTS: RawTree = Tree::new("mesh.blob.manifests");
/// Which chunks of an incomplete blob are durable in its file (removed on completion).
const HAVE: Tree<Bitfield> = Tree::new("mesh.blob.have");
/// Present when every chunk of the blob is stored.
const COMPLETE: Tree<CompleteRecord> = Tree::new("mesh.blob.complete");
/// Blobs being fetched, resumed on restart.
const WANTED: Tree<WantedRecord> = Tree::new("mesh.blob.wanted");
/// Allow-lists of private blobs.
const ACL: Tree<AclRecord> = Tree::new("mesh.blob.acl");

/// The folder of blob files inside the data dir.
pub const BLOB_DIR: &str = "blobs";
/// Open blob files kept (one descriptor each); beyond this an arbitrary one is closed.
const MAX_OPEN_FILES: usize = 256;
/// A fetch checkpoints (syncs and commits what it wrote) after this many new bytes...
pub const CHECKPOINT_BYTES: u64 = 256 * 1024 * 1024;
/// ... or after this long, whichever comes first.
pub const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CompleteRecord {
    len: u64,
    completed_unix: u64,
}

/// A blob the node wants (a fetch in progress).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WantedRecord {
    /// When the fetch was first asked for (Unix seconds).
    pub added_unix: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct AclRecord {
    peers: Vec<PeerId>,
}

/// A chunk whose length and hash were checked against its manifest.
#[derive(Debug, Clone)]
pub struct VerifiedChunk {
    index: u32,
    data: Vec<u8>,
}

impl VerifiedChunk {
    /// Checks `data` as chunk `index` of `manifest`.
    pub fn check(manifest: &Manifest, index: u32, data: Vec<u8>) -> Result<Self, BlobError> {
        manifest.verify_chunk(index, &data)?;
        Ok(Self { index, data })
    }

    /// The chunk index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The chunk length.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the chunk is empty (never, for a valid blob).
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The chunk's bytes (to hand the buffer back to [`crate::mesh::buffers`] once stored).
    pub fn into_data(self) -> Vec<u8> {
        self.data
    }
}

/// A blob known to this node: its manifest and which chunks are stored.
#[derive(Debug)]
pub struct BlobState {
    /// The manifest.
    pub manifest: Manifest,
    /// Chunks written to the file and verified (served to peers).
    have: RwLock<Bitfield>,
    /// Chunks the index on disk claims (the last checkpoint); its lock serialises checkpoints.
    durable: Mutex<Bitfield>,
}

impl BlobState {
    fn new(manifest: Manifest, have: Bitfield, durable: Bitfield) -> Self {
        Self {
            manifest,
            have: RwLock::new(have),
            durable: Mutex::new(durable),
        }
    }

    /// Whether every chunk written is also durable (nothing for a checkpoint to do).
    pub fn is_durable(&self) -> bool {
        self.durable
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .count()
            == self.have().count()
    }

    /// Which chunks are stored (written to the file; durable or not yet).
    pub fn have(&self) -> Bitfield {
        self.have
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether chunk `index` is stored.
    pub fn has(&self, index: u32) -> bool {
        self.have
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(index)
    }

    /// Whether every chunk is stored.
    pub fn is_complete(&self) -> bool {
        self.have
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_full()
    }
}

/// A line of [`BlobStore::list`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobSummary {
    /// Blob id.
    pub id: BlobId,
    /// Length in bytes.
    pub len: u64,
    /// Number of chunks.
    pub chunks: u32,
    /// Chunks stored.
    pub have: u32,
    /// Whether all are stored.
    pub complete: bool,
}

/// What a chunk write changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOutcome {
    /// Chunks that were not stored before.
    pub new_chunks: u32,
    /// Whether the blob is now complete.
    pub complete: bool,
}

/// The blob store (cheap to share behind an `Arc`).
#[derive(Debug)]
pub struct BlobStore {
    db: Db,
    dir: PathBuf,
    files: Mutex<HashMap<BlobId, Arc<File>>>,
    states: Mutex<HashMap<BlobId, Arc<BlobState>>>,
    acl: RwLock<HashMap<BlobId, HashSet<PeerId>>>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn file_err(path: &Path, e: std::io::Error) -> BlobError {
    BlobError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

fn put_bytes(b: &mut Batch<'_>, tree: RawTree, key: &[u8], bytes: &[u8]) -> Result<(), StoreError> {
    // Same encoding as `Db::put_raw` (a CBOR byte string), inside our own transaction.
    let raw: Tree<&serde_bytes::Bytes> = Tree::new(tree.name());
    b.put(raw, key, &serde_bytes::Bytes::new(bytes))
}

impl BlobStore {
    /// Opens the blob store over `db`, loading the allow-lists.
    pub fn open(db: Db) -> Result<Self, BlobError> {
        let mut acl = HashMap::new();
        for (key, rec) in db.scan(ACL, b"")? {
            if let Ok(bytes) = <[u8; 32]>::try_from(key.as_slice()) {
                acl.insert(Hash32(bytes), rec.peers.into_iter().collect());
            }
        }
        let dir = db.dir().join(BLOB_DIR);
        std::fs::create_dir_all(&dir).map_err(|e| file_err(&dir, e))?;
        Ok(Self {
            db,
            dir,
            files: Mutex::new(HashMap::new()),
            states: Mutex::new(HashMap::new()),
            acl: RwLock::new(acl),
        })
    }

    /// The underlying store.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Stores a local blob (chunked, hashed, written to its file and synced, then committed)
    /// and returns its manifest.
    pub fn put(&self, data: &[u8]) -> Result<Manifest, BlobError> {
        self.put_with_access(data, |_| None)
    }

    /// Stores a local blob that no peer may fetch until its access list is widened
    /// ([`Self::set_acl`]): the access list is in place before the blob exists for anyone, so
    /// a peer that learns its id (from the DHT) in between gets `Denied`, never the bytes.
    /// The same bytes stored privately before keep the access list they have (they may be
    /// shared with a cluster already).
    pub fn put_private(&self, data: &[u8]) -> Result<Manifest, BlobError> {
        self.put_with_access(data, |current| Some(current.cloned().unwrap_or_default()))
    }

    /// Stores a local blob with the access list `access` gives from the current one (`None`:
    /// leave it as it is).
    fn put_with_access(
        &self,
        data: &[u8],
        access: impl FnOnce(Option<&HashSet<PeerId>>) -> Option<HashSet<PeerId>>,
    ) -> Result<Manifest, BlobError> {
        let manifest = Manifest::for_bytes(data);
        let bytes = manifest.encode()?;
        let id = BlobId::of(&bytes);
        let peers = {
            // Set before the manifest commits: serving checks the access list first.
            let mut acl = self.acl.write().unwrap_or_else(PoisonError::into_inner);
            let peers = access(acl.get(&id));
            if let Some(p) = &peers {
                acl.insert(id, p.clone());
            }
            peers
        };
        let file = self.file(&id, Some(manifest.len))?;
        let path = self.path(&id);
        file.write_all_at(data, 0).map_err(|e| file_err(&path, e))?;
        file.sync_data().map_err(|e| file_err(&path, e))?;
        self.db.write(|b| {
            if let Some(p) = &peers {
                b.put(
                    ACL,
                    id.as_bytes(),
                    &AclRecord {
                        peers: p.iter().copied().collect(),
                    },
                )?;
            }
            put_bytes(b, MANIFESTS, id.as_bytes(), &bytes)?;
            b.remove(HAVE, id.as_bytes())?;
            b.put(
                COMPLETE,
                id.as_bytes(),
                &CompleteRecord {
                    len: manifest.len,
                    completed_unix: unix_now(),
                },
            )
        })?;
        let full = Bitfield::full(manifest.chunk_count());
        let state = Arc::new(BlobState::new(manifest.clone(), full.clone(), full));
        self.states
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, state);
        Ok(manifest)
    }

    /// The path of blob `id`'s file.
    pub fn path(&self, id: &BlobId) -> PathBuf {
        self.dir.join(id.to_hex())
    }

    /// Blob `id`'s open file. With `create_len`, creates it if needed (sized to the blob, the
    /// directory synced so the new name survives a crash); without, `None` if absent.
    fn file(&self, id: &BlobId, create_len: Option<u64>) -> Result<Arc<File>, BlobError> {
        let mut files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(f) = files.get(id) {
            return Ok(f.clone());
        }
        let path = self.path(id);
        let file = match create_len {
            Some(len) => {
                let existed = path.exists();
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&path)
                    .map_err(|e| file_err(&path, e))?;
                if f.metadata().map_err(|e| file_err(&path, e))?.len() != len {
                    f.set_len(len).map_err(|e| file_err(&path, e))?;
                }
                if !existed {
                    File::open(&self.dir)
                        .and_then(|d| d.sync_all())
                        .map_err(|e| file_err(&self.dir, e))?;
                }
                f
            }
            None => OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| file_err(&path, e))?,
        };
        if files.len() >= MAX_OPEN_FILES
            && let Some(k) = files.keys().next().copied()
        {
            files.remove(&k);
        }
        let file = Arc::new(file);
        files.insert(*id, file.clone());
        Ok(file)
    }

    /// Stores a manifest received for `id` (its bytes must hash to `id`) and returns the state.
    pub fn insert_manifest(&self, id: &BlobId, bytes: &[u8]) -> Result<Arc<BlobState>, BlobError> {
        Manifest::decode_for(id, bytes)?;
        if !self.db.contains(MANIFESTS, id.as_bytes())? {
            self.db.put_raw(MANIFESTS, id.as_bytes(), bytes)?;
        }
        self.state(id)?.ok_or(BlobError::UnknownBlob(*id))
    }

    /// The state of blob `id`, loading it from disk on first use; `None` without a manifest.
    pub fn state(&self, id: &BlobId) -> Result<Option<Arc<BlobState>>, BlobError> {
        if let Some(s) = self
            .states
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
        {
            return Ok(Some(s.clone()));
        }
        let Some(bytes) = self.db.get_raw(MANIFESTS, id.as_bytes())? else {
            return Ok(None);
        };
        let manifest = Manifest::decode(&bytes)?;
        let n = manifest.chunk_count();
        let file_len = std::fs::metadata(self.path(id)).map(|m| m.len()).ok();
        let durable = if file_len != Some(manifest.len) {
            // No file (or a damaged one): nothing is held, whatever the index says.
            Bitfield::empty(n)
        } else if self.db.contains(COMPLETE, id.as_bytes())? {
            Bitfield::full(n)
        } else {
            match self.db.get(HAVE, id.as_bytes())? {
                Some(have) if have.is_valid_for(n) => have,
                _ => Bitfield::empty(n),
            }
        };
        let mut have = durable.clone();
        if file_len == Some(manifest.len) && !have.is_full() {
            self.recover_written(id, &manifest, &mut have)?;
        }
        let state = Arc::new(BlobState::new(manifest, have, durable));
        let mut states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(Some(states.entry(*id).or_insert(state).clone()))
    }

    /// Adds to `have` the chunks of `id`'s file that the index does not claim but that hash to
    /// the manifest: written before a crash, not yet checkpointed.
    fn recover_written(
        &self,
        id: &BlobId,
        manifest: &Manifest,
        have: &mut Bitfield,
    ) -> Result<(), BlobError> {
        let file = self.file(id, None)?;
        let mut buf = Vec::new();
        let mut recovered = 0u32;
        for index in 0..manifest.chunk_count() {
            if have.get(index) {
                continue;
            }
            let r = manifest.chunk_range(index);
            buf.resize((r.end - r.start) as usize, 0);
            file.read_exact_at(&mut buf, r.start)
                .map_err(|e| file_err(&self.path(id), e))?;
            if manifest.verify_chunk(index, &buf).is_ok() {
                have.set(index);
                recovered += 1;
            }
        }
        if recovered > 0 {
            tracing::info!(target: "mesh::blob", blob = %id.short(), recovered, "chunks written before a restart recovered by their hashes");
        }
        Ok(())
    }

    /// The state of `id` if it is already in memory (never touches the disk: for the event loop).
    pub fn cached_state(&self, id: &BlobId) -> Option<Arc<BlobState>> {
        self.states
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    /// The canonical manifest bytes of `id`, if known.
    pub fn manifest_bytes(&self, id: &BlobId) -> Result<Option<Vec<u8>>, BlobError> {
        Ok(self.db.get_raw(MANIFESTS, id.as_bytes())?)
    }

    /// Whether every chunk of `id` is stored.
    pub fn is_complete(&self, id: &BlobId) -> Result<bool, BlobError> {
        Ok(self.state(id)?.is_some_and(|s| s.is_complete()))
    }

    /// Chunk `index` of `id`, if stored.
    pub fn read_chunk(&self, id: &BlobId, index: u32) -> Result<Option<Vec<u8>>, BlobError> {
        let Some(state) = self.state(id)? else {
            return Ok(None);
        };
        if !state.has(index) {
            return Ok(None);
        }
        let r = state.manifest.chunk_range(index);
        // Every byte is overwritten by the read (see `buffers`).
        let mut data = crate::mesh::buffers::take_chunk((r.end - r.start) as usize);
        let file = self.file(id, None)?;
        file.read_exact_at(&mut data, r.start)
            .map_err(|e| file_err(&self.path(id), e))?;
        Ok(Some(data))
    }

    /// Writes verified chunks of `id` to its file and marks them held: they are served and read
    /// back from here on, and become durable at the next [`Self::checkpoint`].
    pub fn write_chunks(
        &self,
        id: &BlobId,
        chunks: &[VerifiedChunk],
    ) -> Result<WriteOutcome, BlobError> {
        let state = self.state(id)?.ok_or(BlobError::UnknownBlob(*id))?;
        let have = state.have();
        let fresh: Vec<&VerifiedChunk> = chunks.iter().filter(|c| !have.get(c.index)).collect();
        if !fresh.is_empty() {
            let file = self.file(id, Some(state.manifest.len))?;
            let path = self.path(id);
            for c in &fresh {
                let r = state.manifest.chunk_range(c.index);
                file.write_all_at(&c.data, r.start)
                    .map_err(|e| file_err(&path, e))?;
            }
        }
        // Set only after the bytes are in the file, so nothing is served before it is there.
        let mut shared = state.have.write().unwrap_or_else(PoisonError::into_inner);
        let new_chunks = fresh.iter().filter(|c| shared.set(c.index)).count() as u32;
        Ok(WriteOutcome {
            new_chunks,
            complete: shared.is_full(),
        })
    }

    /// Makes the chunks of `id` written so far durable: syncs the file, then commits the held
    /// bitfield (the completion marker once all are held). Returns whether there was anything
    /// to do.
    pub fn checkpoint(&self, id: &BlobId) -> Result<bool, BlobError> {
        let Some(state) = self.cached_state(id) else {
            return Ok(false);
        };
        let mut durable = state.durable.lock().unwrap_or_else(PoisonError::into_inner);
        // Taken before the sync: a chunk written after it is claimed by the next checkpoint.
        let have = state.have();
        if have.count() == durable.count() {
            return Ok(false);
        }
        let path = self.path(id);
        self.file(id, None)?
            .sync_data()
            .map_err(|e| file_err(&path, e))?;
        self.db.write(|b| {
            if have.is_full() {
                b.remove(HAVE, id.as_bytes())?;
                b.put(
                    COMPLETE,
                    id.as_bytes(),
                    &CompleteRecord {
                        len: state.manifest.len,
                        completed_unix: unix_now(),
                    },
                )
            } else {
                b.put(HAVE, id.as_bytes(), &have)
            }
        })?;
        *durable = have;
        Ok(true)
    }

    /// Checkpoints every blob with chunks written since its last checkpoint (a clean shutdown).
    pub fn checkpoint_all(&self) -> Result<u32, BlobError> {
        let ids: Vec<BlobId> = self
            .states
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(_, s)| !s.is_durable())
            .map(|(id, _)| *id)
            .collect();
        let mut synced = 0;
        for id in ids {
            synced += u32::from(self.checkpoint(&id)?);
        }
        Ok(synced)
    }

    /// The whole blob, if complete (for small blobs and tests; the API streams chunk by chunk).
    pub fn read_all(&self, id: &BlobId) -> Result<Option<Vec<u8>>, BlobError> {
        let Some(state) = self.state(id)? else {
            return Ok(None);
        };
        if !state.is_complete() {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(state.manifest.len as usize);
        for i in 0..state.manifest.chunk_count() {
            let chunk = self
                .read_chunk(id, i)?
                .ok_or(BlobError::MissingChunk { id: *id, index: i })?;
            out.extend_from_slice(&chunk);
        }
        Ok(Some(out))
    }

    /// Every blob with a manifest here.
    pub fn list(&self) -> Result<Vec<BlobSummary>, BlobError> {
        let mut out = Vec::new();
        for (key, _) in self.db.scan(MANIFESTS, b"")? {
            let Ok(bytes) = <[u8; 32]>::try_from(key.as_slice()) else {
                continue;
            };
            let id = Hash32(bytes);
            if let Some(s) = self.state(&id)? {
                let have = s.have();
                out.push(BlobSummary {
                    id,
                    len: s.manifest.len,
                    chunks: s.manifest.chunk_count(),
                    have: have.count(),
                    complete: have.is_full(),
                });
            }
        }
        Ok(out)
    }

    /// Number of complete blobs.
    pub fn complete_count(&self) -> Result<u64, BlobError> {
        Ok(self.db.len(COMPLETE)?)
    }

    /// Records that `id` is wanted (a fetch resumes after a restart until it completes).
    pub fn add_wanted(&self, id: &BlobId) -> Result<(), BlobError> {
        if !self.db.contains(WANTED, id.as_bytes())? {
            self.db.put(
                WANTED,
                id.as_bytes(),
                &WantedRecord {
                    added_unix: unix_now(),
                },
            )?;
        }
        Ok(())
    }

    /// Forgets that `id` is wanted.
    pub fn remove_wanted(&self, id: &BlobId) -> Result<(), BlobError> {
        self.db.remove(WANTED, id.as_bytes())?;
        Ok(())
    }

    /// Blobs still wanted.
    pub fn wanted(&self) -> Result<Vec<BlobId>, BlobError> {
        Ok(self
            .db
            .scan(WANTED, b"")?
            .into_iter()
            .filter_map(|(k, _)| <[u8; 32]>::try_from(k.as_slice()).ok().map(Hash32))
            .collect())
    }

    /// Makes `id` private to `peers` (`None`: public again). Persisted.
    pub fn set_acl(&self, id: &BlobId, peers: Option<HashSet<PeerId>>) -> Result<(), BlobError> {
        match &peers {
            Some(p) => self.db.put(
                ACL,
                id.as_bytes(),
                &AclRecord {
                    peers: p.iter().copied().collect(),
                },
            )?,
            None => {
                self.db.remove(ACL, id.as_bytes())?;
            }
        }
        let mut acl = self.acl.write().unwrap_or_else(PoisonError::into_inner);
        match peers {
            Some(p) => acl.insert(*id, p),
            None => acl.remove(id),
        };
        Ok(())
    }

    /// Overwrites stored chunk `index` of `id` with same-length garbage (a holder that serves
    /// corrupted data, for tests).
    #[cfg(any(test, feature = "test-utils"))]
    pub fn corrupt_chunk(&self, id: &BlobId, index: u32) -> Result<(), BlobError> {
        let mut data = self
            .read_chunk(id, index)?
            .ok_or(BlobError::MissingChunk { id: *id, index })?;
        for b in data.iter_mut().step_by(97) {
            *b ^= 0x5a;
        }
        let state = self.state(id)?.ok_or(BlobError::UnknownBlob(*id))?;
        let r = state.manifest.chunk_range(index);
        let file = self.file(id, None)?;
        file.write_all_at(&data, r.start)
            .map_err(|e| file_err(&self.path(id), e))?;
        Ok(())
    }

    /// Whether `peer` may fetch `id` (public blobs: anyone).
    pub fn is_allowed(&self, id: &BlobId, peer: &PeerId) -> bool {
        self.acl
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .is_none_or(|members| members.contains(peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 253) as u8).collect()
    }

    /// A blob of `chunks` whole chunks, its manifest and its id.
    fn chunked(chunks: usize) -> (Vec<u8>, Manifest, BlobId) {
        let d = data(chunks * crate::mesh::blob::CHUNK_BYTES);
        let m = Manifest::for_bytes(&d);
        let id = m.id().unwrap();
        (d, m, id)
    }

    /// Chunk `i` of `d`, checked against `m`.
    fn verified(m: &Manifest, d: &[u8], i: u32) -> VerifiedChunk {
        let r = m.chunk_range(i);
        VerifiedChunk::check(m, i, d[r.start as usize..r.end as usize].to_vec()).unwrap()
    }

    /// The store of the data dir `dir` (opened again after a "restart").
    fn store_in(dir: &tempfile::TempDir) -> BlobStore {
        BlobStore::open(Db::open_dir(dir.path()).unwrap()).unwrap()
    }

    fn open() -> (tempfile::TempDir, BlobStore) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_dir(dir.path()).unwrap();
        (dir, BlobStore::open(db).unwrap())
    }

    #[test]
    fn put_then_read_back() {
        let (_d, s) = open();
        let d = data(2 * crate::mesh::blob::CHUNK_BYTES + 17);
        let m = s.put(&d).unwrap();
        let id = m.id().unwrap();
        assert!(s.is_complete(&id).unwrap());
        assert_eq!(s.read_all(&id).unwrap().unwrap(), d);
        assert_eq!(
            s.read_chunk(&id, 2).unwrap().unwrap(),
            d[2 * crate::mesh::blob::CHUNK_BYTES..]
        );
        assert_eq!(s.list().unwrap().len(), 1);
        assert_eq!(s.complete_count().unwrap(), 1);
    }

    #[test]
    fn partial_blob_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (d, m, id) = chunked(3);
        let chunk = |i| verified(&m, &d, i);
        {
            let s = store_in(&dir);
            s.insert_manifest(&id, &m.encode().unwrap()).unwrap();
            s.add_wanted(&id).unwrap();
            let out = s.write_chunks(&id, &[chunk(0), chunk(2)]).unwrap();
            assert_eq!(
                out,
                WriteOutcome {
                    new_chunks: 2,
                    complete: false
                }
            );
            assert_eq!(s.write_chunks(&id, &[chunk(0)]).unwrap().new_chunks, 0);
        }
        let s = store_in(&dir);
        let st = s.state(&id).unwrap().unwrap();
        assert_eq!(st.have().ones().collect::<Vec<_>>(), vec![0, 2]);
        assert_eq!(s.wanted().unwrap(), vec![id]);
        assert!(s.read_chunk(&id, 1).unwrap().is_none());
        let out = s.write_chunks(&id, &[chunk(1)]).unwrap();
        assert!(out.complete);
        assert_eq!(s.read_all(&id).unwrap().unwrap(), d);
    }

    #[test]
    fn checkpoints_make_writes_durable_and_a_restart_recovers_the_rest_by_their_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let (d, m, id) = chunked(4);
        let chunk = |i| verified(&m, &d, i);
        {
            let s = store_in(&dir);
            s.insert_manifest(&id, &m.encode().unwrap()).unwrap();
            s.write_chunks(&id, &[chunk(0), chunk(1)]).unwrap();
            assert!(s.state(&id).unwrap().unwrap().has(1), "held once written");
            assert!(s.checkpoint(&id).unwrap());
            assert!(!s.checkpoint(&id).unwrap(), "nothing new to sync");
            let out = s.write_chunks(&id, &[chunk(2), chunk(3)]).unwrap();
            assert!(out.complete);
            assert!(!s.state(&id).unwrap().unwrap().is_durable());
            // A crash before the next checkpoint, with chunk 3 torn on the way to the disk.
            s.corrupt_chunk(&id, 3).unwrap();
        }
        let s = store_in(&dir);
        let st = s.state(&id).unwrap().unwrap();
        assert_eq!(
            st.have().ones().collect::<Vec<_>>(),
            vec![0, 1, 2],
            "chunk 2 recovered by its hash, the torn one not"
        );
        assert!(
            !st.is_durable(),
            "the index still claims only the checkpointed two"
        );
        assert!(s.read_chunk(&id, 3).unwrap().is_none());
        assert_eq!(s.complete_count().unwrap(), 0);
        assert!(s.write_chunks(&id, &[chunk(3)]).unwrap().complete);
        assert!(s.checkpoint(&id).unwrap());
        assert_eq!(s.complete_count().unwrap(), 1);
        drop(s);
        let s = store_in(&dir);
        assert!(s.is_complete(&id).unwrap());
        assert!(s.state(&id).unwrap().unwrap().is_durable());
        assert_eq!(s.read_all(&id).unwrap().unwrap(), d);
    }

    #[test]
    fn checkpoint_all_syncs_only_blobs_with_new_writes() {
        let (_d, s) = open();
        s.put(&data(100)).unwrap();
        let (d, m, id) = chunked(2);
        s.insert_manifest(&id, &m.encode().unwrap()).unwrap();
        assert_eq!(s.checkpoint_all().unwrap(), 0);
        s.write_chunks(&id, &[verified(&m, &d, 1)]).unwrap();
        assert_eq!(s.checkpoint_all().unwrap(), 1);
        assert_eq!(s.checkpoint_all().unwrap(), 0);
    }

    #[test]
    fn chunks_live_in_one_file_per_blob_and_a_lost_file_means_nothing_held() {
        let dir = tempfile::tempdir().unwrap();
        let d = data(2 * crate::mesh::blob::CHUNK_BYTES + 5);
        let id = {
            let s = store_in(&dir);
            let id = s.put(&d).unwrap().id().unwrap();
            let path = s.path(&id);
            assert_eq!(std::fs::read(&path).unwrap(), d, "the file is the blob");
            s.corrupt_chunk(&id, 1).unwrap();
            assert_ne!(s.read_all(&id).unwrap().unwrap(), d);
            std::fs::remove_file(path).unwrap();
            id
        };
        let s = store_in(&dir);
        let st = s.state(&id).unwrap().unwrap();
        assert_eq!(st.have().count(), 0, "index without a file claims nothing");
        assert!(s.read_chunk(&id, 0).unwrap().is_none());
    }

    #[test]
    fn manifest_must_match_id() {
        let (_d, s) = open();
        let m = Manifest::for_bytes(&data(10));
        let wrong = BlobId::of(b"nope");
        assert!(matches!(
            s.insert_manifest(&wrong, &m.encode().unwrap()),
            Err(BlobError::ManifestMismatch { .. })
        ));
    }

    #[test]
    fn acl_is_persisted_and_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let id = BlobId::of(b"private");
        let friend = PeerId::random();
        let stranger = PeerId::random();
        {
            let s = store_in(&dir);
            assert!(s.is_allowed(&id, &stranger));
            s.set_acl(&id, Some([friend].into_iter().collect()))
                .unwrap();
            assert!(s.is_allowed(&id, &friend));
            assert!(!s.is_allowed(&id, &stranger));
        }
        let s = store_in(&dir);
        assert!(!s.is_allowed(&id, &stranger));
        s.set_acl(&id, None).unwrap();
        assert!(s.is_allowed(&id, &stranger));
    }

    #[test]
    fn private_put_is_closed_from_the_start_and_keeps_a_wider_list() {
        let dir = tempfile::tempdir().unwrap();
        let peer = PeerId::random();
        let id = {
            let s = store_in(&dir);
            let id = s.put_private(&data(3000)).unwrap().id().unwrap();
            assert!(!s.is_allowed(&id, &peer), "nobody until shared");
            s.set_acl(&id, Some([peer].into_iter().collect())).unwrap();
            // The same bytes put privately again (a second job on the same input).
            s.put_private(&data(3000)).unwrap();
            assert!(s.is_allowed(&id, &peer), "still shared");
            id
        };
        let s = store_in(&dir);
        assert!(s.is_allowed(&id, &peer));
        assert!(!s.is_allowed(&id, &PeerId::random()));
        let public = s.put(&data(10)).unwrap().id().unwrap();
        assert!(s.is_allowed(&public, &peer));
        let private = s.put_private(&data(11)).unwrap().id().unwrap();
        drop(s);
        let s = store_in(&dir);
        assert!(
            !s.is_allowed(&private, &peer),
            "the empty list is persisted"
        );
    }
}
