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
use runtime::container::{Container, CreateOptions, ExecChanges, ExecOptions, parse_signal};
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
    /// Where images, layers and snapshots are stored.
    #[arg(long, global = true, default_value = "/var/lib/sched")]
    data_dir: PathBuf,
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
        /// Run a pulled image (`image pull REF` first) instead of a bundle: its rootfs is an
        /// overlay snapshot, its config the image's; removed again when the container ends.
        #[arg(long)]
        image: Option<String>,
        /// With --image: the command to run instead of the image's entrypoint and cmd.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Run another process inside a created or running container.
    Exec(ExecArgs),
    /// Freeze every process of a running container.
    Pause {
        /// The container's id.
        id: String,
    },
    /// Thaw a paused container.
    Resume {
        /// The container's id.
        id: String,
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
    /// Start a container under a shim that logs its output and records its exit (for the agent).
    /// Prints the container's pid once it runs.
    Shim {
        /// The bundle directory (holds config.json and the rootfs).
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
        /// Directory for exit.json, shim.pid and logs/.
        #[arg(long)]
        task_dir: PathBuf,
        /// Size in bytes at which the task log rotates (two files are kept).
        #[arg(long, default_value_t = 10 * 1024 * 1024)]
        max_log_bytes: u64,
        /// The container's id.
        id: String,
    },
    /// Write a default config.json (runc-like namespaces, mounts, capabilities) into a bundle.
    Spec {
        /// The bundle directory to write config.json into.
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
        /// The command the container runs (default: sh).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Internal: a container's init re-executed from a read-only clone of this binary.
    #[command(hide = true)]
    Init(InitArgs),
    /// Pull, list, inspect, remove, prune and unpack OCI images.
    Image {
        #[command(subcommand)]
        cmd: image::ImageCommand,
    },
}

#[derive(clap::Args)]
struct ExecArgs {
    /// A JSON process spec (OCI `process`) to run instead of COMMAND and the flags below.
    #[arg(short, long)]
    process: Option<PathBuf>,
    /// Working directory inside the container (default: the container's).
    #[arg(long)]
    cwd: Option<PathBuf>,
    /// Set an environment variable (KEY=VALUE); may be repeated.
    #[arg(short, long = "env")]
    env: Vec<String>,
    /// Allocate a terminal (needs --console-socket).
    #[arg(short, long)]
    tty: bool,
    /// Send the terminal's master to this unix socket.
    #[arg(long)]
    console_socket: Option<PathBuf>,
    /// Run as UID[:GID] (default: the container's user).
    #[arg(short, long)]
    user: Option<String>,
    /// Additional group ids; may be repeated.
    #[arg(short = 'g', long = "additional-gids")]
    additional_gids: Vec<u32>,
    /// Add a capability (CAP_NAME) to every set; may be repeated.
    #[arg(short, long = "cap")]
    cap: Vec<String>,
    /// Set no_new_privs for the process.
    #[arg(long)]
    no_new_privs: bool,
    /// Return once the process runs instead of waiting for it.
    #[arg(short, long)]
    detach: bool,
    /// Write the process's pid to this file.
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// The container's id.
    id: String,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// The descriptors and settings a forked init hands to its re-executed self.
#[derive(clap::Args)]
struct InitArgs {
    #[arg(long)]
    bundle: PathBuf,
    #[arg(long)]
    config: PathBuf,
    #[arg(long)]
    channel: i32,
    #[arg(long)]
    exec_fifo: i32,
    #[arg(long)]
    join: Vec<i32>,
    #[arg(long)]
    console_socket_fd: Option<i32>,
    #[arg(long, value_delimiter = ',')]
    signal_mask: Vec<i32>,
}

impl From<InitArgs> for runtime::InitHandover {
    fn from(a: InitArgs) -> Self {
        runtime::InitHandover {
            bundle: a.bundle,
            config: a.config,
            channel: a.channel,
            exec_fifo: a.exec_fifo,
            joins: a.join,
            console_socket: a.console_socket_fd,
            signal_mask: a.signal_mask,
        }
    }
}

#[derive(clap::Args)]
struct CreateArgs {
    /// The bundle directory (holds config.json and the rootfs).
    #[arg(short, long, default_value = ".")]
    bundle: PathBuf,
    /// Write the container's init pid to this file.
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// A unix socket that receives the terminal's master when process.terminal is true.
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
        Ok(CreateOptions {
            id: self.id.clone(),
            bundle: self.bundle.clone(),
            pid_file: self.pid_file.clone(),
            console_socket: self.console_socket.clone(),
        })
    }
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) if !err.use_stderr() => err.exit(), // --help and --version: print, exit 0
        Err(err) => {
            // Like every other failure: exit 1 with one line (clap's own text spans several).
            let text = err.to_string();
            let what: Vec<&str> = text
                .lines()
                .map(str::trim)
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
                .filter(|l| !l.is_empty())
                .collect();
            let what = what.join(" ");
            eprintln!("sched-runtime: {} (see sched-runtime --help)", what.trim_start_matches("error: "));
            std::process::exit(1);
        }
    };
    // A container's init re-executes itself from a read-only clone of this binary (see
    // runtime::init); a process exec'd into a container is forked from this CLI, so `exec`
    // re-executes from the clone first (CVE-2019-5736).
    if let Command::Init(handover) = cli.command {
        runtime::run_init(handover.into());
    }
    if matches!(cli.command, Command::Exec(_))
        && let Err(err) = runtime::self_exe::reexec_protected()
    {
        eprintln!("sched-runtime: {err}");
        std::process::exit(1);
    }
    init_logging(&cli);
    match execute(cli) {
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
    let file = cli.log.as_ref().and_then(|p| std::fs::OpenOptions::new().create(true).append(true).open(p).ok());
    match (file, cli.log_format) {
        (Some(f), LogFormat::Json) => builder.json().with_writer(std::sync::Mutex::new(f)).init(),
        (Some(f), LogFormat::Text) => builder.with_ansi(false).with_writer(std::sync::Mutex::new(f)).init(),
        // Without --log, errors are printed by main; only --debug records go to stderr.
        (None, _) if cli.debug => builder.with_writer(std::io::stderr).init(),
        (None, _) => {}
    }
}

