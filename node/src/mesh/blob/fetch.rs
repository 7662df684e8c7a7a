//! The driver of one blob fetch: find holders (DHT providers, hints), get and verify the
//! manifest, then loop: ask the [`Scheduler`] what to request, send chunk requests down one
//! [`ChunkPipe`] per holder (which verifies each chunk against the manifest in its own task)
//! and hand verified chunks to a writer thread that writes them to the blob's file and
//! checkpoints now and then (so a killed node keeps what it had), until every chunk is stored.
//! Holders that serve bad data are dropped and the fetch continues from the others.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    hash::{Hash, Hasher},
    sync::Arc,
    time::{Duration, Instant},
};

use futures::{FutureExt, StreamExt, future::BoxFuture, stream::FuturesUnordered};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::mesh::{
    Client, MeshError,
    blob::{
        BlobError, BlobId, BlobRequest, BlobResponse, BlobState, BlobStore, VerifiedChunk,
        scheduler::{Action, DropReason, Failure, Scheduler},
        store::{CHECKPOINT_BYTES, CHECKPOINT_EVERY},
        stream::{ChunkOutcome, ChunkPipe},
    },
    buffers,
};

/// Verified chunks waiting for the writer.
const WRITE_QUEUE_CHUNKS: usize = 64;
/// Chunks written per batch at most (what has queued up while the previous batch was written).
const WRITE_BATCH_CHUNKS: usize = 32;
/// Chunk answers lost with their stream (see [`ChunkOutcome::Lost`]) per holder before they
/// count as transport failures.
const MAX_LOST_STREAM_ANSWERS: u32 = 32;
/// How often the driver wakes up without events (backoffs, bitfield refreshes).
const TICK: Duration = Duration::from_millis(50);
/// With no chunk for this long, say at debug level what the fetch is waiting for.
const STALL_REPORT: Duration = Duration::from_secs(2);

/// How to fetch.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Fetch only from these peers (no DHT lookups): diagnostics and the star baseline.
    pub only_from: Option<Vec<PeerId>>,
    /// Peers likely to hold the blob, tried besides the DHT's providers.
    pub hints: Vec<PeerId>,
    /// Announce ourselves as a provider while fetching, so others can fetch from us.
    pub announce: bool,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            only_from: None,
            hints: Vec::new(),
            announce: true,
        }
    }
}

/// A holder dropped during a fetch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DroppedHolder {
    /// The peer.
    pub peer: PeerId,
    /// `bad_data`, `denied` or `failures`.
    pub reason: String,
}

/// What a finished fetch did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FetchReport {
    /// The blob.
    pub id: BlobId,
    /// Its length.
    pub len: u64,
    /// Its chunk count.
    pub chunks: u32,
    /// Chunks already stored when the fetch started (resumed fetches).
    pub chunks_had: u32,
    /// Chunks received, verified and stored by this fetch.
    pub chunks_fetched: u32,
    /// Chunks received twice (endgame duplicates), not stored again.
    pub duplicate_chunks: u32,
    /// Verified bytes received (duplicates included).
    pub bytes_fetched: u64,
    /// Chunks served by each holder (duplicates included).
    pub served_by: BTreeMap<PeerId, u32>,
    /// Holders dropped and why.
    pub dropped: Vec<DroppedHolder>,
    /// Wall time.
    pub elapsed_ms: u64,
}

/// The state of a fetch, watched by callers and the status API.
#[derive(Debug, Clone)]
pub enum FetchState {
    /// Chunks verified so far out of the total (0/0 until the manifest is in).
    Running {
        /// Verified chunks.
        have: u32,
        /// Chunks in the blob.
        total: u32,
    },
    /// Finished.
    Done(Arc<FetchReport>),
    /// Gave up.
    Failed(String),
}

impl FetchState {
    /// Whether the fetch is still going.
    pub fn is_running(&self) -> bool {
        matches!(self, Self::Running { .. })
    }
}

