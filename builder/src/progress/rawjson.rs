//! `--progress=rawjson`: one BuildKit `SolveStatus` per line, as buildx's raw JSON display
//! encodes each status update it receives (moby/buildkit `client/graph.go` for the shape).
//!
//! Field names, order and omissions follow the Go struct tags: every top-level list and every
//! vertex field but `digest` is `omitempty`, so an empty list or a `false` `cached` is left out
//! rather than written empty. Times are Go's `time.Time` JSON (RFC 3339, nanoseconds, UTC),
//! `data` is base64 as Go encodes `[]byte`, and `stream` is 1 for stdout and 2 for stderr.
//!
//! rbuild adds two keys that Go's decoder skips, so a BuildKit reader still takes each line:
//! `rbuildMissReasons` on a vertex (why it missed the cache) and a top-level `rbuildMessages`
//! for free lines such as "naming to …", which BuildKit would carry as statuses of an exporter
//! vertex that rbuild does not have. Such a line decodes as an empty status, which BuildKit's
//! displays ignore.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;

use base64::Engine;
use serde::Serialize;

use super::{LogStream, Reporter, Sink, VertexInfo};
use crate::timestamp;

pub struct RawJson {
    state: Mutex<State>,
}

struct State {
    out: Sink,
    /// What was said of each vertex so far: each event re-sends the vertex whole, as BuildKit's
    /// solver does.
    vertices: HashMap<String, Known>,
}

#[derive(Default)]
struct Known {
    started: Option<String>,
    completed: Option<String>,
    cached: bool,
    error: Option<String>,
    miss_reasons: Vec<String>,
}

/// BuildKit's `client.SolveStatus`; `statuses` and `warnings` are never filled, and Go omits
/// them when empty.
#[derive(Serialize, Default)]
struct SolveStatus<'a> {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    vertexes: Vec<Vertex<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    logs: Vec<Log<'a>>,
    #[serde(rename = "rbuildMessages", skip_serializing_if = "Vec::is_empty")]
    messages: Vec<&'a str>,
}

/// BuildKit's `client.Vertex`.
#[derive(Serialize)]
struct Vertex<'a> {
    digest: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    inputs: &'a [String],
    #[serde(skip_serializing_if = "str::is_empty")]
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    started: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    completed: Option<&'a str>,
    #[serde(skip_serializing_if = "is_false")]
    cached: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(
        rename = "rbuildMissReasons",
        skip_serializing_if = "<[String]>::is_empty"
    )]
    miss_reasons: &'a [String],
}

/// BuildKit's `client.VertexLog`.
#[derive(Serialize)]
struct Log<'a> {
    vertex: &'a str,
    stream: u8,
    data: String,
    timestamp: String,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn now() -> String {
    let (secs, nanos) = timestamp::now();
    timestamp::rfc3339(secs, nanos)
}

impl RawJson {
    pub fn new(out: Sink) -> Self {
        RawJson {
            state: Mutex::new(State {
                out,
                vertices: HashMap::new(),
            }),
        }
    }

    /// Updates what is known of the vertex and writes it whole.
    fn vertex_event(&self, info: &VertexInfo, update: impl FnOnce(&mut Known)) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let State { out, vertices } = &mut *state;
        let known = vertices.entry(info.digest.clone()).or_default();
        update(known);
        let status = SolveStatus {
            vertexes: vec![Vertex {
                digest: &info.digest,
                inputs: &info.inputs,
                name: &info.name,
                started: known.started.as_deref(),
                completed: known.completed.as_deref(),
                cached: known.cached,
                error: known.error.as_deref(),
                miss_reasons: &known.miss_reasons,
            }],
            ..SolveStatus::default()
        };
        write_line(out, &status);
    }

    fn write(&self, status: &SolveStatus) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        write_line(&mut state.out, status);
    }
}

/// One status, one line, one write: parallel steps never split a line.
fn write_line(out: &mut Sink, status: &SolveStatus) {
    let Ok(mut line) = serde_json::to_vec(status) else {
        return;
    };
    line.push(b'\n');
    let _ = out.write_all(&line);
    let _ = out.flush();
}

impl Reporter for RawJson {
    fn started(&self, vertex: &VertexInfo) {
        self.vertex_event(vertex, |k| {
            k.started = Some(now());
            k.completed = None;
        });
    }

    /// BuildKit marks a cache hit started and completed at once, with `cached` set.
    fn cached(&self, vertex: &VertexInfo) {
        self.vertex_event(vertex, |k| {
            let at = now();
            k.started.get_or_insert_with(|| at.clone());
            k.completed = Some(at);
            k.cached = true;
        });
    }

    fn completed(&self, vertex: &VertexInfo) {
        self.vertex_event(vertex, |k| {
            let at = now();
            k.started.get_or_insert_with(|| at.clone());
            k.completed = Some(at);
        });
    }

    fn failed(&self, vertex: &VertexInfo, error: &str) {
        self.vertex_event(vertex, |k| {
            let at = now();
            k.started.get_or_insert_with(|| at.clone());
            k.completed = Some(at);
            k.error = Some(error.to_string());
        });
    }

    /// Chunks go out as they come, as BuildKit sends them; readers join lines themselves.
    fn log(&self, vertex: &VertexInfo, stream: LogStream, bytes: &[u8]) {
        let log = Log {
            vertex: &vertex.digest,
            stream: match stream {
                LogStream::Stdout => 1,
                LogStream::Stderr => 2,
            },
            data: base64::engine::general_purpose::STANDARD.encode(bytes),
            timestamp: now(),
        };
        self.write(&SolveStatus {
            logs: vec![log],
            ..SolveStatus::default()
        });
    }

