//! Noise for the mesh's TCP connections: libp2p's `/noise` protocol, wire-compatible with
//! `libp2p-noise` (and every other libp2p implementation), with a leaner transport phase.
//!
//! The handshake is the libp2p one: `Noise_XX_25519_ChaChaPoly_SHA256`, every message a
//! 2-byte big-endian length and its bytes, and a protobuf payload in messages 2 and 3 carrying
//! the sender's identity key and its signature over `"noise-libp2p-static-key:" || static DH
//! key`. `snow` runs it. The transport phase is ours: `libp2p-noise` moves each 64 KiB record
//! through three buffers on the way out (its send buffer, a sealing buffer, the framed
//! writer's) and two on the way in, and those copies cost about as much CPU as the cipher
//! itself (see docs/benchmarks.md). Here the cipher is the copy: a large write is sealed
//! straight from the caller's buffer into the buffer the record is sent from, and a record
//! that fits the reader's buffer is opened straight into it (ChaCha20-Poly1305 out of place,
//! aws-lc, the library QUIC's TLS already uses). Small writes are gathered and sealed together,
//! and a record that does not fit the reader is opened in the receive buffer and copied out in
//! pieces. Nonces count as Noise specifies (4 zero bytes, then a little-endian u64).
//!
//! Record boundaries carry no meaning in Noise, so this interoperates with any peer: a sender
//! that puts a Yamux header and its body in one record (as `libp2p-noise` with `yamux` does)
//! only takes the reader's copying path.

use std::{
    io,
    ops::Range,
    pin::Pin,
    task::{Context, Poll, ready},
};

use aws_lc_rs::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, future::BoxFuture};
use libp2p::{
    PeerId,
    core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo},
    identity,
};
use x25519_dalek::{X25519_BASEPOINT_BYTES, x25519};
use zeroize::{Zeroize, Zeroizing};

/// The protocol name multistream-select negotiates (the same as `libp2p-noise`'s).
pub const PROTOCOL: &str = "/noise";
const PARAMS: &str = "Noise_XX_25519_ChaChaPoly_SHA256";
const STATIC_KEY_DOMAIN: &[u8] = b"noise-libp2p-static-key:";
/// Largest Noise message: the 2-byte length prefix caps it.
const MAX_MESSAGE: usize = u16::MAX as usize;
const TAG_LEN: usize = 16;
/// Plaintext bytes per transport record.
pub(crate) const MAX_PLAIN: usize = MAX_MESSAGE - TAG_LEN;
/// Receive buffer: room for a few whole records, so one read syscall takes what has arrived
/// and a partial record rarely needs moving.
const RECV_BUF: usize = 4 * (2 + MAX_MESSAGE);
/// Send buffer: up to three whole records. A write need not wait for the record before it to
/// leave, and a Yamux frame (a gathered header record, then its body's record) fits behind one
/// that is still leaving, so a full socket holds the next frame's header back rather than
/// leaving the muxer a body to keep. It starts at one record and grows once a second is
/// needed: most connections never send that much, and fresh memory costs page faults.
const SEND_BUF: usize = 3 * (2 + MAX_MESSAGE);
/// Writes at least this long are sealed straight from the caller's buffer as records of their
/// own; shorter ones are gathered (an extra record costs 18 bytes and a cipher call, about
/// what copying a few KiB costs).
pub(crate) const DIRECT_WRITE: usize = 16 * 1024;
/// A peer that has not finished the handshake by then is cut off: a pending connection holds
/// one of the swarm's few pending-connection slots.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);
/// Largest handshake payload we accept (identity key, signature, extensions: well under 1 KiB
/// in practice).
const MAX_PAYLOAD: usize = 8 * 1024;

