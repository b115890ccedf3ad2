//! Build cache keys. A step's key is a digest over what decides its result: the op as the
//! frontend lowered it (command, env with the build args in scope, user, workdir, mounts,
//! network, security, platform; COPY's paths and flags), the keys of its inputs (so a change
//! flows down), a base image's resolved manifest digest, and the checksum of exactly the
//! context files a COPY/ADD reads. What went into a key is kept, so the next miss of the same
//! step can say what changed.

use std::collections::BTreeMap;

use rbuild_cache::image::canonical_json;
use rbuild_cache::Digest;
use serde::{Deserialize, Serialize};

/// Bumped when the key's recipe changes, so old records stop matching.
const KEY_VERSION: u32 = 3;

/// How many changed things a miss explanation lists before summing up the rest.
const MAX_REASONS: usize = 5;

/// Everything a step's key is made of.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyInputs {
    /// The lowered op, as JSON.
    pub op: serde_json::Value,
    /// Each input's role (root filesystem, source, mount), step name and key, by role.
    pub inputs: Vec<(String, String, Digest)>,
    /// A base image's manifest digest, as resolved for this build.
    pub base: Option<Digest>,
    /// The context files a COPY/ADD reads: the checksum over all of them, and each one's.
    pub files: Option<Files>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Files {
    pub digest: Digest,
    pub each: BTreeMap<String, Digest>,
}

impl KeyInputs {
    pub fn key(&self) -> Digest {
        #[derive(Serialize)]
        struct Recipe<'a> {
            version: u32,
            op: &'a serde_json::Value,
            inputs: Vec<(&'a String, &'a Digest)>,
            base: Option<&'a Digest>,
            files: Option<&'a Digest>,
        }
        let recipe = Recipe {
            version: KEY_VERSION,
            op: &self.op,
            inputs: self
                .inputs
                .iter()
                .map(|(role, _, key)| (role, key))
                .collect(),
            base: self.base.as_ref(),
            files: self.files.as_ref().map(|f| &f.digest),
        };
        Digest::of(&canonical_json(&recipe).expect("plain JSON values serialize"))
    }

    /// What differs from `before` (the same step's inputs last time), in words.
    pub fn explain(&self, before: &KeyInputs) -> Vec<String> {
        let mut reasons = Vec::new();
        if self.base != before.base {
            reasons.push(format!(
                "the base image now resolves to {} (was {})",
                show(self.base.as_ref()),
                show(before.base.as_ref())
            ));
        }
        diff_json("", &before.op, &self.op, &mut reasons);
        for (_, name, key) in &self.inputs {
            let same = before.inputs.iter().any(|(_, n, k)| n == name && k == key);
            if !same {
                reasons.push(format!("an earlier step changed: {name}"));
            }
        }
        if let (Some(now), Some(then)) = (&self.files, &before.files) {
            reasons.extend(file_changes(&then.each, &now.each));
        }
        if reasons.len() > MAX_REASONS {
            let more = reasons.len() - MAX_REASONS;
            reasons.truncate(MAX_REASONS);
            reasons.push(format!("and {more} more"));
        }
        if reasons.is_empty() {
            reasons.push("the cache record was removed (pruned) or never written".into());
        }
        reasons
    }
}

fn show(digest: Option<&Digest>) -> String {
    digest.map_or_else(|| "nothing".into(), |d| d.to_string())
}

/// `file X changed`, `file X added`, `file X removed`.
fn file_changes(before: &BTreeMap<String, Digest>, now: &BTreeMap<String, Digest>) -> Vec<String> {
    let mut reasons = Vec::new();
    for (path, digest) in now {
        match before.get(path) {
            None => reasons.push(format!("file {path} added")),
            Some(old) if old != digest => reasons.push(format!("file {path} changed")),
            Some(_) => {}
        }
    }
    for path in before.keys().filter(|p| !now.contains_key(*p)) {
        reasons.push(format!("file {path} removed"));
    }
    reasons
}

