//! The routes: `/api/topology`, `/api/edges/stream`, `/metrics`, `/healthz` and the map
//! (`/`, `/assets/...`). Read-only; every request carries the bearer token when one is set.

use super::Shared;
use super::assets;
use super::history::Filter;
use crate::topology::TopologyDoc;
use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::broadcast::error::RecvError;

type Params = Query<Vec<(String, String)>>;

/// The query parameter carrying the token where no header can (a browser's EventSource);
/// RFC 6750's name.
const TOKEN_PARAM: &str = "access_token";

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/assets/{file}", get(asset))
        .route("/api/topology", get(topology))
        .route("/api/edges/stream", get(stream))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .fallback(|| async {
            bad(
                StatusCode::NOT_FOUND,
                "no such page: see /, /api/topology, /api/edges/stream, /metrics".into(),
            )
        })
        .layer(middleware::from_fn_with_state(shared.clone(), auth))
        .with_state(shared)
}

fn bad(status: StatusCode, message: String) -> Response {
    (status, message + "\n").into_response()
}

/// What a request asked for, checked.
struct Asked {
    window: Option<usize>,
    filter: Filter,
}

/// Reads the query: only `allowed` parameters (and the token), each well formed; else why
/// not (answered 400).
fn asked(query: &[(String, String)], allowed: &[&str], keep: usize) -> Result<Asked, String> {
    let mut out = Asked {
        window: None,
        filter: Filter::default(),
    };
    for (key, value) in query {
        if key == TOKEN_PARAM {
            continue;
        }
        if !allowed.contains(&key.as_str()) {
            let takes = if allowed.is_empty() {
                "no parameters".to_string()
            } else {
                allowed.join(", ")
            };
            return Err(format!("unknown parameter `{key}`: this takes {takes}"));
        }
        let checked = match key.as_str() {
            "namespace" => out.filter.add_namespace(value),
            "pod" => out.filter.add_pod(value),
            "window" => match value.parse::<usize>() {
                _ if out.window.is_some() => Err("window= given twice".to_string()),
                Ok(n) if (1..=keep).contains(&n) => {
                    out.window = Some(n);
                    Ok(())
                }
                _ => Err(format!(
                    "window={value:?}: use a number of windows from 1 to {keep} (the windows kept, [server] keep_windows)"
                )),
            },
            _ => unreachable!("allowed"),
        };
        checked?;
    }
    Ok(out)
}

fn json(doc: &TopologyDoc) -> Response {
    let body = serde_json::to_vec(doc).expect("the topology serializes");
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `GET /api/topology`: the document written after the latest window (what `output_file`
/// holds); `?window=N`: the last N windows' own traffic; `?namespace=`, `?pod=`.
async fn topology(State(s): State<Arc<Shared>>, Query(q): Params) -> Response {
    let history = s.history.read().unwrap_or_else(|e| e.into_inner());
    let a = match asked(&q, &["window", "namespace", "pod"], history.keep()) {
        Ok(a) => a,
        Err(m) => return bad(StatusCode::BAD_REQUEST, m),
    };
    let doc = match a.window {
        Some(n) => a.filter.apply(&history.last(n)),
        None => a.filter.apply(&history.latest()),
    };
    drop(history);
    json(&doc)
}

/// Decrements the stream clients when a stream ends (the client went away).
struct Client(Arc<Shared>);

impl Drop for Client {
    fn drop(&mut self) {
        self.0.stream_clients.fetch_sub(1, Ordering::Relaxed);
        let m = self.0.metrics.lock().unwrap_or_else(|e| e.into_inner());
        m.stream_clients.dec();
    }
}

/// `GET /api/edges/stream`: server-sent events, `window` once per window with that window's
/// own traffic (a topology document), `resync` when this client fell behind (fetch
/// `/api/topology` again). `?namespace=`, `?pod=` as for the topology.
async fn stream(State(s): State<Arc<Shared>>, Query(q): Params) -> Response {
    let a = match asked(&q, &["namespace", "pod"], 1) {
        Ok(a) => a,
        Err(m) => return bad(StatusCode::BAD_REQUEST, m),
    };
    let n = s.stream_clients.fetch_add(1, Ordering::Relaxed);
    let client = Client(s.clone());
    s.metrics
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .stream_clients
        .inc();
    if n >= s.max_stream_clients {
        s.metrics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stream_refused
            .inc();
        drop(client);
        return bad(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{n} stream clients already ([server] max_stream_clients)"),
        );
    }
    let events = s.events.subscribe();
    let filter = a.filter;
    let stream = futures::stream::unfold(
        (events, client, filter),
        |(mut events, client, filter)| async move {
            let event = match events.recv().await {
                Ok(window) => Event::default()
                    .event("window")
                    .id(window.window.end.clone())
                    .data(serde_json::to_string(&filter.apply(&window)).expect("serializes")),
                Err(RecvError::Lagged(n)) => Event::default()
                    .event("resync")
                    .data(format!("{n} windows missed: fetch /api/topology again")),
                Err(RecvError::Closed) => return None,
            };
            Some((Ok::<_, Infallible>(event), (events, client, filter)))
        },
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// `GET /metrics`: the Prometheus (OpenMetrics) text.
async fn metrics(State(s): State<Arc<Shared>>, Query(q): Params) -> Response {
    if let Err(m) = asked(&q, &[], 1) {
        return bad(StatusCode::BAD_REQUEST, m);
    }
    let text = s.metrics.lock().unwrap_or_else(|e| e.into_inner()).encode();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// `GET /healthz`: 200 once a window was published, 503 before.
async fn healthz(State(s): State<Arc<Shared>>) -> Response {
    let published = s
        .history
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .published();
    if published == 0 {
        bad(StatusCode::SERVICE_UNAVAILABLE, "no window yet".into())
    } else {
        (StatusCode::OK, format!("ok: {published} windows\n")).into_response()
    }
}

async fn index(Query(q): Params) -> Response {
    if let Err(m) = asked(&q, &[], 1) {
        return bad(StatusCode::BAD_REQUEST, m);
    }
    asset_response("index.html")
}

async fn asset(Path(file): Path<String>) -> Response {
    asset_response(&file)
}

fn asset_response(file: &str) -> Response {
    let Some((body, kind)) = assets::get(file) else {
        return bad(StatusCode::NOT_FOUND, format!("no asset {file:?}"));
    };
    let mut r = ([(header::CONTENT_TYPE, kind)], body).into_response();
    let h = r.headers_mut();
    // Everything the page needs comes from here: nothing from elsewhere may run.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// Compares without stopping at the first difference (the time taken tells nothing).
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// With a token set: `Authorization: Bearer TOKEN`, or `?access_token=TOKEN`.
async fn auth(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let Some(token) = &s.token else {
        return next.run(req).await;
    };
    let in_header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| same(t.trim(), token));
    let in_query = Query::<Vec<(String, String)>>::try_from_uri(req.uri())
        .map(|Query(q)| q.iter().any(|(k, v)| k == TOKEN_PARAM && same(v, token)))
        .unwrap_or(false);
    if in_header || in_query {
        return next.run(req).await;
    }
    let mut r = bad(
        StatusCode::UNAUTHORIZED,
        "this server needs its token: Authorization: Bearer TOKEN".into(),
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"cniscope\""),
    );
    r
}
