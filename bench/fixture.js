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
      // Items of `req.body.delay` ms (figures 4, 5, 6).
      slow: (req, id, callback) => setTimeout(callback, req.body.delay || 20)
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
      if (req.body.maxChunk) {
        runOptions.maxChunk = req.body.maxChunk;
      }
      bench.runAt = now();
      return self.jobs().run(req, instrumented, runOptions);
    });

    self.modulesReady = function() {
      const jobs = self.jobs();
      const bench = self.bench;
      // Stock: `end(job, success, [results], [callback])`, which its `run` calls through
      // `self`, so wrapping the method on the instance sees every end. This package: its
      // engine's `endJob(id, ...)`, since replacing `end` would make `run` hand `end` a
      // results object as it must for a site that does (not the path being measured).
      if (jobs.engine) {
        const endJob = jobs.engine.endJob;
        jobs.engine.endJob = function(id) {
          bench.endCalledAt[id] = now();
          const returned = endJob.apply(jobs.engine, arguments);
          returned.then(() => { bench.endAckedAt[id] = now(); }, () => {});
          return returned;
        };
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
