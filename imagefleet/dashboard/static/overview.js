// Overview: queue, throughput, waits and cost in USD over the last hour, charts over time; for
// an admin also workers by state and GPU, and the newest jobs of every tenant.

import { api } from "./api.js";
import { barChart, legend, lineChart } from "./chart.js";
import { badge, card, clear, h, number, seconds, shortId, stat, table, usd, when, NO_PRICE } from "./ui.js";

const REFRESH_MS = 5000;
const DEPTH_POINTS = 60;

function clock(iso) {
  return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function stats(o) {
  return h("div", { class: "stats" },
    stat("Queued", number(o.queued), `${o.queue.length} tier${o.queue.length === 1 ? "" : "s"}`),
    stat("Running", number(o.running)),
    stat("Images / hour", number(o.images_per_hour, 1), `${number(o.images)} in the last hour`),
    stat("Wait p50", seconds(o.wait.p50_seconds), `p95 ${seconds(o.wait.p95_seconds)} · ${o.wait.samples} jobs`),
    stat("Finished", `${number(o.succeeded)} ok`, `${number(o.failed)} failed`),
    money(o));
}

// Cost at the price table of /v1/usage; never "units": without a price the page says so.
function money(o) {
  if (!o.prices_configured) return stat("Cost / hour", "–", NO_PRICE);
  if (o.cost_usd_per_hour === null) {
    return stat("Cost / hour", "–", `no priced worker ran these jobs (${seconds(o.unpriced_seconds)} unpriced)`);
  }
  const unpriced = o.unpriced_seconds ? ` · ${seconds(o.unpriced_seconds)} unpriced` : "";
  return stat("Cost / hour", usd(o.cost_usd_per_hour), `${usd(o.cost_usd_per_image)} per image${unpriced}`);
}

function charts(o, depth) {
  const labels = o.series.map((b) => clock(b.start));
  const waits = [
    { name: "p50", values: o.series.map((b) => b.wait_p50_seconds), cls: "s1" },
    { name: "p95", values: o.series.map((b) => b.wait_p95_seconds), cls: "s2" },
  ];
  const depthLines = [
    { name: "queued", values: depth.map((d) => d.queued), cls: "s1" },
    { name: "running", values: depth.map((d) => d.running), cls: "s3" },
  ];
  return h("div", { class: "grid-2" },
    card("Images per 5 minutes", barChart(o.series.map((b) => b.images), labels, { title: "images" })),
    card("Queue wait", legend(waits), lineChart(waits, labels, { format: (v) => seconds(v) })),
    card("Queue depth (live)", legend(depthLines),
      lineChart(depthLines, depth.map((d) => d.label), { format: (v) => String(Math.round(v)), integer: true })),
    card("Queue by tier", table(["Tier", "Queued", "Running"],
      o.queue.map((t) => h("tr", {}, h("td", {}, t.tier), h("td", {}, number(t.queued)), h("td", {}, number(t.running)))),
      "The queue is empty.")));
}

function chips(counts) {
  const entries = Object.entries(counts || {});
  if (!entries.length) return h("p", { class: "muted" }, "No workers seen.");
  return h("div", { class: "chips" }, entries.map(([name, count]) => h("span", { class: `chip chip-${name}` }, `${name} `, h("b", {}, count))));
}

function fleet(o) {
  return h("div", { class: "grid-2" },
    card("Workers by state", chips(o.workers_by_state)),
    card("Workers by GPU", chips(o.workers_by_gpu)),
    h("div", { class: "span-2" }, card("Latest jobs, all tenants", table(
      ["Job", "Owner", "Tier", "Kind", "Status", "Progress", "Submitted"],
      o.recent_jobs.map((j) => h("tr", {},
        h("td", { class: "mono" }, h("a", { href: `#/job/${j.id}?tenant=${encodeURIComponent(j.owner)}`, title: j.id }, shortId(j.id))),
        h("td", {}, j.owner), h("td", {}, j.tier), h("td", {}, j.kind),
        h("td", {}, badge(j.status)),
        h("td", {}, j.progress_total ? `${j.progress_step}/${j.progress_total}` : "–"),
        h("td", {}, when(j.created_at)))),
      "No jobs yet."))));
}

export async function overviewPage(main, { session }) {
  const depth = [];
  const body = h("div");
  main.append(h("header", { class: "page-head" },
    h("h1", {}, "Overview"),
    h("span", { class: "muted" }, session.scope === "admin" ? "The whole fleet, last hour" : "Your jobs, last hour")),
    body);
  async function refresh() {
    const o = await api("/v1/overview");
    depth.push({ label: clock(o.generated_at), queued: o.queued, running: o.running });
    if (depth.length > DEPTH_POINTS) depth.shift();
    clear(body, stats(o), charts(o, depth), o.scope === "fleet" ? fleet(o) : null);
  }
  await refresh();
  const timer = setInterval(() => refresh().catch(() => {}), REFRESH_MS);
  return () => clearInterval(timer);
}
