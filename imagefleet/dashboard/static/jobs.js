// Jobs: the key's jobs (an admin's: every tenant's, with an Owner column), newest first,
// filtered by status (server side) and by kind and prompt text (on the loaded pages), with
// "load more" through the API's cursor.

import { api } from "./api.js";
import { badge, clear, h, progressBar, shortId, table, when } from "./ui.js";

const STATUSES = ["", "queued", "running", "succeeded", "failed", "cancelled"];
const PAGE_SIZE = 50;

function jobLink(job) {
  return job.owner ? `#/job/${job.id}?tenant=${encodeURIComponent(job.owner)}` : `#/job/${job.id}`;
}

export function jobRow(job, withOwner = false) {
  const image = job.outputs.find((o) => o.content_type.startsWith("image/"));
  const thumb = image
    ? h("img", { class: "thumb", src: image.url, alt: "", loading: "lazy" })
    : h("div", { class: "thumb thumb-empty" });
  const p = job.params || {};
  return h("tr", { class: "clickable", onclick: () => { location.hash = jobLink(job); } },
    h("td", {}, thumb),
    h("td", {}, h("a", { href: jobLink(job), class: "mono", "data-job": job.id }, shortId(job.id))),
    withOwner ? h("td", { class: "owner" }, job.owner || "–") : null,
    h("td", {}, job.kind),
    h("td", {}, badge(job.status)),
    h("td", { class: "prompt" }, p.prompt || "–"),
    h("td", {}, p.width && p.height ? `${p.width}×${p.height}` : "–"),
    h("td", { class: "progress-cell" }, progressBar(job.progress.fraction, `${job.progress.step}/${job.progress.total_steps}`)),
    h("td", {}, when(job.timings.queued_at)));
}

export async function jobsPage(main, { query, session }) {
  const everyone = session && session.scope === "admin";
  const status = h("select", { id: "filter-status", "aria-label": "Status" },
    STATUSES.map((s) => h("option", { value: s, selected: s === (query.get("status") || "") }, s || "any status")));
  const kind = h("select", { id: "filter-kind", "aria-label": "Kind" }, h("option", { value: "" }, "any kind"));
  const text = h("input", { id: "filter-text", type: "search", placeholder: "Prompt contains…" });
  const list = h("div");
  const more = h("button", { class: "secondary", hidden: true }, "Load more");
  main.append(
    h("header", { class: "page-head" }, h("h1", {}, everyone ? "Jobs, all tenants" : "Jobs"), h("div", { class: "filters" }, status, kind, text)),
    h("section", { class: "card" }, list, h("div", { class: "more" }, more)));

  let jobs = [];
  let cursor = null;
  async function load(append) {
    const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (status.value) params.set("status", status.value);
    if (everyone) params.set("all_tenants", "true");
    if (append && cursor) params.set("cursor", cursor);
    const page = await api(`/v1/jobs?${params}`);
    jobs = append ? jobs.concat(page.jobs) : page.jobs;
    cursor = page.next_cursor;
    more.hidden = !cursor;
    const kinds = [...new Set(jobs.map((j) => j.kind))].sort();
    const chosen = kind.value;
    clear(kind, h("option", { value: "" }, "any kind"), kinds.map((k) => h("option", { value: k, selected: k === chosen }, k)));
    show();
  }
  function show() {
    const needle = text.value.trim().toLowerCase();
    const shown = jobs.filter((j) => (!kind.value || j.kind === kind.value)
      && (!needle || String((j.params || {}).prompt || "").toLowerCase().includes(needle)));
    const head = ["", "Job", ...(everyone ? ["Owner"] : []), "Kind", "Status", "Prompt", "Size", "Progress", "Submitted"];
    clear(list, table(head,
      shown.map((j) => jobRow(j, everyone)), "No jobs match."));
  }
  status.addEventListener("change", () => load(false));
  kind.addEventListener("change", show);
  text.addEventListener("input", show);
  more.addEventListener("click", () => load(true));
  await load(false);
  const timer = setInterval(() => { if (!cursor || jobs.length <= PAGE_SIZE) load(false).catch(() => {}); }, 5000);
  return () => clearInterval(timer);
}
