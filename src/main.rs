//! The `slotway` command line: run the proxy, or bring up the embedded local cluster with the
//! proxy in front of it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use slotway::config::Config;
use slotway::local::{LocalCluster, LocalClusterOptions};
use slotway::proxy::Proxy;

/// A Redis Cluster proxy: one RESP endpoint in front of a whole cluster.
#[derive(Debug, Parser)]
#[command(name = "slotway", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

/// Options of the default mode (run the proxy in front of an existing cluster).
#[derive(Debug, Args)]
struct RunArgs {
    /// TOML config file (settings not in it take their defaults or SLOTWAY_* variables).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Address to accept clients on (overrides `listen`).
    #[arg(long, global = true)]
    listen: Option<String>,
    /// Seed nodes, comma-separated host:port (overrides `seeds`).
    #[arg(long, value_delimiter = ',')]
    seeds: Vec<slotway::net::NodeAddr>,
    /// Admin HTTP address for /metrics, /healthz, /readyz, /cluster (overrides `admin.listen`;
    /// a bare port binds 127.0.0.1). With `status`: the admin endpoint to ask.
    #[arg(long, global = true)]
    admin: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a local Redis Cluster (default 9 nodes: 3 shards x primary + 2 replicas) and the proxy.
    Local(LocalArgs),
    /// Print every setting's key (`section.key`), one per line, for config checkers.
    ConfigKeys,
    /// Print the command reference (Markdown): every command grouped by how slotway routes it.
    Commands,
    /// Report shards, key spread and hot slots/keys from a running proxy's admin endpoint
    /// (`--admin ADDR`, else `admin.listen` from the config); exits 1 when the cluster is not
    /// healthy, 2 when the endpoint cannot be asked.
    Status,
    /// Print the Redis ACL user slotway should log in to the nodes as: every command except
    /// what the policy denies, so the deny list holds inside scripts too. Provision it on
    /// every node (primaries and replicas).
    UpstreamAcl(UpstreamAclArgs),
}

#[derive(Debug, Args)]
struct UpstreamAclArgs {
    /// `setuser`: an `ACL SETUSER` command line; `conf`: a `user` line for redis.conf or an
    /// aclfile; `rules`: the rules alone (no name, no password), as deploy/ ships them.
    #[arg(long, value_enum, default_value_t = AclFormat::Setuser)]
    format: AclFormat,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum AclFormat {
    Setuser,
    Conf,
    Rules,
}

#[derive(Debug, Args)]
struct LocalArgs {
    /// First node port; nodes use N..N+8 by default (and N+10000.. for the cluster bus).
    #[arg(long, default_value_t = 7001)]
    base_port: u16,
    /// Where node data lives (wiped at start); default: a directory under the system temp dir.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Number of shards (each one primary).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=100))]
    shards: u16,
    /// Replicas per primary.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(0..=5))]
    replicas: u16,
}

/// The default listen address of `slotway local`.
const LOCAL_LISTEN: &str = "127.0.0.1:7000";

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Some(Command::ConfigKeys) = cli.command {
        for key in Config::keys() {
            println!("{key}");
        }
        return Ok(());
    }
    if let Some(Command::Commands) = cli.command {
        print!(
            "{}",
            slotway::reference::markdown(&slotway::command::CommandTable::builtin())
        );
        return Ok(());
    }
    if let Some(Command::UpstreamAcl(args)) = &cli.command {
        let config = load_config(cli.run.config.as_deref())?;
        return print_upstream_acl(config, args.format);
    }
    if let Some(Command::Status) = cli.command {
        let admin = match &cli.run.admin {
            Some(a) => a.clone(),
            None => load_config(cli.run.config.as_deref())?.admin.listen.clone(),
        };
        if admin.trim().is_empty() {
            anyhow::bail!("slotway status needs --admin ADDR (or admin.listen in the config)");
        }
        std::process::exit(slotway::status::run(&admin));
    }
    let mut config = load_config(cli.run.config.as_deref())?;
    if let Some(listen) = &cli.run.listen {
        config.listen = listen.clone();
    }
    if !cli.run.seeds.is_empty() {
        config.seeds = cli.run.seeds.iter().map(ToString::to_string).collect();
    }
    if let Some(admin) = &cli.run.admin {
        config.admin.listen = admin.clone();
    }
    init_logging(&config)?;
    match cli.command {
        None
        | Some(
            Command::ConfigKeys | Command::Commands | Command::Status | Command::UpstreamAcl(_),
        ) => run_proxy(config, None),
        Some(Command::Local(args)) => {
            if cli.run.listen.is_none() && std::env::var_os("SLOTWAY_LISTEN").is_none() {
                config.listen = LOCAL_LISTEN.to_string();
            }
            run_local(config, args)
        }
    }
}

