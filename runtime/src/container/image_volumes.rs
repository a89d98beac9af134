//! Image volumes (CRI `Mount.image`, KEP-4639): an image the kubelet pulled, mounted
//! read-only into a container, whole or one sub-path of it.
//!
//! Each is a read-only view of the image's layers mounted under the container's bundle
//! (`<bundle>/image-volumes/<index>`) and handed to the spec as a read-only bind, so the
//! native executor and OCI runtimes alike just bind a host path. The views live and die
//! with the container: the container's undo removes them like its rootfs.

use super::container_spec::{ContainerSpec, MountSpec, Propagation};
use crate::error::internal;
use crate::error::RuntimeError as ContainerError;
use crate::image::{ImageError, Images};
use crate::snapshot::image_view::{self, SubPathError};
use std::path::{Path, PathBuf};

type Result<T> = std::result::Result<T, ContainerError>;

/// Refuses image mounts that cannot be honoured, naming the field, before anything of
/// the container exists.
pub fn validate(images: &Images, config: &ContainerSpec) -> Result<()> {
    for (i, m) in config.mounts.iter().enumerate() {
        let field = |f: &str| format!("config.mounts[{i}].{f}");
        let Some(image) = &m.image else {
            if !m.image_sub_path.is_empty() {
                return Err(ContainerError::InvalidArgument(format!(
                    "{}: only an image mount (with image set) takes a sub-path",
                    field("image_sub_path")
                )));
            }
            continue;
        };
        if !m.host_path.is_empty() {
            return Err(ContainerError::InvalidArgument(format!(
                "{}: must be empty for an image mount (image is set)",
                field("host_path")
            )));
        }
        let image = image.trim();
        if image.is_empty() {
            return Err(ContainerError::InvalidArgument(format!(
                "{}: required for an image mount",
                field("image.image")
            )));
        }
        // The kubelet pulls image volumes itself beforehand; a runtime does not pull.
        match images.resolve(image) {
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(ContainerError::NotFound(format!(
                    "{}: image {image:?} is not present; pull it first",
                    field("image")
                )))
            }
            Err(ImageError::InvalidReference(e)) => {
                return Err(ContainerError::InvalidArgument(format!("{}: {e}", field("image"))))
            }
            Err(e) => return Err(internal(e)),
        }
        image_view::check_sub_path(&m.image_sub_path).map_err(|e| {
            ContainerError::InvalidArgument(format!(
                "{}: {:?} {e}",
                field("image_sub_path"),
                m.image_sub_path
            ))
        })?;
        // Nothing is ever mounted under an image view for the container to send out.
        if m.propagation == Propagation::Bidirectional {
            return Err(ContainerError::InvalidArgument(format!(
                "{}: an image mount is read-only and cannot be bidirectional",
                field("propagation")
            )));
        }
    }
    Ok(())
}

/// Where image mount `index` of a container is mounted.
fn view_dir(bundle: &Path, index: usize) -> PathBuf {
    views_root(bundle).join(index.to_string())
}

fn views_root(bundle: &Path) -> PathBuf {
    bundle.join("image-volumes")
}

/// What a mounted image volume is.
#[derive(Debug, Clone)]
pub struct MountedView {
    pub index: usize,
    /// The host path bound into the container: the view, or its sub-path.
    pub source: PathBuf,
    /// The image's id and its digest reference.
    pub image: crate::image::record::ImageRecord,
}

/// Mounts the views of `config`'s image mounts for container `id` and returns the
/// config with each image mount turned into a read-only bind of its view, plus what was
/// mounted. On error, what was mounted stays for the caller's undo ([`unmount_all`] and
/// [`Images::release_image_views`]).
pub async fn mount_all(
    images: &Images,
    id: &str,
    bundle: &Path,
    config: &ContainerSpec,
) -> Result<(ContainerSpec, Vec<MountedView>)> {
    let mut config = config.clone();
    let mut mounted = Vec::new();
    for (i, m) in config.mounts.iter_mut().enumerate() {
        let Some(image) = m.image.take() else { continue };
        let field = |f: &str| format!("config.mounts[{i}].{f}");
        let plan = images.prepare_image_view(id, i, image.trim()).await.map_err(|e| match e {
            // Removed since the request was validated.
            ImageError::NotFound(m) => ContainerError::NotFound(format!("{}: {m}", field("image"))),
            e => internal(format!("{}: {e}", field("image"))),
        })?;
        let dir = view_dir(bundle, i);
        let lowers = plan.lowers.clone();
        let mount_at = dir.clone();
        crate::traced::spawn_blocking(move || image_view::mount_view(&lowers, &mount_at))
            .await
            .map_err(internal)?
            .map_err(|e| internal(format!("{}: {e}", field("image"))))?;
        let source =
            image_view::resolve_sub_path(&dir, &m.image_sub_path).map_err(|e| match e {
                SubPathError::Io(e) => internal(format!("{}: {e}", field("image_sub_path"))),
                e => ContainerError::InvalidArgument(format!(
                    "{}: {:?} {e} {}",
                    field("image_sub_path"),
                    m.image_sub_path,
                    plan.image.id
                )),
            })?;
        // Image volumes are read-only whatever the request says.
        *m = MountSpec {
            host_path: source.display().to_string(),
            readonly: true,
            image_sub_path: String::new(),
            ..m.clone()
        };
        mounted.push(MountedView { index: i, source, image: plan.image });
    }
    Ok((config, mounted))
}

/// Unmounts and removes every image view of a container's bundle; absent is fine.
pub fn unmount_all(bundle: &Path) -> Result<()> {
    let root = views_root(bundle);
    let entries = match std::fs::read_dir(&root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(internal(e)),
    };
    for entry in entries {
        let dir = entry.map_err(internal)?.path();
        crate::mount_table::unmount(&dir).map_err(internal)?;
        // remove_dir, never remove_dir_all: through a view still mounted it would reach
        // the image's shared layers.
        match std::fs::remove_dir(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(internal(format!("remove {}: {e}", dir.display())))
            }
            _ => {}
        }
    }
    match std::fs::remove_dir(&root) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(internal(e)),
        _ => Ok(()),
    }
}
