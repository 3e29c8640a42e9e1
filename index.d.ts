// Types for apostrophe-jobs-native: the module definition a site re-exports from
// `lib/modules/apostrophe-jobs/index.js`, and the methods it puts on the module (`self`),
// reachable as `apos.modules['apostrophe-jobs']`.

/** The Express request Apostrophe hands to routes (only what this module reads). */
export interface Request {
  body?: any;
  res?: any;
  [key: string]: any;
}

/** The handle `start` calls back with; pass it to `good`, `bad`, `setTotal` and `end`. */
export interface JobHandle {
  /** The job id (32 hexadecimal digits), also the `_id` of its `aposJobs` document. */
  _id: string;
  /** The options given to `start`. */
  options: StartOptions;
  /** Set to `true` by `end` and once a stop/cancel hook has acknowledged. */
  ended?: boolean;
}

/** Texts of the progress modal; every key is optional. */
export interface JobLabels {
  title?: string;
  instructions?: string;
  running?: string;
  completed?: string;
  failed?: string;
  canceled?: string;
  stopped?: string;
  canceling?: string;
  stopping?: string;
  good?: string;
  bad?: string;
  [key: string]: unknown;
}

/** The job document as stored in `aposJobs` and as the `progress` route returns it. */
export interface JobDocument {
  _id: string;
  good: number;
  bad: number;
  processed: number;
  status: 'running' | 'completed' | 'failed' | 'stopped' | 'canceled';
  ended: boolean;
  canceling: boolean;
  labels: JobLabels;
  when: Date;
  canCancel: boolean;
  canStop: boolean;
  total?: unknown;
  results?: unknown;
  /** Additive: the user who started the job (run, runNonBatch, or start's `userId`). */
  userId?: string;
  /** Additive: the engine (process) running the job, and its last heartbeat. */
  workerId?: string;
  heartbeatAt?: Date;
  /** Additive: the first failed items of a batch, `{ id, message }`. */
  failedItems?: Array<{ id: unknown; message: string }>;
  /** Additive: when the job ended (the database server's clock). */
  endedAt?: Date;
  /**
   * Additive: the job was cut short (its process died, froze past `orphanAfter` or drained,
   * or its work function never acknowledged a stop within `stopGrace`). Always `failed`.
   */
  interrupted?: boolean;
  /** Additive: the process that ran the job. */
  process?: { hostname: string; pid: number };
  /**
   * Additive, on a batch `run` started from a route: what the dashboard posts again to retry
   * failed items or resume unfinished ones. Left out of the `progress` reply.
   */
  rerun?: RerunRecord;
  /**
   * Additive, with `rerun.ids`: bitmaps of the items that finished and that failed (bit i,
   * `byte[i >> 3] & (1 << (i & 7))`, stands for `rerun.ids[i]`), written with the counts.
   * Left out of the `progress` reply.
   */
  itemsFinished?: Uint8Array | { buffer: Uint8Array };
  itemsFailed?: Uint8Array | { buffer: Uint8Array };
  /** Additive, on a job started by a retry: the job it retries and which of its items. */
  retryOf?: { jobId: string; items: 'failed' | 'unfinished' };
}

/** How `run` records a batch for a retry from the dashboard. */
export type RerunRecord =
  | {
      /** The route `run` was called from (`req.originalUrl`, a POST). */
      route: string;
      /** JSON of the request body without `ids`, `_id` and `job` (at most 4 KB). */
      body: string;
      /** The batch's ids, in order (at most 1 MB of JSON). */
      ids: string[];
    }
  | {
      route: string;
      /** Why the job cannot be retried (its body or its ids were too large to record). */
      unavailable: string;
    };

/** The module's options (`modules: { 'apostrophe-jobs': { … } }` in app.js), all optional. */
export interface JobsOptions {
  /** The jobs collection. Defaults to `aposJobs`. */
  collectionName?: string;
  /** Where the Rust engine connects; defaults to the connection string the site used. */
  uri?: string;
  /** Routes refuse anonymous users. Defaults to true. */
  requireLogin?: boolean;
  /** A job with a `userId` is visible to that user and admins only. Defaults to false. */
  ownerOnly?: boolean;
  /** Ms a job's process may stay silent before another process ends the job (1000 or more); `false` turns heartbeats off. Defaults to 30000. */
  orphanAfter?: number | false;
  /** Ms items in flight (or a work function) may take to stop after a Stop. Defaults to 10000. */
  stopGrace?: number;
  /** Drain on SIGTERM/SIGINT. Defaults to false. */
  drainOnSignal?: boolean;
  /** Ms a drain waits for running jobs. Defaults to 10000. */
  drainTimeout?: number;
  /** Failed items kept per job (1 to 100000), or `false` for none. Defaults to 100. */
  keepFailedItems?: number | false;
  /** Seconds after `endedAt` when MongoDB deletes an ended job. Defaults to never. */
  expireAfter?: number;
  /** Ms the start-up connection may take. Defaults to 10000. */
  connectTimeout?: number;
  /** Ms between early count writes, at most (1 to 60000). Defaults to 100. */
  flushInterval?: number;
  /** Ms between stop checks (10 to 60000). Defaults to 250. */
  watchInterval?: number;
  /** Ms a job's final write is retried while MongoDB is unreachable. Defaults to 60000. */
  finishRetryWindow?: number;
}

/** Calls back once the hook's work has stopped (and, for cancel, been undone). */
export type HaltAcknowledgement = (err?: unknown) => void;

