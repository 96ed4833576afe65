// The admin dashboard: reads GET /api/admin/report (the PostgreSQL archive's figures) with
// the session token and draws the charts as inline SVG. No dependencies, no network but the app.
(() => {
  "use strict";

  const config = JSON.parse(document.getElementById("page-config").textContent);
  const $ = (selector) => document.querySelector(selector);
  const SVG = "http://www.w3.org/2000/svg";
  const SERIES = [
    ["granted", "#10b981"],
    ["spent", "#4f46e5"],
    ["expired", "#f59e0b"],
    ["refunded", "#0ea5e9"],
  ];
  const number = new Intl.NumberFormat("en-US");

  async function sessionToken() {
    if (config.devSignin) {
      const wanted = new URLSearchParams(location.search).get("user");
      const response = await fetch(config.devSigninUrl, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(wanted ? { user: wanted } : {}),
      });
      if (!response.ok) throw new Error(`dev sign-in failed (${response.status})`);
      const session = await response.json();
      $("#user").textContent = session.user_id;
      return session.token;
    }
    if (window.Clerk && window.Clerk.session) return window.Clerk.session.getToken();
    return null;
  }

  function svg(name, attributes, parent) {
    const el = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attributes || {})) el.setAttribute(key, value);
    if (parent) parent.appendChild(el);
    return el;
  }

  function niceMax(value) {
    if (value <= 10) return 10;
    const step = 10 ** Math.floor(Math.log10(value));
    for (const k of [1, 2, 2.5, 5, 10]) if (k * step >= value) return k * step;
    return 10 * step;
  }

  // Grouped bars per day: granted, spent, expired, refunded.
  // The drawing is as wide as its box (text stays its size on a phone).
  function widthOf(selector, fallback) {
    return Math.max(300, Math.round($(selector).clientWidth || fallback));
  }

  function renderDaily(days) {
    const width = widthOf("#daily-chart", 960);
    const height = width < 600 ? 220 : 260;
    const pad = { top: 16, right: 8, bottom: 34, left: 48 };
    const plotW = width - pad.left - pad.right;
    const plotH = height - pad.top - pad.bottom;
    const top = niceMax(Math.max(0, ...days.flatMap((d) => SERIES.map(([k]) => d[k]))));
    const y = (v) => pad.top + plotH - (Math.max(0, v) / top) * plotH;
    const root = svg("svg", {
      viewBox: `0 0 ${width} ${height}`, role: "img",
      "aria-label": `Credits granted, spent, expired and refunded per day, last ${days.length} days`,
    });
    for (const tick of [0, top / 2, top]) {
      svg("line", { x1: pad.left, x2: width - pad.right, y1: y(tick), y2: y(tick), class: tick ? "grid" : "axis" }, root);
      svg("text", { x: pad.left - 6, y: y(tick) + 4, class: "tick", "text-anchor": "end" }, root).textContent = number.format(tick);
    }
    const slot = plotW / days.length;
    const barW = Math.max(1, (slot * 0.8) / SERIES.length);
    days.forEach((day, i) => {
      const group = svg("g", { class: "day", "data-day": day.day }, root);
      for (const [key] of SERIES) group.dataset[key] = String(day[key]);
      svg("title", {}, group).textContent =
        `${day.day}: ` + SERIES.map(([k]) => `${k} ${number.format(day[k])}`).join(", ");
      svg("rect", { x: pad.left + i * slot, y: pad.top, width: slot, height: plotH, class: "hit" }, group);
      SERIES.forEach(([key, color], j) => {
        if (day[key] <= 0) return;
        const x = pad.left + i * slot + slot * 0.1 + j * barW;
        svg("rect", { x, y: y(day[key]), width: barW, height: Math.max(1, y(0) - y(day[key])), fill: color, class: "segment", "data-key": key, "data-value": String(day[key]) }, group);
      });
      const labels = width < 600 ? 5 : 10;
      if (i % Math.ceil(days.length / labels) === 0 || i === days.length - 1) {
        const [, m, d] = day.day.split("-").map(Number);
        svg("text", { x: pad.left + i * slot + slot / 2, y: height - pad.bottom + 16, class: "sublabel", "text-anchor": "middle" }, group).textContent = `${d}/${m}`;
      }
    });
    $("#daily-chart").replaceChildren(root);
    const legend = $("#daily-legend");
    legend.replaceChildren();
    for (const [key, color] of SERIES) {
      const li = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = color;
      const total = days.reduce((sum, d) => sum + d[key], 0);
      const strong = document.createElement("strong");
      strong.textContent = number.format(total);
      strong.dataset.total = key;
      li.append(swatch, `${key} `, strong);
      legend.appendChild(li);
    }
  }

  // Horizontal bars: spend per app and action, largest first.
  function renderSpend(rows) {
    const shown = rows.slice(0, 12);
    const width = widthOf("#spend-chart", 480);
    // Narrow: each label on its own line above its bar; wide: label, then the bar.
    const stacked = width < 520;
    const rowH = stacked ? 40 : 26;
    const labelW = stacked ? 0 : 220;
    const barTop = stacked ? 20 : 4;
    const height = Math.max(1, shown.length) * rowH + 8;
    const top = niceMax(Math.max(0, ...shown.map((r) => r.credits)));
    const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "Spend by app and action" });
    if (!shown.length) {
      svg("text", { x: 8, y: 20, class: "tick" }, root).textContent = "No spend in this period";
    }
    shown.forEach((row, i) => {
      const g = svg("g", { class: "spend-row", "data-app": row.app, "data-action": row.action, "data-credits": String(row.credits) }, root);
      const yTop = 4 + i * rowH;
      svg("text", { x: 0, y: yTop + 14, class: "label" }, g).textContent = `${row.action} · ${row.app}`;
      const w = Math.max(1, ((width - labelW - 60) * Math.max(0, row.credits)) / top);
      svg("rect", { x: labelW, y: yTop + barTop, width: w, height: 14, fill: "#4f46e5", rx: 3 }, g);
      svg("text", { x: labelW + w + 6, y: yTop + barTop + 11, class: "value" }, g).textContent = number.format(row.credits);
    });
    $("#spend-chart").replaceChildren(root);
  }

  function fillTable(selector, rows) {
    const body = $(`${selector} tbody`);
    body.replaceChildren();
    for (const row of rows) {
      const tr = document.createElement("tr");
      tr.dataset.account = row.account;
      const name = document.createElement("td");
      name.textContent = row.account;
      const value = document.createElement("td");
      value.className = "num";
      value.textContent = number.format(row.credits);
      tr.append(name, value);
      body.appendChild(tr);
    }
    if (!rows.length) {
      const tr = document.createElement("tr");
      const td = document.createElement("td");
      td.colSpan = 2;
      td.className = "none";
      td.textContent = "None";
      tr.appendChild(td);
      body.appendChild(tr);
    }
  }

  function render(report) {
    $("#fig-outstanding").textContent = number.format(report.outstanding);
    $("#fig-outstanding").dataset.value = String(report.outstanding);
    $("#fig-expiring").textContent = number.format(report.expiring_30d);
    $("#fig-expiring").dataset.value = String(report.expiring_30d);
    $("#fig-accounts").textContent = number.format(report.accounts);
    $("#fig-purchases").textContent = number.format(report.purchases.count);
    $("#fig-revenue").textContent = Object.entries(report.purchases.revenue)
      .map(([currency, minor]) => `${(minor / 100).toFixed(2)} ${currency}`).join(" · ");
    renderDaily(report.days);
    renderSpend(report.spend);
    fillTable("#top-accounts", report.top_accounts);
    $("#low-threshold").textContent = String(report.low_balance_threshold);
    fillTable("#low-balance", report.low_balance);
  }

  async function load() {
    const status = $("#status");
    try {
      const token = await sessionToken();
      const headers = token ? { Authorization: `Bearer ${token}` } : {};
      const response = await fetch(`/api/admin/report?days=${config.days}`, { headers });
      const data = await response.json().catch(() => ({}));
      if (!response.ok) {
        status.dataset.kind = "error";
        status.textContent = response.status === 403
          ? "This page is for admins only."
          : `The report failed: ${data.message || data.error || response.status}`;
        $("#dashboard").dataset.state = `error-${response.status}`;
        return;
      }
      render(data);
      status.dataset.kind = "ok";
      status.textContent = `From the archive: ${number.format(data.archived_entries)} entries, as of ${new Date(data.generated_at).toLocaleString()}.`;
      $("#dashboard").dataset.state = "ready";
    } catch (error) {
      status.dataset.kind = "error";
      status.textContent = String(error.message || error);
      $("#dashboard").dataset.state = "error";
    }
  }

  load();
})();
