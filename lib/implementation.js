// The wiring between the module and its Rust core: the module's options, the database
// connection, the job engine and its calls into JavaScript (stop/cancel hooks, cut-off jobs,
// the log), and the helpers the API shares (calling a site's `change`, handing values to Rust
// with their BSON types intact).

const bson = require('./bson.js');
const native = require('./native.js').load().binding;
const rangeRunner = require('./range-runner.js');

module.exports = function(self, options) {

  // The jobs this process started and has not ended, by id: `{ context, handle, controller }`
  // with the context `start` handed out (whose `options.stop` / `options.cancel` hook is
  // called when a stop is requested), the Rust engine's handle of the job, and the
  // AbortController behind the signal its work receives.
  self.liveJobs = new Map();

  // Forgets a job this process is done with.
  self.forgetJob = function(job) {
    job.ended = true;
    self.liveJobs.delete(job._id);
  };

  // The module's options, with what each accepts. A value out of range stops the site from
  // starting with a message naming the option, rather than a background task that quietly
  // never runs (a zero interval) or a setting that means something else than intended.
  const MAX_MS = 2147483647;
  const OPTION_RULES = {
    collectionName: { type: 'string' },
    uri: { type: 'uri' },
    requireLogin: { type: 'boolean' },
    ownerOnly: { type: 'boolean' },
    drainOnSignal: { type: 'boolean' },
    orphanAfter: { type: 'integer', min: 1000, max: MAX_MS, off: true, unit: 'ms' },
    drainTimeout: { type: 'integer', min: 1, max: MAX_MS, unit: 'ms' },
    stopGrace: { type: 'integer', min: 1, max: MAX_MS, unit: 'ms' },
    keepFailedItems: { type: 'integer', min: 1, max: 100000, off: true },
    expireAfter: { type: 'integer', min: 1, max: MAX_MS, unit: 's' },
    connectTimeout: { type: 'integer', min: 1, max: MAX_MS, unit: 'ms' },
    flushInterval: { type: 'integer', min: 1, max: 60000, unit: 'ms' },
    watchInterval: { type: 'integer', min: 10, max: 60000, unit: 'ms' },
    finishRetryWindow: { type: 'integer', min: 1, max: MAX_MS, unit: 'ms' }
  };

  self.validateOptions = function() {
    for (const [ name, rule ] of Object.entries(OPTION_RULES)) {
      const value = self.options[name];
      if (value === undefined || (rule.off && value === false)) {
        continue;
      }
      const problem = optionProblem(rule, value);
      if (problem) {
        throw new Error(`apostrophe-jobs: the ${name} option ${problem}, not ${describe(value)}. Fix it in app.js (modules: { 'apostrophe-jobs': { ${name}: … } }) or leave it out for the default.`);
      }
    }
  };

  function optionProblem(rule, value) {
    const off = rule.off ? ', or false to turn it off' : '';
    switch (rule.type) {
      case 'boolean':
        return typeof value === 'boolean' ? null : 'must be true or false';
      case 'string':
        return typeof value === 'string' && value.length > 0 ? null : 'must be a non-empty string';
      case 'uri':
        return typeof value === 'string' && /^mongodb(\+srv)?:\/\/./.test(value) ? null : 'must be a mongodb:// or mongodb+srv:// connection string';
      default:
        return Number.isInteger(value) && value >= rule.min && value <= rule.max
          ? null
          : `must be a whole number from ${rule.min} to ${rule.max}${rule.unit ? ` (${rule.unit})` : ''}${off}`;
    }
  }

  function describe(value) {
    if (typeof value === 'string') {
      return JSON.stringify(value);
    }
    if (value && typeof value === 'object') {
      return Array.isArray(value) ? 'an array' : 'an object';
    }
    return String(value);
  }

  // `self.db` stays the site's own driver collection (other modules read it directly, and
  // the routes read jobs through it so their JSON is exactly what 2.x sent). Every write of
  // job state goes through the Rust engine, connected to the same database.
  //
  // Unlike 2.x, this connects the engine too, so an unreachable database is reported here,
  // at start-up, with what to check.

  self.ensureCollection = function(callback) {
    let connection;
    try {
      self.validateOptions();
      self.db = self.apos.db.collection(self.options.collectionName);
      connection = self.getConnectionOptions();
    } catch (error) {
      return setImmediate(() => callback(error));
    }
    const callbacks = {
      onHalt: self.onHaltRequested,
      onCutOff: self.onJobCutOff,
      onLog: self.onEngineLog
    };
    return native.connect(connection, callbacks).then(
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
      orphanAfterMs: self.options.orphanAfter === false ? undefined : self.options.orphanAfter,
      heartbeats: self.options.orphanAfter !== false,
      stopGraceMs: self.options.stopGrace,
      keepFailedItems: self.options.keepFailedItems === false ? 0 : self.options.keepFailedItems,
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
  // process: aborts the job's signal and calls its hook with the freshly read document, as
  // 2.x's `checkStop` did. The hook's acknowledgement makes Rust write `stopped`/`canceled`
  // (or `failed`). Called from Rust: nothing may be thrown from here.

  self.onHaltRequested = function(jobId, hookName, jobBson) {
    const live = self.liveJobs.get(jobId);
    const hook = live && live.context.options[hookName];
    if (!hook) {
      return;
    }
    live.controller.abort(new Error(`apostrophe-jobs: job ${jobId} was asked to ${hookName === 'cancel' ? 'cancel' : 'stop'}`));
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
      self.forgetJob(live.context);
      live.handle.acknowledgeHalt(!!err).then(function(outcome) {
        if (outcome === 'alreadyGone') {
          self.apos.utils.warn(`apostrophe-jobs: the ${hookName} of job ${jobId} was acknowledged after the job had ended (the stopGrace option allows ${self.options.stopGrace || 10000} ms); nothing was written.`);
        }
      }, self.logEndFailure);
    };
    try {
      hook(self.decodeDocument(jobBson), acknowledge);
    } catch (error) {
      acknowledge(error);
    }
  };

  // Called by Rust when a job of this process ended without its work finishing: another
  // process ended it (it took this one for dead, say after a long freeze), or its work
  // function never acknowledged a stop within `stopGrace`. The work is told through its
  // signal; the Rust side has logged why.

  self.onJobCutOff = function(jobId) {
    const live = self.liveJobs.get(jobId);
    if (!live) {
      return;
    }
    live.controller.abort(new Error(`apostrophe-jobs: job ${jobId} has ended without its work`));
    self.forgetJob(live.context);
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
  // that has not finished by then counts as failed. (`run`'s batches call the same
  // `callChange` of `range-runner.js` without a promise per item.)

  self.callChange = function(req, change, id, timeout) {
    return new Promise(function(resolve) {
      rangeRunner.callChange(change, req, id, {
        timeout,
        warn: self.apos.utils.warn,
        error: self.apos.utils.error
      }, function(error, result) {
        resolve({ error, result });
      });
    });
  };

  // Values Rust stores for JavaScript (labels, results, total) travel as BSON with the site
  // driver's types, so each keeps the type the stock module would have stored: a Date stays
  // a Date, 3 is an Int32, `undefined` becomes null, an ObjectID of an old driver an
  // ObjectId (see `bson.js`).

  self.encodeDocument = bson.encodeDocument;
  self.encodeValue = bson.encodeValue;

  // And back, for what Rust hands to JavaScript (a job document, gathered results).
  self.decodeDocument = bson.decodeDocument;

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
    for (const live of self.liveJobs.values()) {
      live.controller.abort(new Error('apostrophe-jobs: the process is draining before it exits'));
    }
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
