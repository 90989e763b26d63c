//! `slotway local` as a user runs it: it brings up the cluster and the proxy, serves
//! redis-cli, and leaves no redis-server behind on SIGTERM or when it is killed outright.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::ports::{free_port, free_ports};

/// Ports N..N+8 and their bus ports N+10000.. all free, plus a free proxy port.
fn free_base_port() -> (u16, u16) {
    (free_ports(9)[0], free_port())
}

/// Every process whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // The parent pid is the second field after the parenthesised command name.
        let after = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
        if after.split(' ').nth(1).and_then(|p| p.parse::<u32>().ok()) == Some(pid) {
            out.push(child);
        }
    }
    out
}

fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // A zombie has exited; it only waits to be reaped.
        Ok(stat) => !stat[stat.rfind(')').map_or(0, |i| i + 2)..].starts_with('Z'),
        Err(_) => false,
    }
}

fn wait_gone(pids: &[u32]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while pids.iter().any(|p| alive(*p)) {
        assert!(
            Instant::now() < deadline,
            "redis-server processes left behind: {pids:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kills the child on drop so a failing test leaves nothing behind either.
/// The child, and its data directory (removed when the test ends).
struct Slotway(Child, #[allow(dead_code)] tempfile::TempDir);

impl Drop for Slotway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The running `slotway local`, its proxy port and its first node's port.
fn start_local() -> (Slotway, u16, u16) {
    let (base, proxy_port) = free_base_port();
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_slotway"))
        .args(["local", "--listen", &format!("127.0.0.1:{proxy_port}")])
        .args(["--base-port", &base.to_string()])
        .args(["--admin", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let child = Slotway(child, data);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("ready") {
                let _ = tx.send(line);
            }
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("slotway local did not say it was ready");
    assert!(line.contains(&proxy_port.to_string()), "{line}");
    (child, proxy_port, base)
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn nine_redis_children(pid: u32) -> Vec<u32> {
    let kids = children_of(pid);
    assert_eq!(
        kids.len(),
        9,
        "expected 9 redis-server children, got {kids:?}"
    );
    kids
}

#[test]
fn local_serves_clients_and_sigterm_stops_everything() {
    let (mut slotway, port, base) = start_local();
    assert_eq!(redis_cli(port, &["SET", "hello", "world"]), "OK");
    assert_eq!(redis_cli(port, &["GET", "hello"]), "world");
    // The proxy logs in as the restricted upstream user it provisioned, so the deny list
    // holds inside scripts too. ACL WHOAMI through the proxy names the client's own user;
    // the nodes show which user slotway's own connections use.
    assert_eq!(redis_cli(port, &["ACL", "WHOAMI"]), "default");
    let nodes: Vec<String> = (base..base + 9)
        .map(|p| redis_cli(p, &["CLIENT", "LIST"]))
        .collect();
    assert!(
        nodes.iter().any(|l| l.contains(" user=slotway ")),
        "no node shows a connection of user slotway: {nodes:?}"
    );
    for call in ["'CLUSTER','SAVECONFIG'", "'CLUSTER','BUMPEPOCH'"] {
        let script = format!("return redis.call({call})");
        let reply = redis_cli(port, &["EVAL", &script, "0"]);
        assert!(reply.contains("can't run this command"), "{call}: {reply}");
    }
    let pid = slotway.0.id();
    let kids = nine_redis_children(pid);
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(st) = slotway.0.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "slotway did not exit on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "exit status {exit:?}");
    wait_gone(&kids);
}

#[test]
fn local_killed_outright_takes_its_nodes_with_it() {
    let (mut slotway, _, _) = start_local();
    let kids = nine_redis_children(slotway.0.id());
    slotway.0.kill().unwrap();
    slotway.0.wait().unwrap();
    wait_gone(&kids);
}

#[test]
fn missing_redis_server_is_a_one_line_error() {
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_slotway"))
        .args(["local", "--base-port", "1"])
        .env("PATH", empty.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let error_lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("redis-server"))
        .collect();
    assert_eq!(error_lines.len(), 1, "{stderr}");
    assert!(
        error_lines[0].contains("apt-get install redis-server"),
        "{stderr}"
    );
}
