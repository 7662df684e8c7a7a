//! Integration tests of the mesh area: real libp2p nodes on 127.0.0.1 (TCP, one QUIC test),
//! real `quackmesh node` processes for kill/restart and the CLI. Every wait is bounded.

// Helpers here are test code too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::{collections::HashSet, path::Path, time::Duration};

use quackmesh::{
    hash::Hash32,
    mesh::{
        Event,
        blob::{
            BlobRequest, BlobResponse, FetchOptions,
            stream::{
                CHUNK_STREAM_VERSION, ChunkHeader, ChunkRequest, MAX_CHUNK_REQUEST_BYTES,
                read_answer,
            },
            wire::{BLOB_VERSION, MAX_BLOB_REQUEST_BYTES},
        },
        message::{
            GossipBody, MAX_GOSSIP_BYTES, MAX_RPC_REQUEST_BYTES, RPC_VERSION, RpcErrorCode,
            RpcRequest, RpcResponse, decode_versioned, encode_versioned,
        },
        topics::{CHUNK_PROTOCOL, Topic},
    },
    node::{Node, NodeHandle},
    test_utils::mesh::{
        NodeProcess, RawPeer, RawProtocol, TempDir, TestNode, corrupt_chunk, eventually,
        random_bytes, temp_file, test_config,
    },
};
use tokio::sync::mpsc;

const MIB: usize = 1024 * 1024;
const BIN: &str = env!("CARGO_BIN_EXE_quackmesh");

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn metric_with(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l.contains(label))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

async fn status_ok(from: &NodeHandle, to: &NodeHandle) -> bool {
    matches!(
        from.client.request(to.peer_id, RpcRequest::Status).await,
        Ok(RpcResponse::Status(s)) if s.peer_id == to.peer_id.to_string()
    )
}

