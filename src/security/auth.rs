//! Client authentication: the `requirepass`-style default user and ACL-style named users,
//! and the `AUTH` and `HELLO` commands the proxy answers itself.

use std::ops::Range;

use super::glob::glob_match;
use super::policy::Rule;
use super::secret::{read_secret, Secret};
use super::SecurityError;
use crate::config::{AuthConfig, ScriptAccess, UserConfig};

/// Redis's reply to a wrong username or password.
pub const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
/// Redis's reply to a command sent before authenticating.
pub const NOAUTH: &str = "NOAUTH Authentication required.";
/// Redis's reply to `AUTH <password>` when the default user has no password.
pub const AUTH_WITHOUT_PASSWORD: &str = "ERR AUTH <password> called without any password \
     configured for the default user. Are you sure your configuration is correct?";
/// Redis's reply to `HELLO` without credentials from a client that has not authenticated.
pub const HELLO_NOAUTH: &str = "NOAUTH HELLO must be called with the client already \
     authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to \
     authenticate the client and select the RESP protocol version at the same time";

/// One user a client may authenticate as.
#[derive(Debug, Clone)]
pub struct User {
    /// The name given to `AUTH` (`default` for the password-only form).
    pub name: String,
    password: Secret,
    /// Command rules, applied in order from "nothing allowed".
    pub rules: Vec<Rule>,
    /// Key patterns; `None` means every key.
    pub keys: Option<Vec<Vec<u8>>>,
    /// Whether scripts and functions are allowed (`auth.users.scripts`).
    pub scripts: ScriptAccess,
}

impl User {
    /// True when the user may touch every key.
    pub fn all_keys(&self) -> bool {
        self.keys.is_none()
    }

    /// True when `key` matches one of the user's key patterns.
    pub fn may_access(&self, key: &[u8]) -> bool {
        match &self.keys {
            None => true,
            Some(patterns) => patterns.iter().any(|p| glob_match(p, key)),
        }
    }
}

/// Why an authentication attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// `AUTH <password>` while the default user needs none.
    NoPasswordConfigured,
    /// Unknown user or wrong password.
    WrongPass,
}

impl AuthFailure {
    /// The error line Redis sends.
    pub fn message(self) -> &'static str {
        match self {
            AuthFailure::NoPasswordConfigured => AUTH_WITHOUT_PASSWORD,
            AuthFailure::WrongPass => WRONGPASS,
        }
    }
}

/// Every user, and whether clients must authenticate before anything else.
#[derive(Debug, Clone, Default)]
pub struct Users {
    users: Vec<User>,
    /// Index of the user that `AUTH <password>` and unauthenticated clients map to, if any.
    default: Option<usize>,
    /// Clients start unauthenticated.
    required: bool,
}

/// The name of the user of the password-only `AUTH` form.
pub const DEFAULT_USER: &str = "default";

impl Users {
    /// Builds the users from `[auth]`, reading password files.
    pub fn from_config(cfg: &AuthConfig) -> Result<Self, SecurityError> {
        let mut users = Vec::new();
        let default_password = read_secret(&cfg.password, &cfg.password_file, "auth.password")?;
        let has_default_password = !default_password.is_empty();
        for u in &cfg.users {
            users.push(user_from_config(u)?);
        }
        let required = has_default_password || !cfg.users.is_empty();
        let default = match users.iter().position(|u| u.name == DEFAULT_USER) {
            Some(i) => Some(i),
            // Named users only: like Redis with `user default off`, nobody is the default.
            None if required && !has_default_password => None,
            None => {
                users.push(User {
                    name: DEFAULT_USER.into(),
                    password: default_password,
                    rules: vec![Rule::parse("+@all")?],
                    keys: None,
                    scripts: ScriptAccess::Auto,
                });
                Some(users.len() - 1)
            }
        };
        Ok(Self {
            users,
            default,
            required,
        })
    }

    /// True when clients must authenticate first.
    pub fn required(&self) -> bool {
        self.required
    }

    /// The users, in configuration order (the implicit default user last).
    pub fn all(&self) -> &[User] {
        &self.users
    }

    /// The user an unauthenticated-by-design client runs as (when authentication is off).
    pub fn initial(&self) -> Option<usize> {
        if self.required {
            None
        } else {
            self.default
        }
    }

