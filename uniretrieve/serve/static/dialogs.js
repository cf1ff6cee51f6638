// The two dialogs: the API key prompt and an item's full record.

import { api, apiKey, loadImage, setApiKey } from "./api.js";
import { h, withSize } from "./dom.js";
import { renderItemFields } from "./results.js";

const $ = (id) => document.getElementById(id);
const DETAIL_SIZE = 640;

// ask(message) → Promise<boolean>: true once a key is saved (kept in localStorage), false when the dialog is
// dismissed with Escape. Callers asking while it is open share the answer.
export function keyDialog() {
  const dialog = $("key-dialog");
  const message = $("key-message");
  const input = $("key-input");
  const forget = $("key-forget");
  let waiters = [];
  const settle = (saved) => {
    const pending = waiters;
    waiters = [];
    pending.forEach((resolve) => resolve(saved));
  };
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = input.value.trim();
    if (!value) return;
    setApiKey(value);
    dialog.close();
    settle(true);
  });
  // "cancel" is Escape only; "close" would also fire, late, after a save that already led to a new request.
  dialog.addEventListener("cancel", () => settle(false));
  forget.addEventListener("click", () => {
    setApiKey("");
    input.value = "";
    input.focus();
  });
  return {
    ask(text) {
      message.textContent = text;
      input.value = apiKey();
      forget.hidden = !apiKey();
      if (!dialog.open) dialog.showModal();
      input.focus();
      input.select();
      return new Promise((resolve) => waiters.push(resolve));
    },
  };
}

// open(hit): the hit's image (larger) or text beside every field of its id-map row (GET item_url);
// its button calls onLike(hit).
export function itemDialog(onLike) {
  const dialog = $("item-dialog");
  const media = $("item-media");
  const title = $("item-title");
  const fields = $("item-fields");
  const close = $("item-close");
  let current = null;
  close.addEventListener("click", () => dialog.close());
  dialog.addEventListener("click", (event) => {
    if (event.target === dialog) dialog.close(); // a click on the backdrop
  });
  $("item-like").addEventListener("click", () => {
    dialog.close();
    if (current) onLike(current);
  });
  return {
    async open(hit) {
      current = hit;
      title.textContent = String(hit.id);
      fields.replaceChildren();
      media.replaceChildren();
      if (hit.image_url) {
        const img = h("img", { alt: hit.text || `Image ${hit.id}` });
        loadImage(img, withSize(hit.image_url, DETAIL_SIZE), () => img.remove());
        media.append(img);
      }
      if (hit.text) media.append(h("p", { class: "item-text", text: hit.text }));
      media.hidden = !media.childElementCount;
      dialog.showModal();
      close.focus();
      try {
        const row = await api(hit.item_url || `/items/${encodeURIComponent(hit.internal_id)}`);
        if (current === hit) renderItemFields(fields, row);
      } catch (err) {
        fields.append(h("dt", { text: "error" }), h("dd", { text: err.message }));
      }
    },
  };
}
