// Submit: a form for txt2img, img2img and inpaint (the init image and the mask are uploaded
// through POST /v1/inputs first, then the job names their ids), with LoRAs and their weights;
// the job is then watched live until its images arrive.

import { api, FINAL, upload, watchJob } from "./api.js";
import { card, clear, errorBox, h } from "./ui.js";
import { liveProgress, outputsGrid, previewBox } from "./job.js";

const SIZES = [64, 128, 256, 512, 768, 1024];

function field(label, input, hint) {
  return h("label", { class: "field" }, h("span", {}, label), input, hint ? h("small", { class: "muted" }, hint) : null);
}

const KINDS = [["txt2img", "Text to image"], ["img2img", "Image to image"], ["inpaint", "Inpaint"]];

// One LoRA of the combo: which (by name@version) and its weight; a row per LoRA.
function loraRow(loras, onRemove) {
  const pick = h("select", { class: "lora-name" }, loras.map((m) => h("option", { value: `${m.name}@${m.version}` }, `${m.name}@${m.version}`)));
  const weight = h("input", { class: "lora-weight", type: "number", min: -10, max: 10, step: 0.05, value: 1 });
  const row = h("div", { class: "row lora-row" }, field("LoRA", pick), field("Weight", weight),
    h("button", { type: "button", class: "link", onclick: () => onRemove(row) }, "Remove"));
  row.read = () => {
    const [name, version] = pick.value.split("@");
    return { name, version: Number(version), weight: Number(weight.value) };
  };
  return row;
}

export async function submitPage(main) {
  const models = await api("/v1/models");
  const checkpoints = models.filter((m) => m.kind === "checkpoint");
  const loras = models.filter((m) => m.kind === "lora");
  const kind = h("select", { name: "kind", id: "submit-kind" }, KINDS.map(([value, label]) => h("option", { value }, label)));
  const init = h("input", { name: "init_image", id: "submit-init", type: "file", accept: "image/png,image/jpeg,image/webp" });
  const mask = h("input", { name: "mask", id: "submit-mask", type: "file", accept: "image/png,image/jpeg,image/webp" });
  const strength = h("input", { name: "strength", id: "submit-strength", type: "number", min: 0.05, max: 1, step: 0.05, value: 0.75 });
  const imageFields = h("div", { class: "row", id: "submit-image-fields" },
    field("Init image", init, "uploaded first; its size is the output's"), field("Strength", strength, "0 < s ≤ 1"));
  const maskField = h("div", { id: "submit-mask-field" }, field("Mask", mask, "white: repaint; black: keep (the init image's size)"));
  const loraRows = h("div", { id: "submit-loras" });
  const addLora = loras.length
    ? h("button", { type: "button", class: "secondary", id: "submit-add-lora", onclick: () => loraRows.append(loraRow(loras, (row) => row.remove())) }, "Add LoRA")
    : h("small", { class: "muted" }, "No LoRA is registered.");
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
  const sizeFields = h("div", { class: "row", id: "submit-size" }, field("Width", width), field("Height", height));
  const form = h("form", { class: "form", id: "submit-form" },
    h("div", { class: "row" }, field("Kind", kind), field("Model", model)),
    imageFields, maskField,
    field("Prompt", prompt), field("Negative prompt", negative),
    h("div", { class: "row" }, sizeFields, field("Images", count)),
    loraRows, addLora,
    h("div", { class: "row" }, field("Steps", steps), field("Guidance", guidance), field("Seed", seed, "empty: random")),
    button);
  main.append(h("header", { class: "page-head" }, h("h1", {}, "Submit")),
    h("div", { class: "grid-2" }, card("New job", checkpoints.length ? form : errorBox("No checkpoint is registered.")), card("Result", result)));

  function showKind() {
    const image = kind.value !== "txt2img";
    imageFields.hidden = !image;
    maskField.hidden = kind.value !== "inpaint";
    sizeFields.hidden = image;
    init.required = image;
    mask.required = kind.value === "inpaint";
    strength.value = kind.value === "inpaint" ? 1 : 0.75;
  }
  kind.addEventListener("change", showKind);
  showKind();

  // An image input: its bytes, as the file's own type, to POST /v1/inputs; the job names the id.
  async function uploaded(input, what) {
    const file = input.files && input.files[0];
    if (!file) throw new Error(`choose ${what}`);
    return (await upload(file)).id;
  }

  let stop = () => {};
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    stop();
    button.disabled = true;
    const params = {
      prompt: prompt.value, model: model.value,
      steps: Number(steps.value), guidance_scale: Number(guidance.value), num_images: Number(count.value),
    };
    if (kind.value === "txt2img") Object.assign(params, { width: Number(width.value), height: Number(height.value) });
    if (negative.value.trim()) params.negative_prompt = negative.value;
    if (seed.value !== "") params.seed = Number(seed.value);
    const combo = [...loraRows.querySelectorAll(".lora-row")].map((row) => row.read());
    if (combo.length) params.loras = combo;
    try {
      if (kind.value !== "txt2img") {
        clear(result, h("p", { class: "muted" }, "Uploading…"));
        params.init_image = await uploaded(init, "an init image");
        params.strength = Number(strength.value);
        if (kind.value === "inpaint") params.mask = await uploaded(mask, "a mask");
      }
      const job = await api("/v1/jobs", { method: "POST", body: { kind: kind.value, params } });
      const progress = h("div");
      const outputs = h("div");
      const preview = previewBox();
      clear(result, h("p", {}, "Job ", h("a", { href: `#/job/${job.id}`, class: "mono", id: "submit-job-link" }, job.id)), progress, preview, outputs);
      stop = watchJob(job.id, (update) => {
        clear(progress, liveProgress(update));
        preview.update(update);
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
