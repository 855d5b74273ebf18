//! The `ventas` command: `ventas serve` runs the sync server; `ventas token
//! issue|list|revoke` manage device credentials in the server's data
//! directory while the server is stopped (sled lets one process hold a
//! directory; a running server offers the same through `/v1/tokens`);
//! `ventas tenant init` provisions a tenant from a file on a stopped data
//! directory (a running server offers `POST /v1/tenants`);
//! `ventas export` copies a stopped server's documents into PostgreSQL
//! (`--verify` reconciles them).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::sync::Arc;

use ventas::config::{self, ServerConfig};
use ventas::provision::TenantSpec;
use ventas::server;
use ventas::server::auth::{self, AuthMode, Credentials, IssueRequest, Role};
use ventas::storage::{DocStore, SledStore};

#[derive(Debug, Parser)]
#[command(
    name = "ventas",
    version,
    about = "Offline-first sync server for field-sales teams"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the sync server (automerge-repo WebSocket protocol on sled).
    Serve(Box<ServeArgs>),
    /// Manage device credentials (the server must be stopped; a running
    /// server offers the same at /v1/tokens).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Provision tenants (the server must be stopped; a running server
    /// offers the same at POST /v1/tenants).
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Export every document and the sync log of a data directory into
    /// PostgreSQL (the server must be stopped), or `--verify` that the
    /// database matches the documents. Safe to interrupt and rerun.
    Export(ExportArgs),
}

#[derive(Debug, Args)]
struct ExportArgs {
    #[command(flatten)]
    data: DataDirArgs,
    /// postgres://user[:password]@host[:port]/db?sslmode=disable|prefer|require|verify-full
    #[arg(long, env = "DATABASE_URL")]
    postgres_url: String,
    /// Compare the database with the documents (counts and totals per
    /// document) instead of exporting; exits non-zero on any difference.
    #[arg(long)]
    verify: bool,
    /// No progress bar on stderr.
    #[arg(long)]
    quiet: bool,
    /// Documents per transaction (1 to 64).
    #[arg(long, default_value_t = ventas::export::backfill::BACKFILL_BATCH_DOCS_MAX)]
    batch_docs: usize,
}

#[derive(Debug, Subcommand)]
enum TenantCommand {
    /// Create a tenant's catalog, device, stock and ledger documents and
    /// its credentials from a TOML (or JSON) file; prints the document URLs
    /// and the tokens (shown only once). Refused if the tenant already has
    /// a catalog.
    Init(TenantInitArgs),
}

#[derive(Debug, Args)]
struct TenantInitArgs {
    #[command(flatten)]
    data: DataDirArgs,
    /// The tenant; the file's `tenant`, if it has one, must be the same.
    #[arg(long)]
    tenant: String,
    /// The tenant's description (`docs/tenant.example.toml`); JSON if it
    /// ends in `.json`, else TOML.
    #[arg(long)]
    file: PathBuf,
    /// Print the result as JSON (as `POST /v1/tenants` answers).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Issue a credential; prints the token once (only its hash is kept).
    Issue(IssueArgs),
    /// List credentials (never their tokens).
    List(DataDirArgs),
    /// Revoke a credential by id; it stops working at once.
    Revoke(RevokeArgs),
}

#[derive(Debug, Args)]
struct DataDirArgs {
    /// Directory of the sled store (the server's `--data-dir`).
    #[arg(long, env = "VENTAS_DATA_DIR", default_value = config::DATA_DIR_DEFAULT)]
    data_dir: PathBuf,
}

