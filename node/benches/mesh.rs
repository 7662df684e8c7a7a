//! Link benchmark of the mesh: one blob over one loopback link, TCP+Noise+Yamux and QUIC,
//! against a plain TCP copy of the same bytes and against the encryption ceiling, all measured
//! in this run. Both transports use aws-lc's ChaCha20-Poly1305: TCP's Noise (`mesh::noise`),
//! and QUIC's TLS 1.3 (libp2p-tls puts TLS_CHACHA20_POLY1305_SHA256 first; aws-lc's symbols
//! are what a profile of the QUIC runs shows). The ceiling is that cipher sealing the same
//! bytes in 64 KiB records on one core: the faster of sealing them where they lie and sealing
//! them into a record buffer as `mesh::noise` does.
//!
//! Also measured, to show where the time goes: both ends' cipher on one core (seal + open),
//! BLAKE3 chunk hashing, file writes and reads through the page cache, chunk store writes
//! (file writes, then one checkpoint: fdatasync and the redb index), libp2p alone
//! (request-response with 1 MiB responses, and one raw stream with 1 MiB writes; the TCP
//! stream also with `libp2p-yamux` instead of `mesh::mux`, and with stock libp2p), and the old
//! request-response pipeline (chunk requests answered from the store, nothing verified or
//! written by the fetcher).
//!
//! From these it prints a floor: what any verified, stored fetch with both peers on this machine
//! costs per byte at least, and the rate the machine's cores could reach doing only that.
//!
//! Run: `cargo bench --bench mesh`. Env: `QM_BENCH_MIB` (default 128), `QM_BENCH_RUNS`
//! (default 3; the best run of each measurement is reported), `QM_BENCH_DEPTH` (chunk requests
//! in flight, default 4, as a node fetches), `QM_BENCH_ONLY` (`tcp` or `quic`: one transport;
//! `fetch-tcp` or `stream-tcp`: that alone, for profiling), `QM_BENCH_PIPELINE=0` (no
//! request-response pipeline in the link runs).
//! Node data dirs go to `$TMPDIR` (redb commits on a disk cost more than on tmpfs).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use aws_lc_rs::aead;
use futures::StreamExt;
use quackmesh::{
    config::NodeConfig,
    hash::Hash32,
    mesh::blob::{BlobRequest, BlobResponse, BlobStore, FetchOptions, Manifest, VerifiedChunk},
    node::{Node, NodeHandle},
    store::Db,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const MIB: usize = 1024 * 1024;
/// Largest Noise transport message plaintext (65535 minus the 16-byte tag).
const NOISE_RECORD: usize = 65_535 - 16;
/// A QUIC packet's payload on loopback after MTU discovery (about 1452 bytes per datagram).
const QUIC_RECORD: usize = 1_400;

fn data(len: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn mbps(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

/// Wall time and the CPU time this process used meanwhile (every thread: both peers of a
/// link run in this process), compared by wall time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Timed {
    wall: Duration,
    cpu: Duration,
}

impl Timed {
    const SKIPPED: Timed = Timed {
        wall: Duration::MAX,
        cpu: Duration::ZERO,
    };
}

/// CPU time used by this process so far (user + system, all threads), to the nanosecond.
fn cpu_now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the call writes only into it.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Timed) {
    let c0 = cpu_now();
    let t0 = Instant::now();
    let out = f();
    let wall = t0.elapsed();
    (
        out,
        Timed {
            wall,
            cpu: cpu_now().saturating_sub(c0),
        },
    )
}

fn best<F: FnMut() -> Duration>(runs: usize, mut f: F) -> Timed {
    (0..runs)
        .map(|_| {
            let (d, t) = timed(&mut f);
            Timed { wall: d, ..t }
        })
        .min()
        .unwrap_or(Timed::SKIPPED)
}

fn cipher_key() -> aead::LessSafeKey {
    aead::LessSafeKey::new(
        aead::UnboundKey::new(&aead::CHACHA20_POLY1305, &[7u8; 32]).expect("key"),
    )
}

/// Noise's nonce for record `n`.
fn nonce(n: usize) -> aead::Nonce {
    let mut b = [0u8; 12];
    b[4..].copy_from_slice(&(n as u64).to_le_bytes());
    aead::Nonce::assume_unique_for_key(b)
}

/// Seals `buf` where it lies in records of `record` bytes, on one core, with the transport's
/// cipher (aws-lc's ChaCha20-Poly1305, as `mesh::noise` and QUIC's TLS use it): the cipher
/// alone.
fn seal_in_place(buf: &mut [u8], record: usize) -> Duration {
    let key = cipher_key();
    let start = Instant::now();
    for (n, chunk) in buf.chunks_mut(record).enumerate() {
        let tag = key
            .seal_in_place_separate_tag(nonce(n), aead::Aad::empty(), chunk)
            .expect("seal");
        let _ = std::hint::black_box(tag);
    }
    start.elapsed()
}

/// The cipher ceiling: the faster of [`seal_in_place`] and [`cipher`] without opening, over
/// the 64 KiB records of Noise (best of `runs` each); then each of them.
fn seal_ceiling(data: &[u8], runs: usize) -> (Timed, Timed, Timed) {
    let mut scratch = data.to_vec();
    let in_place = best(runs, || seal_in_place(&mut scratch, NOISE_RECORD));
    let out_of_place = best(runs, || cipher(data, NOISE_RECORD, false));
    (in_place.min(out_of_place), in_place, out_of_place)
}

/// Seals `data` record by record from where it lies into a record buffer, as `mesh::noise`
/// sends, on one core; with `open`, opens each record again into a plaintext buffer, as
/// `mesh::noise` receives (the cipher work both ends of a link do).
fn cipher(data: &[u8], record: usize, open: bool) -> Duration {
    let key = cipher_key();
    let tag_len = aead::CHACHA20_POLY1305.tag_len();
    let mut sealed = vec![0u8; record + tag_len];
    let mut opened = vec![0u8; record];
    let start = Instant::now();
    for (n, chunk) in data.chunks(record).enumerate() {
        let len = chunk.len();
        let (out, tag) = sealed[..len + tag_len].split_at_mut(len);
        key.seal_out_of_place_scatter(nonce(n), aead::Aad::empty(), chunk, out, &[], tag)
            .expect("seal");
        if open {
            let (ct, tag) = sealed[..len + tag_len].split_at(len);
            key.open_separate_gather(nonce(n), aead::Aad::empty(), ct, tag, &mut opened[..len])
                .expect("open");
        }
        std::hint::black_box(&sealed);
    }
    start.elapsed()
}

/// Writes `data` to a fresh file in 1 MiB `pwrite`s, then reads it back in 1 MiB `pread`s
/// (page cache, no sync): what a fetcher's write and a holder's read of a chunk cost at least.
/// Returns the time of each.
fn file_write_read(data: &[u8]) -> (Timed, Timed) {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().expect("dir");
    let file = std::fs::File::create_new(dir.path().join("blob")).expect("file");
    let mut buf = vec![0u8; MIB];
    let write = timed(|| {
        for (i, chunk) in data.chunks(MIB).enumerate() {
            file.write_all_at(chunk, (i * MIB) as u64).expect("write");
        }
    })
    .1;
    let read = timed(|| {
        for (i, chunk) in data.chunks(MIB).enumerate() {
            let buf = &mut buf[..chunk.len()];
            file.read_exact_at(buf, (i * MIB) as u64).expect("read");
            std::hint::black_box(buf);
        }
    })
    .1;
    (write, read)
}

fn hash_chunks(data: &[u8]) -> Duration {
    let start = Instant::now();
    for c in data.chunks(MIB) {
        std::hint::black_box(Hash32::of(c));
    }
    start.elapsed()
}

/// Stores every chunk of `data` in a fresh store as a fetch does: written 8 per batch, then one
/// checkpoint (fdatasync, redb index commit).
fn store_writes(data: &[u8]) -> Duration {
    let dir = tempfile::tempdir().expect("dir");
    let store = BlobStore::open(Db::open_dir(dir.path()).expect("db")).expect("store");
    let m = Manifest::for_bytes(data);
    let id = m.id().expect("id");
    store
        .insert_manifest(&id, &m.encode().expect("encode"))
        .expect("manifest");
    let chunks: Vec<VerifiedChunk> = (0..m.chunk_count())
        .map(|i| {
            let r = m.chunk_range(i);
            VerifiedChunk::check(&m, i, data[r.start as usize..r.end as usize].to_vec())
                .expect("chunk")
        })
        .collect();
    let start = Instant::now();
    for batch in chunks.chunks(8) {
        store.write_chunks(&id, batch).expect("write");
    }
    store.checkpoint(&id).expect("checkpoint");
    start.elapsed()
}

async fn tcp_copy(data: Arc<Vec<u8>>) -> Duration {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let len = data.len();
    let reader = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        let mut buf = vec![0u8; MIB];
        let mut got = 0;
        while got < len {
            let n = s.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            got += n;
        }
        got
    });
    let start = Instant::now();
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.set_nodelay(true).expect("nodelay");
    for c in data.chunks(MIB) {
        s.write_all(c).await.expect("write");
    }
    s.flush().await.expect("flush");
    let got = reader.await.expect("reader");
    assert_eq!(got, len);
    start.elapsed()
}

