// Talking to the orchestrator. The session is an HttpOnly cookie the browser sends by itself;
// every call also carries the dashboard header that state-changing calls need (see auth.py).

export const ROOT = location.pathname.replace(/\/ui\/?$/, "");
const HEADERS = { "X-Imagefleet-Dashboard": "1" };

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

export async function api(path, { method = "GET", body, headers: extra = {} } = {}) {
  const headers = { ...HEADERS, ...extra };
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

// Uploads an image (a File from an <input type=file>) as POST /v1/inputs' raw body, with the
// file's own Content-Type; answers the input (its `id` is what a job's params name).
export async function upload(file) {
  const response = await fetch(`${ROOT}/v1/inputs`, {
    method: "POST",
    headers: { ...HEADERS, "Content-Type": file.type || "application/octet-stream" },
    body: file,
    credentials: "same-origin",
  });
  const data = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, data && data.detail);
  return data;
}

// Calls onUpdate(job) with each state of the job until it is final, and returns a function
// that stops watching. It reads the job once, then follows its server-sent events
// (GET /v1/jobs/{id}/events: its history replayed, then live): status and progress events
// update the job, a final event carries the whole job with its outputs. EventSource sends the
// session cookie, and on a dropped stream reconnects with Last-Event-ID by itself.
export function watchJob(id, onUpdate, onError = () => {}) {
  const path = `/v1/jobs/${encodeURIComponent(id)}`;
  let job = null;
  let source = null;
  let stopped = false;
  const stop = () => {
    stopped = true;
    if (source) source.close();
  };
  function apply(kind, message) {
    if (stopped || !job) return;
    const event = JSON.parse(message.data);
    const data = event.data || {};
    if (event.job) job = event.job;
    else if (kind === "progress") {
      job = { ...job, progress: { step: data.step, total_steps: data.total_steps, fraction: data.fraction } };
    } else {
      job = { ...job, status: data.status || kind, attempts: data.attempt ?? data.attempts ?? job.attempts,
        last_error: data.last_error ?? job.last_error };
    }
    onUpdate(job);
    if (FINAL.has(job.status)) stop();
  }
  api(path).then((first) => {
    if (stopped) return;
    job = first;
    onUpdate(job);
    if (FINAL.has(job.status)) return;
    source = new EventSource(`${ROOT}${path}/events`);
    for (const kind of EVENTS) source.addEventListener(kind, (message) => apply(kind, message));
    source.onerror = () => {
      if (!stopped && source.readyState === EventSource.CLOSED) onError(new Error("the job's event stream closed"));
    };
  }, (error) => {
    if (!stopped) onError(error);
  });
  return stop;
}

const EVENTS = ["queued", "running", "progress", "succeeded", "failed", "cancelled"];
export const FINAL = new Set(["succeeded", "failed", "cancelled"]);
