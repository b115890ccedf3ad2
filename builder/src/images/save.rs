//! `rbuild save`: images from the store into an OCI layout tar (default) or a docker archive.

use crate::cli::{SaveArgs, SaveFormat};
use crate::export::{write_docker, write_oci};
use crate::output::Destination;
use crate::state::State;

use rbuild_cache::image::Descriptor;

pub fn save(state: &State, args: &SaveArgs) -> anyhow::Result<()> {
    let mut images = Vec::new();
    for name in &args.names {
        let (full, record) = super::find(state, name)?;
        let descriptor = Descriptor::new(record.media_type, record.digest, record.size);
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
