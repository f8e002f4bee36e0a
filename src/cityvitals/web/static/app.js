// cityvitals dashboard: map with drill-down, unit detail, feeds, live updates over SSE.
// Plain browser JavaScript, no build step; plotly.js comes from the installed plotly package.
"use strict";

const API = "/api/v1";
const LEVELS = [
  { zh: "正常", en: "normal", colour: "#2e9d4f" },
  { zh: "关注", en: "attention", colour: "#2f6fd6" },
  { zh: "预警", en: "warning", colour: "#f0a020" },
  { zh: "告警", en: "alarm", colour: "#d7301f" },
];
const NO_DATA = "#c3c8cf";
const BLANK_STYLE = { version: 8, sources: {}, layers: [{ id: "bg", type: "background", paint: { "background-color": "#eef1f4" } }] };
// `cityvitals demo` prints a link with the key in the fragment (never sent to the server):
// keep it like a typed-in key, then drop it from the address bar.
(function keyFromFragment() {
  const m = /(?:^|[#&])key=([^&]+)/.exec(location.hash);
  if (m) {
    localStorage.setItem("cityvitals.key", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
})();
const S = { key: localStorage.getItem("cityvitals.key") || "", me: null, unit: null, at: null, view: null,
            lastEventId: null, liveCount: 0, reloadTimer: null, stream: null, trendIndicator: null };
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));

async function api(path, opts = {}) {
  const headers = Object.assign({ Accept: "application/json" }, opts.headers || {});
  if (S.key) headers.Authorization = "Bearer " + S.key;
  const r = await fetch(API + path, Object.assign({}, opts, { headers }));
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw Object.assign(new Error(body.problem || r.statusText), { status: r.status, body });
  return body;
}
const q = (params) => { const u = new URLSearchParams(); for (const [k, v] of Object.entries(params)) if (v != null) u.set(k, v); return u.toString(); };
const atParam = () => (S.at ? S.at.toISOString() : null);

// ---------------------------------------------------------------- public summary and sign-in
async function loadPublic() {
  try {
    const p = await (await fetch(API + "/public/health")).json();
    if (!p.unit) { $("public").textContent = "尚无数据 No data yet"; return; }
    const lvl = p.health_level ? LEVELS.findIndex((l) => l.en === p.health_level) : -1;
    $("public").innerHTML = `${esc(p.unit.name)} · ` + (p.health != null
      ? `健康指数 Health <b class="lvl-${lvl}">${p.health.toFixed(1)}</b> (${LEVELS[lvl].zh} ${LEVELS[lvl].en})`
      : `健康指数 Health —`) + ` · 近1小时读数 readings/h ${p.readings_1h}`;
  } catch (e) { $("public").textContent = "—"; }
}

async function signIn() {
  if (!S.key) { $("who").textContent = ""; $("logout").hidden = true; return; }
  try {
    S.me = await api("/me");
  } catch (e) {
    $("who").textContent = "密钥无效 Invalid key: " + e.message; S.me = null; return;
  }
  $("who").textContent = `${S.me.name} · ${S.me.role}` + (S.me.area_code ? ` · 辖区 area ${S.me.area_code}` : "");
  $("logout").hidden = false;
  await navigate(S.me.home_unit);
  loadFeeds();
  startStream();
}

// ---------------------------------------------------------------- map and drill-down
async function navigate(code, depth) {
  const t0 = performance.now();
  S.unit = code; S.depth = depth;
  const view = await api("/map?" + q({ unit: code, at: atParam(), depth, format: "compact" }));
  const t1 = performance.now();
  view.geojson = decodeLayer(view.compact);
  delete view.compact;
  S.view = view;
  drawCrumbs(view.path);
  const t2 = performance.now();
  await drawMap(view);
  const t3 = performance.now();
  // arrival_ms: from the response in hand to the map painted (decode, layout, MapLibre tiles drawn)
  S.timing = Object.assign({ fetch_ms: t1 - t0, decode_ms: t2 - t1, plot_ms: t3 - t2, arrival_ms: t3 - t1, units: view.n_units }, S.drawTiming);
  $("map").dataset.renderMs = Math.round(performance.now() - t0);
  loadDetail(view.unit.code);
}

// The map layer comes as columns and integer deltas (see cityvitals.api.geo.compact_geometry):
// rebuild GeoJSON features here, which is a few milliseconds for 40,000 cells.
function decodeLayer(c) {
  const g = c.geometry, xy = g.xy, sc = g.scale, features = [];
  let x = 0, y = 0, k = 0, poly = 0, ring = 0;
  const [ox, oy] = g.origin;
  const names = Object.keys(c.props);
  for (let i = 0; i < c.codes.length; i++) {
    const polys = [];
    for (let p = 0; p < g.parts[i]; p++, poly++) {
      const rings = [];
      for (let r = 0; r < g.rings[poly]; r++, ring++) {
        const n = g.points[ring], pts = new Array(n + 1);
        for (let j = 0; j < n; j++) { x += xy[k++]; y += xy[k++]; pts[j] = [ox + x / sc, oy + y / sc]; }
        pts[n] = pts[0];
        rings.push(pts);
      }
      polys.push(rings);
    }
    if (!polys.length) continue;
    const props = { code: c.codes[i] };
    for (const n of names) props[n] = c.props[n][i];
    features.push({ type: "Feature", id: c.codes[i], properties: props,
      geometry: polys.length === 1 ? { type: "Polygon", coordinates: polys[0] } : { type: "MultiPolygon", coordinates: polys } });
  }
  return { type: "FeatureCollection", features };
}

function mapStyle() {
  if (!S.me || !S.me.tiles) return BLANK_STYLE;
  return { version: 8, sources: { tiles: { type: "raster", tiles: [S.me.tiles], tileSize: 256 } },
    layers: [{ id: "bg", type: "background", paint: { "background-color": "#eef1f4" } }, { id: "tiles", type: "raster", source: "tiles" }] };
}

function drawCrumbs(path) {
  const el = $("crumbs");
  el.innerHTML = "";
  path.forEach((u, i) => {
    if (i) el.insertAdjacentHTML("beforeend", '<span class="sep">›</span>');
    const b = document.createElement("button");
    b.type = "button"; b.dataset.code = u.code; b.textContent = u.name || u.code;
    if (i === path.length - 1) b.setAttribute("aria-current", "page"); else b.onclick = () => navigate(u.code);
    el.appendChild(b);
  });
}

function bbox(fc) {  // plain loops: a recursive walk over 40,625 cells took a tenth of a second
  let x0 = 180, y0 = 90, x1 = -180, y1 = -90;
  for (const f of fc.features) {
    const g = f.geometry, polys = g.type === "Polygon" ? [g.coordinates] : g.coordinates;
    for (const poly of polys) for (const ring of poly) for (const c of ring) {
      if (c[0] < x0) x0 = c[0]; if (c[0] > x1) x1 = c[0]; if (c[1] < y0) y0 = c[1]; if (c[1] > y1) y1 = c[1];
    }
  }
  return [x0, y0, x1, y1];
}

function webglOK() {
  try { const c = document.createElement("canvas"); return !!(c.getContext("webgl2") || c.getContext("webgl")); } catch (e) { return false; }
}

function valueOf(p, by) { return by === "health" ? (p.health_level ?? -1) : p.readings_1h; }

function hoverText(p) {
  return `<b>${esc(p.name || p.code)}</b> (${esc(p.code)})<br>` +
    (p.health != null ? `健康 Health ${p.health} · ${LEVELS[p.health_level].zh} ${LEVELS[p.health_level].en}<br>` : "") +
    `近1小时读数 Readings/h ${p.readings_1h}` + (p.open_alerts ? `<br>告警 Open alerts ${p.open_alerts}` : "");
}

// Above this many units plotly's choroplethmap takes seconds per thousand polygons (20 s for a
// 40,625-cell city). Big layers are drawn on a Canvas 2D overlay over the MapLibre map plotly's
// map subplot owns (MapLibre keeps the background, tiles and camera): one Path2D per colour in
// the layer's own projected coordinates, built once, then every redraw (pan, zoom) is one
// transform and a fill per colour. A MapLibre GeoJSON fill layer was 3-4 s to first paint in
// software WebGL, nearly all of it the worker cutting the source into tiles; the overlay needs
// no tiling. `?layer=geojson` keeps that MapLibre layer, as the baseline `cityvitals bench api` measures.
const BIG_LAYER = 3000;
const BIG_MODE = new URLSearchParams(location.search).get("layer") === "geojson" ? "geojson" : "canvas";
const BIG_SRC = "cv-units", BIG_FILL = "cv-units-fill", BIG_EDGE = "cv-units-edge", BIG_LINE = "cv-units-highlight";

async function drawMap(view) {
  const tp0 = performance.now();
  const fc = view.geojson, by = view.colour_by, props = fc.features.map((f) => f.properties);
  const el = $("map");
  el.dataset.unit = view.unit.code; el.dataset.layerLevel = view.layer_level || ""; el.dataset.colourBy = by;
  const z = props.map((p) => valueOf(p, by));
  const discrete = by === "health";
  const colorscale = discrete
    ? [[0, NO_DATA], [0.2, NO_DATA], [0.2, LEVELS[0].colour], [0.4, LEVELS[0].colour], [0.4, LEVELS[1].colour], [0.6, LEVELS[1].colour],
       [0.6, LEVELS[2].colour], [0.8, LEVELS[2].colour], [0.8, LEVELS[3].colour], [1, LEVELS[3].colour]]
    : [[0, "#f1f5fb"], [1, "#14508c"]];
  const zrange = discrete ? { zmin: -1.5, zmax: 3.5 } : { zmin: 0, zmax: z.reduce((a, v) => Math.max(a, v), 1) };
  const [x0, y0, x1, y1] = fc.features.length ? bbox(fc) : [116, 39, 117, 40];
  const layout = { margin: { l: 0, r: 0, t: 0, b: 0 }, showlegend: false, uirevision: view.unit.code + (S.at ? "@" : "") };
  const big = fc.features.length > BIG_LAYER;
  let traces;
  if (webglOK()) {
    // fit the layer: web-mercator stretches latitude by 1/cos(lat)
    const w = el.clientWidth || 800, h = el.clientHeight || 600, k = 1 / Math.cos(((y0 + y1) / 2) * Math.PI / 180);
    const zoom = Math.min(Math.log2((360 * w) / (512 * Math.max(x1 - x0, 1e-5))), Math.log2((360 * h) / (512 * Math.max((y1 - y0) * k, 1e-5))));
    layout.map = { style: mapStyle(), center: { lon: (x0 + x1) / 2, lat: (y0 + y1) / 2 }, zoom: zoom - 0.35 };
    if (big) {  // an empty trace keeps plotly's map subplot (of the same type as a small layer's: a cheaper update)
      traces = [{ type: "choroplethmap", geojson: { type: "FeatureCollection", features: [] }, locations: [], z: [],
        showscale: false, hoverinfo: "skip" }];
    } else {
      const lines = props.map((p) => (p.code === view.highlight ? 4 : 1));
      traces = [Object.assign({ type: "choroplethmap", geojson: fc, featureidkey: "properties.code", locations: props.map((p) => p.code),
        z, colorscale, showscale: !discrete, text: props.map(hoverText), hoverinfo: "text", marker: { opacity: 0.8, line: { width: lines, color: "#243447" } },
        colorbar: { title: { text: "读数/小时<br>readings/h" } } }, zrange)];
    }
    el.dataset.renderer = big ? (BIG_MODE === "canvas" ? "canvas" : "maplibre") : "map";
  } else {  // no WebGL (old PCs, locked-down browsers): the same polygons as SVG paths
    traces = [];
    const text = props.length > 5000 ? props.map((p) => `${p.name || p.code} (${p.code})`) : props.map(hoverText);
    fc.features.forEach((f, i) => {
      const polys = f.geometry.type === "Polygon" ? [f.geometry.coordinates] : f.geometry.coordinates;
      const xs = [], ys = [];
      polys.forEach((poly) => { poly[0].forEach(([x, y]) => { xs.push(x); ys.push(y); }); xs.push(null); ys.push(null); });
      const t = (z[i] - zrange.zmin) / (zrange.zmax - zrange.zmin);
      traces.push({ type: "scatter", mode: "lines", x: xs, y: ys, fill: "toself", fillcolor: colourAt(colorscale, t),
        line: { color: "#243447", width: props[i].code === view.highlight ? 4 : 1 }, hoveron: "fills", text: text[i], hoverinfo: "text",
        customdata: xs.map(() => props[i].code) });
    });
    Object.assign(layout, { xaxis: { visible: false, range: [x0, x1] }, yaxis: { visible: false, scaleanchor: "x", range: [y0, y1] }, hovermode: "closest" });
    el.dataset.renderer = "svg";
  }
  el.dataset.drawn = ""; S.drawTiming = {};
  const tr0 = performance.now();
  await Plotly.react(el, traces, layout, { displaylogo: false, responsive: true, scrollZoom: true });
  const m = el._fullLayout && el._fullLayout.map && el._fullLayout.map._subplot ? el._fullLayout.map._subplot.map : null;
  if (m) {
    const tr1 = performance.now();
    if (big && BIG_MODE === "canvas") { clearBigLayer(m); await drawOverlayLayer(m, view, by, zrange.zmax); }
    else if (big) { clearOverlay(); await drawBigLayer(m, view, by, zrange.zmax); }
    else { clearOverlay(); clearBigLayer(m); }
    S.drawTiming = Object.assign({ prep_ms: tr0 - tp0, react_ms: tr1 - tr0, layer_ms: performance.now() - tr1 }, S.overlayTiming || {});  // parts of plot_ms
  } else clearOverlay();
  el.dataset.drawn = String(fc.features.length);
  if (!el._cvClick) {
    el.on("plotly_click", (ev) => {
      const pt = ev.points && ev.points[0];
      unitClicked(pt && (pt.location || (pt.customdata && (Array.isArray(pt.customdata) ? pt.customdata[0] : pt.customdata))));
    });
    el._cvClick = true;
  }
  drawLegend(view, zrange.zmax);
}

// The same for a click on a plotly trace and on the big MapLibre layer: drill into the unit.
function unitClicked(code) {
  const f = code && S.view && S.view.geojson.features.find((x) => x.properties.code === code);
  if (!f) return;
  if (f.properties.has_children || code !== S.view.unit.code) navigate(code);  // a click leaves the all-grid view
}

// Hover and click on the big layer, bound while the layer exists (MapLibre reports listeners
// bound to a missing layer as errors on every mouse move).
function hookMap(m) {
  if (m._cvHandlers) return;
  const tip = $("map-tip");
  const h = {
    mousemove: (e) => {
      const p = e.features && e.features[0] && e.features[0].properties;
      if (!p) return;
      m.getCanvas().style.cursor = "pointer";
      tip.innerHTML = hoverText(p);
      tip.style.left = e.point.x + 12 + "px"; tip.style.top = e.point.y + 12 + "px";
      tip.hidden = false;
    },
    mouseleave: () => { m.getCanvas().style.cursor = ""; tip.hidden = true; },
    click: (e) => {
      const p = e.features && e.features[0] && e.features[0].properties;
      tip.hidden = true;
      if (p) unitClicked(p.code);
    },
  };
  for (const [type, fn] of Object.entries(h)) m.on(type, BIG_FILL, fn);
  m._cvHandlers = h;
}

function unhookMap(m) {
  if (!m._cvHandlers) return;
  for (const [type, fn] of Object.entries(m._cvHandlers)) m.off(type, BIG_FILL, fn);
  m._cvHandlers = null;
  m.getCanvas().style.cursor = "";
}

function bigFillColour(by, zmax) {
  if (by === "health") {  // a unit without health (null) takes the fallback colour
    return ["match", ["coalesce", ["get", "health_level"], -1], 0, LEVELS[0].colour, 1, LEVELS[1].colour, 2, LEVELS[2].colour,
      3, LEVELS[3].colour, NO_DATA];
  }
  return ["interpolate", ["linear"], ["coalesce", ["get", "readings_1h"], 0], 0, "#f1f5fb", Math.max(zmax, 1e-6) + 1e-6, "#14508c"];
}

// One source, one fill layer (and a line for the highlighted unit); resolves when MapLibre has
// painted the new data, or after 30 s at the latest so a stuck map never blocks the page.
function drawBigLayer(m, view, by, zmax) {
  const src = m.getSource(BIG_SRC);
  if (src) src.setData(view.geojson);
  // Measured in headless Chromium (software GL): tiles cut at zoom 9 and overscaled (4 tiles for
  // the whole city instead of 9–12, no buffer) and no antialiased outline pass at city zoom make
  // the first paint 2–3× faster; cell borders appear once zoomed in far enough to see them.
  else m.addSource(BIG_SRC, { type: "geojson", data: view.geojson, promoteId: "code", tolerance: 0.2, maxzoom: 9, buffer: 0 });
  if (!m.getLayer(BIG_FILL)) {
    m.addLayer({ id: BIG_FILL, type: "fill", source: BIG_SRC,
      paint: { "fill-color": bigFillColour(by, zmax), "fill-opacity": 0.8, "fill-antialias": false } });
    m.addLayer({ id: BIG_EDGE, type: "line", source: BIG_SRC, minzoom: 12.5, paint: { "line-color": "#243447", "line-width": 0.5 } });
  } else m.setPaintProperty(BIG_FILL, "fill-color", bigFillColour(by, zmax));
  hookMap(m);
  if (!m.getLayer(BIG_LINE)) {
    m.addLayer({ id: BIG_LINE, type: "line", source: BIG_SRC, paint: { "line-color": "#243447", "line-width": 4 },
      filter: ["==", ["get", "code"], view.highlight || ""] });
  } else m.setFilter(BIG_LINE, ["==", ["get", "code"], view.highlight || ""]);
  return new Promise((ok) => {  // registered after the update, so an earlier idle frame cannot resolve it
    const timer = setTimeout(ok, 30000);
    const done = () => { clearTimeout(timer); m.off("idle", done); ok(); };
    m.on("idle", done);
    m.triggerRepaint();
  });
}

function clearBigLayer(m) {
  unhookMap(m);
  for (const id of [BIG_LINE, BIG_EDGE, BIG_FILL]) if (m.getLayer(id)) m.removeLayer(id);
  if (m.getSource(BIG_SRC)) m.removeSource(BIG_SRC);
  $("map-tip").hidden = true;
}

// Units the map has drawn on screen, for tests and the benchmark: cells of the overlay whose
// polygon lies (partly) in the view at the last redraw, or distinct codes MapLibre reports.
function renderedUnits() {
  if (S.overlay) return S.overlay.visible;
  const el = $("map");
  const m = el._fullLayout && el._fullLayout.map && el._fullLayout.map._subplot ? el._fullLayout.map._subplot.map : null;
  if (!m || !m.getLayer(BIG_FILL)) return null;
  return new Set(m.queryRenderedFeatures({ layers: [BIG_FILL] }).map((f) => f.properties.code)).size;
}

// ---------------------------------------------------------------- the canvas overlay for big layers
const OV_EXTENT = 1e6;  // the layer spans this many overlay units (integers in the path: ~0.05 m steps)
const OV_GRID = 128;    // hit-test buckets per side
const unmercator = (x, y) => [x * 360 - 180, (360 / Math.PI) * Math.atan(Math.exp(Math.PI * (1 - 2 * y))) - 90];
const nextPaint = () => new Promise((ok) => requestAnimationFrame(() => setTimeout(ok, 0)));

// Readings per hour: 32 steps from pale to dark blue (cells are batched by colour, so few colours).
const READINGS_PALETTE = Array.from({ length: 32 }, (_, i) => {
  const a = [0xf1, 0xf5, 0xfb], b = [0x14, 0x50, 0x8c], t = i / 31;
  return "rgb(" + a.map((v, k) => Math.round(v + (b[k] - v) * t)).join(",") + ")";
});
const HEALTH_PALETTE = [NO_DATA, ...LEVELS.map((l) => l.colour)];

function colourIndex(p, by, zmax) {
  if (by === "health") return p.health_level == null ? 0 : p.health_level + 1;
  return Math.round(Math.min(1, Math.max(0, (p.readings_1h || 0) / Math.max(zmax, 1e-6))) * 31);
}

// The cell's colour on the overlay: its level's colour, or its step of readings.
function cellColour(p, by, zmax) {
  return (by === "health" ? HEALTH_PALETTE : READINGS_PALETTE)[colourIndex(p, by, zmax)];
}

// Projected rings, one path per colour, bounding boxes and a bucket grid for hit tests, built
// once per layer. Each colour's path is made from one SVG path string: Chromium's Path2D grows
// in quadratic time when built with moveTo/lineTo calls (45 s for 40,625 cells), a string is parsed
// in linear time.
function buildOverlay(view, by, zmax) {
  const feats = view.geojson.features, n = feats.length;
  // pass 1: web-mercator x, y of every ring point into flat arrays (no per-point allocations:
  // the garbage collector was most of the time), ring and cell offsets, the layer's bounds
  const mx = [], my = [], ringStart = [0], cellRing = new Int32Array(n + 1), own = [];
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  const R = Math.PI / 180;
  for (let i = 0; i < n; i++) {
    const g = feats[i].geometry, polys = g.type === "Polygon" ? [g.coordinates] : g.coordinates;
    for (const poly of polys) {
      for (const ring of poly) {
        for (let j = 0, m = ring.length - 1; j < m; j++) {  // GeoJSON repeats the first point last
          const x = (ring[j][0] + 180) / 360, y = 0.5 - Math.log(Math.tan(Math.PI / 4 + ring[j][1] * R / 2)) / (2 * Math.PI);
          mx.push(x); my.push(y);
          if (x < x0) x0 = x; if (x > x1) x1 = x; if (y < y0) y0 = y; if (y > y1) y1 = y;
        }
        ringStart.push(mx.length);
      }
    }
    cellRing[i + 1] = ringStart.length - 1;
  }
  // pass 2: overlay units, one SVG path string per colour, boxes
  const k = OV_EXTENT / Math.max(x1 - x0, y1 - y0, 1e-12), xy = new Float64Array(2 * mx.length);
  const palette = by === "health" ? HEALTH_PALETTE : READINGS_PALETTE, svg = palette.map(() => []);
  const box = new Float64Array(4 * n), code = new Array(n);
  let cellSize = 0;
  for (let i = 0; i < n; i++) {
    const p = feats[i].properties, parts = svg[colourIndex(p, by, zmax)];
    let bx0 = Infinity, by0 = Infinity, bx1 = -Infinity, by1 = -Infinity;
    for (let r = cellRing[i]; r < cellRing[i + 1]; r++) {
      let d = "M";
      for (let j = ringStart[r]; j < ringStart[r + 1]; j++) {
        const lx = (mx[j] - x0) * k, ly = (my[j] - y0) * k;
        xy[2 * j] = lx; xy[2 * j + 1] = ly;
        if (lx < bx0) bx0 = lx; if (lx > bx1) bx1 = lx; if (ly < by0) by0 = ly; if (ly > by1) by1 = ly;
        d += (j > ringStart[r] ? "L" : "") + Math.round(lx) + " " + Math.round(ly);
      }
      d += "Z";
      parts.push(d);
      if (p.code === view.highlight) own.push(d);
    }
    code[i] = p.code;
    box[4 * i] = bx0; box[4 * i + 1] = by0; box[4 * i + 2] = bx1; box[4 * i + 3] = by1;
    if (cellRing[i + 1] > cellRing[i]) cellSize = Math.max(cellSize, Math.min(bx1 - bx0, by1 - by0));
  }
  const used = palette.map((_, ci) => ci).filter((ci) => svg[ci].length);
  const colours = used.map((ci) => palette[ci]), paths = used.map((ci) => new Path2D(svg[ci].join("")));
  // a cell goes into every bucket its box touches; a hit test then looks at one bucket's cells
  const step = OV_EXTENT / OV_GRID, grid = new Array(OV_GRID * OV_GRID);
  const cl = (v) => Math.max(0, Math.min(OV_GRID - 1, Math.floor(v / step)));
  for (let i = 0; i < n; i++) {
    if (cellRing[i + 1] === cellRing[i]) continue;
    for (let gx = cl(box[4 * i]); gx <= cl(box[4 * i + 2]); gx++)
      for (let gy = cl(box[4 * i + 1]); gy <= cl(box[4 * i + 3]); gy++) (grid[gy * OV_GRID + gx] ||= []).push(i);
  }
  const ll = (lx, ly) => unmercator(x0 + lx / k, y0 + ly / k);
  return { colours, paths, xy, ringStart, cellRing, box, code, highlight: own.length ? new Path2D(own.join("")) : null, grid, step,
           cellSize, n, anchors: [ll(0, 0), ll(OV_EXTENT, 0), ll(0, OV_EXTENT)], visible: 0, last: "" };
}

// Overlay units -> CSS pixels of the map canvas, from where MapLibre puts three anchor points.
function overlayTransform(o, m) {
  const [p0, p1, p2] = o.anchors.map((a) => m.project(a));
  return { a: (p1.x - p0.x) / OV_EXTENT, b: (p1.y - p0.y) / OV_EXTENT, c: (p2.x - p0.x) / OV_EXTENT, d: (p2.y - p0.y) / OV_EXTENT, e: p0.x, f: p0.y };
}

function drawOverlay(o, force) {
  const m = o.m, mc = m.getCanvas(), cv = o.canvas, dpr = window.devicePixelRatio || 1;
  const w = mc.clientWidth, h = mc.clientHeight, t = overlayTransform(o, m);
  const sig = [w, h, dpr, t.a, t.b, t.c, t.d, t.e, t.f].join(",");
  if (!force && sig === o.last) return;
  o.last = sig;
  if (cv.width !== Math.round(w * dpr) || cv.height !== Math.round(h * dpr)) {
    cv.width = Math.round(w * dpr); cv.height = Math.round(h * dpr); cv.style.width = w + "px"; cv.style.height = h + "px";
  }
  const g = cv.getContext("2d");
  g.setTransform(1, 0, 0, 1, 0, 0);
  g.clearRect(0, 0, cv.width, cv.height);
  g.setTransform(dpr * t.a, dpr * t.b, dpr * t.c, dpr * t.d, dpr * t.e, dpr * t.f);
  o.colours.forEach((c, i) => { g.fillStyle = c; g.fill(o.paths[i]); });
  const px = Math.hypot(t.a, t.b);  // CSS pixels per overlay unit
  g.strokeStyle = "#243447";
  if (o.cellSize * px > 10) {  // cell borders once cells are big enough on screen to tell apart
    g.lineWidth = 0.5 / px;
    o.paths.forEach((p) => g.stroke(p));
  }
  if (o.highlight) { g.lineWidth = 4 / px; g.stroke(o.highlight); }
  // cells on screen: boxes that meet the view (the view's corners taken back to overlay units)
  const corners = [[0, 0], [w, 0], [0, h], [w, h]].map(([x, y]) => toOverlay(t, x, y));
  const vx0 = Math.min(...corners.map((c) => c[0])), vx1 = Math.max(...corners.map((c) => c[0]));
  const vy0 = Math.min(...corners.map((c) => c[1])), vy1 = Math.max(...corners.map((c) => c[1]));
  let visible = 0;
  for (let i = 0; i < o.n; i++) {
    const b = 4 * i;
    if (o.cellRing[i + 1] > o.cellRing[i] && o.box[b] <= vx1 && o.box[b + 2] >= vx0 && o.box[b + 1] <= vy1 && o.box[b + 3] >= vy0) visible++;
  }
  o.visible = visible;
}

function toOverlay(t, x, y) {
  const det = t.a * t.d - t.b * t.c, dx = x - t.e, dy = y - t.f;
  return [(t.d * dx - t.c * dy) / det, (t.a * dy - t.b * dx) / det];
}

// The cell under a map point (CSS pixels), or -1: bucket lookup, box test, then even-odd ray casting.
function overlayHit(o, point) {
  const [x, y] = toOverlay(overlayTransform(o, o.m), point.x, point.y);
  const gx = Math.floor(x / o.step), gy = Math.floor(y / o.step);
  if (gx < 0 || gy < 0 || gx >= OV_GRID || gy >= OV_GRID) return -1;
  for (const i of o.grid[gy * OV_GRID + gx] || []) {
    const b = 4 * i;
    if (x < o.box[b] || x > o.box[b + 2] || y < o.box[b + 1] || y > o.box[b + 3]) continue;
    let inside = false;
    for (let r = o.cellRing[i]; r < o.cellRing[i + 1]; r++) {
      const s0 = o.ringStart[r], s1 = o.ringStart[r + 1], xy = o.xy;
      for (let j = s0, q = s1 - 1; j < s1; q = j++) {
        const xj = xy[2 * j], yj = xy[2 * j + 1], xq = xy[2 * q], yq = xy[2 * q + 1];
        if ((yj > y) !== (yq > y) && x < ((xq - xj) * (y - yj)) / (yq - yj) + xj) inside = !inside;
      }
    }
    if (inside) return i;
  }
  return -1;
}

// Draw a big layer on the overlay; resolves once the frame with it is painted.
async function drawOverlayLayer(m, view, by, zmax) {
  const tb0 = performance.now();
  clearOverlay();
  const o = buildOverlay(view, by, zmax);
  o.m = m;
  o.canvas = document.createElement("canvas");
  o.canvas.className = "cv-overlay";
  m.getCanvasContainer().appendChild(o.canvas);
  // the affine overlay transform holds for a flat map: no rotating or tilting while it is shown
  m.dragRotate.disable(); m.touchZoomRotate.disableRotation(); m.keyboard.disableRotation();
  if (m.getBearing() || m.getPitch()) m.jumpTo({ bearing: 0, pitch: 0 });
  const tip = $("map-tip");
  o.handlers = {
    render: () => drawOverlay(o),
    resize: () => drawOverlay(o, true),
    mousemove: (e) => {
      const i = overlayHit(o, e.point);
      if (i < 0) { m.getCanvas().style.cursor = ""; tip.hidden = true; return; }
      m.getCanvas().style.cursor = "pointer";
      tip.innerHTML = hoverText(view.geojson.features[i].properties);
      tip.style.left = e.point.x + 12 + "px"; tip.style.top = e.point.y + 12 + "px";
      tip.hidden = false;
    },
    mouseout: () => { m.getCanvas().style.cursor = ""; tip.hidden = true; },
    click: (e) => {
      const i = overlayHit(o, e.point);
      tip.hidden = true;
      if (i >= 0) unitClicked(o.code[i]);
    },
  };
  for (const [type, fn] of Object.entries(o.handlers)) m.on(type, fn);
  S.overlay = o;
  const tb1 = performance.now();
  drawOverlay(o, true);
  const tb2 = performance.now();
  m.triggerRepaint();
  await nextPaint();  // the frame with every cell, at the camera plotly just set
  const tb3 = performance.now();
  const timing = S.overlayTiming = { build_ms: tb1 - tb0, draw_ms: tb2 - tb1, frame_ms: tb3 - tb2 };
  // MapLibre settles its own sources after that frame (plotly's empty trace, tiles if configured):
  // not part of the cells being painted, but timed for the benchmark (at most 30 s)
  S.mapIdle = false;
  new Promise((ok) => {
    const timer = setTimeout(ok, 30000);
    const done = () => { clearTimeout(timer); m.off("idle", done); ok(); };
    m.on("idle", done);
    m.triggerRepaint();
  }).then(() => { timing.idle_after_ms = performance.now() - tb3; S.mapIdle = true; });
}

function clearOverlay() {
  const o = S.overlay;
  S.overlayTiming = null;
  if (!o) return;
  for (const [type, fn] of Object.entries(o.handlers)) o.m.off(type, fn);
  o.canvas.remove();
  o.m.getCanvas().style.cursor = "";
  $("map-tip").hidden = true;
  S.overlay = null;
}

function colourAt(scale, t) {
  t = Math.max(0, Math.min(1, t));
  for (let i = scale.length - 1; i >= 0; i--) if (t >= scale[i][0]) return scale[i][1];
  return scale[0][1];
}

function drawLegend(view, zmax) {
  const when = view.colour_by === "health" ? `健康等级 Health level @ ${esc(view.health_at)}` : "近1小时读数 Readings in the last hour (尚无体征 no vital signs yet)";
  $("legend").innerHTML = view.colour_by === "health"
    ? LEVELS.map((l, i) => `<span><i style="background:${l.colour}"></i>${l.zh} ${l.en}</span>`).join("") + `<span><i style="background:${NO_DATA}"></i>无数据 no data</span>`
    : (view.n_units > BIG_LAYER ? `<span><i style="background:#f1f5fb;border:1px solid #ccd"></i>0</span>`
      + `<span><i style="background:#14508c"></i>${Math.round(zmax)} 读数/小时 readings/h</span>` : "");
  $("map-note").innerHTML = `${when} · ${view.n_units} 个单元 units (${esc(view.layer_level)}) · 点击下钻 click to drill down`;
}

// ---------------------------------------------------------------- unit detail and trends
async function loadDetail(code) {
  const u = S.view.path[S.view.path.length - 1];
  const props = S.view.geojson.features.map((f) => f.properties);
  // a grid cell is shown among its siblings: its own count, not the layer's sum
  const own = S.view.highlight === code ? props.find((p) => p.code === code) : null;
  const total = own ? own.readings_1h : props.reduce((a, p) => a + p.readings_1h, 0);
  let html = `<div><b>${esc(u.name)}</b> <small>${esc(u.code)} · ${esc(u.level)}</small></div>`;
  let health = null;
  if (S.me.features.signs) {
    try { health = await api("/health?" + q({ unit: code, at: atParam() })); } catch (e) { health = null; }
  }
  if (health) {
    html += `<div class="big lvl-${health.level}">${health.index.toFixed(1)}</div><div>健康指数 Health index · ${LEVELS[health.level].zh} ${LEVELS[health.level].en}</div>`;
    html += `<div>分类 Categories: ${Object.entries(health.categories).map(([c, v]) => `${esc(c)} ${v.toFixed(0)}`).join(" · ")}</div>`;
    if (health.explain.length) {
      html += `<p>为何不是100 Why not 100:</p><table class="explain">` + health.explain.slice(0, 8).map((r) =>
        `<tr><td>${esc(r.indicator)}</td><td class="lvl-${LEVELS.findIndex((l) => l.en === r.level)}">${esc(r.level)}</td><td>${Number(r.value).toPrecision(3)}</td><td>−${r.points.toFixed(1)}</td></tr>`).join("") + "</table>";
    }
  } else {
    html += `<div>健康指数 Health: — (尚未计算 not computed)</div>`;
  }
  html += `<div>近1小时读数 Readings in the last hour: <b id="readings-1h">${total}</b></div>`;
  $("detail-body").innerHTML = html;
  loadTrend(code);
}

async function loadTrend(code) {
  const end = S.at || new Date(S.view.at);
  let traces = [], title = "";
  $("trend-pick").innerHTML = "";
  if (S.me.features.signs) {
    try {
      const lv = await api("/levels?" + q({ unit: code, at: atParam() }));
      if (lv.items.length) {
        const pick = lv.items.find((i) => i.indicator === S.trendIndicator) || lv.items[0];
        S.trendIndicator = pick.indicator;
        lv.items.slice(0, 12).forEach((i) => {
          const b = document.createElement("button");
          b.className = "lvl-" + LEVELS.findIndex((l) => l.en === i.level);
          b.textContent = `${i.name_zh || ""} ${i.name_en}`; b.title = `${i.value} ${i.unit} (${i.level})`;
          b.onclick = () => { S.trendIndicator = i.indicator; loadTrend(code); };
          $("trend-pick").appendChild(b);
        });
        const s = await api(`/indicators/${encodeURIComponent(pick.indicator)}/values?` + q({ unit: code, end: end.toISOString() }));
        if (s.items.length) traces = [{ type: "scatter", mode: "lines+markers", x: s.items.map((r) => r.window_end), y: s.items.map((r) => r.value),
          marker: { color: s.items.map((r) => LEVELS.find((l) => l.en === r.level).colour) }, name: pick.indicator }];
        title = `${pick.name_zh || ""} ${pick.name_en} (${pick.unit})`;
      }
    } catch (e) { traces = []; }
  }
  if (!traces.length) {  // no indicators yet: the unit's readings, 5-minute means per sensor
    const start = new Date(end.getTime() - 6 * 3600e3);
    try {
      const r = await api("/readings?" + q({ unit: code, start: start.toISOString(), end: end.toISOString(), interval: "PT5M", limit: 1000 }));
      const by = {};
      r.items.forEach((x) => { (by[x.sensor_id] = by[x.sensor_id] || { x: [], y: [] }).x.push(x.bucket); by[x.sensor_id].y.push(x.mean); });
      traces = Object.entries(by).slice(0, 8).map(([k, v]) => ({ type: "scatter", mode: "lines", name: k, x: v.x, y: v.y }));
      title = "读数 Readings (5 min mean)";
    } catch (e) { traces = []; }
  }
  Plotly.react($("trend"), traces, { margin: { l: 40, r: 8, t: 24, b: 30 }, title: { text: title, font: { size: 12 } }, showlegend: traces.length > 1, legend: { font: { size: 10 } } },
    { displaylogo: false, responsive: true });
}

// ---------------------------------------------------------------- feeds
const ALERT_STATE = { active: "活动 active", acknowledged: "已确认 acknowledged", resolved: "已处理 done" };
const CASE_STATE = { reported: "已受理 reported", verifying: "核实中 verifying", verified: "已核实 verified", filed: "已立案 filed",
  rejected: "不予立案 rejected", void: "作废 void", dispatched: "已派遣 dispatched", in_progress: "处置中 in progress",
  extension_requested: "申请延期 extension requested", returned: "回退 returned", handled: "已处置 handled",
  checking: "核查中 checking", closed: "已结案 closed", rework: "返工 rework", suspended: "挂账 suspended" };
const CASE_ACTION = { request_verify: "核实 Verify?", verify: "已核实 Verified", file: "立案 File", reject: "不立案 Reject",
  void: "作废 Void", dispatch: "派遣 Dispatch", accept: "接单 Accept", return: "回退 Return", handle: "处置完毕 Handled",
  request_extension: "申请延期 Extend?", grant_extension: "准予延期 Grant", refuse_extension: "驳回延期 Refuse",
  forward: "转核查 Forward", close: "结案 Close", rework: "返工 Rework", suspend: "挂账 Suspend", resume: "恢复 Resume" };
const SEVERITY = { low: "低 low", medium: "中 medium", high: "高 high", critical: "严重 critical" };
const lvlIndex = (name) => LEVELS.findIndex((l) => l.en === name);
const post = (path, body) => api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body || {}) });
const fmtTime = (t) => (t ? new Date(t).toLocaleString("zh-CN", { hour12: false }) : "—");

