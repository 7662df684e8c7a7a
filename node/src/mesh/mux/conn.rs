//! One Yamux connection's state, shared by the muxer and its streams behind one lock.
//!
//! There is no connection task of its own: whoever polls (a stream's reader or writer, or
//! libp2p's connection task through the muxer) reads and writes the connection under the lock.
//! A task that finds the lock taken waits as a task, not on its thread (`super::shared`).
//! That is what saves the copies: a reader whose stream's data is next on the connection reads
//! it straight from the Noise session into its own buffer, and a writer's bytes go straight to
//! the Noise session, to be sealed from where they lie. Data for a stream whose reader is not
//! the one polling is kept in that stream's [`RecvBuf`] until it reads.
//!
//! Who reads first is a race: the socket wakes the waiting reader and libp2p's connection task
//! alike. So a body whose stream's reader is waiting is handed off: whoever else meets it leaves
//! it in the socket and wakes that reader, unless the reader does not come within
//! `HANDOFF_GRACE` (it may have stopped waiting), after which the body is kept for it as any
//! other. In the link benchmark this takes the share of bytes read without a copy from about
//! half to over 90%.
//!
//! Reading frames is in `read`; several tasks may wait on the socket at once, so it is polled
//! through [`Waiters`], which wake every task that found it not ready.

use std::{
    collections::{HashMap, VecDeque},
    io,
    pin::Pin,
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

use futures::{AsyncRead, AsyncWrite, Future as _, ready};

use super::{
    frame::{
        DEFAULT_CREDIT, FIN, GO_AWAY_NORMAL, GO_AWAY_PROTOCOL_ERROR, HEADER_LEN, Header, Kind, RST,
        SYN,
    },
    recv_buf::RecvBuf,
    wakers::Waiters,
};
use crate::mesh::noise::{DIRECT_WRITE, MAX_PLAIN};

mod read;

pub use read::read_path_bytes;
use read::{READ_HEADER, Read, ReadState};

/// Streams open at once (as `yamux`'s default); a peer's stream beyond it is reset.
pub(super) const MAX_STREAMS: usize = 512;
/// Inbound streams held while the node does not take them; beyond this a new one is reset.
pub(super) const MAX_BUFFERED_INBOUND: usize = 256;
/// Receive window of a stream whose reader has started reading. Until then a stream keeps the
/// spec's 256 KiB, so streams nobody reads hold little memory.
pub(super) const RECV_WINDOW: u32 = 4 * 1024 * 1024;
/// How long a body waits in the socket for its own reader once that reader was woken for it.
const HANDOFF_GRACE: Duration = Duration::from_millis(5);
/// A data frame's largest body: fits one Noise record, with its 12-byte header too (gathered
/// with it, as a peer's Noise may).
pub const FRAME_BODY: usize = MAX_PLAIN - HEADER_LEN;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    /// Dialer: odd stream ids.
    Client,
    /// Listener: even stream ids.
    Server,
}

#[derive(Debug)]
struct StreamState {
    recv: RecvBuf,
    /// Bytes the remote may still send us.
    recv_credit: u32,
    /// Bytes our reader took since we last gave credit back.
    unacked: u32,
    /// The receive window we keep up for this stream.
    window: u32,
    send_credit: u32,
    sent_fin: bool,
    recv_fin: bool,
    reset: bool,
    reader: Option<Waker>,
    writer: Option<Waker>,
    /// The reader is waiting for data (its last poll found none).
    parked: bool,
}

impl StreamState {
    fn new() -> Self {
        Self {
            recv: RecvBuf::default(),
            recv_credit: DEFAULT_CREDIT,
            unacked: 0,
            window: DEFAULT_CREDIT,
            send_credit: DEFAULT_CREDIT,
            sent_fin: false,
            recv_fin: false,
            reset: false,
            reader: None,
            writer: None,
            parked: false,
        }
    }

    fn wake_reader(&mut self) {
        if let Some(w) = self.reader.take() {
            w.wake();
        }
    }

