// TALOS /create: a plain ES module, no build step, no third-party code, no external requests.
// Talks only to the public HTTP API (docs/api.md). History lives in this browser's IndexedDB.

const KEY_STORAGE = "talos.apiKey";
const DB_NAME = "talos-create";
const DB_STORE = "images";
const MAX_SEED = 4294967295;
const RECONNECTS = 3;
// A finished result waits at most 60 s on the server for its client.
const OFFLINE_WAIT_MS = 50000;
const CANCEL_GRACE_MS = 8000;

// Used only when GET /v1/options cannot be read; the server validates everything anyway.
const FALLBACK_OPTIONS = {
  styles: [
    { id: "photo", name: "Photo" },
    { id: "cinematic", name: "Cinematic" },
    { id: "anime", name: "Anime" },
    { id: "digital-art", name: "Digital Art" },
    { id: "3d", name: "3D" },
  ],
  sizes: [
    { id: "1024x1024", width: 1024, height: 1024, aspect_ratio: "square" },
    { id: "832x1216", width: 832, height: 1216, aspect_ratio: "portrait" },
    { id: "1216x832", width: 1216, height: 832, aspect_ratio: "landscape" },
  ],
  steps: { min: 1, max: 60, default: 30 },
  guidance: { min: 1, max: 20, default: 5 },
  price_per_image: 18,
};

const RATIO_NAMES = { square: "Square", portrait: "Portrait", landscape: "Landscape" };

const $ = (id) => document.getElementById(id);

const state = {
  key: null,
  account: null,
  options: FALLBACK_OPTIONS,
  job: null,
  current: null, // { record, url }
  history: [],
  historyUrls: [],
  db: null,
  dbError: null,
};

// ---------------------------------------------------------------------------------------------
// HTTP

class ApiError extends Error {
  constructor(code, message, { status = 0, retryAfter = null, requestId = null, refunded = false } = {}) {
    super(message || code);
    this.code = code;
    this.status = status;
    this.retryAfter = retryAfter;
    this.requestId = requestId;
    this.refunded = refunded;
  }
}

const STATUS_CODES = {
  400: "invalid_request",
  401: "invalid_api_key",
  402: "insufficient_credits",
  403: "age_confirmation_required",
  404: "not_found",
  409: "idempotency_conflict",
  413: "request_too_large",
  422: "output_blocked",
  429: "rate_limited",
  500: "internal",
  503: "no_capacity",
  504: "timeout",
};

function authHeaders(key = state.key) {
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function errorFromResponse(res) {
  let body = null;
  try {
    body = await res.json();
  } catch {
    body = null;
  }
  const err = (body && body.error) || {};
  const retry = Number.parseFloat(res.headers.get("Retry-After") || "");
  return new ApiError(err.code || STATUS_CODES[res.status] || "internal", err.message || res.statusText, {
    status: res.status,
    retryAfter: Number.isFinite(retry) ? retry : null,
    requestId: res.headers.get("X-Request-Id"),
  });
}

async function request(method, path, { body, key, headers = {}, signal, keepalive = false } = {}) {
  const init = {
    method,
    headers: { Accept: "application/json", ...authHeaders(key === undefined ? state.key : key), ...headers },
    cache: "no-store",
    credentials: "omit",
    signal,
    keepalive,
  };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    if (e && e.name === "AbortError") throw e;
    throw new ApiError("network", "network");
  }
  if (!res.ok) throw await errorFromResponse(res);
  if (res.status === 204) return null;
  const text = await res.text();
  try {
    return text ? JSON.parse(text) : null;
  } catch {
    return null;
  }
}

// Server-sent events read from a fetch body (EventSource cannot send the Authorization header).
async function* readEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  let scanFrom = 0;
  let event = "";
  let data = [];
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += value;
      let nl;
      while ((nl = buf.indexOf("\n", scanFrom)) >= 0) {
        let line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        scanFrom = 0;
        if (line.endsWith("\r")) line = line.slice(0, -1);
        if (line === "") {
          if (data.length) yield { event: event || "message", data: data.join("\n") };
          event = "";
          data = [];
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let val = colon < 0 ? "" : line.slice(colon + 1);
        if (val.startsWith(" ")) val = val.slice(1);
        if (field === "event") event = val;
        else if (field === "data") data.push(val);
      }
      scanFrom = buf.length;
    }
  } finally {
    reader.releaseLock();
  }
}

// ---------------------------------------------------------------------------------------------
// Messages in plain words

function fmtSeconds(s) {
  if (!Number.isFinite(s) || s <= 0) return "";
  if (s < 1.5) return "about a second";
  if (s < 90) return `about ${Math.round(s)} seconds`;
  return `about ${Math.round(s / 60)} minutes`;
}

function fmtCredits(n) {
  return Number.isFinite(n) ? Math.round(n).toLocaleString("en-US") : "–";
}

function price() {
  return (state.options && state.options.price_per_image) || (state.account && state.account.price_per_image) || 18;
}

