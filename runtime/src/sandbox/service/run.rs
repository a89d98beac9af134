//! RunPodSandbox: one set-up per pod name, then every part of the pod made in turn, each
//! with its undo pushed as it is made, so that a failure anywhere leaves nothing behind.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use berth_network::cni::{self, PodRequest};
use berth_network::netns;
use berth_network::{Attached, PodNetworks, PortMapping, Protocol};

use super::pod_cgroup::record_cgroup_parents;
use super::{Result, SandboxError, Sandboxes};
use crate::clock::now_ns;
use crate::error::internal;
use crate::ids::new_id;
use crate::mount_table;
use crate::sandbox::cgroup;
use crate::sandbox::files;
use crate::sandbox::mounts;
use crate::sandbox::namespaces::{self, NsRequest};
use crate::sandbox::pod_spec::{self, PodSpec, ValidSpec};
use crate::sandbox::record::{NameRecord, PortRecord, SandboxRecord, SandboxState};
use crate::sandbox::slice;
use crate::sandbox::sysctl::SysctlNs;
use crate::sandbox::undo::Undo;
use crate::sandbox::userns;

impl Sandboxes {
    /// Runs a pod: validates the request, then creates everything, or nothing.
    pub async fn run(&self, spec: PodSpec) -> Result<String> {
        let v =
            pod_spec::validate(spec, self.inner.driver).map_err(SandboxError::InvalidArgument)?;
        // PID mode POD (the CRI default): the pod's containers are to share one PID
        // namespace with an init as PID 1. berthd never forks, so that namespace and its
        // init come from the pod shim with the first container; the sandbox itself has no
        // process, and says so in its verbose status.
        if !v.host_network() {
            if let Err(e) = &self.inner.network {
                return Err(SandboxError::FailedPrecondition(format!(
                    "the pod network is not ready: {e}"
                )));
            }
        }
        // On a task of its own: a caller that goes away does not stop set-up half-way
        // (and if it did, the undo stack would still clean up).
        let this = self.clone();
        let setup = async move {
            // One set-up per pod name at a time: the kubelet's retry of a RunPodSandbox that
            // outlived its deadline waits here, then gets the pod the first call made.
            let key = v.metadata.key();
            let _name_lock = this.inner.locks.lock(format!("name/{key}")).await;
            if let Some(id) = this.finished_twin(&key, &v)? {
                return Ok(id);
            }
            let id = new_id().map_err(internal)?;
            this.run_inner(id.clone(), v).await.map(|()| id)
        };
        tokio::spawn(tracing::Instrument::in_current_span(setup))
            .await
            .map_err(|e| internal(format!("pod set-up task: {e}")))?
    }

    /// The ready pod an identical earlier request made under this name, if any. A pod
    /// under the name that differs, or is no longer ready, keeps the name reserved.
    fn finished_twin(&self, key: &str, v: &ValidSpec) -> Result<Option<String>> {
        let Some(holder) = self.inner.meta.get::<NameRecord>(key)? else { return Ok(None) };
        let rec = self.inner.meta.get::<SandboxRecord>(&holder.sandbox_id)?;
        match rec {
            Some(r)
                if r.state == SandboxState::Ready
                    && r.labels == v.spec.labels
                    && r.annotations == v.spec.annotations
                    && r.runtime_handler == v.spec.runtime_handler
                    && r.log_directory == v.spec.log_directory =>
            {
                Ok(Some(r.id))
            }
            _ => Err(SandboxError::AlreadyExists(format!(
                "pod sandbox name {key:?} is reserved for {}",
                holder.sandbox_id
            ))),
        }
    }

