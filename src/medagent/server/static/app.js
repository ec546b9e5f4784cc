// The chat page: a Deep Zoom viewer, the agent's viewed regions as numbered boxes, and the chat.
// Plain module, no build step. Every event of a turn (live or from history) goes through
// `show(event)`, so a reloaded page looks exactly like the live one.
/* global OpenSeadragon */

import { $, api, el, fmt } from "./page.js";

const state = { session: null, viewer: null, opened: false, pendingBoxes: [], region: null,
  selecting: false, turns: new Map(), busy: false };

// ---- choosing a slide ------------------------------------------------------------------
async function showPicker() {
  $("picker").hidden = false;
  const { slides } = await (await api("/api/slides")).json();
  for (const slide of slides) {
    const button = el("button", null, slide);
    button.type = "button";
    button.addEventListener("click", () => openSlide(slide));
    const item = el("li");
    item.append(button);
    $("slides").append(item);
  }
  $("slide-form").addEventListener("submit", (e) => { e.preventDefault(); openSlide($("slide-path").value); });
}

async function openSlide(slide) {
  try {
    const info = await (await api("/api/sessions", { method: "POST", body: JSON.stringify({ slide }) })).json();
    history.replaceState(null, "", `/?session=${encodeURIComponent(info.id)}`);
    $("picker").hidden = true;
    await startSession(info);
  } catch (error) {
    $("picker-error").textContent = error.message;
  }
}

// ---- the viewer and its boxes ------------------------------------------------------------
function startViewer(info) {
  const viewer = OpenSeadragon({
    element: $("viewer"),
    prefixUrl: "/static/vendor/openseadragon/images/",
    tileSources: info.dzi,
    showNavigator: true,
    navigatorPosition: "BOTTOM_LEFT",
    gestureSettingsMouse: { clickToZoom: false },
  });
  let tiles = 0;
  viewer.addHandler("tile-loaded", () => { document.body.dataset.tiles = String(++tiles); });
  viewer.addHandler("open", () => {
    state.opened = true;
    for (const box of state.pendingBoxes.splice(0)) drawBox(box);
  });
  viewer.addHandler("canvas-press", (e) => {
    if (!state.selecting) return;
    state.dragFrom = viewer.viewport.viewerElementToImageCoordinates(e.position);
  });
  viewer.addHandler("canvas-drag", (e) => {
    if (!state.selecting || !state.dragFrom) return;
    e.preventDefaultAction = true;  // draw, don't pan
    const to = viewer.viewport.viewerElementToImageCoordinates(e.position);
    setSelection(regionBetween(state.dragFrom, to, info));
  });
  viewer.addHandler("canvas-release", () => {
    if (!state.selecting || !state.dragFrom) return;
    state.dragFrom = null;
    toggleSelecting(false);
    if (state.region) { $("question").focus(); }
  });
  return viewer;
}

function regionBetween(a, b, info) {
  const x0 = Math.max(0, Math.min(a.x, b.x)), y0 = Math.max(0, Math.min(a.y, b.y));
  const x1 = Math.min(info.width, Math.max(a.x, b.x)), y1 = Math.min(info.height, Math.max(a.y, b.y));
  return { x: Math.round(x0), y: Math.round(y0), width: Math.max(1, Math.round(x1 - x0)),
    height: Math.max(1, Math.round(y1 - y0)) };
}

function rect(region) {
  return state.viewer.viewport.imageToViewportRectangle(region.x, region.y, region.width, region.height);
}

function setSelection(region) {
  state.region = region;
  if (!state.selectionEl) {
    state.selectionEl = el("div", "selection");
    state.viewer.addOverlay({ element: state.selectionEl, location: rect(region) });
  } else {
    state.viewer.updateOverlay(state.selectionEl, rect(region));
  }
  $("region-chip").hidden = false;
  $("region-text").textContent = `Asking about ${fmt(region)}`;
}

function clearSelection() {
  if (state.selectionEl) state.viewer.removeOverlay(state.selectionEl);
  state.selectionEl = null;
  state.region = null;
  $("region-chip").hidden = true;
}

function toggleSelecting(on) {
  state.selecting = on;
  $("select-region").setAttribute("aria-pressed", String(on));
  $("viewer").classList.toggle("selecting", on);
}

// A box: { number, region } for a numbered view of the agent, { user: true, region } for one
// the user pointed at.
function drawBox(box) {
  if (!state.opened) { state.pendingBoxes.push(box); return; }
  const node = el("div", box.user ? "box user" : "box");
  if (!box.user) {
    node.dataset.box = String(box.number);
    node.append(el("span", "label", String(box.number)));
    node.addEventListener("mouseenter", () => highlight(box.number, true));
    node.addEventListener("mouseleave", () => highlight(box.number, false));
    new OpenSeadragon.MouseTracker({ element: node, clickHandler: () => {
      document.getElementById(`crop-${box.number}`)?.scrollIntoView({ behavior: "smooth", block: "center" });
    } });
  }
  state.viewer.addOverlay({ element: node, location: rect(box.region) });
}

function highlight(number, on) {
  document.querySelector(`.box[data-box="${number}"]`)?.classList.toggle("active", on);
  document.getElementById(`crop-${number}`)?.classList.toggle("active", on);
}

