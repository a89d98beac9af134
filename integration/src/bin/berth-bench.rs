//! berth-bench: drives any CRI endpoint (berth, containerd, CRI-O) through the same
//! workload and reports latency percentiles, so every figure can be put beside another
//! runtime's from the same run.
//!
//!     berth-bench --endpoint unix:///run/berth/berth.sock pull --image busybox --runs 5

use berth_integration::bench::stats::{table, Summary};
use berth_proto::{
    ImageServiceClient, ImageSpec, PodSandboxConfig, PodSandboxMetadata, PullImageRequest,
    RemoveImageRequest, RemovePodSandboxRequest, RunPodSandboxRequest, RuntimeServiceClient,
    StopPodSandboxRequest,
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
