//! The network rule for a node: everything it starts lives in a network
//! namespace this run created, with no route out of it. `hack/isolated.sh`
//! creates one (with its own mount and pid namespaces, so mounts and
//! processes go when the run goes) and records the machine's own network
//! namespace in `PROBITY_HOST_NETNS`; [`check`] refuses anything else.

use std::path::Path;

/// Set by `hack/isolated.sh`: the inode of the machine's own network
/// namespace, which a node must not run in.
pub const HOST_NETNS_ENV: &str = "PROBITY_HOST_NETNS";

/// Set by `hack/isolated.sh`: the prefix of the cgroups a node may create,
/// which the script removes after the run.
pub const ISOLATION_ID_ENV: &str = "PROBITY_ISOLATION_ID";

/// The file naming this run's network namespace for `nsenter --net=`,
/// written by `hack/isolated.sh` once the namespace exists.
pub fn netns_file() -> Option<String> {
    let id = std::env::var(ISOLATION_ID_ENV).ok()?;
    let record = format!("/run/{id}.netns");
    for _ in 0..50 {
        if let Ok(path) = std::fs::read_to_string(&record) {
            return Some(path.trim().to_owned());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    None
}

/// Whether this process runs with effective uid 0, as `hack/isolated.sh`
/// needs (the second field of `Uid:` in `/proc/self/status`).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        .unwrap_or(false)
}

/// Why the current process may not start a node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Not started through `hack/isolated.sh`.
    #[error(
        "not in a network namespace of the run's own ({HOST_NETNS_ENV} unset): run through hack/isolated.sh"
    )]
    NotIsolated,
    /// Still in the machine's own network namespace.
    #[error("this is the machine's own network namespace (inode {0})")]
    HostNamespace(u64),
    /// A default route leads out of the namespace.
    #[error("the network namespace has a default route ({0}); a node's traffic must stay inside")]
    DefaultRoute(&'static str),
    /// The namespace could not be inspected.
    #[error("cannot inspect the network namespace: {0}")]
    Unreadable(String),
}

/// Ok when this process runs in a network namespace other than the
/// machine's (as recorded by `hack/isolated.sh`) with no default route.
///
/// # Errors
///
/// Which of those does not hold.
pub fn check() -> Result<(), Refused> {
    let host = std::env::var(HOST_NETNS_ENV)
        .ok()
        .and_then(|v| v.trim().parse().ok());
    let own = netns_inode(Path::new("/proc/self/ns/net"))?;
    let routes = std::fs::read_to_string("/proc/net/route")
        .map_err(|e| Refused::Unreadable(format!("/proc/net/route: {e}")))?;
    // Without IPv6 in the kernel the file is missing: no route either.
    let routes_v6 = std::fs::read_to_string("/proc/net/ipv6_route").ok();
    judge(host, own, &routes, routes_v6.as_deref())
}

/// [`check`] on what it read.
fn judge(
    host: Option<u64>,
    own: u64,
    routes: &str,
    routes_v6: Option<&str>,
) -> Result<(), Refused> {
    let host = host.ok_or(Refused::NotIsolated)?;
    if own == host {
        return Err(Refused::HostNamespace(own));
    }
    if has_default_route_v4(routes) {
        return Err(Refused::DefaultRoute("IPv4"));
    }
    if routes_v6.is_some_and(has_default_route_v6) {
        return Err(Refused::DefaultRoute("IPv6"));
    }
    Ok(())
}

fn netns_inode(path: &Path) -> Result<u64, Refused> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path)
        .map(|m| m.ino())
        .map_err(|e| Refused::Unreadable(format!("{}: {e}", path.display())))
}

/// `/proc/net/route`: a row whose destination and mask are 0.
fn has_default_route_v4(table: &str) -> bool {
    table.lines().skip(1).any(|row| {
        let fields: Vec<&str> = row.split_whitespace().collect();
        fields.len() > 7 && fields[1] == "00000000" && fields[7] == "00000000"
    })
}

/// `/proc/net/ipv6_route`: a row for ::/0 that is not the kernel's
/// unreachable placeholder on `lo`.
fn has_default_route_v6(table: &str) -> bool {
    table.lines().any(|row| {
        let fields: Vec<&str> = row.split_whitespace().collect();
        fields.len() >= 10
            && fields[0].bytes().all(|b| b == b'0')
            && fields[1] == "00"
            && fields[9] != "lo"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_routes_are_recognised() {
        let with = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n\
                    eth0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\n";
        let without = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n\
                       cni0\t0000580A\t00000000\t0001\t0\t0\t0\t0000FFFF\n";
        assert!(has_default_route_v4(with));
        assert!(!has_default_route_v4(without));
        let v6_default = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003 eth0\n";
        let v6_unreachable = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200 lo\n";
        assert!(has_default_route_v6(v6_default));
        assert!(!has_default_route_v6(v6_unreachable));
    }

    #[test]
    fn only_a_namespace_of_the_runs_own_without_a_way_out_passes() {
        let none = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n";
        let out = format!("{none}eth0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\n");
        assert_eq!(judge(None, 7, none, None), Err(Refused::NotIsolated));
        assert_eq!(
            judge(Some(7), 7, none, None),
            Err(Refused::HostNamespace(7))
        );
        assert_eq!(
            judge(Some(7), 8, &out, None),
            Err(Refused::DefaultRoute("IPv4"))
        );
        assert_eq!(judge(Some(7), 8, none, None), Ok(()));
        // This test process itself runs wherever the test runner put it.
        let own = netns_inode(Path::new("/proc/self/ns/net")).expect("own netns");
        assert!(own > 0);
    }
}
