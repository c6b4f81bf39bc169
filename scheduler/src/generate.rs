//! Seeded generator of realistic site snapshots, for tests and benchmarks.
//!
//! What makes the generated sites realistic (and hard):
//! - heterogeneous servers drawn from the six SPECpower_ssj2008 curves of
//!   `reference/physics.md` (CloudSim's `PowerModelSpecPower*` tables): old
//!   HP machines that idle at 70 % of peak next to IBM machines that idle at
//!   25 %; the x5670/x5675 curves are non-convex (a jump from 0 to 10 %);
//! - cores as in the SPECpower test configurations; memory upgraded to 4× the
//!   tested configuration, as refurbishers do for VM hosts;
//! - hot spots: a share of servers in a hot aisle (inlet 30–34 °C, ASHRAE A1
//!   allowable is ≤ 32 °C) with a thermal resistance that makes the
//!   temperature limit bind between 55 and 85 % utilisation (never below
//!   idle, so a hot server can still run);
//! - heat loops with night-heavy demand (greenhouses heat 70–80 % at night),
//!   air-cooled servers with no loop, and liquid-cooled ones recovering
//!   80–90 %;
//! - time-of-use electricity prices (cheap night, expensive evening peak);
//! - interactive VMs placed on current hosts, a share pending; batch VMs with
//!   remaining work and deadlines inside and beyond the horizon; VMs of shared
//!   base images; a few non-migratable VMs and servers that cannot switch.
//!
//! The same [`SiteSpec`] and seed always give the same snapshot.
//!
//! Beside this default mix, [`generate_class`] makes sites of one
//! [`SiteClass`] each (tight memory, big VMs, few migrations, many pending,
//! many batch VMs, heat-hungry and heat-saturated loops, hot servers),
//! shaped so that the class's rule binds.

