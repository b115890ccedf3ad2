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

// BuildKit's SourcesAndDest.ExpandRaw: `$vars` in an unquoted heredoc body, quotes kept.
#[test]
fn copy_heredoc_bodies_are_expanded_unless_quoted() {
    let src = "FROM busybox\nENV NAME=world\nCOPY <<EOF /a\nhi $NAME \"q\" ${NAME}\nEOF\n\
               COPY <<'EOF' /b\nhi $NAME\nEOF\nCOPY <<-EOF /c\n\t$NAME\nEOF\n";
    let g = lower_src(src);
    let bodies: Vec<String> = g
        .graph
        .node_weights()
        .filter_map(|v| match &v.op {
            Op::File(FileOp::Copy(c)) => Some(c.heredocs[0].content.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(bodies, ["hi world \"q\" world\n", "hi $NAME\n", "world\n"]);
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

/// The target stage's history as `(created_by, empty_layer)`.
fn history_of(g: &BuildGraph) -> Vec<(String, bool)> {
    g.stages[&g.target]
        .history
        .iter()
        .map(|h| (h.created_by.clone(), h.empty_layer))
        .collect()
}

fn history(src: &str) -> Vec<(String, bool)> {
    history_of(&lower_src(src))
}

fn entry(created_by: &str, empty_layer: bool) -> (String, bool) {
    (created_by.to_string(), empty_layer)
}

// The expected strings follow moby/buildkit frontend/dockerfile/dockerfile2llb:
// convert.go's dispatchEnv/dispatchLabel (` k=v` per expanded pair), dispatchUser (`USER %v`),
// dispatchVolume (`VOLUME %v` of the list), dispatchStopSignal, dispatchShell (`SHELL %v`),
// dispatchMaintainer, dispatchCmd/dispatchEntrypoint (`%q` of the argv after withShell),
// dispatchHealthcheck (`%+v` of the HealthcheckConfig value), dispatchArg (`ARG k[=v] …`),
// dispatchOnbuild (no entry), convert_expose.go's dispatchExpose (`%v` of the port list),
// all committed with withLayer=false and no state (so no ` # buildkit`).
#[test]
fn history_of_config_instructions() {
    let src = "FROM scratch\nENV A=1 B=\"two words\"\nLABEL a=b \"c d\"=e\nUSER ${A}app\nEXPOSE 80 53/udp 8000-8001 80\nVOLUME [\"/data\", \"/$A\"]\nSTOPSIGNAL SIGTERM\nSHELL [\"/bin/bash\", \"-c\"]\nCMD echo \"hi\"\nENTRYPOINT [\"/e\", \"x y\"]\nHEALTHCHECK --interval=1m30s --retries=3 CMD curl -f http://x/\nONBUILD RUN echo x\nMAINTAINER Jo <jo@x>\n";
    assert_eq!(
        history(src),
        vec![
            entry("ENV A=1 B=two words", true),
            entry("LABEL a=b c d=e", true),
            entry("USER 1app", true),
            entry("EXPOSE [80/tcp 53/udp 8000/tcp 8001/tcp 80/tcp]", true),
            entry("VOLUME [/data /1]", true),
            entry("STOPSIGNAL SIGTERM", true),
            entry("SHELL [/bin/bash -c]", true),
            entry(r#"CMD ["/bin/bash" "-c" "echo \"hi\""]"#, true),
            entry(r#"ENTRYPOINT ["/e" "x y"]"#, true),
            entry("HEALTHCHECK {Test:[CMD-SHELL curl -f http://x/] Interval:1m30s Timeout:0s StartPeriod:0s StartInterval:0s Retries:3}", true),
            entry("MAINTAINER Jo <jo@x>", true),
        ]
    );
    assert_eq!(
        history("FROM scratch\nHEALTHCHECK NONE\nCMD []\n"),
        vec![
            entry("HEALTHCHECK {Test:[NONE] Interval:0s Timeout:0s StartPeriod:0s StartInterval:0s Retries:0}", true),
            entry("CMD []", true),
        ]
    );
}

// dispatchArg: the value is the build arg, else the expanded default, else the global ARG's
// value; a bare name otherwise. One entry per instruction.
#[test]
fn history_of_args() {
    let mut options = LowerOptions::default();
    options.build_args.insert("B".into(), "cli".into());
    let g = lower_with(
        "ARG G=global\nFROM scratch\nARG A=1 B=2 C\nARG G\nARG D=${A}x\n",
        &options,
    )
    .unwrap();
    assert_eq!(
        history_of(&g),
        vec![
            entry("ARG A=1 B=cli C", true),
            entry("ARG G=global", true),
            entry("ARG D=1x", true),
        ]
    );
}

// dispatchRun: `RUN ` + runCommandString(args after withShell, d.buildArgs, state env) and
// commitToHistory(…, true, &d.state, …) adds ` # buildkit`.
#[test]
fn history_of_run() {
    let h = history(
        "FROM busybox\nRUN make\nARG V=1\nARG W\nENV V=env\nRUN [\"/bin/echo\", \"a b\"]\nSHELL [\"/bin/bash\", \"-eo\", \"pipefail\", \"-c\"]\nRUN make all\n",
    );
    assert_eq!(
        h,
        vec![
            entry("RUN /bin/sh -c make # buildkit", false),
            entry("ARG V=1", true),
            entry("ARG W", true),
            entry("ENV V=env", true),
            entry("RUN |2 V=env W= /bin/echo a b # buildkit", false),
            entry("SHELL [/bin/bash -eo pipefail -c]", true),
            entry(
                "RUN |2 V=env W= /bin/bash -eo pipefail -c make all # buildkit",
                false
            ),
        ]
    );
}

// dispatchRun with heredocs: a lone heredoc runs its chomped body, or `/dev/pipes/NAME`
// (still through the shell) when it starts with `#!`; otherwise the command and the bodies.
#[test]
fn history_of_run_heredocs() {
    let run_entry = |src: &str| history(src).pop().unwrap().0;
    assert_eq!(
        run_entry("FROM busybox\nRUN <<EOF\n#!/bin/bash\necho hi\nEOF\n"),
        "RUN /bin/sh -c /dev/pipes/EOF # buildkit"
    );
    assert_eq!(
        run_entry("FROM busybox\nRUN <<-EOF\n\t#!/bin/sh\n\techo hi\nEOF\n"),
        "RUN /bin/sh -c /dev/pipes/EOF # buildkit"
    );
    assert_eq!(
        run_entry("FROM busybox\nRUN <<-EOF\n\techo hi\nEOF\n"),
        "RUN /bin/sh -c echo hi\n # buildkit"
    );
    assert_eq!(
        run_entry("FROM busybox\nRUN cat <<EOF > /x\nhello\nEOF\n"),
        "RUN /bin/sh -c cat <<EOF > /x\nhello\nEOF # buildkit"
    );
}

// convert_copy.go's dispatchCopy: keyword, `--parents`, `--chown=`, `--chmod=`, the expanded
// sources, ` <<NAME` per heredoc, the expanded destination as written, ` # buildkit`.
#[test]
fn history_of_copy_and_add() {
    let src = "FROM scratch AS a\nFROM busybox\nARG D=/app\nWORKDIR /w\nCOPY --from=a --link --chown=${D}:1 --chmod=0755 --exclude=*.md src ${D}/ \nCOPY --parents a/./b ./\nCOPY <<EOF <<two x /etc/\nbody\nEOF\nbody2\ntwo\nADD --checksum=sha256:0000000000000000000000000000000000000000000000000000000000000000 --keep-git-dir=true https://example.com/f.tgz rel\n";
    let h = history(src);
    assert_eq!(
        h[2..],
        vec![
            entry(
                "COPY --chown=/app:1 --chmod=0755 src /app/ # buildkit",
                false
            ),
            entry("COPY --parents a/./b ./ # buildkit", false),
            entry("COPY x <<EOF <<two /etc/ # buildkit", false),
            entry("ADD https://example.com/f.tgz rel # buildkit", false),
        ]
    );
}

// dispatchWorkdir: `WORKDIR ` + the normalized path; a layer (a mkdir) unless it is `/`.
#[test]
fn history_of_workdir_and_layer_vertices() {
    let g = lower_src("FROM busybox\nWORKDIR /a/\nWORKDIR b/../c\nWORKDIR /\nRUN true\n");
    assert_eq!(
        history_of(&g),
        vec![
            entry("WORKDIR /a", false),
            entry("WORKDIR /a/c", false),
            entry("WORKDIR /", true),
            entry("RUN /bin/sh -c true # buildkit", false),
        ]
    );
    let stage = &g.stages[&g.target];
    // Every layer entry names a vertex of the stage, in order; empty ones none. `WORKDIR /`
    // adds no vertex, so the stage's vertices are the base plus one per layer.
    let layers: Vec<NodeIndex> = stage.history.iter().filter_map(|h| h.vertex).collect();
    assert_eq!(layers, stage.vertices[1..]);
    assert!(stage
        .history
        .iter()
        .all(|h| h.vertex.is_some() != h.empty_layer));
    assert_eq!(*layers.last().unwrap(), stage.head);
    let json = g.to_json();
    let entries = json["stages"][0]["history"].as_array().unwrap();
    assert_eq!(entries[2]["vertex"], serde_json::Value::Null);
    assert_eq!(entries[3]["vertex"], json["stages"][0]["head"]);
    assert_eq!(entries[3]["empty_layer"], false);
}

// A stage built FROM another starts from its history and its ARGs (BuildKit's
// dispatchState.init clones the base image, history included, and appends base.buildArgs);
// ONBUILD triggers write the entries of the instructions they run.
#[test]
fn history_continues_across_stages_and_onbuild() {
    let src = "FROM busybox AS base\nARG V=1\nRUN a\nONBUILD RUN b\nFROM base\nRUN c\n";
    assert_eq!(
        history(src),
        vec![
            entry("ARG V=1", true),
            entry("RUN |1 V=1 /bin/sh -c a # buildkit", false),
            entry("RUN |1 V=1 /bin/sh -c b # buildkit", false),
            entry("RUN |1 V=1 /bin/sh -c c # buildkit", false),
        ]
    );
}
