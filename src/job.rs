//! The job document and its rules, free of I/O: ids, statuses, the initial document in the
//! 2.x field order, and the fields that end a job.

use mongodb::bson::{doc, Bson, Document};

use crate::error::{Error, Result};

/// Every field the core writes in a job document, at its insert or later: the extra fields
/// of [`NewJob::fields`] may not use these names.
pub const CORE_FIELDS: &[&str] = &[
    "_id",
    "good",
    "bad",
    "processed",
    "status",
    "ended",
    "canceling",
    "labels",
    "when",
    "canCancel",
    "canStop",
    "userId",
    "workerId",
    "heartbeatAt",
    "total",
    "failedItems",
    "itemsFinished",
    "itemsFailed",
    "results",
    "interrupted",
    "endedAt",
];

/// Fields of a job document that can be large and that the core's reads leave out (the
/// documents handed to the stop/cancel hooks, say): the `rerun` extra field and the item
/// bitmaps.
pub const LARGE_FIELDS: &[&str] = &["rerun", "itemsFinished", "itemsFailed"];

/// A new job id: a v4 UUID in its simple (32 lowercase hex digits) form, which passes
/// Apostrophe's `launder.id` (`/^[A-Za-z0-9_]+$/`); the hyphenated form would not.
pub fn new_job_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The `status` field. Serialises to the exact 2.x strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    /// Started, not ended.
    Running,
    /// `end(job, truthy)`.
    Completed,
    /// `end(job, falsy)`, or a stop/cancel hook that acknowledged with an error.
    Failed,
    /// Halted through the stop hook.
    Stopped,
    /// Halted through the cancel hook (work undone).
    Canceled,
}

impl JobStatus {
    /// The string stored in MongoDB and read by the browser modal.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Stopped => "stopped",
            JobStatus::Canceled => "canceled",
        }
    }
}

impl From<JobStatus> for Bson {
    fn from(status: JobStatus) -> Bson {
        Bson::String(status.as_str().to_owned())
    }
}

/// Which hook a stop request is answered with. Cancel wins when a job has both (2.x rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HaltKind {
    /// Undo the work, then acknowledge; final status `canceled`.
    Cancel,
    /// Stop taking new work, then acknowledge; final status `stopped`.
    Stop,
}

impl HaltKind {
    /// The hook a job with these flags answers `canceling: true` with, if any.
    pub fn for_job(can_cancel: bool, can_stop: bool) -> Option<HaltKind> {
        if can_cancel {
            Some(HaltKind::Cancel)
        } else if can_stop {
            Some(HaltKind::Stop)
        } else {
            None
        }
    }

    /// The status written when the hook acknowledges without an error.
    pub fn final_status(self) -> JobStatus {
        match self {
            HaltKind::Cancel => JobStatus::Canceled,
            HaltKind::Stop => JobStatus::Stopped,
        }
    }

    /// The name the JavaScript side uses for the hook (`options.cancel` / `options.stop`).
    pub fn hook_name(self) -> &'static str {
        match self {
            HaltKind::Cancel => "cancel",
            HaltKind::Stop => "stop",
        }
    }
}

/// What `start` needs to build a job document.
#[derive(Debug, Clone, Default)]
pub struct NewJob {
    /// `options.labels || {}`, with the BSON types the site's driver gave it.
    pub labels: Document,
    /// `!!options.cancel`.
    pub can_cancel: bool,
    /// `!!options.stop`.
    pub can_stop: bool,
    /// The id of the user who started the job, if known (additive field `userId`).
    pub user_id: Option<String>,
    /// Additive fields inserted after all the others, in order (see [`NewJob::check_fields`]).
    pub fields: Document,
}

/// How the first write of a job stamps a field.
#[derive(Debug, Clone, PartialEq)]
pub enum Initial {
    /// This value.
    Value(Bson),
    /// The database server's clock at the insert: one clock for every process, whatever
    /// their own clocks say.
    ServerTime,
}

impl NewJob {
    /// Checks the extra fields: none may be a field the core writes ([`CORE_FIELDS`]), so
    /// nothing clobbers the 2.x fields or the core's own, and each must be a plain top-level
    /// name (not empty, no leading `$`, no `.`).
    pub fn check_fields(&self) -> Result<()> {
        for key in self.fields.keys() {
            if CORE_FIELDS.contains(&key.as_str()) {
                return Err(Error::invalid_argument(format!(
                    "the extra field `{key}` of a new job is one the job engine writes itself; extra fields may not be any of {}",
                    CORE_FIELDS.join(", ")
                )));
            }
            if key.is_empty() || key.starts_with('$') || key.contains('.') {
                return Err(Error::invalid_argument(format!(
                    "the extra field {key:?} of a new job is not a plain field name (empty, or with a leading `$` or a `.`)"
                )));
            }
        }
        Ok(())
    }

    /// How many bytes the labels and extra fields take in the job document, at most.
    pub fn stored_size(&self) -> usize {
        let size = |document: &Document| {
            let mut bytes = Vec::new();
            document.to_writer(&mut bytes).map_or(0, |()| bytes.len())
        };
        size(&self.labels) + size(&self.fields)
    }

