//! Small hand-built sites for the validation and baseline tests.
#![allow(dead_code)]

use chrono::{DateTime, Duration, Utc};
use phoenix_scheduler::model::{
    HeatLoop, Image, Policy, Server, Snapshot, Vm, VmKind, SNAPSHOT_SCHEMA,
};

/// hp-ml110-g5, SPECpower (reference/physics.md).
pub const G5_W: [f64; 11] = [
    93.7, 97.0, 101.0, 105.0, 110.0, 116.0, 121.0, 125.0, 129.0, 133.0, 135.0,
];

pub fn start() -> DateTime<Utc> {
    "2026-01-15T06:00:00Z".parse().unwrap()
}

/// A cool server (temperature limit far above peak power), on, switchable.
pub fn server(id: &str, cores: u32, mem_gib: f64) -> Server {
    Server {
        id: id.into(),
        cores,
        mem_gib,
        power_curve_w: G5_W.to_vec(),
        off_w: 4.0,
        on: true,
        can_switch: true,
        inlet_c: 24.0,
        r_k_per_w: 0.12,
        temp_limit_c: 80.0,
        heat_loop: Some("gh1".into()),
        recovery: 0.85,
    }
}

/// Make `s` hot: its temperature limit is reached at power `limit_w`.
pub fn hot(mut s: Server, limit_w: f64) -> Server {
    s.inlet_c = 30.0;
    s.temp_limit_c = 80.0;
    s.r_k_per_w = 50.0 / limit_w;
    s
}

pub fn interactive(id: &str, vcpus: u32, mem_gib: f64, host: Option<&str>, load: f64) -> Vm {
    Vm {
        id: id.into(),
        vcpus,
        mem_gib,
        image: Some("ubuntu-24.04".into()),
        host: host.map(Into::into),
        kind: VmKind::Interactive,
        load: Some(load),
        work_core_h: None,
        deadline: None,
        migratable: true,
    }
}

/// A batch VM due `due_h` hours after the snapshot's time.
pub fn batch(id: &str, vcpus: u32, host: Option<&str>, work_core_h: f64, due_h: i64) -> Vm {
    Vm {
        id: id.into(),
        vcpus,
        mem_gib: 2.0,
        image: Some("render".into()),
        host: host.map(Into::into),
        kind: VmKind::Batch,
        load: None,
        work_core_h: Some(work_core_h),
        deadline: Some(start() + Duration::hours(due_h)),
        migratable: true,
    }
}

/// 8 steps of 15 min, servers s1 (16 cores, 64 GiB) and s2 (8 cores,
/// 32 GiB), one interactive VM on s1, one pending batch VM, one loop.
pub fn site() -> Snapshot {
    Snapshot {
        schema: SNAPSHOT_SCHEMA.into(),
        site: "test".into(),
        time: start(),
        step_s: 900.0,
        steps: 8,
        electricity_price_per_kwh: vec![0.2; 8],
        servers: vec![server("s1", 16, 64.0), server("s2", 8, 32.0)],
        vms: vec![
            interactive("v1", 4, 8.0, Some("s1"), 0.5),
            batch("b1", 4, None, 2.0, 24),
        ],
        images: vec![Image {
            id: "ubuntu-24.04".into(),
            shared_mem_gib: 1.5,
        }],
        loops: vec![HeatLoop {
            id: "gh1".into(),
            demand_kw: vec![1.0; 8],
            heat_value_per_kwh: 0.09,
            max_kw: 10.0,
        }],
        policy: Policy::default(),
    }
}
