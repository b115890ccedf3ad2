//! The files BuildKit binds over `/etc/hosts` and `/etc/resolv.conf` (plus `/etc/hostname`),
//! generated per run in the bundle directory and mounted read-only, so the rootfs' own files
//! are never written.

use super::Network;

/// BuildKit's `hostsContent` (`executor/oci/hosts.go`) with the container's hostname on the
/// IPv4 loopback line.
pub fn hosts(hostname: &str) -> String {
    format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n")
}

pub fn hostname(hostname: &str) -> String {
    format!("{hostname}\n")
}

/// Docker's default nameservers when none usable is left (libnetwork `resolvconf`).
const DEFAULT_NAMESERVERS: [&str; 4] = [
    "8.8.8.8",
    "8.8.4.4",
    "2001:4860:4860::8888",
    "2001:4860:4860::8844",
];

/// `/etc/resolv.conf` for the container, from the host's (`host_conf`, empty when missing), as
/// BuildKit's `GetResolvConf` makes it: with host networking the host's file as is (a local
/// resolver such as 127.0.0.53 is reachable there); otherwise, or when the host's names no
/// nameserver, loopback nameservers are dropped (unreachable from another network namespace)
/// and Docker's defaults fill in when none is left (`TransformForLegacyNw`).
pub fn resolv_conf(host_conf: &str, network: Network) -> String {
    let nameservers: Vec<&str> = host_conf.lines().filter_map(nameserver).collect();
    if network == Network::Host && !nameservers.is_empty() {
        let mut out = host_conf.to_string();
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        return out;
    }
    let mut out = String::new();
    let mut kept = 0;
    for line in host_conf.lines() {
        match nameserver(line) {
            Some(ns) if is_loopback(ns) => continue,
            Some(_) => kept += 1,
            None => {}
        }
        out.push_str(line);
        out.push('\n');
    }
    if kept == 0 {
        for ns in DEFAULT_NAMESERVERS {
            out.push_str(&format!("nameserver {ns}\n"));
        }
    }
    out
}

fn nameserver(line: &str) -> Option<&str> {
    let mut words = line.split_whitespace();
    (words.next() == Some("nameserver"))
        .then(|| words.next())
        .flatten()
}

fn is_loopback(addr: &str) -> bool {
    // An IPv6 address may carry a zone (`fe80::1%eth0`).
    let addr = addr.split('%').next().unwrap_or(addr);
    addr.parse::<std::net::IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_names_localhost_and_the_hostname() {
        assert_eq!(
            hosts("buildkitsandbox"),
            "127.0.0.1\tlocalhost buildkitsandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        );
        assert_eq!(hostname("box"), "box\n");
    }

    #[test]
    fn host_networking_keeps_the_hosts_resolv_conf() {
        let host = "search example.org\nnameserver 127.0.0.53\noptions edns0";
        assert_eq!(
            resolv_conf(host, Network::Host),
            "search example.org\nnameserver 127.0.0.53\noptions edns0\n"
        );
    }

    #[test]
    fn other_networks_lose_loopback_nameservers() {
        let host = "nameserver 127.0.0.53\nnameserver 10.0.0.2\nnameserver ::1\n";
        assert_eq!(resolv_conf(host, Network::None), "nameserver 10.0.0.2\n");
        let only_local = "search lan\nnameserver 127.0.0.53\n";
        assert_eq!(
            resolv_conf(only_local, Network::None),
            "search lan\nnameserver 8.8.8.8\nnameserver 8.8.4.4\n\
             nameserver 2001:4860:4860::8888\nnameserver 2001:4860:4860::8844\n"
        );
        // No host file at all: the defaults, whatever the network.
        assert!(resolv_conf("", Network::Host).starts_with("nameserver 8.8.8.8\n"));
    }
}
