//! A node for pod and container tests: a loopback registry holding busybox, a berthd
//! mirroring docker.io to it with busybox already pulled, and a private network — plus
//! the CRI calls those tests make over and over.

use crate::leaks::NetEnv;
use crate::oci_image::images;
use crate::registry::{Registry, RegistryOptions};
use crate::{Berthd, Options};
use berth_proto::*;
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

pub struct Node {
    pub env: NetEnv,
    pub registry: Registry,
    pub berthd: Berthd,
    /// The runtime handler pods are run with ("" = native).
    pub handler: String,
}

/// The runc binary Debian installs.
pub fn runc_binary() -> std::path::PathBuf {
    ["/usr/sbin/runc", "/usr/bin/runc"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.is_file())
        .expect("runc is not installed (apt-get install runc)")
}

impl Node {
    /// A node with busybox pulled.
    pub async fn start() -> Node {
        Self::start_with_config("").await
    }

    /// A node whose berthd config has `extra` appended.
    pub async fn start_with_config(extra: &str) -> Node {
        let env = NetEnv::new();
        let network = env.config_toml();
        Self::start_on(env, &network, extra).await
    }

    /// A node on `env` whose berthd has `network` as its `[network]` section (CNI mode
    /// tests) and `extra` appended.
    pub async fn start_on(env: NetEnv, network: &str, extra: &str) -> Node {
        let registry = Registry::start(RegistryOptions::default());
        images::busybox().push(&registry.client(), "library/busybox", "latest").unwrap();
        let config = format!(
            "{network}\n{extra}\n[registry.mirrors.\"docker.io\"]\nendpoints = [\"{}\"]\n",
            registry.url()
        );
        let berthd =
            Berthd::start_with(Options { config: Some(config), ..Default::default() }).await;
        berthd
            .image()
            .pull_image(PullImageRequest {
                image: Some(ImageSpec { image: "busybox".into(), ..Default::default() }),
                ..Default::default()
            })
            .await
            .unwrap();
        Node { env, registry, berthd, handler: String::new() }
    }

    /// A node whose pods run with the `runc` handler (containers run by runc).
    pub async fn start_runc() -> Node {
        let config = format!("[runtimes.runc]\npath = \"{}\"\n", runc_binary().display());
        let mut node = Self::start_with_config(&config).await;
        node.handler = "runc".into();
        node
    }

    /// A pod config named `name` logging to `logs`, under this node's cgroup parent.
    pub fn pod_config(&self, name: &str, logs: &Path) -> PodSandboxConfig {
        self.env.pod_config(name, logs)
    }

    /// Every pod berthd lists.
    pub async fn list_pods(&self) -> Vec<PodSandbox> {
        self.berthd
            .runtime()
            .list_pod_sandbox(ListPodSandboxRequest::default())
            .await
            .unwrap()
            .into_inner()
            .items
    }

    /// Every container berthd lists.
    pub async fn list_containers(&self) -> Vec<Container> {
        self.berthd
            .runtime()
            .list_containers(ListContainersRequest::default())
            .await
            .unwrap()
            .into_inner()
            .containers
    }

    /// Runs a plain pod; returns its id.
    pub async fn run_pod(&self, name: &str, logs: &Path) -> String {
        self.run_pod_with(self.pod_config(name, logs)).await
    }

    pub async fn run_pod_with(&self, config: PodSandboxConfig) -> String {
        self.berthd
            .runtime()
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: self.handler.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .pod_sandbox_id
    }

