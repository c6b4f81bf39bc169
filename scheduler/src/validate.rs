//! Snapshot parsing, validation and infeasibility diagnostics.
//!
//! Three gates a snapshot passes before any solver sees it:
//! - [`parse`]: JSON into a [`Snapshot`]; malformed JSON, missing fields,
//!   wrong types, unknown fields and numbers JSON cannot hold are
//!   [`PlanError::Parse`] naming the path (`servers[3].mem_gib`).
//! - [`validate`] (all problems: [`problems`]): every field value the model
//!   cannot accept is [`PlanError::Invalid`] naming the path and the problem.
//!   NaN and infinities cannot come from JSON but can from library callers,
//!   so every number is checked.
//! - [`check_feasible`] (all findings: [`infeasibilities`]): rules that no
//!   plan can meet, proven from the snapshot alone, are
//!   [`PlanError::Infeasible`] naming the servers, VMs and numbers. Only what
//!   is provably infeasible is reported; everything else is the solver's job.
//!
//! The rules, their messages and the reasons behind them are documented for
//! users in `docs/snapshot.md`.

use std::collections::HashMap;

use crate::error::PlanError;
use crate::instance::{Instance, EPS};
use crate::model::{Snapshot, VmKind, CURVE_POINTS, SNAPSHOT_SCHEMA};

/// Most steps a horizon may have: a week of 5-minute steps.
pub const MAX_STEPS: usize = 2016;

/// Parse JSON into a [`Snapshot`], reporting the path of a bad field.
pub fn parse(json: &str) -> Result<Snapshot, PlanError> {
    let mut de = serde_json::Deserializer::from_str(json);
    let snap = serde_path_to_error::deserialize(&mut de).map_err(|e| PlanError::Parse {
        path: e.path().to_string(),
        message: e.inner().to_string(),
    })?;
    // Anything after the snapshot (a second document, a stray brace) is an
    // error too, not silently ignored.
    de.end().map_err(|e| PlanError::Parse {
        path: ".".into(),
        message: e.to_string(),
    })?;
    Ok(snap)
}

