//! What the core needs from its host (the JavaScript module): calling a job's stop/cancel hook,
//! and a log. Every layer may report through it; it depends on nothing but the job model.

use mongodb::bson::Document;

use crate::job::HaltKind;

/// How loud a message from the engine is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Something a developer should look at; the job goes on.
    Warn,
    /// Something failed.
    Error,
}

/// The host of an engine. Implementations must not block: they are called from the engine's
/// tasks.
pub trait EngineEvents: Send + Sync + 'static {
    /// A stop was requested for a job of this process: call its `kind` hook with the freshly
    /// read job document (without its large fields, [`crate::job::LARGE_FIELDS`]); the
    /// hook's acknowledgement comes back through
    /// the engine's `acknowledge_halt`.
    fn halt_requested(&self, id: &str, kind: HaltKind, job: &Document);
    /// A job of this process ended without its work finishing: another process ended it
    /// (this one was taken for dead), or its work function never acknowledged a stop. Its
    /// work should stop (its signal aborts); nothing it reports is written any more.
    fn job_cut_off(&self, id: &str);
    /// A message for the site's log.
    fn log(&self, level: LogLevel, message: String);
}
