//! berth-bench: drives any CRI endpoint (berth, containerd, CRI-O) through the same
//! workload and reports latency percentiles, so every figure can be put beside another
//! runtime's from the same run.
//!
//!     berth-bench --endpoint unix:///run/berth/berth.sock pull --image busybox --runs 5

use berth_integration::bench::stats::{table, Summary};
use berth_proto::{
    ContainerConfig, ContainerMetadata, CreateContainerRequest, ExecSyncRequest,
    ImageServiceClient, ImageSpec, Mount, PodSandboxConfig, PodSandboxMetadata, PullImageRequest,
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
        /// Also mount this image (present) as an image volume at `/vol`.
        #[arg(long)]
        image_volume: Option<String>,
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
    /// `pods` pods with one container each, `concurrency` started at once (default: all):
    /// time until each and all are running, and pods per second.
    Burst {
        #[arg(long, default_value = "busybox")]
        image: String,
        #[arg(long, default_value_t = 50)]
        pods: usize,
        #[arg(long)]
        concurrency: Option<usize>,
    },
    /// With `pods` pods running (one container each), ListPodSandbox and ListContainers
    /// latency, `runs` times each (the kubelet relists every second).
    List {
        #[arg(long, default_value = "busybox")]
        image: String,
        #[arg(long, default_value_t = 500)]
        pods: usize,
        #[arg(long, default_value_t = 50)]
        runs: usize,
    },
    /// Resident memory of the runtime's own processes (daemon, shims, pause/init
    /// processes; by process name) with no pods, then with `pods` pods running.
    Density {
        #[arg(long, default_value = "busybox")]
        image: String,
        #[arg(long, default_value_t = 100)]
        pods: usize,
        /// Process names that belong to the runtime (repeatable); default: those of
        /// berth, containerd and CRI-O.
        #[arg(long = "process")]
        processes: Vec<String>,
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
        Workload::Lifecycle { image, runs, image_volume } => {
            let mut container = sleeper(&image);
            if let Some(volume) = image_volume {
                container.mounts.push(Mount {
                    container_path: "/vol".into(),
                    image: Some(ImageSpec { image: volume, ..Default::default() }),
                    ..Default::default()
                });
            }
            lifecycle(RuntimeServiceClient::new(channel), container, runs).await?
        }
        Workload::Exec { image, runs } => {
            vec![exec(RuntimeServiceClient::new(channel), &image, runs).await?]
        }
        Workload::Sandbox { runs, concurrency } => {
            sandbox(RuntimeServiceClient::new(channel), runs, concurrency.max(1)).await?
        }
        Workload::Burst { image, pods, concurrency } => {
            let c = concurrency.unwrap_or(pods).max(1);
            burst(RuntimeServiceClient::new(channel), &image, pods, c).await?
        }
        Workload::List { image, pods, runs } => {
            list(RuntimeServiceClient::new(channel), &image, pods, runs).await?
        }
        Workload::Density { image, pods, processes } => {
            let names = if processes.is_empty() {
                density::DEFAULT_PROCESSES.iter().map(|s| s.to_string()).collect()
            } else {
                processes
            };
            let report =
                density::run(RuntimeServiceClient::new(channel), &image, pods, &names).await?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.table());
            }
            return Ok(());
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
    container: ContainerConfig,
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
            config: Some(container),
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

async fn lifecycle(
    mut rt: Runtime,
    container: ContainerConfig,
    runs: usize,
) -> anyhow::Result<Vec<Summary>> {
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
            start_pod(&mut rt, &format!("lifecycle-{}-{i}", std::process::id()), container.clone())
                .await?;
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
    let (pod, ctr, _) =
        start_pod(&mut rt, &format!("exec-{}", std::process::id()), sleeper(image)).await?;
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

/// Starts `pods` pods (one container each), `concurrency` at a time; returns their ids
/// and each one's time to running, from when its round began.
async fn start_pods(
    rt: &Runtime,
    image: &str,
    pods: usize,
    concurrency: usize,
    tag: &str,
) -> anyhow::Result<(Vec<(String, String)>, Vec<Duration>)> {
    let mut ids = Vec::with_capacity(pods);
    let mut times = Vec::with_capacity(pods);
    let mut done = 0;
    while done < pods {
        let round = (pods - done).min(concurrency);
        let started = (done..done + round).map(|i| {
            let mut rt = rt.clone();
            let name = format!("{tag}-{}-{i}", std::process::id());
            async move {
                let t = Instant::now();
                let (pod, ctr, _) = start_pod(&mut rt, &name, sleeper(image)).await?;
                anyhow::Ok((pod, ctr, t.elapsed()))
            }
        });
        for r in futures::future::join_all(started).await {
            let (pod, ctr, t) = r?;
            ids.push((pod, ctr));
            times.push(t);
        }
        done += round;
    }
    Ok((ids, times))
}

async fn stop_pods(rt: &Runtime, ids: &[(String, String)]) -> anyhow::Result<()> {
    for chunk in ids.chunks(10) {
        let stops = chunk.iter().map(|(pod, ctr)| {
            let mut rt = rt.clone();
            async move { stop_pod(&mut rt, pod, ctr).await }
        });
        for r in futures::future::join_all(stops).await {
            r?;
        }
    }
    Ok(())
}

async fn burst(
    rt: Runtime,
    image: &str,
    pods: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<Summary>> {
    let t = Instant::now();
    let (ids, each) = start_pods(&rt, image, pods, concurrency, "burst").await?;
    let all = t.elapsed();
    stop_pods(&rt, &ids).await?;
    eprintln!(
        "burst: {pods} pods ({concurrency} at once) running in {:.0} ms: {:.1} pods/s",
        all.as_secs_f64() * 1000.0,
        pods as f64 / all.as_secs_f64()
    );
    Ok(vec![
        Summary::of(&format!("pod + container running (x{concurrency})"), &each),
        Summary::of(&format!("all {pods} running"), &[all]),
    ])
}

async fn list(rt: Runtime, image: &str, pods: usize, runs: usize) -> anyhow::Result<Vec<Summary>> {
    let (ids, _) = start_pods(&rt, image, pods, 10, "list").await?;
    let (mut sandboxes, mut containers) = (Vec::new(), Vec::new());
    let mut failure = None;
    for _ in 0..runs {
        let mut r = rt.clone();
        let t = Instant::now();
        match r.list_pod_sandbox(berth_proto::ListPodSandboxRequest::default()).await {
            Ok(l) if l.get_ref().items.len() >= pods => sandboxes.push(t.elapsed()),
            Ok(l) => failure = Some(anyhow::anyhow!("{} pods listed", l.get_ref().items.len())),
            Err(e) => failure = Some(e.into()),
        }
        let t = Instant::now();
        match r.list_containers(berth_proto::ListContainersRequest::default()).await {
            Ok(l) if l.get_ref().containers.len() >= pods => containers.push(t.elapsed()),
            Ok(l) => {
                failure =
                    Some(anyhow::anyhow!("{} containers listed", l.get_ref().containers.len()))
            }
            Err(e) => failure = Some(e.into()),
        }
        if failure.is_some() {
            break;
        }
    }
    stop_pods(&rt, &ids).await?;
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(vec![
        Summary::of(&format!("ListPodSandbox ({pods} pods)"), &sandboxes),
        Summary::of(&format!("ListContainers ({pods} containers)"), &containers),
    ])
}

mod density {
    //! The runtime's own memory: every process whose name says it belongs to the runtime
    //! (its daemon, per-pod shims or monitors, pause or init processes), with RSS and PSS
    //! from `/proc/<pid>/smaps_rollup`.

    use super::Runtime;
    use serde::Serialize;
    use std::collections::BTreeMap;

    /// berth, containerd (with runc) and CRI-O (with conmon).
    pub const DEFAULT_PROCESSES: &[&str] = &[
        "berthd",
        "berth-shim",
        "berth-pod-init",
        "containerd",
        "containerd-shim",
        "containerd-shim-runc-v2",
        "pause",
        "crio",
        "conmon",
    ];

    #[derive(Debug, Default, Clone, Serialize)]
    pub struct Usage {
        pub processes: usize,
        pub rss_kib: u64,
        pub pss_kib: u64,
    }

    #[derive(Debug, Serialize)]
    pub struct Report {
        pub pods: usize,
        /// By process name, with no pods and with `pods` pods.
        pub idle: BTreeMap<String, Usage>,
        pub loaded: BTreeMap<String, Usage>,
    }

    fn total(m: &BTreeMap<String, Usage>) -> Usage {
        m.values().fold(Usage::default(), |a, u| Usage {
            processes: a.processes + u.processes,
            rss_kib: a.rss_kib + u.rss_kib,
            pss_kib: a.pss_kib + u.pss_kib,
        })
    }

    impl Report {
        pub fn table(&self) -> String {
            let mut out = format!(
                "{:<26} {:>6} {:>12} {:>12} {:>6} {:>12} {:>12}\n",
                "process", "idle n", "idle RSS KiB", "idle PSS KiB", "n", "RSS KiB", "PSS KiB"
            );
            let names: std::collections::BTreeSet<&String> =
                self.idle.keys().chain(self.loaded.keys()).collect();
            let row = |name: &str, i: &Usage, l: &Usage| {
                format!(
                    "{name:<26} {:>6} {:>12} {:>12} {:>6} {:>12} {:>12}\n",
                    i.processes, i.rss_kib, i.pss_kib, l.processes, l.rss_kib, l.pss_kib
                )
            };
            for n in names {
                let i = self.idle.get(n).cloned().unwrap_or_default();
                let l = self.loaded.get(n).cloned().unwrap_or_default();
                out.push_str(&row(n, &i, &l));
            }
            let (i, l) = (total(&self.idle), total(&self.loaded));
            out.push_str(&row("total", &i, &l));
            let per = |a: u64, b: u64| (b.saturating_sub(a)) as f64 / self.pods.max(1) as f64;
            out.push_str(&format!(
                "per pod ({} pods): RSS {:.0} KiB, PSS {:.0} KiB\n",
                self.pods,
                per(i.rss_kib, l.rss_kib),
                per(i.pss_kib, l.pss_kib)
            ));
            out
        }
    }

    /// The runtime's processes now, by name.
    pub fn measure(names: &[String]) -> BTreeMap<String, Usage> {
        let mut by_name: BTreeMap<String, Usage> = BTreeMap::new();
        let Ok(dir) = std::fs::read_dir("/proc") else { return by_name };
        for entry in dir.flatten() {
            let path = entry.path();
            let Ok(comm) = std::fs::read_to_string(path.join("comm")) else { continue };
            let comm = comm.trim();
            // comm is cut to 15 bytes: match names by that prefix.
            let Some(name) =
                names.iter().find(|n| n.as_bytes()[..n.len().min(15)] == *comm.as_bytes())
            else {
                continue;
            };
            let Ok(rollup) = std::fs::read_to_string(path.join("smaps_rollup")) else { continue };
            let field = |key: &str| -> u64 {
                rollup
                    .lines()
                    .find(|l| l.starts_with(key))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            };
            let u = by_name.entry(name.clone()).or_default();
            u.processes += 1;
            u.rss_kib += field("Rss:");
            u.pss_kib += field("Pss:");
        }
        by_name
    }

    pub async fn run(
        rt: Runtime,
        image: &str,
        pods: usize,
        names: &[String],
    ) -> anyhow::Result<Report> {
        let idle = measure(names);
        let (ids, _) = super::start_pods(&rt, image, pods, 10, "density").await?;
        // Let start-up allocations settle (lazy page faults, freed buffers).
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        let loaded = measure(names);
        super::stop_pods(&rt, &ids).await?;
        Ok(Report { pods, idle, loaded })
    }
}
