//! Yamux frame headers (github.com/hashicorp/yamux/blob/master/spec.md): 12 bytes, big-endian,
//! `[version 0][type][flags: 2][stream id: 4][length: 4]`. Pure, so it is tested alone.

/// Header length on the wire.
pub(super) const HEADER_LEN: usize = 12;

/// Credit every stream starts with in each direction (the spec's initial window).
pub(super) const DEFAULT_CREDIT: u32 = 256 * 1024;

/// Flags: SYN opens a stream, ACK accepts it, FIN half-closes it, RST resets it.
pub(super) const SYN: u16 = 1;
pub(super) const ACK: u16 = 2;
pub(super) const FIN: u16 = 4;
pub(super) const RST: u16 = 8;

/// GoAway codes.
pub(super) const GO_AWAY_NORMAL: u32 = 0;
pub(super) const GO_AWAY_PROTOCOL_ERROR: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// `length` bytes of stream data follow.
    Data,
    /// Adds `length` to the stream's send credit.
    WindowUpdate,
    /// `length` is an opaque value the ACK echoes (stream 0).
    Ping,
    /// The sender is closing the connection; `length` is the code (stream 0).
    GoAway,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Header {
    pub(super) kind: Kind,
    pub(super) flags: u16,
    pub(super) stream: u32,
    pub(super) length: u32,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum FrameError {
    #[error("yamux: unsupported version {0}")]
    Version(u8),
    #[error("yamux: unknown frame type {0}")]
    Type(u8),
}

impl Header {
    pub(super) fn data(stream: u32, flags: u16, length: u32) -> Self {
        Self {
            kind: Kind::Data,
            flags,
            stream,
            length,
        }
    }

    pub(super) fn window_update(stream: u32, flags: u16, delta: u32) -> Self {
        Self {
            kind: Kind::WindowUpdate,
            flags,
            stream,
            length: delta,
        }
    }

    pub(super) fn has(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }

    pub(super) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[1] = match self.kind {
            Kind::Data => 0,
            Kind::WindowUpdate => 1,
            Kind::Ping => 2,
            Kind::GoAway => 3,
        };
        b[2..4].copy_from_slice(&self.flags.to_be_bytes());
        b[4..8].copy_from_slice(&self.stream.to_be_bytes());
        b[8..12].copy_from_slice(&self.length.to_be_bytes());
        b
    }

    pub(super) fn decode(b: &[u8; HEADER_LEN]) -> Result<Self, FrameError> {
        if b[0] != 0 {
            return Err(FrameError::Version(b[0]));
        }
        let kind = match b[1] {
            0 => Kind::Data,
            1 => Kind::WindowUpdate,
            2 => Kind::Ping,
            3 => Kind::GoAway,
            t => return Err(FrameError::Type(t)),
        };
        Ok(Self {
            kind,
            flags: u16::from_be_bytes([b[2], b[3]]),
            stream: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            length: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_in_the_spec_layout() {
        let h = Header::data(0x0102_0304, SYN | FIN, 65_507);
        let b = h.encode();
        assert_eq!(b, [0, 0, 0, 5, 1, 2, 3, 4, 0, 0, 0xff, 0xe3]);
        assert_eq!(Header::decode(&b), Ok(h));
        let w = Header::window_update(7, ACK, 1 << 20);
        assert_eq!(Header::decode(&w.encode()), Ok(w));
        assert!(w.has(ACK) && !w.has(SYN));
    }

    #[test]
    fn unknown_versions_and_types_are_refused() {
        let mut b = Header::data(1, 0, 0).encode();
        b[0] = 1;
        assert_eq!(Header::decode(&b), Err(FrameError::Version(1)));
        b[0] = 0;
        b[1] = 4;
        assert_eq!(Header::decode(&b), Err(FrameError::Type(4)));
    }
}
