//! `solve_prepared`, the in-process entry point: the same decisions, cost
//! and plan as `solve`, by index.

use phoenix_scheduler::evaluate::decisions_of;
use phoenix_scheduler::generate::{generate, SiteSpec};
use phoenix_scheduler::{solve, solve_prepared, Instance, SolveOptions, SolverKind};

#[test]
fn solve_prepared_decides_what_solve_writes_out() {
    for solver in [SolverKind::Greedy, SolverKind::Optimizer] {
        for seed in [1, 2, 3] {
            let snap = generate(&SiteSpec::small(seed));
            let opts = SolveOptions {
                solver,
                with_baseline: true,
                ..SolveOptions::default()
            };
            let plan = solve(&snap, &opts).unwrap();
            let s = solve_prepared(&snap, &opts).unwrap();
            let inst = Instance::new(&snap).unwrap();
            assert_eq!(decisions_of(&inst, &plan).unwrap(), s.decisions);
            assert_eq!(plan.objective, s.evaluation.objective);
            assert!(s.evaluation.violations.is_empty());
            assert_eq!(plan.solver, s.solver);
            assert_eq!(plan.lower_bound, s.lower_bound);
            assert_eq!(plan.baseline_cost, s.baseline_cost);
            assert!(s.baseline_cost.is_some());
        }
    }
}

#[test]
fn solve_prepared_still_refuses_a_snapshot_no_plan_can_meet() {
    let mut snap = generate(&SiteSpec::small(4));
    // A VM larger than any server: infeasible, diagnosed as with `solve`.
    snap.vms[0].vcpus = 10_000;
    let opts = SolveOptions::default();
    let a = solve(&snap, &opts).unwrap_err().to_string();
    let b = solve_prepared(&snap, &opts).unwrap_err().to_string();
    assert_eq!(a, b);
}