fn execute(cli: Cli) -> Result<i32> {
    if cli.systemd_cgroup {
        anyhow::bail!("--systemd-cgroup is not supported: cgroups are managed through cgroupfs");
    }
    let command = match cli.command {
        Command::Image { cmd } => {
            image::run(cmd, &cli.data_dir)?;
            return Ok(0);
        }
        Command::Spec { bundle, command } => {
            let path = bundle.join("config.json");
            if path.exists() {
                anyhow::bail!("{} exists already: remove it first", path.display());
            }
            let spec = runtime::spec_template::default_spec(&command);
            let text = serde_json::to_string_pretty(&spec)?;
            std::fs::write(&path, text + "\n").with_context(|| format!("write {}", path.display()))?;
            return Ok(0);
        }
        other => other,
    };
    let root = StateRoot::open(&cli.root)?;
    match &command {
        Command::Image { .. } | Command::Spec { .. } | Command::Init(_) => unreachable!("handled above"),
        Command::Exec(args) => {
            let container = Container::load(&root, &args.id)?;
            let opts = args.options(&container)?;
            return Ok(container.exec(&opts)?);
        }
        Command::Create { create } => {
            Container::create(&root, &create.options()?, current_mask()?)?;
        }
        Command::Start { id } => Container::load(&root, id)?.start()?,
        Command::Shim { bundle, task_dir, max_log_bytes, id } => {
            let opts = runtime::shim::ShimOptions {
                id: id.clone(),
                bundle: bundle.clone(),
                task_dir: task_dir.clone(),
                max_log_bytes: *max_log_bytes,
            };
            println!("{}", runtime::shim::spawn(&root, &opts)?);
        }
        Command::Pause { id } => Container::load(&root, id)?.pause()?,
        Command::Resume { id } => Container::load(&root, id)?.resume()?,
        Command::Run { create, detach, image: Some(reference), command } => {
            if *detach {
                anyhow::bail!("--image runs in the foreground only (its rootfs is released when the container ends): drop --detach");
            }
            return run_image(&root, &cli.data_dir, create, reference, command);
        }
        Command::Run { create, detach: true, image: None, .. } => {
            let container = Container::create(&root, &create.options()?, current_mask()?)?;
            container.start()?;
        }
        Command::Run { create, detach: false, image: None, .. } => return Ok(Container::run(&root, &create.options()?)?),
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

/// `run --image REF`: a bundle under `<data dir>/bundles/<id>` from a pulled image, run in the
/// foreground, then removed with its rootfs.
fn run_image(root: &StateRoot, data_dir: &std::path::Path, create: &CreateArgs, reference: &str, command: &[String]) -> Result<i32> {
    use runtime::image::{ImageService, ImageServiceOptions, ProcessOverrides};
    let images = ImageService::open(data_dir, ImageServiceOptions::default())?;
    if images.get(reference).is_err() {
        anyhow::bail!("image {reference} is not pulled: run `sched-runtime image pull {reference}` first");
    }
    runtime::state::validate_id(&create.id)?;
    let dir = data_dir.join("bundles").join(&create.id);
    if dir.exists() {
        anyhow::bail!("{} exists: is container {} running from an image already?", dir.display(), create.id);
    }
    let opts = CreateOptions { bundle: dir.clone(), ..create.options()? };
    let overrides = ProcessOverrides { entrypoint: (!command.is_empty()).then(|| command.to_vec()), ..Default::default() };
    let bundle = images.create_bundle(reference, &create.id, &dir, &overrides, runtime::spec_template::default_spec(&[]))?;
    let code = Container::run(root, &opts);
    let removed = images.remove_bundle(&bundle);
    let code = code?;
    removed?;
    Ok(code)
}

impl ExecArgs {
    /// The process to exec: `--process FILE`, or the container's own changed by the flags.
    fn options(&self, container: &Container) -> Result<ExecOptions> {
        let process = match &self.process {
            Some(path) => runtime::container::read_process(path)?,
            None => container.exec_process(&ExecChanges {
                args: self.command.clone(),
                env: self.env.clone(),
                cwd: self.cwd.clone(),
                terminal: self.tty,
                user: self.user.clone(),
                additional_gids: self.additional_gids.clone(),
                capabilities: self.cap.clone(),
                no_new_privileges: self.no_new_privs,
            })?,
        };
        Ok(ExecOptions { process, detach: self.detach, pid_file: self.pid_file.clone(), console_socket: self.console_socket.clone() })
    }
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
            writeln!(out, "{:<20} {:<8} {:<10} {:<40} CREATED", "ID", "PID", "STATUS", "BUNDLE")?;
            for s in &states {
                let pid = if s.status == Status::Stopped { 0 } else { s.pid };
                writeln!(out, "{:<20} {:<8} {:<10} {:<40} {}", s.id, pid, s.status, s.bundle.display(), s.created)?;
            }
        }
    }
    Ok(())
}
