//! The Stream* list RPCs: the same items, with the same filters, as their unary twins,
//! sent in several messages so a node with many pods, containers or images never needs
//! one message over gRPC's size limit.

use super::{container_stats, container_status, image_status, sandbox_list, sandbox_metrics};
use super::{sandbox_stats, Cri};
use berth_proto::{
    ListContainerStatsRequest, ListContainersRequest, ListImagesRequest, ListPodSandboxRequest,
    ListPodSandboxStatsRequest, StreamContainerStatsRequest, StreamContainerStatsResponse,
    StreamContainersRequest, StreamContainersResponse, StreamImagesRequest, StreamImagesResponse,
    StreamPodSandboxMetricsResponse, StreamPodSandboxStatsRequest, StreamPodSandboxStatsResponse,
    StreamPodSandboxesRequest, StreamPodSandboxesResponse,
};
use prost::encoding::{encoded_len_varint, key_len};
use prost::Message;
use std::pin::Pin;
use tonic::Status;

/// What one message of a list stream may hold. gRPC clients receive 4 MiB per message by
/// default (the kubelet raises it to 16 MiB); staying under 4 MiB suits every client.
pub const CHUNK_BYTES: usize = 4 * 1024 * 1024 - 4096;

pub type ListStream<R> = Pin<Box<dyn futures::Stream<Item = Result<R, Status>> + Send>>;

/// Splits `items` into messages of at most `limit` encoded bytes (an item larger than
/// that goes alone), in order, each item exactly once. No items: no messages.
pub fn chunked<I: Message, R>(items: Vec<I>, limit: usize, wrap: fn(Vec<I>) -> R) -> Vec<R> {
    let mut out = Vec::new();
    let mut chunk = Vec::new();
    let mut size = 0;
    for item in items {
        // Each item is a length-delimited field 1 of the response message.
        let len = item.encoded_len();
        let framed = key_len(1) + encoded_len_varint(len as u64) + len;
        if !chunk.is_empty() && size + framed > limit {
            out.push(wrap(std::mem::take(&mut chunk)));
            size = 0;
        }
        size += framed;
        chunk.push(item);
    }
    if !chunk.is_empty() {
        out.push(wrap(chunk));
    }
    out
}

fn stream<R: Send + 'static>(messages: Vec<R>) -> ListStream<R> {
    Box::pin(futures::stream::iter(messages.into_iter().map(Ok)))
}

pub async fn pod_sandboxes(
    cri: &Cri,
    req: StreamPodSandboxesRequest,
) -> Result<ListStream<StreamPodSandboxesResponse>, Status> {
    let all = sandbox_list::list_pod_sandbox(cri, ListPodSandboxRequest { filter: req.filter })
        .await?
        .items;
    Ok(stream(chunked(all, CHUNK_BYTES, |pod_sandboxes| StreamPodSandboxesResponse {
        pod_sandboxes,
    })))
}

pub async fn containers(
    cri: &Cri,
    req: StreamContainersRequest,
) -> Result<ListStream<StreamContainersResponse>, Status> {
    let all = container_status::list_containers(cri, ListContainersRequest { filter: req.filter })
        .await?
        .containers;
    Ok(stream(chunked(all, CHUNK_BYTES, |containers| StreamContainersResponse { containers })))
}

pub async fn container_stats(
    cri: &Cri,
    req: StreamContainerStatsRequest,
) -> Result<ListStream<StreamContainerStatsResponse>, Status> {
    let all = container_stats::list_container_stats(
        cri,
        ListContainerStatsRequest { filter: req.filter },
    )
    .await?
    .stats;
    Ok(stream(chunked(all, CHUNK_BYTES, |container_stats| StreamContainerStatsResponse {
        container_stats,
    })))
}

pub async fn pod_sandbox_stats(
    cri: &Cri,
    req: StreamPodSandboxStatsRequest,
) -> Result<ListStream<StreamPodSandboxStatsResponse>, Status> {
    let all = sandbox_stats::list_pod_sandbox_stats(
        cri,
        ListPodSandboxStatsRequest { filter: req.filter },
    )
    .await?
    .stats;
    Ok(stream(chunked(all, CHUNK_BYTES, |pod_sandbox_stats| StreamPodSandboxStatsResponse {
        pod_sandbox_stats,
    })))
}

pub async fn pod_sandbox_metrics(
    cri: &Cri,
) -> Result<ListStream<StreamPodSandboxMetricsResponse>, Status> {
    let all = sandbox_metrics::list_pod_sandbox_metrics(cri).await?.pod_metrics;
    Ok(stream(chunked(all, CHUNK_BYTES, |pod_sandbox_metrics| StreamPodSandboxMetricsResponse {
        pod_sandbox_metrics,
    })))
}

pub fn images(
    cri: &Cri,
    req: StreamImagesRequest,
) -> Result<ListStream<StreamImagesResponse>, Status> {
    let all = image_status::list_images(cri, ListImagesRequest { filter: req.filter })?.images;
    Ok(stream(chunked(all, CHUNK_BYTES, |images| StreamImagesResponse { images })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::{Container, ListContainersResponse};

    fn container(i: usize, pad: usize) -> Container {
        Container { id: format!("{i:064}"), image_ref: "x".repeat(pad), ..Default::default() }
    }

    #[test]
    fn every_item_once_in_order_and_each_message_within_the_limit() {
        let items: Vec<Container> = (0..1000).map(|i| container(i, i % 700)).collect();
        let limit = 20_000;
        let msgs =
            chunked(items.clone(), limit, |containers| ListContainersResponse { containers });
        assert!(msgs.len() > 10, "{} messages", msgs.len());
        for m in &msgs {
            assert!(!m.containers.is_empty());
            assert!(m.encoded_len() <= limit, "{} bytes", m.encoded_len());
        }
        let back: Vec<Container> = msgs.into_iter().flat_map(|m| m.containers).collect();
        assert_eq!(back, items);
    }

    #[test]
    fn an_item_over_the_limit_goes_alone_and_nothing_sends_nothing() {
        let msgs =
            chunked(vec![container(1, 10), container(2, 5000), container(3, 10)], 1000, |c| {
                ListContainersResponse { containers: c }
            });
        let sizes: Vec<usize> = msgs.iter().map(|m| m.containers.len()).collect();
        assert_eq!(sizes, [1, 1, 1]);
        assert!(chunked(Vec::<Container>::new(), 1000, |c| c).is_empty());
    }
}
