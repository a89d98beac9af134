//! berth-bench: drives any CRI endpoint (berth, containerd, CRI-O) through the same
//! workload and reports latency percentiles, so every figure can be put beside another
//! runtime's from the same run — or runs it on several endpoints at once (`compare`).
//!
//!     berth-bench pull --image busybox --runs 5 --endpoint unix:///run/berth/berth.sock
//!     berth-bench compare --endpoint A --endpoint B lifecycle --runs 20 --svg out.svg

use berth_integration::bench::chart;
use berth_integration::bench::cni_floor;
use berth_integration::bench::compare::{Comparison, Outcome};
use berth_integration::bench::density;
use berth_integration::bench::endpoint::{self, EndpointInfo, Target};
use berth_integration::bench::stats::table;
use berth_integration::bench::workloads::{self, Rounds};
use clap::{ArgAction, Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(name = "berth-bench", about = "Benchmark a CRI runtime, or several side by side")]
struct Cli {
    /// The CRI endpoint, `unix:///path` or a socket path [default:
    /// unix:///run/berth/berth.sock]. Under `compare`, once per endpoint.
    #[arg(long, global = true, action = ArgAction::Append)]
    endpoint: Vec<String>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// Also draw the medians per step (per endpoint) as a bar chart, an SVG file.
    #[arg(long, global = true, value_name = "FILE")]
    svg: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Run(Workload),
    /// The same workload on every `--endpoint`, side by side: each step's median per
    /// endpoint and its ratio to the first endpoint's. Rounds alternate between the
    /// endpoints where the workload allows (pull, lifecycle, exec, sandbox); burst, list
    /// and density run on one endpoint after another.
    Compare(CompareArgs),
}

#[derive(Debug, Args)]
struct CompareArgs {
    /// A name per endpoint, in `--endpoint` order [default: the runtime's name and
    /// version, from the CRI Version call].
    #[arg(long, global = true, action = ArgAction::Append)]
    label: Vec<String>,
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
        /// StopContainer's timeout in seconds. 0: SIGKILL at once (the `sleep` ignores
        /// SIGTERM); more: the container is a shell that exits on SIGTERM, the usual
        /// graceful stop.
        #[arg(long, default_value_t = 0)]
        stop_timeout: i64,
        /// Also mount this image (present) as an image volume at `/vol`.
        #[arg(long)]
        image_volume: Option<String>,
    },
    /// RemoveContainer of each of `containers` containers of one pod, created and never
    /// started (with `--started`: started and stopped first), each carrying an
    /// annotation of `annotation_kib` KiB (the kubelet's can be large): how removal
    /// scales with what the node holds.
    Remove {
        #[arg(long, default_value = "busybox")]
        image: String,
        #[arg(long, default_value_t = 100)]
        containers: usize,
        #[arg(long, default_value_t = 38)]
        annotation_kib: usize,
        #[arg(long)]
        started: bool,
    },
    /// ExecSync latency of `true` in a running container.
    Exec {
        #[arg(long, default_value = "busybox")]
        image: String,
        #[arg(long, default_value_t = 100)]
        runs: usize,
        /// Idle milliseconds before each exec, as between a probe's runs (the kernel
        /// behaves differently after a quiet spell than in a tight loop).
        #[arg(long, default_value_t = 0)]
        gap_ms: u64,
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
    /// The CNI plugins' own cost, no runtime involved: the conf dir's network (its first
    /// config file by name, as berth picks it) ADDed to a fresh network namespace and
    /// DELeted again, `runs` times, as a runtime calls the plugins. Needs no endpoint.
    CniFloor {
        #[arg(long, default_value = "/etc/cni/net.d")]
        conf_dir: PathBuf,
        /// Where the plugin binaries are, in lookup order (repeatable; Debian's
        /// containernetworking-plugins installs to /usr/lib/cni).
        #[arg(long = "bin-dir", default_value = "/opt/cni/bin")]
        bin_dirs: Vec<PathBuf>,
        #[arg(long, default_value_t = 20)]
        runs: usize,
        /// The pod CIDR `usePodCidr` in the config stands for.
        #[arg(long)]
        pod_cidr: Option<String>,
        /// Seconds one plugin call may take before it is killed.
        #[arg(long, default_value_t = 60)]
        plugin_timeout_secs: u64,
    },
}

