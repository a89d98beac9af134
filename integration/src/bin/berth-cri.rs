//! berth-cri: a small CRI client for scripts (the VM lane's package test, trying berth by
//! hand where crictl is not installed). One call per command, plain output, exit status
//! 1 with the gRPC error on failure.
//!
//!     berth-cri [--endpoint unix:///run/berth/berth.sock] version
//!     berth-cri pull busybox
//!     berth-cri run-pod NAME [--cgroup-parent P]   prints the pod's id
//!     berth-cri run POD NAME IMAGE -- CMD...       creates and starts; prints the id
//!     berth-cri state ID                           prints `<state> <pid>` (pid 0: none)
//!     berth-cri ps                                 `<id> <pod> <name> <state>` per container
//!     berth-cri pods                               `<id> <name> <state>` per pod
//!     berth-cri exec ID -- CMD...                  prints stdout; exits with CMD's code
//!     berth-cri rm-pod ID                          stops and removes the pod

use anyhow::{Context, Result};
use berth_proto::{
    ContainerConfig, ContainerMetadata, ContainerStatusRequest, CreateContainerRequest,
    ExecSyncRequest, ImageServiceClient, ImageSpec, LinuxPodSandboxConfig, ListContainersRequest,
    ListPodSandboxRequest, PodSandboxConfig, PodSandboxMetadata, PullImageRequest,
    RemovePodSandboxRequest, RunPodSandboxRequest, RuntimeServiceClient, StartContainerRequest,
    StopPodSandboxRequest, VersionRequest,
};
use clap::{Parser, Subcommand};
use std::io::Write;

#[derive(Debug, Parser)]
#[command(name = "berth-cri", about = "A small CRI client for scripts")]
struct Cli {
    /// The CRI endpoint, `unix:///path` or a socket path.
    #[arg(long, default_value = "unix:///run/berth/berth.sock")]
    endpoint: String,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// The runtime's name and version.
    Version,
    /// Pulls an image; prints its reference.
    Pull { image: String },
    /// Runs a pod (namespace `default`, logs under /var/log/pods); prints its id.
    RunPod {
        name: String,
        /// The pod's cgroup parent (as the kubelet gives it); none: berth's default.
        #[arg(long, default_value = "")]
        cgroup_parent: String,
    },
    /// Creates and starts a container in a pod; prints its id.
    Run {
        pod: String,
        name: String,
        image: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// A container's state and its process id on the host (0 when it has none).
    State { id: String },
    /// Every container: id, pod id, name, state.
    Ps,
    /// Every pod: id, name, state.
    Pods,
    /// Runs a command in a container (ExecSync, 60 s timeout); prints its stdout and
    /// stderr and exits with its exit code.
    Exec {
        id: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Stops and removes a pod with its containers.
    RmPod { id: String },
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("berth-cri: {e:#}");
            std::process::exit(1);
        }
    }
}

async fn run(cli: Cli) -> Result<i32> {
    let channel = berth_proto::connect_unix(&cli.endpoint)
        .await
        .with_context(|| format!("connect to {}", cli.endpoint))?;
    let mut rt = RuntimeServiceClient::new(channel.clone());
    match cli.command {
        Cmd::Version => {
            let v = rt.version(VersionRequest::default()).await?.into_inner();
            println!("{} {} (CRI {})", v.runtime_name, v.runtime_version, v.runtime_api_version);
        }
        Cmd::Pull { image } => {
            let r = ImageServiceClient::new(channel)
                .pull_image(PullImageRequest {
                    image: Some(ImageSpec { image, ..Default::default() }),
                    ..Default::default()
                })
                .await?
                .into_inner();
            println!("{}", r.image_ref);
        }
        Cmd::RunPod { name, cgroup_parent } => {
            let uid = format!("berth-cri-{name}");
            let logs = format!("/var/log/pods/default_{name}_{uid}");
            std::fs::create_dir_all(&logs).with_context(|| format!("create {logs}"))?;
            let config = PodSandboxConfig {
                metadata: Some(PodSandboxMetadata {
                    name: name.clone(),
                    uid,
                    namespace: "default".into(),
                    attempt: 0,
                }),
                hostname: name,
                log_directory: logs,
                linux: Some(LinuxPodSandboxConfig { cgroup_parent, ..Default::default() }),
                ..Default::default()
            };
            let r = rt
                .run_pod_sandbox(RunPodSandboxRequest {
                    config: Some(config),
                    runtime_handler: String::new(),
                })
                .await?;
            println!("{}", r.into_inner().pod_sandbox_id);
        }
        Cmd::Run { pod, name, image, command } => {
            let config = ContainerConfig {
                metadata: Some(ContainerMetadata { name: name.clone(), attempt: 0 }),
                image: Some(ImageSpec { image, ..Default::default() }),
                command,
                log_path: format!("{name}.log"),
                ..Default::default()
            };
            let id = rt
                .create_container(CreateContainerRequest {
                    pod_sandbox_id: pod,
                    config: Some(config),
                    sandbox_config: Some(PodSandboxConfig::default()),
                })
                .await?
                .into_inner()
                .container_id;
            rt.start_container(StartContainerRequest { container_id: id.clone() }).await?;
            println!("{id}");
        }
        Cmd::State { id } => {
            let r = rt
                .container_status(ContainerStatusRequest { container_id: id, verbose: true })
                .await?
                .into_inner();
            let state = r.status.context("ContainerStatus answered no status")?.state();
            let info: serde_json::Value = match r.info.get("info") {
                Some(text) => serde_json::from_str(text).context("the verbose info")?,
                None => serde_json::Value::Null,
            };
            println!("{} {}", state_name(state.as_str_name()), info["pid"].as_u64().unwrap_or(0));
        }
        Cmd::Ps => {
            let r = rt.list_containers(ListContainersRequest::default()).await?.into_inner();
            for c in r.containers {
                let state = state_name(c.state().as_str_name());
                let name = c.metadata.map(|m| m.name).unwrap_or_default();
                println!("{} {} {name} {state}", c.id, c.pod_sandbox_id);
            }
        }
        Cmd::Pods => {
            let r = rt.list_pod_sandbox(ListPodSandboxRequest::default()).await?.into_inner();
            for p in r.items {
                let state = state_name(p.state().as_str_name());
                let name = p.metadata.map(|m| m.name).unwrap_or_default();
                println!("{} {name} {state}", p.id);
            }
        }
        Cmd::Exec { id, command } => {
            let r = rt
                .exec_sync(ExecSyncRequest { container_id: id, cmd: command, timeout: 60 })
                .await?
                .into_inner();
            std::io::stdout().write_all(&r.stdout)?;
            std::io::stderr().write_all(&r.stderr)?;
            return Ok(r.exit_code);
        }
        Cmd::RmPod { id } => {
            rt.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: id.clone() }).await?;
            rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id }).await?;
        }
    }
    Ok(0)
}

/// `CONTAINER_RUNNING` → `running`, `SANDBOX_READY` → `ready`.
fn state_name(proto: &str) -> String {
    let short = proto.strip_prefix("CONTAINER_").or_else(|| proto.strip_prefix("SANDBOX_"));
    short.unwrap_or(proto).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    #[test]
    fn state_names_are_short() {
        assert_eq!(super::state_name("CONTAINER_RUNNING"), "running");
        assert_eq!(super::state_name("SANDBOX_NOTREADY"), "notready");
    }
}
