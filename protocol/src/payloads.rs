//! JSON payloads of protocol v1 (DESIGN.md §4.2), with decoding that rejects
//! bad input with an error naming the field.
//!
//! Every payload carries `ts` (RFC 3339). Decode with [`decode`], which parses
//! the JSON and then runs the payload's [`Payload::validate`]; anything that
//! fails is reported and must change nothing on the receiving side.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Upper bound accepted for any single power figure (W): 1 MW. A larger
/// number in a cap or telemetry is treated as garbage, not as a command.
pub const MAX_PLAUSIBLE_W: f64 = 1.0e6;
/// Longest lease a controller may grant (s): one day.
pub const MAX_LEASE_S: f64 = 86_400.0;
/// Largest heat figure accepted from a consumer (kW): 1 GW.
pub const MAX_PLAUSIBLE_KW: f64 = 1.0e6;
/// Most VMs one telemetry message or cap may name.
pub const MAX_VMS: usize = 1024;
/// Most vCPUs (or CPU cores of quota) one VM may have.
pub const MAX_VM_VCPUS: f64 = 4096.0;

/// Why a payload was refused.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// Not JSON, or not the shape of the payload (missing field, wrong type).
    #[error("malformed payload: {0}")]
    Json(#[from] serde_json::Error),
    /// Well-formed JSON whose value is out of range.
    #[error("invalid field `{field}`: {problem}")]
    Invalid {
        /// Field name (dotted path for nested fields).
        field: String,
        /// What is wrong with it.
        problem: String,
    },
}

impl PayloadError {
    fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// A payload that can check its own values after parsing.
pub trait Payload: DeserializeOwned {
    /// Check ranges and consistency.
    fn validate(&self) -> Result<(), PayloadError>;
}

/// Parse and validate a payload.
pub fn decode<T: Payload>(bytes: &[u8]) -> Result<T, PayloadError> {
    let value: T = serde_json::from_slice(bytes)?;
    value.validate()?;
    Ok(value)
}

fn check_range(field: &str, v: f64, min: f64, max: f64) -> Result<(), PayloadError> {
    if !v.is_finite() {
        return Err(PayloadError::invalid(field, "not a finite number"));
    }
    if v < min || v > max {
        return Err(PayloadError::invalid(
            field,
            format!("{v} is outside [{min}, {max}]"),
        ));
    }
    Ok(())
}

fn check_opt(field: &str, v: Option<f64>, min: f64, max: f64) -> Result<(), PayloadError> {
    v.map_or(Ok(()), |v| check_range(field, v, min, max))
}

/// Node telemetry, `node/<node>/telemetry`, agent → controller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Telemetry {
    /// When the readings were taken.
    pub ts: DateTime<Utc>,
    /// CPU utilisation, 0–1.
    pub cpu_util: f64,
    /// Hottest CPU temperature (hwmon), °C.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_temp_c: Option<f64>,
    /// Server power (RAPL package + GPUs, or a power model), W.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_w: Option<f64>,
    /// Cumulative energy counter, J (monotonic while the agent runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub energy_j: Option<f64>,
    /// Cap in force (server total), W; absent when uncapped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap_w: Option<f64>,
    /// Memory in use, GiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_used_gib: Option<f64>,
    /// Memory installed, GiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_total_gib: Option<f64>,
    /// Whether the local thermal guard is holding the cap below the
    /// controller's.
    #[serde(default)]
    pub thermal_guard: bool,
    /// Per-GPU readings.
    #[serde(default)]
    pub gpus: Vec<GpuTelemetry>,
    /// The VMs on this host (DESIGN.md §4.6), read from cgroup v2; absent
    /// when the agent does not know them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vms: Option<Vec<VmTelemetry>>,
}

