//! Loading: defaults, file, environment overrides and validation.

use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn defaults_are_valid() {
    let cfg = Config::load(None, Vec::new()).unwrap();
    assert_eq!(cfg, Config::default());
}

#[test]
fn env_overrides_nested_and_top_level_keys() {
    let cfg = Config::load(
        None,
        env(&[
            ("SLOTWAY_LISTEN", "0.0.0.0:6380"),
            ("SLOTWAY_SEEDS", "a:1, b:2"),
            ("SLOTWAY_BACKEND_CONNECTIONS_PER_NODE", "4"),
            ("SLOTWAY_ADMIN_LISTEN", "127.0.0.1:9000"),
            ("SLOTWAY_UNRELATED", "x"),
            ("PATH", "/bin"),
        ]),
    )
    .unwrap();
    assert_eq!(cfg.listen, "0.0.0.0:6380");
    assert_eq!(cfg.seeds, vec!["a:1", "b:2"]);
    assert_eq!(cfg.backend.connections_per_node, 4);
    assert_eq!(cfg.admin.listen, "127.0.0.1:9000");
    for bad in ["a:1, :2", "a:1,b", "a:0"] {
        let err = Config::load(None, env(&[("SLOTWAY_SEEDS", bad)])).unwrap_err();
        assert!(err.to_string().contains("seeds"), "{bad}: {err}");
    }
}

#[test]
fn env_type_errors_name_the_variable() {
    let err = Config::load(None, env(&[("SLOTWAY_CLIENT_MAX_INFLIGHT", "lots")])).unwrap_err();
    assert!(
        err.to_string().contains("SLOTWAY_CLIENT_MAX_INFLIGHT"),
        "{err}"
    );
}

#[test]
fn file_then_env_precedence_and_unknown_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "listen = \"127.0.0.1:1\"\n[backend]\nqueue_depth = 7\n",
    )
    .unwrap();
    let cfg = Config::load(Some(&path), env(&[("SLOTWAY_LISTEN", "127.0.0.1:2")])).unwrap();
    assert_eq!(cfg.listen, "127.0.0.1:2");
    assert_eq!(cfg.backend.queue_depth, 7);
    assert_eq!(cfg.backend.connections_per_node, 2);

    std::fs::write(&path, "[backend]\nqueue_dept = 7\n").unwrap();
    let err = Config::load(Some(&path), Vec::new()).unwrap_err();
    assert!(err.to_string().contains("queue_dept"), "{err}");
}

#[test]
fn validation_rejects_zero_and_bad_format() {
    let err = Config::load(None, env(&[("SLOTWAY_BACKEND_QUEUE_DEPTH", "0")])).unwrap_err();
    assert!(err.to_string().contains("backend.queue_depth"));
    let err = Config::load(None, env(&[("SLOTWAY_LOG_FORMAT", "xml")])).unwrap_err();
    assert!(err.to_string().contains("log.format"));
    let err = Config::load(None, env(&[("SLOTWAY_CLUSTER_READ_POLICY", "any")])).unwrap_err();
    assert!(err.to_string().contains("cluster.read_policy"));
    let cfg = Config::load(
        None,
        env(&[("SLOTWAY_CLUSTER_READ_POLICY", "prefer-replica")]),
    )
    .unwrap();
    assert_eq!(cfg.cluster.read_policy(), ReadPolicy::PreferReplica);
}

#[test]
fn commands_settings() {
    let cfg = Config::default();
    assert!(cfg.commands.cluster_emulation);
    assert!(!cfg.commands.allow_config_set);
    assert_eq!(cfg.commands.announce_address, "");
    assert_eq!(cfg.commands.script_cache_entries, 1024);
    assert_eq!(cfg.commands.script_cache_bytes, 64 << 20);
    let cfg = Config::load(
        None,
        env(&[
            ("SLOTWAY_COMMANDS_CLUSTER_EMULATION", "false"),
            ("SLOTWAY_COMMANDS_ALLOW_CONFIG_SET", "true"),
            ("SLOTWAY_COMMANDS_ANNOUNCE_ADDRESS", "proxy.example:6379"),
            ("SLOTWAY_COMMANDS_SCRIPT_CACHE_ENTRIES", "0"),
            ("SLOTWAY_COMMANDS_SCRIPT_CACHE_BYTES", "1048576"),
        ]),
    )
    .unwrap();
    assert!(!cfg.commands.cluster_emulation);
    assert!(cfg.commands.allow_config_set);
    assert_eq!(cfg.commands.announce_address, "proxy.example:6379");
    assert_eq!(cfg.commands.script_cache_entries, 0);
    assert_eq!(cfg.commands.script_cache_bytes, 1 << 20);
    for bad in ["nope", ":6379", "host:0", "host:port", "a b:1"] {
        let err =
            Config::load(None, env(&[("SLOTWAY_COMMANDS_ANNOUNCE_ADDRESS", bad)])).unwrap_err();
        assert!(
            err.to_string().contains("commands.announce_address"),
            "{bad}: {err}"
        );
    }
    assert!(Config::keys().contains(&"commands.cluster_emulation".to_string()));
}

