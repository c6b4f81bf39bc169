//! Server power and temperature for a whole bank of servers, stored as a
//! struct of arrays and advanced one control period at a time.
//!
//! - Power: the SPECpower curve `P(u)` (11 points, linear in between), cut
//!   down by a cap. A capped server runs at the utilisation the cap allows,
//!   `u_cap = P⁻¹(cap)`: interactive VMs are served first (any shortfall is an
//!   SLA violation), batch work slows in proportion (DESIGN.md §3).
//! - Temperature: `C·dT/dt = P − (T − T_in)/R`, advanced with the exact step
//!   `T' = T_ss + (T − T_ss)·e^(−dt/(R·C))`, `T_ss = T_in + R·P` — the
//!   planner's steady state. `e^(−dt/(R·C))` is computed once per group.
//!
//! Servers are cut into fixed chunks of [`CHUNK`] processed in parallel
//! (rayon); partial sums come back per chunk and are added in chunk order, so
//! results do not depend on the number of threads. Within a chunk, two
//! servers advance side by side (their temperature chains overlap), each
//! step adding their powers in server order.

use rayon::prelude::*;
use scheduler::curve::PowerCurve;

/// Servers per parallel chunk.
pub const CHUNK: usize = 64;

/// Server-steps in a period from which the period runs in parallel.
pub const PARALLEL_MIN_SERVER_STEPS: usize = 200_000;

/// Physics of one server group.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupPhysics {
    /// Power curve.
    pub curve: PowerCurve,
    /// Cores.
    pub cores: f64,
    /// Power when off, W.
    pub off_w: f64,
    /// Cap in force (configured cap and thermal guard), W; infinite when none.
    pub cap_w: f64,
    /// Utilisation reachable under the cap.
    pub u_cap: f64,
    /// Thermal resistance, K/W.
    pub r_k_per_w: f64,
    /// Thermal capacity, J/K.
    pub c_j_per_k: f64,
    /// Inlet temperature, °C.
    pub inlet_c: f64,
    /// Temperature limit, °C.
    pub temp_limit_c: f64,
    /// Recovered share.
    pub recovery: f64,
    /// Loop index.
    pub heat_loop: Option<usize>,
}

impl GroupPhysics {
    /// `e^(−dt/(R·C))` for a step of `dt_s`.
    pub fn decay(&self, dt_s: f64) -> f64 {
        rc_decay(dt_s, self.r_k_per_w, self.c_j_per_k)
    }

    /// Highest power under the temperature limit, W.
    pub fn thermal_limit_w(&self) -> f64 {
        (self.temp_limit_c - self.inlet_c) / self.r_k_per_w
    }
}

/// `e^(−dt/(R·C))`.
pub fn rc_decay(dt_s: f64, r_k_per_w: f64, c_j_per_k: f64) -> f64 {
    (-dt_s / (r_k_per_w * c_j_per_k)).exp()
}

/// One exact RC step: from `temp_c` towards `steady_c` with factor `decay`.
pub fn rc_step(temp_c: f64, steady_c: f64, decay: f64) -> f64 {
    steady_c + (temp_c - steady_c) * decay
}

/// What one server did over a period.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ServerPeriod {
    /// Electrical energy, J.
    pub energy_j: f64,
    /// ∫ utilisation dt, s.
    pub util_s: f64,
    /// ∫ (batch cores served / granted) dt, s: the share of planned batch work done.
    pub batch_served_s: f64,
    /// Seconds an interactive demand was not met (cap or full server).
    pub sla_s: f64,
    /// Seconds above the temperature limit.
    pub thermal_s: f64,
    /// Highest temperature, °C.
    pub max_temp_c: f64,
    /// Power in force at the end of the period, W.
    pub last_power_w: f64,
}

/// The state of every server.
#[derive(Debug, Clone, Default)]
pub struct ServerBank {
    /// Group index per server.
    pub group: Vec<usize>,
    /// Switched on.
    pub on: Vec<bool>,
    /// Component temperature, °C.
    pub temp_c: Vec<f64>,
    /// Interactive demand at diurnal factor 1, cores.
    pub interactive_cores: Vec<f64>,
    /// Batch cores granted for the current period.
    pub batch_cores: Vec<f64>,
    /// VMs hosted.
    pub vms: Vec<u32>,
    /// Results of the last period.
    pub period: Vec<ServerPeriod>,
}

