//! berth-bench: drives any CRI endpoint (berth, containerd, CRI-O) through the same
//! workload and reports latency percentiles, so every figure can be put beside another
//! runtime's from the same run.
//!
//!     berth-bench --endpoint unix:///run/berth/berth.sock pull --image busybox --runs 5

use berth_integration::bench::stats::{table, Summary};
use berth_proto::{ImageServiceClient, ImageSpec, PullImageRequest, RemoveImageRequest};
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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let channel = berth_proto::connect_unix(&cli.endpoint).await?;
    let rows = match cli.workload {
        Workload::Pull { image, runs } => {
            vec![pull(ImageServiceClient::new(channel), &image, runs).await?]
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