export interface StartOptions {
  labels?: JobLabels;
  /** Recorded as the job's `userId` (for the `ownerOnly` option). */
  userId?: string;
  /** Recorded as the job's `rerun` (`run` passes it; see the dashboard). */
  rerun?: RerunRecord;
  /** Recorded as the job's `retryOf`. */
  retryOf?: { jobId: string; items: 'failed' | 'unfinished' };
  /** Makes the job cancelable: undo everything, then acknowledge. */
  cancel?: ((job: JobDocument, acknowledge: HaltAcknowledgement) => void) | null;
  /** Makes the job stoppable: stop taking new work, then acknowledge. */
  stop?: ((job: JobDocument, acknowledge: HaltAcknowledgement) => void) | null;
  [key: string]: unknown;
}

export interface RunOptions {
  labels?: JobLabels;
  /** How many items run at once, started in order. Defaults to 1 (2.x order). */
  concurrency?: number;
  /** Milliseconds after which an unfinished item counts as failed. Off by default. */
  timeout?: number;
  [key: string]: unknown;
}

export interface RunNonBatchOptions {
  labels?: JobLabels;
  canStop?: boolean;
  canCancel?: boolean;
  [key: string]: unknown;
}

/**
 * Performs the change on one id; calls back (or resolves) with an optional result. `signal`
 * aborts when the job is stopped, the process drains, or the job is no longer this
 * process's; an item still running `stopGrace` ms after a Stop is abandoned.
 */
export type ChangeFunction = (
  req: Request,
  id: any,
  callback: (err?: unknown, result?: unknown) => void,
  signal: AbortSignal
) => void | PromiseLike<unknown>;

export interface Reporting {
  /** Counts n good items (0 counts as 1, as in 2.x). */
  good(n?: number): void;
  /** Counts n bad items (0 counts as 1, as in 2.x). */
  bad(n?: number): void;
  setTotal(n: number): void;
  setResults(results: unknown): void;
  /** `false`, or the function to call instead of the callback once stopped or undone. */
  isCanceling(): false | HaltAcknowledgement;
  /**
   * Aborts when a Stop or Cancel is requested (as `isCanceling` turns truthy), when the
   * process drains, or when the job is no longer this process's. Work that has not
   * acknowledged a Stop within `stopGrace` has its job ended `failed`, `interrupted`.
   */
  signal: AbortSignal;
}

export type WorkFunction = (
  req: Request,
  reporting: Reporting,
  callback: (err?: unknown) => void
) => void | PromiseLike<unknown>;

/** The methods of `apos.modules['apostrophe-jobs']`. */
export interface JobsModule {
  /** The site's own driver collection for `aposJobs`. */
  db: any;
  options: JobsOptions;
  run(req: Request, change: ChangeFunction, options?: RunOptions): void;
  runNonBatch(req: Request, doTheWork: WorkFunction, options?: RunNonBatchOptions): void;
  start(options: StartOptions, callback: (err: Error | null, job?: JobHandle) => void): void;
  good(job: { _id: string }, n?: number): void;
  bad(job: { _id: string }, n?: number): void;
  setTotal(job: { _id: string }, total: unknown): void;
  end(job: JobHandle, success: unknown, callback: (err: Error | null) => void): void;
  end(job: JobHandle, success: unknown, results: unknown, callback: (err: Error | null) => void): void;
  end(job: JobHandle, success: unknown, results?: unknown): Promise<void>;
  checkStop(context: JobHandle): void;
  ensureCollection(callback: (err: Error | null) => void): void;
  addRoutes(): void;
  pushAssets(): void;
  /** `((processed / total) * 100).toFixed(2)`, as 2.x computes it. */
  percentage(processed: unknown, total: unknown): string;
  /**
   * Starts a new job (replying like `run`) over the failed items of job `jobId`: all of
   * them when the job recorded its items for the dashboard, else its `failedItems`.
   */
  retryFailed(req: Request, jobId: string, change: ChangeFunction, options?: RunOptions): void;
  /** Takes no new job or item, lets items in flight finish, ends the rest as interrupted. */
  drain(options?: { timeout?: number }): Promise<{ interrupted: number }>;
  /** The newest jobs first; `olderThan` in ms, by `when`. */
  listJobs(options?: { ended?: boolean; olderThan?: number; limit?: number }): Promise<JobDocument[]>;
  /**
   * Deletes jobs that ended more than `olderThan` ms ago, or the job `_id` if it has ended;
   * resolves how many.
   */
  purgeJobs(options: { olderThan: number } | { _id: string }): Promise<number>;
  /**
   * Who may use the jobs dashboard: `null` for nobody (anonymous, or not an admin without
   * `ownerOnly`), else whether the user sees every user's jobs.
   */
  dashboardAccess(req: Request): null | { everyone: boolean };
  /** The items a retry of an ended job would run (`ledger`: at least its `rerun` and bitmaps). */
  rerunItems(ledger: Partial<JobDocument>, items: 'failed' | 'unfinished'): { ids: string[] } | { unavailable: string };
  /** Whether the user of `req` may see `job` (the `ownerOnly` option). */
  canAccessJob(req: Request, job: JobDocument): boolean;
  /** Throws, naming the option and what it accepts, when an option is out of range. */
  validateOptions(): void;
}

/** The Apostrophe 2 module definition (no `extend`: an implicit subclass of the core module). */
declare const definition: {
  collectionName: string;
  construct(self: any, options: Record<string, unknown>): void;
};

export = definition;
