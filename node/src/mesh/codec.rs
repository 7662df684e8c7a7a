//! The request-response codec shared by our protocols: one versioned CBOR [`Envelope`] per
//! stream, read through a per-protocol byte cap. A request that fails to decode is handed up as
//! [`Decoded::Invalid`] so that the node answers it with an error instead of silently dropping
//! the stream; a response that fails to decode fails the outbound request.
//!
//! [`Envelope`]: crate::mesh::message::Envelope

use std::{io, marker::PhantomData, sync::Arc};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::{StreamProtocol, request_response};
use serde::{Serialize, de::DeserializeOwned};

use crate::mesh::{
    buffers::BufferPool,
    message::{MessageError, decode_versioned, encode_versioned_into},
};

/// Initial read buffer; grows up to the cap.
const READ_BUFFER_BYTES: usize = 64 * 1024;
/// Buffers kept for reuse per protocol.
const POOL_BUFFERS: usize = 32;
/// Larger buffers are not kept (a rare 4 MiB manifest should not pin memory).
const MAX_POOLED_BYTES: usize = 2 * 1024 * 1024;

/// A request as read off the wire: decoded, or the reason it was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded<T> {
    /// A well-formed request.
    Valid(T),
    /// Garbage, oversize, truncated or of an unknown version.
    Invalid(MessageError),
}

/// Byte caps and version of one protocol.
#[derive(Debug, Clone, Copy)]
pub struct CodecLimits {
    /// Largest encoded request read.
    pub request_bytes: usize,
    /// Largest encoded response read.
    pub response_bytes: usize,
    /// The envelope version spoken.
    pub version: u16,
    /// Buffer reserved up front for a response: the typical size, so that a 1 MiB chunk is
    /// read without repeated reallocation and copying (never more than `response_bytes`).
    pub response_prealloc_bytes: usize,
}

fn new_pool() -> BufferPool {
    BufferPool::new(POOL_BUFFERS, 0, MAX_POOLED_BYTES)
}

/// A request-response codec for `Req`/`Resp` with explicit limits.
pub struct CborCodec<Req, Resp> {
    limits: CodecLimits,
    /// Encode buffers (emptied before each use), shared by the clones of one codec.
    pool: Arc<BufferPool>,
    /// Read buffers, kept at their initialised length so a read does not zero them again.
    read_pool: Arc<BufferPool>,
    _types: PhantomData<fn() -> (Req, Resp)>,
}

impl<Req, Resp> CborCodec<Req, Resp> {
    /// A codec with these limits.
    pub fn new(limits: CodecLimits) -> Self {
        Self {
            limits,
            pool: Arc::new(new_pool()),
            read_pool: Arc::new(new_pool()),
            _types: PhantomData,
        }
    }

    /// Encodes `value` in a pooled buffer and writes it out.
    async fn write_message<T: Serialize + Send, W: AsyncWrite + Unpin + Send>(
        &self,
        io: &mut W,
        value: T,
        limit: usize,
    ) -> io::Result<()> {
        let mut buf = self.pool.take();
        buf.clear();
        let encoded = encode_versioned_into(self.limits.version, &value, limit, &mut buf);
        drop(value);
        let result = match encoded {
            Ok(()) => io.write_all(&buf).await,
            Err(e) => Err(invalid_data(e)),
        };
        self.pool.give(buf);
        result
    }

    /// Reads a whole message into a pooled buffer and decodes it.
    async fn read_message<T: DeserializeOwned, R: AsyncRead + Unpin + Send>(
        &self,
        io: &mut R,
        limit: usize,
        prealloc: usize,
    ) -> io::Result<Result<T, MessageError>> {
        let mut buf = self.read_pool.take();
        let read = read_into(io, &mut buf, limit, prealloc).await;
        let decoded = match read {
            Ok(Ok(filled)) => Ok(decode_versioned(&buf[..filled], limit, self.limits.version)),
            Ok(Err(e)) => Ok(Err(e)),
            Err(e) => Err(e),
        };
        self.read_pool.give(buf);
        decoded
    }
}

impl<Req, Resp> Clone for CborCodec<Req, Resp> {
    fn clone(&self) -> Self {
        Self {
            limits: self.limits,
            pool: self.pool.clone(),
            read_pool: self.read_pool.clone(),
            _types: PhantomData,
        }
    }
}

/// Reads the whole stream into `buf` (whose current length counts as initialised space to
/// reuse), never more than `limit + 1` bytes; returns how many bytes were read. New space is
/// zeroed once, when the buffer grows, not on every use.
async fn read_into<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    buf: &mut Vec<u8>,
    limit: usize,
    prealloc: usize,
) -> io::Result<Result<usize, MessageError>> {
    let cap = limit + 1;
    if buf.len() < prealloc.min(cap) {
        buf.resize(prealloc.min(cap), 0);
    }
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            if filled >= cap {
                return Ok(Err(MessageError::TooLarge { len: filled, limit }));
            }
            let grown = (buf.len() * 2).clamp(READ_BUFFER_BYTES.min(cap), cap);
            buf.resize(grown, 0);
        }
        let n = io.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Ok(Ok(filled));
        }
        filled += n;
    }
}

