//! The `ax` command line: `serve` and `workflow …`.
//!
//! Exit codes: 0 success (for `run`/`resume`/`restore`: the execution completed);
//! 1 failure (invalid workflow, failed run, refused request); 2 usage error or
//! unreadable file; 3 paused or interrupted (resumable); 4 cancelled.

mod follow;
mod progress;

use crate::api::{self, AppState};
use crate::config::AgentsConfig;
use crate::engine::{Decision, Engine, EngineError, Files, RunEnd, RunOptions, Settings};
use crate::providers::Router;
use crate::store::{self, Control, DbTarget, ExecutionFilter, PruneOptions, Store, now_ms};
use anyhow::{Context as _, Result, anyhow, bail};
use ax_core::{ExecutionState, Options, Report};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_PAUSED: i32 = 3;
pub const EXIT_CANCELLED: i32 = 4;

#[derive(Parser, Debug)]
#[command(
    name = "ax",
    version,
    about = "Durable multi-agent LLM workflows",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug, Clone)]
struct Global {
    /// The database: a SQLite file, or postgres://USER@HOST:PORT/DB to share one
    /// PostgreSQL database between many ax processes (default: $AX_DB, else
    /// ~/.local/share/ax/ax.db).
    #[arg(long, global = true, value_name = "PATH|URL")]
    db: Option<String>,
    /// The agents config file, TOML or YAML (default: $AX_AGENTS, else ~/.config/ax/agents.toml if present).
    #[arg(long, global = true, value_name = "PATH", env = "AX_AGENTS")]
    agents: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the HTTP API, live events and the web app.
    Serve(ServeArgs),
    /// Validate, inspect and run workflows.
    #[command(subcommand)]
    Workflow(WorkflowCommand),
    /// Drive executions from the shared queue, without HTTP: a worker that
    /// claims queued runs and takes over those of workers that died.
    Worker(WorkerArgs),
    /// Drive an execution in the background (used by `--detach`).
    #[command(name = "__drive", hide = true)]
    Drive { id: String },
    /// The response cache (steps with `cache`, runs with `--cache`).
    #[command(subcommand)]
    Cache(CacheCommand),
}

#[derive(Subcommand, Debug)]
enum CacheCommand {
    /// Answers held, their size, hits and what the hits saved.
    Stats {
        #[command(flatten)]
        fmt: Fmt,
    },
    /// Remove cached answers (all, or those older than --older-than).
    Clear {
        /// Only answers older than this: `30d`, `12h`, `90m`, `45s`.
        #[arg(long, value_name = "AGE")]
        older_than: Option<String>,
        #[command(flatten)]
        fmt: Fmt,
    },
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Port to listen on.
    #[arg(long, default_value_t = 8080, env = "AX_PORT")]
    port: u16,
    /// Address to bind. Anything but loopback requires AX_TOKEN.
    #[arg(long, default_value = "127.0.0.1", env = "AX_BIND")]
    bind: IpAddr,
    /// The built web app (trunk's dist/); default: ./dist or the repository's dist/.
    #[arg(long, env = "AX_WEB_DIR", value_name = "DIR")]
    web_dir: Option<PathBuf>,
    /// Another name the server answers to (a reverse proxy's, a tunnel's, a LAN name):
    /// `ax.example.com`, `name:port`, `.example.com` (the domain and every name under
    /// it) or `*` (any name; needs AX_TOKEN). Repeatable; AX_ALLOWED_HOSTS takes a
    /// comma-separated list. localhost, loopback addresses and the bound address always work.
    #[arg(
        long = "allowed-host",
        value_name = "HOST",
        env = "AX_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    allowed_hosts: Vec<String>,
    /// A web origin whose pages may call this server (CORS), e.g.
    /// `https://app.example.com`. Repeatable; AX_CORS_ORIGINS takes a comma-separated
    /// list. Needs AX_TOKEN.
    #[arg(
        long = "cors-origin",
        value_name = "ORIGIN",
        env = "AX_CORS_ORIGINS",
        value_delimiter = ','
    )]
    cors_origins: Vec<String>,
    #[command(flatten)]
    worker: WorkerArgs,
}

/// How this process works as a worker (every `ax serve` is one).
#[derive(Args, Debug, Clone, Copy)]
struct WorkerArgs {
    /// The most executions this process drives at once; more wait in the queue
    /// for any worker (default: no cap).
    #[arg(long, env = "AX_MAX_RUNS", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_runs: Option<u32>,
    /// Do not take over interrupted runs, or runs whose process died or lost its
    /// lease (by default a worker resumes them, at start and whenever it finds one).
    #[arg(long)]
    no_recover: bool,
    /// How long a lease on an execution lasts without renewal, in seconds: a
    /// worker that stops renewing loses its runs to another this long after.
    #[arg(long, env = "AX_LEASE_SECS", value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(2..=3600))]
    lease_secs: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum GraphFormat {
    Json,
    Mermaid,
    Dot,
}

#[derive(Args, Debug, Clone, Copy)]
struct Fmt {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// The run's own budget, over the file's `config.budget`.
#[derive(Args, Debug, Clone, Copy)]
struct BudgetArgs {
    /// The most the run may spend, in US dollars (at the agents file's prices).
    #[arg(long, value_name = "USD", value_parser = parse_usd)]
    budget_usd: Option<f64>,
    /// The most tokens (in and out) the run may use.
    #[arg(long, value_name = "TOKENS")]
    budget_tokens: Option<u64>,
}

impl BudgetArgs {
    fn budget(self) -> ax_core::Budget {
        ax_core::Budget {
            usd: self.budget_usd,
            tokens: self.budget_tokens,
        }
    }
}

fn parse_usd(s: &str) -> std::result::Result<f64, String> {
    match s.trim().trim_start_matches('$').parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!(
            "`{s}` is not an amount in US dollars; write zero or more, such as 2.50"
        )),
    }
}

