//! The CRI workloads, for one endpoint or several.
//!
//! [`Rounds`] are workloads made of independent rounds that leave the endpoint as they
//! found it (pull, lifecycle, exec, sandbox): with several endpoints their rounds
//! alternate, A, B, A, B…, so a noisy machine's slow moments fall on all of them alike.
//! The others (burst, list, density) hold many pods for the whole measurement, and run on
//! one endpoint after another ([`burst`], [`list`], [`crate::bench::density`]).

use crate::bench::endpoint::{Runtime, Target};
use crate::bench::stats::Summary;
use berth_proto::{
    ContainerConfig, ContainerMetadata, CreateContainerRequest, ExecSyncRequest, ImageSpec, Mount,
    PodSandboxConfig, PodSandboxMetadata, PullImageRequest, RemoveContainerRequest,
    RemoveImageRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
    StopContainerRequest, StopPodSandboxRequest,
};
use std::time::{Duration, Instant};

/// A workload of independent rounds (one round: one run, or one batch of concurrent
/// pods for `Sandbox`).
#[derive(Debug, Clone)]
pub enum Rounds {
    /// PullImage of an image removed before each round.
    Pull { image: String },
    /// A pod with one `sleep` container started and torn down, per step and end to end.
    /// With `stop_timeout` > 0 the container is a shell that exits on SIGTERM and
    /// StopContainer gives it that long (the usual graceful stop); with `image_volume`
    /// it also mounts that image (present) as an image volume at `/vol`.
    Lifecycle { image: String, stop_timeout: i64, image_volume: Option<String> },
    /// ExecSync of `true` in one running container per endpoint, each after `gap` idle.
    Exec { image: String, gap: Duration },
    /// RunPodSandbox, StopPodSandbox, RemovePodSandbox of `runs` pods in all,
    /// `concurrency` at once (a round).
    Sandbox { runs: usize, concurrency: usize },
}

const LIFECYCLE_STEPS: [&str; 7] = [
    "RunPodSandbox",
    "CreateContainer",
    "StartContainer",
    "StopContainer",
    "RemoveContainer",
    "StopPodSandbox",
    "RemovePodSandbox",
];

/// What a `Rounds` workload holds on an endpoint between its rounds.
enum Held {
    Nothing,
    /// Exec's pod and its running container.
    Pod {
        pod: String,
        ctr: String,
    },
}

impl Rounds {
    /// How many rounds make `runs` runs.
    pub fn rounds_for(&self, runs: usize) -> usize {
        match self {
            Rounds::Sandbox { concurrency, .. } => runs.div_ceil((*concurrency).max(1)),
            _ => runs,
        }
    }

    /// The steps reported, in order.
    pub fn steps(&self) -> Vec<String> {
        match self {
            Rounds::Pull { .. } => vec!["PullImage".into()],
            Rounds::Lifecycle { .. } => {
                let mut v: Vec<String> = LIFECYCLE_STEPS.iter().map(|s| s.to_string()).collect();
                v.push("pod + container running".into());
                v.push("end to end".into());
                v
            }
            Rounds::Exec { .. } => vec!["ExecSync true".into()],
            Rounds::Sandbox { concurrency, .. } => {
                let suffix =
                    if *concurrency > 1 { format!(" (x{concurrency})") } else { String::new() };
                ["RunPodSandbox", "StopPodSandbox", "RemovePodSandbox"]
                    .iter()
                    .map(|s| format!("{s}{suffix}"))
                    .collect()
            }
        }
    }

    async fn prepare(&self, t: &mut Target) -> anyhow::Result<Held> {
        match self {
            Rounds::Exec { image, .. } => {
                let name = format!("exec-{}-{}", std::process::id(), t.tag);
                let (pod, ctr, _) = start_pod(&mut t.runtime, &name, image).await?;
                Ok(Held::Pod { pod, ctr })
            }
            _ => Ok(Held::Nothing),
        }
    }

