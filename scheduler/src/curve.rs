//! SPECpower-style power curves: 11 points at utilisation 0, 0.1, …, 1.0,
//! linearly interpolated (the convention of SPECpower_ssj2008 results and of
//! CloudSim's `PowerModelSpecPower*`).

use crate::model::CURVE_POINTS;

/// A server's power as a function of utilisation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PowerCurve {
    points_w: [f64; CURVE_POINTS],
}

impl PowerCurve {
    /// Build from exactly [`CURVE_POINTS`] values. The caller (validation)
    /// guarantees they are finite, non-negative and non-decreasing.
    pub fn new(points_w: &[f64]) -> Option<Self> {
        let points_w: [f64; CURVE_POINTS] = points_w.try_into().ok()?;
        Some(Self { points_w })
    }

    /// The 11 points, W.
    pub fn points_w(&self) -> &[f64; CURVE_POINTS] {
        &self.points_w
    }

    /// Idle power P(0), W.
    pub fn idle_w(&self) -> f64 {
        self.points_w[0]
    }

    /// Full-load power P(1), W.
    pub fn peak_w(&self) -> f64 {
        self.points_w[CURVE_POINTS - 1]
    }

    /// P(u), W, with `u` clamped to [0, 1].
    pub fn power_w(&self, u: f64) -> f64 {
        let u = u.clamp(0.0, 1.0);
        let x = u * 10.0;
        // x is in [0, 10] (or NaN, which casts to 0), so truncation is the
        // floor — without a call to libm's `floor` on every evaluation.
        let i = (x as usize).min(CURVE_POINTS - 2);
        let frac = x - i as f64;
        self.points_w[i] + frac * (self.points_w[i + 1] - self.points_w[i])
    }

    /// Largest utilisation `u` with `P(u) <= limit_w`; `None` when even idle
    /// power exceeds the limit.
    pub fn max_util_within(&self, limit_w: f64) -> Option<f64> {
        if self.points_w[0] > limit_w {
            return None;
        }
        if self.peak_w() <= limit_w {
            return Some(1.0);
        }
        // First segment whose right end exceeds the limit (non-decreasing curve).
        for i in 0..CURVE_POINTS - 1 {
            let (a, b) = (self.points_w[i], self.points_w[i + 1]);
            if b > limit_w {
                let frac = if b > a { (limit_w - a) / (b - a) } else { 0.0 };
                return Some((i as f64 + frac.clamp(0.0, 1.0)) / 10.0);
            }
        }
        Some(1.0)
    }

    /// Slope of segment `i` (between u = i/10 and (i+1)/10), W per unit of
    /// utilisation.
    pub fn segment_slope(&self, i: usize) -> f64 {
        (self.points_w[i + 1] - self.points_w[i]) * 10.0
    }

    /// Whether the curve is convex (slopes non-decreasing), in which case an
    /// LP over its segments is exact.
    pub fn is_convex(&self) -> bool {
        (0..CURVE_POINTS - 2).all(|i| self.segment_slope(i + 1) + 1e-9 >= self.segment_slope(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // hp-ml110-g5, SPECpower (reference/physics.md).
    const G5: [f64; 11] = [
        93.7, 97.0, 101.0, 105.0, 110.0, 116.0, 121.0, 125.0, 129.0, 133.0, 135.0,
    ];

    #[test]
    fn interpolates_between_specpower_points() {
        let c = PowerCurve::new(&G5).unwrap();
        assert_eq!(c.power_w(0.0), 93.7);
        assert_eq!(c.power_w(1.0), 135.0);
        assert!((c.power_w(0.45) - 113.0).abs() < 1e-9);
        assert!((c.power_w(0.5) - 116.0).abs() < 1e-9);
        assert_eq!(c.power_w(1.7), 135.0);
    }

    #[test]
    fn max_util_inverts_the_curve() {
        let c = PowerCurve::new(&G5).unwrap();
        assert_eq!(c.max_util_within(200.0), Some(1.0));
        assert_eq!(c.max_util_within(90.0), None);
        let u = c.max_util_within(113.0).unwrap();
        assert!((u - 0.45).abs() < 1e-9, "{u}");
        assert!((c.power_w(u) - 113.0).abs() < 1e-9);
    }

    #[test]
    fn wrong_length_is_refused() {
        assert!(PowerCurve::new(&G5[..10]).is_none());
    }
}