fn drop_label(r: DropReason) -> &'static str {
    match r {
        DropReason::BadData => "bad_data",
        DropReason::Denied => "denied",
        DropReason::Failures => "failures",
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BlobError> + Send + 'static,
) -> Result<T, MeshError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| MeshError::FetchFailed {
            id: String::new(),
            reason: format!("store task: {e}"),
        })?
        .map_err(MeshError::from)
}

/// Discovery: the DHT's providers plus hints, or exactly `only_from`. With `hints_only`, the
/// hints alone: a DHT query costs tens of milliseconds even on loopback, and a hinted peer (the
/// publisher of a round head, the offerer of an update) usually holds the blob.
async fn find_holders(
    client: &Client,
    id: BlobId,
    opts: &FetchOptions,
    hints_only: bool,
) -> HashSet<PeerId> {
    let mut found: HashSet<PeerId> = match &opts.only_from {
        Some(peers) => return peers.iter().copied().collect(),
        None if hints_only => HashSet::new(),
        None => client.get_providers(id).await.unwrap_or_default(),
    };
    found.extend(opts.hints.iter().copied());
    found.remove(&client.local_peer_id());
    found
}

/// Gets and verifies the manifest from the first holder that serves a good one.
async fn fetch_manifest(
    client: &Client,
    id: BlobId,
    opts: &FetchOptions,
    bad: &mut HashSet<PeerId>,
) -> Result<(Arc<BlobState>, Vec<PeerId>), MeshError> {
    let deadline = Instant::now() + client.config().fetch_stall_timeout;
    let mut hints_only = !opts.hints.is_empty();
    loop {
        let holders = find_holders(client, id, opts, hints_only).await;
        let candidates: Vec<PeerId> = holders
            .iter()
            .filter(|p| !bad.contains(p))
            .copied()
            .collect();
        for peer in &candidates {
            match client
                .blob_request(*peer, BlobRequest::Manifest { id })
                .await
            {
                Ok(BlobResponse::Manifest { bytes }) => {
                    let blobs = client.blobs().clone();
                    match blocking(move || blobs.insert_manifest(&id, &bytes)).await {
                        Ok(state) => return Ok((state, holders.into_iter().collect())),
                        Err(MeshError::Blob(e)) if e.is_peer_fault() => {
                            tracing::warn!(target: "mesh::blob", peer_id = %peer, blob = %id.short(), error = %e, "bad manifest, dropping holder");
                            client.metrics().fetch_failure("bad_data");
                            bad.insert(*peer);
                        }
                        Err(e) => return Err(e),
                    }
                }
                Ok(other) => {
                    tracing::debug!(target: "mesh::blob", peer_id = %peer, ?other, "no manifest from holder");
                }
                Err(e) => {
                    tracing::debug!(target: "mesh::blob", peer_id = %peer, error = %e, "manifest request failed");
                    client.metrics().fetch_failure("transport");
                }
            }
        }
        if hints_only {
            // No hinted peer had it: ask the DHT at once.
            hints_only = false;
            continue;
        }
        if Instant::now() >= deadline {
            return Err(MeshError::NoHolders { id: id.to_string() });
        }
        tokio::time::sleep(client.config().provider_refresh).await;
    }
}

/// Writes verified chunks in small batches until the channel closes, checkpointing as it goes
/// (see [`BlobStore::checkpoint`]); returns how many were new. The last checkpoint is the
/// caller's.
fn write_loop(
    blobs: Arc<BlobStore>,
    id: BlobId,
    mut rx: mpsc::Receiver<VerifiedChunk>,
) -> Result<u32, BlobError> {
    let mut written = 0;
    let mut unsynced = 0u64;
    let mut last_checkpoint = Instant::now();
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < WRITE_BATCH_CHUNKS {
            match rx.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        unsynced += batch.iter().map(|c| c.len() as u64).sum::<u64>();
        written += blobs.write_chunks(&id, &batch)?.new_chunks;
        for chunk in batch {
            buffers::give_chunk(chunk.into_data());
        }
        if unsynced >= CHECKPOINT_BYTES || last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
            blobs.checkpoint(&id)?;
            unsynced = 0;
            last_checkpoint = Instant::now();
        }
    }
    Ok(written)
}

