//! `phoenix plan` as a user runs it: the plan on stdout and exit 0, or an
//! error on stderr naming the field or rule, nothing on stdout, and the exit
//! code of its kind (2 invalid, 3 proven infeasible, 4 no plan found without
//! a proof, 1 otherwise).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use scheduler::evaluate::decisions_of;
use scheduler::model::Plan;
use scheduler::{evaluate, Instance};

const DESIGN: &str = include_str!("../examples/design-example.json");

fn phoenix() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_phoenix"));
    c.env("RUST_LOG", "warn");
    c
}

/// Run `phoenix plan --snapshot FILE` on `json` written to a temporary file.
fn plan_json(json: &str, extra: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snapshot.json");
    std::fs::write(&path, json).unwrap();
    plan_file(&path, extra)
}

fn plan_file(path: &Path, extra: &[&str]) -> Output {
    phoenix()
        .args(["plan", "--snapshot"])
        .arg(path)
        .args(extra)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Assert a failure with `code`, stderr containing every one of `texts`,
/// and nothing on stdout.
#[track_caller]
fn fails(o: &Output, code: i32, texts: &[&str]) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "stderr: {err}");
    assert!(
        o.stdout.is_empty(),
        "stdout: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    for t in texts {
        assert!(err.contains(t), "stderr lacks `{t}`: {err}");
    }
}

/// Assert success and return the plan, checked against the snapshot with
/// the evaluator: no rule broken, objective the exact cost.
#[track_caller]
fn succeeds(o: &Output, snapshot: &str) -> Plan {
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(o));
    let plan: Plan = serde_json::from_slice(&o.stdout).expect("stdout is plan JSON");
    assert_eq!(plan.schema, "phoenix.plan/v1");
    let snap = scheduler::parse_snapshot(snapshot).unwrap();
    let inst = Instance::new(&snap).unwrap();
    let ev = evaluate(&inst, &decisions_of(&inst, &plan).unwrap());
    assert_eq!(ev.violations, Vec::<String>::new());
    assert_eq!(ev.objective, plan.objective);
    plan
}

#[test]
fn a_good_snapshot_gives_a_valid_plan_and_exit_zero() {
    let o = plan_json(DESIGN, &[]);
    let plan = succeeds(&o, DESIGN);
    assert_eq!(plan.placements.len(), 2);
    assert!(plan.baseline_cost.is_some());
}

#[test]
fn no_baseline_leaves_the_baseline_cost_out() {
    let o = plan_json(DESIGN, &["--no-baseline", "--solver", "greedy"]);
    let plan = succeeds(&o, DESIGN);
    assert_eq!(plan.solver, "greedy");
    assert_eq!(plan.baseline_cost, None);
}

#[test]
fn a_time_limit_still_gives_a_plan() {
    let o = plan_json(DESIGN, &["--time-limit-ms", "1000"]);
    succeeds(&o, DESIGN);
}

