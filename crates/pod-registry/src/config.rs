//! Which store the daemon serves: the embedded sled one, or a table shared
//! through etcd, as `--etcd URLS --node NAME --lease-ttl SECS` or
//! `POD_ETCD`, `POD_NODE`, `POD_LEASE_TTL` say.
//!
//! The daemon reads the environment itself, so a daemon a client starts
//! on demand (which inherits the client's environment) serves the same
//! table as one started by hand with the same variables. Flags win over
//! the environment.

use std::time::Duration;

use crate::record::NodeName;
use crate::RegistryError;

/// Shortest lease TTL: keepalives go every TTL/3 and the margin is at
/// least 250 ms.
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(2);
/// Longest lease TTL (a dead node's paths stay held this long).
pub const MAX_LEASE_TTL: Duration = Duration::from_secs(3600);
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);
/// Most etcd endpoints, and the longest one.
pub const MAX_ENDPOINTS: usize = 16;
pub const MAX_ENDPOINT_BYTES: usize = 256;

/// Where a node's registry finds etcd and who it is there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shared {
    pub endpoints: Vec<String>,
    pub node: NodeName,
    pub lease_ttl: Duration,
    /// The periodic reconcile pass runs (`POD_TEST_NO_RECONCILE=1` turns it
    /// off, for the test that shows the watch alone loses no delete).
    pub reconcile: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// `None`: the embedded registry.
    pub shared: Option<Shared>,
}

/// The raw settings, from flags or the environment.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub etcd: Option<String>,
    pub node: Option<String>,
    pub lease_ttl: Option<String>,
}

impl Settings {
    pub fn from_env() -> Settings {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Settings { etcd: var("POD_ETCD"), node: var("POD_NODE"), lease_ttl: var("POD_LEASE_TTL") }
    }

    /// `self`, with what it leaves unset taken from `fallback`.
    pub fn or(self, fallback: Settings) -> Settings {
        Settings {
            etcd: self.etcd.or(fallback.etcd),
            node: self.node.or(fallback.node),
            lease_ttl: self.lease_ttl.or(fallback.lease_ttl),
        }
    }
}

impl Config {
    /// From `POD_ETCD`, `POD_NODE`, `POD_LEASE_TTL`.
    pub fn from_env() -> Result<Config, RegistryError> {
        Config::from_settings(Settings::from_env())
    }

    pub fn from_settings(s: Settings) -> Result<Config, RegistryError> {
        let bad = |m: String| RegistryError::Config(m);
        let Some(etcd) = s.etcd else {
            if s.node.is_some() || s.lease_ttl.is_some() {
                return Err(bad("--node and --lease-ttl (POD_NODE, POD_LEASE_TTL) need --etcd (POD_ETCD)".into()));
            }
            return Ok(Config::default());
        };
        let endpoints = endpoints(&etcd)?;
        let node = match s.node {
            Some(n) => NodeName::new(n).map_err(bad)?,
            None => host_node()?,
        };
        let lease_ttl = match s.lease_ttl {
            Some(t) => lease_ttl(&t)?,
            None => DEFAULT_LEASE_TTL,
        };
        let reconcile = std::env::var("POD_TEST_NO_RECONCILE").map_or(true, |v| v != "1");
        Ok(Config { shared: Some(Shared { endpoints, node, lease_ttl, reconcile }) })
    }
}

fn endpoints(raw: &str) -> Result<Vec<String>, RegistryError> {
    let bad = |m: String| RegistryError::Config(m);
    let list: Vec<String> = raw.split(',').map(str::trim).map(str::to_string).collect();
    if list.len() > MAX_ENDPOINTS {
        return Err(bad(format!("{} etcd endpoints; the limit is {MAX_ENDPOINTS}", list.len())));
    }
    for e in &list {
        if e.is_empty() {
            return Err(bad(format!("an empty etcd endpoint in {raw:?}")));
        }
        if e.len() > MAX_ENDPOINT_BYTES {
            return Err(bad(format!("etcd endpoint of {} bytes; the limit is {MAX_ENDPOINT_BYTES}", e.len())));
        }
        let rest = e.strip_prefix("http://").unwrap_or(e);
        if e.starts_with("https://") {
            return Err(bad(format!("etcd endpoint {e}: TLS is not supported yet; use http:// on a trusted network")));
        }
        if rest.contains('@') {
            return Err(bad(format!(
                "etcd endpoint {e:?} carries credentials; they do not belong in a URL on a command line"
            )));
        }
        let port = rest.rsplit_once(':').map(|(_, p)| p.trim_end_matches('/'));
        if !port.is_some_and(|p| p.parse::<u16>().is_ok_and(|p| p > 0)) {
            return Err(bad(format!("etcd endpoint {e:?} has no port (host:port or http://host:port)")));
        }
    }
    Ok(list)
}