/// Why a Noise handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum NoiseError {
    #[error("noise i/o: {0}")]
    Io(#[from] io::Error),
    #[error("noise: {0}")]
    Snow(#[from] snow::Error),
    #[error("noise handshake payload: {0}")]
    Payload(&'static str),
    #[error("noise: remote identity key: {0}")]
    Key(#[from] identity::DecodingError),
    #[error("noise: the remote's signature over its static key does not verify")]
    BadSignature,
    #[error("noise: signing our static key: {0}")]
    Signing(#[from] identity::SigningError),
    #[error("noise: handshake not finished within {0:?}")]
    Timeout(std::time::Duration),
}

/// The security upgrade: use as `SwarmBuilder::with_tcp(tcp, noise::Config::new, ...)`.
#[derive(Clone)]
pub struct Config {
    /// The static X25519 secret, one per swarm as in `libp2p-noise`.
    dh_secret: Zeroizing<[u8; 32]>,
    /// Our handshake payload: identity key and its signature over the static DH key.
    payload: Vec<u8>,
    handshake_timeout: std::time::Duration,
}

impl Config {
    pub fn new(keypair: &identity::Keypair) -> Result<Self, NoiseError> {
        let mut secret = Zeroizing::new([0u8; 32]);
        fill_random(secret.as_mut())?;
        let public = x25519(*secret, X25519_BASEPOINT_BYTES);
        let signature = keypair.sign(&[STATIC_KEY_DOMAIN, public.as_slice()].concat())?;
        Ok(Self {
            dh_secret: secret,
            payload: encode_payload(&keypair.public().encode_protobuf(), &signature),
            handshake_timeout: HANDSHAKE_TIMEOUT,
        })
    }

    fn handshake_state(&self, initiator: bool) -> Result<snow::HandshakeState, NoiseError> {
        let params = PARAMS.parse()?;
        let builder = snow::Builder::with_resolver(params, Box::new(Resolver))
            .local_private_key(self.dh_secret.as_slice())?
            .prologue(&[])?;
        Ok(if initiator {
            builder.build_initiator()?
        } else {
            builder.build_responder()?
        })
    }

    async fn handshake<T>(self, io: T, initiator: bool) -> Result<(PeerId, Output<T>), NoiseError>
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        let limit = self.handshake_timeout;
        tokio::time::timeout(limit, self.run_handshake(io, initiator))
            .await
            .map_err(|_| NoiseError::Timeout(limit))?
    }

    /// The XX handshake: `-> e`, `<- e, ee, s, es + payload`, `-> s, se + payload`.
    async fn run_handshake<T>(
        self,
        mut io: T,
        initiator: bool,
    ) -> Result<(PeerId, Output<T>), NoiseError>
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        let mut hs = self.handshake_state(initiator)?;
        let mut msg = vec![0u8; MAX_MESSAGE];
        let mut payload = vec![0u8; MAX_MESSAGE];
        let remote = if initiator {
            let n = hs.write_message(&[], &mut msg)?;
            send_message(&mut io, &msg[..n]).await?;
            let n = recv_message(&mut io, &mut msg).await?;
            let p = hs.read_message(&msg[..n], &mut payload)?;
            let remote = RemotePayload::decode(&payload[..p])?;
            let n = hs.write_message(&self.payload, &mut msg)?;
            send_message(&mut io, &msg[..n]).await?;
            remote
        } else {
            let n = recv_message(&mut io, &mut msg).await?;
            if hs.read_message(&msg[..n], &mut payload)? != 0 {
                return Err(NoiseError::Payload("the first message must be empty"));
            }
            let n = hs.write_message(&self.payload, &mut msg)?;
            send_message(&mut io, &msg[..n]).await?;
            let n = recv_message(&mut io, &mut msg).await?;
            let p = hs.read_message(&msg[..n], &mut payload)?;
            RemotePayload::decode(&payload[..p])?
        };
        if !hs.is_handshake_finished() {
            return Err(NoiseError::Payload("handshake did not finish"));
        }
        let remote_static = hs
            .get_remote_static()
            .ok_or(NoiseError::Payload("no remote static key"))?
            .to_vec();
        let key = identity::PublicKey::try_decode_protobuf(&remote.identity_key)?;
        if !key.verify(
            &[STATIC_KEY_DOMAIN, remote_static.as_slice()].concat(),
            &remote.identity_sig,
        ) {
            return Err(NoiseError::BadSignature);
        }
        // Noise's Split(): the first key seals what the initiator sends.
        let (mut i2r, mut r2i) = hs.dangerously_get_raw_split();
        let (send, recv) = if initiator {
            (&i2r, &r2i)
        } else {
            (&r2i, &i2r)
        };
        let out = Output::new(io, send, recv);
        i2r.zeroize();
        r2i.zeroize();
        Ok((key.to_peer_id(), out?))
    }
}

impl UpgradeInfo for Config {
    type Info = &'static str;
    type InfoIter = std::iter::Once<Self::Info>;

    fn protocol_info(&self) -> Self::InfoIter {
        std::iter::once(PROTOCOL)
    }
}

impl<T> InboundConnectionUpgrade<T> for Config
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Output = (PeerId, Output<T>);
    type Error = NoiseError;
    type Future = BoxFuture<'static, Result<Self::Output, Self::Error>>;

    fn upgrade_inbound(self, socket: T, _: Self::Info) -> Self::Future {
        Box::pin(self.handshake(socket, false))
    }
}

impl<T> OutboundConnectionUpgrade<T> for Config
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Output = (PeerId, Output<T>);
    type Error = NoiseError;
    type Future = BoxFuture<'static, Result<Self::Output, Self::Error>>;

    fn upgrade_outbound(self, socket: T, _: Self::Info) -> Self::Future {
        Box::pin(self.handshake(socket, true))
    }
}

