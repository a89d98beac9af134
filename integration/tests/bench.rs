//! berth-bench kept from rotting: the real binary runs every workload with a handful of
//! runs against real berthds (loopback registry, busybox), `compare` over two of them
//! with an SVG chart, and `cni-floor` with Debian's reference CNI plugins. The tests
//! check the output's structure (steps present, numbers that parse, ratio columns), never
//! the figures, and that the runs left nothing behind.

use berth_integration::bench::chart;
use berth_integration::leaks::{mounts_under, NetEnv};
use berth_integration::pods::Node;
use berth_proto::{ListContainersRequest, ListPodSandboxRequest};
use serde_json::Value;
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const PLUGINS: &str = "/usr/lib/cni";

const LIFECYCLE_STEPS: [&str; 9] = [
    "RunPodSandbox",
    "CreateContainer",
    "StartContainer",
    "StopContainer",
    "RemoveContainer",
    "StopPodSandbox",
    "RemovePodSandbox",
    "pod + container running",
    "end to end",
];

fn run_bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth-bench")).args(args).output().expect("run berth-bench")
}

/// berth-bench's stdout; it must succeed.
fn bench(args: &[&str]) -> String {
    let out = run_bench(args);
    assert!(
        out.status.success(),
        "berth-bench {args:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// berth-bench's stderr; it must fail.
fn bench_fails(args: &[&str]) -> String {
    let out = run_bench(args);
    assert!(!out.status.success(), "berth-bench {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

/// A JSON array of summaries: the steps named, each with `runs` runs and its figures
/// numbers in order (min <= median <= p90 <= p99 <= max).
fn assert_summaries(v: &Value, steps: &[&str], runs: u64) {
    let rows = v.as_array().unwrap_or_else(|| panic!("not a list: {v}"));
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, steps, "{v}");
    for r in rows {
        assert_eq!(r["runs"], runs, "{r}");
        let f: Vec<f64> = ["min_ms", "median_ms", "p90_ms", "p99_ms", "max_ms"]
            .iter()
            .map(|k| r[k].as_f64().unwrap_or_else(|| panic!("{k} is not a number: {r}")))
            .collect();
        assert!(f[0] > 0.0 && f.windows(2).all(|w| w[0] <= w[1]), "{r}");
    }
}

/// The pods berthd made, from its log: berth-bench's pods have no cgroup parent, so
/// their cgroups are `berth/<pod id>`, beside those of any other berthd's such pods.
fn pods_made(node: &Node) -> Vec<String> {
    let log = node.berthd.log();
    let ids: BTreeSet<String> = log
        .lines()
        .filter(|l| l.contains("pod sandbox ready"))
        .filter_map(|l| l.split("pod_id=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect();
    ids.into_iter().collect()
}

/// No pod or container left on the node, nothing leaked (mounts, veths, rules, leases,
/// pod dirs), and none of its pods' cgroups left on any hierarchy.
async fn assert_clean(node: &Node) {
    let mut rt = node.berthd.runtime();
    let pods = rt.list_pod_sandbox(ListPodSandboxRequest::default()).await.unwrap();
    assert!(pods.get_ref().items.is_empty(), "pods left: {:?}", pods.get_ref().items);
    let ctrs = rt.list_containers(ListContainersRequest::default()).await.unwrap();
    assert!(ctrs.get_ref().containers.is_empty(), "containers left");
    node.env.assert_no_leaks(&node.berthd).await;
    let ids = pods_made(node);
    assert!(!ids.is_empty(), "no pod found in berthd's log: the cgroup check would check nothing");
    let hierarchies: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .map(|h| h.path())
        .chain([PathBuf::from("/sys/fs/cgroup")])
        .collect();
    let left: Vec<PathBuf> = hierarchies
        .iter()
        .flat_map(|h| ids.iter().map(move |id| h.join("berth").join(id)))
        .filter(|p| p.exists())
        .collect();
    assert!(left.is_empty(), "pod cgroups left: {left:?}");
}

fn endpoint(node: &Node) -> String {
    format!("unix://{}", node.berthd.socket().display())
}

/// Every workload on one berthd, options before and after the workload's name.
#[tokio::test(flavor = "multi_thread")]
async fn every_workload_on_one_berthd() {
    let node = Node::start().await;
    let ep = endpoint(&node);

    // Global options after the subcommand.
    let out =
        bench(&["lifecycle", "--image", "busybox", "--runs", "2", "--endpoint", &ep, "--json"]);
    assert_summaries(&json(&out), &LIFECYCLE_STEPS, 2);

    // The table: a header, then a row per step with its runs and five figures.
    let out = bench(&["--endpoint", &ep, "exec", "--runs", "3"]);
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header[..2], ["step", "runs"], "{out}");
    let row = lines.next().unwrap();
    let (name, figures) = row.split_at(28);
    assert_eq!(name.trim(), "ExecSync true", "{out}");
    let cols: Vec<&str> = figures.split_whitespace().collect();
    assert_eq!(cols[0], "3", "{out}");
    assert_eq!(cols[1..].iter().filter(|c| c.parse::<f64>().is_ok()).count(), 5, "{out}");
    assert!(lines.next().is_none(), "{out}");

    let out = bench(&["sandbox", "--runs", "3", "--concurrency", "2", "--json", "--endpoint", &ep]);
    assert_summaries(
        &json(&out),
        &["RunPodSandbox (x2)", "StopPodSandbox (x2)", "RemovePodSandbox (x2)"],
        3,
    );

    let out = bench(&["list", "--pods", "2", "--runs", "2", "--json", "--endpoint", &ep]);
    assert_summaries(&json(&out), &["ListPodSandbox (2 pods)", "ListContainers (2 containers)"], 2);

    let out = bench(&["burst", "--pods", "2", "--json", "--endpoint", &ep]);
    let v = json(&out);
    assert_eq!(v[0]["name"], "pod + container running (x2)", "{v}");
    assert_eq!((v[0]["runs"].as_u64(), v[1]["name"].as_str()), (Some(2), Some("all 2 running")));

    let out = bench(&[
        "density",
        "--pods",
        "2",
        "--process",
        "berthd",
        "--process",
        "berth-shim",
        "--json",
        "--endpoint",
        &ep,
    ]);
    let v = json(&out);
    assert_eq!(v["pods"], 2, "{v}");
    assert!(v["idle"]["berthd"]["rss_kib"].as_u64().unwrap() > 0, "{v}");
    // Shims of other berthds on the machine count too: at least this one's two.
    assert!(v["loaded"]["berth-shim"]["processes"].as_u64().unwrap() >= 2, "{v}");

    // Last: it removes the image (before each pull, and after the last).
    let out = bench(&["pull", "--image", "busybox", "--runs", "2", "--json", "--endpoint", &ep]);
    assert_summaries(&json(&out), &["PullImage"], 2);

    assert_clean(&node).await;
}

/// `compare` over two berthds (interleaved, labelled, with a chart), the same one twice
/// (labels from Version), a sequential workload, and what it refuses.
#[tokio::test(flavor = "multi_thread")]
async fn compare_two_berthds_side_by_side() {
    let (a, b) = (Node::start().await, Node::start().await);
    let (ea, eb) = (endpoint(&a), endpoint(&b));
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("lifecycle.svg");
    let svg_arg = svg.display().to_string();

    let out = bench(&[
        "compare",
        "--endpoint",
        &ea,
        "--label",
        "one",
        "--endpoint",
        &eb,
        "--label",
        "two",
        "lifecycle",
        "--runs",
        "2",
        "--svg",
        &svg_arg,
    ]);
    let mut lines = out.lines();
    assert!(lines.next().unwrap().contains("rounds interleaved"), "{out}");
    assert_eq!(lines.next().unwrap(), format!("  A: one ({ea})"), "{out}");
    assert_eq!(lines.next().unwrap(), format!("  B: two ({eb})"), "{out}");
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["step", "A", "ms", "B", "ms", "B/A"], "{out}");
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), LIFECYCLE_STEPS.len(), "{out}");
    for (row, step) in rows.iter().zip(LIFECYCLE_STEPS) {
        let rest = row.strip_prefix(step).unwrap_or_else(|| panic!("{step} missing:\n{out}"));
        let cols: Vec<&str> = rest.split_whitespace().collect();
        assert_eq!(cols.len(), 3, "{row}");
        assert!(cols[0].parse::<f64>().unwrap() > 0.0 && cols[1].parse::<f64>().unwrap() > 0.0);
        let ratio = cols[2].strip_suffix('x').unwrap_or_else(|| panic!("no ratio: {row}"));
        assert!(ratio.parse::<f64>().unwrap() > 0.0, "{row}");
    }
    assert_chart(&svg, &LIFECYCLE_STEPS, &["one", "two"]);

    // The same endpoint twice, labelled from Version.
    let out =
        bench(&["compare", "--endpoint", &ea, "--endpoint", &ea, "exec", "--runs", "3", "--json"]);
    let v = json(&out);
    assert_eq!((v["workload"].as_str(), v["order"].as_str()), (Some("exec"), Some("interleaved")));
    let label = v["endpoints"][0]["label"].as_str().unwrap();
    assert!(label.starts_with("berth "), "{v}");
    assert_eq!(v["endpoints"][1]["label"], format!("{label} #2"), "{v}");
    assert_eq!(v["steps"][0]["step"], "ExecSync true", "{v}");
    assert_eq!(v["steps"][0]["ratios"][0], 1.0, "{v}");
    assert!(v["steps"][0]["ratios"][1].as_f64().unwrap() > 0.0, "{v}");
    assert_eq!(v["summaries"][1][0]["runs"], 3, "{v}");

    // Pods held for the whole measurement: one endpoint after the other.
    let out = bench(&[
        "compare",
        "--endpoint",
        &ea,
        "--endpoint",
        &eb,
        "list",
        "--pods",
        "1",
        "--runs",
        "2",
        "--json",
    ]);
    let v = json(&out);
    assert_eq!(v["order"], "sequential", "{v}");
    let steps: Vec<&str> =
        v["steps"].as_array().unwrap().iter().map(|s| s["step"].as_str().unwrap()).collect();
    assert_eq!(steps, ["ListPodSandbox (1 pods)", "ListContainers (1 containers)"]);

    // Refused before anything is made.
    let err = bench_fails(&["compare", "--endpoint", &ea, "lifecycle", "--runs", "1"]);
    assert!(err.contains("two or more --endpoint"), "{err}");
    let err = bench_fails(&[
        "compare",
        "--endpoint",
        &ea,
        "--endpoint",
        &eb,
        "--label",
        "x",
        "exec",
        "--runs",
        "1",
    ]);
    assert!(err.contains("--label"), "{err}");
    let err = bench_fails(&["lifecycle", "--endpoint", &ea, "--endpoint", &eb, "--runs", "1"]);
    assert!(err.contains("berth-bench compare"), "{err}");
    // clap would keep only one side's: refused rather than an endpoint silently dropped.
    let err = bench_fails(&[
        "--endpoint",
        &ea,
        "compare",
        "--endpoint",
        &eb,
        "--endpoint",
        &eb,
        "exec",
        "--runs",
        "1",
    ]);
    assert!(err.contains("same side"), "{err}");

    assert_clean(&a).await;
    assert_clean(&b).await;
}

/// The chart parses as SVG: every step and label written, and one bar per step for each
/// endpoint (plus its legend swatch) in the endpoint's colour.
fn assert_chart(path: &Path, steps: &[&str], labels: &[&str]) {
    let text = std::fs::read_to_string(path).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap_or_else(|e| panic!("bad SVG ({e})"));
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let texts: BTreeSet<String> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text().map(|t| t.trim().to_string()))
        .collect();
    for s in steps.iter().chain(labels) {
        assert!(texts.contains(*s), "{s:?} not in the chart's texts: {texts:?}");
    }
    for (k, label) in labels.iter().enumerate() {
        let color = chart::color_hex(k);
        let rects = doc
            .descendants()
            .filter(|n| n.has_tag_name("rect") && n.attribute("fill") == Some(color.as_str()))
            .count();
        assert_eq!(rects, steps.len() + 1, "bars of {} ({color})", label);
    }
}

