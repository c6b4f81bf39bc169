//! The workload: interactive VMs with a diurnal load, and batch jobs that
//! arrive (Poisson), carry work and a deadline. Generated from
//! `[workload]` with the scenario's seed, merged with the explicit `[[vms]]`.
//!
//! - Interactive VM `v`: vCPUs drawn from `interactive_vcpus`, memory
//!   `vcpus × mem_gib_per_vcpu`, mean load `L_v = interactive_load × U(0.5,
//!   1.5)` (at most `1/(1 + a)` so the daily peak fits its vCPUs); its load at
//!   hour `h` is `L_v·(1 + a·cos(2π(h − 14)/24))`, `a = diurnal_amplitude`.
//! - Batch job: arrivals with exponential gaps (rate
//!   `batch_arrivals_per_hour`), vCPUs from `batch_vcpus`, `H ~ U(batch_hours)`
//!   hours of work at full speed (`work = vcpus·H` core-hours), deadline
//!   `arrival + H·slack`, `slack ~ U(batch_slack)`.

use chrono::{DateTime, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use scheduler::model::VmKind;

use crate::scenario::Scenario;

/// One VM of the run.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// VM id.
    pub id: String,
    /// vCPUs.
    pub vcpus: u32,
    /// Memory, GiB.
    pub mem_gib: f64,
    /// Base image.
    pub image: Option<String>,
    /// Interactive or batch.
    pub kind: VmKind,
    /// Interactive: mean load (share of vCPUs).
    pub load: f64,
    /// Batch: work, core-hours.
    pub work_core_h: f64,
    /// Batch: deadline.
    pub deadline: Option<DateTime<Utc>>,
    /// Arrival, seconds after the start.
    pub arrival_s: f64,
    /// May migrate.
    pub migratable: bool,
}

/// Diurnal factor of interactive load at an hour of day.
pub fn load_factor(amplitude: f64, hour: f64) -> f64 {
    1.0 + amplitude * (std::f64::consts::TAU * (hour - 14.0) / 24.0).cos()
}

/// Every VM of the run, by arrival time (then id).
pub fn generate(sc: &Scenario) -> Vec<Job> {
    let w = &sc.workload;
    let start = sc.sim.start;
    let span_s = sc.sim.days * 86_400.0;
    let mut rng = ChaCha8Rng::seed_from_u64(sc.sim.seed ^ 0x574f_524b_4c4f_4144);
    let mut jobs = Vec::new();
    let max_load = 1.0 / (1.0 + w.diurnal_amplitude);
    for i in 0..w.interactive_vms {
        let vcpus = w.interactive_vcpus[rng.random_range(0..w.interactive_vcpus.len())];
        let load = (w.interactive_load * rng.random_range(0.5..1.5)).min(max_load);
        jobs.push(Job {
            id: format!("i{i:05}"),
            vcpus,
            mem_gib: f64::from(vcpus) * w.mem_gib_per_vcpu,
            image: w.image.clone(),
            kind: VmKind::Interactive,
            load: (load * 1000.0).round() / 1000.0,
            work_core_h: 0.0,
            deadline: None,
            arrival_s: 0.0,
            migratable: true,
        });
    }
    if w.batch_arrivals_per_hour > 0.0 {
        let rate_per_s = w.batch_arrivals_per_hour / 3600.0;
        let mut t = 0.0;
        let mut i = 0usize;
        loop {
            let u: f64 = rng.random_range(f64::EPSILON..1.0);
            t += -u.ln() / rate_per_s;
            if t >= span_s {
                break;
            }
            let vcpus = w.batch_vcpus[rng.random_range(0..w.batch_vcpus.len())];
            let hours = uniform(&mut rng, w.batch_hours);
            let slack = uniform(&mut rng, w.batch_slack);
            let arrival_s = t.round();
            let deadline_s = arrival_s + (hours * slack * 3600.0).round();
            jobs.push(Job {
                id: format!("b{i:05}"),
                vcpus,
                mem_gib: f64::from(vcpus) * w.mem_gib_per_vcpu,
                image: w.image.clone(),
                kind: VmKind::Batch,
                load: 0.0,
                work_core_h: (f64::from(vcpus) * hours * 1000.0).round() / 1000.0,
                deadline: Some(start + chrono::Duration::seconds(deadline_s as i64)),
                arrival_s,
                migratable: true,
            });
            i += 1;
        }
    }
    for v in &sc.vms {
        let arrival_s = v
            .arrival
            .map(|a| ((a - start).num_milliseconds() as f64 / 1000.0).max(0.0))
            .unwrap_or(0.0);
        jobs.push(Job {
            id: v.id.clone(),
            vcpus: v.vcpus,
            mem_gib: v.mem_gib,
            image: v.image.clone(),
            kind: v.kind,
            load: v.load.unwrap_or(0.0),
            work_core_h: v.work_core_h.unwrap_or(0.0),
            deadline: v.deadline,
            arrival_s,
            migratable: v.migratable,
        });
    }
    jobs.sort_by(|a, b| a.arrival_s.total_cmp(&b.arrival_s).then(a.id.cmp(&b.id)));
    jobs
}

fn uniform(rng: &mut ChaCha8Rng, r: [f64; 2]) -> f64 {
    if r[1] > r[0] {
        rng.random_range(r[0]..r[1])
    } else {
        r[0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diurnal_factor_peaks_at_two_in_the_afternoon() {
        assert!((load_factor(0.3, 14.0) - 1.3).abs() < 1e-12);
        assert!((load_factor(0.3, 2.0) - 0.7).abs() < 1e-12);
        assert_eq!(load_factor(0.0, 7.0), 1.0);
    }
}
