// The live page of `unitgen board CONF --serve ADDR:PORT` (unitgen/boardpage.py).
// Everything from the conf and the network is put into the page as text
// (textContent, setAttribute of numbers and classes we choose), never as markup.
"use strict";
(function () {
  const STATES = ["ready", "down", "waiting", "root-cause", "unknown"];
  const SVGNS = "http://www.w3.org/2000/svg";
  const INTERVAL_MS = 1000;
  // A fleet of thousands stays usable: what is not ready first, the rest counted.
  const TIMELINE_ROWS = 300;
  const TABLE_ROWS = 500;
  const ROOT_ROWS = 100;
  const GRAPH_NODES = 2000;
  const RANK = { "root-cause": 0, "down": 1, "waiting": 2, "unknown": 3, "ready": 4 };
  let graphMode = null;  // "dot" (Graphviz's SVG from /graph.svg) or "builtin"
  let builtinKey = null;
  let lastDoc = null;

  const $ = (id) => document.getElementById(id);

  function hex(text) {
    return Array.from(new TextEncoder().encode(String(text)), (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVGNS, tag);
    for (const key of Object.keys(attrs || {})) node.setAttribute(key, String(attrs[key]));
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function stateClass(state) {
    return "st-" + (STATES.includes(state) ? state : "unknown");
  }

  function num(value) {
    return typeof value === "number" && isFinite(value) ? value : null;
  }

  function duration(seconds) {
    seconds = num(seconds);
    if (seconds === null) return "–";
    if (seconds < 0) seconds = 0;
    if (seconds < 10) return seconds.toFixed(1) + " s";
    if (seconds < 60) return Math.round(seconds) + " s";
    const s = Math.round(seconds);
    if (s < 3600) return Math.floor(s / 60) + " min " + String(s % 60).padStart(2, "0") + " s";
    return Math.floor(s / 3600) + " h " + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + " min";
  }

  function clock(unix) {
    unix = num(unix);
    if (unix === null) return "–";
    return new Date(unix * 1000).toLocaleTimeString([], { hour12: false });
  }

  // -- the graph ---------------------------------------------------------

  function sanitize(root) {
    // Defence in depth (the Content-Security-Policy already forbids scripts
    // and inline handlers): keep nothing active of the SVG.
    for (const bad of root.querySelectorAll("script, foreignObject, iframe, a, style")) {
      if (bad.localName === "a") bad.replaceWith(...bad.childNodes); else bad.remove();
    }
    for (const node of [root, ...root.querySelectorAll("*")]) {
      for (const attr of Array.from(node.attributes)) {
        const name = attr.name.toLowerCase();
        if (name.startsWith("on") || name.endsWith("href") || name === "style") node.removeAttribute(attr.name);
      }
    }
  }

  async function loadGraph() {
    try {
      const response = await fetch("graph.svg", { cache: "no-store" });
      if (response.status === 503) setTimeout(loadGraph, 3000);  // still laying out: ours meanwhile
      if (response.ok) {
        const parsed = new DOMParser().parseFromString(await response.text(), "image/svg+xml");
        const root = parsed.documentElement;
        if (root.localName === "svg" && !parsed.querySelector("parsererror")) {
          sanitize(root);
          // Scale down to fit, never up beyond dot's own size (its width is in points).
          const natural = parseFloat(root.getAttribute("width") || "");
          root.removeAttribute("width");
          root.removeAttribute("height");
          const drawing = document.importNode(root, true);
          if (natural > 0) drawing.style.maxWidth = `${Math.round(natural * 4 / 3)}px`;
          $("graph").replaceChildren(drawing);
          graphMode = "dot";
          builtinKey = null;
          if (lastDoc) colourGraph(lastDoc);
          $("graph").dataset.layout = "graphviz";
          return;
        }
      }
    } catch (error) {
      // fall through: the built-in layout needs nothing but the JSON
    }
    graphMode = "builtin";
    $("graph").dataset.layout = "builtin";
  }

  // Columns by plan wave, one band per host, an arrow from a service to what it needs.
  function drawBuiltin(doc) {
    const services = doc.services;
    const key = JSON.stringify(services.map((s) => [s.id, s.host, s.wave, s.needs]));
    if (key === builtinKey) return;
    builtinKey = key;
    const W = 150, H = 42, GAPX = 70, GAPY = 12, PAD = 14, LABEL = 22;
    const hosts = (doc.hosts || []).map((h) => h.name);
    for (const s of services) if (!hosts.includes(s.host)) hosts.push(s.host);
    const waves = Math.max(0, ...services.map((s) => num(s.wave) || 0)) + 1;
    const where = new Map();
    const bands = [];
    let y = 0;
    for (const host of hosts) {
      const mine = services.filter((s) => s.host === host);
      if (!mine.length) continue;
      const rows = new Array(waves).fill(0);
      for (const s of mine) {
        const wave = num(s.wave) || 0;
        where.set(s.id, { x: PAD + wave * (W + GAPX), y: y + LABEL + rows[wave] * (H + GAPY), s: s });
        rows[wave] += 1;
      }
      const height = LABEL + Math.max(...rows) * (H + GAPY) + PAD;
      bands.push({ host: host, y: y, height: height });
      y += height + GAPY;
    }
    const width = PAD * 2 + waves * W + (waves - 1) * GAPX;
    const root = svg("svg", { viewBox: `0 0 ${width} ${Math.max(y, 1)}`, role: "img" });
    root.style.maxWidth = `${width}px`;
    const defs = svg("defs");
    const marker = svg("marker", { id: "arrowhead", viewBox: "0 0 10 10", refX: 10, refY: 5,
                                   markerWidth: 8, markerHeight: 8, orient: "auto-start-reverse" });
    marker.append(svg("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrowhead" }));
    defs.append(marker);
    root.append(defs);
    for (const band of bands) {
      const group = svg("g", { class: "cluster", id: "h-" + hex(band.host) });
      group.append(svg("rect", { x: 2, y: band.y, width: width - 4, height: band.height, rx: 6 }));
      group.append(svg("text", { x: 10, y: band.y + 16, class: "host" }, band.host === null ? "" : band.host));
      root.append(group);
    }
    for (const [id, from] of where) {
      for (const need of from.s.needs || []) {
        const to = where.get(need);
        if (!to) continue;
        root.append(svg("path", { class: "edge", "marker-end": "url(#arrowhead)",
          d: `M ${from.x} ${from.y + H / 2} C ${from.x - GAPX / 2} ${from.y + H / 2}, ${to.x + W + GAPX / 2} ${to.y + H / 2}, ${to.x + W} ${to.y + H / 2}` }));
      }
    }
    for (const [id, at] of where) {
      const group = svg("g", { class: "node", id: "u-" + hex(id) });
      group.append(svg("title", {}, id));
      group.append(svg("rect", { x: at.x, y: at.y, width: W, height: H, rx: 6 }));
      group.append(svg("text", { x: at.x + W / 2, y: at.y + 17, "text-anchor": "middle" }, at.s.service));
      group.append(svg("text", { x: at.x + W / 2, y: at.y + 34, "text-anchor": "middle" }, ""));
      root.append(group);
    }
    $("graph").replaceChildren(root);
  }

  function colourGraph(doc) {
    if (graphMode === "builtin") {
      if (doc.services.length > GRAPH_NODES) {
        if (builtinKey !== "too many") {
          builtinKey = "too many";
          $("graph").replaceChildren(el("p", null, `${doc.services.length} services: too many to draw here; ` +
                                                   "the tables below list those not ready first."));
        }
        return;
      }
      drawBuiltin(doc);
    }
    for (const s of doc.services) {
      const node = document.getElementById("u-" + hex(s.id));
      if (!node) continue;
      node.setAttribute("class", "node " + stateClass(s.state));
      node.setAttribute("data-state", String(s.state));
      const texts = node.querySelectorAll("text");
      if (texts.length > 1) texts[texts.length - 1].textContent = String(s.state);
      const title = node.querySelector("title");
      if (title) title.textContent = s.id + ": " + s.state + (s.detail ? " (" + s.detail + ")" : "");
    }
  }

  // -- the rest of the page ---------------------------------------------

  function renderSummary(doc) {
    document.body.dataset.docTime = String(doc.time);
    document.body.dataset.state = doc.all_ready ? "all-ready" : "recovering";
    $("overall").textContent = doc.all_ready ? "all ready" : "recovering";
    $("count").textContent = `${doc.ready} / ${doc.total}`;
    const since = num(doc.down_since);
    const back = Math.max(...doc.services.map((s) => num(s.ready_at) ?? -Infinity));
    if (doc.all_ready && since !== null && back >= since) {
      $("down-label").textContent = "all back after";
      $("down-for").textContent = `${duration(back - since)} (down at ${clock(since)}, all ready at ${clock(back)})`;
    } else {
      $("down-label").textContent = "down for";
      $("down-for").textContent = since === null ? "–" : `${duration(doc.time - since)} (since ${clock(since)})`;
    }
    $("estimate").textContent = doc.all_ready ? "0 s" : duration(doc.estimate_left);
    $("updated").textContent = clock(doc.time);
  }

  function renderRoots(doc, byId) {
    const list = $("root-list");
    const roots = doc.root_causes || [];
    const items = roots.slice(0, ROOT_ROWS).map((id) => {
      const s = byId.get(id) || { id: id, state: "root-cause" };
      const item = el("li", stateClass(s.state));
      item.dataset.id = id;
      item.append(el("strong", null, id));
      const why = [s.check, s.status_line || s.detail].filter(Boolean).join(": ");
      if (why) item.append(" ", el("span", "why", why));
      return item;
    });
    if (roots.length > items.length) items.push(el("li", "more", `and ${roots.length - items.length} more`));
    list.replaceChildren(...items);
    $("no-roots").hidden = items.length > 0;
    $("roots").dataset.count = String(items.length);
  }

  function renderWaves(doc) {
    $("waves").replaceChildren(...(doc.waves || []).map((w) => {
      const item = el("li");
      item.dataset.wave = String(w.wave);
      item.append(el("span", "wave-name", `wave ${w.wave}`));
      const bar = el("progress");
      bar.max = Math.max(1, num(w.total) || 0);
      bar.value = num(w.ready) || 0;
      item.append(bar, el("span", "wave-count", `${w.ready} / ${w.total}`));
      return item;
    }));
  }

  function renderTimeline(doc) {
    const starts = doc.services.map((s) => num(s.since)).filter((t) => t !== null);
    const t0 = num(doc.down_since) ?? Math.min(doc.time, ...starts);
    // Ready before this outage (or before the board's first round: no ready_at) first,
    // then by when each became ready, then what is not ready yet.
    const before = (s) => s.state === "ready" && (num(s.ready_at) === null || num(s.ready_at) < t0);
    const order = (s) => before(s) ? -Infinity : num(s.ready_at) ?? Infinity;
    const services = doc.services.slice().sort((a, b) =>
      (order(a) - order(b)) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const shown = services.slice(0, TIMELINE_ROWS);
    const readyTimes = services.filter((s) => !before(s)).map((s) => num(s.ready_at)).filter((t) => t !== null);
    const t1 = Math.max(doc.time, ...readyTimes);
    const span = Math.max(t1 - t0, 1);
    const LABEL = 190, WIDTH = 900, ROW = 18, TOP = 22;
    const scale = (t) => LABEL + ((t - t0) / span) * (WIDTH - LABEL - 90);
    const root = $("timeline");
    root.setAttribute("viewBox", `0 0 ${WIDTH} ${TOP + shown.length * ROW + 4}`);
    const parts = [];
    const step = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600].find((s) => span / s <= 8) || 7200;
    for (let t = 0; t <= span; t += step) {
      parts.push(svg("line", { x1: scale(t0 + t), x2: scale(t0 + t), y1: 14, y2: TOP + shown.length * ROW, class: "tick" }));
      parts.push(svg("text", { x: scale(t0 + t), y: 11, "text-anchor": "middle", class: "axis" }, "+" + duration(t)));
    }
    shown.forEach((s, i) => {
      const y = TOP + i * ROW;
      const row = svg("g", { class: "row " + stateClass(s.state), "data-id": s.id });
      row.append(svg("text", { x: LABEL - 6, y: y + 12, "text-anchor": "end" }, s.id));
      const readyAt = before(s) ? null : num(s.ready_at);
      const end = before(s) ? t0 : readyAt ?? doc.time;
      row.append(svg("rect", { x: scale(t0), y: y + 3, width: Math.max(scale(end) - scale(t0), 2), height: ROW - 6,
                               class: readyAt === null && !before(s) ? "bar pending" : "bar" }));
      const note = before(s) ? (num(s.ready_at) === null ? "ready when the board started" : `ready since ${clock(s.ready_at)}`) :
        readyAt === null ? String(s.state) : `ready ${clock(readyAt)} (+${duration(readyAt - t0)})`;
      row.append(svg("text", { x: scale(end) + 4, y: y + 12, class: "note" }, note));
      parts.push(row);
    });
    root.replaceChildren(...parts);
    $("timeline-more").textContent = services.length > shown.length ? `and ${services.length - shown.length} more` : "";
  }

  function renderTable(doc) {
    const rank = (s) => RANK[s.state] ?? 3;
    const services = doc.services.length <= TABLE_ROWS ? doc.services :
      doc.services.map((s, i) => [s, i]).sort((a, b) => rank(a[0]) - rank(b[0]) || a[1] - b[1])
        .slice(0, TABLE_ROWS).map((pair) => pair[0]);
    $("rows-more").textContent = doc.services.length > services.length ?
      `and ${doc.services.length - services.length} more, all in board.json` : "";
    $("rows").replaceChildren(...services.map((s) => {
      const row = el("tr", stateClass(s.state));
      row.dataset.id = s.id;
      row.dataset.state = String(s.state);
      const replicas = s.replicas ? `${s.replicas.ready} of ${s.replicas.of}` : "";
      const said = s.status_line ? `${s.status_line} (${s.status_source})` : (s.detail || "");
      const cells = [s.id, s.state, s.wave, duration(doc.time - num(s.since)), clock(s.ready_at),
                     (s.waiting_on || []).join(", "), s.check, said, replicas];
      cells.forEach((value, i) => {
        const cell = el("td", i === 1 ? "state" : null);
        if (i === 1) cell.append(el("span", "badge", value)); else cell.textContent = value === null || value === undefined ? "" : String(value);
        row.append(cell);
      });
      return row;
    }));
  }

  function render(doc) {
    const byId = new Map(doc.services.map((s) => [s.id, s]));
    renderSummary(doc);
    renderRoots(doc, byId);
    colourGraph(doc);
    renderWaves(doc);
    renderTimeline(doc);
    renderTable(doc);
    lastDoc = doc;
    document.body.dataset.renders = String((Number(document.body.dataset.renders) || 0) + 1);
  }

  function setStale(reason) {
    document.body.classList.toggle("stale", reason !== null);
    $("stale").textContent = reason === null ? "" : `no fresh data: ${reason}`;
  }

  async function tick() {
    try {
      const response = await fetch("board.json", { cache: "no-store" });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const doc = await response.json();
      if (!doc || doc.version !== 1 || !Array.isArray(doc.services)) throw new Error("not a board document (version 1)");
      render(doc);
      setStale(null);
    } catch (error) {
      setStale(String(error && error.message ? error.message : error));
    } finally {
      setTimeout(tick, INTERVAL_MS);
    }
  }

  loadGraph().then(tick);
})();
