//! Reading a Yamux connection: frame headers, bodies into the reader that waits for them (or
//! kept for the stream's reader), and what each frame does to the connection's state.

use std::{
    io,
    pin::Pin,
    sync::atomic::{AtomicU64, Ordering},
    task::{Context, Poll},
    time::Instant,
};

use futures::{AsyncRead, AsyncWrite, ready};

use super::{
    FRAME_BODY, HANDOFF_GRACE, Inner, MAX_BUFFERED_INBOUND, MAX_STREAMS, Mode, StreamState,
};
use crate::mesh::mux::frame::{ACK, FIN, FrameError, HEADER_LEN, Header, Kind, RST, SYN};

/// Bytes one poll reads for other streams before it yields to the executor.
const READ_BUDGET: usize = 1 << 20;
/// Largest body accepted for a stream we no longer know (it is read and dropped).
const MAX_UNKNOWN_BODY: u32 = 16 * 1024 * 1024;

/// Bytes readers got straight from the connection, and bytes kept for them first (process-wide;
/// the link benchmark reports the split).
static DIRECT_BYTES: AtomicU64 = AtomicU64::new(0);
static BUFFERED_BYTES: AtomicU64 = AtomicU64::new(0);

/// `(direct, buffered)`: received stream bytes delivered without a copy of ours, and with one.
pub fn read_path_bytes() -> (u64, u64) {
    (
        DIRECT_BYTES.load(Ordering::Relaxed),
        BUFFERED_BYTES.load(Ordering::Relaxed),
    )
}

pub(super) enum ReadState {
    Header {
        buf: [u8; HEADER_LEN],
        got: usize,
    },
    /// A data frame's body for `stream`; its flags apply once the body is read.
    Body {
        stream: u32,
        left: usize,
        flags: u16,
    },
    /// A body for a stream we dropped or refused.
    Discard {
        left: usize,
    },
}

pub(super) const READ_HEADER: ReadState = ReadState::Header {
    buf: [0; HEADER_LEN],
    got: 0,
};

/// What reading the connection did for the stream that asked.
pub(super) enum Read {
    /// This many bytes went straight into its buffer.
    Delivered(usize),
    /// Its stream changed (FIN or RST came): look again.
    Changed,
}

impl<C> Inner<C> {
    fn apply_flags(&mut self, id: u32, flags: u16) -> bool {
        let Some(s) = self.streams.get_mut(&id) else {
            return false;
        };
        let mut changed = false;
        if flags & FIN != 0 {
            s.recv_fin = true;
            changed = true;
        }
        if flags & RST != 0 {
            s.reset = true;
            s.wake_writer();
            changed = true;
        }
        if changed {
            s.wake_reader();
        }
        changed
    }

    fn open_inbound(&mut self, id: u32) -> Result<(), io::Error> {
        let remote_odd = self.mode == Mode::Server;
        if (id % 2 == 1) != remote_odd {
            return Err(self.protocol_error(format!("yamux: stream id {id} of the wrong side")));
        }
        if self.streams.contains_key(&id) {
            return Err(self.protocol_error(format!("yamux: stream {id} opened twice")));
        }
        let refusal = if self.go_away_sent {
            Some("the connection is closing")
        } else if self.streams.len() >= MAX_STREAMS {
            Some("too many streams")
        } else if self.inbound.len() >= MAX_BUFFERED_INBOUND {
            Some("too many inbound streams not taken yet")
        } else {
            None
        };
        if let Some(why) = refusal {
            tracing::warn!(stream = id, why, "yamux: refusing an inbound stream");
            self.queue(Header::window_update(id, RST, 0));
            return Ok(());
        }
        self.streams.insert(id, StreamState::new());
        // Accept at once: the opener may cap its streams not yet acknowledged.
        self.queue(Header::window_update(id, ACK, 0));
        self.inbound.push_back(id);
        if let Some(w) = self.inbound_waker.take() {
            w.wake();
        }
        Ok(())
    }