    /// The fields `start` inserts, in order: field for field and type for type what 2.x
    /// inserts (`_id, good, bad, processed, status, ended, canceling, labels, when, canCancel,
    /// canStop`, counters as Int32 as the Node driver writes small integers, `when` a date),
    /// then the additive ones: `userId` when known, the owning process `workerId`,
    /// `heartbeatAt` when heartbeats are on, and last the extra [`NewJob::fields`], in order
    /// (checked by [`NewJob::check_fields`]).
    ///
    /// Unlike 2.x, `when` comes from the database server's clock, like every other time the
    /// core writes, so a job's times agree whatever the site process's clock says.
    pub fn initial_fields(
        self,
        id: &str,
        worker_id: &str,
        heartbeats: bool,
    ) -> Vec<(String, Initial)> {
        let value = |value: Bson| Initial::Value(value);
        let mut fields: Vec<(&'static str, Initial)> = vec![
            ("_id", value(id.into())),
            ("good", value(Bson::Int32(0))),
            ("bad", value(Bson::Int32(0))),
            ("processed", value(Bson::Int32(0))),
            ("status", value(JobStatus::Running.into())),
            ("ended", value(false.into())),
            ("canceling", value(false.into())),
            ("labels", value(Bson::Document(self.labels))),
            ("when", Initial::ServerTime),
            ("canCancel", value(self.can_cancel.into())),
            ("canStop", value(self.can_stop.into())),
        ];
        if let Some(user_id) = self.user_id {
            fields.push(("userId", value(user_id.into())));
        }
        fields.push(("workerId", value(worker_id.into())));
        if heartbeats {
            fields.push(("heartbeatAt", Initial::ServerTime));
        }
        fields
            .into_iter()
            .map(|(key, initial)| (key.to_owned(), initial))
            .chain(self.fields.into_iter().map(|(key, v)| (key, value(v))))
            .collect()
    }
}

/// How a job ends: the `$set` of its final write, which also carries its last counts. Every
/// ending stamps the additive `endedAt` with the database server's clock (for retention).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ending {
    status: JobStatus,
    interrupted: bool,
    with_results: bool,
}

impl Ending {
    /// `end(job, success, results)`: `completed` or `failed`, with `results`. Unlike 2.x it
    /// also clears `canceling`, so a stop requested during the last item does not leave
    /// "Stopping..." on a completed job.
    pub fn end(success: bool) -> Self {
        let status = if success {
            JobStatus::Completed
        } else {
            JobStatus::Failed
        };
        Ending {
            status,
            interrupted: false,
            with_results: true,
        }
    }

    /// A stop/cancel hook acknowledged: `stopped`/`canceled`, or `failed` when it reported an
    /// error. A halted job has no `results` key, as in 2.x.
    pub fn halt(kind: HaltKind, failed: bool) -> Self {
        let status = if failed {
            JobStatus::Failed
        } else {
            kind.final_status()
        };
        Ending {
            status,
            interrupted: false,
            with_results: false,
        }
    }

    /// The job's work was cut short (its process died or drained, or its work function never
    /// acknowledged a stop): `failed`, so the unchanged modal shows "Failed" and can be
    /// closed, with the additive marker `interrupted: true`.
    pub fn interrupted() -> Self {
        Ending {
            status: JobStatus::Failed,
            interrupted: true,
            with_results: false,
        }
    }

    /// The status this ending writes.
    pub fn status(&self) -> JobStatus {
        self.status
    }

    /// The `$set` of the ending. `results` is written as `null` here, in its place among the
    /// fields; the final write puts the raw results there (see [`crate::results`]), or leaves
    /// `null`.
    pub fn set_fields(&self) -> Document {
        let mut set = if self.with_results {
            doc! { "ended": true, "status": self.status, "results": Bson::Null, "canceling": false }
        } else {
            doc! { "ended": true, "canceling": false, "status": self.status }
        };
        if self.interrupted {
            set.insert("interrupted", true);
        }
        set
    }

    /// Whether `job` (as read back) ended this way: how a retried final write whose first
    /// attempt landed without its reply tells its own ending from another process's.
    pub fn is_recorded_in(&self, job: &Document) -> bool {
        job.get_bool("ended").unwrap_or(false)
            && job.get_str("status").ok() == Some(self.status.as_str())
            && job.get_bool("interrupted").unwrap_or(false) == self.interrupted
    }
}