async fn node(
    dir: &std::path::Path,
    listen: &str,
    bootstrap: Vec<libp2p::Multiaddr>,
) -> NodeHandle {
    let mut c = NodeConfig::new(dir);
    if let Some(depth) = std::env::var("QM_BENCH_DEPTH")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        c.mesh.fetch.per_peer = depth;
        c.mesh.fetch.total = c.mesh.fetch.total.max(depth);
        c.mesh.upload_slots = depth;
        c.mesh.upload_queue_per_peer = c.mesh.upload_queue_per_peer.max(depth);
    }
    if let Some(n) = std::env::var("QM_BENCH_PIPES")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        c.mesh.chunk_streams_per_peer = n;
    }
    c.listen = vec![listen.parse().expect("multiaddr")];
    c.api_addr = "127.0.0.1:0".parse().expect("addr");
    c.bootstrap = bootstrap;
    Node::start(c).await.expect("node")
}

/// Chunk requests `per_peer` at a time, answered from the origin's store; nothing verified
/// or stored on our side.
async fn pipeline(
    fetcher: &NodeHandle,
    origin: libp2p::PeerId,
    id: Hash32,
    chunks: u32,
    per_peer: usize,
) -> (usize, Duration) {
    let start = Instant::now();
    let bytes: usize = futures::stream::iter(0..chunks)
        .map(|index| {
            let c = fetcher.client.clone();
            async move {
                match c
                    .blob_request(origin, BlobRequest::Chunk { id, index })
                    .await
                {
                    Ok(BlobResponse::Chunk { data, .. }) => data.len(),
                    other => panic!("chunk {index}: {other:?}"),
                }
            }
        })
        .buffer_unordered(per_peer)
        .fold(0, |a, b| async move { a + b })
        .await;
    (bytes, start.elapsed())
}

