//! `sched-runtime`: a runc-compatible command line over the `runtime` library.
//!
//! Thin by design: parse arguments, set up logging, call one library verb, print the result.
//! Every failure exits 1 with one line on stderr (and an `error` record in `--log`).

mod image;

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use nix::sys::signal::SigSet;
use runtime::container::{Container, CreateOptions, parse_signal};
use runtime::state::{DEFAULT_ROOT, StateRoot, Status};

/// A runc-compatible OCI container runtime (the runtime of sched).
#[derive(Parser)]
#[command(name = "sched-runtime", version, about, long_about = None)]
struct Cli {
    /// Directory that holds the state of every container.
    #[arg(long, global = true, default_value = DEFAULT_ROOT)]
    root: PathBuf,
    /// Also write log records (and errors) to this file.
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// Format of the records in --log.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log debug records too.
    #[arg(long, global = true)]
    debug: bool,
    /// Accepted for runc compatibility; systemd cgroups are not supported, so it must not be set.
    #[arg(long, global = true, hide = true)]
    systemd_cgroup: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum ListFormat {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Create a container from a bundle and leave it waiting for `start`.
    Create {
        #[command(flatten)]
        create: CreateArgs,
    },
    /// Start a created container: its process execs the spec's program.
    Start {
        /// The container's id.
        id: String,
    },
    /// Create and start a container in the foreground; exit with its exit code (128+N after
    /// signal N). Signals sent to sched-runtime are forwarded to the container.
    Run {
        #[command(flatten)]
        create: CreateArgs,
        /// Create and start, then return at once instead of waiting.
        #[arg(short, long)]
        detach: bool,
    },
    /// Print the OCI state of a container as JSON.
    State {
        /// The container's id.
        id: String,
    },
    /// Send a signal to a container's init process.
    Kill {
        /// The container's id.
        id: String,
        /// A signal name (TERM, SIGKILL) or number (9).
        #[arg(default_value = "TERM")]
        signal: String,
        /// Accepted for runc compatibility: the signal goes to the init process, which takes
        /// its pid namespace down with it when it dies.
        #[arg(short, long)]
        all: bool,
    },
    /// Delete a stopped container: its cgroup and its state.
    Delete {
        /// Kill the container first if it is still created or running.
        #[arg(short, long)]
        force: bool,
        /// The container's id.
        id: String,
    },
    /// List the containers under --root.
    #[command(alias = "ps")]
    List {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
        /// Print only the ids.
        #[arg(short, long)]
        quiet: bool,
    },
}

#[derive(clap::Args)]
struct CreateArgs {
    /// The bundle directory (holds config.json and the rootfs).
    #[arg(short, long, default_value = ".")]
    bundle: PathBuf,
    /// Write the container's init pid to this file.
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// Terminals are not supported yet: a spec with process.terminal=true is refused.
    #[arg(long)]
    console_socket: Option<PathBuf>,
    /// Accepted for runc compatibility (no session keyring is created anyway).
    #[arg(long)]
    no_new_keyring: bool,
    /// Not supported: pivot_root is always used.
    #[arg(long, hide = true)]
    no_pivot: bool,
    /// The container's id.
    id: String,
}

impl CreateArgs {
    fn options(&self) -> Result<CreateOptions> {
        if self.no_pivot {
            anyhow::bail!("--no-pivot is not supported: the rootfs is always entered with pivot_root");
        }
        Ok(CreateOptions { id: self.id.clone(), bundle: self.bundle.clone(), pid_file: self.pid_file.clone() })
    }
}

fn main() {
    let cli = Cli::parse();
    init_logging(&cli);
    match execute(&cli) {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            let msg = format!("{err:#}");
            tracing::error!("{msg}");
            eprintln!("sched-runtime: {msg}");
            std::process::exit(1);
        }
    }
}

fn init_logging(cli: &Cli) {
    let level = if cli.debug { tracing::Level::DEBUG } else { tracing::Level::WARN };
    let builder = tracing_subscriber::fmt().with_max_level(level).with_target(false);
    let file = cli.log.as_ref().and_then(|p| {
        std::fs::OpenOptions::new().create(true).append(true).open(p).ok()
    });
    match (file, cli.log_format) {
        (Some(f), LogFormat::Json) => builder.json().with_writer(std::sync::Mutex::new(f)).init(),
        (Some(f), LogFormat::Text) => builder.with_ansi(false).with_writer(std::sync::Mutex::new(f)).init(),
        // Without --log, errors are printed by main; only --debug records go to stderr.
        (None, _) if cli.debug => builder.with_writer(std::io::stderr).init(),
        (None, _) => {}
    }
}

fn execute(cli: &Cli) -> Result<i32> {
    if cli.systemd_cgroup {
        anyhow::bail!("--systemd-cgroup is not supported: cgroups are managed through cgroupfs");
    }
    let root = StateRoot::open(&cli.root)?;
    match &cli.command {
        Command::Create { create } => {
            Container::create(&root, &create.options()?, current_mask()?)?;
        }
        Command::Start { id } => Container::load(&root, id)?.start()?,
        Command::Run { create, detach: true } => {
            let container = Container::create(&root, &create.options()?, current_mask()?)?;
            container.start()?;
        }
        Command::Run { create, detach: false } => return Ok(Container::run(&root, &create.options()?)?),
        Command::State { id } => {
            let state = Container::load(&root, id)?.state();
            println!("{}", serde_json::to_string_pretty(&state)?);
        }
        Command::Kill { id, signal, all: _ } => Container::load(&root, id)?.kill(parse_signal(signal)?)?,
        Command::Delete { force, id } => match Container::load(&root, id) {
            Ok(c) => c.delete(*force)?,
            // Like runc: deleting what is already gone is fine when forced.
            Err(runtime::Error::NotFound(_)) if *force => {}
            Err(e) => return Err(e.into()),
        },
        Command::List { format, quiet } => list(&root, *format, *quiet)?,
    }
    Ok(0)
}

/// The signal mask this process runs with (the container's program inherits it).
fn current_mask() -> Result<SigSet> {
    SigSet::thread_get_mask().context("read the signal mask")
}

fn list(root: &StateRoot, format: ListFormat, quiet: bool) -> Result<()> {
    let states: Vec<_> = Container::list(root)?.iter().map(Container::state).collect();
    let mut out = std::io::stdout().lock();
    if quiet {
        for s in &states {
            writeln!(out, "{}", s.id)?;
        }
        return Ok(());
    }
    match format {
        ListFormat::Json => writeln!(out, "{}", serde_json::to_string(&states)?)?,
        ListFormat::Table => {
            writeln!(out, "{:<20} {:<8} {:<10} {:<40} {}", "ID", "PID", "STATUS", "BUNDLE", "CREATED")?;
            for s in &states {
                let pid = if s.status == Status::Stopped { 0 } else { s.pid };
                writeln!(out, "{:<20} {:<8} {:<10} {:<40} {}", s.id, pid, s.status, s.bundle.display(), s.created)?;
            }
        }
    }
    Ok(())
}
