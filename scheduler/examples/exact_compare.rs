//! Development tool: the optimiser's plan beside the exact optimum (HiGHS)
//! on generated small sites, decision by decision.
//!
//! `cargo run --release -p phoenix-scheduler --features highs --example exact_compare SEED...`
//! Exact solutions are cached under `$EXACT_CACHE` (default `/tmp/exact_cache`).

use std::time::{Duration, Instant};

use phoenix_scheduler::exact::{self, Backend};
use phoenix_scheduler::generate::{generate, SiteSpec};
use phoenix_scheduler::{evaluate, optimizer, Decisions, Instance};
use serde_json::json;

fn cached_exact(inst: &Instance<'_>, seed: u64) -> Option<(Decisions, bool, f64)> {
    let dir = std::env::var("EXACT_CACHE").unwrap_or_else(|_| "/tmp/exact_cache".into());
    let path = format!("{dir}/{seed}.json");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        let d = Decisions {
            host: serde_json::from_value(v["host"].clone()).ok()?,
            on: serde_json::from_value(v["on"].clone()).ok()?,
            batch_cores: serde_json::from_value(v["batch_cores"].clone()).ok()?,
        };
        return Some((d, v["proven"].as_bool()?, v["secs"].as_f64()?));
    }
    let t0 = Instant::now();
    let out = match exact::solve(inst, Backend::Highs, Some(Duration::from_secs(300))) {
        Ok(o) => o,
        Err(e) => {
            println!("seed {seed}: exact: {e}");
            return None;
        }
    };
    let secs = t0.elapsed().as_secs_f64();
    let v = json!({
        "host": out.decisions.host, "on": out.decisions.on,
        "batch_cores": out.decisions.batch_cores, "proven": out.proven_optimal, "secs": secs,
    });
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(&path, v.to_string());
    Some((out.decisions, out.proven_optimal, secs))
}

fn main() {
    let verbose = std::env::var("VERBOSE").is_ok();
    for seed in std::env::args()
        .skip(1)
        .filter_map(|a| a.parse::<u64>().ok())
    {
        let snap = generate(&SiteSpec::small(seed));
        let inst = Instance::new(&snap).expect("generated sites are valid");
        let t0 = Instant::now();
        let opt = match optimizer::decide(&inst, None) {
            Ok(o) => o.decisions,
            Err(e) => {
                println!("seed {seed}: optimiser: {e}");
                continue;
            }
        };
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        let Some((ex, proven, secs)) = cached_exact(&inst, seed) else {
            continue;
        };
        let eo = evaluate(&inst, &opt);
        let ee = evaluate(&inst, &ex);
        let gap = (eo.objective.cost - ee.objective.cost) / ee.objective.energy_cost;
        println!(
            "seed {seed}: optimiser {:.6} ({ms:.0} ms), exact {:.6} ({secs:.1} s{}), gap {:.4} %",
            eo.objective.cost,
            ee.objective.cost,
            if proven { "" } else { ", not proven" },
            100.0 * gap
        );
        if !verbose {
            continue;
        }
        println!(
            "  objective opt {:?}\n  objective ex  {:?}",
            eo.objective, ee.objective
        );
        println!("  policy {:?}", snap.policy);
        println!("  price {:?}", snap.electricity_price_per_kwh);
        for l in &snap.loops {
            println!(
                "  loop {} value {} max {} demand {:?}",
                l.id, l.heat_value_per_kwh, l.max_kw, l.demand_kw
            );
        }
        println!("  heat opt {:?}\n  heat ex  {:?}", eo.heat_kw, ee.heat_kw);
        for (s, sv) in snap.servers.iter().enumerate() {
            let vms = |d: &Decisions| -> Vec<String> {
                (0..inst.n_vms())
                    .filter(|&v| d.host[v] == s)
                    .map(|v| snap.vms[v].id.clone())
                    .collect()
            };
            println!(
                "  {} cores {} mem {} on_now {} switch {} loop {:?} rec {:.2} u_max {:?} curve {:?} off {}",
                sv.id, sv.cores, sv.mem_gib, sv.on, sv.can_switch, sv.heat_loop, sv.recovery,
                inst.u_max[s].map(|u| (u * 1000.0).round() / 1000.0), sv.power_curve_w, sv.off_w
            );
            for (name, d, e) in [("opt", &opt, &eo), ("ex ", &ex, &ee)] {
                println!(
                    "     {name} on {} util {:?} vms {:?}",
                    d.on[s],
                    round2(&e.util[s]),
                    vms(d)
                );
            }
        }
        for (v, vm) in snap.vms.iter().enumerate() {
            println!(
                "  {} {:?} vcpus {} mem {} img {:?} load {:?} work {:?} dl {:?} mig {} now {:?} opt {} ex {} {}",
                vm.id, vm.kind, vm.vcpus, vm.mem_gib, vm.image, vm.load, vm.work_core_h,
                vm.deadline.map(|d| (d - snap.time).num_minutes()), vm.migratable,
                vm.host, snap.servers[opt.host[v]].id, snap.servers[ex.host[v]].id,
                if opt.host[v] != ex.host[v] { "<<" } else { "" }
            );
            if inst.is_batch(v) {
                println!(
                    "     opt {:?}\n     ex  {:?}",
                    round2(&opt.batch_cores[v]),
                    round2(&ex.batch_cores[v])
                );
            }
        }
    }
}

fn round2(x: &[f64]) -> Vec<f64> {
    x.iter().map(|c| (c * 100.0).round() / 100.0).collect()
}
