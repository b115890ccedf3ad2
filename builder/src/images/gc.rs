//! What the state root holds, by kind (`rbuild du`), and taking space back (`rbuild prune`,
//! and the automatic GC after a build).
//!
//! Four kinds of storage: blobs an image name reaches; blobs only cache records reach (the
//! build cache); unpacked layer directories (`snapshots/layers/`); and blobs nothing refers to.
//! Images are never removed here (`rmi` does that). A prune first decides which cache records
//! to drop ([`Policy`]), then removes every blob and layer directory that neither an image nor
//! a remaining record uses. Deciding is pure ([`plan`]) so the rules are testable without a
//! store; removing needs the state root's exclusive lock, which waits for running builds.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use rbuild_cache::db::CacheEntry;
use rbuild_cache::image::media_types::is_config;
use rbuild_cache::image::ImageConfig;
use rbuild_cache::Digest;

use super::commands::human_size;
use super::units::{parse_go_duration, parse_size};
use super::walk;
use crate::cli::{DuArgs, PruneArgs};
use crate::snapshot::layers::LayerStore;
use crate::snapshot::LayerDir;
use crate::state::State;

/// Everything GC decides on, read from one state root.
pub(crate) struct Survey {
    images: usize,
    /// Blobs reachable from image names.
    image_blobs: BTreeSet<Digest>,
    /// The layers images are made of (their configs' `rootfs.diff_ids`).
    image_diff_ids: BTreeSet<Digest>,
    /// Least recently used first.
    records: Vec<CacheEntry>,
    /// Blobs present in the content store, with their sizes.
    blobs: BTreeMap<Digest, u64>,
    /// Unpacked layers with their bytes on disk.
    layers: Vec<(LayerDir, u64)>,
    /// `RUN --mount=type=cache` instances with their bytes on disk.
    cache_mounts: Vec<(std::path::PathBuf, u64)>,
}

fn survey(state: &State, layers: &LayerStore) -> anyhow::Result<Survey> {
    let images = state.db.images()?;
    let mut image_blobs = BTreeSet::new();
    let mut image_diff_ids = BTreeSet::new();
    for (name, record) in &images {
        walk(state, record, &mut image_blobs, |digest, media_type| {
            if is_config(media_type) {
                let config: ImageConfig = serde_json::from_slice(&state.content.read(digest)?)
                    .with_context(|| format!("reading the config {digest} of {name}"))?;
                image_diff_ids.extend(config.rootfs.diff_ids);
            }
            Ok(())
        })?;
    }
    let blobs = state.content.list()?;
    let layers = layers.list()?;
    Ok(Survey {
        images: images.len(),
        image_blobs,
        image_diff_ids,
        records: state.db.cache_entries()?,
        blobs: blobs.into_iter().map(|b| (b.digest, b.size)).collect(),
        layers: layers
            .into_iter()
            .map(|l| {
                let bytes = disk_usage(&l.dir);
                (l, bytes)
            })
            .collect(),
        cache_mounts: crate::cache_mounts::CacheMounts::new(&state.root)
            .instances()
            .into_iter()
            .map(|dir| {
                let bytes = disk_usage(&dir);
                (dir, bytes)
            })
            .collect(),
    })
}

/// Bytes a tree takes on disk (allocated blocks), each hard-linked inode once. Unreadable
/// parts count as nothing: this is an estimate for `du`, not a removal decision.
fn disk_usage(dir: &Path) -> u64 {
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        total += meta.blocks() * 512;
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
        }
    }
    total
}

/// Which cache records a prune drops; unreferenced blobs and layers go regardless.
#[derive(Debug, Default)]
pub(crate) struct Policy {
    /// Every record.
    all: bool,
    /// Records unused for longer than this.
    until: Option<Duration>,
    /// Least recently used records, until the build cache's blobs fit in this many bytes.
    keep_storage: Option<u64>,
}