function describeError(err) {
  const retry = err.retryAfter ? ` Try again in ${fmtSeconds(err.retryAfter).replace("about ", "")}.` : " Try again in a moment.";
  switch (err.code) {
    case "insufficient_credits": {
      const a = state.account;
      const have = a ? ` You have ${fmtCredits(a.balance)} credits and ${fmtCredits(a.allowance && a.allowance.remaining)} left of today's allowance.` : "";
      return `Not enough credits: an image costs ${price()} credits.${have} Nothing was charged.`;
    }
    case "content_policy_violation":
      return "This prompt was refused by the content policy. Nothing was charged. Please describe something else.";
    case "output_blocked":
      return "The picture was withheld because it looked like adult content and NSFW (18+) is off. Your credits were refunded.";
    case "no_capacity":
      return `No render node is available right now. Nothing was charged.${retry}`;
    case "rate_limited":
      return `Too many requests from this key at once.${retry} Nothing was charged.`;
    case "invalid_api_key":
      return "Your API key was not accepted. Please sign in again.";
    case "age_confirmation_required":
      return "Adult content needs a one-time age confirmation: switch NSFW (18+) on to confirm. Nothing was charged.";
    case "invalid_request":
      return `The request was not accepted: ${String(err.message || "invalid request").replace(/\.$/, "")}. Nothing was charged.`;
    case "request_too_large":
      return "The request is too large: please shorten the prompt. Nothing was charged.";
    case "idempotency_conflict":
      return "This request clashed with an earlier one. Please press Generate again.";
    case "cancelled":
      return "Cancelled. Your credits were refunded.";
    case "timeout":
      return "The render took too long and was stopped. Your credits were refunded.";
    case "not_found":
      return "This job is no longer available. If it did not finish, your credits were refunded.";
    case "unavailable":
      return `TALOS is briefly unavailable.${retry} If a picture was on its way, your credits were refunded.`;
    case "network":
      return err.refunded
        ? "The network connection was lost, so the job was cancelled. Your credits were refunded."
        : "The network connection was lost before the picture arrived. Pictures are not kept on the server; if it did not finish, nothing was charged. Check your connection and try again.";
    case "internal":
    default:
      return `Something went wrong on our side${err.code && err.code !== "internal" ? ` (${err.code})` : ""}. Your credits were refunded.`;
  }
}

// ---------------------------------------------------------------------------------------------
// IndexedDB history (never sent anywhere)

function openDb() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB_NAME, 1);
    req.onupgradeneeded = () => {
      const store = req.result.createObjectStore(DB_STORE, { keyPath: "id" });
      store.createIndex("account", "account_id");
    };
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
    req.onblocked = () => reject(new Error("history database is blocked"));
  });
}

function dbRun(mode, fn) {
  return new Promise((resolve, reject) => {
    if (!state.db) {
      reject(state.dbError || new Error("history unavailable"));
      return;
    }
    const tx = state.db.transaction(DB_STORE, mode);
    const req = fn(tx.objectStore(DB_STORE));
    tx.oncomplete = () => resolve(req ? req.result : undefined);
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error);
  });
}

const historyDb = {
  put: (record) => dbRun("readwrite", (s) => s.put(record)),
  remove: (id) => dbRun("readwrite", (s) => s.delete(id)),
  list: (accountId) => dbRun("readonly", (s) => s.index("account").getAll(IDBKeyRange.only(accountId))),
  clear: (accountId) =>
    dbRun("readwrite", (s) => {
      const req = s.index("account").openKeyCursor(IDBKeyRange.only(accountId));
      req.onsuccess = () => {
        const cursor = req.result;
        if (cursor) {
          s.delete(cursor.primaryKey);
          cursor.continue();
        }
      };
      return null;
    }),
};

// ---------------------------------------------------------------------------------------------
// Options: styles, sizes, ranges, price

function normaliseOptions(raw) {
  const o = { ...FALLBACK_OPTIONS };
  if (!raw || typeof raw !== "object") return o;
  if (Array.isArray(raw.styles) && raw.styles.length) {
    o.styles = raw.styles
      .filter((s) => s && s.id)
      .map((s) => ({ id: String(s.id), name: String(s.name || s.id), default_guidance: s.default_guidance }));
  }
  if (Array.isArray(raw.sizes) && raw.sizes.length) {
    o.sizes = raw.sizes
      .map((s) => {
        const id = typeof s === "string" ? s : s.id || s.size || `${s.width}x${s.height}`;
        const [w, h] = String(id).split("x").map(Number);
        const width = Number(s.width) || w;
        const height = Number(s.height) || h;
        const ratio = s.aspect_ratio || (width === height ? "square" : width < height ? "portrait" : "landscape");
        return { id: String(id), width, height, aspect_ratio: ratio };
      })
      .filter((s) => s.width > 0 && s.height > 0);
  }
  for (const k of ["steps", "guidance"]) {
    if (raw[k] && typeof raw[k] === "object") o[k] = { ...FALLBACK_OPTIONS[k], ...raw[k] };
  }
  if (Number(raw.price_per_image) > 0) o.price_per_image = Number(raw.price_per_image);
  if (o.styles.some((s) => s.id === raw.default_style)) o.default_style = raw.default_style;
  if (o.sizes.some((s) => s.id === raw.default_size)) o.default_size = raw.default_size;
  return o;
}