    /// Checks a password for `username` (None: the default user, the one-argument form).
    pub fn authenticate(
        &self,
        username: Option<&[u8]>,
        password: &[u8],
    ) -> Result<usize, AuthFailure> {
        if username.is_none() && !self.required {
            return Err(AuthFailure::NoPasswordConfigured);
        }
        let name = username.unwrap_or(DEFAULT_USER.as_bytes());
        let Some(idx) = self.users.iter().position(|u| u.name.as_bytes() == name) else {
            return Err(AuthFailure::WrongPass);
        };
        let user = &self.users[idx];
        // The default user without a password is Redis's `nopass`: any password works.
        let nopass = !self.required && Some(idx) == self.default;
        if nopass || user.password.matches(password) {
            Ok(idx)
        } else {
            Err(AuthFailure::WrongPass)
        }
    }
}

fn user_from_config(u: &UserConfig) -> Result<User, SecurityError> {
    let password = read_secret(&u.password, &u.password_file, "auth.users.password_file")?;
    let rules = u
        .commands
        .iter()
        .map(|r| Rule::parse(r))
        .collect::<Result<Vec<_>, _>>()?;
    let keys = if u.keys.iter().any(|k| k == "*") {
        None
    } else {
        Some(u.keys.iter().map(|k| k.as_bytes().to_vec()).collect())
    };
    Ok(User {
        name: u.name.clone(),
        password,
        rules,
        keys,
        scripts: u.scripts,
    })
}

/// A parsed `AUTH`: which user (None: default) and the password's argument index.
pub fn parse_auth(args: &[Range<usize>]) -> Result<(Option<usize>, usize), &'static str> {
    match args.len() {
        2 => Ok((None, 1)),
        3 => Ok((Some(1), 2)),
        _ => Err("ERR syntax error"),
    }
}

/// A parsed `HELLO [protover [AUTH user pass] [SETNAME name]]`; fields are argument indices.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hello {
    /// The requested protocol version, if given.
    pub protover: Option<i64>,
    /// Argument indices of the username and password.
    pub auth: Option<(usize, usize)>,
    /// Argument index of the client name.
    pub setname: Option<usize>,
}

/// Parses `HELLO`'s arguments the way Redis 7.0 does; errors are Redis's reply lines.
pub fn parse_hello(req: &[u8], args: &[Range<usize>]) -> Result<Hello, String> {
    let arg = |i: usize| &req[args[i].clone()];
    let mut hello = Hello::default();
    if args.len() < 2 {
        return Ok(hello);
    }
    let ver = std::str::from_utf8(arg(1))
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or("ERR Protocol version is not an integer or out of range")?;
    if !(2..=3).contains(&ver) {
        return Err("NOPROTO unsupported protocol version".into());
    }
    hello.protover = Some(ver);
    let mut j = 2;
    while j < args.len() {
        let more = args.len() - 1 - j;
        let opt = arg(j);
        if opt.eq_ignore_ascii_case(b"AUTH") && more >= 2 {
            hello.auth = Some((j + 1, j + 2));
            j += 3;
        } else if opt.eq_ignore_ascii_case(b"SETNAME") && more >= 1 {
            if let Some(err) = client_name_error(arg(j + 1)) {
                return Err(err.into());
            }
            hello.setname = Some(j + 1);
            j += 2;
        } else {
            let shown: String = String::from_utf8_lossy(opt)
                .chars()
                .take(128)
                .filter(|c| *c != '\r' && *c != '\n')
                .collect();
            return Err(format!("ERR Syntax error in HELLO option '{shown}'"));
        }
    }
    Ok(hello)
}

