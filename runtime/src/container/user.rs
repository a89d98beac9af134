//! Who a container runs as: the CRI security context's user and group, else the
//! image's `User`, resolved against the container's own `/etc/passwd` and `/etc/group`.
//!
//! Those files come from the image, which is untrusted: they are opened with
//! `RESOLVE_IN_ROOT`, so a symlinked `/etc/passwd` (say, to the host's) resolves inside
//! the rootfs and never escapes it. Their size is bounded too.

use rustix::fs::{openat2, Mode, OFlags, ResolveFlags};
use std::io::Read;
use std::path::Path;

const MAX_DB_BYTES: u64 = 4 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: the primary group, the user's groups in `/etc/group` (unless
    /// the policy is strict), then the request's; each once.
    pub additional_gids: Vec<u32>,
}

/// How the CRI asked (or the image said) to run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserRequest {
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub run_as_username: String,
    pub supplemental_groups: Vec<i64>,
    /// SupplementalGroupsPolicy Strict: the image's `/etc/group` adds no groups.
    pub strict_groups: bool,
    /// The image config's `User` (`name`, `uid`, `name:group`, `uid:gid`).
    pub image_user: String,
}

struct Passwd {
    name: String,
    uid: u32,
    gid: u32,
}

/// Resolves `req` against the rootfs at `rootfs`. Errors name the CRI field at fault.
pub fn resolve(rootfs: &Path, req: &UserRequest) -> Result<User, String> {
    let passwd = read_db(rootfs, "etc/passwd")?;
    let users: Vec<Passwd> = passwd
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 4).then(|| {
                Some(Passwd { name: f[0].into(), uid: f[2].parse().ok()?, gid: f[3].parse().ok()? })
            })?
        })
        .collect();
    let group_db = read_db(rootfs, "etc/group")?;

    let id = |v: i64, field: &str| {
        u32::try_from(v).map_err(|_| format!("{field}: {v} is not a valid id"))
    };
    let (uid, mut gid, name) = if let Some(uid) = req.run_as_user {
        let uid = id(uid, "linux.security_context.run_as_user")?;
        let known = users.iter().find(|u| u.uid == uid);
        (uid, known.map_or(0, |u| u.gid), known.map(|u| u.name.clone()))
    } else if !req.run_as_username.is_empty() {
        let u = users.iter().find(|u| u.name == req.run_as_username).ok_or_else(|| {
            format!(
                "linux.security_context.run_as_username: no user {:?} in the image's /etc/passwd",
                req.run_as_username
            )
        })?;
        (u.uid, u.gid, Some(u.name.clone()))
    } else {
        let (user, group) = match req.image_user.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (req.image_user.as_str(), None),
        };
        let (uid, gid, name) = match user {
            "" => (0, 0, Some("root".to_string())),
            u => match u.parse::<u32>() {
                Ok(uid) => {
                    let known = users.iter().find(|p| p.uid == uid);
                    (uid, known.map_or(0, |p| p.gid), known.map(|p| p.name.clone()))
                }
                Err(_) => {
                    let p = users.iter().find(|p| p.name == u).ok_or_else(|| {
                        format!("image user {u:?} is not in the image's /etc/passwd")
                    })?;
                    (p.uid, p.gid, Some(p.name.clone()))
                }
            },
        };
        let gid = match group {
            None | Some("") => gid,
            Some(g) => match g.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => group_id(&group_db, g)
                    .ok_or_else(|| format!("image group {g:?} is not in /etc/group"))?,
            },
        };
        (uid, gid, name)
    };
    if let Some(g) = req.run_as_group {
        gid = id(g, "linux.security_context.run_as_group")?;
    }
    // The primary group is listed too, as Kubernetes reports it (ContainerStatus.user).
    let mut additional_gids = vec![gid];
    if let Some(name) = name.as_ref().filter(|_| !req.strict_groups) {
        for line in group_db.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() >= 4 && f[3].split(',').any(|m| m == name) {
                if let Ok(g) = f[2].parse::<u32>() {
                    if !additional_gids.contains(&g) {
                        additional_gids.push(g);
                    }
                }
            }
        }
    }
    for g in &req.supplemental_groups {
        let g = id(*g, "linux.security_context.supplemental_groups")?;
        if !additional_gids.contains(&g) {
            additional_gids.push(g);
        }
    }
    Ok(User { uid, gid, additional_gids })
}

