// The uniretrieve search page: plain JavaScript over the HTTP API of `uniretrieve serve` (docs/serve.md).
// Every piece of data reaches the page through textContent or element attributes, never as HTML.
"use strict";

(() => {
  const KEY_STORAGE = "uniretrieve.apiKey";
  const THUMB_SIZE = 256;
  const DETAIL_SIZE = 640;
  const LIKE_TYPE = "application/x-uniretrieve-like";
  const HEALTH_EVERY_MS = 15000;
  // A composed query (the CLI's syntax, uniretrieve/search/query.py) has a leading weight ("2:dog") or a standalone
  // + / - between terms. The server splits it like a shell (shlex); unquoted input is quoted term by term here.
  const WEIGHT = /^"?-?\d+(?:\.\d+)?:\S/;
  const OPERATOR = /\s[+-]\s/;
  const TERM_WEIGHT = /^(-?\d+(?:\.\d+)?):([\s\S]+)$/;

  const $ = (id) => document.getElementById(id);
  const el = {
    form: $("search-form"),
    q: $("q"),
    go: $("go"),
    file: $("file"),
    queryBox: $("query-box"),
    modeHint: $("mode-hint"),
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
    keyDialog: $("key-dialog"),
    keyForm: $("key-form"),
    keyMessage: $("key-message"),
    keyInput: $("key-input"),
    keyForget: $("key-forget"),
    itemDialog: $("item-dialog"),
    itemMedia: $("item-media"),
    itemTitle: $("item-title"),
    itemFields: $("item-fields"),
    itemClose: $("item-close"),
    itemLike: $("item-like"),
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
    dialogItem: null,
    shownInfo: new Map(), // header label -> value last shown
  };

  // ---------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  const storage = {
    get() {
      try {
        return localStorage.getItem(KEY_STORAGE) || "";
      } catch {
        return "";
      }
    },
    set(value) {
      try {
        if (value) localStorage.setItem(KEY_STORAGE, value);
        else localStorage.removeItem(KEY_STORAGE);
      } catch {
        /* storage disabled: the key lives for this page only */
      }
      memoryKey = value;
    },
  };
  let memoryKey = storage.get();

  function authHeaders() {
    return memoryKey ? { "X-API-Key": memoryKey } : {};
  }

  async function api(path, { method = "GET", json, form, signal } = {}) {
    const headers = authHeaders();
    let body;
    if (json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(json);
    } else if (form) {
      body = form; // the browser sets the multipart boundary
    }
    let res;
    try {
      res = await fetch(path, { method, headers, body, signal });
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw new ApiError(0, "Cannot reach the server. Is `uniretrieve serve` still running?");
    }
    const raw = await res.text();
    let data = null;
    try {
      data = raw ? JSON.parse(raw) : null;
    } catch {
      data = null;
    }
    if (!res.ok) {
      const message =
        data && data.error && typeof data.error.message === "string"
          ? data.error.message
          : `The server answered ${res.status} ${res.statusText || ""}`.trim() + ".";
      throw new ApiError(res.status, message);
    }
    return data;
  }

  // ---------------------------------------------------------------- small DOM helpers

  function h(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  function fmtNumber(n) {
    return typeof n === "number" ? n.toLocaleString("en-US") : String(n ?? "—");
  }

  function fmtMs(ms) {
    if (typeof ms !== "number" || !Number.isFinite(ms)) return "—";
    return ms < 10 ? ms.toFixed(1) : Math.round(ms).toString();
  }

  function fmtValue(value) {
    if (value === null || value === undefined) return "—";
    if (typeof value === "string") return value;
    return JSON.stringify(value);
  }

  function withSize(url, size) {
    return url + (url.includes("?") ? "&" : "?") + "size=" + size;
  }

  function basename(path) {
    const s = String(path ?? "");
    const parts = s.split(/[\\/]/).filter(Boolean);
    return parts.length ? parts[parts.length - 1] : s;
  }

  // Images behind an API key cannot be fetched by <img src> (no custom header): fetch them as blobs instead.
  function loadImage(img, url, onFail) {
    img.addEventListener("error", () => onFail && onFail(), { once: true });
    if (!memoryKey) {
      img.src = url;
      return;
    }
    fetch(url, { headers: authHeaders() })
      .then((res) => (res.ok ? res.blob() : Promise.reject(new Error(String(res.status)))))
      .then((blob) => {
        const objectURL = URL.createObjectURL(blob);
        state.thumbURLs.push(objectURL);
        img.src = objectURL;
      })
      .catch(() => onFail && onFail());
  }

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

  // Callers waiting for the dialog: resolved with true once a key is saved, false when it is dismissed (Escape).
  let keyWaiters = [];

  function settleKey(saved) {
    const waiters = keyWaiters;
    keyWaiters = [];
    waiters.forEach((resolve) => resolve(saved));
  }

  function askForKey(message) {
    el.keyMessage.textContent = message;
    el.keyInput.value = memoryKey;
    el.keyForget.hidden = !memoryKey;
    if (!el.keyDialog.open) el.keyDialog.showModal();
    el.keyInput.focus();
    el.keyInput.select();
    return new Promise((resolve) => keyWaiters.push(resolve));
  }

  el.keyForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const value = el.keyInput.value.trim();
    if (!value) return;
    storage.set(value);
    el.keyDialog.close();
    settleKey(true);
  });
  // Escape dismisses the dialog ("cancel"; "close" would also fire, late, for a save followed by a new request).
  el.keyDialog.addEventListener("cancel", () => settleKey(false));

  el.keyForget.addEventListener("click", () => {
    storage.set("");
    el.keyInput.value = "";
    el.keyInput.focus();
  });

  el.keyButton.addEventListener("click", async () => {
    const message = memoryKey ? "Change the API key kept in this browser." : unauthorizedMessage();
    if ((await askForKey(message)) && (await loadInfo()) && el.q.value.trim()) search();
  });

  function unauthorizedMessage() {
    return memoryKey
      ? "The server refused the stored API key. Enter the key it was started with."
      : "This server asks for an API key. It is kept in this browser only (local storage) and sent with each request.";
  }

  // After 401: ask for a key; true when one was entered (retry), false (with a message) when the user declined.
  async function keyForRetry() {
    if (await askForKey(unauthorizedMessage())) return true;
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
    if (memoryKey) el.keyButton.hidden = false;
  }

  // ---------------------------------------------------------------- query state

  function isComposed(text) {
    const t = text.trim();
    return WEIGHT.test(t) || OPERATOR.test(t);
  }

  // Tokens of a composed query: as typed on a command line when it holds double quotes, else the terms between
  // standalone operators (so `2:red car + on a beach` needs no quoting in the browser).
  function queryTokens(text) {
    const t = text.trim();
    if (t.includes('"')) {
      const out = [];
      const re = /"((?:[^"\\]|\\.)*)"|(\S+)/g;
      let m;
      while ((m = re.exec(t))) out.push(m[1] !== undefined ? m[1].replace(/\\(.)/g, "$1") : m[2]);
      return { tokens: out, wire: t };
    }
    const tokens = t.split(/\s+([+-])\s+/).map((part) => part.trim());
    const wire = tokens
      .map((tok, i) => (i % 2 ? tok : '"' + tok.replace(/[\\"]/g, "\\$&") + '"'))
      .join(" ");
    return { tokens, wire };
  }

  // The weighted terms the server will combine (sign × weight, text), or null when the syntax is off.
  function queryTerms(tokens) {
    const terms = [];
    let sign = 1;
    let expectTerm = true;
    for (const tok of tokens) {
      if ((tok === "+" || tok === "-") && !expectTerm) {
        sign = tok === "+" ? 1 : -1;
        expectTerm = true;
        continue;
      }
      if (!expectTerm || !tok) return null;
      const m = TERM_WEIGHT.exec(tok);
      terms.push({ weight: sign * (m ? Number(m[1]) : 1), text: m ? m[2] : tok });
      expectTerm = false;
    }
    return expectTerm ? null : terms;
  }

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

  function fmtWeight(w) {
    return Number.isInteger(w) ? String(w) : String(Number(w.toFixed(3)));
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
    if (el.k.value !== "20") params.set("k", el.k.value);
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

  function renderStats(count, latency, roundTrip, label) {
    const parts = [];
    const lat = latency || {};
    parts.push(h("span", { class: "stat-count" }, h("strong", { text: fmtNumber(count) }), count === 1 ? " result" : " results"));
    if (label) parts.push(h("span", { class: "stat-label", text: "for " + label }));
    const server = h("span", { class: "stat-time", "data-latency": "server" });
    server.append(h("strong", { text: fmtMs(lat.total) + " ms" }), " server");
    const stages = Object.entries(lat).filter(([name, v]) => name !== "total" && typeof v === "number");
    if (stages.length) {
      server.append(
        h("span", { class: "stat-stages", text: " (" + stages.map(([n, v]) => `${n} ${fmtMs(v)}`).join(" · ") + ")" }),
      );
    }
    parts.push(server);
    parts.push(
      h("span", { class: "stat-time", "data-latency": "round-trip" }, h("strong", { text: fmtMs(roundTrip) + " ms" }), " round trip"),
    );
    el.stats.replaceChildren(...parts);
  }

  function renderResults(data, roundTrip, label) {
    for (const url of state.thumbURLs) URL.revokeObjectURL(url);
    state.thumbURLs = [];
    state.hits.clear();
    const hits = (data && Array.isArray(data.hits) && data.hits) || [];
    renderStats(hits.length, data && data.latency_ms, roundTrip, label);
    el.empty.hidden = true;
    el.results.classList.remove("stale");
    if (!hits.length) {
      el.results.replaceChildren(
        h(
          "li",
          { class: "no-hits" },
          h("p", { class: "empty-title", text: "Nothing matched" }),
          h("p", {
            class: "empty-text",
            text: el.where.value.trim()
              ? "No indexed item passes the filter. Loosen or clear the where field."
              : "The index returned no hits for this query.",
          }),
        ),
      );
      return;
    }
    const top = hits[0].score;
    const bottom = hits[hits.length - 1].score;
    el.results.replaceChildren(...hits.map((hit) => renderHit(hit, top, bottom)));
  }

  function scoreFraction(score, top, bottom) {
    // Bars are relative to this result list, so small differences between neighbours stay visible.
    if (typeof score !== "number") return 0;
    if (top === bottom) return 1;
    return 0.15 + (0.85 * (score - bottom)) / (top - bottom);
  }

  function renderHit(hit, top, bottom) {
    state.hits.set(hit.internal_id, hit);
    const isLike = state.like && state.like.internal_id === hit.internal_id;
    const metadata = hit.metadata && typeof hit.metadata === "object" ? Object.entries(hit.metadata) : [];
    const tooltip = [String(hit.id), ...metadata.map(([k, v]) => `${k}: ${fmtValue(v)}`)].join("\n");

    const media = h("button", {
      type: "button",
      class: "card-media" + (hit.image_url ? "" : " text-only"),
      "aria-label": `Open ${hit.modality || "item"} ${hit.id}`,
      title: tooltip,
      onclick: () => openItem(hit),
    });
    if (hit.image_url) {
      const img = h("img", { alt: hit.text ? hit.text : `Image ${hit.id}`, loading: "lazy", decoding: "async", draggable: "true" });
      img.addEventListener("dragstart", (event) => {
        event.dataTransfer.setData(LIKE_TYPE, String(hit.internal_id));
        event.dataTransfer.effectAllowed = "copy";
      });
      loadImage(img, withSize(hit.image_url, THUMB_SIZE), () => {
        img.replaceWith(h("span", { class: "no-preview", text: "no preview" }));
      });
      media.append(img);
      if (hit.text) media.append(h("span", { class: "caption", text: hit.text }));
    } else {
      media.append(h("span", { class: "snippet", text: hit.text || String(hit.id) }));
    }

    const fraction = scoreFraction(hit.score, top, bottom);
    const bar = h("span", { class: "score-bar", "aria-hidden": "true" }, h("span"));
    bar.firstChild.style.width = `${Math.round(fraction * 100)}%`;

    // The id line is the toggle: it expands the item's fields and metadata in place.
    const details = h(
      "details",
      { class: "meta" },
      h(
        "summary",
        { title: `${hit.id}: show details` },
        h("span", { class: "hit-id", text: String(hit.id) }),
        h("span", { class: "visually-hidden", text: " details" }),
      ),
    );
    const fields = h("dl", { class: "fields" });
    const rows = [
      ["internal id", hit.internal_id],
      ["modality", hit.modality],
      ["score", typeof hit.score === "number" ? hit.score.toFixed(6) : hit.score],
      ...metadata.map(([k, v]) => [k, fmtValue(v)]),
    ];
    for (const [k, v] of rows) fields.append(h("dt", { text: String(k) }), h("dd", { text: fmtValue(v) }));
    details.append(fields);

    return h(
      "li",
      { class: "card" + (isLike ? " is-source" : ""), "data-internal-id": String(hit.internal_id), "data-rank": String(hit.rank) },
      media,
      h(
        "div",
        { class: "card-body" },
        h(
          "div",
          { class: "card-top" },
          h("span", { class: "rank", text: "#" + hit.rank }),
          h("span", { class: "badge badge-" + (hit.modality || "item").replace(/[^a-z_-]/gi, ""), text: hit.modality || "item" }),
          h("span", { class: "score", title: "similarity score", text: typeof hit.score === "number" ? hit.score.toFixed(3) : "" }),
        ),
        bar,
        details,
        h("button", {
          type: "button",
          class: "more",
          text: "More like this",
          "aria-label": `More like ${hit.id}`,
          onclick: () => {
            setLike(hit);
            search();
          },
        }),
      ),
    );
  }

  // ---------------------------------------------------------------- item dialog

  async function openItem(hit) {
    state.dialogItem = hit;
    el.itemTitle.textContent = String(hit.id);
    el.itemFields.replaceChildren();
    el.itemMedia.replaceChildren();
    if (hit.image_url) {
      const img = h("img", { alt: hit.text || `Image ${hit.id}` });
      loadImage(img, withSize(hit.image_url, DETAIL_SIZE), () => img.remove());
      el.itemMedia.append(img);
    }
    if (hit.text) el.itemMedia.append(h("p", { class: "item-text", text: hit.text }));
    el.itemMedia.hidden = !el.itemMedia.childElementCount;
    el.itemDialog.showModal();
    el.itemClose.focus();
    try {
      const row = await api(hit.item_url || `/items/${encodeURIComponent(hit.internal_id)}`);
      if (state.dialogItem !== hit) return;
      for (const [k, v] of Object.entries(row || {})) {
        // the text is shown beside the fields already; URLs and the version are the API's, not the item's
        if (["image_url", "item_url", "version", "text"].includes(k) || v === null) continue;
        if (v && typeof v === "object" && !Array.isArray(v)) {
          for (const [mk, mv] of Object.entries(v)) el.itemFields.append(h("dt", { text: `${k}.${mk}` }), h("dd", { text: fmtValue(mv) }));
        } else {
          el.itemFields.append(h("dt", { text: k }), h("dd", { text: fmtValue(v) }));
        }
      }
    } catch (err) {
      el.itemFields.append(h("dt", { text: "error" }), h("dd", { text: err.message }));
    }
  }

  el.itemClose.addEventListener("click", () => el.itemDialog.close());
  el.itemDialog.addEventListener("click", (event) => {
    if (event.target === el.itemDialog) el.itemDialog.close(); // a click on the backdrop
  });
  el.itemLike.addEventListener("click", () => {
    const item = state.dialogItem;
    el.itemDialog.close();
    if (item) {
      setLike(item);
      search();
    }
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
})();