    fn wake_writer(&mut self) {
        if let Some(w) = self.writer.take() {
            w.wake();
        }
    }
}

pub(super) struct Inner<C> {
    io: C,
    mode: Mode,
    next_id: u32,
    streams: HashMap<u32, StreamState>,
    inbound: VecDeque<u32>,
    inbound_waker: Option<Waker>,
    outbound_waker: Option<Waker>,
    conn_waker: Option<Waker>,
    read: ReadState,
    reading: Waiters,
    writing: Waiters,
    /// Control frames, and the rest of a data frame the socket did not take at once: written
    /// before anything else.
    wqueue: Vec<u8>,
    wqueue_at: usize,
    /// Queued or written bytes that must be flushed (control frames, partial records).
    flush_due: bool,
    /// Plaintext bytes in the Noise record being filled, so data frames can end where a
    /// record does (only an estimate beneath another security layer; then it costs nothing
    /// but alignment).
    record_fill: usize,
    failed: Option<(io::ErrorKind, String)>,
    go_away_sent: bool,
    scratch: Vec<u8>,
    /// Since when the body being read waits for its own reader (see `poll_frames`).
    handoff: Option<Instant>,
    /// Who waits for that body to be taken.
    body_waiters: Vec<Waker>,
    /// Wakes the connection task when a hand-off's grace ends.
    handoff_timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Whether the connection task has armed `handoff_timer` for the current handoff.
    handoff_armed: bool,
    /// Hand-offs need tokio's timer; without a runtime every body is read by whoever polls.
    can_hand_off: bool,
}

impl<C> Inner<C> {
    pub(super) fn new(io: C, mode: Mode) -> Self {
        Self {
            io,
            mode,
            next_id: match mode {
                Mode::Client => 1,
                Mode::Server => 2,
            },
            streams: HashMap::new(),
            inbound: VecDeque::new(),
            inbound_waker: None,
            outbound_waker: None,
            conn_waker: None,
            read: READ_HEADER,
            reading: Waiters::new(),
            writing: Waiters::new(),
            wqueue: Vec::new(),
            wqueue_at: 0,
            flush_due: false,
            record_fill: 0,
            failed: None,
            go_away_sent: false,
            scratch: Vec::new(),
            handoff: None,
            body_waiters: Vec::new(),
            handoff_timer: None,
            handoff_armed: false,
            can_hand_off: tokio::runtime::Handle::try_current().is_ok(),
        }
    }

    fn failure(&self) -> Option<io::Error> {
        self.failed
            .as_ref()
            .map(|(kind, msg)| io::Error::new(*kind, msg.clone()))
    }

    /// Ends the connection: every waiting task is woken to see the error.
    fn fail(&mut self, e: io::Error) -> io::Error {
        if self.failed.is_none() {
            self.failed = Some((e.kind(), e.to_string()));
            for s in self.streams.values_mut() {
                s.wake_reader();
                s.wake_writer();
            }
            for w in [
                self.inbound_waker.take(),
                self.outbound_waker.take(),
                self.conn_waker.take(),
            ]
            .into_iter()
            .flatten()
            .chain(self.body_waiters.drain(..))
            {
                w.wake();
            }
        }
        e
    }

    /// Queues our GoAway (once: after it no stream is opened or accepted).
    fn go_away(&mut self, code: u32) {
        if !self.go_away_sent {
            self.go_away_sent = true;
            self.queue(Header {
                kind: Kind::GoAway,
                flags: 0,
                stream: 0,
                length: code,
            });
        }
    }

    fn protocol_error(&mut self, what: impl Into<String>) -> io::Error {
        self.go_away(GO_AWAY_PROTOCOL_ERROR);
        self.fail(io::Error::new(io::ErrorKind::InvalidData, what.into()))
    }

    fn queue(&mut self, h: Header) {
        self.wqueue.extend_from_slice(&h.encode());
        self.flush_due = true;
    }