/// Inputs of one period.
#[derive(Debug, Clone, Copy)]
pub struct PeriodInput<'a> {
    /// Physics step, s.
    pub dt_s: f64,
    /// Interactive load factor at each physics step of the period.
    pub load_factor: &'a [f64],
    /// `e^(−dt/(R·C))` per group.
    pub decay: &'a [f64],
    /// Number of heat loops.
    pub loops: usize,
}

impl ServerBank {
    /// Number of servers.
    pub fn len(&self) -> usize {
        self.group.len()
    }

    /// Whether there are no servers.
    pub fn is_empty(&self) -> bool {
        self.group.is_empty()
    }

    /// Advance every server through one period. Returns, per physics step
    /// `k`, `[IT power W, recovered W of loop 0, loop 1, …]` flattened
    /// (`k·(1 + loops) + …`).
    pub fn run_period(&mut self, groups: &[GroupPhysics], inp: PeriodInput<'_>) -> Vec<f64> {
        let steps = inp.load_factor.len();
        let width = 1 + inp.loops;
        let n = self.len();
        self.period.resize(n, ServerPeriod::default());
        let group = &self.group;
        let on = &self.on;
        let ic = &self.interactive_cores;
        let bc = &self.batch_cores;
        let chunk = |(c, (temps, outs)): (usize, (&mut [f64], &mut [ServerPeriod]))| {
            let mut acc = vec![0.0; steps * width];
            let base = c * CHUNK;
            let server = |j: usize, temp: f64| {
                let s = base + j;
                ServerStep::new(
                    &groups[group[s]],
                    inp.decay[group[s]],
                    on[s],
                    ic[s],
                    bc[s],
                    temp,
                )
            };
            // Two servers side by side, so that their temperature chains
            // overlap; each row still adds the first server's power, then
            // the second's.
            let pairs = temps.len() / 2;
            for j in (0..pairs).map(|q| 2 * q) {
                let (mut a, mut b) = (server(j, temps[j]), server(j + 1, temps[j + 1]));
                for (&f, row) in inp.load_factor.iter().zip(acc.chunks_exact_mut(width)) {
                    let (pa, pb) = (a.step(f), b.step(f));
                    row[0] = row[0] + pa + pb;
                    a.recover(pa, row);
                    b.recover(pb, row);
                }
                (temps[j], outs[j]) = a.finish(inp.dt_s);
                (temps[j + 1], outs[j + 1]) = b.finish(inp.dt_s);
            }
            if temps.len() % 2 == 1 {
                let j = temps.len() - 1;
                let mut a = server(j, temps[j]);
                for (&f, row) in inp.load_factor.iter().zip(acc.chunks_exact_mut(width)) {
                    let pa = a.step(f);
                    row[0] += pa;
                    a.recover(pa, row);
                }
                (temps[j], outs[j]) = a.finish(inp.dt_s);
            }
            acc
        };
        // Small periods run on this thread: waking the pool costs more than
        // the work. The chunking, and so the order of the sums, is the same.
        let partials: Vec<Vec<f64>> = if n * steps >= PARALLEL_MIN_SERVER_STEPS {
            self.temp_c
                .par_chunks_mut(CHUNK)
                .zip(self.period.par_chunks_mut(CHUNK))
                .enumerate()
                .map(chunk)
                .collect()
        } else {
            self.temp_c
                .chunks_mut(CHUNK)
                .zip(self.period.chunks_mut(CHUNK))
                .enumerate()
                .map(chunk)
                .collect()
        };
        let mut total = vec![0.0; steps * width];
        for p in partials {
            for (t, v) in total.iter_mut().zip(p) {
                *t += v;
            }
        }
        total
    }
}

/// The lesser of two numbers (the model's are never NaN): one compare,
/// where `f64::min` also handles NaN.
fn min(a: f64, b: f64) -> f64 {
    if b < a {
        b
    } else {
        a
    }
}

