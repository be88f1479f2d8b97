// A training job's card on the job page: the loss curve (one line per attempt, so a resume
// shows where it picked up), steps done and ETA, the checkpoints kept and the bill, all from
// GET /v1/jobs/{id}/training.

import { api } from "./api.js";
import { legend, lineChart } from "./chart.js";
import { badge, card, clear, h, number, seconds, stat, table, usd, when, NO_PRICE } from "./ui.js";

// More points than this are thinned (every k-th, the newest always kept): the SVG stays light.
const MAX_POINTS = 200;
const LINE_CLASSES = ["s1", "s2", "s3"];

function thin(points) {
  if (points.length <= MAX_POINTS) return points;
  const every = Math.ceil(points.length / MAX_POINTS);
  return points.filter((_, i) => i % every === 0 || i === points.length - 1);
}

function lossChart(curve) {
  const points = thin(curve);
  if (!points.length) return h("p", { class: "muted", id: "loss-empty" }, "No loss reported yet.");
  const attempts = [...new Set(points.map((p) => p.attempt))];
  const lines = attempts.map((n, i) => ({
    name: `attempt ${n}`, cls: LINE_CLASSES[i % LINE_CLASSES.length],
    values: points.map((p) => (p.attempt === n ? p.loss : null)),
  }));
  const chart = lineChart(lines, points.map((p) => `step ${p.step}`), { format: (v) => String(Number(v.toPrecision(3))) });
  chart.id = "loss-chart";
  return h("div", {}, legend(lines), chart);
}

function bill(t) {
  if (t.cost === null || t.cost === undefined) {
    return stat("Cost", "–", `${seconds(t.billable_seconds)} of lease · ${NO_PRICE}`);
  }
  return stat("Cost", usd(t.cost), `${usd(t.hourly_price)}/hour · ${usd(t.cost_per_step)} per step`);
}

function render(box, t) {
  clear(box,
    h("div", { class: "stats stats-4" },
      stat("Steps", `${number(t.steps_done)} / ${number(t.total_steps)}`, badge(t.status)),
      stat("Loss", t.loss === null ? "–" : t.loss.toPrecision(4), t.learning_rate === null ? null : `lr ${t.learning_rate}`),
      stat("ETA", t.eta_seconds === null ? "–" : seconds(t.eta_seconds),
        t.interruptions_survived ? `${t.interruptions_survived} interruptions · ${number(t.steps_lost)} steps lost` : "no interruptions"),
      bill(t)),
    h("div", { class: "grid-2" },
      h("div", {}, h("h3", {}, "Loss"), lossChart(t.loss_curve)),
      h("div", {}, h("h3", {}, "Checkpoints"), table(["Step", "Attempt", "Size", "Saved"],
        t.checkpoints.map((c) => h("tr", {}, h("td", {}, number(c.step)), h("td", {}, number(c.attempt)),
          h("td", {}, `${number(c.size_bytes / 1024, 1)} KiB`), h("td", {}, when(c.created_at)))),
        "No checkpoint kept yet."),
      h("h3", {}, "Attempts"), table(["#", "Outcome", "From step", "Reached", "Lease"],
        t.attempts.map((a) => h("tr", {}, h("td", {}, number(a.number)), h("td", {}, badge(a.outcome)),
          h("td", {}, a.resumed_from_step ?? "–"), h("td", {}, number(a.reached_step)), h("td", {}, seconds(a.billable_seconds)))),
        "Not claimed yet."))),
    t.model ? h("p", {}, "Registered as ", h("span", { class: "mono" }, `${t.model.name}@${t.model.version}`)) : null);
}

// The card and a refresh(final) function for the job page to call on each update: it reads at
// most once per REFRESH_MS while the job runs, and always once more when it ends.
const REFRESH_MS = 2000;
export function trainingCard(id) {
  const box = h("div", { id: "training" }, h("p", { class: "muted" }, "Loading the loss curve…"));
  let last = 0;
  let pending = null;
  async function refresh(final = false) {
    const now = Date.now();
    if (!final && now - last < REFRESH_MS) return;
    last = now;
    if (pending) await pending;
    pending = api(`/v1/jobs/${encodeURIComponent(id)}/training`).then((t) => render(box, t), (e) => clear(box, h("div", { class: "error-box" }, e.message)));
    await pending;
    pending = null;
  }
  return { element: card("Training", box), refresh };
}
