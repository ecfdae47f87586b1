// The stage: one tile per image of a generation (its progress, live preview, result or why it
// was refunded), the run line with Cancel, and the alert box.

import { fileName } from "./history.js";
import { $, show } from "./state.js";
import { describeError, failureText } from "./words.js";

// Object URLs of the pictures on the stage, revoked whenever the stage is cleared.
const urls = new Set();

function release(url) {
  if (!url) return;
  URL.revokeObjectURL(url);
  urls.delete(url);
}

function blobUrl(blob) {
  const url = URL.createObjectURL(blob);
  urls.add(url);
  return url;
}

function setRatio(el, size) {
  if (!size || !size.width || !size.height) return;
  el.style.setProperty("--w", String(size.width));
  el.style.setProperty("--h", String(size.height));
}

export function setStageState(s) {
  $("stage").dataset.state = s;
}

export function updatePlaceholder(size) {
  setRatio($("placeholder"), size);
}

export function clearStage(size = null) {
  for (const url of [...urls]) release(url);
  $("results").replaceChildren();
  show($("results"), false);
  $("placeholder-text").textContent = "Your picture appears here.";
  show($("placeholder"));
  show($("run"), false);
  show($("error"), false);
  setStageState("empty");
  if (size) updatePlaceholder(size);
}

// A generation that never started (refused, no credits, no node): no tiles, just why.
export function noPicture(size) {
  clearStage(size);
  $("placeholder-text").textContent = "No picture this time.";
  setStageState("error");
}

export function openTiles(count, size) {
  for (const url of [...urls]) release(url);
  const list = $("results");
  const tpl = $("tile-template");
  const tiles = [];
  for (let i = 0; i < count; i++) {
    const li = tpl.content.firstElementChild.cloneNode(true);
    li.dataset.index = String(i);
    if (count > 1) li.setAttribute("aria-label", `Image ${i + 1} of ${count}`);
    setRatio(li.querySelector(".tile-frame"), size);
    tiles.push(li);
  }
  list.replaceChildren(...tiles);
  list.classList.toggle("single", count === 1);
  show($("placeholder"), false);
  show(list);
  show($("error"), false);
}

function tile(i) {
  return $("results").children[i] || null;
}

function note(li, text, kind = "") {
  const el = li.querySelector(".tile-note");
  el.textContent = text;
  el.dataset.kind = kind;
  show(el, Boolean(text));
}

// "Download" alone when the stage shows one image, "Download image 3" when it shows several.
function label(li, single, several) {
  const count = $("results").children.length;
  return count > 1 ? `${several} ${Number(li.dataset.index) + 1}` : single;
}

export function tileStatus(i, s, text) {
  const li = tile(i);
  if (!li) return;
  li.dataset.state = s;
  li.querySelector(".tile-status").textContent = text;
  if (s === "queued" || s === "waiting") note(li, text);
}

export function tileProgress(i, step, total) {
  const li = tile(i);
  if (!li) return;
  const bar = li.querySelector(".tile-progress");
  bar.max = total;
  bar.value = step;
  li.dataset.state = "running";
  li.querySelector(".tile-status").textContent = `Step ${step} of ${total}`;
  if (li.dataset.preview !== "withheld" && !li.querySelector(".tile-preview").src) note(li, "");
}

export function tilePreview(i, bytes, sharpness) {
  const li = tile(i);
  if (!li) return;
  const img = li.querySelector(".tile-preview");
  release(img.src);
  img.src = blobUrl(new Blob([bytes], { type: "image/jpeg" }));
  img.style.filter = `blur(${(Math.max(0, 1 - sharpness) * 10).toFixed(1)}px) saturate(${0.7 + 0.3 * sharpness})`;
  show(img);
  li.dataset.preview = "shown";
  note(li, "");
}

// With 18+ off the server withholds a preview its classifier flags: no bytes, the render goes on.
export function tileWithheld(i) {
  const li = tile(i);
  if (!li) return;
  const img = li.querySelector(".tile-preview");
  release(img.src);
  img.removeAttribute("src");
  show(img, false);
  li.dataset.preview = "withheld";
  note(li, "Preview hidden (18+ off)", "withheld");
}

function clearPreview(li) {
  const img = li.querySelector(".tile-preview");
  release(img.src);
  img.removeAttribute("src");
  show(img, false);
  delete li.dataset.preview;
}

export function tileDone(i, record, status = "Done") {
  const li = tile(i);
  if (!li) return;
  clearPreview(li);
  const url = blobUrl(record.blob);
  const img = li.querySelector(".tile-result");
  img.alt = `Generated picture${record.n > 1 ? ` ${record.image + 1} of ${record.n}` : ""}: ${record.params.prompt}`;
  img.src = url;
  show(img);
  note(li, "");
  li.dataset.state = "done";
  li.dataset.seed = String(record.params.seed);
  li.querySelector(".tile-status").textContent = status;
  const bar = li.querySelector(".tile-progress");
  bar.value = bar.max;
  li.querySelector(".tile-seed").textContent = String(record.params.seed);
  const reuse = li.querySelector("[data-action=reuse]");
  reuse.setAttribute("aria-label", label(li, "Reuse seed", "Reuse seed of image"));
  const a = li.querySelector("[data-action=download]");
  a.href = url;
  a.download = fileName(record);
  a.setAttribute("aria-label", label(li, "Download", "Download image"));
  show(a);
  show(li.querySelector(".tile-meta"));
}

export function tileFailed(i, failure) {
  const li = tile(i);
  if (!li) return;
  clearPreview(li);
  show(li.querySelector(".tile-result"), false);
  li.dataset.state = "failed";
  li.dataset.code = failure.code || "internal";
  const text = failureText(failure);
  li.querySelector(".tile-status").textContent = text;
  note(li, text, "failed");
  if (Number.isInteger(failure.seed)) {
    li.dataset.seed = String(failure.seed);
    li.querySelector(".tile-seed").textContent = String(failure.seed);
    li.querySelector("[data-action=reuse]").setAttribute("aria-label", label(li, "Reuse seed", "Reuse seed of image"));
    show(li.querySelector("[data-action=download]"), false);
    show(li.querySelector(".tile-meta"));
  }
}

export function setRun(text, { step = null, total = null, cancellable = true } = {}) {
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

export function hideRun() {
  show($("run"), false);
}

export function showAlert({ code, tone, text, requestId = null }) {
  const box = $("error");
  $("error-text").textContent = text;
  box.dataset.code = code || "";
  box.dataset.tone = tone;
  const ref = $("error-ref");
  ref.textContent = requestId ? `Reference: ${requestId}` : "";
  show(ref, Boolean(requestId));
  show(box);
}

export function showError(err, { prefix = "", n = 1 } = {}) {
  showAlert({
    code: err.code || "",
    tone: err.code === "cancelled" ? "info" : "error",
    text: prefix + describeError(err, n),
    requestId: err.requestId,
  });
}

export function hideAlert() {
  show($("error"), false);
}
