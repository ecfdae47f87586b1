// What the page's modules share: the signed-in key and account, the form's options, the job.

export const state = {
  key: null,
  account: null,
  // GET /v1/options, checked by options.js; null until it has been read.
  options: null,
  job: null,
  history: [],
  db: null,
  dbError: null,
};

export const $ = (id) => document.getElementById(id);

export function show(el, on = true) {
  el.hidden = !on;
}

// Filled in by app.js, so the modules below it can sign out, reread the balance or redo the
// NSFW hint without importing the module that imports them.
export const hooks = {
  signOut: (message = "") => message,
  refreshAccount: async () => state.account,
  updateNsfwHint: () => {},
};
