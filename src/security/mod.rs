//! Who may use the proxy and what they may run: client authentication (`AUTH`, `HELLO … AUTH`),
//! ACL-style users, the proxy-wide command policy, secrets loaded from files, and the
//! per-client resource limits (output buffer, idle timeout) with their metrics.
//!
//! The request path calls [`Security::check`] once per request, before classification. It
//! costs one command lookup plus one hash probe of a precomputed set in the common case:
//! rules are compiled per command table (see [`policy::SpecSet`]), never re-read per request.

pub mod access;
pub(crate) mod auth;
mod glob;
pub(crate) mod limits;
pub(crate) mod policy;
pub mod scripts;
mod secret;
pub mod upstream;

pub use glob::glob_match;
pub use secret::{read_secret, Secret};

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use bytes::{Bytes, BytesMut};

use crate::command::{CommandFlags, CommandSpec, CommandTable, Request};
use crate::config::{ClusterConfig, Config};
use crate::protocol::encode;
use auth::{AuthFailure, Users};
use policy::{rules_allow, CommandPolicy, SpecSet};

/// Why the security settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// A secret file could not be read.
    #[error("cannot read {key} file {path}: {source}")]
    SecretFile {
        /// The setting naming the file.
        key: &'static str,
        /// The file's path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The access settings contradict each other or the rule grammar.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A command rule or policy entry is malformed.
    #[error("invalid command rule {rule:?}: {reason}")]
    Rule {
        /// The rule as written.
        rule: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Authentication and command rules shared by every session.
#[derive(Debug)]
pub struct Security {
    users: Users,
    policy: CommandPolicy,
    /// Rules compiled for the most recent command table.
    compiled: ArcSwapOption<Compiled>,
}

/// Rules resolved against one command table.
#[derive(Debug)]
struct Compiled {
    /// The table the sets refer to, kept alive so its spec addresses stay valid.
    table: Arc<CommandTable>,
    /// Refused by the command policy.
    denied: SpecSet,
    /// Per user (same order as [`Users::all`]): the commands allowed, None when all are.
    allowed: Vec<Option<SpecSet>>,
    /// Commands that run or define server-side code ([`scripts::runs_code`]).
    code: SpecSet,
    /// Per user: true when it may not run them.
    no_scripts: Vec<bool>,
}

/// One client's authentication state.
#[derive(Debug)]
pub struct ClientState {
    /// Index of the authenticated user; None until the client authenticates.
    user: Option<usize>,
    /// The session id reported by `HELLO`.
    id: u64,
    /// The name set by `HELLO … SETNAME`.
    name: Option<Box<[u8]>>,
    /// This client's copy of the compiled rules (saves a shared load per request).
    compiled: Option<Arc<Compiled>>,
}

impl ClientState {
    /// True once the client may run commands.
    pub fn authenticated(&self) -> bool {
        self.user.is_some()
    }

    /// The client name set through `HELLO … SETNAME`, if any.
    pub fn name(&self) -> Option<&[u8]> {
        self.name.as_deref()
    }
}

impl Security {
    /// Builds users and policy from the config, reading password files.
    pub fn from_config(config: &Config) -> Result<Self, SecurityError> {
        access::validate(config)?;
        Ok(Self {
            users: Users::from_config(&config.auth)?,
            policy: CommandPolicy::new(&config.policy.deny, &policy_allow(config))?,
            compiled: ArcSwapOption::empty(),
        })
    }

    /// True when clients must authenticate before running commands.
    pub fn auth_required(&self) -> bool {
        self.users.required()
    }

    /// `RESET`: back to a new client's authentication state — unauthenticated whenever
    /// authentication is required, so the next command gets `NOAUTH`.
    pub fn reset(&self, st: &mut ClientState) {
        st.user = self.users.initial();
        st.name = None;
    }

    /// The name of the proxy user the client runs as (`default` until it authenticates, as
    /// Redis reports it), for `ACL WHOAMI` and `CLIENT INFO`.
    pub fn user_name(&self, st: &ClientState) -> &str {
        st.user
            .and_then(|i| self.users.all().get(i))
            .map_or(auth::DEFAULT_USER, |u| u.name.as_str())
    }

    /// The state of a new client with session id `id`.
    pub fn client(&self, id: u64) -> ClientState {
        ClientState {
            user: self.users.initial(),
            id,
            name: None,
            compiled: None,
        }
    }

    /// Vets one request. Returns the reply when the request is answered here (`AUTH`,
    /// `HELLO`, or a refusal); None lets it go on to classification. Unknown commands and
    /// wrong arities also go on, so their errors come first, as in Redis.
    /// `req` must have been resolved in `table`; `keys` is scratch space; `peer` names the
    /// client in logs of failed attempts.
    pub fn check(
        &self,
        st: &mut ClientState,
        table: &Arc<CommandTable>,
        req: &Request<'_>,
        keys: &mut Vec<usize>,
        peer: impl FnOnce() -> Option<SocketAddr>,
    ) -> Option<Bytes> {
        let spec = req.spec()?;
        if !req.arity_ok() {
            return None;
        }
        if spec.flags.contains(CommandFlags::NO_AUTH) {
            return match spec.name.as_str() {
                "auth" => Some(self.auth_command(st, req.raw(), req.args(), peer)),
                "hello" => self.hello_command(st, req.raw(), req.args(), peer),
                _ => None,
            };
        }
        let Some(user) = st.user else {
            return Some(refuse("noauth", auth::NOAUTH));
        };
        let compiled = self.compiled_for(st, table);
        if compiled.denied.contains(spec) {
            return Some(refuse(
                "policy",
                &format!(
                    "ERR command '{}' is disabled by slotway's command policy",
                    spec.name
                ),
            ));
        }
        if let Some(Some(allowed)) = compiled.allowed.get(user) {
            if !allowed.contains(spec) {
                return Some(refuse(
                    "acl",
                    &format!(
                        "NOPERM this user has no permissions to run the '{}' command",
                        spec.name
                    ),
                ));
            }
        }
        if compiled.no_scripts.get(user) == Some(&true) && compiled.code.contains(spec) {
            return Some(refuse("scripts", scripts::REFUSED));
        }
        self.check_keys(user, spec, req, keys)
    }

    fn check_keys(
        &self,
        user: usize,
        spec: &CommandSpec,
        req: &Request<'_>,
        keys: &mut Vec<usize>,
    ) -> Option<Bytes> {
        let user = self.users.all().get(user)?;
        if user.all_keys() {
            return None;
        }
        keys.clear();
        // Malformed key arguments are classification's to report.
        req.key_indices(spec, keys).ok()?;
        let denied = keys
            .iter()
            .filter_map(|&i| req.arg(i))
            .any(|key| !user.may_access(key));
        denied.then(|| {
            refuse(
                "acl",
                "NOPERM this user has no permissions to access one of the keys used as arguments",
            )
        })
    }

    /// This client's compiled rules for `table`, compiling (once per table) when needed.
    fn compiled_for<'a>(&self, st: &'a mut ClientState, table: &Arc<CommandTable>) -> &'a Compiled {
        let fresh = matches!(&st.compiled, Some(c) if Arc::ptr_eq(&c.table, table));
        if !fresh {
            st.compiled = None;
        }
        st.compiled
            .get_or_insert_with(|| self.shared_compiled(table))
    }

    fn shared_compiled(&self, table: &Arc<CommandTable>) -> Arc<Compiled> {
        if let Some(c) = self.compiled.load_full() {
            if Arc::ptr_eq(&c.table, table) {
                return c;
            }
        }
        // A new command table (learned from the cluster): sessions racing here compile the
        // same sets; the last store wins and every copy is correct.
        let compiled = Arc::new(self.compile(table.clone()));
        self.compiled.store(Some(compiled.clone()));
        compiled
    }

    fn compile(&self, table: Arc<CommandTable>) -> Compiled {
        let denied = SpecSet::collect(&table, |s| self.policy.denies(s));
        let total = SpecSet::collect(&table, |_| true).len();
        let allowed: Vec<Option<SpecSet>> = self
            .users
            .all()
            .iter()
            .map(|u| {
                let set = SpecSet::collect(&table, |s| rules_allow(&u.rules, s));
                (set.len() < total).then_some(set)
            })
            .collect();
        let no_scripts = self
            .users
            .all()
            .iter()
            .zip(&allowed)
            .map(|(u, a)| !scripts::allowed(u, a.is_none()))
            .collect();
        Compiled {
            code: SpecSet::collect(&table, scripts::runs_code),
            table,
            denied,
            allowed,
            no_scripts,
        }
    }

    fn auth_command(
        &self,
        st: &mut ClientState,
        req: &[u8],
        args: &[Range<usize>],
        peer: impl FnOnce() -> Option<SocketAddr>,
    ) -> Bytes {
        let (user_arg, pass_arg) = match auth::parse_auth(args) {
            Ok(a) => a,
            Err(msg) => return error(msg),
        };
        let username = user_arg.map(|i| &req[args[i].clone()]);
        match self
            .users
            .authenticate(username, &req[args[pass_arg].clone()])
        {
            Ok(idx) => {
                st.user = Some(idx);
                Bytes::from_static(b"+OK\r\n")
            }
            Err(f) => {
                note_failure(username, f, peer(), st.id);
                error(f.message())
            }
        }
    }

    /// `HELLO`'s authentication part: `AUTH user pass` is checked here, and a client that is
    /// still unauthenticated is refused. Everything else (protocol switch, SETNAME, the reply)
    /// belongs to the session, so None lets the command go on.
    fn hello_command(
        &self,
        st: &mut ClientState,
        req: &[u8],
        args: &[Range<usize>],
        peer: impl FnOnce() -> Option<SocketAddr>,
    ) -> Option<Bytes> {
        let hello = match auth::parse_hello(req, args) {
            Ok(h) => h,
            Err(msg) => return Some(error(&msg)),
        };
        if let Some((u, p)) = hello.auth {
            let username = &req[args[u].clone()];
            match self
                .users
                .authenticate(Some(username), &req[args[p].clone()])
            {
                Ok(idx) => st.user = Some(idx),
                Err(f) => {
                    note_failure(Some(username), f, peer(), st.id);
                    return Some(error(f.message()));
                }
            }
        }
        if st.user.is_none() {
            return Some(error(auth::HELLO_NOAUTH));
        }
        if let Some(i) = hello.setname {
            st.name = Some(req[args[i].clone()].into());
        }
        None
    }
}

