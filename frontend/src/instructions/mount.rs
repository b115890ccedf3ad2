//! `RUN --mount=…` specs (bind, cache, tmpfs, secret, ssh) with BuildKit's per-type rules, and
//! `RUN --network` / `--security`.

use serde::Serialize;

use super::error::{invalid, InstructionErrorKind};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MountType {
    Bind,
    Cache,
    Tmpfs,
    Secret,
    Ssh,
}

impl MountType {
    const ALL: [MountType; 5] = [
        MountType::Bind,
        MountType::Cache,
        MountType::Tmpfs,
        MountType::Secret,
        MountType::Ssh,
    ];

    /// The name `type=` takes (and messages use).
    pub fn name(self) -> &'static str {
        match self {
            MountType::Bind => "bind",
            MountType::Cache => "cache",
            MountType::Tmpfs => "tmpfs",
            MountType::Secret => "secret",
            MountType::Ssh => "ssh",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheSharing {
    Shared,
    Private,
    Locked,
}

/// One `--mount`, values as written (variables are expanded when the stage is lowered).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Mount {
    #[serde(rename = "type")]
    pub kind: MountType,
    pub from: Option<String>,
    pub source: Option<String>,
    pub target: Option<String>,
    pub read_only: bool,
    pub id: Option<String>,
    pub sharing: Option<CacheSharing>,
    pub required: bool,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub env: Option<String>,
}

impl Mount {
    fn new(kind: MountType) -> Self {
        Mount {
            kind,
            from: None,
            source: None,
            target: None,
            read_only: false,
            id: None,
            sharing: None,
            required: false,
            mode: None,
            uid: None,
            gid: None,
            size: None,
            env: None,
        }
    }
}

/// Parses one `--mount` value: comma-separated `key=value` fields (CSV quoting allowed).
pub fn parse_mount(spec: &str) -> Result<Mount, InstructionErrorKind> {
    let fields =
        csv_fields(spec).map_err(|e| invalid(format!("failed to parse csv mounts: {e}")))?;
    let kind = mount_type(&fields)?;
    let mut m = Mount::new(kind);
    let mut read_only: Option<bool> = None;
    for field in &fields {
        apply_field(&mut m, &mut read_only, field)?;
    }
    // Bind mounts are read-only unless asked otherwise; caches and tmpfs are writable.
    m.read_only = read_only.unwrap_or(!matches!(kind, MountType::Cache | MountType::Tmpfs));
    validate(&m)?;
    if kind == MountType::Cache && m.sharing.is_none() {
        m.sharing = Some(CacheSharing::Shared);
    }
    Ok(m)
}

/// The type decides which keys are allowed, so it is read first wherever it stands.
fn mount_type(fields: &[String]) -> Result<MountType, InstructionErrorKind> {
    let mut kind = MountType::Bind;
    for field in fields {
        let Some((key, value)) = field.split_once('=') else {
            continue;
        };
        if key.eq_ignore_ascii_case("type") {
            kind = MountType::ALL
                .into_iter()
                .find(|t| value.eq_ignore_ascii_case(t.name()))
                .ok_or_else(|| invalid(format!("unsupported mount type {value:?}")))?;
        }
    }
    Ok(kind)
}

fn parse_bool(key: &str, value: &str) -> Result<bool, InstructionErrorKind> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(invalid(format!("invalid value for {key}: {value}"))),
    }
}

fn parse_u32(key: &str, value: &str, radix: u32) -> Result<u32, InstructionErrorKind> {
    u32::from_str_radix(value, radix)
        .map_err(|_| invalid(format!("invalid value {value} for {key}")))
}

fn unexpected(key: &str, kind: MountType) -> InstructionErrorKind {
    invalid(format!(
        "unexpected key '{key}' for mount type '{}'",
        kind.name()
    ))
}

