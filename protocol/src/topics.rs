//! The MQTT topic tree of protocol v1 (DESIGN.md §4.2).
//!
//! Everything lives under `phoenix/v1/<site>/`. Telemetry is QoS 0/1 and not
//! retained; commands (`cap`, `set`) are QoS 1 and never retained; status
//! topics are retained and carry a last will.

use crate::PROTOCOL_VERSION;

/// Builds topics for one site. Site, node, consumer and device ids must be
/// valid topic levels (see [`valid_level`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    site: String,
}

impl Topics {
    /// Topics for `site`.
    pub fn new(site: impl Into<String>) -> Self {
        Self { site: site.into() }
    }

    /// The site id.
    pub fn site(&self) -> &str {
        &self.site
    }

    /// `phoenix/v1/<site>`
    pub fn root(&self) -> String {
        format!("phoenix/{PROTOCOL_VERSION}/{}", self.site)
    }

    /// `…/node/<node>/telemetry` — agent → controller.
    pub fn node_telemetry(&self, node: &str) -> String {
        format!("{}/node/{node}/telemetry", self.root())
    }

    /// `…/node/<node>/cap` — controller → agent.
    pub fn node_cap(&self, node: &str) -> String {
        format!("{}/node/{node}/cap", self.root())
    }

    /// `…/node/<node>/status` — agent, retained, last will `offline`.
    pub fn node_status(&self, node: &str) -> String {
        format!("{}/node/{node}/status", self.root())
    }

    /// `…/consumer/<id>/demand` — greenhouse → controller.
    pub fn consumer_demand(&self, consumer: &str) -> String {
        format!("{}/consumer/{consumer}/demand", self.root())
    }

    /// `…/consumer/<id>/climate` — a greenhouse that reports only its indoor
    /// temperature and setpoint (served by the bridge's demand estimator).
    pub fn consumer_climate(&self, consumer: &str) -> String {
        format!("{}/consumer/{consumer}/climate", self.root())
    }

    /// `…/consumer/<id>/offer` — controller → greenhouse, retained.
    pub fn consumer_offer(&self, consumer: &str) -> String {
        format!("{}/consumer/{consumer}/offer", self.root())
    }

    /// `…/facility/<device>/state` — bridge → all, retained.
    pub fn facility_state(&self, device: &str) -> String {
        format!("{}/facility/{device}/state", self.root())
    }

    /// `…/facility/<device>/set` — controller/operator → bridge.
    pub fn facility_set(&self, device: &str) -> String {
        format!("{}/facility/{device}/set", self.root())
    }

    /// `…/facility/<device>/set/result` — bridge → all, QoS 1, not
    /// retained: the outcome of every `set` request (DESIGN.md §4.8).
    pub fn facility_set_result(&self, device: &str) -> String {
        format!("{}/facility/{device}/set/result", self.root())
    }

    /// `…/controller/status` — controller, retained, last will `offline`.
    pub fn controller_status(&self) -> String {
        format!("{}/controller/status", self.root())
    }

    /// `…/bridge/status` — facility bridge, retained, last will `offline`.
    pub fn bridge_status(&self) -> String {
        format!("{}/bridge/status", self.root())
    }

    /// Wildcard for every consumer's offer: `…/consumer/+/offer`.
    pub fn all_consumer_offer(&self) -> String {
        format!("{}/consumer/+/offer", self.root())
    }

    /// Wildcard for every node's telemetry: `…/node/+/telemetry`.
    pub fn all_node_telemetry(&self) -> String {
        format!("{}/node/+/telemetry", self.root())
    }

    /// Wildcard for every node's status: `…/node/+/status`.
    pub fn all_node_status(&self) -> String {
        format!("{}/node/+/status", self.root())
    }

    /// Wildcard for every consumer's demand: `…/consumer/+/demand`.
    pub fn all_consumer_demand(&self) -> String {
        format!("{}/consumer/+/demand", self.root())
    }

    /// Wildcard for every consumer's climate: `…/consumer/+/climate`.
    pub fn all_consumer_climate(&self) -> String {
        format!("{}/consumer/+/climate", self.root())
    }

    /// Wildcard for every facility device's set topic: `…/facility/+/set`.
    pub fn all_facility_set(&self) -> String {
        format!("{}/facility/+/set", self.root())
    }