// ---- the chat ----------------------------------------------------------------------------
function turnOf(event) {
  let turn = state.turns.get(event.turn);
  if (!turn) {
    const item = el("li");
    const user = el("div", "user-msg");
    const agent = el("div", "agent-msg pending");
    const steps = el("div", "steps");
    const answer = el("div", "answer");
    agent.append(steps, answer);
    item.append(user, agent);
    $("chat").append(item);
    turn = { user, agent, steps, answer, tokens: "" };
    state.turns.set(event.turn, turn);
  }
  return turn;
}

function show(event) {
  if (event.turn === undefined) {  // the server's own failure, outside any turn
    $("chat").append(el("li", "error", event.text));
    return;
  }
  const turn = turnOf(event);
  switch (event.type) {
    case "turn_start":
      // A turn cut off by a restart streams again from its start: redraw it, do not append.
      turn.steps.replaceChildren();
      turn.answer.textContent = turn.tokens = "";
      turn.agent.classList.add("pending");
      turn.user.textContent = event.text || "";
      if (event.region) {
        turn.user.append(el("span", "where", `about ${fmt(event.region)}`));
        drawBox({ user: true, region: event.region });
      }
      break;
    case "token":
      turn.tokens += event.text || "";
      turn.answer.textContent = turn.tokens;
      break;
    case "tool_call": {
      if (event.text) turn.steps.append(el("p", "step", event.text));
      const args = Object.entries(event.arguments || {}).map(([k, v]) => `${k}=${JSON.stringify(v)}`);
      turn.steps.append(el("p", "step", `→ ${event.tool}(${args.join(", ")})`));
      turn.tokens = "";
      turn.answer.textContent = "";
      break;
    }
    case "tool_result":
      turn.steps.append(el("p", event.ok ? "step" : "step failed", `${event.ok ? "✓" : "✗"} ${event.text || ""}`));
      break;
    case "crop":
      turn.steps.append(cropFigure(event));
      if (event.box !== null && event.box !== undefined) drawBox({ number: event.box, region: event.region });
      break;
    case "answer":
      turn.answer.textContent = event.text || "";
      break;
    case "error":
      turn.steps.append(el("p", "step failed error", event.text));
      break;
    case "turn_end":
      turn.agent.classList.remove("pending");
      break;
  }
  $("chat").scrollTop = $("chat").scrollHeight;
}

function cropFigure(event) {
  const figure = el("figure", "crop");
  const img = el("img");
  img.src = `/api/sessions/${state.session.id}/crops/${event.artifact_id}`;
  img.alt = event.box ? `view ${event.box}` : "overview";
  const caption = el("figcaption");
  if (event.box) {
    figure.id = `crop-${event.box}`;
    caption.append(el("span", "num", String(event.box)));
    figure.addEventListener("mouseenter", () => highlight(event.box, true));
    figure.addEventListener("mouseleave", () => highlight(event.box, false));
  }
  caption.append(event.box ? fmt(event.region) : "overview");
  if (event.region) img.addEventListener("click", () => state.viewer.viewport.fitBounds(rect(event.region)));
  figure.append(img, caption);
  return figure;
}

async function* serverSentEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
      const data = frame.split(/\r?\n/).filter((l) => l.startsWith("data:"))
        .map((l) => l.slice(5).replace(/^ /, "")).join("\n");
      if (data) yield JSON.parse(data);  // lines starting ":" are keep-alive pings
    }
  }
}

async function ask(event) {
  event.preventDefault();
  const text = $("question").value.trim();
  if (state.busy || (!text && !state.region)) return;
  state.busy = true;
  $("send").disabled = true;
  const body = { text, region: state.region };
  try {
    const response = await api(`/api/sessions/${state.session.id}/messages`, { method: "POST", body: JSON.stringify(body) });
    $("question").value = "";
    clearSelection();
    for await (const item of serverSentEvents(response)) show(item);
  } catch (error) {
    const wait = error.retryAfter ? ` (retry in ${error.retryAfter} s)` : "";
    $("chat").append(el("li", "error", `${error.message}${wait}`));
  } finally {
    state.busy = false;
    $("send").disabled = false;
  }
}

async function startSession(info) {
  state.session = info;
  $("slide-name").textContent = `${info.slide} — ${info.width} × ${info.height} px` +
    (info.mpp_x ? `, ${info.mpp_x} µm/px` : ", spacing unknown");
  $("workspace").hidden = false;
  state.viewer = startViewer(info);
  const { events } = await (await api(`/api/sessions/${info.id}/history`)).json();
  for (const event of events) show(event);
  $("ask").addEventListener("submit", ask);
  $("question").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) ask(e);
  });
  $("select-region").addEventListener("click", () => toggleSelecting(!state.selecting));
  $("region-clear").addEventListener("click", clearSelection);
  document.body.dataset.ready = "true";
}

async function main() {
  const id = new URLSearchParams(location.search).get("session");
  if (!id) return showPicker();
  try {
    await startSession(await (await api(`/api/sessions/${encodeURIComponent(id)}`)).json());
  } catch (error) {
    await showPicker();
    $("picker-error").textContent = `session ${id}: ${error.message}`;
  }
}

main();