/// A codec that moves raw bytes, for the transport-only measurement.
#[derive(Clone, Default)]
struct RawCodec;

impl libp2p::request_response::Codec for RawCodec {
    type Protocol = libp2p::StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T: futures::AsyncRead + Unpin + Send>(
        &mut self,
        _: &libp2p::StreamProtocol,
        io: &mut T,
    ) -> std::io::Result<Vec<u8>> {
        let mut v = Vec::new();
        futures::AsyncReadExt::read_to_end(io, &mut v).await?;
        Ok(v)
    }

    async fn read_response<T: futures::AsyncRead + Unpin + Send>(
        &mut self,
        _: &libp2p::StreamProtocol,
        io: &mut T,
    ) -> std::io::Result<Vec<u8>> {
        let mut v = Vec::with_capacity(MIB + 1024);
        futures::AsyncReadExt::read_to_end(io, &mut v).await?;
        Ok(v)
    }

    async fn write_request<T: futures::AsyncWrite + Unpin + Send>(
        &mut self,
        _: &libp2p::StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> std::io::Result<()> {
        futures::AsyncWriteExt::write_all(io, &req).await
    }

    async fn write_response<T: futures::AsyncWrite + Unpin + Send>(
        &mut self,
        _: &libp2p::StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> std::io::Result<()> {
        futures::AsyncWriteExt::write_all(io, &res).await
    }
}

fn raw_swarm(quic: bool) -> libp2p::Swarm<libp2p::request_response::Behaviour<RawCodec>> {
    use libp2p::{request_response as rr, tcp};
    use quackmesh::mesh::noise;
    let behaviour = |_: &libp2p::identity::Keypair| {
        rr::Behaviour::with_codec(
            RawCodec,
            [(
                libp2p::StreamProtocol::new("/bench/raw/1"),
                rr::ProtocolSupport::Full,
            )],
            rr::Config::default().with_request_timeout(Duration::from_secs(60)),
        )
    };
    let builder = libp2p::SwarmBuilder::with_new_identity().with_tokio();
    if quic {
        // The same windows as the node's QUIC transport.
        builder
            .with_quic_config(|mut c| {
                c.max_stream_data = 16 * 1024 * 1024;
                c.max_connection_data = 64 * 1024 * 1024;
                c
            })
            .with_behaviour(behaviour)
            .expect("behaviour")
            .build()
    } else {
        builder
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                quackmesh::mesh::mux::Config::default,
            )
            .expect("tcp")
            .with_behaviour(behaviour)
            .expect("behaviour")
            .build()
    }
}

/// libp2p alone: 1 MiB responses from memory, `depth` requests in flight, no store, no CBOR.
async fn raw_transport(quic: bool, total: usize, depth: usize) -> Duration {
    use libp2p::{request_response as rr, swarm::SwarmEvent};
    let mut server = raw_swarm(quic);
    let listen = if quic {
        "/ip4/127.0.0.1/udp/0/quic-v1"
    } else {
        "/ip4/127.0.0.1/tcp/0"
    };
    server
        .listen_on(listen.parse().expect("addr"))
        .expect("listen");
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = server.select_next_some().await {
            break address;
        }
    };
    let server_id = *server.local_peer_id();
    let payload = vec![0xA5u8; MIB];
    let server_task = tokio::spawn(async move {
        loop {
            if let SwarmEvent::Behaviour(rr::Event::Message {
                message: rr::Message::Request { channel, .. },
                ..
            }) = server.select_next_some().await
            {
                let _ = server
                    .behaviour_mut()
                    .send_response(channel, payload.clone());
            }
        }
    });
    let mut client = raw_swarm(quic);
    client
        .dial(addr.with_p2p(server_id).expect("p2p"))
        .expect("dial");
    loop {
        if let SwarmEvent::ConnectionEstablished { .. } = client.select_next_some().await {
            break;
        }
    }
    let chunks = total / MIB;
    let start = Instant::now();
    let (mut sent, mut done) = (0, 0);
    while sent < depth.min(chunks) {
        client.behaviour_mut().send_request(&server_id, vec![1]);
        sent += 1;
    }
    while done < chunks {
        if let SwarmEvent::Behaviour(rr::Event::Message {
            message: rr::Message::Response { response, .. },
            ..
        }) = client.select_next_some().await
        {
            assert_eq!(response.len(), MIB);
            done += 1;
            if sent < chunks {
                client.behaviour_mut().send_request(&server_id, vec![1]);
                sent += 1;
            }
        }
    }
    let d = start.elapsed();
    server_task.abort();
    d
}