/// Differences between two ops, named by where they are: `env ARG_X: 1 → 2`, `args: …`.
fn diff_json(at: &str, before: &serde_json::Value, now: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    match (before, now) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let path = if at.is_empty() {
                    key.clone()
                } else {
                    format!("{at}.{key}")
                };
                let null = Value::Null;
                diff_json(
                    &path,
                    a.get(key).unwrap_or(&null),
                    b.get(key).unwrap_or(&null),
                    out,
                );
            }
        }
        (Value::Array(a), Value::Array(b)) if at.ends_with("env") => diff_env(a, b, out),
        (a, b) if a != b => out.push(format!("{at}: {} → {}", brief(a), brief(b))),
        _ => {}
    }
}

/// `KEY=value` lists (RUN's environment, where build args show up) compared by name.
fn diff_env(before: &[serde_json::Value], now: &[serde_json::Value], out: &mut Vec<String>) {
    let split = |list: &[serde_json::Value]| -> BTreeMap<String, String> {
        list.iter()
            .filter_map(|v| v.as_str())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k.to_string(), v.to_string())
            })
            .collect()
    };
    let (a, b) = (split(before), split(now));
    for (key, value) in &b {
        match a.get(key) {
            None => out.push(format!("build arg or env {key} set to {value:?}")),
            Some(old) if old != value => {
                out.push(format!("build arg or env {key}: {old:?} → {value:?}"))
            }
            Some(_) => {}
        }
    }
    for key in a.keys().filter(|k| !b.contains_key(*k)) {
        out.push(format!("build arg or env {key} unset"));
    }
}

fn brief(value: &serde_json::Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(80) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn inputs(env: &[&str]) -> KeyInputs {
        KeyInputs {
            op: json!({"exec": {"args": ["sh", "-c", "make"], "env": env}}),
            inputs: vec![(
                "rootfs".into(),
                "[build 1/3] FROM base".into(),
                Digest::of(b"parent"),
            )],
            base: None,
            files: None,
        }
    }

    #[test]
    fn keys_follow_every_part() {
        let a = inputs(&["A=1"]);
        assert_eq!(a.key(), inputs(&["A=1"]).key());
        assert_ne!(a.key(), inputs(&["A=2"]).key());
        let mut parent = a.clone();
        parent.inputs[0].2 = Digest::of(b"other parent");
        assert_ne!(a.key(), parent.key());
        let mut named = a.clone();
        named.inputs[0].1 = "renamed".into();
        let mut role = a.clone();
        role.inputs[0].0 = "source".into();
        assert_ne!(a.key(), role.key(), "the input's role is part of the key");
        assert_eq!(
            a.key(),
            named.key(),
            "names are for explaining, not for keys"
        );
        let mut base = a.clone();
        base.base = Some(Digest::of(b"manifest"));
        assert_ne!(a.key(), base.key());
    }

    #[test]
    fn a_miss_names_the_build_arg_the_file_and_the_parent() {
        let before = inputs(&["A=1", "B=x"]);
        let mut now = inputs(&["A=2", "C=y"]);
        now.inputs[0].2 = Digest::of(b"new parent");
        let reasons = now.explain(&before);
        assert!(
            reasons.contains(&"build arg or env A: \"1\" → \"2\"".to_string()),
            "{reasons:?}"
        );
        assert!(
            reasons.contains(&"build arg or env C set to \"y\"".to_string()),
            "{reasons:?}"
        );
        assert!(
            reasons.contains(&"build arg or env B unset".to_string()),
            "{reasons:?}"
        );
        assert!(reasons.contains(&"an earlier step changed: [build 1/3] FROM base".to_string()));

        let files = |pairs: &[(&str, &[u8])]| Files {
            digest: Digest::of(format!("{pairs:?}").as_bytes()),
            each: pairs
                .iter()
                .map(|(p, c)| (p.to_string(), Digest::of(c)))
                .collect(),
        };
        let mut a = inputs(&[]);
        a.files = Some(files(&[("src/a.c", b"1"), ("src/b.c", b"2")]));
        let mut b = inputs(&[]);
        b.files = Some(files(&[
            ("src/a.c", b"1"),
            ("src/b.c", b"3"),
            ("src/c.c", b"4"),
        ]));
        assert_eq!(
            b.explain(&a),
            ["file src/b.c changed", "file src/c.c added"]
        );
    }
}
