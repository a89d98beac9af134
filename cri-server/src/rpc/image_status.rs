//! ImageStatus and ListImages.

use super::{errors, Cri};
use berth_proto::{
    Image, ImageSpec, ImageStatusRequest, ImageStatusResponse, Int64Value, ListImagesRequest,
    ListImagesResponse,
};
use berth_runtime::digest::Digest;
use berth_runtime::image::record::ImageRecord;
use std::collections::{HashMap, HashSet};
use tonic::Status;

pub fn image_status(cri: &Cri, req: ImageStatusRequest) -> Result<ImageStatusResponse, Status> {
    let spec = req.image.ok_or_else(|| errors::missing("image"))?;
    if spec.image.trim().is_empty() {
        return Err(errors::missing("image.image"));
    }
    // An image that is not there is an empty answer, not an error: that is how the
    // kubelet learns it has to pull.
    let Some(record) = cri.inner.images.resolve(spec.image.trim()).map_err(errors::image)? else {
        return Ok(ImageStatusResponse { image: None, info: HashMap::new() });
    };
    let info = if req.verbose { verbose_info(&record) } else { HashMap::new() };
    Ok(ImageStatusResponse { image: Some(to_cri(&record, &pinned(cri))), info })
}

pub fn list_images(cri: &Cri, req: ListImagesRequest) -> Result<ListImagesResponse, Status> {
    let wanted = req.filter.and_then(|f| f.image).map(|s| s.image).filter(|s| !s.trim().is_empty());
    let records = match wanted {
        Some(name) => {
            cri.inner.images.resolve(name.trim()).map_err(errors::image)?.into_iter().collect()
        }
        None => cri.inner.images.list().map_err(errors::image)?,
    };
    let pinned = pinned(cri);
    Ok(ListImagesResponse { images: records.iter().map(|r| to_cri(r, &pinned)).collect() })
}

/// The ids of the images the configuration pins that are present, and of those mounted
/// as image volumes: the kubelet's image GC counts only containers' own images as in use,
/// and passes pinned ones by.
fn pinned(cri: &Cri) -> HashSet<Digest> {
    let images = &cri.inner.images;
    let pins = &cri.inner.config.image.pinned;
    let mut pinned: HashSet<Digest> =
        pins.iter().filter_map(|r| images.resolve(r.trim()).ok().flatten()).map(|r| r.id).collect();
    match images.image_volume_images() {
        Ok(mounted) => pinned.extend(mounted),
        Err(e) => tracing::warn!(error = %e, "cannot list the images mounted as image volumes"),
    }
    pinned
}

pub fn to_cri(record: &ImageRecord, pinned: &HashSet<Digest>) -> Image {
    let (uid, username) = user_of(&record.config.user);
    Image {
        id: record.id.to_string(),
        repo_tags: record.repo_tags.clone(),
        repo_digests: record.repo_digests.clone(),
        size: record.size,
        uid: uid.map(|value| Int64Value { value }),
        username,
        spec: Some(ImageSpec { image: record.id.to_string(), ..Default::default() }),
        pinned: pinned.contains(&record.id),
    }
}

/// The image config's `User` as the CRI wants it: a uid when numeric, else a name.
/// A group after `:` is not part of either.
fn user_of(user: &str) -> (Option<i64>, String) {
    let name = user.split(':').next().unwrap_or_default();
    match name.parse::<i64>() {
        Ok(uid) => (Some(uid), String::new()),
        Err(_) => (None, name.to_string()),
    }
}

fn verbose_info(record: &ImageRecord) -> HashMap<String, String> {
    let info = serde_json::json!({
        "id": record.id.to_string(),
        "manifest": record.manifest.to_string(),
        "chainID": record.layers.last().map(|l| l.chain_id.to_string()),
        "layers": record.layers.iter().map(|l| serde_json::json!({
            "digest": l.digest.to_string(),
            "mediaType": l.media_type,
            "size": l.size,
            "diffID": l.diff_id.to_string(),
            "chainID": l.chain_id.to_string(),
        })).collect::<Vec<_>>(),
        "config": record.config,
        "pulledAt": record.pulled_at,
    });
    HashMap::from([("info".to_string(), info.to_string())])
}

#[cfg(test)]
mod tests {
    use super::user_of;

    #[test]
    fn users() {
        assert_eq!(user_of(""), (None, String::new()));
        assert_eq!(user_of("1234"), (Some(1234), String::new()));
        assert_eq!(user_of("1234:5678"), (Some(1234), String::new()));
        assert_eq!(user_of("www-data"), (None, "www-data".to_string()));
        assert_eq!(user_of("www-data:www-data"), (None, "www-data".to_string()));
    }
}