    /// One round on `t`: the samples of each step.
    async fn round(
        &self,
        t: &mut Target,
        held: &Held,
        i: usize,
    ) -> anyhow::Result<Vec<Vec<Duration>>> {
        match (self, held) {
            (Rounds::Pull { image }, _) => {
                let spec = || Some(ImageSpec { image: image.clone(), ..Default::default() });
                t.images.remove_image(RemoveImageRequest { image: spec() }).await?;
                let started = Instant::now();
                t.images
                    .pull_image(PullImageRequest { image: spec(), ..Default::default() })
                    .await?;
                Ok(vec![vec![started.elapsed()]])
            }
            (Rounds::Lifecycle { image, stop_timeout, image_volume }, _) => {
                let name = format!("lifecycle-{}-{}-{i}", std::process::id(), t.tag);
                let mut ctr = if *stop_timeout > 0 { term_exiter(image) } else { sleeper(image) };
                if let Some(volume) = image_volume {
                    ctr.mounts.push(Mount {
                        container_path: "/vol".into(),
                        image: Some(ImageSpec { image: volume.clone(), ..Default::default() }),
                        ..Default::default()
                    });
                }
                let began = Instant::now();
                let (pod, ctr, up) = start_pod_with(&mut t.runtime, &name, ctr).await?;
                let running = began.elapsed();
                let down = stop_pod_with(&mut t.runtime, &pod, &ctr, *stop_timeout).await?;
                let total = began.elapsed();
                let mut steps: Vec<Vec<Duration>> =
                    up.into_iter().chain(down).map(|d| vec![d]).collect();
                steps.push(vec![running]);
                steps.push(vec![total]);
                Ok(steps)
            }
            (Rounds::Exec { gap, .. }, Held::Pod { ctr, .. }) => {
                tokio::time::sleep(*gap).await;
                let started = Instant::now();
                let r = t
                    .runtime
                    .exec_sync(ExecSyncRequest {
                        container_id: ctr.clone(),
                        cmd: vec!["true".into()],
                        timeout: 10,
                    })
                    .await?
                    .into_inner();
                let took = started.elapsed();
                anyhow::ensure!(r.exit_code == 0, "`true` exited {}", r.exit_code);
                Ok(vec![vec![took]])
            }
            (Rounds::Exec { .. }, Held::Nothing) => unreachable!("exec prepares its pod"),
            (Rounds::Sandbox { runs, concurrency }, _) => {
                let count = runs.saturating_sub(i * concurrency).min(*concurrency);
                let pods = (0..count).map(|j| {
                    let mut rt = t.runtime.clone();
                    let name = format!("bench-{}-{}-{i}-{j}", std::process::id(), t.tag);
                    async move { sandbox_once(&mut rt, &name).await }
                });
                let mut steps = vec![Vec::new(), Vec::new(), Vec::new()];
                for result in futures::future::join_all(pods).await {
                    for (k, d) in result?.into_iter().enumerate() {
                        steps[k].push(d);
                    }
                }
                Ok(steps)
            }
        }
    }

