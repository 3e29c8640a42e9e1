//! MongoDB access for job state through the official driver: one method per 2.x write, on a
//! cheap `Clone` handle around the jobs collection.

use std::time::Duration;

use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, DateTime, Document, RawBsonRef};
use mongodb::error::{ErrorKind as DriverErrorKind, WriteConcernError, WriteError, WriteFailure};
use mongodb::options::{ClientOptions, IndexOptions, ReturnDocument, WriteConcern};
use mongodb::{Client, Collection, IndexModel};
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use crate::error::{Error, ErrorKind, Result};

/// Where the jobs live.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// A MongoDB connection string (the site's).
    pub uri: String,
    /// The site's database name.
    pub database: String,
    /// The jobs collection. Defaults to `aposJobs`.
    pub collection: Option<String>,
    /// How long the start-up ping may take. Defaults to 10 seconds.
    pub connect_timeout: Option<Duration>,
}

/// The jobs collection.
#[derive(Debug, Clone)]
pub struct JobStore {
    collection: Collection<Document>,
}

impl JobStore {
    /// Connects and pings, so an unreachable database is a clear error at start-up rather than
    /// a hang at the first job.
    pub async fn connect(options: &StoreOptions) -> Result<JobStore> {
        let after = options.connect_timeout.unwrap_or(Duration::from_secs(10));
        let target = redact_password(&options.uri);
        let unreachable = |source| ErrorKind::Unreachable {
            target: target.clone(),
            after,
            source,
        };
        let mut client_options = ClientOptions::parse(&options.uri)
            .await
            .map_err(|source| {
                Error::invalid_argument(format!(
                    "the MongoDB URI {target} could not be parsed ({source}); pass a mongodb:// or mongodb+srv:// connection string"
                ))
            })?;
        client_options.app_name = Some("apostrophe-jobs-native".to_owned());
        if client_options.server_selection_timeout.is_none() {
            client_options.server_selection_timeout = Some(after);
        }
        let client = Client::with_options(client_options).map_err(unreachable)?;
        let database = client.database(&options.database);
        match tokio::time::timeout(after, database.run_command(doc! { "ping": 1 })).await {
            Ok(Ok(_)) => {}
            Ok(Err(source)) => return Err(unreachable(source).into()),
            Err(_) => {
                return Err(
                    unreachable(mongodb::error::Error::custom("ping timed out".to_owned())).into(),
                )
            }
        }
        let name = options.collection.as_deref().unwrap_or("aposJobs");
        Ok(JobStore {
            collection: database.collection(name),
        })
    }

    /// Inserts a new job document.
    pub async fn insert(&self, job: &Document) -> Result<()> {
        self.collection
            .insert_one(job)
            .await
            .map_err(|e| Error::database("insert of the job document", e))?;
        Ok(())
    }

    /// Applies an update to one job; returns whether a document matched.
    pub async fn update(&self, id: &str, update: Document) -> Result<bool> {
        let result = self
            .collection
            .update_one(doc! { "_id": id }, update)
            .await
            .map_err(|e| Error::database("update of the job document", e))?;
        Ok(result.matched_count > 0)
    }

    /// Applies an update to one job and reads back its `canceling`, so a count write is also
    /// a stop check. Returns whether a stop was requested (false if the job is gone).
    pub async fn update_reading_canceling(&self, id: &str, update: Document) -> Result<bool> {
        let after = self
            .collection
            .find_one_and_update(doc! { "_id": id }, update)
            .projection(doc! { "_id": 0, "canceling": 1 })
            .return_document(ReturnDocument::After)
            .await
            .map_err(|e| Error::database("update of the job document", e))?;
        Ok(after.is_some_and(|job| job.get_bool("canceling").unwrap_or(false)))
    }

    /// Applies an update to one job whose `$set` has `field` (as a placeholder) replaced by
    /// `value`, raw BSON that is copied, never parsed: a job's `results` can be megabytes.
    /// Sent as an `update` command, since the driver's `update_one` takes only a `Document`.
    pub async fn update_with_raw_field(
        &self,
        id: &str,
        update: Document,
        field: &str,
        value: RawBsonRef<'_>,
    ) -> Result<bool> {
        const OPERATION: &str = "update of the job document";
        let command = UpdateCommand {
            update: self.collection.name(),
            write_concern: self.collection.write_concern(),
            updates: [UpdateStatement {
                q: doc! { "_id": id },
                u: WithRawField {
                    document: &update,
                    path: &["$set", field],
                    value,
                },
            }],
        };
        let command = mongodb::bson::to_raw_document_buf(&command)
            .map_err(|e| Error::database(OPERATION, e.into()))?;
        let reply = self
            .collection
            .client()
            .database(&self.collection.namespace().db)
            .run_raw_command(command)
            .await
            .map_err(|e| Error::database(OPERATION, e))?;
        // `run_raw_command` reports only command failures; the update's own come in the reply.
        if let Ok(errors) = reply.get_array("writeErrors") {
            if let Some(Bson::Document(first)) = errors.first() {
                let refused: WriteError = mongodb::bson::from_document(first.clone())
                    .map_err(|e| Error::database(OPERATION, e.into()))?;
                let source = DriverErrorKind::Write(WriteFailure::WriteError(refused));
                return Err(Error::database(OPERATION, source.into()));
            }
        }
        if let Ok(concern) = reply.get_document("writeConcernError") {
            let failed: WriteConcernError = mongodb::bson::from_document(concern.clone())
                .map_err(|e| Error::database(OPERATION, e.into()))?;
            let source = DriverErrorKind::Write(WriteFailure::WriteConcernError(failed));
            return Err(Error::database(OPERATION, source.into()));
        }
        Ok(reply.get_i32("n").unwrap_or(0) > 0)
    }

