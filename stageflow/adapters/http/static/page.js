// The stageflow web page: the runs list, a run (graph, stages, events, inputs), a start
// form. Every API call carries the bearer token kept in sessionStorage; the event stream
// is read with fetch() so that the token travels in a header, never in a URL.
"use strict";

const KEY = "stageflow.token";
const ENDS = new Set(["run.completed", "run.failed", "run.cancelled"]);
const SHOWN = {
  "stage.started": "running", "stage.retrying": "running", "stage.completed": "completed",
  "stage.failed": "failed", "stage.skipped": "skipped", "stage.cancelled": "cancelled",
};
let view = null; // what to stop when the page shows something else

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child));
  return node;
}

function notice(text) {
  $("notice").textContent = text || "";
  $("notice").hidden = !text;
}

function headers(extra = {}) {
  const token = sessionStorage.getItem(KEY);
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

async function api(path, options = {}) {
  const init = { ...options, headers: headers(options.headers) };
  if (options.json !== undefined) {
    init.method = init.method || "POST";
    init.body = JSON.stringify(options.json);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, init);
  if (response.status === 204) return null;
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = (body && body.error) || {};
    const message = error.message || response.statusText;
    throw new Error(response.status === 401 ? `${message}: enter a token above` : message);
  }
  return body;
}

const when = (ts) => (ts ? new Date(ts * 1000).toLocaleTimeString() : "");
const seconds = (s) => (s == null ? "" : s < 1 ? `${(s * 1000).toPrecision(2)} ms` : `${s.toFixed(2)} s`);
const badge = (status) => el("span", { class: `status ${status}` }, status);

// ------------------------------------------------------------------ the runs list

function showRuns() {
  $("runs-view").hidden = false;
  let timer = null;
  const body = $("runs").tBodies[0];
  async function poll() {
    try {
      const page = await api("/runs?limit=50");
      body.replaceChildren(...page.runs.map((run) => el("tr", { "data-run": run.run_id },
        el("td", {}, el("a", { href: `#/runs/${run.run_id}` }, el("code", {}, run.run_id))),
        el("td", {}, run.pipeline), el("td", {}, badge(run.status)),
        el("td", {}, when(run.created_at)), el("td", {}, when(run.updated_at)))));
      notice("");
    } catch (error) { notice(error.message); }
    timer = setTimeout(poll, 2000);
  }
  poll();
  return () => clearTimeout(timer);
}

// ------------------------------------------------------------------ the start form

function showStart() {
  $("start-view").hidden = false;
  const select = $("start-pipeline");
  let described = {};
  api("/pipelines").then((found) => {
    described = Object.fromEntries(found.pipelines.map((p) => [p.name, p.description]));
    select.replaceChildren(...found.pipelines.map((p) => el("option", { value: p.name }, p.name)));
    select.onchange();
    notice("");
  }).catch((error) => notice(error.message));
  select.onchange = () => { $("start-description").textContent = described[select.value] || ""; };
  $("start-form").onsubmit = async (event) => {
    event.preventDefault();
    try {
      const data = JSON.parse($("start-data").value || "{}");
      const labels = JSON.parse($("start-labels").value || "{}");
      const started = await api("/runs", { json: { pipeline: select.value, data, labels } });
      location.hash = `#/runs/${started.run_id}`;
    } catch (error) { notice(error.message); }
  };
  return () => {};
}

// ------------------------------------------------------------------ a run

