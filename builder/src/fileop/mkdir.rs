//! WORKDIR's directory: BuildKit's `dispatchWorkdir` makes `llb.Mkdir(wd, 0755,
//! WithParents(true), WithUser(USER))` when USER is set. The file backend's `MkdirAll` then
//! creates each missing directory 0755 and chowns it to that user (resolved in the rootfs'
//! passwd/group); directories that exist already, and `/`, are left untouched.

use std::path::Path;

use super::error::FileOpError;
use super::paths::{DestRoot, Owner};

pub fn mkdir(path: &str, user: &str, dest_root: &Path) -> Result<(), FileOpError> {
    let owner = if user.is_empty() {
        None
    } else {
        let id = crate::users::resolve(dest_root, user).map_err(|cause| FileOpError::User {
            spec: user.to_string(),
            cause,
        })?;
        Some(Owner {
            uid: id.uid,
            gid: id.gid,
        })
    };
    let root = DestRoot::open(dest_root)?;
    // Without a USER the directories are root's: as root that is what mkdir makes; as
    // another user nothing can be chowned anyway.
    root.mkdir_all(path, 0o755, owner)?;
    Ok(())
}
