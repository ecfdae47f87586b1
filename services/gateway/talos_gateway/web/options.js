// The form, built from GET /v1/options. Styles, sizes, images per generation, every bound and
// default, and the price come from the server's answer: the page keeps no copy of them.

import { $, show, state } from "./state.js";
import { capitalise, fmtCredits, plural, price } from "./words.js";

export class OptionsError extends Error {}

function range(raw, name, { needsDefault = true } = {}) {
  const r = raw[name];
  const finite = (v) => typeof v === "number" && Number.isFinite(v);
  if (!r || !finite(r.min) || !finite(r.max) || r.min > r.max || (needsDefault && !finite(r.default))) {
    throw new OptionsError(`'${name}' is missing or malformed`);
  }
  return { min: r.min, max: r.max, default: finite(r.default) ? r.default : null };
}

export function parseOptions(raw) {
  if (!raw || typeof raw !== "object") throw new OptionsError("not a JSON object");
  const styles = (Array.isArray(raw.styles) ? raw.styles : [])
    .filter((s) => s && typeof s.id === "string" && s.id)
    .map((s) => ({
      id: s.id,
      name: String(s.name || s.id),
      prompt_template: typeof s.prompt_template === "string" ? s.prompt_template : "",
      default_guidance: Number(s.default_guidance),
    }));
  const sizes = (Array.isArray(raw.sizes) ? raw.sizes : [])
    .filter((s) => s && typeof s.id === "string" && Number(s.width) > 0 && Number(s.height) > 0)
    .map((s) => ({
      id: s.id,
      width: Number(s.width),
      height: Number(s.height),
      aspect_ratio: String(s.aspect_ratio || s.id),
    }));
  if (!styles.length) throw new OptionsError("no styles");
  if (!sizes.length) throw new OptionsError("no sizes");
  const perImage = Number(raw.price_per_image);
  if (!(perImage > 0)) throw new OptionsError("no price");
  return {
    styles,
    sizes,
    default_style: styles.some((s) => s.id === raw.default_style) ? raw.default_style : styles[0].id,
    default_size: sizes.some((s) => s.id === raw.default_size) ? raw.default_size : sizes[0].id,
    n: range(raw, "n"),
    steps: range(raw, "steps"),
    guidance: range(raw, "guidance", { needsDefault: false }),
    seed: range(raw, "seed", { needsDefault: false }),
    price_per_image: perImage,
    fields: raw.fields && typeof raw.fields === "object" ? raw.fields : {},
  };
}

// -- building the form ---------------------------------------------------------------------------

function chip(name, { value, label, sub = "", hidden = "", size = null }) {
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
    // The icon's shape follows the size itself (CSSOM custom properties pass the CSP).
    const band = document.createElement("span");
    band.className = "ratio-band";
    band.setAttribute("aria-hidden", "true");
    const icon = document.createElement("span");
    icon.className = "ratio-icon";
    const longest = Math.max(size.width, size.height);
    icon.style.setProperty("--iw", String(size.width / longest));
    icon.style.setProperty("--ih", String(size.height / longest));
    band.append(icon);
    lab.append(band);
  }
  const main = document.createElement("span");
  main.textContent = label;
  lab.append(main);
  if (hidden) {
    const extra = document.createElement("span");
    extra.className = "visually-hidden";
    extra.textContent = hidden;
    lab.append(extra);
  }
  if (sub) {
    const small = document.createElement("span");
    small.className = "chip-sub";
    small.textContent = sub;
    lab.append(small);
  }
  wrap.append(input, lab);
  return wrap;
}

function buildChoices(container, name, items, fallback) {
  const keep = selectedRadio(name);
  container.replaceChildren(...items.map((item) => chip(name, item)));
  setRadio(name, items.some((item) => item.value === keep) ? keep : fallback);
}

function countItems(o) {
  const items = [];
  for (let n = o.n.min; n <= o.n.max; n++) {
    items.push({ value: String(n), label: String(n), hidden: plural(n, " image", " images") });
  }
  return items;
}

function hint(id, text) {
  const el = $(id);
  el.textContent = text || "";
  show(el, Boolean(text));
}

function fieldText(name, key) {
  const f = state.options.fields[name];
  return f && typeof f[key] === "string" ? f[key] : "";
}

export function renderForm() {
  const o = state.options;
  buildChoices(
    $("styles"),
    "style",
    o.styles.map((s) => ({ value: s.id, label: s.name })),
    o.default_style,
  );
  buildChoices(
    $("sizes"),
    "size",
    o.sizes.map((s) => ({ value: s.id, label: capitalise(s.aspect_ratio), sub: `${s.width}×${s.height}`, size: s })),
    o.default_size,
  );
  buildChoices($("counts"), "n", countItems(o), String(o.n.default));
  hint("counts-hint", fieldText("n", "description"));

  const steps = $("steps");
  steps.min = String(o.steps.min);
  steps.max = String(o.steps.max);
  if (!steps.dataset.touched) steps.value = String(o.steps.default);
  hint("steps-hint", `Steps: ${o.steps.min} to ${o.steps.max}, default ${o.steps.default}.`);
  const guidance = $("guidance");
  guidance.min = String(o.guidance.min);
  guidance.max = String(o.guidance.max);
  const seed = $("seed");
  seed.maxLength = String(o.seed.max).length;
  hint("seed-hint", fieldText("seed", "description"));
  updatePrice();
  updateGuidanceDefault();
}

