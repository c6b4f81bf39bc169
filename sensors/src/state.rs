//! The agent's state file: the original value of every limit it changes,
//! written atomically before the first cap and removed after a clean
//! restore. If the agent dies without restoring (SIGKILL, power loss of the
//! agent alone, a panic), the next start finds the file and restores those
//! values before anything else.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::node::Originals;
use crate::sysfs::{self, SysfsError};

/// Version of the state file's format.
pub const STATE_FORMAT: &str = "phoenix.agent-state/v1";

/// Why the state file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// It could not be read or written.
    #[error(transparent)]
    Io(#[from] SysfsError),
    /// It is not a state file of this format.
    #[error("state file {path} is malformed: {message}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateDoc {
    format: String,
    pid: u32,
    written: chrono::DateTime<chrono::Utc>,
    originals: Originals,
}

/// The state file at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    /// The state file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The originals a previous run left, if its file exists.
    pub fn load(&self) -> Result<Option<Originals>, StateError> {
        if !self.path.exists() {
            return Ok(None);
        }
        let text = sysfs::read_trimmed(&self.path)?;
        let doc: StateDoc = serde_json::from_str(&text).map_err(|e| StateError::Malformed {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        if doc.format != STATE_FORMAT {
            return Err(StateError::Malformed {
                path: self.path.clone(),
                message: format!("format {:?}, expected {STATE_FORMAT:?}", doc.format),
            });
        }
        Ok(Some(doc.originals))
    }

    /// Write the originals (atomically).
    pub fn save(&self, originals: &Originals) -> Result<(), StateError> {
        let doc = StateDoc {
            format: STATE_FORMAT.to_owned(),
            pid: std::process::id(),
            written: chrono::Utc::now(),
            originals: originals.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&doc).map_err(|e| StateError::Malformed {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        sysfs::write_atomic(&self.path, &bytes)?;
        Ok(())
    }

    /// Remove the file after a clean restore.
    pub fn remove(&self) -> Result<(), StateError> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StateError::Io(SysfsError::Write {
                path: self.path.clone(),
                value: "(remove)".into(),
                source,
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn originals_survive_a_round_trip_and_removal() {
        let dir = tempfile::tempdir().unwrap();
        let f = StateFile::new(dir.path().join("agent-state.json"));
        assert_eq!(f.load().unwrap(), None);
        let o = Originals {
            rapl_uw: vec![("intel-rapl:0".into(), 125_000_000)],
            cpufreq_khz: vec![("policy0".into(), 800_000, 3_000_000)],
            gpu_mw: vec![(0, 300_000)],
            vm_cpu_max: vec![crate::node::VmOriginal {
                id: "web1".into(),
                cgroup: "machine.slice/machine-qemu\\x2d1\\x2dweb1.scope".into(),
                cpu_max: crate::cgroup::CpuMax {
                    quota_us: None,
                    period_us: 100_000,
                },
            }],
        };
        f.save(&o).unwrap();
        assert_eq!(f.load().unwrap(), Some(o));
        f.remove().unwrap();
        assert_eq!(f.load().unwrap(), None);
        f.remove().unwrap();
    }

    #[test]
    fn a_state_file_of_an_earlier_version_without_vm_originals_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        let old = r#"{"format":"phoenix.agent-state/v1","pid":1,"written":"2026-01-15T06:00:00Z",
            "originals":{"rapl_uw":[["intel-rapl:0",125000000]],"cpufreq_khz":[],"gpu_mw":[]}}"#;
        std::fs::write(&path, old).unwrap();
        let o = StateFile::new(&path).load().unwrap().unwrap();
        assert_eq!(o.rapl_uw.len(), 1);
        assert!(o.vm_cpu_max.is_empty());
    }

    #[test]
    fn a_corrupt_state_file_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        std::fs::write(&path, "{not json").unwrap();
        let err = StateFile::new(&path).load().unwrap_err().to_string();
        assert!(err.contains("s.json") && err.contains("malformed"), "{err}");
    }
}
