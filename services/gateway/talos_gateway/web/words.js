// What the page says, in plain words: errors, and why an image was refunded.

import { state } from "./state.js";

const SECOND_MS = 1000;
const MINUTE_MS = 60_000;

export function fmtSeconds(s) {
  if (!Number.isFinite(s) || s <= 0) return "";
  if (s < 1.5) return "about a second";
  if (s < 90) return `about ${Math.round(s)} seconds`;
  return `about ${Math.round((s * SECOND_MS) / MINUTE_MS)} minutes`;
}

export function fmtCredits(n) {
  return Number.isFinite(n) ? Math.round(n).toLocaleString("en-US") : "–";
}

export function price() {
  return state.options ? state.options.price_per_image : Number.NaN;
}

export function capitalise(text) {
  return text ? text[0].toUpperCase() + text.slice(1) : text;
}

export function plural(count, one, many) {
  return count === 1 ? one : many;
}

export function describeError(err, n = 1) {
  const retry = err.retryAfter ? ` Try again in ${fmtSeconds(err.retryAfter).replace("about ", "")}.` : " Try again in a moment.";
  switch (err.code) {
    case "insufficient_credits": {
      const a = state.account;
      const have = a ? ` You have ${fmtCredits(a.balance)} credits and ${fmtCredits(a.allowance && a.allowance.remaining)} left of today's allowance.` : "";
      const cost = n === 1 ? "an image costs" : `${n} images cost`;
      return `Not enough credits: ${cost} ${fmtCredits(price() * n)} credits.${have} Nothing was charged.`;
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

// Why one image of a generation came to nothing, short enough for its tile and history entry.
const REASONS = {
  output_blocked: "withheld: looked like adult content",
  cancelled: "cancelled",
  timeout: "took too long",
  unavailable: "TALOS was briefly unavailable",
  network: "the connection was lost",
  not_found: "no longer available",
};

// An image that was never delivered is never charged; "refunded" says its hold was released.
export function failureText(failure) {
  const reason = REASONS[failure.code] || `failed on our side (${failure.code || "internal"})`;
  return `${capitalise(reason)}; ${failure.refunded === false ? "not charged" : "refunded"}`;
}

export function imageList(indices) {
  const nums = indices.map((i) => i + 1);
  if (nums.length === 1) return `image ${nums[0]}`;
  return `images ${nums.slice(0, -1).join(", ")} and ${nums[nums.length - 1]}`;
}

function groupSentence(code, indices) {
  const who = capitalise(imageList(indices));
  const were = plural(indices.length, "was", "were");
  switch (code) {
    case "output_blocked":
      return (
        `${who} ${were} withheld: ${plural(indices.length, "it", "they")} looked like adult content ` +
        "and NSFW (18+) is off."
      );
    case "cancelled":
      return `${who} ${were} cancelled.`;
    case "timeout":
      return `${who} took too long and ${were} stopped.`;
    case "network":
      return `${who} ${were} lost with the connection.`;
    case "not_found":
      return `${who} ${were} no longer available.`;
    case "unavailable":
      return `${who} could not be made: TALOS was briefly unavailable.`;
    default:
      return `${who} failed on our side (${code || "internal"}).`;
  }
}

// The end of a generation of several images: which were delivered, which refunded and why.
export function generationSummary(images, { cancelled = false } = {}) {
  const failed = [];
  const delivered = [];
  images.forEach((im, i) => (im.failure ? failed : im.state === "done" ? delivered : []).push(i));
  const groups = new Map();
  for (const i of failed) {
    const code = images[i].failure.code;
    if (!groups.has(code)) groups.set(code, []);
    groups.get(code).push(i);
  }
  const parts = cancelled ? ["Cancelled."] : [];
  for (const [code, indices] of groups) {
    if (!(cancelled && code === "cancelled")) parts.push(groupSentence(code, indices));
  }
  const refunded = failed.filter((i) => images[i].failure.refunded !== false);
  const unknown = failed.filter((i) => images[i].failure.refunded === false);
  const credits = (indices) => `${fmtCredits(indices.length * price())} credits`;
  if (refunded.length) parts.push(`Refunded: ${imageList(refunded)} (${credits(refunded)}).`);
  if (unknown.length) parts.push(`Not charged: ${imageList(unknown)}.`);
  if (delivered.length) {
    const were = plural(delivered.length, "was", "were");
    parts.push(`${capitalise(imageList(delivered))} ${were} delivered (${credits(delivered)}).`);
  }
  const codes = [...groups.keys()];
  return {
    code: codes.length === 1 ? codes[0] : "mixed",
    tone: codes.every((c) => c === "cancelled") ? "info" : "error",
    text: parts.join(" "),
  };
}