    /// Handles a header; returns the stream whose reader should look again.
    fn on_header(&mut self, h: Header) -> Result<Option<u32>, io::Error> {
        match h.kind {
            Kind::Ping => {
                if h.has(SYN) {
                    self.queue(Header {
                        kind: Kind::Ping,
                        flags: ACK,
                        stream: 0,
                        length: h.length,
                    });
                }
                Ok(None)
            }
            Kind::GoAway => {
                let code = h.length;
                Err(self.fail(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    format!("yamux: the remote closed the connection (go away, code {code})"),
                )))
            }
            Kind::Data | Kind::WindowUpdate => {
                let id = h.stream;
                if id == 0 {
                    return Err(self.protocol_error("yamux: stream frame on stream 0"));
                }
                if h.has(SYN) {
                    self.open_inbound(id)?;
                }
                let Some(s) = self.streams.get_mut(&id) else {
                    // A stream we dropped or refused: its data is read and dropped.
                    if h.kind == Kind::Data && h.length > 0 {
                        if h.length > MAX_UNKNOWN_BODY {
                            return Err(self.protocol_error("yamux: oversized frame"));
                        }
                        self.read = ReadState::Discard {
                            left: h.length as usize,
                        };
                    }
                    return Ok(None);
                };
                if h.kind == Kind::WindowUpdate {
                    match s.send_credit.checked_add(h.length) {
                        Some(c) => s.send_credit = c,
                        None => return Err(self.protocol_error("yamux: send window overflow")),
                    }
                    s.wake_writer();
                } else if h.length > 0 {
                    if h.length > s.recv_credit {
                        let credit = s.recv_credit;
                        return Err(self.protocol_error(format!(
                            "yamux: a {}-byte frame on stream {id} exceeds its window of {credit}",
                            h.length
                        )));
                    }
                    s.recv_credit -= h.length;
                    self.read = ReadState::Body {
                        stream: id,
                        left: h.length as usize,
                        flags: h.flags,
                    };
                    return Ok(None);
                }
                Ok(self.apply_flags(id, h.flags).then_some(id))
            }
        }
    }
}

impl<C: AsyncRead + AsyncWrite + Unpin> Inner<C> {
    /// Reads and handles frames until the connection has nothing more to read (`Pending`, the
    /// caller registered for more), or `target` (a stream and its reader's buffer) got bytes
    /// or a change.
    pub(super) fn poll_frames(
        &mut self,
        cx: &mut Context<'_>,
        target: Option<(u32, &mut [u8])>,
    ) -> Poll<io::Result<Read>> {
        let r = self.poll_frames_inner(cx, target);
        // Answers to what was read (pongs, ACKs, resets, window updates) go out now.
        if self.wqueue_at < self.wqueue.len() || self.flush_due {
            let _ = self.try_send_queue(cx);
        }
        r
    }

