//! A thin `std::fs` layer over the Linux sysfs files the agent reads and
//! writes, rooted at an injectable directory so tests (and `--sysfs-root`)
//! can point it at a fake tree.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Why a sysfs (or state) file could not be read, parsed or written.
#[derive(Debug, thiserror::Error)]
pub enum SysfsError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The file could not be written.
    #[error("writing {value} to {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What was being written.
        value: String,
        /// The I/O error.
        source: io::Error,
    },
    /// The file holds something that is not the expected number.
    #[error("{path} holds {text:?}, not a number")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Its (trimmed) content.
        text: String,
    },
    /// The file holds something other than the expected format.
    #[error("{path} holds {text:?}, not {expected}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// Its (trimmed, shortened) content.
        text: String,
        /// What was expected, in words.
        expected: &'static str,
    },
}

/// The root under which `sys/…` is found: `/` on a real machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sysfs {
    root: PathBuf,
}

impl Sysfs {
    /// A sysfs rooted at `root` (`/` for the real one).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether this is the machine's own sysfs (root `/`).
    pub fn is_real(&self) -> bool {
        self.root == Path::new("/")
    }

    /// `root/sys/class/hwmon`
    pub fn hwmon_dir(&self) -> PathBuf {
        self.root.join("sys/class/hwmon")
    }

    /// `root/sys/class/powercap`
    pub fn powercap_dir(&self) -> PathBuf {
        self.root.join("sys/class/powercap")
    }

    /// `root/sys/devices/system/cpu/cpufreq`
    pub fn cpufreq_dir(&self) -> PathBuf {
        self.root.join("sys/devices/system/cpu/cpufreq")
    }
}

/// Read a file and trim surrounding whitespace.
pub fn read_trimmed(path: &Path) -> Result<String, SysfsError> {
    fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|source| SysfsError::Read {
            path: path.to_owned(),
            source,
        })
}

/// Read a file holding one unsigned integer.
pub fn read_u64(path: &Path) -> Result<u64, SysfsError> {
    let text = read_trimmed(path)?;
    text.parse().map_err(|_| SysfsError::Parse {
        path: path.to_owned(),
        text,
    })
}

/// Read a file holding one signed integer (hwmon temperatures can be
/// negative).
pub fn read_i64(path: &Path) -> Result<i64, SysfsError> {
    let text = read_trimmed(path)?;
    text.parse().map_err(|_| SysfsError::Parse {
        path: path.to_owned(),
        text,
    })
}

/// Read an optional integer file: `None` when it does not exist or does not
/// parse.
pub fn read_u64_opt(path: &Path) -> Option<u64> {
    read_u64(path).ok()
}

/// Write one unsigned integer (sysfs attributes take the decimal text).
pub fn write_u64(path: &Path, value: u64) -> Result<(), SysfsError> {
    fs::write(path, value.to_string()).map_err(|source| SysfsError::Write {
        path: path.to_owned(),
        value: value.to_string(),
        source,
    })
}

/// Write `bytes` to `path` atomically: a temporary file in the same
/// directory, flushed to disk, then renamed over the target.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SysfsError> {
    let err = |source| SysfsError::Write {
        path: path.to_owned(),
        value: format!("{} bytes", bytes.len()),
        source,
    };
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        fs::create_dir_all(dir).map_err(err)?;
    }
    let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let mut file = fs::File::create(&tmp).map_err(err)?;
    file.write_all(bytes).map_err(err)?;
    file.sync_all().map_err(err)?;
    drop(file);
    fs::rename(&tmp, path).map_err(err)?;
    Ok(())
}

/// The entries of `dir` whose file names start with `prefix`, sorted by
/// name; an absent directory gives none.
pub fn entries_with_prefix(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_read_trimmed_and_garbage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        fs::write(&p, "1234\n").unwrap();
        assert_eq!(read_u64(&p).unwrap(), 1234);
        fs::write(&p, "12a").unwrap();
        let err = read_u64(&p).unwrap_err().to_string();
        assert!(err.contains("12a") && err.contains("not a number"), "{err}");
        assert!(read_u64_opt(&dir.path().join("missing")).is_none());
    }

    #[test]
    fn atomic_write_replaces_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/state.json");
        write_atomic(&p, b"first, longer content").unwrap();
        write_atomic(&p, b"second").unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "second");
        let leftovers = entries_with_prefix(p.parent().unwrap(), "state.json.tmp");
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
