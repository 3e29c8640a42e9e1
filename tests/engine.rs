//! The engine against a real MongoDB-wire server: `npm test` starts one and sets
//! `APOS_JOBS_TEST_URI`; to run these alone, start any MongoDB and set it yourself.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use apostrophe_jobs_native::engine::{Engine, EngineEvents, EngineOptions, LogLevel};
use apostrophe_jobs_native::job::{HaltKind, NewJob};
use apostrophe_jobs_native::results::{EndResults, RawValue};
use apostrophe_jobs_native::store::{JobStore, StoreOptions};
use mongodb::bson::{doc, Bson, Document};

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

async fn engine(name: &str) -> (Engine, JobStore, Arc<RecordedEvents>) {
    engine_with(name, EngineOptions::default()).await
}

async fn engine_with(
    name: &str,
    options: EngineOptions,
) -> (Engine, JobStore, Arc<RecordedEvents>) {
    let store_options = StoreOptions {
        uri: test_uri(),
        database: format!("ajn-test-rust-{name}-{}", std::process::id()),
        collection: None,
        connect_timeout: None,
    };
    let store = JobStore::connect(&store_options).await.unwrap();
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
async fn engine_without_ticks(name: &str) -> (Engine, JobStore, Arc<RecordedEvents>) {
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
    let id = engine.start_job(stoppable()).await.unwrap();
    engine.set_total(&id, Bson::Int32(1000));
    for i in 0..1000 {
        if i % 10 == 0 {
            engine.add_counts(&id, 0.0, 1.0);
        } else {
            engine.add_counts(&id, 1.0, 0.0);
        }
    }
    engine
        .end_job(&id, true, results(Bson::Document(doc! { "a": 1 })))
        .await
        .unwrap();
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
    assert_eq!(engine.live_jobs(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_watcher_calls_the_hook_once_and_the_acknowledgement_writes_stopped() {
    let (engine, store, events) = engine("stop").await;
    let id = engine.start_job(stoppable()).await.unwrap();
    engine.add_counts(&id, 3.0, 0.0);
    assert!(engine.request_cancel(&id).await.unwrap());
    wait_for(|| !events.halts.lock().unwrap().is_empty()).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    {
        let halts = events.halts.lock().unwrap();
        assert_eq!(halts.len(), 1, "the hook is called once per stop request");
        assert_eq!(halts[0].0, id);
        assert_eq!(halts[0].1, HaltKind::Stop);
        assert!(halts[0].2.get_bool("canceling").unwrap());
    }
    engine.acknowledge_halt(&id, false).await.unwrap();
    let job = store.find(&id).await.unwrap().unwrap();
    assert_eq!(job.get_str("status").unwrap(), "stopped");
    assert!(job.get_bool("ended").unwrap());
    assert!(!job.get_bool("canceling").unwrap());
    assert_eq!(job.get("good"), Some(&Bson::Int32(3)));
    assert!(
        !job.contains_key("results"),
        "a halted job has no results key"
    );
    assert_eq!(engine.live_jobs(), 0);
    assert!(engine.acknowledge_halt(&id, false).await.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_count_write_is_also_a_stop_check() {
    // Only the count write can see the request.
    let (engine, store, events) = engine_without_ticks("write-checks").await;
    let id = engine.start_job(stoppable()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // As the cancel route of another process writes it (this engine's own route would check
    // the job at once).
    assert!(store.request_cancel(&id).await.unwrap());
    // Enough items for a write before the tick.
    for _ in 0..40 {
        engine.add_counts(&id, 1.0, 0.0);
    }
    wait_for(|| !events.halts.lock().unwrap().is_empty()).await;
    {
        let halts = events.halts.lock().unwrap();
        assert_eq!(halts[0].0, id);
        assert!(halts[0].2.get_bool("canceling").unwrap());
    }
    let job = store.find(&id).await.unwrap().unwrap();
    assert_eq!(job.get("good"), Some(&Bson::Int32(40)));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_through_this_engine_checks_its_own_job_at_once() {
    let (engine, _, events) = engine_without_ticks("own-cancel").await;
    let id = engine.start_job(stoppable()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(engine.request_cancel(&id).await.unwrap());
    assert_eq!(
        events.halts.lock().unwrap().len(),
        1,
        "called before the route answers"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_wins_and_a_failed_acknowledgement_writes_failed() {
    let (engine, store, events) = engine("cancel").await;
    let id = engine
        .start_job(NewJob {
            labels: Document::new(),
            can_cancel: true,
            can_stop: true,
            user_id: None,
        })
        .await
        .unwrap();
    engine.request_cancel(&id).await.unwrap();
    wait_for(|| !events.halts.lock().unwrap().is_empty()).await;
    assert_eq!(events.halts.lock().unwrap()[0].1, HaltKind::Cancel);
    engine.acknowledge_halt(&id, true).await.unwrap();
    let job = store.find(&id).await.unwrap().unwrap();
    assert_eq!(job.get_str("status").unwrap(), "failed");
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
    let job = store.find(&gathered).await.unwrap().unwrap();
    assert_eq!(
        job.get_document("results").unwrap(),
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
    let job = store.find(&given).await.unwrap().unwrap();
    assert_eq!(job.get_document("results").unwrap(), &doc! { "y": 2 });
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_requests_leave_ended_and_unknown_jobs_alone() {
    let (engine, store, _) = engine("ended").await;
    let id = engine.start_job(stoppable()).await.unwrap();
    engine.end_job(&id, true, EndResults::Null).await.unwrap();
    assert!(!engine.request_cancel(&id).await.unwrap());
    assert!(!engine.request_cancel("nosuchjob").await.unwrap());
    let job = store.find(&id).await.unwrap().unwrap();
    assert!(!job.get_bool("canceling").unwrap());
    assert_eq!(job.get("results"), Some(&Bson::Null));
}

#[tokio::test(flavor = "multi_thread")]
async fn results_too_large_for_a_document_are_dropped_and_the_job_still_ends() {
    let (engine, store, events) = engine("large").await;
    let id = engine.start_job(stoppable()).await.unwrap();
    let huge = "x".repeat(17 * 1024 * 1024);
    engine
        .end_job(&id, true, results(Bson::Document(doc! { "big": huge })))
        .await
        .unwrap();
    let job = store.find(&id).await.unwrap().unwrap();
    assert_eq!(job.get_str("status").unwrap(), "completed");
    assert_eq!(job.get("results"), Some(&Bson::Null));
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
        collection: None,
        connect_timeout: Some(Duration::from_millis(500)),
    };
    let message = JobStore::connect(&options).await.unwrap_err().to_string();
    assert!(
        message.contains("could not reach MongoDB at mongodb://127.0.0.1:1/"),
        "{message}"
    );
    assert!(message.contains("APOS_MONGODB_URI"), "{message}");
}
