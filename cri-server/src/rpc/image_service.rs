//! tonic's ImageService trait: dispatch only. Each RPC group lives in its own module.

use super::list_streams::{self, ListStream};
use super::{image_fs_info, image_pull, image_remove, image_status, Cri};
use berth_proto::{
    ImageFsInfoRequest, ImageFsInfoResponse, ImageService, ImageStatusRequest, ImageStatusResponse,
    ListImagesRequest, ListImagesResponse, PullImageRequest, PullImageResponse, RemoveImageRequest,
    RemoveImageResponse, StreamImagesRequest, StreamImagesResponse,
};
use tonic::{Request, Response, Status};

#[tonic::async_trait]
impl ImageService for Cri {
    type StreamImagesStream = ListStream<StreamImagesResponse>;

    async fn stream_images(
        &self,
        req: Request<StreamImagesRequest>,
    ) -> Result<Response<Self::StreamImagesStream>, Status> {
        list_streams::images(self, req.into_inner()).map(Response::new)
    }

    async fn list_images(
        &self,
        req: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        image_status::list_images(self, req.into_inner()).map(Response::new)
    }

    async fn image_status(
        &self,
        req: Request<ImageStatusRequest>,
    ) -> Result<Response<ImageStatusResponse>, Status> {
        image_status::image_status(self, req.into_inner()).map(Response::new)
    }

    async fn pull_image(
        &self,
        req: Request<PullImageRequest>,
    ) -> Result<Response<PullImageResponse>, Status> {
        image_pull::pull_image(self, req.into_inner()).await.map(Response::new)
    }

    async fn remove_image(
        &self,
        req: Request<RemoveImageRequest>,
    ) -> Result<Response<RemoveImageResponse>, Status> {
        image_remove::remove_image(self, req.into_inner()).await.map(Response::new)
    }

    async fn image_fs_info(
        &self,
        _req: Request<ImageFsInfoRequest>,
    ) -> Result<Response<ImageFsInfoResponse>, Status> {
        image_fs_info::image_fs_info(self).await.map(Response::new)
    }
}