/// One VM's readings inside [`Telemetry`] (DESIGN.md §4.6). Every figure is
/// optional: absent means "not known".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmTelemetry {
    /// The VM's id (libvirt domain name, Proxmox vmid); a valid topic level.
    pub id: String,
    /// Virtual CPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<u32>,
    /// Memory limit (cgroup `memory.max`), GiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_gib: Option<f64>,
    /// Memory in use (cgroup `memory.current`), GiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_used_gib: Option<f64>,
    /// Cumulative CPU time (cgroup `cpu.stat` `usage_usec`), s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_s: Option<f64>,
    /// CPU used over the last interval as a share of its vCPUs, 0–1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_util: Option<f64>,
    /// CPU quota in force (cgroup `cpu.max`), cores; absent when unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_quota_cores: Option<f64>,
}

/// Why `id` cannot name a VM (as a topic level and as an argument to the
/// agent's actuators), or `Ok`. A VM id is a valid topic level
/// ([`crate::topics::valid_level`]) that is not `.` or `..` and holds no
/// backslash, whitespace or control character.
pub fn check_vm_id(id: &str) -> Result<(), String> {
    if !crate::topics::valid_level(id) {
        return Err(format!(
            "VM id {id:?} is not a topic level (empty, over 128 bytes, or with / + # NUL)"
        ));
    }
    if id == "." || id == ".." {
        return Err(format!("VM id {id:?} is a path component"));
    }
    if id
        .chars()
        .any(|c| c == '\\' || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "VM id {id:?} holds a backslash, whitespace or a control character"
        ));
    }
    Ok(())
}

impl VmTelemetry {
    /// Check one VM's figures on their own (field names start with `vm.`),
    /// so a sender can leave out one odd VM instead of the whole message.
    pub fn validate(&self) -> Result<(), PayloadError> {
        check_vm_telemetry("vm", self)
    }
}

fn check_vm_telemetry(prefix: &str, vm: &VmTelemetry) -> Result<(), PayloadError> {
    let f = |name: &str| format!("{prefix}.{name}");
    check_vm_id(&vm.id).map_err(|p| PayloadError::invalid(f("id"), p))?;
    if let Some(v) = vm.vcpus {
        check_range(&f("vcpus"), f64::from(v), 0.0, MAX_VM_VCPUS)?;
    }
    check_opt(&f("mem_gib"), vm.mem_gib, 0.0, 1.0e6)?;
    check_opt(&f("mem_used_gib"), vm.mem_used_gib, 0.0, 1.0e6)?;
    check_opt(&f("cpu_s"), vm.cpu_s, 0.0, f64::MAX)?;
    check_opt(&f("cpu_util"), vm.cpu_util, 0.0, 1.0)?;
    check_opt(&f("cpu_quota_cores"), vm.cpu_quota_cores, 0.0, MAX_VM_VCPUS)?;
    Ok(())
}

