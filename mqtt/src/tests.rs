use super::*;

fn url(u: &str) -> BrokerUrl {
    parse_url(u).unwrap()
}

#[test]
fn urls_give_host_port_and_scheme_with_default_ports() {
    let b = |host: &str, port, tls| BrokerUrl {
        host: host.into(),
        port,
        tls,
    };
    assert_eq!(url("mqtt://broker"), b("broker", 1883, false));
    assert_eq!(url("mqtt://127.0.0.1:1999/"), b("127.0.0.1", 1999, false));
    assert_eq!(url("tcp://h:1"), b("h", 1, false));
    assert_eq!(url("mqtts://broker"), b("broker", 8883, true));
    assert_eq!(url("ssl://b.example:8884"), b("b.example", 8884, true));
    assert_eq!(url("mqtts://[::1]:8883"), b("::1", 8883, true));
    assert_eq!(url("mqtts://[::1]"), b("::1", 8883, true));
}

#[test]
fn bad_urls_are_refused_with_what_is_wrong() {
    for bad in [
        "http://x",
        "mqtt://",
        "mqtt://:1883",
        "mqtt://h:99999",
        "mqtt://h:x",
        "mqtt://h/path",
        "broker:1883",
        "mqtts://[::1",
    ] {
        assert!(parse_url(bad).is_err(), "{bad}");
    }
}

#[test]
fn credentials_in_a_url_are_refused_without_being_echoed() {
    let err = parse_url("mqtt://alice:s3cret@broker:1883").unwrap_err();
    let text = err.to_string();
    assert!(!text.contains("s3cret"), "{text}");
    assert!(!text.contains("alice"), "{text}");
    assert!(
        text.contains("credentials do not belong in the URL"),
        "{text}"
    );
    assert!(text.contains("mqtt://***@broker:1883"), "{text}");
}

fn security() -> MqttSecurity {
    MqttSecurity::default()
}

fn setup_error(url: &str, s: MqttSecurity) -> String {
    MqttSettings::new(url)
        .with_security(s)
        .options("t")
        .unwrap_err()
        .to_string()
}

#[test]
fn incomplete_or_contradictory_settings_are_refused() {
    let user = Some("u".to_string());
    let cases = [
        (
            MqttSecurity {
                username: user.clone(),
                ..security()
            },
            "username needs a password",
        ),
        (
            MqttSecurity {
                password_env: Some("X".into()),
                ..security()
            },
            "a password needs a username",
        ),
        (
            MqttSecurity {
                username: user.clone(),
                password_env: Some("X".into()),
                password_file: Some("/x".into()),
                ..security()
            },
            "not both",
        ),
        (
            MqttSecurity {
                client_cert_file: Some("/c".into()),
                ..security()
            },
            "go together",
        ),
    ];
    for (s, expected) in cases {
        let text = setup_error("mqtts://h", s);
        assert!(text.contains(expected), "{text}");
    }
    let text = setup_error(
        "mqtt://h",
        MqttSecurity {
            ca_file: Some("/ca.pem".into()),
            ..security()
        },
    );
    assert!(text.contains("need an mqtts:// URL"), "{text}");
}

#[test]
fn the_password_comes_from_its_file_without_the_newline() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pw");
    std::fs::write(&path, "hunter2\n").unwrap();
    let s = MqttSettings::new("mqtt://h").with_security(MqttSecurity {
        username: Some("u".into()),
        password_file: Some(path),
        ..security()
    });
    let opts = s.options("id").unwrap();
    let login = opts.credentials().unwrap();
    assert_eq!(
        (login.username.as_str(), login.password.as_str()),
        ("u", "hunter2")
    );
    assert_eq!(opts.broker_address(), ("h".to_string(), 1883));
    assert_eq!(opts.client_id(), "id");
}

#[test]
fn a_missing_password_file_or_variable_is_named_and_no_secret_is_printed() {
    let text = setup_error(
        "mqtt://h",
        MqttSecurity {
            username: Some("u".into()),
            password_file: Some("/nonexistent/phoenix-pw".into()),
            ..security()
        },
    );
    assert!(
        text.contains("password_file /nonexistent/phoenix-pw"),
        "{text}"
    );
    let text = setup_error(
        "mqtt://h",
        MqttSecurity {
            username: Some("u".into()),
            password_env: Some("PHOENIX_TEST_SURELY_UNSET_PW".into()),
            ..security()
        },
    );
    assert!(
        text.contains("`PHOENIX_TEST_SURELY_UNSET_PW` is not set"),
        "{text}"
    );
}

#[test]
fn a_ca_file_without_certificates_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ca.pem");
    std::fs::write(&path, "not a certificate\n").unwrap();
    let text = setup_error(
        "mqtts://h",
        MqttSecurity {
            ca_file: Some(path.clone()),
            ..security()
        },
    );
    assert!(text.contains("ca_file"), "{text}");
    assert!(text.contains("holds no PEM certificate"), "{text}");
}

#[test]
fn the_security_keys_flatten_into_a_section_that_still_refuses_unknown_keys() {
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Section {
        #[allow(dead_code)]
        url: String,
        #[serde(flatten)]
        security: MqttSecurity,
    }
    let ok: Section = toml::from_str(
        "url = \"mqtts://h\"\nusername = \"u\"\npassword_env = \"PW\"\nca_file = \"/ca.pem\"",
    )
    .unwrap();
    assert_eq!(ok.security.username.as_deref(), Some("u"));
    assert_eq!(ok.security.ca_file, Some(PathBuf::from("/ca.pem")));
    let err = toml::from_str::<Section>("url = \"mqtt://h\"\npasword_file = \"/x\"").unwrap_err();
    assert!(err.to_string().contains("pasword_file"), "{err}");
}

#[test]
fn refusals_and_tls_failures_read_as_sentences() {
    let refused = ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized);
    assert!(describe_connection_error(&refused).contains("refused the username/password"));
    let unknown = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
    let io = std::io::Error::new(std::io::ErrorKind::InvalidData, unknown);
    let text = describe_connection_error(&ConnectionError::Tls(rumqttc::TlsError::Io(io)));
    assert!(text.contains("not signed by a trusted CA"), "{text}");
    let alert = rustls::Error::AlertReceived(AlertDescription::CertificateRequired);
    let io = std::io::Error::new(std::io::ErrorKind::InvalidData, alert);
    let read = ConnectionError::MqttState(rumqttc::StateError::Deserialization(
        rumqttc::mqttbytes::Error::Io(io),
    ));
    let text = describe_connection_error(&read);
    assert!(text.contains("requires a client certificate"), "{text}");
}