/// The transports a raw-stream run can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    Quic,
    /// TCP + the mesh's Noise (`quackmesh::mesh::noise`) + its Yamux (`mesh::mux`, frames of
    /// one Noise record): what the nodes run.
    Tcp,
    /// TCP + the mesh's Noise + `libp2p-yamux` (16 KiB frames), for comparison.
    TcpLibp2pYamux,
    /// TCP + `libp2p-noise` + `libp2p-yamux` (stock libp2p), for comparison.
    TcpLibp2pNoise,
}

fn stream_swarm(wire: Wire) -> libp2p::Swarm<libp2p_stream::Behaviour> {
    use libp2p::{tcp, yamux};
    let behaviour = |_: &libp2p::identity::Keypair| libp2p_stream::Behaviour::new();
    let builder = libp2p::SwarmBuilder::with_new_identity().with_tokio();
    let idle = |c: libp2p::swarm::Config| c.with_idle_connection_timeout(Duration::from_secs(60));
    let tcp_config = tcp::Config::default().nodelay(true);
    match wire {
        Wire::Quic => builder
            .with_quic_config(|mut c| {
                c.max_stream_data = 16 * 1024 * 1024;
                c.max_connection_data = 64 * 1024 * 1024;
                c
            })
            .with_behaviour(behaviour)
            .expect("behaviour")
            .with_swarm_config(idle)
            .build(),
        Wire::Tcp => builder
            .with_tcp(
                tcp_config,
                quackmesh::mesh::noise::Config::new,
                quackmesh::mesh::mux::Config::default,
            )
            .expect("tcp")
            .with_behaviour(behaviour)
            .expect("behaviour")
            .with_swarm_config(idle)
            .build(),
        Wire::TcpLibp2pYamux => builder
            .with_tcp(
                tcp_config,
                quackmesh::mesh::noise::Config::new,
                yamux::Config::default,
            )
            .expect("tcp")
            .with_behaviour(behaviour)
            .expect("behaviour")
            .with_swarm_config(idle)
            .build(),
        Wire::TcpLibp2pNoise => builder
            .with_tcp(
                tcp_config,
                libp2p::noise::Config::new,
                yamux::Config::default,
            )
            .expect("tcp")
            .with_behaviour(behaviour)
            .expect("behaviour")
            .with_swarm_config(idle)
            .build(),
    }
}

