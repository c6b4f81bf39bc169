//! RAPL through the powercap class: `sys/class/powercap/intel-rapl:N/{name,
//! energy_uj, max_energy_range_uj, constraint_0_power_limit_uw,
//! constraint_0_max_power_uw}`.
//!
//! Only package zones (`intel-rapl:N` whose `name` starts with `package`) are
//! used: their energy is the CPU package energy and their long-term limit
//! (`constraint_0`) is the CPU cap. `energy_uj` wraps at
//! `max_energy_range_uj`; [`EnergyCounter`] takes differences modulo the range.

use std::path::PathBuf;

use crate::sysfs::{self, Sysfs, SysfsError};

/// One RAPL package zone.
#[derive(Debug, Clone, PartialEq)]
pub struct RaplZone {
    /// Directory name, `intel-rapl:0`.
    pub id: String,
    /// Content of `name`, `package-0`.
    pub name: String,
    /// `max_energy_range_uj`, when readable.
    pub max_energy_range_uj: Option<u64>,
    /// `constraint_0_max_power_uw`, when present and non-zero.
    pub max_power_uw: Option<u64>,
    /// Whether `constraint_0_power_limit_uw` exists (the zone can be capped).
    pub cappable: bool,
    dir: PathBuf,
}

/// The package zones under `sysfs`, sorted by id.
pub fn discover(sysfs: &Sysfs) -> Vec<RaplZone> {
    let mut zones = Vec::new();
    for dir in sysfs::entries_with_prefix(&sysfs.powercap_dir(), "intel-rapl:") {
        let id = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        // Sub-zones (core, uncore, dram) are `intel-rapl:N:M`.
        if id.matches(':').count() != 1 {
            continue;
        }
        let Ok(name) = sysfs::read_trimmed(&dir.join("name")) else {
            continue;
        };
        if !name.starts_with("package") {
            continue;
        }
        zones.push(RaplZone {
            max_energy_range_uj: sysfs::read_u64_opt(&dir.join("max_energy_range_uj")),
            max_power_uw: sysfs::read_u64_opt(&dir.join("constraint_0_max_power_uw"))
                .filter(|w| *w > 0),
            cappable: dir.join("constraint_0_power_limit_uw").exists(),
            id,
            name,
            dir,
        });
    }
    zones
}

impl RaplZone {
    /// `energy_uj` now.
    pub fn energy_uj(&self) -> Result<u64, SysfsError> {
        sysfs::read_u64(&self.dir.join("energy_uj"))
    }

    /// `constraint_0_power_limit_uw` now.
    pub fn power_limit_uw(&self) -> Result<u64, SysfsError> {
        sysfs::read_u64(&self.limit_path())
    }

    /// Write `constraint_0_power_limit_uw`.
    pub fn set_power_limit_uw(&self, uw: u64) -> Result<(), SysfsError> {
        sysfs::write_u64(&self.limit_path(), uw)
    }

    /// The limit file (for messages).
    pub fn limit_path(&self) -> PathBuf {
        self.dir.join("constraint_0_power_limit_uw")
    }
}

/// Energy accumulated from a wrapping `energy_uj` counter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnergyCounter {
    last_uj: Option<u64>,
}

impl EnergyCounter {
    /// Feed a new raw reading; returns the energy since the previous one, µJ
    /// (`None` on the first reading). A counter that went backwards has
    /// wrapped at `range_uj`; without a known range the step is discarded.
    pub fn update(&mut self, raw_uj: u64, range_uj: Option<u64>) -> Option<u64> {
        let prev = self.last_uj.replace(raw_uj)?;
        if raw_uj >= prev {
            Some(raw_uj - prev)
        } else {
            range_uj
                .filter(|r| *r >= prev)
                .map(|range| range - prev + raw_uj)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeSysfs;

    #[test]
    fn energy_counter_handles_wrap_around() {
        let mut c = EnergyCounter::default();
        assert_eq!(c.update(900, Some(1000)), None);
        assert_eq!(c.update(950, Some(1000)), Some(50));
        // 950 → 1000 (wrap) → 30: 50 + 30.
        assert_eq!(c.update(30, Some(1000)), Some(80));
        assert_eq!(c.update(10, None), None, "no range: the step is unknown");
    }

    #[test]
    fn only_package_zones_are_discovered() {
        let fake = FakeSysfs::new();
        fake.rapl_zone(
            "intel-rapl:1",
            "package-1",
            0,
            1 << 32,
            Some((90_000_000, 150_000_000)),
        );
        fake.rapl_zone(
            "intel-rapl:0",
            "package-0",
            5,
            1 << 32,
            Some((100_000_000, 0)),
        );
        fake.rapl_zone("intel-rapl:0:0", "core", 0, 1 << 32, Some((1, 2)));
        fake.rapl_zone("intel-rapl:2", "psys", 0, 1 << 32, None);
        let zones = discover(&fake.sysfs());
        let ids: Vec<&str> = zones.iter().map(|z| z.id.as_str()).collect();
        assert_eq!(ids, ["intel-rapl:0", "intel-rapl:1"]);
        assert_eq!(zones[0].max_power_uw, None, "0 means unknown");
        assert_eq!(zones[1].max_power_uw, Some(150_000_000));
        assert!(zones[0].cappable);
        assert_eq!(zones[0].energy_uj().unwrap(), 5);
        zones[1].set_power_limit_uw(80_000_000).unwrap();
        assert_eq!(zones[1].power_limit_uw().unwrap(), 80_000_000);
    }
}
