//! `phoenix controller --config FILE`: the site's control loop, its facility
//! bridge, HTTP API and web page (docs/controller.md).

use std::process::ExitCode;

use anyhow::Context;
use hvac_bridge::SiteConfig;
use phoenix::controller::config::ControllerConfig;
use phoenix::controller::run::{self, Clock};

/// Arguments of `phoenix controller`.
pub type Args = super::SiteArgs;

/// Run `phoenix controller` until Ctrl-C or SIGTERM.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config: SiteConfig<ControllerConfig> = args.load()?;
    config.validate()?;
    let ctl = config
        .controller
        .as_ref()
        .context("the site file has no [controller] section")?;
    ctl.validate()?;
    if args.check {
        println!(
            "{}: valid ({} servers, {} loops, {} devices, {} consumers)",
            args.config.display(),
            ctl.servers.len(),
            ctl.loops.len(),
            config.devices.len(),
            config.consumers.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let (running, join) = run::start(config, Clock::wall(), None, stopped).await?;
        println!("Phoenix controller: http://{}/", running.api_addr);
        super::bridge::wait_for_signal().await?;
        tracing::info!("Stop requested.");
        let _ = stop.send(true);
        join.await.context("controller task")?;
        Ok(ExitCode::SUCCESS)
    })
}
