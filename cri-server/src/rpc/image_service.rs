//! tonic's ImageService trait: dispatch only. Each RPC group lives in its own module.

use super::{unbuilt, Cri};
use berth_proto::{
    ImageFsInfoRequest, ImageFsInfoResponse, ImageService, ImageStatusRequest, ImageStatusResponse,
    ListImagesRequest, ListImagesResponse, PullImageRequest, PullImageResponse, RemoveImageRequest,
    RemoveImageResponse,
};
use tonic::{Request, Response, Status};

#[tonic::async_trait]
impl ImageService for Cri {
    async fn list_images(
        &self,
        _req: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        Err(unbuilt("ListImages"))
    }

    async fn image_status(
        &self,
        _req: Request<ImageStatusRequest>,
    ) -> Result<Response<ImageStatusResponse>, Status> {
        Err(unbuilt("ImageStatus"))
    }

    async fn pull_image(
        &self,
        _req: Request<PullImageRequest>,
    ) -> Result<Response<PullImageResponse>, Status> {
        Err(unbuilt("PullImage"))
    }

    async fn remove_image(
        &self,
        _req: Request<RemoveImageRequest>,
    ) -> Result<Response<RemoveImageResponse>, Status> {
        Err(unbuilt("RemoveImage"))
    }

    async fn image_fs_info(
        &self,
        _req: Request<ImageFsInfoRequest>,
    ) -> Result<Response<ImageFsInfoResponse>, Status> {
        Err(unbuilt("ImageFsInfo"))
    }
}
