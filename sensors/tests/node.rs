//! The node against fake sysfs trees and a fake GPU: discovery, readings,
//! actuation, drift, restore.

mod common;

use std::time::{Duration, Instant};

use common::*;
use phoenix_sensors::control::Targets;
use phoenix_sensors::node::{CpuActuatorKind, Originals};
use phoenix_sensors::testing::FakeSysfs;
use phoenix_sensors::{AgentConfig, Node};

fn targets(cpu_w: Option<f64>, gpu_w: Vec<Option<f64>>) -> Targets {
    Targets {
        cpu_w,
        gpu_w,
        server_cap_w: None,
        guard: false,
        vm_cpu_cores: Default::default(),
    }
}

fn no_gpu() -> Result<std::sync::Arc<dyn phoenix_sensors::gpu::GpuBackend>, String> {
    Err("disabled in this test".into())
}

#[test]
fn a_cpu_cap_is_split_across_rapl_packages_and_restored() {
    let fake = rapl_server();
    let mut node = Node::open(fake.sysfs(), AgentConfig::default(), no_gpu(), false);
    assert_eq!(node.probe().cpu_actuator, CpuActuatorKind::Rapl);
    let caps = node.capabilities();
    assert_eq!(
        caps.cpu.unwrap().max_w,
        300.0,
        "2 × constraint_0_max_power_uw"
    );
    let rep = node.apply(&targets(Some(160.0), vec![]));
    assert_eq!(rep.writes, 2);
    assert_eq!(fake.read(RAPL0), 80_000_000);
    assert_eq!(fake.read(RAPL1), 80_000_000);
    // Holding the same target writes nothing more.
    assert_eq!(node.apply(&targets(Some(160.0), vec![])).writes, 0);
    // Above the hardware maximum: clamped to constraint_0_max_power_uw.
    node.apply(&targets(Some(1000.0), vec![]));
    assert_eq!(fake.read(RAPL0), 150_000_000);
    node.restore();
    assert_eq!(fake.read(RAPL0), RAPL_ORIGINAL_UW);
    assert_eq!(fake.read(RAPL1), RAPL_ORIGINAL_UW);
    // cpufreq is left alone when RAPL does the capping.
    assert_eq!(fake.read(&scaling_max(0)), 3_000_000);
}

#[test]
fn without_rapl_a_watt_cap_becomes_a_frequency_per_policy() {
    let fake = cpufreq_server();
    // A BIOS or tuned left policy 2 with a high minimum.
    fake.write(&scaling_min(2), 2_500_000);
    let mut cfg = AgentConfig::default();
    cfg.cpu.idle_w = 20.0;
    cfg.cpu.max_w = 120.0;
    let mut node = Node::open(fake.sysfs(), cfg, no_gpu(), false);
    assert_eq!(node.probe().cpu_actuator, CpuActuatorKind::Cpufreq);
    // (71.2 − 20)/100 = 0.512 = 0.8³ → 0.8 × 3 GHz.
    node.apply(&targets(Some(71.2), vec![]));
    for n in 0..4 {
        assert_eq!(fake.read(&scaling_max(n)), 2_400_000, "policy{n}");
    }
    assert_eq!(
        fake.read(&scaling_min(2)),
        2_400_000,
        "min lowered to the new max"
    );
    assert_eq!(fake.read(&scaling_min(0)), 1_000_000);
    // Far below the model's idle power: cpuinfo_min_freq, never lower.
    node.apply(&targets(Some(1.0), vec![]));
    assert_eq!(fake.read(&scaling_max(1)), 1_000_000);
    node.restore();
    assert_eq!(fake.read(&scaling_max(2)), 3_000_000);
    assert_eq!(
        fake.read(&scaling_min(2)),
        2_500_000,
        "original min restored"
    );
}

#[test]
fn a_limit_changed_by_another_daemon_is_reapplied() {
    let fake = cpufreq_server();
    let mut node = Node::open(fake.sysfs(), AgentConfig::default(), no_gpu(), false);
    node.apply(&targets(Some(60.0), vec![]));
    let capped = fake.read(&scaling_max(0));
    assert!(capped < 3_000_000);
    fake.write(&scaling_max(0), 3_000_000); // thermald/tuned rewrites it
    let rep = node.apply(&targets(Some(60.0), vec![]));
    assert_eq!(rep.drifted.len(), 1, "{rep:?}");
    assert!(rep.drifted[0].ends_with("policy0/scaling_max_freq"));
    assert_eq!(fake.read(&scaling_max(0)), capped);
}

#[test]
fn gpu_caps_are_clamped_to_constraints_reapplied_and_restored() {
    let fake = FakeSysfs::new();
    let gpu = one_gpu();
    let mut node = Node::open(fake.sysfs(), AgentConfig::default(), backend(&gpu), false);
    let caps = node.capabilities();
    assert_eq!(caps.gpus[0].range.min_w, 100.0);
    assert_eq!(caps.gpus[0].original_w, 300.0);
    node.apply(&targets(None, vec![Some(50.0)]));
    assert_eq!(gpu.device(0).limit_mw, 100_000, "clamped up to the minimum");
    node.apply(&targets(None, vec![Some(250.0)]));
    assert_eq!(gpu.device(0).limit_mw, 250_000);
    gpu.update(0, |d| d.limit_mw = 300_000); // the driver reset it
    let rep = node.apply(&targets(None, vec![Some(250.0)]));
    assert_eq!(rep.drifted, ["gpu0 power limit"]);
    assert_eq!(gpu.device(0).limit_mw, 250_000);
    node.restore();
    assert_eq!(gpu.device(0).limit_mw, 300_000);
}

