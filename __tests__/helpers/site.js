'use strict';

// Boots a real Apostrophe 2 site in-process for tests, plus helpers to
// create an admin, insert test pieces and talk to the site over real HTTP
// as a logged-in user.
//
//   const { bootSite, createAdmin, insertArticles } = require('./helpers/site');
//   const site = await bootSite({ uri: server.uri, native: false });
//   await createAdmin(site.apos, { username: 'admin', password: 'pw' });
//   const client = await site.login('admin', 'pw');
//   const res = await client.post('/modules/test-articles/publish', { ids, job: true });
//   await site.stop();

const fs = require('fs');
const { createRequire } = require('module');
const os = require('os');
const path = require('path');
const util = require('util');
const { getFreePort } = require('../../scripts/mongo-server');
const apostrophe = require('./apostrophe.js');

const FIXTURES = path.join(__dirname, '..', 'fixtures');
// native: lib/modules/apostrophe-jobs/index.js re-exports this repository,
// so Apostrophe picks it up exactly as it would in a real project.
const MODULES_NATIVE = path.join(FIXTURES, 'site-native', 'lib', 'modules');
const MODULES_STOCK = path.join(FIXTURES, 'site-stock', 'lib', 'modules');
const VIEWS = path.join(FIXTURES, 'views');
const LOCALES = path.join(os.tmpdir(), 'ajn-test-locales');

// Log lines that are expected in this environment and only add noise.
const NOISE = [
  // SecantusDB has no text indexes; Apostrophe carries on without search.
  /unable to ensure text index/
];
const MAX_KEPT_LOGS = 2000;

let bootCounter = 0;

// A unique, valid MongoDB database name (no dots, <= 63 bytes), also used as
// Apostrophe's shortName, which prefixes the session and CSRF cookie names.
function uniqueShortName() {
  bootCounter += 1;
  const rand = Math.random().toString(36).slice(2, 8);
  return `ajn-test-${process.pid}-${bootCounter}-${rand}`;
}

// Replace whatever database path the URI has with dbName, keeping options.
function uriWithDb(uri, dbName) {
  const match = /^(mongodb(?:\+srv)?:\/\/[^/?]+)(?:\/[^?]*)?(\?.*)?$/.exec(uri);
  if (!match) {
    throw new Error(`bootSite: cannot parse MongoDB URI ${uri}`);
  }
  return `${match[1]}/${dbName}${match[2] || ''}`;
}

function isPlainObject(value) {
  return value !== null && typeof value === 'object' && Object.getPrototypeOf(value) === Object.prototype;
}

// Deep merge of plain objects; arrays, functions and class instances are
// taken as-is from `extra`, like lodash's merge would for our purposes.
function mergePlain(base, extra) {
  const out = { ...base };
  for (const [key, value] of Object.entries(extra || {})) {
    out[key] = isPlainObject(value) && isPlainObject(out[key]) ? mergePlain(out[key], value) : value;
  }
  return out;
}

// Apostrophe's `apostrophe-utils` logger option: keep every line in `logs`
// (tests can assert on them), print only errors unless verbose.
function makeLogger(logs, verbose) {
  const emit = (level) => (...args) => {
    const message = util.format(...args);
    logs.push({ level, message });
    if (logs.length > MAX_KEPT_LOGS) logs.splice(0, logs.length - MAX_KEPT_LOGS);
    if (NOISE.some((re) => re.test(message))) return;
    if (verbose || level === 'error') {
      process.stderr.write(`[apos ${level}] ${message}\n`);
    }
  };
  return () => ({
    log: emit('log'),
    info: emit('info'),
    debug: emit('debug'),
    warn: emit('warn'),
    error: emit('error')
  });
}

// Short server selection timeout: if the server is already gone, give up
// quickly rather than hang a test's after() hook for 30 s.
async function dropDb(dbUri) {
  const { MongoClient } = require('mongodb');
  const client = new MongoClient(dbUri, { serverSelectionTimeoutMS: 3000 });
  try {
    await client.db().dropDatabase();
  } finally {
    await client.close().catch(() => {});
  }
}

