//! Child `redis-server` processes: locating the binary, writing each node's config,
//! spawning so the child can never outlive us, and stopping it again.
//!
//! Lifetime guarantees, and why they look the way they do:
//! - Every child gets `PR_SET_PDEATHSIG = SIGKILL`. Linux fires it when the *thread*
//!   that forked the child exits, not the process. So all spawns go through one
//!   process-wide spawner thread that never returns: callers may start clusters from
//!   short-lived threads (each `#[test]` runs on its own) without their nodes dying
//!   when that thread ends, and the nodes still die with the process, even on SIGKILL.
//! - Every child is put in its own process group (`setpgid(0, 0)`). A terminal Ctrl-C
//!   then reaches only slotway, which drains its clients first and calls
//!   `LocalCluster::shutdown()`; if the nodes shared the foreground group they would
//!   get SIGINT at the same moment and die under in-flight requests. Nothing can
//!   leak: if slotway dies instead of shutting down, PDEATHSIG kills the nodes.
//! - Children are signalled only by the PID of a `Child` we have not reaped yet, so
//!   the PID cannot have been recycled, and are always waited for (no zombies).

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::thread;
use std::time::Duration;

use tokio::time::Instant;

use super::LocalError;

/// Name of the per-node config file we write.
pub(crate) const CONFIG_FILE: &str = "redis.conf";
/// Name of the per-node Redis log file.
pub(crate) const LOG_FILE: &str = "redis.log";
/// Captures whatever redis-server prints before its log file is open (bad config...).
pub(crate) const STDIO_FILE: &str = "stdio.log";

/// Finds `redis-server` on `PATH`.
pub fn find_redis_server() -> Result<PathBuf, LocalError> {
    find_redis_server_in(&std::env::var_os("PATH").unwrap_or_default())
}

/// Finds `redis-server` in the given `PATH`-style list of directories.
pub fn find_redis_server_in(path_var: &OsStr) -> Result<PathBuf, LocalError> {
    std::env::split_paths(path_var)
        .map(|dir| dir.join("redis-server"))
        .find(|candidate| is_executable(candidate))
        .ok_or(LocalError::RedisServerMissing)
}

/// Checks an explicitly configured binary path.
pub(crate) fn check_redis_server(path: &Path) -> Result<PathBuf, LocalError> {
    if is_executable(path) {
        Ok(path.to_path_buf())
    } else {
        Err(LocalError::RedisServerNotFoundAt(path.to_path_buf()))
    }
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Everything needed to write one node's `redis.conf`.
pub(crate) struct NodeConfig<'a> {
    pub host: IpAddr,
    pub port: u16,
    pub dir: &'a Path,
    pub node_timeout_ms: u64,
    pub appendonly: bool,
    pub extra: &'a [(String, String)],
    /// ACL users, each `[name, rules…]`, written as `user` directives.
    pub acl_users: &'a [Vec<String>],
}

impl NodeConfig<'_> {
    /// Renders the config; later directives override earlier ones, so `extra` wins.
    pub fn render(&self) -> String {
        let dir = self.dir.to_string_lossy();
        let log = self.dir.join(LOG_FILE);
        let mut lines = vec![
            ("port".to_string(), self.port.to_string()),
            ("bind".to_string(), self.host.to_string()),
            ("dir".to_string(), dir.into_owned()),
            ("daemonize".to_string(), "no".to_string()),
            ("logfile".to_string(), log.to_string_lossy().into_owned()),
            ("cluster-enabled".to_string(), "yes".to_string()),
            ("cluster-config-file".to_string(), "nodes.conf".to_string()),
            (
                "cluster-node-timeout".to_string(),
                self.node_timeout_ms.to_string(),
            ),
            (
                "appendonly".to_string(),
                if self.appendonly { "yes" } else { "no" }.to_string(),
            ),
            ("save".to_string(), String::new()),
            // A fresh replica would otherwise wait 5 s for company before its full sync.
            ("repl-diskless-sync-delay".to_string(), "0".to_string()),
            // A replica stays out of CLUSTER SLOTS/SHARDS until its offset moves past 0,
            // which on an idle primary only happens at the next replication PING
            // (default every 10 s); ping every second so a new cluster is complete fast.
            ("repl-ping-replica-period".to_string(), "1".to_string()),
        ];
        // A node only learns its own address from a MEET, so after a restart on another
        // address it would keep announcing the old one; announcing the bind address
        // keeps its own view and its peers' views right (what pods do with their IP).
        if !self.host.is_unspecified() {
            lines.push(("cluster-announce-ip".to_string(), self.host.to_string()));
        }
        lines.extend(self.extra.iter().cloned());
        let mut out = String::from(
            "# Written by slotway's local cluster launcher; rewritten on every start.\n",
        );
        for (key, value) in lines {
            out.push_str(&key);
            out.push(' ');
            out.push_str(&quote(&value));
            out.push('\n');
        }
        for user in self.acl_users {
            out.push_str("user");
            for arg in user {
                out.push(' ');
                out.push_str(&quote(arg));
            }
            out.push('\n');
        }
        out
    }

    /// Writes the config into the node directory and returns its path.
    pub fn write(&self) -> Result<PathBuf, LocalError> {
        let path = self.dir.join(CONFIG_FILE);
        fs::write(&path, self.render())
            .map_err(|e| LocalError::io(format!("writing {}", path.display()), e))?;
        Ok(path)
    }
}

