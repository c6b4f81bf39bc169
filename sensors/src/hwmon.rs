//! hwmon temperatures: `sys/class/hwmon/hwmonN/{name, tempK_input,
//! tempK_label, tempK_max, tempK_crit}` in millidegrees Celsius.
//!
//! The index N is not stable across boots, so chips are matched by `name`
//! (`coretemp`, `k10temp`, …), never by index.

use std::path::{Path, PathBuf};

use crate::sysfs::{self, Sysfs, SysfsError};

/// One temperature sensor of a chip.
#[derive(Debug, Clone, PartialEq)]
pub struct TempSensor {
    /// K in `tempK_input`.
    pub index: u32,
    /// `tempK_label` when present (`Package id 0`, `Tctl`, …).
    pub label: Option<String>,
    /// `tempK_max`, °C.
    pub max_c: Option<f64>,
    /// `tempK_crit`, °C.
    pub crit_c: Option<f64>,
    input: PathBuf,
}

impl TempSensor {
    /// The limit to stay away from: the lower of `max` and `crit`, when the
    /// chip reports either.
    pub fn limit_c(&self) -> Option<f64> {
        match (self.max_c, self.crit_c) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// A hwmon chip with at least one temperature input.
#[derive(Debug, Clone, PartialEq)]
pub struct HwmonChip {
    /// Content of its `name` file.
    pub name: String,
    /// Its directory (for messages).
    pub dir: PathBuf,
    /// Its temperature sensors, by index.
    pub sensors: Vec<TempSensor>,
}

/// One temperature reading with the limit it is judged against.
#[derive(Debug, Clone, PartialEq)]
pub struct TempReading {
    /// `chip/label` (or `chip/tempK`).
    pub source: String,
    /// Temperature, °C.
    pub temp_c: f64,
    /// Limit from the hardware (`max`/`crit`), °C, when it reports one.
    pub limit_c: Option<f64>,
}

fn millidegrees(path: &Path) -> Option<f64> {
    sysfs::read_i64(path).ok().map(|m| m as f64 / 1000.0)
}

/// Every hwmon chip under `sysfs` whose `name` is in `names` (all chips when
/// `names` is empty), in directory order.
pub fn discover(sysfs: &Sysfs, names: &[String]) -> Vec<HwmonChip> {
    let mut chips = Vec::new();
    for dir in sysfs::entries_with_prefix(&sysfs.hwmon_dir(), "hwmon") {
        let Ok(name) = sysfs::read_trimmed(&dir.join("name")) else {
            continue;
        };
        if !names.is_empty() && !names.contains(&name) {
            continue;
        }
        let mut sensors = Vec::new();
        for input in sysfs::entries_with_prefix(&dir, "temp") {
            let file = input.file_name().unwrap_or_default().to_string_lossy();
            let Some(index) = file
                .strip_prefix("temp")
                .and_then(|r| r.strip_suffix("_input"))
                .and_then(|k| k.parse::<u32>().ok())
            else {
                continue;
            };
            let attr = |suffix: &str| dir.join(format!("temp{index}_{suffix}"));
            sensors.push(TempSensor {
                index,
                label: sysfs::read_trimmed(&attr("label")).ok(),
                max_c: millidegrees(&attr("max")).filter(|c| *c > 0.0),
                crit_c: millidegrees(&attr("crit")).filter(|c| *c > 0.0),
                input,
            });
        }
        sensors.sort_by_key(|s| s.index);
        if !sensors.is_empty() {
            chips.push(HwmonChip { name, dir, sensors });
        }
    }
    chips
}

impl HwmonChip {
    /// Read every sensor of the chip; a sensor that fails to read gives its
    /// error in place.
    pub fn read(&self) -> Vec<Result<TempReading, SysfsError>> {
        self.sensors
            .iter()
            .map(|s| {
                let milli = sysfs::read_i64(&s.input)?;
                Ok(TempReading {
                    source: format!(
                        "{}/{}",
                        self.name,
                        s.label
                            .clone()
                            .unwrap_or_else(|| format!("temp{}", s.index))
                    ),
                    temp_c: milli as f64 / 1000.0,
                    limit_c: s.limit_c(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeSysfs;

    #[test]
    fn chips_are_matched_by_name_not_index() {
        let fake = FakeSysfs::new();
        fake.hwmon(3, "nvme", &[(1, "Composite", 41_000, Some(80_000), None)]);
        fake.hwmon(
            0,
            "coretemp",
            &[
                (1, "Package id 0", 55_000, Some(84_000), Some(100_000)),
                (2, "Core 0", 52_000, None, Some(100_000)),
            ],
        );
        fake.hwmon(1, "acpitz", &[(1, "", 30_000, None, None)]);
        let chips = discover(&fake.sysfs(), &["coretemp".to_owned()]);
        assert_eq!(chips.len(), 1);
        assert_eq!(chips[0].name, "coretemp");
        let readings: Vec<TempReading> = chips[0].read().into_iter().map(Result::unwrap).collect();
        assert_eq!(readings[0].source, "coretemp/Package id 0");
        assert_eq!(readings[0].temp_c, 55.0);
        assert_eq!(readings[0].limit_c, Some(84.0));
        assert_eq!(readings[1].limit_c, Some(100.0));
        assert_eq!(discover(&fake.sysfs(), &[]).len(), 3);
    }

    #[test]
    fn an_absent_hwmon_class_gives_no_chips() {
        let fake = FakeSysfs::new();
        assert!(discover(&fake.sysfs(), &[]).is_empty());
    }
}
