// Workers (admin): each worker's state, GPU, resident models and cache; each node's health,
// with a button that lifts a quarantine through POST /v1/admin/nodes/{id}/release.

import { api } from "./api.js";
import { badge, card, clear, errorBox, h, number, table, when } from "./ui.js";

function models(list, extra) {
  if (!list.length && !extra) return "–";
  return h("div", { class: "model-list" }, list.map((m) => h("span", { class: "tag" }, m)), extra ? h("span", { class: "muted" }, extra) : null);
}

export async function workersPage(main, { session }) {
  if (session.scope !== "admin") {
    main.append(errorBox("The workers page needs an admin key."));
    return null;
  }
  const workers = h("div");
  const nodes = h("div");
  const problem = h("div");
  main.append(h("header", { class: "page-head" }, h("h1", {}, "Workers"), h("span", { class: "muted" }, "Seen recently, with their models and node health")),
    problem, card("Workers", workers), card("Nodes", nodes));

  async function release(nodeId, button) {
    button.disabled = true;
    try {
      await api(`/v1/admin/nodes/${encodeURIComponent(nodeId)}/release`, { method: "POST" });
      await refresh();
    } catch (error) {
      clear(problem, errorBox(error));
      button.disabled = false;
    }
  }

  async function refresh() {
    const [overview, nodeList] = await Promise.all([api("/v1/overview"), api("/v1/admin/nodes")]);
    clear(workers, table(["Worker", "Node", "State", "GPU", "Kinds", "Running", "Resident models", "Disk cache", "Last seen"],
      overview.workers.map((w) => h("tr", {},
        h("td", { class: "mono" }, w.id), h("td", { class: "mono" }, w.node_id), h("td", {}, badge(w.state)),
        h("td", {}, w.vram_mb ? `${w.gpu_name} · ${number(w.vram_mb / 1024, 1)} GB` : w.gpu_name),
        h("td", {}, w.kinds.join(", ")), h("td", {}, number(w.running_jobs)),
        h("td", {}, models(w.resident_models)),
        h("td", {}, models(w.cached_names, `${number(w.cached_models)} file${w.cached_models === 1 ? "" : "s"}`)),
        h("td", {}, when(w.last_seen_at)))),
      "No worker has claimed recently."));
    clear(nodes, table(["Node", "Health", "Failures (window)", "Reason", "Last seen", ""],
      nodeList.map((n) => {
        const button = n.status === "quarantined"
          ? h("button", { class: "danger", "data-node": n.id, onclick: (e) => release(n.id, e.currentTarget) }, "Release")
          : null;
        return h("tr", { "data-node-row": n.id },
          h("td", { class: "mono" }, n.id), h("td", {}, badge(n.status)), h("td", {}, number(n.recent_failures)),
          h("td", { class: "reason" }, n.reason || "–"), h("td", {}, when(n.last_seen_at)), h("td", {}, button));
      }), "No nodes yet."));
  }
  await refresh();
  const timer = setInterval(() => refresh().catch(() => {}), 5000);
  return () => clearInterval(timer);
}
