//! `rbuild save`: images from the store into an OCI layout tar (default) or a docker archive.

use crate::cli::{SaveArgs, SaveFormat};
use crate::export::{present_part, single_platform, write_docker, write_oci};
use crate::output::Destination;
use crate::state::State;

use rbuild_cache::image::Descriptor;

pub fn save(state: &State, args: &SaveArgs) -> anyhow::Result<()> {
    let mut images = Vec::new();
    for name in &args.names {
        let (full, record) = super::find(state, name)?;
        let descriptor = Descriptor::new(record.media_type, record.digest, record.size);
        // What the store holds of it: the platforms pulled, and one of them for a docker archive.
        let descriptor = present_part(state, &descriptor)?;
        let descriptor = match args.format {
            SaveFormat::Oci => descriptor,
            SaveFormat::Docker => {
                single_platform(state, &descriptor).map_err(|e| anyhow::anyhow!("{name}: {e:#}"))?
            }
        };
        images.push((descriptor, vec![full]));
    }
    let dest = match &args.output {
        Some(path) => Destination::Path(path.clone()),
        None => Destination::Stdout,
    };
    match args.format {
        SaveFormat::Oci => write_oci(state, &images, &dest, true),
        SaveFormat::Docker => write_docker(state, &images, &dest),
    }
}
