// A generation: POST /v1/jobs, then GET /v1/jobs/{id}/events as server-sent events, each event
// naming its image; Cancel is DELETE /v1/jobs/{id} and cancels every image not yet delivered.

import { ApiError, authHeaders, b64ToBytes, errorFromResponse, readEvents, request } from "./api.js";
import { loadHistory, saveRecord } from "./history.js";
import { readForm, requestBody, sizeInfo, styleName } from "./options.js";
import {
  hideAlert,
  hideRun,
  noPicture,
  openTiles,
  setRun,
  setStageState,
  showAlert,
  showError,
  tileDone,
  tileFailed,
  tilePreview,
  tileProgress,
  tileStatus,
  tileWithheld,
} from "./stage.js";
import { $, hooks, state } from "./state.js";
import { describeError, fmtSeconds, generationSummary, plural } from "./words.js";

const RECONNECTS = 3;
// A finished image waits on the server for its client for a minute at most.
const OFFLINE_WAIT_MS = 50_000;
const CANCEL_GRACE_MS = 8_000;

function newIdempotencyKey() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return `create-${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
}

const ended = (im) => im.state === "done" || im.state === "failed";

export async function startGenerate() {
  if (state.job || !state.options) return;
  const params = readForm();
  if (!params) return;
  const size = sizeInfo(params.size);
  const job = {
    id: null,
    params,
    size,
    n: params.n,
    body: requestBody(params),
    idem: newIdempotencyKey(),
    controller: new AbortController(),
    cancelRequested: false,
    aborted: false,
    detached: false,
    accountId: state.account.account_id,
    total: params.steps,
    eventsSeen: 0,
    startedAt: performance.now(),
    created: Date.now(),
    started: false,
    images: Array.from({ length: params.n }, () => ({
      state: "waiting",
      step: 0,
      queue: "",
      seed: null,
      failure: null,
    })),
  };
  state.job = job;
  document.body.dataset.busy = "true";
  const gen = $("generate");
  gen.disabled = true;
  $("cancel").disabled = false;
  hideAlert();
  openTiles(job.n, size);
  job.images.forEach((_, i) => tileStatus(i, "waiting", "Sending…"));
  setStageState("running");
  const hadFocus = document.activeElement === gen;
  setRun("Sending…");
  // Generate is disabled while the job runs: keep keyboard focus on a live control.
  if (hadFocus) $("cancel").focus();
  // On a narrow screen the pictures sit below the form: bring them into view.
  if ($("stage").getBoundingClientRect().top > window.innerHeight * 0.6) {
    $("stage").scrollIntoView({ block: "start", behavior: "smooth" });
  }

  try {
    await runJob(job);
    if (!job.detached) await finishJob(job);
  } catch (e) {
    if (!job.detached) await failJob(job, e);
  } finally {
    if (job.cancelTimer) clearTimeout(job.cancelTimer);
    if (state.job === job) state.job = null;
    if (!state.job) {
      delete document.body.dataset.busy;
      gen.disabled = false;
      const active = document.activeElement;
      if (!active || active === document.body || active === $("cancel")) gen.focus({ preventScroll: true });
    }
    if (state.key && !job.detached) hooks.refreshAccount();
  }
}

// Waits ms (or until the browser is back online, when wakeOnline), unless the job is aborted.
function pause(job, ms, wakeOnline = false) {
  return new Promise((resolve, reject) => {
    const signal = job.controller.signal;
    const done = (fn) => {
      clearTimeout(timer);
      window.removeEventListener("online", onOnline);
      signal.removeEventListener("abort", onAbort);
      fn();
    };
    const onOnline = () => done(resolve);
    const onAbort = () => done(() => reject(new DOMException("aborted", "AbortError")));
    const timer = setTimeout(() => done(resolve), ms);
    if (wakeOnline) window.addEventListener("online", onOnline);
    signal.addEventListener("abort", onAbort);
    if (signal.aborted) onAbort();
  });
}

async function runJob(job) {
  const created = await request("POST", "/v1/jobs", {
    body: job.body,
    headers: { "Idempotency-Key": job.idem },
    signal: job.controller.signal,
  });
  job.id = created && created.job_id;
  if (!job.id) throw new ApiError("internal", "no job id");
  if (job.cancelRequested) sendCancel(job);
  // A dropped stream is followed again (the server replays each image's state). While the browser
  // is offline the page waits for it to come back, as long as a finished image is kept.
  let failures = 0;
  let lostAt = 0;
  for (;;) {
    const seen = job.eventsSeen;
    try {
      if (await followEvents(job)) return;
    } catch (e) {
      if (job.aborted || (e && e.name === "AbortError")) throw e;
      if (e.code !== "network") throw e;
    }
    if (job.eventsSeen > seen) failures = 0;
    failures += 1;
    lostAt = failures === 1 ? Date.now() : lostAt;
    const offline = navigator.onLine === false;
    if ((!offline && failures > RECONNECTS) || Date.now() - lostAt > OFFLINE_WAIT_MS) {
      throw await giveUp(job);
    }
    setRun(offline ? "Connection lost, waiting for the network…" : "Connection lost, reconnecting…", runProgress(job));
    await pause(job, offline ? OFFLINE_WAIT_MS - (Date.now() - lostAt) : 500 * 2 ** failures, offline);
  }
}

// The page cannot follow the job any more: cancel it so nothing is charged for pictures nobody sees.
async function giveUp(job) {
  let cancelled = false;
  try {
    const res = await request("DELETE", `/v1/jobs/${encodeURIComponent(job.id)}`);
    cancelled = Boolean(res && res.cancelled);
  } catch {
    cancelled = false;
  }
  return new ApiError("network", "network", { refunded: cancelled });
}

// True once every image has ended; false when the stream closed before that.
async function followEvents(job) {
  let res;
  try {
    res = await fetch(`/v1/jobs/${encodeURIComponent(job.id)}/events`, {
      headers: { Accept: "text/event-stream", ...authHeaders() },
      cache: "no-store",
      credentials: "omit",
      signal: job.controller.signal,
    });
  } catch (e) {
    if (e && e.name === "AbortError") throw e;
    throw new ApiError("network", "network");
  }
  if (!res.ok) throw await errorFromResponse(res);
  try {
    for await (const msg of readEvents(res)) {
      let data;
      try {
        data = JSON.parse(msg.data);
      } catch {
        continue;
      }
      job.eventsSeen += 1;
      await onJobEvent(job, msg.event, data);
      if (job.images.every(ended)) return true;
    }
  } catch (e) {
    if (e && e.name === "AbortError") throw e;
    throw new ApiError("network", "network");
  }
  return job.images.every(ended);
}

async function onJobEvent(job, name, data) {
  const index = Number.isInteger(data.image) ? data.image : 0;
  const im = job.images[index];
  if (!im) return;
  if (name === "completed") {
    await onCompleted(job, index, data);
  } else if (name === "failed") {
    onFailed(job, index, data);
  } else if (job.cancelRequested || ended(im)) {
    return;
  } else if (name === "queued") {
    const pos = Number(data.position);
    const eta = fmtSeconds(Number(data.eta_seconds));
    const where = Number.isFinite(pos) && pos > 0 ? `In the queue: position ${pos}` : "In the queue";
    im.state = "queued";
    im.step = 0;
    im.queue = eta ? `${where} · ${eta}` : where;
    tileStatus(index, "queued", im.queue);
  } else if (name === "started") {
    im.state = "running";
    im.step = 0;
    tileStatus(index, "running", "Starting on a render node…");
    if (!job.started) {
      job.started = true;
      hooks.refreshAccount();
    }
  } else if (name === "progress") {
    const step = Number(data.step);
    const total = Number(data.total_steps) || job.total;
    job.total = total;
    im.state = "running";
    im.step = step;
    job.latest = index;
    tileProgress(index, step, total);
    if (data.preview_withheld) {
      tileWithheld(index);
    } else if (data.preview_b64) {
      try {
        tilePreview(index, b64ToBytes(data.preview_b64), step / total);
      } catch {
        /* a broken preview is skipped */
      }
    }
  }
  updateRun(job);
}

function runProgress(job) {
  if (!job.images.some((im) => im.state === "running" || ended(im))) return {};
  const done = job.images.reduce((sum, im) => sum + (ended(im) ? job.total : im.step), 0);
  return { step: done, total: job.total * job.n };
}

function updateRun(job) {
  if (job.cancelRequested || job.images.every(ended)) return;
  const im = job.images[job.latest] || job.images.find((x) => !ended(x));
  let current = im.queue || "Waiting for a render node…";
  if (im.state === "running") current = im.step ? `Step ${im.step} of ${job.total}` : "Starting on a render node…";
  if (job.n === 1) {
    setRun(current, runProgress(job));
    return;
  }
  const count = job.images.filter(ended).length;
  const which = im.state === "running" ? `image ${job.images.indexOf(im) + 1}: ${current.toLowerCase()}` : current;
  setRun(`${count} of ${job.n} done · ${which}`, runProgress(job));
}

async function onCompleted(job, index, data) {
  const im = job.images[index];
  if (ended(im)) return; // a replay after a reconnect
  const format = String(data.output_format || "");
  const record = {
    id: `${job.id}.${index}`,
    job_id: job.id,
    image: index,
    n: job.n,
    account_id: job.accountId,
    created: job.created,
    blob: new Blob([b64ToBytes(data.b64_json)], { type: format ? `image/${format}` : "" }),
    width: Number(data.width) || job.size.width,
    height: Number(data.height) || job.size.height,
    output_format: format,
    params: { ...job.params, seed: Number(data.seed) },
  };
  im.state = "done";
  im.seed = record.params.seed;
  tileDone(index, record);
  // The event's balance counts today's allowance too; the account bar shows them apart.
  hooks.refreshAccount();
  await saveRecord(record);
  await loadHistory(styleName);
}

// Image i is rendered with the first seed + i: a seed the server did not name follows from another.
function seedOf(job, index) {
  const known = job.images.findIndex((im) => Number.isInteger(im.seed));
  if (known < 0) return null;
  const span = state.options.seed.max - state.options.seed.min + 1;
  return state.options.seed.min + ((((job.images[known].seed - known + index) % span) + span) % span);
}

function onFailed(job, index, data) {
  const im = job.images[index];
  if (ended(im)) return;
  const err = data.error || {};
  im.state = "failed";
  im.failure = {
    code: err.code || "internal",
    message: err.message || "",
    seed: Number.isInteger(data.seed) ? data.seed : null,
    refunded: data.refunded !== false,
  };
  im.seed = im.failure.seed;
  tileFailed(index, im.failure);
}

// Every image of a generation that delivered something is kept, the refunded ones with why.
async function keepFailures(job) {
  const failed = job.images.map((im, i) => [im, i]).filter(([im]) => im.failure);
  for (const [im, i] of failed) {
    await saveRecord({
      id: `${job.id}.${i}`,
      job_id: job.id,
      image: i,
      n: job.n,
      account_id: job.accountId,
      created: job.created,
      failure: im.failure,
      width: job.size.width,
      height: job.size.height,
      params: { ...job.params, seed: im.failure.seed },
    });
  }
}

async function finishJob(job, err = null) {
  const delivered = job.images.filter((im) => im.state === "done").length;
  const failures = job.images.filter((im) => im.failure);
  const seconds = ((performance.now() - job.startedAt) / 1000).toFixed(1);
  if (delivered) {
    const all = job.total * job.n;
    const text =
      job.n === 1
        ? `Done: step ${job.total} of ${job.total} in ${seconds} s`
        : `Done: ${delivered} of ${job.n} ${plural(job.n, "image", "images")} in ${seconds} s` +
          (failures.length ? ` · ${failures.length} refunded` : "");
    setRun(text, { step: all, total: all, cancellable: false });
  } else {
    hideRun();
  }
  if (failures.length && job.n === 1) {
    const f = failures[0].failure;
    showError(err || new ApiError(f.code, f.message, { refunded: f.refunded }));
  } else if (failures.length) {
    const summary = generationSummary(job.images, { cancelled: job.cancelRequested });
    showAlert({ ...summary, requestId: err && err.requestId });
  }
  setStageState(delivered ? "done" : "error");
  if (delivered && failures.length) {
    await keepFailures(job);
    await loadHistory(styleName);
  }
  if (err && err.code === "invalid_api_key") hooks.signOut(describeError(err));
}

async function failJob(job, e) {
  const aborted = job.aborted || (e && e.name === "AbortError");
  const err = aborted ? new ApiError("cancelled", "cancelled", { refunded: true }) : e;
  if (job.id) {
    // Accepted: each image not yet ended ends here, and the end says which were refunded.
    const failure = {
      code: err.code || "internal",
      message: err.message || "",
      refunded: err.code === "network" ? Boolean(err.refunded) : true,
    };
    job.images.forEach((im, i) => {
      if (ended(im)) return;
      im.state = "failed";
      im.failure = { ...failure, seed: seedOf(job, i) };
      tileFailed(i, im.failure);
    });
    await finishJob(job, err);
    return;
  }
  hideRun();
  noPicture(job.size);
  if (err.code === "age_confirmation_required" && state.account) {
    state.account.age_confirmed = false;
    $("nsfw").checked = false;
    hooks.updateNsfwHint();
  }
  showError(err, { n: job.n });
  if (err.code === "invalid_api_key") hooks.signOut(describeError(err));
}

async function sendCancel(job) {
  try {
    await request("DELETE", `/v1/jobs/${encodeURIComponent(job.id)}`);
  } catch {
    /* already ended: the event stream tells how */
  }
}

export function cancelJob() {
  const job = state.job;
  if (!job || job.cancelRequested) return;
  job.cancelRequested = true;
  $("cancel").disabled = true;
  $("run-text").textContent = job.n === 1 ? "Cancelling…" : `Cancelling all ${job.n} images…`;
  if (job.id) sendCancel(job);
  // The stream ends with a failed(cancelled) event per image; stop waiting for them after a while.
  job.cancelTimer = setTimeout(() => {
    job.aborted = true;
    job.controller.abort();
  }, CANCEL_GRACE_MS);
}

// Signing out: nothing of this job may reach the page of whoever signs in next.
export function detachJob() {
  const job = state.job;
  if (!job) return;
  cancelJob();
  job.detached = true;
  job.aborted = true;
  job.controller.abort();
  state.job = null;
  $("generate").disabled = false;
}

// Leaving the page mid-render cancels the job so nothing is charged for pictures nobody sees.
export function cancelOnLeave() {
  const job = state.job;
  if (job && job.id && !job.cancelRequested) {
    request("DELETE", `/v1/jobs/${encodeURIComponent(job.id)}`, { keepalive: true }).catch(() => {});
  }
}
