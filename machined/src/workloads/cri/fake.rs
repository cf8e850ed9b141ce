//! An in-memory runtime behind [`Cri`], for unit tests of the kubelet. Sandboxes and
//! containers get ids, states, attempts and timestamps as containerd keeps them; a test
//! makes containers exit, stops every sandbox (a reboot, a containerd restart), sets the
//! exit codes of execs, makes one call fail, and reads back the calls it was sent.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use tonic::Status;

use super::{v1, Cri};

/// The runtime's state; see the module's documentation.
#[derive(Default)]
pub struct FakeCri {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    next_id: u64,
    sandboxes: Vec<Sandbox>,
    containers: Vec<v1::ContainerStatus>,
    /// Which sandbox each container is in, by container id.
    container_sandbox: HashMap<String, String>,
    /// The images on the node, by name.
    images: BTreeMap<String, v1::Image>,
    /// The images a pull finds.
    registry: BTreeSet<String>,
    /// What each container's writable layer takes, by container name.
    writable_layers: HashMap<String, u64>,
    /// Exit codes of exec commands (joined by spaces); others exit 0.
    exec_exit: HashMap<String, i32>,
    /// A failure the next call of a method returns, by method name.
    failures: HashMap<&'static str, Status>,
    /// The calls, as `method argument`.
    calls: Vec<String>,
}

struct Sandbox {
    item: v1::PodSandbox,
    ip: String,
}

fn now_nanos() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64)
}

impl FakeCri {
    /// Puts `image` on the node.
    pub fn add_image(&self, image: &str) {
        self.state.lock().unwrap().store(image);
    }

    /// Makes `image` pullable.
    pub fn add_registry_image(&self, image: &str) {
        self.state.lock().unwrap().registry.insert(image.into());
    }

    /// Makes the command `cmd` (joined by spaces) exit with `code` from now on.
    pub fn set_exec_exit(&self, cmd: &str, code: i32) {
        self.state.lock().unwrap().exec_exit.insert(cmd.into(), code);
    }

    /// Makes the writable layer of the container named `name` take `bytes`.
    pub fn set_writable_layer(&self, name: &str, bytes: u64) {
        self.state.lock().unwrap().writable_layers.insert(name.into(), bytes);
    }

    /// Makes the next call of `method` fail with `status`.
    pub fn fail_next(&self, method: &'static str, status: Status) {
        self.state.lock().unwrap().failures.insert(method, status);
    }

    /// The running container named `name` exits with `code`; false when none runs.
    pub fn exit(&self, name: &str, code: i32) -> bool {
        let mut state = self.state.lock().unwrap();
        let running = i32::from(v1::ContainerState::ContainerRunning);
        let Some(container) = state
            .containers
            .iter_mut()
            .find(|c| c.state == running && c.metadata.as_ref().is_some_and(|m| m.name == name))
        else {
            return false;
        };
        finish(container, code);
        true
    }

    /// Stops every sandbox and its containers, as a reboot leaves them.
    pub fn stop_all_sandboxes(&self) {
        let mut state = self.state.lock().unwrap();
        let ids: Vec<String> = state.sandboxes.iter().map(|s| s.item.id.clone()).collect();
        for id in ids {
            state.stop_sandbox(&id);
        }
    }

    /// The calls so far, as `method argument`, and forgets them.
    pub fn take_calls(&self) -> Vec<String> {
        std::mem::take(&mut self.state.lock().unwrap().calls)
    }

    /// The runs of the container named `name`, oldest first.
    pub fn runs(&self, name: &str) -> Vec<v1::ContainerStatus> {
        let state = self.state.lock().unwrap();
        let mut runs: Vec<v1::ContainerStatus> = (state.containers.iter())
            .filter(|c| c.metadata.as_ref().is_some_and(|m| m.name == name))
            .cloned()
            .collect();
        runs.sort_by_key(|c| c.created_at);
        runs
    }

    /// Whether the container named `name` runs.
    pub fn running(&self, name: &str) -> bool {
        let running = i32::from(v1::ContainerState::ContainerRunning);
        self.runs(name).iter().any(|c| c.state == running)
    }

    /// How many sandboxes the runtime has, and how many of them are ready.
    pub fn sandbox_count(&self) -> (usize, usize) {
        let state = self.state.lock().unwrap();
        let ready = i32::from(v1::PodSandboxState::SandboxReady);
        let count = state.sandboxes.len();
        (count, state.sandboxes.iter().filter(|s| s.item.state == ready).count())
    }