function note(el, text, bad) { el.textContent = text; el.className = bad ? "msg bad" : "msg"; }

async function loadFeeds() {
  await Promise.all([loadAlerts(), loadIncidents(), loadCases(), loadQuarantine()]);
}

async function loadAlerts() {
  const ul = $("feed-alerts");
  if (!S.me.features.alerts) { ul.innerHTML = "<li>告警模块未安装 Alerts not available</li>"; return; }
  try {
    const a = await api("/alerts?" + q({ state: "open", limit: 50, unit: S.me.area_code }));
    const canAct = ["admin", "duty_officer"].includes(S.me.role);
    ul.innerHTML = a.items.map((x) => {
      const lvl = lvlIndex(x.level);
      const acts = !canAct ? "" : (x.state === "active" ? `<button data-act="ack" data-id="${x.id}">确认 Ack</button>` : "")
        + `<button data-act="resolve" data-id="${x.id}">处理完毕 Done</button>`;
      return `<li data-alert="${x.id}" data-state="${esc(x.state)}" data-source="${esc(x.source)}" data-type="${esc(x.type)}">`
        + `<span class="lvl-${lvl}">${LEVELS[lvl].zh} ${esc(x.level)}</span> <b>${esc(x.source)}</b> ${esc(x.type)}`
        + ` · <span class="state">${esc(ALERT_STATE[x.state] || x.state)}</span>`
        + (x.unit_code ? ` · <a href="#" data-unit="${esc(x.unit_code)}">${esc(x.unit_code)}</a>` : "")
        + `<br><small>${esc(x.message || "")} · ${fmtTime(x.first_at)}`
        + (x.acknowledged_by ? ` · 确认人 by ${esc(x.acknowledged_by)}` : "") + `</small> ${acts}</li>`;
    }).join("") || "<li>无 None</li>";
    ul.querySelectorAll("button[data-act]").forEach((b) => (b.onclick = async () => {
      b.disabled = true;
      try { await post(`/alerts/${b.dataset.id}/${b.dataset.act}`, { note: "dashboard" }); }
      catch (e) { alert(e.message); }
      loadAlerts();
    }));
    ul.querySelectorAll("a[data-unit]").forEach((a) => (a.onclick = (ev) => { ev.preventDefault(); navigate(a.dataset.unit); }));
  } catch (e) { ul.innerHTML = `<li>${esc(e.message)}</li>`; }
}