/// Check every field for values the model cannot accept; the first problem
/// found (in document order) is the error. [`problems`] lists them all.
pub fn validate(snap: &Snapshot) -> Result<(), PlanError> {
    match problems(snap).into_iter().next() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Every invalid field of `snap`, in document order, each a
/// [`PlanError::Invalid`]; empty for a valid snapshot.
pub fn problems(snap: &Snapshot) -> Vec<PlanError> {
    let mut c = Checks::default();
    c.top(snap);
    // Servers refer to loops, so loops are read first; their problems are
    // listed where the loops are in the document.
    let mut loop_checks = Checks::default();
    let loops = loop_checks.loops(snap);
    let servers = c.servers(snap, &loops);
    c.vms(snap, &servers);
    c.images(snap);
    c.out.append(&mut loop_checks.out);
    c.policy(snap);
    c.out
}

/// Collects problems; field paths are only formatted on failure.
#[derive(Default)]
struct Checks {
    out: Vec<PlanError>,
}

impl Checks {
    fn fail(&mut self, prefix: &str, name: &str, problem: String) {
        let field = if prefix.is_empty() {
            name.to_string()
        } else if name.starts_with('[') {
            format!("{prefix}{name}")
        } else {
            format!("{prefix}.{name}")
        };
        self.out.push(PlanError::invalid(field, problem));
    }

    fn finite(&mut self, p: &str, name: &str, v: f64) -> bool {
        let ok = v.is_finite();
        if !ok {
            self.fail(p, name, format!("must be a finite number, got {v}"));
        }
        ok
    }

    fn non_negative(&mut self, p: &str, name: &str, v: f64) {
        if !(v.is_finite() && v >= 0.0) {
            self.fail(p, name, format!("must be a finite number ≥ 0, got {v}"));
        }
    }

    fn positive(&mut self, p: &str, name: &str, v: f64) {
        if !(v.is_finite() && v > 0.0) {
            self.fail(p, name, format!("must be a finite number > 0, got {v}"));
        }
    }

    fn share(&mut self, p: &str, name: &str, v: f64) {
        if !(0.0..=1.0).contains(&v) {
            self.fail(p, name, format!("must be between 0 and 1, got {v}"));
        }
    }

    /// Non-empty, unique ids; returns id → index of first occurrence.
    fn ids<'a>(
        &mut self,
        list: &str,
        ids: impl Iterator<Item = &'a str>,
    ) -> HashMap<&'a str, usize> {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, id) in ids.enumerate() {
            let p = format!("{list}[{i}]");
            if id.is_empty() {
                self.fail(&p, "id", "must not be empty".into());
            } else if let Some(first) = seen.get(id) {
                self.fail(
                    &p,
                    "id",
                    format!("duplicate id `{id}` (also {list}[{first}])"),
                );
            } else {
                seen.insert(id, i);
            }
        }
        seen
    }

    fn top(&mut self, snap: &Snapshot) {
        if snap.schema != SNAPSHOT_SCHEMA {
            self.fail(
                "",
                "schema",
                format!(
                    "`{}` is not a supported schema (expected `{SNAPSHOT_SCHEMA}`)",
                    snap.schema
                ),
            );
        }
        self.positive("", "step_s", snap.step_s);
        if snap.steps == 0 || snap.steps > MAX_STEPS {
            self.fail(
                "",
                "steps",
                format!("must be between 1 and {MAX_STEPS}, got {}", snap.steps),
            );
        }
        let prices = &snap.electricity_price_per_kwh;
        if prices.len() != snap.steps {
            self.fail(
                "",
                "electricity_price_per_kwh",
                format!(
                    "has {} values, expected one per step ({})",
                    prices.len(),
                    snap.steps
                ),
            );
        }
        for (t, &p) in prices.iter().enumerate() {
            // Negative prices happen in real markets and are legal.
            self.finite("electricity_price_per_kwh", &format!("[{t}]"), p);
        }
        if snap.servers.is_empty() {
            self.fail("", "servers", "at least one server is needed".into());
        }
    }

    fn loops<'a>(&mut self, snap: &'a Snapshot) -> HashMap<&'a str, usize> {
        let ids = self.ids("loops", snap.loops.iter().map(|l| l.id.as_str()));
        for (i, l) in snap.loops.iter().enumerate() {
            let p = format!("loops[{i}]");
            if l.demand_kw.len() != snap.steps {
                self.fail(
                    &p,
                    "demand_kw",
                    format!(
                        "has {} values, expected one per step ({})",
                        l.demand_kw.len(),
                        snap.steps
                    ),
                );
            }
            let dp = format!("{p}.demand_kw");
            for (t, &d) in l.demand_kw.iter().enumerate() {
                self.non_negative(&dp, &format!("[{t}]"), d);
            }
            self.non_negative(&p, "heat_value_per_kwh", l.heat_value_per_kwh);
            self.non_negative(&p, "max_kw", l.max_kw);
        }
        ids
    }

    fn servers<'a>(
        &mut self,
        snap: &'a Snapshot,
        loops: &HashMap<&str, usize>,
    ) -> HashMap<&'a str, usize> {
        let ids = self.ids("servers", snap.servers.iter().map(|s| s.id.as_str()));
        for (i, s) in snap.servers.iter().enumerate() {
            let p = format!("servers[{i}]");
            if s.cores == 0 {
                self.fail(&p, "cores", "must be at least 1, got 0".into());
            }
            self.positive(&p, "mem_gib", s.mem_gib);
            self.curve(&p, &s.power_curve_w);
            self.non_negative(&p, "off_w", s.off_w);
            self.finite(&p, "inlet_c", s.inlet_c);
            self.finite(&p, "temp_limit_c", s.temp_limit_c);
            self.non_negative(&p, "r_k_per_w", s.r_k_per_w);
            self.share(&p, "recovery", s.recovery);
            if let Some(l) = &s.heat_loop {
                if !loops.contains_key(l.as_str()) {
                    self.fail(&p, "loop", format!("unknown loop `{l}`{}", known(loops)));
                }
            }
        }
        ids
    }

    fn curve(&mut self, p: &str, points: &[f64]) {
        const WHAT: &str = "curve not 11 increasing-in-u points";
        if points.len() != CURVE_POINTS {
            self.fail(
                p,
                "power_curve_w",
                format!(
                    "{WHAT}: got {} points (power in W at u = 0, 0.1, …, 1.0)",
                    points.len()
                ),
            );
            return;
        }
        let cp = format!("{p}.power_curve_w");
        let before = self.out.len();
        for (k, &w) in points.iter().enumerate() {
            self.non_negative(&cp, &format!("[{k}]"), w);
        }
        if self.out.len() > before {
            return;
        }
        if let Some(k) = (1..CURVE_POINTS).find(|&k| points[k] < points[k - 1]) {
            self.fail(
                p,
                "power_curve_w",
                format!(
                    "{WHAT}: P({}) = {} W is below P({}) = {} W",
                    k as f64 / 10.0,
                    points[k],
                    (k - 1) as f64 / 10.0,
                    points[k - 1]
                ),
            );
        }
    }

    fn vms(&mut self, snap: &Snapshot, servers: &HashMap<&str, usize>) {
        self.ids("vms", snap.vms.iter().map(|v| v.id.as_str()));
        for (i, v) in snap.vms.iter().enumerate() {
            let p = format!("vms[{i}]");
            if v.vcpus == 0 {
                self.fail(&p, "vcpus", "must be at least 1, got 0".into());
            }
            self.non_negative(&p, "mem_gib", v.mem_gib);
            if let Some(h) = &v.host {
                match servers.get(h.as_str()) {
                    None => self.fail(&p, "host", format!("unknown server `{h}`")),
                    Some(&s) if !snap.servers[s].on => self.fail(
                        &p,
                        "host",
                        format!(
                            "server `{h}` is off, so it cannot be the VM's current host \
                             (use null for a VM that is not placed)"
                        ),
                    ),
                    Some(_) => {}
                }
            }
            match v.kind {
                VmKind::Interactive => {
                    match v.load {
                        None => self.fail(&p, "load", "an interactive VM needs `load`".into()),
                        Some(l) => self.share(&p, "load", l),
                    }
                    if v.work_core_h.is_some() {
                        self.fail(
                            &p,
                            "work_core_h",
                            "only batch VMs have remaining work".into(),
                        );
                    }
                    if v.deadline.is_some() {
                        self.fail(&p, "deadline", "only batch VMs have a deadline".into());
                    }
                }
                VmKind::Batch => {
                    match v.work_core_h {
                        None => {
                            self.fail(&p, "work_core_h", "a batch VM needs `work_core_h`".into())
                        }
                        Some(w) => self.non_negative(&p, "work_core_h", w),
                    }
                    if v.deadline.is_none() {
                        self.fail(&p, "deadline", "a batch VM needs a `deadline`".into());
                    }
                    if v.load.is_some() {
                        self.fail(&p, "load", "only interactive VMs have a fixed load".into());
                    }
                }
            }
        }
    }

    fn images(&mut self, snap: &Snapshot) {
        self.ids("images", snap.images.iter().map(|im| im.id.as_str()));
        for (i, im) in snap.images.iter().enumerate() {
            let p = format!("images[{i}]");
            let before = self.out.len();
            self.non_negative(&p, "shared_mem_gib", im.shared_mem_gib);
            if self.out.len() > before {
                continue;
            }
            // The shared part is part of each VM's memory: it cannot be larger.
            let smallest = snap
                .vms
                .iter()
                .enumerate()
                .filter(|(_, v)| v.image.as_deref() == Some(im.id.as_str()))
                // A VM with a bad size is reported on its own.
                .filter(|(_, v)| v.mem_gib.is_finite() && v.mem_gib >= 0.0)
                .min_by(|a, b| a.1.mem_gib.total_cmp(&b.1.mem_gib));
            if let Some((j, v)) = smallest {
                if im.shared_mem_gib > v.mem_gib {
                    self.fail(
                        &p,
                        "shared_mem_gib",
                        format!(
                            "{} GiB shared is more than the {} GiB of vm `{}` (vms[{j}]), which uses this image",
                            im.shared_mem_gib, v.mem_gib, v.id
                        ),
                    );
                }
            }
        }
    }

    fn policy(&mut self, snap: &Snapshot) {
        let pol = &snap.policy;
        self.positive("policy", "cpu_overcommit", pol.cpu_overcommit);
        self.non_negative("policy", "migration_cost", pol.migration_cost);
        self.non_negative("policy", "switch_cost", pol.switch_cost);
    }
}