/// Redis's objection to a client name, if any.
pub fn client_name_error(name: &[u8]) -> Option<&'static str> {
    name.iter()
        .any(|&b| !(b'!'..=b'~').contains(&b))
        .then_some("ERR Client names cannot contain spaces, newlines or special characters.")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AuthConfig, UserConfig};

    fn users(password: &str, named: &[(&str, &str)]) -> Users {
        let cfg = AuthConfig {
            password: Secret::new(password),
            password_file: String::new(),
            users: named
                .iter()
                .map(|(n, p)| UserConfig {
                    name: n.to_string(),
                    password: Secret::new(*p),
                    commands: vec!["+@all".into()],
                    ..UserConfig::default()
                })
                .collect(),
        };
        Users::from_config(&cfg).unwrap()
    }

    #[test]
    fn no_auth_configured_behaves_like_redis_nopass() {
        let u = users("", &[]);
        assert!(!u.required());
        assert!(u.initial().is_some());
        assert_eq!(
            u.authenticate(None, b"x"),
            Err(AuthFailure::NoPasswordConfigured)
        );
        assert!(u.authenticate(Some(b"default"), b"anything").is_ok());
        assert_eq!(
            u.authenticate(Some(b"bob"), b"x"),
            Err(AuthFailure::WrongPass)
        );
    }

    #[test]
    fn requirepass_style() {
        let u = users("pw", &[]);
        assert!(u.required());
        assert_eq!(u.initial(), None);
        assert!(u.authenticate(None, b"pw").is_ok());
        assert!(u.authenticate(Some(b"default"), b"pw").is_ok());
        assert_eq!(u.authenticate(None, b"bad"), Err(AuthFailure::WrongPass));
    }

    #[test]
    fn named_users_without_default_password() {
        let u = users("", &[("app", "apppw")]);
        assert!(u.required());
        let idx = u.authenticate(Some(b"app"), b"apppw").unwrap();
        assert_eq!(u.all()[idx].name, "app");
        assert_eq!(u.authenticate(None, b"apppw"), Err(AuthFailure::WrongPass));
        assert_eq!(
            u.authenticate(Some(b"default"), b""),
            Err(AuthFailure::WrongPass)
        );
        assert_eq!(
            u.authenticate(Some(b"app"), b"nope"),
            Err(AuthFailure::WrongPass)
        );
    }

    #[test]
    fn key_patterns() {
        let cfg = UserConfig {
            name: "t".into(),
            password: Secret::new("p"),
            keys: vec!["app:*".into(), "{t1}*".into()],
            ..UserConfig::default()
        };
        let user = user_from_config(&cfg).unwrap();
        assert!(user.may_access(b"app:1"));
        assert!(user.may_access(b"{t1}x"));
        assert!(!user.may_access(b"other"));
        let all = user_from_config(&UserConfig::default()).unwrap();
        assert!(all.all_keys());
    }

    fn args_of(parts: &[&str]) -> (Vec<u8>, Vec<Range<usize>>) {
        let mut raw = Vec::new();
        let mut ranges = Vec::new();
        for p in parts {
            let s = raw.len();
            raw.extend_from_slice(p.as_bytes());
            ranges.push(s..raw.len());
        }
        (raw, ranges)
    }

    #[test]
    fn hello_parsing() {
        let parse = |parts: &[&str]| {
            let (raw, ranges) = args_of(parts);
            parse_hello(&raw, &ranges)
        };
        assert_eq!(parse(&["HELLO"]).unwrap(), Hello::default());
        let h = parse(&["HELLO", "2", "AUTH", "u", "p", "SETNAME", "n"]).unwrap();
        assert_eq!(h.protover, Some(2));
        assert_eq!(h.auth, Some((3, 4)));
        assert_eq!(h.setname, Some(6));
        assert_eq!(
            parse(&["HELLO", "x"]).unwrap_err(),
            "ERR Protocol version is not an integer or out of range"
        );
        assert_eq!(
            parse(&["HELLO", "4"]).unwrap_err(),
            "NOPROTO unsupported protocol version"
        );
        assert_eq!(
            parse(&["HELLO", "2", "AUTH", "u"]).unwrap_err(),
            "ERR Syntax error in HELLO option 'AUTH'"
        );
        assert!(parse(&["HELLO", "2", "SETNAME", "a b"])
            .unwrap_err()
            .starts_with("ERR Client names cannot contain"));
    }

    #[test]
    fn auth_forms() {
        assert_eq!(parse_auth(&[0..1, 1..2]), Ok((None, 1)));
        assert_eq!(parse_auth(&[0..1, 1..2, 2..3]), Ok((Some(1), 2)));
        assert_eq!(
            parse_auth(&[0..1, 1..2, 2..3, 3..4]),
            Err("ERR syntax error")
        );
    }
}
