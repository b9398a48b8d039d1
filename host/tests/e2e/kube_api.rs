//! A stand-in for the Kubernetes API server (none can run on these machines): the list/watch
//! protocol over HTTP as the API server speaks it, fed from recorded object dumps.
//!
//! - `GET /api/v1/pods` (and any `/api/v1/<plural>` or `/apis/<group>/<version>/<plural>`):
//!   a List with `metadata.resourceVersion`; items without `kind`/`apiVersion`, as the server
//!   sends them.
//! - `...?watch=true&resourceVersion=N`: the events after N from the log, then each new one as
//!   it happens, one JSON object per line; `BOOKMARK`s carry the latest resourceVersion to
//!   watchers of other kinds when `allowWatchBookmarks=true`; a resourceVersion older than the
//!   compacted history gets one `ERROR` event with a 410 `Expired` Status, as etcd compaction
//!   does.
//! - [`FakeApi::drop_watches`] ends every watch stream (a load balancer cutting connections);
//!   [`FakeApi::expire`] also compacts the history, so resuming fails with 410 and clients
//!   must list again.

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::Uri;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

#[derive(Default)]
struct ApiState {
    rv: u64,
    /// Watches from a resourceVersion below this get 410.
    oldest: u64,
    /// (resource path, namespace/name) -> object.
    objects: BTreeMap<(String, String), Value>,
    /// (resourceVersion, resource path, event type, object).
    log: Vec<(u64, String, &'static str, Value)>,
    watchers: Vec<Watcher>,
    /// Lists served, per resource path.
    lists: HashMap<String, u64>,
    /// Resource path -> (apiVersion, kind), for bookmarks.
    kinds: HashMap<String, (String, String)>,
    /// Lists still to answer with a 500 (an API server in trouble).
    failing_lists: u64,
}

struct Watcher {
    path: String,
    /// (apiVersion, kind) of its bookmarks, when bookmarks were asked for and the kind is known.
    bookmarks: Option<(String, String)>,
    tx: mpsc::UnboundedSender<Bytes>,
}

type Shared = Arc<Mutex<ApiState>>;

/// The resource path of an object's kind: core `v1` under `/api/v1`, a group's under
/// `/apis/<group>/<version>`; plurals as Kubernetes forms them for these kinds.
pub fn resource_path(api_version: &str, kind: &str) -> String {
    let plural = format!("{}s", kind.to_lowercase());
    if api_version.contains('/') {
        format!("/apis/{api_version}/{plural}")
    } else {
        format!("/api/{api_version}/{plural}")
    }
}

fn key_of(o: &Value) -> String {
    let m = &o["metadata"];
    format!(
        "{}/{}",
        m["namespace"].as_str().unwrap_or(""),
        m["name"].as_str().unwrap_or("")
    )
}

fn line(event: &str, object: &Value) -> Bytes {
    let mut s = json!({"type": event, "object": object}).to_string();
    s.push('\n');
    Bytes::from(s)
}

impl ApiState {
    fn record(&mut self, event: &'static str, mut object: Value) {
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let (api_version, kind) = (
            object["apiVersion"].as_str().unwrap_or("v1").to_string(),
            object["kind"].as_str().unwrap_or("").to_string(),
        );
        let path = resource_path(&api_version, &kind);
        self.kinds.insert(path.clone(), (api_version, kind));
        let key = (path.clone(), key_of(&object));
        if event == "DELETED" {
            self.objects.remove(&key);
        } else {
            self.objects.insert(key, object.clone());
        }
        self.log
            .push((self.rv, path.clone(), event, object.clone()));
        let rv = self.rv;
        self.watchers.retain(|w| {
            let sent = if w.path == path {
                w.tx.send(line(event, &object))
            } else if let Some((api_version, kind)) = &w.bookmarks {
                // A bookmark is an object of the watched kind with only its resourceVersion.
                w.tx.send(line(
                    "BOOKMARK",
                    &json!({"apiVersion": api_version, "kind": kind,
                            "metadata": {"resourceVersion": rv.to_string()}}),
                ))
            } else {
                Ok(())
            };
            sent.is_ok()
        });
    }
}

pub struct FakeApi {
    pub url: String,
    state: Shared,
    /// Keeps the server's runtime alive.
    _runtime: tokio::runtime::Runtime,
}

impl FakeApi {
    /// Serves the items of these dumps (kubectl `List`s) on a free loopback port.
    pub fn start(dumps: &[&Path]) -> FakeApi {
        let state: Shared = Arc::default();
        {
            let mut s = state.lock().unwrap();
            for dump in dumps {
                let doc: Value = serde_json::from_str(&std::fs::read_to_string(dump).unwrap())
                    .unwrap_or_else(|e| panic!("{}: {e}", dump.display()));
                for item in doc["items"].as_array().unwrap() {
                    s.record("ADDED", item.clone());
                }
            }
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .fallback(serve)
            .with_state(state.clone());
        runtime.spawn(async move { axum::serve(listener, app).await });
        FakeApi {
            url,
            state,
            _runtime: runtime,
        }
    }

    /// A kubeconfig in `dir` that points at this server (no credentials: it has none).
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
             users:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n\
             current-context: fake\n",
            self.url
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ApiState> {
        self.state.lock().unwrap()
    }

    /// Creates or updates an object (ADDED or MODIFIED to its watchers).
    pub fn apply(&self, object: Value) {
        let mut s = self.lock();
        let path = resource_path(
            object["apiVersion"].as_str().unwrap(),
            object["kind"].as_str().unwrap(),
        );
        let exists = s.objects.contains_key(&(path, key_of(&object)));
        s.record(if exists { "MODIFIED" } else { "ADDED" }, object);
    }

    /// Deletes an object held (DELETED to its watchers).
    pub fn delete(&self, api_version: &str, kind: &str, namespace: &str, name: &str) {
        let mut s = self.lock();
        let path = resource_path(api_version, kind);
        let object = s
            .objects
            .get(&(path, format!("{namespace}/{name}")))
            .cloned()
            .unwrap_or_else(|| panic!("no {kind} {namespace}/{name} to delete"));
        s.record("DELETED", object);
    }

    /// Ends every watch stream; the history stays, so clients resume where they were.
    pub fn drop_watches(&self) {
        self.lock().watchers.clear();
    }

    /// Compacts the history and ends every watch: resuming gets 410 Gone.
    pub fn expire(&self) {
        let mut s = self.lock();
        s.oldest = s.rv + 1;
        s.watchers.clear();
    }

    /// Answers the next `n` lists (of any kind) with 500 Internal Server Error.
    pub fn fail_lists(&self, n: u64) {
        self.lock().failing_lists = n;
    }

    /// Lists served so far for this kind.
    pub fn lists(&self, api_version: &str, kind: &str) -> u64 {
        self.lock()
            .lists
            .get(&resource_path(api_version, kind))
            .copied()
            .unwrap_or(0)
    }
}

async fn serve(
    State(state): State<Shared>,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
) -> axum::response::Response<Body> {
    let path = uri.path().to_string();
    let watch = matches!(q.get("watch").map(String::as_str), Some("true" | "1"));
    let mut s = state.lock().unwrap();
    if !watch && s.failing_lists > 0 {
        s.failing_lists -= 1;
        let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": "etcdserver: request timed out",
            "reason": "InternalError", "code": 500});
        return axum::response::Response::builder()
            .status(500)
            .header("content-type", "application/json")
            .body(Body::from(status.to_string()))
            .unwrap();
    }
    if !watch {
        *s.lists.entry(path.clone()).or_default() += 1;
        let items: Vec<Value> = s
            .objects
            .iter()
            .filter(|((p, _), _)| *p == path)
            .map(|(_, o)| {
                let mut item = o.clone();
                let m = item.as_object_mut().unwrap();
                m.remove("kind");
                m.remove("apiVersion");
                item
            })
            .collect();
        let list = json!({"kind": "List", "apiVersion": "v1",
            "metadata": {"resourceVersion": s.rv.to_string()}, "items": items});
        return axum::response::Response::builder()
            .header("content-type", "application/json")
            .body(Body::from(list.to_string()))
            .unwrap();
    }
    let from: u64 = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    if from < s.oldest {
        let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": format!("too old resource version: {from} ({})", s.oldest),
            "reason": "Expired", "code": 410});
        let _ = tx.send(line("ERROR", &status));
        drop(tx);
    } else {
        for (rv, p, event, object) in &s.log {
            if *rv > from && *p == path {
                let _ = tx.send(line(event, object));
            }
        }
        let bookmarks = (q.get("allowWatchBookmarks").map(String::as_str) == Some("true"))
            .then(|| s.kinds.get(&path).cloned())
            .flatten();
        s.watchers.push(Watcher {
            path,
            bookmarks,
            tx,
        });
    }
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    });
    axum::response::Response::builder()
        .header("content-type", "application/json")
        .body(Body::from_stream(body))
        .unwrap()
}