    async fn finish(&self, t: &mut Target, held: Held) -> anyhow::Result<()> {
        match (self, held) {
            (Rounds::Pull { image }, _) => {
                let image = Some(ImageSpec { image: image.clone(), ..Default::default() });
                t.images.remove_image(RemoveImageRequest { image }).await?;
            }
            (_, Held::Pod { pod, ctr }) => {
                stop_pod(&mut t.runtime, &pod, &ctr).await?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// Runs `rounds` rounds of `w` on every target, alternating between them round by round,
/// and summarises each target's steps. Whatever a target held is released also when a
/// round fails.
pub async fn run_rounds(
    w: &Rounds,
    targets: &mut [Target],
    rounds: usize,
) -> anyhow::Result<Vec<Vec<Summary>>> {
    let names = w.steps();
    let mut held = Vec::with_capacity(targets.len());
    let mut failure: Option<anyhow::Error> = None;
    for t in targets.iter_mut() {
        match w.prepare(t).await {
            Ok(h) => held.push(h),
            Err(e) => {
                failure = Some(e.context(format!("on {}", t.info.label)));
                break;
            }
        }
    }
    let mut samples: Vec<Vec<Vec<Duration>>> = vec![vec![Vec::new(); names.len()]; targets.len()];
    if failure.is_none() {
        'rounds: for i in 0..rounds {
            for (k, t) in targets.iter_mut().enumerate() {
                match w.round(t, &held[k], i).await {
                    Ok(steps) => {
                        for (j, s) in steps.into_iter().enumerate() {
                            samples[k][j].extend(s);
                        }
                    }
                    Err(e) => {
                        failure = Some(e.context(format!("round {} on {}", i + 1, t.info.label)));
                        break 'rounds;
                    }
                }
            }
        }
    }
    for (t, h) in targets.iter_mut().zip(held) {
        if let Err(e) = w.finish(t, h).await {
            failure.get_or_insert(e.context(format!("cleaning up on {}", t.info.label)));
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(samples
        .iter()
        .map(|per| names.iter().zip(per).map(|(n, s)| Summary::of(n, s)).collect())
        .collect())
}

async fn sandbox_once(rt: &mut Runtime, name: &str) -> anyhow::Result<[Duration; 3]> {
    let t = Instant::now();
    let id = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod_config(name)),
            runtime_handler: String::new(),
        })
        .await?
        .into_inner()
        .pod_sandbox_id;
    let ran = t.elapsed();
    let t = Instant::now();
    let stopped = rt.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: id.clone() }).await;
    let stopped = match stopped {
        Ok(_) => t.elapsed(),
        Err(e) => {
            remove_quietly(rt, &id).await;
            return Err(e.into());
        }
    };
    let t = Instant::now();
    rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id }).await?;
    Ok([ran, stopped, t.elapsed()])
}

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

/// A container that exits as soon as it gets SIGTERM (`wait` is interrupted by the
/// trapped signal).
fn term_exiter(image: &str) -> ContainerConfig {
    ContainerConfig {
        command: vec!["sh".into(), "-c".into(), "trap 'exit 0' TERM; sleep 3600 & wait".into()],
        ..sleeper(image)
    }
}

/// After a failed step: the pod goes with whatever it holds (RemovePodSandbox removes
/// its containers), so a failed run leaves nothing on the endpoint. Best effort: the
/// step's own error is the one reported.
async fn remove_quietly(rt: &mut Runtime, pod: &str) {
    let _ = rt.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: pod.into() }).await;
    let _ = rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod.into() }).await;
}

/// RunPodSandbox of `config` with the default handler; returns the pod's id.
async fn run_pod(rt: &mut Runtime, config: &PodSandboxConfig) -> anyhow::Result<String> {
    let req = RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() };
    Ok(rt.run_pod_sandbox(req).await?.into_inner().pod_sandbox_id)
}

/// Starts a pod with a running `sleep` container; returns its id, the container's, and
/// the times of RunPodSandbox, CreateContainer and StartContainer.
pub async fn start_pod(
    rt: &mut Runtime,
    name: &str,
    image: &str,
) -> anyhow::Result<(String, String, [Duration; 3])> {
    start_pod_with(rt, name, sleeper(image)).await
}

/// The same with container `ctr`.
async fn start_pod_with(
    rt: &mut Runtime,
    name: &str,
    ctr: ContainerConfig,
) -> anyhow::Result<(String, String, [Duration; 3])> {
    let config = pod_config(name);
    let t = Instant::now();
    let pod = run_pod(rt, &config).await?;
    let run = t.elapsed();
    let t = Instant::now();
    let created = rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(ctr),
            sandbox_config: Some(config),
        })
        .await;
    let ctr = match created {
        Ok(r) => r.into_inner().container_id,
        Err(e) => {
            remove_quietly(rt, &pod).await;
            return Err(e.into());
        }
    };
    let create = t.elapsed();
    let t = Instant::now();
    if let Err(e) = rt.start_container(StartContainerRequest { container_id: ctr.clone() }).await {
        remove_quietly(rt, &pod).await;
        return Err(e.into());
    }
    Ok((pod, ctr, [run, create, t.elapsed()]))
}

