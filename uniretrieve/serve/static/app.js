// The uniretrieve search page: plain JavaScript modules over the HTTP API of `uniretrieve serve` (docs/serving.md).
// This module holds the page's state and wires the form, the dialogs and drag-and-drop to the API.
// Every piece of data reaches the page through textContent or element attributes, never as HTML.

import { api, apiKey, loadImage } from "./api.js";
import { itemDialog, keyDialog } from "./dialogs.js";
import { basename, fmtNumber, h, withSize } from "./dom.js";
import { fmtWeight, isComposed, queryTerms, queryTokens } from "./query.js";
import { LIKE_TYPE, renderHits, renderStats } from "./results.js";

const HEALTH_EVERY_MS = 15000;
const DEFAULT_K = "20";

const $ = (id) => document.getElementById(id);
const el = {
  form: $("search-form"),
  q: $("q"),
  file: $("file"),
  queryBox: $("query-box"),
  hintDefault: $("hint-default"),
  hintTerms: $("hint-terms"),
  instruction: $("instruction"),
  where: $("where"),
  whereHint: $("where-hint"),
  k: $("k"),
  imageChip: $("image-chip"),
  imagePreview: $("image-preview"),
  imageName: $("image-name"),
  imageClear: $("image-clear"),
  likeChip: $("like-chip"),
  likeThumb: $("like-thumb"),
  likeLabel: $("like-label"),
  likeClear: $("like-clear"),
  info: $("info"),
  keyButton: $("key-button"),
  error: $("error"),
  errorText: $("error-text"),
  errorClose: $("error-close"),
  stats: $("stats"),
  results: $("results"),
  empty: $("empty"),
  dropOverlay: $("drop-overlay"),
};

const state = {
  info: null,
  version: null,
  image: null, // the File searched with
  imagePreviewURL: null,
  like: null, // the hit (or item) "more like this" searches from
  hits: new Map(), // internal_id -> hit of the current results, for drag-and-drop of a result
  thumbURLs: [], // object URLs of thumbnails fetched with the API key, revoked on the next render
  controller: null, // AbortController of the search in flight
  shownInfo: new Map(), // header label -> value last shown
};

// ---------------------------------------------------------------- errors

function showError(message) {
  el.errorText.textContent = message;
  el.error.hidden = false;
}

function clearError() {
  el.error.hidden = true;
  el.errorText.textContent = "";
}

// ---------------------------------------------------------------- API key

const keys = keyDialog();

el.keyButton.addEventListener("click", async () => {
  const message = apiKey() ? "Change the API key kept in this browser." : unauthorizedMessage();
  if ((await keys.ask(message)) && (await loadInfo()) && el.q.value.trim()) search();
});

function unauthorizedMessage() {
  return apiKey()
    ? "The server refused the stored API key. Enter the key it was started with."
    : "This server asks for an API key. It is kept in this browser only (local storage) and sent with each request.";
}

// After 401: ask for a key; true when one was entered (retry), false (with a message) when the user declined.
async function keyForRetry() {
  if (await keys.ask(unauthorizedMessage())) return true;
  el.keyButton.hidden = false;
  showError("This server needs an API key: choose “API key” at the top right to enter it.");
  return false;
}

// ---------------------------------------------------------------- index info

async function loadInfo() {
  try {
    const info = await api("/info");
    state.info = info;
    renderInfo(info);
    return true;
  } catch (err) {
    if (err.status === 401) return (await keyForRetry()) ? loadInfo() : false;
    renderInfo(null);
    showError(err.message);
    return false;
  }
}

