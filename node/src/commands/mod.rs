//! Handlers for each subcommand (the binary's edge: `anyhow` errors, printing to stdout).

use crate::cli::Command;

mod blob;
mod chain;
mod http;
mod infer;
mod job;
mod learn;
mod node;

pub(crate) async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Node(args) => node::run(args).await,
        Command::Blob(args) => blob::run(args).await,
        Command::Job(args) => job::run(args).await,
        Command::Infer(args) => infer::run(args).await,
        Command::Chain(cmd) => chain::run_chain(cmd).await,
        Command::Wallet(cmd) => chain::run_wallet(cmd).await,
        Command::Market(cmd) => chain::run_market(cmd).await,
        Command::Train(args) => learn::train(args).await,
        Command::Eval(args) => learn::eval(args).await,
        Command::Data(args) => learn::data(args).await,
    }
}
