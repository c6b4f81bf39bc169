//! Parsing, validation and infeasibility diagnostics: every rule names the
//! field (or the servers and VMs) and the problem.

mod common;

use common::{batch, hot, interactive, server, site};
use phoenix_scheduler::generate::{generate, SiteSpec};
use phoenix_scheduler::model::{Image, Snapshot};
use phoenix_scheduler::validate::{self, parse, problems, MAX_STEPS};
use phoenix_scheduler::{greedy, solve, Instance, PlanError, SolveOptions, SolverKind};

const DESIGN: &str = include_str!("../../examples/design-example.json");

// ---------------------------------------------------------------- parsing

fn parse_error(json: &str) -> (String, String) {
    match parse(json) {
        Err(PlanError::Parse { path, message }) => (path, message),
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn the_design_example_parses_and_validates() {
    let snap = parse(DESIGN).unwrap();
    assert_eq!(problems(&snap), vec![]);
    // b001 uses image "render", which the snapshot does not list: legal,
    // it shares no memory.
    assert!(snap.images.iter().all(|i| i.id != "render"));
}

#[test]
fn malformed_json_is_reported_with_its_position() {
    let (_, message) = parse_error(r#"{"schema": "phoenix.snapshot/v1", "site": "#);
    assert!(message.contains("line 1"), "{message}");
}

#[test]
fn a_syntax_error_inside_an_object_names_where_it_is() {
    let (path, message) = parse_error(&DESIGN.replace(r#""cores": 32,"#, r#""cores": 32,,"#));
    assert!(path.starts_with("servers[0]"), "{path}");
    assert!(message.contains("line 3"), "{message}");
}

#[test]
fn anything_after_the_snapshot_is_refused() {
    let (path, message) = parse_error(&format!("{DESIGN} {{}}"));
    assert_eq!(path, ".");
    assert!(message.contains("trailing characters"), "{message}");
}

#[test]
fn a_missing_field_names_the_object_and_the_field() {
    let json = DESIGN.replace(r#""cores": 32, "#, "");
    let (path, message) = parse_error(&json);
    assert_eq!(path, "servers[0]");
    assert!(message.contains("missing field `cores`"), "{message}");
}

#[test]
fn a_wrong_type_names_the_field_path() {
    let json = DESIGN.replace(r#""mem_gib": 128"#, r#""mem_gib": "lots""#);
    let (path, message) = parse_error(&json);
    assert_eq!(path, "servers[0].mem_gib");
    assert!(message.contains("invalid type"), "{message}");
}

#[test]
fn an_unknown_field_is_refused_by_name() {
    let json = DESIGN.replace(r#""vcpus": 8,"#, r#""vcpus": 8, "colour": "red","#);
    let (path, message) = parse_error(&json);
    assert_eq!(path, "vms[1].colour");
    assert!(message.contains("unknown field `colour`"), "{message}");
}

#[test]
fn a_number_json_cannot_hold_names_the_field() {
    let json = DESIGN.replace(r#""mem_gib": 128"#, r#""mem_gib": 1e400"#);
    let (path, message) = parse_error(&json);
    assert_eq!(path, "servers[0].mem_gib");
    assert!(message.contains("out of range"), "{message}");
}

#[test]
fn a_negative_count_names_the_field() {
    let json = DESIGN.replace(r#""cores": 32"#, r#""cores": -32"#);
    let (path, message) = parse_error(&json);
    assert_eq!(path, "servers[0].cores");
    assert!(message.contains("-32"), "{message}");
}

#[test]
fn a_bad_timestamp_names_the_field() {
    let json = DESIGN.replace("2026-01-16T06:00:00Z", "tomorrow");
    let (path, _) = parse_error(&json);
    assert_eq!(path, "vms[1].deadline");
}

// ------------------------------------------------------------- validation

/// Assert that `snap` has exactly one problem, at `field`, saying `text`.
#[track_caller]
fn only(snap: &Snapshot, field: &str, text: &str) {
    let found = problems(snap);
    assert_eq!(found.len(), 1, "expected one problem, got {found:?}");
    has(snap, field, text);
    assert!(matches!(
        validate::validate(snap),
        Err(PlanError::Invalid { .. })
    ));
}

/// Assert that `snap` has a problem at `field` saying `text`.
#[track_caller]
fn has(snap: &Snapshot, field: &str, text: &str) {
    let found = problems(snap);
    assert!(
        found.iter().any(|e| matches!(e,
            PlanError::Invalid { field: f, problem } if f == field && problem.contains(text))),
        "no problem at `{field}` containing `{text}` in {found:?}"
    );
}

fn edit(f: impl FnOnce(&mut Snapshot)) -> Snapshot {
    let mut s = site();
    f(&mut s);
    s
}

#[test]
fn the_test_site_is_valid() {
    assert_eq!(problems(&site()), vec![]);
}

#[test]
fn a_wrong_schema_version_is_invalid() {
    only(
        &edit(|s| s.schema = "phoenix.snapshot/v2".into()),
        "schema",
        "`phoenix.snapshot/v2` is not a supported schema (expected `phoenix.snapshot/v1`)",
    );
}

#[test]
fn step_length_must_be_positive_and_finite() {
    for bad in [0.0, -900.0, f64::NAN, f64::INFINITY] {
        only(
            &edit(|s| s.step_s = bad),
            "step_s",
            "must be a finite number > 0",
        );
    }
}

#[test]
fn steps_must_be_between_one_and_the_upper_bound() {
    has(
        &edit(|s| s.steps = 0),
        "steps",
        "must be between 1 and 2016, got 0",
    );
    let s = edit(|s| {
        s.steps = MAX_STEPS + 1;
        s.electricity_price_per_kwh = vec![0.1; MAX_STEPS + 1];
        s.loops[0].demand_kw = vec![1.0; MAX_STEPS + 1];
    });
    only(&s, "steps", "got 2017");
}

#[test]
fn the_price_vector_needs_one_finite_value_per_step() {
    only(
        &edit(|s| s.electricity_price_per_kwh.pop().map(drop).unwrap_or(())),
        "electricity_price_per_kwh",
        "has 7 values, expected one per step (8)",
    );
    only(
        &edit(|s| s.electricity_price_per_kwh[3] = f64::NAN),
        "electricity_price_per_kwh[3]",
        "must be a finite number, got NaN",
    );
}

#[test]
fn negative_prices_are_legal() {
    assert_eq!(
        problems(&edit(|s| s.electricity_price_per_kwh[2] = -0.05)),
        vec![]
    );
}

#[test]
fn at_least_one_server_is_needed() {
    let s = edit(|s| {
        s.servers.clear();
        s.vms.clear();
    });
    only(&s, "servers", "at least one server is needed");
}

#[test]
fn duplicate_ids_are_invalid_in_every_list() {
    only(
        &edit(|s| s.servers[1].id = "s1".into()),
        "servers[1].id",
        "duplicate id `s1` (also servers[0])",
    );
    only(
        &edit(|s| s.vms[1].id = "v1".into()),
        "vms[1].id",
        "duplicate id `v1` (also vms[0])",
    );
    only(
        &edit(|s| s.images.push(s.images[0].clone())),
        "images[1].id",
        "duplicate id `ubuntu-24.04`",
    );
    only(
        &edit(|s| s.loops.push(s.loops[0].clone())),
        "loops[1].id",
        "duplicate id `gh1`",
    );
}

#[test]
fn empty_ids_are_invalid() {
    only(
        &edit(|s| s.servers[1].id.clear()),
        "servers[1].id",
        "must not be empty",
    );
}

#[test]
fn a_server_needs_a_core_and_some_memory() {
    only(
        &edit(|s| s.servers[0].cores = 0),
        "servers[0].cores",
        "at least 1",
    );
    only(
        &edit(|s| s.servers[1].mem_gib = 0.0),
        "servers[1].mem_gib",
        "must be a finite number > 0, got 0",
    );
    only(
        &edit(|s| s.servers[1].mem_gib = f64::NAN),
        "servers[1].mem_gib",
        "got NaN",
    );
}

#[test]
fn a_power_curve_needs_exactly_eleven_points() {
    only(
        &edit(|s| s.servers[0].power_curve_w.truncate(10)),
        "servers[0].power_curve_w",
        "curve not 11 increasing-in-u points: got 10 points",
    );
}

#[test]
fn a_power_curve_must_not_decrease_with_utilisation() {
    only(
        &edit(|s| s.servers[1].power_curve_w[4] = 100.0),
        "servers[1].power_curve_w",
        "curve not 11 increasing-in-u points: P(0.4) = 100 W is below P(0.3) = 105 W",
    );
    // Flat segments are allowed.
    let flat = edit(|s| s.servers[1].power_curve_w = vec![100.0; 11]);
    assert_eq!(problems(&flat), vec![]);
}

#[test]
fn power_curve_points_must_be_finite_and_not_negative() {
    only(
        &edit(|s| s.servers[0].power_curve_w[0] = -1.0),
        "servers[0].power_curve_w[0]",
        "must be a finite number ≥ 0, got -1",
    );
    only(
        &edit(|s| s.servers[0].power_curve_w[10] = f64::INFINITY),
        "servers[0].power_curve_w[10]",
        "got inf",
    );
}

#[test]
fn server_thermal_and_power_fields_are_checked() {
    only(
        &edit(|s| s.servers[0].off_w = -2.0),
        "servers[0].off_w",
        "≥ 0",
    );
    only(
        &edit(|s| s.servers[0].inlet_c = f64::NAN),
        "servers[0].inlet_c",
        "must be a finite number, got NaN",
    );
    only(
        &edit(|s| s.servers[0].temp_limit_c = f64::INFINITY),
        "servers[0].temp_limit_c",
        "must be a finite number, got inf",
    );
    only(
        &edit(|s| s.servers[0].r_k_per_w = -0.1),
        "servers[0].r_k_per_w",
        "must be a finite number ≥ 0, got -0.1",
    );
    only(
        &edit(|s| s.servers[0].recovery = 1.5),
        "servers[0].recovery",
        "must be between 0 and 1, got 1.5",
    );
}

#[test]
fn an_unknown_loop_is_invalid() {
    only(
        &edit(|s| s.servers[1].heat_loop = Some("gh9".into())),
        "servers[1].loop",
        "unknown loop `gh9` (known: gh1)",
    );
}

#[test]
fn vm_sizes_are_checked() {
    only(&edit(|s| s.vms[0].vcpus = 0), "vms[0].vcpus", "at least 1");
    only(
        &edit(|s| s.vms[0].mem_gib = -8.0),
        "vms[0].mem_gib",
        "must be a finite number ≥ 0, got -8",
    );
}

#[test]
fn a_vm_on_an_unknown_or_off_host_is_invalid() {
    only(
        &edit(|s| s.vms[0].host = Some("s9".into())),
        "vms[0].host",
        "unknown server `s9`",
    );
    only(
        &edit(|s| s.servers[0].on = false),
        "vms[0].host",
        "server `s1` is off",
    );
}

#[test]
fn an_interactive_vm_needs_a_load_between_zero_and_one_and_no_batch_fields() {
    only(
        &edit(|s| s.vms[0].load = None),
        "vms[0].load",
        "an interactive VM needs `load`",
    );
    only(
        &edit(|s| s.vms[0].load = Some(1.2)),
        "vms[0].load",
        "must be between 0 and 1, got 1.2",
    );
    only(
        &edit(|s| s.vms[0].work_core_h = Some(3.0)),
        "vms[0].work_core_h",
        "only batch VMs have remaining work",
    );
    only(
        &edit(|s| s.vms[0].deadline = Some(common::start())),
        "vms[0].deadline",
        "only batch VMs have a deadline",
    );
}

#[test]
fn a_batch_vm_needs_work_and_a_deadline_and_no_load() {
    only(
        &edit(|s| s.vms[1].work_core_h = None),
        "vms[1].work_core_h",
        "a batch VM needs `work_core_h`",
    );
    only(
        &edit(|s| s.vms[1].work_core_h = Some(-1.0)),
        "vms[1].work_core_h",
        "≥ 0, got -1",
    );
    only(
        &edit(|s| s.vms[1].deadline = None),
        "vms[1].deadline",
        "a batch VM needs a `deadline`",
    );
    only(
        &edit(|s| s.vms[1].load = Some(0.5)),
        "vms[1].load",
        "only interactive VMs have a fixed load",
    );
}

#[test]
fn an_image_not_listed_is_legal_and_shares_nothing() {
    let s = edit(|s| s.vms[0].image = Some("not-listed".into()));
    assert_eq!(problems(&s), vec![]);
    let inst = Instance::new(&s).unwrap();
    assert_eq!(inst.vm_image[0], None);
}

#[test]
fn image_shared_memory_must_be_non_negative_and_within_each_vm() {
    only(
        &edit(|s| s.images[0].shared_mem_gib = -1.5),
        "images[0].shared_mem_gib",
        "must be a finite number ≥ 0, got -1.5",
    );
    only(
        &edit(|s| {
            s.images.push(Image {
                id: "render".into(),
                shared_mem_gib: 3.0,
            })
        }),
        "images[1].shared_mem_gib",
        "3 GiB shared is more than the 2 GiB of vm `b1` (vms[1])",
    );
}

#[test]
fn loop_fields_are_checked() {
    only(
        &edit(|s| s.loops[0].demand_kw.push(1.0)),
        "loops[0].demand_kw",
        "has 9 values, expected one per step (8)",
    );
    only(
        &edit(|s| s.loops[0].demand_kw[5] = -3.0),
        "loops[0].demand_kw[5]",
        "≥ 0, got -3",
    );
    only(
        &edit(|s| s.loops[0].heat_value_per_kwh = -0.09),
        "loops[0].heat_value_per_kwh",
        "≥ 0",
    );
    only(
        &edit(|s| s.loops[0].max_kw = f64::NAN),
        "loops[0].max_kw",
        "got NaN",
    );
}

#[test]
fn policy_overcommit_must_be_positive_and_costs_not_negative() {
    only(
        &edit(|s| s.policy.cpu_overcommit = 0.0),
        "policy.cpu_overcommit",
        "must be a finite number > 0, got 0",
    );
    only(
        &edit(|s| s.policy.cpu_overcommit = f64::INFINITY),
        "policy.cpu_overcommit",
        "got inf",
    );
    // Below 1 reserves cores for the host: legal.
    assert_eq!(problems(&edit(|s| s.policy.cpu_overcommit = 0.8)), vec![]);
    only(
        &edit(|s| s.policy.migration_cost = -0.02),
        "policy.migration_cost",
        "≥ 0",
    );
    only(
        &edit(|s| s.policy.switch_cost = f64::NAN),
        "policy.switch_cost",
        "got NaN",
    );
}

#[test]
fn every_problem_is_listed_in_document_order() {
    let s = edit(|s| {
        s.schema = "v0".into();
        s.servers[1].mem_gib = -1.0;
        s.vms[0].host = Some("nowhere".into());
        s.loops[0].max_kw = -1.0;
        s.policy.switch_cost = -1.0;
    });
    let fields: Vec<String> = problems(&s)
        .into_iter()
        .map(|e| match e {
            PlanError::Invalid { field, .. } => field,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        fields,
        [
            "schema",
            "servers[1].mem_gib",
            "vms[0].host",
            "loops[0].max_kw",
            "policy.switch_cost"
        ]
    );
    match validate::validate(&s) {
        Err(PlanError::Invalid { field, .. }) => assert_eq!(field, "schema"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn solve_refuses_an_invalid_snapshot_before_solving() {
    let s = edit(|s| s.servers[0].recovery = -0.2);
    for solver in [SolverKind::Greedy, SolverKind::Optimizer] {
        let opts = SolveOptions {
            solver,
            ..SolveOptions::default()
        };
        assert!(matches!(
            solve(&s, &opts),
            Err(PlanError::Invalid { field, .. }) if field == "servers[0].recovery"
        ));
    }
}

// ---------------------------------------------------------- feasibility

fn infeasible(snap: &Snapshot) -> Vec<String> {
    assert_eq!(problems(snap), vec![], "the snapshot must be valid");
    let inst = Instance::new(snap).unwrap();
    validate::infeasibilities(&inst)
        .into_iter()
        .map(|e| match e {
            PlanError::Infeasible { reason } => reason,
            other => panic!("{other:?}"),
        })
        .collect()
}

#[track_caller]
fn reports(snap: &Snapshot, text: &str) {
    let found = infeasible(snap);
    assert!(
        found.iter().any(|r| r.contains(text)),
        "no finding containing `{text}` in {found:?}"
    );
    let inst = Instance::new(snap).unwrap();
    assert!(matches!(
        validate::check_feasible(&inst),
        Err(PlanError::Infeasible { .. })
    ));
    assert!(matches!(
        solve(snap, &SolveOptions::default()),
        Err(PlanError::Infeasible { .. })
    ));
}

#[test]
fn a_feasible_site_has_no_findings() {
    assert_eq!(infeasible(&site()), Vec::<String>::new());
}

#[test]
fn a_vm_bigger_than_every_server_in_memory_fits_no_server() {
    let s = edit(|s| s.vms.push(interactive("v12", 4, 65.0, None, 0.1)));
    reports(&s, "vm v12 (65 GiB) fits no server (largest: 64 GiB)");
}

#[test]
fn a_vm_with_more_vcpus_than_every_server_fits_no_server() {
    let s = edit(|s| s.vms.push(interactive("v3", 24, 4.0, None, 0.1)));
    reports(
        &s,
        "vm v3 (24 vCPUs) fits no server (largest: 16 cores × overcommit 1)",
    );
}

#[test]
fn an_off_server_that_cannot_switch_offers_nothing() {
    let s = edit(|s| {
        s.servers.push(server("big", 64, 512.0));
        s.servers[2].on = false;
        s.servers[2].can_switch = false;
        s.vms.push(interactive("v12", 4, 100.0, None, 0.1));
    });
    reports(&s, "vm v12 (100 GiB) fits no server (largest: 64 GiB)");
}

#[test]
fn a_server_that_must_stay_on_but_is_too_hot_at_idle_is_infeasible() {
    // Limit reached at 90 W, idle is 93.7 W.
    let s = edit(|s| {
        s.servers[1] = hot(server("s3", 8, 32.0), 90.0);
        s.servers[1].can_switch = false;
    });
    reports(
        &s,
        "server s3: idle power 93.7 W already gives 82.06 °C, above its limit 80 °C, and it must stay on (cannot switch)",
    );
    // Switchable and empty: it can simply be switched off.
    let ok = edit(|s| s.servers[1] = hot(server("s3", 8, 32.0), 90.0));
    assert_eq!(infeasible(&ok), Vec::<String>::new());
}

#[test]
fn a_hot_server_holding_a_non_migratable_vm_must_stay_on() {
    let s = edit(|s| {
        s.servers[1] = hot(server("s3", 8, 32.0), 90.0);
        s.vms.push(interactive("v9", 2, 4.0, Some("s3"), 0.2));
        s.vms[2].migratable = false;
    });
    reports(&s, "server s3: idle power 93.7 W");
    reports(&s, "it must stay on (it hosts non-migratable vm v9)");
}

#[test]
fn non_migratable_vms_beyond_their_host_are_infeasible() {
    let pinned = |s: &mut Snapshot, id: &str, vcpus: u32, mem: f64, load: f64| {
        s.vms.push(interactive(id, vcpus, mem, Some("s2"), load));
        let v = s.vms.len() - 1;
        s.vms[v].migratable = false;
    };
    let cpu = edit(|s| {
        pinned(s, "p1", 6, 4.0, 0.1);
        pinned(s, "p2", 6, 4.0, 0.1);
    });
    reports(
        &cpu,
        "server s2: non-migratable vms p1, p2 need 12 vCPUs, more than its 8 cores × overcommit 1",
    );
    let mem = edit(|s| {
        pinned(s, "p1", 2, 20.0, 0.1);
        pinned(s, "p2", 2, 14.0, 0.1);
    });
    // 34 GiB less 1.5 GiB shared once = 32.5 GiB > 32 GiB.
    reports(
        &mem,
        "server s2: non-migratable vms p1, p2 need 32.5 GiB of memory (after image sharing), more than its 32 GiB",
    );
    let heat = edit(|s| {
        // Limit at 110 W = u 0.4 = 3.2 cores of 8.
        s.servers[1] = hot(server("s2", 8, 32.0), 110.0);
        pinned(s, "p1", 8, 4.0, 0.5);
    });
    reports(
        &heat,
        "server s2: non-migratable vm p1 run an interactive load of 4 cores, more than the 3.2 cores it can run under its temperature limit 80 °C",
    );
}

#[test]
fn an_interactive_load_above_every_thermal_cap_fits_no_server() {
    let s = edit(|s| {
        s.servers[0] = hot(server("s1", 16, 64.0), 110.0); // 6.4 cores
        s.servers[1] = hot(server("s2", 8, 32.0), 110.0); // 3.2 cores
        s.vms[0] = interactive("v1", 8, 8.0, None, 0.9); // 7.2 cores
    });
    reports(
        &s,
        "vm v1 (load 0.9 × 8 vCPUs = 7.2 cores) fits no server under its temperature limit (most: 6.4 cores on s1)",
    );
}

#[test]
fn batch_work_beyond_what_the_vcpus_can_do_by_the_deadline_is_infeasible() {
    // Due in 1 h: 8 vCPUs × 1 h = 8 core-h at most.
    let s = edit(|s| s.vms.push(batch("b7", 8, None, 12.0, 1)));
    reports(
        &s,
        "batch vm b7 needs 12 core-h by its deadline but can do at most 8 (8 vCPUs × 1 h)",
    );
}

#[test]
fn batch_work_beyond_what_the_temperature_limit_allows_is_infeasible() {
    let s = edit(|s| {
        s.servers[0] = hot(server("s1", 16, 64.0), 110.0); // 6.4 cores
        s.servers[1] = hot(server("s2", 8, 32.0), 110.0); // 3.2 cores
        s.vms.push(batch("b7", 8, None, 7.0, 1));
    });
    reports(
        &s,
        "batch vm b7 needs 7 core-h by its deadline but can do at most 6.4 (6.4 cores under the temperature limit",
    );
}

#[test]
fn a_pro_rata_share_beyond_reach_is_reported_as_within_the_horizon() {
    // Due in 4 h, horizon 2 h: half of 40 core-h = 20 > 4 vCPUs × 2 h.
    let s = edit(|s| s.vms.push(batch("b8", 4, None, 40.0, 4)));
    reports(
        &s,
        "batch vm b8 needs 20 core-h within the horizon (its pro-rata share of 40 core-h",
    );
}

#[test]
fn more_forced_migrations_than_the_policy_allows_are_infeasible() {
    let s = edit(|s| {
        s.servers[1] = hot(server("s2", 8, 32.0), 110.0); // 3.2 cores
        s.vms.push(interactive("m1", 4, 2.0, Some("s2"), 0.9)); // 3.6 cores
        s.vms.push(interactive("m2", 4, 2.0, Some("s2"), 0.9));
        s.policy.max_migrations = 1;
    });
    reports(
        &s,
        "2 vms must leave hosts that cannot hold them (m1, m2), but the policy allows at most 1 migrations",
    );
}

#[test]
fn total_demand_above_all_servers_is_infeasible() {
    let cpu = edit(|s| {
        for i in 0..7 {
            s.vms.push(interactive(&format!("x{i}"), 3, 2.0, None, 0.1));
        }
    });
    reports(
        &cpu,
        "the vms need 29 vCPUs in all, but the servers that can run offer 24 (cores × overcommit 1)",
    );
    let mem = edit(|s| {
        s.vms.push(interactive("m1", 1, 60.0, None, 0.1));
        s.vms.push(interactive("m2", 1, 30.0, None, 0.1));
    });
    // 8 + 2 + 60 + 30 GiB, less 1.5 GiB twice: three ubuntu VMs can share.
    reports(
        &mem,
        "the vms need at least 97 GiB of memory in all (after image sharing), but the servers that can run have 96 GiB",
    );
    let load = edit(|s| {
        s.servers[0] = hot(server("s1", 16, 64.0), 110.0); // 6.4 cores
        s.servers[1] = hot(server("s2", 8, 32.0), 110.0); // 3.2 cores
        s.vms[0].load = Some(0.0);
        for i in 0..4 {
            s.vms.push(interactive(&format!("h{i}"), 3, 2.0, None, 0.9)); // 2.7 each
        }
    });
    reports(
        &load,
        "the interactive vms run 10.8 cores of load in all, but the servers that can run allow 9.6 cores under their temperature limits",
    );
}

#[test]
fn findings_never_contradict_a_plan_the_baseline_finds() {
    for seed in 0..6 {
        for spec in [SiteSpec::small(seed), SiteSpec::sized(40, 300, seed)] {
            let snap = generate(&spec);
            assert_eq!(problems(&snap), vec![], "seed {seed}");
            let inst = Instance::new(&snap).unwrap();
            if greedy::decide(&inst).is_ok() {
                assert_eq!(validate::infeasibilities(&inst), vec![], "seed {seed}");
            }
        }
    }
}
