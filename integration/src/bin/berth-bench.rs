//! berth-bench: drives any CRI endpoint (berth, containerd, CRI-O) through the same
//! workload and reports latency percentiles, so every figure can be put beside another
//! runtime's from the same run.
//!
//!     berth-bench --endpoint unix:///run/berth/berth.sock pull --image busybox --runs 5

use berth_integration::bench::stats::{table, Summary};
use berth_proto::{
    ContainerConfig, ContainerMetadata, CreateContainerRequest, ExecSyncRequest,
    ImageServiceClient, ImageSpec, PodSandboxConfig, PodSandboxMetadata, PullImageRequest,
    RemoveContainerRequest, RemoveImageRequest, RemovePodSandboxRequest, RunPodSandboxRequest,
    RuntimeServiceClient, StartContainerRequest, StopContainerRequest, StopPodSandboxRequest,
};
use clap::{Parser, Subcommand};
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
#[command(name = "berth-bench", about = "Benchmark a CRI runtime")]
struct Cli {
    /// The CRI endpoint, `unix:///path` or a socket path.
    #[arg(long, default_value = "unix:///run/berth/berth.sock")]
    endpoint: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    workload: Workload,
}

#[derive(Debug, Subcommand)]
enum Workload {
    /// Time to pull and unpack an image that is not present (removed before each run).
    Pull {
        #[arg(long)]
        image: String,
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// A pod with one container (`sleep`) started and torn down, per step and end to end.
    /// The image must be present.
    Lifecycle {
        #[arg(long, default_value = "busybox")]
        image: String,
        #[arg(long, default_value_t = 20)]
        runs: usize,
    },
    /// ExecSync latency of `true` in a running container.
    Exec {
        #[arg(long, default_value = "busybox")]
        image: String,
        #[arg(long, default_value_t = 100)]
        runs: usize,
    },
    /// RunPodSandbox, StopPodSandbox and RemovePodSandbox, `runs` times in rounds of
    /// `concurrency` pods started at once.
    Sandbox {
        #[arg(long, default_value_t = 50)]
        runs: usize,
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let channel = berth_proto::connect_unix(&cli.endpoint).await?;
    let rows = match cli.workload {
        Workload::Pull { image, runs } => {
            vec![pull(ImageServiceClient::new(channel), &image, runs).await?]
        }
        Workload::Lifecycle { image, runs } => {
            lifecycle(RuntimeServiceClient::new(channel), &image, runs).await?
        }
        Workload::Exec { image, runs } => {
            vec![exec(RuntimeServiceClient::new(channel), &image, runs).await?]
        }
        Workload::Sandbox { runs, concurrency } => {
            sandbox(RuntimeServiceClient::new(channel), runs, concurrency.max(1)).await?
        }
    };
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", table(&rows));
    }
    Ok(())
}

async fn pull(
    mut images: ImageServiceClient<tonic::transport::Channel>,
    image: &str,
    runs: usize,
) -> anyhow::Result<Summary> {
    let spec = || Some(ImageSpec { image: image.to_string(), ..Default::default() });
    let mut samples: Vec<Duration> = Vec::with_capacity(runs);
    for _ in 0..runs {
        images.remove_image(RemoveImageRequest { image: spec() }).await?;
        let started = Instant::now();
        images.pull_image(PullImageRequest { image: spec(), ..Default::default() }).await?;
        samples.push(started.elapsed());
    }
    images.remove_image(RemoveImageRequest { image: spec() }).await?;
    Ok(Summary::of("PullImage", &samples))
}

async fn sandbox(
    runtime: RuntimeServiceClient<tonic::transport::Channel>,
    runs: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<Summary>> {
    let (mut run, mut stop, mut remove) = (Vec::new(), Vec::new(), Vec::new());
    let prefix = format!("bench-{}", std::process::id());
    let mut done = 0;
    while done < runs {
        let round = (runs - done).min(concurrency);
        let pods = (done..done + round).map(|i| {
            let mut rt = runtime.clone();
            let name = format!("{prefix}-{i}");
            async move {
                let config = PodSandboxConfig {
                    metadata: Some(PodSandboxMetadata {
                        name: name.clone(),
                        uid: name.clone(),
                        namespace: "berth-bench".into(),
                        attempt: 0,
                    }),
                    hostname: name,
                    ..Default::default()
                };
                let t = Instant::now();
                let id = rt
                    .run_pod_sandbox(RunPodSandboxRequest {
                        config: Some(config),
                        runtime_handler: String::new(),
                    })
                    .await?
                    .into_inner()
                    .pod_sandbox_id;
                let ran = t.elapsed();
                let t = Instant::now();
                rt.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: id.clone() }).await?;
                let stopped = t.elapsed();
                let t = Instant::now();
                rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id }).await?;
                anyhow::Ok((ran, stopped, t.elapsed()))
            }
        });
        for result in futures::future::join_all(pods).await {
            let (r, s, m) = result?;
            run.push(r);
            stop.push(s);
            remove.push(m);
        }
        done += round;
    }
    let suffix = if concurrency > 1 { format!(" (x{concurrency})") } else { String::new() };
    Ok(vec![
        Summary::of(&format!("RunPodSandbox{suffix}"), &run),
        Summary::of(&format!("StopPodSandbox{suffix}"), &stop),
        Summary::of(&format!("RemovePodSandbox{suffix}"), &remove),
    ])
}

