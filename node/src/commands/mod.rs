//! Handlers for each subcommand (the binary's edge: `anyhow` errors, printing to stdout).

use crate::cli::Command;

mod learn;

pub(crate) async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Train(args) => learn::train(args).await,
        Command::Eval(args) => learn::eval(args).await,
        Command::Data(args) => learn::data(args).await,
    }
}
