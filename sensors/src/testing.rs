//! Fakes for tests: a sysfs tree in a temporary directory ([`FakeSysfs`])
//! and a GPU pool that behaves like NVML ([`FakeGpu`]). They exist beside the
//! real backends (the machine's `/sys`, [`crate::gpu::NvmlGpu`]) so the agent
//! can be tested on machines without the hardware.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::gpu::{GpuBackend, GpuError};
use crate::sysfs::Sysfs;

/// A fake sysfs tree in a temporary directory (removed on drop).
#[derive(Debug)]
pub struct FakeSysfs {
    dir: tempfile::TempDir,
}

impl Default for FakeSysfs {
    fn default() -> Self {
        Self::new()
    }
}

/// A temperature sensor of a fake hwmon chip: `(K, label, input m°C,
/// max m°C, crit m°C)`; an empty label writes no `tempK_label`.
pub type FakeTemp<'a> = (u32, &'a str, i64, Option<i64>, Option<i64>);

impl FakeSysfs {
    /// An empty tree.
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("creating a temporary directory"),
        }
    }

    /// The root directory (for `--sysfs-root`).
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// A [`Sysfs`] rooted here.
    pub fn sysfs(&self) -> Sysfs {
        Sysfs::new(self.dir.path())
    }

    /// Absolute path of `rel` (`sys/class/...`).
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Write `value` to `rel`, creating directories. The write is atomic
    /// (like a sysfs attribute's), so a running agent never reads it torn.
    pub fn write(&self, rel: &str, value: impl ToString) {
        let p = self.path(rel);
        crate::sysfs::write_atomic(&p, format!("{}\n", value.to_string()).as_bytes())
            .expect("write");
    }

    /// Read the integer in `rel`. A plain file, unlike a sysfs attribute, can
    /// be seen half-written while another process writes it: an empty or
    /// partial read is retried briefly.
    pub fn read(&self, rel: &str) -> u64 {
        let p = self.path(rel);
        let mut last = String::new();
        for _ in 0..100 {
            match fs::read_to_string(&p) {
                Ok(text) => match text.trim().parse() {
                    Ok(v) => return v,
                    Err(_) => last = text,
                },
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        panic!("{} holds {last:?}", p.display())
    }

    /// `sys/class/hwmon/hwmon{n}` named `name` with the given sensors.
    pub fn hwmon(&self, n: u32, name: &str, temps: &[FakeTemp<'_>]) {
        let base = format!("sys/class/hwmon/hwmon{n}");
        self.write(&format!("{base}/name"), name);
        for &(k, label, input, max, crit) in temps {
            self.write(&format!("{base}/temp{k}_input"), input);
            if !label.is_empty() {
                self.write(&format!("{base}/temp{k}_label"), label);
            }
            if let Some(m) = max {
                self.write(&format!("{base}/temp{k}_max"), m);
            }
            if let Some(c) = crit {
                self.write(&format!("{base}/temp{k}_crit"), c);
            }
        }
    }

    /// Set `tempK_input` of `hwmon{n}`, m°C.
    pub fn set_temp(&self, n: u32, k: u32, millidegrees: i64) {
        self.write(
            &format!("sys/class/hwmon/hwmon{n}/temp{k}_input"),
            millidegrees,
        );
    }

    /// `cpufreq/policy{n}` with hardware range `[min, max]` kHz; scaling
    /// limits start at the full range.
    pub fn cpufreq_policy(&self, n: u32, min_khz: u64, max_khz: u64) {
        let base = Self::policy_dir(n);
        self.write(&format!("{base}/cpuinfo_min_freq"), min_khz);
        self.write(&format!("{base}/cpuinfo_max_freq"), max_khz);
        self.write(&format!("{base}/scaling_min_freq"), min_khz);
        self.write(&format!("{base}/scaling_max_freq"), max_khz);
        self.write(&format!("{base}/scaling_cur_freq"), max_khz);
        self.write(&format!("{base}/scaling_governor"), "schedutil");
    }

    /// `sys/devices/system/cpu/cpufreq/policy{n}`
    pub fn policy_dir(n: u32) -> String {
        format!("sys/devices/system/cpu/cpufreq/policy{n}")
    }

    /// A powercap zone `id` (`intel-rapl:0`) named `name`, with its energy
    /// counter and, when `limit` is `Some((limit_uw, max_power_uw))`, a
    /// long-term constraint.
    pub fn rapl_zone(
        &self,
        id: &str,
        name: &str,
        energy_uj: u64,
        max_energy_range_uj: u64,
        limit: Option<(u64, u64)>,
    ) {
        let base = format!("sys/class/powercap/{id}");
        self.write(&format!("{base}/name"), name);
        self.write(&format!("{base}/energy_uj"), energy_uj);
        self.write(&format!("{base}/max_energy_range_uj"), max_energy_range_uj);
        if let Some((limit_uw, max_uw)) = limit {
            self.write(&format!("{base}/constraint_0_name"), "long_term");
            self.write(&format!("{base}/constraint_0_power_limit_uw"), limit_uw);
            self.write(&format!("{base}/constraint_0_max_power_uw"), max_uw);
        }
    }
}

/// The fake cgroup v2 mount, relative to the root (the default
/// `vms.cgroup_root`).
pub const CGROUP: &str = "sys/fs/cgroup";

/// Escape `name` the way systemd escapes a unit-name component: `-` and
/// anything but ASCII letters, digits, `_`, `.` and `:` become `\xNN`.
pub fn systemd_escape(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b':' => (b as char).to_string(),
            _ => format!("\\x{b:02x}"),
        })
        .collect()
}