    /// Follows what `mesh::noise` does with a write of `n` bytes: one of [`DIRECT_WRITE`] bytes
    /// or more is sealed as a record of its own, after what was gathered before it; a shorter
    /// one is gathered.
    fn written(&mut self, n: usize) {
        self.record_fill = if n >= DIRECT_WRITE {
            0
        } else {
            (self.record_fill + n) % MAX_PLAIN
        };
    }

    /// The body being read is done with (taken, or its stream gone).
    fn end_body(&mut self) {
        self.handoff = None;
        self.handoff_armed = false;
        for w in self.body_waiters.drain(..) {
            w.wake();
        }
    }

    fn wake_conn(&mut self) {
        if let Some(w) = self.conn_waker.take() {
            w.wake();
        }
    }

    /// Gives the remote credit for what our reader took, in steps of half the window (fewer
    /// window updates; the other half keeps data flowing meanwhile).
    fn credit_back(&mut self, id: u32, n: usize) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        s.unacked = s.unacked.saturating_add(n as u32);
        if s.recv_fin || s.reset || s.unacked < s.window / 2 {
            return;
        }
        let delta = std::mem::take(&mut s.unacked);
        s.recv_credit = s.recv_credit.saturating_add(delta);
        self.queue(Header::window_update(id, 0, delta));
    }

    /// Raises a stream's window once its reader reads.
    fn grow_window(&mut self, id: u32) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if s.window >= RECV_WINDOW || s.recv_fin || s.reset {
            return;
        }
        let extra = RECV_WINDOW - s.window;
        s.window = RECV_WINDOW;
        s.recv_credit = s.recv_credit.saturating_add(extra);
        self.queue(Header::window_update(id, 0, extra));
    }

    /// The stream's handle is gone: close or reset it as `yamux` does, and forget it.
    pub(super) fn drop_stream(&mut self, id: u32) {
        let Some(s) = self.streams.remove(&id) else {
            return;
        };
        if self.failed.is_none() && !s.reset && !s.sent_fin {
            let flag = if s.recv_fin { FIN } else { RST };
            self.queue(Header::data(id, flag, 0));
        }
        if let Some(w) = self.outbound_waker.take() {
            w.wake();
        }
        // The connection task sends what was queued.
        self.wake_conn();
    }
}