function renderOptions() {
  const o = state.options;
  const styles = $("styles");
  const keepStyle = selectedStyle();
  styles.replaceChildren();
  o.styles.forEach((s) => {
    styles.append(chip("style", s.id, s.name, null));
  });
  setRadio("style", o.styles.some((s) => s.id === keepStyle) ? keepStyle : defaultStyle());

  const sizes = $("sizes");
  const keepSize = selectedSize();
  sizes.replaceChildren();
  o.sizes.forEach((s) => {
    sizes.append(chip("size", s.id, RATIO_NAMES[s.aspect_ratio] || s.aspect_ratio, `${s.width}×${s.height}`, s));
  });
  setRadio("size", o.sizes.some((s) => s.id === keepSize) ? keepSize : defaultSize());

  const steps = $("steps");
  steps.min = String(o.steps.min);
  steps.max = String(o.steps.max);
  if (!steps.dataset.touched) steps.value = String(o.steps.default);
  const guidance = $("guidance");
  guidance.min = String(o.guidance.min);
  guidance.max = String(o.guidance.max);
  $("price-tag").textContent = `· ${price()} credits`;
  $("generate").setAttribute("aria-label", `Generate, costs ${price()} credits`);
  updateGuidanceDefault();
  updateFrameRatio();
}

function chip(name, value, label, sub, size) {
  const id = `${name}-${value.replace(/[^a-z0-9-]/gi, "_")}`;
  const wrap = document.createElement("span");
  wrap.className = "chip";
  const input = document.createElement("input");
  input.type = "radio";
  input.name = name;
  input.value = value;
  input.id = id;
  const lab = document.createElement("label");
  lab.htmlFor = id;
  if (size) {
    const icon = document.createElement("span");
    icon.className = `ratio-icon ratio-${size.aspect_ratio}`;
    icon.setAttribute("aria-hidden", "true");
    lab.append(icon);
  }
  const main = document.createElement("span");
  main.textContent = label;
  lab.append(main);
  if (sub) {
    const small = document.createElement("span");
    small.className = "chip-sub";
    small.textContent = sub;
    lab.append(small);
  }
  wrap.append(input, lab);
  return wrap;
}

function defaultStyle() {
  const s = state.options.styles;
  return (s.find((x) => x.id === (state.options.default_style || "photo")) || s[0]).id;
}

function defaultSize() {
  const s = state.options.sizes;
  return (s.find((x) => x.id === state.options.default_size) || s[0]).id;
}

function selectedRadio(name) {
  const el = document.querySelector(`input[name="${name}"]:checked`);
  return el ? el.value : null;
}
const selectedStyle = () => selectedRadio("style");
const selectedSize = () => selectedRadio("size");

function setRadio(name, value) {
  for (const el of document.querySelectorAll(`input[name="${name}"]`)) el.checked = el.value === value;
}

function sizeInfo(id) {
  return (
    state.options.sizes.find((s) => s.id === id) ||
    (() => {
      const [width, height] = String(id).split("x").map(Number);
      return { id, width, height, aspect_ratio: "" };
    })()
  );
}

function styleInfo(id) {
  return state.options.styles.find((s) => s.id === id) || { id, name: id };
}

function updateGuidanceDefault() {
  const st = styleInfo(selectedStyle());
  const g = Number.isFinite(Number(st.default_guidance)) && st.default_guidance
    ? Number(st.default_guidance)
    : Number(state.options.guidance.default);
  const text = Number.isFinite(g) ? String(Math.round(g * 10) / 10) : "–";
  $("guidance-default").textContent = text;
  $("guidance").placeholder = text === "–" ? "Default" : text;
}

function updateFrameRatio(size = sizeInfo(selectedSize())) {
  if (!size || !size.width || !size.height) return;
  const frame = $("frame");
  frame.style.setProperty("--w", String(size.width));
  frame.style.setProperty("--h", String(size.height));
}

// ---------------------------------------------------------------------------------------------
// Account and sign-in

function show(el, on = true) {
  el.hidden = !on;
}

function renderAccount() {
  const a = state.account;
  show($("account-bar"), Boolean(a));
  if (!a) return;
  $("balance").textContent = fmtCredits(Number(a.balance));
  const al = a.allowance || {};
  const daily = Number(al.daily);
  if (daily === 0) {
    $("allowance").textContent = "none";
    $("allowance-daily").textContent = "";
  } else {
    $("allowance").textContent = fmtCredits(Number(al.remaining));
    $("allowance-daily").textContent = Number.isFinite(daily) ? ` of ${fmtCredits(daily)}` : "";
  }
  let resets = "";
  if (al.resets_at) {
    const t = typeof al.resets_at === "number" ? new Date(al.resets_at * 1000) : new Date(al.resets_at);
    if (!Number.isNaN(t.getTime())) resets = `Resets ${t.toLocaleString()}`;
  }
  $("allowance-wrap").title = resets;
}

