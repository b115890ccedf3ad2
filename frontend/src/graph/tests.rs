//! Lowering semantics, checked on small Dockerfiles.

use super::*;
use crate::parser;

fn lower_with(src: &str, options: &LowerOptions) -> Result<BuildGraph, LowerError> {
    let df = parser::parse(src.as_bytes())?;
    lower(&df, options, &NoBaseImages)
}

fn lower_src(src: &str) -> BuildGraph {
    lower_with(src, &LowerOptions::default()).unwrap_or_else(|e| panic!("{e}"))
}

fn err(src: &str) -> String {
    lower_with(src, &LowerOptions::default())
        .unwrap_err()
        .to_string()
}

fn target_config(g: &BuildGraph) -> &ImageConfig {
    &g.stages[&g.target].config
}

#[test]
fn global_args_reach_from_only_until_reimported() {
    let src =
        "ARG TAG=1.0\nARG IMG=busybox:${TAG}\nFROM $IMG\nWORKDIR /a${TAG}b\nARG TAG\nENV X=$TAG\n";
    let g = lower_src(src);
    assert_eq!(g.stages[&0].base, "busybox:1.0");
    let config = target_config(&g);
    assert_eq!(config.env_get("X"), Some("1.0"));
    assert!(
        g.warnings.iter().any(|w| w.rule == "UndefinedVar"),
        "{:?}",
        g.warnings
    );
    // Only the WORKDIR before `ARG TAG` sees it unset; the ENV after sees the global.
    assert!(g
        .warnings
        .iter()
        .all(|w| w.rule != "UndefinedVar" || w.line == 4));
}

#[test]
fn build_args_override_defaults() {
    let mut options = LowerOptions::default();
    options.build_args.insert("V".into(), "override".into());
    let g = lower_with("FROM scratch\nARG V=default\nENV OUT=$V\n", &options).unwrap();
    assert_eq!(target_config(&g).env_get("OUT"), Some("override"));
    let g = lower_src("FROM scratch\nARG V=default\nENV OUT=$V\n");
    assert_eq!(target_config(&g).env_get("OUT"), Some("default"));
}

#[test]
fn env_pairs_see_the_scope_before_the_instruction() {
    let g = lower_src("FROM scratch\nENV a=1\nENV a=2 b=$a\n");
    assert_eq!(target_config(&g).env_get("b"), Some("1"));
    assert_eq!(target_config(&g).env_get("PATH"), Some(DEFAULT_PATH));
}

#[test]
fn predefined_platform_args_need_declaring_in_a_stage() {
    let options = LowerOptions {
        target_platform: Some(crate::platform::Platform::parse("linux/arm64").unwrap()),
        ..Default::default()
    };
    let g = lower_with(
        "FROM --platform=$BUILDPLATFORM scratch\nARG TARGETARCH\nENV A=$TARGETARCH B=$TARGETOS\n",
        &options,
    )
    .unwrap();
    assert_eq!(target_config(&g).env_get("A"), Some("arm64"));
    assert_eq!(target_config(&g).env_get("B"), Some(""));
}

#[test]
fn target_prunes_unneeded_stages() {
    let src = "FROM scratch AS a\nRUN x\nFROM scratch AS b\nCOPY --from=a /x /x\nFROM scratch AS c\nRUN ${UNDEFINED:?boom}\n";
    let mut options = LowerOptions {
        target: Some("B".into()),
        ..Default::default()
    };
    let g = lower_with(src, &options).unwrap();
    assert_eq!(g.stages.keys().copied().collect::<Vec<_>>(), vec![0, 1]);
    assert_eq!(g.target, 1);
    options.target = Some("nope".into());
    let e = lower_with(src, &options).unwrap_err().to_string();
    assert!(
        e.contains("target stage \"nope\" could not be found"),
        "{e}"
    );
}

