//! Image volumes (KEP-4639): read-only views of an image's unpacked layers, mounted for
//! one container and bound into it.
//!
//! A view is an overlay of the image's layers with no upper directory (the kernel makes
//! such an overlay read-only), or a read-only bind of the layer when the image has only
//! one (overlayfs wants two lower dirs without an upper). Each view has a record in the
//! metadata store naming its image and layers: garbage collection keeps those layers,
//! RemoveImage refuses the image while the record exists, and start-up removes records
//! whose container is gone.

use crate::digest::Digest;
use crate::metadata::Record;
use nix::mount::{mount, MsFlags};
use serde::{Deserialize, Serialize};
use std::fs;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

/// One image volume of one container, keyed by [`view_key`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageViewRecord {
    pub container_id: String,
    /// The index of the mount in the create request.
    pub mount: usize,
    pub image: Digest,
    /// Chain ids of the image's layers, bottom first.
    pub layers: Vec<Digest>,
}

impl Record for ImageViewRecord {
    const TABLE: &'static str = "image_views";
}

pub fn view_key(container_id: &str, mount: usize) -> String {
    format!("{container_id}/{mount}")
}

/// Mounts the read-only view of `lowers` (bottom first) at `target`.
#[tracing::instrument(name = "image_view.mount", skip_all, fields(target = %target.display(), layers = lowers.len()))]
pub fn mount_view(lowers: &[PathBuf], target: &Path) -> Result<(), String> {
    fs::create_dir_all(target).map_err(|e| format!("create {}: {e}", target.display()))?;
    match lowers {
        [] => Err("an image volume needs an image with at least one layer".into()),
        [only] => {
            mount(Some(only.as_path()), target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
                .map_err(|e| format!("bind {} at {}: {e}", only.display(), target.display()))?;
            let ro = MsFlags::MS_BIND
                | MsFlags::MS_REMOUNT
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV;
            mount(None::<&str>, target, None::<&str>, ro, None::<&str>).map_err(|e| {
                let _ = crate::mount_table::unmount(target);
                format!("make {} read-only: {e}", target.display())
            })
        }
        _ => {
            // overlayfs lists lower dirs top first; ':' and ',' would break the options.
            let mut lowerdir = String::new();
            for dir in lowers.iter().rev() {
                let s = dir.to_str().filter(|s| !s.contains([':', ',']));
                let s = s.ok_or_else(|| {
                    format!("layer path {} cannot be used in an overlay", dir.display())
                })?;
                if !lowerdir.is_empty() {
                    lowerdir.push(':');
                }
                lowerdir.push_str(s);
            }
            let data = format!("lowerdir={lowerdir}");
            if data.len() >= 4096 {
                return Err(format!(
                    "{} layers are too many to mount in one overlay",
                    lowers.len()
                ));
            }
            let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
            mount(Some("overlay"), target, Some("overlay"), flags, Some(data.as_str()))
                .map_err(|e| format!("mount overlay at {}: {e}", target.display()))
        }
    }
}

/// Why an `image_sub_path` cannot be used.
#[derive(Debug, PartialEq, Eq)]
pub enum SubPathError {
    /// Absolute, or with `.`/`..` components: it would not name a path inside the image.
    NotRelative,
    /// Nothing at that path in the image.
    Missing,
    Io(String),
}

impl std::fmt::Display for SubPathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SubPathError::NotRelative => {
                f.write_str("must be a relative path inside the image, without '.' or '..'")
            }
            SubPathError::Missing => f.write_str("does not exist in the image"),
            SubPathError::Io(e) => f.write_str(e),
        }
    }
}

/// Checks the form of an `image_sub_path` (before anything is created).
pub fn check_sub_path(sub_path: &str) -> Result<(), SubPathError> {
    // By segment, not Path::components, which drops a `.` inside the path silently.
    if sub_path.contains('\0')
        || sub_path.starts_with('/')
        || sub_path.split('/').any(|c| c == "." || c == "..")
    {
        return Err(SubPathError::NotRelative);
    }
    Ok(())
}