function renderInfo(info) {
  el.info.replaceChildren();
  if (!info) return;
  const model = info.model || {};
  const index = info.index || {};
  const modelName = model.name || model.model_id;
  const entries = [
    ["Model", modelName ? basename(modelName) : null, model.model_id],
    ["Family", model.family],
    ["Dim", info.dim],
    ["Index", index.type, index.metric ? `metric: ${index.metric}` : null],
    ["Items", typeof index.size === "number" ? fmtNumber(index.size) : index.size],
    ["Version", index.version],
  ];
  const before = state.shownInfo;
  state.shownInfo = new Map();
  for (const [label, value, title] of entries) {
    if (value === undefined || value === null || value === "") continue;
    state.shownInfo.set(label, String(value));
    // a value that moved since the last render (a live `index add` was swapped in) flashes once
    const changed = before.has(label) && before.get(label) !== String(value);
    el.info.append(
      h(
        "div",
        { class: "info-item" + (changed ? " changed" : ""), "data-info": label.toLowerCase() },
        h("dt", { text: label }),
        h("dd", { text: String(value), title: title || String(value) }),
      ),
    );
  }
  state.version = index.version ?? info.version ?? null;
  const columns = Array.isArray(info.filter_columns) ? info.filter_columns : [];
  el.whereHint.textContent = columns.length ? "Columns: " + columns.join(", ") : "";
  el.whereHint.title = el.whereHint.textContent;
  const maxK = info.limits && info.limits.max_k;
  if (typeof maxK === "number") {
    for (const option of el.k.options) option.disabled = Number(option.value) > maxK;
  }
  if (apiKey()) el.keyButton.hidden = false;
}

// ---------------------------------------------------------------- query state

function updateModeHint() {
  const text = el.q.value.trim();
  const composed = !!text && !state.image && isComposed(text);
  el.queryBox.classList.toggle("composed", composed);
  const terms = composed ? queryTerms(queryTokens(text).tokens) : null;
  el.hintDefault.hidden = !!terms;
  el.hintTerms.hidden = !terms;
  if (!terms) return;
  el.hintTerms.replaceChildren(
    h("span", { class: "terms-label", text: "Weighted query:" }),
    ...terms.map((t) =>
      h(
        "span",
        { class: "term" + (t.weight < 0 ? " term-neg" : "") },
        h("b", { text: (t.weight < 0 ? "− " : "+ ") + fmtWeight(Math.abs(t.weight)) + " ×" }),
        " " + t.text,
      ),
    ),
  );
}

function setImage(file) {
  if (!file) return;
  if (!file.type.startsWith("image/")) {
    showError(`${file.name || "That file"} is not an image (its type is ${file.type || "unknown"}).`);
    return;
  }
  const maxBytes = state.info && state.info.limits && state.info.limits.max_upload_bytes;
  if (typeof maxBytes === "number" && file.size > maxBytes) {
    showError(
      `${file.name} is ${(file.size / 1048576).toFixed(1)} MiB; this server accepts images up to ` +
        `${(maxBytes / 1048576).toFixed(1)} MiB.`,
    );
    return;
  }
  clearError();
  clearLike();
  clearImage();
  // A new image starts a new search; text typed afterwards composes with it (one text+image item).
  el.q.value = "";
  state.image = file;
  state.imagePreviewURL = URL.createObjectURL(file);
  el.imagePreview.src = state.imagePreviewURL;
  el.imageName.textContent = file.name || "pasted image";
  el.imageName.title = file.name || "";
  el.imageChip.hidden = false;
  el.q.placeholder = "Add text to compose with the image (optional)";
  updateModeHint();
  search();
}

function clearImage() {
  if (state.imagePreviewURL) URL.revokeObjectURL(state.imagePreviewURL);
  state.image = null;
  state.imagePreviewURL = null;
  el.imagePreview.removeAttribute("src");
  el.imageChip.hidden = true;
  el.file.value = "";
  el.q.placeholder = "Describe what you are looking for, or drop an image";
  updateModeHint();
}

function setLike(item) {
  clearImage();
  state.like = item;
  el.q.value = "";
  el.likeLabel.textContent = basename(item.id);
  el.likeLabel.title = String(item.id);
  el.likeThumb.hidden = true;
  el.likeThumb.removeAttribute("src");
  if (item.image_url) {
    el.likeThumb.hidden = false;
    loadImage(el.likeThumb, withSize(item.image_url, 64), () => (el.likeThumb.hidden = true));
  }
  el.likeChip.hidden = false;
  el.q.placeholder = "Type to search by text instead";
  updateModeHint();
}