let accountReads = 0;
async function refreshAccount() {
  const ticket = ++accountReads;
  const key = state.key;
  try {
    const account = await request("GET", "/v1/account");
    // An older read that answers late must not overwrite a newer one (or another account).
    if (ticket !== accountReads || key !== state.key) return state.account;
    state.account = account;
    renderAccount();
  } catch (e) {
    if (e.code === "invalid_api_key") signOut("Your API key is no longer accepted. Please sign in again.");
  }
  return state.account;
}

function showSignIn(message = "") {
  state.account = null;
  renderAccount();
  show($("studio"), false);
  show($("signin"));
  const err = $("signin-error");
  err.textContent = message;
  show(err, Boolean(message));
  document.body.dataset.view = "signin";
}

async function showStudio() {
  show($("signin"), false);
  show($("studio"));
  document.body.dataset.view = "studio";
  renderAccount();
  if (!state.account.age_confirmed) $("nsfw").checked = false;
  updateNsfwHint();
  await loadHistory();
}

async function signIn(event) {
  event.preventDefault();
  const input = $("api-key");
  const key = input.value.trim();
  const err = $("signin-error");
  if (!key) {
    err.textContent = "Paste your API key first.";
    show(err);
    input.focus();
    return;
  }
  const button = $("sign-in");
  button.disabled = true;
  button.textContent = "Signing in…";
  try {
    state.account = await request("GET", "/v1/account", { key });
    state.key = key;
    try {
      localStorage.setItem(KEY_STORAGE, key);
    } catch {
      /* storage disabled: the key lasts for this page only */
    }
    input.value = "";
    await showStudio();
    $("prompt").focus();
  } catch (e) {
    err.textContent =
      e.code === "invalid_api_key"
        ? "That key was not accepted. Check that you pasted all of it."
        : e.code === "network"
          ? "TALOS could not be reached. Check your connection and try again."
          : describeError(e);
    show(err);
    input.focus();
  } finally {
    button.disabled = false;
    button.textContent = "Sign in";
  }
}

function signOut(message = "") {
  const job = state.job;
  if (job) {
    cancelJob();
    // Nothing of this job may reach the page of whoever signs in next.
    job.detached = true;
    job.aborted = true;
    job.controller.abort();
    state.job = null;
    $("generate").disabled = false;
  }
  try {
    localStorage.removeItem(KEY_STORAGE);
  } catch {
    /* nothing stored */
  }
  state.key = null;
  clearStage();
  renderGallery([]);
  $("nsfw").checked = false;
  updateNsfwHint();
  showSignIn(message);
  $("api-key").focus();
}

// ---------------------------------------------------------------------------------------------
// NSFW toggle with a one-time age confirmation

function askAge() {
  const dialog = $("age-dialog");
  return new Promise((resolve) => {
    dialog.returnValue = "";
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm"), { once: true });
    dialog.showModal();
  });
}

function updateNsfwHint() {
  $("nsfw-hint").textContent = $("nsfw").checked
    ? "On: pictures are not scanned, adult content may appear."
    : "Off: adult pictures are withheld and refunded.";
}

async function onNsfwChange() {
  const toggle = $("nsfw");
  updateNsfwHint();
  if (!toggle.checked || (state.account && state.account.age_confirmed)) return;
  toggle.checked = false;
  const confirmed = await askAge();
  if (confirmed) {
    try {
      const res = await request("POST", "/v1/account/age-confirmation", { body: { confirm: true } });
      if (res && res.age_confirmed) {
        state.account.age_confirmed = true;
        toggle.checked = true;
      }
    } catch (e) {
      showError(e, "Could not record the age confirmation. ");
    }
  }
  updateNsfwHint();
  toggle.focus();
}

// ---------------------------------------------------------------------------------------------
// The form

function fieldError(id, message, focusId) {
  const el = $(id);
  el.textContent = message;
  show(el, Boolean(message));
  if (message && focusId) {
    const f = $(focusId);
    f.setAttribute("aria-invalid", "true");
    f.focus();
  }
}

function clearFieldErrors() {
  fieldError("prompt-error", "");
  fieldError("advanced-error", "");
  for (const id of ["prompt", "steps", "guidance", "seed"]) $(id).removeAttribute("aria-invalid");
}

