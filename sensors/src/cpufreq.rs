//! cpufreq policies: `sys/devices/system/cpu/cpufreq/policyN/{cpuinfo_min_freq,
//! cpuinfo_max_freq, scaling_min_freq, scaling_max_freq}` in kHz, and the
//! power model that turns a watt cap into a frequency.

use std::path::PathBuf;

use crate::sysfs::{self, Sysfs, SysfsError};

/// One cpufreq policy (a group of CPUs that share a clock).
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Directory name, `policy0`.
    pub name: String,
    /// `cpuinfo_min_freq`, kHz.
    pub cpuinfo_min_khz: u64,
    /// `cpuinfo_max_freq`, kHz.
    pub cpuinfo_max_khz: u64,
    dir: PathBuf,
}

/// Every policy with readable hardware limits, sorted by name.
pub fn discover(sysfs: &Sysfs) -> Vec<Policy> {
    let mut out: Vec<Policy> = sysfs::entries_with_prefix(&sysfs.cpufreq_dir(), "policy")
        .into_iter()
        .filter_map(|dir| {
            let min = sysfs::read_u64(&dir.join("cpuinfo_min_freq")).ok()?;
            let max = sysfs::read_u64(&dir.join("cpuinfo_max_freq")).ok()?;
            if !(min > 0 && min <= max && dir.join("scaling_max_freq").exists()) {
                return None;
            }
            Some(Policy {
                name: dir.file_name()?.to_string_lossy().into_owned(),
                cpuinfo_min_khz: min,
                cpuinfo_max_khz: max,
                dir,
            })
        })
        .collect();
    // policy10 after policy9.
    out.sort_by_key(|p| {
        p.name
            .trim_start_matches("policy")
            .parse::<u64>()
            .unwrap_or(u64::MAX)
    });
    out
}

impl Policy {
    /// `scaling_min_freq`, kHz.
    pub fn scaling_min_khz(&self) -> Result<u64, SysfsError> {
        sysfs::read_u64(&self.dir.join("scaling_min_freq"))
    }

    /// `scaling_max_freq`, kHz.
    pub fn scaling_max_khz(&self) -> Result<u64, SysfsError> {
        sysfs::read_u64(&self.dir.join("scaling_max_freq"))
    }

    /// The `scaling_max_freq` file (for messages).
    pub fn max_path(&self) -> PathBuf {
        self.dir.join("scaling_max_freq")
    }

    /// Set both scaling limits, clamped to the hardware range, in the order
    /// the kernel accepts: a max below the current min fails, so when the
    /// window moves down the min goes first, otherwise the max does.
    pub fn set_limits(&self, min_khz: u64, max_khz: u64) -> Result<(), SysfsError> {
        let max = max_khz.clamp(self.cpuinfo_min_khz, self.cpuinfo_max_khz);
        let min = min_khz.clamp(self.cpuinfo_min_khz, max);
        let min_path = self.dir.join("scaling_min_freq");
        let cur_min = self.scaling_min_khz()?;
        if max < cur_min {
            sysfs::write_u64(&min_path, min)?;
            sysfs::write_u64(&self.max_path(), max)
        } else {
            sysfs::write_u64(&self.max_path(), max)?;
            sysfs::write_u64(&min_path, min)
        }
    }
}

/// The CPU's power as a function of frequency at full load:
/// P(f) = idle_w + (max_w − idle_w)·(f/f_max)³, since dynamic power scales
/// as C·V²·f with voltage following frequency (reference/physics.md,
/// "Dynamic CPU power … P_dyn ∝ f³").
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuPowerModel {
    /// Package power that does not scale with frequency, W.
    pub idle_w: f64,
    /// Package power at full load and maximum frequency, W.
    pub max_w: f64,
}

impl CpuPowerModel {
    /// Power at `fraction` = f/f_max, W.
    pub fn power_w(&self, fraction: f64) -> f64 {
        self.idle_w + (self.max_w - self.idle_w).max(0.0) * fraction.clamp(0.0, 1.0).powi(3)
    }

    /// The largest f/f_max whose power stays within `cap_w`, in [0, 1].
    pub fn fraction_for(&self, cap_w: f64) -> f64 {
        let span = self.max_w - self.idle_w;
        if span <= 0.0 {
            return 1.0;
        }
        ((cap_w - self.idle_w) / span).clamp(0.0, 1.0).cbrt()
    }

    /// The `scaling_max_freq` (kHz) for `cap_w` on `policy`, within its
    /// `cpuinfo_min/max_freq`.
    pub fn max_khz_for(&self, policy: &Policy, cap_w: f64) -> u64 {
        let khz = (self.fraction_for(cap_w) * policy.cpuinfo_max_khz as f64).floor() as u64;
        khz.clamp(policy.cpuinfo_min_khz, policy.cpuinfo_max_khz)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeSysfs;

    #[test]
    fn eighty_percent_frequency_costs_half_the_dynamic_power() {
        let m = CpuPowerModel {
            idle_w: 0.0,
            max_w: 100.0,
        };
        assert!((m.power_w(0.8) - 51.2).abs() < 1e-9);
        assert!((m.fraction_for(51.2) - 0.8).abs() < 1e-9);
        assert_eq!(m.fraction_for(500.0), 1.0);
        assert_eq!(m.fraction_for(-3.0), 0.0);
    }

    #[test]
    fn a_cap_maps_to_a_frequency_within_the_hardware_range() {
        let fake = FakeSysfs::new();
        fake.cpufreq_policy(0, 800_000, 3_000_000);
        let p = &discover(&fake.sysfs())[0];
        let m = CpuPowerModel {
            idle_w: 20.0,
            max_w: 120.0,
        };
        // (71.2 − 20)/100 = 0.512 → f = 0.8 f_max.
        assert_eq!(m.max_khz_for(p, 71.2), 2_400_000);
        assert_eq!(m.max_khz_for(p, 5.0), 800_000, "never below cpuinfo_min");
        assert_eq!(m.max_khz_for(p, 1e6), 3_000_000);
    }

    #[test]
    fn limits_below_the_current_min_move_both_ends() {
        let fake = FakeSysfs::new();
        fake.cpufreq_policy(0, 800_000, 3_000_000);
        fake.write(
            "sys/devices/system/cpu/cpufreq/policy0/scaling_min_freq",
            2_000_000,
        );
        let p = &discover(&fake.sysfs())[0];
        p.set_limits(800_000, 1_000_000).unwrap();
        assert_eq!(p.scaling_max_khz().unwrap(), 1_000_000);
        assert_eq!(p.scaling_min_khz().unwrap(), 800_000);
        p.set_limits(2_000_000, 3_000_000).unwrap();
        assert_eq!(p.scaling_max_khz().unwrap(), 3_000_000);
        assert_eq!(p.scaling_min_khz().unwrap(), 2_000_000);
    }

    #[test]
    fn policies_sort_numerically() {
        let fake = FakeSysfs::new();
        for n in [10, 2, 0] {
            fake.cpufreq_policy(n, 800_000, 3_000_000);
        }
        let names: Vec<String> = discover(&fake.sysfs())
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(names, ["policy0", "policy2", "policy10"]);
    }
}
