//! Running one query from the shell: polled (`PollFlightInfo`) so that the
//! server reports its progress, shown as a bar on the terminal once it has
//! run for a second; Ctrl-C cancels it on the server (`CancelFlightInfo`)
//! while it runs or streams, and the shell goes on.

use std::future::Future;
use std::time::Duration;

use indicatif::{HumanBytes, HumanCount, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tarn_client::{Client, Polled, QueryResult};

/// How long a query runs before its bar appears.
const QUIET_START: Duration = Duration::from_secs(1);

/// How often the server is asked how far the query has come.
const POLL_EVERY: Duration = Duration::from_millis(200);

/// Steps of the bar (its position is the share of input read).
const STEPS: u64 = 1000;

/// The person pressed Ctrl-C and the query was cancelled on the server.
pub(super) const CANCELLED: &str = "cancelled (Ctrl-C): the query was stopped on the server";

/// Starts `sql`, waits for its result with a bar (when `show_bar`), and
/// streams it through `consume`; Ctrl-C at any point cancels it.
pub(super) async fn run<F, Fut, T>(
    client: &mut Client,
    sql: &str,
    show_bar: bool,
    consume: F,
) -> Result<T, String>
where
    F: FnOnce(QueryResult) -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    // Dropping the call stops its planning on the server.
    let mut polled = tokio::select! {
        polled = client.start(sql) => polled.map_err(|e| e.to_string())?,
        _ = tokio::signal::ctrl_c() => return Err(CANCELLED.into()),
    };
    let bar = Bar::new(show_bar);
    while let Some(again) = polled.again.take() {
        bar.show(&polled);
        tokio::select! {
            () = tokio::time::sleep(POLL_EVERY) => {}
            _ = tokio::signal::ctrl_c() => {
                // The bar stays: how far the query had come when it was stopped.
                bar.keep();
                return Err(cancel(client, &polled).await);
            }
        }
        polled = client.poll(again).await.map_err(|e| e.to_string())?;
    }
    bar.clear();
    let result = client
        .fetch(polled.info.clone())
        .await
        .map_err(|e| e.to_string())?;
    tokio::select! {
        outcome = consume(result) => outcome,
        _ = tokio::signal::ctrl_c() => Err(cancel(client, &polled).await),
    }
}

/// Cancels the query behind `polled`; says what happened.
async fn cancel(client: &mut Client, polled: &Polled) -> String {
    match client.cancel(polled.info.clone()).await {
        Ok(_) => CANCELLED.to_string(),
        Err(e) => format!("Ctrl-C: the query could not be cancelled on the server: {e}"),
    }
}

/// The bar on stderr, hidden for the first second (and off the terminal).
struct Bar {
    bar: Option<ProgressBar>,
}

impl Bar {
    fn new(show: bool) -> Self {
        let bar = show.then(|| {
            let bar = ProgressBar::with_draw_target(Some(STEPS), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{spinner} {elapsed:>4} [{bar:30}] {percent:>3}%  {msg}  (Ctrl-C cancels)",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar
        });
        Self { bar }
    }

    fn show(&self, polled: &Polled) {
        let (Some(bar), Some(detail)) = (&self.bar, &polled.detail) else {
            return;
        };
        if detail.elapsed < QUIET_START {
            return;
        }
        bar.set_elapsed(detail.elapsed);
        let share = polled.progress.unwrap_or(0.0).clamp(0.0, 1.0);
        bar.set_position((share * STEPS as f64) as u64);
        bar.set_message(format!(
            "{} rows, {} scanned",
            HumanCount(detail.rows_scanned),
            HumanBytes(detail.bytes_scanned)
        ));
        bar.tick();
    }

    fn keep(&self) {
        if let Some(bar) = &self.bar {
            bar.abandon();
        }
    }

    fn clear(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