fn check_vms(vms: &[VmTelemetry]) -> Result<(), PayloadError> {
    if vms.len() > MAX_VMS {
        return Err(PayloadError::invalid(
            "vms",
            format!("more than {MAX_VMS} VMs"),
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, vm) in vms.iter().enumerate() {
        check_vm_telemetry(&format!("vms[{i}]"), vm)?;
        if !seen.insert(vm.id.as_str()) {
            return Err(PayloadError::invalid(
                format!("vms[{i}].id"),
                format!("{:?} appears twice", vm.id),
            ));
        }
    }
    Ok(())
}

/// One GPU's readings inside [`Telemetry`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuTelemetry {
    /// NVML device index.
    pub index: u32,
    /// Power draw, W.
    pub power_w: f64,
    /// Core temperature, °C.
    pub temp_c: f64,
    /// Power management limit in force, W.
    pub limit_w: f64,
}

impl Payload for Telemetry {
    fn validate(&self) -> Result<(), PayloadError> {
        check_range("cpu_util", self.cpu_util, 0.0, 1.0)?;
        check_opt("cpu_temp_c", self.cpu_temp_c, -60.0, 200.0)?;
        check_opt("power_w", self.power_w, 0.0, MAX_PLAUSIBLE_W)?;
        check_opt("energy_j", self.energy_j, 0.0, f64::MAX)?;
        check_opt("cap_w", self.cap_w, 0.0, MAX_PLAUSIBLE_W)?;
        check_opt("mem_used_gib", self.mem_used_gib, 0.0, 1.0e6)?;
        check_opt("mem_total_gib", self.mem_total_gib, 0.0, 1.0e6)?;
        for (i, g) in self.gpus.iter().enumerate() {
            check_range(
                &format!("gpus[{i}].power_w"),
                g.power_w,
                0.0,
                MAX_PLAUSIBLE_W,
            )?;
            check_range(&format!("gpus[{i}].temp_c"), g.temp_c, -60.0, 200.0)?;
            check_range(
                &format!("gpus[{i}].limit_w"),
                g.limit_w,
                0.0,
                MAX_PLAUSIBLE_W,
            )?;
        }
        if let Some(vms) = &self.vms {
            check_vms(vms)?;
        }
        Ok(())
    }
}

/// Power cap command, `node/<node>/cap`, controller → agent. QoS 1, never
/// retained; QoS 1 may deliver twice, so agents apply a given `seq` once.
///
/// Unknown fields are refused by this version (a typo must not pass as a
/// cap); the fields added by DESIGN.md §4.6 are optional, so their absence
/// means "no quota" / "no epoch".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapCommand {
    /// When the controller issued it.
    pub ts: DateTime<Utc>,
    /// Server total cap, W; `null` lifts the controller's cap (hardware and
    /// configured bounds, and the thermal guard, still apply).
    pub cap_w: Option<f64>,
    /// Optional per-GPU caps, W, indexed by NVML device index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_caps_w: Option<Vec<f64>>,
    /// The cap holds this long unless renewed; afterwards the agent returns
    /// to its configured safe default.
    pub lease_s: f64,
    /// Monotonic sequence number; a command with a `seq` already applied is
    /// ignored.
    pub seq: u64,
    /// The controller's epoch: its start time in ms since the Unix epoch.
    /// A command with a higher epoch than the last one applied resets the
    /// `seq` high-water mark; a lower one is refused while that lease runs.
    /// Absent counts as 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// Per-VM CPU quotas (DESIGN.md §4.6), cores by VM id: enforced on each
    /// VM's cgroup `cpu.max` under this command's lease and `seq`; a VM
    /// left out has no quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_cpu_cores: Option<BTreeMap<String, f64>>,
}

