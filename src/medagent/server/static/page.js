// What both pages (chat and review) use: element lookup and creation, the JSON API call with
// its one-line error, and a region's caption. Plain module, no build step.

export const $ = (id) => document.getElementById(id);

export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

// The response of a JSON API call; a refusal throws the server's one-line `detail`, with the
// status and any Retry-After.
export async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { "Content-Type": "application/json" } });
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail; } catch { /* not JSON */ }
    const error = new Error(detail);
    error.status = response.status;
    error.retryAfter = response.headers.get("Retry-After");
    throw error;
  }
  return response;
}

export const fmt = (r) => `x ${r.x}, y ${r.y}, ${r.width} × ${r.height} px`;