/// Stops and removes the container and its pod; returns the time of each of the four
/// calls.
pub async fn stop_pod(rt: &mut Runtime, pod: &str, ctr: &str) -> anyhow::Result<[Duration; 4]> {
    stop_pod_with(rt, pod, ctr, 0).await
}

/// The same with StopContainer's `timeout`.
async fn stop_pod_with(
    rt: &mut Runtime,
    pod: &str,
    ctr: &str,
    timeout: i64,
) -> anyhow::Result<[Duration; 4]> {
    let result = async {
        let t = Instant::now();
        rt.stop_container(StopContainerRequest { container_id: ctr.into(), timeout }).await?;
        let stop = t.elapsed();
        let t = Instant::now();
        rt.remove_container(RemoveContainerRequest { container_id: ctr.into() }).await?;
        let remove = t.elapsed();
        let t = Instant::now();
        rt.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: pod.into() }).await?;
        let stopp = t.elapsed();
        let t = Instant::now();
        rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod.into() }).await?;
        anyhow::Ok([stop, remove, stopp, t.elapsed()])
    }
    .await;
    if result.is_err() {
        remove_quietly(rt, pod).await;
    }
    result
}

/// Starts `pods` pods (one container each), `concurrency` at a time; returns their ids
/// and each one's time to running, from when its round began. On failure the pods
/// already started are removed.
pub async fn start_pods(
    t: &Target,
    image: &str,
    pods: usize,
    concurrency: usize,
    what: &str,
) -> anyhow::Result<(Vec<(String, String)>, Vec<Duration>)> {
    let mut ids = Vec::with_capacity(pods);
    let mut times = Vec::with_capacity(pods);
    let mut failure = None;
    let mut done = 0;
    while done < pods && failure.is_none() {
        let round = (pods - done).min(concurrency.max(1));
        let started = (done..done + round).map(|i| {
            let mut rt = t.runtime.clone();
            let name = format!("{what}-{}-{}-{i}", std::process::id(), t.tag);
            async move {
                let began = Instant::now();
                let (pod, ctr, _) = start_pod(&mut rt, &name, image).await?;
                anyhow::Ok((pod, ctr, began.elapsed()))
            }
        });
        for r in futures::future::join_all(started).await {
            match r {
                Ok((pod, ctr, took)) => {
                    ids.push((pod, ctr));
                    times.push(took);
                }
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        done += round;
    }
    if let Some(e) = failure {
        let _ = stop_pods(t, &ids).await;
        return Err(e);
    }
    Ok((ids, times))
}

/// Stops and removes the pods, ten at a time; every pod is tried, the first error
/// returned.
pub async fn stop_pods(t: &Target, ids: &[(String, String)]) -> anyhow::Result<()> {
    let mut failure = None;
    for chunk in ids.chunks(10) {
        let stops = chunk.iter().map(|(pod, ctr)| {
            let mut rt = t.runtime.clone();
            async move { stop_pod(&mut rt, pod, ctr).await }
        });
        for r in futures::future::join_all(stops).await {
            if let Err(e) = r {
                failure.get_or_insert(e);
            }
        }
    }
    failure.map_or(Ok(()), Err)
}

/// `pods` pods, `concurrency` started at once: each one's time to running and the time
/// until all run.
pub async fn burst(
    t: &Target,
    image: &str,
    pods: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<Summary>> {
    let began = Instant::now();
    let (ids, each) = start_pods(t, image, pods, concurrency, "burst").await?;
    let all = began.elapsed();
    stop_pods(t, &ids).await?;
    eprintln!(
        "burst on {}: {pods} pods ({concurrency} at once) running in {:.0} ms: {:.1} pods/s",
        t.info.label,
        all.as_secs_f64() * 1000.0,
        pods as f64 / all.as_secs_f64()
    );
    Ok(vec![
        Summary::of(&format!("pod + container running (x{concurrency})"), &each),
        Summary::of(&format!("all {pods} running"), &[all]),
    ])
}

/// With `pods` pods present, ListPodSandbox and ListContainers `runs` times each.
pub async fn list(
    t: &Target,
    image: &str,
    pods: usize,
    runs: usize,
) -> anyhow::Result<Vec<Summary>> {
    let (ids, _) = start_pods(t, image, pods, 10, "list").await?;
    let (mut sandboxes, mut containers) = (Vec::new(), Vec::new());
    let mut failure = None;
    let mut r = t.runtime.clone();
    for _ in 0..runs {
        let began = Instant::now();
        match r.list_pod_sandbox(berth_proto::ListPodSandboxRequest::default()).await {
            Ok(l) if l.get_ref().items.len() >= pods => sandboxes.push(began.elapsed()),
            Ok(l) => failure = Some(anyhow::anyhow!("{} pods listed", l.get_ref().items.len())),
            Err(e) => failure = Some(e.into()),
        }
        let began = Instant::now();
        match r.list_containers(berth_proto::ListContainersRequest::default()).await {
            Ok(l) if l.get_ref().containers.len() >= pods => containers.push(began.elapsed()),
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
    let stopped = stop_pods(t, &ids).await;
    if let Some(e) = failure {
        return Err(e);
    }
    stopped?;
    Ok(vec![
        Summary::of(&format!("ListPodSandbox ({pods} pods)"), &sandboxes),
        Summary::of(&format!("ListContainers ({pods} containers)"), &containers),
    ])
}

/// RemoveContainer of each of `containers` containers of one pod, created and never
/// started (`started`: started and stopped first), each carrying an annotation of
/// `annotation_kib` KiB (the kubelet's can be large): how removal scales with what the
/// node holds.
pub async fn remove(
    t: &Target,
    image: &str,
    containers: usize,
    annotation_kib: usize,
    started: bool,
) -> anyhow::Result<Vec<Summary>> {
    let mut rt = t.runtime.clone();
    let config = pod_config(&format!("remove-{}-{}", std::process::id(), t.tag));
    let pod = run_pod(&mut rt, &config).await?;
    let result = async {
        let padding = "a".repeat(annotation_kib << 10);
        let mut ids = Vec::with_capacity(containers);
        for i in 0..containers {
            let mut ctr = sleeper(image);
            ctr.metadata = Some(ContainerMetadata { name: format!("c{i}"), attempt: 0 });
            ctr.annotations.insert("padding".into(), padding.clone());
            let id = rt
                .create_container(CreateContainerRequest {
                    pod_sandbox_id: pod.clone(),
                    config: Some(ctr),
                    sandbox_config: Some(config.clone()),
                })
                .await?
                .into_inner()
                .container_id;
            if started {
                rt.start_container(StartContainerRequest { container_id: id.clone() }).await?;
                rt.stop_container(StopContainerRequest { container_id: id.clone(), timeout: 0 })
                    .await?;
            }
            ids.push(id);
        }
        let mut samples = Vec::with_capacity(containers);
        for id in ids {
            let began = Instant::now();
            rt.remove_container(RemoveContainerRequest { container_id: id }).await?;
            samples.push(began.elapsed());
        }
        anyhow::Ok(samples)
    }
    .await;
    remove_quietly(&mut rt, &pod).await;
    let what = if started { "started and stopped" } else { "created" };
    Ok(vec![Summary::of(&format!("RemoveContainer ({containers} {what})"), &result?)])
}
