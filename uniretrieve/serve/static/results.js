// The results: the latency line, the grid of hit cards, and an item's fields in the item dialog.

import { loadImage } from "./api.js";
import { fmtMs, fmtNumber, fmtValue, h, withSize } from "./dom.js";

export const LIKE_TYPE = "application/x-uniretrieve-like"; // drag a thumbnail onto the page: more like it
const THUMB_SIZE = 256;

// "20 results for “…” · 3.1 ms server (encode 1.2 · search 0.4) · 8 ms round trip"
export function renderStats(node, count, latency, roundTrip, label) {
  const lat = latency || {};
  const parts = [
    h("span", { class: "stat-count" }, h("strong", { text: fmtNumber(count) }), count === 1 ? " result" : " results"),
  ];
  if (label) parts.push(h("span", { class: "stat-label", text: "for " + label }));
  const server = h(
    "span",
    { class: "stat-time", "data-latency": "server" },
    h("strong", { text: fmtMs(lat.total) + " ms" }),
    " server",
  );
  const stages = Object.entries(lat).filter(([name, v]) => name !== "total" && typeof v === "number");
  if (stages.length) {
    const text = " (" + stages.map(([name, v]) => `${name} ${fmtMs(v)}`).join(" · ") + ")";
    server.append(h("span", { class: "stat-stages", text }));
  }
  parts.push(server);
  parts.push(
    h(
      "span",
      { class: "stat-time", "data-latency": "round-trip" },
      h("strong", { text: fmtMs(roundTrip) + " ms" }),
      " round trip",
    ),
  );
  node.replaceChildren(...parts);
}

// Replace the grid's cards. opts: sourceId (the more-like-this item, marked), filtered (a where filter is set),
// pool (object URLs of thumbnails), onOpen(hit), onLike(hit).
export function renderHits(list, hits, opts) {
  if (!hits.length) {
    list.replaceChildren(
      h(
        "li",
        { class: "no-hits" },
        h("p", { class: "empty-title", text: "Nothing matched" }),
        h("p", {
          class: "empty-text",
          text: opts.filtered
            ? "No indexed item passes the filter. Loosen or clear the where field."
            : "The index returned no hits for this query.",
        }),
      ),
    );
    return;
  }
  const top = hits[0].score;
  const bottom = hits[hits.length - 1].score;
  list.replaceChildren(...hits.map((hit) => renderHit(hit, scoreFraction(hit.score, top, bottom), opts)));
}

// Bars are relative to this result list, so small differences between neighbours stay visible.
function scoreFraction(score, top, bottom) {
  if (typeof score !== "number") return 0;
  if (top === bottom) return 1;
  return 0.15 + (0.85 * (score - bottom)) / (top - bottom);
}

function renderHit(hit, fraction, opts) {
  const metadata = hit.metadata && typeof hit.metadata === "object" ? Object.entries(hit.metadata) : [];
  const tooltip = [String(hit.id), ...metadata.map(([k, v]) => `${k}: ${fmtValue(v)}`)].join("\n");
  const score = typeof hit.score === "number" ? hit.score : null;

  const media = h("button", {
    type: "button",
    class: "card-media" + (hit.image_url ? "" : " text-only"),
    "aria-label": `Open ${hit.modality || "item"} ${hit.id}`,
    title: tooltip,
    onclick: () => opts.onOpen(hit),
  });
  if (hit.image_url) {
    const img = h("img", { alt: hit.text || `Image ${hit.id}`, loading: "lazy", decoding: "async", draggable: "true" });
    img.addEventListener("dragstart", (event) => {
      event.dataTransfer.setData(LIKE_TYPE, String(hit.internal_id));
      event.dataTransfer.effectAllowed = "copy";
    });
    const noPreview = () => img.replaceWith(h("span", { class: "no-preview", text: "no preview" }));
    loadImage(img, withSize(hit.image_url, THUMB_SIZE), noPreview, opts.pool);
    media.append(img);
    if (hit.text) media.append(h("span", { class: "caption", text: hit.text }));
  } else {
    media.append(h("span", { class: "snippet", text: hit.text || String(hit.id) }));
  }

  const bar = h("span", { class: "score-bar", "aria-hidden": "true" }, h("span"));
  bar.firstChild.style.width = `${Math.round(fraction * 100)}%`;

  // The id line is the toggle: it expands the item's fields and metadata in place.
  const fields = h("dl", { class: "fields" });
  const rows = [
    ["internal id", hit.internal_id],
    ["modality", hit.modality],
    ["score", score === null ? hit.score : score.toFixed(6)],
    ...metadata,
  ];
  for (const [k, v] of rows) fields.append(h("dt", { text: String(k) }), h("dd", { text: fmtValue(v) }));
  const details = h(
    "details",
    { class: "meta" },
    h(
      "summary",
      { title: `${hit.id}: show details` },
      h("span", { class: "hit-id", text: String(hit.id) }),
      h("span", { class: "visually-hidden", text: " details" }),
    ),
    fields,
  );

  const modality = hit.modality || "item";
  return h(
    "li",
    {
      class: "card" + (opts.sourceId === hit.internal_id ? " is-source" : ""),
      "data-internal-id": String(hit.internal_id),
      "data-rank": String(hit.rank),
    },
    media,
    h(
      "div",
      { class: "card-body" },
      h(
        "div",
        { class: "card-top" },
        h("span", { class: "rank", text: "#" + hit.rank }),
        h("span", { class: "badge badge-" + modality.replace(/[^a-z_-]/gi, ""), text: modality }),
        h("span", { class: "score", title: "similarity score", text: score === null ? "" : score.toFixed(3) }),
      ),
      bar,
      details,
      h("button", {
        type: "button",
        class: "more",
        text: "More like this",
        "aria-label": `More like ${hit.id}`,
        onclick: () => opts.onLike(hit),
      }),
    ),
  );
}

// An item's id-map row (GET /items/{id}) as name/value pairs; nested objects (metadata) as `metadata.key`.
export function renderItemFields(dl, row) {
  for (const [k, v] of Object.entries(row || {})) {
    // the text is shown beside the fields already; URLs and the version are the API's, not the item's
    if (["image_url", "item_url", "version", "text"].includes(k) || v === null) continue;
    if (v && typeof v === "object" && !Array.isArray(v)) {
      for (const [mk, mv] of Object.entries(v)) dl.append(h("dt", { text: `${k}.${mk}` }), h("dd", { text: fmtValue(mv) }));
    } else {
      dl.append(h("dt", { text: k }), h("dd", { text: fmtValue(v) }));
    }
  }
}
