//! One pod's life on a process node: sandbox, volumes, init containers, containers, probes,
//! restarts, status, and graceful deletion. One task per pod, fed the latest pod object.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, Pod, PodCondition, Secret, ServiceAccount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::config::KubeletConfig;
use crate::env::{PodObjects, PodRuntime, container_env, expand};
use crate::mounts::{BindMount, script};
use crate::probe::{self, ProbeEvent, ProbeKind};
use crate::sandbox::Sandbox;
use crate::status::{Observed, Phase, pod_conditions, status_patch};
use crate::volumes::{self, check_relative, token_key};

/// A fake node as the pod workers see it.
#[derive(Debug)]
pub struct NodeContext {
    pub name: String,
    pub index: u8,
    pub ip: Ipv4Addr,
    /// Host parts (2..=254) of 10.244.<index>.x in use.
    pub ips_in_use: Mutex<std::collections::BTreeSet<u8>>,
    /// RuntimeClass handlers this node runs (`kata-qemu-snp` on an SNP node).
    pub handlers: Vec<&'static str>,
}

impl NodeContext {
    fn allocate_ip(&self) -> anyhow::Result<Ipv4Addr> {
        let mut used = self
            .ips_in_use
            .lock()
            .map_err(|_| anyhow::anyhow!("ip pool poisoned"))?;
        let host = (2..=254u8)
            .find(|h| !used.contains(h))
            .context("no free pod IP on this node")?;
        used.insert(host);
        Ok(Ipv4Addr::new(10, 244, self.index, host))
    }

    fn release_ip(&self, ip: Ipv4Addr) {
        if let Ok(mut used) = self.ips_in_use.lock() {
            used.remove(&ip.octets()[3]);
        }
    }
}

/// What every pod worker shares.
#[derive(Clone)]
pub struct Shared {
    pub client: Client,
    pub cfg: Arc<KubeletConfig>,
    pub recorder: Recorder,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Exit {
    container: usize,
    generation: u64,
    status: ExitStatus,
}

/// One container (init or app) and its current run.
#[derive(Debug)]
struct Ctr {
    spec: Container,
    init: bool,
    generation: u64,
    pid: Option<u32>,
    started_at: Option<Timestamp>,
    terminated: Option<ContainerStateTerminated>,
    last_terminated: Option<ContainerStateTerminated>,
    waiting: Option<(String, String)>,
    restart_count: i32,
    restart_at: Option<Instant>,
    ready: bool,
    started: bool,
    env: Vec<(String, String)>,
    probes: Vec<JoinHandle<()>>,
}

impl Ctr {
    fn new(spec: Container, init: bool) -> Ctr {
        Ctr {
            spec,
            init,
            generation: 0,
            pid: None,
            started_at: None,
            terminated: None,
            last_terminated: None,
            waiting: Some(("ContainerCreating".into(), String::new())),
            restart_count: 0,
            restart_at: None,
            ready: false,
            started: false,
            env: Vec::new(),
            probes: Vec::new(),
        }
    }

    fn running(&self) -> bool {
        self.pid.is_some()
    }

    fn stop_probes(&mut self) {
        for p in self.probes.drain(..) {
            p.abort();
        }
    }

    fn status(&self) -> ContainerStatus {
        let state = if let (true, Some(at)) = (self.running(), self.started_at) {
            ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(Time(at)),
                }),
                ..ContainerState::default()
            }
        } else if let Some(t) = &self.terminated {
            ContainerState {
                terminated: Some(t.clone()),
                ..ContainerState::default()
            }
        } else {
            let (reason, message) = self.waiting.clone().unwrap_or_default();
            ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason),
                    message: (!message.is_empty()).then_some(message),
                }),
                ..ContainerState::default()
            }
        };
        ContainerStatus {
            name: self.spec.name.clone(),
            image: self.spec.image.clone().unwrap_or_default(),
            image_id: format!("process://{}", self.spec.image.clone().unwrap_or_default()),
            container_id: self.pid.map(|p| format!("process://{p}")),
            ready: self.ready,
            started: Some(self.started),
            restart_count: self.restart_count,
            state: Some(state),
            last_state: self.last_terminated.as_ref().map(|t| ContainerState {
                terminated: Some(t.clone()),
                ..ContainerState::default()
            }),
            ..ContainerStatus::default()
        }
    }
}

fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

/// Absolute path of a program on the kubelet's PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        let p = PathBuf::from(program);
        return p.is_file().then_some(p);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

/// argv for a container: the image's executable, or `command` (whose first element is mapped
/// to the image's executable when the names match), then `args`; `$(VAR)` expanded.
pub fn container_argv(
    c: &Container,
    exe: &Path,
    env: &[(String, String)],
) -> anyhow::Result<Vec<String>> {
    let exp = |v: &[String]| v.iter().map(|s| expand(s, env)).collect::<Vec<_>>();
    let mut argv = match c.command.as_deref() {
        Some(cmd) if !cmd.is_empty() => {
            let mut cmd = exp(cmd);
            let name = Path::new(&cmd[0]).file_name();
            if name.is_some() && name == exe.file_name() {
                cmd[0] = exe.to_string_lossy().into_owned();
            } else {
                let found = which(&cmd[0]).with_context(|| {
                    format!(
                        "command {:?} is neither the image's executable {} nor a program on this machine",
                        cmd[0],
                        exe.display()
                    )
                })?;
                cmd[0] = found.to_string_lossy().into_owned();
            }
            cmd
        }
        _ => vec![exe.to_string_lossy().into_owned()],
    };
    argv.extend(exp(c.args.as_deref().unwrap_or_default()));
    Ok(argv)
}

struct Worker {
    shared: Shared,
    node: Arc<NodeContext>,
    pod: Pod,
    uid: String,
    dir: PathBuf,
    sandbox: Option<Sandbox>,
    ip: Option<Ipv4Addr>,
    start_time: Option<Time>,
    ctrs: Vec<Ctr>,
    objs: PodObjects,
    volumes: BTreeMap<String, PathBuf>,
    exit_tx: mpsc::Sender<Exit>,
    probe_tx: mpsc::Sender<ProbeEvent>,
    last_patch: Option<Value>,
    last_conditions: Vec<PodCondition>,
    setup_error: Option<String>,
    failed: bool,
    deleting: bool,
}

