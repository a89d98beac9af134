//! One berthd per state directory.
//!
//! Two daemons on the same state would fight over namespace pins, shim sockets and the
//! metadata database, so the second one must refuse to start. An advisory `flock` on a
//! file in the state dir does this and, unlike a PID file, is released by the kernel when
//! the holder dies, so a crash never leaves a stale lock.

use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another berthd (pid {holder}) is already running on state directory {}; stop it or use a different --state", dir.display())]
    Held { dir: PathBuf, holder: String },
    #[error("cannot lock {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

/// Held for the daemon's whole life; dropping it releases the lock.
#[derive(Debug)]
pub struct StateLock {
    _lock: Flock<File>,
}

impl StateLock {
    pub const FILE_NAME: &'static str = "berthd.lock";

    pub fn acquire(state_dir: &Path) -> Result<Self, LockError> {
        let path = state_dir.join(Self::FILE_NAME);
        let io_err = |source| LockError::Io { path: path.clone(), source };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err)?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(LockError::Held {
                    dir: state_dir.to_path_buf(),
                    holder: if holder.is_empty() { "unknown".into() } else { holder.into() },
                });
            }
            Err((_, errno)) => return Err(io_err(errno.into())),
        };
        // The PID is only there to make the refusal message useful.
        lock.set_len(0).map_err(io_err)?;
        lock.rewind().map_err(io_err)?;
        write!(lock, "{}", std::process::id()).map_err(io_err)?;
        Ok(Self { _lock: lock })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_until_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateLock::acquire(dir.path()).unwrap();
        match StateLock::acquire(dir.path()) {
            Err(LockError::Held { holder, .. }) => {
                assert_eq!(holder, std::process::id().to_string())
            }
            other => panic!("expected Held, got {other:?}"),
        }
        drop(first);
        StateLock::acquire(dir.path()).unwrap();
    }
}
