//! Yamux for the mesh's TCP connections: our own implementation of the `/yamux/1.0.0` wire
//! protocol (github.com/hashicorp/yamux/blob/master/spec.md), the one `libp2p-yamux` and every
//! other libp2p speaks, built to move bulk data with as few copies as the Noise session allows.
//!
//! Why not `libp2p-yamux` (the `yamux` crate): each data frame is a `Vec` it owns. A writer's
//! bytes are copied into a frame and the frame into the Noise record; received bytes are copied
//! out of the Noise session into a zero-filled frame and out of the frame into the reader's
//! buffer: four copies and a memset per byte, a fifth of the CPU of a blob fetch
//! (docs/benchmarks.md), and frames of at most 16 KiB. Here (see `conn`):
//! - a writer's bytes go straight to the Noise session, which seals a large body from the
//!   writer's buffer into a record of its own (a frame's header goes first, in a small record;
//!   one socket write for both);
//! - a reader whose stream's frame is next on the connection reads it straight out of the Noise
//!   session into its own buffer, where the session opens a whole record (others who meet that
//!   frame first leave it to a waiting reader). Frames for other streams are kept until their
//!   readers come.
//!
//! Flow control as the spec says: 256 KiB of credit per stream at first, raised to
//! 4 MiB (`conn::RECV_WINDOW`) once the stream's reader reads (so streams nobody reads hold little), given
//! back in halves. Streams are opened with a SYN window update and accepted with an ACK at
//! once; a dropped stream is reset (or closed, if the remote had closed) as `yamux` does;
//! pings are answered; a GoAway or a protocol error ends the connection.

mod conn;
mod frame;
mod recv_buf;
mod shared;
mod wakers;

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use futures::{AsyncRead, AsyncWrite, future};
use libp2p::core::{
    muxing::{StreamMuxer, StreamMuxerEvent},
    upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo},
};

pub use conn::{FRAME_BODY, read_path_bytes};
use conn::{Inner, Mode};
#[cfg(test)]
use frame::HEADER_LEN;
use shared::Shared;

/// The muxer upgrade for TCP connections (after Noise).
#[derive(Debug, Clone, Copy, Default)]
pub struct Config;

impl UpgradeInfo for Config {
    type Info = &'static str;
    type InfoIter = std::iter::Once<Self::Info>;

    fn protocol_info(&self) -> Self::InfoIter {
        std::iter::once("/yamux/1.0.0")
    }
}

impl<C> InboundConnectionUpgrade<C> for Config
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = Muxer<C>;
    type Error = io::Error;
    type Future = future::Ready<Result<Self::Output, Self::Error>>;

    fn upgrade_inbound(self, io: C, _: Self::Info) -> Self::Future {
        future::ready(Ok(Muxer::new(io, Mode::Server)))
    }
}

impl<C> OutboundConnectionUpgrade<C> for Config
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = Muxer<C>;
    type Error = io::Error;
    type Future = future::Ready<Result<Self::Output, Self::Error>>;

    fn upgrade_outbound(self, io: C, _: Self::Info) -> Self::Future {
        future::ready(Ok(Muxer::new(io, Mode::Client)))
    }
}

type Conn<C> = Arc<Shared<Inner<C>>>;

/// A Yamux connection as libp2p's [`StreamMuxer`].
pub struct Muxer<C> {
    shared: Conn<C>,
}

impl<C> Muxer<C> {
    fn new(io: C, mode: Mode) -> Self {
        Self {
            shared: Arc::new(Shared::new(Inner::new(io, mode))),
        }
    }

    fn stream(&self, id: u32) -> Stream<C> {
        Stream {
            id,
            shared: self.shared.clone(),
        }
    }
}

impl<C> StreamMuxer for Muxer<C>
where
    C: AsyncRead + AsyncWrite + Unpin + 'static,
{
    type Substream = Stream<C>;
    type Error = MuxError;

    fn poll_inbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let id = futures::ready!(futures::ready!(self.shared.poll_lock(cx)).poll_inbound(cx))?;
        Poll::Ready(Ok(self.stream(id)))
    }

    fn poll_outbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let id = futures::ready!(futures::ready!(self.shared.poll_lock(cx)).poll_open(cx))?;
        Poll::Ready(Ok(self.stream(id)))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        futures::ready!(self.shared.poll_lock(cx))
            .poll_close(cx)
            .map_err(MuxError)
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<StreamMuxerEvent, Self::Error>> {
        futures::ready!(self.shared.poll_lock(cx)).poll_drive(cx)?;
        Poll::Pending
    }
}

/// A Yamux stream.
pub struct Stream<C> {
    id: u32,
    shared: Conn<C>,
}

impl<C> std::fmt::Debug for Stream<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream").field("id", &self.id).finish()
    }
}

impl<C: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<C> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        futures::ready!(self.shared.poll_lock(cx)).poll_read_stream(cx, self.id, buf)
    }
}

impl<C: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<C> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        futures::ready!(self.shared.poll_lock(cx)).poll_write_stream(cx, self.id, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        futures::ready!(self.shared.poll_lock(cx)).poll_flush_stream(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        futures::ready!(self.shared.poll_lock(cx)).poll_close_stream(cx, self.id)
    }
}

impl<C> Drop for Stream<C> {
    fn drop(&mut self) {
        self.shared.lock().drop_stream(self.id);
    }
}

/// A Yamux connection error.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct MuxError(#[from] io::Error);

#[cfg(test)]
mod tests;
