// The benchmark's site module: one route that calls `run` the way a real module's batch route
// does, with a `change` chosen by `req.body.mode`, and the instruments the benchmark reads
// back over IPC (bench/child.js). It is the same file for the stock and the native site.
//
// Instruments, all on `performance.timeOrigin + performance.now()` (milliseconds since the
// epoch, sub-millisecond, the same clock in the parent and the child):
// * `runAt`: just before `run` is called;
// * `firstChangeAt`, `finished`, `finishTimes` (optional): items as `change` finishes them;
// * `endCalledAt` / `endAckedAt` by job: when `end` is called and when its write is
//   acknowledged (wraps the module's `end`, which both implementations call through `self`);
// * `lastWriteAckAt` by job: the last acknowledged write the jobs module made through its
//   driver collection `self.db` (stock 2.x writes every count through it; the native module
//   writes nothing through it);
// * `reads` (with finish times): each `self.db.findOne` of the jobs module (the `progress`
//   route's read), when it was issued and answered, and the `processed` it saw.
// * `runBatchAt` by job (this package only): when `run` hands the ids to the engine's loop,
//   after the job document was inserted (figure 8's split of a job's fixed costs).
//
// `costRun` (figure 8) runs the same `change` either through `run` or in a bare promise pool,
// with the same `req`, and times both the same way (see there).

const { performance } = require('perf_hooks');

const now = () => performance.timeOrigin + performance.now();