#[derive(Debug, Args)]
struct IssueArgs {
    #[command(flatten)]
    data: DataDirArgs,
    /// The tenant; for an operator only a label for the team (default
    /// `operators`): an operator acts on every tenant.
    #[arg(long)]
    tenant: Option<String>,
    /// The seller (for an operator: the person).
    #[arg(long)]
    seller: String,
    /// The device id; the device must join with this peer id (or `<id>/...`).
    /// For an operator: the machine, shown in lists.
    #[arg(long)]
    device: String,
    /// seller (syncs its documents), office (its tenant's documents, sync
    /// log and credentials), reporting (reads its tenant's documents and
    /// sync log) or operator (runs the server: every tenant's credentials,
    /// the global sync log and export status; syncs nothing; issued only
    /// here, never over HTTP).
    #[arg(long)]
    role: Role,
    /// Lifetime: `90d`, `12h`, `30m`, `45s` or `never`.
    #[arg(long, default_value = auth::TOKEN_LIFETIME_DEFAULT)]
    expires: String,
}

#[derive(Debug, Args)]
struct RevokeArgs {
    #[command(flatten)]
    data: DataDirArgs,
    /// The credential id (`ventas token list`).
    #[arg(long)]
    id: String,
}

/// Raw settings; validated into a `ServerConfig`.
#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "VENTAS_LISTEN", default_value = config::LISTEN_ADDR_DEFAULT)]
    listen: SocketAddr,
    /// Directory of the sled store.
    #[arg(long, env = "VENTAS_DATA_DIR", default_value = config::DATA_DIR_DEFAULT)]
    data_dir: PathBuf,
    /// Largest WebSocket message accepted from a peer, in bytes.
    #[arg(long, env = "VENTAS_MESSAGE_BYTES_MAX")]
    message_bytes_max: Option<usize>,
    /// Concurrent connections; more get HTTP 503.
    #[arg(long, env = "VENTAS_CONNECTIONS_MAX")]
    connections_max: Option<usize>,
    /// Messages queued for one peer before it is dropped as too slow.
    #[arg(long, env = "VENTAS_OUTBOUND_QUEUE_MESSAGES_MAX")]
    outbound_queue_messages_max: Option<usize>,
    /// Documents one connection may open.
    #[arg(long, env = "VENTAS_DOCS_PER_PEER_MAX")]
    docs_per_peer_max: Option<usize>,
    /// Documents held in memory.
    #[arg(long, env = "VENTAS_DOCS_IN_MEMORY_MAX")]
    docs_in_memory_max: Option<usize>,
    /// Idle time after which an unused document leaves memory, in ms.
    #[arg(long, env = "VENTAS_DOC_IDLE_EVICT_AFTER_MS")]
    doc_idle_evict_after_ms: Option<u64>,
    /// Time a new connection has to send `join`, in ms.
    #[arg(long, env = "VENTAS_JOIN_TIMEOUT_MS")]
    join_timeout_ms: Option<u64>,
    /// A connection that sends nothing (no message, no pong) this long is
    /// closed, in ms; must exceed the keepalive interval.
    #[arg(long, env = "VENTAS_IDLE_TIMEOUT_MS")]
    idle_timeout_ms: Option<u64>,
    /// Decoded change bytes one sync message may carry.
    #[arg(long, env = "VENTAS_CHANGE_BYTES_MAX")]
    change_bytes_max: Option<usize>,
    /// Change operations one sync message may carry.
    #[arg(long, env = "VENTAS_CHANGE_OPS_MAX")]
    change_ops_max: Option<usize>,
    /// Change operations one sync message of a seller (or reporting)
    /// credential may carry.
    #[arg(long, env = "VENTAS_SELLER_CHANGE_OPS_MAX")]
    seller_change_ops_max: Option<usize>,
    /// Decoded change bytes one sync message of a seller may carry.
    #[arg(long, env = "VENTAS_SELLER_CHANGE_BYTES_MAX")]
    seller_change_bytes_max: Option<usize>,
    /// Change operations one sync message of an office credential may carry.
    #[arg(long, env = "VENTAS_OFFICE_CHANGE_OPS_MAX")]
    office_change_ops_max: Option<usize>,
    /// Decoded change bytes one sync message of an office credential may carry.
    #[arg(long, env = "VENTAS_OFFICE_CHANGE_BYTES_MAX")]
    office_change_bytes_max: Option<usize>,
    /// Operations one document may hold; a change past it is refused.
    #[arg(long, env = "VENTAS_DOC_OPS_MAX")]
    doc_ops_max: Option<usize>,
    /// Documents one tenant's connections may hold in memory.
    #[arg(long, env = "VENTAS_DOCS_HELD_PER_TENANT_MAX")]
    docs_held_per_tenant_max: Option<usize>,
    /// Documents in memory only the server's own peers may take.
    #[arg(long, env = "VENTAS_DOCS_IN_MEMORY_RESERVED_FOR_SERVER")]
    docs_in_memory_reserved_for_server: Option<usize>,
    /// Documents one connection may have waiting to load.
    #[arg(long, env = "VENTAS_DOCS_LOADING_PER_CONNECTION_MAX")]
    docs_loading_per_connection_max: Option<usize>,
    /// Nesting depth of objects a change may create (maps in lists in
    /// maps...); deeper changes are refused with an error to their sender.
    #[arg(long, env = "VENTAS_OBJECT_DEPTH_MAX")]
    object_depth_max: Option<usize>,
    /// Sustained messages a second one connection may send; past it (and
    /// its burst) it gets an error and is disconnected.
    #[arg(long, env = "VENTAS_PEER_MESSAGES_PER_SECOND_MAX")]
    peer_messages_per_second_max: Option<u32>,
    /// Messages one connection may send at once above its rate.
    #[arg(long, env = "VENTAS_PEER_MESSAGES_BURST_MAX")]
    peer_messages_burst_max: Option<u32>,
    /// Open connections from one IP address; more get HTTP 429 (behind a
    /// reverse proxy every connection has the proxy's address).
    #[arg(long, env = "VENTAS_CONNECTIONS_PER_ADDRESS_MAX")]
    connections_per_address_max: Option<usize>,
    /// Open connections of one tenant's credentials; more get HTTP 429.
    #[arg(long, env = "VENTAS_CONNECTIONS_PER_TENANT_MAX")]
    connections_per_tenant_max: Option<usize>,
    /// Time a connection has from accept to the complete headers of its
    /// first request (TLS handshake included), in ms.
    #[arg(long, env = "VENTAS_HTTP_HEADER_READ_TIMEOUT_MS")]
    http_header_read_timeout_ms: Option<u64>,
    /// A keep-alive HTTP connection with no request in progress is closed
    /// after this, in ms.
    #[arg(long, env = "VENTAS_HTTP_KEEP_ALIVE_IDLE_TIMEOUT_MS")]
    http_keep_alive_idle_timeout_ms: Option<u64>,
    /// Connections accepted but not yet upgraded nor done; past it new
    /// ones are closed at once.
    #[arg(long, env = "VENTAS_HTTP_CONNECTIONS_MAX")]
    http_connections_max: Option<usize>,
    /// Open files kept free of sockets so the connection caps hit before
    /// the process's open-file limit.
    #[arg(long, env = "VENTAS_RESERVED_OPEN_FILES")]
    reserved_open_files: Option<u64>,
    /// PEM certificate chain: serve TLS (wss://) directly; needs --tls-key.
    #[arg(long, env = "VENTAS_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "VENTAS_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Skip fsync (benchmarks only: acknowledged changes may be lost).
    #[arg(long, env = "VENTAS_UNSAFE_SKIP_FLUSH", default_value_t = false)]
    unsafe_skip_flush: bool,
    /// auto: credentials required once any was issued (open, with a loud
    /// warning, until then); required: always; off: never.
    #[arg(long, env = "VENTAS_AUTH", default_value = "auto")]
    auth: AuthMode,
    /// Keep PostgreSQL reporting tables up to date
    /// (postgres://user:password@host:port/db[?sslmode=require]); without
    /// it the server runs on sled alone.
    #[arg(long, env = "DATABASE_URL")]
    postgres_url: Option<String>,
    /// Longest one step of the export (connect, query, transaction) may
    /// take before it is retried, in ms.
    #[arg(long, env = "VENTAS_POSTGRES_TIMEOUT_MS")]
    postgres_timeout_ms: Option<u64>,
    /// Days before a month starts from which the server creates that
    /// month's ledgers for every seller.
    #[arg(long, env = "VENTAS_PERIOD_OPEN_AHEAD_DAYS")]
    period_open_ahead_days: Option<u64>,
    /// Time between two checks for ledgers and stock documents to open,
    /// in ms.
    #[arg(long, env = "VENTAS_PERIOD_CHECK_INTERVAL_MS")]
    period_check_interval_ms: Option<u64>,
    /// Ledgers and stock documents the server creates in one check at
    /// most; the rest wait for the next check.
    #[arg(long, env = "VENTAS_PERIOD_DOCUMENTS_PER_PASS_MAX")]
    period_documents_per_pass_max: Option<usize>,
}