impl Policy {
    fn from_args(args: &PruneArgs) -> anyhow::Result<Policy> {
        let mut until = None;
        for filter in &args.filter {
            match filter.split_once('=') {
                Some(("until", value)) => until = Some(parse_go_duration(value)?),
                _ => anyhow::bail!(
                    "unsupported --filter {filter:?}: rbuild's prune knows until=DURATION"
                ),
            }
        }
        let keep_storage = args.keep_storage.as_deref().map(parse_size).transpose()?;
        Ok(Policy {
            all: args.all,
            until,
            keep_storage,
        })
    }
}

/// What a prune removes.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    records: Vec<Digest>,
    blobs: Vec<(Digest, u64)>,
    layers: Vec<(LayerDir, u64)>,
    /// Only with `--all`, as BuildKit's prune keeps cache mounts otherwise.
    cache_mounts: Vec<(std::path::PathBuf, u64)>,
}

impl Plan {
    fn bytes(&self) -> u64 {
        let blobs: u64 = self.blobs.iter().map(|(_, s)| s).sum();
        let mounts: u64 = self.cache_mounts.iter().map(|(_, s)| s).sum();
        blobs + mounts + self.layers.iter().map(|(_, s)| s).sum::<u64>()
    }
}

/// Decides a prune of `survey` under `policy`, at unix time `now`.
fn plan(survey: &Survey, policy: &Policy, now: i64) -> Plan {
    let dropped = dropped_records(survey, policy, now);
    let kept = || {
        survey
            .records
            .iter()
            .filter(|r| !dropped.contains(&r.key))
            .filter_map(|r| r.layer.as_ref())
    };
    let live_blobs: BTreeSet<&Digest> = survey
        .image_blobs
        .iter()
        .chain(kept().map(|l| &l.blob))
        .collect();
    let live_layers: BTreeSet<&Digest> = survey
        .image_diff_ids
        .iter()
        .chain(kept().map(|l| &l.diff_id))
        .collect();
    Plan {
        records: survey
            .records
            .iter()
            .map(|r| r.key)
            .filter(|k| dropped.contains(k))
            .collect(),
        blobs: survey
            .blobs
            .iter()
            .filter(|(d, _)| !live_blobs.contains(d))
            .map(|(d, s)| (*d, *s))
            .collect(),
        layers: survey
            .layers
            .iter()
            .filter(|(l, _)| !live_layers.contains(&l.diff_id))
            .map(|(l, s)| (l.clone(), *s))
            .collect(),
        cache_mounts: match policy.all {
            true => survey.cache_mounts.clone(),
            false => Vec::new(),
        },
    }
}

/// The records `policy` drops: those whose blob is gone (they can never hit), then by
/// `all`, `until`, and last `keep_storage`, least recently used first.
fn dropped_records(survey: &Survey, policy: &Policy, now: i64) -> BTreeSet<Digest> {
    let cutoff = policy
        .until
        .map(|d| now.saturating_sub(d.as_secs().try_into().unwrap_or(i64::MAX)));
    let mut dropped: BTreeSet<Digest> = survey
        .records
        .iter()
        .filter(|r| {
            let gone = r
                .layer
                .as_ref()
                .is_some_and(|l| !survey.blobs.contains_key(&l.blob));
            gone || policy.all || cutoff.is_some_and(|c| r.last_used < c)
        })
        .map(|r| r.key)
        .collect();
    if let Some(limit) = policy.keep_storage {
        drop_to_fit(survey, limit, &mut dropped);
    }
    dropped
}

/// Drops the least recently used of the remaining records until the blobs only records reach
/// total at most `limit`. A blob counts until the last record using it is dropped.
fn drop_to_fit(survey: &Survey, limit: u64, dropped: &mut BTreeSet<Digest>) {
    let mut users: BTreeMap<Digest, usize> = BTreeMap::new();
    for record in survey.records.iter().filter(|r| !dropped.contains(&r.key)) {
        if let Some(layer) = &record.layer {
            *users.entry(layer.blob).or_default() += 1;
        }
    }
    let cache_bytes = |blob: &Digest| match survey.image_blobs.contains(blob) {
        true => 0,
        false => survey.blobs.get(blob).copied().unwrap_or(0),
    };
    let mut total: u64 = users.keys().map(cache_bytes).sum();
    for record in &survey.records {
        if total <= limit {
            break;
        }
        if !dropped.insert(record.key) {
            continue;
        }
        let Some(layer) = &record.layer else { continue };
        let count = users.get_mut(&layer.blob).expect("counted above");
        *count -= 1;
        if *count == 0 {
            total -= cache_bytes(&layer.blob);
        }
    }
}