    /// The `cancel` route's write: asks a running job to stop. Unlike 2.x, an ended job is
    /// left alone, so it never shows "Stopping..." afterwards. Returns whether a running job
    /// matched.
    pub async fn request_cancel(&self, id: &str) -> Result<bool> {
        let result = self
            .collection
            .update_one(
                doc! { "_id": id, "ended": false },
                doc! { "$set": { "canceling": true } },
            )
            .await
            .map_err(|e| Error::database("update of canceling", e))?;
        Ok(result.matched_count > 0)
    }

    /// The watcher's query: which of these jobs have been asked to stop. One round trip for
    /// all of them.
    pub async fn find_canceling(&self, ids: &[String]) -> Result<Vec<Document>> {
        self.collection
            .find(doc! { "_id": { "$in": ids }, "canceling": true })
            .await
            .map_err(|e| Error::database("stop/cancel check", e))?
            .try_collect()
            .await
            .map_err(|e| Error::database("stop/cancel check", e))
    }

    /// Refreshes the heartbeat of this process's running jobs, in one write.
    pub async fn heartbeat(&self, ids: &[String], now: DateTime) -> Result<()> {
        self.collection
            .update_many(
                doc! { "_id": { "$in": ids }, "ended": false },
                doc! { "$set": { "heartbeatAt": now } },
            )
            .await
            .map_err(|e| Error::database("heartbeat", e))?;
        Ok(())
    }

    /// Ends the running jobs of other processes whose heartbeat is older than `cutoff` with
    /// these fields; returns how many. Jobs without a heartbeat (started by the stock module)
    /// are never touched.
    pub async fn end_orphans(
        &self,
        cutoff: DateTime,
        this_worker: &str,
        fields: Document,
    ) -> Result<u64> {
        let result = self
            .collection
            .update_many(
                doc! {
                    "ended": false,
                    "heartbeatAt": { "$lt": cutoff },
                    "workerId": { "$ne": this_worker },
                },
                doc! { "$set": fields },
            )
            .await
            .map_err(|e| Error::database("end of orphaned jobs", e))?;
        Ok(result.modified_count)
    }

    /// Deletes jobs that ended before `cutoff` (by `endedAt`, or by `when` for jobs the stock
    /// module ended, which have no `endedAt`); returns how many.
    pub async fn purge(&self, cutoff: DateTime) -> Result<u64> {
        let result = self
            .collection
            .delete_many(doc! {
                "ended": true,
                "$or": [
                    { "endedAt": { "$lt": cutoff } },
                    { "endedAt": { "$exists": false }, "when": { "$lt": cutoff } },
                ],
            })
            .await
            .map_err(|e| Error::database("purge of old jobs", e))?;
        Ok(result.deleted_count)
    }

    /// Makes ended jobs expire `after` their `endedAt` (a TTL index), idempotently: an index
    /// left by an earlier setting gets the new one.
    pub async fn expire_after(&self, after: Duration) -> Result<()> {
        const NAME: &str = "endedAt_ttl";
        let index = IndexModel::builder()
            .keys(doc! { "endedAt": 1 })
            .options(
                IndexOptions::builder()
                    .name(NAME.to_owned())
                    .expire_after(after)
                    .build(),
            )
            .build();
        match self.collection.create_index(index).await {
            Ok(_) => Ok(()),
            Err(_) => {
                // An index of that name with another expiry: change it in place.
                self.collection
                    .client()
                    .database(&self.collection.namespace().db)
                    .run_command(doc! {
                        "collMod": self.collection.name(),
                        "index": { "name": NAME, "expireAfterSeconds": after.as_secs() as i64 },
                    })
                    .await
                    .map_err(|e| Error::database("creation of the expiry index", e))?;
                Ok(())
            }
        }
    }

    /// One job document.
    pub async fn find(&self, id: &str) -> Result<Option<Document>> {
        self.collection
            .find_one(doc! { "_id": id })
            .await
            .map_err(|e| Error::database("read of the job document", e))
    }
}

/// An `update` command for one document, serialised in one pass, so the raw value in it is
/// copied once (built from nested `RawDocumentBuf`s, it was copied at every level).
#[derive(Serialize)]
struct UpdateCommand<'a> {
    update: &'a str,
    #[serde(rename = "writeConcern", skip_serializing_if = "Option::is_none")]
    write_concern: Option<&'a WriteConcern>,
    updates: [UpdateStatement<'a>; 1],
}

