use futures::{AsyncReadExt as _, AsyncWriteExt as _, io::Cursor};
use libp2p::core::upgrade::{InboundConnectionUpgrade as _, OutboundConnectionUpgrade as _};
use libp2p::tcp::tokio::TcpStream;
use std::time::Duration;

use super::*;

const LIMIT: Duration = Duration::from_secs(20);

async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (dialed, accepted) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
    (TcpStream(dialed.unwrap()), TcpStream(accepted.unwrap().0))
}

/// Bytes whose every 64 KiB record differs, so a misplaced or repeated record shows.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Writes `data` in writes of varying size (1 byte to 200 KiB), flushing now and then.
async fn send_all<W: AsyncWrite + Unpin>(w: &mut W, data: &[u8]) {
    let sizes = [1usize, 7, 4096, 65_519, 65_520, 200_000, 333, 131_072];
    let mut at = 0;
    for (i, size) in sizes.iter().cycle().enumerate() {
        if at >= data.len() {
            break;
        }
        let end = (at + size).min(data.len());
        w.write_all(&data[at..end]).await.unwrap();
        at = end;
        if i % 3 == 0 {
            w.flush().await.unwrap();
        }
    }
    w.flush().await.unwrap();
}

async fn recv_exact<R: AsyncRead + Unpin>(r: &mut R, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut at = 0;
    let sizes = [3usize, 70_000, 1, 16_384, 300_000];
    for size in sizes.iter().cycle() {
        if at == len {
            break;
        }
        let end = (at + size).min(len);
        let n = r.read(&mut out[at..end]).await.unwrap();
        assert!(n > 0, "early end of stream at {at} of {len}");
        at += n;
    }
    out
}

/// Both directions at once over one session pair, then a clean close.
async fn exchange<A, B>(mut a: A, mut b: B, len: usize)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (to_b, to_a) = (pattern(len, 1), pattern(len + 5, 2));
    let ((), got_b, (), got_a) = {
        let (mut ar, mut aw) = (&mut a).split();
        let (mut br, mut bw) = (&mut b).split();
        tokio::join!(
            send_all(&mut aw, &to_b),
            recv_exact(&mut br, to_b.len()),
            send_all(&mut bw, &to_a),
            recv_exact(&mut ar, to_a.len()),
        )
    };
    assert!(got_b == to_b, "a -> b bytes differ");
    assert!(got_a == to_a, "b -> a bytes differ");
    a.close().await.unwrap();
    let mut rest = Vec::new();
    b.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "bytes after close");
}

#[tokio::test]
async fn interoperates_with_libp2p_noise_in_both_roles() {
    let (ours, theirs) = (
        identity::Keypair::generate_ed25519(),
        identity::Keypair::generate_secp256k1(),
    );
    // Ours dials, libp2p-noise answers.
    let (dialer, listener) = tcp_pair().await;
    let (a, b) = tokio::time::timeout(LIMIT, async {
        tokio::join!(
            Config::new(&ours)
                .unwrap()
                .upgrade_outbound(dialer, PROTOCOL),
            libp2p::noise::Config::new(&theirs)
                .unwrap()
                .upgrade_inbound(listener, "/noise"),
        )
    })
    .await
    .unwrap();
    let ((seen_by_ours, a), (seen_by_theirs, b)) = (a.unwrap(), b.unwrap());
    assert_eq!(seen_by_ours, theirs.public().to_peer_id());
    assert_eq!(seen_by_theirs, ours.public().to_peer_id());
    tokio::time::timeout(LIMIT, exchange(a, b, 3 << 20))
        .await
        .unwrap();

    // libp2p-noise dials, ours answers.
    let (dialer, listener) = tcp_pair().await;
    let (a, b) = tokio::time::timeout(LIMIT, async {
        tokio::join!(
            libp2p::noise::Config::new(&theirs)
                .unwrap()
                .upgrade_outbound(dialer, "/noise"),
            Config::new(&ours)
                .unwrap()
                .upgrade_inbound(listener, PROTOCOL),
        )
    })
    .await
    .unwrap();
    let ((seen_by_theirs, a), (seen_by_ours, b)) = (a.unwrap(), b.unwrap());
    assert_eq!(seen_by_ours, theirs.public().to_peer_id());
    assert_eq!(seen_by_theirs, ours.public().to_peer_id());
    tokio::time::timeout(LIMIT, exchange(a, b, 3 << 20))
        .await
        .unwrap();
}

