//! `phoenix`: the command-line front of the Phoenix scheduler and facility
//! controller. Each subcommand lives in its own module under `cmd/`.

mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "phoenix", version, about = "Thermal-aware datacenter scheduler that sells its waste heat", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run everything in one process on embedded defaults: broker, a live
    /// site twin, the controller, the API and web page.
    Demo(cmd::demo::Args),
    /// Solve one snapshot and print the plan (phoenix.plan/v1 JSON).
    Plan(cmd::plan::Args),
    /// Run the node agent: telemetry out, power caps in (docs/agent.md).
    Agent(cmd::agent::Args),
    /// Print a documented default configuration (`agent`).
    GenerateConfig(cmd::generate_config::Args),
    /// Run the facility bridge alone: Modbus devices ⇄ MQTT, consumer
    /// demand/offers, the read-out Modbus server (same site config as the
    /// controller).
    Bridge(cmd::bridge::Args),
    /// Run the site's controller: plans every period and applies them,
    /// with the bridge, HTTP API and web page (docs/controller.md).
    Controller(cmd::controller::Args),
    /// Simulate a site scenario (capacity planning): summary, time series, charts, report.
    Simulate(cmd::simulate::Args),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => cmd::demo::run(args),
        Command::Plan(args) => cmd::plan::run(args),
        Command::Agent(args) => cmd::agent::run(args),
        Command::GenerateConfig(args) => cmd::generate_config::run(args),
        Command::Bridge(args) => cmd::bridge::run(args),
        Command::Controller(args) => cmd::controller::run(args),
        Command::Simulate(args) => cmd::simulate::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