#[derive(Subcommand, Debug)]
enum WorkflowCommand {
    /// Run a workflow file and show live progress (Ctrl-C pauses).
    Run {
        file: PathBuf,
        /// A run input, `name=value`: a JSON value when it parses as one (`n=800`,
        /// `tags=["a","b"]`, `s='"800"'`), else the text; `name=@path` takes a
        /// file's text. Repeatable.
        #[arg(long = "input", short = 'i', value_name = "NAME=VALUE")]
        inputs: Vec<String>,
        /// Inputs from a JSON or YAML object file.
        #[arg(long, value_name = "FILE")]
        input_file: Option<PathBuf>,
        /// Start it in the background and return its id.
        #[arg(long)]
        detach: bool,
        #[command(flatten)]
        budget: BudgetArgs,
        /// Answer from the response cache where an identical call was made
        /// before (steps without their own `cache`, in sub-workflows too).
        #[arg(long)]
        cache: bool,
        /// Print the running steps' text whole as it arrives, under a line
        /// naming the step that speaks (text output only).
        #[arg(long)]
        stream: bool,
        #[command(flatten)]
        fmt: Fmt,
    },
    /// List executions, newest first.
    List {
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Only executions in this state.
        #[arg(long)]
        state: Option<String>,
        #[command(flatten)]
        fmt: Fmt,
    },
    /// Show an execution and its steps.
    Status {
        id: String,
        #[command(flatten)]
        fmt: Fmt,
    },
    /// Pause: start nothing new; in-flight steps finish (or stop with --now).
    Pause {
        id: String,
        /// Abort in-flight steps too (they run again on resume).
        #[arg(long)]
        now: bool,
        #[command(flatten)]
        fmt: Fmt,
    },
    /// Resume a paused, failed or interrupted execution (raise its budget with
    /// --budget-usd / --budget-tokens).
    Resume {
        id: String,
        #[arg(long)]
        detach: bool,
        #[command(flatten)]
        budget: BudgetArgs,
        /// Print the running steps' text whole as it arrives (as `run --stream`).
        #[arg(long)]
        stream: bool,
        #[command(flatten)]
        fmt: Fmt,
    },
    /// Approve a step that waits for a decision (`type: approval`); the run goes on.
    Approve {
        id: String,
        /// The approval step's key.
        step: String,
        /// What later steps read as `{{STEP.result.comment}}`.
        #[arg(long)]
        comment: Option<String>,
        /// Data for the step's `outputSchema`: JSON, or `@FILE` with JSON.
        #[arg(long, value_name = "JSON|@FILE")]
        data: Option<String>,
        /// Who decides (default: $USER).
        #[arg(long)]
        by: Option<String>,
        #[command(flatten)]
        fmt: Fmt,
    },
    /// Reject a step that waits for a decision: it fails with class `rejected`.
    Reject {
        id: String,
        /// The approval step's key.
        step: String,
        /// Why; it is the step's error message.
        #[arg(long)]
        comment: Option<String>,
        /// Who decides (default: $USER).
        #[arg(long)]
        by: Option<String>,
        #[command(flatten)]
        fmt: Fmt,
    },
    /// Cancel an execution; in-flight provider calls are aborted.
    Cancel {
        id: String,
        #[command(flatten)]
        fmt: Fmt,
    },
    /// Statistics per workflow: runs by state, success rate, p50/p95 duration,
    /// tokens and cost.
    Stats {
        /// Only this workflow: its name (every stored version) or a stored id.
        workflow: Option<String>,
        #[command(flatten)]
        fmt: Fmt,
    },
    /// List an execution's restore points.
    Checkpoints {
        id: String,
        #[command(flatten)]
        fmt: Fmt,
    },
    /// Rewind an execution to a restore point and continue it.
    Restore {
        checkpoint_id: String,
        #[arg(long)]
        detach: bool,
        #[command(flatten)]
        fmt: Fmt,
    },
    /// Keep the newest restore points, drop old ones, shrink the database file.
    Prune {
        /// Restore points kept per execution.
        #[arg(long, default_value_t = 20)]
        keep: usize,
        /// Also drop restore points older than this (e.g. 30d, 12h, 90m).
        #[arg(long, value_name = "AGE")]
        older_than: Option<String>,
        /// With --older-than: delete finished executions older than that.
        #[arg(long)]
        delete_finished: bool,
        #[command(flatten)]
        fmt: Fmt,
    },
    /// Show an execution's events (--follow waits for new ones).
    Events {
        id: String,
        #[arg(long, short = 'f')]
        follow: bool,
        #[command(flatten)]
        fmt: Fmt,
    },
    /// Validate a workflow file.
    Validate {
        file: PathBuf,
        #[command(flatten)]
        fmt: Fmt,
    },
    /// Print a workflow's dependency graph.
    Graph {
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = GraphFormat::Json)]
        format: GraphFormat,
    },
    /// Print the JSON Schema of the workflow file format.
    Schema,
}

/// Parse arguments, run, and return the exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
        }
    };
    init_logging(matches!(cli.command, Command::Serve(_)));
    follow::remember(cli.global.db.as_deref(), cli.global.agents.as_deref());
    // Commands that need no database or runtime.
    if let Command::Workflow(cmd) = &cli.command {
        match cmd {
            WorkflowCommand::Validate { file, fmt } => return validate(file, fmt.format),
            WorkflowCommand::Graph { file, format } => return graph(file, *format),
            WorkflowCommand::Schema => {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&ax_core::model::json_schema())
                        .unwrap_or_default()
                );
                return EXIT_OK;
            }
            _ => {}
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return EXIT_FAILED;
        }
    };
    runtime.block_on(async move {
        match run(cli).await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {}", one_line(&e));
                EXIT_FAILED
            }
        }
    })
}

fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").replace('\n', " ")
}

