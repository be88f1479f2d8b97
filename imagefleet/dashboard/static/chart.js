// Charts drawn as SVG by hand: bars for counts, lines for durations. No library, no network.

const NS = "http://www.w3.org/2000/svg";
const W = 560;
const H = 180;
const PAD = { left: 58, right: 12, top: 12, bottom: 26 };

function el(tag, attrs = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

// The top of the axis: a round number, or for counts a multiple of 4 so every tick is whole.
function niceMax(value, integer) {
  if (integer) return Math.max(4, Math.ceil(value / 4) * 4);
  if (!(value > 0)) return 1;
  const step = 10 ** Math.floor(Math.log10(value));
  for (const m of [1, 2, 4, 8, 10]) if (m * step >= value) return m * step;
  return 10 * step;
}

function frame(max, labels, format) {
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img" });
  const innerH = H - PAD.top - PAD.bottom;
  for (let i = 0; i <= 4; i++) {
    const y = PAD.top + innerH - (innerH * i) / 4;
    svg.append(el("line", { x1: PAD.left, x2: W - PAD.right, y1: y, y2: y, class: "grid" }));
    svg.append(el("text", { x: PAD.left - 6, y: y + 4, class: "axis", "text-anchor": "end" },
      format((max * i) / 4)));
  }
  const every = Math.max(1, Math.ceil(labels.length / 6));
  labels.forEach((label, i) => {
    if (i % every) return;
    svg.append(el("text", { x: xAt(i, labels.length), y: H - 8, class: "axis", "text-anchor": "middle" }, label));
  });
  return svg;
}

function xAt(i, n) {
  const innerW = W - PAD.left - PAD.right;
  return PAD.left + (innerW * (i + 0.5)) / Math.max(1, n);
}

function yAt(value, max) {
  const innerH = H - PAD.top - PAD.bottom;
  return PAD.top + innerH - (innerH * value) / max;
}

// values: numbers; labels: one per value.
export function barChart(values, labels, { format = (v) => String(Math.round(v)), title = "" } = {}) {
  const max = niceMax(Math.max(0, ...values), true);
  const svg = frame(max, labels, format);
  const slot = (W - PAD.left - PAD.right) / Math.max(1, values.length);
  values.forEach((value, i) => {
    const y = yAt(value, max);
    const bar = el("rect", {
      x: xAt(i, values.length) - slot * 0.35, y, width: slot * 0.7,
      height: Math.max(0, H - PAD.bottom - y), rx: 3, class: "bar-mark",
    });
    bar.append(el("title", {}, `${labels[i]}: ${format(value)} ${title}`));
    svg.append(bar);
  });
  return svg;
}

// lines: [{name, values (number|null), cls}]; gaps where a value is null.
export function lineChart(lines, labels, { format = (v) => String(v), integer = false } = {}) {
  const all = lines.flatMap((l) => l.values.filter((v) => v !== null && v !== undefined));
  const max = niceMax(Math.max(0, ...all), integer);
  const svg = frame(max, labels, format);
  for (const line of lines) {
    let d = "";
    line.values.forEach((value, i) => {
      if (value === null || value === undefined) return;
      const cmd = d && line.values[i - 1] !== null && line.values[i - 1] !== undefined ? "L" : "M";
      d += `${cmd}${xAt(i, labels.length).toFixed(1)},${yAt(value, max).toFixed(1)} `;
      const dot = el("circle", { cx: xAt(i, labels.length), cy: yAt(value, max), r: 3, class: `dot ${line.cls}` });
      dot.append(el("title", {}, `${line.name} ${labels[i]}: ${format(value)}`));
      svg.append(dot);
    });
    if (d) svg.prepend(el("path", { d, class: `line ${line.cls}` }));
  }
  return svg;
}

export function legend(lines) {
  const box = document.createElement("div");
  box.className = "legend";
  for (const line of lines) {
    const item = document.createElement("span");
    item.className = `legend-item ${line.cls}`;
    item.textContent = line.name;
    box.append(item);
  }
  return box;
}