function destroyApos(apos) {
  return new Promise((resolve, reject) => {
    apos.destroy((err) => (err ? reject(err) : resolve()));
  });
}

/**
 * Boot a real Apostrophe 2 site listening on 127.0.0.1.
 *
 * @param {object} opts
 * @param {string} opts.uri        MongoDB URI (database path is replaced)
 * @param {number} [opts.port=0]   0 picks a free port
 * @param {boolean} [opts.native=true] use this repository's apostrophe-jobs
 * @param {object} [opts.modules]  extra module config, deep-merged over ours
 * @param {string} [opts.shortName] also the database name; unique by default
 * @param {string} [opts.modulesDir] override the project modules folder
 * @param {string} [opts.projectDir] a site project of its own: its node_modules provides
 *                                 apostrophe (and this package), its lib/modules the modules
 * @param {boolean} [opts.verbose] print all Apostrophe log lines
 * @param {object} [opts.options]  extra top-level Apostrophe options
 */
async function bootSite({
  uri,
  port = 0,
  native = true,
  modules = {},
  shortName,
  modulesDir,
  projectDir,
  verbose = false,
  options = {}
} = {}) {
  if (!uri) throw new Error('bootSite: uri is required');
  if (process.env.APOS_MONGODB_URI) {
    // apostrophe-db would silently prefer it over our uri.
    throw new Error('bootSite: unset APOS_MONGODB_URI, it overrides the test database');
  }
  // A database we named ourselves is ours to drop on stop().
  const ownsDb = !shortName;
  shortName = shortName || uniqueShortName();
  const dbUri = uriWithDb(uri, shortName);
  if (!port) port = await getFreePort();
  // Apostrophe writes public/ and data/ under rootDir at boot (asset
  // symlinks, temp files). A temp dir keeps that out of the repository and
  // keeps two sites in one process from sharing it.
  const rootDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ajn-site-'));
  const logs = [];

  const ourModules = {
    'apostrophe-utils': { logger: makeLogger(logs, verbose) },
    'apostrophe-db': { uri: dbUri },
    'apostrophe-express': {
      // force*: ignore PORT/ADDRESS env vars and data/port files.
      forcePort: port,
      forceAddress: '127.0.0.1',
      session: { secret: `${shortName}-secret` }
    },
    // Explicit so APOS_MINIFY in the environment can't make boot slow. In
    // dev mode LESS is compiled lazily per request, so boot does no asset
    // building at all.
    'apostrophe-assets': { minify: false },
    // The i18n package is one per process: it writes new strings to the locales folder of
    // the site booted last, which would be gone once that site stops. Share one that stays.
    'apostrophe-i18n': { localesDir: LOCALES },
    // Shared fallback views (the home page login redirects to), so the two
    // fixture roots need not duplicate templates.
    'apostrophe-templates': { viewsFolderFallback: VIEWS },
    'test-articles': {}
  };

  // Kept outside the promise so a boot that fails after the database
  // connection opened can still be destroyed (no leaked handles).
  let instance;
  let apos;
  // `root` anchors moog-require's npm lookups: walking up from here reaches this
  // repository's package.json, which lists apostrophe (helpers/apostrophe.js re-roots it for
  // another release); a project's app.js reaches the project's own Apostrophe.
  const appFile = projectDir && path.join(projectDir, 'app.js');
  const create = projectDir
    ? (options) => createRequire(appFile)('apostrophe')({ ...options, root: { filename: appFile, require: createRequire(appFile) } })
    : (options) => apostrophe.create({ root: module, ...options });
  try {
    apos = await new Promise((resolve, reject) => {
      instance = create(mergePlain({
        rootDir,
        modulesSubdir: modulesDir || (projectDir ? path.join(projectDir, 'lib', 'modules')
          : native ? MODULES_NATIVE : MODULES_STOCK),
        shortName,
        // Never read the test runner's command line as an Apostrophe task.
        argv: { _: [] },
        modules: mergePlain(ourModules, modules),
        initFailed: reject,
        afterListen: (err) => (err ? reject(err) : resolve(instance))
      }, options));
    });
  } catch (err) {
    // A failure while defining modules returns before `instance` exists.
    if (instance && instance.destroy) {
      await destroyApos(instance).catch(() => {});
    }
    fs.rmSync(rootDir, { recursive: true, force: true });
    const tail = logs.slice(-20).map((l) => `[${l.level}] ${l.message}`).join('\n');
    const e = err instanceof Error ? err : new Error(String(err));
    e.message = `bootSite failed: ${e.message}${tail ? `\n--- last Apostrophe log lines ---\n${tail}` : ''}`;
    throw e;
  }

  const baseUrl = `http://127.0.0.1:${port}`;
  let stopped = false;

  return {
    apos,
    baseUrl,
    port,
    shortName,
    dbUri,
    rootDir,
    logs,
    csrfCookieName: apos.csrfCookieName,
    // dropDatabase defaults to true only for the unique per-boot database,
    // never for one named by the caller (possibly shared by several sites).
    async stop({ dropDatabase = ownsDb } = {}) {
      if (stopped) return;
      stopped = true;
      await destroyApos(apos);
      if (dropDatabase) {
        // After destroy, so nothing flushed during shutdown (e.g. pending
        // job writes) recreates the database; hence a fresh connection.
        await dropDb(dbUri).catch((err) => {
          process.stderr.write(`[site] dropDatabase ${shortName} failed: ${err.message}\n`);
        });
      }
      fs.rmSync(rootDir, { recursive: true, force: true });
    },
    login(username, password) {
      return login(baseUrl, username, password, { csrfCookieName: apos.csrfCookieName });
    }
  };
}

