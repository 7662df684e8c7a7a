//! The chunk stream protocol ([`CHUNK_PROTOCOL`]): chunk transfer over long-lived libp2p
//! streams instead of one request-response stream per chunk. A fetcher opens a stream to a
//! holder and pipelines several chunk requests on it; the holder answers them in order, each
//! answer a small header followed by the chunk's raw bytes, written in one large write. That
//! saves a stream negotiation, a CBOR copy of every megabyte and the request-response
//! machinery's round trips through the swarm's event loop.
//!
//! Framing (both directions): a frame is a 4-byte big-endian length and that many bytes of a
//! versioned CBOR envelope ([`CHUNK_STREAM_VERSION`]). A request frame holds a
//! [`ChunkRequest`] (at most [`MAX_CHUNK_REQUEST_BYTES`]); an answer frame holds a
//! [`ChunkHeader`] (at most [`MAX_CHUNK_HEADER_BYTES`]); a [`ChunkHeader::Chunk`] frame is
//! followed by exactly `len` raw bytes (at most [`MAX_CHUNK_BYTES`]). Every length is checked
//! before anything is allocated. A request that cannot be decoded is answered with
//! [`ChunkHeader::Error`] and the stream is closed.
//!
//! - [`ChunkServer`] answers inbound streams: allow-lists, the [`ChunkSpread`] deferral, a
//!   fixed number of upload slots (a semaphore), the optional upload rate limit.
//! - [`ChunkPipe`] is the fetcher's side: per (fetch, holder) a few tasks that each own a
//!   stream, write requests as they come and read answers in order, verifying each chunk's BLAKE3
//!   hash in that task (off the fetch driver and the swarm).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::{PeerId, Stream};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::mesh::{
    MeshConfig, MeshMetrics,
    blob::{
        Bitfield, BlobError, BlobId, BlobStore, MAX_CHUNK_BYTES, Manifest, VerifiedChunk,
        scheduler::Failure,
        uploads::{ChunkSpread, TokenBucket},
    },
    buffers,
    message::{MessageError, decode_versioned, encode_versioned_into},
    topics::CHUNK_PROTOCOL,
};

/// Version of the chunk stream's frames.
pub const CHUNK_STREAM_VERSION: u16 = 1;
/// Largest request frame read (a blob id and an index).
pub const MAX_CHUNK_REQUEST_BYTES: usize = 256;
/// Largest answer header read: a bitfield of up to `MAX_CHUNKS` bits and framing.
pub const MAX_CHUNK_HEADER_BYTES: usize = 64 * 1024;
/// Streams a peer may hold open to us at once; more are closed on arrival.
pub const MAX_STREAMS_PER_PEER: usize = 32;
/// A served stream with no request for this long is closed.
const STREAM_IDLE_SECS: u64 = 60;
/// Requests queued in a pipe beyond those on the wire (the scheduler caps what is in flight).
const PIPE_QUEUE: usize = 64;

/// A request for one chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRequest {
    /// The blob.
    pub id: BlobId,
    /// The chunk index.
    pub index: u32,
}

/// The header of a holder's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChunkHeader {
    /// `len` raw chunk bytes follow; `have` is the holder's current bitfield.
    Chunk {
        /// Bytes that follow.
        len: u32,
        /// One bit per chunk.
        have: Bitfield,
    },
    /// The holder does not have it (any more).
    NotFound,
    /// The blob is private and the requester is not on its allow-list.
    Denied,
    /// All upload slots and the queue are taken: retry later or elsewhere.
    Busy,
    /// Get this chunk elsewhere first (see [`ChunkSpread`]).
    NotNow,
    /// The request could not be decoded; the stream is closed after this.
    Error {
        /// Why.
        message: String,
    },
}

/// Errors of the chunk stream.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The stream failed or closed mid-frame.
    #[error("stream i/o: {0}")]
    Io(String),
    /// A frame that is oversized, undecodable or of an unknown version.
    #[error(transparent)]
    Message(#[from] MessageError),
    /// A chunk longer than any chunk may be.
    #[error("chunk of {len} bytes exceeds the {limit}-byte limit")]
    ChunkTooLarge {
        /// Announced length.
        len: u32,
        /// The limit.
        limit: usize,
    },
    /// The stream could not be opened.
    #[error("cannot open chunk stream: {0}")]
    Open(String),
}