async fn send_message<T: AsyncWrite + Unpin>(io: &mut T, msg: &[u8]) -> io::Result<()> {
    let len = u16::try_from(msg.len()).map_err(|_| io::Error::other("noise message too long"))?;
    let mut framed = Vec::with_capacity(2 + msg.len());
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(msg);
    io.write_all(&framed).await?;
    io.flush().await
}

/// Reads exactly one length-prefixed message, and nothing past it: the transport phase
/// starts with whatever follows.
async fn recv_message<T: AsyncRead + Unpin>(io: &mut T, buf: &mut [u8]) -> io::Result<usize> {
    let mut len = [0u8; 2];
    io.read_exact(&mut len).await?;
    let len = usize::from(u16::from_be_bytes(len));
    let dst = buf
        .get_mut(..len)
        .ok_or_else(|| io::Error::other("noise message longer than the buffer"))?;
    io.read_exact(dst).await?;
    Ok(len)
}

// --- the handshake payload (protobuf `NoiseHandshakePayload`) ---

/// `identity_key = 1`, `identity_sig = 2` (both bytes); `extensions = 4` is not sent (it only
/// carries WebTransport certificate hashes) and ignored when received.
fn encode_payload(identity_key: &[u8], identity_sig: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(identity_key.len() + identity_sig.len() + 8);
    for (field, bytes) in [(1u64, identity_key), (2u64, identity_sig)] {
        put_varint(&mut out, (field << 3) | 2);
        put_varint(&mut out, bytes.len() as u64);
        out.extend_from_slice(bytes);
    }
    out
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn take_varint(b: &mut &[u8]) -> Result<u64, NoiseError> {
    let mut v = 0u64;
    for i in 0..10 {
        let (&byte, rest) = b
            .split_first()
            .ok_or(NoiseError::Payload("truncated varint"))?;
        *b = rest;
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return Ok(v);
        }
    }
    Err(NoiseError::Payload("varint longer than 10 bytes"))
}

fn take_bytes<'a>(b: &mut &'a [u8], n: u64) -> Result<&'a [u8], NoiseError> {
    let n = usize::try_from(n).map_err(|_| NoiseError::Payload("field too long"))?;
    if n > b.len() {
        return Err(NoiseError::Payload("field runs past the end"));
    }
    let (field, rest) = b.split_at(n);
    *b = rest;
    Ok(field)
}

#[derive(Debug, Default, PartialEq)]
struct RemotePayload {
    identity_key: Vec<u8>,
    identity_sig: Vec<u8>,
}

impl RemotePayload {
    fn decode(mut b: &[u8]) -> Result<Self, NoiseError> {
        if b.len() > MAX_PAYLOAD {
            return Err(NoiseError::Payload("payload too large"));
        }
        let mut out = RemotePayload::default();
        while !b.is_empty() {
            let key = take_varint(&mut b)?;
            match (key >> 3, key & 7) {
                (1, 2) => {
                    let n = take_varint(&mut b)?;
                    out.identity_key = take_bytes(&mut b, n)?.to_vec();
                }
                (2, 2) => {
                    let n = take_varint(&mut b)?;
                    out.identity_sig = take_bytes(&mut b, n)?.to_vec();
                }
                // Unknown fields (extensions among them) are skipped, as protobuf requires.
                (_, 0) => {
                    take_varint(&mut b)?;
                }
                (_, 1) => {
                    take_bytes(&mut b, 8)?;
                }
                (_, 2) => {
                    let n = take_varint(&mut b)?;
                    take_bytes(&mut b, n)?;
                }
                (_, 5) => {
                    take_bytes(&mut b, 4)?;
                }
                _ => return Err(NoiseError::Payload("unknown protobuf wire type")),
            }
        }
        if out.identity_key.is_empty() || out.identity_sig.is_empty() {
            return Err(NoiseError::Payload("identity key or signature missing"));
        }
        Ok(out)
    }
}

