//! Handlers for each subcommand (the binary's edge: `anyhow` errors, printing to stdout).

use crate::cli::Command;

pub(crate) async fn run(command: Command) -> anyhow::Result<()> {
    match command {}
}
