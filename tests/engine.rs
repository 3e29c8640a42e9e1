//! The engine against a real MongoDB-wire server: `npm test` starts one and sets
//! `APOS_JOBS_TEST_URI`; to run these alone, start any MongoDB and set it yourself.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use apostrophe_jobs_native::batch::{BatchOptions, BatchOutcome, ItemRunner};
use apostrophe_jobs_native::engine::Engine;
use apostrophe_jobs_native::events::{EngineEvents, LogLevel};
use apostrophe_jobs_native::job::{Ending, HaltKind, Initial, NewJob};
use apostrophe_jobs_native::options::EngineOptions;
use apostrophe_jobs_native::results::{EndResults, RawValue};
use apostrophe_jobs_native::store::{Fenced, MongoStore, Orphan, Store, StoreFuture, StoreOptions};
use apostrophe_jobs_native::tasks::end::EndOutcome;
use futures::{FutureExt, StreamExt};
use mongodb::bson::{doc, spec::BinarySubtype, Bson, DateTime, Document, RawBsonRef};

#[derive(Default)]
struct RecordedEvents {
    halts: Mutex<Vec<(String, HaltKind, Document)>>,
    logs: Mutex<Vec<String>>,
}

impl EngineEvents for RecordedEvents {
    fn halt_requested(&self, id: &str, kind: HaltKind, job: &Document) {
        self.halts
            .lock()
            .unwrap()
            .push((id.to_owned(), kind, job.clone()));
    }

    fn job_cut_off(&self, id: &str) {
        self.logs.lock().unwrap().push(format!("(cut off: {id})"));
    }

    fn log(&self, _level: LogLevel, message: String) {
        self.logs.lock().unwrap().push(message);
    }
}

/// `results` as JavaScript hands them over: a `{ value }` document's bytes.
fn results(value: Bson) -> EndResults {
    let mut bytes = Vec::new();
    doc! { "value": value }.to_writer(&mut bytes).unwrap();
    EndResults::Given(RawValue::from_envelope(Box::new(bytes)).unwrap())
}

fn test_uri() -> String {
    std::env::var("APOS_JOBS_TEST_URI").expect(
        "APOS_JOBS_TEST_URI is not set: run `npm test`, which starts the test server, or point it at a MongoDB server",
    )
}

async fn engine(name: &str) -> (Engine, MongoStore, Arc<RecordedEvents>) {
    engine_with(name, EngineOptions::default()).await
}

fn store_options(name: &str) -> StoreOptions {
    StoreOptions {
        uri: test_uri(),
        database: format!("ajn-test-rust-{name}-{}", std::process::id()),
        ..Default::default()
    }
}

async fn engine_with(
    name: &str,
    options: EngineOptions,
) -> (Engine, MongoStore, Arc<RecordedEvents>) {
    let store_options = EngineOptions {
        store: Some(store_options(name)),
        ..options.clone()
    }
    .store
    .unwrap();
    let store = MongoStore::connect(&store_options).await.unwrap();
    let events = Arc::new(RecordedEvents::default());
    let options = EngineOptions {
        store: Some(store_options),
        ..options
    };
    let engine = Engine::connect(options, events.clone()).await.unwrap();
    (engine, store, events)
}

/// An engine whose watcher ticks once at start, then not for a minute: what happens in a test
/// comes from count writes or this engine's own cancel route, not from the tick.
async fn engine_without_ticks(name: &str) -> (Engine, MongoStore, Arc<RecordedEvents>) {
    let options = EngineOptions {
        watch_interval: Some(Duration::from_secs(60)),
        ..Default::default()
    };
    engine_with(name, options).await
}

fn stoppable() -> NewJob {
    NewJob {
        labels: doc! { "title": "Test" },
        can_cancel: false,
        can_stop: true,
        user_id: None,
        fields: Document::new(),
    }
}

async fn wait_for(mut condition: impl FnMut() -> bool) {
    for _ in 0..100 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("condition not met within 2 s");
}