// --- snow's crypto: ring for hash and cipher, x25519-dalek for DH, the OS for randomness ---

fn fill_random(dest: &mut [u8]) -> Result<(), NoiseError> {
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), dest)
        .map_err(|_| NoiseError::Io(io::Error::other("the system random source failed")))
}

struct Resolver;

impl snow::resolvers::CryptoResolver for Resolver {
    fn resolve_rng(&self) -> Option<Box<dyn snow::types::Random>> {
        Some(Box::new(SystemRandom))
    }

    fn resolve_dh(&self, choice: &snow::params::DHChoice) -> Option<Box<dyn snow::types::Dh>> {
        matches!(choice, snow::params::DHChoice::Curve25519)
            .then(|| Box::new(X25519::default()) as Box<dyn snow::types::Dh>)
    }

    fn resolve_hash(
        &self,
        choice: &snow::params::HashChoice,
    ) -> Option<Box<dyn snow::types::Hash>> {
        snow::resolvers::RingResolver.resolve_hash(choice)
    }

    fn resolve_cipher(
        &self,
        choice: &snow::params::CipherChoice,
    ) -> Option<Box<dyn snow::types::Cipher>> {
        snow::resolvers::RingResolver.resolve_cipher(choice)
    }
}

struct SystemRandom;

impl snow::types::Random for SystemRandom {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        fill_random(dest).map_err(|_| snow::Error::Rng)
    }
}

#[derive(Default)]
struct X25519 {
    secret: Zeroizing<[u8; 32]>,
    public: [u8; 32],
}

impl X25519 {
    fn set_secret(&mut self, secret: [u8; 32]) {
        self.public = x25519(secret, X25519_BASEPOINT_BYTES);
        *self.secret = secret;
    }
}

impl snow::types::Dh for X25519 {
    fn name(&self) -> &'static str {
        "25519"
    }
    fn pub_len(&self) -> usize {
        32
    }
    fn priv_len(&self) -> usize {
        32
    }
    fn set(&mut self, privkey: &[u8]) {
        let mut secret = [0u8; 32];
        let n = privkey.len().min(32);
        secret[..n].copy_from_slice(&privkey[..n]);
        self.set_secret(secret);
        secret.zeroize();
    }
    fn generate(&mut self, rng: &mut dyn snow::types::Random) -> Result<(), snow::Error> {
        let mut secret = [0u8; 32];
        rng.try_fill_bytes(&mut secret)?;
        self.set_secret(secret);
        secret.zeroize();
        Ok(())
    }
    fn pubkey(&self) -> &[u8] {
        &self.public
    }
    fn privkey(&self) -> &[u8] {
        self.secret.as_slice()
    }
    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        let theirs: [u8; 32] = pubkey
            .get(..32)
            .and_then(|k| k.try_into().ok())
            .ok_or(snow::Error::Dh)?;
        let shared = Zeroizing::new(x25519(*self.secret, theirs));
        out.get_mut(..32)
            .ok_or(snow::Error::Dh)?
            .copy_from_slice(shared.as_slice());
        Ok(())
    }
}

// --- the transport phase ---

/// One direction's cipher: ChaCha20-Poly1305 with Noise's counter nonce.
struct Cipher {
    key: LessSafeKey,
    nonce: u64,
}

impl Cipher {
    fn new(key: &[u8; 32]) -> io::Result<Self> {
        let key = UnboundKey::new(&CHACHA20_POLY1305, key)
            .map_err(|_| io::Error::other("noise: bad cipher key"))?;
        Ok(Self {
            key: LessSafeKey::new(key),
            nonce: 0,
        })
    }

    fn next_nonce(&mut self) -> io::Result<Nonce> {
        // 2^64 - 1 is reserved by Noise; a connection that got there must end.
        if self.nonce == u64::MAX {
            return Err(io::Error::other("noise: nonce space exhausted"));
        }
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&self.nonce.to_le_bytes());
        self.nonce += 1;
        Ok(Nonce::assume_unique_for_key(n))
    }
}