    async fn run_inner(&self, id: String, v: ValidSpec) -> Result<()> {
        let _lock = self.inner.locks.lock(id.clone()).await;
        let started = std::time::Instant::now();
        let dir = self.inner.pods_dir.path().join(&id);
        let cgroup_rel = match self.inner.driver {
            cgroup::Driver::Cgroupfs => cgroup::pod_cgroup(&v.spec.cgroup_parent, &id),
            cgroup::Driver::Systemd => {
                crate::systemd::pod_slice(&v.spec.cgroup_parent, &id).map(|(_, rel)| rel).map_err(
                    |e| SandboxError::InvalidArgument(format!("config.linux.cgroup_parent: {e}")),
                )?
            }
        };
        let mut rec = SandboxRecord {
            id: id.clone(),
            metadata: v.metadata.clone(),
            state: SandboxState::Creating,
            created_at: now_ns(),
            labels: v.spec.labels.clone(),
            annotations: v.spec.annotations.clone(),
            runtime_handler: v.spec.runtime_handler.clone(),
            hostname: v.spec.hostname.clone(),
            log_directory: v.spec.log_directory.clone(),
            dns: v.spec.dns.clone(),
            network: v.spec.network,
            pid: v.spec.pid,
            ipc: v.spec.ipc,
            dir: dir.clone(),
            cgroup: cgroup_rel.clone(),
            resources: v.spec.resources,
            port_mappings: v
                .port_mappings
                .iter()
                .map(|m| PortRecord {
                    protocol: format!("{:?}", m.protocol).to_lowercase(),
                    host_port: m.host_port,
                    container_port: m.container_port,
                    host_ip: m.host_ip,
                })
                .collect(),
            sysctls: v.spec.sysctls.clone(),
            ..Default::default()
        };
        let mut undo = Undo::default();
        match self.create(&mut rec, &v, &mut undo).await {
            Ok(()) => {
                undo.commit();
                tracing::info!(pod_id = %id, name = %v.metadata.key(), ip = ?rec.ip, elapsed_ms = started.elapsed().as_secs_f64() * 1000.0, "pod sandbox ready");
                Ok(())
            }
            Err(e) => {
                tracing::info!(pod_id = %id, error = %e, "pod sandbox failed; undoing");
                undo.rollback().await;
                Err(e)
            }
        }
    }

    /// Makes the pod, part by part (the network beside the parts that do not need it); each
    /// part pushes its undo on `undo` as it is made.
    async fn create(&self, rec: &mut SandboxRecord, v: &ValidSpec, undo: &mut Undo) -> Result<()> {
        // The cgroupfs directories to be made are planned now and recorded with the
        // reservation: one sync to disk fewer than recording them on their own before
        // they are made (`make_pod_cgroup` records only what went missing since).
        let slice_unit = slice::slice_unit(&rec.cgroup).map(str::to_string);
        if slice_unit.is_none() {
            rec.cgroup_created = cgroup::missing(&self.inner.hierarchies, &rec.cgroup);
        }
        // The record goes to disk beside the making of the pod's directory and network
        // namespace (a sync and a new namespace each take a fraction of a millisecond): a
        // crash before the record lands leaves a directory no record names, which
        // start-up removes with the namespace pinned in it. Nothing else is made before.
        let reserving = self.reserve(rec, v);
        let network = self.inner.network.as_ref().ok();
        let made = async {
            make_pod_dir(&rec.dir, undo)?;
            make_netns(rec, v, network, undo).await
        }
        .await;
        let reserved = reserving
            .await
            .map_err(internal)?
            .map(|record| undo.push("record", move || record.run()));
        made?;
        reserved?;
        crate::failpoint::crash_point("sandbox.recorded");
        self.start_shim_early(&rec.id, undo);
        // The network needs only the pod's network namespace: it is connected on a task
        // of its own beside the rest of the set-up, which does not need it (a CNI plugin
        // chain takes tens of milliseconds, berth's bridge one or two; the rest about two).
        let network = self.connect_network(rec, v, undo)?;
        let rest = async {
            make_ipc_uts(rec, v, undo).await?;
            make_shm(rec, v, undo)?;
            // What will be made is recorded first, so that a crash at any point leaves a
            // record start-up can clean up from (removal tolerates what was never made,
            // and keeps a parent another pod still uses).
            if let Some(unit) = slice_unit {
                self.make_pod_slice(rec, &unit, v.spec.resources.as_ref(), undo).await
            } else {
                self.make_pod_cgroup(rec, v.spec.resources.as_ref(), undo)
            }
        };
        // Both end before either's failure is returned: the undo then removes all.
        let (made, connected) = tokio::join!(rest, network);
        made?;
        if let Some(got) = connected.map_err(internal)?? {
            rec.ip = got.ipv4();
            rec.ips = got.ips;
            rec.veth = got.veth;
        }
        write_pod_files(rec, v)?;
        rec.state = SandboxState::Ready;
        let mut tx = self.inner.meta.write()?;
        tx.put(&rec.id, &*rec)?;
        tx.commit()?;
        Ok(())
    }

    /// The record and the name reservation, in one transaction, with the shared cgroup
    /// parent directories the pod's cgroup plan makes (`rec.cgroup_created`), committed on
    /// the blocking pool; the task's answer is the undo that deletes them again.
    fn reserve(
        &self,
        rec: &SandboxRecord,
        v: &ValidSpec,
    ) -> tokio::task::JoinHandle<Result<RecordUndo>> {
        let meta = self.inner.meta.clone();
        let (rec, key) = (rec.clone(), v.metadata.key());
        crate::traced::spawn_blocking(move || {
            let mut tx = meta.write()?;
            if let Some(holder) = tx.get::<NameRecord>(&key)? {
                return Err(SandboxError::AlreadyExists(format!(
                    "pod sandbox name {key:?} is reserved for {}",
                    holder.sandbox_id
                )));
            }
            tx.put(&key, &NameRecord { sandbox_id: rec.id.clone() })?;
            record_cgroup_parents(&mut tx, &rec.cgroup_created, &rec.cgroup)?;
            tx.put(&rec.id, &rec)?;
            tx.commit()?;
            Ok(RecordUndo { meta, id: rec.id, key })
        })
    }

