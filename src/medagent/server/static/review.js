// The review page: eval runs, their items, and one item at a time — the slide with the
// agent's views as boxes numbered by step, the steps' reasoning, the answer, the reference,
// and the reviewer's grade (answer: correct / partly / wrong; each step useful or wasteful).
// Plain module, no build step; the address (?run=R&item=I) says what is shown.
/* global OpenSeadragon */

import { $, api, el, fmt } from "./page.js";

const json = async (path, options) => (await api(path, options)).json();

const params = new URLSearchParams(location.search);

const query = (values) => new URLSearchParams(values).toString();
const automatic = (row) => (row.correct === true ? "correct" : row.correct === false ? "wrong"
  : row.score !== null && row.score !== undefined ? `score ${row.score.toFixed(2)}` : "—");

function linkButton(text, href) {
  const button = el("button", null, text);
  button.type = "button";
  button.addEventListener("click", () => { location.href = href; });
  return button;
}

// ---- runs and items ------------------------------------------------------------------------
async function showRuns() {
  $("runs-view").hidden = false;
  const { runs } = await json("/api/review/runs");
  const body = $("runs").querySelector("tbody");
  for (const run of runs) {
    const row = el("tr");
    const name = el("td");
    name.append(linkButton(run.name, `/review?${query({ run: run.name })}`));
    row.append(name, el("td", null, run.method), el("td", null, run.model), el("td", null, run.dataset),
      el("td", null, String(run.items)), el("td", null, String(run.graded)));
    body.append(row);
  }
  document.body.dataset.ready = "true";
}

async function showItems(run) {
  $("items-view").hidden = false;
  const data = await json(`/api/review/items?${query({ run })}`);
  $("run-title").textContent = data.run;
  $("where").textContent = data.run;
  $("export-csv").href = `/api/review/export?${query({ run: data.run, format: "csv" })}`;
  $("export-jsonl").href = `/api/review/export?${query({ run: data.run, format: "jsonl" })}`;
  const body = $("items").querySelector("tbody");
  for (const item of data.items) {
    const row = el("tr");
    row.dataset.item = item.item;
    const name = el("td");
    name.append(linkButton(item.item, `/review?${query({ run: data.run, item: item.item })}`));
    row.append(name, el("td", null, item.task), el("td", null, item.status),
      el("td", null, automatic(item)), el("td", "grade", item.grade || (item.reviewed ? "(steps only)" : "")));
    body.append(row);
  }
  document.body.dataset.ready = "true";
}

// ---- one item ------------------------------------------------------------------------------
function startViewer(slide, steps) {
  const viewer = OpenSeadragon({
    element: $("viewer"),
    prefixUrl: "/static/vendor/openseadragon/images/",
    tileSources: slide.dzi,
    showNavigator: true,
    navigatorPosition: "BOTTOM_LEFT",
    gestureSettingsMouse: { clickToZoom: false },
  });
  let tiles = 0;
  viewer.addHandler("tile-loaded", () => { document.body.dataset.tiles = String(++tiles); });
  viewer.addHandler("open", () => {
    for (const step of steps) {
      if (!step.region) continue;
      const node = el("div", "box");
      node.dataset.box = String(step.step);
      node.append(el("span", "label", String(step.step)));
      node.addEventListener("mouseenter", () => highlight(step.step, true));
      node.addEventListener("mouseleave", () => highlight(step.step, false));
      const r = step.region;
      viewer.addOverlay({ element: node, location: viewer.viewport.imageToViewportRectangle(r.x, r.y, r.width, r.height) });
    }
  });
  return viewer;
}

function highlight(number, on) {
  document.querySelector(`.box[data-box="${number}"]`)?.classList.toggle("active", on);
  document.getElementById(`step-${number}`)?.classList.toggle("active", on);
}

