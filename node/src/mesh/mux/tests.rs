use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures::{AsyncReadExt as _, AsyncWriteExt as _, StreamExt as _, future::poll_fn};
use libp2p::{
    PeerId, StreamProtocol, Swarm, SwarmBuilder,
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

/// A listener (this muxer's or libp2p's) accepting `PROTOCOL` and a dialer connected to it:
/// the listener's inbound streams, its PeerId and the dialer's stream control.
async fn connected(
    listener_ours: bool,
    dialer_ours: bool,
) -> (
    libp2p_stream::IncomingStreams,
    PeerId,
    libp2p_stream::Control,
) {
    let listener = swarm(listener_ours);
    let incoming = listener
        .behaviour()
        .new_control()
        .accept(PROTOCOL)
        .expect("accept");
    let (listener_id, control) = connect_on_loopback(listener, swarm(dialer_ours)).await;
    (incoming, listener_id, control)
}

/// Two ends of a TCP connection on 127.0.0.1: (dialer, listener).
async fn tcp_pair() -> (tcp::tokio::TcpStream, tcp::tokio::TcpStream) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (dialed, accepted) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
    (
        tcp::tokio::TcpStream(dialed.expect("connect")),
        tcp::tokio::TcpStream(accepted.expect("accept").0),
    )
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
    let (mut incoming, listener_id, mut control) = connected(listener_ours, dialer_ours).await;
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

/// 16 streams at once, each echoing 1 MiB in writes of varying size: their frames interleave on
/// the connection, so readers meet each other's frames (the buffered path and the hand-off).
async fn echo_concurrently(listener_ours: bool, dialer_ours: bool) {
    const STREAMS: u64 = 16;
    let (mut incoming, listener_id, control) = connected(listener_ours, dialer_ours).await;
    let server = tokio::spawn(async move {
        let mut echoes = Vec::new();
        for _ in 0..STREAMS {
            let (_, mut s) = incoming.next().await.expect("an inbound stream");
            // `libp2p-stream` resets inbound streams that arrive while its one-slot queue is
            // full, so each is acknowledged before the next is opened.
            let mut hello = [0u8; 1];
            s.read_exact(&mut hello).await.expect("hello");
            s.write_all(&hello).await.expect("ack");
            echoes.push(tokio::spawn(async move {
                let mut got = Vec::new();
                s.read_to_end(&mut got).await.expect("read");
                send_all(&mut s, &got).await;
                s.close().await.expect("close");
            }));
        }
        for e in echoes {
            e.await.expect("echo task");
        }
    });
    let mut control = control;
    let mut clients = Vec::new();
    for i in 0..STREAMS {
        let mut s = tokio::time::timeout(LIMIT, async {
            let mut s = control
                .open_stream(listener_id, PROTOCOL)
                .await
                .expect("open");
            let mut hello = [i as u8];
            s.write_all(&hello).await.expect("hello");
            s.read_exact(&mut hello).await.expect("ack");
            s
        })
        .await
        .expect("stream opened within the limit");
        clients.push(tokio::spawn(async move {
            let data = random_bytes((1 << 20) + i as usize * 4099, 100 + i);
            send_all(&mut s, &data).await;
            s.close().await.expect("close");
            let mut back = Vec::new();
            s.read_to_end(&mut back).await.expect("read echo");
            assert!(back == data, "stream {i}: the echo differs");
        }));
    }
    tokio::time::timeout(LIMIT, async {
        for c in clients {
            c.await.expect("client task");
        }
        server.await.expect("server task");
    })
    .await
    .expect("all echoes within the limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_streams_at_once_with_itself() {
    echo_concurrently(true, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_streams_at_once_with_libp2p_yamux_in_both_roles() {
    echo_concurrently(true, false).await;
    echo_concurrently(false, true).await;
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

/// Opens a stream on `m`.
async fn open<M: StreamMuxer + Unpin>(m: &mut M) -> M::Substream
where
    M::Error: std::fmt::Debug,
{
    poll_fn(|cx| m.poll_outbound_unpin(cx))
        .await
        .expect("outbound stream")
}

/// Takes the next stream the remote opened on `m`.
async fn accept<M: StreamMuxer + Unpin>(m: &mut M) -> M::Substream
where
    M::Error: std::fmt::Debug,
{
    poll_fn(|cx| m.poll_inbound_unpin(cx))
        .await
        .expect("inbound stream")
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
    let (dialed, theirs) = tcp_pair().await;
    let largest = Arc::new(AtomicUsize::new(0));
    let ours = LargestWrite {
        io: dialed,
        largest: largest.clone(),
    };
    let mut ours = Config
        .upgrade_outbound(ours, "/yamux/1.0.0")
        .await
        .expect("ours");
    let mut theirs = libp2p::yamux::Config::default()
        .upgrade_inbound(theirs, "/yamux/1.0.0")
        .await
        .expect("theirs");

    let data = random_bytes(4 << 20, 7);
    let mut out = open(&mut ours).await;
    drive(ours);
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        out.write_all(&sent).await.expect("write");
        out.close().await.expect("close");
    });
    let got = tokio::time::timeout(LIMIT, async {
        let mut s = accept(&mut theirs).await;
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

/// A TCP pair on 127.0.0.1: our muxer (as listener) on one end, a raw socket on the other,
/// for feeding it frames by hand.
async fn muxer_and_raw_peer() -> (Muxer<tcp::tokio::TcpStream>, tokio::net::TcpStream) {
    let (raw, accepted) = tcp_pair().await;
    let ours = Config
        .upgrade_inbound(accepted, "/yamux/1.0.0")
        .await
        .expect("upgrade");
    (ours, raw.0)
}

/// Reads frames from the raw peer until `want` matches one (within the limit).
async fn raw_frame(
    raw: &mut tokio::net::TcpStream,
    want: impl Fn(&frame::Header) -> bool,
) -> frame::Header {
    use tokio::io::AsyncReadExt as _;
    tokio::time::timeout(LIMIT, async {
        loop {
            let mut b = [0u8; HEADER_LEN];
            raw.read_exact(&mut b).await.expect("a frame");
            let h = frame::Header::decode(&b).expect("a valid header");
            let mut body = vec![
                0u8;
                if h.kind == frame::Kind::Data {
                    h.length as usize
                } else {
                    0
                }
            ];
            raw.read_exact(&mut body).await.expect("its body");
            if want(&h) {
                return h;
            }
        }
    })
    .await
    .expect("the frame within the limit")
}

async fn raw_send(raw: &mut tokio::net::TcpStream, h: frame::Header, body: &[u8]) {
    use tokio::io::AsyncWriteExt as _;
    raw.write_all(&h.encode()).await.expect("write header");
    raw.write_all(body).await.expect("write body");
}

/// Each bad input ends the connection with an error (no panic) and a GoAway with the
/// protocol-error code.
#[tokio::test]
async fn protocol_violations_end_the_connection_with_a_go_away() {
    let mut bad_version = frame::Header::data(1, frame::SYN, 0).encode();
    bad_version[0] = 1;
    let mut bad_type = frame::Header::data(1, frame::SYN, 0).encode();
    bad_type[1] = 9;
    let over_window = frame::DEFAULT_CREDIT + 1;
    let cases: [(&str, Vec<u8>); 5] = [
        ("unknown version", bad_version.to_vec()),
        ("unknown type", bad_type.to_vec()),
        (
            // The dialer's streams are odd.
            "stream id of the wrong side",
            frame::Header::window_update(2, frame::SYN, 0)
                .encode()
                .to_vec(),
        ),
        (
            "frame on stream 0",
            frame::Header::data(0, 0, 0).encode().to_vec(),
        ),
        ("body beyond the window", {
            let mut b = frame::Header::data(1, frame::SYN, over_window)
                .encode()
                .to_vec();
            b.resize(HEADER_LEN + over_window as usize, 7);
            b
        }),
    ];
    for (what, bytes) in cases {
        let (mut ours, mut raw) = muxer_and_raw_peer().await;
        {
            use tokio::io::AsyncWriteExt as _;
            raw.write_all(&bytes).await.expect("write");
        }
        let err = tokio::time::timeout(LIMIT, async {
            loop {
                if let Err(e) = poll_fn(|cx| ours.poll_unpin(cx)).await {
                    return e;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{what}: the connection should fail"));
        assert!(!err.to_string().is_empty());
        // libp2p closes a failed muxer: the GoAway queued on the error goes out then.
        poll_fn(|cx| ours.poll_close_unpin(cx))
            .await
            .expect("close");
        let h = raw_frame(&mut raw, |h| h.kind == frame::Kind::GoAway).await;
        assert_eq!(h.length, frame::GO_AWAY_PROTOCOL_ERROR, "{what}");
    }
}

#[tokio::test]
async fn pings_are_answered_with_their_value() {
    let (ours, mut raw) = muxer_and_raw_peer().await;
    drive(ours);
    let ping = frame::Header {
        kind: frame::Kind::Ping,
        flags: frame::SYN,
        stream: 0,
        length: 0xdead_beef,
    };
    raw_send(&mut raw, ping, &[]).await;
    let pong = raw_frame(&mut raw, |h| h.kind == frame::Kind::Ping).await;
    assert!(pong.has(frame::ACK));
    assert_eq!(pong.length, 0xdead_beef);
}

/// Inbound streams the node does not take are held up to a limit; the next is reset, and
/// every one held was acknowledged.
#[tokio::test]
async fn inbound_streams_beyond_the_limit_are_reset() {
    let (ours, mut raw) = muxer_and_raw_peer().await;
    drive(ours);
    let n = conn::MAX_BUFFERED_INBOUND as u32;
    for i in 0..=n {
        raw_send(
            &mut raw,
            frame::Header::window_update(2 * i + 1, frame::SYN, 0),
            &[],
        )
        .await;
    }
    let mut acked = 0;
    let reset = loop {
        let h = raw_frame(&mut raw, |_| true).await;
        if h.has(frame::RST) {
            break h;
        }
        if h.has(frame::ACK) {
            acked += 1;
        }
    };
    assert_eq!(acked, n, "every stream held was acknowledged");
    assert_eq!(
        reset.stream,
        2 * n + 1,
        "the stream past the limit is the one reset"
    );
}

/// A reader that stops polling (its read timed out) while its stream's data is next on the
/// connection does not stall the others: after the hand-off's grace the data is kept for it,
/// and later read intact.
#[tokio::test]
async fn a_reader_that_stops_waiting_does_not_stall_other_streams() {
    let (dialer, listener) = tcp_pair().await;
    let mut dialer = Config
        .upgrade_outbound(dialer, "/yamux/1.0.0")
        .await
        .expect("dialer");
    let mut listener = Config
        .upgrade_inbound(listener, "/yamux/1.0.0")
        .await
        .expect("listener");
    let mut a_out = open(&mut dialer).await;
    let mut b_out = open(&mut dialer).await;
    drive(dialer);
    let mut a_in = accept(&mut listener).await;
    let mut b_in = accept(&mut listener).await;
    drive(listener);

    // A's reader waits, then gives up without dropping its stream.
    let mut byte = [0u8; 1];
    let waited = tokio::time::timeout(Duration::from_millis(50), a_in.read(&mut byte)).await;
    assert!(waited.is_err(), "nothing was sent on A yet");

    let a_data = random_bytes(200_000, 1);
    let b_data = random_bytes(2 << 20, 2);
    let (a_sent, b_sent) = (a_data.clone(), b_data.clone());
    let writer = tokio::spawn(async move {
        a_out.write_all(&a_sent).await.expect("write a");
        a_out.flush().await.expect("flush a");
        b_out.write_all(&b_sent).await.expect("write b");
        b_out.close().await.expect("close b");
        a_out.close().await.expect("close a");
    });
    let mut got_b = Vec::new();
    tokio::time::timeout(LIMIT, b_in.read_to_end(&mut got_b))
        .await
        .expect("B's data while A's reader is away")
        .expect("read b");
    assert!(got_b == b_data, "B's bytes differ");
    let mut got_a = Vec::new();
    tokio::time::timeout(LIMIT, a_in.read_to_end(&mut got_a))
        .await
        .expect("A's data")
        .expect("read a");
    assert!(got_a == a_data, "A's bytes differ");
    writer.await.expect("writer");
}

/// Counts its wake-ups.
#[derive(Default)]
struct WakeCount(AtomicUsize);

impl std::task::Wake for WakeCount {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// While a body waits for its own reader (its record still arriving on a slow link), other
/// readers that find it wake the connection task once, so it arms the hand-off's timer, and
/// not again: they may be its own protocol handlers, and would otherwise poll it in a loop.
#[tokio::test]
async fn readers_finding_a_body_handed_off_wake_the_connection_task_once() {
    let (mut m, mut raw) = muxer_and_raw_peer().await;
    for id in [1, 3] {
        raw_send(
            &mut raw,
            frame::Header::window_update(id, frame::SYN, 0),
            &[],
        )
        .await;
    }
    let mut a = accept(&mut m).await;
    let mut b = accept(&mut m).await;
    let conn = Arc::new(WakeCount::default());
    let conn_waker = std::task::Waker::from(conn.clone());
    let other = std::task::Waker::from(Arc::new(WakeCount::default()));
    let mut buf = [0u8; 4096];
    // The connection task and A's reader wait for data.
    assert!(
        m.poll_unpin(&mut Context::from_waker(&conn_waker))
            .is_pending()
    );
    let pending = Pin::new(&mut a).poll_read(&mut Context::from_waker(&other), &mut buf);
    assert!(pending.is_pending());
    // A's frame: its header and the first part of its body.
    let body = random_bytes(1000, 4);
    raw_send(&mut raw, frame::Header::data(1, 0, 1000), &body[..100]).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    // B's reader finds A's body: A's reader is woken, and the connection task once.
    let before = conn.0.load(Ordering::SeqCst);
    let mut cx = Context::from_waker(&other);
    assert!(Pin::new(&mut b).poll_read(&mut cx, &mut buf).is_pending());
    assert_eq!(conn.0.load(Ordering::SeqCst), before + 1);
    // The connection task arms the timer; B's reader, looking again, wakes nobody.
    assert!(
        m.poll_unpin(&mut Context::from_waker(&conn_waker))
            .is_pending()
    );
    let armed = conn.0.load(Ordering::SeqCst);
    for _ in 0..3 {
        assert!(Pin::new(&mut b).poll_read(&mut cx, &mut buf).is_pending());
    }
    assert_eq!(conn.0.load(Ordering::SeqCst), armed);
    // The rest of the body arrives: A reads all of it.
    drive(m);
    {
        use tokio::io::AsyncWriteExt as _;
        raw.write_all(&body[100..])
            .await
            .expect("the rest of the body");
    }
    raw_send(&mut raw, frame::Header::data(1, frame::FIN, 0), &[]).await;
    let mut got = Vec::new();
    tokio::time::timeout(LIMIT, a.read_to_end(&mut got))
        .await
        .expect("A's data within the limit")
        .expect("read a");
    assert_eq!(got, body);
}

/// With the socket full and a control frame queued, polling the connection registers its task
/// for the socket's next room instead of waking it at once (which polled it in a loop for as
/// long as the socket stayed full), and that room does wake it.
#[tokio::test]
async fn a_full_socket_parks_the_connection_task_until_it_has_room() {
    use tokio::io::AsyncReadExt as _;
    let (mut m, mut raw) = muxer_and_raw_peer().await;
    // The raw peer opens a stream with credit for far more than the socket holds, and reads
    // nothing yet.
    raw_send(
        &mut raw,
        frame::Header::window_update(1, frame::SYN, 64 << 20),
        &[],
    )
    .await;
    let mut s = accept(&mut m).await;
    // A ping: its pong will be queued behind the full socket.
    let ping = frame::Header {
        kind: frame::Kind::Ping,
        flags: frame::SYN,
        stream: 0,
        length: 7,
    };
    raw_send(&mut raw, ping, &[]).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Fill the socket (the stream's writes read no frames: the ping waits).
    let idle = std::task::Waker::from(Arc::new(WakeCount::default()));
    let chunk = vec![7u8; 1 << 20];
    let mut sent = 0usize;
    while sent < 64 << 20 {
        match Pin::new(&mut s).poll_write(&mut Context::from_waker(&idle), &chunk) {
            Poll::Ready(Ok(n)) => sent += n,
            Poll::Ready(Err(e)) => panic!("write: {e}"),
            Poll::Pending => break,
        }
    }
    assert!(sent < 64 << 20, "the socket never filled");
    let conn = Arc::new(WakeCount::default());
    let conn_waker = std::task::Waker::from(conn.clone());
    assert!(
        m.poll_unpin(&mut Context::from_waker(&conn_waker))
            .is_pending()
    );
    assert_eq!(
        conn.0.load(Ordering::SeqCst),
        0,
        "woken while the socket is full"
    );
    // The raw peer reads: the room it makes wakes the connection task.
    let mut buf = vec![0u8; 1 << 20];
    tokio::time::timeout(LIMIT, async {
        while conn.0.load(Ordering::SeqCst) == 0 {
            let n = raw.read(&mut buf).await.expect("read");
            assert!(n > 0, "the connection closed");
        }
    })
    .await
    .expect("woken once the socket has room");
}

/// A stream dropped unread is reset: the writer learns it, and the connection carries on.
#[tokio::test]
async fn a_stream_dropped_unread_is_reset() {
    let (mut incoming, listener_id, mut control) = connected(true, true).await;
    let server = tokio::spawn(async move {
        // The first stream is dropped unread; the second is echoed.
        let (_, first) = incoming.next().await.expect("first");
        drop(first);
        let (_, mut s) = incoming.next().await.expect("second");
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.expect("read");
        s.write_all(&got).await.expect("echo");
        s.close().await.expect("close");
    });
    tokio::time::timeout(LIMIT, async {
        let mut s = control
            .open_stream(listener_id, PROTOCOL)
            .await
            .expect("open");
        let data = random_bytes(4 << 20, 3);
        let err = s
            .write_all(&data)
            .await
            .expect_err("a reset stream refuses more data");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
        let mut s = control
            .open_stream(listener_id, PROTOCOL)
            .await
            .expect("open again");
        s.write_all(b"still here").await.expect("write");
        s.close().await.expect("close");
        let mut back = Vec::new();
        s.read_to_end(&mut back).await.expect("read");
        assert_eq!(back, b"still here");
    })
    .await
    .expect("within the limit");
    server.await.expect("server");
}

#[test]
fn a_full_frame_fills_one_noise_record() {
    assert_eq!(FRAME_BODY + HEADER_LEN, crate::mesh::noise::MAX_PLAIN);
    // Far below what receivers accept (`yamux` reads bodies of up to 1 MiB).
    const { assert!(FRAME_BODY < 1 << 20) };
}
