//! The `quackmesh` binary: parses the command line and hands off to `commands/`.
//! `anyhow` is used only here, at the edge; the library returns typed errors.

use clap::Parser;

mod cli;
mod commands;

#[global_allocator]
// glibc's allocator costs candle's small-tensor training step about 2.5x (../shared/FACTS.md).
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    init_tracing(&cli.log);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(commands::run(cli.command))
}

fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Logs go to stderr so that commands can print machine-readable results on stdout.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
