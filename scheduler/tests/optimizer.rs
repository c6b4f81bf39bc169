//! The optimiser's contract: feasible plans, no worse than the baseline, a
//! valid lower bound, determinism, the time limit, and the economics of
//! DESIGN.md §2 in targeted scenarios.

use std::time::{Duration, Instant};

use phoenix_scheduler::evaluate::{evaluate, Decisions};
use phoenix_scheduler::generate::{generate, SiteSpec};
use phoenix_scheduler::model::{HeatLoop, Policy, Server, Snapshot, Vm, VmKind, SNAPSHOT_SCHEMA};
use phoenix_scheduler::{greedy, optimizer, Instance, PlanError};

fn solve(snap: &Snapshot) -> (Decisions, Option<f64>, f64) {
    let inst = Instance::new(snap).expect("valid snapshot");
    let out = optimizer::decide(&inst, None).expect("optimizer plan");
    let ev = evaluate(&inst, &out.decisions);
    assert!(ev.is_feasible(), "violations: {:?}", ev.violations);
    (out.decisions, out.lower_bound, ev.objective.cost)
}

#[test]
fn plans_on_generated_sites_are_feasible_bounded_and_no_worse_than_greedy() {
    let mut sites: Vec<Snapshot> = (2..=6).map(|s| generate(&SiteSpec::small(s))).collect();
    sites.push(generate(&SiteSpec::medium(1)));
    sites.push(generate(&SiteSpec::medium(2)));
    for snap in &sites {
        let (_, bound, cost) = solve(snap);
        let bound = bound.expect("a lower bound");
        assert!(
            bound <= cost + 1e-9,
            "{}: bound {bound} above cost {cost}",
            snap.site
        );
        let inst = Instance::new(snap).unwrap();
        let g = evaluate(&inst, &greedy::decide(&inst).unwrap());
        if g.is_feasible() {
            assert!(
                cost <= g.objective.cost + 1e-9,
                "{}: optimizer {cost} worse than greedy {}",
                snap.site,
                g.objective.cost
            );
        }
    }
}

#[test]
fn same_input_gives_the_same_plan() {
    let snap = generate(&SiteSpec::small(3));
    let (a, la, ca) = solve(&snap);
    let (b, lb, cb) = solve(&snap);
    assert_eq!(a, b);
    assert_eq!(ca.to_bits(), cb.to_bits());
    assert_eq!(la.map(f64::to_bits), lb.map(f64::to_bits));
}

#[test]
fn a_passed_deadline_still_returns_a_feasible_plan() {
    let snap = generate(&SiteSpec::medium(1));
    let inst = Instance::new(&snap).unwrap();
    let out = optimizer::decide(&inst, Some(Instant::now() - Duration::from_millis(1)))
        .expect("a plan even with no time left");
    assert!(evaluate(&inst, &out.decisions).is_feasible());
}

fn server(id: &str, on: bool, curve: [f64; 11]) -> Server {
    Server {
        id: id.into(),
        cores: 8,
        mem_gib: 64.0,
        power_curve_w: curve.to_vec(),
        off_w: 4.0,
        on,
        can_switch: true,
        inlet_c: 22.0,
        r_k_per_w: 0.1,
        temp_limit_c: 80.0,
        heat_loop: Some("gh".into()),
        recovery: 0.9,
    }
}

const EFFICIENT: [f64; 11] = [
    40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0, 110.0, 120.0, 130.0, 140.0,
];
const OLD: [f64; 11] = [
    90.0, 96.0, 102.0, 108.0, 114.0, 120.0, 126.0, 132.0, 138.0, 144.0, 150.0,
];

fn vm(id: &str, host: Option<&str>, load: f64) -> Vm {
    Vm {
        id: id.into(),
        vcpus: 2,
        mem_gib: 4.0,
        image: None,
        host: host.map(Into::into),
        kind: VmKind::Interactive,
        load: Some(load),
        work_core_h: None,
        deadline: None,
        migratable: true,
    }
}

fn site(
    servers: Vec<Server>,
    vms: Vec<Vm>,
    prices: Vec<f64>,
    heat_value: f64,
    demand_kw: f64,
) -> Snapshot {
    let steps = prices.len();
    Snapshot {
        schema: SNAPSHOT_SCHEMA.into(),
        site: "t".into(),
        time: "2026-01-15T00:00:00Z".parse().unwrap(),
        step_s: 3600.0,
        steps,
        electricity_price_per_kwh: prices,
        servers,
        vms,
        images: vec![],
        loops: vec![HeatLoop {
            id: "gh".into(),
            demand_kw: vec![demand_kw; steps],
            heat_value_per_kwh: heat_value,
            max_kw: 100.0,
        }],
        policy: Policy {
            max_migrations: 10,
            migration_cost: 0.001,
            switch_cost: 0.001,
            cpu_overcommit: 1.0,
        },
    }
}

