//! The [`Store`] on MongoDB, through the official driver: a cheap `Clone` handle around the
//! jobs collection.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, TryStreamExt};
use mongodb::bson::{doc, Bson, DateTime, Document, RawBsonRef};
use mongodb::error::{ErrorKind as DriverErrorKind, WriteConcernError, WriteError, WriteFailure};
use mongodb::options::{ClientOptions, IndexOptions, ReturnDocument, WriteConcern};
use mongodb::{Client, Collection, Database, IndexModel};
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use super::{Fenced, Orphan, Store, StoreFuture};
use crate::error::{Error, ErrorKind, Result};
use crate::job::{Initial, LARGE_FIELDS};

/// Where the jobs live.
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    /// A MongoDB connection string (the site's).
    pub uri: String,
    /// The site's database name.
    pub database: String,
    /// The jobs collection. Defaults to `aposJobs`.
    pub collection: Option<String>,
    /// How long the start-up ping may take. Defaults to 10 seconds.
    pub connect_timeout: Option<Duration>,
    /// Insert jobs as servers older than MongoDB 4.2 need (no update pipelines). Found out at
    /// connect; set only to test that path on a newer server.
    pub legacy_insert: Option<bool>,
}

/// The jobs collection on MongoDB.
#[derive(Debug, Clone)]
pub struct MongoStore {
    collection: Collection<Document>,
    clock: Arc<ServerClock>,
}

/// For servers without update pipelines (before MongoDB 4.2), where an insert cannot take the
/// server's clock: the offset of the server's clock from this process's, measured at connect
/// and at every sweep, so an inserted `when` and `heartbeatAt` are the server's time as well
/// as can be told.
#[derive(Debug)]
struct ServerClock {
    legacy_insert: bool,
    offset_ms: AtomicI64,
}

impl ServerClock {
    fn observe(&self, server: DateTime, sent: DateTime, received: DateTime) {
        let middle = (sent.timestamp_millis() + received.timestamp_millis()) / 2;
        self.offset_ms
            .store(server.timestamp_millis() - middle, Ordering::Relaxed);
    }

    fn now(&self) -> DateTime {
        DateTime::from_millis(
            DateTime::now().timestamp_millis() + self.offset_ms.load(Ordering::Relaxed),
        )
    }
}

/// The first server release with update pipelines (MongoDB 4.2).
const PIPELINE_WIRE_VERSION: i32 = 8;

impl MongoStore {
    /// Connects and reads the server's clock, so an unreachable database is a clear error at
    /// start-up rather than a hang at the first job.
    pub async fn connect(options: &StoreOptions) -> Result<MongoStore> {
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
        let sent = DateTime::now();
        let hello = match tokio::time::timeout(after, hello(&database)).await {
            Ok(Ok(hello)) => hello,
            Ok(Err(source)) => return Err(unreachable(source).into()),
            Err(_) => {
                return Err(
                    unreachable(mongodb::error::Error::custom("ping timed out".to_owned())).into(),
                )
            }
        };
        let wire_version = hello.get_i32("maxWireVersion").unwrap_or(0);
        let clock = ServerClock {
            legacy_insert: options
                .legacy_insert
                .unwrap_or(wire_version < PIPELINE_WIRE_VERSION),
            offset_ms: AtomicI64::new(0),
        };
        if let Ok(server) = hello.get_datetime("localTime") {
            clock.observe(*server, sent, DateTime::now());
        }
        let name = options.collection.as_deref().unwrap_or("aposJobs");
        Ok(MongoStore {
            collection: database.collection(name),
            clock: Arc::new(clock),
        })
    }