async function loadIncidents() {
  const ul = $("feed-incidents");
  if (!S.me.features.incidents) { ul.innerHTML = "<li>事件研判未安装 Incidents not available</li>"; return; }
  try {
    const r = await api("/incidents?" + q({ state: "open", limit: 20 }));
    ul.innerHTML = r.items.map((x) => `<li data-incident="${x.id}"><span class="lvl-${Math.min(3, x.level || 0)}">${esc(SEVERITY[x.severity] || x.severity || "")}</span>`
      + ` <b>${esc(x.title || x.type)}</b> · ${x.n_alerts || 0} 告警 alerts · ${(x.units || []).length} 单元 units`
      + `<br><small>可能原因 Likely cause: ${esc(x.top_cause || "—")}` + (x.confidence != null ? ` (${Math.round(x.confidence * 100)}%)` : "")
      + ` · ${fmtTime(x.start_at)}</small> <button data-more="${x.id}">原因与证据 Causes</button><div class="causes"></div></li>`).join("") || "<li>无 None</li>";
    ul.querySelectorAll("button[data-more]").forEach((b) => (b.onclick = async () => {
      const box = b.nextElementSibling;
      if (box.innerHTML) { box.innerHTML = ""; return; }
      const inc = await api(`/incidents/${b.dataset.more}`);
      box.innerHTML = "<ol>" + (inc.causes || []).slice(0, 5).map((c) => `<li><b>${esc(c.name || c.cause)}</b> <small>${esc(c.kind)}`
        + (c.score != null ? ` · ${(c.score * 100).toFixed(0)}%` : "") + `</small><ul>`
        + (c.evidence || []).slice(0, 4).map((e) => `<li><small>${esc(typeof e === "string" ? e : JSON.stringify(e))}</small></li>`).join("")
        + "</ul></li>").join("") + "</ol>";
    }));
  } catch (e) { ul.innerHTML = `<li>${esc(e.message)}</li>`; }
}

