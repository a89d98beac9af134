//! tonic's RuntimeService trait: dispatch only. Each RPC group lives in its own module.

use super::{
    container_checkpoint, container_create, container_events, container_exec_sync,
    container_lifecycle, container_stats, container_status, container_update, list_streams,
    runtime_config, sandbox_list, sandbox_metrics, sandbox_remove, sandbox_run, sandbox_stats,
    sandbox_status, sandbox_stop, sandbox_update, status, streaming_urls, version, Cri,
};
use berth_proto::{
    AttachRequest, AttachResponse, CheckpointContainerRequest, CheckpointContainerResponse,
    ContainerStatsRequest, ContainerStatsResponse, ContainerStatusRequest, ContainerStatusResponse,
    CreateContainerRequest, CreateContainerResponse, ExecRequest, ExecResponse, ExecSyncRequest,
    ExecSyncResponse, GetEventsRequest, ListContainerStatsRequest, ListContainerStatsResponse,
    ListContainersRequest, ListContainersResponse, ListMetricDescriptorsRequest,
    ListMetricDescriptorsResponse, ListPodSandboxMetricsRequest, ListPodSandboxMetricsResponse,
    ListPodSandboxRequest, ListPodSandboxResponse, ListPodSandboxStatsRequest,
    ListPodSandboxStatsResponse, PodSandboxStatsRequest, PodSandboxStatsResponse,
    PodSandboxStatusRequest, PodSandboxStatusResponse, PortForwardRequest, PortForwardResponse,
    RemoveContainerRequest, RemoveContainerResponse, RemovePodSandboxRequest,
    RemovePodSandboxResponse, ReopenContainerLogRequest, ReopenContainerLogResponse,
    RunPodSandboxRequest, RunPodSandboxResponse, RuntimeConfigRequest, RuntimeConfigResponse,
    RuntimeService, StartContainerRequest, StartContainerResponse, StatusRequest, StatusResponse,
    StopContainerRequest, StopContainerResponse, StopPodSandboxRequest, StopPodSandboxResponse,
    StreamContainerStatsRequest, StreamContainerStatsResponse, StreamContainersRequest,
    StreamContainersResponse, StreamPodSandboxMetricsRequest, StreamPodSandboxMetricsResponse,
    StreamPodSandboxStatsRequest, StreamPodSandboxStatsResponse, StreamPodSandboxesRequest,
    StreamPodSandboxesResponse, UpdateContainerResourcesRequest, UpdateContainerResourcesResponse,
    UpdatePodSandboxResourcesRequest, UpdatePodSandboxResourcesResponse,
    UpdateRuntimeConfigRequest, UpdateRuntimeConfigResponse, VersionRequest, VersionResponse,
};
use list_streams::ListStream;
use std::pin::Pin;
use tonic::{Request, Response, Status};

type EventStream = Pin<
    Box<dyn futures::Stream<Item = Result<berth_proto::ContainerEventResponse, Status>> + Send>,
>;

#[tonic::async_trait]
impl RuntimeService for Cri {
    type GetContainerEventsStream = EventStream;
    type StreamPodSandboxesStream = ListStream<StreamPodSandboxesResponse>;
    type StreamContainersStream = ListStream<StreamContainersResponse>;
    type StreamContainerStatsStream = ListStream<StreamContainerStatsResponse>;
    type StreamPodSandboxStatsStream = ListStream<StreamPodSandboxStatsResponse>;
    type StreamPodSandboxMetricsStream = ListStream<StreamPodSandboxMetricsResponse>;

    async fn stream_pod_sandboxes(
        &self,
        req: Request<StreamPodSandboxesRequest>,
    ) -> Result<Response<Self::StreamPodSandboxesStream>, Status> {
        list_streams::pod_sandboxes(self, req.into_inner()).await.map(Response::new)
    }

    async fn stream_containers(
        &self,
        req: Request<StreamContainersRequest>,
    ) -> Result<Response<Self::StreamContainersStream>, Status> {
        list_streams::containers(self, req.into_inner()).await.map(Response::new)
    }