fn apply_field(
    m: &mut Mount,
    read_only: &mut Option<bool>,
    field: &str,
) -> Result<(), InstructionErrorKind> {
    let (key, value) = match field.split_once('=') {
        Some((k, v)) => (k.to_ascii_lowercase(), Some(v)),
        None => (field.to_ascii_lowercase(), None),
    };
    let secretish = matches!(m.kind, MountType::Secret | MountType::Ssh);
    let Some(value) = value else {
        match key.as_str() {
            "readonly" | "ro" => *read_only = Some(true),
            "readwrite" | "rw" => *read_only = Some(false),
            "required" if secretish => m.required = true,
            "required" => return Err(unexpected(&key, m.kind)),
            _ => {
                return Err(invalid(format!(
                    "invalid field '{field}' must be a key=value pair"
                )))
            }
        }
        return Ok(());
    };
    let text = || Some(value.to_string());
    match key.as_str() {
        "type" => {}
        "from" => m.from = text(),
        "source" | "src" => m.source = text(),
        "target" | "dst" | "destination" => m.target = text(),
        "readonly" | "ro" => *read_only = Some(parse_bool(&key, value)?),
        "readwrite" | "rw" => *read_only = Some(!parse_bool(&key, value)?),
        "required" if secretish => m.required = parse_bool(&key, value)?,
        "id" => m.id = text(),
        "sharing" => m.sharing = Some(parse_sharing(value)?),
        "mode" => m.mode = Some(parse_u32(&key, value, 8)?),
        "uid" => m.uid = Some(parse_u32(&key, value, 10)?),
        "gid" => m.gid = Some(parse_u32(&key, value, 10)?),
        "size" if m.kind == MountType::Tmpfs => m.size = Some(parse_size(value)?),
        "env" if m.kind == MountType::Secret => m.env = text(),
        "required" | "size" | "env" => return Err(unexpected(&key, m.kind)),
        _ => return Err(invalid(format!("unexpected key '{key}' in '{field}'"))),
    }
    Ok(())
}

fn parse_sharing(value: &str) -> Result<CacheSharing, InstructionErrorKind> {
    match value.to_ascii_lowercase().as_str() {
        "shared" => Ok(CacheSharing::Shared),
        "private" => Ok(CacheSharing::Private),
        "locked" => Ok(CacheSharing::Locked),
        _ => Err(invalid(format!("unsupported sharing value {value:?}"))),
    }
}

/// Docker's `RAMInBytes`: a number with an optional binary unit (`64m`, `1.5GiB`, `512`).
fn parse_size(value: &str) -> Result<u64, InstructionErrorKind> {
    let bad = || invalid(format!("invalid size: '{value}'"));
    let lower = value.trim().to_ascii_lowercase();
    let split = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let number: f64 = lower[..split].parse().map_err(|_| bad())?;
    let unit = lower[split..].trim_end_matches("ib").trim_end_matches('b');
    let scale: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        "p" => 1 << 50,
        _ => return Err(bad()),
    };
    Ok((number * scale as f64) as u64)
}

fn validate(m: &Mount) -> Result<(), InstructionErrorKind> {
    let type_name = m.kind.name();
    let file_info_allowed = matches!(
        m.kind,
        MountType::Secret | MountType::Ssh | MountType::Cache
    );
    for (name, set) in [
        ("mode", m.mode.is_some()),
        ("uid", m.uid.is_some()),
        ("gid", m.gid.is_some()),
    ] {
        if set && !file_info_allowed {
            return Err(invalid(format!(
                "{name} not allowed for {type_name:?} type mounts"
            )));
        }
    }
    if m.sharing.is_some() && m.kind != MountType::Cache {
        return Err(invalid(format!(
            "invalid cache sharing set for {type_name} mount"
        )));
    }
    if m.from.as_deref().is_some_and(has_variable) {
        return Err(invalid(
            "'from' doesn't support variable expansion, define alias stage instead",
        ));
    }
    match m.kind {
        MountType::Secret => validate_secret(m),
        MountType::Tmpfs if m.from.is_some() || m.source.is_some() => {
            Err(invalid("tmpfs mounts take no from or source"))
        }
        MountType::Bind | MountType::Cache | MountType::Tmpfs if m.target.is_none() => {
            Err(invalid(format!("mount type {type_name} requires a target")))
        }
        _ => Ok(()),
    }
}

fn validate_secret(m: &Mount) -> Result<(), InstructionErrorKind> {
    if m.from.is_some() {
        return Err(invalid("secret mount should not have a from"));
    }
    if m.source.is_none() && m.target.is_none() && m.id.is_none() && m.env.is_none() {
        return Err(invalid(
            "invalid secret mount. one of source, target, env or id required",
        ));
    }
    if m.source.is_some() && m.id.is_some() {
        return Err(invalid("both source and id can't be set"));
    }
    Ok(())
}