async function loadCases() {
  const ul = $("feed-cases");
  if (!S.me.features.cases) { ul.innerHTML = "<li>案件处置未安装 Cases not available</li>"; return; }
  try {
    const r = await api("/cases?" + q({ state: "open", limit: 30 }));
    if (S.departments == null) {
      try { S.departments = (await api("/cases/departments")).items; } catch (e) { S.departments = []; }
    }
    const now = S.view ? new Date(S.view.at) : new Date();
    ul.innerHTML = r.items.map((c) => {
      const due = c.due_at ? new Date(c.due_at) : null, late = due && due < now;
      const acts = (c.actions || []).map((a) => a.action === "dispatch"
        ? `<select data-dept="${c.id}">${S.departments.map((d) => `<option value="${esc(d.code)}">${esc(d.zh || "")} ${esc(d.en || d.code)}</option>`).join("")}</select>`
          + `<button data-case="${c.id}" data-action="dispatch" data-as="${a.as}">${CASE_ACTION.dispatch}</button>`
        : `<button data-case="${c.id}" data-action="${a.action}" data-as="${a.as}">${esc(CASE_ACTION[a.action] || a.action)}</button>`).join(" ");
      return `<li data-case="${c.id}" data-state="${esc(c.state)}"><b>#${c.id}</b> ${esc(c.category)} · <span class="state">${esc(CASE_STATE[c.state] || c.state)}</span>`
        + (c.department ? ` · ${esc(c.department)}` : "")
        + `<br><small>${esc((c.description || "").slice(0, 80))}</small>`
        + `<br><small class="${late ? "late" : ""}">时限 Due ${due ? fmtTime(due) : "—"}${late ? " 已超时 overdue" : ""}</small> ${acts}</li>`;
    }).join("") || "<li>无 None</li>";
    ul.querySelectorAll("button[data-action]").forEach((b) => (b.onclick = async () => {
      const body = { as: b.dataset.as === "admin" ? undefined : b.dataset.as };
      if (b.dataset.action === "dispatch") body.department = ul.querySelector(`select[data-dept="${b.dataset.case}"]`).value;
      b.disabled = true;
      try { await post(`/cases/${b.dataset.case}/${b.dataset.action}`, body); }
      catch (e) { alert(e.message); }
      loadCases();
    }));
  } catch (e) { ul.innerHTML = `<li>${esc(e.message)}</li>`; }
}

