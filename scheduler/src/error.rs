//! Errors of the planning core. Bad input (`Parse`, `Invalid`) and snapshots
//! that no plan can satisfy (`Infeasible`) are expected outcomes reported to
//! the user with what is wrong; `Solver` is an internal failure.

/// Why no plan was produced.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// The snapshot is not valid JSON of the snapshot's shape.
    #[error("malformed snapshot at `{path}`: {message}")]
    Parse {
        /// Path of the offending field (`servers[3].mem_gib`), `.` for the root.
        path: String,
        /// What the parser said.
        message: String,
    },
    /// A field has a value the model cannot accept.
    #[error("invalid snapshot field `{field}`: {problem}")]
    Invalid {
        /// Path of the field (`servers[3].power_curve_w`).
        field: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The snapshot is well formed but no plan can meet every hard rule.
    #[error("infeasible: {reason}")]
    Infeasible {
        /// The constraint that cannot be met, naming servers and VMs.
        reason: String,
    },
    /// The solver failed internally.
    #[error("solver failure: {0}")]
    Solver(String),
}

impl PlanError {
    /// Shorthand for [`PlanError::Invalid`].
    pub fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// Shorthand for [`PlanError::Infeasible`].
    pub fn infeasible(reason: impl Into<String>) -> Self {
        Self::Infeasible {
            reason: reason.into(),
        }
    }
}