fn lease_ttl(raw: &str) -> Result<Duration, RegistryError> {
    let secs: u64 = raw
        .trim()
        .parse()
        .map_err(|_| RegistryError::Config(format!("lease TTL {raw:?} is not a whole number of seconds")))?;
    let ttl = Duration::from_secs(secs);
    if !(MIN_LEASE_TTL..=MAX_LEASE_TTL).contains(&ttl) {
        return Err(RegistryError::Config(format!(
            "lease TTL {secs} s is out of range: {}..={} s",
            MIN_LEASE_TTL.as_secs(),
            MAX_LEASE_TTL.as_secs()
        )));
    }
    Ok(ttl)
}

/// The host name, lowercased, as a node name.
fn host_node() -> Result<NodeName, RegistryError> {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_err(|e| RegistryError::Config(format!("cannot read the host name ({e}); give --node")))?;
    NodeName::new(raw.trim().to_ascii_lowercase())
        .map_err(|e| RegistryError::Config(format!("the host name is not a node name ({e}); give --node")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(etcd: Option<&str>, node: Option<&str>, ttl: Option<&str>) -> Settings {
        Settings { etcd: etcd.map(Into::into), node: node.map(Into::into), lease_ttl: ttl.map(Into::into) }
    }

    fn refusal(s: Settings) -> String {
        match Config::from_settings(s) {
            Err(e) => format!("{e} [{}]", e.code()),
            Ok(c) => panic!("accepted {c:?}"),
        }
    }

    #[test]
    fn without_etcd_the_registry_is_the_embedded_one() {
        assert_eq!(Config::from_settings(Settings::default()).expect("config"), Config::default());
    }

    #[test]
    fn etcd_settings_are_read_with_their_defaults() {
        let c = Config::from_settings(settings(Some("127.0.0.1:2379,http://h:1"), Some("n1"), None)).expect("config");
        let shared = c.shared.expect("shared");
        assert_eq!(shared.endpoints, vec!["127.0.0.1:2379", "http://h:1"]);
        assert_eq!(shared.node.as_str(), "n1");
        assert_eq!(shared.lease_ttl, DEFAULT_LEASE_TTL);
    }

    #[test]
    fn bad_settings_are_refused_with_one_line_each() {
        let cases = [
            refusal(settings(None, Some("n1"), None)),
            refusal(settings(Some("h:1"), Some("N 1"), None)),
            refusal(settings(Some("h:1"), Some("n1"), Some("1"))),
            refusal(settings(Some("h:1"), Some("n1"), Some("ten"))),
            refusal(settings(Some("h:1,"), Some("n1"), None)),
            refusal(settings(Some("http://user:pw@h:1"), Some("n1"), None)),
            refusal(settings(Some("h"), Some("n1"), None)),
            refusal(settings(Some("https://h:1"), Some("n1"), None)),
        ];
        insta::assert_snapshot!(cases.join("\n"), @r#"
        bad registry configuration: --node and --lease-ttl (POD_NODE, POD_LEASE_TTL) need --etcd (POD_ETCD) [registry.bad_config]
        bad registry configuration: node name "N 1" is not 1-64 bytes of [a-z0-9._-] starting with a letter or digit [registry.bad_config]
        bad registry configuration: lease TTL 1 s is out of range: 2..=3600 s [registry.bad_config]
        bad registry configuration: lease TTL "ten" is not a whole number of seconds [registry.bad_config]
        bad registry configuration: an empty etcd endpoint in "h:1," [registry.bad_config]
        bad registry configuration: etcd endpoint "http://user:pw@h:1" carries credentials; they do not belong in a URL on a command line [registry.bad_config]
        bad registry configuration: etcd endpoint "h" has no port (host:port or http://host:port) [registry.bad_config]
        bad registry configuration: etcd endpoint https://h:1: TLS is not supported yet; use http:// on a trusted network [registry.bad_config]
        "#);
    }
}
