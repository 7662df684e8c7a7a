//! Typed, versioned wire messages: the gossip envelope and its bodies, and the application RPC
//! requests and responses. Every message travels as CBOR inside an [`Envelope`] carrying a
//! version; every decode goes through a named byte cap and returns a typed [`MessageError`].
//!
//! The enums are meant to grow: later issues add job announcements, round heads, coordinator
//! heartbeats and cluster tasks to [`GossipBody`], and update submission, attestation and
//! inference tasks to [`RpcRequest`]/[`RpcResponse`]. Adding a variant is backwards compatible
//! for old variants; changing one means bumping the version.

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::{
    cbor::{self, CodecError},
    roles::wire::{
        Heartbeat, InferDone, InferTask, JobAnnouncement, RenterClaim, RoundHeadMsg, UpdateOffer,
        UpdateVerdict,
    },
};

/// Version of the gossip envelope.
pub const GOSSIP_VERSION: u16 = 1;
/// Version of the RPC envelope.
pub const RPC_VERSION: u16 = 1;

/// Largest gossip message (also gossipsub's `max_transmit_size`, set on every peer). Gossip
/// carries small announcements; weights travel as blobs.
pub const MAX_GOSSIP_BYTES: usize = 64 * 1024;
/// Largest encoded RPC request we read.
pub const MAX_RPC_REQUEST_BYTES: usize = 1024 * 1024;
/// Largest encoded RPC response we read.
pub const MAX_RPC_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// Longest text of a [`GossipBody::Note`].
pub const MAX_NOTE_CHARS: usize = 4096;

/// Why a wire message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// The message is larger than the cap for its kind.
    #[error("message of {len} bytes exceeds the {limit}-byte limit")]
    TooLarge {
        /// Its length (at least `limit + 1` when read from a stream).
        len: usize,
        /// The cap.
        limit: usize,
    },
    /// A well-formed envelope of a version we do not speak.
    #[error("unsupported message version {got} (we speak {supported})")]
    UnknownVersion {
        /// The version it carries.
        got: u16,
        /// Ours.
        supported: u16,
    },
    /// Not valid CBOR for any message we know (garbage, truncated, unknown variant).
    #[error("malformed message: {0}")]
    Malformed(String),
    /// Well-formed but semantically invalid (a field out of range).
    #[error("invalid message: {0}")]
    Invalid(String),
    /// We failed to encode our own message (a bug, or a value too large to send).
    #[error("cannot encode message: {0}")]
    Encode(String),
}

impl MessageError {
    /// Whether the remote peer is to blame (and may be penalised) rather than us.
    pub fn is_peer_fault(&self) -> bool {
        !matches!(self, Self::Encode(_))
    }

    /// A short, stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "too_large",
            Self::UnknownVersion { .. } => "unknown_version",
            Self::Malformed(_) => "malformed",
            Self::Invalid(_) => "invalid",
            Self::Encode(_) => "encode",
        }
    }
}

impl From<CodecError> for MessageError {
    fn from(e: CodecError) -> Self {
        match e {
            CodecError::TooLarge { len, limit } => Self::TooLarge { len, limit },
            CodecError::Malformed(m) => Self::Malformed(m),
            CodecError::Encode(m) => Self::Encode(m),
        }
    }
}

/// The versioned wrapper of every message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// Message format version.
    pub v: u16,
    /// The message.
    pub body: T,
}

/// Only the version of an envelope, to tell "unknown version" from "garbage".
#[derive(Deserialize)]
struct VersionProbe {
    v: u16,
}

/// Encodes `body` in an envelope of `version`, refusing results above `limit`.
pub fn encode_versioned<T: Serialize>(
    version: u16,
    body: &T,
    limit: usize,
) -> Result<Vec<u8>, MessageError> {
    let bytes = cbor::to_vec(&Envelope { v: version, body })?;
    if bytes.len() > limit {
        return Err(MessageError::Encode(format!(
            "{} bytes exceed the {limit}-byte limit",
            bytes.len()
        )));
    }
    Ok(bytes)
}

/// Like [`encode_versioned`], appending to `out` (so callers can reuse a buffer).
pub fn encode_versioned_into<T: Serialize>(
    version: u16,
    body: &T,
    limit: usize,
    out: &mut Vec<u8>,
) -> Result<(), MessageError> {
    let start = out.len();
    ciborium::into_writer(&Envelope { v: version, body }, &mut *out)
        .map_err(|e| MessageError::Encode(e.to_string()))?;
    let len = out.len() - start;
    if len > limit {
        out.truncate(start);
        return Err(MessageError::Encode(format!(
            "{len} bytes exceed the {limit}-byte limit"
        )));
    }
    Ok(())
}

