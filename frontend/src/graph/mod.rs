//! Lowering: typed stages → a [`BuildGraph`] of ops with stable digests, plus the image config
//! each stage accumulates. This is where ARGs, ENV and `$vars` get their values.

mod config;
mod history;
mod lower;
mod merge;
mod op;
mod scope;
mod values;

pub use config::{Empty, HealthConfig, ImageConfig, DEFAULT_PATH};
pub use history::HistoryStep;
pub use merge::merge;
pub use op::{canonical_json, vertex_digest, AddAction, CopyAction, Edge, ExecOp, FileOp, Op};

use std::collections::BTreeMap;

use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use serde::Serialize;

use crate::instructions::InstructionError;
use crate::lint::Warning;
use crate::parser::{Dockerfile, ParseError};
use crate::platform::Platform;

/// Configs of base images, which the builder resolves (the frontend never touches the
/// network). `None` means "not known": the stage then starts from an empty config.
pub trait BaseImages {
    fn config(&self, reference: &str, platform: &Platform) -> Option<ImageConfig>;
}

/// No base image is known (`rbuild debug graph`, tests).
pub struct NoBaseImages;

impl BaseImages for NoBaseImages {
    fn config(&self, _: &str, _: &Platform) -> Option<ImageConfig> {
        None
    }
}

/// What the user asked for: `--target`, `--build-arg`, `--platform`.
#[derive(Clone, Debug)]
pub struct LowerOptions {
    pub target: Option<String>,
    pub build_args: BTreeMap<String, String>,
    /// The platform the image is for; defaults to the build platform.
    pub target_platform: Option<Platform>,
    /// The platform the build runs on.
    pub build_platform: Platform,
    /// Vertex names start with the stage's platform (a build for several platforms).
    pub platform_in_names: bool,
}

impl Default for LowerOptions {
    fn default() -> Self {
        LowerOptions {
            target: None,
            build_args: BTreeMap::new(),
            target_platform: None,
            build_platform: Platform::host(),
            platform_in_names: false,
        }
    }
}

/// One vertex of the graph.
#[derive(Clone, Debug, Serialize)]
pub struct Vertex {
    pub op: Op,
    /// Covers the op and its inputs' digests (see [`vertex_digest`]).
    pub digest: String,
    /// A human name for progress output: `[build 2/5] RUN make`.
    pub name: String,
}

/// A lowered stage.
#[derive(Clone, Debug, Serialize)]
pub struct StageNode {
    /// The stage's position in the Dockerfile (0-based).
    pub index: usize,
    pub name: Option<String>,
    /// The FROM operand after expansion.
    pub base: String,
    pub platform: Platform,
    /// The final image config of the stage.
    pub config: ImageConfig,
    /// The history entries BuildKit would add to the image for this stage's instructions, in
    /// order, starting with those of the stages it is built FROM (a base image's own history
    /// is the builder's to put first).
    pub history: Vec<HistoryStep>,
    /// The vertex holding the stage's final filesystem.
    #[serde(skip)]
    pub head: NodeIndex,
    /// The stage's own vertices in order (base first).
    #[serde(skip)]
    pub vertices: Vec<NodeIndex>,
    pub line: usize,
}

/// The whole build: a DAG whose vertices are ops; only the stages the target needs.
#[derive(Clone, Debug)]
pub struct BuildGraph {
    pub graph: StableDiGraph<Vertex, Edge>,
    /// Lowered stages, by Dockerfile index.
    pub stages: BTreeMap<usize, StageNode>,
    /// The Dockerfile index of the target stage.
    pub target: usize,
    pub warnings: Vec<Warning>,
}

/// A lowering error, located where the Dockerfile has a place for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LowerError {
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error(transparent)]
    Instruction(#[from] InstructionError),
    #[error("{message}")]
    At {
        message: String,
        line: usize,
        column: usize,
    },
}

impl LowerError {
    /// 1-based line and column (0 when not known).
    pub fn location(&self) -> (usize, usize) {
        match self {
            LowerError::Parse(e) => (e.start_line, e.column),
            LowerError::Instruction(e) => (e.line, e.column),
            LowerError::At { line, column, .. } => (*line, *column),
        }
    }
}

/// Lowers a parsed Dockerfile.
pub fn lower(
    dockerfile: &Dockerfile,
    options: &LowerOptions,
    bases: &dyn BaseImages,
) -> Result<BuildGraph, LowerError> {
    lower::Lowering::run(dockerfile, options, bases)
}

impl BuildGraph {
    /// The JSON `rbuild debug graph` prints: stages, vertices with digests, edges, configs.
    pub fn to_json(&self) -> serde_json::Value {
        let index_of: BTreeMap<NodeIndex, usize> = self
            .graph
            .node_indices()
            .enumerate()
            .map(|(i, n)| (n, i))
            .collect();
        let vertices: Vec<serde_json::Value> = self
            .graph
            .node_indices()
            .map(|n| {
                let v = &self.graph[n];
                serde_json::json!({"index": index_of[&n], "digest": v.digest, "name": v.name, "op": v.op})
            })
            .collect();
        let edges: Vec<serde_json::Value> = self
            .graph
            .edge_indices()
            .filter_map(|e| {
                let (from, to) = self.graph.edge_endpoints(e)?;
                Some(serde_json::json!({"from": index_of[&from], "to": index_of[&to], "edge": self.graph[e]}))
            })
            .collect();
        let stages: Vec<serde_json::Value> = self
            .stages
            .values()
            .map(|s| {
                let mut v = serde_json::to_value(s).expect("stages serialize");
                v["head"] = index_of[&s.head].into();
                v["vertices"] = s.vertices.iter().map(|n| index_of[n]).collect();
                for (entry, step) in s.history.iter().enumerate() {
                    v["history"][entry]["vertex"] = step.vertex.map(|n| index_of[&n]).into();
                }
                v
            })
            .collect();
        serde_json::json!({
            "target": self.target,
            "stages": stages,
            "vertices": vertices,
            "edges": edges,
            "warnings": self.warnings,
        })
    }
}

#[cfg(test)]
mod tests;
