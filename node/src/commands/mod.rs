//! Handlers for each subcommand (the binary's edge: `anyhow` errors, printing to stdout).

use crate::cli::Command;

mod chain;
mod learn;

pub(crate) async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Chain(cmd) => chain::run_chain(cmd).await,
        Command::Wallet(cmd) => chain::run_wallet(cmd).await,
        Command::Market(cmd) => chain::run_market(cmd).await,
        Command::Train(args) => learn::train(args).await,
        Command::Eval(args) => learn::eval(args).await,
        Command::Data(args) => learn::data(args).await,
    }
}
