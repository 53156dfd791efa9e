/**
 * The queue board: running and queued jobs in queue order, recently finished ones with their failed
 * items, queue figures, and the queue actions when the token allows writes. Plain browser JavaScript
 * (no framework, no build step), talking only to the public REST API:
 *
 * - GET /api/access says whether a token is needed and what the one given allows;
 * - the event stream (GET /api/perspectives/batch/events) is read with fetch, since EventSource
 *   cannot send an Authorization header, and resumed with Last-Event-ID after a drop;
 * - a progress event moves its job's bar at once from the counters it carries; the job's row (ETA,
 *   rate), the lists, the failed items and the figures are re-read on events, each coalesced so a
 *   burst of events costs one request. Reorders send no event: the queue is also re-read every
 *   QUEUE_REFRESH_MS while the tab is visible, and after this page's own actions.
 */

const API = new URL('../api/', document.baseURI);
const TOKEN_KEY = 'graphcap.board.token';
const BATCH = 'perspectives/batch';
const QUEUE_SHOWN = 100;
const FINISHED_SHOWN = 10;
const FAILED_SHOWN = 5;
/** Milliseconds between re-reads of the same thing, however many events ask for one. */
const QUEUE_GAP_MS = 1000;
const JOB_GAP_MS = 1000;
const FAILED_GAP_MS = 2000;
const STATS_GAP_MS = 2000;
/** Safety net for changes that send no event (reorders, priority changes). */
const QUEUE_REFRESH_MS = 30_000;
/** Throughput window of the figures, in minutes. */
const STATS_WINDOW_MINUTES = 10;
/** Reconnect delay when the server has not said (`retry:`), and the most it grows to. */
const RECONNECT_MS = 2000;
const RECONNECT_MAX_MS = 30_000;
/** How long cancel stays armed for its second click, and how long notices stay. */
const CONFIRM_MS = 4000;
const NOTICE_MS = 5000;
const NOTICE_ERROR_MS = 15_000;

const $ = (id) => document.getElementById(id);

const state = {
  token: sessionStorage.getItem(TOKEN_KEY) ?? '',
  /** { tokenRequired, read, write } from GET /api/access. */
  access: null,
  /** jobId → Job, for every job on the board. */
  jobs: new Map(),
  /** Job ids in queue order; finished job ids, newest first. */
  queue: [],
  queueTotal: 0,
  finished: [],
  /** jobId → { failedImages, items, total }: the failed items last read, and for which counter. */
  failed: new Map(),
  stats: null,
  /** The `id:` of the last event read: sent as Last-Event-ID when the stream is opened again. */
  lastEventId: null,
  /** Aborts the event stream and the timers of the current session (a token change starts a new one). */
  session: null,
};

