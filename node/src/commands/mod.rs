//! Handlers for each subcommand (the binary's edge: `anyhow` errors, printing to stdout).

use crate::cli::Command;

mod blob;
mod node;

pub(crate) async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Node(args) => node::run(args).await,
        Command::Blob(args) => blob::run(args).await,
    }
}
