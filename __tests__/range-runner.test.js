// The range runner of `run` (lib/range-runner.js) on its own, without Rust or a database:
// the trampoline, the per-item report, halting, concurrency, and how `change` is called.

const { test } = require('node:test');
const assert = require('node:assert/strict');
const { callChange, createRangeRunner } = require('../lib/range-runner.js');

// A runner over `ids` whose items are run by `change` through `callChange`, recording every
// outcome; `mayContinue(index)` answers after each item whether another may start.
function harness({ ids, change, concurrency = 1, mayStart = () => true, mayContinue = () => true }) {
  const outcomes = [];
  const warnings = [];
  const late = [];
  const runRange = createRangeRunner({
    ids,
    concurrency,
    callItem: (id, done) => callChange(change, { body: {} }, id, {
      warn: (message) => warnings.push(message),
      error: (error) => warnings.push(String(error))
    }, done),
    itemFinished: (index, error, result) => {
      outcomes.push({ index, error: error ? error.message : undefined, result });
      return mayContinue(index);
    },
    mayStart,
    late: (index) => late.push(index)
  });
  // (`report` may come before `runRange` returns: every item called back at once.)
  const run = (start, end) => new Promise((resolve) => {
    runRange(start, end, (finished, error) => resolve({ finished, error }));
  });
  return { runRange, run, outcomes, warnings, late };
}

const ids = (n) => Array.from({ length: n }, (_, i) => `id${i}`);

test('20,000 synchronous callbacks run in one frame without overflowing the stack', async () => {
  const { run, outcomes } = harness({ ids: ids(20000), change: (req, id, cb) => cb(null, id) });
  const { finished, error } = await run(0, 20000);
  assert.equal(error, undefined);
  assert.equal(finished, 20000);
  assert.equal(outcomes.length, 20000);
  assert.deepEqual(outcomes[19999], { index: 19999, error: undefined, result: 'id19999' });
});

// A change that calls back after `ms(started)` ms, recording the ids it started and how many
// ran at once.
function timedChange(ms) {
  const seen = { started: [], running: 0, most: 0 };
  seen.change = (req, id, cb) => {
    seen.started.push(id);
    seen.most = Math.max(seen.most, ++seen.running);
    setTimeout(() => {
      seen.running--;
      cb(null, id);
    }, ms(seen.started.length));
  };
  return seen;
}

test('items run one at a time, in order, and a later callback resumes the loop', async () => {
  const seen = timedChange(() => 1);
  const { run, outcomes } = harness({ ids: ids(20), change: seen.change });
  assert.equal((await run(5, 15)).finished, 10);
  assert.deepEqual(seen.started, ids(20).slice(5, 15));
  assert.equal(seen.most, 1);
  assert.deepEqual(outcomes.map((o) => o.index), [ 5, 6, 7, 8, 9, 10, 11, 12, 13, 14 ]);
});

test('a callback called twice counts once and warns', async () => {
  const { run, outcomes, warnings } = harness({
    ids: ids(3),
    change: (req, id, cb) => {
      cb(null, 'first');
      cb(null, 'second');
    }
  });
  assert.equal((await run(0, 3)).finished, 3);
  assert.deepEqual(outcomes.map((o) => o.result), [ 'first', 'first', 'first' ]);
  assert.equal(warnings.length, 3);
  assert.match(warnings[0], /called back more than once .* id id0/);
});

test('a synchronous throw is a failed item, and the batch goes on', async () => {
  const { run, outcomes } = harness({
    ids: ids(4),
    change: (req, id, cb) => {
      if (id === 'id1') {
        throw new Error('boom');
      }
      cb(null, id);
    }
  });
  assert.equal((await run(0, 4)).finished, 4);
  assert.deepEqual(outcomes.map((o) => o.error), [ undefined, 'boom', undefined, undefined ]);
});

