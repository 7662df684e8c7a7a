//! `quackmesh node`: resolve the layered config, start the node, print where it is, serve
//! until Ctrl-C or SIGTERM, shut down cleanly.

use std::io::Write;

use anyhow::Context;
use quackmesh::{config, node::Node};

use crate::cli::node::NodeArgs;

pub(crate) async fn run(args: NodeArgs) -> anyhow::Result<()> {
    let config = config::layered(args.layer(), args.config.as_deref(), std::env::vars())?;
    let node = Node::start(config).await.context("cannot start the node")?;
    {
        // One parseable line each, flushed at once: scripts and tests read these.
        let mut out = std::io::stdout().lock();
        writeln!(out, "peer_id: {}", node.peer_id)?;
        for addr in node.p2p_addrs() {
            writeln!(out, "listen: {addr}")?;
        }
        writeln!(out, "api: {}", node.api_url())?;
        writeln!(
            out,
            "api_token_file: {}",
            node.config.api_token_file.display()
        )?;
        out.flush()?;
    }
    wait_for_signal().await?;
    tracing::info!(target: "node", "shutting down");
    node.shutdown().await;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await?;
    Ok(())
}
