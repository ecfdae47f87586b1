// TALOS /create: plain ES modules, no build step, no third-party code, no external requests.
// Talks only to the public HTTP API (docs/api.md); the form is built from GET /v1/options and
// the history lives in this browser's IndexedDB.

import { request } from "./api.js";
import { cancelJob, cancelOnLeave, detachJob, startGenerate } from "./generate.js";
import { historyDb, loadHistory, openDb, renderGallery } from "./history.js";
import {
  OptionsError,
  fillForm,
  parseOptions,
  renderForm,
  selectedRadio,
  sizeInfo,
  styleName,
  updateGuidanceDefault,
  updatePrice,
} from "./options.js";
import {
  clearStage,
  hideRun,
  openTiles,
  setStageState,
  showError,
  tileDone,
  tileFailed,
  updatePlaceholder,
} from "./stage.js";
import { $, hooks, show, state } from "./state.js";
import { describeError, fmtCredits } from "./words.js";

const KEY_STORAGE = "talos.apiKey";

// ---------------------------------------------------------------------------------------------
// Account and sign-in

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
  await loadHistory(styleName);
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
    focusForm();
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
  detachJob();
  try {
    localStorage.removeItem(KEY_STORAGE);
  } catch {
    /* nothing stored */
  }
  state.key = null;
  clearStage();
  renderGallery([], styleName);
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
    : "Off: adult pictures and previews are withheld, and withheld pictures are refunded.";
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
      showError(e, { prefix: "Could not record the age confirmation. " });
    }
  }
  updateNsfwHint();
  toggle.focus();
}

// ---------------------------------------------------------------------------------------------
// Options: the form exists only once GET /v1/options has been read

function focusForm() {
  if (state.options && !$("studio").hidden) $("prompt").focus();
}

function setFormState(s, message = "") {
  $("create-form").dataset.options = s;
  show($("form-body"), s === "ready");
  show($("options-loading"), s === "loading");
  show($("options-error"), s === "error");
  $("options-error-text").textContent = message;
}

async function loadOptions() {
  setFormState("loading");
  $("options-retry").disabled = true;
  try {
    state.options = parseOptions(await request("GET", "/v1/options", { key: null }));
    renderForm();
    if (!state.job && $("stage").dataset.state === "empty") updatePlaceholder(sizeInfo(selectedRadio("size")));
    setFormState("ready");
    if (state.history.length) renderGallery(state.history, styleName);
    // Signed in while the options were on their way: the prompt is where typing starts.
    if (!$("studio").hidden && (!document.activeElement || document.activeElement === document.body)) {
      $("prompt").focus();
    }
  } catch (e) {
    state.options = null;
    const why =
      e instanceof OptionsError
        ? `TALOS answered with options this page cannot read (${e.message}).`
        : e.code === "network"
          ? "TALOS could not be reached."
          : `TALOS answered ${e.status || ""} ${e.code || ""}`.replace(/\s+/g, " ").trim() + ".";
    setFormState("error", `The form could not be loaded: the styles, sizes and limits come from TALOS. ${why}`);
  } finally {
    $("options-retry").disabled = false;
  }
}

async function retryOptions() {
  await loadOptions();
  if (state.options) focusForm();
  else $("options-retry").focus();
}

// ---------------------------------------------------------------------------------------------
// Stage and history clicks

function reuseSeed(event) {
  const button = event.target.closest("[data-action=reuse]");
  if (!button) return;
  const li = button.closest("li");
  if (!li || !li.dataset.seed) return;
  $("seed").value = li.dataset.seed;
  $("advanced").open = true;
  $("seed").focus();
}

function showRecord(record) {
  openTiles(1, { width: record.width, height: record.height });
  hideRun();
  if (record.blob) tileDone(0, { ...record, n: 1 }, "From your history");
  else tileFailed(0, record.failure || {});
  setStageState(record.blob ? "done" : "error");
}

async function onGalleryClick(event) {
  const target = event.target.closest("[data-action]");
  if (!target || target.dataset.action === "download") return;
  const li = target.closest("li");
  const record = state.history.find((r) => r.id === li.dataset.id);
  if (!record) return;
  if (target.dataset.action === "open") {
    if (state.job || !state.options) return;
    fillForm(record.params);
    showRecord(record);
    $("stage").scrollIntoView({ block: "nearest", behavior: "smooth" });
    $("prompt").focus({ preventScroll: true });
  } else if (target.dataset.action === "delete") {
    const index = [...$("gallery").children].indexOf(li);
    try {
      await historyDb.remove(record.id);
    } catch {
      /* shown as still there by the reload below */
    }
    await loadHistory(styleName);
    const items = $("gallery").children;
    const next = items[Math.min(index, items.length - 1)];
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
      await loadHistory(styleName);
      focusForm();
    },
    { once: true },
  );
  dialog.showModal();
}

// ---------------------------------------------------------------------------------------------
// Wiring

function wire() {
  Object.assign(hooks, { signOut, refreshAccount, updateNsfwHint });
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
    if (!state.job && $("stage").dataset.state === "empty") updatePlaceholder(sizeInfo(selectedRadio("size")));
  });
  $("counts").addEventListener("change", updatePrice);
  $("steps").addEventListener("input", () => ($("steps").dataset.touched = "1"));
  $("nsfw").addEventListener("change", onNsfwChange);
  $("cancel").addEventListener("click", cancelJob);
  $("results").addEventListener("click", reuseSeed);
  $("options-retry").addEventListener("click", retryOptions);
  $("gallery").addEventListener("click", onGalleryClick);
  $("clear-history").addEventListener("click", onClearHistory);
  window.addEventListener("pagehide", cancelOnLeave);
}

async function main() {
  wire();
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
