//! The CRI endpoints a run drives: their clients, and the label each is shown under
//! (given with `--label`, else the runtime's own name and version from `Version`).

use berth_proto::{ImageServiceClient, RuntimeServiceClient, VersionRequest};
use serde::Serialize;
use tonic::transport::Channel;

pub type Runtime = RuntimeServiceClient<Channel>;
pub type Images = ImageServiceClient<Channel>;

/// Where berth listens by default.
pub const DEFAULT_ENDPOINT: &str = "unix:///run/berth/berth.sock";

/// One endpoint of a run.
#[derive(Clone)]
pub struct Target {
    pub info: EndpointInfo,
    pub runtime: Runtime,
    pub images: Images,
    /// Part of the names of the pods made on it, so that one runtime given twice (or two
    /// runtimes seeing one another's pods) never gets two pods of the same name.
    pub tag: String,
}

/// What the report says about an endpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndpointInfo {
    pub label: String,
    pub endpoint: String,
    pub runtime_name: String,
    pub runtime_version: String,
}

/// Connects to every endpoint and labels it: `labels[k]` when given (then one per
/// endpoint), else "<runtime name> <version>"; a label met twice gets " #2", " #3".
pub async fn connect(endpoints: &[String], labels: &[String]) -> anyhow::Result<Vec<Target>> {
    anyhow::ensure!(
        labels.is_empty() || labels.len() == endpoints.len(),
        "{} --label for {} --endpoint: give one label per endpoint, or none",
        labels.len(),
        endpoints.len()
    );
    let mut targets: Vec<Target> = Vec::with_capacity(endpoints.len());
    for (k, endpoint) in endpoints.iter().enumerate() {
        let channel = berth_proto::connect_unix(endpoint)
            .await
            .map_err(|e| anyhow::anyhow!("--endpoint {endpoint}: cannot connect: {e}"))?;
        let mut runtime = RuntimeServiceClient::new(channel.clone());
        let version = runtime
            .version(VersionRequest { version: "v1".into() })
            .await
            .map_err(|e| anyhow::anyhow!("--endpoint {endpoint}: Version failed: {e}"))?
            .into_inner();
        let own = format!("{} {}", version.runtime_name, version.runtime_version);
        let base = labels.get(k).cloned().unwrap_or(own);
        let seen = targets.iter().filter(|t| same_base(&t.info.label, &base)).count();
        let label = if seen == 0 { base } else { format!("{base} #{}", seen + 1) };
        targets.push(Target {
            info: EndpointInfo {
                label,
                endpoint: endpoint.clone(),
                runtime_name: version.runtime_name,
                runtime_version: version.runtime_version,
            },
            runtime,
            images: ImageServiceClient::new(channel),
            tag: format!("e{k}"),
        });
    }
    Ok(targets)
}

fn same_base(label: &str, base: &str) -> bool {
    label == base
        || label
            .strip_prefix(base)
            .and_then(|rest| rest.strip_prefix(" #"))
            .is_some_and(|n| n.parse::<u32>().is_ok())
}