impl ServeArgs {
    fn into_config(self) -> ServerConfig {
        let mut config = ServerConfig::new(self.listen, self.data_dir);
        let set = |target: &mut usize, value: Option<usize>| {
            if let Some(value) = value {
                *target = value;
            }
        };
        set(&mut config.message_bytes_max, self.message_bytes_max);
        set(&mut config.connections_max, self.connections_max);
        set(
            &mut config.outbound_queue_messages_max,
            self.outbound_queue_messages_max,
        );
        set(&mut config.docs_per_peer_max, self.docs_per_peer_max);
        set(&mut config.docs_in_memory_max, self.docs_in_memory_max);
        set(&mut config.change_bytes_max, self.change_bytes_max);
        set(&mut config.change_ops_max, self.change_ops_max);
        set(&mut config.object_depth_max, self.object_depth_max);
        set(
            &mut config.seller_change_ops_max,
            self.seller_change_ops_max,
        );
        set(
            &mut config.seller_change_bytes_max,
            self.seller_change_bytes_max,
        );
        set(
            &mut config.office_change_ops_max,
            self.office_change_ops_max,
        );
        set(
            &mut config.office_change_bytes_max,
            self.office_change_bytes_max,
        );
        set(&mut config.doc_ops_max, self.doc_ops_max);
        set(
            &mut config.docs_held_per_tenant_max,
            self.docs_held_per_tenant_max,
        );
        set(
            &mut config.docs_in_memory_reserved_for_server,
            self.docs_in_memory_reserved_for_server,
        );
        set(
            &mut config.docs_loading_per_connection_max,
            self.docs_loading_per_connection_max,
        );
        if let Some(ms) = self.doc_idle_evict_after_ms {
            config.doc_idle_evict_after_ms = ms;
        }
        if let Some(ms) = self.join_timeout_ms {
            config.join_timeout_ms = ms;
        }
        if let Some(ms) = self.idle_timeout_ms {
            config.idle_timeout_ms = ms;
        }
        if let Some(ms) = self.http_header_read_timeout_ms {
            config.http_header_read_timeout_ms = ms;
        }
        if let Some(ms) = self.http_keep_alive_idle_timeout_ms {
            config.http_keep_alive_idle_timeout_ms = ms;
        }
        if let Some(max) = self.http_connections_max {
            config.http_connections_max = max;
        }
        if let Some(files) = self.reserved_open_files {
            config.reserved_open_files = files;
        }
        if let Some(rate) = self.peer_messages_per_second_max {
            config.peer_messages_per_second_max = rate;
        }
        if let Some(burst) = self.peer_messages_burst_max {
            config.peer_messages_burst_max = burst;
        }
        set(
            &mut config.connections_per_address_max,
            self.connections_per_address_max,
        );
        set(
            &mut config.connections_per_tenant_max,
            self.connections_per_tenant_max,
        );
        config.tls_cert = self.tls_cert;
        config.tls_key = self.tls_key;
        config.unsafe_skip_flush = self.unsafe_skip_flush;
        config.auth_mode = self.auth;
        config.postgres_url = self.postgres_url;
        if let Some(ms) = self.postgres_timeout_ms {
            config.postgres_timeout_ms = ms;
        }
        if let Some(days) = self.period_open_ahead_days {
            config.period_open_ahead_days = days;
        }
        if let Some(ms) = self.period_check_interval_ms {
            config.period_check_interval_ms = ms;
        }
        set(
            &mut config.period_documents_per_pass_max,
            self.period_documents_per_pass_max,
        );
        config
    }
}