#[test]
fn example_files_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    for name in ["local.toml", "kubernetes.toml"] {
        let cfg = Config::load(Some(&dir.join(name)), Vec::new())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(cfg.commands.cluster_emulation, "{name}");
        assert!(!cfg.commands.allow_config_set, "{name}");
    }
}

#[test]
fn keys_lists_every_setting() {
    let keys = Config::keys();
    assert!(keys.contains(&"listen".to_string()));
    assert!(keys.contains(&"backend.queue_depth".to_string()));
    assert!(keys.contains(&"admin.listen".to_string()));
    assert!(keys.contains(&"metrics.slowlog_threshold_us".to_string()));
    for k in [
        "auth.password",
        "auth.password_file",
        "auth.users",
        "policy.deny",
        "policy.allow",
        "cluster.password_file",
        "cluster.username_file",
    ] {
        assert!(keys.contains(&k.to_string()), "{k}");
    }
}

#[test]
fn metrics_settings_from_env_and_limits() {
    let cfg = Config::load(
        None,
        env(&[
            ("SLOTWAY_METRICS_PER_SLOT", "false"),
            ("SLOTWAY_METRICS_SLOWLOG_THRESHOLD_US", "-1"),
        ]),
    )
    .unwrap();
    assert!(!cfg.metrics.per_slot);
    assert_eq!(cfg.metrics.slowlog_threshold_us, -1);
    let err = Config::load(None, env(&[("SLOTWAY_METRICS_HOT_KEYS", "1000")])).unwrap_err();
    assert!(err.to_string().contains("metrics.hot_keys"), "{err}");
}

#[test]
fn choices_are_enums_with_the_old_spellings() {
    for (text, policy) in [
        ("primary", ReadPolicy::Primary),
        ("prefer-replica", ReadPolicy::PreferReplica),
        ("replica-round-robin", ReadPolicy::ReplicaRoundRobin),
    ] {
        let cfg = Config::load(None, env(&[("SLOTWAY_CLUSTER_READ_POLICY", text)])).unwrap();
        assert_eq!(cfg.cluster.read_policy, policy);
        assert_eq!(text.parse::<ReadPolicy>().unwrap(), policy);
    }
    let cfg = Config::load(None, env(&[("SLOTWAY_LOG_FORMAT", "json")])).unwrap();
    assert_eq!(cfg.log.format, LogFormat::Json);
    assert_eq!(Config::default().log.format, LogFormat::Text);
    // Written back as the same strings, so `keys()` and the defaults table do not change.
    let value = toml::Value::try_from(Config::default()).unwrap();
    assert_eq!(value["cluster"]["read_policy"].as_str(), Some("primary"));
    assert_eq!(value["log"]["format"].as_str(), Some("text"));
}

#[test]
fn a_wrong_choice_in_the_file_names_the_key_and_the_spellings() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "[cluster]\nread_policy = \"nearest\"\n").unwrap();
    let err = Config::load(Some(&path), Vec::new())
        .unwrap_err()
        .to_string();
    for want in [
        "read_policy",
        "nearest",
        "prefer-replica",
        "replica-round-robin",
    ] {
        assert!(err.contains(want), "{want}: {err}");
    }
    let err = "nearest".parse::<ReadPolicy>().unwrap_err().to_string();
    assert!(err.contains("cluster.read_policy"), "{err}");
    let err = Config::load(None, env(&[("SLOTWAY_LOG_LEVEL", "slotway=loud")])).unwrap_err();
    assert!(err.to_string().contains("log.level"), "{err}");
}