fn init_logging(serve: bool) {
    let default = if serve { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("AX_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

fn db_target(g: &Global) -> Result<DbTarget> {
    match &g.db {
        Some(db) => DbTarget::parse(db).context("--db"),
        None => DbTarget::from_env_or_default().context("AX_DB"),
    }
}

async fn open_engine(g: &Global) -> Result<Arc<Engine>> {
    open_engine_with(g, Settings::default()).await
}

async fn open_engine_with(g: &Global, settings: Settings) -> Result<Arc<Engine>> {
    let store = Store::open(&db_target(g)?).await?;
    let config = AgentsConfig::load(g.agents.as_deref())?;
    let router = Router::from_env(config)?;
    let engine = Engine::new(store, router, settings);
    engine.recover_orphans().await?;
    Ok(engine)
}

impl WorkerArgs {
    fn settings(self) -> Settings {
        Settings {
            max_runs: self.max_runs.map(|n| n as usize),
            recover: !self.no_recover,
            lease: std::time::Duration::from_secs(self.lease_secs),
            ..Settings::default()
        }
    }
}

/// Start the worker loop; at start, say what it recovers. Waiting executions
/// have no task of their own: every worker also wakes, once a second, the ones
/// whose approval deadline passed.
async fn start_worker(engine: &Arc<Engine>, args: WorkerArgs) -> Result<()> {
    {
        let engine = engine.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tick.tick().await;
                if let Err(e) = engine.wake_due().await {
                    tracing::warn!("waking waiting executions failed (tried again): {e:#}");
                }
            }
        });
    }
    let recovered = claim_at_start(engine).await;
    if recovered > 0 {
        tracing::info!(
            "took over {recovered} execution(s) that were waiting for a driver or whose driver stopped"
        );
    } else if args.no_recover {
        tracing::info!("--no-recover: interrupted runs are left for `ax workflow resume`");
    }
    engine.start_worker();
    Ok(())
}

/// The first pass over runs that want a driver. The database answered a
/// moment ago (it was opened and migrated); an error now is an outage or a
/// restart, which a worker rides out like any other: it tries again.
async fn claim_at_start(engine: &Arc<Engine>) -> usize {
    let mut pause = std::time::Duration::from_millis(200);
    loop {
        match engine.claim_once().await {
            Ok(n) => return n,
            Err(e) => {
                tracing::warn!("could not look for runs to take over yet (trying again): {e:#}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(5));
            }
        }
    }
}

async fn worker(g: &Global, args: WorkerArgs) -> Result<i32> {
    let engine = open_engine_with(g, args.settings()).await?;
    eprintln!(
        "ax worker {} on {} (max runs: {}, lease {} s)",
        engine.owner().id,
        engine.store().describe(),
        args.max_runs.map_or("no cap".to_owned(), |n| n.to_string()),
        args.lease_secs
    );
    start_worker(&engine, args).await?;
    let _ = tokio::signal::ctrl_c().await;
    eprintln!("shutting down: pausing running executions");
    engine.pause_all().await;
    Ok(EXIT_OK)
}

async fn run(cli: Cli) -> Result<i32> {
    let g = cli.global.clone();
    match cli.command {
        Command::Serve(args) => serve(&g, args).await,
        Command::Worker(args) => worker(&g, args).await,
        Command::Drive { id } => {
            let engine = open_engine(&g).await?;
            let handle = engine.drive(&id).await.map_err(engine_err)?;
            let end = handle
                .await
                .map_err(|e| anyhow!("the run task failed: {e}"))?;
            finish_taken_runs(&engine).await;
            Ok(exit_for(end.state))
        }
        Command::Workflow(cmd) => workflow(&g, cmd).await,
        Command::Cache(cmd) => cache(&g, cmd).await,
    }
}

async fn cache(g: &Global, cmd: CacheCommand) -> Result<i32> {
    let store = Store::open(&db_target(g)?).await?;
    match cmd {
        CacheCommand::Stats { fmt } => {
            let s = store.cache_stats().await?;
            match fmt.format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&s)?),
                Format::Text => {
                    println!(
                        "{} answers, {}, {} hits (saved ${:.4})",
                        s.entries,
                        progress::format_bytes(s.bytes),
                        s.hits,
                        s.saved_usd
                    );
                    if let (Some(a), Some(b)) = (s.oldest_at, s.newest_at) {
                        println!(
                            "oldest {}, newest {}",
                            progress::format_time(a),
                            progress::format_time(b)
                        );
                    }
                }
            }
        }
        CacheCommand::Clear { older_than, fmt } => {
            let age = older_than.as_deref().map(parse_age).transpose()?;
            let before = age.map(|a| now_ms().saturating_sub(a));
            let n = store.cache_clear(before).await?;
            match fmt.format {
                Format::Json => println!("{}", json!({ "removed": n })),
                Format::Text => println!("removed {n} cached answers"),
            }
        }
    }
    Ok(EXIT_OK)
}

fn engine_err(e: EngineError) -> anyhow::Error {
    match e {
        EngineError::Invalid(report) => anyhow!(
            "the workflow is not valid: {}",
            report
                .errors
                .iter()
                .map(|p| format!("[{}] {}", p.code, p.message))
                .collect::<Vec<_>>()
                .join("; ")
        ),
        other => anyhow!(other),
    }
}

fn exit_for(state: ExecutionState) -> i32 {
    match state {
        ExecutionState::Completed => EXIT_OK,
        ExecutionState::Paused
        | ExecutionState::Waiting
        | ExecutionState::Interrupted
        | ExecutionState::Idle
        | ExecutionState::Running
        | ExecutionState::Validating => EXIT_PAUSED,
        ExecutionState::Cancelled => EXIT_CANCELLED,
        ExecutionState::Failed => EXIT_FAILED,
    }
}

// ---------------------------------------------------------------- serve

fn find_web_dir(given: Option<PathBuf>) -> Option<PathBuf> {
    if let Some(d) = given {
        return Some(d);
    }
    let mut candidates = vec![PathBuf::from("dist")];
    if let Ok(exe) = std::env::current_exe() {
        // target/{debug,release}/ax → the repository's dist/
        if let Some(repo) = exe.parent().and_then(Path::parent).and_then(Path::parent) {
            candidates.push(repo.join("dist"));
        }
    }
    candidates
        .into_iter()
        .find(|d| d.join("index.html").is_file())
}

