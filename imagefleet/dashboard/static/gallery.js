// Gallery: the outputs of the key's succeeded jobs, newest first.

import { api } from "./api.js";
import { clear, h } from "./ui.js";

export async function galleryPage(main) {
  const grid = h("div", { class: "gallery" });
  const more = h("button", { class: "secondary", hidden: true }, "Load more");
  main.append(h("header", { class: "page-head" }, h("h1", {}, "Gallery"), h("span", { class: "muted" }, "Outputs of succeeded jobs")),
    grid, h("div", { class: "more" }, more));
  let cursor = null;
  let count = 0;
  async function load() {
    const params = new URLSearchParams({ status: "succeeded", limit: "48" });
    if (cursor) params.set("cursor", cursor);
    const page = await api(`/v1/jobs?${params}`);
    for (const job of page.jobs) {
      // Images only: a training job's output is a LoRA file, found on its job page.
      for (const output of job.outputs.filter((o) => o.content_type.startsWith("image/"))) {
        count += 1;
        grid.append(h("a", { class: "tile", href: `#/job/${job.id}`, title: job.params.prompt || job.id },
          h("img", { src: output.url, alt: job.params.prompt || "output", loading: "lazy" }),
          h("span", { class: "tile-caption" }, job.params.prompt || job.kind)));
      }
    }
    cursor = page.next_cursor;
    more.hidden = !cursor;
    if (!count) clear(grid, h("p", { class: "muted empty" }, "No images yet: submit a job."));
  }
  more.addEventListener("click", load);
  await load();
}