#[test]
fn expensive_power_and_cheap_heat_consolidate_and_switch_off() {
    let snap = site(
        vec![server("a", true, EFFICIENT), server("b", true, OLD)],
        vec![vm("v1", Some("a"), 0.3), vm("v2", Some("b"), 0.3)],
        vec![0.4; 4],
        0.01,
        10.0,
    );
    let (d, _, _) = solve(&snap);
    assert_eq!(d.on, vec![true, false], "the old server is switched off");
    assert_eq!(d.host, vec![0, 0]);
}

#[test]
fn a_migration_budget_of_zero_moves_nothing() {
    let mut snap = site(
        vec![server("a", true, EFFICIENT), server("b", true, OLD)],
        vec![vm("v1", Some("a"), 0.3), vm("v2", Some("b"), 0.3)],
        vec![0.4; 4],
        0.01,
        10.0,
    );
    snap.policy.max_migrations = 0;
    let (d, _, _) = solve(&snap);
    assert_eq!(d.host, vec![0, 1]);
    assert_eq!(d.on, vec![true, true]);
}

#[test]
fn pinned_vms_and_unswitchable_servers_stay_put() {
    let mut snap = site(
        vec![
            server("a", true, EFFICIENT),
            server("b", true, OLD),
            server("c", true, OLD),
        ],
        vec![vm("v1", Some("a"), 0.3), vm("v2", Some("b"), 0.3)],
        vec![0.4; 4],
        0.01,
        10.0,
    );
    snap.vms[1].migratable = false;
    snap.servers[2].can_switch = false;
    let (d, _, _) = solve(&snap);
    assert_eq!(d.host[1], 1, "the pinned VM stays on b");
    assert!(d.on[1] && d.on[2], "b hosts a pinned VM; c cannot switch");
}

#[test]
fn cheap_night_power_and_valuable_heat_pull_batch_work_into_the_night() {
    let mut batch = vm("b1", Some("a"), 0.0);
    batch.kind = VmKind::Batch;
    batch.load = None;
    batch.vcpus = 4;
    batch.work_core_h = Some(8.0);
    batch.deadline = Some("2026-01-15T04:00:00Z".parse().unwrap());
    // Night (steps 2, 3) is cheap; heat is worth more than night power.
    let snap = site(
        vec![server("a", true, EFFICIENT)],
        vec![batch],
        vec![0.30, 0.30, 0.05, 0.05],
        0.2,
        10.0,
    );
    let (d, _, _) = solve(&snap);
    let cores = &d.batch_cores[0];
    assert!(cores[2] > 3.99 && cores[3] > 3.99, "{cores:?}");
    assert!(cores[0] + cores[1] < 1e-6, "{cores:?}");
}

#[test]
fn a_hot_servers_excess_batch_work_is_moved_within_budget() {
    let mut hot = server("hot", true, EFFICIENT);
    // Limit 80 °C at 50 °C inlet and 0.5 K/W: at most 60 W, u ≤ 0.2.
    hot.inlet_c = 50.0;
    hot.r_k_per_w = 0.5;
    let mut batch = vm("b1", Some("hot"), 0.0);
    batch.kind = VmKind::Batch;
    batch.load = None;
    batch.work_core_h = Some(7.0);
    batch.deadline = Some("2026-01-15T04:00:00Z".parse().unwrap());
    let snap = site(
        vec![hot, server("cool", true, EFFICIENT)],
        vec![batch],
        vec![0.2; 4],
        0.05,
        10.0,
    );
    let (d, _, _) = solve(&snap);
    assert_eq!(d.host[0], 1, "the batch VM leaves the hot server");
}

#[test]
fn a_pinned_vm_that_cannot_run_is_reported_infeasible() {
    let mut hot = server("hot", true, EFFICIENT);
    hot.inlet_c = 50.0;
    hot.r_k_per_w = 0.5;
    let mut batch = vm("b1", Some("hot"), 0.0);
    batch.kind = VmKind::Batch;
    batch.load = None;
    batch.migratable = false;
    batch.work_core_h = Some(7.0);
    batch.deadline = Some("2026-01-15T04:00:00Z".parse().unwrap());
    let snap = site(vec![hot], vec![batch], vec![0.2; 4], 0.05, 10.0);
    let inst = Instance::new(&snap).unwrap();
    match optimizer::decide(&inst, None) {
        Err(PlanError::Infeasible { reason }) => assert!(reason.contains("hot"), "{reason}"),
        other => panic!("expected infeasible, got {other:?}"),
    }
}
