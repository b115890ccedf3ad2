//! `--output` specs as buildx reads them: `type=oci,dest=out.tar`, a bare path for
//! `type=local`, `-` for a rootfs tar on stdout.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rbuild_cache::layer::Compression;

/// Where a build's result goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// The local image store (buildx's `type=image`, and the default).
    Image { names: Vec<String>, push: bool },
    /// An OCI image layout, in a tar (default) or a directory (`tar=false`).
    Oci {
        dest: Destination,
        tar: bool,
        names: Vec<String>,
    },
    /// A docker-archive tar, as `docker save` writes and `docker load` reads.
    Docker {
        dest: Destination,
        tar: bool,
        names: Vec<String>,
    },
    /// The rootfs, as files in a directory.
    Local { dest: PathBuf },
    /// The rootfs, as one tar.
    Tar { dest: Destination },
}

/// A file, or stdout for `dest=-`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    Path(PathBuf),
    Stdout,
}

/// What every image-carrying output shares.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutputOptions {
    /// `compression=`; `None` when not asked: see [`OutputOptions::compression_for`].
    pub compression: Option<Compression>,
    /// Recompress layers stored with another compression (buildx's `force-compression`).
    pub force_compression: bool,
}

impl OutputOptions {
    /// The compression the build's layers take in `output`. Steps commit uncompressed layers
    /// (hashing only, no compressor on the build's path); what leaves the machine — a push, an
    /// OCI layout — is gzip unless `compression=` says otherwise, made once per layer and
    /// remembered. The local store keeps layers as they are unless asked, as Docker's store
    /// keeps them uncompressed; `None` means "leave them".
    pub fn compression_for(&self, output: &Output) -> Option<Compression> {
        match output {
            Output::Image { push: false, .. } => self.compression,
            Output::Image { push: true, .. } | Output::Oci { .. } => {
                Some(self.compression.unwrap_or(Compression::Gzip))
            }
            // Their formats hold uncompressed layers, or no layers at all.
            Output::Docker { .. } | Output::Local { .. } | Output::Tar { .. } => None,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OutputError {
    #[error("--output {spec:?}: {message}")]
    Invalid { spec: String, message: String },
}

/// One parsed `--output`, with the options it sets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputSpec {
    pub output: Output,
    pub options: OutputOptions,
}

impl OutputSpec {
    /// Parses one `--output` value; `tags` are the `-t` names, which `type=image` and
    /// `type=docker` use when the spec names none.
    pub fn parse(spec: &str, tags: &[String]) -> Result<OutputSpec, OutputError> {
        let fail = |message: String| OutputError::Invalid {
            spec: spec.to_string(),
            message,
        };
        if spec == "-" {
            return Ok(OutputSpec {
                output: Output::Tar {
                    dest: Destination::Stdout,
                },
                options: OutputOptions::default(),
            });
        }
        if !spec.contains('=') {
            return Ok(OutputSpec {
                output: Output::Local {
                    dest: PathBuf::from(spec),
                },
                options: OutputOptions::default(),
            });
        }
        let mut attrs = attributes(spec).map_err(fail)?;
        let kind = attrs
            .remove("type")
            .ok_or_else(|| fail("missing `type=` (local, tar, oci, docker, image)".into()))?;
        let options = output_options(&mut attrs).map_err(fail)?;
        let output = match kind.as_str() {
            "image" | "registry" => image_output(&kind, &mut attrs, tags).map_err(fail)?,
            "oci" | "docker" => archive_output(&kind, &mut attrs, tags).map_err(fail)?,
            "local" => Output::Local {
                dest: PathBuf::from(required_dest(&mut attrs).map_err(fail)?),
            },
            "tar" => Output::Tar {
                dest: destination(required_dest(&mut attrs).map_err(fail)?),
            },
            other => {
                return Err(fail(format!(
                    "unknown output type {other:?} (expected local, tar, oci, docker, image or registry)"
                )))
            }
        };
        if let Some(key) = attrs.keys().next() {
            return Err(fail(format!(
                "attribute {key:?} is not supported for type={kind}"
            )));
        }
        Ok(OutputSpec { output, options })
    }
}

/// `k=v,k2=v2`; a value may be double-quoted to hold commas (as in buildx's CSV).
pub(crate) fn attributes(spec: &str) -> Result<BTreeMap<String, String>, String> {
    let mut attrs = BTreeMap::new();
    for field in split_csv(spec)? {
        let (key, value) = field
            .split_once('=')
            .ok_or_else(|| format!("{field:?} is not KEY=VALUE"))?;
        let key = key.trim().to_lowercase();
        if attrs.insert(key.clone(), value.to_string()).is_some() {
            return Err(format!("attribute {key:?} is given twice"));
        }
    }
    Ok(attrs)
}

fn split_csv(spec: &str) -> Result<Vec<String>, String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    for c in spec.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(String::new()),
            c => fields.last_mut().expect("never empty").push(c),
        }
    }
    if quoted {
        return Err("unterminated quote".to_string());
    }
    Ok(fields.into_iter().filter(|f| !f.is_empty()).collect())
}