/// automerge may panic on a peer's crafted change; `sync-protocol` runs it
/// under `catch_unwind` and refuses the input, so such a panic is one log
/// line, not a crash report on stderr. Any other panic is reported as usual.
fn quiet_guarded_panics() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if ventas_sync_protocol::doc_sync::panic_is_guarded() {
            tracing::warn!("automerge failed on a peer's input, which is refused: {info}");
        } else {
            report(info);
        }
    }));
}

/// With the `failpoints` feature (tests only): arms the failpoints named in
/// `FAILPOINTS` (`name=panic;...`) and makes a failpoint's panic abort the
/// whole process, as a crash at that point would, instead of ending one
/// task or thread.
#[cfg(feature = "failpoints")]
fn arm_failpoints() -> fail::FailScenario<'static> {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failpoint ") {
            std::process::abort();
        }
    }));
    fail::FailScenario::setup()
}

/// Our own events at `info`; other crates only at `warn`. automerge opens
/// `info` spans while it loads changes whose fields (lists of change
/// hashes) the fmt layer formats when the span is created, shown or not:
/// that was ~25% of the server's CPU under ingest (issue 15's profile).
/// `RUST_LOG` overrides it.
const LOG_FILTER_DEFAULT: &str = "warn,ventas=info,ventas_storage=info,ventas_sync_protocol=info";

