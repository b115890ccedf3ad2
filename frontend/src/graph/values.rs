//! Checks and normal forms of instruction values: EXPOSE ports, STOPSIGNAL, --chmod, paths.

/// EXPOSE `80`, `80/udp`, `8000-8002/tcp` → `["80/tcp"]`…; ranges expand to each port, as
/// Docker's `nat.ParsePortSpecs` does.
pub fn parse_port_spec(spec: &str) -> Result<Vec<String>, String> {
    // `ip:hostPort:containerPort` and `hostPort:containerPort`: Docker keeps the container
    // port and ignores the rest (publishing is `docker run -p`'s business).
    let spec = spec.rsplit(':').next().unwrap_or(spec);
    let (ports, proto) = spec.split_once('/').unwrap_or((spec, "tcp"));
    let proto = proto.to_ascii_lowercase();
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!(
            "invalid proto {proto:?} in EXPOSE {spec:?}: use tcp, udp or sctp"
        ));
    }
    let port = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| format!("invalid port {p:?} in EXPOSE {spec:?}"))
    };
    let (start, end) = match ports.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => (port(ports)?, port(ports)?),
    };
    if end < start {
        return Err(format!("invalid port range {ports:?} in EXPOSE {spec:?}"));
    }
    Ok((start..=end).map(|p| format!("{p}/{proto}")).collect())
}

const SIGNALS: [&str; 31] = [
    "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "IOT", "BUS", "FPE", "KILL", "USR1", "SEGV",
    "USR2", "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU",
    "URG", "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "PWR",
];

/// STOPSIGNAL: a number, a name with or without `SIG`, or `SIGRTMIN+n`/`SIGRTMAX-n`.
pub fn check_signal(signal: &str) -> Result<(), String> {
    let bad = || format!("invalid signal: {signal}");
    if let Ok(n) = signal.parse::<u32>() {
        return if (1..=64).contains(&n) {
            Ok(())
        } else {
            Err(bad())
        };
    }
    let upper = signal.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if SIGNALS.contains(&name) {
        return Ok(());
    }
    let rt = |rest: &str| rest.is_empty() || rest.parse::<u32>().is_ok_and(|n| n <= 30);
    match (name.strip_prefix("RTMIN"), name.strip_prefix("RTMAX")) {
        (Some(rest), _) if rest.is_empty() || rest.starts_with('+') && rt(&rest[1..]) => Ok(()),
        (_, Some(rest)) if rest.is_empty() || rest.starts_with('-') && rt(&rest[1..]) => Ok(()),
        _ => Err(bad()),
    }
}

/// `--chmod`: octal (`755`, `0644`) or symbolic (`u+rwx,g=rx,o-w`).
pub fn check_chmod(mode: &str) -> Result<(), String> {
    let bad =
        || format!("invalid chmod parameter {mode:?}: use octal (0755) or symbolic (u+x) form");
    if mode.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return match u32::from_str_radix(mode, 8) {
            Ok(n) if n <= 0o7777 => Ok(()),
            _ => Err(bad()),
        };
    }
    for clause in mode.split(',') {
        let who_end = clause.find(|c: char| !"ugoa".contains(c)).ok_or_else(bad)?;
        let rest = &clause[who_end..];
        if !rest.starts_with(['+', '-', '=']) || !rest[1..].chars().all(|c| "rwxXst".contains(c)) {
            return Err(bad());
        }
    }
    Ok(())
}

/// Go's `path.Clean` (the same cleanup .dockerignore patterns get).
pub use crate::dockerignore::clean as clean_path;

/// A path relative to the working directory made absolute; a trailing `/` (meaning "a
/// directory") survives, as Docker keeps it for COPY destinations.
pub fn resolve_in(workdir: &str, path: &str) -> String {
    let joined = if path.starts_with('/') {
        path.to_string()
    } else {
        format!(
            "{}/{}",
            if workdir.is_empty() { "/" } else { workdir },
            path
        )
    };
    let mut cleaned = clean_path(&joined);
    let wants_dir = path.ends_with('/') || path.ends_with("/.") || path == ".";
    if wants_dir && !cleaned.ends_with('/') {
        cleaned.push('/');
    }
    cleaned
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        assert_eq!(parse_port_spec("80").unwrap(), vec!["80/tcp"]);
        assert_eq!(parse_port_spec("53/UDP").unwrap(), vec!["53/udp"]);
        assert_eq!(
            parse_port_spec("7000-7002/tcp").unwrap(),
            vec!["7000/tcp", "7001/tcp", "7002/tcp"]
        );
        assert!(parse_port_spec("80/icmp").is_err());
        assert!(parse_port_spec("70000").is_err());
        assert_eq!(
            parse_port_spec("127.0.0.1:8080:80").unwrap(),
            vec!["80/tcp"]
        );
        assert!(parse_port_spec("90-80").is_err());
    }

    #[test]
    fn signals() {
        for ok in ["9", "SIGKILL", "term", "SIGRTMIN+3", "RTMAX-1"] {
            assert!(check_signal(ok).is_ok(), "{ok}");
        }
        for bad in ["0", "99", "SIGFOO", "RTMIN+99", ""] {
            assert!(check_signal(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn chmod() {
        for ok in ["755", "0644", "u+x", "u+rwx,g=rx,o-w", "a=rX"] {
            assert!(check_chmod(ok).is_ok(), "{ok}");
        }
        for bad in ["999", "17777", "u", "x+r", "u+z", ""] {
            assert!(check_chmod(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths() {
        assert_eq!(clean_path("/a/./b/../c//"), "/a/c");
        assert_eq!(clean_path("../a"), "../a");
        assert_eq!(clean_path("/.."), "/");
        assert_eq!(resolve_in("/app", "bin/"), "/app/bin/");
        assert_eq!(resolve_in("/app", "."), "/app/");
        assert_eq!(resolve_in("", "x"), "/x");
        assert_eq!(resolve_in("/app", "/etc/x"), "/etc/x");
    }
}