impl Workload {
    fn name(&self) -> &'static str {
        match self {
            Workload::Pull { .. } => "pull",
            Workload::Lifecycle { .. } => "lifecycle",
            Workload::Remove { .. } => "remove",
            Workload::Exec { .. } => "exec",
            Workload::Sandbox { .. } => "sandbox",
            Workload::Burst { .. } => "burst",
            Workload::List { .. } => "list",
            Workload::Density { .. } => "density",
            Workload::CniFloor { .. } => "cni-floor",
        }
    }

    /// The workload as rounds that can alternate between endpoints, with their count.
    fn rounds(&self) -> Option<(Rounds, usize)> {
        let r = match self {
            Workload::Pull { image, runs } => (Rounds::Pull { image: image.clone() }, *runs),
            Workload::Lifecycle { image, runs, stop_timeout, image_volume } => {
                let r = Rounds::Lifecycle {
                    image: image.clone(),
                    stop_timeout: *stop_timeout,
                    image_volume: image_volume.clone(),
                };
                (r, *runs)
            }
            Workload::Exec { image, runs, gap_ms } => {
                let gap = Duration::from_millis(*gap_ms);
                (Rounds::Exec { image: image.clone(), gap }, *runs)
            }
            Workload::Sandbox { runs, concurrency } => {
                let c = (*concurrency).max(1);
                (Rounds::Sandbox { runs: *runs, concurrency: c }, *runs)
            }
            _ => return None,
        };
        let count = r.0.rounds_for(r.1);
        Some((r.0, count))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // clap keeps a global option's values from one side of a subcommand's name only: an
    // endpoint given on the other side would be dropped without a word.
    let given = std::env::args()
        .take_while(|a| a != "--")
        .filter(|a| a == "--endpoint" || a.starts_with("--endpoint="))
        .count();
    anyhow::ensure!(
        given == cli.endpoint.len(),
        "give every --endpoint on the same side of the workload's name (before it or after it)"
    );
    match &cli.command {
        Command::Run(Workload::CniFloor {
            conf_dir,
            bin_dirs,
            runs,
            pod_cidr,
            plugin_timeout_secs,
        }) => {
            anyhow::ensure!(cli.endpoint.is_empty(), "cni-floor drives no CRI endpoint");
            anyhow::ensure!(*plugin_timeout_secs > 0, "--plugin-timeout-secs must be > 0");
            let opts = cni_floor::Options {
                conf_dir: conf_dir.clone(),
                bin_dirs: bin_dirs.clone(),
                runs: *runs,
                pod_cidr: pod_cidr.clone(),
                plugin_timeout: Duration::from_secs(*plugin_timeout_secs),
            };
            let (network, rows) = cni_floor::run(&opts).await?;
            eprintln!(
                "cni-floor: network {:?} from {}: {}",
                network.name,
                network.file.display(),
                network.plugins.join(", ")
            );
            let info = EndpointInfo {
                label: format!("CNI {}", network.name),
                endpoint: network.file.display().to_string(),
                runtime_name: "cni".into(),
                runtime_version: String::new(),
            };
            let report = Comparison::new(
                "cni-floor",
                "sequential",
                vec![info],
                vec![Outcome::Latency(rows)],
            );
            print_one(&cli, &report)?;
        }
        Command::Run(workload) => {
            anyhow::ensure!(
                cli.endpoint.len() <= 1,
                "{} --endpoint given: to run on several, use `berth-bench compare`",
                cli.endpoint.len()
            );
            let endpoints = match cli.endpoint.first() {
                Some(e) => vec![e.clone()],
                None => vec![endpoint::DEFAULT_ENDPOINT.to_string()],
            };
            let mut targets = endpoint::connect(&endpoints, &[]).await?;
            let report = run(workload, &mut targets).await?;
            print_one(&cli, &report)?;
        }
        Command::Compare(args) => {
            let w = &args.workload;
            anyhow::ensure!(
                !matches!(w, Workload::CniFloor { .. }),
                "cni-floor drives no CRI endpoint: nothing to compare"
            );
            anyhow::ensure!(
                cli.endpoint.len() >= 2,
                "compare needs two or more --endpoint (the same one twice is fine)"
            );
            let mut targets = endpoint::connect(&cli.endpoint, &args.label).await?;
            let report = run(w, &mut targets).await?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.table());
            }
            if let Some(path) = &cli.svg {
                let title = format!("berth-bench {}", report.workload);
                svg(path, &title, &report)?;
            }
        }
    }
    Ok(())
}