/// One `du` row: how many, bytes, and what `prune --all` would free of them.
struct Row {
    kind: &'static str,
    count: usize,
    size: u64,
    reclaimable: u64,
}

fn rows(survey: &Survey) -> Vec<Row> {
    let record_blobs: BTreeSet<&Digest> = survey
        .records
        .iter()
        .filter_map(|r| r.layer.as_ref().map(|l| &l.blob))
        .collect();
    let size_of = |pick: &dyn Fn(&Digest) -> bool| -> u64 {
        survey
            .blobs
            .iter()
            .filter(|(d, _)| pick(d))
            .map(|(_, s)| s)
            .sum()
    };
    let in_images = |d: &Digest| survey.image_blobs.contains(d);
    let cache_only = |d: &Digest| !in_images(d) && record_blobs.contains(d);
    let unreferenced = |d: &Digest| !in_images(d) && !record_blobs.contains(d);
    let cache = size_of(&cache_only);
    let loose = size_of(&unreferenced);
    let layer_bytes = |pick: &dyn Fn(&LayerDir) -> bool| -> u64 {
        survey
            .layers
            .iter()
            .filter(|(l, _)| pick(l))
            .map(|(_, s)| s)
            .sum()
    };
    let row = |kind, count, size, reclaimable| Row {
        kind,
        count,
        size,
        reclaimable,
    };
    vec![
        row("Images", survey.images, size_of(&in_images), 0),
        row("Build cache", survey.records.len(), cache, cache),
        row(
            "Unpacked layers",
            survey.layers.len(),
            layer_bytes(&|_| true),
            layer_bytes(&|l| !survey.image_diff_ids.contains(&l.diff_id)),
        ),
        row(
            "Cache mounts",
            survey.cache_mounts.len(),
            survey.cache_mounts.iter().map(|(_, s)| s).sum(),
            survey.cache_mounts.iter().map(|(_, s)| s).sum(),
        ),
        row(
            "Unreferenced",
            survey.blobs.keys().filter(|d| unreferenced(d)).count(),
            loose,
            loose,
        ),
    ]
}

pub fn du(state: &State, args: &DuArgs) -> anyhow::Result<()> {
    let layers = LayerStore::open(&layers_dir(&state.root))?;
    let survey = survey(state, &layers)?;
    let mut out = String::new();
    if args.verbose {
        out.push_str(&verbose_records(&survey));
    }
    let line = |kind: &str, count: &str, size: u64, reclaimable: u64| {
        format!(
            "{kind:<16} {count:>6} {:>10} {:>12}\n",
            human_size(size),
            human_size(reclaimable)
        )
    };
    out.push_str(&format!(
        "{:<16} {:>6} {:>10} {:>12}\n",
        "TYPE", "COUNT", "SIZE", "RECLAIMABLE"
    ));
    let rows = rows(&survey);
    for r in &rows {
        out.push_str(&line(r.kind, &r.count.to_string(), r.size, r.reclaimable));
    }
    let size = rows.iter().map(|r| r.size).sum();
    let reclaimable = rows.iter().map(|r| r.reclaimable).sum();
    out.push_str(&line("Total", "", size, reclaimable));
    crate::debug::print_stdout(&out)
}