    fn database(&self) -> Database {
        self.collection
            .client()
            .database(&self.collection.namespace().db)
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
                self.database()
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

    /// An upsert whose pipeline sets every field in order, so the server stamps its clock
    /// (`$$NOW`) into the document's times; values are `$literal`s, so a label such as
    /// `"$5 off"` is not taken for a field path.
    async fn insert_stamped(&self, id: Bson, fields: Document) -> Result<()> {
        let result = self
            .collection
            .update_one(doc! { "_id": id.clone() }, vec![doc! { "$set": fields }])
            .upsert(true)
            .await
            .map_err(|e| Error::database("insert of the job document", e))?;
        if result.upserted_id.is_none() {
            return Err(Error::invalid_argument(format!(
                "a job with id {id} exists already; job ids are random, so start the job again"
            )));
        }
        Ok(())
    }

    fn write_error(operation: &'static str, reply: &Document) -> Result<()> {
        // `run_raw_command` reports only command failures; the update's own come in the reply.
        if let Ok(errors) = reply.get_array("writeErrors") {
            if let Some(Bson::Document(first)) = errors.first() {
                let refused: WriteError = mongodb::bson::from_document(first.clone())
                    .map_err(|e| Error::database(operation, e.into()))?;
                let source = DriverErrorKind::Write(WriteFailure::WriteError(refused));
                return Err(Error::database(operation, source.into()));
            }
        }
        if let Ok(concern) = reply.get_document("writeConcernError") {
            let failed: WriteConcernError = mongodb::bson::from_document(concern.clone())
                .map_err(|e| Error::database(operation, e.into()))?;
            let source = DriverErrorKind::Write(WriteFailure::WriteConcernError(failed));
            return Err(Error::database(operation, source.into()));
        }
        Ok(())
    }
}

/// The server's `hello` (`isMaster` before MongoDB 4.4.2): its wire version and clock.
async fn hello(database: &Database) -> mongodb::error::Result<Document> {
    match database.run_command(doc! { "hello": 1 }).await {
        Ok(reply) => Ok(reply),
        Err(_) => database.run_command(doc! { "isMaster": 1 }).await,
    }
}

/// The projection of the reads that hand a job document on: everything but the large fields.
fn without_large_fields() -> Document {
    LARGE_FIELDS
        .iter()
        .map(|field| (field.to_string(), Bson::Int32(0)))
        .collect()
}

/// The filter of every write of a job's owner: still its own, still running.
fn owned(id: &str, owner: &str) -> Document {
    doc! { "_id": id, "workerId": owner, "ended": false }
}

impl Store for MongoStore {
    fn insert(&self, fields: Vec<(String, Initial)>) -> StoreFuture<'_, ()> {
        async move {
            let mut id = Bson::Null;
            if self.clock.legacy_insert {
                let now = self.clock.now();
                let mut document = Document::new();
                for (key, value) in fields {
                    document.insert(
                        key,
                        match value {
                            Initial::Value(value) => value,
                            Initial::ServerTime => Bson::DateTime(now),
                        },
                    );
                }
                self.collection
                    .insert_one(document)
                    .await
                    .map_err(|e| Error::database("insert of the job document", e))?;
                return Ok(());
            }
            let mut set = Document::new();
            for (key, value) in fields {
                match value {
                    Initial::Value(value) if key == "_id" => id = value,
                    Initial::Value(value) => {
                        set.insert(key, doc! { "$literal": value });
                    }
                    Initial::ServerTime => {
                        set.insert(key, "$$NOW");
                    }
                }
            }
            self.insert_stamped(id, set).await
        }
        .boxed()
    }

