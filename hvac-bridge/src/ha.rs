//! Home Assistant MQTT discovery (device-based), on when `[home_assistant]`
//! is present and `enabled`.
//!
//! One retained config per facility device and per configured consumer, on
//! `<prefix>/device/<object_id>/config`, listing its components (`cmps`).
//! Units and device classes come from the unit suffix of each point name
//! (`_c` °C, `_kw` kW, `_kwh` kWh, `_w` W, `_m3_h` m³/h, `_pct` %). Every
//! entity is available while the bridge's retained `bridge/status` reads
//! `online`; facility entities also need the device's state to say
//! `"online": true` (`availability_mode: all`).

use serde_json::{json, Map, Value};

use crate::config::{DeviceConfig, HomeAssistantConfig};
use protocol::topics::{Topics, STATUS_OFFLINE, STATUS_ONLINE};

/// Unit, device class and state class for a point name, from its suffix.
pub fn unit_for(name: &str) -> Option<(&'static str, Option<&'static str>, &'static str)> {
    const SUFFIXES: [(&str, &str, Option<&str>, &str); 6] = [
        ("_kwh", "kWh", Some("energy"), "total_increasing"),
        ("_kw", "kW", Some("power"), "measurement"),
        ("_w", "W", Some("power"), "measurement"),
        ("_m3_h", "m³/h", Some("volume_flow_rate"), "measurement"),
        ("_pct", "%", None, "measurement"),
        ("_c", "°C", Some("temperature"), "measurement"),
    ];
    SUFFIXES
        .iter()
        .find(|(s, ..)| name.ends_with(s))
        .map(|(_, u, d, sc)| (*u, *d, *sc))
}

fn object_id(site: &str, kind: &str, name: &str) -> String {
    format!("phoenix_{site}_{kind}_{name}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn origin() -> Value {
    json!({"name": "phoenix-bridge", "sw": env!("CARGO_PKG_VERSION")})
}

fn bridge_availability(topics: &Topics) -> Value {
    json!({"t": topics.bridge_status(), "pl_avail": STATUS_ONLINE, "pl_not_avail": STATUS_OFFLINE})
}

/// The discovery topic and payload for one facility device.
pub fn device_discovery(
    ha: &HomeAssistantConfig,
    topics: &Topics,
    d: &DeviceConfig,
) -> (String, Value) {
    let id = object_id(topics.site(), "facility", &d.name);
    let state = topics.facility_state(&d.name);
    let mut cmps = Map::new();
    for p in &d.points {
        let mut c = Map::new();
        c.insert("name".into(), p.name.clone().into());
        c.insert("uniq_id".into(), format!("{id}_{}", p.name).into());
        c.insert("stat_t".into(), state.clone().into());
        if p.table.is_bits() {
            c.insert("p".into(), "binary_sensor".into());
            c.insert(
                "val_tpl".into(),
                format!("{{{{ 'ON' if value_json['{}'] else 'OFF' }}}}", p.name).into(),
            );
        } else {
            c.insert("p".into(), "sensor".into());
            c.insert(
                "val_tpl".into(),
                format!("{{{{ value_json['{}'] }}}}", p.name).into(),
            );
            if let Some((unit, class, state_class)) = unit_for(&p.name) {
                c.insert("unit_of_meas".into(), unit.into());
                if let Some(class) = class {
                    c.insert("dev_cla".into(), class.into());
                }
                c.insert("stat_cla".into(), state_class.into());
            }
        }
        cmps.insert(format!("{}_{}", d.name, p.name), Value::Object(c));
    }
    let payload = json!({
        "dev": {"ids": [id], "name": d.name, "mf": "Phoenix", "mdl": "Modbus TCP device"},
        "o": origin(),
        "cmps": cmps,
        "avty": [
            bridge_availability(topics),
            {"t": state, "val_tpl": "{{ 'online' if value_json.online else 'offline' }}"}
        ],
        "avty_mode": "all",
        "qos": 1
    });
    (format!("{}/device/{id}/config", ha.prefix), payload)
}

/// The discovery topic and payload for one consumer's offer.
pub fn consumer_discovery(
    ha: &HomeAssistantConfig,
    topics: &Topics,
    consumer: &str,
) -> (String, Value) {
    let id = object_id(topics.site(), "consumer", consumer);
    let offer = topics.consumer_offer(consumer);
    let payload = json!({
        "dev": {"ids": [id], "name": format!("Heat consumer {consumer}"), "mf": "Phoenix", "mdl": "Heat offer"},
        "o": origin(),
        "cmps": {
            format!("{consumer}_available_kw"): {
                "p": "sensor", "name": "Heat offered", "uniq_id": format!("{id}_available_kw"),
                "stat_t": offer, "val_tpl": "{{ value_json.available_kw }}",
                "unit_of_meas": "kW", "dev_cla": "power", "stat_cla": "measurement"
            },
            format!("{consumer}_supply_temp_c"): {
                "p": "sensor", "name": "Offered supply temperature", "uniq_id": format!("{id}_supply_temp_c"),
                "stat_t": offer, "val_tpl": "{{ value_json.supply_temp_c }}",
                "unit_of_meas": "°C", "dev_cla": "temperature", "stat_cla": "measurement"
            }
        },
        "avty": [bridge_availability(topics)],
        "qos": 1
    });
    (format!("{}/device/{id}/config", ha.prefix), payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_come_from_the_name_suffix() {
        assert_eq!(unit_for("energy_kwh").unwrap().0, "kWh");
        assert_eq!(unit_for("power_kw").unwrap().0, "kW");
        assert_eq!(unit_for("supply_c").unwrap().1, Some("temperature"));
        assert_eq!(unit_for("flow_m3_h").unwrap().0, "m³/h");
        assert!(unit_for("mode").is_none());
    }

    #[test]
    fn consumer_discovery_points_at_the_retained_offer() {
        let ha = HomeAssistantConfig {
            enabled: true,
            prefix: "homeassistant".into(),
        };
        let t = Topics::new("s");
        let (topic, p) = consumer_discovery(&ha, &t, "gh1");
        assert_eq!(topic, "homeassistant/device/phoenix_s_consumer_gh1/config");
        assert_eq!(
            p["cmps"]["gh1_available_kw"]["stat_t"],
            t.consumer_offer("gh1")
        );
        assert_eq!(p["avty"][0]["t"], t.bridge_status());
    }
}
