// The chat page of `llmfs serve`: plain JavaScript, no build step, no CDN.
//
// It talks to the server's OpenAI-compatible route /v1/chat/completions with "stream": true and
// reads the server-sent events as they arrive (fetch + a stream reader), so the answer grows token
// by token. The whole conversation is sent with every turn: the server keeps no state.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { model: null, messages: [], controller: null };

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

function setStatus(text) { $("status").textContent = text; }

function addMessage(role, text) {
  const div = document.createElement("div");
  div.className = "message " + role;
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;  // textContent, never innerHTML: model output is not trusted markup
  div.appendChild(body);
  $("messages").appendChild(div);
  div.scrollIntoView({ block: "end" });
  return div;
}

function addMeta(div, text) {
  const meta = document.createElement("span");
  meta.className = "meta";
  meta.textContent = text;
  div.appendChild(meta);
}

async function errorText(response) {
  try {
    const body = await response.json();
    const error = body.error;
    return (error && (error.message || error)) || JSON.stringify(body);
  } catch (e) {
    return response.status + " " + response.statusText;
  }
}

async function loadModel() {
  try {
    const response = await fetch("/v1/models", { headers: headers() });
    if (response.status === 401) {
      $("more").open = true;
      $("model-name").textContent = "(API key needed)";
      setStatus("enter the server's API key under 'more'");
      return;
    }
    if (!response.ok) throw new Error(await errorText(response));
    const body = await response.json();
    state.model = body.data[0].id;
    $("model-name").textContent = state.model;
    setStatus("ready");
  } catch (e) {
    $("model-name").textContent = "(unavailable)";
    setStatus("cannot reach the server: " + e.message);
  }
}

function setBusy(busy) {
  $("send").disabled = busy;
  $("stop").disabled = !busy;
  document.body.dataset.busy = busy ? "true" : "false";
}

async function send() {
  const text = $("prompt").value.trim();
  if (!text || state.controller) return;
  if (!state.model) await loadModel();
  if (!state.model) return;
  $("prompt").value = "";
  addMessage("user", text);
  state.messages.push({ role: "user", content: text });
  const system = $("system").value.trim();
  const request = {
    model: state.model,
    messages: (system ? [{ role: "system", content: system }] : []).concat(state.messages),
    stream: true,
    stream_options: { include_usage: true },
    temperature: Number($("temperature").value),
    max_tokens: Number($("max-tokens").value),
  };
  const bubble = addMessage("assistant", "");
  const body = bubble.querySelector(".text");
  bubble.classList.add("streaming");
  bubble.dataset.chunks = "0";
  state.controller = new AbortController();
  setBusy(true);
  setStatus("generating…");
  let answer = "", finish = null, usage = null, failed = false, stopped = false;
  const started = performance.now();
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST", headers: headers(), body: JSON.stringify(request), signal: state.controller.signal,
    });
    if (!response.ok) {
      if (response.status === 401) $("more").open = true;
      throw new Error(await errorText(response));
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {  // one server-sent event per blank line
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data:")) continue;
          const data = line.slice(5).trim();
          if (data === "[DONE]") continue;
          const chunk = JSON.parse(data);
          if (chunk.error) throw new Error(chunk.error.message || chunk.error);
          if (chunk.usage) usage = chunk.usage;
          for (const choice of chunk.choices || []) {
            if (choice.delta && choice.delta.content) {
              answer += choice.delta.content;
              body.textContent = answer;
              bubble.dataset.chunks = String(Number(bubble.dataset.chunks) + 1);
              bubble.scrollIntoView({ block: "end" });
            }
            if (choice.finish_reason) finish = choice.finish_reason;
          }
        }
      }
    }
  } catch (e) {
    if (e.name === "AbortError") {
      stopped = true;
    } else {
      failed = true;
      bubble.classList.replace("assistant", "error");
      body.textContent = (answer ? answer + "\n\n" : "") + "Error: " + e.message;
    }
  } finally {
    bubble.classList.remove("streaming");
    state.controller = null;
    setBusy(false);
  }
  if (failed) {
    state.messages.pop();  // the turn did not happen; the user can send it again
    setStatus("error");
  } else {
    state.messages.push({ role: "assistant", content: answer });
    const seconds = (performance.now() - started) / 1000;
    const parts = [];
    if (usage) parts.push(usage.completion_tokens + " tokens", (usage.completion_tokens / seconds).toFixed(1) + " tokens/s");
    parts.push(stopped ? "stopped" : finish === "length" ? "max tokens reached" : "done");
    addMeta(bubble, parts.join(" · "));
    setStatus("ready");
  }
  bubble.dataset.done = stopped ? "stopped" : failed ? "error" : "true";
}

$("composer").addEventListener("submit", (e) => { e.preventDefault(); send(); });
$("prompt").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); send(); }
});
$("stop").addEventListener("click", () => { if (state.controller) state.controller.abort(); });
$("new-chat").addEventListener("click", () => {
  if (state.controller) state.controller.abort();
  state.messages = [];
  $("messages").textContent = "";
  $("prompt").focus();
});
$("api-key").addEventListener("change", loadModel);
loadModel();
