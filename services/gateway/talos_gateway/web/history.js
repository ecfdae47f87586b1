// History: every image of a generation, kept in this browser's IndexedDB and never sent anywhere.
// A record is one image: its picture, or (for an image that came to nothing) why it was refunded.

import { $, show, state } from "./state.js";
import { failureText } from "./words.js";

const DB_NAME = "talos-create";
const DB_STORE = "images";
// Buttons name their picture by its prompt, cut to this length.
const LABEL_CHARS = 50;

export function openDb() {
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

export const historyDb = {
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

// Records written before a generation could hold several images are single images.
function normalise(record) {
  return { image: 0, n: 1, ...record };
}

export function fileName(record) {
  const d = new Date(record.created);
  const pad = (n) => String(n).padStart(2, "0");
  const day = `${d.getFullYear()}${pad(d.getMonth() + 1)}${pad(d.getDate())}`;
  const stamp = `${day}-${pad(d.getHours())}${pad(d.getMinutes())}${pad(d.getSeconds())}`;
  return `talos-${stamp}-seed${record.params.seed}.${record.output_format || "png"}`;
}

// Kept so a failed write does not lose the picture for this page's lifetime.
export async function saveRecord(record) {
  try {
    await historyDb.put(record);
  } catch {
    /* history unavailable: the picture is still shown and can be downloaded */
  }
}

export async function loadHistory(styleName) {
  const note = $("history-empty");
  if (!state.db) {
    renderGallery([], styleName);
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
  // Newest generation first; its images in their order.
  records = records.map(normalise).sort((a, b) => b.created - a.created || a.image - b.image);
  renderGallery(records, styleName);
}

let galleryUrls = [];

export function renderGallery(records, styleName) {
  for (const url of galleryUrls) URL.revokeObjectURL(url);
  galleryUrls = [];
  state.history = records;
  const list = $("gallery");
  const tpl = $("gallery-item");
  list.replaceChildren();
  for (const r of records) {
    const li = tpl.content.firstElementChild.cloneNode(true);
    li.dataset.id = r.id;
    const promptEl = li.querySelector(".shot-prompt");
    promptEl.textContent = r.params.prompt;
    const which = r.n > 1 ? ` · image ${r.image + 1} of ${r.n}` : "";
    const seed = Number.isInteger(r.params.seed) ? ` · seed ${r.params.seed}` : "";
    li.querySelector(".shot-meta").textContent = `${r.width}×${r.height} · ${styleName(r.params.style)}${seed}${which}`;
    const prompt = r.params.prompt;
    const short = prompt.length > LABEL_CHARS ? `${prompt.slice(0, LABEL_CHARS - 1)}…` : prompt;
    const name = r.n > 1 ? `“${short}”, image ${r.image + 1}` : `“${short}”`;
    li.querySelector("button[data-action=open]").setAttribute("aria-label", `Open ${name}`);
    li.querySelector("button[data-action=delete]").setAttribute("aria-label", `Delete ${name}`);
    const img = li.querySelector(".shot-img");
    const dl = li.querySelector("a[data-action=download]");
    if (r.blob) {
      const url = URL.createObjectURL(r.blob);
      galleryUrls.push(url);
      img.src = url;
      img.alt = r.params.prompt;
      img.width = r.width;
      img.height = r.height;
      dl.href = url;
      dl.download = fileName(r);
      dl.setAttribute("aria-label", `Download ${name}`);
    } else {
      li.dataset.state = "failed";
      img.remove();
      dl.remove();
      const failure = r.failure || {};
      const missing = li.querySelector(".shot-missing");
      missing.textContent = failure.refunded === false ? "Not charged" : "Refunded";
      show(missing);
      const refund = li.querySelector(".shot-refund");
      refund.textContent = failureText(failure);
      show(refund);
    }
    list.append(li);
  }
  $("history-count").textContent = records.length ? `(${records.length})` : "";
  show($("history-empty"), records.length === 0);
  $("clear-history").disabled = records.length === 0;
}
