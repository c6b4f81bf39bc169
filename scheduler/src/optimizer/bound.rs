//! Lower bound (placeholder while written).
use crate::instance::Instance;

/// Lower bound.
pub fn lower_bound(_inst: &Instance<'_>) -> Option<f64> {
    None
}