/// Runs `w` on every target: interleaved rounds where the workload has them.
async fn run(w: &Workload, targets: &mut [Target]) -> anyhow::Result<Comparison> {
    let infos: Vec<EndpointInfo> = targets.iter().map(|t| t.info.clone()).collect();
    if let Some((rounds, count)) = w.rounds() {
        let per_target = workloads::run_rounds(&rounds, targets, count).await?;
        let outcomes = per_target.into_iter().map(Outcome::Latency).collect();
        return Ok(Comparison::new(w.name(), "interleaved", infos, outcomes));
    }
    let mut outcomes = Vec::with_capacity(targets.len());
    for t in targets.iter() {
        let outcome = match w {
            Workload::Burst { image, pods, concurrency } => {
                let c = concurrency.unwrap_or(*pods).max(1);
                Outcome::Latency(workloads::burst(t, image, *pods, c).await?)
            }
            Workload::List { image, pods, runs } => {
                Outcome::Latency(workloads::list(t, image, *pods, *runs).await?)
            }
            Workload::Remove { image, containers, annotation_kib, started } => {
                let r = workloads::remove(t, image, *containers, *annotation_kib, *started);
                Outcome::Latency(r.await?)
            }
            Workload::Density { image, pods, processes } => {
                let names = if processes.is_empty() {
                    density::DEFAULT_PROCESSES.iter().map(|s| s.to_string()).collect()
                } else {
                    processes.clone()
                };
                Outcome::Memory(density::run(t, image, *pods, &names).await?)
            }
            _ => unreachable!("the others run in rounds"),
        };
        outcomes.push(outcome);
    }
    Ok(Comparison::new(w.name(), "sequential", infos, outcomes))
}

/// A run on one endpoint: its table (or JSON) as it always was, and the chart.
fn print_one(cli: &Cli, report: &Comparison) -> anyhow::Result<()> {
    match (report.summaries.first(), report.density.first()) {
        (Some(rows), _) if cli.json => println!("{}", serde_json::to_string_pretty(rows)?),
        (Some(rows), _) => print!("{}", table(rows)),
        (_, Some(d)) if cli.json => println!("{}", serde_json::to_string_pretty(d)?),
        (_, Some(d)) => print!("{}", d.table()),
        _ => anyhow::bail!("the workload reported nothing"),
    }
    if let Some(path) = &cli.svg {
        let label = report.endpoints.first().map(|e| e.label.as_str()).unwrap_or_default();
        let title = format!("berth-bench {}: {label}", report.workload);
        svg(path, &title, report)?;
    }
    Ok(())
}

fn svg(path: &std::path::Path, title: &str, report: &Comparison) -> anyhow::Result<()> {
    chart::write_svg(path, title, report.unit(), &report.step_names(), &report.series())
        .map_err(|e| e.context(format!("--svg {}", path.display())))
}