async function loadQuarantine() {
  try {
    const c = await api("/quarantine/counts");
    $("feed-quarantine").innerHTML = `共 Total <b id="quarantine-total">${c.total}</b>` +
      (c.total ? ": " + Object.entries(c.counts).map(([k, v]) => `${esc(k)} ${v}`).join(" · ") : "");
  } catch (e) { $("feed-quarantine").textContent = e.status === 403 ? "仅限全市账号 City-wide keys only" : e.message; }
}

// Many events in a burst (a replayed minute raises dozens): one reload per feed.
function soon(name, fn, ms = 300) {
  if (S["t_" + name]) return;
  S["t_" + name] = setTimeout(() => { S["t_" + name] = null; fn(); }, ms);
}

function logLive(text) {
  S.liveCount += 1;
  $("live-count").textContent = S.liveCount;
  const li = document.createElement("li");
  li.textContent = `${new Date().toLocaleTimeString()} ${text}`;
  $("feed-live").prepend(li);
  while ($("feed-live").children.length > 50) $("feed-live").lastChild.remove();
}

function scheduleReload() {  // many events in a burst: one reload
  if (S.at || S.reloadTimer) return;
  const big = S.view && S.view.n_units > 5000;  // a whole-city layer of grid cells: refresh less often
  S.reloadTimer = setTimeout(async () => { S.reloadTimer = null; if (S.unit) await navigate(S.unit, S.depth); }, big ? 10000 : 500);
}

