//! `phoenix bridge --config FILE`: the facility bridge alone — a
//! Modbus↔MQTT gateway for a separate network segment, reading the same site
//! config file as `phoenix controller` (docs/bridge.md).

use std::process::ExitCode;

use anyhow::Context;
use hvac_bridge::{Bridge, SiteConfig};

/// Arguments of `phoenix bridge`.
pub type Args = super::SiteArgs;

/// Run `phoenix bridge` until Ctrl-C or SIGTERM.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config: SiteConfig = args.load()?;
    if args.check {
        println!(
            "{}: valid ({} devices, {} consumers)",
            args.config.display(),
            config.devices.len(),
            config.consumers.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let bridge = Bridge::start(&config).await?;
        wait_for_signal().await?;
        tracing::info!("Stop requested.");
        bridge.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}

pub async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}
