//! The stop/cancel watcher: one task per engine, one query per tick for all of this
//! process's live stoppable jobs (2.x ran one timer and one query per job). A tick never
//! overlaps the previous one, because the loop awaits each check before the next tick.

use std::sync::Arc;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::engine::{LogLevel, Shared};

pub(crate) async fn run(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(shared.timings.watch_interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let ok = check_inner(&shared, None, !failing).await;
        failing = !ok;
    }
}

/// One pass: reads which of the watched jobs (or only `only`) have `canceling: true`, marks
/// them halting, wakes their batch loop and calls their hook.
pub(crate) async fn check(shared: &Shared, only: Option<&str>) {
    check_inner(shared, only, true).await;
}

async fn check_inner(shared: &Shared, only: Option<&str>, log_failure: bool) -> bool {
    let ids: Vec<String> = shared
        .live()
        .iter()
        .filter(|(id, live)| !live.halting && only.is_none_or(|only| only == id.as_str()))
        .map(|(id, _)| id.clone())
        .collect();
    if ids.is_empty() {
        return true;
    }
    let requested = match shared.store.find_canceling(&ids).await {
        Ok(documents) => documents,
        Err(error) => {
            if log_failure {
                shared.events.log(
                    LogLevel::Error,
                    format!("{error}; stop requests are picked up once MongoDB answers again"),
                );
            }
            return false;
        }
    };
    for document in requested {
        let Ok(id) = document.get_str("_id") else {
            continue;
        };
        let kind = {
            let mut live = shared.live();
            let Some(job) = live.get_mut(id) else {
                continue;
            };
            if job.halting {
                continue;
            }
            job.halting = true;
            job.halt.cancel();
            job.kind
        };
        shared.events.halt_requested(id, kind, &document);
    }
    true
}