    fn miss_reason(&self, vertex: &VertexInfo, reasons: &[String]) {
        self.vertex_event(vertex, |k| k.miss_reasons = reasons.to_vec());
    }

    fn message(&self, text: &str) {
        self.write(&SolveStatus {
            messages: vec![text],
            ..SolveStatus::default()
        });
    }

    /// buildx's raw JSON display ends without a closing record; the image ID goes to
    /// `--iidfile` or the metadata file.
    fn finished(&self, _image_id: Option<&str>) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::testing::{vertex, Capture};
    use serde_json::Value;

    fn records(out: &Capture) -> Vec<Value> {
        let text = out.text();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .collect()
    }

    fn is_rfc3339_utc(v: &Value) -> bool {
        let re = regex::Regex::new(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$").unwrap();
        v.as_str().is_some_and(|s| re.is_match(s))
    }

    #[test]
    fn vertex_events_resend_the_vertex_with_buildkit_fields() {
        let out = Capture::default();
        let json = RawJson::new(out.sink());
        let mut v = vertex(2, "[stage-0 2/2] RUN make");
        v.inputs = vec![vertex(1, "").digest];
        json.miss_reason(&v, &["Makefile changed".to_string()]);
        json.started(&v);
        json.completed(&v);
        let r = records(&out);
        assert_eq!(r.len(), 3);
        let miss = &r[0]["vertexes"][0];
        assert_eq!(
            miss["rbuildMissReasons"],
            serde_json::json!(["Makefile changed"])
        );
        assert!(miss.get("started").is_none());
        let started = &r[1]["vertexes"][0];
        assert_eq!(started["digest"], v.digest.as_str());
        assert_eq!(started["name"], "[stage-0 2/2] RUN make");
        assert_eq!(started["inputs"], serde_json::json!([v.inputs[0]]));
        assert!(is_rfc3339_utc(&started["started"]), "{started}");
        assert!(started.get("completed").is_none() && started.get("cached").is_none());
        let done = &r[2]["vertexes"][0];
        assert_eq!(
            done["started"], started["started"],
            "the start time is kept"
        );
        assert!(is_rfc3339_utc(&done["completed"]), "{done}");
        assert!(done.get("error").is_none());
        for record in &r {
            let keys: Vec<_> = record.as_object().unwrap().keys().collect();
            assert_eq!(
                keys,
                ["vertexes"],
                "empty lists are omitted, as Go's omitempty does"
            );
        }
    }

    #[test]
    fn a_cache_hit_is_started_completed_and_cached() {
        let out = Capture::default();
        let json = RawJson::new(out.sink());
        json.cached(&vertex(1, "[1/2] FROM alpine"));
        let v = &records(&out)[0]["vertexes"][0];
        assert_eq!(v["cached"], true);
        assert!(is_rfc3339_utc(&v["started"]) && is_rfc3339_utc(&v["completed"]));
        assert!(v.get("inputs").is_none(), "no inputs, no key");
    }

    #[test]
    fn a_failure_carries_the_error() {
        let out = Capture::default();
        let json = RawJson::new(out.sink());
        let v = vertex(1, "[1/1] RUN false");
        json.started(&v);
        json.failed(&v, "exit code: 1");
        let r = records(&out);
        assert_eq!(r[1]["vertexes"][0]["error"], "exit code: 1");
        assert!(is_rfc3339_utc(&r[1]["vertexes"][0]["completed"]));
    }

    #[test]
    fn logs_are_base64_with_stream_numbers() {
        let out = Capture::default();
        let json = RawJson::new(out.sink());
        let v = vertex(1, "[1/1] RUN x");
        json.log(&v, LogStream::Stdout, b"out\n");
        json.log(&v, LogStream::Stderr, &[0xff, b'e', 0]);
        let r = records(&out);
        let decode = |l: &Value| {
            let data = l["data"].as_str().unwrap();
            base64::engine::general_purpose::STANDARD
                .decode(data)
                .unwrap()
        };
        let (out_log, err_log) = (&r[0]["logs"][0], &r[1]["logs"][0]);
        assert_eq!(
            (out_log["stream"].as_u64(), decode(out_log)),
            (Some(1), b"out\n".to_vec())
        );
        assert_eq!(
            (err_log["stream"].as_u64(), decode(err_log)),
            (Some(2), vec![0xff, b'e', 0])
        );
        assert_eq!(out_log["vertex"], v.digest.as_str());
        assert!(is_rfc3339_utc(&out_log["timestamp"]));
    }

    #[test]
    fn messages_ride_in_a_key_buildkit_readers_skip() {
        let out = Capture::default();
        let json = RawJson::new(out.sink());
        json.message("naming to docker.io/library/app:latest");
        json.finished(Some("sha256:abc"));
        let r = records(&out);
        assert_eq!(r.len(), 1, "finished writes nothing");
        let expected =
            serde_json::json!({"rbuildMessages": ["naming to docker.io/library/app:latest"]});
        assert_eq!(r[0], expected);
    }

    #[test]
    fn parallel_steps_write_whole_lines() {
        let out = Capture::default();
        let json = std::sync::Arc::new(RawJson::new(out.sink()));
        let threads: Vec<_> = (1..=2u8)
            .map(|n| {
                let json = json.clone();
                std::thread::spawn(move || {
                    let v = vertex(n, "[1/1] RUN loop");
                    json.started(&v);
                    for i in 0..200 {
                        json.log(&v, LogStream::Stdout, format!("{n}:{i}\n").as_bytes());
                    }
                    json.completed(&v);
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(records(&out).len(), 2 * 202, "every line parses on its own");
    }
}