    /// Records a call of `method` on `argument` (a container's id is recorded as its name);
    /// the failure set for it, if any.
    fn call(&self, method: &'static str, argument: &str) -> Result<MutexGuard<'_, State>, Status> {
        let mut state = self.look(method)?;
        let argument = state.name_of(argument);
        state.calls.push(format!("{method} {argument}").trim_end().to_string());
        Ok(state)
    }

    /// A call of `method` that only reads, which is not recorded; the failure set for it, if
    /// any.
    fn look(&self, method: &'static str) -> Result<MutexGuard<'_, State>, Status> {
        let mut state = self.state.lock().unwrap();
        match state.failures.remove(method) {
            Some(status) => Err(status),
            None => Ok(state),
        }
    }
}

/// A running or created container ends with `code`.
fn finish(container: &mut v1::ContainerStatus, code: i32) {
    container.state = v1::ContainerState::ContainerExited.into();
    container.exit_code = code;
    container.finished_at = now_nanos();
    container.reason = if code == 0 { "Completed" } else { "Error" }.into();
}

impl State {
    /// Puts `image` on the node; its id.
    fn store(&mut self, image: &str) -> String {
        let id = format!("sha256:{image}");
        let stored =
            v1::Image { id: id.clone(), repo_tags: vec![image.into()], ..Default::default() };
        self.images.insert(image.into(), stored);
        id
    }

    fn new_id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}{}", self.next_id)
    }

    fn container(&mut self, id: &str) -> Result<&mut v1::ContainerStatus, Status> {
        let found = self.containers.iter_mut().find(|c| c.id == id);
        found.ok_or_else(|| Status::not_found(format!("container {id}")))
    }

    fn name_of(&self, id: &str) -> String {
        let container = self.containers.iter().find(|c| c.id == id);
        container.and_then(|c| c.metadata.as_ref()).map_or_else(|| id.into(), |m| m.name.clone())
    }

    fn stop_sandbox(&mut self, id: &str) {
        for sandbox in self.sandboxes.iter_mut().filter(|s| s.item.id == id) {
            sandbox.item.state = v1::PodSandboxState::SandboxNotready.into();
        }
        let inside: Vec<String> = (self.container_sandbox.iter())
            .filter(|(_, sandbox)| *sandbox == id)
            .map(|(container, _)| container.clone())
            .collect();
        let running = i32::from(v1::ContainerState::ContainerRunning);
        for container in self.containers.iter_mut().filter(|c| inside.contains(&c.id)) {
            if container.state == running {
                finish(container, 137);
            }
        }
    }
}

#[async_trait]
impl Cri for FakeCri {
    async fn version(&self) -> Result<v1::VersionResponse, Status> {
        drop(self.look("version")?);
        Ok(v1::VersionResponse { runtime_name: "fake".into(), ..Default::default() })
    }