/// The global allocator, chosen at build time (BENCHMARKS.md, "Memory
/// after a big change"): glibc's malloc keeps most of what a big change
/// freed in its per-thread arenas.
#[cfg(feature = "alloc-jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc returns freed pages from background threads (after its decay
/// time, 10 s), not only when a thread happens to allocate again.
fn start_allocator_purging() {
    #[cfg(feature = "alloc-jemalloc")]
    if let Err(error) = tikv_jemalloc_ctl::background_thread::write(true) {
        eprintln!("jemalloc: cannot start background purging: {error}");
    }
}

fn main() -> anyhow::Result<()> {
    start_allocator_purging();
    #[cfg(feature = "failpoints")]
    let _failpoints = arm_failpoints();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(LOG_FILTER_DEFAULT)),
        )
        // Logs go to stderr: stdout carries what scripts read (the
        // `listening on` line, an issued token).
        .with_writer(std::io::stderr)
        .init();
    quiet_guarded_panics();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve(args.into_config())),
        Command::Token(command) => token(command),
        Command::Tenant(TenantCommand::Init(args)) => runtime.block_on(tenant_init(args)),
        Command::Export(args) => {
            let differences = runtime.block_on(export(args))?;
            if differences > 0 {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

/// `ventas export`: backfill (returns 0) or verify (returns the number of
/// differences found, each printed on stdout).
async fn export(args: ExportArgs) -> anyhow::Result<usize> {
    let store = SledStore::open(&args.data.data_dir).with_context(|| {
        format!(
            "opening {} (stop `ventas serve` on it first)",
            args.data.data_dir.display()
        )
    })?;
    let store: Arc<dyn DocStore> = Arc::new(store);
    let mut client = ventas::export::connect(&args.postgres_url)
        .await
        .context("connecting to postgres")?;
    if args.verify {
        ventas::export::migrate(&mut client)
            .await
            .context("migrating")?;
        let (differences, documents) = ventas::export::verify::verify(store, &client)
            .await
            .context("verifying")?;
        for difference in &differences {
            println!("{difference}");
        }
        eprintln!(
            "verified {documents} documents: {} differences",
            differences.len()
        );
        return Ok(differences.len());
    }
    let bar = if args.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr())
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} documents, {msg}",
        )
        .context("progress template")?,
    );
    let config = ventas::export::backfill::BackfillConfig {
        batch_docs_max: args.batch_docs,
        ..Default::default()
    };
    let report = ventas::export::backfill::backfill(store, &mut client, config, |report| {
        bar.set_length(report.documents_total);
        bar.set_position(report.documents_seen);
        bar.set_message(format!(
            "{} exported, {} already up to date, {} rows, {} sessions",
            report.documents_exported, report.documents_skipped, report.rows, report.sessions
        ));
    })
    .await
    .context("exporting")?;
    bar.finish();
    eprintln!(
        "exported {} documents ({} rows), {} already up to date, {} sync sessions",
        report.documents_exported, report.rows, report.documents_skipped, report.sessions
    );
    Ok(0)
}