fn group_id(db: &str, name: &str) -> Option<u32> {
    db.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 3 && f[0] == name).then(|| f[2].parse().ok()).flatten()
    })
}

/// Reads a file of the rootfs, resolving every path component inside it. Absent: empty.
fn read_db(rootfs: &Path, rel: &str) -> Result<String, String> {
    let root =
        rustix::fs::open(rootfs, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| format!("open rootfs {}: {e}", rootfs.display()))?;
    let fd = match openat2(
        &root,
        rel,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(String::new()),
        Err(e) => return Err(format!("open /{rel} in the container: {e}")),
    };
    let mut text = String::new();
    std::fs::File::from(fd)
        .take(MAX_DB_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| format!("read /{rel} in the container: {e}"))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn rootfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("etc")).unwrap();
        fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33::/var/www:/bin/false\nnobody:x:65534:65534::/:/bin/false\n",
        )
        .unwrap();
        fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\nwww-data:x:33:\nweb:x:500:www-data,nobody\nnogroup:x:65534:\n",
        )
        .unwrap();
        dir
    }

    fn req(f: impl FnOnce(&mut UserRequest)) -> UserRequest {
        let mut r = UserRequest::default();
        f(&mut r);
        r
    }

    #[test]
    fn request_beats_image_and_names_resolve() {
        let root = rootfs();
        let r = |q: UserRequest| resolve(root.path(), &q).unwrap();
        let image = |u: &str| UserRequest { image_user: u.into(), ..Default::default() };
        assert_eq!(r(UserRequest::default()), User { uid: 0, gid: 0, additional_gids: vec![0] });
        // www-data is also a member of web (500).
        assert_eq!(r(image("www-data")), User { uid: 33, gid: 33, additional_gids: vec![33, 500] });
        assert_eq!(
            r(image("1234:5678")),
            User { uid: 1234, gid: 5678, additional_gids: vec![5678] }
        );
        assert_eq!(r(image("nobody:web")).gid, 500);
        let u = r(UserRequest {
            run_as_user: Some(65534),
            supplemental_groups: vec![7, 500],
            ..image("www-data")
        });
        assert_eq!(u, User { uid: 65534, gid: 65534, additional_gids: vec![65534, 500, 7] });
        let u = r(UserRequest {
            run_as_username: "www-data".into(),
            run_as_group: Some(1),
            ..Default::default()
        });
        assert_eq!((u.uid, u.gid), (33, 1));
    }

    #[test]
    fn strict_policy_leaves_out_the_images_group_memberships() {
        let root = rootfs();
        let q = |strict| UserRequest {
            run_as_user: Some(33),
            supplemental_groups: vec![1234],
            strict_groups: strict,
            ..Default::default()
        };
        assert_eq!(resolve(root.path(), &q(false)).unwrap().additional_gids, [33, 500, 1234]);
        assert_eq!(resolve(root.path(), &q(true)).unwrap().additional_gids, [33, 1234]);
    }

    #[test]
    fn unknown_names_and_bad_ids_are_errors_naming_the_field() {
        let root = rootfs();
        let err = resolve(root.path(), &req(|q| q.run_as_username = "ghost".into())).unwrap_err();
        assert!(err.contains("run_as_username"), "{err}");
        let err = resolve(root.path(), &req(|q| q.run_as_user = Some(-1))).unwrap_err();
        assert!(err.contains("run_as_user"), "{err}");
        assert!(resolve(root.path(), &req(|q| q.image_user = "ghost".into())).is_err());
    }

    #[test]
    fn a_symlinked_passwd_stays_inside_the_rootfs() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("etc")).unwrap();
        // Followed from the host this reaches the host's /etc/passwd (which has root);
        // resolved inside the rootfs it is absent.
        std::os::unix::fs::symlink("/proc/1/root/etc/passwd", root.path().join("etc/passwd"))
            .unwrap();
        let err = resolve(root.path(), &req(|q| q.run_as_username = "root".into())).unwrap_err();
        assert!(err.contains("no user"), "the host's /etc/passwd was read: {err}");
    }
}
