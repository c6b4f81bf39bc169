//! `phoenix demo`: everything in one process on embedded defaults — an
//! embedded MQTT broker, a live twin of a small site (servers as agents, a
//! greenhouse, a heat pump and heat meter over Modbus), the controller, the
//! API and web page.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use phoenix::demo::{self, DemoOptions};

/// Arguments of `phoenix demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address of the API and web page.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// Site seconds per real second (300: a 15-minute control period every 3 s).
    #[arg(long, default_value_t = 300.0)]
    speed: f64,
    /// Stop after this many real seconds (0: run until Ctrl-C).
    #[arg(long, default_value_t = 60.0)]
    duration: f64,
    /// Seed of the weather and workload.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Run the demo.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.speed.is_finite() && args.speed > 0.0 && args.speed <= 10_000.0,
        "--speed must be in (0, 10000]"
    );
    anyhow::ensure!(
        args.duration.is_finite() && args.duration >= 0.0,
        "--duration must be a non-negative number of seconds"
    );
    let opts = DemoOptions {
        http: args.http,
        speed: args.speed,
        duration_s: (args.duration > 0.0).then_some(args.duration),
        seed: args.seed,
        print: true,
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            if super::bridge::wait_for_signal().await.is_ok() {
                let _ = stop.send(true);
            }
        });
        demo::run(opts, stopped).await?;
        Ok(ExitCode::SUCCESS)
    })
}
