// Small DOM helpers. Everything shown is set as text, never parsed as HTML, so a prompt or a
// model name cannot inject markup.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") el.className = value;
    else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(name, value === true ? "" : value);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function badge(status) {
  return h("span", { class: `badge badge-${status}` }, status);
}

export function progressBar(fraction, label) {
  const fill = h("div", { class: "bar-fill" });
  fill.style.width = `${Math.round(Math.min(1, Math.max(0, fraction)) * 100)}%`;
  return h("div", { class: "bar", role: "progressbar", "aria-valuenow": Math.round(fraction * 100) },
    fill, label ? h("span", { class: "bar-label" }, label) : null);
}

export function card(title, ...body) {
  return h("section", { class: "card" }, title ? h("h2", {}, title) : null, ...body);
}

export function stat(label, value, note) {
  return h("div", { class: "stat" },
    h("div", { class: "stat-label" }, label),
    h("div", { class: "stat-value" }, value),
    note ? h("div", { class: "stat-note" }, note) : null);
}

export function table(headers, rows, empty = "Nothing yet.") {
  if (!rows.length) return h("p", { class: "muted empty" }, empty);
  return h("table", { class: "table" },
    h("thead", {}, h("tr", {}, headers.map((name) => h("th", {}, name)))),
    h("tbody", {}, rows));
}

export function seconds(value) {
  if (value === null || value === undefined) return "–";
  if (value < 1) return `${Math.round(value * 1000)} ms`;
  if (value < 90) return `${value.toFixed(1)} s`;
  if (value < 5400) return `${(value / 60).toFixed(1)} min`;
  return `${(value / 3600).toFixed(1)} h`;
}

export function number(value, digits = 0) {
  if (value === null || value === undefined) return "–";
  return Number(value).toLocaleString("en-US", { maximumFractionDigits: digits });
}

export function when(iso) {
  if (!iso) return "–";
  const date = new Date(iso);
  const ago = (Date.now() - date.getTime()) / 1000;
  if (ago < 60) return `${Math.max(0, Math.round(ago))} s ago`;
  if (ago < 3600) return `${Math.round(ago / 60)} min ago`;
  return date.toLocaleString();
}

export function shortId(id) {
  return id.length > 10 ? id.slice(0, 10) : id;
}

export function errorBox(error) {
  return h("div", { class: "error-box" }, String(error.message || error));
}

// What a page says instead of a cost when the price table is empty (never "cost units").
export const NO_PRICE = "no price configured: set IMAGEFLEET_GPU_PRICES or a pool's price";

// US dollars, with enough digits that a cent fraction per image still reads.
export function usd(value) {
  if (value === null || value === undefined) return "–";
  if (value === 0) return "$0";
  if (Math.abs(value) >= 1) return `$${value.toFixed(2)}`;
  return `$${Number(value.toPrecision(3))}`;
}