/// libp2p alone over `streams` raw streams (`libp2p-stream`) of one connection: `total` bytes
/// written in 1 MiB writes, split over the streams, and read on the other side; no framing,
/// store or hashing. The transport's own ceiling.
async fn raw_stream(wire: Wire, total: usize, streams: usize) -> Duration {
    use futures::{AsyncReadExt as _, AsyncWriteExt as _};
    use libp2p::swarm::SwarmEvent;
    let proto = libp2p::StreamProtocol::new("/bench/stream/1");
    let mut server = stream_swarm(wire);
    let listen = if wire == Wire::Quic {
        "/ip4/127.0.0.1/udp/0/quic-v1"
    } else {
        "/ip4/127.0.0.1/tcp/0"
    };
    server
        .listen_on(listen.parse().expect("addr"))
        .expect("listen");
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = server.select_next_some().await {
            break address;
        }
    };
    let server_id = *server.local_peer_id();
    let mut incoming = server
        .behaviour()
        .new_control()
        .accept(proto.clone())
        .expect("accept");
    let server_task = tokio::spawn(async move {
        loop {
            server.select_next_some().await;
        }
    });
    let per_stream = total / MIB / streams * MIB;
    let reader = tokio::spawn(async move {
        let mut readers = Vec::new();
        for _ in 0..streams {
            let (_, mut s) = incoming.next().await.expect("stream");
            readers.push(tokio::spawn(async move {
                let mut buf = vec![0u8; MIB];
                let mut got = 0;
                while got < per_stream {
                    let n = s.read(&mut buf).await.expect("read");
                    if n == 0 {
                        break;
                    }
                    got += n;
                }
                got
            }));
        }
        let mut got = 0;
        for r in readers {
            got += r.await.expect("reader");
        }
        got
    });
    let mut client = stream_swarm(wire);
    let control = client.behaviour().new_control();
    client
        .dial(addr.with_p2p(server_id).expect("p2p"))
        .expect("dial");
    let client_task = tokio::spawn(async move {
        loop {
            client.select_next_some().await;
        }
    });
    let mut opened = Vec::new();
    for _ in 0..streams {
        let mut c = control.clone();
        opened.push(
            c.open_stream(server_id, proto.clone())
                .await
                .expect("open stream"),
        );
    }
    let start = Instant::now();
    let writers: Vec<_> = opened
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                let payload = vec![0xA5u8; MIB];
                let mut sent = 0;
                while sent < per_stream {
                    s.write_all(&payload).await.expect("write");
                    sent += MIB;
                }
                s.flush().await.expect("flush");
                s
            })
        })
        .collect();
    let mut keep = Vec::new();
    for w in writers {
        keep.push(w.await.expect("writer"));
    }
    let got = reader.await.expect("reader");
    let d = start.elapsed();
    assert_eq!(got, per_stream * streams);
    drop(keep);
    server_task.abort();
    client_task.abort();
    d
}

struct Link {
    pipeline: Timed,
    fetch: Timed,
    /// The fetch until its chunks are durable (its final checkpoint done).
    durable: Timed,
}