#[derive(Serialize)]
struct UpdateStatement<'a> {
    q: Document,
    u: WithRawField<'a>,
}

/// `document`, with the field at `path` (a placeholder) serialised as `value`, in its place.
struct WithRawField<'a> {
    document: &'a Document,
    path: &'a [&'a str],
    value: RawBsonRef<'a>,
}

impl Serialize for WithRawField<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.document.len()))?;
        for (key, current) in self.document {
            match (self.path, current) {
                ([field], _) if field == key => map.serialize_entry(key, &self.value)?,
                ([field, rest @ ..], Bson::Document(inner)) if field == key => map
                    .serialize_entry(
                        key,
                        &WithRawField {
                            document: inner,
                            path: rest,
                            value: self.value,
                        },
                    )?,
                _ => map.serialize_entry(key, current)?,
            }
        }
        map.end()
    }
}

/// Whether the server refused a write because the document would pass the 16 MB limit.
pub fn is_too_large(error: &mongodb::error::Error) -> bool {
    const TOO_LARGE_CODES: [i32; 4] = [10334, 17419, 17420, 13548];
    let code = match error.kind.as_ref() {
        DriverErrorKind::Write(WriteFailure::WriteError(e)) => Some(e.code),
        DriverErrorKind::Command(e) => Some(e.code),
        _ => None,
    };
    code.is_some_and(|code| TOO_LARGE_CODES.contains(&code))
        || error.to_string().contains("too large")
        || error.to_string().contains("larger than")
}

/// Whether an error is about reaching the server rather than about the write itself, so
/// that trying again later can succeed.
pub fn is_transient(error: &Error) -> bool {
    match error.kind() {
        ErrorKind::Database { source, .. } => {
            let code = match source.kind.as_ref() {
                DriverErrorKind::Command(e) => Some(e.code),
                DriverErrorKind::Write(WriteFailure::WriteConcernError(e)) => Some(e.code),
                _ => None,
            };
            matches!(
                source.kind.as_ref(),
                DriverErrorKind::Io(_)
                    | DriverErrorKind::ServerSelection { .. }
                    | DriverErrorKind::ConnectionPoolCleared { .. }
            ) || source.contains_label(mongodb::error::RETRYABLE_WRITE_ERROR)
                || code.is_some_and(|code| RETRYABLE_WRITE_CODES.contains(&code))
        }
        _ => false,
    }
}

/// The codes after which the retryable-writes specification retries a write (a primary
/// stepping down, a shutdown, the network), for writes the driver does not retry itself: the
/// final update is a raw command.
const RETRYABLE_WRITE_CODES: [i32; 12] = [
    6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436,
];

/// The URI with any password replaced, for messages.
pub fn redact_password(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((credentials, hosts)) => {
            let user = credentials.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{hosts}{tail}")
        }
        None => uri.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::rawdoc;

    #[test]
    fn a_raw_field_takes_the_place_of_its_placeholder() {
        let results = rawdoc! { "value": { "a": 1, "b": "two" } };
        let now = DateTime::from_millis(1_000);
        let update = doc! {
            "$set": { "good": 2, "ended": true, "results": Bson::Null, "endedAt": now },
            "$inc": { "results": 1 },
        };
        let command = UpdateCommand {
            update: "aposJobs",
            write_concern: None,
            updates: [UpdateStatement {
                q: doc! { "_id": "j1" },
                u: WithRawField {
                    document: &update,
                    path: &["$set", "results"],
                    value: results.get("value").unwrap().unwrap(),
                },
            }],
        };
        let command = mongodb::bson::to_raw_document_buf(&command).unwrap();
        assert_eq!(
            command.to_document().unwrap(),
            doc! {
                "update": "aposJobs",
                "updates": [{
                    "q": { "_id": "j1" },
                    "u": {
                        "$set": { "good": 2, "ended": true, "results": { "a": 1, "b": "two" }, "endedAt": now },
                        "$inc": { "results": 1 },
                    },
                }],
            }
        );
    }

    #[test]
    fn a_primary_stepping_down_is_transient_a_refused_write_is_not() {
        let command_error = |code: i32| {
            let failure: mongodb::error::CommandError =
                mongodb::bson::from_document(doc! { "code": code, "codeName": "X", "errmsg": "x" })
                    .unwrap();
            Error::database("update", DriverErrorKind::Command(failure).into())
        };
        assert!(is_transient(&command_error(10107)), "NotWritablePrimary");
        assert!(is_transient(&command_error(189)), "PrimarySteppedDown");
        assert!(!is_transient(&command_error(2)), "BadValue");
        assert!(!is_transient(&command_error(10334)), "BSONObjectTooLarge");
    }

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact_password("mongodb://bob:secret@db1,db2/site?authSource=admin"),
            "mongodb://bob:***@db1,db2/site?authSource=admin"
        );
        assert_eq!(
            redact_password("mongodb://localhost:27017/site"),
            "mongodb://localhost:27017/site"
        );
        assert_eq!(redact_password("not a uri"), "not a uri");
    }
}