/// Quotes a config value the way Redis' config parser reads double-quoted strings.
fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A job for the spawner thread: the command and where to send the result.
struct SpawnJob {
    cmd: Command,
    reply: mpsc::Sender<io::Result<Child>>,
}

/// The process-wide spawner thread's inbox; see the module docs for why it exists.
static SPAWNER: OnceLock<io::Result<mpsc::Sender<SpawnJob>>> = OnceLock::new();

fn spawner() -> io::Result<&'static mpsc::Sender<SpawnJob>> {
    let slot = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        thread::Builder::new()
            .name("slotway-local-spawner".into())
            .spawn(move || {
                // The static sender is never dropped, so this loop (and thread) lives as long
                // as the process: exactly the lifetime PDEATHSIG should track.
                for mut job in rx {
                    let _ = job.reply.send(job.cmd.spawn());
                }
            })?;
        Ok(tx)
    });
    slot.as_ref()
        .map_err(|e| io::Error::new(e.kind(), e.to_string()))
}

/// Spawns `redis-server <config>` for one node, tied to our lifetime.
pub(crate) fn spawn_node(binary: &Path, config: &Path, dir: &Path) -> Result<Child, LocalError> {
    let stdio_path = dir.join(STDIO_FILE);
    let stdio = File::create(&stdio_path)
        .map_err(|e| LocalError::io(format!("creating {}", stdio_path.display()), e))?;
    let stdio_err = stdio
        .try_clone()
        .map_err(|e| LocalError::io("duplicating stdio file", e))?;
    let mut cmd = Command::new(binary);
    cmd.arg(config)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(stdio)
        .stderr(stdio_err);
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and only calls
    // async-signal-safe functions (prctl, getppid, setpgid); it allocates nothing
    // and touches no locks or shared state.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // We may have lost our parent before prctl took effect; then nobody would
            // ever kill us, so refuse to exec at all.
            if libc::getppid() as u32 != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            if libc::setpgid(0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let spawn_err = |e: io::Error| LocalError::Spawn {
        binary: binary.to_path_buf(),
        source: e,
    };
    let (tx, rx) = mpsc::channel();
    spawner()
        .map_err(spawn_err)?
        .send(SpawnJob { cmd, reply: tx })
        .map_err(|_| {
            spawn_err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "spawner thread is gone",
            ))
        })?;
    let child = rx
        .recv()
        .map_err(|_| {
            spawn_err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "spawner thread is gone",
            ))
        })?
        .map_err(spawn_err)?;
    Ok(child)
}

/// SIGKILLs the child and reaps it. Already-exited children are just reaped.
pub(crate) fn kill_and_wait(child: &mut Child) -> io::Result<ExitStatus> {
    if let Some(status) = child.try_wait()? {
        return Ok(status);
    }
    // std's kill() uses the un-reaped pid and tolerates a child that just exited.
    child.kill()?;
    child.wait()
}