impl StreamError {
    /// A short, stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Io(_) => "io",
            Self::Message(m) => m.label(),
            Self::ChunkTooLarge { .. } => "too_large",
            Self::Open(_) => "open",
        }
    }
}

impl From<std::io::Error> for StreamError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e.to_string())
    }
}

/// Writes one frame holding `value`.
pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    value: &T,
    limit: usize,
) -> Result<(), StreamError> {
    let mut buf = vec![0u8; 4];
    encode_versioned_into(CHUNK_STREAM_VERSION, value, limit, &mut buf)?;
    let len = (buf.len() - 4) as u32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    w.write_all(&buf).await?;
    Ok(())
}

/// Reads one frame of at most `limit` bytes; `None` at a clean end of stream.
pub async fn read_frame<R: AsyncRead + Unpin, T: DeserializeOwned>(
    r: &mut R,
    limit: usize,
) -> Result<Option<T>, StreamError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = r.read(&mut len[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(StreamError::Io("stream ended inside a frame length".into()))
            };
        }
        got += n;
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > limit {
        return Err(MessageError::TooLarge { len, limit }.into());
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    Ok(Some(decode_versioned(&buf, limit, CHUNK_STREAM_VERSION)?))
}

/// Reads one answer: its header and, for a chunk, the chunk's bytes.
pub async fn read_answer<R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<(ChunkHeader, Vec<u8>), StreamError> {
    let header: ChunkHeader = read_frame(r, MAX_CHUNK_HEADER_BYTES)
        .await?
        .ok_or_else(|| StreamError::Io("stream closed".into()))?;
    let data = match &header {
        ChunkHeader::Chunk { len, .. } => {
            if *len as usize > MAX_CHUNK_BYTES {
                return Err(StreamError::ChunkTooLarge {
                    len: *len,
                    limit: MAX_CHUNK_BYTES,
                });
            }
            // Every byte is overwritten by the read (see `buffers`).
            let mut data = buffers::take_chunk(*len as usize);
            r.read_exact(&mut data).await?;
            data
        }
        _ => Vec::new(),
    };
    Ok((header, data))
}

// ------------------------------------------------------------------------------------ serving

/// The serving side: shared by every inbound chunk stream of a node.
#[derive(Debug)]
pub struct ChunkServer {
    blobs: Arc<BlobStore>,
    metrics: MeshMetrics,
    slots: Semaphore,
    waiting: AtomicUsize,
    max_waiting: usize,
    spread: Mutex<ChunkSpread>,
    limiter: Option<Mutex<TokenBucket>>,
    streams: Mutex<HashMap<PeerId, usize>>,
    send_timeout: Duration,
}

impl ChunkServer {
    /// A server over `blobs` with the upload settings of `cfg`.
    pub fn new(blobs: Arc<BlobStore>, metrics: MeshMetrics, cfg: &MeshConfig) -> Self {
        let limiter = cfg.upload_bytes_per_sec.map(|rate| {
            Mutex::new(TokenBucket::new(
                rate,
                crate::mesh::event_loop::UPLOAD_BURST_BYTES.min(rate),
                Instant::now(),
            ))
        });
        Self {
            blobs,
            metrics,
            slots: Semaphore::new(cfg.upload_slots.max(1)),
            waiting: AtomicUsize::new(0),
            max_waiting: cfg.upload_queue,
            spread: Mutex::new(ChunkSpread::default()),
            limiter,
            streams: Mutex::new(HashMap::new()),
            send_timeout: cfg.chunk_send_timeout,
        }
    }

    /// Accepts inbound chunk streams until the swarm is gone.
    pub async fn run(self: Arc<Self>, mut incoming: crate::mesh::inbound::Incoming) {
        while let Some((peer, stream)) = incoming.recv().await {
            {
                let mut streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
                let n = streams.entry(peer).or_default();
                if *n >= MAX_STREAMS_PER_PEER {
                    self.metrics.request_rejected("too_many_streams");
                    tracing::debug!(target: "mesh::blob", peer_id = %peer, "too many chunk streams, closing one");
                    continue;
                }
                *n += 1;
            }
            let server = self.clone();
            tokio::spawn(async move {
                server.serve_stream(peer, stream).await;
                let mut streams = server
                    .streams
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if let Some(n) = streams.get_mut(&peer) {
                    *n -= 1;
                    if *n == 0 {
                        streams.remove(&peer);
                    }
                }
            });
        }
    }