    /// The pod's shim starts now, beside the rest of the set-up, and is not waited for:
    /// the first container waits for it if it has to. After a crash from here on,
    /// start-up stops a shim whose pod it removed.
    fn start_shim_early(&self, id: &str, undo: &mut Undo) {
        let Some(shims) = self.inner.shims.get() else { return };
        shims.clone().start_early(id);
        let (shims, id) = (shims.clone(), id.to_string());
        undo.push_async("shim", move || async move {
            crate::traced::spawn_blocking(move || shims.discard(&id))
                .await
                .map_err(|e| e.to_string())
        });
    }

    /// Starts connecting the pod network, then writing the net sysctls (some name the
    /// pod's eth0), on a task of its own; its undo is pushed first. `None` from the task
    /// for a pod without a network namespace of its own.
    fn connect_network(
        &self,
        rec: &SandboxRecord,
        v: &ValidSpec,
        undo: &mut Undo,
    ) -> Result<tokio::task::JoinHandle<Result<Option<Attached>>>> {
        let Some(pin) = rec.netns.clone() else {
            return Ok(tokio::spawn(async { Ok(None) }));
        };
        let network = self.network()?;
        let req = pod_request(rec, &pin);
        {
            let (network, req) = (network.clone(), req.clone());
            undo.push_async("network", move || async move {
                network.teardown_pod(&req).await.map_err(|e| e.to_string())
            });
        }
        let net_sysctls: Vec<_> =
            v.sysctls.iter().filter(|s| s.ns == SysctlNs::Net).cloned().collect();
        let connect = async move {
            let got = network.setup_pod(&req).await?;
            crate::failpoint::crash_point("sandbox.network");
            if !net_sysctls.is_empty() {
                netns::run_in_async(&pin, move || {
                    net_sysctls.iter().try_for_each(namespaces::write_sysctl)
                })
                .await??;
            }
            Ok(Some(got))
        };
        Ok(tokio::spawn(tracing::Instrument::in_current_span(connect)))
    }
}

/// Deletes a pod's record and its name reservation: the undo of [`Sandboxes::reserve`].
struct RecordUndo {
    meta: std::sync::Arc<crate::metadata::MetadataStore>,
    id: String,
    key: String,
}

impl RecordUndo {
    fn run(self) -> std::result::Result<(), String> {
        let mut tx = self.meta.write().map_err(|e| e.to_string())?;
        tx.delete::<SandboxRecord>(&self.id).map_err(|e| e.to_string())?;
        tx.delete::<NameRecord>(&self.key).map_err(|e| e.to_string())?;
        tx.commit().map_err(|e| e.to_string())
    }
}

/// The pod's directory: everything else of the pod's on disk goes in it.
fn make_pod_dir(dir: &Path, undo: &mut Undo) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(dir.join("ns"))
        .map_err(|e| internal(format!("create {}: {e}", dir.display())))?;
    let dir = dir.to_path_buf();
    undo.push("pod directory", move || mount_table::remove_tree(&dir));
    Ok(())
}

/// The IPC and UTS namespaces' request: where they are pinned, and what they get.
fn ipc_uts_request(rec: &SandboxRecord, v: &ValidSpec) -> NsRequest {
    let dir = &rec.dir;
    NsRequest {
        ipc: (!v.host_ipc()).then(|| dir.join("ns/ipc")),
        uts: (!v.host_network()).then(|| (dir.join("ns/uts"), v.spec.hostname.clone())),
        ipc_sysctls: v.sysctls.iter().filter(|s| s.ns == SysctlNs::Ipc).cloned().collect(),
        existing: false,
    }
}

