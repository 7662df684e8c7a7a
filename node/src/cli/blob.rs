//! Arguments of `quackmesh blob`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

/// Default URL of the local node's API.
pub(crate) const DEFAULT_NODE_URL: &str = "http://127.0.0.1:7720";

/// Move files through the mesh by hand, via a running node's HTTP API.
#[derive(Debug, Args)]
pub(crate) struct BlobArgs {
    #[command(subcommand)]
    pub(crate) command: BlobCommand,
}

/// Blob subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum BlobCommand {
    /// Store FILE on the node and announce it; prints the blob id (a 64-digit hash).
    Put {
        /// The file to share.
        file: PathBuf,
        /// Let no peer fetch it until it is shared (a job or inference request that names a
        /// cluster, or `PUT /api/blob/{id}/access`).
        #[arg(long)]
        private: bool,
        /// API URL of the node.
        #[arg(long, value_name = "URL", env = "QUACKMESH_NODE", default_value = DEFAULT_NODE_URL)]
        node: String,
    },
    /// Fetch blob HASH through the node (from the mesh if the node lacks it), check it
    /// against its id and write it to OUTPUT.
    Get {
        /// The blob id.
        hash: String,
        /// Where to write it (written to OUTPUT.part first, renamed when verified).
        #[arg(short, long, value_name = "OUTPUT")]
        output: PathBuf,
        /// Fetch only from this peer (repeatable); default: any holder found in the DHT.
        #[arg(long, value_name = "PEER_ID")]
        from: Vec<String>,
        /// API URL of the node.
        #[arg(long, value_name = "URL", env = "QUACKMESH_NODE", default_value = DEFAULT_NODE_URL)]
        node: String,
    },
    /// Make the node fetch blob HASH into its store (no download to this machine); waits and
    /// prints the fetch report (JSON): chunks fetched, which peers served them, time taken.
    Fetch {
        /// The blob id.
        hash: String,
        /// Fetch only from this peer (repeatable); default: any holder found in the DHT.
        #[arg(long, value_name = "PEER_ID")]
        from: Vec<String>,
        /// API URL of the node.
        #[arg(long, value_name = "URL", env = "QUACKMESH_NODE", default_value = DEFAULT_NODE_URL)]
        node: String,
    },
    /// Show how much of blob HASH the node has and how its last fetch went (JSON).
    Status {
        /// The blob id.
        hash: String,
        /// API URL of the node.
        #[arg(long, value_name = "URL", env = "QUACKMESH_NODE", default_value = DEFAULT_NODE_URL)]
        node: String,
    },
}
