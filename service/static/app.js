// The page at /: asks every selected mode at once through the public API (POST /answer, streamed),
// shows each answer as it is decoded, then its passages, gradient sources and stage timings; adds a
// document (POST /documents). No framework, no network beyond this server.
"use strict";

const $ = (selector) => document.querySelector(selector);
const STAGES = ["queue", "retrieve", "gradients", "generate", "total"];
const SOURCE_HELP = {
  stored: "gradient read from the gradient store",
  computed: "gradient computed now (one backward pass)",
  cached: "gradient computed earlier, kept in memory",
  missing: "no gradient (not stored, not computed)",
};
let config = null;

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("#api_key").value.trim();
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

function errorText(status, body) {
  if (body && Array.isArray(body.detail)) {
    return body.detail.map((e) => `${(e.loc || []).filter((p) => p !== "body").join(".")}: ${e.msg}`).join("; ");
  }
  return `HTTP ${status}: ${(body && (body.detail || (body.error && body.error.message))) || "request failed"}`;
}

async function loadConfig() {
  config = await (await fetch("/page/config")).json();
  $("#model").textContent = config.model;
  $("#learner").textContent = config.learner.slice(0, 12);
  $("#api-key-label").hidden = !config.needs_api_key;
  const box = $("#modes");
  for (const mode of config.modes) {
    const input = el("input", { type: "checkbox", value: mode.name, name: "mode" });
    input.checked = true;
    box.append(el("label", { title: mode.description }, input, " " + mode.name));
  }
}

function modeCard(mode) {
  const spec = config.modes.find((m) => m.name === mode) || { description: "" };
  const card = el("article", { class: "mode-card", "data-mode": mode, "data-state": "waiting" },
    el("h3", { text: mode }), el("p", { class: "desc", text: spec.description }),
    el("div", { class: "answer" }), el("div", { class: "details" }));
  return card;
}

function renderDetails(card, response) {
  const details = card.querySelector(".details");
  details.replaceChildren();
  const total = Math.max(response.timings_ms.total, 1e-9);
  const table = el("table", { class: "timings" });
  for (const stage of STAGES) {
    const ms = response.timings_ms[stage] || 0;
    const bar = el("div", { class: "bar" });
    bar.style.width = `${Math.min(100, (100 * ms) / total).toFixed(1)}%`;
    table.append(el("tr", {}, el("td", { text: stage }), el("td", { class: "ms", text: `${ms.toFixed(1)} ms` }),
      el("td", { style: "width:45%" }, bar)));
  }
  details.append(table);
  if (!response.passages.length) {
    details.append(el("p", { class: "hint", text: "no passages (this mode uses none)" }));
    return;
  }
  const spec = config.modes.find((m) => m.name === response.mode) || {};
  const list = el("ol", { class: "passages" });
  for (const p of response.passages) {
    const head = el("div", {}, el("strong", { text: p.title || "(untitled)" }), " ",
      el("span", { class: "pid", text: `${p.id} · score ${p.score.toFixed(2)}` +
        (p.weight != null ? ` · weight ${p.weight.toFixed(2)} (${response.composition})` : "") }));
    if (p.gradient) head.append(el("span", { class: `badge ${p.gradient}`, title: SOURCE_HELP[p.gradient] || "",
      text: `gradient: ${p.gradient}` }));
    if (spec.context) head.append(el("span", { class: "badge prompt", text: "in prompt" }));
    list.append(el("li", {}, head, el("div", { class: "ptext", text: p.text || "" })));
  }
  details.append(list);
}

// POST /answer with stream: true; `token` events grow the answer, the `answer` event completes it.
async function askMode(mode, body, card) {
  const answer = card.querySelector(".answer");
  let response;
  try {
    response = await fetch("/answer", { method: "POST", headers: headers(),
      body: JSON.stringify({ ...body, mode, stream: true, include_text: true }) });
  } catch (error) {
    card.dataset.state = "error";
    answer.textContent = String(error);
    return;
  }
  if (!response.ok) {
    card.dataset.state = "error";
    answer.textContent = errorText(response.status, await response.json().catch(() => null));
    return;
  }
  card.dataset.state = "streaming";
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
      let event = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) event = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (data === "[DONE]") continue;
      const payload = JSON.parse(data);
      if (event === "token") answer.textContent += payload.text;
      else if (event === "answer") {
        answer.textContent = payload.answer || "(empty answer)";
        renderDetails(card, payload);
        card.dataset.state = "done";
      } else if (event === "error") {
        card.dataset.state = "error";
        answer.textContent = errorText(payload.status, payload);
      }
    }
  }
  if (card.dataset.state === "streaming") card.dataset.state = "done";
}

async function ask(event) {
  if (event) event.preventDefault();
  const question = $("#question").value.trim();
  if (!question) return;
  const modes = [...document.querySelectorAll("#modes input:checked")].map((input) => input.value);
  const body = { question, top_k: Number($("#top_k").value), gamma: Number($("#gamma").value),
                 max_new_tokens: Number($("#max_new_tokens").value) };
  const results = $("#results");
  results.replaceChildren();
  $("#ask").disabled = true;
  document.body.dataset.state = "asking";
  const cards = modes.map((mode) => modeCard(mode));
  results.append(...cards);
  await Promise.all(modes.map((mode, i) => askMode(mode, body, cards[i])));
  $("#ask").disabled = false;
  document.body.dataset.state = "answered";
}

async function addDocument() {
  const title = $("#doc-title").value.trim();
  const text = $("#doc-text").value.trim();
  const status = $("#doc-status");
  if (!text) { status.textContent = "write the passage text first"; return; }
  $("#add-doc").disabled = true;
  status.textContent = "adding (indexing and computing its gradient)…";
  document.body.dataset.doc = "adding";
  try {
    const response = await fetch("/documents", { method: "POST", headers: headers(),
      body: JSON.stringify({ documents: [{ title, text }] }) });
    const body = await response.json();
    if (!response.ok) throw new Error(errorText(response.status, body));
    status.textContent = `added ${body.ids[0]} (${body.added} new, ${body.gradients_stored} gradient stored,`
      + ` ${body.timings_ms.total.toFixed(0)} ms). Ask again to retrieve it.`;
    document.body.dataset.doc = "added";
  } catch (error) {
    status.textContent = String(error.message || error);
    document.body.dataset.doc = "error";
  } finally {
    $("#add-doc").disabled = false;
  }
}

$("#ask-form").addEventListener("submit", ask);
$("#ask-again").addEventListener("click", () => ask());
$("#add-doc").addEventListener("click", addDocument);
loadConfig().then(() => { document.body.dataset.ready = "true"; });