#[test]
fn the_snapshot_can_come_from_stdin() {
    let mut child = phoenix()
        .args(["plan", "--snapshot", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(DESIGN.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    succeeds(&o, DESIGN);
}

#[test]
fn malformed_json_exits_2_with_its_position() {
    let o = plan_json(&DESIGN[..200], &[]);
    fails(
        &o,
        2,
        &["malformed snapshot", "EOF while parsing", "line 3"],
    );
}

#[test]
fn an_unknown_field_exits_2_naming_it() {
    let o = plan_json(
        &DESIGN.replace(r#""mem_gib": 128"#, r#""mem_gb": 128"#),
        &[],
    );
    fails(&o, 2, &["servers[0].mem_gb", "unknown field `mem_gb`"]);
}

#[test]
fn a_wrong_schema_exits_2_naming_the_field() {
    let o = plan_json(
        &DESIGN.replace("phoenix.snapshot/v1", "phoenix.snapshot/v9"),
        &[],
    );
    fails(&o, 2, &["`schema`", "phoenix.snapshot/v9"]);
}

#[test]
fn negative_values_exit_2_naming_each_field() {
    let json = DESIGN
        .replace(r#""mem_gib": 128"#, r#""mem_gib": -128"#)
        .replace(
            r#""heat_value_per_kwh": 0.09"#,
            r#""heat_value_per_kwh": -0.09"#,
        );
    let o = plan_json(&json, &[]);
    fails(
        &o,
        2,
        &[
            "`servers[0].mem_gib`: must be a finite number > 0, got -128",
            "`loops[0].heat_value_per_kwh`",
            "2 problems found",
        ],
    );
}

#[test]
fn an_unknown_host_exits_2_naming_the_vm_field() {
    let o = plan_json(&DESIGN.replace(r#""host": "s01""#, r#""host": "s99""#), &[]);
    fails(&o, 2, &["`vms[0].host`", "unknown server `s99`"]);
}

#[test]
fn an_unknown_loop_exits_2_naming_the_server_field() {
    let o = plan_json(&DESIGN.replace(r#""loop": "gh1""#, r#""loop": "gh7""#), &[]);
    fails(&o, 2, &["`servers[0].loop`", "unknown loop `gh7`"]);
}

#[test]
fn a_price_vector_of_the_wrong_length_exits_2() {
    let o = plan_json(&DESIGN.replace("0.2, 0.25]", "0.2]"), &[]);
    fails(
        &o,
        2,
        &[
            "`electricity_price_per_kwh`",
            "has 7 values, expected one per step (8)",
        ],
    );
}

#[test]
fn an_infeasible_snapshot_exits_3_naming_the_rule() {
    let o = plan_json(
        &DESIGN.replace(r#""mem_gib": 16"#, r#""mem_gib": 200"#),
        &[],
    );
    fails(
        &o,
        3,
        &[
            "infeasible",
            "vm b001 (200 GiB) fits no server (largest: 128 GiB)",
        ],
    );
}

#[test]
fn the_baseline_solver_exits_4_when_its_habits_cannot_meet_a_rule() {
    // b001 (8 vCPUs) arrives while v001 holds 4 of the only server's 10
    // cores; the baseline does not move v001 to the switchable s02.
    let json = DESIGN.replace(r#""cores": 32"#, r#""cores": 10"#).replace(
        r#""loop": "gh1", "recovery": 0.85}],"#,
        r#""loop": "gh1", "recovery": 0.85},
               {"id": "s02", "cores": 4, "mem_gib": 16,
                "power_curve_w": [93.7, 97, 101, 105, 110, 116, 121, 125, 129, 133, 135],
                "on": false, "inlet_c": 24.0, "r_k_per_w": 0.12, "temp_limit_c": 80.0}],"#,
    );
    let o = plan_json(&json, &["--solver", "greedy"]);
    // Not a proof: the optimiser plans this snapshot.
    fails(
        &o,
        4,
        &[
            "no plan found (not proven infeasible): vm b001",
            "the greedy baseline cannot place pending vm b001",
        ],
    );
    let o = plan_json(&json, &[]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
}

/// A snapshot with a plan only if a VM could migrate, but no migration
/// allowed, on a site of 47 servers (too large for the exact fallback, so
/// nothing proves it infeasible): s01 (64 GiB) hosts a (20 GiB), s02
/// (48 GiB) hosts b (20 GiB), pending p needs 50 GiB; 45 more servers are
/// off and cannot switch on.
fn no_plan_without_a_migration() -> String {
    let mut snap: scheduler::Snapshot = serde_json::from_str(DESIGN).unwrap();
    let model = snap.servers[0].clone();
    let server = |id: &str, mem_gib: f64, on: bool| scheduler::model::Server {
        id: id.into(),
        mem_gib,
        on,
        can_switch: on,
        ..model.clone()
    };
    snap.servers = vec![server("s01", 64.0, true), server("s02", 48.0, true)];
    snap.servers
        .extend((0..45).map(|i| server(&format!("pad{i:02}"), 8.0, false)));
    let vm = |id: &str, mem_gib: f64, host: Option<&str>| {
        let mut v = snap.vms[0].clone();
        v.id = id.into();
        v.vcpus = 2;
        v.mem_gib = mem_gib;
        v.host = host.map(Into::into);
        v
    };
    snap.vms = vec![
        vm("a", 20.0, Some("s01")),
        vm("b", 20.0, Some("s02")),
        vm("p", 50.0, None),
    ];
    snap.policy.max_migrations = 0;
    serde_json::to_string(&snap).unwrap()
}

#[test]
fn a_snapshot_the_search_cannot_plan_and_nothing_proves_infeasible_exits_4() {
    let o = plan_json(&no_plan_without_a_migration(), &[]);
    fails(
        &o,
        4,
        &[
            "no plan found (not proven infeasible): vm p:",
            "placing pending vm p (2 vCPUs, 50 GiB)",
            "migration budget (0 of 0 spent)",
        ],
    );
    // One migration allowed, the optimiser moves a to s02 and plans it.
    let json =
        no_plan_without_a_migration().replace(r#""max_migrations":0"#, r#""max_migrations":1"#);
    let plan = succeeds(&plan_json(&json, &[]), &json);
    assert_eq!(plan.placements["p"], "s01");
    assert_eq!(plan.placements["a"], "s02");
}

#[test]
fn a_missing_file_exits_1() {
    let o = plan_file(Path::new("/nonexistent/snapshot.json"), &[]);
    fails(&o, 1, &["reading snapshot /nonexistent/snapshot.json"]);
}

#[test]
fn an_unknown_solver_is_a_usage_error() {
    let o = plan_json(DESIGN, &["--solver", "simplex"]);
    fails(&o, 2, &["unknown solver `simplex`"]);
}

#[test]
fn help_documents_the_exit_codes() {
    let o = phoenix().args(["plan", "--help"]).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("2  the snapshot is malformed or invalid"),
        "{out}"
    );
    assert!(out.contains("3  the snapshot is infeasible"), "{out}");
    assert!(
        out.contains("4  no plan found, but not proven infeasible"),
        "{out}"
    );
}

fn examples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_parses_validates_and_solves_with_both_solvers() {
    let files = examples();
    assert!(
        files.iter().any(|p| p.ends_with("design-example.json")),
        "{files:?}"
    );
    for path in files {
        let json = std::fs::read_to_string(&path).unwrap();
        let snap =
            scheduler::parse_snapshot(&json).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            scheduler::validate::problems(&snap),
            vec![],
            "{}",
            path.display()
        );
        for solver in ["optimizer", "greedy"] {
            let o = plan_file(&path, &["--solver", solver]);
            let plan = succeeds(&o, &json);
            assert_eq!(plan.solver, solver, "{}", path.display());
        }
    }
}
