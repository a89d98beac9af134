//! The Stream* list RPCs of CRI 1.36 against their unary twins, on a node whose container
//! list no longer fits in one gRPC message: 500 containers (5 pods of 100) with
//! annotations sized so the list comes to about 19 MB, over the 16 MiB the kubelet accepts
//! per message. `BERTH_STREAM_TEST_CONTAINERS=5000` runs the same with 5,000 containers
//! (50 pods): not the default, as it takes about 18 minutes on a 2-core machine with a
//! debug build (it passed so on 2026-12-02).

use berth_integration::pods::{busybox, Node};
use berth_proto::*;
use futures::{StreamExt, TryStreamExt};
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tonic::Streaming;

const PER_POD: usize = 100;
/// What the kubelet's CRI client accepts per message.
const KUBELET_MAX_MESSAGE: usize = 16 << 20;
/// gRPC's default per message, which every streamed message must stay under.
const DEFAULT_MAX_MESSAGE: usize = 4 << 20;

/// Every message of a list stream; asserts each holds at least one item and is within
/// gRPC's default message size.
async fn drain<R: prost::Message>(mut s: Streaming<R>, items: fn(&R) -> usize) -> Vec<R> {
    let mut out = Vec::new();
    while let Some(msg) = s.message().await.unwrap() {
        assert!(items(&msg) > 0, "a streamed list message must hold at least one item");
        assert!(msg.encoded_len() < DEFAULT_MAX_MESSAGE, "{} bytes", msg.encoded_len());
        out.push(msg);
    }
    out
}

#[tokio::test]
async fn container_lists_stream_where_the_unary_list_is_too_big() {
    let total: usize = std::env::var("BERTH_STREAM_TEST_CONTAINERS")
        .map_or(500, |v| v.parse().expect("BERTH_STREAM_TEST_CONTAINERS: a number"));
    let pod_count = total.div_ceil(PER_POD);
    let node = Node::start().await;
    let logs = tempfile::tempdir().unwrap();
    let mut pods = Vec::new();
    for p in 0..pod_count {
        pods.push(node.run_pod(&format!("many{p}"), logs.path()).await);
    }
    let annotation = "a".repeat((19 << 20) / (pod_count * PER_POD));
    let creates = pods.iter().flat_map(|pod| (0..PER_POD).map(move |c| (pod.clone(), c)));
    let created: Vec<String> = futures::stream::iter(creates)
        .map(|(pod, c)| {
            let mut cfg = busybox(&format!("c{c}"), &["true"]);
            cfg.annotations = HashMap::from([("padding".to_string(), annotation.clone())]);
            let node = &node;
            async move { node.create(&pod, cfg).await }
        })
        .buffer_unordered(8)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(created.len(), pod_count * PER_POD);
    let created: HashSet<String> = created.into_iter().collect();

    // The unary list is over what the kubelet accepts in one message.
    let mut rt = node.berthd.runtime().max_decoding_message_size(KUBELET_MAX_MESSAGE);
    let err = rt.list_containers(ListContainersRequest::default()).await.unwrap_err();
    assert!(
        matches!(err.code(), tonic::Code::OutOfRange | tonic::Code::ResourceExhausted),
        "the unary list should not fit in 16 MiB: {err:?}"
    );

    // The stream brings each container exactly once, in messages of gRPC's default size.
    let mut rt = node.berthd.runtime();
    let s = rt.stream_containers(StreamContainersRequest::default()).await.unwrap().into_inner();
    let msgs = drain(s, |m: &StreamContainersResponse| m.containers.len()).await;
    assert!(msgs.len() >= 5, "{} messages for ~19 MB", msgs.len());
    let ids: Vec<String> = msgs.iter().flat_map(|m| &m.containers).map(|c| c.id.clone()).collect();
    assert_eq!(ids.len(), created.len(), "a container was sent twice or left out");
    assert_eq!(ids.into_iter().collect::<HashSet<_>>(), created);

    // The same filters as the unary twins.
    let filter =
        ContainerFilter { pod_sandbox_id: pods[pods.len() / 2].clone(), ..Default::default() };
    let s = rt.stream_containers(StreamContainersRequest { filter: Some(filter) }).await;
    let msgs = drain(s.unwrap().into_inner(), |m: &StreamContainersResponse| m.containers.len());
    let in_pod: Vec<Container> = msgs.await.into_iter().flat_map(|m| m.containers).collect();
    assert_eq!(in_pod.len(), PER_POD);
    assert!(in_pod.iter().all(|c| c.pod_sandbox_id == pods[pods.len() / 2]));

    let s = rt.stream_pod_sandboxes(StreamPodSandboxesRequest::default()).await.unwrap();
    let msgs = drain(s.into_inner(), |m: &StreamPodSandboxesResponse| m.pod_sandboxes.len());
    let listed: HashSet<String> =
        msgs.await.into_iter().flat_map(|m| m.pod_sandboxes).map(|p| p.id).collect();
    assert_eq!(listed, pods.iter().cloned().collect());

    let filter = ContainerStatsFilter { pod_sandbox_id: pods[0].clone(), ..Default::default() };
    let s = rt.stream_container_stats(StreamContainerStatsRequest { filter: Some(filter) }).await;
    let msgs =
        drain(s.unwrap().into_inner(), |m: &StreamContainerStatsResponse| m.container_stats.len());
    assert_eq!(msgs.await.iter().map(|m| m.container_stats.len()).sum::<usize>(), PER_POD);

    let filter = PodSandboxStatsFilter { id: pods[0].clone(), ..Default::default() };
    let s = rt.stream_pod_sandbox_stats(StreamPodSandboxStatsRequest { filter: Some(filter) });
    let msgs = drain(s.await.unwrap().into_inner(), |m: &StreamPodSandboxStatsResponse| {
        m.pod_sandbox_stats.len()
    });
    let stats: Vec<PodSandboxStats> =
        msgs.await.into_iter().flat_map(|m| m.pod_sandbox_stats).collect();
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0].linux.as_ref().map(|l| l.containers.len()), Some(PER_POD));

    let s = rt.stream_pod_sandbox_metrics(StreamPodSandboxMetricsRequest {}).await.unwrap();
    let msgs =
        drain(s.into_inner(), |m: &StreamPodSandboxMetricsResponse| m.pod_sandbox_metrics.len());
    let metrics: HashSet<String> = msgs
        .await
        .into_iter()
        .flat_map(|m| m.pod_sandbox_metrics)
        .map(|p| p.pod_sandbox_id)
        .collect();
    assert_eq!(metrics, pods.iter().cloned().collect());

    let s = node.berthd.image().stream_images(StreamImagesRequest::default()).await.unwrap();
    let msgs = drain(s.into_inner(), |m: &StreamImagesResponse| m.images.len()).await;
    let images: Vec<Image> = msgs.into_iter().flat_map(|m| m.images).collect();
    assert_eq!(images.len(), 1, "busybox");

    for pod in &pods {
        rt.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: pod.clone() }).await.unwrap();
        rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod.clone() })
            .await
            .unwrap();
    }
    let deadline = std::time::Instant::now() + berth_integration::scaled(Duration::from_secs(30));
    while node.shim_processes() > 0 {
        assert!(std::time::Instant::now() < deadline, "pod shims outlived their pods");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    node.env.assert_no_leaks(&node.berthd).await;
}
