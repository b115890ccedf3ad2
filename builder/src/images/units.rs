//! The sizes and durations `prune` and the automatic GC take, read as docker reads them.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum UnitsError {
    #[error("invalid size {0:?}: want a number and an optional unit (`512MB`, `10GB`, `1.5GiB`)")]
    Size(String),
    #[error("invalid duration {0:?}: want Go's form (`24h`, `90m`, `1h30m`, `10s`)")]
    Duration(String),
}

/// A size as `docker buildx prune --keep-storage` reads it (go-units' `RAMInBytes`): a number,
/// optionally fractional, then `k`/`m`/`g`/`t`/`p` with an optional `i` and `b`, any case.
/// Every unit is binary, `10GB` included, because that is what docker does with the same
/// flag; a bare number is bytes.
pub fn parse_size(text: &str) -> Result<u64, UnitsError> {
    let bad = || UnitsError::Size(text.to_string());
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return Err(bad());
    }
    let number: f64 = number.parse().map_err(|_| bad())?;
    let unit = unit.trim_start().to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let power = match unit {
        "" => 0,
        "k" => 1,
        "m" => 2,
        "g" => 3,
        "t" => 4,
        "p" => 5,
        _ => return Err(bad()),
    };
    let bytes = number * 1024f64.powi(power);
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

/// A Go duration (`time.ParseDuration`, as the frontend reads HEALTHCHECK's): `1h30m`, `1.5h`,
/// `300ms`. No sign, since a negative age filters nothing that makes sense.
pub fn parse_go_duration(text: &str) -> Result<Duration, UnitsError> {
    match rbuild_frontend::instructions::parse_duration(text) {
        Ok(nanos) if !text.starts_with(['-', '+']) => Ok(Duration::from_nanos(nanos as u64)),
        _ => Err(UnitsError::Duration(text.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_dockers_units_all_binary() {
        assert_eq!(parse_size("0").unwrap(), 0);
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("512MB").unwrap(), 512 << 20);
        assert_eq!(parse_size("10GB").unwrap(), 10 << 30);
        assert_eq!(parse_size("10g").unwrap(), 10 << 30);
        assert_eq!(parse_size("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_size("2 kb").unwrap(), 2048);
        assert_eq!(parse_size("1b").unwrap(), 1);
    }

    #[test]
    fn sizes_without_a_number_or_with_an_unknown_unit_are_refused() {
        for bad in ["", "GB", "10XB", "1.2.3MB", "-1GB", "1e3", ".5G", "10GBB"] {
            assert!(parse_size(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(parse_size("10XB").unwrap_err().to_string().contains("10XB"));
    }

    #[test]
    fn durations_read_as_go_reads_them() {
        let secs = |s: &str| parse_go_duration(s).unwrap().as_secs_f64();
        assert_eq!(secs("24h"), 86_400.0);
        assert_eq!(secs("90m"), 5_400.0);
        assert_eq!(secs("1h30m"), 5_400.0);
        assert_eq!(secs("1.5h"), 5_400.0);
        assert_eq!(secs("10s"), 10.0);
        assert_eq!(secs("0"), 0.0);
        assert_eq!(parse_go_duration("300ms").unwrap().as_millis(), 300);
    }

    #[test]
    fn durations_need_a_unit_on_every_number() {
        for bad in ["", "10", "1d", "h", "1h30", "-1h", "1.h2"] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
