//! Delivering OpenLineage events from the outbox: each sink in order, a
//! failing sink retried with backoff, across restarts. An event leaves the
//! outbox only once its sink accepted it.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::openlineage::{delivered, due_events};
use super::sqlite::SqliteCatalog;

/// Delivers queued events until the process ends: each sink in order,
/// retrying a failing sink with backoff (0.5 s doubling to 10 s).
pub fn spawn_delivery(catalog: Arc<SqliteCatalog>) -> Option<tokio::task::JoinHandle<()>> {
    let config = catalog.openlineage()?.clone();
    if config.sinks().is_empty() {
        return None;
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .ok();
    Some(tokio::spawn(async move {
        loop {
            let mut idle = true;
            for sink in config.sinks() {
                let due = catalog
                    .call(move |c| due_events(c, sink))
                    .await
                    .unwrap_or_default();
                for (id, event) in due {
                    idle = false;
                    let outcome = match sink {
                        "file" => write_line(config.file.as_ref(), &event),
                        _ => post(http.as_ref(), config.endpoint.as_deref(), &event).await,
                    };
                    let failed = outcome.is_err();
                    let _ = catalog.call(move |c| delivered(c, id, outcome.err())).await;
                    if failed {
                        // Keep the order: later events wait for this one.
                        break;
                    }
                }
            }
            if idle {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }))
}

fn write_line(file: Option<&PathBuf>, event: &str) -> Result<(), String> {
    let path = file.ok_or("no file configured")?;
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    out.write_all(format!("{event}\n").as_bytes())
        .and_then(|()| out.sync_data())
        .map_err(|e| format!("{}: {e}", path.display()))
}

async fn post(
    client: Option<&reqwest::Client>,
    endpoint: Option<&str>,
    event: &str,
) -> Result<(), String> {
    let (client, endpoint) = client.zip(endpoint).ok_or("no endpoint configured")?;
    let url = format!("{}/api/v1/lineage", endpoint.trim_end_matches('/'));
    let response = client
        .post(&url)
        .header("content-type", "application/json")
        .body(event.to_string())
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("{url}: HTTP {}", response.status()))
    }
}
