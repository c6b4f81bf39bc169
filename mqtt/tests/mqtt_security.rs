//! Credentials, TLS and the shipped ACL against a real mosquitto with a
//! password file, `deploy/mosquitto.acl` and a TLS listener whose
//! certificates each test makes with `openssl`.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use phoenix_mqtt::{describe_connection_error, MqttSecurity, MqttSettings};
use rumqttc::{AsyncClient, Event, Packet, QoS};
use testkit::{CertFiles, Mosquitto, SecureBroker, TestPki};
use tokio::sync::mpsc;

/// A guard against a hang, not a measurement.
const GUARD: Duration = Duration::from_secs(30);

fn shipped_acl() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/mosquitto.acl")
}

fn password_file(dir: &Path, name: &str, password: &str) -> PathBuf {
    let path = dir.join(format!("{name}.pw"));
    std::fs::write(&path, format!("{password}\n")).unwrap();
    path
}

/// A connected client: its handle and what its event loop saw.
struct Peer {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Packet>,
    pending: VecDeque<Packet>,
}

impl Peer {
    /// Connect; `Err` is the sentence [`describe_connection_error`] gives.
    async fn connect(settings: &MqttSettings, id: &str) -> Result<Self, String> {
        let mut opts = settings.options(id).map_err(|e| e.to_string())?;
        opts.set_clean_session(true);
        let (client, mut eventloop) = AsyncClient::new(opts, 64);
        let first = tokio::time::timeout(GUARD, async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(describe_connection_error(&e)),
                }
            }
        })
        .await
        .expect("connect attempt hung");
        first?;
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(event) = eventloop.poll().await {
                if let Event::Incoming(p) = event {
                    if tx.send(p).is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Self {
            client,
            events,
            pending: VecDeque::new(),
        })
    }

    /// The first packet (seen or to come) that `want`s; the others are
    /// kept, in order, for later calls.
    async fn next(&mut self, want: impl Fn(&Packet) -> bool) -> Packet {
        if let Some(i) = self.pending.iter().position(&want) {
            return self.pending.remove(i).unwrap();
        }
        tokio::time::timeout(GUARD, async {
            loop {
                let p = self.events.recv().await.expect("connection ended");
                if want(&p) {
                    return p;
                }
                self.pending.push_back(p);
            }
        })
        .await
        .expect("no such packet arrived")
    }

    async fn subscribe(&mut self, filter: &str) {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .unwrap();
        self.next(|p| matches!(p, Packet::SubAck(_))).await;
    }

    /// Publish at QoS 1 and wait for the broker's PubAck, which mosquitto
    /// sends after routing (or refusing) the message.
    async fn publish(&mut self, topic: &str, payload: &str) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec())
            .await
            .unwrap();
        self.next(|p| matches!(p, Packet::PubAck(_))).await;
    }

    /// The next message: (topic, payload).
    async fn message(&mut self) -> (String, String) {
        match self.next(|p| matches!(p, Packet::Publish(_))).await {
            Packet::Publish(p) => (p.topic, String::from_utf8_lossy(&p.payload).into_owned()),
            _ => unreachable!(),
        }
    }
}

/// A TLS broker for `server_names`, users alice/pw-alice, and settings for
/// alice with `password` and the CA `ca`.
struct TlsSetup {
    pki: TestPki,
    broker: Mosquitto,
    dir: tempfile::TempDir,
}