// -- reading it ------------------------------------------------------------------------------------

export function selectedRadio(name) {
  const el = document.querySelector(`input[name="${name}"]:checked`);
  return el ? el.value : null;
}

export function setRadio(name, value) {
  for (const el of document.querySelectorAll(`input[name="${name}"]`)) el.checked = el.value === value;
}

export function selectedCount() {
  const o = state.options;
  const n = Number(selectedRadio("n"));
  return Number.isInteger(n) && n >= o.n.min && n <= o.n.max ? n : o.n.default;
}

export function sizeInfo(id) {
  const sizes = state.options ? state.options.sizes : [];
  const known = sizes.find((s) => s.id === id);
  if (known) return known;
  const [width, height] = String(id).split("x").map(Number);
  return { id, width, height, aspect_ratio: "" };
}

export function styleName(id) {
  const style = state.options && state.options.styles.find((s) => s.id === id);
  return style ? style.name : id;
}

export function updatePrice() {
  if (!state.options) return;
  const n = selectedCount();
  const each = price();
  const total = fmtCredits(each * n);
  $("price-tag").textContent = n === 1 ? `· ${total} credits` : `· ${n} × ${fmtCredits(each)} = ${total} credits`;
  $("generate").setAttribute(
    "aria-label",
    `Generate ${n} ${plural(n, "image", "images")}, costs ${total} credits`,
  );
}

export function updateGuidanceDefault() {
  const o = state.options;
  if (!o) return;
  const st = o.styles.find((s) => s.id === selectedRadio("style"));
  const g = st && st.default_guidance > 0 ? st.default_guidance : o.guidance.default;
  const text = Number.isFinite(g) ? String(Math.round(g * 10) / 10) : "–";
  $("guidance-default").textContent = text;
  $("guidance").placeholder = text === "–" ? "Default" : text;
}

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

export function clearFieldErrors() {
  fieldError("prompt-error", "");
  fieldError("advanced-error", "");
  for (const id of ["prompt", "steps", "guidance", "seed"]) $(id).removeAttribute("aria-invalid");
}

export function readForm() {
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
  const steps = stepsText === "" ? o.steps.default : Number(stepsText);
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
    seed = /^\d+$/.test(seedText) ? Number(seedText) : Number.NaN;
    if (!Number.isSafeInteger(seed) || seed < o.seed.min || seed > o.seed.max) {
      return advancedError(
        `Seed must be a whole number from ${o.seed.min} to ${o.seed.max}, or empty for a random one.`,
        "seed",
      );
    }
  }
  return {
    prompt,
    negative_prompt: $("negative-prompt").value.trim(),
    style: selectedRadio("style") || o.default_style,
    size: selectedRadio("size") || o.default_size,
    n: selectedCount(),
    steps,
    guidance,
    seed,
    nsfw: $("nsfw").checked,
  };
}

// The server's defaults apply to whatever the body leaves out (the output format among them).
export function requestBody(params) {
  const body = {
    prompt: params.prompt,
    style: params.style,
    size: params.size,
    n: params.n,
    steps: params.steps,
    nsfw: params.nsfw,
  };
  if (params.negative_prompt) body.negative_prompt = params.negative_prompt;
  if (params.guidance !== null) body.guidance = params.guidance;
  if (params.seed !== null) body.seed = params.seed;
  return body;
}

// Puts one picture's parameters back: its own seed, one image, so Generate makes it again.
export function fillForm(params) {
  const o = state.options;
  $("prompt").value = params.prompt || "";
  $("negative-prompt").value = params.negative_prompt || "";
  setRadio("style", o && o.styles.some((s) => s.id === params.style) ? params.style : o && o.default_style);
  setRadio("size", o && o.sizes.some((s) => s.id === params.size) ? params.size : o && o.default_size);
  if (o) setRadio("n", String(o.n.min));
  $("steps").value = String(params.steps || (o && o.steps.default) || "");
  $("steps").dataset.touched = "1";
  $("guidance").value = params.guidance === null || params.guidance === undefined ? "" : String(params.guidance);
  $("seed").value = params.seed === null || params.seed === undefined ? "" : String(params.seed);
  $("nsfw").checked = Boolean(params.nsfw && state.account && state.account.age_confirmed);
  $("advanced").open = true;
  clearFieldErrors();
  updatePrice();
  updateGuidanceDefault();
}
