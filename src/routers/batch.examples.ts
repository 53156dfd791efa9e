/**
 * Examples of the batch queue's schemas, shown in the OpenAPI document and Swagger UI. The OpenAPI
 * lint (`npm run lint:openapi`) checks each one against its schema.
 */
const JOB_ID = '5b0c9d2e-8f4a-4c1b-9e6d-2a7f3c8b1d40';
const ITEM_ID = 'a3e1f6c2-7b9d-4e8a-b5c4-1d2e3f4a5b6c';
const IMAGE_ID = 'c7d8e9f0-1a2b-4c3d-8e4f-5a6b7c8d9e0f';
const CAPTION_ID = 'e1f2a3b4-c5d6-4e7f-8a9b-0c1d2e3f4a5b';
const DATASET_ID = '9f8e7d6c-5b4a-4392-a1b0-c9d8e7f6a5b4';

export const jobExample = {
  jobId: JOB_ID,
  type: 'DATASET_PERSPECTIVE',
  status: 'running',
  priority: 100,
  queuePosition: 1,
  perspectives: ['art_critic', 'storytelling'],
  datasetId: DATASET_ID,
  config: { provider: 'gemini', model: 'gemini-2.0-flash-exp', maxTokens: 4096, temperature: 0.8, hasProviderConfig: false },
  userId: 'alice',
  idempotencyKey: null,
  totalImages: 14,
  processedImages: 6,
  failedImages: 1,
  cancelledImages: 0,
  progress: 50,
  error: null,
  archived: false,
  archiveDate: null,
  dependsOn: [],
  createdAt: '2026-11-28T12:00:00.000Z',
  updatedAt: '2026-11-28T12:00:41.000Z',
  startedAt: '2026-11-28T12:00:01.000Z',
  completedAt: null,
  etaSeconds: 48,
  estimatedCompletionAt: '2026-11-28T12:01:29.000Z',
  itemsPerSecond: 0.167,
};

export const itemExample = {
  itemId: ITEM_ID,
  jobId: JOB_ID,
  imageId: IMAGE_ID,
  imagePath: 'datasets/os_img/highland-cow-8972000_640.jpg',
  perspective: 'art_critic',
  status: 'completed',
  attempts: 1,
  nextAttemptAt: null,
  error: null,
  processingTime: 1840,
  captionId: CAPTION_ID,
  result: { formal_analysis: 'A shaggy highland cow fills the frame against a soft green field …', artistic_merit: 8 },
  createdAt: '2026-11-28T12:00:00.000Z',
  updatedAt: '2026-11-28T12:00:03.000Z',
  startedAt: '2026-11-28T12:00:01.000Z',
  completedAt: '2026-11-28T12:00:03.000Z',
};

export const jobPageExample = { items: [jobExample], total: 1, page: 1, limit: 20 };
export const itemPageExample = { items: [itemExample], total: 14, page: 1, limit: 20 };
export const jobStatusExample = { job: jobExample, items: itemPageExample };

export const reorderInputExample = {
  moves: [{ jobId: JOB_ID, position: 1 }],
  priorities: [{ jobId: '0d1e2f3a-4b5c-4d6e-8f7a-9b0c1d2e3f4a', priority: 50 }],
};
export const reorderOutputExample = {
  queue: [
    { jobId: JOB_ID, position: 1, priority: 50, status: 'running' },
    { jobId: '0d1e2f3a-4b5c-4d6e-8f7a-9b0c1d2e3f4a', position: 2, priority: 50, status: 'pending' },
  ],
};

export const retryFailedExample = { retried: 1, job: { ...jobExample, status: 'pending', failedImages: 0, progress: 43, etaSeconds: null, estimatedCompletionAt: null, itemsPerSecond: null } };

export const analyzeInputExample = { datasetName: 'os_img', perspectives: ['art_critic', 'storytelling'], missingLimit: 10 };
export const analyzeOutputExample = {
  imageCount: 7,
  perspectives: ['art_critic', 'storytelling'],
  totalPairs: 14,
  captioned: 13,
  missing: 1,
  byPerspective: [
    { perspective: 'art_critic', captioned: 7, missing: 0 },
    { perspective: 'storytelling', captioned: 6, missing: 1 },
  ],
  missingPairs: [{ imageId: IMAGE_ID, imagePath: 'datasets/os_img/highland-cow-8972000_640.jpg', perspective: 'storytelling' }],
};

export const statisticsExample = {
  jobs: { pending: 2, running: 1, paused: 1, completed: 10, partial: 1, failed: 0, cancelled: 1, total: 16 },
  items: { pending: 20, running: 4, completed: 180, failed: 3, cancelled: 7, total: 214 },
  throughput: { windowMinutes: 60, finishedItems: 120, itemsPerMinute: 2 },
  processingTime: { meanMs: 1830, p95Ms: 4100 },
  failureRate: 0.025,
  oldestPendingJobAgeSeconds: 95,
  providers: [
    {
      provider: 'gemini',
      model: 'gemini-2.0-flash-exp',
      concurrencyLimit: 4,
      inFlight: 4,
      breaker: 'closed',
      consecutiveFailures: 0,
      blockedUntil: null,
      openUntil: null,
      latencyMs: 1810.5,
      baselineLatencyMs: 1420,
    },
  ],
  misconfiguredProviders: [],
  bridge: { state: 'ok', unknownPerspectives: [] },
  generatedAt: '2026-11-28T12:05:00.000Z',
};

export const itemUpdateExample = {
  status: 'completed',
  result: { formal_analysis: 'A shaggy highland cow fills the frame …', artistic_merit: 8 },
  processingTime: 1840,
  model: 'gemini-2.0-flash-exp',
  provider: 'gemini',
};