impl TlsSetup {
    fn start(server_names: &[&str], require_certificate: bool) -> Self {
        let pki = TestPki::new("Phoenix test CA").unwrap();
        let server = pki.server("server", server_names).unwrap();
        let ca = pki.ca_file();
        let broker = Mosquitto::start_secure(&SecureBroker {
            users: &[("alice", "pw-alice")],
            acl_file: None,
            tls: Some((&ca, &server)),
            require_certificate,
        })
        .unwrap();
        Self {
            pki,
            broker,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn settings(&self, password: &str, ca: PathBuf, client: Option<&CertFiles>) -> MqttSettings {
        MqttSettings::new(self.broker.tls_url()).with_security(MqttSecurity {
            username: Some("alice".into()),
            password_file: Some(password_file(self.dir.path(), "alice", password)),
            ca_file: Some(ca),
            client_cert_file: client.map(|c| c.cert.clone()),
            client_key_file: client.map(|c| c.key.clone()),
            ..MqttSecurity::default()
        })
    }
}

#[tokio::test]
async fn the_right_password_over_mqtts_with_the_private_ca_publishes_and_subscribes() {
    let s = TlsSetup::start(&["127.0.0.1", "localhost"], false);
    let settings = s.settings("pw-alice", s.pki.ca_file(), None);
    let mut sub = Peer::connect(&settings, "sub").await.unwrap();
    sub.subscribe("t/x").await;
    let mut publisher = Peer::connect(&settings, "pub").await.unwrap();
    publisher.publish("t/x", "over tls").await;
    assert_eq!(sub.message().await, ("t/x".into(), "over tls".into()));
}

#[tokio::test]
async fn a_wrong_password_is_refused_clearly_and_the_error_does_not_hold_it() {
    let s = TlsSetup::start(&["127.0.0.1"], false);
    let settings = s.settings("not-the-pw-7731", s.pki.ca_file(), None);
    let err = Peer::connect(&settings, "c").await.err().expect("refused");
    assert!(err.contains("refused the username/password"), "{err}");
    assert!(!err.contains("not-the-pw-7731"), "{err}");
}

#[tokio::test]
async fn a_password_from_the_environment_is_used_and_a_plain_client_is_turned_away() {
    let s = TlsSetup::start(&["127.0.0.1"], false);
    std::env::set_var("PHOENIX_TEST_MQTT_PW_ALICE", "pw-alice");
    let settings = MqttSettings::new(s.broker.tls_url()).with_security(MqttSecurity {
        username: Some("alice".into()),
        password_env: Some("PHOENIX_TEST_MQTT_PW_ALICE".into()),
        ca_file: Some(s.pki.ca_file()),
        ..MqttSecurity::default()
    });
    Peer::connect(&settings, "env").await.unwrap();
    let plain = MqttSettings::new(s.broker.url()).with_security(MqttSecurity {
        ca_file: None,
        ..settings.security.clone()
    });
    assert!(Peer::connect(&plain, "plain").await.is_err());
}

#[tokio::test]
async fn a_broker_certificate_from_an_unknown_ca_is_named_as_such() {
    let s = TlsSetup::start(&["127.0.0.1"], false);
    let other = TestPki::new("Someone else's CA").unwrap();
    let settings = s.settings("pw-alice", other.ca_file(), None);
    let err = Peer::connect(&settings, "c").await.err().expect("refused");
    assert!(err.contains("not signed by a trusted CA"), "{err}");
}

#[tokio::test]
async fn a_broker_certificate_for_another_host_name_is_named_as_such() {
    let s = TlsSetup::start(&["broker.example"], false);
    let settings = s.settings("pw-alice", s.pki.ca_file(), None);
    let err = Peer::connect(&settings, "c").await.err().expect("refused");
    assert!(err.contains("not valid for the host name"), "{err}");
}

#[tokio::test]
async fn a_client_certificate_is_accepted_where_the_listener_requires_one() {
    let s = TlsSetup::start(&["127.0.0.1"], true);
    let client = s.pki.client("alice-cert", "alice").unwrap();
    let with = s.settings("pw-alice", s.pki.ca_file(), Some(&client));
    let mut peer = Peer::connect(&with, "with-cert").await.unwrap();
    peer.subscribe("t/y").await;
    peer.publish("t/y", "hi").await;
    assert_eq!(peer.message().await.1, "hi");
    let without = s.settings("pw-alice", s.pki.ca_file(), None);
    let err = Peer::connect(&without, "no-cert")
        .await
        .err()
        .expect("refused");
    assert!(err.contains("client certificate"), "{err}");
}

/// A plain broker with the shipped ACL and one user per role.
struct AclSetup {
    broker: Mosquitto,
    dir: tempfile::TempDir,
}

const USERS: &[(&str, &str)] = &[
    ("phoenix-controller", "pw-c"),
    ("phoenix-bridge", "pw-b"),
    ("phoenix-operator", "pw-o"),
    ("phoenix-viewer", "pw-v"),
    ("n1", "pw-n1"),
    ("n2", "pw-n2"),
    ("gh1", "pw-gh1"),
];

impl AclSetup {
    fn start() -> Self {
        let acl = shipped_acl();
        let broker = Mosquitto::start_secure(&SecureBroker {
            users: USERS,
            acl_file: Some(&acl),
            tls: None,
            require_certificate: false,
        })
        .unwrap();
        Self {
            broker,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    async fn peer(&self, user: &str) -> Peer {
        let pw = USERS.iter().find(|(u, _)| *u == user).unwrap().1;
        let settings = MqttSettings::new(self.broker.url()).with_security(MqttSecurity {
            username: Some(user.into()),
            password_file: Some(password_file(self.dir.path(), user, pw)),
            ..MqttSecurity::default()
        });
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let id = format!("id-{user}-{}", NEXT.fetch_add(1, Ordering::Relaxed));
        Peer::connect(&settings, &id).await.unwrap()
    }
}

const ROOT: &str = "phoenix/v1/s1";

#[tokio::test]
async fn an_agent_publishes_only_its_own_telemetry_and_status() {
    let acl = AclSetup::start();
    let mut viewer = acl.peer("phoenix-viewer").await;
    viewer.subscribe("phoenix/v1/#").await;
    let mut n1 = acl.peer("n1").await;
    for forbidden in [
        "node/n2/telemetry",
        "node/n2/status",
        "node/n1/cap",
        "node/n2/cap",
        "consumer/gh1/offer",
        "facility/hp/set",
        "controller/status",
    ] {
        n1.publish(&format!("{ROOT}/{forbidden}"), "n1").await;
    }
    n1.publish(&format!("{ROOT}/node/n1/status"), "online")
        .await;
    n1.publish(&format!("{ROOT}/node/n1/telemetry"), "{}").await;
    // Same publisher, QoS 1: a forbidden message let through would have
    // arrived before these two.
    assert_eq!(viewer.message().await.0, format!("{ROOT}/node/n1/status"));
    assert_eq!(
        viewer.message().await.0,
        format!("{ROOT}/node/n1/telemetry")
    );
}

#[tokio::test]
async fn an_agent_reads_its_own_cap_and_not_another_nodes() {
    let acl = AclSetup::start();
    let mut n1 = acl.peer("n1").await;
    n1.subscribe(&format!("{ROOT}/node/+/cap")).await;
    n1.subscribe(&format!("{ROOT}/node/n2/cap")).await;
    let mut controller = acl.peer("phoenix-controller").await;
    controller
        .publish(&format!("{ROOT}/node/n2/cap"), "for n2")
        .await;
    controller
        .publish(&format!("{ROOT}/node/n1/cap"), "for n1")
        .await;
    assert_eq!(
        n1.message().await,
        (format!("{ROOT}/node/n1/cap"), "for n1".into())
    );
}

#[tokio::test]
async fn only_the_controller_publishes_caps_and_offers() {
    let acl = AclSetup::start();
    let mut viewer = acl.peer("phoenix-viewer").await;
    viewer.subscribe(&format!("{ROOT}/node/+/cap")).await;
    viewer.subscribe(&format!("{ROOT}/consumer/+/offer")).await;
    for user in [
        "phoenix-bridge",
        "phoenix-operator",
        "phoenix-viewer",
        "n1",
        "gh1",
    ] {
        let mut p = acl.peer(user).await;
        p.publish(&format!("{ROOT}/node/n1/cap"), user).await;
        p.publish(&format!("{ROOT}/consumer/gh1/offer"), user).await;
    }
    let mut controller = acl.peer("phoenix-controller").await;
    controller
        .publish(&format!("{ROOT}/node/n1/cap"), "controller")
        .await;
    controller
        .publish(&format!("{ROOT}/consumer/gh1/offer"), "controller")
        .await;
    // Every other publisher had its PubAck (routing done) before the
    // controller published: anything let through would come first.
    assert_eq!(viewer.message().await.1, "controller");
    assert_eq!(viewer.message().await.1, "controller");
}

#[tokio::test]
async fn only_the_operator_writes_facility_setpoints() {
    let acl = AclSetup::start();
    let mut bridge = acl.peer("phoenix-bridge").await;
    bridge.subscribe(&format!("{ROOT}/facility/+/set")).await;
    for user in [
        "phoenix-controller",
        "phoenix-bridge",
        "phoenix-viewer",
        "n1",
        "gh1",
    ] {
        let mut p = acl.peer(user).await;
        p.publish(&format!("{ROOT}/facility/hp/set"), user).await;
    }
    let mut operator = acl.peer("phoenix-operator").await;
    operator
        .publish(&format!("{ROOT}/facility/hp/set"), "operator")
        .await;
    assert_eq!(
        bridge.message().await,
        (format!("{ROOT}/facility/hp/set"), "operator".into())
    );
}

#[tokio::test]
async fn a_consumer_publishes_its_own_demand_and_reads_only_its_own_offer() {
    let acl = AclSetup::start();
    let mut gh1 = acl.peer("gh1").await;
    gh1.subscribe(&format!("{ROOT}/consumer/+/offer")).await;
    let mut controller = acl.peer("phoenix-controller").await;
    controller
        .subscribe(&format!("{ROOT}/consumer/+/demand"))
        .await;
    gh1.publish(&format!("{ROOT}/consumer/gh2/demand"), "spoofed")
        .await;
    gh1.publish(&format!("{ROOT}/consumer/gh1/demand"), "own")
        .await;
    assert_eq!(controller.message().await.1, "own");
    controller
        .publish(&format!("{ROOT}/consumer/gh2/offer"), "gh2")
        .await;
    controller
        .publish(&format!("{ROOT}/consumer/gh1/offer"), "gh1")
        .await;
    assert_eq!(gh1.message().await.1, "gh1");
}
