//! The greedy baseline: no migrations, no switching off, pending VMs
//! first-fit-decreasing onto the emptiest server, batch as soon as possible,
//! and plans that always pass `evaluate`.

mod common;

use common::{batch, hot, interactive, server, site};
use phoenix_scheduler::evaluate::decisions_of;
use phoenix_scheduler::generate::{generate, SiteSpec};
use phoenix_scheduler::model::{Plan, Snapshot};
use phoenix_scheduler::{
    evaluate, greedy, solve, validate, Instance, PlanError, SolveOptions, SolverKind,
};

fn plan(snap: &Snapshot) -> Plan {
    let opts = SolveOptions {
        solver: SolverKind::Greedy,
        ..SolveOptions::default()
    };
    let plan = solve(snap, &opts).unwrap_or_else(|e| panic!("greedy failed: {e}"));
    assert_eq!(plan.solver, greedy::NAME);
    plan
}

fn host<'p>(plan: &'p Plan, vm: &str) -> &'p str {
    &plan.placements[vm]
}

#[test]
fn placed_vms_never_migrate_even_when_consolidating_would_be_cheaper() {
    let mut s = site();
    s.vms.push(interactive("v2", 1, 2.0, Some("s2"), 0.1));
    let p = plan(&s);
    assert_eq!(host(&p, "v1"), "s1");
    assert_eq!(host(&p, "v2"), "s2");
    assert!(p.migrations.is_empty());
    assert_eq!(p.objective.migrations, 0);
}

#[test]
fn no_server_is_switched_off_even_when_empty() {
    let mut s = site();
    s.vms.truncate(1); // s2 hosts nothing
    let p = plan(&s);
    assert!(p.servers_on["s2"]);
    assert_eq!(p.objective.switches, 0);
}

#[test]
fn an_off_server_is_switched_on_only_for_a_vm_that_fits_no_server_that_is_on() {
    let mut s = site();
    s.servers.push(server("s3", 32, 128.0));
    s.servers[2].on = false;
    let small = plan(&s);
    assert!(!small.servers_on["s3"], "b1 fits a server that is on");
    assert_eq!(small.objective.switches, 0);

    s.vms.push(interactive("big", 20, 16.0, None, 0.2));
    let big = plan(&s);
    assert_eq!(host(&big, "big"), "s3");
    assert!(big.servers_on["s3"]);
    assert_eq!(big.objective.switches, 1);
}

#[test]
fn pending_vms_go_largest_first_to_the_emptiest_server_that_fits() {
    let mut s = site();
    s.servers = vec![
        server("a", 16, 64.0),
        server("b", 8, 64.0),
        server("c", 12, 64.0),
    ];
    // a: 16 − 8 = 8 free, b: 8 free, c: 12 free.
    s.vms = vec![
        interactive("on-a", 8, 4.0, Some("a"), 0.1),
        interactive("p3", 3, 4.0, None, 0.1),
        interactive("p1", 6, 4.0, None, 0.1),
        interactive("p2", 4, 4.0, None, 0.1),
    ];
    let p = plan(&s);
    // p1 (6) → c (12 free); p2 (4) → a or b (8 free each; the first, a);
    // p3 (3) → b (8 free, the emptiest now).
    assert_eq!(host(&p, "p1"), "c");
    assert_eq!(host(&p, "p2"), "a");
    assert_eq!(host(&p, "p3"), "b");
}

#[test]
fn a_pending_vm_goes_where_the_temperature_limit_leaves_it_room() {
    let mut s = site();
    // s1 is the emptiest (16 free vCPUs) but can run only 0.63 cores of
    // load; b1 needs 1 core on average to finish its work in time.
    s.servers[0] = hot(server("s1", 16, 64.0), 95.0);
    s.vms = vec![batch("b1", 4, None, 2.0, 2)];
    let p = plan(&s);
    assert_eq!(host(&p, "b1"), "s2");
}

#[test]
fn image_sharing_lets_a_vm_fit_beside_one_of_its_image() {
    let mut s = site();
    s.servers = vec![server("s1", 16, 16.0), server("s2", 16, 7.0)];
    s.servers[1].on = false;
    // v1 holds 8 GiB of s1's 16; p1 needs 9.5, but 1.5 are shared with v1.
    s.vms = vec![
        interactive("v1", 2, 8.0, Some("s1"), 0.1),
        interactive("p1", 2, 9.5, None, 0.1),
    ];
    let p = plan(&s);
    assert_eq!(host(&p, "p1"), "s1");
    assert!(!p.servers_on["s2"]);
}

#[test]
fn an_off_server_that_cannot_switch_is_never_switched_on() {
    let mut s = site();
    s.servers.push(server("s3", 32, 128.0));
    s.servers[2].on = false;
    s.servers[2].can_switch = false;
    s.servers.push(server("s4", 32, 128.0));
    s.servers[3].on = false;
    s.vms.push(interactive("big", 20, 16.0, None, 0.2));
    let p = plan(&s);
    assert_eq!(host(&p, "big"), "s4");
    assert!(!p.servers_on["s3"]);
}

