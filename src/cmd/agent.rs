//! `phoenix agent --mqtt-url mqtt[s]://HOST[:PORT] --site S --node N
//! [--mqtt-username U --mqtt-password-file F | --mqtt-password-env VAR]
//! [--mqtt-ca-file PEM] [--mqtt-client-cert-file PEM --mqtt-client-key-file PEM]
//! [--sysfs-root DIR] [--config FILE] [--state-file FILE] [--max-lease-s S]
//! [--no-vms] [--dry-run] [--probe]`: the node agent (docs/agent.md).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use sensors::gpu::{GpuBackend, NvmlGpu};
use sensors::sysfs::Sysfs;
use sensors::{AgentConfig, AgentOptions, AgentStats, Node};
use tracing::info;

/// Arguments of `phoenix agent`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Broker, `mqtt://HOST[:PORT]` or `mqtts://HOST[:PORT]` (TLS); no
    /// credentials in it.
    #[arg(long, env = "PHOENIX_MQTT_URL", required_unless_present = "probe")]
    mqtt_url: Option<String>,
    // Credentials and TLS files (boxed: the subcommand enum stays small).
    #[command(flatten)]
    mqtt: Box<MqttFlags>,
    /// Site id (topic level under `phoenix/v1/`).
    #[arg(long, required_unless_present = "probe")]
    site: Option<String>,
    /// Node id (this server).
    #[arg(long, required_unless_present = "probe")]
    node: Option<String>,
    /// Root under which `sys/…` is read and written (tests point it at a
    /// fake tree).
    #[arg(long, default_value = "/")]
    sysfs_root: PathBuf,
    /// Agent config (TOML); `phoenix generate-config agent` prints the default.
    #[arg(long)]
    config: Option<PathBuf>,
    /// State file holding the original limits (overrides `agent.state_file`).
    #[arg(long)]
    state_file: Option<PathBuf>,
    /// Longest cap lease accepted, s (overrides `caps.max_lease_s`).
    #[arg(long)]
    max_lease_s: Option<f64>,
    /// Neither read VMs from cgroup v2 nor set their CPU quotas (overrides
    /// `vms.enabled`).
    #[arg(long)]
    no_vms: bool,
    /// Log what would be written; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the interfaces found (JSON) and exit.
    #[arg(long)]
    probe: bool,
}

/// The `--mqtt-*` flags of DESIGN.md §4.7.
#[derive(Debug, clap::Args)]
struct MqttFlags {
    /// MQTT username (needs --mqtt-password-file or --mqtt-password-env).
    #[arg(long, env = "PHOENIX_MQTT_USERNAME")]
    mqtt_username: Option<String>,
    /// File holding the MQTT password (one line).
    #[arg(
        long,
        env = "PHOENIX_MQTT_PASSWORD_FILE",
        conflicts_with = "mqtt_password_env"
    )]
    mqtt_password_file: Option<PathBuf>,
    /// Name of the environment variable holding the MQTT password.
    #[arg(long)]
    mqtt_password_env: Option<String>,
    /// PEM file of the CA that signed the broker's certificate (mqtts://;
    /// the system's trust store when absent).
    #[arg(long, env = "PHOENIX_MQTT_CA_FILE")]
    mqtt_ca_file: Option<PathBuf>,
    /// PEM client certificate, for brokers that require one.
    #[arg(long, requires = "mqtt_client_key_file")]
    mqtt_client_cert_file: Option<PathBuf>,
    /// PEM private key of --mqtt-client-cert-file.
    #[arg(long, requires = "mqtt_client_cert_file")]
    mqtt_client_key_file: Option<PathBuf>,
}

impl From<MqttFlags> for mqtt::MqttSecurity {
    fn from(f: MqttFlags) -> Self {
        Self {
            username: f.mqtt_username,
            password_file: f.mqtt_password_file,
            password_env: f.mqtt_password_env,
            ca_file: f.mqtt_ca_file,
            client_cert_file: f.mqtt_client_cert_file,
            client_key_file: f.mqtt_client_key_file,
        }
    }
}

/// Run `phoenix agent`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading agent config {}", path.display()))?;
            AgentConfig::from_toml(&text).with_context(|| format!("in {}", path.display()))?
        }
        None => AgentConfig::default(),
    };
    if let Some(path) = args.state_file {
        config.agent.state_file = path;
    }
    if let Some(s) = args.max_lease_s {
        config.caps.max_lease_s = s;
    }
    if args.no_vms {
        config.vms.enabled = false;
    }
    config.validate().context("in the agent's flags")?;
    let gpu: Result<Arc<dyn GpuBackend>, String> = if config.gpu.enabled {
        NvmlGpu::init()
            .map(|g| Arc::new(g) as Arc<dyn GpuBackend>)
            .map_err(|e| e.to_string())
    } else {
        Err("disabled by gpu.enabled = false".to_owned())
    };
    let node = Node::open(
        Sysfs::new(&args.sysfs_root),
        config.clone(),
        gpu,
        args.dry_run,
    );
    if args.probe {
        let report = serde_json::json!({
            "probe": node.probe(),
            "capabilities": {
                "cpu_w": node.capabilities().cpu.map(|r| [r.min_w, r.max_w]),
                "gpus_w": node.capabilities().gpus.iter().map(|g| [g.range.min_w, g.range.max_w]).collect::<Vec<_>>(),
            },
            "originals": node.originals(),
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    let opts = AgentOptions {
        // clap enforces these unless --probe.
        mqtt_url: args.mqtt_url.context("--mqtt-url is required")?,
        mqtt_security: (*args.mqtt).into(),
        site: args.site.context("--site is required")?,
        node: args.node.context("--node is required")?,
        config,
        dry_run: args.dry_run,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => info!("SIGTERM received; shutting down."),
                _ = int.recv() => info!("SIGINT received; shutting down."),
            }
        };
        sensors::run(opts, node, Arc::new(AgentStats::default()), shutdown).await?;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}
