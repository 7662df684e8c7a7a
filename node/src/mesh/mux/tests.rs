use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures::{AsyncReadExt as _, AsyncWriteExt as _, StreamExt as _, future::poll_fn};
use libp2p::{
    StreamProtocol, Swarm, SwarmBuilder,
    core::muxing::StreamMuxerExt as _,
    core::upgrade::{InboundConnectionUpgrade as _, OutboundConnectionUpgrade as _},
    tcp,
};

use super::*;
use crate::test_utils::mesh::{connect_on_loopback, random_bytes};

const LIMIT: Duration = Duration::from_secs(20);
const PROTOCOL: StreamProtocol = StreamProtocol::new("/quackmesh/test/mux/1");

/// A `libp2p-stream` swarm on TCP with the mesh's Noise and this muxer, or with libp2p's
/// Noise and `libp2p-yamux` (what other nodes run).
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

/// Writes `data` in writes of varying size (1 byte to 1 MiB, around the frame size), flushing
/// now and then.
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
/// echo.
async fn echo_across(listener_ours: bool, dialer_ours: bool) {
    let listener = swarm(listener_ours);
    let mut incoming = listener
        .behaviour()
        .new_control()
        .accept(PROTOCOL)
        .expect("accept");
    let (listener_id, mut control) = connect_on_loopback(listener, swarm(dialer_ours)).await;
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

/// A connection's I/O that remembers the largest single write the muxer asked for.
struct LargestWrite<T> {
    io: T,
    largest: Arc<AtomicUsize>,
}

impl<T: AsyncRead + Unpin> AsyncRead for LargestWrite<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for LargestWrite<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // What was asked, not what the socket took: Yamux hands over a frame's body whole
        // and retries the rest of it after a short write.
        this.largest.fetch_max(buf.len(), Ordering::Relaxed);
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_close(cx)
    }
}

/// Drives a muxer's connection on a task of its own until it fails or closes.
fn drive<M>(mut m: M)
where
    M: StreamMuxer + Unpin + Send + 'static,
{
    tokio::spawn(async move { while poll_fn(|cx| m.poll_unpin(cx)).await.is_ok() {} });
}

/// Bulk data leaves in frames of `FRAME_BODY` (Yamux writes a frame's body in one write), and
/// `libp2p-yamux` on the other end reads them.
#[tokio::test]
async fn bulk_data_goes_in_frames_of_one_noise_record() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (dialed, accepted) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
    let largest = Arc::new(AtomicUsize::new(0));
    let ours = LargestWrite {
        io: tcp::tokio::TcpStream(dialed.expect("connect")),
        largest: largest.clone(),
    };
    let theirs = tcp::tokio::TcpStream(accepted.expect("accept").0);
    let mut ours = Config::default()
        .upgrade_outbound(ours, "/yamux/1.0.0")
        .await
        .expect("ours");
    let mut theirs = libp2p::yamux::Config::default()
        .upgrade_inbound(theirs, "/yamux/1.0.0")
        .await
        .expect("theirs");

    let data = random_bytes(4 << 20, 7);
    let mut out = poll_fn(|cx| ours.poll_outbound_unpin(cx))
        .await
        .expect("outbound stream");
    drive(ours);
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        out.write_all(&sent).await.expect("write");
        out.close().await.expect("close");
    });
    let got = tokio::time::timeout(LIMIT, async {
        let mut s = poll_fn(|cx| theirs.poll_inbound_unpin(cx))
            .await
            .expect("inbound stream");
        drive(theirs);
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.expect("read");
        got
    })
    .await
    .expect("the data within the limit");
    writer.await.expect("writer");
    assert!(got == data, "the other side read other bytes");
    assert_eq!(largest.load(Ordering::Relaxed), FRAME_BODY);
}

#[test]
fn a_full_frame_fills_one_noise_record() {
    assert_eq!(FRAME_BODY + HEADER_LEN, crate::mesh::noise::MAX_PLAIN);
    // Far below what receivers accept (`yamux` reads bodies of up to 1 MiB).
    const { assert!(FRAME_BODY < 1 << 20) };
}
