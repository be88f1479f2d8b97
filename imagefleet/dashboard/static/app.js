// The dashboard's shell: login, the session, and a hash router over the pages.

import { api, ApiError } from "./api.js";
import { errorBox, clear } from "./ui.js";
import { overviewPage } from "./overview.js";
import { jobsPage } from "./jobs.js";
import { jobPage } from "./job.js";
import { galleryPage } from "./gallery.js";
import { workersPage } from "./workers.js";
import { submitPage } from "./submit.js";

const PAGES = {
  overview: overviewPage,
  jobs: jobsPage,
  job: jobPage,
  gallery: galleryPage,
  workers: workersPage,
  submit: submitPage,
};

const state = { session: null, leave: null };

function $(id) {
  return document.getElementById(id);
}

function showLogin(message) {
  state.session = null;
  $("shell").hidden = true;
  $("login").hidden = false;
  $("login-error").hidden = !message;
  $("login-error").textContent = message || "";
  $("login-key").focus();
}

function showShell(session) {
  state.session = session;
  $("login").hidden = true;
  $("shell").hidden = false;
  $("who-name").textContent = session.name;
  $("who-scope").textContent = `${session.scope} · tier ${session.tier}`;
  for (const link of document.querySelectorAll("[data-admin]")) {
    link.hidden = session.scope !== "admin";
  }
  route();
}

function parseHash() {
  const [path, query = ""] = location.hash.replace(/^#\/?/, "").split("?");
  const [page, ...rest] = path.split("/");
  return { page: page || "overview", arg: rest.join("/"), query: new URLSearchParams(query) };
}

async function route() {
  if (!state.session) return;
  if (state.leave) state.leave();
  state.leave = null;
  const { page, arg, query } = parseHash();
  const render = PAGES[page] || overviewPage;
  for (const link of document.querySelectorAll(".sidebar a")) {
    const current = link.dataset.page === page || (page === "job" && link.dataset.page === "jobs");
    link.classList.toggle("active", current);
  }
  const main = clear($("main"));
  main.dataset.page = page;
  try {
    state.leave = (await render(main, { session: state.session, arg, query })) || null;
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return showLogin("Your session ended; log in again.");
    main.append(errorBox(error));
  }
}

async function login(event) {
  event.preventDefault();
  const key = $("login-key").value.trim();
  try {
    const session = await api("/v1/dashboard/session", { method: "POST", body: { key } });
    $("login-key").value = "";
    showShell(session);
  } catch (error) {
    showLogin(error instanceof ApiError && error.status === 401 ? "That key is unknown or revoked." : error.message);
  }
}

async function logout() {
  if (state.leave) state.leave();
  state.leave = null;
  await api("/v1/dashboard/session", { method: "DELETE" });
  showLogin();
}

async function start() {
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", logout);
  window.addEventListener("hashchange", route);
  window.addEventListener("unhandledrejection", (event) => {
    if (event.reason instanceof ApiError && event.reason.status === 401) showLogin("Your session ended; log in again.");
  });
  try {
    showShell(await api("/v1/dashboard/session"));
  } catch {
    showLogin();
  }
}

start();
