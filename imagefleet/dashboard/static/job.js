// One job: live progress (watchJob), parameters, models, timings, attempts and outputs.

import { api, FINAL, watchJob } from "./api.js";
import { badge, card, clear, errorBox, h, number, progressBar, seconds, table, when } from "./ui.js";

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
  return h("div", { class: "outputs" }, job.outputs.map((o) => h("figure", { class: "output" },
    h("a", { href: o.url, target: "_blank", rel: "noopener" }, h("img", { src: o.url, alt: `output ${o.index}` })),
    h("figcaption", {}, `#${o.index} · ${o.width}×${o.height} · seed ${o.seed ?? "–"}`))));
}

export function liveProgress(job) {
  const label = job.status === "succeeded" ? "100%"
    : `${Math.round(job.progress.fraction * 100)}% · step ${job.progress.step}/${job.progress.total_steps}`;
  return h("div", { class: "live" }, badge(job.status), progressBar(job.status === "succeeded" ? 1 : job.progress.fraction, label));
}

export async function jobPage(main, { arg }) {
  const id = decodeURIComponent(arg);
  const head = h("header", { class: "page-head" });
  const progress = h("div");
  const details = h("div", { class: "grid-2" });
  const attempts = h("div");
  const outputs = h("div");
  const problem = h("div");
  main.append(head, card("Progress", progress, problem), card("Outputs", outputs), details, card("Attempts", attempts));
  let lastStatus = null;
  let lastAttempts = -1;

  function render(job) {
    const cancel = FINAL.has(job.status) ? null : h("button", { class: "secondary", onclick: async () => {
      try { render(await api(`/v1/jobs/${encodeURIComponent(id)}/cancel`, { method: "POST" })); } catch (e) { clear(problem, errorBox(e)); }
    } }, "Cancel");
    clear(head, h("h1", {}, "Job ", h("span", { class: "mono" }, job.id)), h("span", { class: "muted" }, `${job.kind} · tier ${job.tier}`), cancel);
    clear(progress, liveProgress(job));
    const error = job.error || job.last_error;
    clear(problem, error ? h("div", { class: "error-box" }, `${error.code}: ${error.message}`) : null);
    if (job.status !== lastStatus) {
      clear(outputs, outputsGrid(job));
      clear(details,
        card("Parameters", h("dl", { class: "kv" }, Object.entries(job.params).flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, value(v))]))),
        card("Models and timings",
          table(["Role", "Model", "Weight"], job.models.map((m) => h("tr", {}, h("td", {}, m.role), h("td", {}, `${m.name}@${m.version}`), h("td", {}, m.weight ?? "–"))), "No models."),
          h("dl", { class: "kv" }, h("dt", {}, "Submitted"), h("dd", {}, when(job.timings.queued_at)),
            TIMINGS.flatMap(([k, label]) => job.timings[k] === null || job.timings[k] === undefined ? [] : [h("dt", {}, label), h("dd", {}, seconds(job.timings[k]))]))));
    }
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

  render(await api(`/v1/jobs/${encodeURIComponent(id)}`));
  return watchJob(id, render, (e) => clear(problem, errorBox(e)));
}
