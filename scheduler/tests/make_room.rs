//! Issue #12: a pending VM that fits no server as things stand is placed by
//! moving another VM out of its way; "infeasible" is said only when proven,
//! and a search that gives up says so as `NoPlanFound`.

mod common;

use common::{interactive, server, site};
use phoenix_scheduler::evaluate::evaluate;
use phoenix_scheduler::model::{Server, Snapshot};
use phoenix_scheduler::optimizer::{self, Construction};
use phoenix_scheduler::{
    greedy, solve, solve_prepared, validate, Instance, PlanError, SolveOptions, SolverKind,
};

/// s1 (64 GiB) hosts a (20 GiB), s2 (48 GiB) hosts b (20 GiB); pending p
/// needs 50 GiB: it fits s1 only once a has moved to s2. `budget`
/// migrations allowed.
fn squeezed(budget: usize) -> Snapshot {
    let mut s = site();
    s.servers = vec![server("s1", 16, 64.0), server("s2", 16, 48.0)];
    s.vms = vec![
        interactive("a", 2, 20.0, Some("s1"), 0.2),
        interactive("b", 2, 20.0, Some("s2"), 0.2),
        interactive("p", 2, 50.0, None, 0.2),
    ];
    s.policy.max_migrations = budget;
    s
}

/// `snap` with `n` more servers that are off and cannot switch on: no
/// server more to use, but a site too large for the exact fallback.
fn padded(mut snap: Snapshot, n: usize) -> Snapshot {
    for i in 0..n {
        snap.servers.push(Server {
            on: false,
            can_switch: false,
            ..server(&format!("pad{i:02}"), 4, 8.0)
        });
    }
    snap
}

fn optimiser() -> SolveOptions {
    SolveOptions {
        skip_lower_bound: true,
        ..SolveOptions::default()
    }
}

#[test]
fn a_pending_vm_that_fits_only_after_one_move_is_placed_by_moving_the_other_vm() {
    let snap = squeezed(1);
    let inst = Instance::new(&snap).unwrap();
    assert_eq!(validate::check_feasible(&inst), Ok(()));
    // What the issue saw: the baseline, which never migrates, finds no plan.
    assert!(matches!(
        greedy::decide(&inst),
        Err(PlanError::NoPlanFound { .. })
    ));
    let out = optimizer::decide(&inst, None).unwrap();
    assert_eq!(out.construction, Construction::MadeRoom);
    let ev = evaluate(&inst, &out.decisions);
    assert_eq!(ev.violations, Vec::<String>::new());
    assert_eq!(out.decisions.host, vec![1, 1, 0], "a and b on s2, p on s1");
    assert_eq!(ev.objective.migrations, 1);
}

#[test]
fn the_same_squeeze_on_a_site_too_large_for_the_exact_fallback_is_still_planned() {
    let snap = padded(squeezed(1), 45);
    let s = solve_prepared(&snap, &optimiser()).unwrap();
    assert!(s.evaluation.is_feasible());
    assert_eq!(s.decisions.host[2], 0, "p on s1");
}

#[test]
fn with_no_migration_allowed_a_large_site_gets_no_plan_found_naming_the_vm_not_infeasible() {
    // No rule of the feasibility checks is broken, the site is beyond the
    // exact fallback's size, and no plan exists: nothing proves it, so the
    // answer is "no plan found", naming where the search stopped.
    let snap = padded(squeezed(0), 45);
    let inst = Instance::new(&snap).unwrap();
    assert_eq!(validate::check_feasible(&inst), Ok(()));
    match solve(&snap, &optimiser()) {
        Err(PlanError::NoPlanFound { at, reason }) => {
            assert_eq!(at, "vm p");
            assert!(reason.contains("placing pending vm p"), "{reason}");
            assert!(reason.contains("0 of 0 spent"), "{reason}");
        }
        other => panic!("expected no plan found, got {other:?}"),
    }
    // The baseline gives up the same way, not as a proof.
    let greedy = SolveOptions {
        solver: SolverKind::Greedy,
        ..SolveOptions::default()
    };
    assert!(matches!(
        solve(&snap, &greedy),
        Err(PlanError::NoPlanFound { .. })
    ));
}

#[test]
fn with_no_migration_allowed_a_small_site_is_proven_infeasible_by_the_exact_fallback() {
    // Small enough for the exact MILP, which proves what the search could
    // not: p has nowhere to go without a migration.
    let snap = squeezed(0);
    match solve(&snap, &optimiser()) {
        Err(PlanError::Infeasible { reason }) => {
            assert!(reason.contains("exact MILP"), "{reason}")
        }
        other => panic!("expected a proof of infeasibility, got {other:?}"),
    }
}

#[test]
fn a_truly_infeasible_site_is_still_infeasible_from_the_proof() {
    // p needs 80 GiB; the largest server has 64.
    let mut snap = padded(squeezed(2), 45);
    snap.vms[2].mem_gib = 80.0;
    for solver in [SolverKind::Optimizer, SolverKind::Greedy] {
        let opts = SolveOptions {
            solver,
            ..optimiser()
        };
        match solve(&snap, &opts) {
            Err(PlanError::Infeasible { reason }) => {
                assert!(reason.contains("vm p (80 GiB) fits no server"), "{reason}")
            }
            other => panic!("{solver:?}: expected infeasible, got {other:?}"),
        }
    }
}

#[test]
fn a_vm_forced_off_its_server_is_moved_after_making_room_for_it() {
    // s1 gets too hot for a's load (its limit allows 3.2 cores of 16; a
    // runs 4); s3 is too small for a, and s2 has the memory for it only once
    // c has moved to s3: two migrations.
    let mut snap = squeezed(2);
    snap.servers[0] = common::hot(server("s1", 16, 64.0), 101.0);
    snap.servers.push(server("s3", 16, 24.0));
    snap.vms = vec![
        interactive("a", 8, 30.0, Some("s1"), 0.5),
        interactive("b", 2, 20.0, None, 0.1),
        interactive("c", 2, 20.0, Some("s2"), 0.1),
    ];
    let inst = Instance::new(&snap).unwrap();
    let out = optimizer::decide(&inst, None).unwrap();
    assert_eq!(out.construction, Construction::MadeRoom);
    let ev = evaluate(&inst, &out.decisions);
    assert_eq!(ev.violations, Vec::<String>::new());
    assert_eq!(out.decisions.host[0], 1, "a on s2");
    assert_ne!(out.decisions.host[2], 1, "c made room for it");
}