#[tokio::test(flavor = "multi_thread")]
async fn counts_are_coalesced_and_exact_when_the_job_ends() {
    let (engine, store, _) = engine("counts").await;
    let job = engine.start_job(stoppable()).await.unwrap();
    let id = job.id().to_owned();
    engine.set_total(&id, Bson::Int32(1000));
    for i in 0..1000 {
        engine.item_finished(&job, i, i % 10 != 0);
    }
    let outcome = engine
        .end_job(&job, true, results(Bson::Document(doc! { "a": 1 })))
        .await
        .unwrap();
    assert_eq!(outcome, EndOutcome::Written);
    let job = store.find(&id).await.unwrap().unwrap();
    assert_eq!(job.get("good"), Some(&Bson::Int32(900)));
    assert_eq!(job.get("bad"), Some(&Bson::Int32(100)));
    assert_eq!(job.get("processed"), Some(&Bson::Int32(1000)));
    assert_eq!(job.get("total"), Some(&Bson::Int32(1000)));
    assert_eq!(job.get_str("status").unwrap(), "completed");
    assert!(job.get_bool("ended").unwrap());
    assert_eq!(job.get_document("results").unwrap(), &doc! { "a": 1 });
    let keys: Vec<&str> = job.keys().map(String::as_str).collect();
    assert_eq!(keys[keys.len() - 2..], ["results", "endedAt"]);
    assert!(
        engine.job(&id).is_none(),
        "the job is gone from this process"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_first_write_keeps_the_2x_field_order_and_stamps_the_servers_clock() {
    let (engine, store, _) = engine("insert").await;
    let job = engine.start_job(stoppable()).await.unwrap();
    let document = store.find(job.id()).await.unwrap().unwrap();
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
            "canStop",
            "workerId",
            "heartbeatAt"
        ]
    );
    assert_eq!(document.get("good"), Some(&Bson::Int32(0)));
    assert_eq!(
        document.get_document("labels").unwrap(),
        &doc! { "title": "Test" }
    );
    let server_now = store.server_time().await.unwrap().timestamp_millis();
    for field in ["when", "heartbeatAt"] {
        let at = document.get_datetime(field).unwrap().timestamp_millis();
        assert!(
            (server_now - at).abs() < 5_000,
            "{field} is the server's time"
        );
    }
    engine.end_job(&job, true, EndResults::Null).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn labels_that_look_like_field_paths_are_stored_as_given_on_either_insert() {
    for legacy_insert in [false, true] {
        let options = EngineOptions {
            store: Some(StoreOptions {
                legacy_insert: Some(legacy_insert),
                ..store_options("literal")
            }),
            ..Default::default()
        };
        let engine = Engine::connect(options, Arc::new(RecordedEvents::default()))
            .await
            .unwrap();
        let store = MongoStore::connect(&store_options("literal"))
            .await
            .unwrap();
        let labels = doc! { "title": "$5 off", "running": "$$NOW", "n": 3 };
        let job = engine
            .start_job(NewJob {
                labels: labels.clone(),
                ..stoppable()
            })
            .await
            .unwrap();
        let document = store.find(job.id()).await.unwrap().unwrap();
        assert_eq!(document.get_document("labels").unwrap(), &labels);
        assert!(document.get_datetime("when").is_ok());
        assert_eq!(
            document.keys().nth(8).map(String::as_str),
            Some("when"),
            "legacy insert: {legacy_insert}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_owner_write_is_fenced_by_owner_and_ended() {
    let (engine, store, _) = engine("fence").await;
    let job = engine.start_job(stoppable()).await.unwrap();
    let id = job.id();
    let owner = engine.worker_id().to_owned();
    let set = doc! { "good": 1, "bad": 0, "processed": 1 };
    let orphan_of = |heartbeat_at| Orphan {
        id: id.to_owned(),
        worker_id: owner.clone(),
        heartbeat_at,
    };
    assert_eq!(
        store
            .write_counts(id, "another", set.clone(), true, true)
            .await
            .unwrap(),
        Fenced::Refused
    );
    assert_eq!(
        store
            .write_counts(id, &owner, set.clone(), true, true)
            .await
            .unwrap(),
        Fenced::Applied(false)
    );
    let swept = store.find(id).await.unwrap().unwrap();
    let stale = orphan_of(DateTime::from_millis(1));
    assert!(
        !store
            .end_orphan(&stale, Ending::interrupted().set_fields())
            .await
            .unwrap(),
        "a sweep applies only to the heartbeat it judged"
    );
    let orphan = orphan_of(*swept.get_datetime("heartbeatAt").unwrap());
    assert!(store
        .end_orphan(&orphan, Ending::interrupted().set_fields())
        .await
        .unwrap());
    let ended = store.find(id).await.unwrap().unwrap();
    assert_eq!(
        store
            .write_counts(id, &owner, set, true, false)
            .await
            .unwrap(),
        Fenced::Refused
    );
    assert_eq!(
        store
            .end(id, &owner, Ending::end(true).set_fields(), None)
            .await
            .unwrap(),
        Fenced::Refused
    );
    assert_eq!(
        store.heartbeat(&[id.to_owned()], &owner).await.unwrap(),
        Vec::<String>::new()
    );
    assert!(!store.request_cancel(id).await.unwrap());
    assert_eq!(
        store.find(id).await.unwrap().unwrap(),
        ended,
        "nothing changes once ended"
    );
    assert_eq!(
        engine.end_job(&job, true, EndResults::Null).await.unwrap(),
        EndOutcome::Lost
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_watcher_calls_the_hook_once_and_the_acknowledgement_writes_stopped() {
    let (engine, store, events) = engine("stop").await;
    let job = engine.start_job(stoppable()).await.unwrap();
    let id = job.id().to_owned();
    engine.add_counts(&id, 3.0, 0.0);
    assert!(engine.request_cancel(&id).await.unwrap());
    wait_for(|| !events.halts.lock().unwrap().is_empty()).await;
    {
        let halts = events.halts.lock().unwrap();
        assert_eq!(halts.len(), 1, "the hook is called once per stop request");
        assert_eq!(halts[0].0, id);
        assert_eq!(halts[0].1, HaltKind::Stop);
        assert!(halts[0].2.get_bool("canceling").unwrap());
    }
    assert!(!job.may_start_item());
    engine.acknowledge_halt(&job, false).await.unwrap();
    let document = store.find(&id).await.unwrap().unwrap();
    assert_eq!(document.get_str("status").unwrap(), "stopped");
    assert!(document.get_bool("ended").unwrap());
    assert!(!document.get_bool("canceling").unwrap());
    assert_eq!(document.get("good"), Some(&Bson::Int32(3)));
    assert!(
        !document.contains_key("results"),
        "a halted job has no results key"
    );
    assert!(
        engine.job(&id).is_none(),
        "the job is gone from this process"
    );
    assert_eq!(events.halts.lock().unwrap().len(), 1);
    assert_eq!(
        engine.acknowledge_halt(&job, false).await.unwrap(),
        EndOutcome::AlreadyGone
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_count_write_is_also_a_stop_check() {
    // Only the count write can see the request.
    let (engine, store, events) = engine_without_ticks("write-checks").await;
    let job = engine.start_job(stoppable()).await.unwrap();
    let id = job.id().to_owned();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // As the cancel route of another process writes it (this engine's own route would check
    // the job at once).
    assert!(store.request_cancel(&id).await.unwrap());
    // Enough items for a write before the tick, in one report: the writer wakes at the first
    // change after a write and writes early only if 32 items wait by then, so items reported
    // one by one could be seen one at a time and wait for the tick (a minute here).
    engine.add_counts(&id, 40.0, 0.0);
    wait_for(|| !events.halts.lock().unwrap().is_empty()).await;
    {
        let halts = events.halts.lock().unwrap();
        assert_eq!(halts[0].0, id);
        assert!(halts[0].2.get_bool("canceling").unwrap());
    }
    let document = store.find(&id).await.unwrap().unwrap();
    assert_eq!(document.get("good"), Some(&Bson::Int32(40)));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_through_this_engine_checks_its_own_job_at_once() {
    let (engine, _, events) = engine_without_ticks("own-cancel").await;
    let job = engine.start_job(stoppable()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(engine.request_cancel(job.id()).await.unwrap());
    assert_eq!(
        events.halts.lock().unwrap().len(),
        1,
        "called before the route answers"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_wins_and_a_failed_acknowledgement_writes_failed() {
    let (engine, store, events) = engine("cancel").await;
    let job = engine
        .start_job(NewJob {
            labels: Document::new(),
            can_cancel: true,
            can_stop: true,
            user_id: None,
            fields: Document::new(),
        })
        .await
        .unwrap();
    engine.request_cancel(job.id()).await.unwrap();
    wait_for(|| !events.halts.lock().unwrap().is_empty()).await;
    assert_eq!(events.halts.lock().unwrap()[0].1, HaltKind::Cancel);
    engine.acknowledge_halt(&job, true).await.unwrap();
    let document = store.find(job.id()).await.unwrap().unwrap();
    assert_eq!(document.get_str("status").unwrap(), "failed");
}

#[tokio::test(flavor = "multi_thread")]
async fn results_gathered_range_by_range_are_written_at_the_end_unless_others_are_given() {
    let (engine, store, _) = engine("gathered").await;
    let chunk = |document: Document| {
        let mut bytes = Vec::new();
        document.to_writer(&mut bytes).unwrap();
        bytes
    };
    let gathered = engine.start_job(stoppable()).await.unwrap();
    engine
        .add_results(&gathered, &chunk(doc! { "b": 2, "a": Bson::Null }))
        .unwrap();
    engine
        .add_results(&gathered, &chunk(doc! { "c": "three" }))
        .unwrap();
    engine
        .end_job(&gathered, true, EndResults::Gathered)
        .await
        .unwrap();
    let document = store.find(gathered.id()).await.unwrap().unwrap();
    assert_eq!(
        document.get_document("results").unwrap(),
        &doc! { "b": 2, "a": Bson::Null, "c": "three" }
    );
    assert!(
        engine
            .add_results(&gathered, &chunk(doc! { "d": 4 }))
            .is_err(),
        "an ended job takes no more results"
    );

    let given = engine.start_job(stoppable()).await.unwrap();
    engine.add_results(&given, &chunk(doc! { "x": 1 })).unwrap();
    engine
        .end_job(&given, true, results(Bson::Document(doc! { "y": 2 })))
        .await
        .unwrap();
    let document = store.find(given.id()).await.unwrap().unwrap();
    assert_eq!(document.get_document("results").unwrap(), &doc! { "y": 2 });
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_requests_leave_ended_and_unknown_jobs_alone() {
    let (engine, store, _) = engine("ended").await;
    let job = engine.start_job(stoppable()).await.unwrap();
    engine.end_job(&job, true, EndResults::Null).await.unwrap();
    assert!(!engine.request_cancel(job.id()).await.unwrap());
    assert!(!engine.request_cancel("nosuchjob").await.unwrap());
    let document = store.find(job.id()).await.unwrap().unwrap();
    assert!(!document.get_bool("canceling").unwrap());
    assert_eq!(document.get("results"), Some(&Bson::Null));
}

#[tokio::test(flavor = "multi_thread")]
async fn results_too_large_for_a_document_are_dropped_and_the_job_still_ends() {
    let (engine, store, events) = engine("large").await;
    let job = engine.start_job(stoppable()).await.unwrap();
    let huge = "x".repeat(17 * 1024 * 1024);
    engine
        .end_job(&job, true, results(Bson::Document(doc! { "big": huge })))
        .await
        .unwrap();
    let document = store.find(job.id()).await.unwrap().unwrap();
    assert_eq!(document.get_str("status").unwrap(), "completed");
    assert_eq!(document.get("results"), Some(&Bson::Null));
    assert!(events
        .logs
        .lock()
        .unwrap()
        .iter()
        .any(|m| m.contains("too large")));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_database_is_a_clear_error() {
    let options = StoreOptions {
        uri: "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=300".to_owned(),
        database: "x".to_owned(),
        connect_timeout: Some(Duration::from_millis(500)),
        ..Default::default()
    };
    let message = MongoStore::connect(&options).await.unwrap_err().to_string();
    assert!(
        message.contains("could not reach MongoDB at mongodb://127.0.0.1:1/"),
        "{message}"
    );
    assert!(message.contains("APOS_MONGODB_URI"), "{message}");
}

/// The real store, with the writes of chosen jobs failing as if the server could not be
/// reached: a fault for one job only, which no real outage can make.
struct FailingStore {
    inner: MongoStore,
    failing: Mutex<Vec<String>>,
}

impl FailingStore {
    fn set_failing(&self, id: &str, failing: bool) {
        let mut ids = self.failing.lock().unwrap();
        ids.retain(|other| other != id);
        if failing {
            ids.push(id.to_owned());
        }
    }

    fn check(&self, id: &str) -> apostrophe_jobs_native::Result<()> {
        if self.failing.lock().unwrap().iter().any(|other| other == id) {
            let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
            return Err(apostrophe_jobs_native::Error::database(
                "test",
                refused.into(),
            ));
        }
        Ok(())
    }
}

impl Store for FailingStore {
    fn insert(&self, fields: Vec<(String, Initial)>) -> StoreFuture<'_, ()> {
        self.inner.insert(fields)
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
            self.check(id)?;
            self.inner
                .write_counts(id, owner, set, heartbeat, read_canceling)
                .await
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
            self.check(id)?;
            self.inner.end(id, owner, set, results).await
        }
        .boxed()
    }
    fn heartbeat<'a>(&'a self, ids: &'a [String], owner: &'a str) -> StoreFuture<'a, Vec<String>> {
        self.inner.heartbeat(ids, owner)
    }
    fn add_to_job<'a>(&'a self, id: &'a str, update: Document) -> StoreFuture<'a, bool> {
        self.inner.add_to_job(id, update)
    }
    fn find_canceling<'a>(&'a self, ids: &'a [String]) -> StoreFuture<'a, Vec<Document>> {
        self.inner.find_canceling(ids)
    }
    fn request_cancel<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool> {
        self.inner.request_cancel(id)
    }
    fn server_time(&self) -> StoreFuture<'_, DateTime> {
        self.inner.server_time()
    }
    fn find_orphans<'a>(
        &'a self,
        cutoff: DateTime,
        owner: &'a str,
    ) -> StoreFuture<'a, Vec<Orphan>> {
        self.inner.find_orphans(cutoff, owner)
    }
    fn end_orphan<'a>(&'a self, orphan: &'a Orphan, set: Document) -> StoreFuture<'a, bool> {
        self.inner.end_orphan(orphan, set)
    }
    fn find<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Document>> {
        self.inner.find(id)
    }
    fn purge(&self, cutoff: DateTime) -> StoreFuture<'_, u64> {
        self.inner.purge(cutoff)
    }
    fn delete_ended<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool> {
        self.inner.delete_ended(id)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_jobs_end_retried_through_a_20_s_outage_of_its_writes_holds_up_no_other_job() {
    let inner = MongoStore::connect(&store_options("outage")).await.unwrap();
    let store = Arc::new(FailingStore {
        inner: inner.clone(),
        failing: Mutex::new(Vec::new()),
    });
    let engine = Arc::new(
        Engine::with_store(
            store.clone(),
            &EngineOptions::default(),
            Arc::new(RecordedEvents::default()),
        )
        .unwrap(),
    );
    let ending = engine.start_job(stoppable()).await.unwrap();
    let busy = engine.start_job(stoppable()).await.unwrap();
    engine.item_finished(&ending, 0, true);
    store.set_failing(ending.id(), true);
    let end = tokio::spawn({
        let (engine, ending) = (engine.clone(), ending.clone());
        async move { engine.end_job(&ending, true, EndResults::Null).await }
    });
    let began = std::time::Instant::now();
    let mut lags = Vec::new();
    while began.elapsed() < Duration::from_secs(20) {
        for i in 0..40 {
            engine.item_finished(&busy, i, true);
        }
        let counted = engine.live_counts(busy.id()).unwrap().0 as i32;
        let reported = std::time::Instant::now();
        loop {
            let stored = inner.find(busy.id()).await.unwrap().unwrap();
            if stored.get_i32("good").unwrap() >= counted {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        lags.push(reported.elapsed());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(!end.is_finished(), "the end waits for its job's writes");
    let worst = lags.iter().max().unwrap();
    assert!(
        *worst < Duration::from_millis(600),
        "the other job's counts reached the database within {worst:?} at worst"
    );
    engine.end_job(&busy, true, EndResults::Null).await.unwrap();
    assert!(
        !end.is_finished(),
        "the other job completed first, during the outage"
    );
    store.set_failing(ending.id(), false);
    assert_eq!(end.await.unwrap().unwrap(), EndOutcome::Written);
    let ended = inner.find(ending.id()).await.unwrap().unwrap();
    assert_eq!(ended.get_str("status").unwrap(), "completed");
    assert_eq!(ended.get_i32("good").unwrap(), 1);
    println!(
        "20 s outage of one job's writes: the other job's counts landed within {worst:?} at worst ({} samples)",
        lags.len()
    );
}

/// The jobs collection of a test's database, read directly: the store's own reads leave the
/// large fields out.
async fn raw_jobs(name: &str) -> mongodb::Collection<Document> {
    let options = store_options(name);
    mongodb::Client::with_uri_str(&options.uri)
        .await
        .unwrap()
        .database(&options.database)
        .collection("aposJobs")
}

fn bitmap(job: &Document, field: &str) -> Vec<u8> {
    match job.get(field) {
        Some(Bson::Binary(binary)) => {
            assert_eq!(binary.subtype, BinarySubtype::Generic, "{field}");
            binary.bytes.clone()
        }
        other => panic!("{field} is not a binary: {other:?}"),
    }
}

fn bits(bitmap: &[u8]) -> Vec<usize> {
    (0..bitmap.len() * 8)
        .filter(|i| bitmap[i >> 3] & (1 << (i & 7)) != 0)
        .collect()
}

fn number(job: &Document, field: &str) -> usize {
    job.get(field).and_then(Bson::as_i32).unwrap() as usize
}

/// Runs a range's items `concurrency` at a time, as the JavaScript range runner does: asks
/// before each item whether it may start, reports each with its index through the engine
/// when it finishes (out of order), and resolves how many ran. Items take 1 to 13 ms; those
/// whose index is a multiple of 7 fail.
#[derive(Clone)]
struct ConcurrentItems {
    engine: Arc<Engine>,
    job: Arc<apostrophe_jobs_native::state::LiveJob>,
    concurrency: usize,
    finished: Arc<Mutex<Vec<usize>>>,
}

fn fails(index: usize) -> bool {
    index.is_multiple_of(7)
}

impl ItemRunner for ConcurrentItems {
    fn run_items(
        &self,
        items: std::ops::Range<usize>,
    ) -> futures::future::BoxFuture<'static, apostrophe_jobs_native::Result<usize>> {
        let this = self.clone();
        async move {
            let runs = futures::stream::iter(items).map(|index| {
                let this = this.clone();
                async move {
                    if !this.job.may_start_item() {
                        return false;
                    }
                    let millis = 1 + (index * 5) % 13;
                    tokio::time::sleep(Duration::from_millis(millis as u64)).await;
                    this.engine.item_finished(&this.job, index, !fails(index));
                    this.finished.lock().unwrap().push(index);
                    true
                }
            });
            let ran: Vec<bool> = runs.buffer_unordered(this.concurrency).collect().await;
            Ok(ran.into_iter().filter(|ran| *ran).count())
        }
        .boxed()
    }
}

/// Reads the job document every 20 ms while `running` is true and checks that whenever
/// counts are stored, the bitmaps stored with them agree: as many finished bits as
/// `processed`, as many failed bits as `bad`, and every failed item finished.
fn watch_agreement(
    jobs: mongodb::Collection<Document>,
    id: String,
    running: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut samples = 0;
        while running.load(std::sync::atomic::Ordering::SeqCst) {
            let job = jobs.find_one(doc! { "_id": &id }).await.unwrap().unwrap();
            if job.contains_key("itemsFinished") {
                let (finished, failed) =
                    (bitmap(&job, "itemsFinished"), bitmap(&job, "itemsFailed"));
                assert_eq!(bits(&finished).len(), number(&job, "processed"), "{job}");
                assert_eq!(bits(&failed).len(), number(&job, "bad"), "{job}");
                assert!(bits(&failed).iter().all(|i| bits(&finished).contains(i)));
                samples += 1;
            }
            // Not more often: the test server is shared with the other tests, whose waits are
            // short.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        samples
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_at_concurrency_4_stores_exactly_which_items_finished_and_failed() {
    let (engine, _, events) = engine("ledger").await;
    let engine = Arc::new(engine);
    let jobs = raw_jobs("ledger").await;
    let job = engine.start_job(stoppable()).await.unwrap();
    let items = ConcurrentItems {
        engine: engine.clone(),
        job: job.clone(),
        concurrency: 4,
        finished: Arc::default(),
    };
    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = watch_agreement(jobs.clone(), job.id().to_owned(), running.clone());
    let count = 1003;
    let options = BatchOptions {
        concurrency: Some(4),
        track_items: true,
        ..Default::default()
    };
    let outcome = engine
        .run_batch(&job, count, &items, options)
        .await
        .unwrap();
    assert_eq!(outcome, BatchOutcome::Completed);
    engine
        .end_job(&job, true, EndResults::Gathered)
        .await
        .unwrap();
    running.store(false, std::sync::atomic::Ordering::SeqCst);
    let samples = watcher.await.unwrap();
    let ended = jobs
        .find_one(doc! { "_id": job.id() })
        .await
        .unwrap()
        .unwrap();
    let finished = bitmap(&ended, "itemsFinished");
    let failed = bitmap(&ended, "itemsFailed");
    assert_eq!(finished.len(), count.div_ceil(8));
    assert_eq!(bits(&finished), (0..count).collect::<Vec<_>>());
    assert_eq!(
        bits(&failed),
        (0..count).filter(|i| fails(*i)).collect::<Vec<_>>()
    );
    assert_eq!(number(&ended, "processed"), count);
    assert_eq!(number(&ended, "bad"), bits(&failed).len());
    let order = items.finished.lock().unwrap().clone();
    assert!(
        order.windows(2).any(|pair| pair[0] > pair[1]),
        "items finished out of order"
    );
    assert!(samples > 0, "the bitmaps were stored while the job ran");
    assert!(events.logs.lock().unwrap().is_empty());
    println!("{samples} stored states of the running job checked");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_stopped_midway_stores_processed_equal_to_its_finished_bits() {
    let (engine, _, events) = engine("ledger-stop").await;
    let engine = Arc::new(engine);
    let jobs = raw_jobs("ledger-stop").await;
    let job = engine.start_job(stoppable()).await.unwrap();
    let items = ConcurrentItems {
        engine: engine.clone(),
        job: job.clone(),
        concurrency: 3,
        finished: Arc::default(),
    };
    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = watch_agreement(jobs.clone(), job.id().to_owned(), running.clone());
    let count = 5000;
    let options = BatchOptions {
        concurrency: Some(3),
        track_items: true,
        ..Default::default()
    };
    let batch = tokio::spawn({
        let (engine, job, items) = (engine.clone(), job.clone(), items.clone());
        async move { engine.run_batch(&job, count, &items, options).await }
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(engine.request_cancel(job.id()).await.unwrap());
    let outcome = batch.await.unwrap().unwrap();
    assert_eq!(outcome, BatchOutcome::Stopped);
    assert_eq!(events.halts.lock().unwrap().len(), 1);
    assert_eq!(
        engine.acknowledge_halt(&job, false).await.unwrap(),
        EndOutcome::Written
    );
    running.store(false, std::sync::atomic::Ordering::SeqCst);
    watcher.await.unwrap();
    let stopped = jobs
        .find_one(doc! { "_id": job.id() })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stopped.get_str("status").unwrap(), "stopped");
    let finished = bits(&bitmap(&stopped, "itemsFinished"));
    let processed = number(&stopped, "processed");
    assert!(
        processed > 0 && processed < count,
        "stopped midway: {processed}"
    );
    assert_eq!(finished.len(), processed);
    let mut reported = items.finished.lock().unwrap().clone();
    reported.sort_unstable();
    assert_eq!(finished, reported, "exactly the items that finished");
    assert_eq!(
        bits(&bitmap(&stopped, "itemsFailed")),
        reported
            .iter()
            .copied()
            .filter(|i| fails(*i))
            .collect::<Vec<_>>()
    );
    let hooked = &events.halts.lock().unwrap()[0].2;
    assert!(
        !hooked.contains_key("itemsFinished") && !hooked.contains_key("itemsFailed"),
        "the stop hook's document leaves the bitmaps out"
    );
    println!("stopped after {processed} of {count} items");
}

#[tokio::test(flavor = "multi_thread")]
async fn extra_fields_are_inserted_last_and_a_field_of_the_core_is_refused() {
    let (engine, store, events) = engine("fields").await;
    let jobs = raw_jobs("fields").await;
    let ids: Vec<String> = (0..20_000).map(|n| format!("id{n:08}")).collect();
    let fields = doc! {
        "rerun": { "route": "/modules/apostrophe-pages/publish", "body": { "x": 1 }, "ids": ids.clone() },
        "retryOf": { "jobId": "j0", "failed": 3 },
    };
    let job = engine
        .start_job(NewJob {
            fields: fields.clone(),
            ..stoppable()
        })
        .await
        .unwrap();
    let stored = jobs
        .find_one(doc! { "_id": job.id() })
        .await
        .unwrap()
        .unwrap();
    let keys: Vec<&str> = stored.keys().map(String::as_str).collect();
    assert_eq!(
        keys[11..],
        ["workerId", "heartbeatAt", "rerun", "retryOf"],
        "after every field of the core"
    );
    assert_eq!(
        stored.get_document("rerun").unwrap(),
        fields.get_document("rerun").unwrap()
    );
    assert_eq!(
        stored.get_document("retryOf").unwrap(),
        &doc! { "jobId": "j0", "failed": 3 }
    );
    let read = store.find(job.id()).await.unwrap().unwrap();
    assert!(!read.contains_key("rerun"), "the core's reads leave it out");
    assert!(read.contains_key("retryOf"));
    assert!(engine.request_cancel(job.id()).await.unwrap());
    {
        let halts = events.halts.lock().unwrap();
        assert!(!halts[0].2.contains_key("rerun"));
        assert!(halts[0].2.contains_key("retryOf"));
    }
    engine.acknowledge_halt(&job, false).await.unwrap();

    let before = jobs.count_documents(doc! {}).await.unwrap();
    for clash in ["_id", "good", "status", "labels", "workerId", "itemsFailed"] {
        let mut fields = doc! { "rerun": { "ids": ["a"] } };
        fields.insert(clash, "clobbered");
        let message = engine
            .start_job(NewJob {
                fields,
                ..stoppable()
            })
            .await
            .unwrap_err()
            .to_string();
        assert!(
            message.contains(&format!("the extra field `{clash}`")),
            "{message}"
        );
    }
    assert_eq!(
        jobs.count_documents(doc! {}).await.unwrap(),
        before,
        "nothing inserted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_job_refuses_a_running_job_and_deletes_an_ended_one() {
    let (engine, store, _) = engine("delete").await;
    let job = engine.start_job(stoppable()).await.unwrap();
    let id = job.id().to_owned();
    assert!(!engine.delete_job(&id).await.unwrap(), "running");
    assert!(store.find(&id).await.unwrap().is_some());
    engine.end_job(&job, true, EndResults::Null).await.unwrap();
    assert!(engine.delete_job(&id).await.unwrap());
    assert!(store.find(&id).await.unwrap().is_none());
    assert!(!engine.delete_job(&id).await.unwrap(), "deleted already");
    assert!(!engine.delete_job("nosuchjob").await.unwrap());
}
