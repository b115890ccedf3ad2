//! Front-end speed on a large, realistic Dockerfile: 1,000 instructions over many stages, with
//! continuations, heredocs, flags, JSON forms and comments. The goal is under 5 ms for the
//! whole front end (parse + lowering); `scripts/bench.sh` prints the figure against it.

use std::fmt::Write;
use std::sync::LazyLock;

use divan::counter::BytesCount;
use divan::{black_box, Bencher};
use rbuild_frontend::graph::{self, LowerOptions, NoBaseImages};
use rbuild_frontend::parser;

/// How many instructions the generated Dockerfile holds.
const INSTRUCTIONS: usize = 1_000;

static DOCKERFILE: LazyLock<String> = LazyLock::new(|| generate(INSTRUCTIONS));

fn main() {
    // The bench measures what it claims only if the input parses to exactly that many nodes.
    let parsed = parser::parse(DOCKERFILE.as_bytes()).expect("the generated Dockerfile parses");
    assert_eq!(parsed.children.len(), INSTRUCTIONS);
    divan::main();
}

/// Parser alone.
#[divan::bench]
fn parse(bencher: Bencher) {
    let src = DOCKERFILE.as_bytes();
    bencher
        .counter(BytesCount::of_slice(src))
        .bench(|| parser::parse(black_box(src)).expect("parses"));
}

/// The whole front end, text to build graph.
#[divan::bench]
fn parse_and_lower(bencher: Bencher) {
    let src = DOCKERFILE.as_bytes();
    bencher.counter(BytesCount::of_slice(src)).bench(|| {
        let ast = parser::parse(black_box(src)).expect("parses");
        graph::lower(&ast, &LowerOptions::default(), &NoBaseImages).expect("lowers")
    });
}

/// One stage's worth of instructions, in the order a real Dockerfile has them; `{i}` varies
/// names so no two stages are identical. Each entry is one instruction.
fn stage(i: usize) -> Vec<String> {
    let prev = i.saturating_sub(1);
    vec![
        format!("# Stage {i}: build component {i}\nFROM --platform=$BUILDPLATFORM debian:bookworm-slim AS stage{i}"),
        format!("ARG VERSION_{i}=1.{i}.0"),
        format!("ARG TARGETARCH"),
        format!("ENV PATH=/opt/s{i}/bin:$PATH \\\n    LANG=C.UTF-8 \\\n    APP_HOME=/srv/app{i}"),
        format!("LABEL org.opencontainers.image.title=\"component {i}\" \\\n      org.opencontainers.image.version=\"${{VERSION_{i}}}\""),
        format!("WORKDIR /src/s{i}"),
        format!("RUN apt-get update \\\n && apt-get install -y --no-install-recommends \\\n      ca-certificates curl git make gcc libc6-dev \\\n && rm -rf /var/lib/apt/lists/*"),
        format!("COPY --chown=1000:1000 --chmod=0644 go.mod go.sum ./"),
        format!("RUN --mount=type=cache,target=/root/.cache,id=cache{i} \\\n    --mount=type=secret,id=token \\\n    make -j\"$(nproc)\" deps"),
        format!("COPY --link --exclude=*.md . ."),
        format!("RUN --mount=type=cache,target=/root/.cache <<EOF\nset -eu\necho \"building $VERSION_{i} for $TARGETARCH\"\nmake -C /src/s{i} all\ninstall -m 0755 build/app /usr/local/bin/app{i}\nEOF"),
        format!("COPY <<-EOT /etc/app{i}.conf\n\tlisten = 0.0.0.0:80{i:02}\n\tworkers = 4\n\tEOT"),
        format!("COPY --from=stage{prev} /usr/local/bin/ /usr/local/bin/"),
        format!("ADD --checksum=sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d https://example.com/tool{i}.tar.gz /tmp/"),
        format!("EXPOSE 80{i:02}/tcp 90{i:02}/udp"),
        format!("VOLUME [\"/data{i}\", \"/var/log/app{i}\"]"),
        format!("USER 1000:1000"),
        format!("HEALTHCHECK --interval=30s --timeout=3s \\\n  CMD [\"/usr/local/bin/app{i}\", \"healthcheck\"]"),
        format!("SHELL [\"/bin/bash\", \"-o\", \"pipefail\", \"-c\"]"),
        format!("ONBUILD RUN echo \"derived from stage {i}\""),
        format!("STOPSIGNAL SIGTERM"),
        format!("ENTRYPOINT [\"/usr/local/bin/app{i}\"]"),
        format!("CMD [\"--config\", \"/etc/app{i}.conf\"]\n"),
    ]
}

/// A Dockerfile of exactly `count` instructions: whole stages, the last one cut short.
fn generate(count: usize) -> String {
    let mut out = String::from("# syntax=docker/dockerfile:1\n# escape=\\\n\n");
    let mut written = 0;
    for i in 0.. {
        for instruction in stage(i) {
            if written == count {
                return out;
            }
            writeln!(out, "{instruction}").expect("writing to a String");
            written += 1;
        }
    }
    unreachable!("the loop returns")
}