use chrono::{DateTime, Duration, TimeZone, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::model::{HeatLoop, Image, Policy, Server, Snapshot, Vm, VmKind, SNAPSHOT_SCHEMA};

mod classes;

pub use classes::{generate_class, ClassSpec, SiteClass};

/// A SPECpower model: name, cores, memory of the tested configuration (GB),
/// and power at 0, 10, …, 100 % load (W). Source: reference/physics.md.
#[derive(Debug, Clone, Copy)]
pub struct SpecModel {
    /// Model name as in CloudSim.
    pub name: &'static str,
    /// Cores of the tested configuration.
    pub cores: u32,
    /// Memory of the tested configuration, GB.
    pub mem_gb: f64,
    /// Power curve, W.
    pub curve_w: [f64; 11],
}

/// The six published curves.
pub const SPEC_MODELS: [SpecModel; 6] = [
    SpecModel {
        name: "hp-ml110-g4",
        cores: 2,
        mem_gb: 4.0,
        curve_w: [
            86.0, 89.4, 92.6, 96.0, 99.5, 102.0, 106.0, 108.0, 112.0, 114.0, 117.0,
        ],
    },
    SpecModel {
        name: "hp-ml110-g5",
        cores: 2,
        mem_gb: 4.0,
        curve_w: [
            93.7, 97.0, 101.0, 105.0, 110.0, 116.0, 121.0, 125.0, 129.0, 133.0, 135.0,
        ],
    },
    SpecModel {
        name: "ibm-x3250-x3470",
        cores: 4,
        mem_gb: 8.0,
        curve_w: [
            41.6, 46.7, 52.3, 57.9, 65.4, 73.0, 80.7, 89.5, 99.6, 105.0, 113.0,
        ],
    },
    SpecModel {
        name: "ibm-x3250-x3480",
        cores: 4,
        mem_gb: 8.0,
        curve_w: [
            42.3, 46.7, 49.7, 55.4, 61.8, 69.3, 76.1, 87.0, 96.1, 106.0, 113.0,
        ],
    },
    SpecModel {
        name: "ibm-x3550-x5670",
        cores: 12,
        mem_gb: 12.0,
        curve_w: [
            66.0, 107.0, 120.0, 131.0, 143.0, 156.0, 173.0, 191.0, 211.0, 229.0, 247.0,
        ],
    },
    SpecModel {
        name: "ibm-x3550-x5675",
        cores: 12,
        mem_gb: 16.0,
        curve_w: [
            58.4, 98.0, 109.0, 118.0, 128.0, 140.0, 153.0, 170.0, 189.0, 205.0, 222.0,
        ],
    },
];

/// Look up a SPECpower model by name.
pub fn spec_model(name: &str) -> Option<&'static SpecModel> {
    SPEC_MODELS.iter().find(|m| m.name == name)
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct SiteSpec {
    /// Number of servers.
    pub servers: usize,
    /// Number of VMs (interactive and batch).
    pub vms: usize,
    /// Steps in the horizon.
    pub steps: usize,
    /// Step length, s.
    pub step_s: f64,
    /// Random seed.
    pub seed: u64,
    /// Share of VMs that are batch.
    pub batch_share: f64,
    /// Share of VMs that are pending (no host yet).
    pub pending_share: f64,
    /// Share of servers in a hot aisle.
    pub hot_share: f64,
    /// Number of heat loops (servers beyond them are air-cooled).
    pub loops: usize,
    /// Value of delivered heat, per kWh.
    pub heat_value_per_kwh: f64,
    /// Hour of day (UTC) at which the horizon starts.
    pub start_hour: u32,
}

impl SiteSpec {
    /// A small site: 10 servers, 40 VMs, 8 steps of 15 min (exact-solver size).
    pub fn small(seed: u64) -> Self {
        Self::sized(10, 40, seed)
    }

    /// A medium site: 100 servers, 800 VMs.
    pub fn medium(seed: u64) -> Self {
        Self::sized(100, 800, seed)
    }

    /// A large site: 1,000 servers, 10,000 VMs.
    pub fn large(seed: u64) -> Self {
        Self::sized(1000, 10_000, seed)
    }

    /// `servers` servers and `vms` VMs, 8 steps of 15 min, defaults otherwise.
    pub fn sized(servers: usize, vms: usize, seed: u64) -> Self {
        Self {
            servers,
            vms,
            steps: 8,
            step_s: 900.0,
            seed,
            batch_share: 0.2,
            pending_share: 0.1,
            hot_share: 0.15,
            loops: (servers / 100).clamp(1, 8),
            heat_value_per_kwh: 0.09,
            start_hour: 18,
        }
    }
}

/// Time-of-use tariff per kWh at a given hour of day: night 0.12, day 0.21,
/// evening peak (17–21 h) 0.30.
pub fn tou_price_per_kwh(hour: u32) -> f64 {
    match hour % 24 {
        0..=6 | 23 => 0.12,
        17..=20 => 0.30,
        _ => 0.21,
    }
}

/// Greenhouse-like demand shape: 1.0 at night, 0.35 around midday.
pub fn night_heavy_shape(hour: f64) -> f64 {
    let h = hour.rem_euclid(24.0);
    // Cosine peaking at 02:00, minimum at 14:00.
    let c = ((h - 2.0) / 24.0 * std::f64::consts::TAU).cos();
    0.675 + 0.325 * c
}

/// Generate a snapshot.
pub fn generate(spec: &SiteSpec) -> Snapshot {
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let start: DateTime<Utc> = Utc
        .with_ymd_and_hms(2026, 1, 15, spec.start_hour % 24, 0, 0)
        .single()
        .expect("valid start time");
    let n_loops = spec.loops.max(1);

    // Servers, and the utilisation at which each one's temperature limit binds.
    let mut servers = Vec::with_capacity(spec.servers);
    let mut u_limit = Vec::with_capacity(spec.servers);
    for i in 0..spec.servers {
        let m = &SPEC_MODELS[rng.random_range(0..SPEC_MODELS.len())];
        let hot = rng.random_bool(spec.hot_share.clamp(0.0, 1.0));
        let inlet_c = if hot {
            rng.random_range(30.0..34.0)
        } else {
            rng.random_range(20.0..26.0)
        };
        let temp_limit_c = 80.0;
        // Hot servers: the limit binds below full load.
        let r_k_per_w = if hot {
            // Never below idle power plus 30 % of the dynamic range: a limit
            // under idle power does not bind, it forbids the server.
            let (idle, peak) = (m.curve_w[0], m.curve_w[10]);
            let limit_w = (peak * rng.random_range(0.55..0.85)).max(idle + 0.3 * (peak - idle));
            (temp_limit_c - inlet_c) / limit_w
        } else {
            (temp_limit_c - inlet_c) / (m.curve_w[10] * rng.random_range(1.1..1.6))
        };
        // 75 % of servers sit on a liquid loop; the rest are air-cooled.
        let heat_loop = if rng.random_bool(0.75) {
            Some(format!("loop{}", i % n_loops))
        } else {
            None
        };
        let recovery = if heat_loop.is_some() {
            rng.random_range(0.8..0.9)
        } else {
            0.0
        };
        // The utilisation at which the temperature limit binds.
        let limit_w = (temp_limit_c - inlet_c) / r_k_per_w;
        let u_bind = crate::curve::PowerCurve::new(&m.curve_w)
            .and_then(|c| c.max_util_within(limit_w))
            .unwrap_or(0.0);
        u_limit.push(u_bind);
        let on = rng.random_bool(0.85);
        servers.push(Server {
            id: format!("s{i:04}"),
            cores: m.cores,
            mem_gib: m.mem_gb * 4.0,
            power_curve_w: m.curve_w.to_vec(),
            off_w: rng.random_range(2.0..8.0_f64).round(),
            on,
            can_switch: rng.random_bool(0.95),
            inlet_c: (inlet_c * 10.0_f64).round() / 10.0,
            r_k_per_w,
            temp_limit_c,
            heat_loop,
            recovery,
        });
    }

    // Images.
    let images = vec![
        Image {
            id: "ubuntu-24.04".into(),
            shared_mem_gib: 0.5,
        },
        Image {
            id: "debian-12".into(),
            shared_mem_gib: 0.4,
        },
        Image {
            id: "windows-2022".into(),
            shared_mem_gib: 0.5,
        },
        Image {
            id: "render".into(),
            shared_mem_gib: 0.5,
        },
    ];

    // VMs: place interactive VMs round-robin-ish on servers that are on,
    // respecting vCPU and memory capacity loosely (the generator aims at
    // realistic, feasible sites; the optimiser must still respect every rule).
    let overcommit = 4.0;
    let on_servers: Vec<usize> = (0..spec.servers).filter(|&s| servers[s].on).collect();
    let mut used_vcpus = vec![0.0_f64; spec.servers];
    let mut used_mem = vec![0.0_f64; spec.servers];
    let mut used_load = vec![0.0_f64; spec.servers];
    let mut used_cores = vec![0.0_f64; spec.servers];
    let mut vms = Vec::with_capacity(spec.vms);
    for j in 0..spec.vms {
        let batch = rng.random_bool(spec.batch_share.clamp(0.0, 1.0));
        let vcpus: u32 = if batch {
            *[1u32, 2, 2, 4].get(rng.random_range(0..4)).unwrap_or(&2)
        } else {
            *[1u32, 1, 2].get(rng.random_range(0..3)).unwrap_or(&1)
        };
        let mem_gib = f64::from(vcpus) * [0.5, 1.0, 1.0][rng.random_range(0..3)];
        let image = if batch {
            "render".to_string()
        } else {
            images[rng.random_range(0..3)].id.clone()
        };
        let load = if batch {
            None
        } else {
            Some((rng.random_range(0.05..0.6_f64) * 100.0).round() / 100.0)
        };
        let fixed = f64::from(vcpus) * load.unwrap_or(0.0);
        let pending = rng.random_bool(spec.pending_share.clamp(0.0, 1.0));
        let mut host = None;
        if !pending && !on_servers.is_empty() {
            // Try a few random servers that are on; leave pending if none fits.
            for _ in 0..8 {
                let s = on_servers[rng.random_range(0..on_servers.len())];
                let cap = f64::from(servers[s].cores);
                // Interactive load up to half the cores; with batch VMs at
                // the most they need on average (60 % of their vCPUs), up to
                // 90 % of what the temperature limit allows, so that the
                // current placement can meet every deadline.
                let need = if batch { 0.6 * f64::from(vcpus) } else { fixed };
                if used_vcpus[s] + f64::from(vcpus) <= cap * overcommit
                    && used_mem[s] + mem_gib <= servers[s].mem_gib * 0.9
                    && used_load[s] + fixed <= cap * 0.5 * u_limit[s]
                    && used_cores[s] + need <= cap * u_limit[s] * 0.9
                {
                    used_vcpus[s] += f64::from(vcpus);
                    used_mem[s] += mem_gib;
                    used_load[s] += fixed;
                    used_cores[s] += need;
                    host = Some(servers[s].id.clone());
                    break;
                }
            }
        }
        let (work_core_h, deadline) = if batch {
            let horizon_h = spec.step_s * spec.steps as f64 / 3600.0;
            // Deadlines from 1 h to 3 days away; work up to 60 % of what the VM
            // could do by then at full speed.
            let until_h = rng.random_range(1.0..72.0_f64).max(horizon_h * 0.25);
            let until_h = (until_h * 4.0).round() / 4.0;
            let work = rng.random_range(0.1..0.6) * f64::from(vcpus) * until_h;
            (
                Some((work * 10.0).round() / 10.0),
                Some(start + Duration::minutes((until_h * 60.0) as i64)),
            )
        } else {
            (None, None)
        };
        vms.push(Vm {
            id: format!("{}{j:05}", if batch { "b" } else { "v" }),
            vcpus,
            mem_gib,
            image: Some(image),
            host,
            kind: if batch {
                VmKind::Batch
            } else {
                VmKind::Interactive
            },
            load,
            work_core_h,
            deadline,
            // Pinned VMs are interactive: a pinned batch VM whose remaining
            // work outgrows its host would make the site infeasible.
            migratable: rng.random_bool(0.95) || batch,
        });
    }

    let loops = (0..n_loops)
        .map(|l| {
            let n_in = servers
                .iter()
                .filter(|s| s.heat_loop.as_deref() == Some(format!("loop{l}").as_str()))
                .count() as f64;
            // Peak demand about 60 % of what the loop's servers give at full load.
            let peak_kw = n_in * 0.15 * rng.random_range(0.4..0.8);
            HeatLoop {
                id: format!("loop{l}"),
                demand_kw: (0..spec.steps)
                    .map(|t| {
                        let hour = f64::from(spec.start_hour) + t as f64 * spec.step_s / 3600.0;
                        (peak_kw * night_heavy_shape(hour) * 100.0).round() / 100.0
                    })
                    .collect(),
                heat_value_per_kwh: spec.heat_value_per_kwh,
                max_kw: (peak_kw * 1.2 * 10.0).round() / 10.0 + 1.0,
            }
        })
        .collect();

    let electricity_price_per_kwh = (0..spec.steps)
        .map(|t| {
            let hour = f64::from(spec.start_hour) + t as f64 * spec.step_s / 3600.0;
            tou_price_per_kwh(hour.floor() as u32)
        })
        .collect();

    Snapshot {
        schema: SNAPSHOT_SCHEMA.to_string(),
        site: format!("generated-{}x{}-{}", spec.servers, spec.vms, spec.seed),
        time: start,
        step_s: spec.step_s,
        steps: spec.steps,
        electricity_price_per_kwh,
        servers,
        vms,
        images,
        loops,
        policy: Policy {
            max_migrations: (spec.vms / 20).max(4),
            migration_cost: 0.002,
            switch_cost: 0.01,
            cpu_overcommit: overcommit,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_site() {
        let a = generate(&SiteSpec::small(7));
        let b = generate(&SiteSpec::small(7));
        assert_eq!(a, b);
        let c = generate(&SiteSpec::small(8));
        assert_ne!(a, c);
    }

    #[test]
    fn sizes_and_lengths_match_the_spec() {
        let s = generate(&SiteSpec::medium(1));
        assert_eq!(s.servers.len(), 100);
        assert_eq!(s.vms.len(), 800);
        assert_eq!(s.electricity_price_per_kwh.len(), 8);
        assert!(s.loops.iter().all(|l| l.demand_kw.len() == 8));
        assert!(s.vms.iter().any(|v| v.host.is_none()));
        assert!(s.vms.iter().any(|v| v.kind == VmKind::Batch));
    }

    #[test]
    fn night_demand_exceeds_midday_demand() {
        assert!(night_heavy_shape(2.0) > 0.99);
        assert!(night_heavy_shape(14.0) < 0.36);
    }
}
