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
  /** Additive: when the job ended. */
  endedAt?: Date;
  /** Additive: the job was cut short (its process died or drained). */
  interrupted?: boolean;
}

/** Calls back once the hook's work has stopped (and, for cancel, been undone). */
export type HaltAcknowledgement = (err?: unknown) => void;

export interface StartOptions {
  labels?: JobLabels;
  /** Recorded as the job's `userId` (for the `ownerOnly` option). */
  userId?: string;
  /** Makes the job cancelable: undo everything, then acknowledge. */
  cancel?: ((job: JobDocument, acknowledge: HaltAcknowledgement) => void) | null;
  /** Makes the job stoppable: stop taking new work, then acknowledge. */
  stop?: ((job: JobDocument, acknowledge: HaltAcknowledgement) => void) | null;
  [key: string]: unknown;
}

export interface RunOptions {
  labels?: JobLabels;
  /** How many items run at once. Defaults to 1 (2.x order). */
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

/** Performs the change on one id; calls back (or resolves) with an optional result. */
export type ChangeFunction = (
  req: Request,
  id: any,
  callback: (err?: unknown, result?: unknown) => void
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
  /** `((processed / total) * 100).toFixed(2)` with JavaScript's coercion and rounding. */
  percentage(processed: unknown, total: unknown): string;
  /** Starts a new job (replying like `run`) over the failed items of job `jobId`. */
  retryFailed(req: Request, jobId: string, change: ChangeFunction, options?: RunOptions): void;
  /** Takes no new job or item, lets items in flight finish, ends the rest as interrupted. */
  drain(options?: { timeout?: number }): Promise<{ interrupted: number }>;
  /** The newest jobs first; `olderThan` in ms, by `when`. */
  listJobs(options?: { ended?: boolean; olderThan?: number; limit?: number }): Promise<JobDocument[]>;
  /** Deletes jobs that ended more than `olderThan` ms ago; resolves how many. */
  purgeJobs(options: { olderThan: number }): Promise<number>;
  /** Whether the user of `req` may see `job` (the `ownerOnly` option). */
  canAccessJob(req: Request, job: JobDocument): boolean;
}

/** The Apostrophe 2 module definition (no `extend`: an implicit subclass of the core module). */
declare const definition: {
  collectionName: string;
  construct(self: any, options: Record<string, unknown>): void;
};

export = definition;