function readForm() {
  clearFieldErrors();
  const o = state.options;
  const prompt = $("prompt").value.trim();
  if (!prompt) {
    fieldError("prompt-error", "Describe the picture first.", "prompt");
    return null;
  }
  const advancedError = (msg, id) => {
    $("advanced").open = true;
    fieldError("advanced-error", msg, id);
    return null;
  };
  const stepsText = $("steps").value.trim();
  const steps = stepsText === "" ? Number(o.steps.default) : Number(stepsText);
  if (!Number.isInteger(steps) || steps < o.steps.min || steps > o.steps.max) {
    return advancedError(`Steps must be a whole number from ${o.steps.min} to ${o.steps.max}.`, "steps");
  }
  const guidanceText = $("guidance").value.trim();
  let guidance = null;
  if (guidanceText !== "") {
    guidance = Number(guidanceText);
    if (!Number.isFinite(guidance) || guidance < o.guidance.min || guidance > o.guidance.max) {
      return advancedError(`Guidance must be a number from ${o.guidance.min} to ${o.guidance.max}.`, "guidance");
    }
  }
  const seedText = $("seed").value.trim();
  let seed = null;
  if (seedText !== "") {
    seed = /^\d{1,10}$/.test(seedText) ? Number(seedText) : NaN;
    if (!Number.isInteger(seed) || seed > MAX_SEED) {
      return advancedError(`Seed must be a whole number from 0 to ${MAX_SEED}, or empty for a random one.`, "seed");
    }
  }
  const params = {
    prompt,
    negative_prompt: $("negative-prompt").value.trim(),
    style: selectedStyle() || defaultStyle(),
    size: selectedSize() || defaultSize(),
    steps,
    guidance,
    seed,
    nsfw: $("nsfw").checked,
  };
  return params;
}

function requestBody(params) {
  const body = {
    prompt: params.prompt,
    style: params.style,
    size: params.size,
    steps: params.steps,
    nsfw: params.nsfw,
    output_format: "png",
  };
  if (params.negative_prompt) body.negative_prompt = params.negative_prompt;
  if (params.guidance !== null) body.guidance = params.guidance;
  if (params.seed !== null) body.seed = params.seed;
  return body;
}

function fillForm(params) {
  $("prompt").value = params.prompt || "";
  $("negative-prompt").value = params.negative_prompt || "";
  setRadio("style", params.style || defaultStyle());
  setRadio("size", params.size || defaultSize());
  $("steps").value = String(params.steps || state.options.steps.default);
  $("steps").dataset.touched = "1";
  $("guidance").value = params.guidance === null || params.guidance === undefined ? "" : String(params.guidance);
  $("seed").value = params.seed === null || params.seed === undefined ? "" : String(params.seed);
  $("nsfw").checked = Boolean(params.nsfw && state.account && state.account.age_confirmed);
  updateNsfwHint();
  $("advanced").open = true;
  clearFieldErrors();
  updateGuidanceDefault();
  updateFrameRatio();
}

// ---------------------------------------------------------------------------------------------
// Stage: progress, preview, result, errors

function setFrameState(s) {
  $("frame").dataset.state = s;
}

function revokeCurrent() {
  if (state.current && state.current.url) URL.revokeObjectURL(state.current.url);
  state.current = null;
}

function clearStage() {
  revokeCurrent();
  setPreview(null);
  const img = $("result");
  img.removeAttribute("src");
  show(img, false);
  $("frame-empty").textContent = "Your picture appears here.";
  show($("frame-empty"));
  show($("run"), false);
  show($("error"), false);
  show($("result-meta"), false);
  setFrameState("empty");
  updateFrameRatio();
}

let previewUrl = null;
function setPreview(bytes, sharpness = 0) {
  const img = $("preview");
  if (previewUrl) URL.revokeObjectURL(previewUrl);
  previewUrl = null;
  if (!bytes) {
    img.removeAttribute("src");
    show(img, false);
    return;
  }
  previewUrl = URL.createObjectURL(new Blob([bytes], { type: "image/jpeg" }));
  img.src = previewUrl;
  img.style.filter = `blur(${(Math.max(0, 1 - sharpness) * 10).toFixed(1)}px) saturate(${0.7 + 0.3 * sharpness})`;
  show(img);
  show($("frame-empty"), false);
}

function showError(err, prefix = "") {
  const box = $("error");
  $("error-text").textContent = prefix + describeError(err);
  box.dataset.code = err.code || "";
  box.dataset.tone = err.code === "cancelled" ? "info" : "error";
  const ref = $("error-ref");
  ref.textContent = err.requestId ? `Reference: ${err.requestId}` : "";
  show(ref, Boolean(err.requestId));
  show(box);
}

function setRun(text, { step = null, total = null, cancellable = true } = {}) {
  show($("run"));
  $("run-text").textContent = text;
  const bar = $("progress");
  if (step === null || !total) {
    bar.removeAttribute("value");
  } else {
    bar.max = total;
    bar.value = step;
  }
  show($("cancel"), cancellable);
}