async fn serve(g: &Global, args: ServeArgs) -> Result<i32> {
    let token = std::env::var("AX_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty());
    if !args.bind.is_loopback() && token.is_none() {
        bail!(
            "binding {} exposes ax beyond this machine: set AX_TOKEN to a secret (clients send `Authorization: Bearer <token>`), or bind 127.0.0.1",
            args.bind
        );
    }
    let access = api::Access::new(args.bind, &args.allowed_hosts, &args.cors_origins)
        .map_err(|e| anyhow!(e))?;
    if !access.cors_origins().is_empty() && token.is_none() {
        bail!(
            "--cors-origin lets pages on {} drive this server: set AX_TOKEN to a secret as well \
             (the page sends `Authorization: Bearer <token>`), so that only who holds it can",
            access.cors_origins().join(", ")
        );
    }
    if access.any_host() && token.is_none() {
        bail!(
            "--allowed-host '*' turns off the defence against DNS rebinding: set AX_TOKEN to a \
             secret as well, or name the hosts (`--allowed-host ax.example.com`)"
        );
    }
    let engine = open_engine_with(g, args.worker.settings()).await?;
    start_worker(&engine, args.worker).await?;
    let web_dir = find_web_dir(args.web_dir);
    if let Some(d) = &web_dir
        && !d.join("index.html").is_file()
    {
        bail!(
            "the web app folder {} has no index.html; build it with `cargo xtask web`",
            d.display()
        );
    }
    let state = AppState {
        engine: engine.clone(),
        token: token.map(Arc::from),
        web_dir: web_dir.clone(),
        access: Arc::new(access),
    };
    let addr = SocketAddr::new(args.bind, args.port);
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr} (is another server using the port? try --port)")
    })?;
    let local = listener.local_addr()?;
    eprintln!(
        "ax serving on http://{local}  (database: {}, providers: default {})",
        engine.store().describe(),
        engine.router().default_provider()
    );
    eprintln!("{}", state.access.describe());
    match &web_dir {
        Some(d) => eprintln!("web app from {}", d.display()),
        None => eprintln!("web app not built: run `cargo xtask web` (the API works without it)"),
    }
    let app = api::app(state);
    let shutdown = {
        let engine = engine.clone();
        async move {
            let _ = tokio::signal::ctrl_c().await;
            eprintln!(
                "shutting down: pausing running executions (resume them with `{ax} workflow resume ID`)",
                ax = follow::ax()
            );
            engine.pause_all().await;
            // Event streams (a browser watching a run) end once they have
            // sent the pause: shutdown does not wait for a final state.
            engine.close();
        }
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(EXIT_OK)
}

// ---------------------------------------------------------------- workflow commands

fn read_file(path: &Path) -> std::result::Result<Vec<u8>, i32> {
    std::fs::read(path).map_err(|e| {
        eprintln!("error: cannot read {}: {e}", path.display());
        EXIT_USAGE
    })
}

fn print_problems(file: &str, report: &Report) {
    for p in &report.errors {
        eprintln!("{}", p.render(file, "error"));
    }
    for p in &report.warnings {
        eprintln!("{}", p.render(file, "warning"));
    }
}

/// Reads the files that `type: workflow` steps name, relative to the folder
/// of the file that is run, and keeps what it read.
struct FileLoader {
    dir: PathBuf,
    read: Files,
}

impl ax_core::subworkflow::WorkflowLoader for FileLoader {
    fn load(
        &mut self,
        from: &str,
        reference: &str,
    ) -> std::result::Result<ax_core::subworkflow::LoadedWorkflow, String> {
        let id = ax_core::subworkflow::join_path(from, reference);
        let path = self.dir.join(&id);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        self.read.insert(id.clone(), text.clone());
        Ok(ax_core::subworkflow::LoadedWorkflow {
            id: id.clone(),
            text,
            filename: Some(id),
        })
    }
}

/// Validate a workflow file with the sub-workflow files it runs; also returns
/// those files (by path relative to `file`'s folder) and `file`'s own name.
fn analyze_file(file: &Path, bytes: &[u8]) -> (ax_core::Analysis, Files, String) {
    let name = file.display().to_string();
    let base = file
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| name.clone());
    let Ok(text) = std::str::from_utf8(bytes) else {
        let a = ax_core::validate::analyze_bytes(bytes, &Options::for_file(&name));
        return (a, Files::new(), base);
    };
    let mut loader = FileLoader {
        dir: file.parent().map(Path::to_path_buf).unwrap_or_default(),
        read: Files::new(),
    };
    let a = ax_core::subworkflow::analyze_tree(text, &Options::for_file(&name), &base, &mut loader);
    (a, loader.read, base)
}

fn validate(file: &Path, format: Format) -> i32 {
    let bytes = match read_file(file) {
        Ok(b) => b,
        Err(code) => return code,
    };
    let name = file.display().to_string();
    let (a, _, _) = analyze_file(file, &bytes);
    let report = a.full_report();
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        ),
        Format::Text => {
            for p in &report.errors {
                println!("{}", p.render(&name, "error"));
            }
            for p in &report.warnings {
                println!("{}", p.render(&name, "warning"));
            }
            if report.valid {
                let steps = a.workflow().map_or(0, |w| w.steps.len());
                let levels = report.levels.as_ref().map_or(0, Vec::len);
                println!(
                    "{name}: valid ({steps} step{}, {levels} level{}{})",
                    if steps == 1 { "" } else { "s" },
                    if levels == 1 { "" } else { "s" },
                    if report.warnings.is_empty() {
                        String::new()
                    } else {
                        format!(", {} warning(s)", report.warnings.len())
                    }
                );
            } else {
                println!("{name}: {} error(s)", report.errors.len());
            }
        }
    }
    if report.valid { EXIT_OK } else { EXIT_FAILED }
}