/// Counts and logs a failed authentication; the password never reaches the log.
fn note_failure(username: Option<&[u8]>, f: AuthFailure, peer: Option<SocketAddr>, id: u64) {
    metrics::counter!("slotway_auth_failures_total").increment(1);
    let user: String = match username {
        None => auth::DEFAULT_USER.into(),
        Some(u) => String::from_utf8_lossy(&u[..u.len().min(64)])
            .escape_debug()
            .collect(),
    };
    let client = peer.map_or_else(|| "?".to_string(), |p| p.to_string());
    tracing::warn!(%user, %client, session = id, reason = ?f, "client authentication failed");
}

fn refuse(reason: &'static str, msg: &str) -> Bytes {
    metrics::counter!("slotway_commands_denied_total", "reason" => reason).increment(1);
    error(msg)
}

fn error(msg: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(msg.len() + 3);
    encode::error(&mut out, msg);
    out.freeze()
}

/// Replaces `cluster.password_file` / `cluster.username_file` by the files' contents, so the
/// rest of the proxy only sees `cluster.username` and `cluster.password`.
pub fn resolve_upstream(c: &mut ClusterConfig) -> Result<(), SecurityError> {
    c.password = read_secret(&c.password, &c.password_file, "cluster.password_file")?;
    let user = read_secret(
        &Secret::new(c.username.clone()),
        &c.username_file,
        "cluster.username_file",
    )?;
    c.username = user.expose().to_string();
    c.password_file.clear();
    c.username_file.clear();
    Ok(())
}

#[cfg(test)]
mod tests;

/// `policy.allow`, plus `config|set` when `commands.allow_config_set` turns CONFIG SET on: one
/// switch, not two, enables it.
fn policy_allow(config: &Config) -> Vec<String> {
    let mut allow = config.policy.allow.clone();
    if config.commands.allow_config_set {
        allow.push("config|set".into());
    }
    allow
}
