#!/usr/bin/env node
// `npm run demo`: the demo site of demo/ (an Apostrophe 2 site using this package) on
// http://127.0.0.1:3000/, with an admin login printed when it is ready.
//
// Database: with APOS_MONGODB_URI set, that one (name the database in the URI). Otherwise
// the embedded default: SecantusDB, a MongoDB-compatible server that scripts/mongo-server.js
// installs on first use (into a virtualenv, needs python3) and starts for as long as the demo
// runs. Its data lives in ${XDG_CACHE_HOME:-~/.cache}/apostrophe-jobs-native/demo-db, so the
// articles and jobs are still there next time.
//
// PORT and ADDRESS change where the site listens. Ctrl-C (SIGINT) or SIGTERM stops the site
// and the database; a second Ctrl-C stops at once.
//
// The console says what a newcomer needs (where the site is, the login, how to stop) and
// Apostrophe's warnings and errors; its routine start-up lines are left out.

'use strict';

const os = require('os');
const path = require('path');
const { startServer } = require('./mongo-server');
const { startDemoSite, ensureDemoAdmin, seedDemoJobs } = require('../demo/app');

const DB_NAME = 'apostrophe-jobs-demo';
const STOP_DEADLINE_MS = 15000;

const say = (message) => process.stdout.write(`${message}\n`);
const warn = (message) => process.stderr.write(`${message}\n`);

function demoDataDir() {
  const cache = process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
  return path.join(cache, 'apostrophe-jobs-native', 'demo-db');
}

// Apostrophe's own logging, minus what says nothing about the demo: the database
// migrations a new database runs once (two lines each, then a "WARNINGS ABOVE ARE OK" with
// no warning above), its "Listening on" line (the banner says where the site is), and two
// warnings: SecantusDB has no text indexes (the site then
// searches without them), and Apostrophe 2.227's login page posts to
// /modules/apostrophe-areas/editor before it has a CSRF token.
function demoLogger() {
  const quiet = [
    /^(Running|Completed) database migration: /,
    /WARNINGS ABOVE ARE OK/,
    /^Listening on http/,
    /unable to ensure text index/,
    /A request for \/modules\/apostrophe-areas\/editor was rejected/
  ];
  let quietFollowUp = false;
  const emit = (write) => (...args) => {
    const message = require('util').format(...args);
    // The "This warning appears only once" line that follows a silenced warning.
    if (quietFollowUp && /This warning appears only once/.test(message)) {
      quietFollowUp = false;
      return;
    }
    quietFollowUp = quiet.some((re) => re.test(message));
    if (!quietFollowUp) write(message);
  };
  return () => ({
    log: emit(say),
    info: emit(say),
    debug: () => {},
    warn: emit(warn),
    error: emit(warn)
  });
}

let server = null;
let apos = null;
let stopping = false;

async function stop(code) {
  if (stopping) return;
  stopping = true;
  // Whatever happens below, don't hang: the 'exit' hook of mongo-server.js still kills
  // the database server if we leave early.
  setTimeout(() => {
    warn(`Not stopped after ${STOP_DEADLINE_MS / 1000} s; exiting anyway.`);
    process.exit(1);
  }, STOP_DEADLINE_MS).unref();
  if (apos) {
    // A job still running would otherwise go on with a closed database connection.
    await apos.modules.articles.stopWork();
    await new Promise((resolve) => apos.destroy(() => resolve()));
    apos = null;
  }
  if (server) {
    await server.stop();
    server = null;
  }
  say('The demo has stopped.');
  process.exit(code);
}

function onSignal(signal) {
  if (stopping) {
    warn(`${signal} again: stopping now.`);
    process.exit(1);
  }
  say(`\nStopping the demo (${signal})...`);
  stop(0).then(() => {}, (err) => {
    warn(`Stopping failed: ${err.stack || err}`);
    process.exit(1);
  });
}

async function main() {
  // Registered before the database server starts, so mongo-server.js leaves the signals to
  // us (it only acts on them itself when nobody else listens).
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const port = Number(process.env.PORT || 3000);
  const address = process.env.ADDRESS || '127.0.0.1';
  let mongodbUri = process.env.APOS_MONGODB_URI;
  if (mongodbUri) {
    say('Using the database of APOS_MONGODB_URI.');
  } else {
    const dataDir = demoDataDir();
    say(`Starting the embedded database (SecantusDB; data in ${dataDir})...`);
    server = await startServer({
      dataDir,
      // Ctrl-C signals the whole foreground process group: keep the database out of it, so
      // it is still there while the site stops, and stop it ourselves afterwards.
      ownProcessGroup: true,
      onUnexpectedExit: ({ code, signal }) => {
        if (stopping) return;
        warn(`The database server exited unexpectedly (code ${code}, signal ${signal}).`);
        server = null;
        stop(1);
      }
    });
    if (stopping) return;
    mongodbUri = `${server.uri}/${DB_NAME}`;
  }

  say('Starting the site...');
  try {
    apos = await startDemoSite({ mongodbUri, port, address, logger: demoLogger() });
  } catch (err) {
    if (err && err.code === 'EADDRINUSE') {
      err.explanation = `${address}:${port} is already in use. Stop whatever listens there, or choose another port: PORT=3001 npm run demo`;
    }
    throw err;
  }
  if (stopping) return;
  const admin = await ensureDemoAdmin(apos);
  if (stopping) return;
  await seedDemoJobs(apos);
  if (stopping) return;

  const url = `http://${address}:${port}/`;
  say([
    '',
    `The demo is running: ${url}`,
    '',
    `  Log in at ${url}login as ${admin.username} / ${admin.password}.`,
    '  The home page then starts jobs and opens the Articles manager, whose batch',
    '  operations ("Publish Selected"...) run as jobs too, in the progress modal.',
    '  Admin bar → Jobs opens the jobs dashboard: retry failed items, resume a stopped job.',
    '',
    'Press Ctrl-C to stop the demo.',
    ''
  ].join('\n'));
}

main().catch((err) => {
  warn(`The demo could not start: ${(err && (err.explanation || err.stack)) || err}`);
  stop(1);
});
