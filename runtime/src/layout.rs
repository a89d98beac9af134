//! Where berth keeps things on disk.
//!
//! Two roots: a persistent one (images, snapshots, the metadata database) that survives a
//! reboot, and a volatile one (shim sockets, namespace pins, exit files) that a reboot is
//! expected to wipe. Keeping them apart is what lets start-up tell "berthd restarted" from
//! "the host rebooted".

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
    state: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>, state: impl Into<PathBuf>) -> Self {
        Self { root: root.into(), state: state.into() }
    }

    /// Persistent root (`/var/lib/berth` by default).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Volatile root (`/run/berth` by default).
    pub fn state(&self) -> &Path {
        &self.state
    }

    /// Creates both roots (and their parents) if missing. They hold other users' secrets
    /// (image layers, logs, namespace pins), so only root may list them.
    pub fn create(&self) -> io::Result<()> {
        for dir in [&self.root, &self.state] {
            fs::DirBuilder::new().recursive(true).mode(0o711).create(dir)?;
            // An existing directory keeps whatever mode it had; tighten it.
            let mode = fs::metadata(dir)?.permissions().mode() & 0o7777;
            if mode & 0o022 != 0 {
                fs::set_permissions(dir, fs::Permissions::from_mode(0o711))?;
            }
        }
        Ok(())
    }

    /// Checks that both roots are directories berthd can write to, which is what the
    /// kubelet's RuntimeReady condition means. Returns why not on failure.
    pub fn check_writable(&self) -> Result<(), String> {
        for (what, dir) in [("root", &self.root), ("state", &self.state)] {
            let probe = dir.join(".berth-ready-probe");
            if let Err(e) = fs::write(&probe, b"") {
                return Err(format!("{what} directory {} is not writable: {e}", dir.display()));
            }
            let _ = fs::remove_file(&probe);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_roots_and_reports_writable() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout::new(tmp.path().join("a/root"), tmp.path().join("b/state"));
        assert!(layout.check_writable().is_err());
        layout.create().unwrap();
        layout.check_writable().unwrap();
        let mode = fs::metadata(layout.root()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o711);
    }

    #[test]
    fn tightens_a_world_writable_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        fs::create_dir(&root).unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o777)).unwrap();
        Layout::new(&root, tmp.path().join("state")).create().unwrap();
        assert_eq!(fs::metadata(&root).unwrap().permissions().mode() & 0o777, 0o711);
    }
}
