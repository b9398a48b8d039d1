//! The inventory followed from the Kubernetes API (`[inventory] kubernetes = true`): kube-rs's
//! watcher lists and watches nodes, pods, services, endpoint slices and the CNI objects the
//! plugins ask for, each as a dynamic object read by the same reader as a kubectl dump, into a
//! store the pipeline takes a snapshot of between windows.
//!
//! Time matters more than the objects: flows are named by the owner of an address *at the
//! flow's time* ([`super::history`]). So a pod's tenure of its address begins when the watch
//! first reports the address (the creation time for pods of a list), ends when the pod is
//! deleted or finishes (a Succeeded/Failed pod's address goes back to the pool while the object
//! stays), and a deleted pod is kept `retain_deleted` longer so the windows still being
//! processed can name it; what is forgotten after that is counted.
//!
//! Recovery is kube-rs's: a dropped watch resumes from the last resourceVersion, an expired
//! one (410 Gone) starts over with a list, errors back off. A list that starts over replaces
//! what the store held of that kind: a pod missing from it was deleted meanwhile.

use super::kubectl::{Object, read_object};
use super::{Inventory, InventorySource, Pod};
use crate::config::KubernetesSettings;
use crate::health::{InventoryHealth, KindHealth};
use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ApiError {
    #[error("the Kubernetes client configuration: {0}")]
    Config(String),
    #[error("starting the inventory's watch thread: {0}")]
    Thread(std::io::Error),
}

/// A kind the host or a plugin wants (`apiVersion`, `kind`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Kind {
    pub api_version: String,
    pub kind: String,
}

impl Kind {
    pub fn new(api_version: &str, kind: &str) -> Kind {
        Kind {
            api_version: api_version.to_string(),
            kind: kind.to_string(),
        }
    }

    fn label(&self) -> String {
        format!("{} {}", self.api_version, self.kind)
    }

    /// The API resource: the core kinds' plurals are known; a CNI's custom resource's plural
    /// is its kind in lower case plus "s" ("IPAMBlock" -> "ipamblocks"), as CRDs name them.
    fn resource(&self) -> ApiResource {
        let (group, version) = match self.api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", self.api_version.as_str()),
        };
        let gvk = GroupVersionKind::gvk(group, version, &self.kind);
        match self.kind.as_str() {
            "EndpointSlice" => ApiResource::from_gvk_with_plural(&gvk, "endpointslices"),
            _ => ApiResource::from_gvk(&gvk),
        }
    }
}

