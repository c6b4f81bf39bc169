//! The VMs on this host from cgroup v2 (DESIGN.md §4.6): discovery of their
//! scopes by configurable patterns, their vCPUs, memory and CPU time, and
//! the `cpu.max` quota file the agent writes. Pure `std::fs` under the
//! agent's injectable root; tests use fake trees ([`crate::testing`]).
//!
//! - libvirt/QEMU: `machine.slice/machine-qemu\x2d<N>\x2d<name>.scope/`,
//!   with `libvirt/vcpu<K>/` and `libvirt/emulator/` below. Names are
//!   systemd-escaped (`\x2d` is `-`) and unescaped ([`unescape`]) before a
//!   pattern is matched.
//! - Proxmox: `qemu.slice/<vmid>.scope/`.
//!
//! vCPUs are the number of `libvirt/vcpu<K>` directories; without them the
//! node falls back to the quota in `cpu.max` before the agent touched it
//! (Proxmox writes its `cpulimit` there), else they are unknown.
//!
//! An entry that matches a pattern but cannot be used (a name that is not
//! UTF-8 or not a valid VM id, a bad escape, a duplicate id) is skipped with
//! its reason ([`Skipped`]), never fatal.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use protocol::payloads::check_vm_id;
use serde::{Deserialize, Serialize};

use crate::sysfs::{self, SysfsError};

/// The default patterns: libvirt/QEMU under `machine.slice`, Proxmox under
/// `qemu.slice`.
pub const DEFAULT_PATTERNS: [&str; 2] = [
    "machine.slice/machine-qemu-*-{id}.scope",
    "qemu.slice/{id}.scope",
];

/// The kernel's smallest `cpu.max` quota, µs.
pub const MIN_QUOTA_US: u64 = 1000;
/// The kernel's default `cpu.max` period, µs.
pub const DEFAULT_PERIOD_US: u64 = 100_000;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Lit(String),
    Any,
    Id,
}

/// Where VM scopes are found: `DIR/NAME` under the cgroup root. `DIR` is a
/// literal relative path; `NAME` is matched against each directory entry's
/// unescaped name, with `*` for any text and `{id}` (exactly once, at least
/// one character) for the VM's id. Both match as little as they can, so in
/// `machine-qemu-*-{id}.scope` the `*` takes libvirt's domain number and
/// `{id}` keeps any dashes of the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmPattern {
    dir: PathBuf,
    tokens: Vec<Token>,
}

impl VmPattern {
    /// Parse `DIR/NAME`; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (dir, name) = text
            .rsplit_once('/')
            .ok_or_else(|| format!("{text:?} is not DIR/NAME"))?;
        let dir_ok = !dir.is_empty()
            && !dir.starts_with('/')
            && !dir.contains(['*', '{', '}'])
            && dir
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != "..");
        if !dir_ok {
            return Err(format!(
                "{text:?}: the directory must be a plain relative path (no *, {{id}}, . or ..)"
            ));
        }
        let mut tokens = Vec::new();
        let mut rest = name;
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix("{id}") {
                tokens.push(Token::Id);
                rest = r;
            } else if let Some(r) = rest.strip_prefix('*') {
                tokens.push(Token::Any);
                rest = r;
            } else {
                let end = rest
                    .find(['*', '{'])
                    .filter(|&i| i > 0)
                    .unwrap_or(rest.len());
                if rest[..end].contains(['{', '}']) {
                    return Err(format!("{text:?}: only {{id}} may stand in braces"));
                }
                tokens.push(Token::Lit(rest[..end].to_owned()));
                rest = &rest[end..];
            }
        }
        if tokens.iter().filter(|t| **t == Token::Id).count() != 1 {
            return Err(format!("{text:?}: the name needs {{id}} exactly once"));
        }
        Ok(Self {
            dir: PathBuf::from(dir),
            tokens,
        })
    }

    /// The directory searched, relative to the cgroup root.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The id `name` (already unescaped) holds, if it matches.
    pub fn id_in(&self, name: &str) -> Option<String> {
        let mut id = None;
        match_from(&self.tokens, name, &mut id)
            .then_some(id)
            .flatten()
    }
}

