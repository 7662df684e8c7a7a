//! The request-response codec shared by our protocols: one versioned CBOR [`Envelope`] per
//! stream, read through a per-protocol byte cap. A request that fails to decode is handed up as
//! [`Decoded::Invalid`] so that the node answers it with an error instead of silently dropping
//! the stream; a response that fails to decode fails the outbound request.
//!
//! [`Envelope`]: crate::mesh::message::Envelope

use std::{io, marker::PhantomData};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::{StreamProtocol, request_response};
use serde::{Serialize, de::DeserializeOwned};

use crate::mesh::message::{MessageError, decode_versioned, encode_versioned};

/// Initial read buffer; grows up to the cap.
const READ_BUFFER_BYTES: usize = 64 * 1024;

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

/// A request-response codec for `Req`/`Resp` with explicit limits.
pub struct CborCodec<Req, Resp> {
    limits: CodecLimits,
    _types: PhantomData<fn() -> (Req, Resp)>,
}

impl<Req, Resp> CborCodec<Req, Resp> {
    /// A codec with these limits.
    pub fn new(limits: CodecLimits) -> Self {
        Self {
            limits,
            _types: PhantomData,
        }
    }
}

impl<Req, Resp> Clone for CborCodec<Req, Resp> {
    fn clone(&self) -> Self {
        Self::new(self.limits)
    }
}

/// Reads the whole stream, but never more than `limit + 1` bytes, into a buffer that starts
/// at `prealloc` bytes.
pub(crate) async fn read_capped<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    limit: usize,
    prealloc: usize,
) -> io::Result<Result<Vec<u8>, MessageError>> {
    let mut buf = Vec::with_capacity(prealloc.min(limit + 1));
    io.take(limit as u64 + 1).read_to_end(&mut buf).await?;
    if buf.len() > limit {
        return Ok(Err(MessageError::TooLarge {
            len: buf.len(),
            limit,
        }));
    }
    Ok(Ok(buf))
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
        let decoded = read_capped(io, self.limits.request_bytes, READ_BUFFER_BYTES)
            .await?
            .and_then(|b| decode_versioned(&b, self.limits.request_bytes, self.limits.version));
        Ok(match decoded {
            Ok(r) => Decoded::Valid(r),
            Err(e) => Decoded::Invalid(e),
        })
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Resp>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_capped(
            io,
            self.limits.response_bytes,
            self.limits.response_prealloc_bytes,
        )
            .await?
            .and_then(|b| decode_versioned(&b, self.limits.response_bytes, self.limits.version))
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
        let bytes = encode_versioned(self.limits.version, &req, self.limits.request_bytes)
            .map_err(invalid_data)?;
        io.write_all(&bytes).await
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
        let bytes = encode_versioned(self.limits.version, &res, self.limits.response_bytes)
            .map_err(invalid_data)?;
        io.write_all(&bytes).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::message::{RPC_VERSION, RpcRequest, RpcResponse};
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
    fn oversize_response_is_an_io_error() {
        let mut io = Cursor::new(vec![0u8; 300]);
        let err = futures::executor::block_on(
            codec().read_response(&crate::mesh::topics::RPC_PROTOCOL, &mut io),
        )
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