function drawGraph(stages) {
  // Columns by depth (the longest path from a root), one row per stage of a column.
  const depth = {};
  const of = (name) => {
    if (depth[name] === undefined) {
      const deps = (stages.find((s) => s.name === name) || { dependencies: [] }).dependencies;
      depth[name] = 0;
      depth[name] = deps.length ? 1 + Math.max(...deps.map(of)) : 0;
    }
    return depth[name];
  };
  const columns = [];
  for (const stage of stages) (columns[of(stage.name)] ||= []).push(stage.name);
  const W = 140, H = 36, GX = 60, GY = 20, at = {};
  columns.forEach((names, x) => names.forEach((name, y) => {
    at[name] = { x: 20 + x * (W + GX), y: 20 + y * (H + GY) };
  }));
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  const rows = Math.max(...columns.map((c) => c.length));
  svg.setAttribute("width", 40 + columns.length * (W + GX) - GX);
  svg.setAttribute("height", 40 + rows * (H + GY) - GY);
  const make = (tag, attrs) => {
    const node = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    return node;
  };
  for (const stage of stages) for (const dep of stage.dependencies) {
    const a = at[dep], b = at[stage.name];
    if (!a || !b) continue;
    const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2, mid = (x1 + x2) / 2;
    svg.append(make("path", { d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}` }));
  }
  for (const stage of stages) {
    const p = at[stage.name];
    const group = make("g", { "data-stage": stage.name, "data-kind": stage.kind, class: "pending" });
    group.append(make("rect", { x: p.x, y: p.y, width: W, height: H, rx: 6 }));
    const label = make("text", { x: p.x + W / 2, y: p.y + H / 2 });
    label.textContent = stage.name;
    group.append(label);
    const title = make("title", {});
    title.textContent = stage.name;
    group.append(title);
    svg.append(group);
  }
  $("graph").replaceChildren(svg);
}

function colour(stage, status) {
  const group = $("graph").querySelector(`g[data-stage="${CSS.escape(stage)}"]`);
  if (group) group.setAttribute("class", status);
}

function template(schema) {
  // A value to start from, so that the form shows the fields the schema asks for.
  if (!schema || typeof schema !== "object") return null;
  if (schema.default !== undefined) return schema.default;
  switch (schema.type) {
    case "object":
      return Object.fromEntries(Object.entries(schema.properties || {})
        .map(([k, v]) => [k, template(v)]));
    case "boolean": return false;
    case "integer": case "number": return 0;
    case "string": return "";
    case "array": return [];
    default: return null;
  }
}

function inputForms(runId, waiting, refresh) {
  const shown = new Set([...$("inputs").children].map((f) => f.dataset.input));
  const wanted = new Set(waiting.map((w) => w.name));
  for (const form of [...$("inputs").children]) if (!wanted.has(form.dataset.input)) form.remove();
  for (const pending of waiting) {
    if (shown.has(pending.name)) continue;
    const value = el("textarea", { name: "value", rows: 4 });
    value.value = JSON.stringify(template(pending.schema), null, 2);
    const form = el("form", { class: "input-form", "data-input": pending.name },
      el("h3", {}, `Input `, el("code", {}, pending.name)),
      el("p", {}, pending.prompt || ""),
      el("label", {}, "Value (JSON)", value),
      el("button", { type: "submit" }, "Send"));
    form.onsubmit = async (event) => {
      event.preventDefault();
      try {
        const path = `/runs/${encodeURIComponent(runId)}/inputs/${encodeURIComponent(pending.name)}`;
        await api(path, { json: { value: JSON.parse(value.value) } });
        form.remove();
        notice("");
        refresh();
      } catch (error) { notice(`${pending.name}: ${error.message}`); }
    };
    $("inputs").append(form);
  }
}

function renderRun(run) {
  $("run-status").className = `status ${run.status}`;
  $("run-status").textContent = run.status;
  $("run-pipeline").textContent = run.pipeline;
  $("run-error").textContent = run.error || "";
  const usage = run.usage.by_stage;
  $("stages").tBodies[0].replaceChildren(...run.stages.map((s) => {
    colour(s.name, s.status);
    const used = usage[s.name] || {};
    return el("tr", { "data-stage": s.name },
      el("td", {}, s.name), el("td", {}, badge(s.status)), el("td", {}, s.attempts),
      el("td", {}, seconds(s.duration)), el("td", {}, used.tokens || ""),
      el("td", {}, used.cost == null ? "" : used.cost.toFixed(4)),
      el("td", {}, s.error || s.reason || ""));
  }));
  const cost = run.usage.cost == null ? "" : `, cost ${run.usage.cost.toFixed(4)}`;
  $("usage").textContent = `${run.usage.tokens} tokens${cost}`;
}

async function follow(runId, onEvent, signal) {
  // Server-Sent Events over fetch(): an Authorization header, and Last-Event-ID on
  // reconnect, so that nothing is missed nor seen twice.
  let last = null;
  while (!signal.aborted) {
    const extra = { Accept: "text/event-stream" };
    if (last !== null) extra["Last-Event-ID"] = last;
    let ended = false;
    try {
      const response = await fetch(`/runs/${encodeURIComponent(runId)}/events`,
        { headers: headers(extra), signal });
      if (response.status === 204) return;
      if (!response.ok) throw new Error(`events: ${response.status} ${response.statusText}`);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n?/g, "\n");
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          let id = null, data = "";
          for (const line of block.split("\n")) {
            if (line.startsWith("id:")) id = line.slice(3).trim();
            else if (line.startsWith("data:")) data += line.slice(5).replace(/^ /, "");
          }
          if (!data) continue; // a heartbeat
          if (id !== null) last = id;
          const event = JSON.parse(data);
          onEvent(event);
          if (ENDS.has(event.type)) ended = true;
        }
      }
    } catch (error) {
      if (signal.aborted) return;
      notice(error.message);
    }
    if (ended) return;
    await new Promise((resolve) => setTimeout(resolve, 1000)); // then resume after `last`
  }
}

function showRun(runId) {
  $("run-view").hidden = false;
  $("run-id").textContent = runId;
  $("events").replaceChildren();
  $("inputs").replaceChildren();
  $("graph").replaceChildren();
  const stop = new AbortController();
  let pending = null;
  const refresh = () => {
    clearTimeout(pending);
    pending = setTimeout(async () => {
      try {
        const run = await api(`/runs/${encodeURIComponent(runId)}`);
        if (stop.signal.aborted) return;
        renderRun(run);
        inputForms(runId, run.waiting_for, refresh);
      } catch (error) { notice(error.message); }
    }, 100);
  };
  (async () => {
    try {
      const run = await api(`/runs/${encodeURIComponent(runId)}`);
      const pipeline = await api(`/pipelines/${encodeURIComponent(run.pipeline)}`);
      drawGraph(pipeline.stages);
      renderRun(run);
      inputForms(runId, run.waiting_for, refresh);
      notice("");
    } catch (error) { notice(error.message); return; }
    follow(runId, (event) => {
      if (event.stage && SHOWN[event.type]) colour(event.stage, SHOWN[event.type]);
      const what = [event.seq, when(event.ts), event.type, event.stage || ""].join("  ");
      $("events").append(el("li", { "data-type": event.type, "data-seq": event.seq }, what));
      refresh();
    }, stop.signal);
  })();
  return () => { stop.abort(); clearTimeout(pending); };
}

// ------------------------------------------------------------------ routing

function route() {
  if (view) view();
  for (const id of ["runs-view", "start-view", "run-view"]) $(id).hidden = true;
  const hash = location.hash.replace(/^#/, "") || "/";
  const run = hash.match(/^\/runs\/([^/]+)$/);
  view = run ? showRun(decodeURIComponent(run[1])) : hash === "/start" ? showStart() : showRuns();
}

document.addEventListener("DOMContentLoaded", () => {
  $("token").value = sessionStorage.getItem(KEY) || "";
  $("token-form").onsubmit = (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY, $("token").value.trim());
    route();
  };
  window.addEventListener("hashchange", route);
  route();
});