type Runtime = RuntimeServiceClient<tonic::transport::Channel>;

fn pod_config(name: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: name.into(),
            namespace: "berth-bench".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        ..Default::default()
    }
}

fn sleeper(image: &str) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata { name: "sleeper".into(), attempt: 0 }),
        image: Some(ImageSpec { image: image.into(), ..Default::default() }),
        command: vec!["sleep".into(), "3600".into()],
        ..Default::default()
    }
}

/// Starts a pod with a running `sleep` container; returns (pod id, container id).
async fn start_pod(
    rt: &mut Runtime,
    name: &str,
    image: &str,
) -> anyhow::Result<(String, String, [Duration; 3])> {
    let config = pod_config(name);
    let t = Instant::now();
    let pod = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await?
        .into_inner()
        .pod_sandbox_id;
    let run = t.elapsed();
    let t = Instant::now();
    let ctr = rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(sleeper(image)),
            sandbox_config: Some(config),
        })
        .await?
        .into_inner()
        .container_id;
    let create = t.elapsed();
    let t = Instant::now();
    rt.start_container(StartContainerRequest { container_id: ctr.clone() }).await?;
    Ok((pod, ctr, [run, create, t.elapsed()]))
}

async fn stop_pod(rt: &mut Runtime, pod: &str, ctr: &str) -> anyhow::Result<[Duration; 4]> {
    let t = Instant::now();
    rt.stop_container(StopContainerRequest { container_id: ctr.into(), timeout: 0 }).await?;
    let stop = t.elapsed();
    let t = Instant::now();
    rt.remove_container(RemoveContainerRequest { container_id: ctr.into() }).await?;
    let remove = t.elapsed();
    let t = Instant::now();
    rt.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: pod.into() }).await?;
    let stopp = t.elapsed();
    let t = Instant::now();
    rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod.into() }).await?;
    Ok([stop, remove, stopp, t.elapsed()])
}

async fn lifecycle(mut rt: Runtime, image: &str, runs: usize) -> anyhow::Result<Vec<Summary>> {
    let names = [
        "RunPodSandbox",
        "CreateContainer",
        "StartContainer",
        "StopContainer",
        "RemoveContainer",
        "StopPodSandbox",
        "RemovePodSandbox",
    ];
    let mut steps: Vec<Vec<Duration>> = vec![Vec::new(); names.len()];
    let (mut started, mut total) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let t = Instant::now();
        let (pod, ctr, up) =
            start_pod(&mut rt, &format!("lifecycle-{}-{i}", std::process::id()), image).await?;
        started.push(t.elapsed());
        let down = stop_pod(&mut rt, &pod, &ctr).await?;
        total.push(t.elapsed());
        for (k, d) in up.into_iter().chain(down).enumerate() {
            steps[k].push(d);
        }
    }
    let mut out: Vec<Summary> = names.iter().zip(&steps).map(|(n, s)| Summary::of(n, s)).collect();
    out.push(Summary::of("pod + container running", &started));
    out.push(Summary::of("end to end", &total));
    Ok(out)
}

async fn exec(mut rt: Runtime, image: &str, runs: usize) -> anyhow::Result<Summary> {
    let (pod, ctr, _) = start_pod(&mut rt, &format!("exec-{}", std::process::id()), image).await?;
    let mut samples = Vec::with_capacity(runs);
    let mut failure = None;
    for _ in 0..runs {
        let t = Instant::now();
        match rt
            .exec_sync(ExecSyncRequest {
                container_id: ctr.clone(),
                cmd: vec!["true".into()],
                timeout: 10,
            })
            .await
        {
            Ok(r) if r.get_ref().exit_code == 0 => samples.push(t.elapsed()),
            Ok(r) => failure = Some(anyhow::anyhow!("`true` exited {}", r.get_ref().exit_code)),
            Err(e) => failure = Some(e.into()),
        }
        if failure.is_some() {
            break;
        }
    }
    stop_pod(&mut rt, &pod, &ctr).await?;
    match failure {
        Some(e) => Err(e),
        None => Ok(Summary::of("ExecSync true", &samples)),
    }
}
