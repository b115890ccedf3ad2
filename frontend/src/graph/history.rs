//! Image history entries as BuildKit's Dockerfile frontend writes them (`dockerfile2llb`'s
//! `dispatch*` functions, each ending in `commitToHistory`), so the builder can write the final
//! config's `history` array and pair each layer with the step that made it.
//!
//! What BuildKit does, as checked in moby/buildkit `frontend/dockerfile/dockerfile2llb/`:
//! - `commitToHistory(img, msg, withLayer, st, tm)` appends `{created_by: msg, comment:
//!   "buildkit.dockerfile.v0", empty_layer: !withLayer}`, and adds ` # buildkit` to `msg` when
//!   it is given a state (RUN, COPY and ADD pass one; WORKDIR does not).
//! - Only RUN, COPY, ADD and a WORKDIR other than `/` make a layer; every other instruction is
//!   an empty-layer entry, and ONBUILD and FROM write none.
//! - The exporter (`normalizeLayersAndHistory`) pairs layers with the non-empty entries in
//!   order, bottom up; the base image's own history comes first.

use petgraph::stable_graph::NodeIndex;
use serde::Serialize;

use super::config::HealthConfig;
use crate::parser::{go_quote, Heredoc};

/// One history entry of a stage's image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HistoryStep {
    /// `created_by` exactly as BuildKit writes it: `ENV A=1 B=2`, `RUN /bin/sh -c make #
    /// buildkit`, `COPY src /app # buildkit`, `WORKDIR /app`, `CMD ["a" "b"]`, `EXPOSE
    /// [80/tcp]`, `LABEL a=b`, `USER app`, `ARG X=1`, …
    pub created_by: String,
    /// True when the step makes no layer (BuildKit's `empty_layer`).
    pub empty_layer: bool,
    /// The vertex whose filesystem is the result of this step, for the steps that make a layer
    /// (RUN, COPY, ADD, WORKDIR other than `/`), so the builder can pair layers with entries.
    /// `BuildGraph::to_json` shows it as a vertex index.
    #[serde(skip)]
    pub vertex: Option<NodeIndex>,
}

impl HistoryStep {
    /// A step that only changes the config.
    pub fn config(created_by: String) -> Self {
        HistoryStep {
            created_by,
            empty_layer: true,
            vertex: None,
        }
    }

    /// A step whose result is `vertex`'s filesystem.
    pub fn layer(created_by: String, vertex: NodeIndex) -> Self {
        HistoryStep {
            created_by,
            empty_layer: false,
            vertex: Some(vertex),
        }
    }
}

/// The suffix `commitToHistory` adds when it is given the step's LLB state (RUN, COPY, ADD).
const BUILDKIT_SUFFIX: &str = " # buildkit";

/// Go's `fmt.Sprintf("%v", []string{…})`: `[a b c]`, nothing quoted.
pub fn go_list(items: &[String]) -> String {
    format!("[{}]", items.join(" "))
}

/// Go's `fmt.Sprintf("%q", []string{…})`: `["a" "b c"]`, each element `strconv.Quote`d and
/// separated by a space (not a comma: this is not JSON).
pub fn go_quoted_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| go_quote(s)).collect();
    format!("[{}]", quoted.join(" "))
}

/// Go's `time.Duration.String()`: `0s`, `1.5s`, `1m30s`, `1h0m0s`, `500ms`, `1.2µs`, `7ns`.
pub fn go_duration(nanos: i64) -> String {
    let mut u = nanos.unsigned_abs();
    let mut out = String::new();
    if u < 1_000_000_000 {
        // Under a second Go picks the largest unit that keeps a non-zero leading digit.
        let (prec, unit) = match u {
            0 => return "0s".to_string(),
            1..=999 => (0, "ns"),
            1_000..=999_999 => (3, "µs"),
            _ => (6, "ms"),
        };
        let frac = go_fraction(&mut u, prec);
        out.push_str(&u.to_string());
        out.push_str(&frac);
        out.push_str(unit);
    } else {
        let frac = go_fraction(&mut u, 9);
        let (secs, mins, hours) = (u % 60, (u / 60) % 60, u / 3600);
        if u >= 3600 {
            out.push_str(&format!("{hours}h"));
        }
        if u >= 60 {
            out.push_str(&format!("{mins}m"));
        }
        out.push_str(&format!("{secs}{frac}s"));
    }
    if nanos < 0 {
        out.insert(0, '-');
    }
    out
}

/// Go's `fmtFrac`: divides `v` by 10^prec and returns the fraction as `.123` without trailing
/// zeros (empty when it is zero).
fn go_fraction(v: &mut u64, prec: u32) -> String {
    let divisor = 10u64.pow(prec);
    let frac = *v % divisor;
    *v /= divisor;
    if frac == 0 {
        return String::new();
    }
    let digits = format!("{frac:0width$}", width = prec as usize);
    format!(".{}", digits.trim_end_matches('0'))
}

/// `HEALTHCHECK` + Go's `%+v` of the image's `HealthcheckConfig` value (field order from
/// moby/docker-image-spec `specs-go/v1/image.go`; durations print through `String()`).
pub fn healthcheck(h: &HealthConfig) -> String {
    format!(
        "HEALTHCHECK {{Test:{} Interval:{} Timeout:{} StartPeriod:{} StartInterval:{} Retries:{}}}",
        go_list(&h.test),
        go_duration(h.interval),
        go_duration(h.timeout),
        go_duration(h.start_period),
        go_duration(h.start_interval),
        h.retries
    )
}