    async fn run_pod_sandbox(&self, config: v1::PodSandboxConfig) -> Result<String, Status> {
        let name = config.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
        let mut state = self.call("run_pod_sandbox", &name)?;
        let id = state.new_id("sandbox-");
        let host_network = (config.linux.as_ref())
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.as_ref())
            .is_some_and(|n| n.network == i32::from(v1::NamespaceMode::Node));
        let ip = if host_network { String::new() } else { format!("10.244.0.{}", state.next_id) };
        let item = v1::PodSandbox {
            id: id.clone(),
            metadata: config.metadata,
            state: v1::PodSandboxState::SandboxReady.into(),
            created_at: now_nanos(),
            labels: config.labels,
            annotations: config.annotations,
            ..Default::default()
        };
        state.sandboxes.push(Sandbox { item, ip });
        Ok(id)
    }

    async fn stop_pod_sandbox(&self, id: &str) -> Result<(), Status> {
        self.call("stop_pod_sandbox", id)?.stop_sandbox(id);
        Ok(())
    }

    async fn remove_pod_sandbox(&self, id: &str) -> Result<(), Status> {
        let mut state = self.call("remove_pod_sandbox", id)?;
        state.stop_sandbox(id);
        state.sandboxes.retain(|s| s.item.id != id);
        let inside: Vec<String> = (state.container_sandbox.iter())
            .filter(|(_, sandbox)| *sandbox == id)
            .map(|(container, _)| container.clone())
            .collect();
        state.containers.retain(|c| !inside.contains(&c.id));
        state.container_sandbox.retain(|_, sandbox| sandbox != id);
        Ok(())
    }

    async fn pod_sandbox_status(&self, id: &str) -> Result<Option<v1::PodSandboxStatus>, Status> {
        let state = self.look("pod_sandbox_status")?;
        let sandbox = state.sandboxes.iter().find(|s| s.item.id == id);
        let sandbox = sandbox.ok_or_else(|| Status::not_found(format!("sandbox {id}")))?;
        Ok(Some(v1::PodSandboxStatus {
            id: id.into(),
            state: sandbox.item.state,
            network: Some(v1::PodSandboxNetworkStatus {
                ip: sandbox.ip.clone(),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn list_pod_sandbox(
        &self,
        filter: Option<v1::PodSandboxFilter>,
    ) -> Result<Vec<v1::PodSandbox>, Status> {
        let state = self.look("list_pod_sandbox")?;
        let selects = |sandbox: &v1::PodSandbox| {
            filter.as_ref().is_none_or(|f| {
                f.label_selector.iter().all(|(key, value)| sandbox.labels.get(key) == Some(value))
            })
        };
        Ok(state.sandboxes.iter().map(|s| s.item.clone()).filter(selects).collect())
    }

    async fn create_container(
        &self,
        sandbox_id: &str,
        config: v1::ContainerConfig,
        _sandbox_config: v1::PodSandboxConfig,
    ) -> Result<String, Status> {
        let name = config.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
        let mut state = self.call("create_container", &name)?;
        let ready = i32::from(v1::PodSandboxState::SandboxReady);
        if !state.sandboxes.iter().any(|s| s.item.id == sandbox_id && s.item.state == ready) {
            return Err(Status::failed_precondition(format!("sandbox {sandbox_id} is not ready")));
        }
        let id = state.new_id("container-");
        state.container_sandbox.insert(id.clone(), sandbox_id.into());
        state.containers.push(v1::ContainerStatus {
            id: id.clone(),
            metadata: config.metadata,
            state: v1::ContainerState::ContainerCreated.into(),
            created_at: now_nanos(),
            image: config.image,
            labels: config.labels,
            log_path: config.log_path,
            ..Default::default()
        });
        Ok(id)
    }

    async fn start_container(&self, id: &str) -> Result<(), Status> {
        let mut state = self.call("start_container", id)?;
        let container = state.container(id)?;
        if container.state != i32::from(v1::ContainerState::ContainerCreated) {
            return Err(Status::failed_precondition(format!("container {id} is not created")));
        }
        container.state = v1::ContainerState::ContainerRunning.into();
        container.started_at = now_nanos();
        Ok(())
    }

    async fn stop_container(&self, id: &str, grace: Duration) -> Result<(), Status> {
        let mut state = self.call("stop_container", id)?;
        state.calls.last_mut().expect("recorded").push_str(&format!(" {}s", grace.as_secs()));
        let container = state.container(id)?;
        if container.state == i32::from(v1::ContainerState::ContainerRunning) {
            // Ended by SIGTERM, or by SIGKILL with no grace.
            finish(container, if grace.is_zero() { 137 } else { 143 });
        }
        Ok(())
    }

    async fn remove_container(&self, id: &str) -> Result<(), Status> {
        let mut state = self.call("remove_container", id)?;
        state.container(id)?;
        state.containers.retain(|c| c.id != id);
        state.container_sandbox.remove(id);
        Ok(())
    }

    async fn list_containers(
        &self,
        filter: v1::ContainerFilter,
    ) -> Result<Vec<v1::Container>, Status> {
        let state = self.look("list_containers")?;
        let inside = |c: &&v1::ContainerStatus| {
            filter.pod_sandbox_id.is_empty()
                || state.container_sandbox.get(&c.id) == Some(&filter.pod_sandbox_id)
        };
        let listed = state.containers.iter().filter(inside).map(|c| v1::Container {
            id: c.id.clone(),
            pod_sandbox_id: state.container_sandbox[&c.id].clone(),
            metadata: c.metadata.clone(),
            image: c.image.clone(),
            state: c.state,
            created_at: c.created_at,
            labels: c.labels.clone(),
            ..Default::default()
        });
        Ok(listed.collect())
    }

    async fn container_status(&self, id: &str) -> Result<v1::ContainerStatus, Status> {
        self.look("container_status")?.container(id).map(|c| c.clone())
    }

    async fn writable_layer_bytes(&self, id: &str) -> Result<u64, Status> {
        let state = self.look("writable_layer_bytes")?;
        let name = state.name_of(id);
        Ok(state.writable_layers.get(&name).copied().unwrap_or_default())
    }

    async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        _timeout: Duration,
    ) -> Result<v1::ExecSyncResponse, Status> {
        let cmd = cmd.join(" ");
        let mut state = self.call("exec_sync", &cmd)?;
        let container = state.container(id)?;
        if container.state != i32::from(v1::ContainerState::ContainerRunning) {
            return Err(Status::failed_precondition(format!("container {id} is not running")));
        }
        let exit_code = state.exec_exit.get(&cmd).copied().unwrap_or_default();
        Ok(v1::ExecSyncResponse { exit_code, ..Default::default() })
    }

    async fn reopen_container_log(&self, id: &str) -> Result<(), Status> {
        self.call("reopen_container_log", id).map(drop)
    }

    async fn image_status(&self, image: &str) -> Result<Option<v1::Image>, Status> {
        Ok(self.look("image_status")?.images.get(image).cloned())
    }

    async fn pull_image(
        &self,
        image: &str,
        _auth: Option<v1::AuthConfig>,
    ) -> Result<String, Status> {
        let mut state = self.call("pull_image", image)?;
        if !state.registry.contains(image) {
            return Err(Status::not_found(format!("{image}: not found")));
        }
        Ok(state.store(image))
    }
}