async fn link(name: &str, listen: &str, blob: Arc<Vec<u8>>, runs: usize) -> Link {
    let odir = tempfile::tempdir().expect("dir");
    let origin = node(odir.path(), listen, vec![]).await;
    let m = origin
        .client
        .put_blob(blob.as_ref().clone())
        .await
        .expect("put");
    let id = m.id().expect("id");
    let boot = origin.p2p_addrs();
    // `QM_BENCH_PIPELINE=0` leaves the request-response pipeline out (a cleaner fetch profile).
    let with_pipeline = env_usize("QM_BENCH_PIPELINE", 1) != 0;
    let mut best_pipe = Timed::SKIPPED;
    let mut best_fetch = Timed::SKIPPED;
    let mut best_durable = Timed::SKIPPED;
    for run in 0..runs {
        let fdir = tempfile::tempdir().expect("dir");
        let fetcher = node(fdir.path(), listen, boot.clone()).await;
        // Warm the connection up (dial, identify) before timing.
        let _ = fetcher
            .client
            .blob_request(origin.peer_id, BlobRequest::Have { id })
            .await;
        let per_peer = fetcher.client.config().fetch.per_peer;
        let mut bytes = blob.len();
        if with_pipeline {
            let c0 = cpu_now();
            let (got, d) = pipeline(&fetcher, origin.peer_id, id, m.chunk_count(), per_peer).await;
            assert_eq!(got, blob.len());
            bytes = got;
            best_pipe = best_pipe.min(Timed {
                wall: d,
                cpu: cpu_now().saturating_sub(c0),
            });
        }
        let opts = FetchOptions {
            only_from: Some(vec![origin.peer_id]),
            announce: false,
            ..FetchOptions::default()
        };
        let c0 = cpu_now();
        let start = Instant::now();
        let report = fetcher.client.fetch_blob(id, opts).await.expect("fetch");
        let d = start.elapsed();
        let cpu = cpu_now().saturating_sub(c0);
        assert_eq!(report.chunks_fetched, m.chunk_count());
        best_fetch = best_fetch.min(Timed { wall: d, cpu });
        // The fetch's own final checkpoint runs in the background; this one waits for it.
        let blobs = fetcher.client.blobs().clone();
        tokio::task::spawn_blocking(move || blobs.checkpoint(&id))
            .await
            .expect("checkpoint task")
            .expect("checkpoint");
        let durable = Timed {
            wall: start.elapsed(),
            cpu: cpu_now().saturating_sub(c0),
        };
        best_durable = best_durable.min(durable);
        eprintln!(
            "  {name} run {run}: pipeline {:.0} MB/s, fetch {:.0} MB/s ({:.2} CPU ns/B), durable after {:.0} ms",
            mbps(bytes, best_pipe.wall),
            mbps(blob.len(), d),
            cpu.as_nanos() as f64 / blob.len() as f64,
            durable.wall.as_secs_f64() * 1e3
        );
        fetcher.shutdown().await;
    }
    origin.shutdown().await;
    Link {
        pipeline: best_pipe,
        fetch: best_fetch,
        durable: best_durable,
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn best_async<F, Fut>(rt: &tokio::runtime::Runtime, runs: usize, mut f: F) -> Timed
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Duration>,
{
    (0..runs)
        .map(|_| {
            let (d, t) = timed(|| rt.block_on(f()));
            Timed { wall: d, ..t }
        })
        .min()
        .unwrap_or(Timed::SKIPPED)
}

/// Runs `f` and prints which share of the bytes `mesh::mux` received went straight into the
/// reader's buffer (the rest was kept for a reader that was not the one reading).
fn read_path<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let (d0, b0) = quackmesh::mesh::mux::read_path_bytes();
    let out = f();
    let (d1, b1) = quackmesh::mesh::mux::read_path_bytes();
    let (direct, kept) = (d1 - d0, b1 - b0);
    println!(
        "mesh::mux read path, {what}: {:.1}% of {:.0} MiB straight into the reader's buffer",
        100.0 * direct as f64 / (direct + kept).max(1) as f64,
        (direct + kept) as f64 / MIB as f64
    );
    out
}

fn main() {
    let mib = env_usize("QM_BENCH_MIB", 128);
    let runs = env_usize("QM_BENCH_RUNS", 3);
    let depth = env_usize("QM_BENCH_DEPTH", 4);
    let only = std::env::var("QM_BENCH_ONLY").unwrap_or_default();
    let blob = Arc::new(data(mib * MIB));
    let len = blob.len();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");

    // `QM_BENCH_ONLY=fetch-tcp`: the TCP blob fetch alone (for profiling it).
    if only == "fetch-tcp" {
        let l = read_path("blob fetch", || {
            rt.block_on(link(
                "tcp+noise+yamux",
                "/ip4/127.0.0.1/tcp/0",
                blob.clone(),
                runs,
            ))
        });
        let ceiling = mbps(len, seal_ceiling(&blob, runs).0.wall);
        println!(
            "blob fetch over TCP: {:.0} MB/s, {:.2} CPU ns/B, {:.2}x the cipher ceiling ({ceiling:.0} MB/s); until durable {:.0} MB/s",
            mbps(len, l.fetch.wall),
            l.fetch.cpu.as_nanos() as f64 / len as f64,
            mbps(len, l.fetch.wall) / ceiling,
            mbps(len, l.durable.wall)
        );
        return;
    }
    let streams = env_usize("QM_BENCH_STREAMS", 4);
    let stream_tcp1 = read_path("1 raw stream", || {
        best_async(&rt, runs, || raw_stream(Wire::Tcp, len, 1))
    });
    let stream_tcp = best_async(&rt, runs, || raw_stream(Wire::Tcp, len, streams));
    let stream_libp2p_yamux = best_async(&rt, runs, || raw_stream(Wire::TcpLibp2pYamux, len, 1));
    let stream_libp2p_noise = best_async(&rt, runs, || raw_stream(Wire::TcpLibp2pNoise, len, 1));
    // `QM_BENCH_ONLY=stream-tcp`: the TCP streams alone (for profiling one transport).
    let (stream_quic1, stream_quic) = if only == "stream-tcp" {
        (Timed::SKIPPED, Timed::SKIPPED)
    } else {
        (
            best_async(&rt, runs, || raw_stream(Wire::Quic, len, 1)),
            best_async(&rt, runs, || raw_stream(Wire::Quic, len, streams)),
        )
    };
    if only.starts_with("stream") {
        for (what, d) in [
            ("tcp 1 stream", stream_tcp1),
            ("tcp n streams", stream_tcp),
            ("tcp with libp2p-yamux, 1 stream", stream_libp2p_yamux),
            (
                "tcp, stock libp2p (libp2p-noise + libp2p-yamux), 1 stream",
                stream_libp2p_noise,
            ),
            ("quic 1 stream", stream_quic1),
            ("quic n streams", stream_quic),
        ] {
            if d == Timed::SKIPPED {
                continue;
            }
            println!(
                "{what}: {:.0} MB/s, {:.2} CPU ns/B",
                mbps(len, d.wall),
                d.cpu.as_nanos() as f64 / len as f64
            );
        }
        return;
    }
    // Baselines, all in this run.
    let (seal_noise, seal_in_place_noise, seal_out_of_place_noise) = seal_ceiling(&blob, runs);
    let seal_quic = {
        let mut scratch = blob.to_vec();
        best(runs, || seal_in_place(&mut scratch, QUIC_RECORD))
    };
    let both_ends = best(runs, || cipher(&blob, NOISE_RECORD, true));
    let hashing = best(runs, || hash_chunks(&blob));
    let writes = best(runs, || store_writes(&blob));
    // The best write and the best read, each by wall time.
    let (file_write, file_read) = (0..runs)
        .map(|_| file_write_read(&blob))
        .fold((Timed::SKIPPED, Timed::SKIPPED), |(w, r), (w1, r1)| {
            (w.min(w1), r.min(r1))
        });
    let tcp = best_async(&rt, runs, || tcp_copy(blob.clone()));
    let raw_tcp = best_async(&rt, runs, || raw_transport(false, len, depth));
    let raw_quic = best_async(&rt, runs, || raw_transport(true, len, depth));
    // The mesh itself.
    let run_link = |name: &str, listen: &str| {
        if only.is_empty() || name.starts_with(only.as_str()) {
            rt.block_on(link(name, listen, blob.clone(), runs))
        } else {
            Link {
                pipeline: Timed::SKIPPED,
                fetch: Timed::SKIPPED,
                durable: Timed::SKIPPED,
            }
        }
    };
    let tcp_link = read_path("request-response and blob fetch", || {
        run_link("tcp+noise+yamux", "/ip4/127.0.0.1/tcp/0")
    });
    let quic_link = run_link("quic", "/ip4/127.0.0.1/udp/0/quic-v1");

    let ceiling = mbps(len, seal_noise.wall);
    let row = |what: &str, t: Timed| {
        let v = mbps(len, t.wall);
        let cpu = t.cpu.as_nanos() as f64 / len as f64;
        println!(
            "  {what:<66} {v:>6.0} MB/s {:>5.2}x ceiling {cpu:>5.2} CPU ns/B",
            v / ceiling
        );
    };
    println!(
        "mesh link benchmark: {mib} MiB, best of {runs} runs, loopback, {} cores, {depth} chunk requests in flight; CPU ns/B: CPU time of this process (both peers) per byte moved",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!("baselines");
    row(
        "cipher ceiling: ChaCha20-Poly1305 seal, 64 KiB records (faster of:)",
        seal_noise,
    );
    row("  seal in place", seal_in_place_noise);
    row(
        "  seal out of place, into a record buffer (as mesh::noise sends)",
        seal_out_of_place_noise,
    );
    row(
        "ChaCha20-Poly1305 seal, 1400 B records (QUIC packets)",
        seal_quic,
    );
    row(
        "ChaCha20-Poly1305 seal + open, out of place, 64 KiB records, one core",
        both_ends,
    );
    row("plain TCP copy", tcp);
    row("BLAKE3 of 1 MiB chunks", hashing);
    row(
        "file pwrite to a fresh file, 1 MiB at a time (page cache)",
        file_write,
    );
    row("file pread of it back, 1 MiB at a time", file_read);
    row(
        "chunk store: pwrite 8 chunks a batch, one checkpoint (fdatasync+index)",
        writes,
    );
    row("libp2p request-response alone, TCP+Noise+Yamux", raw_tcp);
    row("libp2p request-response alone, QUIC", raw_quic);
    row(
        "libp2p raw stream alone, TCP+Noise+Yamux, 1 stream",
        stream_tcp1,
    );
    row(
        "the same with libp2p-yamux's 16 KiB frames instead of mesh::mux",
        stream_libp2p_yamux,
    );
    row(
        "the same with libp2p-noise and libp2p-yamux (stock libp2p)",
        stream_libp2p_noise,
    );
    row(
        &format!("libp2p raw streams alone, TCP+Noise+Yamux, {streams} streams"),
        stream_tcp,
    );
    row("libp2p raw stream alone, QUIC, 1 stream", stream_quic1);
    row(
        &format!("libp2p raw streams alone, QUIC, {streams} streams"),
        stream_quic,
    );
    for (name, l) in [("TCP+Noise+Yamux", &tcp_link), ("QUIC", &quic_link)] {
        if l.fetch == Timed::SKIPPED {
            println!("mesh over {name}: not run (QM_BENCH_ONLY={only})");
            continue;
        }
        println!("mesh over {name}");
        row(
            "request-response chunk requests from the store (no verify/store)",
            l.pipeline,
        );
        row("blob fetch over chunk streams (verify + write)", l.fetch);
        row(
            "the same until durable (its final checkpoint done)",
            l.durable,
        );
        println!(
            "  {:<58} {:>12.2}x",
            "blob fetch vs plain TCP copy",
            mbps(len, l.fetch.wall) / mbps(len, tcp.wall)
        );
    }
    // What no fetch on this machine avoids, both peers sharing its cores: both ends' cipher,
    // the BLAKE3 check, the kernel's loopback copies and the fetcher's file write; a holder
    // that reads the chunk from its file adds that read (single-threaded work by wall time,
    // the TCP copy's two threads by CPU time). The cores doing only that, perfectly shared,
    // would move the bytes at `cores / ns` per ns.
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    let ns = |d: Duration| d.as_nanos() as f64 / len as f64;
    let mut floor_ns = 0.0;
    for (what, d) in [
        (
            "floor: cipher both ends + BLAKE3 + plain TCP copy",
            both_ends.wall + hashing.wall + tcp.cpu,
        ),
        (
            "  + the fetcher's file write (what a verified, stored fetch costs)",
            file_write.wall,
        ),
        ("  + the holder's file read", file_read.wall),
    ] {
        floor_ns += ns(d);
        let mbps = cores / floor_ns * 1e3;
        println!(
            "{what:<68} {floor_ns:.2} CPU ns/B; {cores} cores doing only that: {mbps:.0} MB/s = {:.2}x the ceiling",
            mbps / ceiling
        );
    }
    let best_fetch = mbps(len, tcp_link.fetch.min(quic_link.fetch).wall);
    println!(
        "faster transport: blob fetch at {:.2}x the cipher ceiling (target >= 0.5x)",
        best_fetch / ceiling
    );
}