#[test]
fn stage_references_and_cycles() {
    let e = err("FROM scratch AS a\nCOPY --from=b /x /x\nFROM scratch AS b\nCOPY --from=a /y /y\n");
    assert!(
        e.contains(
            "cannot copy from stage \"b\", it needs to be defined before current stage \"a\""
        ),
        "{e}"
    );
    let e = err("FROM scratch AS a\nCOPY --from=a /x /x\n");
    assert!(
        e.contains("circular dependency detected on stage: a"),
        "{e}"
    );
    let e = err("FROM scratch\nCOPY --from=7 /x /x\n");
    assert!(e.contains("invalid stage index 7"), "{e}");
    let e = err("FROM scratch AS a\nFROM scratch\nARG X=a\nCOPY --from=$X /x /x\n");
    assert!(
        e.contains("variable expansion is not supported for --from"),
        "{e}"
    );
    let g = lower_src("FROM busybox AS base\nFROM base\nCOPY --from=0 /a /b\n");
    let edges = g.graph.edge_count();
    assert!(edges >= 2);
    // FROM base reuses stage 0's vertex rather than adding a new image.
    let images = g
        .graph
        .node_weights()
        .filter(|v| matches!(v.op, Op::Image { .. }))
        .count();
    assert_eq!(images, 1);
}

#[test]
fn entrypoint_resets_inherited_cmd_but_not_its_own() {
    let g = lower_src("FROM scratch AS a\nCMD [\"x\"]\nFROM a\nENTRYPOINT [\"e\"]\n");
    assert_eq!(target_config(&g).cmd, None);
    let g = lower_src("FROM scratch\nCMD [\"x\"]\nENTRYPOINT e\n");
    assert_eq!(target_config(&g).cmd, Some(vec!["x".to_string()]));
    assert_eq!(
        target_config(&g).entrypoint,
        Some(vec!["/bin/sh".into(), "-c".into(), "e".into()])
    );
}

#[test]
fn config_accumulates_like_buildkit() {
    let src = "FROM scratch\nWORKDIR /app\nWORKDIR sub\nUSER 1000:1000\nEXPOSE 80 53/udp\nVOLUME [\"/data\"]\nLABEL a=b \"c d\"=e\nSTOPSIGNAL SIGTERM\nSHELL [\"/bin/bash\",\"-c\"]\nCMD echo hi\nHEALTHCHECK --interval=5s CMD true\nONBUILD RUN echo x\n";
    let g = lower_src(src);
    let c = target_config(&g);
    assert_eq!(c.working_dir, "/app/sub");
    assert_eq!(c.user, "1000:1000");
    assert_eq!(
        c.exposed_ports.keys().collect::<Vec<_>>(),
        vec!["53/udp", "80/tcp"]
    );
    assert!(c.volumes.contains_key("/data"));
    assert_eq!(c.labels.get("c d").map(String::as_str), Some("e"));
    assert_eq!(
        c.cmd,
        Some(vec!["/bin/bash".into(), "-c".into(), "echo hi".into()])
    );
    let h = c.healthcheck.as_ref().unwrap();
    assert_eq!(
        (h.test.clone(), h.interval),
        (
            vec!["CMD-SHELL".to_string(), "true".to_string()],
            5_000_000_000
        )
    );
    assert_eq!(c.on_build, vec!["RUN echo x"]);
}

#[test]
fn value_errors_are_located() {
    let e = lower_with("FROM scratch\nEXPOSE 80/icmp\n", &LowerOptions::default()).unwrap_err();
    assert_eq!(e.location().0, 2);
    let e = lower_with(
        "FROM scratch\nSTOPSIGNAL SIGFOO\n",
        &LowerOptions::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("invalid signal"));
    let e = err("FROM scratch\nCOPY a b c\n");
    assert!(e.contains("destination must be a directory"), "{e}");
}

#[test]
fn digests_are_stable_and_sensitive() {
    let a = lower_src("FROM busybox\nRUN echo hi\n").to_json();
    let b = lower_src("FROM busybox\nRUN echo hi\n").to_json();
    assert_eq!(a, b);
    let c = lower_src("FROM busybox\nRUN echo ho\n").to_json();
    assert_ne!(a["vertices"][1]["digest"], c["vertices"][1]["digest"]);
    assert_eq!(a["vertices"][0]["digest"], c["vertices"][0]["digest"]);
}

