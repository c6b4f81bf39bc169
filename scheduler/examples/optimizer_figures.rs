//! Development figures of the optimiser on generated sites: time, cost,
//! lower bound, gap and gain over the greedy baseline.
//!
//! `cargo run --release -p phoenix-scheduler --example optimizer_figures [small|medium|large|SERVERSxVMS] [seeds]`

use std::time::Instant;

use phoenix_scheduler::generate::{generate, SiteSpec};
use phoenix_scheduler::{evaluate, greedy, optimizer, Instance};

fn main() {
    let mut args = std::env::args().skip(1);
    let size = args.next().unwrap_or_else(|| "small".into());
    let seeds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(3);
    println!(
        "size seed ms bound_ms cost bound gap_to_bound_%energy greedy gain_%energy energy_cost"
    );
    for seed in 1..=seeds {
        let spec = match size.as_str() {
            "medium" => SiteSpec::medium(seed),
            "large" => SiteSpec::large(seed),
            other => match other.split_once('x') {
                // `SERVERSxVMS`, e.g. `40x320`.
                Some((s, v)) => SiteSpec::sized(
                    s.parse().expect("servers in SERVERSxVMS"),
                    v.parse().expect("VMs in SERVERSxVMS"),
                    seed,
                ),
                None => SiteSpec::small(seed),
            },
        };
        let snap = generate(&spec);
        let inst = Instance::new(&snap).expect("generated sites are valid");
        let t0 = Instant::now();
        let out = match optimizer::decide(&inst, None) {
            Ok(o) => o,
            Err(e) => {
                println!("{size} {seed} {e}");
                continue;
            }
        };
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        let tb = Instant::now();
        let _ = optimizer::bound::lower_bound(&inst);
        let bound_ms = tb.elapsed().as_secs_f64() * 1000.0;
        let ev = evaluate(&inst, &out.decisions);
        assert!(ev.is_feasible(), "{:?}", ev.violations);
        let g = evaluate(&inst, &greedy::decide(&inst).expect("greedy plan"));
        let cost = ev.objective.cost;
        let energy = ev.objective.energy_cost;
        let (bound, gap) = match out.lower_bound {
            Some(b) => (
                format!("{b:.4}"),
                format!("{:.2}", 100.0 * (cost - b) / energy),
            ),
            None => ("-".into(), "-".into()),
        };
        let gcost = if g.is_feasible() {
            format!("{:.4}", g.objective.cost)
        } else {
            "infeasible".into()
        };
        println!(
            "{size} {seed} {ms:.0} {bound_ms:.0} {cost:.4} {bound} {gap} {gcost} {:.2} {energy:.4}",
            100.0 * (g.objective.cost - cost) / energy
        );
    }
}