test('a promise resolves to a result and a rejection is a failed item', async () => {
  const { run, outcomes } = harness({
    ids: ids(3),
    change: async (req, id) => {
      if (id === 'id2') {
        throw new Error('rejected');
      }
      return { id };
    }
  });
  assert.equal((await run(0, 3)).finished, 3);
  assert.deepEqual(outcomes.map((o) => o.result || o.error), [ { id: 'id0' }, { id: 'id1' }, 'rejected' ]);
});

test('the change function receives the signal as its fourth argument', async () => {
  const controller = new AbortController();
  let seen;
  const runRange = createRangeRunner({
    ids: [ 'a' ],
    callItem: (id, done) => callChange((req, id, cb, signal) => {
      seen = signal;
      cb(null);
    }, {}, id, { signal: controller.signal, warn() {}, error() {} }, done),
    itemFinished: () => true,
    mayStart: () => true,
    late() {}
  });
  await new Promise((resolve) => runRange(0, 1, resolve));
  assert.equal(seen, controller.signal);
});

test('a halt between items lets the item in flight finish and starts no other', async () => {
  const started = [];
  const { run, outcomes } = harness({
    ids: ids(10),
    change: (req, id, cb) => {
      started.push(id);
      setImmediate(() => cb(null, id));
    },
    mayContinue: (index) => index < 3
  });
  assert.equal((await run(0, 10)).finished, 4);
  assert.deepEqual(started, ids(4));
  assert.equal(outcomes.length, 4);
});

test('a range that may not start runs nothing and reports at once', async () => {
  const { run, outcomes } = harness({ ids: ids(5), change: (req, id, cb) => cb(null), mayStart: () => false });
  assert.equal((await run(0, 5)).finished, 0);
  assert.equal(outcomes.length, 0);
});

test('with concurrency, that many items run at once, started in order, and the range waits for all', async () => {
  const seen = timedChange((count) => 1 + (count % 3));
  const { run, outcomes } = harness({ ids: ids(40), change: seen.change, concurrency: 4 });
  assert.equal((await run(0, 40)).finished, 40);
  assert.equal(seen.running, 0, 'every started item finished before the report');
  assert.deepEqual(seen.started, ids(40));
  assert.equal(seen.most, 4);
  assert.equal(outcomes.length, 40);
});

test('an exception while recording an item ends the range with it, after the items in flight', async () => {
  const runRange = createRangeRunner({
    ids: ids(10),
    concurrency: 2,
    callItem: (id, done) => setTimeout(() => done(null, id), 2),
    itemFinished: (index) => {
      if (index === 3) {
        throw new Error('recording failed');
      }
      return true;
    },
    mayStart: () => true,
    late() {}
  });
  const { finished, error } = await new Promise((resolve) => runRange(0, 10, (finished, error) => resolve({ finished, error })));
  assert.equal(error.message, 'recording failed');
  assert.equal(finished, 5, 'items 0-4 had started; 4 was in flight and finished');
});

test('an abandoned range sends late outcomes to `late` and never reports', async () => {
  let release;
  const { runRange, late, outcomes } = harness({
    ids: ids(3),
    change: (req, id, cb) => {
      if (id === 'id1') {
        release = () => cb(null, id);
        return;
      }
      cb(null, id);
    }
  });
  let reported = false;
  const range = runRange(0, 3, () => {
    reported = true;
  });
  range.abandon();
  release();
  assert.deepEqual(late, [ 1 ]);
  assert.equal(outcomes.length, 1, 'only the item that finished before the abandon');
  assert.equal(reported, false);
});

test('a timeout fails an item that never calls back, and its late callback is ignored', async () => {
  let lateCallback;
  const warnings = [];
  const outcome = await new Promise((resolve) => callChange((req, id, cb) => {
    lateCallback = cb;
  }, {}, 'x', { timeout: 20, warn: (m) => warnings.push(m), error() {} }, (error, result) => resolve({ error, result })));
  assert.match(outcome.error.message, /did not finish within 20 ms for id x/);
  lateCallback(null, 'too late');
  assert.equal(warnings.length, 1);
});