#[test]
fn run_gets_args_in_env_and_mount_inputs() {
    let src = "FROM scratch AS src\nFROM busybox\nARG V=1\nRUN --mount=type=bind,from=src,target=/s --mount=type=cache,target=/c ls\n";
    let g = lower_src(src);
    let run = g.graph.node_weights().find_map(|v| match &v.op {
        Op::Exec(e) => Some(e.clone()),
        _ => None,
    });
    let run = run.unwrap();
    assert!(run.env.contains(&"V=1".to_string()));
    assert_eq!(run.mounts.len(), 2);
    let mount_edges = g
        .graph
        .edge_weights()
        .filter(|e| matches!(e, Edge::Mount { .. }))
        .count();
    assert_eq!(mount_edges, 1);
}

#[test]
fn arg_after_env_wins_for_run_and_expansion_but_not_the_config() {
    let g = lower_src("FROM busybox\nENV V=env\nARG V=2\nRUN echo $V\nENV X=$V\n");
    let c = target_config(&g);
    assert_eq!((c.env_get("V"), c.env_get("X")), (Some("env"), Some("2")));
    let run = g.graph.node_weights().find_map(|v| match &v.op {
        Op::Exec(e) => Some(e.env.clone()),
        _ => None,
    });
    assert!(run.unwrap().contains(&"V=2".to_string()));
}

#[test]
fn copy_heredoc_is_one_source_not_a_context_path() {
    let g = lower_src("FROM busybox\nCOPY <<EOF /f\nx\nEOF\n");
    let copy = g.graph.node_weights().find_map(|v| match &v.op {
        Op::File(FileOp::Copy(c)) => Some(c.clone()),
        _ => None,
    });
    let copy = copy.unwrap();
    assert!(copy.sources.is_empty() && copy.heredocs.len() == 1 && copy.dest == "/f");
    assert!(g
        .graph
        .node_weights()
        .all(|v| !matches!(v.op, Op::Context { .. })));
}

#[test]
fn run_heredocs_become_scripts() {
    let exec_args = |src: &str| {
        let g = lower_src(src);
        let args = g.graph.node_weights().find_map(|v| match &v.op {
            Op::Exec(e) => Some(e.args.clone()),
            _ => None,
        });
        args.unwrap()
    };
    assert_eq!(
        exec_args("FROM busybox\nRUN <<EOF\n#!/bin/bash\necho hi\nEOF\n"),
        vec!["/dev/pipes/EOF"]
    );
    assert_eq!(
        exec_args("FROM busybox\nRUN <<-EOF\n\techo hi\nEOF\n"),
        vec!["/bin/sh", "-c", "echo hi\n"]
    );
    assert_eq!(
        exec_args("FROM busybox\nRUN cat <<EOF > /x\nhello\nEOF\n"),
        vec!["/bin/sh", "-c", "cat <<EOF > /x\nhello\nEOF"]
    );
}

#[test]
fn lint_rules_fire() {
    let src = "FROM scratch as Build\nMAINTAINER me\nENV A b\nARG API_TOKEN\nWORKDIR rel\nCMD run\nFROM scratch AS build\n";
    let g = lower_src(src);
    let rules: Vec<&str> = g.warnings.iter().map(|w| w.rule).collect();
    for rule in [
        "StageNameCasing",
        "FromAsCasing",
        "MaintainerDeprecated",
        "LegacyKeyValueFormat",
        "SecretsUsedInArgOrEnv",
        "WorkdirRelativePath",
        "JSONArgsRecommended",
        "DuplicateStageName",
    ] {
        assert!(rules.contains(&rule), "{rule} missing from {rules:?}");
    }
    let g = lower_src("# check=skip=JSONArgsRecommended\nFROM scratch\nCMD run\n");
    assert!(g.warnings.is_empty(), "{:?}", g.warnings);
    let g = lower_src("FROM ${NOPE:-scratch}\nFROM busybox:$MISSING\n");
    assert!(g
        .warnings
        .iter()
        .any(|w| w.rule == "UndefinedArgInFrom" && w.line == 2));
}
