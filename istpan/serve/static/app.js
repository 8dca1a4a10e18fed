// The page of `istpan serve`: upload a video (POST /v1/predict), show its top classes and attention overlay; start a
// stream (POST /v1/streams) and show its decisions as they come (Server-Sent Events read through fetch, so the
// bearer token goes in a header, never in a URL). Plain DOM, no framework: one file the server ships as is.
"use strict";

const $ = (id) => document.getElementById(id);
let streamId = null;
let streamAbort = null;

function authHeaders() {
  const token = sessionStorage.getItem("istpan-token") || $("token").value.trim();
  return token ? { Authorization: "Bearer " + token } : {};
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...(options.headers || {}), ...authHeaders() } });
  if (response.status === 401) $("token-row").hidden = false;
  return response;
}

async function errorText(response) {
  try { return (await response.json()).error || response.statusText; } catch (e) { return response.statusText; }
}

async function blobUrl(path) {  // artifacts need the token too: fetched, then shown from memory
  const response = await api(path);
  if (!response.ok) throw new Error(await errorText(response));
  return URL.createObjectURL(await response.blob());
}

function showTop(top) {
  const body = $("top").querySelector("tbody");
  body.replaceChildren();
  for (const t of top) {
    const row = document.createElement("tr");
    const name = document.createElement("td");
    name.textContent = t.class;
    const score = document.createElement("td");
    score.textContent = t.score.toFixed(3);
    const bar = document.createElement("td");
    bar.className = "bar";
    const fill = document.createElement("span");
    fill.style.width = Math.round(100 * t.score) + "%";
    bar.append(fill);
    row.append(name, score, bar);
    body.append(row);
  }
  $("top").hidden = false;
}

async function predict(event) {
  event.preventDefault();
  const file = $("video").files[0];
  if (!file) return;
  const form = new FormData();
  form.append("video", file);
  form.append("top_k", $("top-k").value);
  form.append("explain", $("explain").checked ? "true" : "false");
  $("predict-status").textContent = "classifying " + file.name + "…";
  $("predict-status").className = "";
  $("overlay").hidden = true;
  const response = await api("/v1/predict", { method: "POST", body: form });
  if (!response.ok) {
    $("predict-status").textContent = "error " + response.status + ": " + (await errorText(response));
    $("predict-status").className = "error";
    return;
  }
  const result = await response.json();
  showTop(result.top);
  $("predict-status").textContent = result.path + ": " + result.num_frames + " of " + result.video_frames +
    " frames seen";
  const drawn = result.explain;
  if (drawn && drawn.grid) {
    $("overlay-grid").src = await blobUrl(drawn.grid);
    if (drawn.video) $("overlay-video").src = await blobUrl(drawn.video);
    $("overlay").hidden = false;
  }
  document.body.dataset.predicted = "1";
}

function addDecision(text, cls) {
  const item = document.createElement("li");
  item.textContent = text;
  if (cls) item.className = cls;
  $("decisions").prepend(item);
  while ($("decisions").children.length > 200) $("decisions").lastChild.remove();
}

function handleEvent(kind, data) {
  if (kind === "decision") {
    const top = data.top[0];
    addDecision(data.time_s.toFixed(2) + " s  " + top.class + " " + top.score.toFixed(3));
    $("stream-status").textContent = "live: " + top.class;
  } else if (kind === "end") {
    addDecision("ended: " + data.reason, "end");
    $("stream-status").textContent = "ended: " + data.reason;
    $("stop").disabled = true;
    document.body.dataset.streamEnded = "1";
  }
}

async function follow(id) {  // Server-Sent Events over fetch: "event: x\ndata: {...}\n\n"
  streamAbort = new AbortController();
  const response = await api("/v1/streams/" + id + "/events", { signal: streamAbort.signal });
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let kind = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) kind = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (data) handleEvent(kind, JSON.parse(data));
    }
  }
}

async function startStream(event) {
  event.preventDefault();
  $("decisions").replaceChildren();
  delete document.body.dataset.streamEnded;
  const response = await api("/v1/streams", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ source: $("source").value.trim() }),
  });
  if (!response.ok) {
    $("stream-status").textContent = "error " + response.status + ": " + (await errorText(response));
    $("stream-status").className = "error";
    return;
  }
  const session = await response.json();
  streamId = session.id;
  $("stream-status").className = "";
  $("stream-status").textContent = "started " + session.source;
  $("stop").disabled = false;
  follow(session.id).catch((e) => { if (e.name !== "AbortError") addDecision("error: " + e, "end"); });
}

async function stopStream() {
  if (streamId) await api("/v1/streams/" + streamId, { method: "DELETE" });
}

async function describe() {
  const response = await api("/v1/model");
  if (!response.ok) { $("model").textContent = await errorText(response); return; }
  const m = await response.json();
  $("model").textContent = m.classes.length + " classes, " + m.num_frames + " frames per clip, " + m.input_size +
    " px" + (m.media_root ? "; stream files under the server's media root" : "");
  $("top-k").max = m.classes.length;
  $("top-k").value = Math.min(5, m.classes.length);
}

$("token").addEventListener("change", () => { sessionStorage.setItem("istpan-token", $("token").value.trim());
  describe(); });
$("predict-form").addEventListener("submit", predict);
$("stream-form").addEventListener("submit", startStream);
$("stop").addEventListener("click", stopStream);
describe();