fn match_from(tokens: &[Token], s: &str, id: &mut Option<String>) -> bool {
    match tokens.split_first() {
        None => s.is_empty(),
        Some((Token::Lit(lit), rest)) => s
            .strip_prefix(lit.as_str())
            .is_some_and(|r| match_from(rest, r, id)),
        Some((wild, rest)) => {
            let min = usize::from(*wild == Token::Id);
            let ends = s.char_indices().map(|(i, _)| i).chain([s.len()]);
            for end in ends.skip(min) {
                if match_from(rest, &s[end..], id) {
                    if *wild == Token::Id {
                        *id = Some(s[..end].to_owned());
                    }
                    return true;
                }
            }
            false
        }
    }
}

/// Undo systemd's unit-name escaping: `\xNN` is the byte NN (`\x2d` is
/// `-`). A malformed escape or a result that is not UTF-8 is an error.
pub fn unescape(name: &str) -> Result<String, String> {
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let hex = bytes
            .get(i + 1..i + 4)
            .filter(|h| h[0] == b'x')
            .and_then(|h| std::str::from_utf8(&h[1..]).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .ok_or_else(|| format!("bad systemd escape at byte {i} of {name:?}"))?;
        out.push(hex);
        i += 4;
    }
    String::from_utf8(out).map_err(|_| format!("{name:?} unescapes to bytes that are not UTF-8"))
}

/// A VM's cgroup, found by [`discover`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmScope {
    /// The VM's id (libvirt domain name, Proxmox vmid).
    pub id: String,
    /// The scope directory.
    pub path: PathBuf,
    /// The scope relative to the cgroup root (the key in the state file).
    pub key: String,
    /// Number of `libvirt/vcpu<K>` directories, when there are any.
    pub vcpu_dirs: Option<u32>,
}

/// An entry that matched a pattern but was skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The entry (or the file that failed).
    pub path: PathBuf,
    /// Why, in words.
    pub reason: String,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

/// What [`discover`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovery {
    /// VM scopes, in pattern order, then by name.
    pub scopes: Vec<VmScope>,
    /// Entries skipped.
    pub skipped: Vec<Skipped>,
}

/// Find the VM scopes under `root` (the cgroup v2 mount) by `patterns`. An
/// absent directory holds no VMs; an odd entry is skipped with its reason.
pub fn discover(root: &Path, patterns: &[VmPattern]) -> Discovery {
    let mut d = Discovery::default();
    for pattern in patterns {
        let dir = root.join(pattern.dir());
        let Ok(rd) = fs::read_dir(&dir) else {
            continue;
        };
        let mut entries: Vec<_> = rd
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect();
        entries.sort();
        for path in entries {
            match scope_at(root, pattern, &path) {
                Ok(Some(scope)) if d.scopes.iter().any(|s| s.id == scope.id) => {
                    d.skipped.push(Skipped {
                        reason: format!("VM id {:?} found twice; the first one is used", scope.id),
                        path,
                    });
                }
                Ok(Some(scope)) => d.scopes.push(scope),
                Ok(None) => {}
                Err(reason) => d.skipped.push(Skipped { path, reason }),
            }
        }
    }
    d
}

/// The scope at `path` if its name matches `pattern`; `Err` says why a
/// matching-looking entry cannot be used.
fn scope_at(root: &Path, pattern: &VmPattern, path: &Path) -> Result<Option<VmScope>, String> {
    let raw = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| "name is not UTF-8".to_owned())?;
    let name = unescape(raw)?;
    let Some(id) = pattern.id_in(&name) else {
        return Ok(None);
    };
    check_vm_id(&id)?;
    let key = path
        .strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned();
    Ok(Some(VmScope {
        id,
        path: path.to_owned(),
        key,
        vcpu_dirs: count_vcpu_dirs(path),
    }))
}