    async fn serve_stream(&self, peer: PeerId, mut stream: Stream) {
        let idle = Duration::from_secs(STREAM_IDLE_SECS);
        loop {
            let request = match tokio::time::timeout(
                idle,
                read_frame::<_, ChunkRequest>(&mut stream, MAX_CHUNK_REQUEST_BYTES),
            )
            .await
            {
                Ok(Ok(Some(r))) => r,
                Ok(Ok(None)) | Err(_) => break,
                Ok(Err(e)) => {
                    self.metrics.request_rejected(e.label());
                    tracing::debug!(target: "mesh::blob", peer_id = %peer, error = %e, "bad chunk request");
                    let header = ChunkHeader::Error {
                        message: e.to_string(),
                    };
                    let _ = write_frame(&mut stream, &header, MAX_CHUNK_HEADER_BYTES).await;
                    break;
                }
            };
            if let Err(e) = self.answer(&peer, request, &mut stream).await {
                tracing::debug!(target: "mesh::blob", peer_id = %peer, error = %e, "chunk stream failed");
                // Dropped, not closed: a reset reaches the fetcher even when we owe it data.
                return;
            }
        }
        let _ = stream.close().await;
    }

    /// Answers one request on `stream`.
    async fn answer(
        &self,
        peer: &PeerId,
        req: ChunkRequest,
        stream: &mut Stream,
    ) -> Result<(), StreamError> {
        if !self.blobs.is_allowed(&req.id, peer) {
            self.metrics.acl_refusal("blob");
            tracing::warn!(target: "mesh::acl", peer_id = %peer, "blob request from a peer not on the allow-list");
            return write_frame(stream, &ChunkHeader::Denied, MAX_CHUNK_HEADER_BYTES).await;
        }
        let state = match self.blobs.cached_state(&req.id) {
            Some(s) => Some(s),
            None => {
                // Not in memory: load it off the async threads (first request for an old blob).
                let blobs = self.blobs.clone();
                let id = req.id;
                tokio::task::spawn_blocking(move || blobs.state(&id))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .flatten()
            }
        };
        let Some(state) = state else {
            return write_frame(stream, &ChunkHeader::NotFound, MAX_CHUNK_HEADER_BYTES).await;
        };
        let have = state.have();
        if !have.get(req.index) {
            return write_frame(stream, &ChunkHeader::NotFound, MAX_CHUNK_HEADER_BYTES).await;
        }
        let defer = self
            .spread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .should_defer(peer, &req.id, req.index, &have);
        if defer {
            return write_frame(stream, &ChunkHeader::NotNow, MAX_CHUNK_HEADER_BYTES).await;
        }
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return write_frame(stream, &ChunkHeader::Busy, MAX_CHUNK_HEADER_BYTES).await;
        }
        let permit = self.slots.acquire().await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        let Ok(_permit) = permit else {
            return write_frame(stream, &ChunkHeader::Busy, MAX_CHUNK_HEADER_BYTES).await;
        };
        self.spread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(&req.id, req.index, state.manifest.chunk_count());
        let blobs = self.blobs.clone();
        let ChunkRequest { id, index } = req;
        let data = tokio::task::spawn_blocking(move || blobs.read_chunk(&id, index))
            .await
            .map_err(|e| BlobError::File {
                path: String::new(),
                reason: e.to_string(),
            })
            .and_then(|r| r);
        let data = match data {
            Ok(Some(d)) => d,
            Ok(None) => {
                return write_frame(stream, &ChunkHeader::NotFound, MAX_CHUNK_HEADER_BYTES).await;
            }
            Err(e) => {
                tracing::warn!(target: "mesh::blob", blob = %id.short(), index, error = %e, "serving failed");
                return write_frame(stream, &ChunkHeader::NotFound, MAX_CHUNK_HEADER_BYTES).await;
            }
        };
        if let Some(limiter) = &self.limiter {
            let delay = limiter
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(data.len(), Instant::now());
            tokio::time::sleep(delay).await;
        }
        let head = ChunkHeader::Chunk {
            len: data.len() as u32,
            have,
        };
        let send = async {
            write_frame(stream, &head, MAX_CHUNK_HEADER_BYTES).await?;
            stream.write_all(&data).await?;
            stream.flush().await?;
            Ok::<(), StreamError>(())
        };
        // A peer that stops reading must not hold the upload slot for good.
        let limit = self.send_timeout;
        let sent = tokio::time::timeout(limit, send)
            .await
            .unwrap_or_else(|_| Err(StreamError::Io(format!("chunk not taken within {limit:?}"))));
        let len = data.len() as u64;
        // Back to the pool on a reset stream too: a freed megabyte costs a zeroed one later.
        buffers::give_chunk(data);
        sent?;
        self.metrics.blob_chunks_served.inc();
        self.metrics.blob_bytes_served.inc_by(len);
        Ok(())
    }
}