class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail ?? `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

function authHeaders() {
  return state.token ? { authorization: `Bearer ${state.token}` } : {};
}

/** One JSON call to the API; problem details become an ApiError. */
async function call(method, path, body) {
  const headers = { accept: 'application/json', ...authHeaders() };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const response = await fetch(new URL(path, API), {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let data;
  try {
    data = text ? JSON.parse(text) : undefined;
  } catch {
    data = undefined;
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

/**
 * Wraps `run` so that any number of calls within `gapMs` of its last run make one run; a call while
 * it runs makes one more run after it, so the last state is always read. `schedule(true)` runs it
 * now (still one run at a time): for changes a reader would notice lagging, as a status change.
 */
function coalesced(run, gapMs) {
  let timer = null;
  let running = false;
  let again = false;
  let last = 0;
  const fire = async () => {
    timer = null;
    running = true;
    last = Date.now();
    try {
      await run();
    } catch (error) {
      reportError(error);
    } finally {
      running = false;
      if (again) {
        again = false;
        schedule();
      }
    }
  };
  function schedule(now = false) {
    if (running) {
      again = true;
      return;
    }
    if (timer !== null && !now) return;
    clearTimeout(timer);
    timer = setTimeout(fire, now ? 0 : Math.max(0, last + gapMs - Date.now()));
  }
  return schedule;
}

/** One coalesced refresher per key (job id); `forgetAllBut` drops those of jobs no longer shown. */
function keyed(run, gapMs) {
  const refreshers = new Map();
  const refresh = (key) => {
    let one = refreshers.get(key);
    if (!one) refreshers.set(key, (one = coalesced(() => run(key), gapMs)));
    one();
  };
  refresh.forgetAllBut = (keep) => {
    for (const key of refreshers.keys()) if (!keep.has(key)) refreshers.delete(key);
  };
  return refresh;
}

// ------------------------------------------------------------------------------------------------
// Reading

const refreshQueue = coalesced(loadQueue, QUEUE_GAP_MS);
const refreshStats = coalesced(loadStats, STATS_GAP_MS);
const refreshJob = keyed(loadJob, JOB_GAP_MS);
const refreshFailed = keyed(loadFailed, FAILED_GAP_MS);

async function loadQueue() {
  const active = new URLSearchParams([['status', 'running'], ['status', 'pending'], ['status', 'paused'], ['limit', String(QUEUE_SHOWN)]]);
  const done = new URLSearchParams([
    ['status', 'completed'], ['status', 'partial'], ['status', 'failed'], ['status', 'cancelled'],
    ['sort', 'updatedAt'], ['order', 'desc'], ['limit', String(FINISHED_SHOWN)],
  ]);
  const [queue, finished] = await Promise.all([call('GET', `${BATCH}/list?${active}`), call('GET', `${BATCH}/list?${done}`)]);
  const jobs = new Map();
  for (const job of [...queue.items, ...finished.items]) jobs.set(job.jobId, job);
  state.jobs = jobs;
  state.finished = finished.items.map((j) => j.jobId);
  // A job that finished between the two reads can be in both: it belongs with the finished ones.
  state.queue = queue.items.map((j) => j.jobId).filter((id) => !state.finished.includes(id));
  state.queueTotal = queue.total;
  for (const id of state.failed.keys()) if (!jobs.has(id)) state.failed.delete(id);
  refreshJob.forgetAllBut(jobs);
  refreshFailed.forgetAllBut(jobs);
  for (const job of jobs.values()) if (failedItemsStale(job)) refreshFailed(job.jobId);
  render();
}

async function loadJob(jobId) {
  if (!state.jobs.has(jobId)) return;
  const { job } = await call('GET', `${BATCH}/status/${jobId}?limit=1`);
  const before = state.jobs.get(jobId);
  if (!before) return;
  state.jobs.set(jobId, job);
  // Moving between the queue and the finished list changes both lists: read them again.
  if (isFinished(before.status) !== isFinished(job.status)) refreshQueue();
  if (failedItemsStale(job)) refreshFailed(jobId);
  renderJob(jobId);
}

async function loadFailed(jobId) {
  const job = state.jobs.get(jobId);
  if (!job) return;
  const failedImages = job.failedImages;
  const page = await call('GET', `${BATCH}/items/${jobId}/failed?limit=${FAILED_SHOWN}`);
  state.failed.set(jobId, { failedImages, items: page.items, total: page.total });
  renderJob(jobId);
}

async function loadStats() {
  state.stats = await call('GET', `${BATCH}/statistics?windowMinutes=${STATS_WINDOW_MINUTES}`);
  renderStats();
}

function failedItemsStale(job) {
  const known = state.failed.get(job.jobId);
  return job.failedImages > 0 ? known?.failedImages !== job.failedImages : known !== undefined && known.total > 0;
}

const isFinished = (status) => ['completed', 'partial', 'failed', 'cancelled'].includes(status);

// ------------------------------------------------------------------------------------------------
// Events

const COUNTERS = ['status', 'totalImages', 'processedImages', 'failedImages', 'cancelledImages', 'progress'];

function onEvent(event) {
  const job = event.jobId ? state.jobs.get(event.jobId) : undefined;
  const progress = event.type === 'JOB_PROGRESS';
  if (!progress || !job) {
    // A new job, a status change, or a job this page does not show yet: the lists change.
    refreshQueue();
  }
  // The job counts change with a status: those at once, the rates coalesced with the progress.
  refreshStats(!progress);
  if (!job) return;
  // The bar moves now, from the event's counters; the row (ETA, rate) follows, coalesced.
  for (const key of COUNTERS) if (event.data?.[key] !== undefined) job[key] = event.data[key];
  if (job.status !== 'running') {
    job.etaSeconds = null;
    job.estimatedCompletionAt = null;
    job.itemsPerSecond = null;
  }
  renderJob(job.jobId);
  refreshJob(job.jobId);
  if (failedItemsStale(job)) refreshFailed(job.jobId);
}

/**
 * Reads the event stream until the session ends, opening it again after a drop (with Last-Event-ID,
 * so the server replays what was missed) and re-reading the lists on every (re)connection.
 */
async function followEvents(signal) {
  let delay = RECONNECT_MS;
  let serverDelay = null;
  while (!signal.aborted) {
    try {
      const headers = { accept: 'text/event-stream', ...authHeaders() };
      if (state.lastEventId !== null) headers['last-event-id'] = state.lastEventId;
      const response = await fetch(new URL(`${BATCH}/events`, API), { headers, signal, cache: 'no-store' });
      if (response.status === 401 || response.status === 403) {
        void start();
        return;
      }
      if (!response.ok || !response.body) throw new Error(`event stream: HTTP ${response.status}`);
      setConnection('live');
      delay = RECONNECT_MS;
      refreshQueue();
      refreshStats();
      await readEventStream(response.body, signal, {
        onEvent,
        onId: (id) => {
          state.lastEventId = id;
          $('connection').dataset.lastEventId = id;
        },
        onRetry: (ms) => (serverDelay = ms),
      });
    } catch (error) {
      if (signal.aborted) return;
      console.warn('event stream dropped', error);
    }
    if (signal.aborted) return;
    setConnection('reconnecting');
    // The server's `retry:` at least; longer after each failed attempt in a row.
    await sleep(Math.max(serverDelay ?? 0, delay), signal);
    delay = Math.min(delay * 2, RECONNECT_MAX_MS);
  }
}

/** Parses text/event-stream (the WHATWG format: `field: value` lines, a blank line ends a message). */
async function readEventStream(body, signal, handlers) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  signal.addEventListener('abort', () => void reader.cancel().catch(() => {}), { once: true });
  let buffer = '';
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    const lines = buffer.split(/\r\n|\r|\n/);
    buffer = lines.pop() ?? '';
    for (const line of lines) {
      if (line === '') {
        if (data.length > 0) {
          const text = data.join('\n');
          data = [];
          try {
            handlers.onEvent(JSON.parse(text));
          } catch (error) {
            console.warn('unreadable event', error, text);
          }
        }
        continue;
      }
      if (line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon === -1 ? line : line.slice(0, colon);
      const value = colon === -1 ? '' : line.slice(colon + 1).replace(/^ /, '');
      if (field === 'data') data.push(value);
      else if (field === 'id' && !value.includes('\0')) handlers.onId(value);
      else if (field === 'retry' && /^\d+$/.test(value)) handlers.onRetry(Number(value));
    }
  }
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => (clearTimeout(timer), resolve()), { once: true });
  });
}

// ------------------------------------------------------------------------------------------------
// Actions

const ACTIONS = {
  pause: { label: 'Pause', done: 'paused', run: (id) => call('POST', `${BATCH}/pause/${id}`) },
  resume: { label: 'Resume', done: 'resumed', run: (id) => call('POST', `${BATCH}/resume/${id}`) },
  'to-front': {
    label: 'Move to front',
    done: 'moved to the front of the queue',
    run: (id) => call('POST', `${BATCH}/reorder`, { moves: [{ jobId: id, position: 1 }] }),
  },
  'retry-failed': { label: 'Retry failed', done: 'failed items queued again', run: (id) => call('POST', `${BATCH}/retry-failed/${id}`) },
  cancel: { label: 'Cancel', done: 'cancelled', confirm: 'Confirm cancel', run: (id) => call('POST', `${BATCH}/cancel/${id}`) },
};

/** The actions a job in this state takes (the server has the last word: a 409 is shown). */
function actionsFor(job) {
  switch (job.status) {
    case 'running':
      return ['pause', 'cancel'];
    case 'pending':
      return job.queuePosition > 1 ? ['pause', 'to-front', 'cancel'] : ['pause', 'cancel'];
    case 'paused':
      return job.queuePosition > 1 ? ['resume', 'to-front', 'cancel'] : ['resume', 'cancel'];
    case 'partial':
    case 'failed':
      return ['retry-failed'];
    default:
      return [];
  }
}

async function act(button) {
  const li = button.closest('li.job');
  const jobId = li?.dataset.jobId;
  const action = ACTIONS[button.dataset.action];
  if (!jobId || !action) return;
  // Cancel asks twice: the first click arms the button for a few seconds.
  if (action.confirm && !button.classList.contains('confirming')) {
    button.classList.add('confirming');
    button.textContent = action.confirm;
    setTimeout(() => {
      button.classList.remove('confirming');
      button.textContent = action.label;
    }, CONFIRM_MS);
    return;
  }
  button.disabled = true;
  try {
    const result = await action.run(jobId);
    const job = result?.job ?? (result?.jobId ? result : undefined);
    if (job && state.jobs.has(jobId)) state.jobs.set(jobId, job);
    renderJob(jobId);
    notice(`Job ${jobId.slice(0, 8)} ${action.done}.`);
    refreshQueue();
    refreshStats();
  } catch (error) {
    reportError(error);
  } finally {
    button.disabled = false;
  }
}

// ------------------------------------------------------------------------------------------------
// Rendering (text only: nothing from the API is ever parsed as HTML)

/** jobId → its <li>, kept while the job is on the board so it moves between lists intact. */
const elements = new Map();

function render() {
  renderList($('queue'), state.queue);
  renderList($('finished'), state.finished);
  for (const id of elements.keys()) if (!state.jobs.has(id)) elements.delete(id);
  $('queue-empty').hidden = state.queue.length > 0;
  $('finished-empty').hidden = state.finished.length > 0;
  $('queue-count').textContent = state.queueTotal ? `(${state.queueTotal})` : '';
  const more = state.queueTotal - state.queue.length;
  $('queue-more').hidden = more <= 0;
  $('queue-more').textContent = more > 0 ? `… and ${more} more` : '';
}

function renderList(list, ids) {
  ids.forEach((id, index) => {
    let li = elements.get(id);
    if (!li) {
      li = $('job-template').content.firstElementChild.cloneNode(true);
      li.dataset.jobId = id;
      elements.set(id, li);
    }
    fillJob(li, state.jobs.get(id));
    if (list.children[index] !== li) list.insertBefore(li, list.children[index] ?? null);
  });
  for (const li of [...list.children]) if (!ids.includes(li.dataset.jobId)) li.remove();
}

function renderJob(jobId) {
  const li = elements.get(jobId);
  const job = state.jobs.get(jobId);
  if (li && job) fillJob(li, job);
}

function fillJob(li, job) {
  const q = (selector) => li.querySelector(selector);
  li.dataset.status = job.status;
  q('.position').textContent = job.queuePosition ? `#${job.queuePosition}` : '';
  q('.status').textContent = job.status;
  q('.title').textContent = `${job.perspectives.join(', ')} · ${job.type}${job.userId ? ` · ${job.userId}` : ''}`;
  q('.job-id').textContent = job.jobId.slice(0, 8);
  q('.job-id').title = job.jobId;

  const total = job.totalImages || 1;
  const progress = Math.round(job.progress);
  q('.progress').setAttribute('aria-valuenow', String(progress));
  q('.bar-done').style.width = `${(job.processedImages / total) * 100}%`;
  q('.bar-failed').style.width = `${(job.failedImages / total) * 100}%`;
  q('.progress-text').textContent = `${progress}%`;

  const counts = [`${job.processedImages} done`];
  if (job.failedImages) counts.push(`${job.failedImages} failed`);
  if (job.cancelledImages) counts.push(`${job.cancelledImages} cancelled`);
  q('.counts').textContent = `${counts.join(' · ')} of ${job.totalImages}`;
  q('.rate').textContent = job.itemsPerSecond ? `${formatRate(job.itemsPerSecond)}` : '';
  li.dataset.eta = job.status === 'running' && job.estimatedCompletionAt ? job.estimatedCompletionAt : '';
  fillEta(li);
  q('.job-error').hidden = !job.error;
  q('.job-error').textContent = job.error ?? '';

  fillActions(q('.actions'), job);
  fillFailed(li, job);
}

