//! Errors of the simulator. Every scenario error names the key
//! (`servers[1].power_curve_w`) and the problem, and is raised before any
//! simulation starts.

use std::path::PathBuf;

/// A scenario that cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// A file (the scenario, an EPW weather file) could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TOML is malformed or a key has the wrong type or is unknown.
    #[error("scenario key `{key}`: {message}")]
    Parse {
        /// Path of the key (`servers[0].cores`), `.` for the root.
        key: String,
        /// What the parser said.
        message: String,
    },
    /// A key has a value the simulator cannot accept.
    #[error("scenario key `{key}`: {problem}")]
    Invalid {
        /// Path of the key.
        key: String,
        /// What is wrong with it.
        problem: String,
    },
    /// An EPW weather file is malformed.
    #[error("weather file {path}, line {line}: {problem}")]
    Epw {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        problem: String,
    },
}

impl ScenarioError {
    /// Shorthand for [`ScenarioError::Invalid`].
    pub fn invalid(key: impl Into<String>, problem: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            problem: problem.into(),
        }
    }

    /// The key the error is about, when it names one.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Parse { key, .. } | Self::Invalid { key, .. } => Some(key),
            Self::Io { .. } | Self::Epw { .. } => None,
        }
    }
}

/// Why a run failed after its scenario was accepted.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The scenario is not valid.
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// Writing an output failed.
    #[error("cannot write {path}: {source}")]
    Output {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Drawing a chart failed.
    #[error("cannot draw chart {path}: {message}")]
    Chart {
        /// The file.
        path: PathBuf,
        /// What plotters said.
        message: String,
    },
}
