//! Unit newtypes. They serialise as plain numbers so JSON contracts stay
//! readable (`"power_w": 110.0`), while Rust code cannot mix up watts and
//! kilowatts by accident.

use serde::{Deserialize, Serialize};

macro_rules! unit {
    ($(#[$doc:meta])* $name:ident, $suffix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub f64);

        impl $name {
            /// The bare number.
            pub const fn get(self) -> f64 {
                self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{} {}", self.0, $suffix)
            }
        }
    };
}

unit!(
    /// Electrical or thermal power in watts.
    Watts,
    "W"
);
unit!(
    /// Power in kilowatts.
    KiloWatts,
    "kW"
);
unit!(
    /// Energy in kilowatt-hours.
    KiloWattHours,
    "kWh"
);
unit!(
    /// Energy in joules.
    Joules,
    "J"
);
unit!(
    /// Temperature in degrees Celsius.
    Celsius,
    "°C"
);
unit!(
    /// A temperature difference in kelvin.
    Kelvin,
    "K"
);

impl Watts {
    /// Convert to kilowatts.
    pub fn to_kw(self) -> KiloWatts {
        KiloWatts(self.0 / 1000.0)
    }
}

impl KiloWatts {
    /// Convert to watts.
    pub fn to_w(self) -> Watts {
        Watts(self.0 * 1000.0)
    }
}

impl Celsius {
    /// Absolute temperature in kelvin (for COP formulas).
    pub fn to_kelvin_abs(self) -> f64 {
        self.0 + 273.15
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_serialise_as_bare_numbers() {
        assert_eq!(serde_json::to_string(&Watts(110.5)).unwrap(), "110.5");
        let c: Celsius = serde_json::from_str("24.0").unwrap();
        assert_eq!(c, Celsius(24.0));
    }

    #[test]
    fn conversions_keep_magnitudes() {
        assert_eq!(Watts(1500.0).to_kw(), KiloWatts(1.5));
        assert_eq!(KiloWatts(0.25).to_w(), Watts(250.0));
        assert!((Celsius(0.0).to_kelvin_abs() - 273.15).abs() < 1e-12);
    }
}