/// Decodes an envelope of `version` holding a `T`, reading at most `limit` bytes.
pub fn decode_versioned<T: DeserializeOwned>(
    bytes: &[u8],
    limit: usize,
    version: u16,
) -> Result<T, MessageError> {
    match cbor::from_slice::<Envelope<T>>(bytes, limit) {
        Ok(env) if env.v == version => Ok(env.body),
        Ok(env) => Err(MessageError::UnknownVersion {
            got: env.v,
            supported: version,
        }),
        Err(CodecError::Malformed(m)) => {
            // A future version may carry a body we cannot parse: say so rather than "garbage".
            match cbor::from_slice::<VersionProbe>(bytes, limit) {
                Ok(p) if p.v != version => Err(MessageError::UnknownVersion {
                    got: p.v,
                    supported: version,
                }),
                _ => Err(MessageError::Malformed(m)),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// The body of a gossip message. Small, signed announcements only (at most
/// [`MAX_GOSSIP_BYTES`] encoded).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GossipBody {
    /// Free text (operators, tests, liveness checks).
    Note {
        /// At most [`MAX_NOTE_CHARS`] characters.
        text: String,
    },
    /// A coordinator-eligible peer is alive (`quackmesh/1/coordinators`).
    Heartbeat(Heartbeat),
    /// A training job was created (`quackmesh/1/jobs`).
    JobAnnounced(JobAnnouncement),
    /// A job's round head from its coordinator (`quackmesh/1/job/<id>`).
    RoundHead(RoundHeadMsg),
    /// A renter's node names itself for a cluster (`quackmesh/1/coordinators`).
    RenterClaim(RenterClaim),
}

impl GossipBody {
    /// Checks field bounds that CBOR decoding alone cannot.
    pub fn validate(&self) -> Result<(), MessageError> {
        match self {
            Self::Note { text } if text.chars().count() > MAX_NOTE_CHARS => Err(
                MessageError::Invalid(format!("note longer than {MAX_NOTE_CHARS} characters")),
            ),
            Self::Note { .. } | Self::JobAnnounced(_) => Ok(()),
            Self::Heartbeat(h) => h.validate(),
            Self::RoundHead(h) => h.validate(),
            Self::RenterClaim(c) => c.validate(),
        }
    }

    /// Encodes the body in a gossip envelope.
    pub fn encode(&self) -> Result<Vec<u8>, MessageError> {
        self.validate()?;
        encode_versioned(GOSSIP_VERSION, self, MAX_GOSSIP_BYTES)
    }

    /// Decodes and validates a gossip message.
    pub fn decode(bytes: &[u8]) -> Result<Self, MessageError> {
        let body: Self = decode_versioned(bytes, MAX_GOSSIP_BYTES, GOSSIP_VERSION)?;
        body.validate()?;
        Ok(body)
    }
}

/// An application RPC request (protocol [`crate::mesh::topics::RPC_PROTOCOL`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RpcRequest {
    /// Asks a peer for its [`NodeStatus`].
    Status,
    /// Offers an update to a job's coordinator; answered with [`RpcResponse::UpdateVerdict`]
    /// once the update is evaluated.
    OfferUpdate(UpdateOffer),
    /// Asks a rented worker to run a part of an inference job; answered with
    /// [`RpcResponse::InferDone`] once the result is posted on chain.
    InferTask(InferTask),
}

/// An application RPC response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RpcResponse {
    /// The answer to [`RpcRequest::Status`].
    Status(NodeStatus),
    /// The answer to [`RpcRequest::OfferUpdate`].
    UpdateVerdict(UpdateVerdict),
    /// The answer to [`RpcRequest::InferTask`].
    InferDone(InferDone),
    /// The request was refused or failed.
    Error(RpcError),
}

/// A refused or failed RPC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RpcError {
    /// What kind of failure.
    pub code: RpcErrorCode,
    /// Human-readable detail (capped when sent).
    pub message: String,
}

/// Kinds of RPC failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RpcErrorCode {
    /// The request could not be decoded (garbage, oversize, unknown version).
    BadRequest,
    /// The node understands the request but has no handler for it.
    Unsupported,
    /// The node is overloaded; retry later.
    Busy,
    /// The requester is not allowed.
    Denied,
    /// The handler failed.
    Internal,
}

impl RpcResponse {
    /// An error response.
    pub fn error(code: RpcErrorCode, message: impl Into<String>) -> Self {
        let mut message: String = message.into();
        message.truncate(1024);
        Self::Error(RpcError { code, message })
    }
}

