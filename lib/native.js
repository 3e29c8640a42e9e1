// Loads the compiled Rust core (`index.node`, built by scripts/build.js when the package is
// installed). Its only job is to turn a missing or broken build into a message that says
// what to do.

'use strict';

const path = require('path');

const addonPath = path.join(__dirname, '..', 'index.node');

function load() {
  try {
    return require(addonPath);
  } catch (error) {
    const missing = error.code === 'MODULE_NOT_FOUND' && String(error.message).includes(addonPath);
    const cause = missing
      ? `the native addon ${addonPath} is missing: it is built from source when the package is installed.`
      : `the native addon ${addonPath} could not be loaded (${error.message}).`;
    const wrapped = new Error(
      `apostrophe-jobs-native: ${cause}\n` +
      'Run `npm rebuild apostrophe-jobs-native` in your project (it needs cargo: https://rustup.rs) ' +
      'and read its output. With npm 11, install scripts must be approved: see "Install" in the ' +
      'package README.'
    );
    wrapped.cause = error;
    throw wrapped;
  }
}

/** @type {import('../binding')} */
module.exports = load();
