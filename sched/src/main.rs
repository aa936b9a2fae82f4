//! `sched`: the server, the command-line client and `sched dev` in one binary. Parsing and
//! wiring only: the server and client commands live in `scheduler::cli`, `sched dev` in
//! [`dev`].
//!
//! This is its own package, not a bin of `scheduler`, because `sched dev` runs an agent and the
//! agent links `runtime`, which the scheduler library must never link.

mod dev;

use std::process::ExitCode;

use clap::{Args, CommandFactory, FromArgMatches};
use scheduler::cli::{Cli, CliCommand, run_cli};

/// The subcommand this binary adds to `scheduler::cli::Cli`.
const DEV: &str = "dev";

/// What the command line asks for.
enum Invocation {
    Dev(dev::DevArgs),
    Cli(Cli),
}

fn main() -> ExitCode {
    let invocation = match parse() {
        Ok(invocation) => invocation,
        Err(e) => {
            // Help and version are successes; a bad command line is bad input (exit 1, not
            // clap's 2, which sched reserves for an unreachable cluster).
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(1) } else { ExitCode::SUCCESS };
        }
    };
    let default_filter = match &invocation {
        // raft-rs narrates every election step at info; one process of sched dev does not need it.
        Invocation::Dev(_) => "info,raft=warn,raft_engine=warn",
        Invocation::Cli(Cli { command: CliCommand::Server(_), .. }) => "info",
        Invocation::Cli(_) => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("sched: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match invocation {
        Invocation::Dev(args) => match runtime.block_on(dev::run(args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sched dev: {e:#}");
                ExitCode::from(1)
            }
        },
        Invocation::Cli(cli) => match runtime.block_on(run_cli(cli)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sched: {e}");
                e.exit_code()
            }
        },
    }
}

/// `scheduler::cli::Cli` with `dev` added as one more subcommand. `Cli` stays the one
/// definition of the global flags, the other subcommands and their help.
fn parse() -> Result<Invocation, clap::Error> {
    let dev = dev::DevArgs::augment_args(clap::Command::new(DEV));
    let mut command = Cli::command().subcommand(dev);
    let matches = command.try_get_matches_from_mut(std::env::args_os())?;
    match matches.subcommand() {
        Some((DEV, dev_matches)) => dev::DevArgs::from_arg_matches(dev_matches).map(Invocation::Dev),
        _ => Cli::from_arg_matches(&matches).map(Invocation::Cli),
    }
    .map_err(|e| e.format(&mut command))
}