/// `RUN ` + BuildKit's `runCommandString(args, d.buildArgs, env)` + ` # buildkit`: every ARG
/// the stage declared so far (first position, later declarations update the value) as `|N
/// K=V …` before the argv joined by spaces. A value comes from the RUN's environment, else
/// from the ARG itself, else it is empty.
pub fn run(
    args: &[String],
    build_args: &[(String, Option<String>)],
    env: &[(String, String)],
) -> String {
    let mut pairs: Vec<(&str, String)> = Vec::new();
    for (key, value) in build_args {
        let v = env
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| value.clone().unwrap_or_default());
        match pairs.iter_mut().find(|(k, _)| k == key) {
            Some(pair) => pair.1 = v,
            None => pairs.push((key, v)),
        }
    }
    let mut words: Vec<String> = Vec::new();
    if !pairs.is_empty() {
        words.push(format!("|{}", pairs.len()));
        words.extend(pairs.into_iter().map(|(k, v)| format!("{k}={v}")));
    }
    words.extend(args.iter().cloned());
    format!("RUN {}{BUILDKIT_SUFFIX}", words.join(" "))
}

/// The parts of a COPY or ADD that its history entry shows.
pub struct CopyEntry<'a> {
    /// `COPY` or `ADD`.
    pub keyword: &'a str,
    pub parents: bool,
    /// Expanded.
    pub chown: Option<&'a str>,
    /// As written: BuildKit does not expand `--chmod`.
    pub chmod: Option<&'a str>,
    /// Expanded, heredoc markers left out.
    pub sources: &'a [String],
    pub heredocs: &'a [Heredoc],
    /// Expanded, as written (not resolved against WORKDIR).
    pub dest: &'a str,
}

/// BuildKit's `dispatchCopy` message: `COPY [--parents] [--chown=U] [--chmod=M] srcs…
/// <<heredoc… dest # buildkit`; `--from`, `--link`, `--exclude` and ADD's `--checksum`,
/// `--keep-git-dir` and `--unpack` do not appear.
pub fn copy(entry: &CopyEntry) -> String {
    let mut out = entry.keyword.to_string();
    if entry.parents {
        out.push_str(" --parents");
    }
    if let Some(chown) = entry.chown.filter(|c| !c.is_empty()) {
        out.push_str(&format!(" --chown={chown}"));
    }
    if let Some(chmod) = entry.chmod.filter(|c| !c.is_empty()) {
        out.push_str(&format!(" --chmod={chmod}"));
    }
    for src in entry.sources {
        out.push(' ');
        out.push_str(src);
    }
    for doc in entry.heredocs {
        out.push_str(" <<");
        out.push_str(&doc.name);
    }
    out.push(' ');
    out.push_str(entry.dest);
    out.push_str(BUILDKIT_SUFFIX);
    out
}

/// `ENV k=v …` and `LABEL k=v …`: the keyword, then ` key=value` per pair, expanded.
pub fn pairs(keyword: &str, pairs: &[(String, String)]) -> String {
    let mut out = keyword.to_string();
    for (k, v) in pairs {
        out.push_str(&format!(" {k}={v}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn go_formats() {
        assert_eq!(go_list(&strings(&["/bin/bash", "-c"])), "[/bin/bash -c]");
        assert_eq!(go_list(&[]), "[]");
        assert_eq!(
            go_quoted_list(&strings(&["/bin/sh", "-c", "echo \"hi\"\tx"])),
            r#"["/bin/sh" "-c" "echo \"hi\"\tx"]"#
        );
        assert_eq!(go_quoted_list(&[]), "[]");
    }

    #[test]
    fn durations_print_like_go() {
        // Go's time.Duration.format: sub-second values pick ns/µs/ms; fractions drop
        // trailing zeros; hours and minutes show once a larger unit is present.
        let cases = [
            (0, "0s"),
            (7, "7ns"),
            (1_500, "1.5µs"),
            (500_000_000, "500ms"),
            (1_200_000, "1.2ms"),
            (1_000_000_000, "1s"),
            (1_500_000_000, "1.5s"),
            (30_000_000_000, "30s"),
            (90_000_000_000, "1m30s"),
            (3_600_000_000_000, "1h0m0s"),
            (3_723_000_000_001, "1h2m3.000000001s"),
            (-90_000_000_000, "-1m30s"),
        ];
        for (nanos, want) in cases {
            assert_eq!(go_duration(nanos), want, "{nanos}");
        }
    }

    #[test]
    fn run_lists_build_args_first_declaration_order_latest_value() {
        // runCommandString: value from the env when set there, else the ARG's own value
        // (`ValueString`, empty when none); a key declared twice keeps its first position.
        let args = strings(&["/bin/sh", "-c", "make"]);
        let build_args = vec![
            ("A".to_string(), Some("1".to_string())),
            ("B".to_string(), None),
            ("A".to_string(), Some("3".to_string())),
        ];
        let env = vec![("A".to_string(), "3".to_string())];
        assert_eq!(
            run(&args, &build_args, &env),
            "RUN |2 A=3 B= /bin/sh -c make # buildkit"
        );
        assert_eq!(run(&args, &[], &env), "RUN /bin/sh -c make # buildkit");
    }

    #[test]
    fn healthcheck_is_go_plus_v_of_the_struct() {
        let h = HealthConfig {
            test: strings(&["CMD-SHELL", "curl -f http://localhost/"]),
            interval: 30_000_000_000,
            retries: 3,
            ..Default::default()
        };
        assert_eq!(
            healthcheck(&h),
            "HEALTHCHECK {Test:[CMD-SHELL curl -f http://localhost/] Interval:30s Timeout:0s StartPeriod:0s StartInterval:0s Retries:3}"
        );
    }
}