function fillActions(container, job) {
  const names = state.access?.write ? actionsFor(job) : [];
  const signature = names.join(',');
  if (container.dataset.signature === signature) return;
  container.dataset.signature = signature;
  container.replaceChildren(
    ...names.map((name) => {
      const button = document.createElement('button');
      button.type = 'button';
      button.dataset.action = name;
      button.textContent = ACTIONS[name].label;
      return button;
    }),
  );
}

function fillFailed(li, job) {
  const box = li.querySelector('.failed');
  const known = state.failed.get(job.jobId);
  if (!job.failedImages || !known || known.items.length === 0) {
    box.hidden = true;
    return;
  }
  box.hidden = false;
  const more = known.total - known.items.length;
  li.querySelector('.failed-title').textContent =
    `${known.total} failed item${known.total === 1 ? '' : 's'}${more > 0 ? ` (first ${known.items.length})` : ''}`;
  li.querySelector('.failed-items').replaceChildren(
    ...known.items.map((item) => {
      const entry = document.createElement('li');
      entry.dataset.itemId = item.itemId;
      const where = document.createElement('span');
      where.className = 'failed-path';
      where.textContent = `${item.imagePath.split('/').pop()} · ${item.perspective}`;
      where.title = item.imagePath;
      const why = document.createElement('span');
      why.className = 'failed-error';
      why.textContent = item.error ?? 'no error recorded';
      entry.append(where, ': ', why);
      return entry;
    }),
  );
}