/// One line per cache record, most recently used first, as `buildx du --verbose` lists them.
fn verbose_records(survey: &Survey) -> String {
    let mut out = format!(
        "{:<14} {:>10}  {:<24} {}\n",
        "CACHE KEY", "SIZE", "LAST USED", "LAYER"
    );
    for record in survey.records.iter().rev() {
        let (size, layer) = match &record.layer {
            Some(l) => (human_size(l.size), l.diff_id.hex()[..12].to_string()),
            None => ("0B".to_string(), "-".to_string()),
        };
        let used = crate::timestamp::utc_date(record.last_used);
        out.push_str(&format!(
            "{:<14} {size:>10}  {used:<24} {layer}\n",
            &record.key.hex()[..12]
        ));
    }
    out.push('\n');
    out
}

/// `rbuild prune`. The caller opened `state` exclusively: no build is running.
pub fn prune(state: &State, args: &PruneArgs) -> anyhow::Result<()> {
    let policy = Policy::from_args(args)?;
    let layers = LayerStore::open(&layers_dir(&state.root))?;
    let plan = plan(&survey(state, &layers)?, &policy, crate::timestamp::now().0);
    let done = execute(state, &layers, &plan)?;
    let temps = clean_leftovers(state)?;
    println!(
        "Deleted {} cache records, {} blobs, {} unpacked layers, {} cache mounts ({temps} \
         temporary files); reclaimed {}",
        done.records,
        plan.blobs.len(),
        plan.layers.len(),
        plan.cache_mounts.len(),
        human_size(plan.bytes())
    );
    Ok(())
}

struct Done {
    records: usize,
}

/// Records first, then blobs and layers: a crash halfway leaves records pointing at missing
/// blobs (which the next build treats as a miss), never a blob removed under a live record.
fn execute(state: &State, layers: &LayerStore, plan: &Plan) -> anyhow::Result<Done> {
    let records = state.db.remove_cache_records(&plan.records)?;
    for (digest, _) in &plan.blobs {
        state.content.remove(digest)?;
        state.db.forget_blob(digest)?;
    }
    for (layer, _) in &plan.layers {
        layers.remove(layer)?;
    }
    for (dir, _) in &plan.cache_mounts {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    Ok(Done { records })
}

/// Partial downloads, quarantined blobs, and what else lies in `tmp/`; returns how many
/// temporary files the content store had.
fn clean_leftovers(state: &State) -> anyhow::Result<usize> {
    let temps = state.content.clean_ingest()?;
    // Scratch of processes that are gone was swept when the root was opened; what else
    // lies in tmp/ (older layouts) is garbage too, but never this process's own scratch.
    for dir in ["content/corrupt", "tmp"] {
        remove_children(&state.root.join(dir), state.scratch())?;
    }
    Ok(temps)
}

fn remove_children(dir: &Path, keep: &Path) -> anyhow::Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        let path = entry?.path();
        if path == keep {
            continue;
        }
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(|e| anyhow::anyhow!("removing {}: {e}", path.display()))?;
    }
    Ok(())
}

fn layers_dir(root: &Path) -> std::path::PathBuf {
    root.join("snapshots/layers")
}

/// The store size past which a build triggers GC: `RBUILD_GC_KEEP_STORAGE` (a size; `0` or
/// `off` turns GC off), else a tenth of the filesystem the root is on, BuildKit's default.
fn gc_limit(root: &Path) -> anyhow::Result<Option<u64>> {
    match std::env::var("RBUILD_GC_KEEP_STORAGE") {
        Ok(v) if v.trim() == "0" || v.trim().eq_ignore_ascii_case("off") => Ok(None),
        Ok(v) => Ok(Some(parse_size(&v).context("RBUILD_GC_KEEP_STORAGE")?)),
        Err(_) => {
            let fs = rustix::fs::statvfs(root)
                .with_context(|| format!("measuring the filesystem of {}", root.display()))?;
            Ok(Some(fs.f_blocks.saturating_mul(fs.f_frsize) / 10))
        }
    }
}

/// After a successful build: when content and unpacked layers pass the limit, drops the least
/// recently used build cache down to it (images stay). Skipped if anyone else holds the state
/// root, since GC must never remove what another build uses nor make it wait. Never fails the
/// build: a problem is a warning.
pub fn auto_gc(root: Option<&Path>) {
    if let Err(e) = try_auto_gc(root) {
        eprintln!("warning: automatic garbage collection: {e:#}");
    }
}

