/* datacheck report viewer.
 *
 * Renders the report.json embedded in the page (script#report-data): recommendations, filters, the balance
 * chart, the 2-D map, one section per check with its findings and galleries, and the annotator's decisions
 * (kept in localStorage under the report id, exported as decisions.json; see docs/decisions-schema.md).
 *
 * Rules: it computes nothing the report does not hold; it never loads anything but thumbs/<sha256>.jpg; it
 * never uses innerHTML (or any HTML parsing) with data: every string from the report becomes a text node or
 * an attribute value set through the DOM.
 */
(function () {
  "use strict";

  const SEVERITY_RANK = { info: 0, warn: 1, fail: 2 };
  const STATUS_RANK = { pass: 0, skipped: 0, warn: 1, fail: 2, error: 3 };
  const ACTIONS = { keep: "Keep", remove: "Remove", relabel: "Relabel", ignore: "Ignore" };
  const PAGE = 20;
  const STRIP = 12;
  const GALLERY = 24;
  const SHA = /^[0-9a-f]{64}$/;
  const SAFE_DIR = /^[A-Za-z0-9_-]+$/;
  const PALETTE = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
    "#17becf", "#393b79", "#e6550d", "#31a354", "#843c39", "#7b4173", "#3182bd", "#fd8d3c", "#74c476",
    "#ad494a", "#a55194",
  ];
  const SVG_NS = "http://www.w3.org/2000/svg";

  const payload = JSON.parse(document.getElementById("report-data").textContent);
  const report = payload.report;
  const thumbDir = SAFE_DIR.test(payload.thumbs.dir) ? payload.thumbs.dir : "thumbs";
  const missingThumbs = new Set(payload.thumbs.missing || []);
  const fmap = report.map || null;
  const rowOf = new Map();
  if (fmap) fmap.path.forEach((p, i) => rowOf.set(p, i));
  const classNames = Object.keys(report.dataset.classes || {});
  const splitNames = Object.keys(report.dataset.splits || {});
  const colourOf = new Map((fmap ? fmap.classes : classNames).map((c, i) => [c, colour(i)]));
  const storageKey = "datacheck-decisions:" + String(report.report_id || "unknown");

  const state = {
    q: "", cls: "", split: "", check: "", severity: "",
    selection: null, // Set of paths selected on the map, or null
    decisions: loadDecisions(),
    tiles: new Map(), // path -> Set of tile nodes on the page
  };
  const sections = []; // {check, list, more, shown}
  let mapView = null;

  // --------------------------------------------------------------------------------------------- DOM

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    setProps(node, props);
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function svg(tag, props, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    setProps(node, props);
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function setProps(node, props) {
    if (!props) return;
    for (const [key, value] of Object.entries(props)) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.setAttribute("class", value);
      else if (key === "text") node.textContent = String(value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
  }

  function colour(i) {
    return i < PALETTE.length ? PALETTE[i] : `hsl(${(i * 137.508) % 360}, 62%, 48%)`;
  }

  function fmt(value) {
    if (typeof value === "number") return Number.isInteger(value) ? value.toLocaleString("en") : String(+value.toFixed(3));
    if (value === null || value === undefined) return "–";
    if (Array.isArray(value)) return value.map(fmt).join(", ");
    if (typeof value === "object") return JSON.stringify(value);
    return String(value);
  }

  function plural(n, word) {
    return `${n.toLocaleString("en")} ${word}${n === 1 ? "" : "s"}`;
  }

  // -------------------------------------------------------------------------------------------- files

  function fileInfo(path) {
    const row = rowOf.get(path);
    if (row === undefined) return { path, row: -1, sha: null, cls: null, split: null };
    const c = fmap.class[row];
    const s = fmap.split[row];
    return {
      path,
      row,
      sha: typeof fmap.sha256[row] === "string" && SHA.test(fmap.sha256[row]) ? fmap.sha256[row] : null,
      cls: c >= 0 ? fmap.classes[c] : null,
      split: s >= 0 ? fmap.splits[s] : null,
    };
  }

  function thumbSrc(sha) {
    return sha && !missingThumbs.has(sha) ? `${thumbDir}/${sha}.jpg` : null;
  }

  function thumbImage(info) {
    const src = thumbSrc(info.sha);
    if (!src) return el("span", { class: "placeholder", text: "no preview" });
    const img = el("img", { src, alt: info.path, loading: "lazy", decoding: "async" });
    img.addEventListener("error", () => img.replaceWith(el("span", { class: "placeholder", text: "no preview" })));
    return img;
  }

  // ---------------------------------------------------------------------------------------- decisions

  function loadDecisions() {
    try {
      const raw = window.localStorage.getItem(storageKey);
      const parsed = raw ? JSON.parse(raw) : {};
      return parsed && typeof parsed === "object" ? parsed : {};
    } catch (err) {
      console.warn("decisions cannot be stored in this browser:", err && err.message);
      return {};
    }
  }

  function saveDecisions() {
    try {
      window.localStorage.setItem(storageKey, JSON.stringify(state.decisions));
    } catch (err) {
      console.warn("decisions cannot be stored in this browser:", err && err.message);
    }
    updateCounter();
  }

  function decide(path, findingId, action, target) {
    const info = fileInfo(path);
    if (!action) {
      delete state.decisions[path];
    } else {
      const previous = state.decisions[path] || {};
      state.decisions[path] = {
        action,
        target: action === "relabel" ? target : null,
        finding: findingId,
        note: previous.note || "",
        sha256: info.sha,
      };
    }
    saveDecisions();
    refreshTiles(path);
  }

  function setNote(path, findingId, note) {
    const current = state.decisions[path];
    if (current) current.note = note;
    else state.decisions[path] = { action: "keep", target: null, finding: findingId, note, sha256: fileInfo(path).sha };
    saveDecisions();
    refreshTiles(path);
  }

  function refreshTiles(path) {
    for (const tile of state.tiles.get(path) || []) paintTile(tile);
  }

  function exportDecisions() {
    const decisions = Object.keys(state.decisions).sort().map((file) => {
      const d = state.decisions[file];
      return {
        file,
        action: d.action,
        target: d.action === "relabel" ? d.target : null,
        finding: d.finding || null,
        note: d.note || "",
        sha256: d.sha256 || null,
      };
    });
    const doc = {
      schema: "datacheck-decisions",
      version: 1,
      report_id: report.report_id,
      dataset_root: report.dataset.root,
      exported_at: new Date().toISOString(),
      tool: report.tool,
      decisions,
    };
    const blob = new Blob([JSON.stringify(doc, null, 2) + "\n"], { type: "application/json" });
    const url = URL.createObjectURL(blob);
    const link = el("a", { href: url, download: "decisions.json", class: "hidden" });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 5000);
  }

  function updateCounter() {
    const counter = document.getElementById("decided-count");
    if (!counter) return;
    const n = Object.keys(state.decisions).length;
    counter.textContent = n ? `${plural(n, "decision")} (kept in this browser)` : "no decisions yet";
  }

  // -------------------------------------------------------------------------------------------- tiles

  function tile(path, findingId, options = {}) {
    const info = fileInfo(path);
    const wrap = el("span", { class: "thumbwrap" });
    const image = thumbImage(info);
    if (options.region && image.tagName === "IMG") {
      // the region is a fraction of the whole picture: outline it on a box that has the image's exact size
      const box = el("span", { class: "imgbox" }, image, ...regionOverlay(options.region));
      image.addEventListener("load", () => {
        const scale = Math.min(wrap.clientWidth / image.naturalWidth, wrap.clientHeight / image.naturalHeight);
        box.style.width = `${Math.round(image.naturalWidth * scale)}px`;
        box.style.height = `${Math.round(image.naturalHeight * scale)}px`;
      });
      wrap.append(box);
    } else {
      wrap.append(image);
    }
    const meta = [info.cls, info.split].filter(Boolean).join(" · ") || options.meta || "";
    const node = el(
      "figure",
      { class: "tile" + (options.small ? " small" : ""), tabindex: "0", title: path },
      el("span", { class: "state" }),
      wrap,
      el("figcaption", null, el("span", { class: "path", text: path }), meta ? el("span", { class: "meta", text: meta }) : null),
    );
    node.dcPath = path;
    node.dcFinding = findingId;
    if (options.actions !== false) node.append(actionBar(node, options));
    if (!state.tiles.has(path)) state.tiles.set(path, new Set());
    state.tiles.get(path).add(node);
    paintTile(node);
    return node;
  }

  const SYMBOLS = { keep: "✓", remove: "✕", ignore: "–" };
  const KEYS = { keep: "k", remove: "x", ignore: "i" };

  function actionBar(node, options) {
    const bar = el("div", { class: "actions" });
    for (const action of ["keep", "remove", "ignore"]) {
      bar.append(
        el("button", {
          type: "button",
          "data-action": action,
          "aria-label": ACTIONS[action],
          text: options.small ? SYMBOLS[action] : ACTIONS[action],
          title: `${ACTIONS[action]} (${KEYS[action]})`,
          onclick: () => toggle(node, action),
        }),
      );
    }
    if (options.suggest && classNames.includes(options.suggest)) {
      bar.append(
        el("button", {
          type: "button",
          class: "suggest",
          text: `→ ${options.suggest}`,
          title: `Relabel to '${options.suggest}'`,
          onclick: () => decide(node.dcPath, node.dcFinding, "relabel", options.suggest),
        }),
      );
    }
    const select = el("select", { "aria-label": "Relabel to", title: "Relabel to… (r)" }, el("option", { value: "", text: "Relabel…" }));
    const fill = () => {
      if (select.options.length > 1) return;
      for (const name of classNames) select.append(el("option", { value: name, text: name }));
    };
    select.addEventListener("focus", fill);
    select.addEventListener("mousedown", fill);
    select.addEventListener("change", () => {
      if (select.value) decide(node.dcPath, node.dcFinding, "relabel", select.value);
      else decide(node.dcPath, node.dcFinding, null);
      node.focus();
    });
    bar.append(select, el("button", { type: "button", text: options.small ? "✎" : "Note", "aria-label": "Note", title: "Note (n)", onclick: () => openNote(node) }));
    return bar;
  }

  function toggle(node, action) {
    const current = state.decisions[node.dcPath];
    decide(node.dcPath, node.dcFinding, current && current.action === action ? null : action);
  }

  function openNote(node) {
    let input = node.querySelector("input.note");
    if (!input) {
      input = el("input", { class: "note", type: "text", placeholder: "note for this file", "aria-label": "Note" });
      input.value = (state.decisions[node.dcPath] || {}).note || "";
      input.addEventListener("change", () => setNote(node.dcPath, node.dcFinding, input.value));
      input.addEventListener("keydown", (event) => {
        if (event.key === "Enter" || event.key === "Escape") {
          setNote(node.dcPath, node.dcFinding, input.value);
          node.focus();
        }
      });
      node.append(input);
    }
    input.focus();
  }

  function paintTile(node) {
    const d = state.decisions[node.dcPath];
    node.classList.remove("d-keep", "d-remove", "d-relabel", "d-ignore");
    const badge = node.querySelector(".state");
    if (d) {
      node.classList.add("d-" + d.action);
      badge.textContent = d.action === "relabel" ? `→ ${d.target}` : d.action;
    } else {
      badge.textContent = "";
    }
    for (const button of node.querySelectorAll(".actions button[data-action]")) {
      button.classList.toggle("on", Boolean(d && d.action === button.getAttribute("data-action")));
    }
    const select = node.querySelector(".actions select");
    if (select) {
      if (d && d.action === "relabel") {
        if (![...select.options].some((o) => o.value === d.target)) select.append(el("option", { value: d.target, text: d.target }));
        select.value = d.target;
      } else {
        select.value = "";
      }
    }
    const note = node.querySelector("input.note");
    if (note && document.activeElement !== note) note.value = (d && d.note) || "";
    node.title = node.dcPath + (d && d.note ? `\nnote: ${d.note}` : "");
  }

  function gallery(paths, findingId, options = {}) {
    const box = el("div", { class: options.strip ? "gallery strip" : "gallery" });
    const first = paths.slice(0, GALLERY);
    box.append(...first.map((p) => tile(p, findingId, options)));
    if (paths.length > GALLERY) {
      const more = el("button", { type: "button", class: "more-images", text: `Show all ${plural(paths.length, "image")}` });
      more.addEventListener("click", () => {
        more.replaceWith(...paths.slice(GALLERY).map((p) => tile(p, findingId, options)));
      });
      box.append(more);
    }
    return box;
  }

  // -------------------------------------------------------------------------------- shortcut regions

  const ROWS = ["top", "upper", "lower", "bottom"];
  const COLS = ["left", "centre-left", "centre-right", "right"];

  function cueRegion(finding) {
    if (Array.isArray(finding.region) && finding.region.length === 4) return { box: finding.region.map(Number) };
    const cue = String(finding.cue || "");
    if (cue === "border") return { ring: true };
    if (cue === "background") return { centre: [0.25, 0.25, 0.75, 0.75] };
    const match = /^(corner|edge):(.+)$/.exec(cue);
    if (!match) return null;
    const where = match[2];
    for (const r of ROWS) {
      for (const c of COLS) {
        if (where === `${r}-${c}` || where === `${c}-${r}`) {
          const row = ROWS.indexOf(r);
          const col = COLS.indexOf(c);
          return { box: [col / 4, row / 4, (col + 1) / 4, (row + 1) / 4] };
        }
      }
    }
    return null;
  }

  function regionOverlay(region) {
    if (region.ring) return [el("span", { class: "region ring" })];
    const [x0, y0, x1, y1] = region.box || region.centre;
    const style = `left:${x0 * 100}%;top:${y0 * 100}%;width:${(x1 - x0) * 100}%;height:${(y1 - y0) * 100}%`;
    return [el("span", { class: region.centre ? "region centre" : "region", style })];
  }

  // ------------------------------------------------------------------------------------ the toolbar

  function toolbar() {
    const search = el("input", { type: "search", id: "search", placeholder: "Search files, messages… (/)", "aria-label": "Search" });
    search.addEventListener("input", () => {
      state.q = search.value.trim().toLowerCase();
      applyFilters();
    });
    const select = (id, label, values, key) => {
      const node = el("select", { id, "aria-label": label }, el("option", { value: "", text: `all ${label}` }), values.map((v) => el("option", { value: v, text: v })));
      node.addEventListener("change", () => {
        state[key] = node.value;
        applyFilters();
      });
      return node;
    };
    const clear = el("button", { type: "button", id: "clear-selection", class: "hidden", text: "Clear map selection", onclick: () => setSelection(null) });
    const keys = el(
      "details",
      { class: "keys" },
      el("summary", { text: "Keys" }),
      el("div", null, "Tab / ", el("kbd", { text: "←" }), " ", el("kbd", { text: "→" }), " move between images, ",
        el("kbd", { text: "↑" }), " ", el("kbd", { text: "↓" }), " previous / next finding; ",
        el("kbd", { text: "k" }), " keep, ", el("kbd", { text: "x" }), " remove, ", el("kbd", { text: "r" }), " relabel, ",
        el("kbd", { text: "i" }), " ignore, ", el("kbd", { text: "u" }), " undo, ", el("kbd", { text: "n" }), " note, ",
        el("kbd", { text: "/" }), " search."),
    );
    return el(
      "div",
      { class: "toolbar", role: "toolbar" },
      search,
      select("filter-class", "classes", classNames, "cls"),
      splitNames.length ? select("filter-split", "splits", splitNames, "split") : null,
      select("filter-check", "checks", report.checks.map((c) => c.id), "check"),
      select("filter-severity", "severities", ["fail", "warn", "info"], "severity"),
      clear,
      keys,
      el("span", { class: "spacer" }),
      el("span", { class: "decided", id: "decided-count" }),
      el("button", { type: "button", id: "export", class: "primary", text: "Export decisions", onclick: exportDecisions }),
      el("button", {
        type: "button",
        id: "clear-decisions",
        text: "Clear decisions",
        onclick: () => {
          if (window.confirm("Forget every decision made in this browser for this report?")) {
            state.decisions = {};
            saveDecisions();
            for (const path of state.tiles.keys()) refreshTiles(path);
          }
        },
      }),
    );
  }

  // ------------------------------------------------------------------------------- recommendations

  function recommendations() {
    const order = report.checks
      .map((check, i) => ({ check, i }))
      .filter(({ check }) => STATUS_RANK[check.status] > 0 || check.findings.length > 0)
      .sort((a, b) => STATUS_RANK[b.check.status] - STATUS_RANK[a.check.status] || a.i - b.i);
    const items = order.slice(0, 10).map(({ check }) => {
      const groups = new Map();
      for (const f of check.findings) {
        const g = groups.get(f.advice) || { advice: f.advice, count: 0, rank: -1, severity: f.severity };
        g.count += 1;
        if ((SEVERITY_RANK[f.severity] || 0) > g.rank) {
          g.rank = SEVERITY_RANK[f.severity] || 0;
          g.severity = f.severity;
        }
        groups.set(f.advice, g);
      }
      const top = [...groups.values()].sort((a, b) => b.rank - a.rank || b.count - a.count)[0];
      const others = groups.size - 1;
      const badge = STATUS_RANK[check.status] > 0 || !top ? el("span", { class: `badge status-${check.status}`, text: check.status })
        : el("span", { class: `badge sev-${top.severity}`, text: top.severity });
      return el("li", null, badge, " ",
        top ? el("b", { text: top.advice }) : check.summary,
        top ? el("span", { class: "count", text: ` (${plural(top.count, "finding")}${others > 0 ? `, +${others} other advice` : ""})` }) : null,
        " — ", el("a", { href: `#check-${check.id}`, text: check.id }), top ? `: ${check.summary}` : "");
    });
    const box = document.getElementById("recommendations");
    if (!box) return;
    box.append(
      el("h3", { text: "Top recommendations" }),
      items.length ? el("ol", null, items) : el("p", { class: "empty", text: "Nothing to fix: every check passed." }),
    );
  }

  // ---------------------------------------------------------------------------------------- balance

  function balanceChart() {
    const classes = Object.entries(report.dataset.classes || {});
    if (!classes.length) return el("p", { class: "empty", text: "No classes." });
    const splits = splitNames.length ? splitNames : [null];
    const counts = (cls, split) => (split === null ? report.dataset.classes[cls] : (report.dataset.splits[split] || {})[cls] || 0);
    const max = Math.max(1, ...classes.flatMap(([cls]) => splits.map((s) => counts(cls, s))));
    const labelWidth = 150;
    const barWidth = 520;
    const rowHeight = 14 * splits.length + 8;
    const height = classes.length * rowHeight + 30;
    const root = svg("svg", { width: labelWidth + barWidth + 80, height, role: "img", "aria-label": "Images per class and split" });
    classes.forEach(([cls], i) => {
      const y = 20 + i * rowHeight;
      root.append(svg("text", { x: labelWidth - 6, y: y + rowHeight / 2, "text-anchor": "end", "dominant-baseline": "middle" }, cls));
      splits.forEach((split, j) => {
        const n = counts(cls, split);
        const w = Math.max(n ? 1 : 0, (n / max) * barWidth);
        const rect = svg("rect", { x: labelWidth, y: y + j * 14, width: w, height: 12, fill: split === null ? colourOf.get(cls) || colour(i) : colour(j), rx: 2 });
        rect.append(svg("title", null, `${cls}${split ? " · " + split : ""}: ${n}`));
        root.append(rect, svg("text", { x: labelWidth + w + 4, y: y + j * 14 + 10 }, String(n)));
      });
    });
    root.append(svg("line", { x1: labelWidth, x2: labelWidth, y1: 14, y2: height - 8, class: "axis" }));
    const legend = splits[0] === null ? null : el("div", { class: "legend-inline" }, splits.map((s, j) =>
      el("span", { style: "margin-right:12px" }, el("span", { class: "swatch", style: `display:inline-block;width:10px;height:10px;background:${colour(j)};margin-right:4px` }), s)));
    return el("div", { class: "chart", id: "balance-chart" }, legend, root);
  }

  // -------------------------------------------------------------------------------------------- map

  function mapSection() {
    const section = el("section", { class: "panel", id: "map" }, el("h2", { text: "Map of all images" }));
    if (!fmap || fmap.method === "none" || !fmap.x.some((x) => x !== null)) {
      section.append(el("p", { class: "empty", text: "This report has no map (audit ran without one)." }));
      return section;
    }
    const shown = fmap.x.filter((x) => x !== null).length;
    section.append(
      el("p", { class: "muted" },
        `${fmap.method.toUpperCase()} of the image embeddings, coloured by class: images that look alike lie close together. `,
        fmap.subsampled ? `Showing ${shown.toLocaleString("en")} of ${fmap.images.toLocaleString("en")} images (a random sample plus every image a finding names). ` : `${shown.toLocaleString("en")} images. `,
        "Hover a point to see the image; click it to show only its class; drag a rectangle to filter the findings to those images."),
    );
    const canvas = el("canvas", { class: "map", id: "map-canvas", "aria-label": "2-D map of the images" });
    const tooltip = el("div", { class: "tooltip hidden", id: "map-tooltip" });
    const box = el("div", { class: "selection-box hidden" });
    const legend = el("div", { class: "legend", id: "map-legend" });
    const counts = new Map();
    fmap.class.forEach((c) => counts.set(c, (counts.get(c) || 0) + 1));
    fmap.classes.forEach((name, i) => {
      const button = el("button", { type: "button", title: `Show only '${name}'` },
        el("span", { class: "swatch", style: `background:${colourOf.get(name)}` }), `${name} (${(counts.get(i) || 0).toLocaleString("en")})`);
      button.dcClass = name;
      button.addEventListener("click", () => setFilter("cls", state.cls === name ? "" : name));
      legend.append(button);
    });
    section.append(el("div", { class: "mapwrap" }, el("div", { class: "mapbox" }, canvas, tooltip, box), legend));
    mapView = { canvas, tooltip, box, legend, points: [], grid: new Map(), cell: 10, hover: -1 };
    requestAnimationFrame(() => {
      layoutMap();
      drawMap();
    });
    window.addEventListener("resize", () => {
      layoutMap();
      drawMap();
    });
    attachMapEvents();
    return section;
  }

  function layoutMap() {
    const { canvas } = mapView;
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || 800;
    const height = canvas.clientHeight || 560;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    mapView.ratio = ratio;
    mapView.width = width;
    mapView.height = height;
    const pad = 12;
    const points = [];
    const grid = new Map();
    for (let i = 0; i < fmap.x.length; i++) {
      if (fmap.x[i] === null || fmap.y[i] === null) continue;
      const px = pad + fmap.x[i] * (width - 2 * pad);
      const py = pad + (1 - fmap.y[i]) * (height - 2 * pad);
      points.push({ i, px, py });
      const key = `${Math.floor(px / mapView.cell)},${Math.floor(py / mapView.cell)}`;
      if (!grid.has(key)) grid.set(key, []);
      grid.get(key).push(points.length - 1);
    }
    mapView.points = points;
    mapView.grid = grid;
  }

  function pointMatches(i) {
    const cls = fmap.class[i] >= 0 ? fmap.classes[fmap.class[i]] : null;
    const split = fmap.split[i] >= 0 ? fmap.splits[fmap.split[i]] : null;
    if (state.cls && cls !== state.cls) return false;
    if (state.split && split !== state.split) return false;
    if (state.selection && !state.selection.has(fmap.path[i])) return false;
    return true;
  }

  function drawMap() {
    if (!mapView) return;
    const { canvas, ratio, points } = mapView;
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, mapView.width, mapView.height);
    const radius = points.length > 5000 ? 1.6 : points.length > 1000 ? 2.4 : 3.5;
    const dimmed = [];
    const lit = [];
    for (const p of points) (pointMatches(p.i) ? lit : dimmed).push(p);
    ctx.globalAlpha = 0.12;
    ctx.fillStyle = "#8a9099";
    for (const p of dimmed) ctx.fillRect(p.px - radius, p.py - radius, radius * 2, radius * 2);
    ctx.globalAlpha = 0.85;
    for (const p of lit) {
      ctx.fillStyle = colourOf.get(fmap.classes[fmap.class[p.i]]) || "#444";
      ctx.beginPath();
      ctx.arc(p.px, p.py, radius, 0, 2 * Math.PI);
      ctx.fill();
    }
    ctx.globalAlpha = 1;
    if (mapView.hover >= 0) {
      const p = points[mapView.hover];
      ctx.strokeStyle = "#000";
      ctx.lineWidth = 2;
      ctx.beginPath();
      ctx.arc(p.px, p.py, radius + 3, 0, 2 * Math.PI);
      ctx.stroke();
    }
    mapView.canvas.setAttribute("data-points", String(points.length));
    mapView.canvas.setAttribute("data-lit", String(lit.length));
  }

  function nearestPoint(x, y, maxDistance) {
    const { cell, grid, points } = mapView;
    const cx = Math.floor(x / cell);
    const cy = Math.floor(y / cell);
    let best = -1;
    let bestDistance = maxDistance * maxDistance;
    for (let dx = -1; dx <= 1; dx++) {
      for (let dy = -1; dy <= 1; dy++) {
        for (const k of grid.get(`${cx + dx},${cy + dy}`) || []) {
          const p = points[k];
          const d = (p.px - x) ** 2 + (p.py - y) ** 2;
          if (d <= bestDistance) {
            bestDistance = d;
            best = k;
          }
        }
      }
    }
    return best;
  }

  function attachMapEvents() {
    const { canvas, tooltip, box } = mapView;
    let drag = null;
    const local = (event) => {
      const rect = canvas.getBoundingClientRect();
      return [event.clientX - rect.left, event.clientY - rect.top];
    };
    canvas.addEventListener("mousemove", (event) => {
      const [x, y] = local(event);
      if (drag) {
        drag.moved = drag.moved || Math.abs(x - drag.x) + Math.abs(y - drag.y) > 5;
        if (drag.moved) {
          box.classList.remove("hidden");
          box.style.left = `${Math.min(x, drag.x)}px`;
          box.style.top = `${Math.min(y, drag.y)}px`;
          box.style.width = `${Math.abs(x - drag.x)}px`;
          box.style.height = `${Math.abs(y - drag.y)}px`;
        }
        return;
      }
      const k = nearestPoint(x, y, 8);
      if (k !== mapView.hover) {
        mapView.hover = k;
        drawMap();
      }
      if (k < 0) {
        tooltip.classList.add("hidden");
        return;
      }
      showTooltip(mapView.points[k], x, y);
    });
    canvas.addEventListener("mouseleave", () => {
      mapView.hover = -1;
      tooltip.classList.add("hidden");
      drawMap();
    });
    canvas.addEventListener("mousedown", (event) => {
      const [x, y] = local(event);
      drag = { x, y, moved: false };
    });
    window.addEventListener("mouseup", (event) => {
      if (!drag) return;
      const [x, y] = local(event);
      const start = drag;
      drag = null;
      box.classList.add("hidden");
      if (start.moved) {
        const [x0, x1] = [Math.min(x, start.x), Math.max(x, start.x)];
        const [y0, y1] = [Math.min(y, start.y), Math.max(y, start.y)];
        const chosen = new Set(mapView.points.filter((p) => p.px >= x0 && p.px <= x1 && p.py >= y0 && p.py <= y1).map((p) => fmap.path[p.i]));
        setSelection(chosen.size ? chosen : null);
      } else {
        const k = nearestPoint(x, y, 8);
        if (k >= 0) {
          const name = fmap.classes[fmap.class[mapView.points[k].i]];
          setFilter("cls", state.cls === name ? "" : name);
        }
      }
    });
  }

  function showTooltip(point, x, y) {
    const { tooltip, width } = mapView;
    const info = fileInfo(fmap.path[point.i]);
    const src = thumbSrc(info.sha);
    tooltip.replaceChildren(
      src ? el("img", { src, alt: info.path }) : el("span", { class: "placeholder", text: "no preview" }),
      el("div", { class: "tooltip-path", text: info.path }),
      el("div", { class: "muted", text: [info.cls, info.split].filter(Boolean).join(" · ") }),
    );
    tooltip.classList.remove("hidden");
    tooltip.style.left = `${x + 16 + 240 > width ? x - 250 : x + 16}px`;
    tooltip.style.top = `${Math.max(0, y - 20)}px`;
  }

  function setSelection(selection) {
    state.selection = selection;
    document.getElementById("clear-selection").classList.toggle("hidden", !selection);
    applyFilters();
  }

  function setFilter(key, value) {
    state[key] = value;
    const ids = { cls: "filter-class", split: "filter-split", check: "filter-check", severity: "filter-severity" };
    const node = document.getElementById(ids[key]);
    if (node) node.value = value;
    applyFilters();
  }

  // ---------------------------------------------------------------------------------- check sections

  function checkSection(check) {
    const section = el("section", { class: "panel check", id: `check-${check.id}` });
    section.append(
      el("div", { class: "section-head" },
        el("h2", { text: check.id }),
        el("span", { class: `badge status-${check.status}`, text: check.status }),
        el("span", { class: "muted", text: `${plural(check.findings.length, "finding")} · ${fmt(check.seconds)} s` })),
      el("p", { text: check.summary }),
    );
    if (view(check).class_chart) section.append(balanceChart());
    const metrics = metricsTable(check.metrics || {});
    if (metrics) section.append(metrics);
    const list = el("div", { class: "findings" });
    const more = el("button", { type: "button", class: "more hidden", text: "Show more" });
    const entry = { check, list, more, shown: PAGE, matching: [] };
    more.addEventListener("click", () => {
      entry.shown += PAGE;
      renderFindings(entry);
    });
    section.append(list, more);
    sections.push(entry);
    return section;
  }

  function metricsTable(metrics) {
    const rows = Object.entries(metrics).filter(([, v]) => v === null || typeof v !== "object" || (Array.isArray(v) && v.length <= 12 && v.every((x) => typeof x !== "object")));
    const nested = Object.entries(metrics).filter(([k]) => !rows.some(([r]) => r === k));
    if (!rows.length && !nested.length) return null;
    const details = el("details", { class: "metrics" }, el("summary", { text: "Metrics" }));
    if (rows.length) details.append(el("table", null, rows.map(([k, v]) => el("tr", null, el("td", { text: k }), el("td", { text: fmt(v) })))));
    for (const [k, v] of nested) details.append(el("div", null, el("span", { class: "muted", text: `${k}: ` }), JSON.stringify(v).slice(0, 2000)));
    return details;
  }

  function findingMatches(check, f) {
    if (state.check && check.id !== state.check) return false;
    if (state.severity && f.severity !== state.severity) return false;
    const files = f.files || [];
    const infos = files.map(fileInfo);
    if (state.cls) {
      const named = [f.class, f.given, f.suggested, f.label, f.nearest_class].concat(Array.isArray(f.classes) ? f.classes : []);
      if (!named.includes(state.cls) && !infos.some((i) => i.cls === state.cls)) return false;
    }
    if (state.split) {
      const named = [f.split].concat(Array.isArray(f.splits) ? f.splits : []);
      if (!named.includes(state.split) && !infos.some((i) => i.split === state.split)) return false;
    }
    if (state.selection && !files.some((p) => state.selection.has(p))) return false;
    if (state.q) {
      const text = [f.kind, f.message, f.advice, ...files].join("\n").toLowerCase();
      if (!text.includes(state.q)) return false;
    }
    return true;
  }

  function renderFindings(entry) {
    const { check, list, more } = entry;
    const start = list.querySelectorAll(":scope > .finding").length;
    const upto = Math.min(entry.shown, entry.matching.length);
    for (let k = start; k < upto; k++) list.append(findingCard(check, entry.matching[k]));
    if (!entry.matching.length) {
      list.replaceChildren(el("p", { class: "empty", text: check.findings.length ? "No findings match the filters." : "No findings." }));
    }
    more.classList.toggle("hidden", upto >= entry.matching.length);
    more.textContent = `Show more (${(entry.matching.length - upto).toLocaleString("en")} left)`;
  }

  function applyFilters() {
    for (const entry of sections) {
      const visible = !state.check || entry.check.id === state.check || view(entry.check).class_chart;
      entry.list.parentElement.classList.toggle("hidden", !visible);
      entry.matching = entry.check.findings.map((f, i) => ({ f, i })).filter(({ f }) => findingMatches(entry.check, f));
      entry.shown = PAGE;
      for (const node of entry.list.querySelectorAll(".tile")) forgetTile(node);
      entry.list.replaceChildren();
      renderFindings(entry);
    }
    if (mapView) {
      for (const button of mapView.legend.children) button.classList.toggle("active", button.dcClass === state.cls);
      drawMap();
    }
  }

  function forgetTile(node) {
    const set = state.tiles.get(node.dcPath);
    if (set) set.delete(node);
  }

  // -------------------------------------------------------------------------------------- findings

  function findingCard(check, { f, i }) {
    const id = `${check.id}/${i}`;
    const card = el("article", { class: `finding sev-${f.severity}`, "data-finding": id });
    card.append(
      el("div", { class: "fhead" }, el("span", { class: `badge sev-${f.severity}`, text: f.severity }), el("span", { text: f.kind }), el("span", { text: `#${id}` })),
      el("p", { class: "message", text: f.message }),
      el("p", { class: "advice", text: f.advice }),
    );
    const render = RENDERERS[view(check).card] || renderGeneric;
    render(card, f, id, check);
    if (view(check).neighbours) for (const path of f.files || []) card.append(neighbourStrip(path));
    if ((f.files || []).length > 1) card.append(bulkActions(f, id));
    return card;
  }

  function bulkActions(f, id) {
    const all = (action) => () => {
      for (const path of f.files) decide(path, id, action);
    };
    return el("div", { class: "bulk" }, "All files of this finding: ",
      el("button", { type: "button", text: "Keep", onclick: all("keep") }), " ",
      el("button", { type: "button", text: "Remove", onclick: all("remove") }), " ",
      el("button", { type: "button", text: "Ignore", onclick: all("ignore") }), " ",
      el("button", { type: "button", text: "Undo", onclick: all(null) }));
  }

  function factsLine(pairs) {
    const parts = pairs.filter(([, v]) => v !== undefined && v !== null && v !== "");
    if (!parts.length) return null;
    return el("p", { class: "facts-line" }, parts.flatMap(([k, v], n) => [n ? " · " : "", `${k} `, el("b", { text: fmt(v) })]));
  }

  const SHOWN_FIELDS = new Set(["kind", "severity", "message", "advice", "files"]);

  function extraTable(f, skip) {
    const rows = Object.entries(f).filter(([k, v]) => !SHOWN_FIELDS.has(k) && !skip.has(k) && (v === null || typeof v !== "object" || (Array.isArray(v) && v.length <= 12)));
    return rows.length ? factsLine(rows) : null;
  }

  function renderGeneric(card, f, id) {
    card.append(extraTable(f, new Set()));
    if ((f.files || []).length) card.append(gallery(f.files, id));
  }

  function renderGroup(card, f, id) {
    card.append(factsLine([["judgement", f.judgement], ["score", f.score], ["similarity", f.similarity], ["splits", f.splits], ["classes", f.classes]]));
    card.append(gallery(f.files || [], id));
  }

  function neighbourStrip(path) {
    const info = fileInfo(path);
    const near = info.row >= 0 && fmap && fmap.neighbours ? fmap.neighbours[String(info.row)] : null;
    if (!near || !near.length) return null;
    return el("div", null, el("div", { class: "strip-title muted", text: "Nearest neighbours (most similar images in the dataset):" }),
      el("div", { class: "gallery strip" }, near.map((row) => tile(fmap.path[row], null, { small: true, actions: false }))));
  }

  function renderLabel(card, f, id) {
    card.append(factsLine([["given", f.given], ["suggested", f.suggested], ["score", f.score]]));
    card.append(gallery(f.files || [], id, { suggest: f.suggested }));
  }

  function renderOutlier(card, f, id) {
    card.append(factsLine([["label", f.label], ["nearest class", f.nearest_class], ["score", f.score], ["distance", f.distance]]));
    card.append(gallery(f.files || [], id));
  }

  function renderQuality(card, f, id) {
    card.append(factsLine([["issue", f.issue], ["score", f.score]]));
    card.append(gallery(f.files || [], id));
  }

  function renderFiles(card, f, id) {
    card.append(factsLine([["reason", f.reason]]));
    card.append(gallery(f.files || [], id));
  }

  function bar(label, value, cls) {
    const v = typeof value === "number" ? Math.max(0, Math.min(1, value)) : 0;
    return el("div", { class: "bar" }, el("span", { class: "label", text: label }),
      el("span", { class: "fill" + (cls ? " " + cls : ""), style: `width:${Math.round(v * 240)}px` }), el("span", { text: fmt(value) }));
  }

  function renderShortcut(card, f, id) {
    if (f.effect) card.append(el("p", { class: "facts-line" }, el("b", { text: "Cue: " }), String(f.cue || ""), " — ", f.effect));
    card.append(el("div", { class: "bars" }, bar("accuracy from the cue", f.accuracy), bar("majority baseline", f.baseline, "baseline")));
    const classes = Array.isArray(f.classes) ? f.classes : [];
    if (f.auc && typeof f.auc === "object") {
      const head = el("tr", null, el("th", { text: "class" }), el("th", { text: "AUC of the cue" }), el("th", { text: "AUC of the object" }),
        f.centre_auc ? el("th", { text: "AUC of the image centre" }) : null);
      const rows = classes.map((c) => el("tr", null, el("td", { text: c }), el("td", { text: fmt(f.auc[c]) }),
        el("td", { text: fmt(f.object_auc ? f.object_auc[c] : null) }), f.centre_auc ? el("td", { text: fmt(f.centre_auc[c]) }) : null));
      card.append(el("table", { class: "auc" }, head, rows));
    }
    if (f.distribution && typeof f.distribution === "object") card.append(distributionChart(f.distribution, String(f.cue || "cue")));
    const region = cueRegion(f);
    if ((f.files || []).length) {
      card.append(el("div", { class: "strip-title muted", text: region ? "Typical images (the cue's region is outlined):" : "Typical images:" }));
      card.append(gallery(f.files, id, { region }));
    }
  }

  function distributionChart(dist, cue) {
    // {"edges": [e0..ek], "classes": {"cat": [c1..ck], ...}}: per-class histograms of the cue's values.
    const edges = Array.isArray(dist.edges) ? dist.edges : null;
    const entries = Object.entries(dist.classes || {}).filter(([, v]) => Array.isArray(v));
    if (!entries.length) return null;
    const bins = entries[0][1].length;
    const width = 320;
    const height = 70;
    const root = el("div", { class: "chart" }, el("div", { class: "strip-title muted", text: `Distribution of ${cue} per class:` }));
    const plot = svg("svg", { width: width + 140, height: entries.length * (height + 8), role: "img", "aria-label": `distribution of ${cue}` });
    entries.forEach(([name, counts], row) => {
      const total = counts.reduce((a, b) => a + (Number(b) || 0), 0) || 1;
      const peak = Math.max(...counts.map((c) => (Number(c) || 0) / total), 1e-9);
      const y0 = row * (height + 8);
      plot.append(svg("text", { x: 0, y: y0 + height / 2 }, name));
      counts.forEach((c, k) => {
        const h = ((Number(c) || 0) / total / peak) * (height - 10);
        plot.append(svg("rect", { x: 120 + (k * width) / bins, y: y0 + height - h, width: Math.max(1, width / bins - 1), height: h, fill: colourOf.get(name) || colour(row) }));
      });
      if (edges) {
        plot.append(svg("text", { x: 120, y: y0 + height + 6, "font-size": "9" }, fmt(edges[0])),
          svg("text", { x: 120 + width, y: y0 + height + 6, "text-anchor": "end", "font-size": "9" }, fmt(edges[edges.length - 1])));
      }
    });
    root.append(plot);
    return root;
  }

  function renderSplit(card, f, id) {
    if (f.kind === "split" && Array.isArray(f.clusters)) {
      card.append(factsLine([["class", f.class], ["separation", f.score], ["groups", f.clusters.length]]));
      f.clusters.forEach((cluster, n) => {
        const files = Array.isArray(cluster.files) ? cluster.files.slice(0, STRIP) : [];
        card.append(
          el("div", { class: "strip-title" }, el("b", { text: cluster.name || `group ${n + 1}` }), ` — ${plural(Number(cluster.size) || files.length, "image")}`),
          gallery(files, id, { strip: true, small: true }),
        );
      });
      return;
    }
    card.append(factsLine([["classes", f.classes], ["score", f.score]]));
    if ((f.files || []).length) card.append(gallery(f.files, id));
  }

  // Finding cards by the name a check declares (checks.base.ReportView.card, report.json checks[].view).
  const RENDERERS = {
    generic: renderGeneric,
    group: renderGroup,
    label: renderLabel,
    outlier: renderOutlier,
    quality: renderQuality,
    file: renderFiles,
    shortcut: renderShortcut,
    clusters: renderSplit,
  };

  function view(check) {
    return check.view || { card: "generic", neighbours: false, class_chart: false };
  }

  // ------------------------------------------------------------------------------------- keyboard

  function visibleTiles() {
    return [...document.querySelectorAll(".findings .tile")].filter((t) => t.offsetParent !== null);
  }

  function moveFocus(from, step, byFinding) {
    const tiles = visibleTiles();
    const at = tiles.indexOf(from);
    if (at < 0) return;
    if (!byFinding) {
      const next = tiles[at + step];
      if (next) next.focus();
      return;
    }
    const card = from.closest(".finding");
    let k = at;
    while (tiles[k] && tiles[k].closest(".finding") === card) k += step;
    if (step < 0 && tiles[k]) {
      const prevCard = tiles[k].closest(".finding");
      while (tiles[k - 1] && tiles[k - 1].closest(".finding") === prevCard) k -= 1;
    }
    if (tiles[k]) tiles[k].focus();
  }

  function onKey(event) {
    const target = event.target;
    const typing = target instanceof HTMLInputElement || target instanceof HTMLSelectElement || target instanceof HTMLTextAreaElement;
    if (typing) {
      if (event.key === "Escape") target.blur();
      return;
    }
    if (event.key === "/" && !event.ctrlKey && !event.metaKey) {
      event.preventDefault();
      document.getElementById("search").focus();
      return;
    }
    const node = target instanceof Element ? target.closest(".tile") : null;
    if (!node || event.ctrlKey || event.metaKey || event.altKey) return;
    const keys = {
      ArrowRight: () => moveFocus(node, 1, false),
      ArrowLeft: () => moveFocus(node, -1, false),
      ArrowDown: () => moveFocus(node, 1, true),
      ArrowUp: () => moveFocus(node, -1, true),
      k: () => decideAndAdvance(node, "keep"),
      x: () => decideAndAdvance(node, "remove"),
      Delete: () => decideAndAdvance(node, "remove"),
      i: () => decideAndAdvance(node, "ignore"),
      u: () => decide(node.dcPath, node.dcFinding, null),
      n: () => node.dcFinding !== null && openNote(node),
      r: () => {
        const select = node.querySelector(".actions select");
        if (select) select.focus();
      },
    };
    const handler = keys[event.key];
    if (handler) {
      event.preventDefault();
      handler();
    }
  }

  function decideAndAdvance(node, action) {
    if (node.dcFinding === null) return;
    decide(node.dcPath, node.dcFinding, action);
    moveFocus(node, 1, false);
  }

  // ---------------------------------------------------------------------------------------- start

  function start() {
    const app = document.getElementById("app");
    app.before(toolbar());
    recommendations();
    app.append(mapSection());
    for (const check of report.checks) app.append(checkSection(check));
    document.addEventListener("keydown", onKey);
    updateCounter();
    applyFilters();
    document.documentElement.setAttribute("data-ready", "true");
  }

  start();
})();