fn graph(file: &Path, format: GraphFormat) -> i32 {
    let bytes = match read_file(file) {
        Ok(b) => b,
        Err(code) => return code,
    };
    let name = file.display().to_string();
    let a = ax_core::validate::analyze_bytes(&bytes, &Options::for_file(&name));
    let Some(plan) = a.plan.as_ref() else {
        print_problems(&name, &a.report);
        return EXIT_FAILED;
    };
    match format {
        GraphFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&plan.to_json()).unwrap_or_default()
        ),
        GraphFormat::Mermaid => print!("{}", plan.to_mermaid()),
        GraphFormat::Dot => print!("{}", plan.to_dot()),
    }
    EXIT_OK
}

/// `--input k=v` and `--input-file F` into one map (later values win).
fn parse_inputs(pairs: &[String], file: Option<&Path>) -> Result<BTreeMap<String, Value>> {
    let mut out = BTreeMap::new();
    if let Some(f) = file {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("cannot read the input file {}", f.display()))?;
        let doc = ax_core::parse::parse(
            &text,
            ax_core::parse::Format::from_filename(&f.display().to_string()),
            &Default::default(),
        )
        .map_err(|e| anyhow!("{} is not valid JSON or YAML: {}", f.display(), e.message))?;
        match doc.root.to_json() {
            Value::Object(m) => out.extend(m),
            _ => bail!(
                "{} must hold an object of input names to values",
                f.display()
            ),
        }
    }
    for p in pairs {
        let Some((k, v)) = p.split_once('=') else {
            bail!("--input `{p}` must look like name=value");
        };
        let k = k.trim();
        if k.is_empty() {
            bail!("--input `{p}` has no name before `=`");
        }
        let value = match v.strip_prefix('@') {
            // A file's text is the value as it is (a diff, a document).
            Some(path) => Value::String(
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {path} for input `{k}`"))?,
            ),
            None => input_value(v),
        };
        out.insert(k.to_owned(), value);
    }
    Ok(out)
}

/// A `--input` value: JSON when it is JSON (`800`, `true`, `["de-DE"]`,
/// `{"a": 1}`, `"800"` for the text), else the text as given (docs/format.md,
/// "Inputs"; the API and the designer take JSON values too).
fn input_value(v: &str) -> Value {
    serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_owned()))
}

async fn resolve_id(engine: &Engine, given: &str) -> Result<String> {
    let found = engine.store().find_execution_ids(given).await?;
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!(
            "no execution matches `{given}`; `{ax} workflow list` shows them",
            ax = follow::ax()
        ),
        many if many.iter().any(|m| m == given) => Ok(given.to_owned()),
        _ => bail!("`{given}` matches several executions; give more characters"),
    }
}

