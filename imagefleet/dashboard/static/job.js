// One job: live progress (watchJob), parameters, models, timings, cost, attempts and outputs;
// for a training job also its loss curve (training.js). An admin may open any tenant's job
// (the API lets admin keys read every job, never change another's): the overview's links say
// whose it is with `?tenant=`, and such a page is read-only.

import { api, FINAL, ROOT, watchJob } from "./api.js";
import { badge, card, clear, errorBox, h, number, progressBar, seconds, table, usd, when, NO_PRICE } from "./ui.js";
import { trainingCard } from "./training.js";

const TIMINGS = [
  ["queue_seconds", "Queue"], ["download_seconds", "Download"], ["model_load_seconds", "Model load"],
  ["adapter_seconds", "Adapters"], ["inference_seconds", "Inference"], ["decode_seconds", "Decode"],
  ["upload_seconds", "Upload"], ["total_seconds", "Total"],
];

// A parameter as a person reads it: models as name@version (weight), lists joined.
function value(v) {
  if (v === null || v === undefined) return "–";
  if (Array.isArray(v)) return v.length ? v.map(value).join(", ") : "none";
  if (typeof v === "object" && v.name) {
    const name = v.version ? `${v.name}@${v.version}` : v.name;
    return v.weight === undefined || v.weight === null ? name : `${name} (${v.weight})`;
  }
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

export function outputsGrid(job) {
  if (!job.outputs.length) return h("p", { class: "muted" }, FINAL.has(job.status) ? "No outputs." : "Outputs appear when the job succeeds.");
  return h("div", { class: "outputs" }, job.outputs.map((o) => o.content_type.startsWith("image/")
    ? h("figure", { class: "output" },
      h("a", { href: o.url, target: "_blank", rel: "noopener" }, h("img", { src: o.url, alt: `output ${o.index}` })),
      h("figcaption", {}, `#${o.index} · ${o.width}×${o.height} · seed ${o.seed ?? "–"}`))
    // A file that is no image (a trained LoRA): a download link, not a broken picture.
    : h("p", { class: "output-file" }, h("a", { href: o.url, download: "" }, `#${o.index} · download`),
      h("span", { class: "muted" }, ` ${o.content_type} · ${number(o.size_bytes / 1024, 1)} KiB`))));
}

export function liveProgress(job) {
  const label = job.status === "succeeded" ? "100%"
    : `${Math.round(job.progress.fraction * 100)}% · step ${job.progress.step}/${job.progress.total_steps}`;
  return h("div", { class: "live" }, badge(job.status), progressBar(job.status === "succeeded" ? 1 : job.progress.fraction, label));
}

// A low-resolution preview while the job runs, when its worker sends them
// (IMAGEFLEET_PREVIEW_EVERY): reloaded at each new step, hidden while there is none (404).
export function previewBox() {
  const img = h("img", { class: "preview", alt: "preview", hidden: true });
  img.addEventListener("load", () => { img.hidden = false; });
  img.addEventListener("error", () => { img.hidden = true; });
  let shown = -1;
  const box = h("div", { class: "preview-box" }, img);
  box.update = (job) => {
    if (FINAL.has(job.status)) { img.hidden = true; return; }
    if (job.status !== "running" || job.progress.step === shown) return;
    shown = job.progress.step;
    img.src = `${ROOT}/v1/jobs/${encodeURIComponent(job.id)}/preview?step=${shown}`;
  };
  return box;
}

// What the job cost so far: lease seconds at the price table's hourly price (as /v1/usage).
function cost(job) {
  const c = job.cost;
  if (!c) return "not claimed yet";
  if (c.cost_usd === null || c.cost_usd === undefined) return `${seconds(c.billable_seconds)} of lease · ${NO_PRICE}`;
  const images = job.outputs.some((o) => o.content_type.startsWith("image/"));
  const each = !images || c.cost_per_image_usd === null || c.cost_per_image_usd === undefined ? "" : ` · ${usd(c.cost_per_image_usd)} per image`;
  return `${usd(c.cost_usd)} for ${seconds(c.billable_seconds)} of lease${each}`;
}

export async function jobPage(main, { arg, query, session }) {
  const id = decodeURIComponent(arg);
  const tenant = query.get("tenant");
  const readOnly = Boolean(tenant) && session.scope === "admin" && tenant !== session.name;
  const head = h("header", { class: "page-head" });
  const progress = h("div");
  const details = h("div", { class: "grid-2" });
  const attempts = h("div");
  const outputs = h("div");
  const problem = h("div");
  const preview = previewBox();
  const first = await api(`/v1/jobs/${encodeURIComponent(id)}`);
  const training = first.kind === "train_lora" ? trainingCard(id) : null;
  main.append(...[head,
    readOnly ? h("p", { class: "note", id: "tenant-note" }, `${tenant}'s job, shown to you as an admin: read-only.`) : null,
    card("Progress", progress, preview, problem), training ? training.element : null,
    card("Outputs", outputs), details, card("Attempts", attempts)].filter(Boolean));
  let lastStatus = null;
  let lastAttempts = -1;

  function render(job) {
    const cancel = FINAL.has(job.status) || readOnly ? null : h("button", { class: "secondary", onclick: async () => {
      try { render(await api(`/v1/jobs/${encodeURIComponent(id)}/cancel`, { method: "POST" })); } catch (e) { clear(problem, errorBox(e)); }
    } }, "Cancel");
    clear(head, h("h1", {}, "Job ", h("span", { class: "mono" }, job.id)), h("span", { class: "muted" }, `${job.kind} · tier ${job.tier}`), cancel);
    clear(progress, liveProgress(job));
    preview.update(job);
    const error = job.error || job.last_error;
    clear(problem, error ? h("div", { class: "error-box" }, `${error.code}: ${error.message}`) : null);
    if (job.status !== lastStatus) {
      clear(outputs, outputsGrid(job));
      clear(details,
        card("Parameters", h("dl", { class: "kv" }, Object.entries(job.params).flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, value(v))]))),
        card("Models and timings",
          table(["Role", "Model", "Weight"], job.models.map((m) => h("tr", {}, h("td", {}, m.role), h("td", {}, `${m.name}@${m.version}`), h("td", {}, m.weight ?? "–"))), "No models."),
          h("dl", { class: "kv" }, h("dt", {}, "Submitted"), h("dd", {}, when(job.timings.queued_at)),
            TIMINGS.flatMap(([k, label]) => job.timings[k] === null || job.timings[k] === undefined ? [] : [h("dt", {}, label), h("dd", {}, seconds(job.timings[k]))]),
            h("dt", {}, "Cost"), h("dd", { id: "job-cost" }, cost(job)))));
    }
    if (training) training.refresh(FINAL.has(job.status) && job.status !== lastStatus);
    if (job.attempts !== lastAttempts || (job.status !== lastStatus && FINAL.has(job.status))) loadAttempts();
    lastStatus = job.status;
    lastAttempts = job.attempts;
  }

  async function loadAttempts() {
    const rows = await api(`/v1/jobs/${encodeURIComponent(id)}/attempts`);
    clear(attempts, table(["#", "Worker", "Node", "Started", "Ended", "Outcome", "Error"],
      rows.map((a) => h("tr", {}, h("td", {}, number(a.number)), h("td", { class: "mono" }, a.worker_id), h("td", { class: "mono" }, a.node_id),
        h("td", {}, when(a.started_at)), h("td", {}, when(a.ended_at)), h("td", {}, badge(a.outcome)),
        h("td", {}, a.error ? `${a.error.code}: ${a.error.message}` : "–"))),
      "Not claimed yet."));
  }

  render(first);
  return watchJob(id, render, (e) => clear(problem, errorBox(e)));
}