/// Runs the pod until it is deleted (or the receiver is closed).
pub async fn run(shared: Shared, node: Arc<NodeContext>, mut rx: watch::Receiver<Option<Pod>>) {
    let Some(pod) = rx.borrow_and_update().clone() else {
        return;
    };
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let name = format!(
        "{}_{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    );
    let dir = shared
        .cfg
        .run_dir
        .join("pods")
        .join(format!("{name}_{}", uid.get(..8).unwrap_or(&uid)));
    let (exit_tx, mut exit_rx) = mpsc::channel(16);
    let (probe_tx, mut probe_rx) = mpsc::channel(16);
    let mut ctrs: Vec<Ctr> = Vec::new();
    if let Some(spec) = &pod.spec {
        ctrs.extend(
            spec.init_containers
                .iter()
                .flatten()
                .map(|c| Ctr::new(c.clone(), true)),
        );
        ctrs.extend(spec.containers.iter().map(|c| Ctr::new(c.clone(), false)));
    }
    let mut w = Worker {
        shared,
        node,
        pod,
        uid,
        dir,
        sandbox: None,
        ip: None,
        start_time: None,
        ctrs,
        objs: PodObjects::default(),
        volumes: BTreeMap::new(),
        exit_tx,
        probe_tx,
        last_patch: None,
        last_conditions: Vec::new(),
        setup_error: None,
        failed: false,
        deleting: false,
    };
    info!(pod = %name, "pod bound to {}", w.node.name);
    let phase = w.pod.status.as_ref().and_then(|s| s.phase.as_deref());
    let done_already = matches!(phase, Some("Succeeded" | "Failed"));
    let mut setup_retry = Instant::now();
    loop {
        if w.pod.metadata.deletion_timestamp.is_some() {
            w.terminate(&mut exit_rx).await;
            w.finalize_delete().await;
            return;
        }
        if !done_already && w.sandbox.is_none() && Instant::now() >= setup_retry {
            match w.setup().await {
                Ok(()) => w.setup_error = None,
                Err(e) => {
                    let msg = format!("{e:#}");
                    if w.setup_error.as_deref() != Some(msg.as_str()) {
                        warn!(pod = %name, "pod setup failed: {msg}");
                        w.event(EventType::Warning, "FailedCreatePodSandBox", &msg)
                            .await;
                    }
                    w.setup_error = Some(msg);
                    w.teardown_sandbox().await;
                    setup_retry = Instant::now() + Duration::from_secs(2);
                }
            }
        }
        if w.sandbox.is_some() {
            w.start_due_containers().await;
        }
        w.patch_status().await;

        let next_restart = w.ctrs.iter().filter_map(|c| c.restart_at).min();
        let wake = if w.sandbox.is_none() && !done_already {
            Some(setup_retry)
        } else {
            next_restart
        };
        tokio::select! {
            changed = rx.changed() => {
                let latest = if changed.is_ok() { rx.borrow_and_update().clone() } else { None };
                match latest {
                    Some(p) => w.pod = p,
                    None => {
                        // Gone from the API server (force-deleted): stop at once.
                        w.kill_all(Signal::SIGKILL);
                        w.teardown_sandbox().await;
                        return;
                    }
                }
            }
            Some(exit) = exit_rx.recv() => w.on_exit(exit).await,
            Some(ev) = probe_rx.recv() => w.on_probe(ev).await,
            _ = async {
                match wake {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending::<()>().await,
                }
            } => {}
        }
    }
}

impl Worker {
    fn pod_name(&self) -> String {
        format!(
            "{}/{}",
            self.pod.metadata.namespace.as_deref().unwrap_or_default(),
            self.pod.metadata.name.as_deref().unwrap_or_default()
        )
    }

    fn api(&self) -> Api<Pod> {
        Api::namespaced(
            self.shared.client.clone(),
            self.pod.metadata.namespace.as_deref().unwrap_or("default"),
        )
    }

    async fn event(&self, type_: EventType, reason: &str, note: &str) {
        let ev = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note.chars().take(1000).collect()),
            action: reason.to_owned(),
            secondary: None,
        };
        if let Err(e) = self
            .shared
            .recorder
            .publish(&ev, &self.pod.object_ref(&()))
            .await
        {
            warn!(pod = %self.pod_name(), "publishing event {reason}: {e}");
        }
    }

    fn runtime(&self) -> PodRuntime {
        PodRuntime {
            pod_ip: self.ip.map(|i| i.to_string()).unwrap_or_default(),
            host_ip: self.node.ip.to_string(),
            kubernetes_service: self.shared.cfg.kubernetes_service.clone(),
        }
    }

    /// Sandbox, referenced objects, ServiceAccount tokens and volumes.
    async fn setup(&mut self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        if self.start_time.is_none() {
            self.start_time = Some(Time(Timestamp::now()));
        }
        check_runtime_class(&self.pod, &self.node.handlers)?;
        self.objs = self.fetch_objects().await?;
        let ip = self.node.allocate_ip()?;
        self.ip = Some(ip);
        let id: String = self
            .uid
            .chars()
            .filter(char::is_ascii_hexdigit)
            .take(10)
            .collect();
        self.sandbox = Some(Sandbox::create(&id, ip, self.shared.cfg.gateway).await?);
        let tokens = self.request_tokens().await?;
        let plans = volumes::plan(&self.pod, &self.objs, &self.runtime(), &tokens)?;
        self.volumes = volumes::materialize(&plans, &self.dir.join("volumes"))?;
        info!(pod = %self.pod_name(), %ip, "sandbox ready");
        Ok(())
    }

    async fn fetch_objects(&self) -> anyhow::Result<PodObjects> {
        let ns = self.pod.metadata.namespace.as_deref().unwrap_or("default");
        let mut cms = Vec::new();
        let mut secrets = Vec::new();
        let spec = self.pod.spec.as_ref();
        for c in spec.iter().flat_map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
        }) {
            for f in c.env_from.iter().flatten() {
                cms.extend(f.config_map_ref.as_ref().map(|r| r.name.clone()));
                secrets.extend(f.secret_ref.as_ref().map(|r| r.name.clone()));
            }
            for e in c.env.iter().flatten() {
                if let Some(v) = &e.value_from {
                    cms.extend(v.config_map_key_ref.as_ref().map(|r| r.name.clone()));
                    secrets.extend(v.secret_key_ref.as_ref().map(|r| r.name.clone()));
                }
            }
        }
        for v in spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            cms.extend(v.config_map.as_ref().map(|c| c.name.clone()));
            secrets.extend(v.secret.as_ref().and_then(|s| s.secret_name.clone()));
            for s in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
                cms.extend(s.config_map.as_ref().map(|c| c.name.clone()));
                secrets.extend(s.secret.as_ref().map(|c| c.name.clone()));
            }
        }
        let mut objs = PodObjects::default();
        let cm_api: Api<ConfigMap> = Api::namespaced(self.shared.client.clone(), ns);
        for name in cms {
            if let Some(cm) = cm_api
                .get_opt(&name)
                .await
                .with_context(|| format!("getting configmap {name}"))?
            {
                objs.config_maps.insert(name, cm);
            }
        }
        let secret_api: Api<Secret> = Api::namespaced(self.shared.client.clone(), ns);
        for name in secrets {
            if let Some(s) = secret_api
                .get_opt(&name)
                .await
                .with_context(|| format!("getting secret {name}"))?
            {
                objs.secrets.insert(name, s);
            }
        }
        Ok(objs)
    }

    async fn request_tokens(&self) -> anyhow::Result<BTreeMap<volumes::TokenKey, String>> {
        let ns = self.pod.metadata.namespace.as_deref().unwrap_or("default");
        let sa = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".to_owned());
        let api: Api<ServiceAccount> = Api::namespaced(self.shared.client.clone(), ns);
        let mut out = BTreeMap::new();
        for p in volumes::token_requests(&self.pod) {
            let tr = TokenRequest {
                spec: TokenRequestSpec {
                    audiences: p.audience.clone().into_iter().collect(),
                    expiration_seconds: Some(p.expiration_seconds.unwrap_or(3600)),
                    bound_object_ref: Some(BoundObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("Pod".into()),
                        name: self.pod.metadata.name.clone(),
                        uid: Some(self.uid.clone()),
                    }),
                },
                ..TokenRequest::default()
            };
            let issued = api
                .create_token_request(&sa, &PostParams::default(), &tr)
                .await
                .with_context(|| format!("requesting a token for serviceaccount {ns}/{sa}"))?;
            let token = issued
                .status
                .map(|s| s.token)
                .context("TokenRequest without status")?;
            out.insert(token_key(&p), token);
        }
        Ok(out)
    }

    fn all_init_done(&self) -> bool {
        self.ctrs
            .iter()
            .filter(|c| c.init)
            .all(|c| c.terminated.as_ref().is_some_and(|t| t.exit_code == 0))
    }

    /// Starts the next init container, or every app container, that is due.
    async fn start_due_containers(&mut self) {
        if self.failed {
            return;
        }
        let now = Instant::now();
        let init_done = self.all_init_done();
        let mut due = Vec::new();
        if !init_done {
            // Init containers run one at a time, in order.
            if let Some(i) = self
                .ctrs
                .iter()
                .position(|c| c.init && c.terminated.as_ref().is_none_or(|t| t.exit_code != 0))
                && !self.ctrs[i].running()
                && self.ctrs[i].terminated.is_none()
                && self.ctrs[i].restart_at.is_none_or(|t| t <= now)
            {
                due.push(i);
            }
        } else {
            for (i, c) in self.ctrs.iter().enumerate() {
                if !c.init
                    && !c.running()
                    && c.terminated.is_none()
                    && c.restart_at.is_none_or(|t| t <= now)
                {
                    due.push(i);
                }
            }
        }
        for i in due {
            self.ctrs[i].restart_at = None;
            if let Err(e) = self.start_container(i).await {
                let msg = format!("{e:#}");
                let pod_name = self.pod_name();
                let c = &mut self.ctrs[i];
                warn!(pod = %pod_name, container = %c.spec.name, "cannot start: {msg}");
                let reason = if msg.contains("image table") {
                    "ErrImagePull"
                } else {
                    "CreateContainerConfigError"
                };
                c.waiting = Some((reason.into(), msg.clone()));
                c.restart_at =
                    Some(Instant::now() + self.shared.cfg.backoff_max.min(Duration::from_secs(5)));
                self.event(EventType::Warning, "Failed", &msg).await;
            }
        }
    }

    async fn start_container(&mut self, i: usize) -> anyhow::Result<()> {
        let sandbox_pid = self.sandbox.as_ref().context("no sandbox")?.pid();
        let rt = self.runtime();
        let spec = self.ctrs[i].spec.clone();
        let image = spec.image.clone().unwrap_or_default();
        let exe = self
            .shared
            .cfg
            .images
            .resolve(&image)
            .with_context(|| {
                format!("image {image:?} is not in the process kubelet's image table")
            })?
            .to_owned();
        let mut env = container_env(&self.pod, &spec, &self.objs, &rt)?;
        if !env.iter().any(|(k, _)| k == "HOME") {
            // A container's HOME is private to it; the machine's /root is not.
            let home = self.dir.join(format!("home-{}", spec.name));
            std::fs::create_dir_all(&home)?;
            env.push(("HOME".into(), home.to_string_lossy().into_owned()));
        }
        let argv = container_argv(&spec, &exe, &env)?;
        let mut mounts = Vec::new();
        for m in spec.volume_mounts.iter().flatten() {
            let src = self
                .volumes
                .get(&m.name)
                .with_context(|| format!("volumeMount {:?}: no such volume", m.name))?;
            let src = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                Some(sub) => {
                    check_relative(sub)?;
                    let p = src.join(sub);
                    if !p.exists() {
                        std::fs::create_dir_all(&p)?;
                    }
                    p
                }
                None => src.clone(),
            };
            mounts.push(BindMount {
                source: src,
                target: PathBuf::from(&m.mount_path),
                read_only: m.read_only == Some(true),
            });
        }
        let c = &mut self.ctrs[i];
        c.generation += 1;
        let scratch = self
            .dir
            .join(format!("scratch-{}-{}", spec.name, c.generation));
        std::fs::create_dir_all(&scratch)?;
        let log_path = self.dir.join(format!("{}.log", spec.name));
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        use std::io::Write as _;
        writeln!(
            log,
            "==== process kubelet: start #{} of {}: {argv:?}",
            c.generation, spec.name
        )?;
        let sh = script(&mounts, spec.working_dir.as_deref());
        let mut cmd = tokio::process::Command::new("nsenter");
        cmd.args(["--target", &sandbox_pid.to_string(), "--net", "--"])
            .args(["unshare", "--mount", "--propagation", "private", "--"])
            .args(["/bin/sh", "-c", &sh, "sh"])
            .arg(&scratch)
            .args(&argv)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd.spawn().context("spawning the container process")?;
        let pid = child.id().context("container exited at once")?;
        c.pid = Some(pid);
        c.started_at = Some(Timestamp::now());
        c.terminated = None;
        c.waiting = None;
        c.env = env.clone();
        let has_startup = spec.startup_probe.is_some();
        c.started = !has_startup;
        c.ready = !c.init && spec.readiness_probe.is_none() && !has_startup;
        let generation = c.generation;
        let exit_tx = self.exit_tx.clone();
        tokio::spawn(async move {
            let status = match child.wait().await {
                Ok(s) => s,
                Err(_) => ExitStatus::from_raw(255 << 8),
            };
            let _ = exit_tx
                .send(Exit {
                    container: i,
                    generation,
                    status,
                })
                .await;
        });
        if !c.init {
            let target = probe::Target {
                pod_ip: rt.pod_ip.parse().unwrap_or(Ipv4Addr::UNSPECIFIED),
                ports: spec.ports.clone().unwrap_or_default(),
                pid,
                env,
            };
            let probes = [
                (ProbeKind::Startup, spec.startup_probe.clone()),
                (ProbeKind::Readiness, spec.readiness_probe.clone()),
                (ProbeKind::Liveness, spec.liveness_probe.clone()),
            ];
            for (kind, p) in probes {
                if let Some(p) = p {
                    if has_startup && kind != ProbeKind::Startup {
                        continue; // started once the startup probe succeeds
                    }
                    c.probes.push(tokio::spawn(probe::run(
                        kind,
                        p,
                        target.clone(),
                        i,
                        generation,
                        self.probe_tx.clone(),
                    )));
                }
            }
        }
        info!(pod = %self.pod_name(), container = %spec.name, pid, "container started");
        let note = format!("Started container {}", spec.name);
        self.event(EventType::Normal, "Started", &note).await;
        Ok(())
    }

    async fn on_exit(&mut self, exit: Exit) {
        let policy = restart_policy(&self.pod).to_owned();
        let deleting = self.deleting;
        let pod_name = self.pod_name();
        let base = self.shared.cfg.backoff_base;
        let max = self.shared.cfg.backoff_max;
        let Some(c) = self.ctrs.get_mut(exit.container) else {
            return;
        };
        if c.generation != exit.generation {
            return;
        }
        c.stop_probes();
        let code = exit
            .status
            .code()
            .unwrap_or_else(|| 128 + exit.status.signal().unwrap_or(0));
        let term = ContainerStateTerminated {
            exit_code: code,
            signal: exit.status.signal(),
            reason: Some(if code == 0 { "Completed" } else { "Error" }.to_owned()),
            started_at: c.started_at.map(Time),
            finished_at: Some(Time(Timestamp::now())),
            container_id: c.pid.map(|p| format!("process://{p}")),
            message: None,
        };
        info!(pod = %pod_name, container = %c.spec.name, code, "container exited");
        c.pid = None;
        c.ready = false;
        let restart = match policy.as_str() {
            _ if deleting => false,
            "Never" => false,
            "OnFailure" => code != 0,
            _ => !c.init || code != 0,
        };
        if c.init && code == 0 {
            c.terminated = Some(term);
            return;
        }
        if restart {
            let delay = base
                .saturating_mul(2u32.saturating_pow(c.restart_count.clamp(0, 16) as u32))
                .min(max);
            c.restart_count += 1;
            c.last_terminated = Some(term);
            c.terminated = None;
            c.waiting = Some((
                "CrashLoopBackOff".into(),
                format!(
                    "back-off {delay:?} restarting failed container={}",
                    c.spec.name
                ),
            ));
            c.restart_at = Some(Instant::now() + delay);
            let note = format!("Back-off restarting failed container {}", c.spec.name);
            self.event(EventType::Warning, "BackOff", &note).await;
        } else {
            c.terminated = Some(term);
            if c.init {
                self.failed = true;
            }
        }
    }

    async fn on_probe(&mut self, ev: ProbeEvent) {
        let Some(c) = self.ctrs.get_mut(ev.container) else {
            return;
        };
        if c.generation != ev.generation || !c.running() {
            return;
        }
        let name = c.spec.name.clone();
        match ev.kind {
            ProbeKind::Readiness => c.ready = ev.success,
            ProbeKind::Startup if ev.success && !c.started => {
                c.started = true;
                c.ready = c.spec.readiness_probe.is_none();
                let target = probe::Target {
                    pod_ip: self.ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
                    ports: c.spec.ports.clone().unwrap_or_default(),
                    pid: c.pid.unwrap_or_default(),
                    env: c.env.clone(),
                };
                for (kind, p) in [
                    (ProbeKind::Readiness, c.spec.readiness_probe.clone()),
                    (ProbeKind::Liveness, c.spec.liveness_probe.clone()),
                ] {
                    if let Some(p) = p {
                        c.probes.push(tokio::spawn(probe::run(
                            kind,
                            p,
                            target.clone(),
                            ev.container,
                            ev.generation,
                            self.probe_tx.clone(),
                        )));
                    }
                }
            }
            ProbeKind::Startup | ProbeKind::Liveness => {}
        }
        if ev.restart
            && let Some(pid) = c.pid
        {
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        if let Some(why) = &ev.failure {
            let note = format!("{} probe failed: {why}", ev.kind.name());
            self.event(EventType::Warning, "Unhealthy", &note).await;
        }
        if ev.restart {
            let note = format!(
                "Container {name} failed {} probe, will be restarted",
                ev.kind.name().to_lowercase()
            );
            self.event(EventType::Normal, "Killing", &note).await;
        }
    }

    fn observed(&self) -> Observed {
        let apps: Vec<&Ctr> = self.ctrs.iter().filter(|c| !c.init).collect();
        let initialized = self.all_init_done();
        let all_exited = apps
            .iter()
            .all(|c| c.terminated.is_some() && !c.running() && c.restart_at.is_none());
        let phase = if self.failed {
            Phase::Failed
        } else if self.sandbox.is_none() || !initialized {
            Phase::Pending
        } else if !apps.is_empty() && all_exited {
            if apps
                .iter()
                .all(|c| c.terminated.as_ref().is_some_and(|t| t.exit_code == 0))
            {
                Phase::Succeeded
            } else {
                Phase::Failed
            }
        } else if apps.iter().any(|c| c.running() || c.restart_count > 0) {
            Phase::Running
        } else {
            Phase::Pending
        };
        Observed {
            sandbox_ready: self.sandbox.is_some(),
            initialized,
            phase,
            pod_ip: self.ip.map(|i| i.to_string()),
            host_ip: self.node.ip.to_string(),
            start_time: self.start_time.clone(),
            init_containers: self
                .ctrs
                .iter()
                .filter(|c| c.init)
                .map(Ctr::status)
                .collect(),
            containers: apps.iter().map(|c| c.status()).collect(),
        }
    }

    /// Writes the owned status when it differs from what was last written.
    async fn patch_status(&mut self) {
        let current = if self.last_conditions.is_empty() {
            pod_conditions(&self.pod).to_vec()
        } else {
            self.last_conditions.clone()
        };
        let patch = status_patch(&self.pod, &current, &self.observed(), Timestamp::now());
        if self.last_patch.as_ref() == Some(&patch) {
            return;
        }
        let name = self.pod.metadata.name.clone().unwrap_or_default();
        match self
            .api()
            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
        {
            Ok(p) => {
                self.last_conditions =
                    serde_json::from_value(patch["status"]["conditions"].clone())
                        .unwrap_or_default();
                self.last_patch = Some(patch);
                // Keep the gate conditions the API server has now.
                self.pod.status = p.status;
            }
            Err(e) => warn!(pod = %self.pod_name(), "patching status: {e}"),
        }
    }

    fn kill_all(&mut self, sig: Signal) {
        for c in &mut self.ctrs {
            c.stop_probes();
            c.restart_at = None;
            if let Some(pid) = c.pid {
                let _ = killpg(Pid::from_raw(pid as i32), sig);
            }
        }
    }

    async fn teardown_sandbox(&mut self) {
        if let Some(mut s) = self.sandbox.take() {
            s.destroy().await;
        }
        if let Some(ip) = self.ip.take() {
            self.node.release_ip(ip);
        }
    }

    /// SIGTERM, the grace period, SIGKILL; the containers' final states come from `exits`.
    async fn terminate(&mut self, exits: &mut mpsc::Receiver<Exit>) {
        let grace = self
            .pod
            .metadata
            .deletion_grace_period_seconds
            .unwrap_or(30)
            .max(0) as u64;
        self.deleting = true;
        let running: Vec<String> = self
            .ctrs
            .iter()
            .filter(|c| c.running())
            .map(|c| c.spec.name.clone())
            .collect();
        for n in &running {
            self.event(
                EventType::Normal,
                "Killing",
                &format!("Stopping container {n}"),
            )
            .await;
        }
        self.kill_all(Signal::SIGTERM);
        let mut deadline = Instant::now() + Duration::from_secs(grace);
        let mut killed = false;
        while self.ctrs.iter().any(Ctr::running) {
            match tokio::time::timeout_at(deadline, exits.recv()).await {
                Ok(Some(exit)) => self.on_exit(exit).await,
                Ok(None) => break,
                Err(_) if !killed => {
                    warn!(pod = %self.pod_name(), "grace period of {grace}s over: SIGKILL");
                    self.kill_all(Signal::SIGKILL);
                    killed = true;
                    deadline = Instant::now() + Duration::from_secs(10);
                }
                Err(_) => {
                    warn!(pod = %self.pod_name(), "containers survived SIGKILL for 10s");
                    break;
                }
            }
        }
        self.teardown_sandbox().await;
    }

    /// Reports the final status and removes the pod (UID precondition, no further grace).
    async fn finalize_delete(&mut self) {
        self.patch_status().await;
        let name = self.pod.metadata.name.clone().unwrap_or_default();
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self.api().delete(&name, &dp).await {
            Ok(_) => info!(pod = %self.pod_name(), "pod deleted"),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => warn!(pod = %self.pod_name(), "deleting pod: {e}"),
        }
    }
}

