// Talking to the orchestrator. The session is an HttpOnly cookie the browser sends by itself;
// every call also carries the dashboard header that state-changing calls need (see auth.py).

export const ROOT = location.pathname.replace(/\/ui\/?$/, "");
const HEADERS = { "X-Imagefleet-Dashboard": "1" };
const POLL_MS = 1000;

export class ApiError extends Error {
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : describeDetail(detail) || `HTTP ${status}`);
    this.status = status;
  }
}

function describeDetail(detail) {
  if (!Array.isArray(detail)) return "";
  return detail.map((e) => `${(e.loc || []).slice(1).join(".")}: ${e.msg}`).join("; ");
}

export async function api(path, { method = "GET", body } = {}) {
  const headers = { ...HEADERS };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(ROOT + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
    cache: "no-store",
  });
  if (response.status === 204) return null;
  const data = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, data && data.detail);
  return data;
}

// Calls onUpdate(job) with each state of the job until it is final, and returns a function
// that stops watching. It polls GET /v1/jobs/{id} every second; moving to server-sent events
// (GET /v1/jobs/{id}/events) means replacing this one function, nothing else.
export function watchJob(id, onUpdate, onError = () => {}) {
  let stopped = false;
  let timer = null;
  async function tick() {
    if (stopped) return;
    try {
      const job = await api(`/v1/jobs/${encodeURIComponent(id)}`);
      if (stopped) return;
      onUpdate(job);
      if (FINAL.has(job.status)) return;
    } catch (error) {
      if (stopped) return;
      onError(error);
    }
    timer = setTimeout(tick, POLL_MS);
  }
  tick();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

export const FINAL = new Set(["succeeded", "failed", "cancelled"]);