    fn write_counts<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        set: Document,
        heartbeat: bool,
        read_canceling: bool,
    ) -> StoreFuture<'a, Fenced<bool>> {
        async move {
            let mut update = doc! { "$set": set };
            if heartbeat {
                update.insert("$currentDate", doc! { "heartbeatAt": true });
            }
            let operation = "update of the job's counts";
            if read_canceling {
                let after = self
                    .collection
                    .find_one_and_update(owned(id, owner), update)
                    .projection(doc! { "_id": 0, "canceling": 1 })
                    .return_document(ReturnDocument::After)
                    .await
                    .map_err(|e| Error::database(operation, e))?;
                return Ok(match after {
                    Some(job) => Fenced::Applied(job.get_bool("canceling").unwrap_or(false)),
                    None => Fenced::Refused,
                });
            }
            let result = self
                .collection
                .update_one(owned(id, owner), update)
                .await
                .map_err(|e| Error::database(operation, e))?;
            Ok(if result.matched_count > 0 {
                Fenced::Applied(false)
            } else {
                Fenced::Refused
            })
        }
        .boxed()
    }

    fn end<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        set: Document,
        results: Option<RawBsonRef<'a>>,
    ) -> StoreFuture<'a, Fenced<()>> {
        async move {
            const OPERATION: &str = "final update of the job";
            let update = doc! { "$set": set, "$currentDate": { "endedAt": true } };
            let matched = match results {
                None => {
                    self.collection
                        .update_one(owned(id, owner), update)
                        .await
                        .map_err(|e| Error::database(OPERATION, e))?
                        .matched_count
                        > 0
                }
                // Sent as an `update` command, since the driver's `update_one` takes only a
                // `Document`, and a job's results can be megabytes that are never parsed.
                Some(value) => {
                    let command = UpdateCommand {
                        update: self.collection.name(),
                        write_concern: self.collection.write_concern(),
                        updates: [UpdateStatement {
                            q: owned(id, owner),
                            u: WithRawField {
                                document: &update,
                                path: &["$set", "results"],
                                value,
                            },
                        }],
                    };
                    let command = mongodb::bson::to_raw_document_buf(&command)
                        .map_err(|e| Error::database(OPERATION, e.into()))?;
                    let reply = self
                        .database()
                        .run_raw_command(command)
                        .await
                        .map_err(|e| Error::database(OPERATION, e))?;
                    Self::write_error(OPERATION, &reply)?;
                    reply.get_i32("n").unwrap_or(0) > 0
                }
            };
            Ok(if matched {
                Fenced::Applied(())
            } else {
                Fenced::Refused
            })
        }
        .boxed()
    }

    fn heartbeat<'a>(&'a self, ids: &'a [String], owner: &'a str) -> StoreFuture<'a, Vec<String>> {
        async move {
            let operation = "heartbeat";
            let filter = doc! { "_id": { "$in": ids }, "workerId": owner, "ended": false };
            let result = self
                .collection
                .update_many(
                    filter.clone(),
                    doc! { "$currentDate": { "heartbeatAt": true } },
                )
                .await
                .map_err(|e| Error::database(operation, e))?;
            if result.matched_count as usize == ids.len() {
                return Ok(ids.to_vec());
            }
            // Some are no longer this process's: which?
            let still: Vec<Document> = self
                .collection
                .find(filter)
                .projection(doc! { "_id": 1 })
                .await
                .map_err(|e| Error::database(operation, e))?
                .try_collect()
                .await
                .map_err(|e| Error::database(operation, e))?;
            Ok(still
                .iter()
                .filter_map(|job| job.get_str("_id").ok().map(str::to_owned))
                .collect())
        }
        .boxed()
    }

    fn add_to_job<'a>(&'a self, id: &'a str, update: Document) -> StoreFuture<'a, bool> {
        async move {
            let result = self
                .collection
                .update_one(doc! { "_id": id, "ended": false }, update)
                .await
                .map_err(|e| Error::database("update of the job's counts", e))?;
            Ok(result.matched_count > 0)
        }
        .boxed()
    }

    fn find_canceling<'a>(&'a self, ids: &'a [String]) -> StoreFuture<'a, Vec<Document>> {
        async move {
            let operation = "stop/cancel check";
            self.collection
                .find(doc! { "_id": { "$in": ids }, "canceling": true })
                .projection(without_large_fields())
                .await
                .map_err(|e| Error::database(operation, e))?
                .try_collect()
                .await
                .map_err(|e| Error::database(operation, e))
        }
        .boxed()
    }

    fn request_cancel<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool> {
        async move {
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
        .boxed()
    }

    fn server_time(&self) -> StoreFuture<'_, DateTime> {
        async move {
            let sent = DateTime::now();
            let reply = hello(&self.database())
                .await
                .map_err(|e| Error::database("read of the server's clock", e))?;
            let server = *reply.get_datetime("localTime").map_err(|_| {
                Error::invalid_argument(
                    "the database server's hello reply has no localTime; heartbeats cannot be judged without the server's clock (set orphanAfter: false)",
                )
            })?;
            self.clock.observe(server, sent, DateTime::now());
            Ok(server)
        }
        .boxed()
    }

    fn find_orphans<'a>(
        &'a self,
        cutoff: DateTime,
        owner: &'a str,
    ) -> StoreFuture<'a, Vec<Orphan>> {
        async move {
            let operation = "search for orphaned jobs";
            let found: Vec<Document> = self
                .collection
                .find(doc! {
                    "ended": false,
                    "heartbeatAt": { "$lt": cutoff },
                    "workerId": { "$ne": owner },
                })
                .projection(doc! { "_id": 1, "workerId": 1, "heartbeatAt": 1 })
                .await
                .map_err(|e| Error::database(operation, e))?
                .try_collect()
                .await
                .map_err(|e| Error::database(operation, e))?;
            Ok(found
                .iter()
                .filter_map(|job| {
                    Some(Orphan {
                        id: job.get_str("_id").ok()?.to_owned(),
                        worker_id: job.get_str("workerId").unwrap_or_default().to_owned(),
                        heartbeat_at: *job.get_datetime("heartbeatAt").ok()?,
                    })
                })
                .collect())
        }
        .boxed()
    }

    fn end_orphan<'a>(&'a self, orphan: &'a Orphan, set: Document) -> StoreFuture<'a, bool> {
        async move {
            let result = self
                .collection
                .update_one(
                    doc! { "_id": &orphan.id, "ended": false, "heartbeatAt": orphan.heartbeat_at },
                    doc! { "$set": set, "$currentDate": { "endedAt": true } },
                )
                .await
                .map_err(|e| Error::database("end of an orphaned job", e))?;
            Ok(result.modified_count > 0)
        }
        .boxed()
    }

    fn find<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Document>> {
        async move {
            self.collection
                .find_one(doc! { "_id": id })
                .projection(without_large_fields())
                .await
                .map_err(|e| Error::database("read of the job document", e))
        }
        .boxed()
    }

    fn delete_ended<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool> {
        async move {
            let result = self
                .collection
                .delete_one(doc! { "_id": id, "ended": true })
                .await
                .map_err(|e| Error::database("deletion of the job", e))?;
            Ok(result.deleted_count > 0)
        }
        .boxed()
    }

    fn purge(&self, cutoff: DateTime) -> StoreFuture<'_, u64> {
        async move {
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
        .boxed()
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