/// The pod's network namespace, pinned in its directory. With a user namespace, net,
/// IPC and UTS are all made inside it (so it owns them) and configured from here.
async fn make_netns(
    rec: &mut SandboxRecord,
    v: &ValidSpec,
    network: Option<&PodNetworks>,
    undo: &mut Undo,
) -> Result<()> {
    let dir = rec.dir.clone();
    if let Some(userns) = v.userns {
        let pins = userns::Pins {
            user: dir.join("ns/user"),
            net: dir.join("ns/net"),
            ipc: dir.join("ns/ipc"),
            uts: dir.join("ns/uts"),
        };
        rec.userns = Some(userns);
        rec.user_ns = Some(pins.user.clone());
        rec.netns = Some(pins.net.clone());
        let made = pins.clone();
        crate::traced::spawn_blocking(move || userns::create(&userns, &made))
            .await
            .map_err(internal)?
            .map_err(internal)?;
        undo.push("user namespace pins", move || {
            userns::remove(&pins);
            Ok(())
        });
    } else if !v.host_network() {
        let pin = dir.join("ns/net");
        // The bridge's pod network made ahead, if one waits: its namespace, pinned here.
        let warm = match network {
            Some(n) => n.pin_warm(&rec.id, &pin)?,
            None => false,
        };
        if !warm {
            netns::create_at(&pin)?;
        }
        rec.netns = Some(pin.clone());
        let (network, id) = (network.filter(|_| warm).cloned(), rec.id.clone());
        undo.push("netns pin", move || {
            if let Some(n) = network {
                n.release_warm(&id);
            }
            netns::remove(&pin).map_err(|e| e.to_string())
        });
    }
    crate::failpoint::crash_point("sandbox.netns");
    Ok(())
}

/// The pod's IPC and UTS namespaces, pinned in its directory (made there, or with a user
/// namespace made with it by [`make_netns`] and configured here).
async fn make_ipc_uts(rec: &mut SandboxRecord, v: &ValidSpec, undo: &mut Undo) -> Result<()> {
    let mut req = ipc_uts_request(rec, v);
    req.existing = rec.userns.is_some();
    rec.ipc_ns = req.ipc.clone();
    rec.uts_ns = req.uts.as_ref().map(|(p, _)| p.clone());
    let pins: Vec<PathBuf> = rec.ipc_ns.iter().chain(rec.uts_ns.iter()).cloned().collect();
    crate::traced::spawn_blocking(move || namespaces::create(req)).await.map_err(internal)??;
    undo.push("ipc/uts pins", move || pins.iter().try_for_each(|p| namespaces::remove_pin(p)));
    Ok(())
}

/// The pod's /dev/shm: its own tmpfs, or the host's with the host's IPC namespace.
fn make_shm(rec: &mut SandboxRecord, v: &ValidSpec, undo: &mut Undo) -> Result<()> {
    if v.host_ipc() {
        rec.shm = Some(PathBuf::from("/dev/shm"));
        return Ok(());
    }
    let shm = rec.dir.join("shm");
    mounts::mount_shm(&shm, mounts::SHM_SIZE).map_err(internal)?;
    rec.shm = Some(shm.clone());
    undo.push("shm", move || mount_table::unmount(&shm));
    Ok(())
}

/// hostname, resolv.conf and hosts, which the containers bind-mount. They go with the
/// pod's directory, so they push no undo of their own.
fn write_pod_files(rec: &SandboxRecord, v: &ValidSpec) -> Result<()> {
    let (hostname, hosts) = if v.host_network() {
        let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        (files::host_hostname(), hosts)
    } else {
        (v.spec.hostname.clone(), files::hosts(&v.spec.hostname, rec.ip))
    };
    let resolv = match &v.spec.dns {
        Some(dns) => files::resolv_conf(dns),
        None => std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
    };
    for (name, text) in
        [("hostname", format!("{hostname}\n")), ("resolv.conf", resolv), ("hosts", hosts)]
    {
        let path = rec.dir.join(name);
        std::fs::write(&path, text)
            .map_err(|e| internal(format!("write {}: {e}", path.display())))?;
    }
    Ok(())
}

/// What the pod network is told about a pod (CNI_ARGS, capabilities), from its record.
pub(super) fn pod_request(rec: &SandboxRecord, netns: &std::path::Path) -> PodRequest {
    let port_mappings = rec
        .port_mappings
        .iter()
        .filter_map(|p| {
            let protocol = Protocol::from_name(&p.protocol)?;
            Some(PortMapping {
                protocol,
                host_port: p.host_port,
                container_port: p.container_port,
                host_ip: p.host_ip,
            })
        })
        .collect();
    PodRequest {
        pod_id: rec.id.clone(),
        namespace: rec.metadata.namespace.clone(),
        name: rec.metadata.name.clone(),
        uid: rec.metadata.uid.clone(),
        netns: netns.to_path_buf(),
        port_mappings,
        dns: rec.dns.as_ref().map(|d| cni::Dns {
            servers: d.servers.clone(),
            searches: d.searches.clone(),
            options: d.options.clone(),
        }),
        annotations: rec.annotations.clone(),
    }
}