    async fn stream_container_stats(
        &self,
        req: Request<StreamContainerStatsRequest>,
    ) -> Result<Response<Self::StreamContainerStatsStream>, Status> {
        list_streams::container_stats(self, req.into_inner()).await.map(Response::new)
    }

    async fn stream_pod_sandbox_stats(
        &self,
        req: Request<StreamPodSandboxStatsRequest>,
    ) -> Result<Response<Self::StreamPodSandboxStatsStream>, Status> {
        list_streams::pod_sandbox_stats(self, req.into_inner()).await.map(Response::new)
    }

    async fn stream_pod_sandbox_metrics(
        &self,
        _req: Request<StreamPodSandboxMetricsRequest>,
    ) -> Result<Response<Self::StreamPodSandboxMetricsStream>, Status> {
        list_streams::pod_sandbox_metrics(self).await.map(Response::new)
    }

    async fn update_pod_sandbox_resources(
        &self,
        req: Request<UpdatePodSandboxResourcesRequest>,
    ) -> Result<Response<UpdatePodSandboxResourcesResponse>, Status> {
        sandbox_update::update_pod_sandbox_resources(self, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn version(
        &self,
        req: Request<VersionRequest>,
    ) -> Result<Response<VersionResponse>, Status> {
        Ok(Response::new(version::version(req.into_inner())))
    }

    async fn run_pod_sandbox(
        &self,
        req: Request<RunPodSandboxRequest>,
    ) -> Result<Response<RunPodSandboxResponse>, Status> {
        sandbox_run::run_pod_sandbox(self, req.into_inner()).await.map(Response::new)
    }

    async fn stop_pod_sandbox(
        &self,
        req: Request<StopPodSandboxRequest>,
    ) -> Result<Response<StopPodSandboxResponse>, Status> {
        sandbox_stop::stop_pod_sandbox(self, req.into_inner()).await.map(Response::new)
    }

    async fn remove_pod_sandbox(
        &self,
        req: Request<RemovePodSandboxRequest>,
    ) -> Result<Response<RemovePodSandboxResponse>, Status> {
        sandbox_remove::remove_pod_sandbox(self, req.into_inner()).await.map(Response::new)
    }

    async fn pod_sandbox_status(
        &self,
        req: Request<PodSandboxStatusRequest>,
    ) -> Result<Response<PodSandboxStatusResponse>, Status> {
        sandbox_status::pod_sandbox_status(self, req.into_inner()).await.map(Response::new)
    }

    async fn list_pod_sandbox(
        &self,
        req: Request<ListPodSandboxRequest>,
    ) -> Result<Response<ListPodSandboxResponse>, Status> {
        sandbox_list::list_pod_sandbox(self, req.into_inner()).await.map(Response::new)
    }

    async fn create_container(
        &self,
        req: Request<CreateContainerRequest>,
    ) -> Result<Response<CreateContainerResponse>, Status> {
        container_create::create_container(self, req.into_inner()).await.map(Response::new)
    }

    async fn start_container(
        &self,
        req: Request<StartContainerRequest>,
    ) -> Result<Response<StartContainerResponse>, Status> {
        container_lifecycle::start_container(self, req.into_inner()).await.map(Response::new)
    }

    async fn stop_container(
        &self,
        req: Request<StopContainerRequest>,
    ) -> Result<Response<StopContainerResponse>, Status> {
        container_lifecycle::stop_container(self, req.into_inner()).await.map(Response::new)
    }

    async fn remove_container(
        &self,
        req: Request<RemoveContainerRequest>,
    ) -> Result<Response<RemoveContainerResponse>, Status> {
        container_lifecycle::remove_container(self, req.into_inner()).await.map(Response::new)
    }

    async fn list_containers(
        &self,
        req: Request<ListContainersRequest>,
    ) -> Result<Response<ListContainersResponse>, Status> {
        container_status::list_containers(self, req.into_inner()).await.map(Response::new)
    }

    async fn container_status(
        &self,
        req: Request<ContainerStatusRequest>,
    ) -> Result<Response<ContainerStatusResponse>, Status> {
        container_status::container_status(self, req.into_inner()).await.map(Response::new)
    }

    async fn update_container_resources(
        &self,
        req: Request<UpdateContainerResourcesRequest>,
    ) -> Result<Response<UpdateContainerResourcesResponse>, Status> {
        container_update::update_container_resources(self, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn reopen_container_log(
        &self,
        req: Request<ReopenContainerLogRequest>,
    ) -> Result<Response<ReopenContainerLogResponse>, Status> {
        container_lifecycle::reopen_container_log(self, req.into_inner()).await.map(Response::new)
    }

    async fn exec_sync(
        &self,
        req: Request<ExecSyncRequest>,
    ) -> Result<Response<ExecSyncResponse>, Status> {
        container_exec_sync::exec_sync(self, req.into_inner()).await.map(Response::new)
    }

    async fn exec(&self, req: Request<ExecRequest>) -> Result<Response<ExecResponse>, Status> {
        streaming_urls::exec(self, req.into_inner()).await.map(Response::new)
    }

    async fn attach(
        &self,
        req: Request<AttachRequest>,
    ) -> Result<Response<AttachResponse>, Status> {
        streaming_urls::attach(self, req.into_inner()).await.map(Response::new)
    }

    async fn port_forward(
        &self,
        req: Request<PortForwardRequest>,
    ) -> Result<Response<PortForwardResponse>, Status> {
        streaming_urls::port_forward(self, req.into_inner()).await.map(Response::new)
    }

    async fn container_stats(
        &self,
        req: Request<ContainerStatsRequest>,
    ) -> Result<Response<ContainerStatsResponse>, Status> {
        container_stats::container_stats(self, req.into_inner()).await.map(Response::new)
    }

    async fn list_container_stats(
        &self,
        req: Request<ListContainerStatsRequest>,
    ) -> Result<Response<ListContainerStatsResponse>, Status> {
        container_stats::list_container_stats(self, req.into_inner()).await.map(Response::new)
    }

    async fn pod_sandbox_stats(
        &self,
        req: Request<PodSandboxStatsRequest>,
    ) -> Result<Response<PodSandboxStatsResponse>, Status> {
        sandbox_stats::pod_sandbox_stats(self, req.into_inner()).await.map(Response::new)
    }

    async fn list_pod_sandbox_stats(
        &self,
        req: Request<ListPodSandboxStatsRequest>,
    ) -> Result<Response<ListPodSandboxStatsResponse>, Status> {
        sandbox_stats::list_pod_sandbox_stats(self, req.into_inner()).await.map(Response::new)
    }

    async fn update_runtime_config(
        &self,
        req: Request<UpdateRuntimeConfigRequest>,
    ) -> Result<Response<UpdateRuntimeConfigResponse>, Status> {
        runtime_config::update_runtime_config(self, req.into_inner()).map(Response::new)
    }

    async fn status(
        &self,
        req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        Ok(Response::new(status::status(self, req.into_inner()).await))
    }

    async fn checkpoint_container(
        &self,
        req: Request<CheckpointContainerRequest>,
    ) -> Result<Response<CheckpointContainerResponse>, Status> {
        Ok(Response::new(container_checkpoint::checkpoint_container(self, req.into_inner()).await?))
    }

    async fn get_container_events(
        &self,
        _req: Request<GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        Ok(Response::new(Box::pin(container_events::get_container_events(self))))
    }

    async fn list_metric_descriptors(
        &self,
        _req: Request<ListMetricDescriptorsRequest>,
    ) -> Result<Response<ListMetricDescriptorsResponse>, Status> {
        Ok(Response::new(sandbox_metrics::list_metric_descriptors()))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _req: Request<ListPodSandboxMetricsRequest>,
    ) -> Result<Response<ListPodSandboxMetricsResponse>, Status> {
        sandbox_metrics::list_pod_sandbox_metrics(self).await.map(Response::new)
    }

    async fn runtime_config(
        &self,
        _req: Request<RuntimeConfigRequest>,
    ) -> Result<Response<RuntimeConfigResponse>, Status> {
        Ok(Response::new(runtime_config::runtime_config(self)))
    }
}
