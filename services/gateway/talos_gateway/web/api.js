// The public HTTP API (docs/api.md): JSON calls, and server-sent events read from a fetch body.

import { state } from "./state.js";

export class ApiError extends Error {
  constructor(code, message, { status = 0, retryAfter = null, requestId = null, refunded = false } = {}) {
    super(message || code);
    this.code = code;
    this.status = status;
    this.retryAfter = retryAfter;
    this.requestId = requestId;
    this.refunded = refunded;
  }
}

// Only for an answer without TALOS's error body (a proxy in between, for instance).
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

export function authHeaders(key = state.key) {
  return key ? { Authorization: `Bearer ${key}` } : {};
}

export async function errorFromResponse(res) {
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

export async function request(method, path, { body, key, headers = {}, signal, keepalive = false } = {}) {
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

// EventSource cannot send the Authorization header, so the stream is read from fetch.
export async function* readEvents(response) {
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

export function b64ToBytes(b64) {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}
