//! One graph for several lowerings of a Dockerfile (one per target platform): a vertex with
//! the same digest in two of them is one vertex, so what does not depend on the target
//! platform (a `FROM --platform=$BUILDPLATFORM` stage, the build context) is built once.

use std::collections::{BTreeMap, HashMap};

use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;

use super::{BuildGraph, Edge, StageNode, Vertex};

/// Merges `graphs` into one vertex set and returns them again, in order, each with the merged
/// graph and its stages pointing into it (its own target and warnings kept).
pub fn merge(graphs: Vec<BuildGraph>) -> Vec<BuildGraph> {
    let mut merged: StableDiGraph<Vertex, Edge> = StableDiGraph::new();
    let mut by_digest: HashMap<String, NodeIndex> = HashMap::new();
    let mut remaps = Vec::with_capacity(graphs.len());
    for build in &graphs {
        let mut remap: BTreeMap<NodeIndex, NodeIndex> = BTreeMap::new();
        let mut added = Vec::new();
        for old in build.graph.node_indices() {
            let vertex = &build.graph[old];
            let new = *by_digest.entry(vertex.digest.clone()).or_insert_with(|| {
                added.push(old);
                merged.add_node(vertex.clone())
            });
            remap.insert(old, new);
        }
        // A vertex's digest covers its inputs, so a vertex already merged has its edges.
        for &old in &added {
            for edge in build.graph.edges_directed(old, Direction::Incoming) {
                merged.add_edge(remap[&edge.source()], remap[&old], edge.weight().clone());
            }
        }
        remaps.push(remap);
    }
    graphs
        .into_iter()
        .zip(remaps)
        .map(|(build, remap)| BuildGraph {
            graph: merged.clone(),
            stages: build
                .stages
                .into_iter()
                .map(|(index, stage)| (index, remapped(stage, &remap)))
                .collect(),
            target: build.target,
            warnings: build.warnings,
        })
        .collect()
}

fn remapped(mut stage: StageNode, remap: &BTreeMap<NodeIndex, NodeIndex>) -> StageNode {
    stage.head = remap[&stage.head];
    for vertex in &mut stage.vertices {
        *vertex = remap[vertex];
    }
    for step in &mut stage.history {
        if let Some(vertex) = &mut step.vertex {
            *vertex = remap[vertex];
        }
    }
    stage
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{lower, LowerOptions, NoBaseImages, Op};
    use crate::parser::parse;
    use crate::platform::Platform;

    fn lower_for(src: &str, platform: &str) -> BuildGraph {
        let options = LowerOptions {
            target_platform: Some(Platform::parse(platform).unwrap()),
            platform_in_names: true,
            ..LowerOptions::default()
        };
        lower(&parse(src.as_bytes()).unwrap(), &options, &NoBaseImages).unwrap()
    }

    fn runs(graph: &BuildGraph) -> Vec<String> {
        let mut names: Vec<String> = graph
            .graph
            .node_indices()
            .filter(|&v| matches!(graph.graph[v].op, Op::Exec(_)))
            .map(|v| graph.graph[v].name.clone())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_build_platform_stage_is_one_vertex_and_target_stages_are_one_per_platform() {
        let src = "FROM --platform=$BUILDPLATFORM busybox AS tool\nRUN make tool\n\
                   FROM busybox\nARG TARGETARCH\nCOPY --from=tool /tool /tool\nRUN run $TARGETARCH\n";
        let merged = merge(vec![
            lower_for(src, "linux/amd64"),
            lower_for(src, "linux/arm64"),
        ]);
        let host = Platform::host();
        // The tool stage reads no TARGET* arg: one vertex, named by the first platform's
        // lowering (`->arm64` when the host is not amd64).
        let arrow = match host.architecture.as_str() {
            "amd64" => String::new(),
            _ => "->amd64".to_string(),
        };
        let mut expected = vec![
            format!("[{host}{arrow} tool 1/1] RUN make tool"),
            "[linux/amd64 stage-1 3/3] RUN run $TARGETARCH".to_string(),
            "[linux/arm64 stage-1 3/3] RUN run $TARGETARCH".to_string(),
        ];
        expected.sort();
        assert_eq!(runs(&merged[0]), expected);
        // Each build's stages point into the merged graph, at its own vertices.
        for (build, arch) in merged.iter().zip(["amd64", "arm64"]) {
            let head = &build.graph[build.stages[&build.target].head];
            assert!(
                head.name.contains(&format!("linux/{arch}")),
                "{}",
                head.name
            );
            assert_eq!(build.graph.node_count(), merged[0].graph.node_count());
        }
        let tool = |b: &BuildGraph| b.stages[&0].head;
        assert_eq!(tool(&merged[0]), tool(&merged[1]));
    }

    #[test]
    fn a_build_platform_stage_that_reads_targetarch_is_one_vertex_per_platform() {
        let src = "FROM --platform=$BUILDPLATFORM busybox AS build\nARG TARGETARCH\n\
                   RUN cc --target=$TARGETARCH\n";
        let merged = merge(vec![
            lower_for(src, "linux/amd64"),
            lower_for(src, "linux/arm64"),
        ]);
        let names = runs(&merged[0]);
        assert_eq!(names.len(), 2, "{names:?}");
        // Named apart (BuildKit's `->arch`), so progress and miss reasons tell them apart.
        assert!(
            names.iter().any(|n| n.contains("->arm64 build")),
            "{names:?}"
        );
    }

    #[test]
    fn merging_one_graph_keeps_it_as_it_was() {
        let src = "FROM busybox\nRUN a\nRUN b\n";
        let graph = lower_for(src, "linux/amd64");
        let merged = merge(vec![graph.clone()]).remove(0);
        assert_eq!(merged.graph.node_count(), graph.graph.node_count());
        assert_eq!(merged.graph.edge_count(), graph.graph.edge_count());
        assert_eq!(runs(&merged), runs(&graph));
    }
}