/// Reads the whole stream, but never more than `limit + 1` bytes, into a buffer that starts
/// at `prealloc` bytes (for test peers that speak raw bytes).
#[cfg(any(test, feature = "test-utils"))]
pub(crate) async fn read_capped<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    limit: usize,
    prealloc: usize,
) -> io::Result<Result<Vec<u8>, MessageError>> {
    let mut buf = Vec::new();
    Ok(read_into(io, &mut buf, limit, prealloc).await?.map(|n| {
        buf.truncate(n);
        buf
    }))
}

fn invalid_data(e: MessageError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl<Req, Resp> request_response::Codec for CborCodec<Req, Resp>
where
    Req: Serialize + DeserializeOwned + Send + 'static,
    Resp: Serialize + DeserializeOwned + Send + 'static,
{
    type Protocol = StreamProtocol;
    type Request = Decoded<Req>;
    type Response = Resp;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Decoded<Req>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let decoded = self
            .read_message(io, self.limits.request_bytes, READ_BUFFER_BYTES)
            .await?;
        Ok(match decoded {
            Ok(r) => Decoded::Valid(r),
            Err(e) => Decoded::Invalid(e),
        })
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Resp>
    where
        T: AsyncRead + Unpin + Send,
    {
        self.read_message(
            io,
            self.limits.response_bytes,
            self.limits.response_prealloc_bytes,
        )
        .await?
        .map_err(invalid_data)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Decoded<Req>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let req = match req {
            Decoded::Valid(r) => r,
            Decoded::Invalid(e) => return Err(invalid_data(e)),
        };
        self.write_message(io, req, self.limits.request_bytes).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Resp,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        self.write_message(io, res, self.limits.response_bytes)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::message::{RPC_VERSION, RpcRequest, RpcResponse, encode_versioned};
    use futures::io::Cursor;
    use request_response::Codec as _;

    type Rpc = CborCodec<RpcRequest, RpcResponse>;

    fn codec() -> Rpc {
        CborCodec::new(CodecLimits {
            request_bytes: 64,
            response_bytes: 256,
            version: RPC_VERSION,
            response_prealloc_bytes: 64,
        })
    }

    fn read_req(bytes: &[u8]) -> Decoded<RpcRequest> {
        let mut io = Cursor::new(bytes.to_vec());
        futures::executor::block_on(
            codec().read_request(&crate::mesh::topics::RPC_PROTOCOL, &mut io),
        )
        .unwrap()
    }

    #[test]
    fn request_round_trip() {
        let mut out = Cursor::new(Vec::new());
        futures::executor::block_on(codec().write_request(
            &crate::mesh::topics::RPC_PROTOCOL,
            &mut out,
            Decoded::Valid(RpcRequest::Status),
        ))
        .unwrap();
        assert_eq!(read_req(out.get_ref()), Decoded::Valid(RpcRequest::Status));
    }

    #[test]
    fn bad_requests_become_invalid() {
        assert!(matches!(
            read_req(&[0u8; 65]),
            Decoded::Invalid(MessageError::TooLarge { len: 65, limit: 64 })
        ));
        assert!(matches!(
            read_req(&[0xff, 0x13, 0x00]),
            Decoded::Invalid(MessageError::Malformed(_))
        ));
        let good = encode_versioned(RPC_VERSION, &RpcRequest::Status, 64).unwrap();
        assert!(matches!(
            read_req(&good[..good.len() - 1]),
            Decoded::Invalid(MessageError::Malformed(_))
        ));
        let future = encode_versioned(7, &RpcRequest::Status, 64).unwrap();
        assert!(matches!(
            read_req(&future),
            Decoded::Invalid(MessageError::UnknownVersion { got: 7, .. })
        ));
    }

    #[test]
    fn buffers_grow_to_the_cap_and_are_reused() {
        let pool = new_pool();
        let data: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        for _ in 0..3 {
            let mut buf = pool.take();
            let mut io = Cursor::new(data.clone());
            let n = futures::executor::block_on(read_into(&mut io, &mut buf, 5000, 16))
                .unwrap()
                .unwrap();
            assert_eq!(&buf[..n], &data[..]);
            pool.give(buf);
        }
        assert_eq!(pool.pooled(), 1, "one buffer recycled");
        let mut buf = Vec::new();
        let mut io = Cursor::new(data.clone());
        let r = futures::executor::block_on(read_into(&mut io, &mut buf, 2999, 16)).unwrap();
        assert_eq!(
            r,
            Err(MessageError::TooLarge {
                len: 3000,
                limit: 2999
            })
        );
        let mut io = Cursor::new(data);
        let r = futures::executor::block_on(read_into(&mut io, &mut buf, 3000, 16)).unwrap();
        assert_eq!(r, Ok(3000));
    }

    #[test]
    fn oversize_response_is_an_io_error() {
        let mut io = Cursor::new(vec![0u8; 300]);
        let err = futures::executor::block_on(
            codec().read_response(&crate::mesh::topics::RPC_PROTOCOL, &mut io),
        )
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
