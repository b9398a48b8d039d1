// The map: the topology document from /api/topology, kept current by /api/edges/stream.
// Endpoints are grouped (namespace, Kubernetes node or workload); a group can be collapsed
// into one box, so that a cluster of hundreds of pods stays readable.
"use strict";

const params = new URLSearchParams(location.search);
const token = params.get("access_token");
const COLOURS = { direct: "#6b7785", tunnel: "#2f7dd1", service: "#8a4fd1", nat: "#e08a1e", unresolved: "#d13b3b" };
// Above this many endpoints, groups start collapsed.
const COLLAPSE_ABOVE = 150;

const state = {
  doc: { nodes: [], edges: [], window: {}, health: {} },
  collapsed: new Set(),
  autoCollapsed: false,
  shape: "",        // the visual elements' ids: a new layout only when they change
  selected: null,
};

function url(path, extra) {
  const q = new URLSearchParams(extra || {});
  if (token) q.set("access_token", token);
  const s = q.toString();
  return s ? `${path}?${s}` : path;
}

const $ = (id) => document.getElementById(id);

// What an edge's evidence says about the path, strongest first.
function evidenceClass(evidence) {
  const ev = evidence || [];
  if (ev.some((e) => /gateway-unresolved|unknown-vtep/.test(e))) return "unresolved";
  if (ev.some((e) => e.startsWith("nat:") || e.endsWith("hairpin-snat"))) return "nat";
  if (ev.some((e) => e.startsWith("service:"))) return "service";
  if (ev.some((e) => /:(vxlan|geneve|ipip|udp)$/.test(e))) return "tunnel";
  return "direct";
}

const edgeId = (e) => `${e.src}|${e.dst}|${e.service || ""}|${e.protocol}/${e.port}`;

function groupOf(n, mode) {
  if (mode === "node") {
    if (n.node) return { key: `node:${n.node}`, label: n.node };
    if (n.kind === "node") return { key: `node:${n.name}`, label: n.name };
    return { key: `kind:${n.kind}`, label: `${n.kind}s` };
  }
  if (mode === "workload" && n.workload) {
    return { key: `wl:${n.namespace}/${n.workload}`, label: `${n.namespace}/${n.workload}` };
  }
  if (n.namespace) return { key: `ns:${n.namespace}`, label: n.namespace };
  return { key: `kind:${n.kind}`, label: n.kind === "node" ? "nodes" : n.kind };
}

function visible(n) {
  if ($("hide-nodes").checked && n.kind === "node") return false;
  if ($("hide-external").checked && (n.kind === "external" || n.kind === "unknown")) return false;
  return true;
}

// Adds a window's own traffic (a stream event) to the document since the start.
function merge(doc, win) {
  const byId = new Map(doc.edges.map((e) => [edgeId(e), e]));
  for (const e of win.edges) {
    const have = byId.get(edgeId(e));
    if (!have) {
      const copy = { ...e, evidence: [...e.evidence], observed_at: [...e.observed_at] };
      doc.edges.push(copy);
      byId.set(edgeId(e), copy);
      continue;
    }
    have.packets += e.packets;
    have.bytes += e.bytes;
    have.flows += e.flows;
    have.last_seen = e.last_seen > have.last_seen ? e.last_seen : have.last_seen;
    have.confidence = Math.min(have.confidence, e.confidence);
    have.evidence = [...new Set([...have.evidence, ...e.evidence])].sort();
    have.observed_at = [...new Set([...have.observed_at, ...e.observed_at])].sort();
  }
  const known = new Set(doc.nodes.map((n) => n.id));
  for (const n of win.nodes) if (!known.has(n.id)) doc.nodes.push(n);
  doc.window = { start: doc.window.start || win.window.start, end: win.window.end };
  doc.health = win.health;
}

