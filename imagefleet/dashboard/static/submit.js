// Submit: a txt2img form whose job is then watched live until its images arrive.

import { api, FINAL, watchJob } from "./api.js";
import { card, clear, errorBox, h } from "./ui.js";
import { liveProgress, outputsGrid } from "./job.js";

const SIZES = [64, 128, 256, 512, 768, 1024];

function field(label, input, hint) {
  return h("label", { class: "field" }, h("span", {}, label), input, hint ? h("small", { class: "muted" }, hint) : null);
}

export async function submitPage(main) {
  const checkpoints = (await api("/v1/models")).filter((m) => m.kind === "checkpoint");
  const model = h("select", { name: "model", id: "submit-model" },
    checkpoints.map((m) => h("option", { value: `${m.name}@${m.version}` }, `${m.name}@${m.version}`)));
  const prompt = h("textarea", { name: "prompt", id: "submit-prompt", rows: 3, required: true, placeholder: "a lighthouse at dusk, oil painting" });
  const negative = h("input", { name: "negative_prompt", id: "submit-negative", placeholder: "blurry, low quality" });
  const size = (name) => h("select", { name, id: `submit-${name}` }, SIZES.map((s) => h("option", { value: s, selected: s === 512 }, String(s))));
  const width = size("width");
  const height = size("height");
  const steps = h("input", { name: "steps", id: "submit-steps", type: "number", min: 1, max: 150, value: 30 });
  const guidance = h("input", { name: "guidance_scale", id: "submit-guidance", type: "number", min: 0, max: 50, step: 0.5, value: 7 });
  const seed = h("input", { name: "seed", id: "submit-seed", type: "number", min: 0, placeholder: "random" });
  const count = h("input", { name: "num_images", id: "submit-count", type: "number", min: 1, max: 8, value: 1 });
  const button = h("button", { type: "submit", class: "primary", id: "submit-button" }, "Generate");
  const result = h("div", { id: "submit-result" });
  const form = h("form", { class: "form", id: "submit-form" },
    field("Model", model), field("Prompt", prompt), field("Negative prompt", negative),
    h("div", { class: "row" }, field("Width", width), field("Height", height), field("Images", count)),
    h("div", { class: "row" }, field("Steps", steps), field("Guidance", guidance), field("Seed", seed, "empty: random")),
    button);
  main.append(h("header", { class: "page-head" }, h("h1", {}, "Submit")),
    h("div", { class: "grid-2" }, card("New txt2img job", checkpoints.length ? form : errorBox("No checkpoint is registered.")), card("Result", result)));

  let stop = () => {};
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    stop();
    button.disabled = true;
    const params = {
      prompt: prompt.value, model: model.value, width: Number(width.value), height: Number(height.value),
      steps: Number(steps.value), guidance_scale: Number(guidance.value), num_images: Number(count.value),
    };
    if (negative.value.trim()) params.negative_prompt = negative.value;
    if (seed.value !== "") params.seed = Number(seed.value);
    try {
      const job = await api("/v1/jobs", { method: "POST", body: { kind: "txt2img", params } });
      const progress = h("div");
      const outputs = h("div");
      clear(result, h("p", {}, "Job ", h("a", { href: `#/job/${job.id}`, class: "mono", id: "submit-job-link" }, job.id)), progress, outputs);
      stop = watchJob(job.id, (update) => {
        clear(progress, liveProgress(update));
        if (FINAL.has(update.status)) {
          clear(outputs, outputsGrid(update));
          if (update.error) outputs.append(errorBox(`${update.error.code}: ${update.error.message}`));
        }
      }, (error) => clear(outputs, errorBox(error)));
    } catch (error) {
      clear(result, errorBox(error));
    } finally {
      button.disabled = false;
    }
  });
  return () => stop();
}
