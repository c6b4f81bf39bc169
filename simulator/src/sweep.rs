//! What-if runs: variants of one scenario that differ in one key
//! (`--sweep key=a,b,c`), run in parallel (rayon), compared in a table
//! (`sweep.md`, `sweep.csv`) and charts (`sweep-net-cost.svg`,
//! `sweep-coverage.svg`). Each variant's full outputs go to a subdirectory.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::engine::{Outcome, Progress};
use crate::error::{ScenarioError, SimError};
use crate::scenario::Scenario;
use crate::summary::Summary;

/// One variant.
#[derive(Debug)]
pub struct Variant {
    /// The swept value, as given.
    pub value: String,
    /// The scenario with the value set.
    pub scenario: Scenario,
}

/// Parse `key=a,b,c`.
pub fn parse_sweep(spec: &str) -> Result<(String, Vec<String>), ScenarioError> {
    let (key, values) = spec
        .split_once('=')
        .ok_or_else(|| ScenarioError::invalid(spec, "--sweep needs key=a,b,c"))?;
    let values: Vec<String> = values
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    if values.is_empty() {
        return Err(ScenarioError::invalid(
            key,
            "--sweep needs at least one value",
        ));
    }
    Ok((key.trim().to_string(), values))
}

/// Build and validate every variant before any runs.
pub fn variants(
    text: &str,
    base_dir: &Path,
    overrides: &[(String, String)],
    key: &str,
    values: &[String],
) -> Result<Vec<Variant>, ScenarioError> {
    values
        .iter()
        .map(|v| {
            let mut o = overrides.to_vec();
            o.push((key.to_string(), v.clone()));
            Ok(Variant {
                value: v.clone(),
                scenario: Scenario::from_toml(text, base_dir, &o)?,
            })
        })
        .collect()
}

/// Directory name of a variant.
pub fn variant_dir(out: &Path, key: &str, value: &str) -> PathBuf {
    let clean: String = format!("{key}={value}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "=._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    out.join(clean)
}

/// Run the variants in parallel, write each one's outputs and the
/// comparison. `progress` receives the periods done over all variants.
pub fn run(
    out: &Path,
    key: &str,
    variants: &[Variant],
    progress: Option<&(dyn Fn(Progress) + Sync)>,
) -> Result<Vec<Outcome>, SimError> {
    let total: u64 = variants
        .iter()
        .map(|v| (v.scenario.sim.days * 86_400.0 / v.scenario.sim.control_period_s).ceil() as u64)
        .sum();
    let done = std::sync::atomic::AtomicU64::new(0);
    let tick = |_: Progress| {
        let d = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if let Some(f) = progress {
            f(Progress { done: d, total });
        }
    };
    let outcomes: Vec<Outcome> = variants
        .par_iter()
        .map(|v| {
            let o = crate::engine::run(&v.scenario, Some(&tick))?;
            crate::output::write_all(&variant_dir(out, key, &v.value), &v.scenario, &o)?;
            Ok(o)
        })
        .collect::<Result<_, SimError>>()?;
    write_comparison(out, key, variants, &outcomes)?;
    Ok(outcomes)
}

fn write_comparison(
    out: &Path,
    key: &str,
    variants: &[Variant],
    outcomes: &[Outcome],
) -> Result<(), SimError> {
    let columns = |s: &Summary| -> [(&'static str, f64); 12] {
        [
            ("it_energy_kwh", s.it_energy_kwh),
            ("heat_delivered_kwh", s.heat_delivered_kwh),
            ("heat_coverage", s.heat_coverage),
            ("backup_heat_kwh", s.backup_heat_kwh),
            ("electricity_cost", s.electricity_cost),
            ("heat_value", s.heat_value),
            ("net_cost", s.net_cost),
            ("pue", s.pue),
            ("erf", s.erf),
            ("thermal_violation_s", s.thermal_violation_s),
            ("sla_violation_s", s.sla_violation_s),
            ("batch_deadline_misses", s.batch_deadline_misses as f64),
        ]
    };
    let names = columns(&Summary::default()).map(|c| c.0);
    let mut md = format!(
        "# Sweep of `{key}`\n\n| value | {} |\n|---|",
        names.join(" | ")
    );
    md.push_str(&"---|".repeat(names.len()));
    md.push('\n');
    let mut csv = format!("value,{}\n", names.join(","));
    for (v, o) in variants.iter().zip(outcomes) {
        let cols = columns(&o.summary);
        let _ = write!(md, "| {} |", v.value);
        let _ = write!(csv, "{}", v.value.replace(',', ";"));
        for (name, x) in cols {
            let _ = match name {
                "heat_coverage" => write!(md, " {:.1} % |", x * 100.0),
                "pue" | "erf" => write!(md, " {x:.3} |"),
                "electricity_cost" | "heat_value" | "net_cost" => write!(md, " {x:.2} |"),
                _ => write!(md, " {x:.0} |"),
            };
            let _ = write!(csv, ",{x}");
        }
        md.push('\n');
        csv.push('\n');
    }
    md.push_str("\n![net cost](sweep-net-cost.svg)\n\n![heat coverage](sweep-coverage.svg)\n");
    let w = |p: PathBuf, t: &str| {
        std::fs::write(&p, t).map_err(|source| SimError::Output {
            path: p.clone(),
            source,
        })
    };
    w(out.join("sweep.md"), &md)?;
    w(out.join("sweep.csv"), &csv)?;
    let bars = |f: &dyn Fn(&Outcome) -> f64| -> Vec<(String, f64)> {
        variants
            .iter()
            .zip(outcomes)
            .map(|(v, o)| (v.value.clone(), f(o)))
            .collect()
    };
    crate::charts::bar_chart(
        &out.join("sweep-net-cost.svg"),
        &format!("Net cost by {key}"),
        "net cost",
        &bars(&|o| o.summary.net_cost),
    )?;
    crate::charts::bar_chart(
        &out.join("sweep-coverage.svg"),
        &format!("Heat coverage by {key}"),
        "%",
        &bars(&|o| o.summary.heat_coverage * 100.0),
    )?;
    Ok(())
}