function fillSelect(select, values) {
  const chosen = select.value;
  const have = new Set([...select.options].map((o) => o.value));
  for (const v of values) {
    if (!have.has(v)) select.add(new Option(v, v));
  }
  select.value = chosen;
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

// The elements to draw: filters applied, groups as compound nodes or collapsed boxes, edges
// between collapsed boxes summed.
function elements() {
  const doc = state.doc;
  const mode = $("group").value;
  const ns = $("namespace").value;
  const proto = $("protocol").value;
  const byId = new Map(doc.nodes.map((n) => [n.id, n]));
  const edges = doc.edges.filter((e) => {
    const s = byId.get(e.src), d = byId.get(e.dst);
    if (!s || !d || !visible(s) || !visible(d)) return false;
    if (proto && e.protocol !== proto) return false;
    if (ns && s.namespace !== ns && d.namespace !== ns) return false;
    return true;
  });
  // Endpoints at an end of an edge; a service through which pods talk is on its edges.
  const shown = new Map();
  for (const e of edges) for (const id of [e.src, e.dst]) shown.set(id, byId.get(id));
  if (!state.autoCollapsed && shown.size > COLLAPSE_ABOVE) {
    state.autoCollapsed = true;
    for (const n of shown.values()) state.collapsed.add(groupOf(n, mode).key);
  }
  const groups = new Map();
  const where = new Map();  // endpoint id -> visual node id
  for (const n of shown.values()) {
    const g = groupOf(n, mode);
    if (!groups.has(g.key)) groups.set(g.key, { label: g.label, members: [] });
    groups.get(g.key).members.push(n);
    where.set(n.id, state.collapsed.has(g.key) ? `g:${g.key}` : n.id);
  }
  const out = [];
  for (const [key, g] of groups) {
    const collapsed = state.collapsed.has(key);
    out.push({ group: "nodes", data: {
      id: `g:${key}`, group: key, collapsed,
      label: collapsed ? `${g.label} (${g.members.length})` : g.label,
    }, classes: collapsed ? "box" : "group" });
    if (collapsed) continue;
    for (const n of g.members) {
      out.push({ group: "nodes", data: { id: n.id, label: n.name, kind: n.kind, parent: `g:${key}` }, classes: n.kind });
    }
  }
  const visual = new Map();
  for (const e of edges) {
    const s = where.get(e.src), d = where.get(e.dst);
    const summed = s.startsWith("g:") || d.startsWith("g:");
    const id = summed ? `${s}=>${d}` : edgeId(e);
    let v = visual.get(id);
    if (!v) {
      v = { id, source: s, target: d, bytes: 0, members: [], cls: evidenceClass(e.evidence) };
      visual.set(id, v);
    }
    v.bytes += e.bytes;
    v.members.push(e);
    const rank = ["direct", "tunnel", "service", "nat", "unresolved"];
    const c = evidenceClass(e.evidence);
    if (rank.indexOf(c) > rank.indexOf(v.cls)) v.cls = c;
  }
  for (const v of visual.values()) {
    const one = v.members.length === 1 ? v.members[0] : null;
    out.push({ group: "edges", data: {
      id: v.id, source: v.source, target: v.target,
      weight: Math.log10(v.bytes + 10), colour: COLOURS[v.cls], cls: v.cls,
      label: one ? `${one.protocol}/${one.port}` : `${v.members.length} edges`,
    } });
    edgeMembers.set(v.id, v.members);
  }
  return out;
}

const edgeMembers = new Map();

const cy = cytoscape({
  container: $("cy"),
  wheelSensitivity: 0.3,
  style: [
    { selector: "node", style: { label: "data(label)", "font-size": 12, "text-valign": "bottom", "text-margin-y": 4,
      "background-color": "#4b9e6b", width: 30, height: 30 } },
    { selector: "node.pod", style: { shape: "round-rectangle" } },
    { selector: "node.service", style: { shape: "ellipse", "background-color": "#8a4fd1" } },
    { selector: "node.node", style: { shape: "hexagon", "background-color": "#3d5a80" } },
    { selector: "node.external, node.unknown", style: { shape: "diamond", "background-color": "#9aa3ad" } },
    { selector: "node.group", style: { "background-color": "#eef2f6", "background-opacity": 0.6, "border-color": "#b8c2cc",
      "border-width": 1, "text-valign": "top", "font-size": 12, "font-weight": "bold", shape: "round-rectangle", padding: 12 } },
    { selector: "node.box", style: { shape: "round-rectangle", "background-color": "#cdd6df", "border-color": "#7d8a97",
      "border-width": 2, width: 60, height: 34, "text-valign": "center", "font-weight": "bold" } },
    { selector: "edge", style: { width: "mapData(weight, 1, 9, 1.5, 9)", "line-color": "data(colour)",
      "target-arrow-color": "data(colour)", "target-arrow-shape": "triangle", "curve-style": "bezier",
      label: "data(label)", "font-size": 9, "text-rotation": "autorotate", color: "#3b444d",
      "text-background-color": "#ffffff", "text-background-opacity": 0.8, "text-background-padding": 1 } },
    { selector: ":selected", style: { "overlay-color": "#f5c542", "overlay-opacity": 0.35 } },
    { selector: ".dim", style: { opacity: 0.15 } },
  ],
});

function draw() {
  edgeMembers.clear();
  const els = elements();
  const shape = els.map((e) => e.data.id + (e.data.parent || "")).sort().join(",");
  if (shape !== state.shape) {
    state.shape = shape;
    cy.elements().remove();
    cy.add(els);
    cy.layout({ name: "cose", animate: false, nodeDimensionsIncludeLabels: true, randomize: true,
      idealEdgeLength: 140, nodeRepulsion: 40000, nodeOverlap: 40, componentSpacing: 120,
      nestingFactor: 1.2, gravity: 0.4, padding: 40, numIter: els.length > 800 ? 400 : 1500 }).run();
  } else {
    for (const e of els) cy.getElementById(e.data.id).data(e.data);
  }
  search();
  listEndpoints();
  if (state.selected) show(state.selected);
  const d = state.doc;
  $("status").textContent = d.window.end
    ? `${d.edges.length} edges, ${d.nodes.length} endpoints · ${d.window.start} … ${d.window.end}`
    : "waiting for the first window…";
  fillSelect($("namespace"), [...new Set(d.nodes.map((n) => n.namespace).filter(Boolean))].sort());
  fillSelect($("protocol"), [...new Set(d.edges.map((e) => e.protocol))].sort());
  document.body.dataset.edges = String(d.edges.length);
  document.body.dataset.ready = "1";
}

function search() {
  const q = $("search").value.trim().toLowerCase();
  cy.elements().removeClass("dim");
  if (!q) return;
  const hit = cy.nodes().filter((n) => !n.isParent() && String(n.id()).toLowerCase().includes(q));
  cy.elements().not(hit.union(hit.connectedEdges()).union(hit.parents())).addClass("dim");
}

function listEndpoints() {
  const ul = $("endpoints");
  const shown = new Set(cy.nodes().map((n) => n.id()));
  ul.replaceChildren(...state.doc.nodes.map((n) => {
    const li = document.createElement("li");
    li.textContent = n.id;
    li.dataset.id = n.id;
    if (!shown.has(n.id)) li.className = "hidden";
    li.onclick = () => { state.selected = { node: n.id }; show(state.selected); };
    return li;
  }));
}

function field(dl, name, value) {
  const dt = document.createElement("dt"); dt.textContent = name;
  const dd = document.createElement("dd");
  if (value instanceof Node) dd.append(value); else dd.textContent = value;
  dl.append(dt, dd);
}

function list(items, ordered) {
  const l = document.createElement(ordered ? "ol" : "ul");
  for (const i of items) { const li = document.createElement("li"); li.textContent = i; l.append(li); }
  return l;
}

// The capture points, the client's node first, then the server's, then any other.
function points(e) {
  const byId = new Map(state.doc.nodes.map((n) => [n.id, n]));
  const nodeOf = (id) => { const n = byId.get(id); return n && (n.node || (n.kind === "node" ? n.name : null)); };
  const order = [nodeOf(e.src), nodeOf(e.dst)];
  const rank = (p) => { const i = order.indexOf(p.split("/")[0]); return i < 0 ? 2 : i; };
  return [...e.observed_at].sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
}

function showEdge(e, dl) {
  field(dl, "client", e.src);
  field(dl, "server", e.dst);
  field(dl, "service", e.service || "-");
  field(dl, "port", `${e.protocol}/${e.port}`);
  field(dl, "packets", String(e.packets));
  field(dl, "bytes", bytes(e.bytes));
  field(dl, "connections", String(e.flows));
  field(dl, "confidence", String(e.confidence));
  field(dl, "path", evidenceClass(e.evidence));
  field(dl, "evidence", e.evidence.length ? list(e.evidence) : "none: seen as sent");
  field(dl, "seen at", list(points(e), true));
  field(dl, "first seen", e.first_seen);
  field(dl, "last seen", e.last_seen);
}

function show(sel) {
  const box = $("details");
  const dl = document.createElement("dl");
  dl.id = "selection";
  if (sel.edge) {
    const members = edgeMembers.get(sel.edge) || [];
    const h = document.createElement("h3");
    h.textContent = members.length === 1 ? "Edge" : `${members.length} edges between the boxes`;
    box.replaceChildren(h);
    members.forEach((e, i) => {
      const one = i ? document.createElement("dl") : dl;
      if (i) box.append(document.createElement("hr"));
      box.append(one);
      showEdge(e, one);
    });
  } else if (sel.node) {
    const n = state.doc.nodes.find((x) => x.id === sel.node);
    if (!n) return;
    const h = document.createElement("h3"); h.textContent = n.id;
    box.replaceChildren(h, dl);
    field(dl, "kind", n.kind);
    if (n.namespace) field(dl, "namespace", n.namespace);
    if (n.workload) field(dl, "workload", n.workload);
    if (n.node) field(dl, "node", n.node);
    field(dl, "addresses", n.ips.join(", ") || "-");
    const out = state.doc.edges.filter((e) => e.src === n.id).length;
    const inn = state.doc.edges.filter((e) => e.dst === n.id || e.service === n.id).length;
    field(dl, "edges", `${out} out, ${inn} in`);
  }
}

cy.on("tap", "edge", (ev) => { state.selected = { edge: ev.target.id() }; show(state.selected); });
cy.on("tap", "node", (ev) => {
  const n = ev.target;
  if (n.isParent() || n.data("collapsed") !== undefined) return;
  state.selected = { node: n.id() }; show(state.selected);
});
cy.on("dbltap", "node", (ev) => {
  const g = ev.target.data("group");
  if (!g) return;
  if (state.collapsed.has(g)) state.collapsed.delete(g); else state.collapsed.add(g);
  draw();
});

async function load() {
  const w = $("window").value;
  const r = await fetch(url("api/topology", w ? { window: w } : {}));
  if (!r.ok) { $("status").textContent = `${r.status}: ${await r.text()}`; return; }
  state.doc = await r.json();
  draw();
}

let events = null;
function follow() {
  if (events) events.close();
  events = null;
  if (!$("live").checked) return;
  events = new EventSource(url("api/edges/stream"));
  events.addEventListener("window", (m) => {
    // Since the start: add the window's traffic; over the last windows: ask again.
    if ($("window").value) load(); else { merge(state.doc, JSON.parse(m.data)); draw(); }
  });
  events.addEventListener("resync", load);
}

for (const id of ["group", "namespace", "protocol", "hide-nodes", "hide-external"]) {
  $(id).addEventListener("change", () => { if (id === "group") state.collapsed.clear(); draw(); });
}
$("window").addEventListener("change", load);
$("live").addEventListener("change", follow);
$("search").addEventListener("input", search);
$("collapse").onclick = () => { cy.nodes().forEach((n) => { if (n.data("group")) state.collapsed.add(n.data("group")); }); draw(); };
$("expand").onclick = () => { state.collapsed.clear(); draw(); };

window.cniscope = { cy, state };
load().then(follow);