/// One server through a period, a physics step at a time.
#[derive(Debug, Clone, Copy)]
struct ServerStep<'a> {
    g: &'a GroupPhysics,
    pts: &'a [f64; 11],
    decay: f64,
    on: bool,
    interactive_cores: f64,
    batch_cores: f64,
    /// Utilisation in tenths (the curve's index space) per core of demand.
    tenths_per_core: f64,
    /// Cores available under the cap.
    avail: f64,
    /// Thresholds of an interactive shortfall, capped and not.
    short_capped: f64,
    short_free: f64,
    /// Utilisation of a capped step, in tenths.
    capped_tenths: f64,
    /// Temperature above which a step is too hot.
    hot_c: f64,
    t: f64,
    max_t: f64,
    energy_w: f64,
    util_tenths: f64,
    batch_served: f64,
    sla_steps: u32,
    hot_steps: u32,
    p: f64,
}

impl<'a> ServerStep<'a> {
    fn new(
        g: &'a GroupPhysics,
        decay: f64,
        on: bool,
        interactive_cores: f64,
        batch_cores: f64,
        temp_c: f64,
    ) -> Self {
        let avail = g.u_cap * g.cores;
        Self {
            g,
            pts: g.curve.points_w(),
            decay,
            on,
            interactive_cores,
            batch_cores,
            tenths_per_core: 10.0 / g.cores,
            avail,
            short_capped: avail + 1e-9,
            short_free: g.cores + 1e-9,
            capped_tenths: g.u_cap * 10.0,
            hot_c: g.temp_limit_c + 1e-9,
            t: temp_c,
            max_t: temp_c,
            energy_w: 0.0,
            util_tenths: 0.0,
            batch_served: 0.0,
            sla_steps: 0,
            hot_steps: 0,
            p: g.off_w,
        }
    }

    /// One step at interactive load factor `f`: the power drawn, W.
    #[inline(always)]
    fn step(&mut self, f: f64) -> f64 {
        let g = self.g;
        let pts = self.pts;
        let (interactive_cores, batch_cores) = (self.interactive_cores, self.batch_cores);
        if self.on {
            let inter = interactive_cores * f;
            let x = min((inter + batch_cores) * self.tenths_per_core, 10.0);
            // 0 ≤ x ≤ 10: the segment of the curve, 0–9.
            let i = ((x as i32).min(9)) as usize;
            let p_dem = pts[i] + (x - i as f64) * (pts[i + 1] - pts[i]);
            if p_dem > g.cap_w {
                // Capped: interactive first, batch gets what is left.
                self.p = g.cap_w;
                let avail = self.avail;
                if inter > self.short_capped {
                    self.sla_steps += 1;
                }
                if batch_cores > 0.0 {
                    self.batch_served += min(avail - min(inter, avail), batch_cores) / batch_cores;
                } else {
                    self.batch_served += 1.0;
                }
                self.util_tenths += self.capped_tenths;
            } else {
                self.p = p_dem;
                if inter > self.short_free {
                    self.sla_steps += 1;
                }
                self.batch_served += if batch_cores > 0.0 {
                    min(g.cores - min(inter, g.cores), batch_cores) / batch_cores
                } else {
                    1.0
                };
                self.util_tenths += x;
            }
        }
        let p = self.p;
        let steady = g.inlet_c + g.r_k_per_w * p;
        self.t = steady + (self.t - steady) * self.decay;
        if self.t > self.hot_c {
            self.hot_steps += 1;
        }
        if self.t > self.max_t {
            self.max_t = self.t;
        }
        self.energy_w += p;
        p
    }

    /// Add the heat recovered from power `p` to its loop's entry of `row`
    /// (`[IT W, loop 0 W, …]`).
    #[inline(always)]
    fn recover(&self, p: f64, row: &mut [f64]) {
        if let Some(l) = self.g.heat_loop {
            row[1 + l] += self.g.recovery * p;
        }
    }