/// The kinds the host itself reads.
pub fn core_kinds() -> Vec<Kind> {
    vec![
        Kind::new("v1", "Node"),
        Kind::new("v1", "Pod"),
        Kind::new("v1", "Service"),
        Kind::new("discovery.k8s.io/v1", "EndpointSlice"),
    ]
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// What the watches have built. Keys are `namespace/name` (pods: their uid, so a pod
/// recreated under the same name is another pod). Public for the inventory bench, which feeds
/// it as the watches do.
#[derive(Default)]
pub struct Store {
    objects: HashMap<Kind, BTreeMap<String, Object>>,
    /// Deleted pods, oldest first, with when they are forgotten.
    retired: VecDeque<(u64, Pod)>,
    retain_ns: u64,
    /// Keys seen by the list in progress, per kind.
    listing: HashMap<Kind, BTreeSet<String>>,
    /// Kinds listed at least once.
    listed: BTreeSet<Kind>,
    wanted: usize,
    generation: u64,
    health: InventoryHealth,
}

impl Store {
    /// An empty store for `wanted` kinds that keeps deleted pods `retain_ns`.
    pub fn new(wanted: usize, retain_ns: u64) -> Store {
        Store {
            retain_ns,
            wanted,
            health: InventoryHealth {
                source: "kubernetes".into(),
                ..InventoryHealth::default()
            },
            ..Store::default()
        }
    }

    fn kind_health(&mut self, kind: &Kind) -> &mut KindHealth {
        self.health.kinds.entry(kind.label()).or_default()
    }

    fn key(v: &Value, kind: &Kind) -> String {
        let m = &v["metadata"];
        let uid = m["uid"].as_str().unwrap_or("");
        if kind.kind == "Pod" && !uid.is_empty() {
            return uid.to_string();
        }
        format!(
            "{}/{}",
            m["namespace"].as_str().unwrap_or(""),
            m["name"].as_str().unwrap_or("")
        )
    }

    /// An object listed or applied at `now`.
    pub fn apply(&mut self, kind: &Kind, v: &Value, now: u64) {
        let listing = self.listing.contains_key(kind);
        self.kind_health(kind).events += 1;
        let object = match read_object(v, &kind.kind) {
            Ok(o) => o,
            Err(detail) => {
                let name = Self::key(v, kind);
                tracing::warn!(kind = %kind.label(), object = %name, "unreadable object skipped: {detail}");
                self.kind_health(kind).unreadable += 1;
                self.health.last_error = Some(format!("{} {name}: {detail}", kind.label()));
                return;
            }
        };
        let key = Self::key(v, kind);
        if let Some(seen) = self.listing.get_mut(kind) {
            seen.insert(key.clone());
        }
        let object = match object {
            Object::Pod(pod) => Object::Pod(self.pod_applied(kind, &key, pod, v, listing, now)),
            o => o,
        };
        let held = self.objects.entry(kind.clone()).or_default();
        if held.get(&key) != Some(&object) {
            held.insert(key, object);
            self.generation += 1;
        }
    }

    /// When the pod's tenure of its addresses began and whether it ended.
    fn pod_applied(
        &mut self,
        kind: &Kind,
        key: &str,
        mut pod: Pod,
        v: &Value,
        listing: bool,
        now: u64,
    ) -> Pod {
        let finished = matches!(v["status"]["phase"].as_str(), Some("Succeeded" | "Failed"));
        let prev = match self.objects.get(kind).and_then(|m| m.get(key)) {
            Some(Object::Pod(p)) => Some(p.clone()),
            _ => None,
        };
        // deletionTimestamp is when a graceful deletion will be forced, not when the pod
        // stopped: the tenure ends with the deletion event (or the pod finishing).
        pod.deleted_ns = 0;
        pod.created_ns = match &prev {
            Some(p) if p.ips == pod.ips => p.created_ns,
            Some(p) => {
                if !p.ips.is_empty() {
                    // Its addresses changed: the old ones' tenure ended now.
                    self.retire(Pod {
                        deleted_ns: if p.deleted_ns == 0 { now } else { p.deleted_ns },
                        ..p.clone()
                    });
                }
                now
            }
            // A list: the pod existed before we looked; its creation is the best bound.
            None if listing => pod.created_ns,
            None => now,
        };
        if finished {
            pod.deleted_ns = prev
                .as_ref()
                .map(|p| p.deleted_ns)
                .filter(|d| *d != 0)
                .unwrap_or(now);
        }
        pod
    }

    fn retire(&mut self, pod: Pod) {
        self.retired
            .push_back((pod.deleted_ns.saturating_add(self.retain_ns), pod));
    }

    pub fn delete(&mut self, kind: &Kind, v: &Value, now: u64) {
        self.kind_health(kind).events += 1;
        let key = Self::key(v, kind);
        self.remove(kind, &key, now);
    }

    fn remove(&mut self, kind: &Kind, key: &str, now: u64) {
        let Some(object) = self.objects.get_mut(kind).and_then(|m| m.remove(key)) else {
            return;
        };
        self.generation += 1;
        if let Object::Pod(mut pod) = object {
            if pod.deleted_ns == 0 {
                pod.deleted_ns = now;
            }
            self.retire(pod);
        }
    }

    pub fn list_begins(&mut self, kind: &Kind) {
        if self.listed.contains(kind) {
            self.kind_health(kind).relists += 1;
        }
        self.listing.insert(kind.clone(), BTreeSet::new());
    }

    /// The list is complete: what it did not hold was deleted while we were not watching.
    pub fn list_done(&mut self, kind: &Kind, now: u64) {
        let seen = self.listing.remove(kind).unwrap_or_default();
        let gone: Vec<String> = self
            .objects
            .get(kind)
            .map(|m| m.keys().filter(|k| !seen.contains(*k)).cloned().collect())
            .unwrap_or_default();
        for key in gone {
            self.remove(kind, &key, now);
        }
        self.listed.insert(kind.clone());
        self.health.synced = self.listed.len() >= self.wanted;
        self.generation += 1;
    }

    fn error(&mut self, kind: &Kind, e: &watcher::Error) {
        let h = self.kind_health(kind);
        h.errors += 1;
        let first = h.errors == 1;
        let said = format!("{}: {e}", kind.label());
        // Each error is counted; the log says the first of a kind and then every 100th (a
        // server that is down fails every backoff step).
        if first || self.kind_health(kind).errors.is_multiple_of(100) {
            tracing::warn!("watching the Kubernetes API: {said} (retrying)");
        }
        self.health.last_error = Some(said);
    }

    /// Forgets the deleted pods whose time is up.
    pub fn forget(&mut self, now: u64) {
        while let Some((until, _)) = self.retired.front() {
            if *until > now {
                break;
            }
            self.retired.pop_front();
            self.health.pods_forgotten += 1;
            self.generation += 1;
        }
    }

    pub fn inventory(&self) -> Inventory {
        let mut inv = Inventory::default();
        let mut kinds: Vec<&Kind> = self.objects.keys().collect();
        kinds.sort();
        for kind in kinds {
            for o in self.objects[kind].values() {
                match o {
                    Object::Node(n) => inv.nodes.push(n.clone()),
                    Object::Pod(p) => inv.pods.push(p.clone()),
                    Object::Service(s) => inv.services.push(s.clone()),
                    Object::EndpointSlice(e) => inv.endpoint_slices.push(e.clone()),
                    Object::Cni(c) => inv.objects.push(c.clone()),
                    Object::Other => {}
                }
            }
        }
        inv.pods.extend(self.retired.iter().map(|(_, p)| p.clone()));
        inv
    }
}

struct Shared {
    store: Mutex<Store>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The inventory that follows the API. Its watches run on a thread of their own; the
/// pipeline takes a [`snapshot`](Self::snapshot) between windows.
pub struct ApiInventory {
    shared: Arc<Shared>,
    /// Stops the watch thread when dropped.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl ApiInventory {
    /// Connects (the kubeconfig or the in-cluster service account), starts a watch per kind
    /// and waits up to `sync_timeout` for their first lists. An API that cannot be reached
    /// is no error: the watches keep trying, and health says what failed.
    pub fn start(settings: &KubernetesSettings, kinds: &[Kind]) -> Result<ApiInventory, ApiError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ApiError::Thread)?;
        let client = runtime.block_on(client(settings))?;
        let mut kinds = kinds.to_vec();
        kinds.sort();
        kinds.dedup();
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new(
                kinds.len(),
                settings.retain_deleted.as_nanos() as u64,
            )),
            changed: Condvar::new(),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let watching = shared.clone();
        std::thread::Builder::new()
            .name("inventory-watch".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let watches = kinds
                        .into_iter()
                        .map(|k| tokio::spawn(follow(client.clone(), k, watching.clone())));
                    let all = futures::future::join_all(watches);
                    tokio::select! {
                        _ = all => {}
                        _ = stopped => {}
                    }
                })
            })
            .map_err(ApiError::Thread)?;
        let api = ApiInventory {
            shared,
            _stop: stop,
        };
        api.wait_synced(settings.sync_timeout);
        Ok(api)
    }

    fn wait_synced(&self, timeout: Duration) {
        if self.wait_for(timeout, |h| h.synced) {
            return;
        }
        let health = self.health();
        let failing: Vec<&String> = health
            .kinds
            .iter()
            .filter(|(_, h)| h.errors > 0)
            .map(|(k, _)| k)
            .collect();
        tracing::warn!(
            "the Kubernetes API has not listed everything after {timeout:?} (failing: {failing:?}, last error: {}); going on, names follow when it does",
            health.last_error.as_deref().unwrap_or("none")
        );
    }

    /// Waits until `ready` holds for the store's health, or `timeout`; for tests and tools.
    pub fn wait_for(&self, timeout: Duration, ready: impl Fn(&InventoryHealth) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut store = self.shared.lock();
        while !ready(&store.health) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            store = self
                .shared
                .changed
                .wait_timeout(store, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

impl InventorySource for ApiInventory {
    fn generation(&self) -> u64 {
        let mut store = self.shared.lock();
        store.forget(now_ns());
        store.generation
    }

    fn snapshot(&self) -> Inventory {
        let mut store = self.shared.lock();
        store.forget(now_ns());
        let inv = store.inventory();
        store.health.pods_retained = store.retired.len() as u64;
        let held: Vec<(Kind, u64)> = store
            .objects
            .iter()
            .map(|(k, m)| (k.clone(), m.len() as u64))
            .collect();
        for (kind, n) in held {
            store.kind_health(&kind).objects = n;
        }
        inv
    }

    fn health(&self) -> InventoryHealth {
        self.shared.lock().health.clone()
    }
}

async fn client(settings: &KubernetesSettings) -> Result<kube::Client, ApiError> {
    let config = match (&settings.kubeconfig, &settings.context) {
        (None, None) => kube::Config::infer()
            .await
            .map_err(|e| ApiError::Config(e.to_string()))?,
        (path, context) => {
            let kubeconfig = match path {
                Some(p) => Kubeconfig::read_from(p)
                    .map_err(|e| ApiError::Config(format!("{}: {e}", p.display())))?,
                None => Kubeconfig::read().map_err(|e| ApiError::Config(e.to_string()))?,
            };
            let options = KubeConfigOptions {
                context: context.clone(),
                ..KubeConfigOptions::default()
            };
            kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| ApiError::Config(e.to_string()))?
        }
    };
    kube::Client::try_from(config).map_err(|e| ApiError::Config(e.to_string()))
}

/// One kind's watch, for as long as the process runs.
async fn follow(client: kube::Client, kind: Kind, shared: Arc<Shared>) {
    let api: Api<DynamicObject> = Api::all_with(client, &kind.resource());
    let mut events = watch_events(api).boxed();
    while let Some(event) = events.next().await {
        let now = now_ns();
        let mut store = shared.lock();
        match event {
            Ok(Event::Init) => store.list_begins(&kind),
            Ok(Event::InitApply(o)) | Ok(Event::Apply(o)) => {
                store.apply(&kind, &value(o, &kind), now)
            }
            Ok(Event::InitDone) => store.list_done(&kind, now),
            Ok(Event::Delete(o)) => store.delete(&kind, &value(o, &kind), now),
            Err(e) => store.error(&kind, &e),
        }
        drop(store);
        shared.changed.notify_all();
    }
}

fn watch_events(
    api: Api<DynamicObject>,
) -> impl futures::Stream<Item = Result<Event<DynamicObject>, watcher::Error>> + Send {
    watcher::watcher(api, watcher::Config::default()).default_backoff()
}

/// The object as JSON, with its `apiVersion` and `kind` (a list's items carry neither).
fn value(o: DynamicObject, kind: &Kind) -> Value {
    let mut v = serde_json::to_value(o).unwrap_or(Value::Null);
    if let Some(m) = v.as_object_mut() {
        m.entry("apiVersion")
            .or_insert_with(|| Value::String(kind.api_version.clone()));
        m.entry("kind")
            .or_insert_with(|| Value::String(kind.kind.clone()));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str, name: &str, ip: &str, created: &str, phase: &str) -> Value {
        serde_json::json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "shop", "uid": uid, "creationTimestamp": created},
            "spec": {"nodeName": "w1"},
            "status": {"phase": phase, "podIP": ip, "podIPs": [{"ip": ip}]}})
    }

    fn store() -> (Store, Kind) {
        let kind = Kind::new("v1", "Pod");
        let store = Store::new(1, 1_000);
        (store, kind)
    }

    #[test]
    fn a_pods_tenure_runs_from_its_first_report_to_its_deletion_and_is_forgotten_after_retention() {
        let (mut s, kind) = store();
        s.list_begins(&kind);
        s.apply(
            &kind,
            &pod("u1", "old", "10.0.0.5", "2026-01-01T00:00:00Z", "Running"),
            50,
        );
        s.list_done(&kind, 50);
        assert!(s.health.synced);
        let created = 1_767_225_600_000_000_000;
        assert_eq!(
            s.inventory().pods[0].created_ns,
            created,
            "listed: its creation"
        );
        // Deleted at 100, its address reused by a pod first reported at 200.
        s.delete(
            &kind,
            &pod("u1", "old", "10.0.0.5", "2026-01-01T00:00:00Z", "Running"),
            100,
        );
        s.apply(
            &kind,
            &pod("u2", "new", "10.0.0.5", "2026-01-01T00:00:00Z", "Running"),
            200,
        );
        let inv = s.inventory();
        let times: Vec<(&str, u64, u64)> = inv
            .pods
            .iter()
            .map(|p| (p.name.as_str(), p.created_ns, p.deleted_ns))
            .collect();
        assert_eq!(times, [("new", 200, 0), ("old", created, 100)]);
        s.forget(1_099);
        assert_eq!(s.inventory().pods.len(), 2);
        s.forget(1_100);
        assert_eq!(s.inventory().pods.len(), 1);
        assert_eq!(s.health.pods_forgotten, 1);
    }

    #[test]
    fn a_finished_pod_gives_its_address_back_and_a_relist_deletes_what_it_lacks() {
        let (mut s, kind) = store();
        s.list_begins(&kind);
        s.apply(
            &kind,
            &pod("u1", "job", "10.0.0.7", "2026-01-01T00:00:00Z", "Running"),
            10,
        );
        s.apply(
            &kind,
            &pod("u2", "web", "10.0.0.8", "2026-01-01T00:00:00Z", "Running"),
            10,
        );
        s.list_done(&kind, 10);
        s.apply(
            &kind,
            &pod("u1", "job", "10.0.0.7", "2026-01-01T00:00:00Z", "Succeeded"),
            30,
        );
        assert_eq!(s.inventory().pods[0].deleted_ns, 30);
        // The watch expired; the new list lacks "web": deleted while unwatched.
        s.list_begins(&kind);
        s.apply(
            &kind,
            &pod("u1", "job", "10.0.0.7", "2026-01-01T00:00:00Z", "Succeeded"),
            60,
        );
        s.list_done(&kind, 60);
        let inv = s.inventory();
        let web = inv.pods.iter().find(|p| p.name == "web").unwrap();
        assert_eq!(web.deleted_ns, 60);
        let job = inv.pods.iter().find(|p| p.name == "job").unwrap();
        assert_eq!(job.deleted_ns, 30, "still ended when it finished");
        assert_eq!(s.health.kinds["v1 Pod"].relists, 1);
    }
}