#[tokio::test]
async fn ours_to_ours_keeps_every_byte() {
    let (x, y) = (
        identity::Keypair::generate_ed25519(),
        identity::Keypair::generate_ed25519(),
    );
    let (dialer, listener) = tcp_pair().await;
    let (a, b) = tokio::join!(
        Config::new(&x).unwrap().upgrade_outbound(dialer, PROTOCOL),
        Config::new(&y).unwrap().upgrade_inbound(listener, PROTOCOL),
    );
    let ((_, a), (_, b)) = (a.unwrap(), b.unwrap());
    tokio::time::timeout(LIMIT, exchange(a, b, 5 << 20))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_forged_static_key_signature_fails_the_handshake() {
    let (x, y) = (
        identity::Keypair::generate_ed25519(),
        identity::Keypair::generate_ed25519(),
    );
    // The responder presents y's identity and a valid signature, but over another static key.
    let mut forged = Config::new(&y).unwrap();
    forged.dh_secret = Config::new(&y).unwrap().dh_secret;
    let (dialer, listener) = tcp_pair().await;
    let (a, _b) = tokio::time::timeout(LIMIT, async {
        tokio::join!(
            Config::new(&x).unwrap().upgrade_outbound(dialer, PROTOCOL),
            forged.upgrade_inbound(listener, PROTOCOL),
        )
    })
    .await
    .unwrap();
    assert!(matches!(a, Err(NoiseError::BadSignature)), "{:?}", a.err());
}

#[tokio::test]
async fn garbage_instead_of_a_handshake_is_an_error() {
    let y = identity::Keypair::generate_ed25519();
    for garbage in [pattern(300, 9), vec![0xff, 0xff, 1, 2, 3], vec![0, 0]] {
        let (mut dialer, listener) = tcp_pair().await;
        let responder = tokio::spawn(Config::new(&y).unwrap().upgrade_inbound(listener, PROTOCOL));
        dialer.write_all(&garbage).await.unwrap();
        dialer.close().await.unwrap();
        let got = tokio::time::timeout(LIMIT, responder)
            .await
            .unwrap()
            .unwrap();
        assert!(
            got.is_err(),
            "garbage {:?} accepted",
            &garbage[..garbage.len().min(8)]
        );
    }
}

#[tokio::test]
async fn a_peer_that_stalls_its_handshake_is_cut_off() {
    let y = identity::Keypair::generate_ed25519();
    let mut config = Config::new(&y).unwrap();
    config.handshake_timeout = Duration::from_millis(200);
    let (mut dialer, listener) = tcp_pair().await;
    // Half a first message, then silence.
    dialer.write_all(&[0, 32, 1, 2, 3]).await.unwrap();
    let got = tokio::time::timeout(LIMIT, config.upgrade_inbound(listener, PROTOCOL))
        .await
        .unwrap();
    assert!(
        matches!(got, Err(NoiseError::Timeout(_))),
        "{:?}",
        got.err()
    );
    drop(dialer);
}

/// A session's records, written to memory with `key`.
async fn sealed(key: &[u8; 32], data: &[u8]) -> Vec<u8> {
    let mut w = Output::new(Cursor::new(Vec::new()), key, &[0u8; 32]).unwrap();
    send_all(&mut w, data).await;
    w.io.into_inner()
}

async fn open_all(key: &[u8; 32], wire: Vec<u8>) -> io::Result<Vec<u8>> {
    let mut r = Output::new(Cursor::new(wire), &[0u8; 32], key).unwrap();
    let mut out = Vec::new();
    r.read_to_end(&mut out).await?;
    Ok(out)
}

#[tokio::test]
async fn records_round_trip_and_tampering_is_refused() {
    let key = [7u8; 32];
    let data = pattern(300_000, 3);
    let wire = sealed(&key, &data).await;
    assert!(wire.len() > data.len() && wire.len() < data.len() + 64 * 22);
    assert_eq!(open_all(&key, wire.clone()).await.unwrap(), data);

    // A flipped bit anywhere in a record: decryption fails, nothing forged comes out.
    for at in [2, 1000, wire.len() / 2, wire.len() - 1] {
        let mut bad = wire.clone();
        bad[at] ^= 0x10;
        let err = open_all(&key, bad).await.unwrap_err();
        assert!(
            matches!(
                err.kind(),
                io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
            ),
            "{err}"
        );
    }
    // A record replayed or dropped: the nonce no longer matches.
    let first = 2 + usize::from(u16::from_be_bytes([wire[0], wire[1]]));
    let replayed = [&wire[..first], &wire[..]].concat();
    assert_eq!(
        open_all(&key, replayed).await.unwrap_err().kind(),
        io::ErrorKind::InvalidData
    );
    assert_eq!(
        open_all(&key, wire[first..].to_vec())
            .await
            .unwrap_err()
            .kind(),
        io::ErrorKind::InvalidData
    );
    // Cut inside a record: an error, not a silent short read.
    let err = open_all(&key, wire[..wire.len() - 5].to_vec())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    // A record too short to hold its tag.
    let err = open_all(&key, vec![0, 3, 1, 2, 3]).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    // The wrong key.
    assert!(open_all(&[8u8; 32], wire).await.is_err());
}

/// A large write is sealed straight from the caller's buffer as a record of its own (after
/// what was gathered before it, sealed as one), and a record that fits the reader's buffer is
/// opened straight into it; one that does not is opened in place and read out in pieces.
#[tokio::test]
async fn large_writes_are_records_of_their_own_and_open_into_the_reader() {
    let key = [9u8; 32];
    let (header, body, big) = (
        pattern(12, 4),
        pattern(MAX_PLAIN - 12, 5),
        pattern(3 * MAX_PLAIN + 100, 6),
    );
    let mut w = Output::new(Cursor::new(Vec::new()), &key, &[0u8; 32]).unwrap();
    for part in [&header, &body, &big] {
        w.write_all(part).await.unwrap();
    }
    w.flush().await.unwrap();
    let wire = w.io.into_inner();
    let mut plains = Vec::new();
    let mut at = 0;
    while at < wire.len() {
        let len = usize::from(u16::from_be_bytes([wire[at], wire[at + 1]]));
        plains.push(len - TAG_LEN);
        at += 2 + len;
    }
    assert_eq!(
        plains,
        [12, MAX_PLAIN - 12, MAX_PLAIN, MAX_PLAIN, MAX_PLAIN, 100]
    );

    let mut r = Output::new(Cursor::new(wire), &[0u8; 32], &key).unwrap();
    // Buffers the size of each record: each opens straight into it, nothing is left over.
    for expect in [&header, &body] {
        let mut buf = vec![0u8; expect.len()];
        assert_eq!(r.read(&mut buf).await.unwrap(), expect.len());
        assert!(r.rplain.is_empty());
        assert_eq!(&buf, expect);
    }
    let mut buf = vec![0u8; MAX_PLAIN + 5];
    assert_eq!(r.read(&mut buf).await.unwrap(), MAX_PLAIN);
    assert_eq!(buf[..MAX_PLAIN], big[..MAX_PLAIN]);
    // A small buffer: the record is opened in place and handed out in pieces.
    let mut rest = Vec::new();
    let mut piece = [0u8; 1000];
    loop {
        let n = r.read(&mut piece).await.unwrap();
        if n == 0 {
            break;
        }
        rest.extend_from_slice(&piece[..n]);
    }
    assert_eq!(rest, big[MAX_PLAIN..]);
}

#[test]
fn handshake_payload_encodes_and_rejects_malformed_input() {
    let p = encode_payload(b"key bytes", b"signature");
    assert_eq!(
        RemotePayload::decode(&p).unwrap(),
        RemotePayload {
            identity_key: b"key bytes".to_vec(),
            identity_sig: b"signature".to_vec()
        }
    );
    // Unknown fields of every wire type (extensions among them) are skipped.
    let mut extended = p.clone();
    extended.extend_from_slice(&[0x22, 2, 0x0a, 0]); // field 4, length-delimited
    extended.extend_from_slice(&[0x28, 0x96, 0x01]); // field 5, varint
    extended.extend_from_slice(&[0x31, 1, 2, 3, 4, 5, 6, 7, 8]); // field 6, fixed64
    extended.extend_from_slice(&[0x3d, 1, 2, 3, 4]); // field 7, fixed32
    assert!(RemotePayload::decode(&extended).is_ok());

    for bad in [
        vec![],                                   // nothing
        encode_payload(b"key", b""),              // no signature
        p[..p.len() - 1].to_vec(),                // truncated
        vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f], // length past the end
        vec![0x0a; 11],                           // runaway varint
        [p.clone(), vec![0x0b]].concat(),         // wire type 3 (groups)
        vec![0x0a; MAX_PAYLOAD + 1],              // oversized
    ] {
        assert!(RemotePayload::decode(&bad).is_err(), "{bad:?} accepted");
    }
}