    /// The temperature at the end and what the server did.
    fn finish(&self, dt: f64) -> (f64, ServerPeriod) {
        (
            self.t,
            ServerPeriod {
                energy_j: self.energy_w * dt,
                util_s: self.util_tenths * 0.1 * dt,
                batch_served_s: if self.on { self.batch_served * dt } else { 0.0 },
                sla_s: f64::from(self.sla_steps) * dt,
                thermal_s: f64::from(self.hot_steps) * dt,
                max_temp_c: self.max_t,
                last_power_w: self.p,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G5: [f64; 11] = [
        93.7, 97.0, 101.0, 105.0, 110.0, 116.0, 121.0, 125.0, 129.0, 133.0, 135.0,
    ];

    fn group(cap_w: f64) -> GroupPhysics {
        let curve = PowerCurve::new(&G5).unwrap();
        GroupPhysics {
            curve,
            cores: 2.0,
            off_w: 5.0,
            cap_w,
            u_cap: curve.max_util_within(cap_w).unwrap_or(0.0),
            r_k_per_w: 0.1,
            c_j_per_k: 140.4,
            inlet_c: 24.0,
            temp_limit_c: 80.0,
            recovery: 0.85,
            heat_loop: Some(0),
        }
    }

    fn bank(on: bool, inter: f64, batch: f64) -> ServerBank {
        ServerBank {
            group: vec![0],
            on: vec![on],
            temp_c: vec![24.0],
            interactive_cores: vec![inter],
            batch_cores: vec![batch],
            vms: vec![1],
            period: vec![],
        }
    }

    /// One period of `factors.len()` steps of `dt_s` on a one-group bank.
    fn period(b: &mut ServerBank, g: &GroupPhysics, dt_s: f64, factors: &[f64]) -> Vec<f64> {
        let d = [g.decay(dt_s)];
        b.run_period(
            std::slice::from_ref(g),
            PeriodInput {
                dt_s,
                load_factor: factors,
                decay: &d,
                loops: 1,
            },
        )
    }

    #[test]
    fn power_follows_the_specpower_points() {
        // hp-ml110-g5 at 50 % load: 116 W (SPECpower_ssj2008, reference/physics.md).
        let g = group(f64::INFINITY);
        let mut b = bank(true, 1.0, 0.0);
        let totals = period(&mut b, &g, 60.0, &[1.0]);
        assert!((totals[0] - 116.0).abs() < 1e-9);
        assert!((totals[1] - 0.85 * 116.0).abs() < 1e-9);
        assert!((b.period[0].energy_j - 116.0 * 60.0).abs() < 1e-9);
    }

    #[test]
    fn rc_step_response_matches_the_analytic_exponential() {
        // HotSpot heat sink: R = 0.1 K/W, C = 140.4 J/K, τ = 14.04 s.
        let g = group(f64::INFINITY);
        let mut b = bank(true, 2.0, 0.0); // full load: 135 W
        let dt = 1.0;
        let steps = vec![1.0; 30];
        period(&mut b, &g, dt, &steps);
        let t = 30.0;
        let analytic = 24.0 + 0.1 * 135.0 * (1.0 - (-t / (0.1 * 140.4_f64)).exp());
        assert!(
            (b.temp_c[0] - analytic).abs() < 1e-9,
            "{} vs {analytic}",
            b.temp_c[0]
        );
        // The same 30 s in one step lands on the same value: the step is exact.
        let mut one = bank(true, 2.0, 0.0);
        period(&mut one, &g, 30.0, &[1.0]);
        assert!((one.temp_c[0] - analytic).abs() < 1e-9);
    }

    #[test]
    fn a_cap_slows_batch_work_and_flags_interactive_shortfall() {
        // Cap at 110 W = 40 % load of the g5 curve.
        let g = group(110.0);
        let mut b = bank(true, 0.2, 1.8);
        period(&mut b, &g, 60.0, &[1.0]);
        let p = b.period[0];
        assert!((p.last_power_w - 110.0).abs() < 1e-9);
        assert_eq!(p.sla_s, 0.0);
        // 0.8 cores available, 0.2 interactive, 0.6 of 1.8 batch cores served.
        assert!((p.batch_served_s - 60.0 / 3.0).abs() < 1e-9);
        let mut b = bank(true, 1.5, 0.0);
        period(&mut b, &g, 60.0, &[1.0]);
        assert_eq!(b.period[0].sla_s, 60.0);
    }

    #[test]
    fn an_off_server_draws_its_standby_power() {
        let g = group(f64::INFINITY);
        let mut b = bank(false, 1.0, 1.0);
        let totals = period(&mut b, &g, 60.0, &[1.0, 1.0]);
        assert_eq!(totals[0], 5.0);
        assert_eq!(b.period[0].util_s, 0.0);
    }
}
