//! `SLOTWAY_*` environment overrides: laid over the defaults-plus-file value leaf by leaf, each
//! parsed with the type its default has.

use super::ConfigError;

/// The prefix of every variable the proxy reads.
pub(super) const ENV_PREFIX: &str = "SLOTWAY_";

/// Overlays `top` onto `base`, table by table.
pub(super) fn merge(base: &mut toml::Value, top: toml::Value) {
    match (base, top) {
        (toml::Value::Table(b), toml::Value::Table(t)) => {
            for (k, v) in t {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, t) => *b = t,
    }
}

/// Applies `SLOTWAY_*` overrides to every leaf of the defaults-plus-file value.
pub(super) fn apply_env(
    value: &mut toml::Value,
    vars: &[(String, String)],
) -> Result<(), ConfigError> {
    let toml::Value::Table(root) = value else {
        return Ok(());
    };
    for (var, raw) in vars {
        let name = var[ENV_PREFIX.len()..].to_ascii_lowercase();
        let target = find_leaf(root, &name);
        let Some(slot) = target else {
            // Unknown SLOTWAY_ variables are ignored so that wrappers may define their own.
            continue;
        };
        *slot = parse_env_value(slot, raw).map_err(|reason| ConfigError::Env {
            var: var.clone(),
            reason,
        })?;
    }
    Ok(())
}

/// Finds the leaf whose `section_key` (or top-level key) spells `name`.
fn find_leaf<'a>(root: &'a mut toml::Table, name: &str) -> Option<&'a mut toml::Value> {
    if root.get(name).is_some_and(|v| !v.is_table()) {
        return root.get_mut(name);
    }
    let (section, key) = root.iter().find_map(|(section, v)| {
        let rest = name.strip_prefix(section.as_str())?.strip_prefix('_')?;
        v.as_table()?.get(rest)?;
        Some((section.clone(), rest.to_string()))
    })?;
    root.get_mut(&section)?.as_table_mut()?.get_mut(&key)
}

/// Parses an environment value with the type the default has.
fn parse_env_value(current: &toml::Value, raw: &str) -> Result<toml::Value, String> {
    Ok(match current {
        toml::Value::Integer(_) => toml::Value::Integer(
            raw.trim()
                .parse()
                .map_err(|_| format!("expected an integer, got {raw:?}"))?,
        ),
        toml::Value::Boolean(_) => toml::Value::Boolean(match raw.trim() {
            "1" | "true" | "yes" | "on" => true,
            "0" | "false" | "no" | "off" => false,
            _ => return Err(format!("expected a boolean, got {raw:?}")),
        }),
        toml::Value::Array(_) => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_string()))
                .collect(),
        ),
        _ => toml::Value::String(raw.to_string()),
    })
}