/// Fails when the pod cannot run on a node of this kubelet (unknown RuntimeClass handler).
pub fn check_runtime_class(pod: &Pod, allowed: &[&str]) -> anyhow::Result<()> {
    if let Some(rc) = pod
        .spec
        .as_ref()
        .and_then(|s| s.runtime_class_name.as_deref())
        && !allowed.contains(&rc)
    {
        bail!("RuntimeClass {rc:?} is not handled by this node (handlers: {allowed:?})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_maps_command_to_image_executable() {
        let exe = Path::new("/opt/bin/a3s-power");
        let env = vec![("PORT".to_owned(), "8080".to_owned())];
        let c = Container {
            command: Some(vec!["/usr/local/bin/a3s-power".into()]),
            args: Some(vec!["serve".into(), "--port=$(PORT)".into()]),
            ..Container::default()
        };
        assert_eq!(
            container_argv(&c, exe, &env).unwrap(),
            ["/opt/bin/a3s-power", "serve", "--port=8080"]
        );
        let no_cmd = Container {
            args: Some(vec!["x".into()]),
            ..Container::default()
        };
        assert_eq!(
            container_argv(&no_cmd, exe, &env).unwrap(),
            ["/opt/bin/a3s-power", "x"]
        );
        let sh = Container {
            command: Some(vec!["sh".into(), "-c".into(), "true".into()]),
            ..Container::default()
        };
        assert!(container_argv(&sh, exe, &env).unwrap()[0].ends_with("/sh"));
        let missing = Container {
            command: Some(vec!["/no/such/tool".into()]),
            ..Container::default()
        };
        assert!(container_argv(&missing, exe, &env).is_err());
    }
}
