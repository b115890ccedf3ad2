//! The vertices of a build graph and their stable digests.

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::instructions::{Mount, NetworkMode, SecurityMode};
use crate::parser::Heredoc;
use crate::platform::Platform;

/// One vertex: what a build step does, with every value already expanded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Op {
    /// A base image, resolved (tag → digest) when the build runs.
    Image {
        reference: String,
        platform: Platform,
    },
    Scratch,
    /// Files of the build context: exactly the paths a COPY/ADD selects.
    Context {
        name: String,
        include: Vec<String>,
        exclude: Vec<String>,
    },
    Exec(ExecOp),
    File(FileOp),
}

/// A RUN: the argv and everything that shapes the process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExecOp {
    pub args: Vec<String>,
    /// `KEY=value`, image env first, then build args in scope.
    pub env: Vec<String>,
    pub cwd: String,
    pub user: String,
    /// Values expanded; `target` resolved against the working directory. A bind or cache
    /// mount's `from` is also an edge of the graph.
    pub mounts: Vec<Mount>,
    pub network: NetworkMode,
    pub security: SecurityMode,
    pub platform: Platform,
    /// Heredoc bodies the command reads (kept for the executor to supply as files).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub heredocs: Vec<Heredoc>,
}

/// A COPY, ADD or WORKDIR's directory creation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum FileOp {
    Copy(CopyAction),
    Add(AddAction),
    Mkdir { path: String, user: String },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CopyAction {
    pub sources: Vec<String>,
    /// Absolute; a trailing `/` is kept (it means "into this directory").
    pub dest: String,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub parents: bool,
    pub exclude: Vec<String>,
    /// `--from` as written after expansion (stage name, index or image), if any.
    pub from: Option<String>,
    /// The user the build runs as, for resolving the destination's ownership.
    pub user: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub heredocs: Vec<Heredoc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AddAction {
    pub copy: CopyAction,
    pub checksum: Option<String>,
    pub keep_git_dir: Option<bool>,
    pub unpack: Option<bool>,
}

/// How an input feeds a vertex.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Edge {
    /// The filesystem the step runs on or writes into.
    Rootfs,
    /// Files a COPY/ADD reads.
    Source,
    /// A RUN --mount's contents, by the mount's target.
    Mount { target: String },
}

/// The canonical encoding: JSON with sorted object keys and no insignificant whitespace.
/// `serde_json::Value` keeps its maps sorted, so encoding through it fixes the key order.
pub fn canonical_json<T: Serialize>(value: &T) -> Vec<u8> {
    let value = serde_json::to_value(value).expect("graph types serialize to JSON");
    serde_json::to_vec(&value).expect("a JSON value encodes")
}

/// A vertex's digest covers the op and, in order, each input's kind and digest, so equal
/// digests mean equal work on equal inputs.
pub fn vertex_digest(op: &Op, inputs: &[(&Edge, &str)]) -> String {
    #[derive(Serialize)]
    struct Input<'a> {
        edge: &'a Edge,
        digest: &'a str,
    }
    #[derive(Serialize)]
    struct Vertex<'a> {
        op: &'a Op,
        inputs: Vec<Input<'a>>,
    }
    let vertex = Vertex {
        op,
        inputs: inputs
            .iter()
            .map(|(edge, digest)| Input { edge, digest })
            .collect(),
    };
    format!(
        "sha256:{}",
        hex::encode(Sha256::digest(canonical_json(&vertex)))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_stable_and_input_sensitive() {
        let op = Op::Scratch;
        let a = vertex_digest(&op, &[]);
        assert_eq!(a, vertex_digest(&Op::Scratch, &[]));
        let b = vertex_digest(&op, &[(&Edge::Rootfs, a.as_str())]);
        assert_ne!(a, b);
        let img = Op::Image {
            reference: "busybox".into(),
            platform: Platform::parse("linux/amd64").unwrap(),
        };
        let img_arm = Op::Image {
            reference: "busybox".into(),
            platform: Platform::parse("linux/arm64").unwrap(),
        };
        assert_ne!(vertex_digest(&img, &[]), vertex_digest(&img_arm, &[]));
    }

    #[test]
    fn canonical_json_sorts_keys() {
        let v = serde_json::json!({"b": 1, "a": {"d": 2, "c": 3}});
        assert_eq!(canonical_json(&v), br#"{"a":{"c":3,"d":2},"b":1}"#);
    }
}