/// An established Noise session over `T`: bytes written are sealed in records of up to 65,519
/// bytes (sent on `flush`, when a record is full, or at once for a large write), bytes read are
/// opened and checked.
pub struct Output<T> {
    io: T,
    send: Cipher,
    recv: Cipher,
    /// Sealed records in `wout`, followed at `wrec` by the record being gathered:
    /// `[len: 2][plaintext ...]`, sealed in place once full or flushed.
    wbuf: Vec<u8>,
    /// Sealed bytes the socket has not taken yet; always ends at `wrec`.
    wout: Range<usize>,
    /// Where the record being gathered starts.
    wrec: usize,
    /// Plaintext bytes gathered at `wrec + 2`, not yet sealed.
    wplain: usize,
    rbuf: Box<[u8]>,
    /// Received bytes not yet opened; starts at a record boundary.
    rraw: Range<usize>,
    /// Opened bytes not yet read.
    rplain: Range<usize>,
}

impl<T> Output<T> {
    fn new(io: T, send: &[u8; 32], recv: &[u8; 32]) -> io::Result<Self> {
        Ok(Self {
            io,
            send: Cipher::new(send)?,
            recv: Cipher::new(recv)?,
            wbuf: vec![0u8; 2 + MAX_MESSAGE],
            wout: 0..0,
            wrec: 0,
            wplain: 0,
            rbuf: vec![0u8; RECV_BUF].into_boxed_slice(),
            rraw: 0..0,
            rplain: 0..0,
        })
    }

    /// Seals the gathered plaintext in place and queues the record for the socket.
    fn seal_gathered(&mut self) -> io::Result<()> {
        let (at, n) = (self.wrec, self.wplain);
        let nonce = self.send.next_nonce()?;
        let tag = self
            .send
            .key
            .seal_in_place_separate_tag(nonce, Aad::empty(), &mut self.wbuf[at + 2..at + 2 + n])
            .map_err(|_| io::Error::other("noise: sealing failed"))?;
        self.wbuf[at + 2 + n..at + 2 + n + TAG_LEN].copy_from_slice(tag.as_ref());
        self.queue_record(n);
        self.wplain = 0;
        Ok(())
    }

    /// Seals `plain` (at most [`MAX_PLAIN`] bytes, with nothing gathered) straight from the
    /// caller's buffer into a record at `wrec`, and queues it.
    fn seal_direct(&mut self, plain: &[u8]) -> io::Result<()> {
        let (at, n) = (self.wrec, plain.len());
        let nonce = self.send.next_nonce()?;
        let (out, tag) = self.wbuf[at + 2..at + 2 + n + TAG_LEN].split_at_mut(n);
        self.send
            .key
            .seal_out_of_place_scatter(nonce, Aad::empty(), plain, out, &[], tag)
            .map_err(|_| io::Error::other("noise: sealing failed"))?;
        self.queue_record(n);
        Ok(())
    }

    /// Writes the length of the record sealed at `wrec` (`n` plaintext bytes) and moves it
    /// into `wout`.
    fn queue_record(&mut self, n: usize) {
        let at = self.wrec;
        // n <= MAX_PLAIN, so the record fits the 2-byte length.
        self.wbuf[at..at + 2].copy_from_slice(&((n + TAG_LEN) as u16).to_be_bytes());
        self.wrec = at + 2 + n + TAG_LEN;
        self.wout.end = self.wrec;
    }

    /// Whether a whole record fits at `wrec`.
    fn has_room(&self) -> bool {
        SEND_BUF - self.wrec >= 2 + MAX_MESSAGE
    }

    /// The next whole record in `rraw`: where its ciphertext starts, and its length with the
    /// tag; `None` until all of it has arrived.
    fn next_record(&self) -> io::Result<Option<(usize, usize)>> {
        let raw = &self.rbuf[self.rraw.clone()];
        if raw.len() < 2 {
            return Ok(None);
        }
        let len = usize::from(u16::from_be_bytes([raw[0], raw[1]]));
        if raw.len() < 2 + len {
            return Ok(None);
        }
        if len < TAG_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "noise: record shorter than its tag",
            ));
        }
        Ok(Some((self.rraw.start + 2, len)))
    }

    /// Opens the record at `start` (`len` bytes with its tag) into `out`, which is exactly as
    /// long as its plaintext.
    fn open_into(&mut self, start: usize, len: usize, out: &mut [u8]) -> io::Result<()> {
        let nonce = self.recv.next_nonce()?;
        let (ct, tag) = self.rbuf[start..start + len].split_at(len - TAG_LEN);
        self.recv
            .key
            .open_separate_gather(nonce, Aad::empty(), ct, tag, out)
            .map_err(|_| decryption_failed())?;
        self.rraw.start = start + len;
        Ok(())
    }

    /// Opens the record at `start` in the receive buffer; its plaintext becomes `rplain`.
    fn open_in_place(&mut self, start: usize, len: usize) -> io::Result<()> {
        let nonce = self.recv.next_nonce()?;
        let plain = self
            .recv
            .key
            .open_in_place(nonce, Aad::empty(), &mut self.rbuf[start..start + len])
            .map_err(|_| decryption_failed())?
            .len();
        self.rplain = start..start + plain;
        self.rraw.start = start + len;
        Ok(())
    }
}

