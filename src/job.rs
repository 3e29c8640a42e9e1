//! The job document and its rules, free of I/O: ids, statuses, the initial document in the
//! 2.x field order, and the updates that end or halt a job.

use mongodb::bson::{doc, Bson, DateTime, Document};

/// A new job id: a v4 UUID in its simple (32 lowercase hex digits) form, which passes
/// Apostrophe's `launder.id` (`/^[A-Za-z0-9_]+$/`); the hyphenated form would not.
pub fn new_job_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Whether `id` is a string Apostrophe's `launder.id` would keep unchanged.
pub fn is_laundered_id(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
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
}

/// The process that runs a job and keeps its heartbeat (additive fields `workerId`,
/// `heartbeatAt`), so another process can tell a job whose process died.
#[derive(Debug, Clone)]
pub struct Worker {
    /// This process's engine id.
    pub id: String,
}

impl NewJob {
    /// The document `start` inserts, field for field and type for type what 2.x inserts:
    /// `_id, good, bad, processed, status, ended, canceling, labels, when, canCancel, canStop`,
    /// counters as Int32 (as the Node driver writes small integers), `when` a BSON date.
    ///
    /// Additive fields follow the 2.x ones: `userId` when known, then `workerId` and
    /// `heartbeatAt` when the job has a worker.
    pub fn into_document(self, id: &str, now: DateTime, worker: Option<&Worker>) -> Document {
        let mut document = doc! {
            "_id": id,
            "good": 0_i32,
            "bad": 0_i32,
            "processed": 0_i32,
            "status": JobStatus::Running,
            "ended": false,
            "canceling": false,
            "labels": self.labels,
            "when": now,
            "canCancel": self.can_cancel,
            "canStop": self.can_stop,
        };
        if let Some(user_id) = self.user_id {
            document.insert("userId", user_id);
        }
        if let Some(worker) = worker {
            document.insert("workerId", worker.id.as_str());
            document.insert("heartbeatAt", now);
        }
        document
    }
}

/// The `$set` of `end(job, success, results)`. Unlike 2.x it also clears `canceling`, so a
/// stop requested during the last item does not leave "Stopping..." on a completed job.
/// `endedAt` (additive) records when, for retention.
///
/// `results` is written as `null` here, in its place among the fields; the writer puts the
/// raw results there (see [`crate::results`]), or leaves `null` when they are too large.
pub fn end_fields(success: bool, now: DateTime) -> Document {
    let status = if success {
        JobStatus::Completed
    } else {
        JobStatus::Failed
    };
    doc! { "ended": true, "status": status, "results": Bson::Null, "canceling": false, "endedAt": now }
}

/// The `$set` written once a stop/cancel hook has acknowledged.
pub fn halt_fields(kind: HaltKind, failed: bool, now: DateTime) -> Document {
    let status = if failed {
        JobStatus::Failed
    } else {
        kind.final_status()
    };
    doc! { "ended": true, "canceling": false, "status": status, "endedAt": now }
}

/// The `$set` that ends a job whose work was interrupted (its process died or drained before
/// it finished): `failed`, so the unchanged modal shows "Failed" and can be closed, with the
/// additive marker `interrupted: true`.
pub fn interrupted_fields(now: DateTime) -> Document {
    doc! {
        "ended": true,
        "canceling": false,
        "status": JobStatus::Failed,
        "interrupted": true,
        "endedAt": now,
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
    fn job_ids_are_32_hex_digits_and_pass_launder_id() {
        let id = new_job_id();
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(is_laundered_id(&id));
        assert_ne!(id, new_job_id());
    }

    #[test]
    fn launder_rules_reject_operators_and_punctuation() {
        assert!(is_laundered_id("ck7y2n1q80000q7b3x9d2h4kf"));
        assert!(is_laundered_id("a_B_9"));
        assert!(!is_laundered_id(""));
        assert!(!is_laundered_id("$ne"));
        assert!(!is_laundered_id("a-b"));
        assert!(!is_laundered_id("a b"));
    }

    #[test]
    fn the_initial_document_keeps_the_2x_field_order_and_types() {
        let job = NewJob {
            labels: doc! { "title": "Publish" },
            can_cancel: false,
            can_stop: true,
            user_id: None,
        };
        let now = DateTime::from_millis(1_584_626_531_123);
        let document = job.into_document("abc", now, None);
        let keys: Vec<&str> = document.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
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
        assert_eq!(document.get("good"), Some(&Bson::Int32(0)));
        assert_eq!(document.get("when"), Some(&Bson::DateTime(now)));
        assert_eq!(document.get_str("status").unwrap(), "running");
        assert!(document.get_bool("canStop").unwrap());
    }

    #[test]
    fn additive_fields_come_after_the_2x_ones() {
        let job = NewJob {
            user_id: Some("u1".to_owned()),
            ..Default::default()
        };
        let worker = Worker {
            id: "w1".to_owned(),
        };
        let document = job.into_document("abc", DateTime::now(), Some(&worker));
        let keys: Vec<&str> = document.keys().map(String::as_str).skip(11).collect();
        assert_eq!(keys, ["userId", "workerId", "heartbeatAt"]);
    }

    #[test]
    fn cancel_wins_over_stop_and_neither_means_no_hook() {
        assert_eq!(HaltKind::for_job(true, true), Some(HaltKind::Cancel));
        assert_eq!(HaltKind::for_job(false, true), Some(HaltKind::Stop));
        assert_eq!(HaltKind::for_job(false, false), None);
    }

    #[test]
    fn halts_write_their_status_or_failed() {
        let now = DateTime::now();
        let status = |kind, failed| {
            halt_fields(kind, failed, now)
                .get_str("status")
                .unwrap()
                .to_owned()
        };
        assert_eq!(status(HaltKind::Stop, false), "stopped");
        assert_eq!(status(HaltKind::Cancel, false), "canceled");
        assert_eq!(status(HaltKind::Cancel, true), "failed");
        let interrupted = interrupted_fields(now);
        assert_eq!(interrupted.get_str("status").unwrap(), "failed");
        assert!(interrupted.get_bool("interrupted").unwrap());
    }

    #[test]
    fn end_clears_canceling_and_always_writes_results() {
        let now = DateTime::now();
        let fields = end_fields(true, now);
        assert_eq!(fields.get("endedAt"), Some(&Bson::DateTime(now)));
        assert_eq!(fields.get_str("status").unwrap(), "completed");
        assert_eq!(fields.get("results"), Some(&Bson::Null));
        assert!(!fields.get_bool("canceling").unwrap());
        assert_eq!(end_fields(false, now).get_str("status").unwrap(), "failed");
    }

    #[test]
    fn numbers_serialise_like_the_node_driver() {
        assert_eq!(js_number(3.0), Bson::Int32(3));
        assert_eq!(js_number(-1.0), Bson::Int32(-1));
        assert_eq!(js_number(1.5), Bson::Double(1.5));
        assert_eq!(js_number(3e9), Bson::Double(3e9));
    }
}