/// Loads the config (defaults, file, `SLOTWAY_*`) and checks its access rules, so a bad rule
/// is reported at load with its key, before anything starts.
fn load_config(file: Option<&std::path::Path>) -> Result<Config> {
    let config = Config::load(file, std::env::vars())?;
    slotway::security::access::validate(&config)?;
    Ok(config)
}

/// Prints the upstream user for `config`'s policy; the password is `cluster.password` (or
/// its file), written only as its SHA-256.
fn print_upstream_acl(mut config: Config, format: AclFormat) -> Result<()> {
    use slotway::security::upstream::{user_name, UpstreamRules};
    let table = slotway::command::CommandTable::builtin();
    let acl = UpstreamRules::from_config(&config, &table)?;
    for name in &acl.kept {
        eprintln!(
            "slotway upstream-acl: warning: policy.deny lists {name:?}, which slotway sends to \
             the nodes itself; scripts can still run it"
        );
    }
    if let AclFormat::Rules = format {
        println!("{}", acl.rules.join(" "));
        return Ok(());
    }
    slotway::security::resolve_upstream(&mut config.cluster)?;
    if config.cluster.password.is_empty() {
        anyhow::bail!(
            "set cluster.password or cluster.password_file (the password slotway logs in to \
             the nodes with), or use --format rules"
        );
    }
    let args = acl.setuser_args(&config.cluster.password).join(" ");
    let user = user_name(&config);
    match format {
        AclFormat::Setuser => println!("ACL SETUSER {user} {args}"),
        AclFormat::Conf | AclFormat::Rules => println!("user {user} {args}"),
    }
    Ok(())
}

fn init_logging(config: &Config) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .with_context(|| format!("invalid log.level {:?}", config.log.level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if config.log.format == slotway::config::LogFormat::Json {
        builder.json().init();
    } else {
        builder.init();
    }
    Ok(())
}

/// Starts the local cluster on this (long-lived, main) thread so its children's parent-death
/// signal stays armed for the whole run, then runs the proxy in front of it.
fn run_local(mut config: Config, args: LocalArgs) -> Result<()> {
    let data_dir = args
        .data_dir
        .unwrap_or_else(|| std::env::temp_dir().join(format!("slotway-local-{}", args.base_port)));
    if data_dir.exists() {
        std::fs::remove_dir_all(&data_dir)
            .with_context(|| format!("cannot clear {}", data_dir.display()))?;
    }
    let host = std::net::IpAddr::from([127, 0, 0, 1]);
    let mut opts = LocalClusterOptions::with_base_port(host, args.base_port, data_dir.clone());
    opts.shards = args.shards.into();
    opts.replicas_per_shard = args.replicas.into();
    opts.set_base_port(args.base_port);
    // The proxy logs in as a restricted ACL user, so the deny list holds inside scripts.
    slotway::local::upstream::provision(&mut opts, &mut config)?;
    let nodes = opts.node_count();
    eprintln!(
        "slotway: starting a {nodes}-node Redis Cluster ({} shards x primary + {} replicas) on 127.0.0.1:{}-{} (data in {})",
        args.shards,
        args.replicas,
        args.base_port,
        usize::from(args.base_port) + nodes - 1,
        data_dir.display()
    );
    let cluster = LocalCluster::start(opts)?;
    config.seeds = cluster.seeds();
    run_proxy(config, Some(cluster))
}

fn run_proxy(config: Config, cluster: Option<LocalCluster>) -> Result<()> {
    let mut builder = if config.runtime.worker_threads == 1 {
        // The current-thread scheduler drives the sockets and runs every task on one thread,
        // without the multi-thread scheduler's hand-offs between its I/O driver and workers.
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        if config.runtime.worker_threads > 0 {
            b.worker_threads(config.runtime.worker_threads);
        }
        b
    };
    let runtime = builder
        .enable_all()
        .thread_name("slotway")
        .build()
        .context("cannot start the async runtime")?;
    let local = cluster.is_some();
    let grace = slotway::config::ms(config.client.drain_grace_ms);
    let result = runtime.block_on(async move {
        let proxy = Proxy::start(config).await?;
        if local {
            println!(
                "slotway: ready — connect with `redis-cli -p {}` (Ctrl-C stops the proxy and the cluster)",
                proxy.local_addr().port()
            );
            if let Some(admin) = proxy.admin_addr() {
                println!(
                    "slotway: admin on http://{admin}/ (metrics, healthz, readyz, cluster); `slotway status --admin {admin}`"
                );
            }
        }
        wait_for_signal().await?;
        tracing::info!("shutting down");
        if !proxy.shutdown(grace).await {
            tracing::warn!("some clients were still busy when the drain grace period ended");
        }
        anyhow::Ok(())
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    // Dropping the cluster here, on the main thread, kills every redis-server it started.
    drop(cluster);
    result
}

async fn wait_for_signal() -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