fn try_auto_gc(root: Option<&Path>) -> anyhow::Result<()> {
    let Some(limit) = gc_limit(&crate::state::resolve_root(root)?)? else {
        return Ok(());
    };
    let Some(state) = State::try_exclusive(root)? else {
        return Ok(());
    };
    // Cheap first (a stat per blob): the full survey walks every file of every unpacked layer,
    // which a no-op rebuild should not pay for.
    let blob_bytes: u64 = state.content.list()?.iter().map(|b| b.size).sum();
    if blob_bytes <= limit {
        return Ok(());
    }
    let layers = LayerStore::open(&layers_dir(&state.root))?;
    let survey = survey(&state, &layers)?;
    let stored =
        survey.blobs.values().sum::<u64>() + survey.layers.iter().map(|(_, s)| s).sum::<u64>();
    if stored <= limit {
        return Ok(());
    }
    let policy = Policy {
        keep_storage: Some(limit),
        ..Policy::default()
    };
    let plan = plan(&survey, &policy, crate::timestamp::now().0);
    let done = execute(&state, &layers, &plan)?;
    eprintln!(
        "automatic GC: the store ({}) passed its limit ({}); deleted {} cache records, {} \
         blobs, {} unpacked layers, reclaimed {}",
        human_size(stored),
        human_size(limit),
        done.records,
        plan.blobs.len(),
        plan.layers.len(),
        human_size(plan.bytes())
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use rbuild_cache::db::RecordedLayer;

    use super::*;

    fn d(tag: &str) -> Digest {
        Digest::of(tag.as_bytes())
    }

    /// A record `key` last used at `when` whose layer is blob `b-<blob>` of diffID `l-<blob>`.
    fn record(key: &str, when: i64, blob: Option<&str>) -> CacheEntry {
        CacheEntry {
            key: d(key),
            layer: blob.map(|b| RecordedLayer {
                diff_id: d(&format!("l-{b}")),
                blob: d(&format!("b-{b}")),
                media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                size: 0,
            }),
            last_used: when,
        }
    }

    /// An image of blob `b-img` (layer `l-img`), records `old` (t=100, blob x, 1000 bytes),
    /// `mid` (t=200, shares blob x), `new` (t=300, blob y, 10 bytes), `empty` (t=50, no
    /// layer), `lost` (t=400, blob z which is gone), a loose blob and a layer dir for each.
    fn survey() -> Survey {
        let layer = |b: &str| {
            let dir = LayerDir {
                diff_id: d(&format!("l-{b}")),
                dir: format!("/layers/{b}").into(),
            };
            (dir, 5)
        };
        Survey {
            images: 1,
            image_blobs: [d("b-img")].into(),
            image_diff_ids: [d("l-img")].into(),
            records: vec![
                record("empty", 50, None),
                record("old", 100, Some("x")),
                record("mid", 200, Some("x")),
                record("new", 300, Some("y")),
                record("lost", 400, Some("z")),
            ],
            blobs: [
                (d("b-img"), 7),
                (d("b-x"), 1000),
                (d("b-y"), 10),
                (d("loose"), 3),
            ]
            .into(),
            layers: ["img", "x", "y", "z", "stray"].map(layer).into(),
            cache_mounts: Vec::new(),
        }
    }

    fn dropped(plan: &Plan) -> Vec<Digest> {
        let mut keys = plan.records.clone();
        keys.sort();
        keys
    }

    fn keys(names: &[&str]) -> Vec<Digest> {
        let mut keys: Vec<Digest> = names.iter().map(|n| d(n)).collect();
        keys.sort();
        keys
    }

    fn layer_names(plan: &Plan) -> Vec<String> {
        let mut names: Vec<String> = plan
            .layers
            .iter()
            .map(|(l, _)| l.dir.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn the_default_prune_keeps_the_cache_and_removes_only_what_nothing_uses() {
        let plan = plan(&survey(), &Policy::default(), 1000);
        assert_eq!(dropped(&plan), keys(&["lost"]));
        assert_eq!(plan.blobs, [(d("loose"), 3)]);
        assert_eq!(layer_names(&plan), ["stray", "z"]);
        assert_eq!(plan.bytes(), 3 + 5 + 5);
    }

    #[test]
    fn all_drops_every_record_but_never_an_image_blob_or_layer() {
        let all = Policy {
            all: true,
            ..Policy::default()
        };
        let plan = plan(&survey(), &all, 1000);
        assert_eq!(
            dropped(&plan),
            keys(&["empty", "old", "mid", "new", "lost"])
        );
        let mut blobs: Vec<Digest> = plan.blobs.iter().map(|(b, _)| *b).collect();
        blobs.sort();
        let mut want = vec![d("b-x"), d("b-y"), d("loose")];
        want.sort();
        assert_eq!(blobs, want);
        assert_eq!(layer_names(&plan), ["stray", "x", "y", "z"]);
    }

    #[test]
    fn until_drops_records_unused_for_longer_than_the_duration() {
        let until = Policy {
            until: Some(Duration::from_secs(850)),
            ..Policy::default()
        };
        // Cutoff 1000 - 850 = 150: `empty` (50) and `old` (100) go; `mid` still holds blob x.
        let plan = plan(&survey(), &until, 1000);
        assert_eq!(dropped(&plan), keys(&["empty", "old", "lost"]));
        assert_eq!(plan.blobs, [(d("loose"), 3)]);
    }

    #[test]
    fn keep_storage_drops_the_least_recently_used_until_the_cache_fits() {
        let keep = |limit| Policy {
            keep_storage: Some(limit),
            ..Policy::default()
        };
        // 1010 bytes of cache. Fitting 1010 drops nothing more than the lost record.
        assert_eq!(dropped(&plan(&survey(), &keep(1010), 0)), keys(&["lost"]));
        // Fitting 500 means freeing blob x: both its records must go, the older first, and
        // the empty record older than both goes on the way; `new` stays.
        let plan500 = plan(&survey(), &keep(500), 0);
        assert_eq!(dropped(&plan500), keys(&["empty", "old", "mid", "lost"]));
        assert!(plan500.blobs.contains(&(d("b-x"), 1000)));
        assert!(!plan500.blobs.iter().any(|(b, _)| *b == d("b-y")));
        assert_eq!(
            dropped(&plan(&survey(), &keep(0), 0)),
            keys(&["empty", "old", "mid", "new", "lost"])
        );
    }

    #[test]
    fn du_rows_split_the_store_by_what_refers_to_it() {
        let rows = rows(&survey());
        let table: Vec<(&str, usize, u64, u64)> = rows
            .iter()
            .map(|r| (r.kind, r.count, r.size, r.reclaimable))
            .collect();
        assert_eq!(
            table,
            [
                ("Images", 1, 7, 0),
                ("Build cache", 5, 1010, 1010),
                ("Unpacked layers", 5, 25, 20),
                ("Cache mounts", 0, 0, 0),
                ("Unreferenced", 1, 3, 3),
            ]
        );
    }

    #[test]
    fn unknown_filters_and_bad_sizes_are_refused() {
        let args = |filter: &str, keep: Option<&str>| PruneArgs {
            all: false,
            keep_storage: keep.map(str::to_string),
            filter: vec![filter.to_string()],
            force: false,
        };
        let err = Policy::from_args(&args("type=regular", None)).unwrap_err();
        assert!(err.to_string().contains("type=regular"), "{err}");
        assert!(Policy::from_args(&args("until=1d", None)).is_err());
        assert!(Policy::from_args(&args("until=1h", Some("lots"))).is_err());
        let policy = Policy::from_args(&args("until=1h", Some("1KB"))).unwrap();
        assert_eq!(policy.until, Some(Duration::from_secs(3600)));
        assert_eq!(policy.keep_storage, Some(1024));
    }
}