function fillEta(li) {
  const eta = li.querySelector('.eta');
  const at = li.dataset.eta ? Date.parse(li.dataset.eta) : NaN;
  eta.textContent = Number.isNaN(at) ? '' : `ETA ${formatDuration(Math.max(0, (at - Date.now()) / 1000))}`;
}

function renderStats() {
  const s = state.stats;
  if (!s) return;
  const set = (name, text) => (document.querySelector(`[data-stat="${name}"]`).textContent = text);
  set('running', String(s.jobs.running));
  set('pending', String(s.jobs.pending));
  set('paused', String(s.jobs.paused));
  set('throughput', `${formatNumber(s.throughput.itemsPerMinute)} items/min`);
  set('failureRate', s.failureRate === null ? '–' : `${formatNumber(s.failureRate * 100)}%`);
  set(
    'processingTime',
    s.processingTime.meanMs === null ? '–' : `${formatDuration(s.processingTime.meanMs / 1000)} / ${formatDuration(s.processingTime.p95Ms / 1000)}`,
  );
  set('oldestPending', s.oldestPendingJobAgeSeconds === null ? '–' : formatDuration(s.oldestPendingJobAgeSeconds));
  document.querySelector('[data-stat="throughput"]').title = `items finished in the last ${s.throughput.windowMinutes} minutes`;
}

