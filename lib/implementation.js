// The wiring between the module and its Rust core: the database connection, the job engine
// and its stop/cancel hooks, and the helpers the API shares (calling a site's `change`,
// handing values to Rust with their BSON types intact).

const BSON = require('bson');
const native = require('./native.js');

module.exports = function(self, options) {

  // Stoppable jobs of this process, by id: the handle `start` returned, whose
  // `options.stop` / `options.cancel` hook the Rust watcher calls when a stop is requested.
  self.liveJobs = new Map();

  // `self.db` stays the site's own driver collection (other modules read it directly, and
  // the routes read jobs through it so their JSON is exactly what 2.x sent). Every write of
  // job state goes through the Rust engine, connected to the same database.
  //
  // Unlike 2.x, this connects the engine too, so an unreachable database is reported here,
  // at start-up, with what to check.

  self.ensureCollection = function(callback) {
    self.db = self.apos.db.collection(self.options.collectionName);
    let connection;
    try {
      connection = self.getConnectionOptions();
    } catch (error) {
      return setImmediate(() => callback(error));
    }
    return native.connect(connection, self.onHaltRequested, self.onEngineLog).then(
      (engine) => {
        self.engine = engine;
        if (self.options.drainOnSignal) {
          self.drainOnSignals([ 'SIGTERM', 'SIGINT' ]);
        }
        return callback(null);
      },
      (error) => callback(error)
    );
  };

  // Where the Rust engine connects: the `uri` option of this module if given, else the
  // connection string the site's own client was opened with (which `apostrophe-db` built from
  // `APOS_MONGODB_URI`, its `uri` option or its host/port/name options), else the same
  // derivation `apostrophe-db` makes. The database is always the site's.

  self.getConnectionOptions = function() {
    const database = self.apos.db && self.apos.db.databaseName;
    const uri = self.options.uri || siteClientUri() || apostropheDbUri();
    if (!uri || !database) {
      throw new Error(
        'apostrophe-jobs-native: could not tell which MongoDB database the site uses. ' +
        'Set the `uri` option of the apostrophe-jobs module (in app.js: ' +
        "modules: { 'apostrophe-jobs': { uri: 'mongodb://host:27017/dbname' } }) or APOS_MONGODB_URI."
      );
    }
    return {
      uri,
      database,
      collection: self.options.collectionName,
      connectTimeoutMs: self.options.connectTimeout,
      flushIntervalMs: self.options.flushInterval,
      watchIntervalMs: self.options.watchInterval,
      finishRetryWindowMs: self.options.finishRetryWindow,
      orphanAfterMs: self.options.orphanAfter,
      keepFailedItems: self.options.keepFailedItems,
      expireAfterSeconds: self.options.expireAfter
    };
  };

  function siteClientUri() {
    const client = self.apos.db && self.apos.db.client;
    return client && client.s && typeof client.s.url === 'string' ? client.s.url : null;
  }

  function apostropheDbUri() {
    if (process.env.APOS_MONGODB_URI) {
      return process.env.APOS_MONGODB_URI;
    }
    const dbOptions = (self.apos.modules['apostrophe-db'] || {}).options || {};
    if (dbOptions.uri) {
      return dbOptions.uri;
    }
    if (dbOptions.db) {
      return null;
    }
    const credentials = dbOptions.user ? `${dbOptions.user}:${dbOptions.password}@` : '';
    return `mongodb://${credentials}${dbOptions.host || '127.0.0.1'}:${dbOptions.port || 27017}/${dbOptions.name || self.apos.shortName}`;
  }

  // Called by the Rust watcher when a stop or cancel was requested for a job of this
  // process: calls the job's hook with the freshly read document, as 2.x's `checkStop` did.
  // The hook's acknowledgement makes Rust write `stopped`/`canceled` (or `failed`).

  self.onHaltRequested = function(jobId, hookName, jobBson) {
    const context = self.liveJobs.get(jobId);
    const hook = context && context.options[hookName];
    if (!hook) {
      return;
    }
    let acknowledged = false;
    const acknowledge = function(err) {
      if (acknowledged) {
        self.apos.utils.warn(`apostrophe-jobs: the ${hookName} hook of job ${jobId} acknowledged twice; the second call is ignored.`);
        return;
      }
      acknowledged = true;
      if (err) {
        self.apos.utils.error(err);
      }
      context.ended = true;
      self.liveJobs.delete(jobId);
      self.engine.acknowledgeHalt(jobId, !!err).catch(self.logEndFailure);
    };
    try {
      hook(self.decodeDocument(jobBson), acknowledge);
    } catch (error) {
      acknowledge(error);
    }
  };

  self.onEngineLog = function(level, message) {
    return level === 'warn' ? self.apos.utils.warn(message) : self.apos.utils.error(message);
  };

  self.logEndFailure = function(error) {
    if (error) {
      self.apos.utils.error(error);
    }
  };

  // Unlike 2.x, stops are picked up by one watcher in Rust for all jobs of the process
  // (one query every 250 ms, whatever the number of jobs), not by a timer per job calling
  // this method. It remains for code that calls it directly: it runs one check for this
  // job now.

  self.checkStop = function(context) {
    if (context.ended || !self.engine) {
      return;
    }
    self.engine.checkStop(context._id).catch(self.logEndFailure);
  };

  // Calls `change(req, id, callback)` once and settles with `{ error, result }`, whether
  // `change` calls back, returns a promise or throws (a throw is an item failure, where 2.x
  // crashed). A second callback is ignored with a warning. With `timeout` (ms), an item
  // that has not finished by then counts as failed and the batch moves on.

  self.callChange = function(req, change, id, timeout) {
    return new Promise(function(resolve) {
      self.callChangeThen(req, change, id, timeout, function(error, result) {
        resolve({ error, result });
      });
    });
  };

  // The same as `callChange`, with the outcome passed to `done(error, result)`, called
  // exactly once, instead of a promise: `run`'s batch loop calls this for every item, and a
  // promise per item was most of what a quick item cost. `done` runs synchronously when
  // `change` calls back synchronously. It must not throw: an exception from it would be
  // taken for a throw of `change` after its callback, which is ignored.

  self.callChangeThen = function(req, change, id, timeout, done) {
    let settled = false;
    let timer = null;
    const callback = function(error, result) {
      if (settled) {
        self.apos.utils.warn(`apostrophe-jobs: the change function called back more than once (or after its timeout) for id ${id}; the later call is ignored.`);
        return;
      }
      settled = true;
      if (timer) {
        clearTimeout(timer);
      }
      done(error, result);
    };
    if (timeout) {
      timer = setTimeout(function() {
        settled || callback(new Error(`apostrophe-jobs: the change function did not finish within ${timeout} ms for id ${id}; the item counts as failed.`));
      }, timeout);
    }
    let returned;
    try {
      returned = change(req, id, callback);
    } catch (error) {
      return settled || callback(error || new Error('apostrophe-jobs: the change function threw a falsy value'));
    }
    if (returned && typeof returned.then === 'function') {
      returned.then(function(result) {
        return settled || callback(null, result);
      }, function(error) {
        if (settled) {
          return self.apos.utils.error(error);
        }
        return callback(error || new Error('apostrophe-jobs: the change function rejected with a falsy value'));
      });
    }
  };

  // Values Rust stores for JavaScript (labels, results, total) travel as BSON made by the
  // `bson` package with the driver's defaults, so each keeps the type the site's driver would
  // have given it: a Date stays a Date, 3 is an Int32, `undefined` becomes null.

  // (The `bson` package drops `undefined` by default; the driver 2.x sites use stores null.)
  self.encodeDocument = function(document) {
    return BSON.serialize(document, { ignoreUndefined: false });
  };

  self.encodeValue = function(value) {
    return BSON.serialize({ value }, { ignoreUndefined: false });
  };

  // And back, for what Rust hands to JavaScript (a job document, gathered results).
  self.decodeDocument = function(bytes) {
    return BSON.deserialize(bytes);
  };

  // A graceful drain, for deploys: takes no new job and no new batch item, lets items in
  // flight finish (at most `timeout` ms, default the `drainTimeout` option or 10 s), writes
  // every pending count and gives every running job of this process a final status (jobs
  // still running at the deadline end `failed` with `interrupted: true`). Resolves
  // `{ interrupted }`, how many jobs had to be cut short. `apos.destroy()` drains too.

  self.drain = function(options) {
    options = options || {};
    if (!self.engine) {
      return Promise.resolve({ interrupted: 0 });
    }
    const timeout = options.timeout !== undefined ? options.timeout : (self.options.drainTimeout || 10000);
    self.draining = true;
    return self.engine.drain(timeout).then((interrupted) => ({ interrupted }));
  };

  // With the `drainOnSignal` option: on SIGTERM or SIGINT, drain, then let the signal do
  // what it would have done without this listener (or what the site's own listeners do).

  self.drainOnSignals = function(signals) {
    const onSignal = function(signal) {
      signals.forEach((name) => process.removeListener(name, onSignal));
      self.drain().finally(() => process.kill(process.pid, signal));
    };
    signals.forEach((name) => process.once(name, onSignal));
  };

  self.addTask('purge', 'Deletes jobs that ended more than --older-than-days=N days ago (default 30).', function(apos, argv, callback) {
    const days = argv['older-than-days'] !== undefined ? Number(argv['older-than-days']) : 30;
    if (!(days >= 0)) {
      return callback(new Error('apostrophe-jobs:purge needs --older-than-days as a number of days, for example --older-than-days=30'));
    }
    return self.purgeJobs({ olderThan: days * 24 * 60 * 60 * 1000 }).then(function(deleted) {
      // eslint-disable-next-line no-console
      console.log(`Deleted ${deleted} job(s) that ended more than ${days} day(s) ago.`);
      return callback(null);
    }, callback);
  });

  // Apostrophe calls this on every module from `apos.destroy()`: drain, then stop the
  // engine's background work.

  self.apostropheDestroy = function(callback) {
    if (!self.engine) {
      return callback(null);
    }
    return self.drain()
      .then(() => self.engine.close(5000))
      .then(() => callback(null), () => callback(null));
  };
};