module.exports = {
  extend: 'apostrophe-module',
  alias: 'benchFixture',

  construct: function(self, options) {
    self.jobs = () => self.apos.modules['apostrophe-jobs'];
    self.bench = {
      runAt: null,
      firstChangeAt: null,
      finished: 0,
      finishTimes: null,
      reads: null,
      endCalledAt: {},
      endAckedAt: {},
      lastWriteAckAt: {},
      runBatchAt: {},
      // Figure 8: called with (id, endAckedAt) when a job's end is acknowledged, or with
      // (id, null, error) when it failed.
      onEndAcked: null,
      touched: 0
    };

    self.resetBench = function(recordFinishTimes, n) {
      self.bench.runAt = null;
      self.bench.firstChangeAt = null;
      self.bench.finished = 0;
      self.bench.finishTimes = recordFinishTimes ? new Float64Array(n) : null;
      self.bench.reads = recordFinishTimes ? [] : null;
    };

    const changes = self.changes = {
      // The no-op of figure 1: calls back on the next turn of the event loop. With an
      // explicit null result, so both modules store the same `results` (2.x stores an
      // undefined result as null; see BENCHMARKS.md).
      noop: (req, id, callback) => setImmediate(() => callback(null, null)),
      // Calls back at once: what is left is the loop's own cost (figure 3).
      sync: (req, id, callback) => callback(null, null),
      // A realistic change: read the piece, write one field (figure 2).
      docs: (req, id, callback) => {
        const docs = self.apos.docs.db;
        return docs.findOne({ _id: id }, function(err, doc) {
          if (err) {
            return callback(err);
          }
          if (!doc) {
            return callback(new Error(`no doc ${id}`));
          }
          self.bench.touched++;
          return docs.updateOne({ _id: id }, { $set: { benchTouchedAt: new Date() } }, function(err) {
            return callback(err);
          });
        });
      },
      // Items of `req.body.delay` ms (figures 4, 5, 6, 8).
      slow: (req, id, callback) => setTimeout(callback, req.body.delay || 20),
      // Items shorter than a timer can wait (figure 8's 0.1 ms): `req.body.delay` ms of
      // busy work, then a call back on the next turn of the event loop, as an item that
      // computes and then touches I/O would (a synchronous call back would take the batch
      // loop's same-frame path, which figure 3 measures).
      spin: (req, id, callback) => {
        const until = performance.now() + (req.body.delay || 0.1);
        while (performance.now() < until) {
          // busy
        }
        return setImmediate(callback, null, null);
      }
    };

    // Figure 8: the job's cost against the bare work. Runs `changes[mode]` (the very same
    // function object either way, unwrapped, so nothing is added to the items of either) on
    // `req.body.ids`, with the same `req`:
    // * `job`: `run(req, change, { concurrency })` with `req.body.job` set, as the route
    //   does. Timed from `runAt` (just before `run` is called) to `endAckedAt` (the engine's
    //   end update acknowledged: the job document is final), both on `now()`.
    // * `bare`: a plain promise pool of `concurrency` workers, one promise per item, no job.
    //   Timed from just before the pool starts (the first `change` call follows
    //   synchronously) to when the pool's promise resolves after the last call back.
    // `process.cpuUsage()` is read just outside the two clock points of either (all threads of
    // the process: the Rust engine's, V8's and libuv's too). Resolves to
    // { ms, cpuUs, errors, jobId, split }.
    self.costRun = function(req, which, mode, concurrency) {
      const change = changes[mode];
      const bench = self.bench;
      if (which === 'bare') {
        const ids = req.body.ids;
        let next = 0;
        let errors = 0;
        const worker = async function() {
          while (next < ids.length) {
            const id = ids[next++];
            const err = await new Promise((resolve) => change(req, id, resolve));
            if (err) {
              errors++;
            }
          }
        };
        const cpu0 = process.cpuUsage();
        const t0 = now();
        const workers = [];
        for (let i = 0; i < concurrency; i++) {
          workers.push(worker());
        }
        return Promise.all(workers).then(() => {
          const ms = now() - t0;
          const cpu = process.cpuUsage(cpu0);
          return { ms, cpuUs: cpu.user + cpu.system, errors };
        });
      }
      return new Promise((resolve, reject) => {
        let jobId = null;
        let cpu0;
        // `run` replies through `req.res.send` once the job document is inserted.
        req.res.send = (body) => {
          if (!body || body.status !== 'ok' || !body.jobId) {
            bench.onEndAcked = null;
            return reject(new Error(`run answered ${JSON.stringify(body)}`));
          }
          jobId = body.jobId;
        };
        bench.onEndAcked = (id, at, error) => {
          if (id !== jobId) {
            return;
          }
          // Read right after the clock, as the bare loop's.
          const cpu = process.cpuUsage(cpu0);
          bench.onEndAcked = null;
          if (error) {
            return reject(new Error(`the end of job ${id} failed: ${error.message}`));
          }
          const start = bench.runAt;
          return resolve({
            ms: at - start,
            cpuUs: cpu.user + cpu.system,
            jobId,
            // Where the wall time went: inserting the job and replying (run -> the engine's
            // loop starts), the items, and the end update (end called -> acknowledged).
            split: {
              startMs: bench.runBatchAt[id] - start,
              loopMs: bench.endCalledAt[id] - bench.runBatchAt[id],
              endMs: at - bench.endCalledAt[id]
            }
          });
        };
        const runOptions = { labels: { title: 'Benchmark' }, concurrency };
        cpu0 = process.cpuUsage();
        bench.runAt = now();
        self.jobs().run(req, change, runOptions);
      });
    };

    self.route('post', 'run', function(req, res) {
      const change = changes[req.body.mode || 'noop'];
      const bench = self.bench;
      let instrumented;
      if (req.body.recordFinishTimes) {
        instrumented = function(req, id, callback) {
          if (bench.firstChangeAt === null) {
            bench.firstChangeAt = now();
          }
          return change(req, id, function(err, result) {
            bench.finishTimes[bench.finished++] = now();
            return callback(err, result);
          });
        };
      } else {
        // As light as possible: figure 3 measures what the loop around it costs.
        instrumented = function(req, id, callback) {
          if (bench.firstChangeAt === null) {
            bench.firstChangeAt = now();
          }
          return change(req, id, callback);
        };
      }
      const runOptions = { labels: { title: 'Benchmark' } };
      if (req.body.concurrency) {
        runOptions.concurrency = req.body.concurrency;
      }
      // This package only: the largest range of items per Rust -> JavaScript hop.
      if (req.body.maxRange) {
        runOptions.maxRange = req.body.maxRange;
      }
      bench.runAt = now();
      return self.jobs().run(req, instrumented, runOptions);
    });

    self.modulesReady = function() {
      const jobs = self.jobs();
      const bench = self.bench;
      // Stock: `end(job, success, [results], [callback])`, which its `run` calls through
      // `self`, so wrapping the method on the instance sees every end. This package: the
      // engine's end of the job, since replacing `end` would make `run` hand `end` a results
      // object as it must for a site that does (not the path being measured). That is
      // `engine.endJob(id, ...)` and `engine.runBatch(id, ...)` in builds up to fc74870, and
      // `handle.end(...)` and `handle.runBatch(...)` on the handle `engine.startJob` resolves
      // to in later ones; both are wrapped when present, so one fixture measures either build.
      if (jobs.engine) {
        const engine = jobs.engine;
        // `returned`: the promise of the end write; its settlement is the acknowledgement.
        const ended = function(id, returned) {
          returned.then(() => {
            const at = bench.endAckedAt[id] = now();
            if (bench.onEndAcked) {
              bench.onEndAcked(id, at);
            }
          }, (error) => {
            // Figure 8 must not wait forever for an end that failed.
            if (bench.onEndAcked) {
              bench.onEndAcked(id, null, error);
            }
          });
          return returned;
        };
        // Wraps `target[name]` when it exists: stamps `endCalledAt` (an end) or `runBatchAt`
        // (the loop) for the job before each call; an end's promise is its acknowledgement.
        const instrument = function(target, name, idOf, isEnd) {
          const original = target[name];
          if (typeof original !== 'function') {
            return;
          }
          target[name] = function() {
            const id = idOf(arguments);
            (isEnd ? bench.endCalledAt : bench.runBatchAt)[id] = now();
            const returned = original.apply(target, arguments);
            return isEnd ? ended(id, returned) : returned;
          };
        };
        // Builds up to fc74870: the engine's methods take the job id first.
        instrument(engine, 'endJob', (args) => args[0], true);
        instrument(engine, 'runBatch', (args) => args[0], false);
        // Later builds: a handle per job (the older `startJob` resolves to a bare id).
        const startJob = engine.startJob;
        if (typeof startJob === 'function') {
          engine.startJob = function() {
            return startJob.apply(engine, arguments).then((handle) => {
              if (handle && typeof handle === 'object' && typeof handle.id === 'string') {
                instrument(handle, 'end', () => handle.id, true);
                instrument(handle, 'runBatch', () => handle.id, false);
              }
              return handle;
            });
          };
        }
      }
      const end = jobs.engine ? null : jobs.end;
      jobs.end = !end ? jobs.end : function(job) {
        const args = Array.prototype.slice.call(arguments);
        const id = job && job._id;
        bench.endCalledAt[id] = now();
        const last = args.length - 1;
        if (typeof args[last] === 'function') {
          const callback = args[last];
          args[last] = function() {
            bench.endAckedAt[id] = now();
            return callback.apply(this, arguments);
          };
          return end.apply(jobs, args);
        }
        const returned = end.apply(jobs, args);
        if (returned && typeof returned.then === 'function') {
          returned.then(() => { bench.endAckedAt[id] = now(); }, () => {});
        }
        return returned;
      };
      const db = jobs.db;
      // Both `progress` routes read the job with `self.db.findOne(query, callback)`: when
      // and what they read (figure 6), to tell the data's age from the route's own time.
      const findOne = db && db.findOne;
      if (typeof findOne === 'function') {
        db.findOne = function() {
          const args = Array.prototype.slice.call(arguments);
          const last = args.length - 1;
          if (bench.reads && typeof args[last] === 'function') {
            const callback = args[last];
            const issuedAt = now();
            args[last] = function(err, doc) {
              bench.reads.push({ id: (args[0] || {})._id, issuedAt, answeredAt: now(), processed: doc ? doc.processed : null });
              return callback.apply(this, arguments);
            };
          }
          return findOne.apply(db, args);
        };
      }
      // Stock 2.x writes through `self.db.update` / `insert` with a callback.
      for (const method of [ 'update', 'updateOne', 'insert', 'insertOne' ]) {
        const original = db && db[method];
        if (typeof original !== 'function') {
          continue;
        }
        db[method] = function() {
          const args = Array.prototype.slice.call(arguments);
          const first = args[0] || {};
          const id = method.startsWith('insert') ? first._id : first._id;
          const last = args.length - 1;
          if (typeof args[last] === 'function') {
            const callback = args[last];
            args[last] = function() {
              bench.lastWriteAckAt[id] = now();
              return callback.apply(this, arguments);
            };
          }
          return original.apply(db, args);
        };
      }
    };
  }
};