function formatNumber(n) {
  return n >= 100 ? String(Math.round(n)) : String(Math.round(n * 10) / 10);
}

function formatRate(itemsPerSecond) {
  return itemsPerSecond >= 1 ? `${formatNumber(itemsPerSecond)} items/s` : `${formatNumber(itemsPerSecond * 60)} items/min`;
}

function formatDuration(seconds) {
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} min`;
}

function setConnection(which) {
  const el = $('connection');
  el.dataset.state = which;
  el.textContent = { live: 'live', reconnecting: 'reconnecting…', connecting: 'connecting…', off: 'not connected' }[which];
}

let noticeTimer;
/** Says what an action did (or why it failed) for a few seconds. */
function notice(text, isError = false) {
  const el = $('notice');
  el.textContent = text;
  el.classList.toggle('error', isError);
  clearTimeout(noticeTimer);
  if (text) noticeTimer = setTimeout(() => (el.textContent = ''), isError ? NOTICE_ERROR_MS : NOTICE_MS);
}

function reportError(error) {
  if (error instanceof ApiError && error.status === 401) {
    void start();
    return;
  }
  const detail = error instanceof ApiError ? `${error.status}: ${error.message}` : String(error?.message ?? error);
  notice(detail, true);
}

// ------------------------------------------------------------------------------------------------
// Token and start-up

async function fetchAccess() {
  const response = await fetch(new URL('access', API), { headers: { accept: 'application/json', ...authHeaders() } });
  if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => undefined));
  return response.json();
}

function showTokenPanel(message) {
  $('token-message').textContent = message;
  $('token-panel').hidden = false;
  $('board').hidden = true;
  $('token-input').value = '';
  $('token-input').focus();
}

/** (Re)starts the board with the current token: checks what it allows, then reads and follows. */
async function start() {
  state.session?.abort();
  const session = new AbortController();
  state.session = session;
  state.access = null;
  state.lastEventId = null;
  state.jobs = new Map();
  state.queue = [];
  state.finished = [];
  state.failed.clear();
  elements.clear();
  $('queue').replaceChildren();
  $('finished').replaceChildren();
  setConnection('off');
  let access;
  try {
    access = await fetchAccess();
  } catch (error) {
    notice(`Cannot reach the service: ${error.message}`, true);
    setTimeout(() => session.signal.aborted || void start(), RECONNECT_MAX_MS);
    return;
  }
  if (session.signal.aborted) return;
  state.access = access;
  $('change-token').hidden = !access.tokenRequired;
  $('access').textContent = !access.tokenRequired ? 'open service' : access.write ? 'full access' : access.read ? 'read-only token' : '';
  document.body.dataset.write = String(access.write);
  if (!access.read) {
    showTokenPanel(state.token ? 'That token is not accepted. Enter a valid token.' : 'This service needs an API token.');
    return;
  }
  $('token-panel').hidden = true;
  $('board').hidden = false;
  notice('');
  setConnection('connecting');
  void followEvents(session.signal);
  const refresh = setInterval(() => document.hidden || refreshQueue(), QUEUE_REFRESH_MS);
  session.signal.addEventListener('abort', () => clearInterval(refresh), { once: true });
}

$('token-form').addEventListener('submit', (event) => {
  event.preventDefault();
  state.token = $('token-input').value.trim();
  if (state.token) sessionStorage.setItem(TOKEN_KEY, state.token);
  else sessionStorage.removeItem(TOKEN_KEY);
  void start();
});

$('change-token').addEventListener('click', () => {
  state.session?.abort();
  state.token = '';
  sessionStorage.removeItem(TOKEN_KEY);
  setConnection('off');
  showTokenPanel('Enter a token.');
});

$('board').addEventListener('click', (event) => {
  const button = event.target.closest('button[data-action]');
  if (button && !button.disabled) void act(button);
});

// ETAs count down between reads.
setInterval(() => {
  for (const li of elements.values()) if (li.dataset.eta) fillEta(li);
}, 1000);

void start();