/// Opens the credential registry of a stopped server's data directory.
fn open_credentials(data: &DataDirArgs) -> anyhow::Result<Credentials> {
    let store = SledStore::open(&data.data_dir).with_context(|| {
        format!(
            "opening {} (if `ventas serve` is running on it, use its /v1/tokens endpoints instead)",
            data.data_dir.display()
        )
    })?;
    let store: Arc<dyn DocStore> = Arc::new(store);
    Credentials::load(store, AuthMode::Required).context("reading credentials")
}

fn token(command: TokenCommand) -> anyhow::Result<()> {
    let now_ms = ventas::now_ms();
    match command {
        TokenCommand::Issue(args) => {
            let lifetime_ms = auth::parse_lifetime_ms(&args.expires).map_err(anyhow::Error::msg)?;
            std::fs::create_dir_all(&args.data.data_dir).with_context(|| {
                format!("creating data directory {}", args.data.data_dir.display())
            })?;
            let credentials = open_credentials(&args.data)?;
            let issued = credentials
                .issue(
                    IssueRequest {
                        tenant: match (args.tenant, args.role) {
                            (Some(tenant), _) => tenant,
                            (None, Role::Operator) => auth::OPERATOR_TENANT_DEFAULT.to_string(),
                            (None, _) => {
                                anyhow::bail!("--tenant is required for the {} role", args.role)
                            }
                        },
                        seller: args.seller,
                        device: args.device,
                        role: args.role,
                        expires_at_ms: lifetime_ms.map(|ms| now_ms.saturating_add(ms)),
                    },
                    now_ms,
                )
                .context("issuing the credential")?;
            // The token alone on stdout, for scripts; the rest on stderr.
            println!("{}", issued.token);
            eprintln!(
                "issued credential {} for {}/{}/{} ({}), expires {}; the token is shown only once",
                issued.credential.id,
                issued.credential.tenant,
                issued.credential.seller,
                issued.credential.device,
                issued.credential.role,
                issued
                    .credential
                    .expires_at_ms
                    .map_or("never".to_string(), |ms| format!("at {ms} ms")),
            );
        }
        TokenCommand::List(data) => {
            let credentials = open_credentials(&data)?;
            println!("id\ttenant\tseller\tdevice\trole\tissued_at_ms\texpires_at_ms\tstatus");
            for credential in credentials.list() {
                let status = match credential.revoked_at_ms {
                    Some(_) => "revoked",
                    None if credential.expires_at_ms.is_some_and(|e| now_ms >= e) => "expired",
                    None => "active",
                };
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{status}",
                    credential.id,
                    credential.tenant,
                    credential.seller,
                    credential.device,
                    credential.role,
                    credential.issued_at_ms,
                    credential
                        .expires_at_ms
                        .map_or("never".to_string(), |ms| ms.to_string()),
                );
            }
        }
        TokenCommand::Revoke(args) => {
            let credentials = open_credentials(&args.data)?;
            let revoked = credentials
                .revoke(&args.id, now_ms)
                .context("revoking the credential")?;
            println!("revoked {}", revoked.id);
        }
    }
    Ok(())
}