#[test]
fn batch_runs_as_soon_as_possible_at_full_speed() {
    // 2 core-h on 4 vCPUs: two 15-minute steps at 4 cores, then idle.
    let p = plan(&site());
    assert_eq!(
        p.batch_cores["b1"],
        vec![4.0, 4.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    );
}

#[test]
fn batch_is_slowed_only_by_the_temperature_limit() {
    let mut s = site();
    // Limit at 110 W = u 0.4 = 6.4 cores; v1 runs 2 of them.
    s.servers = vec![hot(server("s1", 16, 64.0), 110.0)];
    s.vms[1] = batch("b1", 8, Some("s1"), 10.0, 24);
    let p = plan(&s);
    for (t, &c) in p.batch_cores["b1"].iter().enumerate() {
        assert!((c - 4.4).abs() < 1e-4, "step {t}: {c} cores");
    }
    let srv = &s.servers[0];
    for &w in &p.power_w["s1"] {
        assert!(srv.inlet_c + srv.r_k_per_w * w <= srv.temp_limit_c + 1e-6);
    }
}

#[test]
fn every_batch_vm_gets_its_deadline_pace_before_earlier_deadlines_take_the_rest() {
    let mut s = site();
    s.servers = vec![hot(server("s1", 16, 64.0), 110.0)]; // 6.4 cores
    s.vms = vec![
        // Due in 1 h: 4 cores on average.
        batch("soon", 8, Some("s1"), 4.0, 1),
        // Due in 24 h: a 2/24 share of 48 core-h = 4 core-h in 2 h, 2 cores.
        batch("late", 8, Some("s1"), 48.0, 24),
    ];
    let p = plan(&s);
    let soon = &p.batch_cores["soon"];
    let late = &p.batch_cores["late"];
    assert!((soon[0] - 4.4).abs() < 1e-4, "{soon:?}");
    assert!((late[0] - 2.0).abs() < 1e-9, "{late:?}");
    let done_soon: f64 = soon[..4].iter().map(|c| c * 0.25).sum();
    assert!((done_soon - 4.0).abs() < 1e-9, "{soon:?}");
    // Every step uses all the cores the limit allows.
    for t in 0..8 {
        assert!((soon[t] + late[t] - 6.4).abs() < 1e-4, "step {t}");
    }
}

#[test]
fn the_baseline_reports_what_it_cannot_meet_because_it_never_migrates() {
    let mut s = site();
    // s2 can run 3.2 cores; m1 runs 3.6 there. Moving it would do.
    s.servers[1] = hot(server("s2", 8, 32.0), 110.0);
    s.vms.push(interactive("m1", 4, 2.0, Some("s2"), 0.9));
    let inst = Instance::new(&s).unwrap();
    assert_eq!(validate::check_feasible(&inst), Ok(()));
    let err = greedy::decide(&inst).unwrap_err();
    let PlanError::NoPlanFound { at, reason } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(at, "server s2");
    assert!(
        reason.contains("the greedy baseline cannot meet the rules on server s2")
            && reason.contains("3.60 cores, more than the 3.20")
            && reason.contains("never migrates"),
        "{reason}"
    );
    let opts = SolveOptions {
        solver: SolverKind::Greedy,
        ..SolveOptions::default()
    };
    assert_eq!(solve(&s, &opts), Err(err));
}

#[test]
fn the_baseline_reports_a_pending_vm_it_cannot_place() {
    let mut s = site();
    // 14 vCPUs fit s1 (16 cores) if v1 (4) moved to s2 (8 cores); the
    // baseline never moves it.
    s.vms.push(interactive("p14", 14, 2.0, None, 0.1));
    let inst = Instance::new(&s).unwrap();
    assert_eq!(validate::check_feasible(&inst), Ok(()));
    let err = greedy::decide(&inst).unwrap_err();
    assert!(
        matches!(&err, PlanError::NoPlanFound { at, reason }
            if at == "vm p14" && reason.contains("cannot place pending vm p14 (14 vCPUs, 2 GiB)")),
        "{err:?}"
    );
}

fn check_generated(spec: &SiteSpec) {
    let snap = generate(spec);
    let p = plan(&snap);
    let inst = Instance::new(&snap).unwrap();
    let d = decisions_of(&inst, &p).unwrap();
    let ev = evaluate(&inst, &d);
    assert_eq!(ev.violations, Vec::<String>::new(), "{}", snap.site);
    assert_eq!(ev.objective, p.objective);
    assert!(p.migrations.is_empty());
    assert_eq!(p.placements.len(), snap.vms.len());
    for srv in &snap.servers {
        // Only off → on switches.
        assert!(!srv.on || p.servers_on[&srv.id], "{} switched off", srv.id);
    }
}

#[test]
fn plans_on_generated_small_sites_break_no_rule() {
    for seed in 0..10 {
        check_generated(&SiteSpec::small(seed));
    }
}

#[test]
fn plans_on_generated_medium_sites_break_no_rule() {
    for seed in 0..3 {
        check_generated(&SiteSpec::medium(seed));
    }
}

#[test]
fn the_same_snapshot_gives_the_same_plan() {
    let snap = generate(&SiteSpec::small(4));
    let (mut a, mut b) = (plan(&snap), plan(&snap));
    a.solve_ms = 0.0;
    b.solve_ms = 0.0;
    assert_eq!(a, b);
}
