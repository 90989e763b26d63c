//! The plain run mode from a config file and from environment variables, as operators use it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::cluster::TestCluster;
use crate::common::ports::free_addr;

/// The slotway binary, killed on drop.
struct Binary(Child);

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls until `SET`/`GET` through the proxy at `addr` work, then returns the GET reply.
fn set_and_get(addr: SocketAddr) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut s) = TcpStream::connect(addr) {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(b"SET cfg-key cfg-value\r\nGET cfg-key\r\n")
                .unwrap();
            let mut buf = vec![0u8; 64];
            let mut got = Vec::new();
            while !got.ends_with(b"cfg-value\r\n") && got.len() < 200 {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            if got.starts_with(b"+OK\r\n") {
                return got[5..].to_vec();
            }
        }
        assert!(Instant::now() < deadline, "proxy never served SET/GET");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn runs_from_a_config_file() {
    let cluster = TestCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let file = dir.path().join("slotway.toml");
    let seeds: Vec<String> = cluster.seeds().iter().map(|s| format!("{s:?}")).collect();
    std::fs::write(
        &file,
        format!(
            "listen = \"{addr}\"\nseeds = [{}]\n[backend]\nconnections_per_node = 1\n",
            seeds.join(", ")
        ),
    )
    .unwrap();
    let _proxy = Binary(
        Command::new(env!("CARGO_BIN_EXE_slotway"))
            .arg("--config")
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert_eq!(set_and_get(addr), b"$9\r\ncfg-value\r\n");
}

#[test]
fn runs_from_environment_variables() {
    let cluster = TestCluster::start();
    let addr = free_addr();
    let _proxy = Binary(
        Command::new(env!("CARGO_BIN_EXE_slotway"))
            .env("SLOTWAY_LISTEN", addr.to_string())
            .env("SLOTWAY_SEEDS", cluster.seeds().join(","))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert_eq!(set_and_get(addr), b"$9\r\ncfg-value\r\n");
}

#[test]
fn a_bad_config_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[backend]\nqueue_dept = 1\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_slotway"))
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("queue_dept"), "{stderr}");

    let out = Command::new(env!("CARGO_BIN_EXE_slotway"))
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no seed nodes"));
}

#[test]
fn a_wrong_choice_is_refused_at_load_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[cluster]\nread_policy = \"nearest\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_slotway"))
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for want in ["read_policy", "nearest", "prefer-replica"] {
        assert!(stderr.contains(want), "{want}: {stderr}");
    }

    let out = Command::new(env!("CARGO_BIN_EXE_slotway"))
        .env("SLOTWAY_LOG_FORMAT", "xml")
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("log.format") && stderr.contains("xml"),
        "{stderr}"
    );

    // A bad rule is refused at load too, now that security checks it.
    std::fs::write(&file, "[policy]\ndeny = [\"@nonsense\"]\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_slotway"))
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("policy.deny"), "{stderr}");
}