/// Reads a tenant spec file; `--tenant` fills in or must match its tenant.
fn read_spec(args: &TenantInitArgs) -> anyhow::Result<TenantSpec> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let is_json = args.file.extension().is_some_and(|ext| ext == "json");
    let mut value: serde_json::Value = if is_json {
        serde_json::from_str(&text).context("the file is not valid JSON")?
    } else {
        let table: toml::Table = toml::from_str(&text).context("the file is not valid TOML")?;
        serde_json::to_value(table).context("the file is not valid TOML")?
    };
    let Some(object) = value.as_object_mut() else {
        anyhow::bail!("{}: expected a table of fields", args.file.display());
    };
    match object.get("tenant").and_then(|tenant| tenant.as_str()) {
        Some(tenant) if tenant != args.tenant => anyhow::bail!(
            "--tenant {} but the file describes tenant {tenant}",
            args.tenant
        ),
        _ => {
            object.insert("tenant".into(), args.tenant.clone().into());
        }
    }
    TenantSpec::parse(&value).with_context(|| format!("{}", args.file.display()))
}

/// `ventas tenant init`: serves the stopped data directory in-process on
/// an ephemeral loopback port nobody is told about, provisions through it
/// exactly as `POST /v1/tenants` does, and stops it.
async fn tenant_init(args: TenantInitArgs) -> anyhow::Result<()> {
    let spec = read_spec(&args)?;
    std::fs::create_dir_all(&args.data.data_dir)
        .with_context(|| format!("creating data directory {}", args.data.data_dir.display()))?;
    let listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let config = ServerConfig::new(listen, args.data.data_dir.clone());
    let running = server::start(config).await.with_context(|| {
        format!(
            "opening {} (if `ventas serve` is running on it, use its POST /v1/tenants instead)",
            args.data.data_dir.display()
        )
    })?;
    let provisioned = running.provision(spec).await;
    running.shutdown().await.context("stopping")?;
    let provisioned = provisioned.context("provisioning the tenant")?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&provisioned).context("printing")?
        );
        return Ok(());
    }
    println!("tenant\t{}", provisioned.tenant);
    println!("catalog\t{}", provisioned.catalog_url);
    for document in &provisioned.documents {
        println!("{}\t{}", document.key, document.url);
    }
    for credential in &provisioned.credentials {
        println!(
            "token\t{}\t{}\t{}\t{}",
            credential.role, credential.seller, credential.device, credential.token
        );
    }
    eprintln!(
        "provisioned {} with {} documents and {} credentials; the tokens are shown only once",
        provisioned.tenant,
        provisioned.documents.len() + 1,
        provisioned.credentials.len()
    );
    Ok(())
}

async fn serve(config: ServerConfig) -> anyhow::Result<()> {
    config.validate().context("invalid configuration")?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let config_tls = config.tls_cert.is_some();
    let running = server::start(config).await.context("starting the server")?;
    // Tests and scripts read this line to learn the bound port.
    println!("listening on {}", running.addr);
    if config_tls {
        tracing::info!("serving TLS: connect with wss://{}", running.addr);
    }
    shutdown_signal().await;
    running.shutdown().await.context("shutting down")?;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    /// What the default filter lets through, asked of a subscriber built
    /// with it (as `main` builds it).
    fn enabled_by_default(check: impl FnOnce() -> bool) -> bool {
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(LOG_FILTER_DEFAULT))
            .with_writer(std::io::sink)
            .finish();
        tracing::subscriber::with_default(subscriber, check)
    }

    #[test]
    fn the_default_log_filter_creates_no_automerge_info_spans_but_keeps_our_info_events() {
        assert!(!enabled_by_default(
            || tracing::enabled!(target: "automerge::storage::load", Level::INFO)
        ));
        assert!(enabled_by_default(
            || tracing::enabled!(target: "automerge::storage::load", Level::WARN)
        ));
        assert!(enabled_by_default(
            || tracing::enabled!(target: "ventas::server::hub_task", Level::INFO)
        ));
        assert!(enabled_by_default(
            || tracing::enabled!(target: "ventas_storage::sled_store", Level::INFO)
        ));
        assert!(!enabled_by_default(
            || tracing::enabled!(target: "ventas::server::hub_task", Level::DEBUG)
        ));
    }
}