async fn workflow(g: &Global, cmd: WorkflowCommand) -> Result<i32> {
    match cmd {
        WorkflowCommand::Validate { .. }
        | WorkflowCommand::Graph { .. }
        | WorkflowCommand::Schema => unreachable_cmd(),
        WorkflowCommand::Run {
            file,
            inputs,
            input_file,
            detach,
            budget,
            cache,
            stream,
            fmt,
        } => {
            let options = RunOptions {
                budget: budget.budget(),
                cache,
            };
            let bytes = match read_file(&file) {
                Ok(b) => b,
                Err(code) => return Ok(code),
            };
            let name = file.display().to_string();
            let (a, files, base) = analyze_file(&file, &bytes);
            if !a.report.valid {
                print_problems(&name, &a.report);
                return Ok(EXIT_FAILED);
            }
            let inputs = parse_inputs(&inputs, input_file.as_deref())?;
            // In the foreground, a run that waits for a decision keeps its driver:
            // it shows the approval and goes on when someone decides.
            let settings = Settings {
                keep_waiting: !detach,
                ..Settings::default()
            };
            let engine = open_engine_with(g, settings).await?;
            let source = String::from_utf8_lossy(&bytes).into_owned();
            let wf = engine
                .create_workflow_with(source, Some(base), &files)
                .await
                .map_err(engine_err)?;
            if detach {
                let id = engine
                    .create_execution_with(&wf.id, inputs, options)
                    .await
                    .map_err(engine_err)?;
                spawn_driver(g, &id)?;
                return report_started(&engine, &id, fmt.format).await;
            }
            // Listen before the run starts, so that no text is missed.
            let deltas = progress::deltas_for(&engine, fmt.format == Format::Text, stream);
            let (rec, handle) = engine
                .start_with(&wf.id, inputs, options)
                .await
                .map_err(engine_err)?;
            follow_run_with(&engine, &rec.id, handle, fmt.format, stream, deltas).await
        }
        WorkflowCommand::List { limit, state, fmt } => {
            let engine = open_engine(g).await?;
            if let Some(s) = &state
                && ExecutionState::parse(s).is_none()
            {
                bail!(
                    "unknown state `{s}`; use one of idle, running, paused, waiting, completed, failed, cancelled, interrupted"
                );
            }
            let rows = engine
                .store()
                .list_executions(ExecutionFilter {
                    state,
                    workflow_id: None,
                    parent_id: None,
                    limit,
                })
                .await?;
            match fmt.format {
                Format::Json => {
                    let v: Vec<Value> = rows
                        .iter()
                        .map(|e| json!({"id": e.id, "workflow": e.workflow, "workflowId": e.workflow_id, "state": e.state,
                                        "createdAt": e.created_at, "startedAt": e.started_at, "finishedAt": e.finished_at,
                                        "progress": e.progress, "parent": e.parent}))
                        .collect();
                    println!("{}", serde_json::to_string_pretty(&v)?);
                }
                Format::Text => {
                    if rows.is_empty() {
                        println!(
                            "no executions yet; start one with `{ax} workflow run FILE`",
                            ax = follow::ax()
                        );
                    }
                    for e in rows {
                        let parent = e
                            .parent
                            .as_ref()
                            .map(|p| format!("  (child of {} step {})", p.id, p.step))
                            .unwrap_or_default();
                        println!(
                            "{}  {:<11} {:<28} {:>4}/{:<4} {}{parent}",
                            e.id,
                            e.state,
                            truncate(&e.workflow, 28),
                            e.progress.completed,
                            e.progress.total,
                            progress::format_time(e.created_at)
                        );
                    }
                }
            }
            Ok(EXIT_OK)
        }
        WorkflowCommand::Status { id, fmt } => {
            let engine = open_engine(g).await?;
            let id = resolve_id(&engine, &id).await?;
            let (rec, steps) = status_of(&engine, &id).await?;
            let children = engine.children(&id).await?;
            let theirs = if children.is_empty() {
                ax_core::exec::Spend::default()
            } else {
                engine.children_spent(&id).await?
            };
            match fmt.format {
                Format::Json => {
                    let mut v = status_json(&rec, &steps, theirs);
                    v["children"] = serde_json::to_value(&children)?;
                    println!("{}", serde_json::to_string_pretty(&v)?);
                }
                Format::Text => {
                    progress::print_status(&rec, &steps, theirs);
                    print_family(&rec, &children);
                }
            }
            Ok(exit_for(rec.state()))
        }
        WorkflowCommand::Pause { id, now, fmt } => {
            let engine = open_engine(g).await?;
            let id = resolve_id(&engine, &id).await?;
            let (rec, _) = engine
                .control(
                    &id,
                    if now {
                        Control::PauseNow
                    } else {
                        Control::Pause
                    },
                )
                .await
                .map_err(engine_err)?;
            say(
                fmt.format,
                &rec,
                &format!(
                    "pause requested for {id}; it is {}; resume with `{ax} workflow resume {id}`",
                    rec.state,
                    ax = follow::ax(),
                ),
            );
            Ok(EXIT_OK)
        }
        WorkflowCommand::Cancel { id, fmt } => {
            let engine = open_engine(g).await?;
            let id = resolve_id(&engine, &id).await?;
            let (rec, _) = engine
                .control(&id, Control::Cancel)
                .await
                .map_err(engine_err)?;
            say(
                fmt.format,
                &rec,
                &format!("cancel requested for {id}; it is {}", rec.state),
            );
            Ok(EXIT_OK)
        }
        WorkflowCommand::Resume {
            id,
            detach,
            budget,
            stream,
            fmt,
        } => {
            let engine = open_engine(g).await?;
            let id = resolve_id(&engine, &id).await?;
            if !budget.budget().is_unlimited() {
                engine
                    .set_budget(&id, budget.budget())
                    .await
                    .map_err(engine_err)?;
            }
            if detach {
                let rec = engine.execution(&id).await.map_err(engine_err)?;
                if !engine.can_resume(&rec) {
                    bail!("cannot resume execution {id}: it is {}", rec.state);
                }
                spawn_driver(g, &id)?;
                return report_started(&engine, &id, fmt.format).await;
            }
            let deltas = progress::deltas_for(&engine, fmt.format == Format::Text, stream);
            let (rec, handle) = engine
                .control(&id, Control::Resume)
                .await
                .map_err(engine_err)?;
            match handle {
                Some(h) => follow_run_with(&engine, &id, h, fmt.format, stream, deltas).await,
                None => {
                    say(
                        fmt.format,
                        &rec,
                        &format!(
                            "resume requested for {id}; it is driven by another process ({})",
                            rec.owner.as_deref().unwrap_or("unknown")
                        ),
                    );
                    Ok(EXIT_OK)
                }
            }
        }
        WorkflowCommand::Approve {
            id,
            step,
            comment,
            data,
            by,
            fmt,
        } => {
            let data = match data {
                None => None,
                Some(d) => Some(parse_data(&d)?),
            };
            let decision = Decision {
                approve: true,
                comment,
                data,
                by: by.or_else(whoami),
            };
            decide(g, &id, &step, decision, fmt.format).await
        }
        WorkflowCommand::Reject {
            id,
            step,
            comment,
            by,
            fmt,
        } => {
            let decision = Decision {
                approve: false,
                comment,
                data: None,
                by: by.or_else(whoami),
            };
            decide(g, &id, &step, decision, fmt.format).await
        }
        WorkflowCommand::Stats { workflow, fmt } => {
            let engine = open_engine(g).await?;
            let only = workflow.as_deref().map(str::trim).filter(|w| !w.is_empty());
            let rows = engine.store().workflow_stats(only).await?;
            if let Some(w) = only
                && rows.is_empty()
            {
                bail!(
                    "no workflow is named `{w}` or has that id; `{ax} workflow stats` lists them all",
                    ax = follow::ax()
                );
            }
            match fmt.format {
                Format::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({ "workflows": rows }))?
                ),
                Format::Text => progress::print_stats(&rows),
            }
            Ok(EXIT_OK)
        }
        WorkflowCommand::Checkpoints { id, fmt } => {
            let engine = open_engine(g).await?;
            let id = resolve_id(&engine, &id).await?;
            let rows = engine.store().list_checkpoints(&id).await?;
            match fmt.format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
                Format::Text => {
                    if rows.is_empty() {
                        println!("no restore points yet");
                    }
                    for r in rows {
                        println!(
                            "{:>8}  {}  {:<11} {} completed: {}",
                            r.id,
                            progress::format_time(r.created_at),
                            r.state,
                            r.completed_steps.len(),
                            truncate(&r.completed_steps.join(", "), 80)
                        );
                    }
                }
            }
            Ok(EXIT_OK)
        }
        WorkflowCommand::Restore {
            checkpoint_id,
            detach,
            fmt,
        } => {
            let engine = open_engine(g).await?;
            let (rec, handle) = engine
                .restore(&checkpoint_id, !detach)
                .await
                .map_err(engine_err)?;
            match handle {
                Some(h) => follow_run(&engine, &rec.id, h, fmt.format).await,
                None if detach && rec.state().is_resumable() => {
                    spawn_driver(g, &rec.id)?;
                    report_started(&engine, &rec.id, fmt.format).await
                }
                None => {
                    say(
                        fmt.format,
                        &rec,
                        &format!(
                            "execution {} restored to checkpoint {checkpoint_id}; it is {} (nothing left to run)",
                            rec.id, rec.state
                        ),
                    );
                    Ok(exit_for(rec.state()))
                }
            }
        }
        WorkflowCommand::Prune {
            keep,
            older_than,
            delete_finished,
            fmt,
        } => {
            let engine = open_engine(g).await?;
            let age = older_than.as_deref().map(parse_age).transpose()?;
            if delete_finished && age.is_none() {
                bail!("--delete-finished needs --older-than (e.g. --older-than 30d)");
            }
            let report = engine
                .store()
                .prune(PruneOptions {
                    keep: keep.max(1),
                    older_than: age,
                    delete_finished,
                    now: now_ms(),
                })
                .await?;
            match fmt.format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
                Format::Text => println!(
                    "pruned: {} checkpoint rows from {} executions, {} executions deleted, {} outputs removed; database {} → {}",
                    report.checkpoints_removed,
                    report.executions_compacted,
                    report.executions_deleted,
                    report.outputs_removed,
                    progress::format_bytes(report.bytes_before),
                    progress::format_bytes(report.bytes_after)
                ),
            }
            Ok(EXIT_OK)
        }
        WorkflowCommand::Events { id, follow, fmt } => {
            let engine = open_engine(g).await?;
            let id = resolve_id(&engine, &id).await?;
            progress::print_events(&engine, &id, follow, fmt.format == Format::Json).await
        }
    }
}

