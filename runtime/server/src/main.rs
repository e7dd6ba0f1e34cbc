//! `a3s-power`: the A3S Power runtime's command line.
//!
//! Each subcommand lives in its own module under `cmd/`; this file only parses arguments and
//! dispatches. Diagnostics go to stderr so that stdout carries only what the command produces.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;

#[derive(Debug, Parser)]
#[command(
    name = "a3s-power",
    version,
    about = "Confidential LLM inference: the A3S Power runtime"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the OpenAI-compatible server.
    Serve(cmd::serve::ServeArgs),
    /// Download a model into the store (URL or Hugging Face-style repository).
    Pull(cmd::models::PullArgs),
    /// List the models in the store.
    List(cmd::models::ListArgs),
    /// Generate text from a local GGUF model, streaming it to stdout.
    Run(cmd::run::RunArgs),
    /// Print a GGUF model's architecture, shapes, quantization, tokenizer and memory estimate.
    Inspect(cmd::inspect::InspectArgs),
    /// Measure prefill and decode throughput of a model (JSON on stdout; see bench/).
    Bench(cmd::bench::BenchArgs),
    /// Generate a model-signing key pair or a model encryption key.
    Keygen(cmd::keygen::KeygenArgs),
    /// Sign a model: write FILE.sig (Ed25519 over its SHA-256).
    Seal(cmd::seal::SealArgs),
    /// Encrypt a model to a chunked AES-256-GCM .enc file.
    Encrypt(cmd::encrypt::EncryptArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(a) => cmd::serve::run(a),
        Command::Pull(a) => cmd::models::pull(a),
        Command::List(a) => cmd::models::list(a),
        Command::Run(a) => cmd::run::run(a),
        Command::Inspect(a) => cmd::inspect::run(a),
        Command::Bench(a) => cmd::bench::run(a),
        Command::Keygen(a) => cmd::keygen::run(a),
        Command::Seal(a) => cmd::seal::run(a),
        Command::Encrypt(a) => cmd::encrypt::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