    /// Creates a container from `config` in the pod.
    pub async fn create(
        &self,
        pod_id: &str,
        config: ContainerConfig,
    ) -> Result<String, tonic::Status> {
        self.berthd
            .runtime()
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod_id.into(),
                config: Some(config),
                sandbox_config: Some(PodSandboxConfig::default()),
            })
            .await
            .map(|r| r.into_inner().container_id)
    }

    /// Restarts berthd set to crash at `point` (a `BERTH_CRASH_AT` crash point), asks it to
    /// create a container from `config` in the pod, checks that it died there, and starts
    /// it again as it normally runs.
    pub async fn create_crashing_at(&mut self, point: &str, pod_id: &str, config: ContainerConfig) {
        self.berthd.kill();
        self.berthd.set_env(vec![("BERTH_CRASH_AT".into(), point.into())]);
        self.berthd.restart().await;
        let err = self.create(pod_id, config).await.unwrap_err();
        assert!(
            matches!(err.code(), tonic::Code::Unavailable | tonic::Code::Unknown),
            "{point}: berthd should have died: {err:?}"
        );
        self.berthd.kill();
        self.berthd.set_env(vec![]);
        self.berthd.restart().await;
    }

    /// Removes container `id` (stopped or never started).
    pub async fn remove_container(&self, id: &str) {
        self.berthd
            .runtime()
            .remove_container(RemoveContainerRequest { container_id: id.into() })
            .await
            .unwrap();
    }

    /// Creates and starts a container from `config`; returns its id.
    pub async fn run(&self, pod_id: &str, config: ContainerConfig) -> String {
        let id = self.create(pod_id, config).await.unwrap();
        self.berthd
            .runtime()
            .start_container(StartContainerRequest { container_id: id.clone() })
            .await
            .unwrap();
        id
    }

    pub async fn status(&self, id: &str) -> ContainerStatus {
        self.berthd
            .runtime()
            .container_status(ContainerStatusRequest { container_id: id.into(), verbose: false })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap()
    }

    /// Waits (up to 20 s) for the container to exit; returns its status.
    pub async fn wait_exited(&self, id: &str) -> ContainerStatus {
        let deadline = Instant::now() + crate::time_scale::scaled(Duration::from_secs(20));
        loop {
            let s = self.status(id).await;
            if s.state == ContainerState::ContainerExited as i32 {
                return s;
            }
            assert!(Instant::now() < deadline, "container {id} still {:?}", s.state);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Runs `cmd` in the container (5 s timeout).
    pub async fn exec(&self, id: &str, cmd: &[&str]) -> Result<ExecSyncResponse, tonic::Status> {
        self.berthd
            .runtime()
            .exec_sync(ExecSyncRequest {
                container_id: id.into(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout: crate::time_scale::scaled(Duration::from_secs(5)).as_secs() as i64,
            })
            .await
            .map(|r| r.into_inner())
    }

    /// Runs `cmd`, expects exit code 0, returns its stdout.
    pub async fn exec_ok(&self, id: &str, cmd: &[&str]) -> String {
        let r = self.exec(id, cmd).await.unwrap();
        assert_eq!(
            r.exit_code,
            0,
            "{cmd:?}: stdout {:?} stderr {:?}",
            String::from_utf8_lossy(&r.stdout),
            String::from_utf8_lossy(&r.stderr)
        );
        String::from_utf8_lossy(&r.stdout).into_owned()
    }

    /// Live shim processes of this berthd ([`crate::leak_checks::shim_processes`]).
    pub fn shim_processes(&self) -> usize {
        crate::leak_checks::shim_processes(&self.berthd)
    }

    /// Stops and removes the pod, then checks its shim is gone and nothing leaked.
    pub async fn remove_pod_and_check(&self, pod_id: &str) {
        let mut rt = self.berthd.runtime();
        rt.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: pod_id.into() }).await.unwrap();
        rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod_id.into() })
            .await
            .unwrap();
        let deadline = Instant::now() + crate::time_scale::scaled(Duration::from_secs(5));
        while self.shim_processes() > 0 {
            assert!(Instant::now() < deadline, "the pod's shim outlived the pod");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.env.assert_no_leaks(&self.berthd).await;
    }
}

/// Every metric berthd describes (ListMetricDescriptors).
pub async fn metric_descriptors(berthd: &crate::Berthd) -> Vec<MetricDescriptor> {
    berthd
        .runtime()
        .list_metric_descriptors(ListMetricDescriptorsRequest {})
        .await
        .unwrap()
        .into_inner()
        .descriptors
}

/// The metrics of `pod` (its own and its containers'), from ListPodSandboxMetrics.
pub async fn pod_metrics(berthd: &crate::Berthd, pod: &str) -> PodSandboxMetrics {
    let pods = berthd
        .runtime()
        .list_pod_sandbox_metrics(ListPodSandboxMetricsRequest {})
        .await
        .unwrap()
        .into_inner()
        .pod_metrics;
    pods.into_iter().find(|p| p.pod_sandbox_id == pod).expect("the pod's metrics")
}

/// The metrics of container `id` of `pod`, from ListPodSandboxMetrics.
pub async fn container_metrics(berthd: &crate::Berthd, pod: &str, id: &str) -> Vec<Metric> {
    let pod = pod_metrics(berthd, pod).await;
    pod.container_metrics.into_iter().find(|c| c.container_id == id).expect("listed").metrics
}

/// A busybox container config running `args`, logging to `<name>.log`, labelled `c=name`.
pub fn busybox(name: &str, args: &[&str]) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata { name: name.into(), attempt: 0 }),
        image: Some(ImageSpec { image: "busybox".into(), ..Default::default() }),
        command: args.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        labels: HashMap::from([("c".into(), name.into())]),
        ..Default::default()
    }
}

/// The same with a Linux security context.
pub fn busybox_with(
    name: &str,
    args: &[&str],
    sc: LinuxContainerSecurityContext,
) -> ContainerConfig {
    ContainerConfig {
        linux: Some(LinuxContainerConfig { security_context: Some(sc), ..Default::default() }),
        ..busybox(name, args)
    }
}