fn unreachable_cmd() -> Result<i32> {
    Err(anyhow!(
        "internal: this command is handled before the runtime starts"
    ))
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let cut: String = s.chars().take(n.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

/// `30d`, `12h`, `90m`, `45s` or plain milliseconds.
fn parse_age(s: &str) -> Result<u64> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| anyhow!("`{s}` is not an age; write e.g. 30d, 12h, 90m or 45s"))?;
    let mult = match unit {
        "" | "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        other => bail!("unknown unit `{other}` in `{s}`; use s, m, h, d or w"),
    };
    Ok(n.saturating_mul(mult))
}

fn say(format: Format, rec: &store::ExecutionRecord, text: &str) {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(rec).unwrap_or_default()),
        Format::Text => println!("{text}"),
    }
}

/// Who runs this command, for the record of a decision.
fn whoami() -> Option<String> {
    std::env::var("USER")
        .ok()
        .or_else(|| std::env::var("LOGNAME").ok())
        .filter(|u| !u.trim().is_empty())
}

/// `--data`: JSON, or `@FILE` holding JSON.
fn parse_data(given: &str) -> Result<Value> {
    let (text, from) = match given.strip_prefix('@') {
        Some(path) => (
            std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?,
            format!("the file {path}"),
        ),
        None => (given.to_owned(), "--data".to_owned()),
    };
    serde_json::from_str(&text).map_err(|e| anyhow!("{from} is not JSON: {e}"))
}

/// Approve or reject; when nothing drove the execution, this process drives
/// it on in the foreground (as `resume` does).
async fn decide(
    g: &Global,
    id: &str,
    step: &str,
    decision: Decision,
    format: Format,
) -> Result<i32> {
    let engine = open_engine(g).await?;
    let id = resolve_id(&engine, id).await?;
    let verb = if decision.approve {
        "approved"
    } else {
        "rejected"
    };
    let (rec, handle) = engine
        .decide(&id, step, decision)
        .await
        .map_err(engine_err)?;
    match handle {
        Some(h) => {
            if format == Format::Text {
                println!("{verb} step `{step}` of {id}; it goes on here");
            }
            follow_run(&engine, &id, h, format).await
        }
        None => {
            say(
                format,
                &rec,
                &format!("{verb} step `{step}` of {id}; it is {}", rec.state),
            );
            Ok(EXIT_OK)
        }
    }
}

async fn status_of(
    engine: &Engine,
    id: &str,
) -> Result<(store::ExecutionRecord, Vec<store::StepRecord>)> {
    engine
        .execution_with_steps(id, true)
        .await
        .map_err(engine_err)
}

/// Runs this process took up along the way (the parent that a finished
/// sub-workflow run reported to) go on to where they stop before it exits;
/// Ctrl-C pauses them instead.
async fn finish_taken_runs(engine: &Arc<Engine>) {
    let n = engine.busy_here();
    if n == 0 {
        return;
    }
    eprintln!(
        "finishing {n} run(s) this process took up (the parent of a sub-workflow run); Ctrl-C pauses them"
    );
    loop {
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis(50)) => {
                if engine.busy_here() == 0 {
                    return;
                }
            }
            _ = tokio::signal::ctrl_c() => {
                engine.pause_all().await;
                return;
            }
        }
    }
}

/// The decisions that children (and their children) of `id` wait for.
async fn print_waiting_children(engine: &Engine, id: &str) -> Result<()> {
    let mut queue = vec![id.to_owned()];
    while let Some(parent) = queue.pop() {
        for c in engine.children(&parent).await? {
            if c.state() != ExecutionState::Waiting {
                continue;
            }
            let step = c.parent.as_ref().map_or("", |p| p.step.as_str());
            let steps = engine.store().execution_steps(&c.id, false).await?;
            for s in steps.iter().filter(|s| s.state == "waiting") {
                let (ax, child, key) = (follow::ax(), &c.id, &s.key);
                eprintln!(
                    "its sub-workflow run {child} (step `{step}`) waits for a decision on `{key}`: `{ax} workflow approve {child} {key}` or `{ax} workflow reject {child} {key} --comment …`"
                );
            }
            queue.push(c.id);
        }
    }
    Ok(())
}

/// A child's parent and an execution's children, below its status.
fn print_family(rec: &store::ExecutionRecord, children: &[store::ExecutionRecord]) {
    if let Some(p) = &rec.parent {
        let item = p.item.map(|i| format!(" item {i}")).unwrap_or_default();
        println!(
            "\nchild of  {} step {}{item} (attempt {})",
            p.id, p.step, p.attempt
        );
    }
    if children.is_empty() {
        return;
    }
    println!("\nchildren");
    for c in children {
        let Some(p) = &c.parent else { continue };
        let item = p.item.map(|i| format!("[{i}]")).unwrap_or_default();
        println!(
            "  {}  {:<11} {}{item}  ({}, {}/{} steps)",
            c.id, c.state, p.step, c.workflow, c.progress.completed, c.progress.total
        );
    }
}

