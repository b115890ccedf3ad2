//! `rbuild images`, `rmi`.

use std::collections::BTreeSet;

use anyhow::bail;

use super::{find, image_id, reachable};
use crate::cli::{ImagesArgs, RmiArgs};
use crate::state::State;
use rbuild_cache::db::ImageRecord;
use rbuild_cache::image::media_types::is_index;
use rbuild_cache::image::{Blob, ImageConfig, ImageName, Index};

pub fn images(state: &State, args: &ImagesArgs) -> anyhow::Result<()> {
    let mut out = String::new();
    if !args.quiet {
        out.push_str(&format!(
            "{:<40} {:<16} {:<14} {:<24} {}\n",
            "REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"
        ));
    }
    for (name, record) in state.db.images()? {
        let id = image_id(state, &record)?;
        let id = if args.no_trunc {
            id.to_string()
        } else {
            id.hex()[..12].to_string()
        };
        if args.quiet {
            out.push_str(&format!("{id}\n"));
            continue;
        }
        let (repository, tag) = split_name(&name);
        let mut blobs = BTreeSet::new();
        reachable(state, &record, &mut blobs)?;
        let size: u64 = blobs
            .iter()
            .filter_map(|d| state.content.size(d).ok())
            .sum();
        let created = config_created(state, &record)
            .unwrap_or_else(|| crate::timestamp::utc_date(record.created_at));
        out.push_str(&format!(
            "{repository:<40} {tag:<16} {id:<14} {created:<24} {}\n",
            human_size(size)
        ));
    }
    crate::debug::print_stdout(&out)
}

/// When the image was made, as `docker images` shows it: its config's `created` (for an
/// index, that of its first platform in the store), `YYYY-MM-DD HH:MM:SS UTC`. `None` when the
/// config says nothing usable (then the time the name was set is shown).
fn config_created(state: &State, record: &ImageRecord) -> Option<String> {
    let manifest = match is_index(&record.media_type) {
        true => {
            let index: Blob<Index> = Blob::parse(state.content.read(&record.digest).ok()?).ok()?;
            let entry = index
                .value()
                .manifests
                .iter()
                .find(|m| state.content.contains(&m.digest))?
                .clone();
            ImageRecord {
                media_type: entry.media_type,
                digest: entry.digest,
                size: entry.size,
                created_at: record.created_at,
            }
        }
        false => record.clone(),
    };
    let config = image_id(state, &manifest).ok()?;
    let config: Blob<ImageConfig> = Blob::parse(state.content.read(&config).ok()?).ok()?;
    let created = config.value().created.clone()?;
    // RFC 3339 `2026-11-24T13:34:49.123Z` → `2026-11-24 13:34:49 UTC`.
    let (date, time) = created.split_once('T')?;
    let time = time.get(..8)?;
    (date.len() == 10 && created.ends_with('Z')).then(|| format!("{date} {time} UTC"))
}

/// `docker.io/library/app:1.0` → (`app`, `1.0`), as `docker images` shows names.
fn split_name(name: &str) -> (String, String) {
    match name.parse::<ImageName>() {
        Ok(r) => {
            let tag = r.tag.clone().unwrap_or_else(|| "<none>".to_string());
            (r.familiar_repository(), tag)
        }
        Err(_) => (name.to_string(), "<none>".to_string()),
    }
}

pub fn rmi(state: &State, args: &RmiArgs) -> anyhow::Result<()> {
    let mut failed = Vec::new();
    for name in &args.names {
        match find(state, name) {
            Ok((full, _)) => {
                state.db.remove_image(&full)?;
                println!("Untagged: {name}");
            }
            Err(e) => failed.push(format!("{e}")),
        }
    }
    if !failed.is_empty() {
        bail!("{}", failed.join("; "));
    }
    Ok(())
}

/// Docker's sizes: three significant digits, decimal units (`12.3MB`).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    let digits = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    let text = format!("{value:.digits$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    };
    format!("{text}{}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_dockers() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1234), "1.23kB");
        assert_eq!(human_size(12_345_678), "12.3MB");
        assert_eq!(human_size(100_000), "100kB");
    }

    #[test]
    fn names_split_as_docker_images_shows_them() {
        assert_eq!(
            split_name("docker.io/library/app:1.0"),
            ("app".to_string(), "1.0".to_string())
        );
        assert_eq!(
            split_name("127.0.0.1:5000/x/y:v"),
            ("127.0.0.1:5000/x/y".to_string(), "v".to_string())
        );
    }
}