/// Sends SIGTERM to a still-running, un-reaped child so it can flush its AOF.
pub(crate) fn terminate(child: &mut Child) {
    if matches!(child.try_wait(), Ok(None)) {
        let Ok(pid) = libc::pid_t::try_from(child.id()) else {
            return;
        };
        // SAFETY: kill(2) has no memory-safety preconditions; `pid` is our own child that
        // has not been reaped (try_wait just said it is running), so the pid still names it.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
}

/// Waits for children to exit until `deadline`, SIGKILLing whoever is still alive then.
pub(crate) fn wait_all_until(children: &mut [Child], deadline: Instant) {
    loop {
        let mut running = 0;
        for child in children.iter_mut() {
            if matches!(child.try_wait(), Ok(None)) {
                running += 1;
            }
        }
        if running == 0 || Instant::now() >= deadline {
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    for child in children.iter_mut() {
        let _ = kill_and_wait(child);
    }
}

/// The node's last few log lines (or its captured stdio) on one line, for error
/// messages: Redis logs the cause ("Address already in use") before "aborting".
pub(crate) fn last_log_line(dir: &Path) -> String {
    [LOG_FILE, STDIO_FILE]
        .iter()
        .filter_map(|name| tail(&dir.join(name)))
        .find(|line| !line.is_empty())
        .unwrap_or_else(|| "(no log output)".to_string())
}

/// How many trailing log lines an error message quotes.
const TAIL_LINES: usize = 3;

fn tail(path: &Path) -> Option<String> {
    let mut file = File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(4096))).ok()?;
    let mut buf = Vec::new();
    file.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let mut lines: Vec<&str> = text
        .lines()
        .rev()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(TAIL_LINES)
        .collect();
    lines.reverse();
    Some(lines.join(" | "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_escapes_specials() {
        assert_eq!(quote(""), "\"\"");
        assert_eq!(quote("a b"), "\"a b\"");
        assert_eq!(quote("x\"y\\z"), "\"x\\\"y\\\\z\"");
    }

    #[test]
    fn config_contains_cluster_directives_and_extra_last() {
        let extra = vec![("maxmemory".to_string(), "10mb".to_string())];
        let cfg = NodeConfig {
            host: "127.0.0.2".parse().unwrap(),
            port: 7001,
            dir: Path::new("/tmp/some dir/node-7001"),
            node_timeout_ms: 2000,
            appendonly: false,
            extra: &extra,
            acl_users: &[],
        };
        let text = cfg.render();
        for expected in [
            "port \"7001\"",
            "bind \"127.0.0.2\"",
            "dir \"/tmp/some dir/node-7001\"",
            "cluster-enabled \"yes\"",
            "cluster-config-file \"nodes.conf\"",
            "cluster-node-timeout \"2000\"",
            "appendonly \"no\"",
            "save \"\"",
            "daemonize \"no\"",
            "cluster-announce-ip \"127.0.0.2\"",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        assert!(text.trim_end().ends_with("maxmemory \"10mb\""));
    }

    #[test]
    fn acl_users_become_user_directives_with_each_rule_quoted() {
        let users = vec![vec![
            "slotway".to_string(),
            "on".into(),
            "-config|set".into(),
        ]];
        let cfg = NodeConfig {
            host: "127.0.0.1".parse().unwrap(),
            port: 7001,
            dir: Path::new("/tmp/n"),
            node_timeout_ms: 2000,
            appendonly: false,
            extra: &[],
            acl_users: &users,
        };
        assert!(cfg
            .render()
            .ends_with("user \"slotway\" \"on\" \"-config|set\"\n"));
    }

    #[test]
    fn missing_binary_is_one_line_naming_the_package() {
        let dir = tempfile::tempdir().unwrap();
        let err = find_redis_server_in(dir.path().as_os_str()).unwrap_err();
        let text = err.to_string();
        assert_eq!(
            text,
            "redis-server not found on PATH: install it with `apt-get install redis-server`"
        );
        assert!(!text.contains('\n'));
    }

    #[test]
    fn finds_an_executable_on_path() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("redis-server");
        fs::write(&fake, "#!/bin/sh\n").unwrap();
        assert!(
            find_redis_server_in(dir.path().as_os_str()).is_err(),
            "not executable yet"
        );
        fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find_redis_server_in(dir.path().as_os_str()).unwrap(), fake);
    }

    #[test]
    fn tail_joins_last_non_empty_lines() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(last_log_line(dir.path()), "(no log output)");
        let log = "a\nb\nbind: Address already in use\n\nabort\n";
        fs::write(dir.path().join(LOG_FILE), log).unwrap();
        assert_eq!(
            last_log_line(dir.path()),
            "b | bind: Address already in use | abort"
        );
    }
}
