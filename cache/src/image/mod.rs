//! The image model (config, manifest, index) and the OCI layout and docker-archive formats.