/// ` (known: a, b, c)` for an unknown-id message, at most 5 names.
fn known(ids: &HashMap<&str, usize>) -> String {
    if ids.is_empty() {
        return " (the snapshot lists no loops)".into();
    }
    let mut names: Vec<(&usize, &&str)> = ids.iter().map(|(k, v)| (v, k)).collect();
    names.sort();
    let shown: Vec<&str> = names.iter().take(5).map(|(_, k)| **k).collect();
    let more = if names.len() > 5 { ", …" } else { "" };
    format!(" (known: {}{more})", shown.join(", "))
}

/// Report the first rule no plan can meet; [`infeasibilities`] lists them all.
pub fn check_feasible(inst: &Instance<'_>) -> Result<(), PlanError> {
    match infeasibilities(inst).into_iter().next() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Every rule that no plan of `inst` can meet, each a
/// [`PlanError::Infeasible`] naming servers, VMs and numbers. The instance
/// must come from a validated snapshot.
pub fn infeasibilities(inst: &Instance<'_>) -> Vec<PlanError> {
    let f = Feasibility::new(inst);
    let mut out = Vec::new();
    f.servers_that_must_stay_on(&mut out);
    f.pinned_vms(&mut out);
    f.each_vm_fits_somewhere(&mut out);
    f.batch_work(&mut out);
    f.forced_migrations(&mut out);
    f.totals(&mut out);
    out
}

/// A number for a message: at most two decimals, trailing zeros trimmed.
fn num(x: f64) -> String {
    let s = format!("{x:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.to_string()
    }
}

/// Ids of a list of VMs for a message, at most 5 then a count.
fn vm_list(inst: &Instance<'_>, vms: &[usize]) -> String {
    let shown: Vec<&str> = vms
        .iter()
        .take(5)
        .map(|&v| inst.snap.vms[v].id.as_str())
        .collect();
    let more = vms.len().saturating_sub(5);
    let mut out = shown.join(", ");
    if more > 0 {
        out.push_str(&format!(" and {more} more"));
    }
    out
}

/// Facts derived once for the feasibility checks.
struct Feasibility<'i, 'a> {
    inst: &'i Instance<'a>,
    /// Whether each server can be on in some plan (on or switchable, and its
    /// idle power within its temperature limit).
    usable: Vec<bool>,
    /// Non-migratable VMs on each server (they stay there in every plan).
    pinned: Vec<Vec<usize>>,
    /// Cores each server can run under its temperature limit (0 if unusable).
    cap_cores: Vec<f64>,
    /// Cores left for batch work beside the pinned interactive load.
    room: Vec<f64>,
    /// Servers that can run, most `room` first.
    by_room: Vec<usize>,
}

impl<'i, 'a> Feasibility<'i, 'a> {
    fn new(inst: &'i Instance<'a>) -> Self {
        let snap = inst.snap;
        let usable: Vec<bool> = snap
            .servers
            .iter()
            .enumerate()
            .map(|(s, srv)| (srv.on || srv.can_switch) && inst.u_max[s].is_some())
            .collect();
        let mut pinned = vec![Vec::new(); inst.n_servers()];
        for (v, vm) in snap.vms.iter().enumerate() {
            if let (false, Some(s)) = (vm.migratable, inst.vm_host[v]) {
                pinned[s].push(v);
            }
        }
        let cap_cores: Vec<f64> = snap
            .servers
            .iter()
            .enumerate()
            .map(|(s, srv)| inst.u_max[s].unwrap_or(0.0) * f64::from(srv.cores))
            .collect();
        let mut f = Self {
            inst,
            usable,
            pinned,
            cap_cores,
            room: Vec::new(),
            by_room: Vec::new(),
        };
        f.room = (0..inst.n_servers())
            .map(|s| f.cap_cores[s] - f.pinned_load(s))
            .collect();
        f.by_room = (0..inst.n_servers()).filter(|&s| f.usable[s]).collect();
        f.by_room
            .sort_by(|&a, &b| f.room[b].total_cmp(&f.room[a]).then(a.cmp(&b)));
        f
    }

    fn vcpu_cap(&self, s: usize) -> f64 {
        f64::from(self.inst.snap.servers[s].cores) * self.inst.snap.policy.cpu_overcommit
    }

    /// Interactive load (cores) of the non-migratable VMs on `s`.
    fn pinned_load(&self, s: usize) -> f64 {
        self.pinned[s]
            .iter()
            .map(|&v| self.inst.vm_fixed_cores[v])
            .sum()
    }

    /// Memory the VMs `vms` need together on one host, after image sharing.
    fn mem_together(&self, vms: &[usize]) -> f64 {
        let mut per_image: HashMap<usize, usize> = HashMap::new();
        let mut mem = 0.0;
        for &v in vms {
            mem += self.inst.snap.vms[v].mem_gib;
            if let Some(i) = self.inst.vm_image[v] {
                *per_image.entry(i).or_default() += 1;
            }
        }
        for (i, n) in per_image {
            mem -= (n as f64 - 1.0) * self.inst.snap.images[i].shared_mem_gib;
        }
        mem
    }

    fn idle_temp_c(&self, s: usize) -> f64 {
        let srv = &self.inst.snap.servers[s];
        srv.inlet_c + srv.r_k_per_w * self.inst.curve[s].idle_w()
    }

    /// A server that must stay on but whose idle power breaks its limit.
    fn servers_that_must_stay_on(&self, out: &mut Vec<PlanError>) {
        for (s, srv) in self.inst.snap.servers.iter().enumerate() {
            if self.inst.u_max[s].is_some() {
                continue;
            }
            let why = if srv.on && !srv.can_switch {
                "(cannot switch)".to_string()
            } else if !self.pinned[s].is_empty() {
                format!(
                    "(it hosts non-migratable vm {})",
                    vm_list(self.inst, &self.pinned[s])
                )
            } else {
                continue;
            };
            out.push(PlanError::infeasible(format!(
                "server {}: idle power {} W already gives {} °C, above its limit {} °C, and it must stay on {why}",
                srv.id,
                num(self.inst.curve[s].idle_w()),
                num(self.idle_temp_c(s)),
                num(srv.temp_limit_c),
            )));
        }
    }

    /// Non-migratable VMs whose current host cannot hold them all.
    fn pinned_vms(&self, out: &mut Vec<PlanError>) {
        let snap = self.inst.snap;
        for (s, vms) in self.pinned.iter().enumerate() {
            if vms.is_empty() {
                continue;
            }
            let srv = &snap.servers[s];
            let list = vm_list(self.inst, vms);
            let what = if vms.len() == 1 {
                format!("non-migratable vm {list}")
            } else {
                format!("non-migratable vms {list}")
            };
            let vcpus: f64 = vms.iter().map(|&v| f64::from(snap.vms[v].vcpus)).sum();
            if vcpus > self.vcpu_cap(s) + EPS {
                out.push(PlanError::infeasible(format!(
                    "server {}: {what} need {} vCPUs, more than its {} cores × overcommit {}",
                    srv.id,
                    num(vcpus),
                    srv.cores,
                    num(snap.policy.cpu_overcommit)
                )));
            }
            let mem = self.mem_together(vms);
            if mem > srv.mem_gib * (1.0 + EPS) {
                out.push(PlanError::infeasible(format!(
                    "server {}: {what} need {} GiB of memory (after image sharing), more than its {} GiB",
                    srv.id,
                    num(mem),
                    num(srv.mem_gib)
                )));
            }
            let load = self.pinned_load(s);
            if self.inst.u_max[s].is_some() && load > self.cap_cores[s] + EPS {
                out.push(PlanError::infeasible(format!(
                    "server {}: {what} run an interactive load of {} cores, more than the {} cores it can run under its temperature limit {} °C",
                    srv.id,
                    num(load),
                    num(self.cap_cores[s]),
                    num(srv.temp_limit_c)
                )));
            }
        }
    }

    /// A movable (or pending) VM that fits no server that can be on.
    fn each_vm_fits_somewhere(&self, out: &mut Vec<PlanError>) {
        let snap = self.inst.snap;
        let usable: Vec<usize> = (0..self.inst.n_servers())
            .filter(|&s| self.usable[s])
            .collect();
        if usable.is_empty() {
            if !snap.vms.is_empty() {
                out.push(PlanError::infeasible(
                    "no server can run: each is off and cannot switch, or its idle power \
                     already breaks its temperature limit",
                ));
            }
            return;
        }
        let largest_cores = usable
            .iter()
            .map(|&s| snap.servers[s].cores)
            .max()
            .unwrap_or(0);
        let largest_mem = usable
            .iter()
            .map(|&s| snap.servers[s].mem_gib)
            .fold(0.0, f64::max);
        let coolest = usable
            .iter()
            .copied()
            .max_by(|&a, &b| self.cap_cores[a].total_cmp(&self.cap_cores[b]));
        for (v, vm) in snap.vms.iter().enumerate() {
            if !vm.migratable && self.inst.vm_host[v].is_some() {
                continue; // pinned: checked on its host
            }
            let vcpus = f64::from(vm.vcpus);
            let fixed = self.inst.vm_fixed_cores[v];
            let fits_cpu = |s: usize| vcpus <= self.vcpu_cap(s) + EPS;
            let fits_mem = |s: usize| vm.mem_gib <= snap.servers[s].mem_gib * (1.0 + EPS);
            let fits_heat = |s: usize| fixed <= self.cap_cores[s] + EPS;
            if usable
                .iter()
                .any(|&s| fits_cpu(s) && fits_mem(s) && fits_heat(s))
            {
                continue;
            }
            let reason = if !usable.iter().any(|&s| fits_cpu(s)) {
                format!(
                    "vm {} ({} vCPUs) fits no server (largest: {largest_cores} cores × overcommit {})",
                    vm.id,
                    vm.vcpus,
                    num(snap.policy.cpu_overcommit)
                )
            } else if !usable.iter().any(|&s| fits_mem(s)) {
                format!(
                    "vm {} ({} GiB) fits no server (largest: {} GiB)",
                    vm.id,
                    num(vm.mem_gib),
                    num(largest_mem)
                )
            } else if !usable.iter().any(|&s| fits_heat(s)) {
                let (best, best_id) = match coolest {
                    Some(s) => (self.cap_cores[s], snap.servers[s].id.as_str()),
                    None => (0.0, "-"),
                };
                format!(
                    "vm {} (load {} × {} vCPUs = {} cores) fits no server under its temperature limit (most: {} cores on {best_id})",
                    vm.id,
                    num(vm.load.unwrap_or(0.0)),
                    vm.vcpus,
                    num(fixed),
                    num(best)
                )
            } else {
                format!(
                    "vm {} ({} vCPUs, {} GiB, load {} cores) fits no server: none offers the vCPUs, memory and temperature headroom together",
                    vm.id,
                    vm.vcpus,
                    num(vm.mem_gib),
                    num(fixed)
                )
            };
            out.push(PlanError::infeasible(reason));
        }
    }

    /// Batch VMs that cannot do their required work by the deadline even
    /// alone at the best rate any server they may run on allows.
    fn batch_work(&self, out: &mut Vec<PlanError>) {
        let snap = self.inst.snap;
        for (v, vm) in snap.vms.iter().enumerate() {
            if !self.inst.is_batch(v) {
                continue;
            }
            let need = self.inst.batch_min_core_h[v];
            if need <= EPS {
                continue;
            }
            let vcpus = f64::from(vm.vcpus);
            // Best rate: its vCPUs, or what the temperature limit leaves
            // beside the interactive load pinned to the server; the first
            // server it fits in order of room gives the most.
            let fits = |s: usize| {
                vcpus <= self.vcpu_cap(s) + EPS
                    && vm.mem_gib <= snap.servers[s].mem_gib * (1.0 + EPS)
            };
            let best_room = match (vm.migratable, self.inst.vm_host[v]) {
                (false, Some(s)) => Some(self.room[s]),
                _ => self
                    .by_room
                    .iter()
                    .find(|&&s| fits(s))
                    .map(|&s| self.room[s]),
            };
            let Some(room) = best_room else {
                continue; // it fits no server: reported on its own
            };
            let rate = room.max(0.0).min(vcpus);
            let hours = self.inst.batch_steps[v] as f64 * self.inst.step_h();
            let can = rate * hours;
            if need <= can * (1.0 + EPS) + EPS {
                continue;
            }
            let by = if need + EPS < self.inst.batch_max_core_h[v] {
                format!(
                    "within the horizon (its pro-rata share of {} core-h due {})",
                    num(self.inst.batch_max_core_h[v]),
                    vm.deadline.map(|d| d.to_rfc3339()).unwrap_or_default()
                )
            } else {
                "by its deadline".to_string()
            };
            let limit = if rate + EPS >= vcpus {
                format!("{} vCPUs × {} h", vm.vcpus, num(hours))
            } else {
                format!(
                    "{} cores under the temperature limit of the best server it can run on × {} h",
                    num(rate),
                    num(hours)
                )
            };
            out.push(PlanError::infeasible(format!(
                "batch vm {} needs {} core-h {by} but can do at most {} ({limit})",
                vm.id,
                num(need),
                num(can)
            )));
        }
    }

    /// More VMs must leave their hosts than the policy lets migrate.
    fn forced_migrations(&self, out: &mut Vec<PlanError>) {
        let snap = self.inst.snap;
        let forced: Vec<usize> = (0..self.inst.n_vms())
            .filter(|&v| snap.vms[v].migratable)
            .filter(|&v| {
                let Some(s) = self.inst.vm_host[v] else {
                    return false;
                };
                let vm = &snap.vms[v];
                !self.usable[s]
                    || f64::from(vm.vcpus) > self.vcpu_cap(s) + EPS
                    || vm.mem_gib > snap.servers[s].mem_gib * (1.0 + EPS)
                    || self.inst.vm_fixed_cores[v] > self.cap_cores[s] + EPS
            })
            .collect();
        let allowed = snap.policy.max_migrations;
        if forced.len() > allowed {
            out.push(PlanError::infeasible(format!(
                "{} vms must leave hosts that cannot hold them ({}), but the policy allows at most {allowed} migrations",
                forced.len(),
                vm_list(self.inst, &forced)
            )));
        }
    }

    /// Total vCPUs, memory and interactive load above what every server
    /// that can be on offers together.
    fn totals(&self, out: &mut Vec<PlanError>) {
        let snap = self.inst.snap;
        if snap.vms.is_empty() {
            return;
        }
        let usable: Vec<usize> = (0..self.inst.n_servers())
            .filter(|&s| self.usable[s])
            .collect();
        if usable.is_empty() {
            return; // reported per VM
        }
        let need_vcpus: f64 = snap.vms.iter().map(|v| f64::from(v.vcpus)).sum();
        let have_vcpus: f64 = usable.iter().map(|&s| self.vcpu_cap(s)).sum();
        if need_vcpus > have_vcpus + EPS {
            out.push(PlanError::infeasible(format!(
                "the vms need {} vCPUs in all, but the servers that can run offer {} (cores × overcommit {})",
                num(need_vcpus),
                num(have_vcpus),
                num(snap.policy.cpu_overcommit)
            )));
        }
        let all: Vec<usize> = (0..self.inst.n_vms()).collect();
        // Least memory the VMs can need: each image's VMs together on one host.
        let need_mem = self.mem_together(&all);
        let have_mem: f64 = usable.iter().map(|&s| snap.servers[s].mem_gib).sum();
        if need_mem > have_mem * (1.0 + EPS) {
            out.push(PlanError::infeasible(format!(
                "the vms need at least {} GiB of memory in all (after image sharing), but the servers that can run have {} GiB",
                num(need_mem),
                num(have_mem)
            )));
        }
        let need_load: f64 = self.inst.vm_fixed_cores.iter().sum();
        let have_load: f64 = usable.iter().map(|&s| self.cap_cores[s]).sum();
        if need_load > have_load + EPS {
            out.push(PlanError::infeasible(format!(
                "the interactive vms run {} cores of load in all, but the servers that can run allow {} cores under their temperature limits",
                num(need_load),
                num(have_load)
            )));
        }
    }
}