/// A number as the Node driver serialises it: an integral value in Int32 range becomes an
/// Int32, anything else a Double. Keeps counters byte-compatible with 2.x documents.
pub fn js_number(value: f64) -> Bson {
    if value.fract() == 0.0 && value >= f64::from(i32::MIN) && value <= f64::from(i32::MAX) {
        Bson::Int32(value as i32)
    } else {
        Bson::Double(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_are_32_hex_digits_as_launder_id_keeps_them() {
        let id = new_job_id();
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(id, new_job_id());
    }

    fn keys(fields: &[(String, Initial)]) -> Vec<&str> {
        fields.iter().map(|(key, _)| key.as_str()).collect()
    }

    #[test]
    fn the_initial_document_keeps_the_2x_field_order_and_types() {
        let job = NewJob {
            labels: doc! { "title": "Publish" },
            can_cancel: false,
            can_stop: true,
            user_id: None,
            fields: Document::new(),
        };
        let fields = job.initial_fields("abc", "w1", false);
        assert_eq!(
            keys(&fields)[..11],
            [
                "_id",
                "good",
                "bad",
                "processed",
                "status",
                "ended",
                "canceling",
                "labels",
                "when",
                "canCancel",
                "canStop"
            ]
        );
        assert_eq!(fields[1].1, Initial::Value(Bson::Int32(0)));
        assert_eq!(fields[8].1, Initial::ServerTime, "when");
        assert_eq!(fields[4].1, Initial::Value("running".into()));
        assert_eq!(fields[10].1, Initial::Value(true.into()));
    }

    #[test]
    fn additive_fields_come_after_the_2x_ones_and_the_heartbeat_is_the_servers() {
        let job = NewJob {
            user_id: Some("u1".to_owned()),
            ..Default::default()
        };
        let fields = job.clone().initial_fields("abc", "w1", true);
        assert_eq!(keys(&fields)[11..], ["userId", "workerId", "heartbeatAt"]);
        assert_eq!(fields[13].1, Initial::ServerTime);
        let without = job.initial_fields("abc", "w1", false);
        assert_eq!(keys(&without)[11..], ["userId", "workerId"]);
    }

    #[test]
    fn extra_fields_come_last_in_their_order() {
        let job = NewJob {
            user_id: Some("u1".to_owned()),
            fields: doc! { "rerun": { "route": "/r", "ids": ["a", "b"] }, "retryOf": { "id": "j0" } },
            ..Default::default()
        };
        job.check_fields().unwrap();
        let fields = job.initial_fields("abc", "w1", true);
        assert_eq!(
            keys(&fields)[11..],
            ["userId", "workerId", "heartbeatAt", "rerun", "retryOf"]
        );
        assert_eq!(
            fields[14].1,
            Initial::Value(Bson::Document(doc! { "route": "/r", "ids": ["a", "b"] }))
        );
    }

    #[test]
    fn extra_fields_may_not_clobber_a_field_of_the_core() {
        for key in CORE_FIELDS.iter().chain(&["$set", "a.b", ""]) {
            let mut fields = doc! { "rerun": 1 };
            fields.insert(*key, 1);
            let job = NewJob {
                fields,
                ..Default::default()
            };
            let message = job.check_fields().unwrap_err().to_string();
            assert!(
                message.contains(&format!("{key:?}")) || message.contains(&format!("`{key}`")),
                "{message}"
            );
        }
        assert!(NewJob::default().check_fields().is_ok());
    }

    #[test]
    fn cancel_wins_over_stop_and_neither_means_no_hook() {
        assert_eq!(HaltKind::for_job(true, true), Some(HaltKind::Cancel));
        assert_eq!(HaltKind::for_job(false, true), Some(HaltKind::Stop));
        assert_eq!(HaltKind::for_job(false, false), None);
    }

    #[test]
    fn halts_write_their_status_or_failed_and_no_results() {
        let status = |kind, failed| Ending::halt(kind, failed).status().as_str();
        assert_eq!(status(HaltKind::Stop, false), "stopped");
        assert_eq!(status(HaltKind::Cancel, false), "canceled");
        assert_eq!(status(HaltKind::Cancel, true), "failed");
        let fields = Ending::halt(HaltKind::Stop, false).set_fields();
        assert_eq!(
            fields,
            doc! { "ended": true, "canceling": false, "status": "stopped" }
        );
        let interrupted = Ending::interrupted().set_fields();
        assert_eq!(interrupted.get_str("status").unwrap(), "failed");
        assert!(interrupted.get_bool("interrupted").unwrap());
    }

    #[test]
    fn end_clears_canceling_and_always_writes_results() {
        let fields = Ending::end(true).set_fields();
        assert_eq!(
            fields,
            doc! { "ended": true, "status": "completed", "results": Bson::Null, "canceling": false }
        );
        assert_eq!(Ending::end(false).status(), JobStatus::Failed);
    }

    #[test]
    fn an_ending_recognises_itself_but_not_another_processs() {
        let ours = Ending::end(false);
        let swept = doc! { "ended": true, "status": "failed", "interrupted": true };
        assert!(
            !ours.is_recorded_in(&swept),
            "the sweeper's failed is not ours"
        );
        assert!(Ending::interrupted().is_recorded_in(&swept));
        assert!(ours.is_recorded_in(&doc! { "ended": true, "status": "failed" }));
        assert!(!ours.is_recorded_in(&doc! { "ended": false, "status": "failed" }));
    }

    #[test]
    fn numbers_serialise_like_the_node_driver() {
        assert_eq!(js_number(3.0), Bson::Int32(3));
        assert_eq!(js_number(-1.0), Bson::Int32(-1));
        assert_eq!(js_number(1.5), Bson::Double(1.5));
        assert_eq!(js_number(3e9), Bson::Double(3e9));
    }
}
