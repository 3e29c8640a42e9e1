// The jobs API, with the 2.x signatures: `run`, `runNonBatch`, `start`, `good`, `bad`,
// `setTotal`, `end`. Job state lives in Rust (ids, counters, the final write, the stop/cancel
// watcher, the batch loop's ranges); this file keeps what only JavaScript can hold: `req`, the
// site's `change` and work functions, and the HTTP replies.

const { callChange, createRangeRunner } = require('./range-runner.js');

module.exports = function(self, options) {

  // Starts and supervises a long-running job such as a batch operation on pieces. Call it
  // to implement an API route that carries out the same action on many things. If your job
  // doesn't look like that, see `runNonBatch`.
  //
  // The ids to process come from `req.body.ids` (or a single `req.body._id`), laundered as
  // in 2.x. Pass `req` and a `change(req, id, callback)` function that performs the change
  // on one id and calls back with an error (counted as a bad item; the job goes on) and an
  // optional result.
  //
  // If `req.body.job` is truthy, responds at once with `{ status: 'ok', jobId }`; pass the
  // id to `apos.modules['apostrophe-jobs'].progress(jobId)` in the browser. Once the job is
  // `completed`, `results` holds each good item's result by id.
  //
  // Jobs run this way can be stopped (not canceled): the item in progress finishes and no
  // further item starts.
  //
  // *Options*
  //
  // `labels`: the modal's texts (`title`, `running`, `completed`, `failed`, `good`, `bad`, …).
  // `concurrency`: how many items run at once. Defaults to 1, the 2.x order (one after the
  // other, in id order); pages' `sortPageIds` and similar rely on that, so only raise it for
  // independent items.
  // `timeout`: milliseconds after which an item that has not called back counts as failed
  // and the batch moves on (a later callback is ignored with a warning). Off by default.
  //
  // *Stopping*
  //
  // `change` also receives an `AbortSignal` as a fourth argument (2.x functions ignore it):
  // it aborts when the user stops the job, when the process drains before it exits, or when
  // the job is no longer this process's (another process ended it). Pass it to `fetch` and
  // friends, or check `signal.aborted`, to stop an item early. Items still running
  // `stopGrace` ms (default 10 s) after a Stop are abandoned: the job ends `stopped` with the
  // counts of the items that finished, and a late callback is ignored with a warning.
  //
  // *Unlike 2.x*
  //
  // `change` may also return a promise, and a synchronous throw counts as a failed item
  // instead of crashing the process. The counts are exact the moment the job ends.
  //
  // `results` are stored as 2.x stores them, but gathered as BSON in Rust while items finish
  // (100,000 ids: ~3 MB, where the JavaScript object took ~18 MB of heap), and dropped (logged;
  // the job still completes, `results: null`) once they pass MongoDB's 16 MB document limit,
  // so they stop taking memory there. Ids that an object would order differently (repeated
  // ids, numbers, "7") keep 2.x's object. A site that replaces `end` still gets the object.
  //
  // *Backwards compatibility*
  //
  // If `req.body.job` is not truthy, every id is processed within the request and the reply
  // is `{ status: 'ok', data: firstResult, results }` (`data` is `{}` unless `_id` was
  // used). Unlike 2.x, which hung on the first failure and never recorded results, the
  // first failure stops the batch and is the reply's error. Proxy timeouts are bad; don't
  // use this mode.

  self.run = function(req, change, options) {
    options = options || {};
    const body = req.body || {};
    let ids;
    if (body._id) {
      ids = [ self.apos.launder.id(body._id) ];
    } else if (body.ids) {
      ids = self.apos.launder.ids(body.ids);
    } else {
      return self.apiResponder(req, 'invalid');
    }
    if (!body.job) {
      return runWithinRequest(req, change, ids, options);
    }
    // What the dashboard needs to retry failed items or resume unfinished ones.
    return runBatchJob(req, ids, change, Object.assign({}, options, {
      rerun: self.describeRerun(req, ids),
      retryOf: self.describeRetryOf(req)
    }));
  };

  // Like `run`, starts and supervises a long-running job, but `doTheWork(req, reporting,
  // callback)` is called just once and the job is over when it finishes. `doTheWork` may
  // call `reporting.good(n)`, `reporting.bad(n)` (n defaults to 1, and 0 counts as 1, as in
  // 2.x), `reporting.setTotal(n)` and `reporting.setResults(object)` (handed to the
  // browser's `success` callback). It may return a promise instead of calling back.
  //
  // Responds `{ status: 'ok', jobId }` for you.
  //
  // *Options*
  //
  // `labels` as for `run`. `canStop` or `canCancel`: shows a Stop or Cancel button. Your code
  // then calls `reporting.isCanceling()` when convenient; once it returns a function, stop
  // (and for `canCancel`, undo everything), then call that function **instead of** the
  // callback. `reporting.signal` is an `AbortSignal` that aborts at the same moment (and
  // when the process drains, or the job is no longer this process's): hand it to `fetch` and
  // friends, or listen to its `abort` event.
  //
  // A work function that has not acknowledged a Stop or Cancel within `stopGrace` ms (an
  // option of the module, default 10 s) has its job ended `failed` with `interrupted: true`,
  // and the log says so: its work may still be running.
  //
  // *Unlike 2.x*
  //
  // Once that function has been called, a later callback or promise resolution is ignored,
  // so a promise-returning work function can honour stop and cancel. A synchronous throw
  // fails the job instead of crashing the process. A missing `options` means no options.

  self.runNonBatch = function(req, doTheWork, options) {
    options = options || {};
    let haltAcknowledgement = false;
    let halted = false;
    let finished = false;
    let results;
    const haltHook = function(job, acknowledge) {
      haltAcknowledgement = function(err) {
        halted = true;
        return acknowledge(err);
      };
    };
    const startOptions = Object.assign({}, options, {
      userId: req.user && req.user._id,
      stop: options.canStop ? haltHook : null,
      cancel: options.canCancel ? haltHook : null
    });
    return self.start(startOptions, function(err, job) {
      if (err) {
        return self.apiResponder(req, err);
      }
      self.apiResponder(req, null, { jobId: job._id });
      const live = self.liveJobs.get(job._id);
      const done = function(err) {
        if (halted) {
          return;
        }
        if (finished) {
          self.apos.utils.warn(`apostrophe-jobs: the work function of job ${job._id} finished more than once; the later call is ignored.`);
          return;
        }
        finished = true;
        if (err) {
          self.apos.utils.error(err);
          return self.end(job, false, self.logEndFailure);
        }
        return self.end(job, true, results, self.logEndFailure);
      };
      const reporting = {
        good: function(n) {
          return self.good(job, n || 1);
        },
        bad: function(n) {
          return self.bad(job, n || 1);
        },
        setTotal: function(n) {
          return self.setTotal(job, n);
        },
        setResults: function(_results) {
          results = _results;
        },
        isCanceling: function() {
          return haltAcknowledgement;
        },
        signal: live.controller.signal
      };
      let returned;
      try {
        returned = doTheWork(req, reporting, done);
      } catch (error) {
        return done(error || new Error('apostrophe-jobs: the work function threw a falsy value'));
      }
      if (returned && typeof returned.then === 'function') {
        returned.then(function() {
          return done(null);
        }, function(error) {
          return done(error || new Error('apostrophe-jobs: the work function rejected with a falsy value'));
        });
      }
    });
  };

  // Starts tracking a long-running job. You usually won't call this yourself: `run` and
  // `runNonBatch` do. Calls back with `(null, job)`, a handle to pass to `good`, `bad`,
  // `setTotal` and `end`. Once started, a job must eventually be ended with `end`.
  //
  // *Canceling and stopping jobs*
  //
  // With `options.cancel`, the user may cancel (undo) the job: `options.cancel(job,
  // callback)` is called and must undo what was done, then call back. With `options.stop`,
  // the user may stop it: `options.stop(job, callback)` must stop processing new items, then
  // call back. An error passed to the callback fails the job. Offer one of the two; if both
  // are given only Cancel is shown.
  //
  // *Labeling the progress modal*
  //
  // `options.labels`: `title`, and optionally `running`, `completed`, `failed`, `canceled`,
  // `stopped`, `canceling`, `stopping`, `good`, `bad`, `instructions`.
  //
  // `options.userId`: the user who started the job (`run` and `runNonBatch` pass
  // `req.user._id`), stored as the additive `userId`, for the `ownerOnly` option.
  // `options.rerun` and `options.retryOf`: stored as the additive fields of the same names,
  // which the dashboard reads (`run` passes them; see `dashboard.js`).
  //
  // *Unlike 2.x*
  //
  // The id is a UUID in hex form rather than a cuid, and the handle has no `interval` (one
  // watcher in Rust serves every job of the process). The document also records, after the
  // 2.x fields, `userId`, the process running the job (`workerId`) and its `heartbeatAt`, so
  // a job whose process died is ended as `failed` (`interrupted: true`) by another process.
  // Its times (`when`, `heartbeatAt`, `endedAt`) come from the database server's clock.

  self.start = function(options, callback) {
    options = options || {};
    let labels;
    let fields;
    try {
      labels = self.encodeDocument(options.labels || {});
      fields = self.encodeDocument(additiveFields(options));
    } catch (error) {
      return setImmediate(() => callback(error));
    }
    self.engine.startJob({
      labels,
      canCancel: !!options.cancel,
      canStop: !!options.stop,
      userId: typeof options.userId === 'string' ? options.userId : undefined,
      fields
    }).then(function(handle) {
      const context = { _id: handle.id, options };
      // What only JavaScript can hold for the job: its handle, its hooks (through
      // `context.options`) and the AbortController behind the signal its work receives.
      self.liveJobs.set(handle.id, { context, handle, controller: new AbortController() });
      return setImmediate(() => callback(null, context));
    }, function(error) {
      return setImmediate(() => callback(error));
    });
  };

  // The additive fields `start` stores after the 2.x ones: the process, and what a retry
  // from the dashboard needs.
  function additiveFields(options) {
    const fields = { process: self.describeProcess() };
    if (options.rerun) {
      fields.rerun = options.rerun;
    }
    if (options.retryOf) {
      fields.retryOf = options.retryOf;
    }
    return fields;
  }

  // Call this to report that n items were good (successfully processed); n defaults to 1
  // when omitted. No callback: reporting is noncritical.
  //
  // Unlike 2.x, counts are gathered in memory and written at most every 100 ms, always
  // before the job's end, so the final counts are exact. A count that is not a finite number
  // is logged and ignored (2.x sent it to MongoDB, which refused it), and so is a count for a
  // job that has ended (2.x added it to the ended job).

  self.good = function(job, n) {
    return count(job, n, 'good');
  };

  // Call this to report that n items were bad (not successfully processed); n defaults to 1
  // when omitted. No callback, as for `good`.

  self.bad = function(job, n) {
    return count(job, n, 'bad');
  };

  // `run` checks these to know whether a site replaced `good` or `bad`.
  const ownGood = self.good;
  const ownBad = self.bad;

  function count(job, n, which) {
    n = (n === undefined) ? 1 : n;
    if (typeof n !== 'number' || !Number.isFinite(n)) {
      self.apos.utils.error(`apostrophe-jobs: ${which}(job, n) needs a finite number for n, not ${typeof n === 'number' ? n : typeof n}; nothing was counted.`);
      return;
    }
    if (!job || typeof job._id !== 'string') {
      self.apos.utils.error(`apostrophe-jobs: ${which}(job, n) needs the job handle from start(); nothing was counted.`);
      return;
    }
    const good = which === 'good' ? n : 0;
    const bad = which === 'bad' ? n : 0;
    const live = self.liveJobs.get(job._id);
    // A job of another process (2.x allowed that) is counted by id.
    return live ? live.handle.addCounts(good, bad) : self.engine.addCounts(job._id, good, bad);
  }

  // Call this to indicate the total number of items expected, which enables the progress
  // bar. Stored verbatim. No callback.

  self.setTotal = function(job, total) {
    try {
      self.engine.setTotal(job._id, self.encodeValue(total));
    } catch (error) {
      self.apos.utils.error(error);
    }
  };

  // Marks the job as ended: `completed` if `success` is truthy, else `failed`. `results`, if
  // given, is stored as the job's `results` (else `null`). Calls back when the job document
  // is written; without a callback, returns a promise.
  //
  // *Unlike 2.x*
  //
  // `end(job, ok, results)` without a callback keeps `results` (2.x dropped them). Pending
  // counts are written in the same update, so they are exact once `ended` is true, and
  // `canceling` is cleared. Results too large for MongoDB's 16 MB limit are dropped (logged)
  // and the job still ends. A job's outcome is decided once: an `end` for a job that has
  // already ended (here, or in another process that took it for dead) writes nothing, and
  // says so in the log. Only the process that started a job can end it.

  self.end = function(job, success, results, callback) {
    if (typeof callback !== 'function' && typeof results === 'function') {
      callback = results;
      results = null;
    }
    const ended = endJob(job, { success: !!success, results: encodeResults(job, results) });
    if (typeof callback !== 'function') {
      return ended;
    }
    ended.then(() => callback(null), callback);
  };

  // `run` checks this to know whether a site replaced `end`.
  const ownEnd = self.end;

  // Ends a job of this process with `{ success, results, gathered }` (`gathered`: the results
  // the job gathered in Rust); resolves once the outcome is settled.
  function endJob(job, how) {
    job.ended = true;
    const live = self.liveJobs.get(job._id);
    if (!live) {
      return Promise.reject(new Error(`apostrophe-jobs: end() was called for job ${job._id}, which is not running in this process: it has ended already, or another process started it (only that process can end it).`));
    }
    self.forgetJob(job);
    return live.handle.end(how).then(function(outcome) {
      if (outcome === 'alreadyGone') {
        self.apos.utils.warn(`apostrophe-jobs: end() was called for job ${job._id} after it had ended; nothing was written.`);
      }
    });
  }

  function encodeResults(job, results) {
    try {
      return self.encodeValue(results);
    } catch (error) {
      self.apos.utils.error(`apostrophe-jobs: the results of job ${job._id} cannot be stored (${error.message}); the job ends without them.`);
      return undefined;
    }
  }

  // *Additions of this package*, after the 2.x methods.

  // Retention. Jobs are kept forever by default, as in 2.x; the `expireAfter` option (in
  // seconds) makes MongoDB delete ended jobs that long after their `endedAt` (a TTL index).
  // These two help otherwise.
  //
  // `listJobs({ ended, olderThan, limit })`: the newest jobs first (`olderThan` in ms, by
  // `when`); resolves the documents as stored.

  self.listJobs = function(options) {
    options = options || {};
    const query = {};
    if (options.ended !== undefined) {
      query.ended = !!options.ended;
    }
    if (options.olderThan !== undefined) {
      query.when = { $lt: new Date(Date.now() - options.olderThan) };
    }
    return self.db.find(query).sort({ when: -1 }).limit(options.limit || 100).toArray();
  };

  // `purgeJobs({ olderThan })`: deletes jobs that ended more than `olderThan` ms ago (by
  // `endedAt`, or by `when` for jobs the stock module ended); resolves how many. Also a
  // command line task: `node app apostrophe-jobs:purge --older-than-days=30`.
  // `purgeJobs({ _id })`: deletes that job if it has ended; resolves 1, or 0 (a running or
  // unknown job).

  self.purgeJobs = function(options) {
    options = options || {};
    if (options._id !== undefined) {
      return self.engine.deleteJob(self.apos.launder.id(options._id)).then((deleted) => (deleted ? 1 : 0));
    }
    const olderThan = options.olderThan;
    if (typeof olderThan !== 'number' || !(olderThan >= 0)) {
      return Promise.reject(new Error(`apostrophe-jobs: purgeJobs needs olderThan as a number of milliseconds of 0 or more, not ${JSON.stringify(olderThan)}`));
    }
    return self.engine.purge(olderThan);
  };

  // Starts a new job over the items that failed in job `jobId` (its `failedItems`, the first
  // `keepFailedItems` of them), with `change` and `options` as for `run`. Responds like
  // `run`: `{ status: 'ok', jobId }`, or `{ status: 'notfound' }` for an unknown job.

  self.retryFailed = function(req, jobId, change, options) {
    options = options || {};
    return self.db.findOne({ _id: self.apos.launder.id(jobId) }, function(err, job) {
      if (err) {
        return self.apiResponder(req, err);
      }
      if (!job || !self.canAccessJob(req, job)) {
        return self.apiResponder(req, 'notfound');
      }
      // Every failed item when the job recorded them all (see `dashboard.js`), else the
      // first `keepFailedItems` of them.
      const recorded = self.rerunItems(job, 'failed');
      const ids = recorded.ids || (job.failedItems || []).map((item) => item.id);
      return runBatchJob(req, ids, change, Object.assign({ labels: job.labels }, options, {
        retryOf: { jobId: job._id, items: 'failed' }
      }));
    });
  };

  // Keeps the id and error message of a failed item in the job's additive `failedItems`
  // (the first `keepFailedItems`, default 100), for diagnosis and `retryFailed`.

  self.recordFailedItem = function(job, id, error) {
    const live = self.liveJobs.get(job._id);
    if (!live) {
      return;
    }
    const message = (error && error.message) || String(error);
    try {
      live.handle.addFailedItem(self.encodeValue(id), message);
    } catch (e) {
      self.apos.utils.error(e);
    }
  };

  // *How `run` works* (not methods: a site overrides `run` itself, not these).

  // Runs a batch as a job: the Rust core hands out ranges of items, `range-runner.js` runs
  // them, and the stop hook is acknowledged once the loop has halted.
  function runBatchJob(req, ids, change, options) {
    const timeout = positiveInteger(options.timeout, 'timeout');
    const concurrency = positiveInteger(options.concurrency, 'concurrency') || 1;
    // The stop hook remembers its acknowledgement; the Rust loop has already stopped taking
    // items by then. The stop is acknowledged once the loop has halted too.
    let stopAcknowledgement = null;
    let loopHalted = false;
    const acknowledgeStopWhenHalted = function() {
      if (stopAcknowledgement && loopHalted) {
        const acknowledge = stopAcknowledgement;
        stopAcknowledgement = function() {};
        acknowledge(null);
      }
    };
    const startOptions = Object.assign({}, options, {
      userId: req.user && req.user._id,
      stop: function(job, acknowledge) {
        stopAcknowledgement = acknowledge;
        acknowledgeStopWhenHalted();
      }
    });
    return self.start(startOptions, function(err, job) {
      if (err) {
        return self.apiResponder(req, err);
      }
      self.setTotal(job, ids.length);
      self.apiResponder(req, null, { jobId: job._id });
      const live = self.liveJobs.get(job._id);
      const batch = new BatchResults(job, live.handle, ids);
      // 2.x calls `good(job)` / `bad(job)` once per item: a site that replaces them gets that.
      const reportEachItem = self.good !== ownGood || self.bad !== ownBad;
      const runRange = createRangeRunner({
        ids,
        concurrency,
        callItem: function(id, done) {
          return callChange(change, req, id, {
            timeout,
            signal: live.controller.signal,
            warn: self.apos.utils.warn,
            error: self.apos.utils.error
          }, done);
        },
        itemFinished: function(index, error, result) {
          const id = ids[index];
          if (error) {
            self.recordFailedItem(job, id, error);
          } else {
            batch.add(id, result);
          }
          if (reportEachItem) {
            error ? self.bad(job) : self.good(job);
            live.handle.markItem(index, !error);
            return live.handle.mayStartItem();
          }
          return live.handle.itemFinished(index, !error);
        },
        mayStart: () => live.handle.mayStartItem(),
        late: function(index) {
          self.apos.utils.warn(`apostrophe-jobs: the change function finished id ${ids[index]} of job ${job._id} after the job was stopped (the item took longer than the stopGrace option allows after a stop); its outcome is ignored.`);
        }
      });
      let range = null;
      // Called by Rust for each range (it must not throw: Rust waits for `rangeDone`).
      const runRangeForRust = function(start, end) {
        try {
          batch.beginRange();
          range = runRange(start, end, function(finished, error) {
            try {
              batch.endRange();
            } catch (failure) {
              error = error || failure;
            }
            live.handle.rangeDone(finished, error ? String(error.stack || error) : undefined);
          });
        } catch (error) {
          live.handle.rangeDone(0, String(error.stack || error));
        }
      };
      // `maxRange` (undocumented): the largest range per hop, for the benchmarks.
      // With the ids recorded for a retry, Rust records which items finished and which failed.
      const batchOptions = {
        concurrency,
        maxRange: positiveInteger(options.maxRange, 'maxRange'),
        trackItems: !!(options.rerun && options.rerun.ids)
      };
      return live.handle.runBatch(ids.length, runRangeForRust, batchOptions).then(function(outcome) {
        switch (outcome) {
          case 'completed':
            return batch.endCompleted();
          case 'abandoned':
            range.abandon();
          // falls through: the abandoned items' job is stopped all the same
          case 'stopped':
            loopHalted = true;
            return acknowledgeStopWhenHalted();
          default:
            // Drained (Rust ended it as interrupted) or gone (another process ended it).
            return self.forgetJob(job);
        }
      }, function(error) {
        self.apos.utils.error(error);
        return self.end(job, false, self.logEndFailure);
      });
    });
  }

  // `run`'s results: 2.x's `results[id] = result`, gathered in Rust a range at a time when
  // the ids allow it (the JavaScript heap then never holds an object with a key per item),
  // else in one object as in 2.x.
  function BatchResults(job, handle, ids) {
    const gather = canGatherResults(ids);
    const all = gather ? null : {};
    let range = null;
    let gatheringFailed = false;

    this.beginRange = function() {
      range = gather ? {} : all;
    };

    this.add = function(id, result) {
      range[id] = result;
    };

    this.endRange = function() {
      if (!gather || gatheringFailed || Object.keys(range).length === 0) {
        return;
      }
      try {
        handle.addResults(self.encodeDocument(range));
      } catch (error) {
        gatheringFailed = true;
        self.apos.utils.error(`apostrophe-jobs: the results of job ${job._id} cannot be stored (${error.message}); the job ends without them.`);
      }
    };

    this.endCompleted = function() {
      if (!gather) {
        return self.end(job, true, all, self.logEndFailure);
      }
      if (gatheringFailed) {
        return self.end(job, true, null, self.logEndFailure);
      }
      if (self.end === ownEnd) {
        return endJob(job, { success: true, gathered: true }).catch(self.logEndFailure);
      }
      // A site replaced `end`: it gets the results object, as in 2.x.
      const gathered = handle.takeResults();
      return self.end(job, true, gathered ? self.decodeDocument(gathered) : null, self.logEndFailure);
    };
  }

  // An option that must be a positive integer, or undefined for the default; anything else
  // is logged and replaced by the default.
  function positiveInteger(value, name) {
    if (value === undefined || value === null) {
      return undefined;
    }
    if (Number.isInteger(value) && value > 0 && value <= 0xffffffff) {
      return value;
    }
    self.apos.utils.warn(`apostrophe-jobs: run's ${name} option must be a positive integer, not ${JSON.stringify(value)}; the default is used.`);
    return undefined;
  }

  // Whether results gathered range by range store exactly what 2.x's `results` object
  // would: each id a string that comes once, none an array index ("7", which an object lists
  // first, in numeric order) nor `__proto__` (which an assignment does not store).
  function canGatherResults(ids) {
    const seen = new Set();
    for (const id of ids) {
      if (typeof id !== 'string' || seen.has(id) || ARRAY_INDEX.test(id) || id === '__proto__') {
        return false;
      }
      seen.add(id);
    }
    return true;
  }

  const ARRAY_INDEX = /^(?:0|[1-9][0-9]{0,9})$/;

  function runWithinRequest(req, change, ids, options) {
    const results = {};
    let single;
    return (async function() {
      const timeout = positiveInteger(options.timeout, 'timeout');
      for (const id of ids) {
        const outcome = await self.callChange(req, change, id, timeout);
        if (outcome.error) {
          return self.apiResponder(req, outcome.error);
        }
        results[id] = outcome.result;
        if (req.body._id && !single) {
          single = outcome.result;
        }
      }
      return self.apiResponder(req, null, { data: single || {}, results });
    })();
  }
};