// ------------------------------------------------------------------------------------ fetching

/// What came of one chunk request on a pipe.
#[derive(Debug)]
pub enum ChunkOutcome {
    /// A chunk that matches the manifest, and the holder's bitfield.
    Verified {
        /// The chunk.
        chunk: VerifiedChunk,
        /// What the holder has.
        have: Bitfield,
    },
    /// A chunk that does not match the manifest (the holder is to be dropped).
    Bad(BlobError),
    /// The holder refused or failed.
    Failed(Failure, String),
    /// The stream failed before any answer came back on it. Usually not the holder's fault:
    /// a holder drops inbound streams its chunk server's queue has no room for (see
    /// [`crate::mesh::inbound`]), and streams die with their connection. Worth retrying on a
    /// new stream after a pause.
    Lost(String),
}

struct Ask {
    index: u32,
    reply: oneshot::Sender<ChunkOutcome>,
}

/// The fetcher's end of the chunk streams to one holder for one blob (see the module docs):
/// requests go round-robin over the streams and are pipelined on each. Dropping it ends the
/// streams once the answers in flight are read.
#[derive(Debug)]
pub struct ChunkPipe {
    streams: Vec<PipeStream>,
    next: AtomicUsize,
}

#[derive(Debug, Clone)]
struct PipeStream {
    tx: mpsc::Sender<Ask>,
    /// Whether any answer came back on this stream (a failure before that is [`ChunkOutcome::Lost`]).
    answered: Arc<AtomicBool>,
}

impl PipeStream {
    fn failed(&self, reason: impl Into<String>) -> ChunkOutcome {
        failure(&self.answered, reason)
    }
}

fn failure(answered: &AtomicBool, reason: impl Into<String>) -> ChunkOutcome {
    if answered.load(Ordering::Acquire) {
        ChunkOutcome::Failed(Failure::Transport, reason.into())
    } else {
        ChunkOutcome::Lost(reason.into())
    }
}

impl ChunkPipe {
    /// Opens `streams` chunk streams to `peer` for chunks of `id` (each opens in its task).
    pub fn open(
        control: libp2p_stream::Control,
        peer: PeerId,
        id: BlobId,
        manifest: Arc<Manifest>,
        streams: usize,
    ) -> Self {
        let streams = (0..streams.clamp(1, MAX_STREAMS_PER_PEER))
            .map(|_| {
                let (tx, rx) = mpsc::channel(PIPE_QUEUE);
                let answered = Arc::new(AtomicBool::new(false));
                tokio::spawn(run_pipe(
                    control.clone(),
                    peer,
                    id,
                    manifest.clone(),
                    rx,
                    answered.clone(),
                ));
                PipeStream { tx, answered }
            })
            .collect();
        Self {
            streams,
            next: AtomicUsize::new(0),
        }
    }

    /// Asks for chunk `index`; resolves when its answer has been read and checked, or after
    /// `timeout`.
    pub fn ask(
        &self,
        index: u32,
        timeout: Duration,
    ) -> impl Future<Output = ChunkOutcome> + Send + 'static {
        let n = self.next.fetch_add(1, Ordering::Relaxed) % self.streams.len().max(1);
        let stream = self.streams.get(n).cloned();
        async move {
            let Some(stream) = stream else {
                return ChunkOutcome::Failed(Failure::Transport, "no chunk stream".into());
            };
            let (reply, rx) = oneshot::channel();
            if stream.tx.send(Ask { index, reply }).await.is_err() {
                return stream.failed("chunk stream closed");
            }
            match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(outcome)) => outcome,
                Ok(Err(_)) => stream.failed("chunk stream closed"),
                Err(_) => {
                    ChunkOutcome::Failed(Failure::Transport, "chunk request timed out".into())
                }
            }
        }
    }
}

