//! Command-line interface: clap derive lives here and in the per-area files beside it; each
//! area's handler in `commands/` turns these arguments into the library's `Config` structs.

use clap::{Parser, Subcommand};

pub(crate) mod blob;
pub(crate) mod node;

/// QuackMesh: decentralized federated learning and compute rental on a libp2p mesh, paid in
/// $DUCK on DuckChain.
#[derive(Debug, Parser)]
#[command(name = "quackmesh", version, about, long_about = None, propagate_version = true)]
pub(crate) struct Cli {
    /// Log filter (tracing's env-filter syntax), e.g. `info` or `quackmesh=debug,libp2p=info`.
    #[arg(long, global = true, env = "QUACKMESH_LOG", default_value = "info")]
    pub(crate) log: String,

    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Top-level subcommands; each area adds its own.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run a node (see `quackmesh node --help`).
    Node(node::NodeArgs),
    /// Put and get blobs through a running node.
    Blob(blob::BlobArgs),
}
