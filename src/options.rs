//! The engine's options, and the timings derived from them. Validated once, when the engine
//! starts: a zero interval would stop a background task (a tokio interval of zero panics), so
//! it is an error here rather than a silent loss of heartbeats later.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::store::StoreOptions;

/// How an engine connects and how often its background tasks run; every field defaults to the
/// documented value.
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    /// Where the jobs live. Required to connect.
    pub store: Option<StoreOptions>,
    /// How soon counts of quick items are written, at most. Defaults to 100 ms.
    pub flush_interval: Option<Duration>,
    /// How often stop requests are looked for (and counts of slow items written). Defaults to
    /// 250 ms, the 2.x period.
    pub watch_interval: Option<Duration>,
    /// How long the final write of a job is retried while MongoDB cannot be reached.
    /// Defaults to 60 seconds.
    pub finish_retry_window: Option<Duration>,
    /// How long a running job's process may stay silent before another process ends the job
    /// as interrupted. Defaults to 30 seconds; heartbeats go out every sixth of it. `None`
    /// here means the default; [`EngineOptions::heartbeats`] turns them off.
    pub orphan_after: Option<Duration>,
    /// Whether this process sends heartbeats and ends other processes' silent jobs. Defaults
    /// to true.
    pub heartbeats: Option<bool>,
    /// How long the items in flight (or a work function) may take to stop once a stop was
    /// requested, before the job ends without them. Defaults to 10 seconds.
    pub stop_grace: Option<Duration>,
    /// How many failed items (`{ id, message }`) a job keeps in `failedItems`. Defaults to 100.
    pub keep_failed_items: Option<usize>,
    /// Ended jobs are deleted this long after `endedAt` (a TTL index). Defaults to never.
    pub expire_after: Option<Duration>,
}

/// The smallest `orphan_after`: heartbeats go out every sixth of it, and a bound shorter than
/// a second would have processes sweep each other's jobs during an ordinary garbage collection.
pub const MIN_ORPHAN_AFTER: Duration = Duration::from_secs(1);

/// When counts have waited a flush interval, they are written early only if at least this
/// many items (or a `total`) wait with them: at most one such write per 32 items, while items
/// take under ~3 ms. Otherwise they go out with the watcher's next tick, where the write
/// doubles as the job's stop check.
pub const EARLY_WRITE_ITEMS: f64 = 32.0;

/// The timings every task reads, resolved from [`EngineOptions`].
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    /// See [`EngineOptions::flush_interval`].
    pub flush_interval: Duration,
    /// See [`EngineOptions::watch_interval`].
    pub watch_interval: Duration,
    /// See [`EngineOptions::finish_retry_window`].
    pub finish_retry_window: Duration,
    /// See [`EngineOptions::stop_grace`].
    pub stop_grace: Duration,
    /// `None` when heartbeats are off.
    pub orphan_after: Option<Duration>,
    /// See [`EngineOptions::keep_failed_items`].
    pub keep_failed_items: usize,
}

impl Timings {
    /// Resolves and checks the options: every interval must be above zero, and `orphan_after`
    /// at least [`MIN_ORPHAN_AFTER`].
    pub fn from_options(options: &EngineOptions) -> Result<Self> {
        let positive = |value: Option<Duration>, default: Duration, name: &str| {
            let value = value.unwrap_or(default);
            if value.is_zero() {
                return Err(Error::invalid_argument(format!(
                    "{name} must be above zero (it defaults to {default:?})"
                )));
            }
            Ok(value)
        };
        let orphan_after = positive(
            options.orphan_after,
            Duration::from_secs(30),
            "orphan_after",
        )?;
        if orphan_after < MIN_ORPHAN_AFTER {
            return Err(Error::invalid_argument(format!(
                "orphan_after must be at least {MIN_ORPHAN_AFTER:?}, not {orphan_after:?}; turn heartbeats off instead"
            )));
        }
        Ok(Timings {
            flush_interval: positive(
                options.flush_interval,
                Duration::from_millis(100),
                "flush_interval",
            )?,
            watch_interval: positive(
                options.watch_interval,
                Duration::from_millis(250),
                "watch_interval",
            )?,
            finish_retry_window: positive(
                options.finish_retry_window,
                Duration::from_secs(60),
                "finish_retry_window",
            )?,
            stop_grace: positive(options.stop_grace, Duration::from_secs(10), "stop_grace")?,
            orphan_after: options.heartbeats.unwrap_or(true).then_some(orphan_after),
            keep_failed_items: options.keep_failed_items.unwrap_or(100),
        })
    }

    /// How often a job's heartbeat must be refreshed: a sixth of the bound, so five can be
    /// missed before another process calls the job orphaned.
    pub fn heartbeat_every(&self) -> Option<Duration> {
        self.orphan_after.map(|after| after / 6)
    }

    /// How long a confirmed write keeps this process sure that a job is still its own: two
    /// thirds of the bound, counted from when the write was sent. Past it, another process
    /// might soon end the job, so no new item starts until a write confirms the job again.
    pub fn lease(&self) -> Option<Duration> {
        self.orphan_after.map(|after| after * 2 / 3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_values() {
        let timings = Timings::from_options(&EngineOptions::default()).unwrap();
        assert_eq!(timings.watch_interval, Duration::from_millis(250));
        assert_eq!(timings.orphan_after, Some(Duration::from_secs(30)));
        assert_eq!(timings.heartbeat_every(), Some(Duration::from_secs(5)));
        assert_eq!(timings.lease(), Some(Duration::from_secs(20)));
        assert_eq!(timings.stop_grace, Duration::from_secs(10));
    }

    #[test]
    fn a_zero_interval_is_refused_with_its_name() {
        let options = EngineOptions {
            watch_interval: Some(Duration::ZERO),
            ..Default::default()
        };
        let message = Timings::from_options(&options).unwrap_err().to_string();
        assert!(
            message.contains("watch_interval must be above zero"),
            "{message}"
        );
    }

    #[test]
    fn a_bound_under_a_second_is_refused_and_heartbeats_can_be_turned_off() {
        let short = EngineOptions {
            orphan_after: Some(Duration::from_millis(500)),
            ..Default::default()
        };
        assert!(Timings::from_options(&short).is_err());
        let off = EngineOptions {
            heartbeats: Some(false),
            ..Default::default()
        };
        let timings = Timings::from_options(&off).unwrap();
        assert_eq!(timings.orphan_after, None);
        assert_eq!(timings.lease(), None);
    }
}
