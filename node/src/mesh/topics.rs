//! Versioned names on the wire: gossipsub topics (`quackmesh/1/...`) and the stream protocol ids
//! of our request-response protocols. Everything that names a protocol lives here so that a
//! version bump is one edit.

use std::{fmt, str::FromStr};

use libp2p::{StreamProtocol, gossipsub};

/// Version segment of every topic name; bump it when a topic's message format changes
/// incompatibly.
pub const TOPIC_VERSION: u16 = 1;

/// First segment of every topic name.
pub const TOPIC_PREFIX: &str = "quackmesh";

/// Blob exchange (manifests, have-bitfields, chunks).
pub const BLOB_PROTOCOL: StreamProtocol = StreamProtocol::new("/quackmesh/blob/1");

/// Chunk transfer over long-lived streams (see [`crate::mesh::blob::stream`]).
pub const CHUNK_PROTOCOL: StreamProtocol = StreamProtocol::new("/quackmesh/chunk/1");

/// Application RPC (node status now; update submission, attestation, inference later).
pub const RPC_PROTOCOL: StreamProtocol = StreamProtocol::new("/quackmesh/rpc/1");

/// Our Kademlia DHT: a private protocol id keeps us out of the public IPFS DHT.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/quackmesh/kad/1");

/// The `protocol_version` string announced by identify.
pub const IDENTIFY_PROTOCOL: &str = "/quackmesh/id/1";

/// Longest id accepted inside a topic name (job ids, cluster ids).
pub const MAX_TOPIC_ID_CHARS: usize = 80;

/// Why a topic name or id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// The name does not have the `quackmesh/<version>/...` shape of any known topic.
    #[error("unknown topic {0:?}")]
    Unknown(String),
    /// The name is a quackmesh topic of a version we do not speak.
    #[error("topic {name:?} has version {version}, we speak {TOPIC_VERSION}")]
    UnsupportedVersion {
        /// The full name.
        name: String,
        /// Its version segment.
        version: String,
    },
    /// A job or cluster id that is empty, too long or holds characters other than
    /// `[A-Za-z0-9_-]` (and an optional `0x` prefix).
    #[error("invalid topic id {0:?}: expected 1-{MAX_TOPIC_ID_CHARS} characters of [A-Za-z0-9_-]")]
    InvalidId(String),
}

/// A validated job or cluster id as it appears in a topic name (a chain counter or a hex hash).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicId(String);

impl TopicId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for TopicId {
    type Err = TopicError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = !s.is_empty()
            && s.len() <= MAX_TOPIC_ID_CHARS
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(TopicError::InvalidId(s.to_owned()))
        }
    }
}

impl fmt::Display for TopicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A gossipsub topic of the QuackMesh network.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    /// `quackmesh/1/jobs`: job announcements.
    Jobs,
    /// `quackmesh/1/job/<jobId>`: round heads of one job.
    Job(TopicId),
    /// `quackmesh/1/cluster/<clusterId>`: the subnet of one rented cluster (access-controlled).
    Cluster(TopicId),
    /// `quackmesh/1/coordinators`: heartbeats of coordinator-eligible peers.
    Coordinators,
}

const JOBS: &str = "jobs";
const JOB: &str = "job";
const CLUSTER: &str = "cluster";
const COORDINATORS: &str = "coordinators";

impl Topic {
    /// The topic of job `id` (validated).
    pub fn job(id: impl fmt::Display) -> Result<Self, TopicError> {
        Ok(Self::Job(id.to_string().parse()?))
    }

    /// The topic of cluster `id` (validated).
    pub fn cluster(id: impl fmt::Display) -> Result<Self, TopicError> {
        Ok(Self::Cluster(id.to_string().parse()?))
    }

    /// The gossipsub topic (identity-hashed: the hash is the name).
    pub fn ident(&self) -> gossipsub::IdentTopic {
        gossipsub::IdentTopic::new(self.to_string())
    }

    /// The gossipsub topic hash.
    pub fn hash(&self) -> gossipsub::TopicHash {
        self.ident().hash()
    }

    /// Parses the topic of a received gossipsub message.
    pub fn from_hash(hash: &gossipsub::TopicHash) -> Result<Self, TopicError> {
        hash.as_str().parse()
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{TOPIC_PREFIX}/{TOPIC_VERSION}/")?;
        match self {
            Self::Jobs => f.write_str(JOBS),
            Self::Job(id) => write!(f, "{JOB}/{id}"),
            Self::Cluster(id) => write!(f, "{CLUSTER}/{id}"),
            Self::Coordinators => f.write_str(COORDINATORS),
        }
    }
}

impl FromStr for Topic {
    type Err = TopicError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let unknown = || TopicError::Unknown(s.to_owned());
        let mut parts = s.splitn(3, '/');
        let (Some(prefix), Some(version), Some(rest)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(unknown());
        };
        if prefix != TOPIC_PREFIX {
            return Err(unknown());
        }
        if version != TOPIC_VERSION.to_string() {
            return Err(TopicError::UnsupportedVersion {
                name: s.to_owned(),
                version: version.to_owned(),
            });
        }
        match rest.split_once('/') {
            None if rest == JOBS => Ok(Self::Jobs),
            None if rest == COORDINATORS => Ok(Self::Coordinators),
            Some((JOB, id)) => Ok(Self::Job(id.parse()?)),
            Some((CLUSTER, id)) => Ok(Self::Cluster(id.parse()?)),
            _ => Err(unknown()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_round_trip() {
        let all = [
            Topic::Jobs,
            Topic::Coordinators,
            Topic::job(42).unwrap(),
            Topic::job("0xabc123").unwrap(),
            Topic::cluster("7").unwrap(),
        ];
        for t in all {
            let name = t.to_string();
            assert_eq!(name.parse::<Topic>().unwrap(), t, "{name}");
            assert_eq!(Topic::from_hash(&t.hash()).unwrap(), t);
        }
    }

    #[test]
    fn topic_names_match_design() {
        assert_eq!(Topic::Jobs.to_string(), "quackmesh/1/jobs");
        assert_eq!(Topic::job(5).unwrap().to_string(), "quackmesh/1/job/5");
        assert_eq!(
            Topic::cluster("c9").unwrap().to_string(),
            "quackmesh/1/cluster/c9"
        );
        assert_eq!(Topic::Coordinators.to_string(), "quackmesh/1/coordinators");
    }

    #[test]
    fn bad_topic_names_rejected() {
        for bad in [
            "",
            "quackmesh",
            "quackmesh/1",
            "quackmesh/1/nope",
            "other/1/jobs",
            "quackmesh/1/job/",
            "quackmesh/1/job/a/b",
            "quackmesh/1/jobs/extra",
        ] {
            assert!(bad.parse::<Topic>().is_err(), "{bad:?}");
        }
        assert!(matches!(
            "quackmesh/2/jobs".parse::<Topic>(),
            Err(TopicError::UnsupportedVersion { .. })
        ));
        let long = "x".repeat(MAX_TOPIC_ID_CHARS + 1);
        assert!(matches!(Topic::job(&long), Err(TopicError::InvalidId(_))));
        assert!(Topic::cluster("a b").is_err());
    }

    #[test]
    fn protocol_ids_are_versioned() {
        for p in [BLOB_PROTOCOL, RPC_PROTOCOL, KAD_PROTOCOL] {
            assert!(p.as_ref().starts_with("/quackmesh/"));
            assert!(p.as_ref().ends_with("/1"));
        }
    }
}