fn decryption_failed() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "noise: decryption failed")
}

impl<T: AsyncWrite + Unpin> Output<T> {
    /// Writes out the sealed records, if any.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.wout.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.wbuf[self.wout.clone()]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.wout.start += n;
        }
        // All sent: with nothing gathered, the next record starts at the front.
        if self.wplain == 0 {
            self.wrec = 0;
            self.wout = 0..0;
        }
        Poll::Ready(Ok(()))
    }

    /// Starts sending what is sealed; if the socket is full, a later call waits for it.
    fn start_drain(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.poll_drain(cx) {
            Poll::Ready(Err(e)) => Err(e),
            _ => Ok(()),
        }
    }

    /// Waits until a whole record fits at `wrec` (if the buffer is full, until everything
    /// sealed is out and the next record starts at the front), growing the buffer for it.
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.has_room() {
            // A record is only started where it fits, and sealed before `wrec` moves on.
            debug_assert_eq!(self.wplain, 0);
            ready!(self.poll_drain(cx))?;
        }
        if self.wbuf.len() < self.wrec + 2 + MAX_MESSAGE {
            self.wbuf.resize(SEND_BUF, 0);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Output<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            if !this.rplain.is_empty() || buf.is_empty() {
                let n = buf.len().min(this.rplain.len());
                buf[..n].copy_from_slice(&this.rbuf[this.rplain.start..this.rplain.start + n]);
                this.rplain.start += n;
                return Poll::Ready(Ok(n));
            }
            if let Some((start, len)) = this.next_record()? {
                let plain = len - TAG_LEN;
                if plain > 0 && plain <= buf.len() {
                    this.open_into(start, len, &mut buf[..plain])?;
                    return Poll::Ready(Ok(plain));
                }
                // Too long for the reader, or empty (which opens to nothing: look for the next).
                this.open_in_place(start, len)?;
                continue;
            }
            // Need more bytes. Nothing opened is pending, so the buffer can be rearranged:
            // move the partial record to the front when a whole record might not fit after it.
            if this.rraw.is_empty() {
                this.rraw = 0..0;
            } else if RECV_BUF - this.rraw.start < 2 + MAX_MESSAGE {
                let len = this.rraw.len();
                this.rbuf.copy_within(this.rraw.clone(), 0);
                this.rraw = 0..len;
            }
            let end = this.rraw.end;
            let n = ready!(Pin::new(&mut this.io).poll_read(cx, &mut this.rbuf[end..]))?;
            if n == 0 {
                return Poll::Ready(if this.rraw.is_empty() {
                    Ok(0)
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "noise: connection closed inside a record",
                    ))
                });
            }
            this.rraw.end += n;
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Output<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        ready!(this.poll_room(cx))?;
        if buf.len() >= DIRECT_WRITE {
            if this.wplain > 0 {
                // What was gathered goes first, as a record of its own.
                this.seal_gathered()?;
                ready!(this.poll_room(cx))?;
            }
            let n = buf.len().min(MAX_PLAIN);
            this.seal_direct(&buf[..n])?;
            this.start_drain(cx)?;
            return Poll::Ready(Ok(n));
        }
        let n = buf.len().min(MAX_PLAIN - this.wplain);
        let at = this.wrec + 2 + this.wplain;
        this.wbuf[at..at + n].copy_from_slice(&buf[..n]);
        this.wplain += n;
        if this.wplain == MAX_PLAIN {
            this.seal_gathered()?;
            this.start_drain(cx)?;
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.wplain > 0 {
            this.seal_gathered()?;
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.get_mut().io).poll_close(cx)
    }
}

#[cfg(test)]
mod tests;
