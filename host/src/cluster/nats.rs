//! Reaching NATS JetStream: connection options from `[nats]`, a first connection that waits
//! (saying once, in one line, why it cannot reach the broker), and the stream both sides use.

use super::{DEDUP_WINDOW, OBS_SUBJECTS, STREAM};
use crate::config::NatsSettings;
use async_nats::jetstream::{self, stream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum NatsError {
    /// A credentials or key file could not be read.
    #[error("nats: {what} {path}: {source}")]
    Credentials {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    /// Stopped (SIGINT/SIGTERM) before the broker answered.
    #[error("stopped before NATS at {0} could be reached")]
    Stopped(String),
    /// JetStream refused to create or read the stream.
    #[error("nats: stream {STREAM}: {0}")]
    Stream(String),
}

/// How long a first connection attempt may take, and the pause between attempts.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RETRY_EVERY: Duration = Duration::from_secs(1);

async fn options(s: &NatsSettings, name: &str) -> Result<async_nats::ConnectOptions, NatsError> {
    let mut o = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(CONNECT_TIMEOUT)
        // Reconnect forever: a broker restart must not end an agent or the aggregator.
        .max_reconnects(None);
    if let Some(path) = &s.creds {
        o = o
            .credentials_file(path)
            .await
            .map_err(|source| NatsError::Credentials {
                what: "creds",
                path: path.display().to_string(),
                source,
            })?;
    }
    if let Some(path) = &s.nkey {
        let seed = std::fs::read_to_string(path).map_err(|source| NatsError::Credentials {
            what: "nkey",
            path: path.display().to_string(),
            source,
        })?;
        o = o.nkey(seed.trim().to_string());
    }
    if let (Some(user), Some(password)) = (&s.user, &s.password) {
        o = o.user_and_password(user.clone(), password.clone());
    }
    if let Some(token) = &s.token {
        o = o.token(token.clone());
    }
    if let Some(ca) = &s.tls_ca {
        o = o.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&s.tls_cert, &s.tls_key) {
        o = o.add_client_certificate(cert.clone(), key.clone());
    }
    Ok(o)
}

/// Connects, retrying until the broker answers or `stop` is set. The first failure is
/// logged in one line with the URL and the reason, then once a minute.
pub async fn connect(
    s: &NatsSettings,
    name: &str,
    stop: &AtomicBool,
) -> Result<async_nats::Client, NatsError> {
    let mut attempts = 0u64;
    loop {
        match options(s, name).await?.connect(s.url.as_str()).await {
            Ok(client) => {
                if attempts > 0 {
                    tracing::warn!(url = %s.url, "connected to NATS after {attempts} failed attempts");
                }
                return Ok(client);
            }
            Err(e) => {
                if attempts.is_multiple_of(60) {
                    tracing::error!(
                        "cannot reach NATS at {}: {e}; retrying every {}s",
                        s.url,
                        RETRY_EVERY.as_secs()
                    );
                }
                attempts += 1;
            }
        }
        if stop.load(Ordering::Relaxed) {
            return Err(NatsError::Stopped(s.url.clone()));
        }
        tokio::time::sleep(RETRY_EVERY).await;
    }
}

/// The observation stream, created when missing.
pub async fn observation_stream(
    js: &jetstream::Context,
) -> Result<jetstream::stream::Stream, NatsError> {
    js.get_or_create_stream(stream::Config {
        name: STREAM.to_string(),
        subjects: vec![OBS_SUBJECTS.to_string()],
        storage: stream::StorageType::File,
        duplicate_window: DEDUP_WINDOW,
        ..Default::default()
    })
    .await
    .map_err(|e| NatsError::Stream(e.to_string()))
}
