// The JavaScript half of `run`'s batch loop. The Rust core decides which range of items runs
// next (ranges are sized by the time their items take) and when no new item may start; this
// file runs a range: it calls the site's `change` for each id, at most `concurrency` at once,
// starting them in order, and reports each item's outcome as it finishes.
//
// Two things make it more than a `for` loop:
// * A `change` that calls back synchronously must not nest a call for the next item inside
//   its callback: 20,000 such items would overflow the stack. The loop is a trampoline: a
//   callback that arrives while the loop is starting items only records its outcome, and the
//   loop goes on in the same frame. A callback that arrives later resumes the loop, as 2.x's
//   `async.eachSeries` did.
// * Before each item it asks whether another may start (a stop, a drain, a job that is no
//   longer this process's), so stops are as prompt as with one item per range.

'use strict';

// Calls `change(req, id, callback, signal)` once and passes its outcome to `done(error,
// result)`, exactly once, whether `change` calls back, returns a promise or throws (a throw
// is an item failure, where 2.x crashed). `done` runs synchronously when `change` calls back
// synchronously. A second callback is ignored with a warning. With `timeout` (ms), an item
// that has not finished by then counts as failed and the batch moves on.
//
// `options`: `{ timeout, signal, warn(message), error(error) }`.
function callChange(change, req, id, options, done) {
  let settled = false;
  let timer = null;
  const callback = function(error, result) {
    if (settled) {
      options.warn(`apostrophe-jobs: the change function called back more than once (or after its timeout) for id ${id}; the later call is ignored.`);
      return;
    }
    settled = true;
    if (timer) {
      clearTimeout(timer);
    }
    done(error, result);
  };
  if (options.timeout) {
    timer = setTimeout(function() {
      settled || callback(new Error(`apostrophe-jobs: the change function did not finish within ${options.timeout} ms for id ${id}; the item counts as failed.`));
    }, options.timeout);
  }
  let returned;
  try {
    returned = change(req, id, callback, options.signal);
  } catch (error) {
    return settled || callback(error || new Error('apostrophe-jobs: the change function threw a falsy value'));
  }
  if (returned && typeof returned.then === 'function') {
    returned.then(function(result) {
      return settled || callback(null, result);
    }, function(error) {
      if (settled) {
        return options.error(error);
      }
      return callback(error || new Error('apostrophe-jobs: the change function rejected with a falsy value'));
    });
  }
}

// Makes the function that runs one range of a batch:
//
//     const runRange = createRangeRunner({ ids, concurrency, callItem, itemFinished, mayStart, late });
//     const range = runRange(start, end, report);
//
// * `callItem(id, done)`: runs one item and calls `done(error, result)` once (see `callChange`).
// * `itemFinished(index, error, result)`: records an item's outcome; returns whether another
//   item may start.
// * `mayStart()`: whether the range's first items may start.
// * `late(index)`: an item of an abandoned range finished; its outcome is not recorded.
// * `report(finished, error)`: called once, when every item the range started has finished:
//   how many ran, and the exception if the loop itself failed (an `itemFinished` that threw).
//
// `range.abandon()` gives up on the items still running (after a stop, when they outlive the
// stop grace): their outcomes go to `late`, and `report` is not called.
function createRangeRunner({ ids, concurrency = 1, callItem, itemFinished, mayStart, late }) {
  return function runRange(start, end, report) {
    let next = start;
    let running = 0;
    let allowed = true;
    let starting = false;
    let done = false;
    let abandoned = false;
    let failure;

    const settleOnceIdle = function() {
      if (!done && running === 0 && (!allowed || next >= end)) {
        done = true;
        report(next - start, failure);
      }
    };

    // Starts items while it may; a synchronous callback only records its outcome meanwhile.
    const startItems = function() {
      if (starting || done) {
        return;
      }
      starting = true;
      while (allowed && running < concurrency && next < end) {
        const index = next++;
        running++;
        try {
          callItem(ids[index], (error, result) => finished(index, error, result));
        } catch (error) {
          // Only a bug of the caller's `callItem` lands here (`callChange` never throws).
          running--;
          fail(error);
        }
      }
      starting = false;
      settleOnceIdle();
    };

    const fail = function(error) {
      failure = failure || error;
      allowed = false;
    };

    const finished = function(index, error, result) {
      if (abandoned) {
        return late(index);
      }
      if (done) {
        return;
      }
      running--;
      try {
        allowed = itemFinished(index, error, result) && allowed;
      } catch (exception) {
        fail(exception);
      }
      startItems();
    };

    try {
      allowed = mayStart();
    } catch (error) {
      fail(error);
    }
    startItems();
    return {
      abandon() {
        abandoned = true;
        done = true;
      }
    };
  };
}

module.exports = { callChange, createRangeRunner };