function onEvent(type, data) {
  if (type === "hello") return;
  if (type === "reset") { logLive("重新同步 Resync"); scheduleReload(); loadFeeds(); return; }
  if (type === "readings") { logLive(`新读数 New readings: ${data.readings} (${Object.keys(data.units).length} 单元 units)`); scheduleReload(); }
  else if (type === "quarantine") { logLive(`隔离 Quarantine: ${data.total}`); soon("quarantine", loadQuarantine); }
  else if (type === "alert") { logLive(`告警 Alert ${data.alert_id} ${data.event} ${data.alert_level} ${data.source}`); soon("alerts", loadAlerts); scheduleReload(); }
  else if (type === "incident") { logLive(`事件 Incident ${data.incident_id} ${data.event || ""} ${data.title || data.type}`); soon("incidents", loadIncidents); }
  else if (type === "case") { logLive(`案件 Case ${data.case_id} ${data.action} → ${data.to_state || data.state}`); soon("cases", loadCases); }
  else if (type === "health") { logLive(`健康指数更新 Health updated @ ${data.as_of}`); scheduleReload(); }
  else logLive(type);
}

// SSE over fetch (EventSource cannot send the Authorization header); resumes with Last-Event-ID.
async function startStream() {
  if (S.stream) S.stream.abort();
  const ctl = new AbortController();
  S.stream = ctl;
  let delay = 1000;
  while (!ctl.signal.aborted && S.key) {
    try {
      const headers = { Authorization: "Bearer " + S.key, Accept: "text/event-stream" };
      if (S.lastEventId != null) headers["Last-Event-ID"] = String(S.lastEventId);
      const r = await fetch(API + "/stream", { headers, signal: ctl.signal });
      if (!r.ok) throw new Error("stream " + r.status);
      $("live-status").className = "on"; $("live-status").textContent = "● 实时 live";
      delay = 1000;
      const reader = r.body.getReader(), dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, i); buf = buf.slice(i + 2);
          let id = null, type = "message", data = "";
          block.split("\n").forEach((line) => {
            if (line.startsWith("id: ")) id = Number(line.slice(4));
            else if (line.startsWith("event: ")) type = line.slice(7);
            else if (line.startsWith("data: ")) data += line.slice(6);
          });
          if (id != null) S.lastEventId = id;
          if (data) onEvent(type, JSON.parse(data));
        }
      }
    } catch (e) {
      if (ctl.signal.aborted) return;
    }
    $("live-status").className = "off"; $("live-status").textContent = "● 重连中 reconnecting";
    await new Promise((res) => setTimeout(res, delay));
    delay = Math.min(delay * 2, 15000);
  }
}

// ---------------------------------------------------------------- wiring
$("keyform").onsubmit = (ev) => {
  ev.preventDefault();
  S.key = $("key").value.trim();
  localStorage.setItem("cityvitals.key", S.key);
  $("key").value = "";
  signIn();
};
$("logout").onclick = () => { localStorage.removeItem("cityvitals.key"); S.key = ""; if (S.stream) S.stream.abort(); location.reload(); };
$("at").onchange = () => { S.at = $("at").value ? new Date($("at").value) : null; if (S.unit) navigate(S.unit, S.depth); };
$("all-grid").onclick = () => { if (S.me) navigate(S.me.home_unit, 8); };
$("live-btn").onclick = () => { $("at").value = ""; S.at = null; if (S.unit) navigate(S.unit); };
loadPublic();
setInterval(loadPublic, 60000);
signIn();
