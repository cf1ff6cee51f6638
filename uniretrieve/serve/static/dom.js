// Building elements and formatting values. Data reaches the page as text nodes and attributes only, never as HTML.

// h("li", { class: "card", text: "…", onclick: fn }, child, "text", …): an element, its attributes and children.
export function h(tag, attrs = {}, ...children) {
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

export function fmtNumber(n) {
  return typeof n === "number" ? n.toLocaleString("en-US") : String(n ?? "—");
}

export function fmtMs(ms) {
  if (typeof ms !== "number" || !Number.isFinite(ms)) return "—";
  return ms < 10 ? ms.toFixed(1) : Math.round(ms).toString();
}

export function fmtValue(value) {
  if (value === null || value === undefined) return "—";
  if (typeof value === "string") return value;
  return JSON.stringify(value);
}

export function withSize(url, size) {
  return url + (url.includes("?") ? "&" : "?") + "size=" + size;
}

export function basename(path) {
  const s = String(path ?? "");
  const parts = s.split(/[\\/]/).filter(Boolean);
  return parts.length ? parts[parts.length - 1] : s;
}