impl FakeSysfs {
    /// The text of `rel`, trimmed (for files that are not one integer,
    /// like `cpu.max`); retried briefly like [`FakeSysfs::read`].
    pub fn read_text(&self, rel: &str) -> String {
        let p = self.path(rel);
        let mut last = String::new();
        for _ in 0..100 {
            match fs::read_to_string(&p) {
                Ok(text) if !text.trim().is_empty() => return text.trim().to_owned(),
                Ok(text) => last = text,
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        panic!("{} holds {last:?}", p.display())
    }

    /// A VM scope at `scope` (relative to the cgroup mount) with `cpu.max`,
    /// `cpu.stat` (`usage_usec`), `memory.max` and `memory.current`, and
    /// `vcpus` libvirt vCPU directories (none for 0). Returns the scope's
    /// path relative to the root.
    pub fn vm_scope(
        &self,
        scope: &str,
        vcpus: u32,
        cpu_max: &str,
        mem: Option<(u64, u64)>,
    ) -> String {
        let base = format!("{CGROUP}/{scope}");
        self.write(&format!("{base}/cpu.max"), cpu_max);
        self.set_vm_usage(&base, 0);
        if let Some((max_bytes, current_bytes)) = mem {
            self.write(&format!("{base}/memory.max"), max_bytes);
            self.write(&format!("{base}/memory.current"), current_bytes);
        }
        for k in 0..vcpus {
            self.write(&format!("{base}/libvirt/vcpu{k}/cpu.max"), "max 100000");
        }
        if vcpus > 0 {
            self.write(&format!("{base}/libvirt/emulator/cpu.max"), "max 100000");
        }
        base
    }

    /// A libvirt/QEMU domain `name` with domain number `n`:
    /// `machine.slice/machine-qemu\x2d<n>\x2d<escaped name>.scope`, no quota,
    /// `mem_gib` GiB of memory of which half in use.
    pub fn libvirt_vm(&self, n: u32, name: &str, vcpus: u32, mem_gib: u64) -> String {
        let scope = format!(
            "machine.slice/machine-qemu\\x2d{n}\\x2d{}.scope",
            systemd_escape(name)
        );
        let bytes = mem_gib << 30;
        self.vm_scope(&scope, vcpus, "max 100000", Some((bytes, bytes / 2)))
    }

    /// A Proxmox VM `qemu.slice/<vmid>.scope` with the given `cpu.max`
    /// (Proxmox writes its `cpulimit` there) and no memory files.
    pub fn proxmox_vm(&self, vmid: u32, cpu_max: &str) -> String {
        self.vm_scope(&format!("qemu.slice/{vmid}.scope"), 0, cpu_max, None)
    }

    /// Set `usage_usec` in `cpu.stat` of the scope at `base` (as returned
    /// by [`FakeSysfs::vm_scope`]).
    pub fn set_vm_usage(&self, base: &str, usage_usec: u64) {
        self.write(
            &format!("{base}/cpu.stat"),
            format!("usage_usec {usage_usec}\nuser_usec {usage_usec}\nsystem_usec 0"),
        );
    }
}

/// One fake GPU's state.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeGpuDevice {
    /// Power draw, mW.
    pub power_mw: u32,
    /// Temperature, °C.
    pub temp_c: u32,
    /// Energy counter, mJ.
    pub energy_mj: u64,
    /// Limit in force, mW.
    pub limit_mw: u32,
    /// Constraints, mW.
    pub min_mw: u32,
    /// Constraints, mW.
    pub max_mw: u32,
}

impl FakeGpuDevice {
    /// A device drawing `power_w` at `temp_c` with limit `limit_w` in `[min_w, max_w]`.
    pub fn new(power_w: u32, temp_c: u32, limit_w: u32, min_w: u32, max_w: u32) -> Self {
        Self {
            power_mw: power_w * 1000,
            temp_c,
            energy_mj: 0,
            limit_mw: limit_w * 1000,
            min_mw: min_w * 1000,
            max_mw: max_w * 1000,
        }
    }
}

/// A pool of fake GPUs with NVML's behaviour: limits outside the
/// constraints are refused, and writes land at once.
#[derive(Debug, Default)]
pub struct FakeGpu {
    devices: Mutex<Vec<FakeGpuDevice>>,
}

impl FakeGpu {
    /// A pool of these devices.
    pub fn new(devices: Vec<FakeGpuDevice>) -> Self {
        Self {
            devices: Mutex::new(devices),
        }
    }

