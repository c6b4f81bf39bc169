//! Fake machines shared by the integration tests.
#![allow(dead_code)]

use std::sync::Arc;

use phoenix_sensors::gpu::GpuBackend;
use phoenix_sensors::testing::{FakeGpu, FakeGpuDevice, FakeSysfs};
use phoenix_sensors::AgentConfig;

/// RAPL limit file of package 0.
pub const RAPL0: &str = "sys/class/powercap/intel-rapl:0/constraint_0_power_limit_uw";
/// RAPL limit file of package 1.
pub const RAPL1: &str = "sys/class/powercap/intel-rapl:1/constraint_0_power_limit_uw";
/// Original RAPL limit of each package, µW.
pub const RAPL_ORIGINAL_UW: u64 = 125_000_000;

/// A two-socket server with RAPL limits and a coretemp chip at hwmon2
/// (hwmon0 and hwmon1 are other chips, so index-based code would fail).
pub fn rapl_server() -> FakeSysfs {
    let fake = FakeSysfs::new();
    for (id, name) in [("intel-rapl:0", "package-0"), ("intel-rapl:1", "package-1")] {
        fake.rapl_zone(
            id,
            name,
            1_000_000,
            262_143_328_850,
            Some((RAPL_ORIGINAL_UW, 150_000_000)),
        );
    }
    fake.rapl_zone("intel-rapl:0:0", "core", 0, 262_143_328_850, Some((1, 2)));
    fake.hwmon(0, "acpitz", &[(1, "", 99_000, None, None)]);
    fake.hwmon(1, "nvme", &[(1, "Composite", 45_000, Some(81_850), None)]);
    fake.hwmon(
        2,
        "coretemp",
        &[
            (1, "Package id 0", 50_000, Some(90_000), Some(100_000)),
            (2, "Core 0", 48_000, Some(90_000), Some(100_000)),
        ],
    );
    for n in 0..2 {
        fake.cpufreq_policy(n, 800_000, 3_000_000);
    }
    fake
}

/// A server without RAPL: four cpufreq policies and a k10temp chip.
pub fn cpufreq_server() -> FakeSysfs {
    let fake = FakeSysfs::new();
    for n in 0..4 {
        fake.cpufreq_policy(n, 1_000_000, 3_000_000);
    }
    fake.hwmon(5, "k10temp", &[(1, "Tctl", 60_000, None, None)]);
    fake
}

/// `scaling_max_freq` of policy `n`.
pub fn scaling_max(n: u32) -> String {
    format!("{}/scaling_max_freq", FakeSysfs::policy_dir(n))
}

/// `scaling_min_freq` of policy `n`.
pub fn scaling_min(n: u32) -> String {
    format!("{}/scaling_min_freq", FakeSysfs::policy_dir(n))
}

/// One fake GPU: 150 W drawn at 60 °C, limit 300 W in [100, 300] W.
pub fn one_gpu() -> Arc<FakeGpu> {
    Arc::new(FakeGpu::new(vec![FakeGpuDevice::new(
        150, 60, 300, 100, 300,
    )]))
}

/// The GPU as the agent takes it.
pub fn backend(gpu: &Arc<FakeGpu>) -> Result<Arc<dyn GpuBackend>, String> {
    Ok(gpu.clone() as Arc<dyn GpuBackend>)
}

/// A config for tests: short periods, a state file in `dir`.
pub fn test_config(dir: &std::path::Path) -> AgentConfig {
    let mut cfg = AgentConfig::default();
    cfg.agent.telemetry_interval_s = 0.2;
    cfg.agent.control_interval_s = 0.1;
    cfg.agent.state_file = dir.join("agent-state.json");
    cfg.gpu.enabled = false;
    cfg
}