// ---------------------------------------------------------------------------
// HTTP: a tiny cookie jar over Node's global fetch.

class CookieJar {
  constructor() {
    this.cookies = new Map();
  }

  // Single-host test jar: Path/Domain are ignored, expiry is honoured only
  // as far as deletion goes (Max-Age<=0 or an Expires in the past).
  store(response) {
    for (const line of response.headers.getSetCookie()) {
      const [pair, ...attrs] = line.split(';');
      const eq = pair.indexOf('=');
      if (eq < 0) continue;
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      let expired = false;
      for (const attr of attrs) {
        const [k, v = ''] = attr.split('=');
        const key = k.trim().toLowerCase();
        if (key === 'max-age' && Number(v) <= 0) expired = true;
        if (key === 'expires' && Date.parse(v) <= Date.now()) expired = true;
      }
      if (expired) this.cookies.delete(name);
      else this.cookies.set(name, value);
    }
  }

  get(name) {
    const raw = this.cookies.get(name);
    // Express URI-encodes cookie values; the header must carry the decoded
    // value to match what cookie-parser hands the CSRF check.
    return raw === undefined ? undefined : decodeURIComponent(raw);
  }

  header() {
    return [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ');
  }
}

/**
 * A minimal HTTP client bound to one site and one cookie jar. Unsafe
 * requests carry Apostrophe 2's CSRF header: `X-XSRF-TOKEN` must equal the
 * `<shortName>.csrf` cookie (not `XSRF-TOKEN`, which is only the session key).
 */
function createClient(baseUrl, { csrfCookieName, jar = new CookieJar(), timeoutMs = 30000 } = {}) {
  async function request(method, urlPath, body, { headers = {}, redirect = 'manual', form = false } = {}) {
    const h = { accept: 'application/json, text/html;q=0.9, */*;q=0.1', ...headers };
    const cookie = jar.header();
    if (cookie) h.cookie = cookie;
    // A caller-supplied header wins, so tests can send a wrong token.
    if (!['GET', 'HEAD'].includes(method) && csrfCookieName && jar.get(csrfCookieName) && h['x-xsrf-token'] === undefined) {
      h['x-xsrf-token'] = jar.get(csrfCookieName);
    }
    let payload;
    if (body !== undefined) {
      if (form) {
        h['content-type'] = 'application/x-www-form-urlencoded';
        payload = new URLSearchParams(body).toString();
      } else {
        h['content-type'] = 'application/json';
        payload = JSON.stringify(body);
      }
    }
    const res = await fetch(new URL(urlPath, baseUrl), {
      method,
      headers: h,
      body: payload,
      redirect,
      signal: AbortSignal.timeout(timeoutMs)
    });
    jar.store(res);
    const text = await res.text();
    let parsed = text;
    if ((res.headers.get('content-type') || '').includes('application/json')) {
      try { parsed = JSON.parse(text); } catch (e) { /* leave as text */ }
    }
    return { status: res.status, headers: res.headers, body: parsed };
  }

  return {
    jar,
    request,
    get: (urlPath, opts) => request('GET', urlPath, undefined, opts),
    post: (urlPath, body, opts) => request('POST', urlPath, body === undefined ? {} : body, opts)
  };
}

/**
 * Log in through the real form route and return a client holding the
 * session and CSRF cookies. `csrfCookieName` is `apos.csrfCookieName`,
 * i.e. `<shortName>.csrf` by default.
 */
async function login(baseUrl, username, password, { csrfCookieName } = {}) {
  if (!csrfCookieName) throw new Error('login: csrfCookieName is required (apos.csrfCookieName)');
  const client = createClient(baseUrl, { csrfCookieName });
  // POST /login is exempt from CSRF; it always answers with a redirect,
  // to /login?...error=1 on failure.
  const res = await client.post('/login', { username, password }, { form: true });
  const location = res.headers.get('location') || '';
  if (res.status !== 302 || /[?&]error=/.test(location) || location.startsWith('/login')) {
    throw new Error(`login as ${username} failed: HTTP ${res.status} -> ${decodeURIComponent(location) || '(no redirect)'}`);
  }
  // Passport regenerates the session at login, so the CSRF token is set
  // by the next safe request, as a browser following the redirect does.
  // (GET /login itself is a CSRF exception and would not set it.)
  await client.get(location);
  if (!client.jar.get(csrfCookieName)) {
    throw new Error(`login as ${username}: no ${csrfCookieName} cookie after GET ${location}`);
  }
  return client;
}

// ---------------------------------------------------------------------------
// Data helpers.

// Apostrophe 2 hashes passwords with `credentials` (`credential` in older 2.x), whose PBKDF2
// iteration count doubles every two years since 2000: in 2026 that is ~11 million rounds,
// about 10 s per hash on a test machine, and the same again for every login. The stored hash
// records its own iteration count, so a hash made here with few rounds is verified by the
// unchanged login code in milliseconds.
const FAST_HASH_ITERATIONS = 1000;

// In the format of the site's release: `credential`'s (PBKDF2-SHA1, the base64 salt string
// used as is) when `apostrophe-users` still holds a `credential` instance (`pw`), else
// `credentials@3`'s.
function fastPasswordHash(apos, password) {
  const crypto = require('crypto');
  const keyLength = 64;
  const salt = crypto.randomBytes(keyLength).toString('base64');
  if (apos.users.pw) {
    return JSON.stringify({
      hash: crypto.pbkdf2Sync(password, salt, FAST_HASH_ITERATIONS, keyLength, 'sha1').toString('base64'),
      salt,
      keyLength,
      hashMethod: 'pbkdf2',
      iterations: FAST_HASH_ITERATIONS
    });
  }
  const hash = crypto.pbkdf2Sync(password, Buffer.from(salt, 'base64'), FAST_HASH_ITERATIONS, keyLength, 'sha512');
  return JSON.stringify({
    hashMethod: 'pbkdf2-sha512',
    salt,
    hash: hash.toString('base64'),
    keyLength,
    iterations: FAST_HASH_ITERATIONS,
    // Tells apostrophe-users the salt is already base64 (credentials@3).
    credentials3: true
  });
}

/**
 * How many documents of a site's collection match `query`. The MongoDB 2.x driver of older
 * Apostrophe 2 releases has `count` only; the later drivers deprecate it for `countDocuments`.
 */
function countDocuments(collection, query) {
  return typeof collection.countDocuments === 'function' ? collection.countDocuments(query) : collection.count(query);
}

/**
 * Create a user in a group with these permissions (creating the group if needed), the way
 * Apostrophe 2 grants rights. Returns the user doc. `fastHash: false` goes through
 * Apostrophe's own (very slow) hashing.
 */
async function createUser(apos, { username, password, permissions = [], groupTitle = permissions.join(' ') || 'guests', email, fastHash = true }) {
  const req = apos.tasks.getReq();
  let group = await apos.groups.find(req, { title: groupTitle }).joins(false).toObject();
  if (!group) {
    group = await apos.groups.insert(req, { title: groupTitle, permissions });
  }
  const user = await apos.users.insert(req, {
    username,
    // Without a password here Apostrophe skips hashing; we store our own.
    password: fastHash ? undefined : password,
    title: username,
    firstName: username,
    email: email || `${username}@example.test`,
    groupIds: [group._id]
  });
  if (fastHash) {
    await apos.users.safe.updateOne({ _id: user._id }, { $set: { passwordHash: fastPasswordHash(apos, password) } });
  }
  return user;
}

/** An admin: a user in the `admin` group, which has the admin permission. */
async function createAdmin(apos, { username = 'admin', password = 'admin-password', email, fastHash = true } = {}) {
  return createUser(apos, { username, password, email, fastHash, permissions: [ 'admin' ], groupTitle: 'admin' });
}

/**
 * Insert `n` test-article pieces. Up to `bulkAbove` (default 200) they go
 * through the module API so every lifecycle hook runs; beyond that the
 * first one is inserted normally and the rest are cloned from it with a
 * single insertMany, which is orders of magnitude faster.
 * Returns the inserted docs (in order).
 */
async function insertArticles(apos, n, { published = false, prefix = 'Article', bulkAbove = 200 } = {}) {
  const manager = apos.modules['test-articles'];
  const req = apos.tasks.getReq();
  const stamp = Date.now().toString(36);
  const title = (i) => `${prefix} ${stamp} ${i + 1}`;
  const docs = [];
  const viaApi = n <= bulkAbove ? n : 1;
  for (let i = 0; i < viaApi; i++) {
    docs.push(await manager.insert(req, { title: title(i), published }));
  }
  if (n > viaApi) {
    const template = docs[0];
    const clones = [];
    for (let i = viaApi; i < n; i++) {
      const t = title(i);
      const slug = apos.utils.slugify(t);
      clones.push({
        ...template,
        _id: apos.utils.generateId(),
        title: t,
        slug,
        titleSortified: apos.utils.sortify(t),
        // Search fields are derived from the title; keep them consistent.
        highSearchText: apos.utils.sortify(t),
        highSearchWords: apos.utils.sortify(t).split(/\s+/),
        lowSearchText: apos.utils.sortify(t),
        searchSummary: '',
        createdAt: new Date(),
        updatedAt: new Date()
      });
    }
    await apos.docs.db.insertMany(clones);
    docs.push(...clones);
  }
  return docs;
}

module.exports = {
  bootSite,
  login,
  createClient,
  CookieJar,
  createAdmin,
  createUser,
  insertArticles,
  countDocuments,
  uriWithDb,
  MODULES_NATIVE,
  MODULES_STOCK,
  VIEWS
};