enum Reply {
    Have(PeerId, Result<BlobResponse, MeshError>),
    Chunk(PeerId, u32, u64, ChunkOutcome),
}

fn failure_of(response: &Result<BlobResponse, MeshError>) -> Option<Failure> {
    match response {
        Ok(BlobResponse::Busy) => Some(Failure::Busy),
        Ok(BlobResponse::NotNow) => Some(Failure::NotNow),
        Ok(BlobResponse::NotFound) => Some(Failure::NotFound),
        Ok(BlobResponse::Denied) => Some(Failure::Denied),
        Err(_) => Some(Failure::Transport),
        Ok(_) => None,
    }
}

fn failure_label(f: Failure) -> &'static str {
    match f {
        Failure::Busy => "busy",
        Failure::NotNow => "not_now",
        Failure::NotFound => "not_found",
        Failure::Denied => "denied",
        Failure::Transport => "transport",
    }
}

/// Runs one fetch to completion (see the module docs).
pub(crate) async fn run(
    client: &Client,
    id: BlobId,
    opts: FetchOptions,
    progress: &watch::Sender<FetchState>,
) -> Result<FetchReport, MeshError> {
    let started = Instant::now();
    let blobs = client.blobs().clone();
    let cfg = client.config().clone();
    let metrics = client.metrics().clone();
    {
        let blobs = blobs.clone();
        blocking(move || blobs.add_wanted(&id)).await?;
    }
    let mut bad_manifest_peers = HashSet::new();
    let existing = {
        let blobs = blobs.clone();
        blocking(move || blobs.state(&id)).await?
    };
    let (state, first_holders) = match existing {
        Some(s) => (s, Vec::new()),
        None => fetch_manifest(client, id, &opts, &mut bad_manifest_peers).await?,
    };
    let manifest = &state.manifest;
    let total = manifest.chunk_count();
    let had = state.have();
    let chunks_had = had.count();
    progress.send_replace(FetchState::Running {
        have: chunks_had,
        total,
    });
    let mut report = FetchReport {
        id,
        len: manifest.len,
        chunks: total,
        chunks_had,
        chunks_fetched: 0,
        duplicate_chunks: 0,
        bytes_fetched: 0,
        served_by: BTreeMap::new(),
        dropped: Vec::new(),
        elapsed_ms: 0,
    };
    if had.is_full() {
        // Possibly recovered from the file's hashes: durable before it stops being wanted.
        blocking(move || {
            blobs.checkpoint(&id)?;
            blobs.remove_wanted(&id)
        })
        .await?;
        report.elapsed_ms = started.elapsed().as_millis() as u64;
        return Ok(report);
    }
    if opts.announce {
        client.provide(id).await?;
    }
    tracing::info!(target: "mesh::blob", blob = %id.short(), have = chunks_had, total, "fetch started");

    let mut seed_hasher = std::collections::hash_map::DefaultHasher::new();
    client.local_peer_id().hash(&mut seed_hasher);
    id.hash(&mut seed_hasher);
    let mut sched = Scheduler::new(had, cfg.fetch.clone(), seed_hasher.finish());
    for p in first_holders.iter().chain(opts.hints.iter()) {
        if *p != client.local_peer_id() && !bad_manifest_peers.contains(p) {
            sched.add_holder(*p);
        }
    }
    for p in &bad_manifest_peers {
        sched.drop_holder(*p, DropReason::BadData);
    }

    let (write_tx, write_rx) = mpsc::channel(WRITE_QUEUE_CHUNKS);
    let writer = {
        let blobs = blobs.clone();
        tokio::task::spawn_blocking(move || write_loop(blobs, id, write_rx))
    };

    let mut pending: FuturesUnordered<BoxFuture<'static, Reply>> = FuturesUnordered::new();
    // One chunk stream per holder, opened on first use; chunks are verified in its task.
    let shared_manifest = Arc::new(manifest.clone());
    let mut pipes: HashMap<PeerId, (u64, ChunkPipe)> = HashMap::new();
    let mut next_generation = 0u64;
    let mut lost_streams: HashMap<PeerId, u32> = HashMap::new();
    // Forgets `peer`'s pipe if it is still the one that failed (not a newer one).
    let drop_pipe = |pipes: &mut HashMap<PeerId, (u64, ChunkPipe)>, peer: &PeerId, generation| {
        if pipes.get(peer).is_some_and(|(g, _)| *g == generation) {
            pipes.remove(peer);
        }
    };
    // Discovery runs as its own task so a slow DHT query never holds up chunk traffic.
    let (found_tx, mut found_rx) = mpsc::channel::<HashSet<PeerId>>(1);
    let mut discovering = false;
    let mut last_discovery: Option<Instant> = None;
    // Every query costs each of the ~20 closest peers a routing-table walk: once a query
    // finds no one new, ask half as often (up to 8x the configured interval). The first
    // repeat comes sooner: peers that start fetching together announce themselves within a
    // moment of each other, and until they find each other they all pull from the origin
    // alone (in the swarm benchmark the nodes' CPUs sat half idle for that first second).
    let mut discovery_every = cfg.provider_refresh / 4;
    let mut last_progress = Instant::now();
    let mut last_stall_report: Option<Instant> = None;

    while !sched.is_complete() {
        let now = Instant::now();
        for action in sched.next_actions(now) {
            let c = client.clone();
            pending.push(match action {
                Action::QueryHave { peer } => async move {
                    Reply::Have(peer, c.blob_request(peer, BlobRequest::Have { id }).await)
                }
                .boxed(),
                Action::RequestChunk { peer, index } => {
                    let (generation, pipe) = pipes.entry(peer).or_insert_with(|| {
                        next_generation += 1;
                        (
                            next_generation,
                            ChunkPipe::open(
                                client.stream_control(),
                                peer,
                                id,
                                shared_manifest.clone(),
                                cfg.chunk_streams_per_peer,
                            ),
                        )
                    });
                    let generation = *generation;
                    let answer = pipe.ask(index, cfg.request_timeout);
                    async move { Reply::Chunk(peer, index, generation, answer.await) }.boxed()
                }
            });
        }
        if !discovering
            && last_discovery.is_none_or(|t| now >= t + discovery_every)
            && opts
                .only_from
                .as_ref()
                .is_none_or(|_| last_discovery.is_none())
        {
            last_discovery = Some(now);
            discovering = true;
            let c = client.clone();
            let o = opts.clone();
            let tx = found_tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(find_holders(&c, id, &o, false).await).await;
            });
        }
        if now >= last_progress + STALL_REPORT
            && last_stall_report.is_none_or(|t| now >= t + STALL_REPORT)
        {
            last_stall_report = Some(now);
            tracing::debug!(target: "mesh::blob", blob = %id.short(), waiting = %sched.waiting_summary(now), "fetch waiting");
        }
        if now >= last_progress + cfg.fetch_stall_timeout {
            return Err(MeshError::FetchStalled {
                id: id.to_string(),
                have: sched.have().count(),
                total,
            });
        }

        tokio::select! {
            Some(reply) = pending.next(), if !pending.is_empty() => match reply {
                Reply::Have(peer, res) => match (failure_of(&res), res) {
                    (None, Ok(BlobResponse::Have { have })) => sched.on_have(peer, have),
                    (Some(f), _) => {
                        metrics.fetch_failure(failure_label(f));
                        sched.on_have_failed(peer, f, Instant::now());
                    }
                    (None, _) => {
                        metrics.fetch_failure("bad_data");
                        sched.drop_holder(peer, DropReason::BadData);
                    }
                },
                Reply::Chunk(peer, index, generation, outcome) => match outcome {
                    ChunkOutcome::Verified { chunk, have } => {
                        let len = chunk.len() as u64;
                        report.bytes_fetched += len;
                        metrics.blob_bytes_fetched.inc_by(len);
                        let arrived = Instant::now();
                        if sched.on_chunk_ok(peer, index, have, arrived) {
                            metrics.blob_chunks_fetched.inc();
                            report.chunks_fetched += 1;
                            last_progress = arrived;
                            progress.send_replace(FetchState::Running {
                                have: sched.have().count(),
                                total,
                            });
                            if write_tx.send(chunk).await.is_err() {
                                break;
                            }
                        } else {
                            report.duplicate_chunks += 1;
                            buffers::give_chunk(chunk.into_data());
                        }
                    }
                    ChunkOutcome::Bad(e) => {
                        tracing::warn!(target: "mesh::blob", peer_id = %peer, blob = %id.short(), error = %e, "bad chunk, dropping holder");
                        metrics.fetch_failure("bad_data");
                        sched.on_chunk_bad(peer, index);
                        drop_pipe(&mut pipes, &peer, generation);
                    }
                    ChunkOutcome::Lost(reason) => {
                        // Retried on a new stream after a pause; counts as a failure only
                        // when it keeps happening.
                        drop_pipe(&mut pipes, &peer, generation);
                        let lost = lost_streams.entry(peer).or_default();
                        *lost += 1;
                        let f = if *lost > MAX_LOST_STREAM_ANSWERS {
                            Failure::Transport
                        } else {
                            Failure::Busy
                        };
                        tracing::debug!(target: "mesh::blob", peer_id = %peer, index, %reason, "chunk stream lost");
                        metrics.fetch_failure("stream_lost");
                        sched.on_chunk_failed(peer, index, f, Instant::now());
                    }
                    ChunkOutcome::Failed(f, reason) => {
                        tracing::debug!(target: "mesh::blob", peer_id = %peer, index, %reason, "chunk request failed");
                        if f == Failure::Transport {
                            // Open a fresh stream next time.
                            drop_pipe(&mut pipes, &peer, generation);
                        }
                        metrics.fetch_failure(failure_label(f));
                        sched.on_chunk_failed(peer, index, f, Instant::now());
                    }
                },
            },
            Some(found) = found_rx.recv() => {
                discovering = false;
                let mut new_holders = false;
                for p in found {
                    if !sched.knows(&p) {
                        tracing::debug!(target: "mesh::blob", peer_id = %p, blob = %id.short(), "new holder");
                        sched.add_holder(p);
                        new_holders = true;
                    }
                }
                discovery_every = if new_holders {
                    cfg.provider_refresh
                } else {
                    (discovery_every * 2).min(cfg.provider_refresh * 8)
                };
            }
            _ = tokio::time::sleep(TICK) => {}
        }
    }

    drop(write_tx);
    let written = writer.await.map_err(|e| MeshError::FetchFailed {
        id: id.to_string(),
        reason: format!("writer: {e}"),
    })??;
    if !sched.is_complete() {
        return Err(MeshError::FetchFailed {
            id: id.to_string(),
            reason: "writer stopped early".into(),
        });
    }
    tracing::debug!(target: "mesh::blob", blob = %id.short(), written, "chunks written");
    // Every chunk is verified and in the file (served from there already). Making it durable
    // does not hold up the fetch: a crash before this checkpoint is recovered from the file's
    // hashes on restart, and the blob stays wanted until the checkpoint has committed.
    tokio::task::spawn_blocking(move || {
        if let Err(e) = blobs.checkpoint(&id).and_then(|_| blobs.remove_wanted(&id)) {
            tracing::warn!(target: "mesh::blob", blob = %id.short(), error = %e, "final checkpoint failed; the blob is checked again on restart");
        }
    });
    report.served_by = sched.served();
    report.dropped = sched
        .dropped()
        .into_iter()
        .map(|(peer, r)| DroppedHolder {
            peer,
            reason: drop_label(r).to_owned(),
        })
        .collect();
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    progress.send_replace(FetchState::Running { have: total, total });
    tracing::info!(
        target: "mesh::blob",
        blob = %id.short(),
        fetched = report.chunks_fetched,
        had = report.chunks_had,
        holders = report.served_by.len(),
        ms = report.elapsed_ms,
        "fetch complete"
    );
    Ok(report)
}