function clearLike() {
  state.like = null;
  el.likeChip.hidden = true;
  el.likeThumb.removeAttribute("src");
  el.q.placeholder = "Describe what you are looking for, or drop an image";
}

// The request: "like" (a stored vector), an image upload (multipart, optionally with text), composed-query
// syntax ("query"), or plain text. Empty options are left out so the server's defaults apply.
function buildRequest() {
  const text = el.q.value.trim();
  const k = Number(el.k.value);
  const where = el.where.value.trim();
  const instruction = el.instruction.value.trim();
  if (state.like && !text) {
    const body = { like: state.like.internal_id, k };
    if (where) body.where = where;
    return { json: body, label: `items like ${state.like.id}` };
  }
  if (state.image) {
    const form = new FormData();
    form.append("image", state.image, state.image.name || "image.png");
    if (text) form.append("text", text);
    if (instruction) form.append("instruction", instruction);
    if (where) form.append("where", where);
    form.append("k", String(k));
    return { form, label: text ? `image + “${text}”` : "image" };
  }
  if (!text) return null;
  const body = isComposed(text) ? { query: queryTokens(text).wire } : { text };
  if (instruction) body.instruction = instruction;
  if (where) body.where = where;
  body.k = k;
  return { json: body, label: `“${text}”` };
}

function syncURL() {
  const params = new URLSearchParams();
  const text = el.q.value.trim();
  if (state.like && !text) params.set("like", String(state.like.internal_id));
  else if (text && !state.image) params.set("q", text);
  if (el.instruction.value.trim()) params.set("instruction", el.instruction.value.trim());
  if (el.where.value.trim()) params.set("where", el.where.value.trim());
  if (el.k.value !== DEFAULT_K) params.set("k", el.k.value);
  const query = params.toString();
  history.replaceState(null, "", query ? "?" + query : location.pathname);
}

// ---------------------------------------------------------------- search

async function search() {
  const request = buildRequest();
  if (!request) {
    showError("Type something to search for, or add an image.");
    el.q.focus();
    return;
  }
  if (state.like && el.q.value.trim()) clearLike();
  clearError();
  syncURL();
  if (state.controller) state.controller.abort();
  const controller = new AbortController();
  state.controller = controller;
  setBusy(true);
  const started = performance.now();
  try {
    const data = await api("/search", { method: "POST", ...request, signal: controller.signal });
    const roundTrip = performance.now() - started;
    renderResults(data, roundTrip, request.label);
    if (data && data.version && state.version && data.version !== state.version) loadInfo();
  } catch (err) {
    if (err.name === "AbortError") return;
    if (err.status === 401) {
      setBusy(false);
      if (await keyForRetry()) {
        loadInfo();
        return search();
      }
      return;
    }
    showError(err.message);
    el.stats.textContent = "";
    el.results.classList.add("stale"); // what is still shown answers an earlier query
  } finally {
    if (state.controller === controller) {
      state.controller = null;
      setBusy(false);
    }
  }
}

function setBusy(busy) {
  el.form.classList.toggle("busy", busy);
  el.results.setAttribute("aria-busy", busy ? "true" : "false");
}

function renderResults(data, roundTrip, label) {
  for (const url of state.thumbURLs) URL.revokeObjectURL(url);
  state.thumbURLs = [];
  state.hits.clear();
  const hits = (data && Array.isArray(data.hits) && data.hits) || [];
  for (const hit of hits) state.hits.set(hit.internal_id, hit);
  renderStats(el.stats, hits.length, data && data.latency_ms, roundTrip, label);
  el.empty.hidden = true;
  el.results.classList.remove("stale");
  renderHits(el.results, hits, {
    sourceId: state.like ? state.like.internal_id : null,
    filtered: !!el.where.value.trim(),
    pool: state.thumbURLs,
    onOpen: (hit) => items.open(hit),
    onLike: (hit) => {
      setLike(hit);
      search();
    },
  });
}

const items = itemDialog((item) => {
  setLike(item);
  search();
});

// ---------------------------------------------------------------- events