fn outcome_of(manifest: &Manifest, index: u32, header: ChunkHeader, data: Vec<u8>) -> ChunkOutcome {
    match header {
        ChunkHeader::Chunk { have, .. } => match VerifiedChunk::check(manifest, index, data) {
            Ok(chunk) => ChunkOutcome::Verified { chunk, have },
            Err(e) => ChunkOutcome::Bad(e),
        },
        ChunkHeader::NotFound => ChunkOutcome::Failed(Failure::NotFound, "not found".into()),
        ChunkHeader::Denied => ChunkOutcome::Failed(Failure::Denied, "denied".into()),
        ChunkHeader::Busy => ChunkOutcome::Failed(Failure::Busy, "busy".into()),
        ChunkHeader::NotNow => ChunkOutcome::Failed(Failure::NotNow, "not now".into()),
        ChunkHeader::Error { message } => ChunkOutcome::Failed(Failure::Transport, message),
    }
}

async fn run_pipe(
    mut control: libp2p_stream::Control,
    peer: PeerId,
    id: BlobId,
    manifest: Arc<Manifest>,
    mut rx: mpsc::Receiver<Ask>,
    answered: Arc<AtomicBool>,
) {
    let stream = match control.open_stream(peer, CHUNK_PROTOCOL).await {
        Ok(s) => s,
        Err(e) => {
            let reason = StreamError::Open(e.to_string()).to_string();
            tracing::debug!(target: "mesh::blob", peer_id = %peer, error = %reason, "chunk stream not opened");
            // Not a lost stream: the holder cannot be reached or does not speak the protocol.
            rx.close();
            while let Some(ask) = rx.recv().await {
                let _ = ask
                    .reply
                    .send(ChunkOutcome::Failed(Failure::Transport, reason.clone()));
            }
            return;
        }
    };
    let (mut reader, mut writer) = stream.split();
    let (sent_tx, mut sent_rx) = mpsc::channel::<Ask>(PIPE_QUEUE);
    let answered_w = answered.clone();
    // Requests written whose answers have not been read.
    let unanswered = Arc::new(AtomicUsize::new(0));
    let unanswered_r = unanswered.clone();
    let write = async move {
        while let Some(ask) = rx.recv().await {
            let req = ChunkRequest {
                id,
                index: ask.index,
            };
            let sent = match write_frame(&mut writer, &req, MAX_CHUNK_REQUEST_BYTES).await {
                Ok(()) => writer.flush().await.map_err(StreamError::from),
                Err(e) => Err(e),
            };
            if let Err(e) = sent {
                let _ = ask.reply.send(failure(&answered_w, e.to_string()));
                return;
            }
            unanswered.fetch_add(1, Ordering::AcqRel);
            if sent_tx.send(ask).await.is_err() {
                return;
            }
        }
        // The pipe was dropped. With nothing owed, close cleanly. With answers still owed
        // (endgame duplicates, a fetch that just completed), return without closing: the
        // dropped stream is reset, which stops the holder's upload at once. A half-closed
        // stream would not: a holder out of send credit for it would wait for credit that
        // never comes, holding one of its upload slots for good (in the swarm benchmark the
        // origin's slots all ended up held that way, and the next fetch from it stalled).
        if unanswered.load(Ordering::Acquire) == 0 {
            let _ = writer.close().await;
        }
    };
    let read = async move {
        while let Some(ask) = sent_rx.recv().await {
            let answer = read_answer(&mut reader).await;
            unanswered_r.fetch_sub(1, Ordering::AcqRel);
            match answer {
                Ok((header, data)) => {
                    answered.store(true, Ordering::Release);
                    let closing = matches!(header, ChunkHeader::Error { .. });
                    let _ = ask
                        .reply
                        .send(outcome_of(&manifest, ask.index, header, data));
                    if closing {
                        return;
                    }
                }
                Err(e) => {
                    let _ = ask.reply.send(failure(&answered, e.to_string()));
                    return;
                }
            }
        }
    };
    // Either side ending ends the pipe; the asks still queued see it closed.
    tokio::select! {
        () = write => {}
        () = read => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::Hash32;

    fn block_on<F: Future>(f: F) -> F::Output {
        futures::executor::block_on(f)
    }

    #[tokio::test]
    async fn a_peer_that_stops_reading_does_not_keep_the_upload_slot() {
        use crate::test_utils::mesh::{TestNode, eventually, random_bytes};
        let holder = TestNode::start_with(&[], |c| {
            c.mesh.upload_slots = 1;
            c.mesh.chunk_send_timeout = Duration::from_secs(1);
        })
        .await;
        let fetcher = TestNode::start(&[holder.addr()]).await;
        let manifest = holder
            .handle
            .client
            .put_blob(random_bytes(3 * MAX_CHUNK_BYTES, 7))
            .await
            .expect("put");
        let id = manifest.id().expect("id");
        let control = fetcher.handle.client.stream_control();
        let holder_id = holder.peer_id();
        let mut stuck = eventually(Duration::from_secs(10), || {
            let mut control = control.clone();
            async move { control.open_stream(holder_id, CHUNK_PROTOCOL).await.ok() }
        })
        .await
        .expect("a chunk stream to the holder");
        let req = ChunkRequest { id, index: 0 };
        write_frame(&mut stuck, &req, MAX_CHUNK_REQUEST_BYTES)
            .await
            .expect("request");
        stuck.flush().await.expect("flush");
        // Never read: the holder fills the stream's window and waits, in its only upload slot.
        // Another request is answered once the send timeout has freed the slot.
        let pipe = ChunkPipe::open(control, holder_id, id, Arc::new(manifest), 1);
        let outcome = pipe.ask(1, Duration::from_secs(10)).await;
        assert!(
            matches!(outcome, ChunkOutcome::Verified { .. }),
            "{outcome:?}"
        );
        drop(stuck);
    }

    #[tokio::test]
    async fn a_pipe_dropped_with_an_answer_owed_resets_its_stream() {
        use futures::StreamExt;

        use crate::test_utils::mesh::{random_bytes, stream_dialer_to};
        const LIMIT: Duration = Duration::from_secs(20);
        // A holder of our own, to see what the pipe leaves on the stream.
        let holder = libp2p_stream::Behaviour::new();
        let mut incoming = holder
            .new_control()
            .accept(CHUNK_PROTOCOL)
            .expect("accept chunk streams");
        let (holder_id, _, control) = stream_dialer_to(holder).await;
        let manifest = Manifest::for_bytes(&random_bytes(2 * MAX_CHUNK_BYTES, 5));
        let id = manifest.id().expect("id");
        let pipe = ChunkPipe::open(control, holder_id, id, Arc::new(manifest), 1);
        let asked = tokio::spawn(pipe.ask(0, LIMIT));
        let (_, mut stream) = tokio::time::timeout(LIMIT, incoming.next())
            .await
            .expect("a chunk stream in time")
            .expect("a chunk stream");
        let req: Option<ChunkRequest> = read_frame(&mut stream, MAX_CHUNK_REQUEST_BYTES)
            .await
            .expect("request");
        assert_eq!(req, Some(ChunkRequest { id, index: 0 }));
        // The fetch stops wanting the chunk before the answer came (it completed elsewhere, or
        // gave up on this holder): it drops its pending asks and the pipe.
        asked.abort();
        drop(pipe);
        // The holder sees its stream end, and then cannot send on it: a reset. A pipe that only
        // closed its side would leave the holder free to send, and a holder out of send credit
        // for that stream would wait for credit forever, holding an upload slot.
        let mut buf = [0u8; 16];
        let end = tokio::time::timeout(LIMIT, stream.read(&mut buf))
            .await
            .expect("the stream ends in time");
        assert!(matches!(end, Ok(0) | Err(_)), "{end:?}");
        let sent = stream.write(&[0u8; 1024]).await;
        assert!(
            matches!(sent, Ok(0) | Err(_)),
            "the holder could still send: {sent:?}"
        );
    }

    #[test]
    fn request_frames_round_trip() {
        let req = ChunkRequest {
            id: Hash32::of(b"blob"),
            index: 9,
        };
        let mut buf = Vec::new();
        block_on(write_frame(&mut buf, &req, MAX_CHUNK_REQUEST_BYTES)).unwrap();
        assert!(buf.len() < MAX_CHUNK_REQUEST_BYTES);
        let mut r = &buf[..];
        let back: Option<ChunkRequest> =
            block_on(read_frame(&mut r, MAX_CHUNK_REQUEST_BYTES)).unwrap();
        assert_eq!(back, Some(req));
        let end: Option<ChunkRequest> =
            block_on(read_frame(&mut r, MAX_CHUNK_REQUEST_BYTES)).unwrap();
        assert_eq!(end, None, "clean end of stream");
    }

    #[test]
    fn chunk_answer_round_trips_with_raw_bytes() {
        let data = vec![0xCDu8; MAX_CHUNK_BYTES];
        let header = ChunkHeader::Chunk {
            len: data.len() as u32,
            have: Bitfield::full(100_000),
        };
        let mut buf = Vec::new();
        block_on(write_frame(&mut buf, &header, MAX_CHUNK_HEADER_BYTES)).unwrap();
        buf.extend_from_slice(&data);
        let (h, d) = block_on(read_answer(&mut &buf[..])).unwrap();
        assert_eq!(h, header);
        assert_eq!(d, data);
    }

    #[test]
    fn bad_frames_are_rejected_without_allocating() {
        let limit = MAX_CHUNK_REQUEST_BYTES;
        // Oversized: the length prefix alone is refused.
        let huge = [0xFFu8, 0xFF, 0xFF, 0xFF];
        assert!(matches!(
            block_on(read_frame::<_, ChunkRequest>(&mut &huge[..], limit)),
            Err(StreamError::Message(MessageError::TooLarge { .. }))
        ));
        // Garbage body.
        let mut garbage = 20u32.to_be_bytes().to_vec();
        garbage.extend_from_slice(&[0xABu8; 20]);
        assert!(matches!(
            block_on(read_frame::<_, ChunkRequest>(&mut &garbage[..], limit)),
            Err(StreamError::Message(_))
        ));
        // Truncated: in the length, and in the body.
        assert!(matches!(
            block_on(read_frame::<_, ChunkRequest>(&mut &[0u8, 0][..], limit)),
            Err(StreamError::Io(_))
        ));
        let req = ChunkRequest {
            id: Hash32::of(b"x"),
            index: 1,
        };
        let mut buf = Vec::new();
        block_on(write_frame(&mut buf, &req, limit)).unwrap();
        assert!(matches!(
            block_on(read_frame::<_, ChunkRequest>(
                &mut &buf[..buf.len() - 3],
                limit
            )),
            Err(StreamError::Io(_))
        ));
        // Unknown version.
        let mut body = Vec::new();
        encode_versioned_into(9, &req, limit, &mut body).unwrap();
        let mut framed = (body.len() as u32).to_be_bytes().to_vec();
        framed.extend_from_slice(&body);
        assert!(matches!(
            block_on(read_frame::<_, ChunkRequest>(&mut &framed[..], limit)),
            Err(StreamError::Message(MessageError::UnknownVersion {
                got: 9,
                ..
            }))
        ));
        // A chunk header announcing more bytes than a chunk may have.
        let mut buf = Vec::new();
        let header = ChunkHeader::Chunk {
            len: MAX_CHUNK_BYTES as u32 + 1,
            have: Bitfield::full(1),
        };
        block_on(write_frame(&mut buf, &header, MAX_CHUNK_HEADER_BYTES)).unwrap();
        assert!(matches!(
            block_on(read_answer(&mut &buf[..])),
            Err(StreamError::ChunkTooLarge { .. })
        ));
    }

    #[test]
    fn answers_map_to_outcomes() {
        let data = vec![3u8; 5000];
        let m = Manifest::for_bytes(&data);
        let ok = outcome_of(
            &m,
            0,
            ChunkHeader::Chunk {
                len: 5000,
                have: Bitfield::full(1),
            },
            data.clone(),
        );
        assert!(matches!(ok, ChunkOutcome::Verified { .. }));
        let mut bad = data;
        bad[7] ^= 1;
        let bad = outcome_of(
            &m,
            0,
            ChunkHeader::Chunk {
                len: 5000,
                have: Bitfield::full(1),
            },
            bad,
        );
        assert!(matches!(bad, ChunkOutcome::Bad(e) if e.is_peer_fault()));
        assert!(matches!(
            outcome_of(&m, 0, ChunkHeader::Busy, Vec::new()),
            ChunkOutcome::Failed(Failure::Busy, _)
        ));
    }
}
