// The HTTP API of `uniretrieve serve` (docs/serving.md): JSON in and out, the API key, errors as one sentence.

const KEY_STORAGE = "uniretrieve.apiKey";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function stored() {
  try {
    return localStorage.getItem(KEY_STORAGE) || "";
  } catch {
    return ""; // storage disabled: the key lives for this page only
  }
}

let key = stored();

export function apiKey() {
  return key;
}

export function setApiKey(value) {
  key = value;
  try {
    if (value) localStorage.setItem(KEY_STORAGE, value);
    else localStorage.removeItem(KEY_STORAGE);
  } catch {
    /* storage disabled */
  }
}

export function authHeaders() {
  return key ? { "X-API-Key": key } : {};
}

// The parsed JSON answer, or an ApiError carrying the server's own message ({"error": {"message": …}}).
export async function api(path, { method = "GET", json, form, signal } = {}) {
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

// Show `url` in `img`. An <img src> cannot send the API key, so with a key the image is fetched as a blob; its
// object URL goes into `pool` (revoked by whoever renders the next batch), onFail runs when it cannot be shown.
export function loadImage(img, url, onFail, pool = null) {
  img.addEventListener("error", () => onFail && onFail(), { once: true });
  if (!key) {
    img.src = url;
    return;
  }
  fetch(url, { headers: authHeaders() })
    .then((res) => (res.ok ? res.blob() : Promise.reject(new Error(String(res.status)))))
    .then((blob) => {
      const objectURL = URL.createObjectURL(blob);
      if (pool) pool.push(objectURL);
      img.src = objectURL;
    })
    .catch(() => onFail && onFail());
}