fn count_vcpu_dirs(scope: &Path) -> Option<u32> {
    let n = sysfs::entries_with_prefix(&scope.join("libvirt"), "vcpu")
        .iter()
        .filter(|p| p.is_dir())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("vcpu"))
                .is_some_and(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()))
        })
        .count();
    (n > 0).then_some(n as u32)
}

/// A `cpu.max` value: `QUOTA PERIOD` or `max PERIOD`, µs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuMax {
    /// CPU time allowed per period, µs; `None` is `max` (unlimited).
    pub quota_us: Option<u64>,
    /// Period, µs.
    pub period_us: u64,
}

impl CpuMax {
    /// Parse the file's text (`max` alone means the default period).
    pub fn parse(text: &str) -> Option<Self> {
        let mut it = text.split_whitespace();
        let quota = it.next()?;
        let period_us = match it.next() {
            Some(p) => p.parse().ok()?,
            None => DEFAULT_PERIOD_US,
        };
        if it.next().is_some() || period_us == 0 {
            return None;
        }
        let quota_us = match quota {
            "max" => None,
            q => Some(q.parse().ok()?),
        };
        Some(Self {
            quota_us,
            period_us,
        })
    }

    /// The quota in cores (`None` when unlimited).
    pub fn cores(&self) -> Option<f64> {
        self.quota_us.map(|q| q as f64 / self.period_us as f64)
    }

    /// The quota for `cores` with this period: `cores × period`, at least
    /// `min_cores` (and the kernel's 1 ms), at most `vcpus` when known.
    pub fn for_cores(cores: f64, vcpus: Option<u32>, period_us: u64, min_cores: f64) -> Self {
        let period = period_us as f64;
        let floor_us = ((min_cores * period).round() as u64).max(MIN_QUOTA_US);
        let mut quota_us = ((cores.max(0.0) * period).round() as u64).max(floor_us);
        if let Some(v) = vcpus {
            quota_us = quota_us.min((u64::from(v) * period_us).max(floor_us));
        }
        Self {
            quota_us: Some(quota_us),
            period_us,
        }
    }
}

impl fmt::Display for CpuMax {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.quota_us {
            Some(q) => write!(f, "{q} {}", self.period_us),
            None => write!(f, "max {}", self.period_us),
        }
    }
}

/// One reading of a VM's cgroup files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmSample {
    /// `cpu.stat` `usage_usec`, µs.
    pub usage_usec: u64,
    /// `memory.max`, bytes (`None`: `max` or no memory controller).
    pub mem_max_bytes: Option<u64>,
    /// `memory.current`, bytes (`None`: no memory controller).
    pub mem_current_bytes: Option<u64>,
    /// `cpu.max` (`None`: no cpu controller).
    pub cpu_max: Option<CpuMax>,
}

fn malformed(path: &Path, text: &str, expected: &'static str) -> SysfsError {
    SysfsError::Malformed {
        path: path.to_owned(),
        text: text.chars().take(80).collect(),
        expected,
    }
}

/// A file's trimmed text, `None` when it does not exist.
fn read_opt(path: &Path) -> Result<Option<String>, SysfsError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s.trim().to_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SysfsError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

fn read_bytes_opt(path: &Path) -> Result<Option<u64>, SysfsError> {
    match read_opt(path)? {
        None => Ok(None),
        Some(t) if t == "max" => Ok(None),
        Some(t) => t
            .parse()
            .map(Some)
            .map_err(|_| malformed(path, &t, "a byte count or max")),
    }
}

/// Read `cpu.max` of a scope (`None` when the file does not exist).
pub fn read_cpu_max(scope: &Path) -> Result<Option<CpuMax>, SysfsError> {
    let path = scope.join("cpu.max");
    match read_opt(&path)? {
        None => Ok(None),
        Some(t) => CpuMax::parse(&t)
            .map(Some)
            .ok_or_else(|| malformed(&path, &t, "QUOTA PERIOD or max PERIOD")),
    }
}

/// Write `cpu.max` of a scope.
pub fn write_cpu_max(scope: &Path, value: CpuMax) -> Result<(), SysfsError> {
    let path = scope.join("cpu.max");
    let text = value.to_string();
    fs::write(&path, &text).map_err(|source| SysfsError::Write {
        path,
        value: text,
        source,
    })
}