fn output_options(attrs: &mut BTreeMap<String, String>) -> Result<OutputOptions, String> {
    let mut options = OutputOptions::default();
    if let Some(c) = attrs.remove("compression") {
        options.compression = Some(c.parse()?);
    }
    if let Some(v) = attrs.remove("force-compression") {
        options.force_compression = boolean("force-compression", &v)?;
    }
    // We always write OCI media types; asking for Docker's is a choice we cannot honour.
    if let Some(v) = attrs.remove("oci-mediatypes") {
        if !boolean("oci-mediatypes", &v)? {
            return Err("oci-mediatypes=false (Docker media types) is not supported".into());
        }
    }
    Ok(options)
}

fn image_output(
    kind: &str,
    attrs: &mut BTreeMap<String, String>,
    tags: &[String],
) -> Result<Output, String> {
    let names = names_attribute(attrs, tags);
    let push = match attrs.remove("push") {
        Some(v) => boolean("push", &v)?,
        None => kind == "registry",
    };
    Ok(Output::Image { names, push })
}

fn archive_output(
    kind: &str,
    attrs: &mut BTreeMap<String, String>,
    tags: &[String],
) -> Result<Output, String> {
    let tar = match attrs.remove("tar") {
        Some(v) => boolean("tar", &v)?,
        None => true,
    };
    let dest = required_dest(attrs)?;
    if !tar && dest == "-" {
        return Err("tar=false writes a directory, so dest cannot be `-`".into());
    }
    // The names go into the archive's index; `-t` gives them unless `name=` does.
    let names = names_attribute(attrs, tags);
    let dest = destination(dest);
    Ok(match kind {
        "oci" => Output::Oci { dest, tar, names },
        _ => Output::Docker { dest, tar, names },
    })
}

/// `name=a,b` (quoted in the CSV) or else the `-t` names.
fn names_attribute(attrs: &mut BTreeMap<String, String>, tags: &[String]) -> Vec<String> {
    match attrs.remove("name") {
        Some(names) => names.split(',').map(str::to_string).collect(),
        None => tags.to_vec(),
    }
}

fn required_dest(attrs: &mut BTreeMap<String, String>) -> Result<String, String> {
    attrs
        .remove("dest")
        .filter(|d| !d.is_empty())
        .ok_or_else(|| "missing `dest=`".to_string())
}

fn destination(dest: String) -> Destination {
    if dest == "-" {
        Destination::Stdout
    } else {
        Destination::Path(PathBuf::from(dest))
    }
}

pub(crate) fn boolean(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(format!("{key}={value:?} is not true or false")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(spec: &str) -> Result<Output, OutputError> {
        OutputSpec::parse(spec, &["app:1.0".to_string()]).map(|s| s.output)
    }

    #[test]
    fn shorthands_are_local_and_stdout_tar() {
        assert_eq!(
            parse("out").unwrap(),
            Output::Local {
                dest: PathBuf::from("out")
            }
        );
        assert_eq!(
            parse("-").unwrap(),
            Output::Tar {
                dest: Destination::Stdout
            }
        );
    }

    #[test]
    fn typed_specs() {
        assert_eq!(
            parse("type=oci,dest=o.tar").unwrap(),
            Output::Oci {
                dest: Destination::Path("o.tar".into()),
                tar: true,
                names: vec!["app:1.0".into()]
            }
        );
        assert_eq!(
            parse("type=docker,dest=d,tar=false").unwrap(),
            Output::Docker {
                dest: Destination::Path("d".into()),
                tar: false,
                names: vec!["app:1.0".into()]
            }
        );
        assert_eq!(
            parse("type=image").unwrap(),
            Output::Image {
                names: vec!["app:1.0".into()],
                push: false
            }
        );
        assert_eq!(
            parse("type=image,\"name=a:1,b:2\",push=true").unwrap(),
            Output::Image {
                names: vec!["a:1".into(), "b:2".into()],
                push: true
            }
        );
        let spec = OutputSpec::parse("type=tar,dest=-,compression=zstd", &[]).unwrap();
        assert_eq!(spec.options.compression, Some(Compression::Zstd));
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        let err = |s| parse(s).unwrap_err().to_string();
        assert!(err("type=oci").contains("missing `dest=`"));
        assert!(err("dest=x").contains("missing `type=`"));
        assert!(err("type=floppy,dest=x").contains("unknown output type \"floppy\""));
        assert!(err("type=local,dest=x,bogus=1").contains("\"bogus\" is not supported"));
        assert!(err("type=oci,dest=x,tar=maybe").contains("not true or false"));
        assert!(err("type=oci,dest=-,tar=false").contains("cannot be `-`"));
        assert!(err("type=oci,dest=x,compression=lz4").contains("unknown compression"));
    }
}
