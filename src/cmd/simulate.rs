//! `phoenix simulate SCENARIO.toml --out DIR [--set key=value]… [--sweep key=a,b,c]`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use simulator::engine::Progress;
use simulator::Scenario;

/// Arguments of `phoenix simulate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Scenario file (TOML, docs/simulator.md).
    scenario: PathBuf,
    /// Directory for summary.json, timeseries.csv/.lp, charts and report.md.
    #[arg(long, default_value = "sim-out")]
    out: PathBuf,
    /// Override a scenario key: `--set sim.scheduler=greedy`, `--set servers.0.count=200`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Run one variant per value, in parallel, and compare them: `--sweep servers.0.count=100,200,400`.
    #[arg(long, value_name = "KEY=A,B,C")]
    sweep: Option<String>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

fn bar(quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    // Hidden by indicatif itself when stderr is not a terminal.
    let pb = ProgressBar::new(0);
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {pos}/{len} periods  {elapsed_precise} (eta {eta})")
    {
        pb.set_style(style);
    }
    pb
}

/// Run `phoenix simulate`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let overrides: Vec<(String, String)> = args
        .set
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .with_context(|| format!("--set {kv}: expected KEY=VALUE"))
        })
        .collect::<anyhow::Result<_>>()?;
    let pb = bar(args.quiet);
    let tick = |p: Progress| {
        pb.set_length(p.total);
        pb.set_position(p.done);
    };
    if let Some(spec) = &args.sweep {
        let (key, values) = simulator::sweep::parse_sweep(spec)?;
        let text = std::fs::read_to_string(&args.scenario)
            .with_context(|| format!("reading scenario {}", args.scenario.display()))?;
        let base = args
            .scenario
            .parent()
            .map(PathBuf::from)
            .unwrap_or_default();
        let variants = simulator::sweep::variants(&text, &base, &overrides, &key, &values)?;
        let outcomes = simulator::sweep::run(&args.out, &key, &variants, Some(&tick))?;
        pb.finish_and_clear();
        println!(
            "{:<24} {:>12} {:>10} {:>12} {:>8}",
            key, "net cost", "coverage", "IT kWh", "PUE"
        );
        for (v, o) in variants.iter().zip(&outcomes) {
            let s = &o.summary;
            println!(
                "{:<24} {:>12.2} {:>9.1}% {:>12.0} {:>8.3}",
                v.value,
                s.net_cost,
                s.heat_coverage * 100.0,
                s.it_energy_kwh,
                s.pue
            );
        }
        println!("Comparison: {}", args.out.join("sweep.md").display());
        return Ok(ExitCode::SUCCESS);
    }
    let sc = Scenario::load(&args.scenario, &overrides)?;
    let outcome = simulator::run(&sc, Some(&tick))?;
    pb.finish_and_clear();
    simulator::output::write_all(&args.out, &sc, &outcome)?;
    let s = &outcome.summary;
    println!(
        "{}: {} servers, {} days, scheduler {}",
        sc.name, s.servers, sc.sim.days, s.scheduler
    );
    println!(
        "IT {:.1} kWh, heat delivered {:.1} of {:.1} kWh ({:.1} %), net cost {:.2}, PUE {:.3}, ERF {:.3}",
        s.it_energy_kwh,
        s.heat_delivered_kwh,
        s.heat_demand_kwh,
        s.heat_coverage * 100.0,
        s.net_cost,
        s.pue,
        s.erf
    );
    println!(
        "Wall {:.2} s (physics {:.2} s, planning {:.2} s). Report: {}",
        outcome.timing.wall_s,
        outcome.timing.physics_s,
        outcome.timing.planning_s,
        args.out.join("report.md").display()
    );
    Ok(ExitCode::SUCCESS)
}