/// Read a scope's CPU time, memory and quota. `cpu.stat` must be there;
/// the other files are optional (a controller not enabled), but present
/// and malformed is an error.
pub fn sample(scope: &Path) -> Result<VmSample, SysfsError> {
    let stat = scope.join("cpu.stat");
    let text = sysfs::read_trimmed(&stat)?;
    let usage_usec = text
        .lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| malformed(&stat, &text, "a usage_usec line"))?;
    Ok(VmSample {
        usage_usec,
        mem_max_bytes: read_bytes_opt(&scope.join("memory.max"))?,
        mem_current_bytes: read_bytes_opt(&scope.join("memory.current"))?,
        cpu_max: read_cpu_max(scope)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(s: &str) -> VmPattern {
        VmPattern::parse(s).unwrap()
    }

    #[test]
    fn systemd_escapes_are_undone_and_bad_ones_named() {
        assert_eq!(
            unescape(r"machine-qemu\x2d3\x2dweb\x2d1.scope").unwrap(),
            "machine-qemu-3-web-1.scope"
        );
        assert_eq!(unescape("100.scope").unwrap(), "100.scope");
        for bad in [r"a\x2", r"a\y2d", r"a\xzz", r"a\xff"] {
            assert!(unescape(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_default_patterns_take_libvirt_names_and_proxmox_vmids() {
        let libvirt = pat(DEFAULT_PATTERNS[0]);
        assert_eq!(
            libvirt.id_in("machine-qemu-3-web-1.scope").as_deref(),
            Some("web-1")
        );
        assert_eq!(
            libvirt.id_in("machine-qemu-12-db.scope").as_deref(),
            Some("db")
        );
        assert_eq!(libvirt.id_in("machine-lxc-3-c1.scope"), None);
        assert_eq!(libvirt.id_in("machine-qemu-3-.scope"), None, "an empty id");
        let proxmox = pat(DEFAULT_PATTERNS[1]);
        assert_eq!(proxmox.id_in("100.scope").as_deref(), Some("100"));
        assert_eq!(proxmox.id_in("100.slice"), None);
        assert_eq!(libvirt.dir(), Path::new("machine.slice"));
    }

    #[test]
    fn patterns_without_one_id_or_with_a_wild_directory_are_refused() {
        for bad in [
            "qemu.slice/*.scope",
            "qemu.slice/{id}-{id}.scope",
            "{id}.scope",
            "/abs/{id}",
            "a/../b/{id}",
            "m*.slice/{id}",
            "qemu.slice/{vm}.scope",
        ] {
            assert!(VmPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cpu_max_parses_writes_and_clamps() {
        let m = CpuMax::parse("max 100000").unwrap();
        assert_eq!((m.quota_us, m.period_us), (None, 100_000));
        assert_eq!(m.to_string(), "max 100000");
        let q = CpuMax::parse("250000 100000").unwrap();
        assert_eq!(q.cores(), Some(2.5));
        assert_eq!(CpuMax::parse("max").unwrap().period_us, DEFAULT_PERIOD_US);
        for bad in ["", "x 100000", "100 0", "1 2 3", "-5 100000"] {
            assert_eq!(CpuMax::parse(bad), None, "{bad}");
        }
        let at = |cores, vcpus| CpuMax::for_cores(cores, vcpus, 100_000, 0.01).to_string();
        assert_eq!(at(2.5, Some(4)), "250000 100000");
        assert_eq!(at(9.0, Some(4)), "400000 100000", "clamped to the vCPUs");
        assert_eq!(
            at(0.0, Some(4)),
            "1000 100000",
            "0 cores is the floor, never 0"
        );
        assert_eq!(
            at(9.0, None),
            "900000 100000",
            "no ceiling when vCPUs are unknown"
        );
        let coarse = CpuMax::for_cores(0.0, Some(2), 100_000, 0.1);
        assert_eq!(coarse.quota_us, Some(10_000), "the configured floor");
    }
}