/// What a node says about itself over RPC and on `GET /api/node`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Its PeerId.
    pub peer_id: String,
    /// `quackmesh/<version>`.
    pub agent: String,
    /// Roles it runs (`provide`, `contribute`, `coordinator`).
    pub roles: Vec<String>,
    /// Its listen addresses.
    pub listen_addrs: Vec<String>,
    /// How many peers it is connected to.
    pub connected_peers: u32,
    /// How many complete blobs it holds.
    pub blobs: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(text: &str) -> GossipBody {
        GossipBody::Note { text: text.into() }
    }

    #[test]
    fn gossip_round_trip() {
        let m = note("quack");
        assert_eq!(GossipBody::decode(&m.encode().unwrap()).unwrap(), m);
    }

    #[test]
    fn renter_claim_round_trip_and_bad_signature_length_rejected() {
        let claim = RenterClaim {
            chain_id: 31337,
            cluster_id: 2,
            eth: [5; 20],
            signature: vec![1; 65],
            sent_ms: 7,
        };
        let m = GossipBody::RenterClaim(claim.clone());
        assert_eq!(GossipBody::decode(&m.encode().unwrap()).unwrap(), m);
        let short = GossipBody::RenterClaim(RenterClaim {
            signature: vec![1; 64],
            ..claim
        });
        assert!(short.encode().is_err());
    }

    #[test]
    fn rpc_round_trip() {
        for r in [
            RpcResponse::Status(NodeStatus {
                peer_id: "p".into(),
                agent: "a".into(),
                roles: vec!["provide".into()],
                listen_addrs: vec!["/ip4/127.0.0.1/tcp/1".into()],
                connected_peers: 3,
                blobs: 1,
            }),
            RpcResponse::error(RpcErrorCode::Busy, "later"),
        ] {
            let b = encode_versioned(RPC_VERSION, &r, MAX_RPC_RESPONSE_BYTES).unwrap();
            assert_eq!(
                decode_versioned::<RpcResponse>(&b, MAX_RPC_RESPONSE_BYTES, RPC_VERSION).unwrap(),
                r
            );
        }
        let b = encode_versioned(RPC_VERSION, &RpcRequest::Status, 64).unwrap();
        assert_eq!(
            decode_versioned::<RpcRequest>(&b, 64, RPC_VERSION).unwrap(),
            RpcRequest::Status
        );
    }

    #[test]
    fn gossip_oversize_rejected() {
        let big = vec![0u8; MAX_GOSSIP_BYTES + 1];
        assert!(matches!(
            GossipBody::decode(&big),
            Err(MessageError::TooLarge { .. })
        ));
        // Encoding refuses too: a note that fits the char cap but not the byte cap is impossible,
        // so check the char cap instead.
        let long = note(&"x".repeat(MAX_NOTE_CHARS + 1));
        assert!(matches!(long.encode(), Err(MessageError::Invalid(_))));
        let bytes = encode_versioned(GOSSIP_VERSION, &long, MAX_GOSSIP_BYTES).unwrap();
        assert!(matches!(
            GossipBody::decode(&bytes),
            Err(MessageError::Invalid(_))
        ));
    }

    #[test]
    fn truncated_rejected() {
        let bytes = note("hello there").encode().unwrap();
        for cut in 0..bytes.len() {
            assert!(
                GossipBody::decode(&bytes[..cut]).is_err(),
                "cut at {cut} decoded"
            );
        }
    }

    #[test]
    fn garbage_rejected() {
        let mut seed = 7u64;
        for len in [1usize, 2, 7, 64, 1000] {
            let junk: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                    (seed >> 56) as u8
                })
                .collect();
            assert!(GossipBody::decode(&junk).is_err());
            assert!(decode_versioned::<RpcRequest>(&junk, 4096, RPC_VERSION).is_err());
        }
    }

    #[test]
    fn unknown_version_rejected() {
        let bytes = encode_versioned(9, &note("future"), MAX_GOSSIP_BYTES).unwrap();
        assert_eq!(
            GossipBody::decode(&bytes),
            Err(MessageError::UnknownVersion {
                got: 9,
                supported: GOSSIP_VERSION
            })
        );
        // A future version with a body we cannot even parse is still "unknown version".
        #[derive(Serialize)]
        enum Future {
            Teleport { to: u64 },
        }
        let bytes = encode_versioned(2, &Future::Teleport { to: 1 }, MAX_GOSSIP_BYTES).unwrap();
        assert!(matches!(
            GossipBody::decode(&bytes),
            Err(MessageError::UnknownVersion { got: 2, .. })
        ));
    }

    #[test]
    fn unknown_variant_in_current_version_is_malformed() {
        #[derive(Serialize)]
        #[serde(rename_all = "snake_case")]
        enum Other {
            Teleport { to: u64 },
        }
        let bytes =
            encode_versioned(GOSSIP_VERSION, &Other::Teleport { to: 1 }, MAX_GOSSIP_BYTES).unwrap();
        assert!(matches!(
            GossipBody::decode(&bytes),
            Err(MessageError::Malformed(_))
        ));
    }

    #[test]
    fn error_labels_and_blame() {
        assert!(MessageError::Malformed("x".into()).is_peer_fault());
        assert!(!MessageError::Encode("x".into()).is_peer_fault());
        assert_eq!(
            MessageError::TooLarge { len: 2, limit: 1 }.label(),
            "too_large"
        );
    }
}