/// `$x` anywhere but at the very end is a variable reference.
fn has_variable(value: &str) -> bool {
    value.find('$').is_some_and(|i| i + 1 < value.len())
}

/// One CSV record as Go's `encoding/csv` reads it: fields split on commas, a field that opens
/// with `"` is quoted (`""` is a literal quote), and a bare `"` inside a field is an error.
pub fn csv_fields(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err("extraneous or missing \" in quoted-field".into()),
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                }
            }
            if !matches!(chars.peek(), None | Some(',')) {
                return Err("extraneous or missing \" in quoted-field".into());
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                if c == '"' {
                    return Err("bare \" in non-quoted-field".into());
                }
                field.push(c);
                chars.next();
            }
        }
        fields.push(field);
        if chars.next().is_none() {
            return Ok(fields);
        }
    }
}

/// `RUN --network=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    Default,
    None,
    Host,
}

pub fn parse_network(value: &str) -> Result<NetworkMode, InstructionErrorKind> {
    match value {
        "default" => Ok(NetworkMode::Default),
        "none" => Ok(NetworkMode::None),
        "host" => Ok(NetworkMode::Host),
        _ => Err(invalid(format!("unsupported network mode {value:?}"))),
    }
}

/// `RUN --security=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SecurityMode {
    Sandbox,
    Insecure,
}

pub fn parse_security(value: &str) -> Result<SecurityMode, InstructionErrorKind> {
    match value {
        "sandbox" => Ok(SecurityMode::Sandbox),
        "insecure" => Ok(SecurityMode::Insecure),
        _ => Err(invalid(format!("unsupported security mode {value:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(spec: &str) -> String {
        parse_mount(spec).unwrap_err().to_string()
    }

    #[test]
    fn defaults_follow_the_type() {
        let m = parse_mount("target=/src").unwrap();
        assert_eq!((m.kind, m.read_only), (MountType::Bind, true));
        let m = parse_mount("target=/root/.cache,type=cache,id=x").unwrap();
        assert_eq!(
            (m.kind, m.read_only, m.sharing),
            (MountType::Cache, false, Some(CacheSharing::Shared))
        );
        let m = parse_mount("type=secret,id=tok,required").unwrap();
        assert!(m.required && m.read_only);
        let m = parse_mount("type=tmpfs,target=/t,size=64m").unwrap();
        assert_eq!(m.size, Some(64 << 20));
    }

    #[test]
    fn per_type_rules() {
        assert_eq!(
            err("type=bind,target=/a,required"),
            "unexpected key 'required' for mount type 'bind'"
        );
        assert_eq!(
            err("type=bind,target=/a,mode=0700"),
            "mode not allowed for \"bind\" type mounts"
        );
        assert_eq!(
            err("type=bind,target=/a,sharing=locked"),
            "invalid cache sharing set for bind mount"
        );
        assert_eq!(
            err("type=secret,from=x,id=a"),
            "secret mount should not have a from"
        );
        assert_eq!(
            err("type=secret"),
            "invalid secret mount. one of source, target, env or id required"
        );
        assert_eq!(err("type=cache"), "mount type cache requires a target");
        assert_eq!(err("type=foo,target=/a"), "unsupported mount type \"foo\"");
        assert_eq!(
            err("target=/a,bogus=1"),
            "unexpected key 'bogus' in 'bogus=1'"
        );
        assert_eq!(
            err("target=/a,from=$X"),
            "'from' doesn't support variable expansion, define alias stage instead"
        );
        assert_eq!(err("type=cache,target=/a,uid=x"), "invalid value x for uid");
        assert_eq!(
            err("type=cache,target=/a,mode=9"),
            "invalid value 9 for mode"
        );
        assert_eq!(err("target=/a,ro=maybe"), "invalid value for ro: maybe");
        assert_eq!(
            err("target"),
            "invalid field 'target' must be a key=value pair"
        );
    }

    #[test]
    fn csv_quoting() {
        assert_eq!(
            csv_fields(r#"a=1,"b=x,y",c"#).unwrap(),
            vec!["a=1", "b=x,y", "c"]
        );
        assert_eq!(csv_fields(r#""a""b""#).unwrap(), vec![r#"a"b"#]);
        assert!(csv_fields(r#"a"b"#).is_err());
        assert!(csv_fields(r#""ab"#).is_err());
    }
}
