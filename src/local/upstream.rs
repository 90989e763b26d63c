//! The local cluster's upstream user: `slotway local` defines the same restricted ACL user
//! on its nodes that `deploy/` defines on the Redis pods, and the proxy logs in as it, so
//! the deny list holds inside scripts in the quick start too.

use std::io::Read;

use super::{LocalClusterOptions, LocalError};
use crate::command::CommandTable;
use crate::config::Config;
use crate::security::upstream::{user_name, UpstreamRules};
use crate::security::Secret;

/// Adds the upstream user for `config`'s policy to `opts` and points `config.cluster` at
/// it. Keeps a configured `cluster.password`; otherwise picks a random one (the nodes are
/// fresh, so nothing else knows it). Returns the rules the user got.
pub fn provision(
    opts: &mut LocalClusterOptions,
    config: &mut Config,
) -> Result<UpstreamRules, LocalError> {
    crate::security::resolve_upstream(&mut config.cluster)
        .map_err(|e| LocalError::InvalidOptions(e.to_string()))?;
    let rules = UpstreamRules::from_config(config, &CommandTable::builtin())
        .map_err(|e| LocalError::InvalidOptions(e.to_string()))?;
    if config.cluster.password.is_empty() {
        config.cluster.password = Secret::new(random_password()?);
    }
    let name = user_name(config).to_string();
    let mut user = vec![name.clone()];
    user.extend(rules.setuser_args(&config.cluster.password));
    opts.acl_users.push(user);
    config.cluster.username = name;
    Ok(rules)
}

/// 32 hex characters from the system's random source.
fn random_password() -> Result<String, LocalError> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| LocalError::io("reading /dev/urandom", e))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provisions_a_restricted_user_and_logs_in_as_it() {
        let mut opts = LocalClusterOptions::default();
        let mut config = Config::default();
        provision(&mut opts, &mut config).unwrap();
        assert_eq!(config.cluster.username, "slotway");
        assert_eq!(config.cluster.password.expose().len(), 32);
        let user = &opts.acl_users[0];
        assert_eq!(user[..3], ["slotway", "reset", "on"]);
        assert!(user.iter().any(|r| r == "-config|set"));
        assert!(!user
            .iter()
            .any(|r| r.contains(config.cluster.password.expose())));
    }

    #[test]
    fn keeps_a_configured_password() {
        let mut opts = LocalClusterOptions::default();
        let mut config = Config::default();
        config.cluster.password = Secret::new("given");
        provision(&mut opts, &mut config).unwrap();
        assert_eq!(config.cluster.password.expose(), "given");
    }
}