impl<C: AsyncRead + AsyncWrite + Unpin> Inner<C> {
    /// Writes the queued frames out and flushes them.
    pub(super) fn poll_send_queue(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.wqueue_at < self.wqueue.len() {
            let io = &mut self.io;
            let bytes = &self.wqueue[self.wqueue_at..];
            let n = match ready!(
                self.writing
                    .poll(cx, |c| Pin::new(&mut *io).poll_write(c, bytes))
            ) {
                Ok(0) => return Poll::Ready(Err(self.fail(io::ErrorKind::WriteZero.into()))),
                Ok(n) => n,
                Err(e) => return Poll::Ready(Err(self.fail(e))),
            };
            self.wqueue_at += n;
            self.written(n);
        }
        self.wqueue.clear();
        self.wqueue_at = 0;
        if self.flush_due {
            ready!(self.poll_io_flush(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_io_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let io = &mut self.io;
        if let Err(e) = ready!(self.writing.poll(cx, |c| Pin::new(&mut *io).poll_flush(c))) {
            return Poll::Ready(Err(self.fail(e)));
        }
        self.flush_due = false;
        self.record_fill = 0;
        Poll::Ready(Ok(()))
    }

    /// Sends what is queued if the socket takes it now. Otherwise the caller and the connection
    /// task are woken when the socket has room, and whichever polls first sends the rest: the
    /// caller may not come back for it. (Waking the connection task now instead would poll it
    /// in a loop for as long as the socket stays full.)
    fn try_send_queue(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if let Poll::Ready(r) = self.poll_send_queue(cx) {
            return r;
        }
        // With no waker kept, the connection task has been woken already and will poll.
        if let Some(w) = &self.conn_waker {
            self.writing.register(w);
            // Room made before it was registered is not missed.
            if let Poll::Ready(r) = self.poll_send_queue(cx) {
                return r;
            }
        }
        Ok(())
    }

    pub(super) fn poll_read_stream(
        &mut self,
        cx: &mut Context<'_>,
        id: u32,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(s) = self.streams.get_mut(&id) {
            s.parked = false;
        }
        // Window updates we owe go out first, even when the socket cannot take them now.
        let _ = self.try_send_queue(cx);
        loop {
            let Some(s) = self.streams.get_mut(&id) else {
                return Poll::Ready(Err(io::Error::other("yamux: unknown stream")));
            };
            if !s.recv.is_empty() {
                let n = s.recv.take(buf);
                self.credit_back(id, n);
                let _ = self.try_send_queue(cx);
                return Poll::Ready(Ok(n));
            }
            if s.reset {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "yamux: stream reset by the remote",
                )));
            }
            if s.recv_fin || buf.is_empty() {
                return Poll::Ready(Ok(0));
            }
            if let Some(e) = self.failure() {
                return Poll::Ready(Err(e));
            }
            // Its window update goes out with what `poll_frames` sends.
            self.grow_window(id);
            match self.poll_frames(cx, Some((id, &mut *buf))) {
                Poll::Ready(Ok(Read::Delivered(n))) => return Poll::Ready(Ok(n)),
                // Changed, or failed: the checks above say what the reader gets.
                Poll::Ready(_) => continue,
                Poll::Pending => {
                    if let Some(s) = self.streams.get_mut(&id) {
                        if !s.recv.is_empty() || s.recv_fin || s.reset {
                            continue;
                        }
                        s.reader = Some(cx.waker().clone());
                        s.parked = true;
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    pub(super) fn poll_write_stream(
        &mut self,
        cx: &mut Context<'_>,
        id: u32,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let credit = loop {
            if let Some(e) = self.failure() {
                return Poll::Ready(Err(e));
            }
            let Some(s) = self.streams.get_mut(&id) else {
                return Poll::Ready(Err(io::Error::other("yamux: unknown stream")));
            };
            if s.reset {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "yamux: stream reset by the remote",
                )));
            }
            if s.sent_fin {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "yamux: stream closed for writing",
                )));
            }
            if buf.is_empty() {
                return Poll::Ready(Ok(0));
            }
            if s.send_credit > 0 {
                break s.send_credit;
            }
            s.writer = Some(cx.waker().clone());
            // Credit comes with window updates: read them (nobody else may be reading).
            match self.poll_frames(cx, None) {
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(_)) => continue,
                Poll::Pending => {
                    if self.streams.get(&id).is_some_and(|s| s.send_credit == 0) {
                        return Poll::Pending;
                    }
                }
            }
        };
        ready!(self.poll_send_queue(cx))?;
        // A large body is sealed as a Noise record of its own, straight from `buf`: it only has
        // to fit one. A short one is gathered with the header: end the frame where that record
        // ends, so the reader never finds a body split across records.
        let mut n = buf.len().min(credit as usize).min(FRAME_BODY);
        if n < DIRECT_WRITE {
            let room = MAX_PLAIN - self.record_fill;
            if room > HEADER_LEN {
                n = n.min(room - HEADER_LEN);
            }
        }
        let header = Header::data(id, 0, n as u32).encode();
        let io = &mut self.io;
        let k = match ready!(
            self.writing
                .poll(cx, |c| Pin::new(&mut *io).poll_write(c, &header))
        ) {
            Ok(0) => return Poll::Ready(Err(self.fail(io::ErrorKind::WriteZero.into()))),
            Ok(k) => k,
            Err(e) => return Poll::Ready(Err(self.fail(e))),
        };
        // From here the frame is ours to finish: what the socket does not take now is queued.
        self.written(k);
        if k < HEADER_LEN {
            self.wqueue.extend_from_slice(&header[k..]);
            self.wqueue.extend_from_slice(&buf[..n]);
        } else {
            let io = &mut self.io;
            let mut ncx = Context::from_waker(&self.writing.waker);
            match Pin::new(&mut *io).poll_write(&mut ncx, &buf[..n]) {
                Poll::Ready(Ok(m)) => {
                    self.written(m);
                    self.wqueue.extend_from_slice(&buf[m..n]);
                }
                Poll::Pending => self.wqueue.extend_from_slice(&buf[..n]),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(self.fail(e))),
            }
        }
        if let Some(s) = self.streams.get_mut(&id) {
            s.send_credit -= n as u32;
        }
        // Yamux streams deliver without a flush (as the `yamux` crate's do): a partial record
        // goes out now.
        if !self.wqueue.is_empty() || self.record_fill != 0 {
            self.flush_due = true;
            self.try_send_queue(cx)?;
        }
        Poll::Ready(Ok(n))
    }

    pub(super) fn poll_flush_stream(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(e) = self.failure() {
            return Poll::Ready(Err(e));
        }
        ready!(self.poll_send_queue(cx))?;
        self.poll_io_flush(cx)
    }

    pub(super) fn poll_close_stream(
        &mut self,
        cx: &mut Context<'_>,
        id: u32,
    ) -> Poll<io::Result<()>> {
        if let Some(s) = self.streams.get_mut(&id)
            && !s.sent_fin
            && !s.reset
        {
            s.sent_fin = true;
            self.queue(Header::data(id, FIN, 0));
        }
        if let Some(e) = self.failure() {
            return Poll::Ready(Err(e));
        }
        self.poll_send_queue(cx)
    }

    /// Drives the connection for libp2p's connection task: sends what is queued, reads frames.
    pub(super) fn poll_drive(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        self.conn_waker = Some(cx.waker().clone());
        if let Some(e) = self.failure() {
            return Err(e);
        }
        if let Poll::Ready(Err(e)) = self.poll_send_queue(cx) {
            return Err(e);
        }
        loop {
            match self.poll_frames(cx, None) {
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Ready(Ok(_)) => return Ok(()),
                Poll::Pending => {}
            }
            let Some(since) = self.handoff else {
                return Ok(());
            };
            let deadline = tokio::time::Instant::from_std(since + HANDOFF_GRACE);
            let timer = self
                .handoff_timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            if timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }
            if timer.as_mut().poll(cx).is_pending() {
                self.handoff_armed = true;
                return Ok(());
            }
            // The reader did not come: read its body for it (the grace has passed).
        }
    }

    pub(super) fn poll_inbound(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<u32>> {
        if let Some(id) = self.inbound.pop_front() {
            return Poll::Ready(Ok(id));
        }
        self.inbound_waker = Some(cx.waker().clone());
        self.poll_drive(cx)?;
        match self.inbound.pop_front() {
            Some(id) => Poll::Ready(Ok(id)),
            None => Poll::Pending,
        }
    }

    pub(super) fn poll_open(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<u32>> {
        if let Some(e) = self.failure() {
            return Poll::Ready(Err(e));
        }
        if self.go_away_sent {
            return Poll::Ready(Err(io::Error::other("yamux: connection closing")));
        }
        if self.streams.len() >= MAX_STREAMS {
            self.outbound_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let id = self.next_id;
        self.next_id = id
            .checked_add(2)
            .ok_or_else(|| io::Error::other("yamux: stream ids exhausted"))?;
        self.streams.insert(id, StreamState::new());
        self.queue(Header::window_update(id, SYN, 0));
        self.try_send_queue(cx)?;
        Poll::Ready(Ok(id))
    }

    pub(super) fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.failed.is_some() {
            // Best effort: a GoAway queued on a protocol error, then the socket's close.
            if self.poll_send_queue(cx).is_ready() {
                let _ = Pin::new(&mut self.io).poll_close(cx);
            }
            return Poll::Ready(Ok(()));
        }
        self.go_away(GO_AWAY_NORMAL);
        ready!(self.poll_send_queue(cx))?;
        let io = &mut self.io;
        let r = ready!(self.writing.poll(cx, |c| Pin::new(&mut *io).poll_close(c)));
        self.fail(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "yamux: connection closed",
        ));
        Poll::Ready(r)
    }
}