/// Starts a node whose events are answered by the default handler, but whose accepted gossip
/// is also copied to `seen`.
async fn start_observed(
    bootstrap: &[libp2p::Multiaddr],
    seen: mpsc::UnboundedSender<(libp2p::PeerId, GossipBody)>,
) -> (NodeHandle, TempDir) {
    let dir = TempDir::new();
    let mut cfg = test_config(dir.path());
    cfg.bootstrap = bootstrap.to_vec();
    let (handle, mut events) = Node::builder(cfg).start_with_events().await.unwrap();
    let client = handle.client.clone();
    let me = handle.peer_id;
    let roles = handle.config.roles;
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            if let Event::Gossip { body, .. } = &ev {
                let _ = seen.send((me, body.clone()));
            }
            let _ = quackmesh::node::handler::handle_default(&client, &roles, ev).await;
        }
    });
    (handle, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_nodes_discover_each_other_and_gossip_reaches_all() {
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
    let mut nodes = vec![start_observed(&[], seen_tx.clone()).await];
    let boot = nodes[0].0.p2p_addrs();
    for _ in 0..5 {
        nodes.push(start_observed(&boot, seen_tx.clone()).await);
    }
    let ids: Vec<_> = nodes.iter().map(|(n, _)| n.peer_id).collect();

    // Kademlia: every node ends up with the five others in its routing table.
    let found = eventually(Duration::from_secs(45), || {
        let clients: Vec<_> = nodes.iter().map(|(n, _)| n.client.clone()).collect();
        let ids = ids.clone();
        async move {
            for (i, c) in clients.iter().enumerate() {
                let table: HashSet<_> = c.info().await.ok()?.routing_table.into_iter().collect();
                if ids
                    .iter()
                    .enumerate()
                    .any(|(j, id)| j != i && !table.contains(id))
                {
                    return None;
                }
            }
            Some(())
        }
    })
    .await;
    assert!(found.is_some(), "routing tables never filled");

    // Gossip from node 3 reaches the five others.
    let note = GossipBody::Note {
        text: "quack from node 3".into(),
    };
    let publisher = nodes[3].0.client.clone();
    let published = eventually(Duration::from_secs(20), || {
        let p = publisher.clone();
        let note = note.clone();
        async move { p.publish(&Topic::Jobs, &note).await.ok() }
    })
    .await;
    assert!(published.is_some(), "publish never found subscribed peers");
    let mut got = HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while got.len() < 5 {
        let (peer, body) = tokio::time::timeout_at(deadline, seen_rx.recv())
            .await
            .expect("gossip reached every node in time")
            .unwrap();
        if body == note {
            got.insert(peer);
        }
    }
    assert!(!got.contains(&ids[3]));
    let metrics = nodes[1].0.metrics.encode();
    assert!(metric(&metrics, "quackmesh_mesh_gossip_messages_in_total") >= 1.0);
    assert!(
        metric(
            &nodes[3].0.metrics.encode(),
            "quackmesh_mesh_gossip_messages_out_total"
        ) >= 1.0
    );
    for (n, _) in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_of_64_mib_reaches_eight_nodes_from_several_holders() {
    let origin = TestNode::start(&[]).await;
    let boot = vec![origin.addr()];
    let mut others = Vec::new();
    for _ in 0..8 {
        others.push(TestNode::start(&boot).await);
    }
    let data = random_bytes(64 * MIB, 64);
    let whole = Hash32::of(&data);
    let id = origin
        .handle
        .client
        .put_blob(data)
        .await
        .unwrap()
        .id()
        .unwrap();

    // Two early fetchers take it from the origin (and each other) ...
    let early = futures::future::join_all(others[..2].iter().map(|n| {
        let c = n.handle.client.clone();
        async move { c.fetch_blob(id, FetchOptions::default()).await }
    }))
    .await;
    for r in &early {
        let r = r.as_ref().unwrap();
        eprintln!(
            "early fetch: {} ms, served by {:?}",
            r.elapsed_ms,
            r.served_by.values().collect::<Vec<_>>()
        );
        assert_eq!(r.chunks_fetched, 64);
    }
    // ... the six later ones find three complete holders plus each other.
    let late = futures::future::join_all(others[2..].iter().map(|n| {
        let c = n.handle.client.clone();
        async move { c.fetch_blob(id, FetchOptions::default()).await }
    }))
    .await;
    let mut origin_share = 0;
    for r in &late {
        let r = r.as_ref().unwrap();
        eprintln!(
            "late fetch: {} ms, served by {:?}",
            r.elapsed_ms,
            r.served_by.values().collect::<Vec<_>>()
        );
        assert_eq!(r.chunks_had + r.chunks_fetched, 64);
        assert!(r.dropped.is_empty(), "{:?}", r.dropped);
        assert!(
            r.served_by.len() >= 2,
            "a later fetcher took every chunk from one holder: {:?}",
            r.served_by
        );
        origin_share += r.served_by.get(&origin.peer_id()).copied().unwrap_or(0);
    }
    assert!(origin_share < 6 * 64, "the origin served everything");
    for n in &others {
        let blobs = n.handle.client.blobs().clone();
        let copy = tokio::task::spawn_blocking(move || blobs.read_all(&id))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(Hash32::of(&copy), whole);
    }
    let served = metric(
        &origin.handle.metrics.encode(),
        "quackmesh_mesh_blob_bytes_served_total",
    );
    assert!(served >= (64 * MIB) as f64);
    for n in others {
        n.handle.shutdown().await;
    }
    origin.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_holder_is_dropped_and_fetch_completes_from_others() {
    let origin = TestNode::start(&[]).await;
    let boot = vec![origin.addr()];
    let bad = TestNode::start(&boot).await;
    let data = random_bytes(16 * MIB, 7);
    let id = origin
        .handle
        .client
        .put_blob(data.clone())
        .await
        .unwrap()
        .id()
        .unwrap();
    bad.handle
        .client
        .fetch_blob(id, FetchOptions::default())
        .await
        .unwrap();
    for i in 0..16 {
        corrupt_chunk(&bad.handle.db, &id, i);
    }
    let fetcher = TestNode::start(&boot).await;
    // Hinted holders are asked first, before any DHT lookup: be connected to both, as a
    // coordinator is to the contributors that offer it updates.
    fetcher.handle.client.dial(bad.addr()).await.unwrap();
    let opts = FetchOptions {
        hints: vec![bad.peer_id(), origin.peer_id()],
        ..FetchOptions::default()
    };
    let report = fetcher.handle.client.fetch_blob(id, opts).await.unwrap();
    assert!(
        report
            .dropped
            .iter()
            .any(|d| d.peer == bad.peer_id() && d.reason == "bad_data"),
        "bad holder not dropped: {report:?}"
    );
    assert_eq!(
        report.served_by.get(&bad.peer_id()),
        None,
        "bad chunks counted as served"
    );
    let blobs = fetcher.handle.client.blobs().clone();
    let copy = tokio::task::spawn_blocking(move || blobs.read_all(&id))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(copy, data);
    let m = fetcher.handle.metrics.encode();
    assert!(
        metric_with(&m, "quackmesh_mesh_chunk_fetch_failures_total", "bad_data") >= 1.0,
        "{m}"
    );
    for n in [fetcher, bad, origin] {
        n.handle.shutdown().await;
    }
}

async fn blob_status(http: &reqwest::Client, api: &str, id: &Hash32) -> serde_json::Value {
    http.get(format!("{api}/api/blob/{id}/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_fetcher_resumes_without_refetching() {
    // The origin uploads at 8 MiB/s so the 32 MiB fetch takes about 4 s: time to kill it.
    let origin =
        TestNode::start_with(&[], |c| c.mesh.upload_bytes_per_sec = Some(8 * MIB as u64)).await;
    let data = random_bytes(32 * MIB, 99);
    let id = origin
        .handle
        .client
        .put_blob(data.clone())
        .await
        .unwrap()
        .id()
        .unwrap();
    let dir = TempDir::new();
    let args = vec!["--bootstrap".to_owned(), origin.addr().to_string()];
    let http = reqwest::Client::new();

    let mut first = NodeProcess::spawn(Path::new(BIN), dir.path(), &args);
    let resp = http
        .post(format!("{}/api/blob/{id}/fetch", first.api_url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let had = eventually(Duration::from_secs(30), || {
        let (http, api) = (http.clone(), first.api_url.clone());
        async move {
            let s = blob_status(&http, &api, &id).await;
            let have = s["have"].as_u64()?;
            (have >= 8).then_some(have)
        }
    })
    .await
    .expect("fetch made progress");
    first.kill();
    assert!(
        had < 32,
        "fetch finished before the kill; slow the origin down"
    );

    // Restarted on the same data dir: same PeerId, and the fetch resumes by itself.
    let second = NodeProcess::spawn(Path::new(BIN), dir.path(), &args);
    assert_eq!(second.peer_id, first.peer_id);
    let status = eventually(Duration::from_secs(40), || {
        let (http, api) = (http.clone(), second.api_url.clone());
        async move {
            let s = blob_status(&http, &api, &id).await;
            (s["fetch"] == "done").then_some(s)
        }
    })
    .await
    .expect("resumed fetch completed");
    let report = &status["report"];
    let chunks_had = report["chunks_had"].as_u64().unwrap();
    let fetched = report["chunks_fetched"].as_u64().unwrap();
    assert!(
        chunks_had >= had,
        "lost chunks: had {had} before the kill, {chunks_had} after"
    );
    assert_eq!(
        chunks_had + fetched,
        32,
        "refetched chunks it had: {report}"
    );
    let metrics = http
        .get(format!("{}/metrics", second.api_url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        metric(&metrics, "quackmesh_mesh_blob_chunks_fetched_total"),
        fetched as f64
    );
    let bytes = http
        .get(format!("{}/api/blob/{id}", second.api_url))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(Hash32::of(&bytes), Hash32::of(&data));
    drop(second);
    origin.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_on_every_protocol_is_rejected_and_node_keeps_serving() {
    let node = TestNode::start(&[]).await;
    let honest = TestNode::start(&[node.addr()]).await;
    let id = node
        .handle
        .client
        .put_blob(random_bytes(3 * MIB, 3))
        .await
        .unwrap()
        .id()
        .unwrap();
    let mut raw = RawPeer::new();
    let target = raw.connect(node.addr()).await.unwrap();
    assert_eq!(target, node.peer_id());

    // Each protocol gets garbage, truncated CBOR, an oversized message and an unknown version.
    let garbage = random_bytes(300, 1);
    let status_req = encode_versioned(RPC_VERSION, &RpcRequest::Status, 1024).unwrap();
    let rpc_inputs = [
        ("garbage", garbage.clone()),
        ("truncated", status_req[..status_req.len() - 1].to_vec()),
        ("oversize", random_bytes(MAX_RPC_REQUEST_BYTES + 10, 2)),
        (
            "version",
            encode_versioned(99, &RpcRequest::Status, 1024).unwrap(),
        ),
    ];
    for (what, bytes) in rpc_inputs {
        let resp = raw.request(target, RawProtocol::Rpc, bytes).await.unwrap();
        let resp: RpcResponse = decode_versioned(&resp, 1 << 20, RPC_VERSION).unwrap();
        assert!(
            matches!(resp, RpcResponse::Error(ref e) if e.code == RpcErrorCode::BadRequest),
            "{what}: {resp:?}"
        );
    }
    let chunk_req =
        encode_versioned(BLOB_VERSION, &BlobRequest::Chunk { id, index: 0 }, 1024).unwrap();
    let blob_inputs = [
        ("garbage", garbage.clone()),
        ("truncated", chunk_req[..chunk_req.len() - 3].to_vec()),
        ("oversize", random_bytes(MAX_BLOB_REQUEST_BYTES + 1, 4)),
        (
            "version",
            encode_versioned(7, &BlobRequest::Have { id }, 1024).unwrap(),
        ),
    ];
    for (what, bytes) in blob_inputs {
        let resp = raw.request(target, RawProtocol::Blob, bytes).await.unwrap();
        let resp: BlobResponse = decode_versioned(&resp, 4 << 20, BLOB_VERSION).unwrap();
        assert!(
            matches!(resp, BlobResponse::Error { .. }),
            "{what}: {resp:?}"
        );
    }
    // A well-formed raw request still works on the same connection.
    let resp = raw
        .request(target, RawProtocol::Blob, chunk_req)
        .await
        .unwrap();
    assert!(matches!(
        decode_versioned::<BlobResponse>(&resp, 4 << 20, BLOB_VERSION).unwrap(),
        BlobResponse::Chunk { .. }
    ));

    // Gossip: garbage, truncated, unknown version are rejected; oversize never gets through.
    let jobs = Topic::Jobs.to_string();
    let note = GossipBody::Note {
        text: "hello".into(),
    }
    .encode()
    .unwrap();
    for bytes in [
        garbage,
        note[..note.len() - 2].to_vec(),
        encode_versioned(
            42,
            &GossipBody::Note {
                text: "future".into(),
            },
            MAX_GOSSIP_BYTES,
        )
        .unwrap(),
        random_bytes(MAX_GOSSIP_BYTES + 8 * 1024, 5),
    ] {
        // Publishing may fail once the node has graylisted us; that is the point.
        let _ = raw.publish(target, &jobs, bytes).await;
    }
    let m = node.handle.metrics.encode();
    assert!(
        metric_with(
            &m,
            "quackmesh_mesh_gossip_messages_rejected_total",
            "malformed"
        ) >= 2.0,
        "{m}"
    );
    assert!(
        metric_with(
            &m,
            "quackmesh_mesh_gossip_messages_rejected_total",
            "unknown_version"
        ) >= 1.0,
        "{m}"
    );
    assert!(
        metric_with(&m, "quackmesh_mesh_requests_rejected_total", "too_large") >= 2.0,
        "{m}"
    );
    let score = node.handle.client.peer_score(raw.peer_id()).await.unwrap();
    assert!(
        score.is_some_and(|s| s < 0.0),
        "sender's score not lowered: {score:?}"
    );

    // The node still serves honest peers.
    assert!(status_ok(&honest.handle, &node.handle).await);
    let report = honest
        .handle
        .client
        .fetch_blob(id, FetchOptions::default())
        .await
        .unwrap();
    assert_eq!(report.chunks_fetched, 3);
    // And honest gossip still flows (publisher retries until the mesh has formed).
    let ok = eventually(Duration::from_secs(20), || {
        let c = honest.handle.client.clone();
        async move {
            c.publish(
                &Topic::Jobs,
                &GossipBody::Note {
                    text: "still here".into(),
                },
            )
            .await
            .ok()
        }
    })
    .await;
    assert!(ok.is_some());
    honest.handle.shutdown().await;
    node.handle.shutdown().await;
}

/// A bare swarm that speaks only raw streams (to feed the chunk stream protocol bad input),
/// dialed to `target`; the task drives it.
fn stream_peer(target: libp2p::Multiaddr) -> (libp2p_stream::Control, tokio::task::JoinHandle<()>) {
    use futures::StreamExt as _;
    use libp2p::{noise, tcp, yamux};
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
        .build();
    let control = swarm.behaviour().new_control();
    swarm.dial(target).unwrap();
    let task = tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    (control, task)
}

/// Sends `bytes` on a fresh chunk stream, closes our side and reads one answer.
async fn chunk_stream_exchange(
    control: &mut libp2p_stream::Control,
    peer: libp2p::PeerId,
    bytes: &[u8],
) -> Result<(ChunkHeader, Vec<u8>), String> {
    use futures::AsyncWriteExt as _;
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut s = control
            .open_stream(peer, CHUNK_PROTOCOL)
            .await
            .map_err(|e| e.to_string())?;
        s.write_all(bytes).await.map_err(|e| e.to_string())?;
        s.close().await.map_err(|e| e.to_string())?;
        read_answer(&mut s).await.map_err(|e| e.to_string())
    })
    .await
    .map_err(|_| "timed out".to_owned())?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_on_chunk_streams_is_rejected_and_node_keeps_serving() {
    let node = TestNode::start(&[]).await;
    let data = random_bytes(3 * MIB, 31);
    let id = node
        .handle
        .client
        .put_blob(data.clone())
        .await
        .unwrap()
        .id()
        .unwrap();
    let (mut control, task) = stream_peer(node.addr());
    let frame = |version: u16, req: &ChunkRequest| {
        let body = encode_versioned(version, req, 1024).unwrap();
        let mut f = (body.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(&body);
        f
    };
    let good = frame(CHUNK_STREAM_VERSION, &ChunkRequest { id, index: 1 });
    let mut garbage_body = 40u32.to_be_bytes().to_vec();
    garbage_body.extend_from_slice(&random_bytes(40, 6));
    let mut oversize = (MAX_CHUNK_REQUEST_BYTES as u32 + 1).to_be_bytes().to_vec();
    oversize.extend_from_slice(&random_bytes(MAX_CHUNK_REQUEST_BYTES + 1, 7));
    let inputs = [
        ("garbage", random_bytes(300, 5)),
        ("garbage body", garbage_body),
        ("truncated", good[..good.len() - 3].to_vec()),
        ("oversize", oversize),
        (
            "version",
            frame(CHUNK_STREAM_VERSION + 6, &ChunkRequest { id, index: 0 }),
        ),
    ];
    for (what, bytes) in inputs {
        let (header, payload) = chunk_stream_exchange(&mut control, node.peer_id(), &bytes)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            matches!(header, ChunkHeader::Error { .. }),
            "{what}: {header:?}"
        );
        assert!(payload.is_empty(), "{what}");
    }
    // An index past the end is refused, not served.
    let past = frame(CHUNK_STREAM_VERSION, &ChunkRequest { id, index: 3 });
    let (header, _) = chunk_stream_exchange(&mut control, node.peer_id(), &past)
        .await
        .unwrap();
    assert_eq!(header, ChunkHeader::NotFound);
    // A well-formed request is still served, on a new stream of the same connection.
    let (header, payload) = chunk_stream_exchange(&mut control, node.peer_id(), &good)
        .await
        .unwrap();
    assert!(matches!(header, ChunkHeader::Chunk { len, .. } if len as usize == MIB));
    assert_eq!(payload, data[MIB..2 * MIB]);
    let m = node.handle.metrics.encode();
    for label in ["too_large", "unknown_version", "malformed", "io"] {
        assert!(
            metric_with(&m, "quackmesh_mesh_requests_rejected_total", label) >= 1.0,
            "{label}: {m}"
        );
    }
    task.abort();
    // And an honest node still fetches the blob.
    let honest = TestNode::start(&[node.addr()]).await;
    let report = honest
        .handle
        .client
        .fetch_blob(id, FetchOptions::default())
        .await
        .unwrap();
    assert_eq!(report.chunks_fetched, 3);
    honest.handle.shutdown().await;
    node.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_lists_guard_private_blobs_and_cluster_topics() {
    let a = TestNode::start(&[]).await;
    let b = TestNode::start(&[a.addr()]).await;
    let c = TestNode::start(&[a.addr()]).await;
    let (pa, pb, pc) = (a.peer_id(), b.peer_id(), c.peer_id());

    // A private blob: B may fetch it, C is denied.
    let id = a
        .handle
        .client
        .put_blob(random_bytes(2 * MIB, 11))
        .await
        .unwrap()
        .id()
        .unwrap();
    a.handle
        .client
        .set_blob_access(id, Some([pb].into_iter().collect()))
        .await
        .unwrap();
    let denied = c
        .handle
        .client
        .blob_request(pa, BlobRequest::Manifest { id })
        .await
        .unwrap();
    assert_eq!(denied, BlobResponse::Denied);
    let denied = c
        .handle
        .client
        .blob_request(pa, BlobRequest::Chunk { id, index: 0 })
        .await
        .unwrap();
    assert_eq!(denied, BlobResponse::Denied);
    let opts = FetchOptions {
        only_from: Some(vec![pa]),
        ..FetchOptions::default()
    };
    b.handle.client.fetch_blob(id, opts).await.unwrap();
    let m = a.handle.metrics.encode();
    assert!(
        metric_with(&m, "quackmesh_mesh_acl_refusals_total", "kind=\"blob\"") >= 2.0,
        "{m}"
    );

    // A cluster topic for A and B: C's messages are rejected by the members, and C's own node (which
    // knows the member list) refuses to publish.
    let topic = Topic::cluster("c1").unwrap();
    let members: HashSet<_> = [pa, pb].into_iter().collect();
    for n in [&a, &b, &c] {
        n.handle.client.subscribe(&topic).await.unwrap();
    }
    a.handle
        .client
        .set_topic_members(&topic, Some(members.clone()))
        .await
        .unwrap();
    b.handle
        .client
        .set_topic_members(&topic, Some(members.clone()))
        .await
        .unwrap();
    let sent = eventually(Duration::from_secs(20), || {
        let cc = c.handle.client.clone();
        let t = topic.clone();
        async move {
            cc.publish(
                &t,
                &GossipBody::Note {
                    text: "let me in".into(),
                },
            )
            .await
            .ok()
        }
    })
    .await;
    assert!(sent.is_some(), "outsider could not publish at all");
    // C's message went to whichever member it has a gossip link to: A, B or both refuse it.
    let refused = eventually(Duration::from_secs(10), || {
        let n: f64 = [&a, &b]
            .iter()
            .map(|n| {
                let m = n.handle.metrics.encode();
                metric_with(&m, "quackmesh_mesh_acl_refusals_total", "topic_gossip")
            })
            .sum();
        async move { (n >= 1.0).then_some(()) }
    })
    .await;
    assert!(refused.is_some(), "outsider's gossip was not refused");
    c.handle
        .client
        .set_topic_members(&topic, Some(members))
        .await
        .unwrap();
    let err = c
        .handle
        .client
        .publish(
            &topic,
            &GossipBody::Note {
                text: "again".into(),
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, quackmesh::mesh::MeshError::NotTopicMember { .. }),
        "{err}"
    );
    assert!(
        metric_with(
            &c.handle.metrics.encode(),
            "quackmesh_mesh_acl_refusals_total",
            "topic_publish"
        ) >= 1.0
    );
    let _ = pc;
    for n in [c, b, a] {
        n.handle.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_peer_id_and_blobs() {
    let dir = TempDir::new();
    let cfg = test_config(dir.path());
    let node = Node::start(cfg.clone()).await.unwrap();
    let peer = node.peer_id;
    let data = random_bytes(MIB + 5, 8);
    let id = node
        .client
        .put_blob(data.clone())
        .await
        .unwrap()
        .id()
        .unwrap();
    node.shutdown().await;
    // The store is released once every task is gone; allow a moment for blocking tasks.
    let again = eventually(Duration::from_secs(10), || {
        let cfg = cfg.clone();
        async move { Node::start(cfg).await.ok() }
    })
    .await
    .expect("restarted");
    assert_eq!(again.peer_id, peer);
    let blobs = again.client.blobs().clone();
    let copy = tokio::task::spawn_blocking(move || blobs.read_all(&id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(copy, Some(data));
    again.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_only_nodes_exchange_blobs_and_rpc() {
    let quic = |c: &mut quackmesh::config::NodeConfig| {
        c.listen = vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()];
    };
    let a = TestNode::start_with(&[], quic).await;
    assert!(a.addr().to_string().contains("quic-v1"));
    let b = TestNode::start_with(&[a.addr()], quic).await;
    let data = random_bytes(4 * MIB + 3, 21);
    let id = a
        .handle
        .client
        .put_blob(data.clone())
        .await
        .unwrap()
        .id()
        .unwrap();
    let report = b
        .handle
        .client
        .fetch_blob(id, FetchOptions::default())
        .await
        .unwrap();
    assert_eq!(report.chunks_fetched, 5);
    assert!(status_ok(&b.handle, &a.handle).await);
    b.handle.shutdown().await;
    a.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_and_cli_move_a_file_between_nodes() {
    let a = TestNode::start(&[]).await;
    let b = TestNode::start(&[a.addr()]).await;
    let files = TempDir::new();
    let data = random_bytes(3 * MIB + 1, 31);
    let input = temp_file(&files, "in.bin", &data);
    let output = files.path().join("out.bin");

    let put = tokio::process::Command::new(BIN)
        .args(["blob", "put"])
        .arg(&input)
        .args(["--node", &a.handle.api_url()])
        .env_clear()
        .output()
        .await
        .unwrap();
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let id = String::from_utf8(put.stdout).unwrap().trim().to_owned();
    assert_eq!(id.len(), 64);

    let get = tokio::process::Command::new(BIN)
        .args(["blob", "get", &id, "-o"])
        .arg(&output)
        .args(["--node", &b.handle.api_url()])
        .env_clear()
        .output()
        .await
        .unwrap();
    assert!(
        get.status.success(),
        "{}",
        String::from_utf8_lossy(&get.stderr)
    );
    assert_eq!(std::fs::read(&output).unwrap(), data);

    let http = reqwest::Client::new();
    let info: serde_json::Value = http
        .get(format!("{}/api/node", b.handle.api_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["peer_id"], b.peer_id().to_string());
    assert!(
        info["connected_peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == &a.peer_id().to_string())
    );
    assert_eq!(info["blobs"], 1);
    let metrics = http
        .get(format!("{}/metrics", a.handle.api_url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "quackmesh_mesh_connected_peers",
        "quackmesh_mesh_gossip_messages_in_total",
        "quackmesh_mesh_gossip_messages_out_total",
        "quackmesh_mesh_blob_bytes_served_total",
        "quackmesh_mesh_blob_bytes_fetched_total",
    ] {
        assert!(metrics.contains(name), "{name} missing");
    }
    assert!(metric(&metrics, "quackmesh_mesh_blob_bytes_served_total") >= data.len() as f64);

    // Bad requests get clear errors and the node keeps answering.
    let bad = http
        .get(format!("{}/api/blob/not-a-hash", a.handle.api_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let missing = tokio::process::Command::new(BIN)
        .args(["blob", "get", &"ab".repeat(32), "-o"])
        .arg(files.path().join("none"))
        .args([
            "--from",
            &a.peer_id().to_string(),
            "--node",
            &b.handle.api_url(),
        ])
        .env_clear()
        .output()
        .await
        .unwrap();
    assert!(!missing.status.success());
    assert!(!files.path().join("none").exists());
    b.handle.shutdown().await;
    a.handle.shutdown().await;
}

#[test]
fn every_subcommand_has_help() {
    for args in [
        vec!["--help"],
        vec!["node", "--help"],
        vec!["blob", "--help"],
        vec!["blob", "put", "--help"],
        vec!["blob", "get", "--help"],
        vec!["blob", "status", "--help"],
        vec!["blob", "fetch", "--help"],
    ] {
        let out = std::process::Command::new(BIN)
            .args(&args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Usage"), "{args:?}: {text}");
    }
    let out = std::process::Command::new(BIN)
        .args(["node", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--provide",
        "--contribute",
        "--coordinator",
        "--data-dir",
        "--listen",
        "--bootstrap",
        "--api",
        "--mdns",
        "--config",
    ] {
        assert!(text.contains(flag), "{flag} missing from node --help");
    }
}

/// A runtime that lags behind its events (here: one slot, read only at the end) still learns
/// that a peer came and went: connect and disconnect events wait for room instead of being
/// dropped like gossip (cluster training counts machines live by them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_and_disconnect_reach_a_runtime_that_lags() {
    let dir = TempDir::new();
    let mut cfg = test_config(dir.path());
    cfg.mesh.event_buffer = 1;
    let (a, mut events) = Node::builder(cfg).start_with_events().await.unwrap();
    let b = TestNode::start(&a.p2p_addrs()).await;
    let b_id = b.peer_id();
    let seen = |up: bool| {
        let client = a.client.clone();
        move || {
            let client = client.clone();
            async move {
                let connected = client.info().await.ok()?.connected.contains(&b_id);
                (connected == up).then_some(())
            }
        }
    };
    assert!(
        eventually(Duration::from_secs(20), seen(true))
            .await
            .is_some()
    );
    b.handle.shutdown().await;
    assert!(
        eventually(Duration::from_secs(20), seen(false))
            .await
            .is_some()
    );
    // Only now is the channel read: the connect filled its one slot long ago.
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !got.contains(&(b_id, false)) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, events.recv()).await {
            Ok(Some(Event::PeerConnected { peer })) => got.push((peer, true)),
            Ok(Some(Event::PeerDisconnected { peer })) => got.push((peer, false)),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => panic!("no disconnect of {b_id} in 20 s: {got:?}"),
        }
    }
    assert_eq!(got, vec![(b_id, true), (b_id, false)]);
}
