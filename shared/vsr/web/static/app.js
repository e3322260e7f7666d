// The upload page: pick or drop a video, PUT it to the presigned URL the API returns (in parts for a large
// file), and follow every upload of this user until it is COMPLETE (preview, download, key figures) or FAILED
// (the reason). Plain JS, no build step. Every text from the API is set with textContent, never as HTML.
"use strict";

const POLL_MS = 1500;
const state = { config: null, token: null, cursor: null, cards: new Map(), timer: null };

const $ = (id) => document.getElementById(id);

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function showMessage(text) {
  const box = $("message");
  box.textContent = text || "";
  box.hidden = !text;
}

// --- sign-in (deployed: Cognito's hosted UI, authorization code + PKCE; locally: none) ---------------------------
function base64url(bytes) {
  return btoa(String.fromCharCode(...new Uint8Array(bytes))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

async function signIn() {
  const auth = state.config.auth;
  if (!auth) return true;
  const redirect = location.origin + location.pathname;
  const query = new URLSearchParams(location.search);
  if (query.get("code") && sessionStorage.getItem("vsr-verifier")) {
    const response = await fetch(`${auth.domain}/oauth2/token`, {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({
        grant_type: "authorization_code", client_id: auth.client_id, code: query.get("code"),
        redirect_uri: redirect, code_verifier: sessionStorage.getItem("vsr-verifier"),
      }),
    });
    sessionStorage.removeItem("vsr-verifier");
    history.replaceState(null, "", location.pathname);
    if (response.ok) sessionStorage.setItem("vsr-token", (await response.json()).access_token);
  }
  state.token = sessionStorage.getItem("vsr-token");
  if (state.token) return true;
  const verifier = base64url(crypto.getRandomValues(new Uint8Array(32)));
  sessionStorage.setItem("vsr-verifier", verifier);
  const challenge = base64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  const login = new URLSearchParams({
    client_id: auth.client_id, response_type: "code", scope: "openid email", redirect_uri: redirect,
    code_challenge_method: "S256", code_challenge: challenge,
  });
  location.assign(`${auth.domain}/oauth2/authorize?${login}`);
  return false;
}

async function api(method, path, body) {
  const headers = { "Accept": "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (state.token) headers["Authorization"] = `Bearer ${state.token}`;
  const response = await fetch(state.config.api_base + path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (response.status === 401 && state.config.auth) {
    sessionStorage.removeItem("vsr-token");
    await signIn();
  }
  if (!response.ok) {
    const error = (data && data.error) || {};
    throw new Error(error.message || `the API answered ${response.status}`);
  }
  return data;
}

// --- upload -------------------------------------------------------------------------------------------------------
function put(url, headers, blob, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", url);
    for (const [name, value] of Object.entries(headers || {})) xhr.setRequestHeader(name, value);
    xhr.upload.onprogress = (event) => onProgress(event.loaded);
    xhr.onload = () => (xhr.status >= 200 && xhr.status < 300 ? resolve() : reject(new Error(`S3 answered ${xhr.status}`)));
    xhr.onerror = () => reject(new Error("the upload could not reach S3"));
    xhr.send(blob);
  });
}

async function upload(file) {
  showMessage("");
  const box = $("upload");
  const bar = $("upload-progress");
  box.hidden = false;
  $("upload-name").textContent = file.name;
  bar.value = 0;
  const setText = (text) => { $("upload-text").textContent = text; };
  const metadata = {};
  if ($("plan").value) metadata["vsr-plan"] = $("plan").value;
  try {
    setText("asking for an upload URL…");
    const plan = await api("POST", "/api/uploads", { filename: file.name, size: file.size, metadata });
    const report = (sent) => {
      bar.value = file.size ? Math.round((100 * sent) / file.size) : 100;
      setText(`${formatBytes(sent)} of ${formatBytes(file.size)} sent`);
    };
    if (plan.multipart) {
      let done = 0;
      for (const part of plan.multipart.parts) {
        const blob = file.slice(part.offset, part.offset + part.length);
        await put(part.url, plan.headers, blob, (loaded) => report(done + loaded));
        done += part.length;
      }
      await api(plan.multipart.complete.method, plan.multipart.complete.path);
    } else {
      await put(plan.url, plan.headers, file, report);
    }
    bar.value = 100;
    setText("uploaded: the job starts in a moment");
    box.dataset.done = plan.upload_id;
    refresh();
  } catch (error) {
    setText("");
    showMessage(`Upload failed: ${error.message}`);
  }
}

// --- the job list ---------------------------------------------------------------------------------------------------
function formatBytes(bytes) {
  const units = ["B", "KB", "MB", "GB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) { value /= 1000; unit += 1; }
  return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
}

function formatSeconds(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 10) return `${seconds.toFixed(1)} s`;
  if (seconds < 90) return `${Math.round(seconds)} s`;
  return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
}

function card(item) {
  let entry = state.cards.get(item.upload_id);
  if (!entry) {
    const root = el("li", "job");
    root.dataset.uploadId = item.upload_id;
    const title = el("div", "title");
    const name = el("span", "name", item.filename);
    const badge = el("span", "state");
    title.append(name, badge);
    const progress = el("progress", "progress");
    progress.max = 100;
    const detail = el("p", "detail muted");
    const reason = el("p", "reason");
    reason.hidden = true;
    root.append(title, progress, detail, reason);
    entry = { root, badge, progress, detail, reason, preview: null, figures: null, actions: null };
    state.cards.set(item.upload_id, entry);
  }
  return entry;
}

function render(item) {
  const entry = card(item);
  const { root, badge, progress, detail, reason } = entry;
  root.dataset.status = item.status;
  badge.className = `state ${item.status}`;
  badge.textContent = item.status;
  const total = item.frames_total || 0;
  const done = Math.min(item.frames_done || 0, total);
  progress.value = item.status === "COMPLETE" ? 100 : total ? Math.round((100 * done) / total) : 0;
  const words = [];
  if (item.status === "WAITING") words.push("waiting for the upload");
  if (total) words.push(`${done} / ${total} frames`);
  if (item.segments && item.segments.total) words.push(`${item.segments.done} / ${item.segments.total} segments`);
  if (item.status === "QUEUED" || item.status === "PROCESSING") words.push(`ETA ${formatSeconds(item.eta_s)}`);
  if (item.plan && item.plan.strategy) words.push(`plan: ${item.plan.strategy} on ${item.plan.tier || "lambda"}`);
  detail.textContent = words.join(" · ");
  if (item.status === "FAILED" && item.error) {
    reason.hidden = false;
    reason.textContent = `Failed: ${item.error.reason}`;
  }
  if (item.status === "COMPLETE") complete(entry, item);
  return root;
}

function complete(entry, item) {
  if (item.preview_url && !entry.preview) {
    entry.preview = el("img", "preview");
    entry.preview.alt = `Before and after: ${item.filename}`;
    entry.preview.src = item.preview_url;
    entry.root.insertBefore(entry.preview, entry.figures || entry.reason); // the preview always comes first
  }
  if (!entry.figures) {
    entry.figures = el("dl", "figures");
    entry.root.insertBefore(entry.figures, entry.reason);
  }
  const f = item.figures || {};
  const rows = [
    ["Segments", f.segments],
    ["Frames", f.frames],
    ["Wall time", f.wall_s === null || f.wall_s === undefined ? "—" : formatSeconds(f.wall_s)],
    ["Cost (predicted)", f.predicted_cost_usd === null || f.predicted_cost_usd === undefined ? "—" : `$${Number(f.predicted_cost_usd).toFixed(4)}`],
    ["Flicker ratio", f.flicker_ratio === null || f.flicker_ratio === undefined ? (f.quality_measured ? "—" : "measuring…") : Number(f.flicker_ratio).toFixed(3)],
  ];
  entry.figures.replaceChildren(...rows.flatMap(([name, value]) => [el("dt", null, name), el("dd", null, value)]));
  entry.figures.dataset.quality = f.quality_measured ? "measured" : "pending";
  if (!entry.actions) {
    entry.actions = el("p", "actions");
    const link = el("a", "button download", "Download");
    entry.actions.append(link);
    entry.root.append(entry.actions);
  }
  const link = entry.actions.querySelector("a.download");
  link.href = item.output_url; // fresh on every look: presigned URLs expire
  link.setAttribute("download", item.output_name || "");
}

async function refresh() {
  clearTimeout(state.timer);
  try {
    const page = await api("GET", "/api/uploads");
    const list = $("jobs");
    const nodes = page.uploads.map(render);
    for (const node of nodes) if (node.parentNode !== list) list.append(node);
    // newest first: the API's order
    nodes.forEach((node, index) => { if (list.children[index] !== node) list.insertBefore(node, list.children[index]); });
    $("empty").hidden = page.uploads.length > 0;
    state.cursor = page.next_cursor;
    $("more").hidden = !page.next_cursor;
  } catch (error) {
    showMessage(`Could not load your jobs: ${error.message}`);
  }
  state.timer = setTimeout(refresh, POLL_MS);
}

async function older() {
  if (!state.cursor) return;
  const page = await api("GET", `/api/uploads?cursor=${encodeURIComponent(state.cursor)}`);
  for (const item of page.uploads) $("jobs").append(render(item));
  state.cursor = page.next_cursor;
  $("more").hidden = !page.next_cursor;
}

function wireDropZone() {
  const zone = $("drop");
  $("file").addEventListener("change", (event) => {
    const file = event.target.files[0];
    if (file) upload(file);
    event.target.value = "";
  });
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    const file = event.dataTransfer.files[0];
    if (file) upload(file);
  });
  $("more").addEventListener("click", () => older().catch((error) => showMessage(error.message)));
}

async function main() {
  state.config = await (await fetch("config.json")).json();
  if (!(await signIn())) return;
  $("who").textContent = state.config.auth ? "Signed in" : `Local: every upload belongs to the user "${state.config.user}"`;
  wireDropZone();
  refresh();
}

main().catch((error) => showMessage(`The page could not start: ${error.message}`));
