// The credits page: reads the public JSON routes with the session token, spends through the
// apps' routes, draws the usage chart as inline SVG. No dependencies, no network but the app.
(() => {
  "use strict";

  const config = JSON.parse(document.getElementById("page-config").textContent);
  const $ = (selector) => document.querySelector(selector);
  const SVG = "http://www.w3.org/2000/svg";
  const COLORS = ["#4f46e5", "#0ea5e9", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#64748b"];
  const timeZone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";

  const state = {
    token: null,
    expiresAt: 0,
    cursors: [null], // cursors[i] reads page i of the history; page 0 is the newest
    page: 0,
    nextCursor: null,
    groupBy: "action",
  };

  // -- session --------------------------------------------------------------------------

  async function devSignIn() {
    const wanted = new URLSearchParams(location.search).get("user");
    const response = await fetch(config.devSigninUrl, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(wanted ? { user: wanted } : {}),
    });
    if (!response.ok) throw new Error(`dev sign-in failed (${response.status})`);
    const session = await response.json();
    state.token = session.token;
    state.expiresAt = Date.now() + session.expires_in * 1000;
    $("#user").textContent = session.user_id;
  }

  // The page loads balance, history and usage at once: they share one sign-in in flight
  // rather than each starting its own.
  let signingIn = null;

  async function sessionToken() {
    if (config.devSignin) {
      if (!state.token || Date.now() > state.expiresAt - 10000) {
        if (!signingIn) signingIn = devSignIn().finally(() => { signingIn = null; });
        await signingIn;
      }
      return state.token;
    }
    // Clerk's frontend, when the page loads it; else its __session cookie rides along.
    if (window.Clerk && window.Clerk.session) return window.Clerk.session.getToken();
    return null;
  }

  function newKey() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  // One call to the app: {status, ok, data}. A POST carries one Idempotency-Key across its
  // retries, so a retry after a refused (expired) token is never charged twice.
  async function api(method, path, body) {
    const key = method === "POST" ? newKey() : null;
    for (let attempt = 0; ; attempt++) {
      const headers = { Accept: "application/json" };
      const token = await sessionToken();
      if (token) headers.Authorization = `Bearer ${token}`;
      if (key) headers["Idempotency-Key"] = key;
      if (body !== undefined) headers["Content-Type"] = "application/json";
      const response = await fetch(path, {
        method,
        headers,
        credentials: "same-origin",
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      if (response.status === 401 && config.devSignin && attempt === 0) {
        state.token = null; // expired or from before a restart: sign in again, once
        continue;
      }
      let data = null;
      try {
        data = await response.json();
      } catch (_) {
        data = null;
      }
      return { status: response.status, ok: response.ok, data };
    }
  }

  function setStatus(text, kind) {
    const status = $("#status");
    status.textContent = text || "";
    status.dataset.kind = kind || "";
  }

  function errorText(result) {
    const detail = result.data && (result.data.detail || result.data);
    const message = detail && (detail.message || detail.error);
    return `${result.status}${message ? `: ${message}` : ""}`;
  }

  // -- balance --------------------------------------------------------------------------

  function showBalance(balance) {
    const el = $("#balance");
    el.textContent = Number(balance).toLocaleString("en-US");
    el.dataset.balance = String(balance);
    const badge = $("#balance-badge");
    badge.classList.toggle("low", balance < (config.prices.chat_message || 10));
  }

  async function loadBalance() {
    const result = await api("GET", "/api/credits/balance");
    if (!result.ok) throw new Error(`balance ${errorText(result)}`);
    showBalance(result.data.balance);
  }

  // -- credits expiring soon (credit lots with an expiry) --------------------------------

  async function loadExpiring() {
    const result = await api("GET", `/api/credits/grants?days=${config.days}`);
    if (!result.ok) throw new Error(`grants ${errorText(result)}`);
    const soon = result.data.expiring;
    const line = $("#expiring");
    line.hidden = !soon.credits;
    if (!soon.credits) return;
    $("#expiring-credits").textContent = Number(soon.credits).toLocaleString("en-US");
    const first = $("#expiring-first");
    first.dateTime = soon.first;
    first.textContent = new Date(soon.first).toLocaleString();
  }

  // -- low-balance banner (the account's alert threshold, GET /api/credits/controls) -----

  async function loadControls() {
    const result = await api("GET", "/api/credits/controls");
    if (!result.ok) throw new Error(`controls ${errorText(result)}`);
    const banner = $("#low-balance");
    banner.hidden = !result.data.low_balance_banner;
    if (result.data.low_balance !== null) {
      $("#low-threshold").textContent = Number(result.data.low_balance).toLocaleString("en-US");
    }
  }

  // -- history --------------------------------------------------------------------------

  function cell(row, text, className) {
    const td = document.createElement("td");
    td.textContent = text === null || text === undefined || text === "" ? "—" : text;
    if (className) td.className = className;
    row.appendChild(td);
    return td;
  }

  function renderHistory(entries) {
    const rows = $("#history-rows");
    rows.replaceChildren();
    if (!entries.length) {
      const row = document.createElement("tr");
      row.className = "empty";
      cell(row, "No transactions yet").colSpan = 6;
      rows.appendChild(row);
      return;
    }
    for (const entry of entries) {
      const row = document.createElement("tr");
      row.dataset.entryId = entry.id;
      row.dataset.type = entry.type;
      cell(row, entry.type, `type type-${entry.type}`);
      cell(row, entry.action);
      cell(row, entry.app);
      const delta = cell(row, `${entry.delta > 0 ? "+" : ""}${entry.delta}`, "num delta");
      delta.classList.add(entry.delta < 0 ? "neg" : "pos");
      cell(row, String(entry.balance_after), "num after");
      const when = document.createElement("time");
      when.dateTime = entry.timestamp;
      when.textContent = new Date(entry.timestamp).toLocaleString("en-GB", {
        day: "numeric", month: "short", hour: "2-digit", minute: "2-digit", second: "2-digit",
      });
      when.title = new Date(entry.timestamp).toString();
      cell(row, "").replaceChildren(when);
      rows.appendChild(row);
    }
  }

  async function loadHistory() {
    const params = new URLSearchParams({ limit: String(config.pageSize) });
    const cursor = state.cursors[state.page];
    if (cursor) params.set("cursor", cursor);
    const result = await api("GET", `/api/credits/history?${params}`);
    if (!result.ok) throw new Error(`history ${errorText(result)}`);
    renderHistory(result.data.transactions);
    state.nextCursor = result.data.next_cursor;
    $("#history-page").textContent = `Page ${state.page + 1}`;
    $("#history-newer").disabled = state.page === 0;
    $("#history-older").disabled = !state.nextCursor;
  }

  // -- usage chart ----------------------------------------------------------------------

  function svg(name, attributes, parent) {
    const el = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attributes || {})) el.setAttribute(key, value);
    if (parent) parent.appendChild(el);
    return el;
  }

  function dayLabel(isoDay) {
    const [y, m, d] = isoDay.split("-").map(Number);
    const date = new Date(Date.UTC(y, m - 1, d));
    const weekday = date.toLocaleDateString("en-US", { weekday: "short", timeZone: "UTC" });
    return { weekday, date: `${d}/${m}` };
  }

  function niceMax(value) {
    if (value <= 10) return 10;
    const step = 10 ** Math.floor(Math.log10(value));
    for (const k of [1, 2, 2.5, 5, 10]) if (k * step >= value) return k * step;
    return 10 * step;
  }

  function renderUsage(report) {
    const chart = $("#usage-chart");
    const days = report.days;
    const keys = [...new Set(days.flatMap((d) => Object.keys(d.by)))].sort();
    const color = (key) => COLORS[keys.indexOf(key) % COLORS.length];
    const width = 560;
    const height = 240;
    const pad = { top: 22, right: 8, bottom: 40, left: 40 };
    const plotW = width - pad.left - pad.right;
    const plotH = height - pad.top - pad.bottom;
    const top = niceMax(Math.max(0, ...days.map((d) => d.total)));
    const y = (v) => pad.top + plotH - (v / top) * plotH;
    const root = svg("svg", {
      viewBox: `0 0 ${width} ${height}`,
      role: "img",
      "aria-label": `Credits used per day, last ${days.length} days, by ${report.group_by}`,
      "data-group-by": report.group_by,
      "data-total": String(report.total),
    });
    for (const tick of [0, top / 2, top]) {
      svg("line", { x1: pad.left, x2: width - pad.right, y1: y(tick), y2: y(tick), class: tick ? "grid" : "axis" }, root);
      svg("text", { x: pad.left - 6, y: y(tick) + 4, class: "tick", "text-anchor": "end" }, root).textContent = String(tick);
    }
    const slot = plotW / days.length;
    const barW = Math.min(48, slot * 0.62);
    days.forEach((day, i) => {
      const today = i === days.length - 1;
      const x = pad.left + i * slot + (slot - barW) / 2;
      const group = svg("g", {
        class: `day${today ? " today" : ""}`,
        "data-day": day.day,
        "data-total": String(day.total),
        "data-today": String(today),
      }, root);
      const parts = Object.entries(day.by).filter(([, v]) => v > 0).map(([k, v]) => `${k} ${v}`);
      const label = dayLabel(day.day);
      svg("title", {}, group).textContent =
        `${label.weekday} ${day.day}: ${day.total} credits${parts.length ? ` (${parts.join(", ")})` : ""}`;
      // A full-height invisible target, so idle days have a tooltip too.
      svg("rect", { x, y: pad.top, width: barW, height: plotH, class: "hit" }, group);
      let base = 0;
      for (const key of keys) {
        const value = day.by[key] || 0;
        if (value <= 0) continue;
        svg("rect", {
          x, y: y(base + value), width: barW, height: Math.max(1, y(base) - y(base + value)),
          fill: color(key), class: "segment", "data-key": key, "data-value": String(value),
        }, group);
        base += value;
      }
      svg("text", { x: x + barW / 2, y: y(day.total) - 6, class: "value", "text-anchor": "middle" }, group)
        .textContent = String(day.total);
      svg("text", { x: x + barW / 2, y: height - pad.bottom + 16, class: "label", "text-anchor": "middle" }, group)
        .textContent = today ? "Today" : label.weekday;
      svg("text", { x: x + barW / 2, y: height - pad.bottom + 30, class: "sublabel", "text-anchor": "middle" }, group)
        .textContent = label.date;
    });
    chart.replaceChildren(root);
    chart.dataset.state = "ready";
    const legend = $("#usage-legend");
    legend.replaceChildren();
    const totals = {};
    for (const day of days) for (const [k, v] of Object.entries(day.by)) totals[k] = (totals[k] || 0) + v;
    if (!keys.length) {
      const li = document.createElement("li");
      li.className = "none";
      li.textContent = "No usage in this period";
      legend.appendChild(li);
    }
    for (const key of keys) {
      const li = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = color(key);
      li.append(swatch, `${key} `);
      const total = document.createElement("strong");
      total.textContent = String(totals[key]);
      li.appendChild(total);
      legend.appendChild(li);
    }
  }

  async function loadUsage() {
    const params = new URLSearchParams({ days: String(config.days), group_by: state.groupBy, tz: timeZone });
    let result = await api("GET", `/api/credits/usage?${params}`);
    if (result.status === 422) {
      params.delete("tz"); // a browser zone the server does not know: fall back to UTC
      result = await api("GET", `/api/credits/usage?${params}`);
    }
    if (!result.ok) throw new Error(`usage ${errorText(result)}`);
    renderUsage(result.data);
  }

  // -- refresh and actions --------------------------------------------------------------

  async function refresh() {
    const results = await Promise.allSettled([
      loadBalance(), loadHistory(), loadUsage(), loadExpiring(), loadControls(),
    ]);
    const failed = results.filter((r) => r.status === "rejected");
    if (failed.length) setStatus(`Could not load: ${failed.map((r) => r.reason.message).join("; ")}`, "error");
    document.body.dataset.ready = "true";
  }

  const ACTION_NAMES = {
    chat_message: "A chat message",
    canvas_simple: "A simple canvas",
    canvas_complex: "A complex canvas",
    video_generation: "This video",
  };

  function openInsufficient(body) {
    $("#dialog-action").textContent = ACTION_NAMES[body.action] || "This";
    $("#dialog-required").textContent = String(body.required);
    $("#dialog-balance").textContent = String(body.balance);
    $("#dialog-shortfall").textContent = String(body.shortfall ?? body.required - body.balance);
    const dialog = $("#insufficient-dialog");
    dialog.dataset.required = String(body.required);
    dialog.dataset.balance = String(body.balance);
    if (!dialog.open) dialog.showModal();
  }

  async function spend(path, body, describe) {
    const buttons = document.querySelectorAll(".actions button");
    buttons.forEach((b) => { b.disabled = true; });
    setStatus("Working…", "busy");
    try {
      const result = await api("POST", path, body);
      if (result.ok) {
        showBalance(result.data.balance);
        $("#output").textContent = describe(result.data);
        setStatus(`Used ${result.data.credits_used} credits.`, "ok");
      } else if (result.status === 402 && result.data) {
        showBalance(result.data.balance);
        setStatus("Not enough credits.", "error");
        openInsufficient(result.data);
      } else if (result.status === 429) {
        const retry = result.data && result.data.detail && result.data.detail.retry_after;
        setStatus(`Too many requests: try again in ${retry || "a few"} seconds.`, "error");
      } else {
        setStatus(`Failed: ${errorText(result)}`, "error");
      }
    } catch (error) {
      setStatus(`Failed: ${error.message}`, "error");
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
      state.page = 0;
      state.cursors = [null];
      await refresh();
    }
  }

  $("#chat-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const message = $("#chat-message").value.trim() || "Hello";
    spend("/api/chat", { message }, (data) => data.reply);
  });

  $("#canvas-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const complex = event.submitter ? event.submitter.value === "true" : false;
    const prompt = $("#canvas-prompt").value.trim() || "A canvas";
    spend("/api/generate", { prompt, complex }, (data) => data.canvas);
  });

  const seconds = () => Math.max(1, Number($("#video-seconds").value) || 1);
  $("#video-seconds").addEventListener("input", () => {
    $("#video-cost").textContent = String(seconds() * config.prices.video_per_second);
  });
  $("#video-form").addEventListener("submit", (event) => {
    event.preventDefault();
    spend("/api/video/generate", { prompt: "demo", duration: seconds() }, (data) => data.video);
  });

  // Buy credits: a Checkout Session for the chosen pack, then Stripe's page.
  for (const button of document.querySelectorAll(".buy-pack")) {
    button.addEventListener("click", async () => {
      button.disabled = true;
      setStatus("Opening checkout…", "busy");
      try {
        const result = await api("POST", config.checkoutUrl, { pack: button.dataset.pack });
        if (result.ok && result.data && result.data.url) {
          window.location.assign(result.data.url);
          return;
        }
        setStatus(`Checkout failed: ${errorText(result)}`, "error");
      } catch (error) {
        setStatus(`Checkout failed: ${error.message}`, "error");
      } finally {
        button.disabled = false;
      }
    });
  }
  if (window.location.hash === "#buy" && $("#buy")) $("#buy").open = true;
  const checkout = new URLSearchParams(window.location.search).get("checkout");
  if (checkout === "success") {
    setStatus("Payment received: the credits arrive as soon as Stripe confirms it.", "ok");
  } else if (checkout === "cancelled") {
    setStatus("Checkout cancelled: nothing was charged.", "");
  }

  $("#history-older").addEventListener("click", async () => {
    if (!state.nextCursor) return;
    state.cursors[state.page + 1] = state.nextCursor;
    state.page += 1;
    await loadHistory();
  });
  $("#history-newer").addEventListener("click", async () => {
    if (state.page === 0) return;
    state.page -= 1;
    await loadHistory();
  });

  for (const radio of document.querySelectorAll('input[name="group_by"]')) {
    radio.addEventListener("change", async () => {
      state.groupBy = radio.value;
      try {
        await loadUsage();
      } catch (error) {
        setStatus(`Could not load: ${error.message}`, "error");
      }
    });
  }

  refresh();
})();
