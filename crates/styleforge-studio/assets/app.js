// StyleForge Studio: one page per hash route (#runs, #run/NAME, #new, #generate,
// #compare). Plain JavaScript, no build step; the server embeds this file.
"use strict";

const TOKEN = window.STUDIO_TOKEN;
// The token stays in memory and the cookie; it leaves the address bar.
if (location.search.includes("token=")) {
  history.replaceState(null, "", location.pathname + location.hash);
}

async function api(method, path, body) {
  const opts = { method, headers: { "x-styleforge-token": TOKEN } };
  if (body !== undefined) {
    opts.headers["content-type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const res = await fetch(path, opts);
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(data.error || res.statusText);
  return data;
}

// el("div", {class: "x"}, "text", child, ...): text is always set as text.
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

const view = () => document.getElementById("view");
let cleanup = [];

function setPage(name, ...nodes) {
  cleanup.forEach((f) => f());
  cleanup = [];
  document.body.dataset.page = name;
  const nav = name === "run" ? "runs" : name;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.id === "nav-" + nav);
  view().replaceChildren(...nodes);
}

function stateBadge(state) {
  return el("span", { class: "state " + state, id: "state" }, state);
}

// A stopped run's step, when the trainer saved a checkpoint of it as it stopped.
function stoppedNote(v) {
  return v.state === "stopped" && v.stopped_at !== null && v.stopped_at !== undefined
    ? el("span", { class: "note stopped-at" }, ` stopped at step ${v.stopped_at} (checkpoint saved)`)
    : null;
}

function duration(s) {
  if (s === null || s === undefined) return "–";
  s = Math.round(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return h ? `${h}h${String(m).padStart(2, "0")}m` : m ? `${m}m${String(r).padStart(2, "0")}s` : `${r}s`;
}

// The loss curve as an inline SVG: [[step, loss], ...].
function chart(points, width = 560, height = 220, id = "chart") {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("id", id);
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.dataset.points = points.length;
  const pad = 36;
  if (points.length === 0) {
    const t = document.createElementNS(ns, "text");
    t.setAttribute("x", width / 2 - 40);
    t.setAttribute("y", height / 2);
    t.textContent = "no steps yet";
    svg.append(t);
    return svg;
  }
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
  let y0 = Math.min(...ys), y1 = Math.max(...ys);
  if (y1 - y0 < 1e-9) { y0 -= 0.5; y1 += 0.5; }
  const X = (x) => pad + ((x - x0) / (x1 - x0)) * (width - 2 * pad);
  const Y = (y) => height - pad + ((y0 - y) / (y1 - y0)) * (height - 2 * pad);
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("fill", "none");
  line.setAttribute("stroke", "#0969da");
  line.setAttribute("stroke-width", "1.5");
  line.setAttribute("points", points.map((p) => `${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join(" "));
  svg.append(line);
  const label = (x, y, text, anchor) => {
    const t = document.createElementNS(ns, "text");
    t.setAttribute("x", x); t.setAttribute("y", y);
    t.setAttribute("font-size", "11"); t.setAttribute("fill", "#57606a");
    if (anchor) t.setAttribute("text-anchor", anchor);
    t.textContent = text;
    svg.append(t);
  };
  label(4, pad - 4, y1.toPrecision(3));
  label(4, height - pad + 4, y0.toPrecision(3));
  label(pad, height - 8, "step " + x0);
  label(width - pad, height - 8, "step " + x1, "end");
  label(width / 2, 14, "loss", "middle");
  return svg;
}

// ---- Runs -----------------------------------------------------------------------------

async function runsPage() {
  const runs = await api("GET", "/api/runs");
  const rows = runs.map((r) =>
    el("tr", { "data-run": r.name },
      el("td", {}, el("a", { href: "#run/" + encodeURIComponent(r.name) }, r.name)),
      el("td", {}, stateBadge(r.state), stoppedNote(r)),
      el("td", {}, r.method || "–"),
      el("td", {}, `${r.step} / ${r.steps ?? "?"}`),
      el("td", {}, r.loss === null ? "–" : r.loss.toFixed(4)),
      el("td", { class: "note" }, r.status || "")));
  setPage("runs",
    el("h1", {}, "Runs"),
    runs.length === 0
      ? el("p", { class: "note" }, "No run in the runs folder yet. ", el("a", { href: "#new" }, "Start one."))
      : el("table", { id: "runs" },
          el("tr", {}, ["run", "state", "method", "step", "loss", "doing"].map((h) => el("th", {}, h))),
          rows));
  const timer = setInterval(() => { if (document.body.dataset.page === "runs") runsPage(); }, 3000);
  cleanup.push(() => clearInterval(timer));
}

function runPage(name) {
  let points = [];
  const title = el("h1", {}, "Run ", name, " ");
  const stats = el("div", { class: "stats" });
  const chartBox = el("div", {});
  const status = el("pre", { id: "status" });
  const buttons = el("p", {});
  const grids = el("div", { class: "grids" });
  const message = el("p", { class: "error", id: "message" });
  setPage("run", title, stats, buttons, message, el("h2", {}, "Loss"), chartBox,
    el("h2", {}, "Trainer"), status, el("h2", {}, "Validation grids"), grids);

  async function act(what) {
    message.textContent = "";
    try { await api("POST", `/api/runs/${encodeURIComponent(name)}/${what}`); }
    catch (e) { message.textContent = e.message; }
  }

  function show(v) {
    if (v.reset) points = [];
    points = points.concat(v.points);
    title.replaceChildren("Run ", name, " ", stateBadge(v.state), ...[stoppedNote(v)].filter(Boolean));
    const stat = (label, value, id) => el("div", {}, label, el("b", { id }, value));
    stats.replaceChildren(
      stat("step", `${v.step} / ${v.steps ?? "?"}`, "step"),
      stat("loss", v.loss === null ? "–" : v.loss.toFixed(4), "loss"),
      stat("time left", duration(v.eta_s), "eta"),
      stat("checkpoint", v.checkpoint ?? "none", "checkpoint"),
      stat("method", v.method || "–", "method"));
    chartBox.replaceChildren(chart(points));
    status.textContent = v.status || "";
    const canResume = v.resumable && (v.state === "stopped" || v.state === "failed");
    buttons.replaceChildren(
      el("button", { id: "stop", disabled: v.state !== "running", onclick: () => act("stop") }, "Stop"), " ",
      el("button", { id: "resume", disabled: !canResume, onclick: () => act("resume") },
        v.checkpoint ? `Resume from step ${v.checkpoint}` : "Start again"), " ",
      v.has_model && v.state === "finished"
        ? el("a", { href: "#generate/" + encodeURIComponent("run:" + name), id: "generate-from" }, "Generate with this model")
        : null);
    const latest = v.grids[v.grids.length - 1];
    grids.replaceChildren(...(latest
      ? [el("p", { class: "note" }, latest.split("/").pop()),
         el("img", { src: latest, id: "latest-grid", alt: "validation grid" }),
         el("div", { class: "thumbs" }, v.grids.slice(0, -1).reverse().map((g) =>
           el("a", { href: g, target: "_blank" }, el("img", { src: g, width: 140, alt: g.split("/").pop() }))))]
      : [el("p", { class: "note" }, "none yet")]));
  }

  const source = new EventSource(`/api/runs/${encodeURIComponent(name)}/events`);
  source.onmessage = (e) => show(JSON.parse(e.data));
  cleanup.push(() => source.close());
}

// ---- New style ------------------------------------------------------------------------

const field = (label, input, note) =>
  [el("label", { for: input.id }, label), note ? el("span", {}, input, " ", el("span", { class: "note" }, note)) : input];

function newPage() {
  const num = (id, value, step) => el("input", { type: "number", id, value, step: step || "1", min: "0" });
  const text = (id, value, placeholder) => el("input", { type: "text", id, value: value || "", placeholder: placeholder || "" });
  const method = el("select", { id: "method" },
    [["styleforge", "StyleForge"], ["multi-styleforge", "Multi-StyleForge (people + backgrounds)"],
     ["dreambooth", "DreamBooth (baseline)"], ["lora", "LoRA (baseline)"],
     ["textual-inversion", "Textual Inversion (baseline)"], ["custom-diffusion", "Custom Diffusion (baseline)"]]
      .map(([v, l]) => el("option", { value: v }, l)));
  const f = {
    name: text("name", "", "my-style"),
    base: text("base", "", "a diffusers folder, a .safetensors file or owner/name on the Hub"),
    method,
    style_dir: text("style_dir", "", "/path/to/style-images"),
    style_dir2: text("style_dir2", "", "backgrounds folder (Multi-StyleForge)"),
    token: text("token", "", "default: ohwx"),
    steps: num("steps", 400),
    lr: text("lr", "", "default: the method's"),
    batch_size: num("batch_size", 1),
    resolution: num("resolution", 512, 8),
    seed: num("seed", 1337),
    validate_every: num("validate_every", 100),
    checkpoint_every: num("checkpoint_every", 100),
    num_aux_images: num("num_aux_images", ""),
    sampling_steps: num("sampling_steps", ""),
    gradient_checkpointing: el("input", { type: "checkbox", id: "gradient_checkpointing" }),
    adamw8bit: el("input", { type: "checkbox", id: "adamw8bit" }),
  };
  const check = el("button", { type: "button", id: "check" }, "Check images");
  const images = el("div", { id: "images" });
  const estimate = el("pre", { id: "estimate" }, "–");
  const message = el("p", { class: "error", id: "message" });
  const start = el("button", { type: "button", class: "primary", id: "start" }, "Start training");

  function form() {
    const n = (k) => (f[k].value === "" ? null : Number(f[k].value));
    return {
      name: f.name.value.trim(), base: f.base.value, method: f.method.value,
      style_dir: f.style_dir.value, style_dir2: f.style_dir2.value || null,
      token: f.token.value || null, steps: n("steps") ?? 0, lr: f.lr.value ? Number(f.lr.value) : null,
      batch_size: n("batch_size"),
      resolution: n("resolution") ?? 512, seed: n("seed"), validate_every: n("validate_every"),
      checkpoint_every: n("checkpoint_every"), num_aux_images: n("num_aux_images"),
      sampling_steps: n("sampling_steps"), gradient_checkpointing: f.gradient_checkpointing.checked,
      adamw8bit: f.adamw8bit.checked,
    };
  }

  // Each folder's check, numbered: an answer to an older check is dropped.
  const inspections = new Map();
  async function inspectFolder(input, images, summaryId) {
    if (!input.value || input.disabled) { images.replaceChildren(); return; }
    const mine = (inspections.get(input) || 0) + 1;
    inspections.set(input, mine);
    images.replaceChildren(el("p", { class: "note" }, "checking…"));
    try {
      const r = await api("POST", "/api/inspect", { dir: input.value, resolution: Number(f.resolution.value) || 512 });
      if (mine !== inspections.get(input)) return;
      images.replaceChildren(
        el("p", { id: summaryId }, `${r.usable} of ${r.images.length} images usable`),
        ...r.problems.map((p) => el("p", { class: "problem" }, p)),
        el("div", { class: "thumbs" }, r.images.map((img) => {
          const caption = el("input", { type: "text", value: img.caption || "", placeholder: "caption (optional)",
            onchange: async () => {
              try { await api("POST", "/api/caption", { path: img.path, caption: caption.value }); caption.style.borderColor = "#1a7f37"; }
              catch (e) { message.textContent = e.message; }
            } });
          return el("div", { class: "thumb" + (img.problem ? " bad" : ""), "data-file": img.file },
            el("img", { src: "/input?path=" + encodeURIComponent(img.path), alt: img.file }),
            el("div", {}, img.file, img.size ? ` ${img.size[0]}×${img.size[1]}` : ""),
            img.problem ? el("div", { class: "problem" }, img.problem) : caption);
        })));
    } catch (e) {
      if (mine === inspections.get(input)) images.replaceChildren(el("p", { class: "problem" }, e.message));
    }
  }
  const images2 = el("div", { id: "images2" });
  const inspect = () => {
    inspectFolder(f.style_dir, images, "image-summary");
    inspectFolder(f.style_dir2, images2, "image-summary2");
  };

  let pending;
  function updateEstimate() {
    clearTimeout(pending);
    pending = setTimeout(async () => {
      if (!f.base.value || !f.style_dir.value || !f.name.value) { estimate.textContent = "fill in the name, base and images"; return; }
      try {
        const e = await api("POST", "/api/estimate", form());
        const avail = e.available_gb === null ? "" : ` of ${e.available_gb.toFixed(1)} GB available`;
        estimate.textContent = (e.peak_gb === null ? "" : `peak ≈ ${e.peak_gb.toFixed(2)} GB${avail}\n\n`) + e.detail;
      } catch (err) { estimate.textContent = err.message; }
    }, 300);
  }

  check.addEventListener("click", inspect);
  f.style_dir.addEventListener("change", inspect);
  f.style_dir2.addEventListener("change", inspect);
  f.resolution.addEventListener("change", inspect);
  const show2 = () => { f.style_dir2.disabled = f.method.value !== "multi-styleforge"; };
  f.method.addEventListener("change", () => { show2(); inspectFolder(f.style_dir2, images2, "image-summary2"); });
  for (const input of Object.values(f)) input.addEventListener("change", updateEstimate);
  start.addEventListener("click", async () => {
    message.textContent = "";
    start.disabled = true;
    try {
      const v = await api("POST", "/api/runs", form());
      location.hash = "#run/" + encodeURIComponent(v.name);
    } catch (e) { message.textContent = e.message; start.disabled = false; }
  });

  setPage("new",
    el("h1", {}, "New style"),
    el("div", { class: "grid" },
      field("Run name", f.name), field("Base model", f.base), field("Method", f.method),
      field("Style images", el("span", {}, f.style_dir, check)), field("Second folder", f.style_dir2),
      field("Token", f.token), field("Steps", f.steps), field("Learning rate", f.lr),
      field("Batch size", f.batch_size, "style images a step, each with an Aux image; more memory"),
      field("Resolution", f.resolution, "px; images must be at least this on their short side"),
      field("Seed", f.seed), field("Validation grid every", f.validate_every, "steps"),
      field("Checkpoint every", f.checkpoint_every, "steps (a stopped run resumes from the newest)"),
      field("Aux images", f.num_aux_images, "default: the method's"),
      field("Sampling steps", f.sampling_steps, "of the Aux images and validation grids"),
      field("Gradient checkpointing", f.gradient_checkpointing, "less memory, ~25% slower"),
      field("8-bit AdamW", f.adamw8bit, "a quarter of the optimizer memory")),
    images, images2,
    el("h2", {}, "Memory estimate"), estimate,
    el("p", {}, start), message);
  show2();
}

// ---- Generate -------------------------------------------------------------------------

async function generatePage(preset) {
  const [models, info] = await Promise.all([api("GET", "/api/models"), api("GET", "/api/info")]);
  const model = el("select", { id: "model" },
    models.map((m) => el("option", { value: m.id, selected: m.id === preset }, m.label)),
    el("option", { value: "" }, "another model (path or Hub name)…"));
  const other = el("input", { type: "text", id: "model-path", placeholder: "model folder, .safetensors or owner/name" });
  const prompt = el("textarea", { id: "prompt", rows: 2 }, "");
  const negative = el("input", { type: "text", id: "negative" });
  const sampler = el("select", { id: "sampler" }, el("option", { value: "" }, "the model's own"),
    info.samplers.map((s) => el("option", { value: s }, s)));
  const n = (id, value, step) => el("input", { type: "number", id, value, step: step || "1" });
  const steps = n("gen-steps", 30), guidance = n("guidance", 7.5, "0.5"), seed = n("seed", 1);
  const rescale = n("guidance-rescale", 0, "0.05");
  const width = n("width", ""), height = n("height", "");
  const message = el("p", { class: "error", id: "message" });
  const go = el("button", { class: "primary", id: "go" }, "Generate");
  const gallery = el("div", { class: "gallery", id: "gallery" });

  async function refresh() {
    const entries = await api("GET", "/api/gallery");
    gallery.replaceChildren(...entries.map((e) => el("div", { class: "card", "data-state": e.state, "data-id": e.id },
      e.image ? el("img", { src: e.image, alt: e.params.prompt }) : el("p", { class: e.state === "failed" ? "problem" : "note" }, e.state === "failed" ? (e.message || "failed") : "generating…"),
      el("div", {}, el("b", {}, e.params.prompt)),
      el("div", { class: "note" },
        `${e.params.model} · ${e.params.sampler || "default"} · ${e.params.steps} steps · cfg ${e.params.guidance}${e.params.guidance_rescale > 0 ? ` (rescale ${e.params.guidance_rescale})` : ""} · seed ${e.params.seed}` +
        (e.params.negative ? ` · not: ${e.params.negative}` : "")))));
    return entries.some((e) => e.state === "running");
  }
  let timer = null;
  const poll = async () => { if (await refresh()) timer = setTimeout(poll, 1000); };
  cleanup.push(() => clearTimeout(timer));

  go.addEventListener("click", async () => {
    message.textContent = "";
    const num = (i) => (i.value === "" ? null : Number(i.value));
    try {
      await api("POST", "/api/generate", {
        model: model.value || other.value, prompt: prompt.value, negative: negative.value || null,
        sampler: sampler.value || null, steps: num(steps), guidance: num(guidance), guidance_rescale: num(rescale) ?? 0, seed: num(seed),
        width: num(width), height: num(height),
      });
      clearTimeout(timer);
      poll();
    } catch (e) { message.textContent = e.message; }
  });

  setPage("generate", el("h1", {}, "Generate"),
    el("div", { class: "grid" },
      field("Model", model), field("Other model", other), field("Prompt", prompt),
      field("Negative prompt", negative), field("Sampler", sampler), field("Steps", steps),
      field("Guidance", guidance),
      field("Guidance rescale", rescale, "0 to 1, 0 is off; 0.7 tames washed-out high guidance"),
      field("Seed", seed), field("Width", width, "px, default: the model's"),
      field("Height", height)),
    el("p", {}, go), message, el("h2", {}, "Gallery"), gallery);
  poll();
}

// ---- Compare --------------------------------------------------------------------------

async function comparePage(selected) {
  const runs = await api("GET", "/api/runs");
  const chosen = new Set(selected ? selected.split(",").map(decodeURIComponent) : []);
  const boxes = runs.map((r) => el("label", { style: "margin-right:1em" },
    el("input", { type: "checkbox", value: r.name, checked: chosen.has(r.name), class: "pick" }), " ", r.name));
  const go = el("button", { id: "compare-go", onclick: () => {
    const names = [...document.querySelectorAll("input.pick:checked")].map((b) => encodeURIComponent(b.value));
    location.hash = "#compare/" + names.join(",");
  } }, "Compare");
  const columns = el("div", { class: "columns", id: "columns" });
  setPage("compare", el("h1", {}, "Compare"), el("p", {}, boxes, go), columns);
  if (chosen.size === 0) return;
  const cols = await api("GET", "/api/compare?runs=" + [...chosen].map(encodeURIComponent).join(","));
  columns.replaceChildren(...cols.map((c) => {
    const grid = c.run.grids[c.run.grids.length - 1];
    return el("div", { class: "column", "data-run": c.run.name },
      el("h2", {}, c.run.name, " ", stateBadge(c.run.state)),
      el("table", {}, c.settings.map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {}, v))),
        el("tr", {}, el("td", {}, "last loss"), el("td", {}, c.run.loss === null ? "–" : c.run.loss.toFixed(4)))),
      chart(c.run.points, 300, 140, "chart-" + c.run.name),
      grid ? el("img", { src: grid, alt: "last validation grid" }) : el("p", { class: "note" }, "no validation grid"),
      c.reports.length === 0
        ? el("p", { class: "note" }, "No evaluation report in this run (styleforge eval or protocol with --out inside it).")
        : c.reports.map((r) => el("div", { class: "report" },
            el("h2", {}, "report ", r.dir || "(run folder)", " ", r.html ? el("a", { href: r.html, target: "_blank" }, "open") : null),
            el("table", {}, r.metrics.map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {}, Number(v).toPrecision(4))))))));
  }));
}

// ---- Routing --------------------------------------------------------------------------

async function route() {
  const [page, arg] = location.hash.replace(/^#/, "").split(/\/(.*)/s);
  try {
    if (page === "run" && arg) runPage(decodeURIComponent(arg));
    else if (page === "new") newPage();
    else if (page === "generate") await generatePage(arg ? decodeURIComponent(arg) : undefined);
    else if (page === "compare") await comparePage(arg);
    else await runsPage();
  } catch (e) {
    setPage("error", el("p", { class: "error" }, e.message));
  }
}
window.addEventListener("hashchange", route);
route();