    fn poll_frames_inner(
        &mut self,
        cx: &mut Context<'_>,
        mut target: Option<(u32, &mut [u8])>,
    ) -> Poll<io::Result<Read>> {
        let mut budget = READ_BUDGET;
        loop {
            if let Some(e) = self.failure() {
                return Poll::Ready(Err(e));
            }
            if budget == 0 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let io = &mut self.io;
            match &mut self.read {
                ReadState::Header { buf, got } => {
                    let n = match ready!(
                        self.reading
                            .poll(cx, |c| Pin::new(&mut *io).poll_read(c, &mut buf[*got..]))
                    ) {
                        Ok(0) => {
                            let e = if *got == 0 {
                                io::Error::new(
                                    io::ErrorKind::ConnectionAborted,
                                    "yamux: connection closed",
                                )
                            } else {
                                io::Error::new(
                                    io::ErrorKind::UnexpectedEof,
                                    "yamux: connection closed inside a frame header",
                                )
                            };
                            return Poll::Ready(Err(self.fail(e)));
                        }
                        Ok(n) => n,
                        Err(e) => return Poll::Ready(Err(self.fail(e))),
                    };
                    *got += n;
                    if *got < HEADER_LEN {
                        continue;
                    }
                    let h = match Header::decode(buf) {
                        Ok(h) => h,
                        Err(e @ (FrameError::Version(_) | FrameError::Type(_))) => {
                            return Poll::Ready(Err(self.protocol_error(e.to_string())));
                        }
                    };
                    self.read = READ_HEADER;
                    let changed = self.on_header(h)?;
                    if changed.is_some() && changed == target.as_ref().map(|t| t.0) {
                        return Poll::Ready(Ok(Read::Changed));
                    }
                }
                ReadState::Body {
                    stream,
                    left,
                    flags,
                } => {
                    let (id, flags) = (*stream, *flags);
                    let Some(s) = self.streams.get_mut(&id) else {
                        self.read = ReadState::Discard { left: *left };
                        self.end_body();
                        continue;
                    };
                    let direct = match target.as_mut() {
                        Some((t, buf)) if *t == id && !buf.is_empty() => Some(buf),
                        _ => None,
                    };
                    let n = if let Some(buf) = direct {
                        let want = (*left).min(buf.len());
                        let r = match self
                            .reading
                            .poll(cx, |c| Pin::new(&mut *io).poll_read(c, &mut buf[..want]))
                        {
                            Poll::Ready(r) => r,
                            Poll::Pending => {
                                // Its reader is here, waiting for the body's bytes: a hand-off's
                                // grace counts from now. It is for a reader that stopped
                                // waiting, not for a slow link (the body's record may take
                                // longer than the grace to arrive).
                                if self.handoff.is_some() {
                                    self.handoff = Some(Instant::now());
                                }
                                return Poll::Pending;
                            }
                        };
                        match r {
                            Ok(0) => return Poll::Ready(Err(self.fail(eof_in_body()))),
                            Ok(n) => n,
                            Err(e) => return Poll::Ready(Err(self.fail(e))),
                        }
                    } else {
                        // Its reader is waiting: leave the body in the socket for it to read
                        // without a copy, unless it does not come within the grace (a reader
                        // that gave up waiting must not stall the connection).
                        if s.parked && self.can_hand_off {
                            let since = *self.handoff.get_or_insert_with(Instant::now);
                            if since.elapsed() < HANDOFF_GRACE {
                                s.wake_reader();
                                if !self.body_waiters.iter().any(|w| w.will_wake(cx.waker())) {
                                    self.body_waiters.push(cx.waker().clone());
                                }
                                if target.is_some() && !self.handoff_armed {
                                    // The connection task keeps the grace's timer. Once it
                                    // has armed it, it is not woken again: the readers that
                                    // find the body still waiting may be its own protocol
                                    // handlers, polled by it, and would poll it in a loop
                                    // until the body is taken (for as long as a slow link
                                    // takes to deliver the body's record).
                                    if let Some(w) = self.conn_waker.take() {
                                        w.wake();
                                    }
                                }
                                return Poll::Pending;
                            }
                        }
                        let want = (*left).min(FRAME_BODY);
                        let spare = s.recv.spare(want);
                        let r = ready!(
                            self.reading
                                .poll(cx, |c| Pin::new(&mut *io).poll_read(c, spare))
                        );
                        match r {
                            Ok(0) => return Poll::Ready(Err(self.fail(eof_in_body()))),
                            Ok(n) => {
                                s.recv.filled(n);
                                s.wake_reader();
                                n
                            }
                            Err(e) => return Poll::Ready(Err(self.fail(e))),
                        }
                    };
                    *left -= n;
                    let done = *left == 0;
                    if done {
                        self.read = READ_HEADER;
                        self.end_body();
                    }
                    let delivered = target.as_ref().is_some_and(|t| t.0 == id);
                    if delivered {
                        DIRECT_BYTES.fetch_add(n as u64, Ordering::Relaxed);
                        self.credit_back(id, n);
                    } else {
                        BUFFERED_BYTES.fetch_add(n as u64, Ordering::Relaxed);
                        budget = budget.saturating_sub(n);
                    }
                    if done {
                        self.apply_flags(id, flags);
                    }
                    if delivered {
                        return Poll::Ready(Ok(Read::Delivered(n)));
                    }
                }
                ReadState::Discard { left } => {
                    let want = (*left).min(FRAME_BODY);
                    if self.scratch.len() < want {
                        self.scratch.resize(want, 0);
                    }
                    let scratch = &mut self.scratch[..want];
                    let n = match ready!(
                        self.reading
                            .poll(cx, |c| Pin::new(&mut *io).poll_read(c, scratch))
                    ) {
                        Ok(0) => return Poll::Ready(Err(self.fail(eof_in_body()))),
                        Ok(n) => n,
                        Err(e) => return Poll::Ready(Err(self.fail(e))),
                    };
                    *left -= n;
                    budget = budget.saturating_sub(n);
                    if *left == 0 {
                        self.read = READ_HEADER;
                    }
                }
            }
        }
    }
}

fn eof_in_body() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "yamux: connection closed inside a frame",
    )
}