#[test]
fn readings_cover_rapl_power_across_wrap_around_hwmon_and_gpus() {
    let fake = rapl_server();
    let range = 262_143_328_850u64;
    fake.write(
        "sys/class/powercap/intel-rapl:0/energy_uj",
        range - 10_000_000,
    );
    fake.write("sys/class/powercap/intel-rapl:1/energy_uj", 0);
    let gpu = one_gpu();
    let mut node = Node::open(fake.sysfs(), AgentConfig::default(), backend(&gpu), false);
    let t0 = Instant::now();
    node.read(t0);
    // One second later: package 0 wrapped (10 J to the top + 30 J), package 1 +20 J.
    fake.write("sys/class/powercap/intel-rapl:0/energy_uj", 30_000_000);
    fake.write("sys/class/powercap/intel-rapl:1/energy_uj", 20_000_000);
    let r = node.read(t0 + Duration::from_secs(1));
    let cpu_w = r.cpu_power_w.unwrap();
    assert!((cpu_w - 60.0).abs() < 1e-6, "{cpu_w}");
    // platform 40 W + CPU 60 W + GPU 150 W.
    assert!((r.power_w.unwrap() - 250.0).abs() < 1e-6);
    assert!((r.energy_j - 250.0).abs() < 1e-6);
    // hwmon: only coretemp (by name), hottest 50 °C; acpitz's 99 °C ignored.
    assert_eq!(r.cpu_temp_c, Some(50.0));
    assert!(r
        .thermals
        .iter()
        .any(|t| t.source == "coretemp/Package id 0" && t.limit_c == 90.0));
    assert!(r
        .thermals
        .iter()
        .any(|t| t.source == "gpu0" && t.limit_c == 87.0));
    assert_eq!(r.gpus.len(), 1);
    assert_eq!(r.gpus[0].power_w, 150.0);
    assert_eq!(r.gpus[0].limit_w, 300.0);
}

#[test]
fn a_machine_without_interfaces_is_reported_not_fatal() {
    let empty = FakeSysfs::new();
    let mut node = Node::open(
        empty.sysfs(),
        AgentConfig::default(),
        Err("NVML unavailable: no driver".into()),
        false,
    );
    let probe = node.probe();
    assert_eq!(probe.cpu_actuator, CpuActuatorKind::None);
    assert_eq!(probe.absent.len(), 4, "{:#?}", probe.absent);
    assert!(probe.absent.iter().any(|a| a.contains("NVML unavailable")));
    assert!(node.capabilities().cpu.is_none());
    let rep = node.apply(&targets(Some(100.0), vec![Some(100.0)]));
    assert_eq!((rep.writes, rep.errors.len()), (0, 0));
    let r = node.read(Instant::now());
    assert_eq!((r.cpu_temp_c, r.gpus.len()), (None, 0));
}

#[test]
fn a_dry_run_writes_nothing() {
    let fake = rapl_server();
    let gpu = one_gpu();
    let mut node = Node::open(fake.sysfs(), AgentConfig::default(), backend(&gpu), true);
    let rep = node.apply(&targets(Some(100.0), vec![Some(150.0)]));
    assert_eq!(rep.writes, 3, "it says what it would write");
    assert_eq!(fake.read(RAPL0), RAPL_ORIGINAL_UW);
    assert_eq!(gpu.device(0).limit_mw, 300_000);
    node.restore();
    assert_eq!(fake.read(RAPL0), RAPL_ORIGINAL_UW);
}

#[test]
fn originals_from_a_state_file_are_written_back_and_kept() {
    let fake = rapl_server();
    // A crashed run left its caps in place.
    fake.write(RAPL0, 40_000_000);
    fake.write(RAPL1, 40_000_000);
    let mut node = Node::open(fake.sysfs(), AgentConfig::default(), no_gpu(), false);
    assert_eq!(node.originals().rapl_uw[0].1, 40_000_000, "what it found");
    let previous = Originals {
        rapl_uw: vec![
            ("intel-rapl:0".into(), RAPL_ORIGINAL_UW),
            ("intel-rapl:1".into(), RAPL_ORIGINAL_UW),
            ("intel-rapl:9".into(), 1),
        ],
        ..Originals::default()
    };
    let rep = node.adopt_originals(&previous);
    assert_eq!(rep.writes, 2, "{rep:?}");
    assert_eq!(fake.read(RAPL0), RAPL_ORIGINAL_UW);
    assert_eq!(
        node.originals().rapl_uw.len(),
        2,
        "a zone that is gone is skipped"
    );
    node.apply(&targets(Some(100.0), vec![]));
    node.restore();
    assert_eq!(fake.read(RAPL1), RAPL_ORIGINAL_UW);
}

#[test]
fn a_write_that_fails_is_reported_and_the_rest_still_applied() {
    let fake = rapl_server();
    let mut node = Node::open(fake.sysfs(), AgentConfig::default(), no_gpu(), false);
    // The second package's limit becomes unwritable (a directory stands in
    // for an attribute the kernel refuses).
    let p = fake.path(RAPL1);
    std::fs::remove_file(&p).unwrap();
    std::fs::create_dir(&p).unwrap();
    let rep = node.apply(&targets(Some(160.0), vec![]));
    assert_eq!(fake.read(RAPL0), 80_000_000);
    assert!(!rep.errors.is_empty());
    assert!(
        rep.errors.iter().any(|e| e.contains("intel-rapl:1")),
        "{:?}",
        rep.errors
    );
    // Restoring still brings back what can be restored.
    node.restore();
    assert_eq!(fake.read(RAPL0), RAPL_ORIGINAL_UW);
}