impl Payload for CapCommand {
    fn validate(&self) -> Result<(), PayloadError> {
        check_opt("cap_w", self.cap_w, 0.0, MAX_PLAUSIBLE_W)?;
        if let Some(caps) = &self.gpu_caps_w {
            if caps.len() > 64 {
                return Err(PayloadError::invalid("gpu_caps_w", "more than 64 GPUs"));
            }
            for (i, c) in caps.iter().enumerate() {
                check_range(&format!("gpu_caps_w[{i}]"), *c, 0.0, MAX_PLAUSIBLE_W)?;
            }
        }
        if !(self.lease_s.is_finite() && self.lease_s > 0.0 && self.lease_s <= MAX_LEASE_S) {
            return Err(PayloadError::invalid(
                "lease_s",
                format!("{} is not in (0, {MAX_LEASE_S}]", self.lease_s),
            ));
        }
        if let Some(vms) = &self.vm_cpu_cores {
            if vms.len() > MAX_VMS {
                return Err(PayloadError::invalid(
                    "vm_cpu_cores",
                    format!("more than {MAX_VMS} VMs"),
                ));
            }
            for (id, cores) in vms {
                let field = format!("vm_cpu_cores.{id}");
                check_vm_id(id).map_err(|p| PayloadError::invalid(&field, p))?;
                check_range(&field, *cores, 0.0, MAX_VM_VCPUS)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod vm_tests {
    use super::*;

    const CAP: &str = r#"{"ts":"2026-01-15T06:00:00Z","cap_w":250,"lease_s":60,"seq":7"#;

    fn cap_with(extra: &str) -> Result<CapCommand, PayloadError> {
        decode::<CapCommand>(format!("{CAP}{extra}}}").as_bytes())
    }

    #[test]
    fn a_cap_with_vm_quotas_and_an_epoch_round_trips() {
        let cap =
            cap_with(r#","epoch":1767225600000,"vm_cpu_cores":{"web1":2.5,"100":0}"#).unwrap();
        assert_eq!(cap.epoch, Some(1_767_225_600_000));
        let vms = cap.vm_cpu_cores.clone().unwrap();
        assert_eq!((vms["web1"], vms["100"]), (2.5, 0.0));
        let again: CapCommand = decode(serde_json::to_vec(&cap).unwrap().as_slice()).unwrap();
        assert_eq!(cap, again);
    }

    #[test]
    fn an_old_cap_without_the_new_fields_still_decodes_and_encodes_without_them() {
        let cap = cap_with("").unwrap();
        assert_eq!((cap.epoch, cap.vm_cpu_cores.as_ref()), (None, None));
        let text = serde_json::to_string(&cap).unwrap();
        assert!(
            !text.contains("epoch") && !text.contains("vm_cpu_cores"),
            "{text}"
        );
    }

    #[test]
    fn bad_vm_quotas_are_refused_naming_the_vm() {
        let cases = [
            (r#","vm_cpu_cores":{"web1":-1}"#, "vm_cpu_cores.web1"),
            (r#","vm_cpu_cores":{"web1":1e9}"#, "vm_cpu_cores.web1"),
            (r#","vm_cpu_cores":{"a/b":1}"#, "topic level"),
            (r#","vm_cpu_cores":{"":1}"#, "topic level"),
            (r#","vm_cpu_cores":{"..":1}"#, "path component"),
            (r#","vm_cpu_cores":{"web 1":1}"#, "whitespace"),
            (r#","vm_cpu_cores":{"web1":"2"}"#, "malformed"),
            (r#","epoch":-3"#, "malformed"),
        ];
        for (extra, needle) in cases {
            let err = cap_with(extra).unwrap_err().to_string();
            assert!(
                err.contains(needle),
                "{extra}: {err} should mention {needle}"
            );
        }
    }

    #[test]
    fn telemetry_with_vms_round_trips_and_old_telemetry_has_none() {
        let json = br#"{"ts":"2026-01-15T06:00:00Z","cpu_util":0.5,"vms":[{"id":"web1","vcpus":4,"mem_gib":8.0,"mem_used_gib":5.1,"cpu_s":123456.7,"cpu_util":0.43},{"id":"100"}]}"#;
        let t: Telemetry = decode(json).unwrap();
        let vms = t.vms.clone().unwrap();
        assert_eq!(vms[0].vcpus, Some(4));
        assert_eq!(vms[0].cpu_s, Some(123_456.7));
        assert_eq!(vms[1].cpu_util, None, "absent means not known");
        let again: Telemetry = decode(serde_json::to_vec(&t).unwrap().as_slice()).unwrap();
        assert_eq!(t, again);
        let old: Telemetry = decode(br#"{"ts":"2026-01-15T06:00:00Z","cpu_util":0.5}"#).unwrap();
        assert_eq!(old.vms, None);
    }

    #[test]
    fn bad_vm_telemetry_is_refused_naming_the_field() {
        let base = r#"{"ts":"2026-01-15T06:00:00Z","cpu_util":0.5,"vms":"#;
        let cases = [
            (r#"[{"id":"a","cpu_util":1.5}]"#, "vms[0].cpu_util"),
            (r#"[{"id":"a","mem_gib":-1}]"#, "vms[0].mem_gib"),
            (r#"[{"id":"a"},{"id":"b#"}]"#, "vms[1].id"),
            (r#"[{"id":"a"},{"id":"a"}]"#, "appears twice"),
            (r#"[{"vcpus":2}]"#, "malformed"),
        ];
        for (vms, needle) in cases {
            let err = decode::<Telemetry>(format!("{base}{vms}}}").as_bytes())
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{vms}: {err} should mention {needle}");
        }
    }

    #[test]
    fn vm_ids_are_checked_with_a_reason() {
        for ok in ["web1", "100", "db-primary.prod", "machine_1"] {
            assert_eq!(check_vm_id(ok), Ok(()), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a+b", "a#", "a\\b", "a\tb", "a b"] {
            let why = check_vm_id(bad).unwrap_err();
            assert!(why.contains("VM id"), "{bad}: {why}");
        }
    }
}

/// Heat demand, `consumer/<id>/demand`, greenhouse → controller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeatDemand {
    /// When the consumer computed it.
    pub ts: DateTime<Utc>,
    /// Heat wanted now, kW.
    pub demand_kw: f64,
    /// Optional forecast, kW per step, starting now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast_kw: Option<Vec<f64>>,
    /// Step of the forecast, s (required with `forecast_kw`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_s: Option<f64>,
    /// What a delivered kWh is worth to the consumer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heat_value_per_kwh: Option<f64>,
    /// Supply temperature the consumer needs, °C.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supply_temp_c: Option<f64>,
}

impl Payload for HeatDemand {
    fn validate(&self) -> Result<(), PayloadError> {
        check_range("demand_kw", self.demand_kw, 0.0, MAX_PLAUSIBLE_KW)?;
        if let Some(f) = &self.forecast_kw {
            if f.len() > 10_000 {
                return Err(PayloadError::invalid(
                    "forecast_kw",
                    "more than 10000 steps",
                ));
            }
            for (i, v) in f.iter().enumerate() {
                check_range(&format!("forecast_kw[{i}]"), *v, 0.0, MAX_PLAUSIBLE_KW)?;
            }
            match self.step_s {
                None => {
                    return Err(PayloadError::invalid(
                        "step_s",
                        "required when forecast_kw is given",
                    ))
                }
                Some(s) => check_range("step_s", s, 1.0, 86_400.0)?,
            }
        } else {
            check_opt("step_s", self.step_s, 1.0, 86_400.0)?;
        }
        check_opt("heat_value_per_kwh", self.heat_value_per_kwh, 0.0, 1.0e3)?;
        check_opt("supply_temp_c", self.supply_temp_c, -20.0, 150.0)?;
        Ok(())
    }
}

/// Indoor climate, `consumer/<id>/climate`, for greenhouses that publish
/// only their temperature and setpoint; the bridge estimates the demand.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Climate {
    /// When measured.
    pub ts: DateTime<Utc>,
    /// Indoor air temperature, °C.
    pub indoor_c: f64,
    /// Current heating setpoint, °C.
    pub setpoint_c: f64,
    /// Outdoor temperature, °C, if the climate computer knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outdoor_c: Option<f64>,
}

impl Payload for Climate {
    fn validate(&self) -> Result<(), PayloadError> {
        check_range("indoor_c", self.indoor_c, -50.0, 80.0)?;
        check_range("setpoint_c", self.setpoint_c, -50.0, 80.0)?;
        check_opt("outdoor_c", self.outdoor_c, -80.0, 70.0)?;
        Ok(())
    }
}

/// Heat offer, `consumer/<id>/offer`, controller → greenhouse, retained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeatOffer {
    /// When the plan behind it was made.
    pub ts: DateTime<Utc>,
    /// Heat the site can deliver now, kW.
    pub available_kw: f64,
    /// Planned delivery per step, kW, starting now.
    pub forecast_kw: Vec<f64>,
    /// Step of the forecast, s.
    pub step_s: f64,
    /// Supply temperature the site delivers at, °C.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supply_temp_c: Option<f64>,
}

impl Payload for HeatOffer {
    fn validate(&self) -> Result<(), PayloadError> {
        check_range("available_kw", self.available_kw, 0.0, MAX_PLAUSIBLE_KW)?;
        for (i, v) in self.forecast_kw.iter().enumerate() {
            check_range(&format!("forecast_kw[{i}]"), *v, 0.0, MAX_PLAUSIBLE_KW)?;
        }
        check_range("step_s", self.step_s, 1.0, 86_400.0)?;
        check_opt("supply_temp_c", self.supply_temp_c, -20.0, 150.0)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_command_round_trips() {
        let json = br#"{"ts":"2026-01-15T06:00:00Z","cap_w":250.5,"lease_s":60,"seq":7}"#;
        let cap: CapCommand = decode(json).unwrap();
        assert_eq!(cap.cap_w, Some(250.5));
        assert_eq!(cap.seq, 7);
        let again: CapCommand = decode(serde_json::to_vec(&cap).unwrap().as_slice()).unwrap();
        assert_eq!(cap, again);
    }

    #[test]
    fn bad_caps_name_the_field() {
        let cases: [(&[u8], &str); 5] = [
            (b"not json", "malformed"),
            (
                br#"{"ts":"2026-01-15T06:00:00Z","cap_w":-5,"lease_s":60,"seq":1}"#,
                "cap_w",
            ),
            (
                br#"{"ts":"2026-01-15T06:00:00Z","cap_w":1e12,"lease_s":60,"seq":1}"#,
                "cap_w",
            ),
            (
                br#"{"ts":"2026-01-15T06:00:00Z","cap_w":100,"lease_s":0,"seq":1}"#,
                "lease_s",
            ),
            (
                br#"{"ts":"2026-01-15T06:00:00Z","cap_w":"100","lease_s":5,"seq":1}"#,
                "malformed",
            ),
        ];
        for (payload, needle) in cases {
            let err = decode::<CapCommand>(payload).unwrap_err().to_string();
            assert!(err.contains(needle), "{err} should mention {needle}");
        }
        let missing = decode::<CapCommand>(br#"{"ts":"2026-01-15T06:00:00Z","cap_w":100}"#)
            .unwrap_err()
            .to_string();
        assert!(missing.contains("lease_s"), "{missing}");
    }

    #[test]
    fn demand_forecast_needs_a_step() {
        let err = decode::<HeatDemand>(
            br#"{"ts":"2026-01-15T06:00:00Z","demand_kw":120,"forecast_kw":[1,2]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("step_s"), "{err}");
        let ok: HeatDemand = decode(
            br#"{"ts":"2026-01-15T06:00:00Z","demand_kw":120,"forecast_kw":[1,2],"step_s":900}"#,
        )
        .unwrap();
        assert_eq!(ok.forecast_kw.as_deref(), Some(&[1.0, 2.0][..]));
    }

    #[test]
    fn telemetry_rejects_utilisation_above_one() {
        let err = decode::<Telemetry>(br#"{"ts":"2026-01-15T06:00:00Z","cpu_util":1.5}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("cpu_util"), "{err}");
    }
}

// ---------------------------------------------------------------------------
// Facility write results (DESIGN.md §4.8)
// ---------------------------------------------------------------------------

/// Most entries a write request (and so its result) may carry.
pub const MAX_WRITE_POINTS: usize = 256;
/// Longest `reason` accepted in a [`WriteResult`], bytes.
pub const MAX_REASON_LEN: usize = 1024;

/// The outcome of one `facility/<device>/set` request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteStatus {
    /// Written to the device (final).
    Applied,
    /// Refused: by the bridge's checks, or by the device with an exception
    /// (final; nothing of the request was written, or the device refused it).
    Refused,
    /// Kept as the wanted value: the device is down, or the point was
    /// written too recently; a final result follows.
    Pending,
    /// Dropped without being written: superseded by a newer write to the
    /// same point, or not applied within `write_expiry_s` (final).
    Expired,
}

impl WriteStatus {
    /// Whether no other result follows this one for the same request.
    pub fn is_final(self) -> bool {
        self != WriteStatus::Pending
    }
}

/// Result of a facility write, `facility/<device>/set/result`, bridge → all;
/// QoS 1, not retained. Every request gets exactly one final result
/// (`applied`, `refused` or `expired`), preceded by one `pending` when it had
/// to wait.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteResult {
    /// When the bridge decided this outcome.
    pub ts: DateTime<Utc>,
    /// The request as received, `{point: value}` (its `ts` key left out);
    /// empty when the payload was not a JSON object.
    pub request: serde_json::Map<String, serde_json::Value>,
    /// The `ts` the requester put in the request, echoed to help it match
    /// results to requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_ts: Option<DateTime<Utc>>,
    /// The outcome.
    pub status: WriteStatus,
    /// Why (names the point where one is to blame); absent on a plain
    /// `applied`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Payload for WriteResult {
    fn validate(&self) -> Result<(), PayloadError> {
        if self.request.len() > MAX_WRITE_POINTS {
            return Err(PayloadError::invalid(
                "request",
                format!("more than {MAX_WRITE_POINTS} points"),
            ));
        }
        if self.request.is_empty() && self.status != WriteStatus::Refused {
            return Err(PayloadError::invalid(
                "request",
                "empty, but only a refused request may be",
            ));
        }
        match &self.reason {
            Some(r) if r.len() > MAX_REASON_LEN => Err(PayloadError::invalid(
                "reason",
                format!("longer than {MAX_REASON_LEN} bytes"),
            )),
            None if matches!(self.status, WriteStatus::Refused | WriteStatus::Expired) => Err(
                PayloadError::invalid("reason", "required when the status is refused or expired"),
            ),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod write_result_tests {
    use super::*;

    #[test]
    fn a_write_result_round_trips_with_its_status_in_snake_case() {
        let json = br#"{"ts":"2026-01-15T06:00:00Z","request":{"supply_setpoint_c":45.5},
            "request_ts":"2026-01-15T05:59:59Z","status":"pending","reason":"device `hp` is down"}"#;
        let r: WriteResult = decode(json).unwrap();
        assert_eq!(r.status, WriteStatus::Pending);
        assert!(!r.status.is_final());
        assert_eq!(r.request["supply_setpoint_c"], 45.5);
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains(r#""status":"pending""#), "{text}");
        assert_eq!(decode::<WriteResult>(text.as_bytes()).unwrap(), r);
    }

    #[test]
    fn bad_write_results_name_the_field() {
        let cases: [(&[u8], &str); 4] = [
            (
                br#"{"ts":"2026-01-15T06:00:00Z","request":{"a":1},"status":"done"}"#,
                "malformed",
            ),
            (
                br#"{"ts":"2026-01-15T06:00:00Z","request":{},"status":"applied"}"#,
                "request",
            ),
            (
                br#"{"ts":"2026-01-15T06:00:00Z","request":{"a":1},"status":"expired"}"#,
                "reason",
            ),
            (
                br#"{"ts":"2026-01-15T06:00:00Z","request":{"a":1},"status":"applied","extra":1}"#,
                "malformed",
            ),
        ];
        for (payload, needle) in cases {
            let err = decode::<WriteResult>(payload).unwrap_err().to_string();
            assert!(err.contains(needle), "{err} should mention {needle}");
        }
        let refused_malformed: WriteResult = decode(
            br#"{"ts":"2026-01-15T06:00:00Z","request":{},"status":"refused","reason":"malformed set payload"}"#,
        )
        .unwrap();
        assert!(refused_malformed.status.is_final());
    }
}