function b64ToBytes(b64) {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

const MIME = { png: "image/png", jpeg: "image/jpeg", webp: "image/webp" };

function fileName(record) {
  const d = new Date(record.created);
  const pad = (n) => String(n).padStart(2, "0");
  const stamp = `${d.getFullYear()}${pad(d.getMonth() + 1)}${pad(d.getDate())}-${pad(d.getHours())}${pad(d.getMinutes())}${pad(d.getSeconds())}`;
  const ext = record.output_format === "jpeg" ? "jpg" : record.output_format || "png";
  return `talos-${stamp}-seed${record.params.seed}.${ext}`;
}

function showRecord(record) {
  revokeCurrent();
  const url = URL.createObjectURL(record.blob);
  state.current = { record, url };
  const size = { width: record.width, height: record.height };
  updateFrameRatio(size);
  setPreview(null);
  const img = $("result");
  img.alt = `Generated picture: ${record.params.prompt}`;
  img.src = url;
  show(img);
  show($("frame-empty"), false);
  $("result-seed").textContent = String(record.params.seed);
  $("result-size").textContent = `${record.width}×${record.height} · ${styleInfo(record.params.style).name}`;
  const a = $("result-download");
  a.href = url;
  a.download = fileName(record);
  show($("result-meta"));
  setFrameState("done");
}

function reuseSeed() {
  if (!state.current) return;
  $("seed").value = String(state.current.record.params.seed);
  $("advanced").open = true;
  $("seed").focus();
}

// ---------------------------------------------------------------------------------------------
// Generation: POST /v1/jobs, then GET /v1/jobs/{id}/events as SSE; Cancel is DELETE /v1/jobs/{id}

function newIdempotencyKey() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return `create-${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
}

async function startGenerate() {
  if (state.job) return;
  const params = readForm();
  if (!params) return;
  const size = sizeInfo(params.size);
  const job = {
    id: null,
    params,
    size,
    body: requestBody(params),
    idem: newIdempotencyKey(),
    controller: new AbortController(),
    cancelRequested: false,
    aborted: false,
    accountId: state.account.account_id,
    lastStep: 0,
    eventsSeen: 0,
    total: params.steps,
    startedAt: performance.now(),
  };
  state.job = job;
  document.body.dataset.busy = "true";
  const gen = $("generate");
  gen.disabled = true;
  $("cancel").disabled = false;
  revokeCurrent();
  show($("result"), false);
  show($("result-meta"), false);
  show($("error"), false);
  setPreview(null);
  show($("frame-empty"), false);
  updateFrameRatio(size);
  setFrameState("running");
  const hadFocus = document.activeElement === gen;
  setRun("Sending…");
  // Generate is disabled while the job runs: keep keyboard focus on a live control.
  if (hadFocus) $("cancel").focus();
  // On a narrow screen the picture sits below the form: bring it into view.
  const stageTop = $("stage").getBoundingClientRect().top;
  if (stageTop > window.innerHeight * 0.6) $("stage").scrollIntoView({ block: "start", behavior: "smooth" });

  try {
    const terminal = await runJob(job);
    if (job.detached) return;
    if (terminal.event === "completed") await finishCompleted(job, terminal.data);
    else failJob(job, terminal.data);
  } catch (e) {
    if (job.detached) return;
    if (job.aborted || (e && e.name === "AbortError")) {
      finishCancelled(job);
    } else {
      failJob(job, {
        error: { code: e.code || "internal", message: e.message },
        requestId: e.requestId,
        retryAfter: e.retryAfter,
        refunded: e.refunded,
      });
    }
  } finally {
    if (job.cancelTimer) clearTimeout(job.cancelTimer);
    if (state.job === job) state.job = null;
    if (!state.job) {
      delete document.body.dataset.busy;
      gen.disabled = false;
      const active = document.activeElement;
      if (!active || active === document.body || active === $("cancel")) gen.focus({ preventScroll: true });
    }
    if (state.key && !job.detached) refreshAccount();
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
  // A dropped stream is followed again (the server replays the job's state). While the browser
  // is offline the page waits for it to come back, as long as a finished result is kept.
  let failures = 0;
  let lostAt = 0;
  for (;;) {
    const seen = job.eventsSeen;
    let terminal = null;
    try {
      terminal = await followEvents(job);
    } catch (e) {
      if (job.aborted || (e && e.name === "AbortError")) throw e;
      if (e.code !== "network") throw e;
    }
    if (terminal) return terminal;
    if (job.eventsSeen > seen) failures = 0;
    failures += 1;
    lostAt = failures === 1 ? Date.now() : lostAt;
    const offline = navigator.onLine === false;
    if ((!offline && failures > RECONNECTS) || Date.now() - lostAt > OFFLINE_WAIT_MS) {
      throw await giveUp(job);
    }
    setRun(offline ? "Connection lost, waiting for the network…" : "Connection lost, reconnecting…", {
      step: job.lastStep || null,
      total: job.total,
    });
    await pause(job, offline ? OFFLINE_WAIT_MS - (Date.now() - lostAt) : 500 * 2 ** failures, offline);
  }
}

// The page cannot follow the job any more: cancel it so nothing is charged for a picture nobody sees.
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
      const name = msg.event !== "message" ? msg.event : data.event || data.type || "message";
      job.eventsSeen += 1;
      if (name === "completed" || name === "failed") return { event: name, data };
      onJobEvent(job, name, data);
    }
  } catch (e) {
    if (e && e.name === "AbortError") throw e;
    throw new ApiError("network", "network");
  }
  return null;
}

function onJobEvent(job, name, data) {
  if (job.cancelRequested) return;
  if (name === "queued") {
    const pos = Number(data.position);
    const eta = fmtSeconds(Number(data.eta_seconds));
    const where = Number.isFinite(pos) && pos > 0 ? `In the queue: position ${pos}` : "In the queue";
    setRun(eta ? `${where} · ${eta}` : where);
    setFrameState("queued");
  } else if (name === "started") {
    setRun("Starting on a render node…", { step: 0, total: job.total });
    setFrameState("running");
    refreshAccount();
  } else if (name === "progress") {
    const step = Number(data.step);
    const total = Number(data.total_steps) || job.total;
    job.total = total;
    job.lastStep = step;
    setRun(`Step ${step} of ${total}`, { step, total });
    setFrameState("running");
    if (data.preview_b64) {
      try {
        setPreview(b64ToBytes(data.preview_b64), step / total);
      } catch {
        /* a broken preview is skipped */
      }
    }
  }
}

async function finishCompleted(job, data) {
  const format = job.body.output_format;
  const bytes = b64ToBytes(data.b64_json);
  const blob = new Blob([bytes], { type: MIME[format] || "image/png" });
  const seconds = (performance.now() - job.startedAt) / 1000;
  const record = {
    id: data.job_id || job.id,
    account_id: job.accountId,
    created: Date.now(),
    blob,
    width: job.size.width,
    height: job.size.height,
    output_format: format,
    params: { ...job.params, seed: Number(data.seed) },
  };
  setRun(`Done: step ${job.total} of ${job.total} in ${seconds.toFixed(1)} s`, {
    step: job.total,
    total: job.total,
    cancellable: false,
  });
  showRecord(record);
  if (state.account && Number.isFinite(Number(data.balance))) {
    state.account.balance = Number(data.balance);
    renderAccount();
  }
  try {
    await historyDb.put(record);
  } catch {
    /* history unavailable: the picture is still shown and can be downloaded */
  }
  await loadHistory();
}

function failJob(job, data) {
  const err = (data && data.error) || {};
  setPreview(null);
  show($("run"), false);
  setFrameState("error");
  show($("frame-empty"));
  $("frame-empty").textContent = "No picture this time.";
  const e = new ApiError(err.code || "internal", err.message, {
    requestId: data && data.requestId,
    retryAfter: data && data.retryAfter,
    refunded: Boolean(data && data.refunded),
  });
  if (e.code === "age_confirmation_required" && state.account) {
    state.account.age_confirmed = false;
    $("nsfw").checked = false;
    updateNsfwHint();
  }
  showError(e);
  if (e.code === "invalid_api_key") signOut(describeError(e));
}

function finishCancelled() {
  failJob(null, { error: { code: "cancelled" }, refunded: true });
}

async function sendCancel(job) {
  try {
    await request("DELETE", `/v1/jobs/${encodeURIComponent(job.id)}`);
  } catch {
    /* already ended: the event stream tells how */
  }
}

function cancelJob() {
  const job = state.job;
  if (!job || job.cancelRequested) return;
  job.cancelRequested = true;
  $("cancel").disabled = true;
  $("run-text").textContent = "Cancelling…";
  if (job.id) sendCancel(job);
  // The stream ends with a failed(cancelled) event; stop waiting for it after a while.
  job.cancelTimer = setTimeout(() => {
    job.aborted = true;
    job.controller.abort();
  }, CANCEL_GRACE_MS);
}

// ---------------------------------------------------------------------------------------------
// History gallery

async function loadHistory() {
  const note = $("history-empty");
  if (!state.db) {
    renderGallery([]);
    note.textContent = "History is not available in this browser (private mode or storage turned off).";
    return;
  }
  note.textContent = "No pictures yet.";
  let records = [];
  try {
    records = state.account ? await historyDb.list(state.account.account_id) : [];
  } catch {
    records = [];
  }
  records.sort((a, b) => b.created - a.created);
  renderGallery(records);
}

function renderGallery(records) {
  for (const url of state.historyUrls) URL.revokeObjectURL(url);
  state.historyUrls = [];
  state.history = records;
  const list = $("gallery");
  const tpl = $("gallery-item");
  list.replaceChildren();
  for (const r of records) {
    const li = tpl.content.firstElementChild.cloneNode(true);
    const url = URL.createObjectURL(r.blob);
    state.historyUrls.push(url);
    li.dataset.id = r.id;
    const img = li.querySelector(".shot-img");
    img.src = url;
    img.alt = r.params.prompt;
    img.width = r.width;
    img.height = r.height;
    const promptEl = li.querySelector(".shot-prompt");
    promptEl.textContent = r.params.prompt;
    promptEl.id = `shot-${r.id}`;
    li.querySelector(".shot-meta").textContent =
      `${r.width}×${r.height} · ${styleInfo(r.params.style).name} · seed ${r.params.seed}`;
    const label = r.params.prompt.length > 60 ? `${r.params.prompt.slice(0, 57)}…` : r.params.prompt;
    const open = li.querySelector("button[data-action=open]");
    open.setAttribute("aria-label", `Open “${label}”`);
    const dl = li.querySelector("a[data-action=download]");
    dl.href = url;
    dl.download = fileName(r);
    dl.setAttribute("aria-label", `Download “${label}”`);
    li.querySelector("button[data-action=delete]").setAttribute("aria-label", `Delete “${label}”`);
    list.append(li);
  }
  $("history-count").textContent = records.length ? `(${records.length})` : "";
  show($("history-empty"), records.length === 0);
  $("clear-history").disabled = records.length === 0;
}

async function onGalleryClick(event) {
  const target = event.target.closest("[data-action]");
  if (!target || target.dataset.action === "download") return;
  const li = target.closest("li");
  const record = state.history.find((r) => r.id === li.dataset.id);
  if (!record) return;
  if (target.dataset.action === "open") {
    if (state.job) return;
    fillForm(record.params);
    show($("error"), false);
    show($("run"), false);
    showRecord(record);
    $("stage").scrollIntoView({ block: "nearest", behavior: "smooth" });
    $("prompt").focus({ preventScroll: true });
  } else if (target.dataset.action === "delete") {
    const items = [...$("gallery").children];
    const index = items.indexOf(li);
    try {
      await historyDb.remove(record.id);
    } catch {
      /* shown as still there by the reload below */
    }
    await loadHistory();
    const next = $("gallery").children[Math.min(index, $("gallery").children.length - 1)];
    if (next) {
      next.querySelector("button[data-action=open]").focus();
    } else {
      $("history-title").setAttribute("tabindex", "-1");
      $("history-title").focus();
    }
  }
}

function onClearHistory() {
  const dialog = $("clear-dialog");
  dialog.returnValue = "";
  dialog.addEventListener(
    "close",
    async () => {
      if (dialog.returnValue !== "clear" || !state.account) return;
      try {
        await historyDb.clear(state.account.account_id);
      } catch {
        /* reload shows what is left */
      }
      await loadHistory();
      $("prompt").focus();
    },
    { once: true },
  );
  dialog.showModal();
}

// ---------------------------------------------------------------------------------------------
// Wiring

function wire() {
  $("signin-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", () => signOut());
  $("create-form").addEventListener("submit", (e) => {
    e.preventDefault();
    startGenerate();
  });
  for (const id of ["prompt", "negative-prompt"]) {
    $(id).addEventListener("keydown", (e) => {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
        e.preventDefault();
        $("create-form").requestSubmit();
      }
    });
  }
  $("styles").addEventListener("change", updateGuidanceDefault);
  $("sizes").addEventListener("change", () => {
    if (!state.job && !state.current) updateFrameRatio();
  });
  $("steps").addEventListener("input", () => ($("steps").dataset.touched = "1"));
  $("nsfw").addEventListener("change", onNsfwChange);
  $("cancel").addEventListener("click", cancelJob);
  $("reuse-seed").addEventListener("click", reuseSeed);
  $("gallery").addEventListener("click", onGalleryClick);
  $("clear-history").addEventListener("click", onClearHistory);
  // Leaving the page mid-render cancels the job so nothing is charged for a picture nobody sees.
  window.addEventListener("pagehide", () => {
    const job = state.job;
    if (job && job.id && !job.cancelRequested) {
      request("DELETE", `/v1/jobs/${encodeURIComponent(job.id)}`, { keepalive: true }).catch(() => {});
    }
  });
}

async function loadOptions() {
  try {
    state.options = normaliseOptions(await request("GET", "/v1/options", { key: null }));
  } catch {
    state.options = FALLBACK_OPTIONS;
  }
  renderOptions();
}

async function main() {
  wire();
  renderOptions();
  const dbReady = openDb()
    .then((db) => (state.db = db))
    .catch((e) => (state.dbError = e));
  const optionsReady = loadOptions();
  let saved = null;
  try {
    saved = localStorage.getItem(KEY_STORAGE);
  } catch {
    saved = null;
  }
  if (!saved) {
    showSignIn();
    await Promise.all([dbReady, optionsReady]);
  } else {
    state.key = saved;
    try {
      const [account] = await Promise.all([request("GET", "/v1/account"), dbReady, optionsReady]);
      state.account = account;
      await showStudio();
    } catch (e) {
      await Promise.all([dbReady, optionsReady]);
      if (e.code === "invalid_api_key") {
        try {
          localStorage.removeItem(KEY_STORAGE);
        } catch {
          /* nothing stored */
        }
        state.key = null;
        showSignIn("Your saved API key is no longer accepted. Please sign in again.");
      } else {
        showSignIn("TALOS could not be reached. Check your connection, then sign in again.");
        $("api-key").value = saved;
      }
    }
  }
  document.documentElement.dataset.ready = "true";
}

main();