    /// Parse a concrete topic of this site back into its meaning.
    pub fn parse<'a>(&self, topic: &'a str) -> Option<TopicKind<'a>> {
        let root = self.root();
        let rest = topic.strip_prefix(root.as_str())?.strip_prefix('/')?;
        let parts: Vec<&'a str> = rest.split('/').collect();
        match parts.as_slice() {
            ["node", id, "telemetry"] => Some(TopicKind::NodeTelemetry(id)),
            ["node", id, "cap"] => Some(TopicKind::NodeCap(id)),
            ["node", id, "status"] => Some(TopicKind::NodeStatus(id)),
            ["consumer", id, "demand"] => Some(TopicKind::ConsumerDemand(id)),
            ["consumer", id, "climate"] => Some(TopicKind::ConsumerClimate(id)),
            ["consumer", id, "offer"] => Some(TopicKind::ConsumerOffer(id)),
            ["facility", id, "state"] => Some(TopicKind::FacilityState(id)),
            ["facility", id, "set"] => Some(TopicKind::FacilitySet(id)),
            ["facility", id, "set", "result"] => Some(TopicKind::FacilitySetResult(id)),
            ["controller", "status"] => Some(TopicKind::ControllerStatus),
            ["bridge", "status"] => Some(TopicKind::BridgeStatus),
            _ => None,
        }
    }
}

/// What a topic of this site is about, with the id it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind<'a> {
    /// Agent telemetry of a node.
    NodeTelemetry(&'a str),
    /// Power cap command to a node.
    NodeCap(&'a str),
    /// Online/offline status of a node.
    NodeStatus(&'a str),
    /// Heat demand of a consumer.
    ConsumerDemand(&'a str),
    /// Indoor climate of a consumer (temperature and setpoint).
    ConsumerClimate(&'a str),
    /// Heat offer to a consumer.
    ConsumerOffer(&'a str),
    /// Polled state of a facility device.
    FacilityState(&'a str),
    /// Write request to a facility device.
    FacilitySet(&'a str),
    /// Outcome of a write request to a facility device.
    FacilitySetResult(&'a str),
    /// Online/offline status of the controller.
    ControllerStatus,
    /// Online/offline status of the facility bridge.
    BridgeStatus,
}

/// Whether `s` can be used as one topic level: non-empty, no `/`, `+`, `#`
/// or NUL, at most 128 bytes.
pub fn valid_level(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && !s.contains(['/', '+', '#', '\0'])
}

/// Retained status payload values.
pub const STATUS_ONLINE: &str = "online";
/// Retained status payload values.
pub const STATUS_OFFLINE: &str = "offline";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_follow_the_v1_tree() {
        let t = Topics::new("gh-a");
        assert_eq!(t.node_cap("n1"), "phoenix/v1/gh-a/node/n1/cap");
        assert_eq!(
            t.consumer_offer("gh1"),
            "phoenix/v1/gh-a/consumer/gh1/offer"
        );
        assert_eq!(t.all_node_telemetry(), "phoenix/v1/gh-a/node/+/telemetry");
        assert_eq!(t.controller_status(), "phoenix/v1/gh-a/controller/status");
    }

    #[test]
    fn parse_inverts_builders_and_rejects_foreign_topics() {
        let t = Topics::new("s");
        assert_eq!(
            t.parse(&t.node_telemetry("n7")),
            Some(TopicKind::NodeTelemetry("n7"))
        );
        assert_eq!(
            t.parse(&t.facility_set("hp")),
            Some(TopicKind::FacilitySet("hp"))
        );
        assert_eq!(
            t.facility_set_result("hp"),
            "phoenix/v1/s/facility/hp/set/result"
        );
        assert_eq!(
            t.parse(&t.facility_set_result("hp")),
            Some(TopicKind::FacilitySetResult("hp"))
        );
        assert_eq!(t.parse("phoenix/v1/other/node/n7/telemetry"), None);
        assert_eq!(t.parse("phoenix/v1/s/node/n7/telemetry/extra"), None);
        assert_eq!(t.parse(&t.bridge_status()), Some(TopicKind::BridgeStatus));
        assert_eq!(t.parse("phoenix/v1/s"), None);
    }

    #[test]
    fn levels_with_wildcards_are_invalid() {
        assert!(valid_level("node-1"));
        assert!(!valid_level(""));
        assert!(!valid_level("a/b"));
        assert!(!valid_level("a+"));
        assert!(!valid_level("#"));
    }
}