/// An execution as JSON: its row, its steps, and what it spent (with what
/// its sub-workflows spent, `theirs`: what its budget counts).
fn status_json(
    rec: &store::ExecutionRecord,
    steps: &[store::StepRecord],
    theirs: ax_core::exec::Spend,
) -> Value {
    let mut v = serde_json::to_value(rec).unwrap_or_default();
    v["steps"] = serde_json::to_value(steps).unwrap_or_default();
    let usd: f64 = steps.iter().filter_map(|s| s.cost_usd).sum::<f64>() + theirs.usd;
    let tokens: u64 = steps
        .iter()
        .map(|s| s.tokens_in + s.tokens_out)
        .sum::<u64>()
        + theirs.tokens;
    v["spent"] = json!({"usd": usd, "tokens": tokens});
    v
}

async fn report_started(engine: &Engine, id: &str, format: Format) -> Result<i32> {
    let rec = engine.execution(id).await.map_err(engine_err)?;
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&rec)?),
        Format::Text => println!(
            "{id}  started in the background; follow it with `{ax} workflow events {id} --follow`",
            ax = follow::ax()
        ),
    }
    Ok(EXIT_OK)
}

/// Start `ax __drive ID` detached from this terminal, logging to a file.
fn spawn_driver(g: &Global, id: &str) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let db = db_target(g)?;
    // Beside the SQLite file; for PostgreSQL, in the user's data directory.
    let log_dir = match &db {
        DbTarget::Sqlite(path) => path.parent().map(|p| p.join("logs")),
        DbTarget::Postgres(_) => store::default_db_path().parent().map(|p| p.join("logs")),
    }
    .unwrap_or_else(|| PathBuf::from("logs"));
    std::fs::create_dir_all(&log_dir)
        .with_context(|| format!("cannot create {}", log_dir.display()))?;
    let log_path = log_dir.join(format!("{id}.log"));
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    let exe = std::env::current_exe().context("cannot find the ax executable")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("__drive").arg(id).arg("--db").arg(db.as_arg());
    if let Some(a) = &g.agents {
        cmd.arg("--agents").arg(a);
    }
    cmd.stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0);
    cmd.spawn().context("cannot start the background driver")?;
    Ok(())
}

/// Show a run in the foreground until it ends or pauses. Ctrl-C pauses (a
/// second Ctrl-C aborts in-flight steps too).
async fn follow_run(
    engine: &Arc<Engine>,
    id: &str,
    handle: tokio::task::JoinHandle<RunEnd>,
    format: Format,
) -> Result<i32> {
    let deltas = progress::deltas_for(engine, format == Format::Text, false);
    follow_run_with(engine, id, handle, format, false, deltas).await
}

/// [`follow_run`], printing the running steps' text whole with `stream`;
/// `deltas` is that text, subscribed to before the run started.
async fn follow_run_with(
    engine: &Arc<Engine>,
    id: &str,
    handle: tokio::task::JoinHandle<RunEnd>,
    format: Format,
    stream: bool,
    deltas: Option<progress::Deltas>,
) -> Result<i32> {
    let text = format == Format::Text;
    let display =
        progress::Display::new(engine.clone(), id.to_owned(), text, stream, deltas).await?;
    let display_task = tokio::spawn(display.run());
    let mut handle = handle;
    let mut interrupts = 0;
    let end = loop {
        tokio::select! {
            r = &mut handle => break r.map_err(|e| anyhow!("the run task failed: {e}"))?,
            _ = tokio::signal::ctrl_c() => {
                interrupts += 1;
                let control = if interrupts == 1 { Control::Pause } else { Control::PauseNow };
                eprintln!(
                    "\n{} — they are not lost",
                    if interrupts == 1 { "pausing: in-flight steps finish first (Ctrl-C again to stop them now)" } else { "pausing now: aborting in-flight steps" }
                );
                if interrupts > 2 {
                    eprintln!("leaving now; the execution shows as interrupted and `{ax} workflow resume {id}` continues it", ax = follow::ax());
                    std::process::exit(EXIT_PAUSED);
                }
                if let Err(e) = engine.control(id, control).await {
                    eprintln!("could not pause: {e}");
                }
            }
        }
    };
    let _ = display_task.await;
    finish_taken_runs(engine).await;
    let (rec, steps) = status_of(engine, id).await?;
    let theirs = engine.children_spent(id).await?;
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&status_json(&rec, &steps, theirs))?
        ),
        Format::Text => progress::print_summary(&rec, &steps, theirs),
    }
    if end.state == ExecutionState::Interrupted
        && let Some(why) = &end.reason
    {
        eprintln!("this process stopped driving execution {id}: {why}");
    }
    if matches!(
        end.state,
        ExecutionState::Paused | ExecutionState::Interrupted
    ) {
        if rec
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with("budget:"))
        {
            eprintln!(
                "execution {id} paused at its budget; raise it and go on with `{ax} workflow resume {id} --budget-usd N` (or --budget-tokens N)",
                ax = follow::ax()
            );
        } else {
            eprintln!(
                "execution {id} is {}; resume it with `{ax} workflow resume {id}`",
                rec.state,
                ax = follow::ax(),
            );
        }
    }
    if end.state == ExecutionState::Waiting {
        for s in steps.iter().filter(|s| s.state == "waiting") {
            let (ax, key) = (follow::ax(), &s.key);
            eprintln!(
                "execution {id} waits for a decision on `{key}`: `{ax} workflow approve {id} {key}` or `{ax} workflow reject {id} {key} --comment …`"
            );
        }
        print_waiting_children(engine, id).await?;
    }
    Ok(exit_for(rec.state()))
}