el.form.addEventListener("submit", (event) => {
  event.preventDefault();
  search();
});
el.q.addEventListener("input", () => {
  if (state.like && el.q.value.trim()) clearLike();
  updateModeHint();
});
el.k.addEventListener("change", () => {
  if (el.results.childElementCount) search();
});
el.file.addEventListener("change", () => setImage(el.file.files && el.file.files[0]));
el.imageClear.addEventListener("click", () => {
  clearImage();
  el.q.focus();
});
el.likeClear.addEventListener("click", () => {
  clearLike();
  el.q.focus();
});
el.errorClose.addEventListener("click", clearError);

// "/" focuses the search box from anywhere but a text field.
document.addEventListener("keydown", (event) => {
  const target = event.target;
  const typing = target instanceof HTMLElement && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName));
  if (event.key === "/" && !typing && !event.ctrlKey && !event.metaKey && !event.altKey) {
    event.preventDefault();
    el.q.focus();
    el.q.select();
  }
});

// Drag and drop anywhere on the page: an image file, or a result's thumbnail ("more like this").
let dragDepth = 0;
const carriesSomething = (event) => {
  const types = Array.from((event.dataTransfer && event.dataTransfer.types) || []);
  return types.includes("Files") || types.includes(LIKE_TYPE);
};
window.addEventListener("dragenter", (event) => {
  if (!carriesSomething(event)) return;
  event.preventDefault();
  dragDepth += 1;
  el.dropOverlay.hidden = false;
});
window.addEventListener("dragover", (event) => {
  if (!carriesSomething(event)) return;
  event.preventDefault();
  event.dataTransfer.dropEffect = "copy";
});
window.addEventListener("dragleave", () => {
  dragDepth = Math.max(0, dragDepth - 1);
  if (!dragDepth) el.dropOverlay.hidden = true;
});
window.addEventListener("drop", (event) => {
  dragDepth = 0;
  el.dropOverlay.hidden = true;
  if (!carriesSomething(event)) return;
  event.preventDefault();
  const like = event.dataTransfer.getData(LIKE_TYPE);
  if (like && state.hits.has(Number(like))) {
    setLike(state.hits.get(Number(like)));
    search();
    return;
  }
  const files = Array.from(event.dataTransfer.files || []);
  const image = files.find((f) => f.type.startsWith("image/"));
  if (image) setImage(image);
  else if (files.length) showError(`${files[0].name} is not an image.`);
});

document.addEventListener("paste", (event) => {
  const files = Array.from((event.clipboardData && event.clipboardData.files) || []);
  const image = files.find((f) => f.type.startsWith("image/"));
  if (image) {
    event.preventDefault();
    setImage(image);
  }
});

// A live `index add` swaps a new version in: poll /health (cheap, no key) and refresh the header when it moves.
async function checkVersion() {
  if (document.hidden || !state.info) return;
  try {
    const res = await fetch("/health");
    const data = res.ok ? await res.json() : null;
    if (data && data.version && data.version !== state.version) loadInfo();
  } catch {
    /* unreachable for now: the next search says so */
  }
}
setInterval(checkVersion, HEALTH_EVERY_MS);

// ---------------------------------------------------------------- start

async function start() {
  const params = new URLSearchParams(location.search);
  if (params.has("q")) el.q.value = params.get("q");
  if (params.has("instruction")) el.instruction.value = params.get("instruction");
  if (params.has("where")) el.where.value = params.get("where");
  if (params.has("k")) {
    const k = params.get("k");
    if (!Array.from(el.k.options).some((o) => o.value === k)) el.k.append(h("option", { text: k }));
    el.k.value = k;
  }
  updateModeHint();
  const ok = await loadInfo();
  if (!ok) return;
  const like = params.get("like");
  if (like !== null && /^\d+$/.test(like)) {
    try {
      const item = await api(`/items/${like}`);
      setLike({ internal_id: Number(like), ...item });
      search();
    } catch (err) {
      showError(err.message);
    }
  } else if (el.q.value.trim()) {
    search();
  }
  el.q.focus();
}

start();