function stepItem(step, grade, viewer) {
  const item = el("li");
  item.id = `step-${step.step}`;
  const head = el("div");
  head.append(el("span", "num", String(step.step)), step.kind);
  if (step.region) head.append(el("span", "where", ` — ${fmt(step.region)}${step.level !== null ? `, level ${step.level}` : ""}`));
  item.append(head);
  if (step.reasoning) item.append(el("p", "reasoning", step.reasoning));
  if (step.answer) item.append(el("p", "reasoning", `answer: ${step.answer}`));
  for (const error of step.errors) item.append(el("p", "step failed", error));
  const choices = el("div", "path-grade");
  for (const [value, label] of [["", "not graded"], ["useful", "useful"], ["wasteful", "wasteful"]]) {
    const option = el("label");
    const input = el("input");
    input.type = "radio";
    input.name = `step-${step.step}`;
    input.value = value;
    input.checked = (grade?.steps?.[step.step] || "") === value;
    option.append(input, ` ${label} `);
    choices.append(option);
  }
  item.append(choices);
  item.addEventListener("mouseenter", () => highlight(step.step, true));
  item.addEventListener("mouseleave", () => highlight(step.step, false));
  if (step.region && viewer) {
    head.addEventListener("click", () => {
      const r = step.region;
      viewer.viewport.fitBounds(viewer.viewport.imageToViewportRectangle(r.x, r.y, r.width, r.height));
    });
  }
  return item;
}

async function neighbours(run, item) {
  const { items } = await json(`/api/review/items?${query({ run })}`);
  const at = items.findIndex((row) => row.item === item);
  const link = (id, row) => { if (row) $(id).href = `/review?${query({ run, item: row.item })}`; };
  link("prev-item", items[at - 1]);
  link("next-item", items[at + 1]);
}

async function showItem(run, itemId) {
  $("item-view").hidden = false;
  const item = await json(`/api/review/item?${query({ run, item: itemId })}`);
  $("where").textContent = `${item.run} — ${item.item}`;
  $("back-to-run").href = `/review?${query({ run: item.run })}`;
  $("item-title").textContent = `${item.item} (${item.task})`;
  $("question").textContent = item.question + (item.options ? `\n${item.options.map((o, i) => `${i + 1}. ${o}`).join("\n")}` : "");
  let viewer = null;
  if (item.slide.available) {
    viewer = startViewer(item.slide, item.steps);
  } else {
    $("no-slide").hidden = false;
    $("no-slide").textContent = item.slide.reason;
  }
  for (const step of item.steps) $("steps").append(stepItem(step, item.grade, viewer));
  $("answer").textContent = item.answer ?? (item.error ? `failed: ${item.error}` : "—");
  $("prediction").textContent = item.prediction ?? "—";
  $("reference").textContent = item.reference ?? "—";
  $("automatic").textContent = automatic(item);
  for (const input of document.querySelectorAll("input[name=answer]")) input.checked = item.grade?.answer === input.value;
  $("comment").value = item.grade?.comment || "";
  $("grade-form").addEventListener("submit", (event) => save(event, item));
  neighbours(item.run, item.item).catch(() => {});
  document.body.dataset.ready = "true";
}

async function save(event, item) {
  event.preventDefault();
  const steps = {};
  for (const step of item.steps) {
    const value = document.querySelector(`input[name="step-${step.step}"]:checked`)?.value;
    if (value) steps[step.step] = value;
  }
  const answer = document.querySelector("input[name=answer]:checked")?.value || null;
  const body = { run: item.run, item: item.item, answer, steps, comment: $("comment").value };
  $("saved").textContent = "";
  $("save").disabled = true;
  try {
    await json("/api/review/grades", { method: "POST", body: JSON.stringify(body) });
    $("saved").textContent = "saved";
    $("error").textContent = "";
  } catch (error) {
    $("error").textContent = error.message;
  } finally {
    $("save").disabled = false;
  }
}

async function main() {
  const run = params.get("run"), item = params.get("item");
  try {
    if (run && item) await showItem(run, item);
    else if (run) await showItems(run);
    else await showRuns();
  } catch (error) {
    $("error").textContent = error.message;
    document.body.dataset.ready = "error";
  }
}

main();