/// host-local's leases in `data_dir/<network>`.
fn leases(data_dir: &Path, network: &str) -> Vec<String> {
    std::fs::read_dir(data_dir.join(network))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
                .collect()
        })
        .unwrap_or_default()
}

/// berth-bench's namespace pins: mounts under /run/berth-bench-netns-*, and the
/// directories.
fn netns_pins() -> Vec<String> {
    let mut left: Vec<String> = mounts_under(Path::new("/run"))
        .into_iter()
        .filter(|m| m.contains("/berth-bench-netns-"))
        .collect();
    for e in std::fs::read_dir("/run").into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().starts_with("berth-bench-netns-") {
            left.push(e.path().display().to_string());
        }
    }
    left
}

/// The reference plugins (bridge + host-local, then tuning) ADDed and DELeted through
/// the first config file by name; a plugin that fails ADD leaves nothing behind either.
#[tokio::test(flavor = "multi_thread")]
async fn cni_floor_runs_the_reference_plugins() {
    assert!(
        Path::new(PLUGINS).join("bridge").exists(),
        "the CNI plugins are not installed (apt-get install containernetworking-plugins)"
    );
    let env = NetEnv::new();
    let name = format!("benchtest-{}", env.x);
    let tmp = |p: &str| tempfile::Builder::new().prefix(p).tempdir().unwrap();
    let (conf, data, bin) = (tmp("bench-cni-conf-"), tmp("bench-cni-data-"), tmp("bench-cni-bin-"));
    let list = |last: &str| {
        serde_json::json!({
            "cniVersion": "1.0.0",
            "name": name,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": env.bridge,
                    "isGateway": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{ "subnet": env.subnet }]],
                        "dataDir": data.path(),
                    }
                },
                { "type": last }
            ]
        })
        .to_string()
    };
    std::fs::write(conf.path().join("10-bench.conflist"), list("tuning")).unwrap();
    // Sorts after the first: were it used, the run would fail.
    std::fs::write(conf.path().join("20-other.conflist"), list("no-such-plugin")).unwrap();
    let conf_arg = conf.path().display().to_string();
    let bin_arg = bin.path().display().to_string();

    let out = bench(&[
        "cni-floor",
        "--conf-dir",
        &conf_arg,
        "--bin-dir",
        PLUGINS,
        "--runs",
        "3",
        "--json",
    ]);
    assert_summaries(
        &json(&out),
        &["CNI ADD", "CNI DEL", "ADD bridge", "ADD tuning", "DEL bridge", "DEL tuning"],
        3,
    );
    let ports = env.bridge_ports();
    assert!(ports.is_empty(), "veths left on {}: {ports:?}", env.bridge);
    assert!(leases(data.path(), &name).is_empty(), "leases left");
    assert!(netns_pins().is_empty(), "netns pins left: {:?}", netns_pins());

    // A plugin that fails its ADD after bridge succeeded: the error names it, and DEL of
    // the list gives back the lease and the veth.
    std::fs::write(conf.path().join("10-bench.conflist"), list("failing")).unwrap();
    let plugin = bin.path().join("failing");
    std::fs::write(
        &plugin,
        "#!/bin/sh\n[ \"$CNI_COMMAND\" = ADD ] || exit 0\n\
         echo '{\"cniVersion\":\"1.0.0\",\"code\":999,\"msg\":\"refused by the test\"}'\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let err = bench_fails(&[
        "cni-floor",
        "--conf-dir",
        &conf_arg,
        "--bin-dir",
        &bin_arg,
        "--bin-dir",
        PLUGINS,
        "--runs",
        "2",
    ]);
    assert!(err.contains("failing") && err.contains("refused by the test"), "{err}");
    let ports = env.bridge_ports();
    assert!(ports.is_empty(), "veths left on {}: {ports:?}", env.bridge);
    assert!(leases(data.path(), &name).is_empty(), "leases left after a failed ADD");
    assert!(netns_pins().is_empty(), "netns pins left: {:?}", netns_pins());

    // A plugin that is not installed: named, with where it was looked for.
    let err = bench_fails(&["cni-floor", "--conf-dir", &conf_arg, "--bin-dir", PLUGINS]);
    assert!(err.contains("\"failing\"") && err.contains(PLUGINS), "{err}");
    let err = bench_fails(&["cni-floor", "--conf-dir", &bin_arg]);
    assert!(err.contains("--conf-dir") && err.contains("no CNI network config"), "{err}");
    let err = bench_fails(&["cni-floor", "--endpoint", "unix:///nowhere.sock"]);
    assert!(err.contains("no CRI endpoint"), "{err}");
}