/// The host path of `sub_path` inside the mounted view `root`, with symlinks in the
/// image resolved as the container would see them (inside the image, never out of it).
pub fn resolve_sub_path(root: &Path, sub_path: &str) -> Result<PathBuf, SubPathError> {
    check_sub_path(sub_path)?;
    if sub_path.is_empty() {
        return Ok(root.to_path_buf());
    }
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let io = |e: &dyn std::fmt::Display| SubPathError::Io(e.to_string());
    let dir = fs::File::open(root).map_err(|e| io(&e))?;
    let found = rustix::fs::openat2(
        dir.as_fd(),
        sub_path,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_XDEV,
    );
    let fd = match found {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => {
            return Err(SubPathError::Missing)
        }
        Err(e) => return Err(io(&e)),
    };
    let path = fs::read_link(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd)))
        .map_err(|e| io(&e))?;
    // IN_ROOT already keeps the lookup inside; a path outside would be a kernel surprise.
    if !path.starts_with(root) {
        return Err(io(&format!("{} resolved outside the image", path.display())));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unmounts when dropped, also when an assertion fails.
    struct Unmount(PathBuf);

    impl Drop for Unmount {
        fn drop(&mut self) {
            crate::mount_table::unmount(&self.0).unwrap();
        }
    }

    #[test]
    fn sub_paths_must_stay_inside_the_image() {
        for ok in ["", "etc", "usr/share/doc", "a/b/"] {
            assert_eq!(check_sub_path(ok), Ok(()), "{ok}");
        }
        for bad in ["/etc", "../x", "a/../../x", "./a", "a/./b", "a/..", "a\0b"] {
            assert_eq!(check_sub_path(bad), Err(SubPathError::NotRelative), "{bad}");
        }
    }

    #[test]
    fn views_are_read_only_and_symlinks_stay_inside() {
        assert!(nix::unistd::geteuid().is_root(), "mounting needs root");
        let tmp = tempfile::tempdir().unwrap();
        let (bottom, top) = (tmp.path().join("l0"), tmp.path().join("l1"));
        fs::create_dir_all(bottom.join("data")).unwrap();
        fs::create_dir_all(&top).unwrap();
        fs::write(bottom.join("data/f"), "bottom").unwrap();
        fs::write(top.join("g"), "top").unwrap();
        // Absolute and climbing links are resolved inside the image, as in the container.
        std::os::unix::fs::symlink("/data", top.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../../../etc", top.join("climb")).unwrap();

        for (name, lowers) in
            [("one", vec![bottom.clone()]), ("two", vec![bottom.clone(), top.clone()])]
        {
            let view = tmp.path().join(name);
            mount_view(&lowers, &view).unwrap();
            let _unmount = Unmount(view.clone());
            {
                assert_eq!(fs::read_to_string(view.join("data/f")).unwrap(), "bottom");
                let err = fs::write(view.join("new"), "x").unwrap_err();
                assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{name}: {err}");
                assert_eq!(resolve_sub_path(&view, "data").unwrap(), view.join("data"));
                assert_eq!(resolve_sub_path(&view, "").unwrap(), view);
                assert_eq!(resolve_sub_path(&view, "nope"), Err(SubPathError::Missing));
                assert_eq!(resolve_sub_path(&view, "data/f/x"), Err(SubPathError::Missing));
                if lowers.len() == 2 {
                    assert_eq!(fs::read_to_string(view.join("g")).unwrap(), "top");
                    assert_eq!(resolve_sub_path(&view, "abs").unwrap(), view.join("data"));
                    // The host's /etc is not reachable: the image has no etc.
                    assert_eq!(resolve_sub_path(&view, "climb"), Err(SubPathError::Missing));
                }
            }
        }
        assert!(!bottom.join("new").exists() && !top.join("new").exists());
        assert!(mount_view(&[], &tmp.path().join("none")).is_err());
    }
}