    /// Change a device as the driver or another tool would.
    pub fn update(&self, index: u32, f: impl FnOnce(&mut FakeGpuDevice)) {
        let mut d = self.devices.lock().expect("fake GPU lock");
        f(&mut d[index as usize]);
    }

    /// A copy of a device's state.
    pub fn device(&self, index: u32) -> FakeGpuDevice {
        self.devices.lock().expect("fake GPU lock")[index as usize].clone()
    }

    fn with<T>(&self, index: u32, f: impl FnOnce(&mut FakeGpuDevice) -> T) -> Result<T, GpuError> {
        let mut d = self.devices.lock().expect("fake GPU lock");
        d.get_mut(index as usize).map(f).ok_or(GpuError::Device {
            index,
            op: "device_by_index",
            message: "invalid argument".into(),
        })
    }
}

impl GpuBackend for FakeGpu {
    fn name(&self) -> &'static str {
        "fake"
    }
    fn device_count(&self) -> Result<u32, GpuError> {
        Ok(self.devices.lock().expect("fake GPU lock").len() as u32)
    }
    fn power_usage_mw(&self, index: u32) -> Result<u32, GpuError> {
        self.with(index, |d| d.power_mw)
    }
    fn temperature_c(&self, index: u32) -> Result<u32, GpuError> {
        self.with(index, |d| d.temp_c)
    }
    fn total_energy_mj(&self, index: u32) -> Result<u64, GpuError> {
        self.with(index, |d| d.energy_mj)
    }
    fn power_limit_mw(&self, index: u32) -> Result<u32, GpuError> {
        self.with(index, |d| d.limit_mw)
    }
    fn power_limit_constraints_mw(&self, index: u32) -> Result<(u32, u32), GpuError> {
        self.with(index, |d| (d.min_mw, d.max_mw))
    }
    fn set_power_limit_mw(&self, index: u32, limit_mw: u32) -> Result<(), GpuError> {
        self.with(index, |d| {
            if limit_mw < d.min_mw || limit_mw > d.max_mw {
                return Err(GpuError::OutOfRange {
                    index,
                    limit_mw,
                    min_mw: d.min_mw,
                    max_mw: d.max_mw,
                });
            }
            d.limit_mw = limit_mw;
            Ok(())
        })?
    }
}
