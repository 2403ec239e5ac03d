// Argosy web UI: the one script of every page (no third-party code, no inline handlers).
//
// - changes go through fetch() with the X-CSRF-Token header (the argosy_csrf cookie's value):
//   forms and buttons marked data-api="METHOD" data-url="..." call the API (or a UI route),
//   then reload the page, follow the answer's "location", or show its problem inline;
// - the run page follows the run's event stream (event: task / run / end) and recolours the
//   graph's boxes without reloading; a box opens its step's panel beside the graph, whose log
//   is tailed live (event: line), searched and downloaded.
"use strict";
(() => {
  const STATES = ["pending", "queued", "running", "succeeded", "failed", "skipped", "cancelled", "cached", "none"];
  const DONE = ["succeeded", "failed", "cancelled"];

  function csrfToken() {
    const found = document.cookie.split("; ").find((c) => c.startsWith("argosy_csrf="));
    return found ? decodeURIComponent(found.slice("argosy_csrf=".length)) : "";
  }

  async function call(method, url, body) {
    const headers = { Accept: "application/json", "X-Requested-With": "fetch", "X-CSRF-Token": csrfToken() };
    const init = { method, headers, credentials: "same-origin" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(url, init);
    const text = await response.text();
    let doc = null;
    try { doc = text ? JSON.parse(text) : null; } catch (e) { doc = null; }
    if (!response.ok) {
      const error = new Error((doc && doc.detail) || `${response.status} ${response.statusText}`);
      error.doc = doc;
      throw error;
    }
    return doc;
  }

  // -- forms and buttons --------------------------------------------------------------------------
  function clearErrors(form) {
    form.querySelectorAll(".field-error").forEach((p) => { p.textContent = ""; });
    form.querySelectorAll("[aria-invalid]").forEach((el) => el.removeAttribute("aria-invalid"));
    const general = form.querySelector(".form-error");
    if (general) { general.hidden = true; general.textContent = ""; }
  }

  function showError(container, message, fields) {
    let placed = false;
    if (fields) {
      for (const [name, text] of Object.entries(fields)) {
        const field = container.querySelector(`[data-field="${CSS.escape(name)}"]`);
        if (!field) continue;
        field.querySelector(".field-error").textContent = text;
        const input = field.querySelector("input, textarea, select");
        if (input) input.setAttribute("aria-invalid", "true");
        placed = true;
      }
    }
    const general = container.querySelector(".form-error") || document.querySelector(".form-error");
    if (general && (!placed || !fields)) { general.textContent = message; general.hidden = false; }
    else if (!general) { window.alert(message); }
  }

  function formBody(form) {
    let url = form.dataset.url;
    if (form.hasAttribute("data-launch")) {
      const values = {};
      for (const el of form.elements) {
        if (!el.name) continue;
        values[el.name] = el.type === "checkbox" ? (el.checked ? "true" : "false") : el.value;
      }
      return { url, body: { version: form.dataset.version, values } };
    }
    const body = {};
    for (const el of form.elements) {
      if (!el.name) continue;
      if (el.hasAttribute("data-path")) { url = url.replace(`{${el.name}}`, encodeURIComponent(el.value)); continue; }
      if (el.type === "checkbox") body[el.name] = el.checked;
      else if (el.hasAttribute("data-json")) {
        try { body[el.name] = JSON.parse(el.value || "null"); }
        catch (e) { throw new Error(`${el.name}: not valid JSON (${e.message})`); }
      } else if (el.hasAttribute("data-number")) body[el.name] = Number(el.value);
      else if (el.value !== "") body[el.name] = el.value;
    }
    return { url, body };
  }

  document.addEventListener("submit", async (event) => {
    const form = event.target.closest("form[data-api]");
    if (!form) return;
    event.preventDefault();
    clearErrors(form);
    const button = form.querySelector("button[type=submit]");
    if (button) button.disabled = true;
    try {
      const { url, body } = formBody(form);
      const doc = await call(form.dataset.api, url, body);
      if (form.hasAttribute("data-show-token") && doc && doc.token) {
        const box = document.querySelector("[data-token-box]");
        box.querySelector("[data-token-value]").textContent = doc.token;
        box.hidden = false;
        form.reset();
        return;
      }
      if (doc && doc.location) { window.location.assign(doc.location); return; }
      window.location.reload();
    } catch (error) {
      showError(form, error.message, error.doc && error.doc.errors);
    } finally {
      if (button) button.disabled = false;
    }
  });

  document.addEventListener("click", async (event) => {
    const target = event.target.closest("button[data-api], button[data-run-action], button[data-logout], button[data-reload]");
    if (!target) return;
    if (target.dataset.confirm && !window.confirm(target.dataset.confirm)) return;
    target.disabled = true;
    try {
      if (target.hasAttribute("data-reload")) { window.location.reload(); return; }
      if (target.hasAttribute("data-logout")) {
        await call("POST", "/auth/logout");
        window.location.assign("/");
        return;
      }
      const method = target.dataset.api || "POST";
      const doc = await call(method, target.dataset.url);
      if (target.dataset.runAction === "cancel") { setRunStatus(doc.status); return; }
      if (doc && doc.location) { window.location.assign(doc.location); return; }
      window.location.reload();
    } catch (error) {
      showError(target.closest("form, section, div") || document.body, error.message, null);
    } finally {
      target.disabled = false;
    }
  });

  document.addEventListener("change", (event) => {
    const toggle = event.target.closest("[data-only-diff]");
    if (toggle) document.querySelector("table.compare").classList.toggle("only-diff", toggle.checked);
  });

  // -- the run page: live states ------------------------------------------------------------------
  const runPage = document.querySelector(".run-page");

  function aggregate(states) {
    if (!states.length) return "pending";
    const unique = new Set(states);
    if ([...unique].every((s) => s === "succeeded" || s === "cached")) {
      return unique.size === 1 && unique.has("cached") ? "cached" : "succeeded";
    }
    for (const state of ["failed", "running", "queued", "cancelled", "pending", "skipped"]) {
      if (unique.has(state)) {
        if (state === "pending" && (unique.has("succeeded") || unique.has("cached"))) return "running";
        return state;
      }
    }
    return states[0];
  }

  function setState(element, state) {
    for (const s of STATES) element.classList.remove(`state-${s}`);
    element.classList.add(`state-${state}`);
  }

  function setRunStatus(status) {
    if (!runPage || !status) return;
    const badge = runPage.querySelector("[data-run-status]");
    badge.textContent = status;
    setState(badge, status);
    const done = DONE.includes(status);
    runPage.dataset.done = done ? "true" : "false";
    const cancel = runPage.querySelector('[data-run-action="cancel"]');
    if (cancel) cancel.hidden = done;
    const retry = runPage.querySelector('[data-run-action="retry"]');
    if (retry) retry.hidden = !(status === "failed" || status === "cancelled");
  }

  function boxOf(path) {
    let key = path.replace(/\[\d+\]/g, "");
    for (;;) {
      const box = runPage.querySelector(`.node[data-node="${CSS.escape(key)}"]`);
      if (box) return box;
      const cut = key.lastIndexOf("/");
      if (cut < 0) return null;
      key = key.slice(0, cut);
    }
  }

  const tasks = new Map();
  let pending = false;

  function redraw() {
    pending = false;
    const byBox = new Map();
    const counts = {};
    for (const task of tasks.values()) {
      counts[task.state] = (counts[task.state] || 0) + 1;
      const box = boxOf(task.node_path);
      if (!box) continue;
      if (!byBox.has(box)) byBox.set(box, []);
      byBox.get(box).push(task);
    }
    for (const [box, list] of byBox) {
      const state = aggregate(list.map((t) => t.state));
      setState(box, state);
      box.querySelector(".state-text").textContent = state;
      box.setAttribute("aria-label", `${box.dataset.node}: ${state}`);
      const count = box.querySelector(".count");
      const iterations = list.filter((t) => t.node_path.includes("["));
      if (count && iterations.length) {
        const done = iterations.filter((t) => t.state === "succeeded" || t.state === "cached").length;
        count.textContent = `${done}/${iterations.length}`;
      }
    }
    const summary = runPage.querySelector("[data-counts]");
    if (summary) {
      summary.textContent = Object.keys(counts).sort().map((s) => `${counts[s]} ${s}`).join(", ");
    }
  }

  if (runPage && runPage.dataset.done !== "true" && window.EventSource) {
    const stream = new EventSource(runPage.dataset.stream);
    stream.addEventListener("task", (event) => {
      const task = JSON.parse(event.data);
      tasks.set(task.node_path, task);
      if (!pending) { pending = true; window.requestAnimationFrame(redraw); }
    });
    stream.addEventListener("run", (event) => setRunStatus(JSON.parse(event.data).status));
    stream.addEventListener("end", (event) => {
      stream.close();
      setRunStatus(JSON.parse(event.data).status);
      refreshFacts();
      const open = runPage.querySelector("[data-panel] .step");
      if (open) openStep(stepUrl(open.dataset.step), false);
    });
  }

  // The finished run's duration, error and outputs, from the page as the server renders it now
  // (swapped in place: the page is not reloaded).
  async function refreshFacts() {
    try {
      const response = await fetch(window.location.href, { headers: { Accept: "text/html" }, credentials: "same-origin" });
      if (!response.ok) return;
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
      for (const selector of ["dl.facts", "[data-outputs]", ".run-error[data-run-error]"]) {
        const now = fresh.querySelector(selector);
        const old = runPage.querySelector(selector);
        if (now && old) old.replaceWith(document.importNode(now, true));
        else if (now && !old && selector !== "dl.facts") {
          const anchor = selector === "[data-outputs]" ? runPage.querySelector(".graph-wrap") : runPage.querySelector("dl.facts");
          if (anchor) anchor.after(document.importNode(now, true));
        }
      }
    } catch (e) { /* the live view stays as it is */ }
  }

  // -- the step panel -----------------------------------------------------------------------------
  let logStream = null;

  function stepUrl(node) {
    const base = `/t/${encodeURIComponent(runPage.dataset.tenant)}/runs/${encodeURIComponent(runPage.dataset.run)}`;
    return `${base}/steps/${node.split("/").map(encodeURIComponent).join("/")}`;
  }

  async function openStep(href, push) {
    const panel = runPage.querySelector("[data-panel]");
    const url = new URL(href, window.location.href);
    url.searchParams.set("fragment", "true");
    try {
      const response = await fetch(url, { headers: { Accept: "text/html", "X-Requested-With": "fetch" }, credentials: "same-origin" });
      if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
      panel.innerHTML = await response.text();
    } catch (error) {
      panel.textContent = `Could not load the step: ${error.message}`;
    }
    panel.hidden = false;
    const step = panel.querySelector(".step");
    if (push && step) {
      const page = new URL(window.location.href);
      page.searchParams.set("step", step.dataset.step);
      window.history.pushState({ step: step.dataset.step }, "", page);
    }
    startLog(panel);
    const heading = panel.querySelector("h2");
    if (heading && push) { heading.tabIndex = -1; heading.focus(); }
  }

  function closeStep(push) {
    const panel = runPage.querySelector("[data-panel]");
    if (logStream) { logStream.close(); logStream = null; }
    panel.hidden = true;
    panel.textContent = "";
    if (push) {
      const page = new URL(window.location.href);
      page.searchParams.delete("step");
      window.history.pushState({}, "", page);
    }
  }

  function startLog(root) {
    if (logStream) { logStream.close(); logStream = null; }
    const step = root.querySelector(".step");
    const log = root.querySelector("[data-log]");
    if (!step || !log) return;
    const search = root.querySelector("[data-log-search]");
    if (search) search.addEventListener("input", () => filterLog(root));
    log.scrollTop = log.scrollHeight;
    const source = step.dataset.logStream;
    if (!source || !window.EventSource) return;
    const several = root.querySelector(".iterations") !== null;
    logStream = new EventSource(source);
    logStream.addEventListener("line", (event) => {
      const line = JSON.parse(event.data);
      const follow = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
      const span = document.createElement("span");
      span.className = `line ${line.stream}`;
      span.textContent = `${several ? line.node_path + " " : ""}${line.line}\n`;
      log.appendChild(span);
      const empty = root.querySelector("[data-log-empty]");
      if (empty) empty.remove();
      filterLine(span, search ? search.value : "");
      if (follow) log.scrollTop = log.scrollHeight;
    });
    logStream.addEventListener("end", () => {
      logStream.close();
      logStream = null;
      const live = root.querySelector("[data-live]");
      if (live) live.remove();
    });
  }

  function filterLine(span, query) {
    span.hidden = query !== "" && !span.textContent.toLowerCase().includes(query);
  }

  function filterLog(root) {
    const query = root.querySelector("[data-log-search]").value.toLowerCase();
    let shown = 0;
    const lines = root.querySelectorAll("[data-log] .line");
    lines.forEach((span) => { filterLine(span, query); if (!span.hidden) shown += 1; });
    root.querySelector("[data-log-matches]").textContent = query ? `${shown} of ${lines.length} lines` : "";
  }

  if (runPage) {
    runPage.addEventListener("click", (event) => {
      const close = event.target.closest("[data-close-panel]");
      if (close) { event.preventDefault(); closeStep(true); return; }
      const link = event.target.closest(".graph a.node, a[data-step-link]");
      if (!link || event.metaKey || event.ctrlKey || event.shiftKey) return;
      event.preventDefault();
      openStep(link.getAttribute("href"), true);
    });
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && !runPage.querySelector("[data-panel]").hidden) closeStep(true);
    });
    window.addEventListener("popstate", () => {
      const step = new URL(window.location.href).searchParams.get("step");
      if (step) openStep(stepUrl(step), false); else closeStep(false);
    });
    startLog(runPage);
  } else {
    const standalone = document.querySelector(".panel.standalone");
    if (standalone) {
      const search = standalone.querySelector("[data-log-search]");
      if (search) search.addEventListener("input", () => filterLog(standalone));
    }
  }
})();
