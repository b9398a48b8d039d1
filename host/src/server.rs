//! The read-only HTTP server of `cniscope run` and `cniscope aggregate` (`[server] listen`):
//! the topology API and its event stream, Prometheus metrics, and the web map, on axum.
//!
//! The window loop stays synchronous: after each window it hands the document written to
//! [`Server::publish`], which queues it for the server's own thread (a small tokio runtime).
//! There the document becomes the latest one, that window's own traffic is worked out
//! ([`history`]), the metrics are raised to its totals and the window is sent to every
//! stream client. A server too slow to take a document counts it
//! (`cniscope_windows_skipped_total`); the next one carries its traffic.

mod api;
mod assets;
pub mod history;
mod metrics;

use crate::config::ServerSettings;
use crate::topology::TopologyDoc;
use history::History;
use metrics::Metrics;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;
use thiserror::Error;
use tokio::sync::{broadcast, mpsc, oneshot};

#[derive(Debug, Error)]
pub enum ServerError {
    #[error("[server] listen = \"{addr}\": {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("[server] token_file {}: {source}", path.display())]
    Token {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("[server] token_file {}: the file holds no token", path.display())]
    EmptyToken { path: PathBuf },
    #[error("starting the server's thread: {0}")]
    Runtime(std::io::Error),
}

/// What the handlers share with the thread taking the windows.
pub(crate) struct Shared {
    history: RwLock<History>,
    metrics: Mutex<Metrics>,
    /// Each window's own traffic, to the stream clients.
    events: broadcast::Sender<Arc<TopologyDoc>>,
    token: Option<String>,
    max_stream_clients: usize,
    stream_clients: AtomicUsize,
}

/// Windows a stream client may fall behind before it is told to fetch the topology again.
const STREAM_BACKLOG: usize = 16;
/// Documents queued for the server's thread.
const QUEUE: usize = 4;

/// The running server; it stops when dropped.
pub struct Server {
    queue: mpsc::Sender<(TopologyDoc, f64)>,
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
}

fn read_token(path: &PathBuf) -> Result<String, ServerError> {
    let text = std::fs::read_to_string(path).map_err(|source| ServerError::Token {
        path: path.clone(),
        source,
    })?;
    let token = text.trim().to_string();
    if token.is_empty() {
        return Err(ServerError::EmptyToken { path: path.clone() });
    }
    Ok(token)
}

impl Server {
    /// Binds `settings.listen` (an address in use is the error, at once) and serves from a
    /// thread of its own.
    pub fn start(settings: &ServerSettings) -> Result<Server, ServerError> {
        let token = settings.token_file.as_ref().map(read_token).transpose()?;
        let bind = |source| ServerError::Bind {
            addr: settings.listen,
            source,
        };
        let listener = std::net::TcpListener::bind(settings.listen).map_err(bind)?;
        listener.set_nonblocking(true).map_err(bind)?;
        let addr = listener.local_addr().map_err(bind)?;
        let shared = Arc::new(Shared {
            history: RwLock::new(History::new(settings.keep_windows)),
            metrics: Mutex::new(Metrics::new(settings.max_metric_edges)),
            events: broadcast::channel(STREAM_BACKLOG).0,
            token,
            max_stream_clients: settings.max_stream_clients,
            stream_clients: AtomicUsize::new(0),
        });
        let (queue, windows) = mpsc::channel(QUEUE);
        let (shutdown, stopped) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ServerError::Runtime)?;
        let state = shared.clone();
        std::thread::Builder::new()
            .name("cniscope-server".into())
            .spawn(move || {
                runtime.block_on(async move {
                    tokio::spawn(take_windows(windows, state.clone()));
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => return tracing::error!("serving on {addr}: {e}"),
                    };
                    let serve =
                        axum::serve(listener, api::router(state)).with_graceful_shutdown(async {
                            let _ = stopped.await;
                        });
                    if let Err(e) = serve.await {
                        tracing::error!("serving on {addr}: {e}");
                    }
                })
            })
            .map_err(ServerError::Runtime)?;
        tracing::info!("serving the topology, metrics and map on http://{addr}/");
        Ok(Server {
            queue,
            shared,
            addr,
            shutdown: Some(shutdown),
        })
    }

    /// The address it listens on (the port chosen when `listen` has port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Takes the document written after a window.
    pub fn publish(&self, doc: &TopologyDoc) {
        let lag = humantime::parse_rfc3339(&doc.window.end)
            .ok()
            .and_then(|end| SystemTime::now().duration_since(end).ok())
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        if self.queue.try_send((doc.clone(), lag)).is_err() {
            let metrics = self.shared.metrics.lock();
            metrics
                .unwrap_or_else(|e| e.into_inner())
                .windows_skipped
                .inc();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
    }
}

/// The server's side of [`Server::publish`].
async fn take_windows(mut queue: mpsc::Receiver<(TopologyDoc, f64)>, shared: Arc<Shared>) {
    while let Some((doc, lag)) = queue.recv().await {
        let (window, latest) = {
            let mut history = shared.history.write().unwrap_or_else(|e| e.into_inner());
            (history.push(doc), history.latest())
        };
        shared
            .metrics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .update(&latest, lag);
        // No receiver is no error: nobody follows the stream now.
        let _ = shared.events.send(window);
    }
}
