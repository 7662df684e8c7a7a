use std::time::Duration;

use futures::{AsyncReadExt as _, AsyncWriteExt as _, StreamExt as _};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, SwarmBuilder, swarm::SwarmEvent, tcp};

use super::*;
use crate::test_utils::mesh::random_bytes;

const LIMIT: Duration = Duration::from_secs(20);
const PROTOCOL: StreamProtocol = StreamProtocol::new("/quackmesh/test/mux/1");

/// A `libp2p-stream` swarm on TCP with the mesh's Noise and either this muxer or libp2p's.
fn swarm(ours: bool) -> Swarm<libp2p_stream::Behaviour> {
    let idle = |c: libp2p::swarm::Config| c.with_idle_connection_timeout(Duration::from_secs(30));
    let b = SwarmBuilder::with_new_identity().with_tokio();
    if ours {
        b.with_tcp(
            tcp::Config::default().nodelay(true),
            crate::mesh::noise::Config::new,
            Config::default,
        )
        .expect("tcp")
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .expect("behaviour")
        .with_swarm_config(idle)
        .build()
    } else {
        b.with_tcp(
            tcp::Config::default().nodelay(true),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .expect("tcp")
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .expect("behaviour")
        .with_swarm_config(idle)
        .build()
    }
}

async fn listen(s: &mut Swarm<libp2p_stream::Behaviour>) -> Multiaddr {
    s.listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("addr"))
        .expect("listen");
    tokio::time::timeout(LIMIT, async {
        loop {
            if let SwarmEvent::NewListenAddr { address, .. } = s.select_next_some().await {
                break address;
            }
        }
    })
    .await
    .expect("a listen address")
}

/// Writes `data` in writes of varying size (1 byte to 300 KiB), flushing now and then.
async fn send_all<W: futures::AsyncWrite + Unpin>(w: &mut W, data: &[u8]) {
    let sizes = [
        1usize,
        FRAME_BODY,
        FRAME_BODY + 1,
        16_384,
        300_000,
        7,
        1 << 20,
    ];
    let mut at = 0;
    for (i, size) in sizes.iter().cycle().enumerate() {
        if at >= data.len() {
            break;
        }
        let end = (at + size).min(data.len());
        w.write_all(&data[at..end]).await.expect("write");
        at = end;
        if i % 3 == 0 {
            w.flush().await.expect("flush");
        }
    }
    w.flush().await.expect("flush");
}

/// The listener (this muxer or libp2p's, per `listener_ours`) accepts 3 streams; on each the
/// dialer sends 3 MiB, the listener checks them and sends them back, and the dialer checks the
/// echo. Frames of up to `FRAME_BODY` go both ways, so each side reads the other's.
async fn echo_across(listener_ours: bool, dialer_ours: bool) {
    let mut listener = swarm(listener_ours);
    let mut dialer = swarm(dialer_ours);
    let addr = listen(&mut listener).await;
    let listener_id: PeerId = *listener.local_peer_id();
    let mut incoming = listener
        .behaviour()
        .new_control()
        .accept(PROTOCOL)
        .expect("accept");
    let mut control = dialer.behaviour().new_control();
    dialer.dial(addr).expect("dial");
    let drive_l = tokio::spawn(async move {
        loop {
            listener.select_next_some().await;
        }
    });
    tokio::time::timeout(LIMIT, async {
        loop {
            if let SwarmEvent::ConnectionEstablished { .. } = dialer.select_next_some().await {
                break;
            }
        }
    })
    .await
    .expect("connected");
    let drive_d = tokio::spawn(async move {
        loop {
            dialer.select_next_some().await;
        }
    });
    let server = tokio::spawn(async move {
        for i in 0..3u64 {
            let (_, mut s) = incoming.next().await.expect("an inbound stream");
            let want = random_bytes(3 << 20, i);
            let mut got = vec![0u8; want.len()];
            s.read_exact(&mut got).await.expect("read");
            assert!(got == want, "stream {i}: the listener read other bytes");
            send_all(&mut s, &got).await;
            s.close().await.expect("close");
        }
    });
    tokio::time::timeout(LIMIT, async {
        for i in 0..3u64 {
            let mut s = control
                .open_stream(listener_id, PROTOCOL)
                .await
                .expect("open");
            let data = random_bytes(3 << 20, i);
            send_all(&mut s, &data).await;
            let mut back = Vec::new();
            s.read_to_end(&mut back).await.expect("read echo");
            assert!(back == data, "stream {i}: the echo differs");
        }
    })
    .await
    .expect("echoes within the limit");
    tokio::time::timeout(LIMIT, server)
        .await
        .expect("server done")
        .expect("server task");
    drive_l.abort();
    drive_d.abort();
}

#[tokio::test]
async fn talks_to_itself() {
    echo_across(true, true).await;
}

#[tokio::test]
async fn libp2p_yamux_dials_it() {
    echo_across(true, false).await;
}

#[tokio::test]
async fn it_dials_libp2p_yamux() {
    echo_across(false, true).await;
}

#[test]
fn a_full_frame_fills_one_noise_record() {
    assert_eq!(FRAME_BODY + HEADER_LEN, crate::mesh::noise::MAX_PLAIN);
    // Below what receivers accept (`yamux` reads bodies of up to 1 MiB).
    const { assert!(FRAME_BODY < 1 << 20) };
}
