// netdsl serve: the live viewer's page. Plain JavaScript, no libraries; everything it shows comes
// from the server's JSON (/api/view, /api/diff), and /events says when to fetch it again.
"use strict";

(() => {
  const $ = (selector, root = document) => root.querySelector(selector);
  const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));
  const params = new URLSearchParams(location.search);
  const state = {
    file: params.get("file"), other: params.get("other") || "", network: params.get("network"),
    expand: new Set(params.getAll("expand")), collapse: new Set(params.getAll("collapse")),
    legend: params.get("legend") === "1",
    views: {}, elements: {a: [], b: []}, diff: null, selected: null, loads: 0, source: null,
  };

  // ---- fetching ------------------------------------------------------------------------------

  function viewQuery(file) {
    const query = new URLSearchParams({file});
    if (state.network && file === state.file) query.set("network", state.network);
    state.expand.forEach((path) => query.append("expand", path));
    state.collapse.forEach((path) => query.append("collapse", path));
    if (state.legend) query.set("legend", "1");
    return query;
  }

  async function getJSON(url) {
    try {
      const response = await fetch(url, {cache: "no-store"});
      return await response.json();
    } catch (error) {
      return {error: {text: `the viewer's server does not answer (${error.message})`}};
    }
  }

  async function load() {
    if (!state.file) return;
    const sides = [["a", state.file]].concat(state.other ? [["b", state.other]] : []);
    const views = await Promise.all(sides.map(([, file]) => getJSON(`/api/view?${viewQuery(file)}`)));
    state.diff = state.other
      ? await getJSON(`/api/diff?${new URLSearchParams({file: state.file, other: state.other})}`) : null;
    $("#pane-b").hidden = !state.other;
    sides.forEach(([side], index) => show(side, views[index]));
    showDiff();
    if (state.selected) select(state.selected.paths, state.selected.from);
    state.loads += 1;
    document.body.dataset.loads = String(state.loads);
    $("#status").textContent = `updated ${new Date().toLocaleTimeString()}`;
  }

  function listen() {
    if (state.source) state.source.close();
    if (!state.file) return;
    const query = new URLSearchParams({file: state.file});
    if (state.other) query.set("other", state.other);
    state.source = new EventSource(`/events?${query}`);
    state.source.addEventListener("change", load);
  }

  // ---- one file's drawing ----------------------------------------------------------------------

  const human = (count) => {
    for (const [unit, size] of [["G", 1e9], ["M", 1e6], ["K", 1e3]]) {
      if (count >= size) return `${(count / size).toFixed(2)} ${unit}`;
    }
    return String(count);
  };
  const dims = (shape) => shape.join("×");

  function show(side, view) {
    const pane = $(`#pane-${side}`);
    const error = $(".error", pane);
    if (view.error) {  // located error in place; the last good drawing stays, dimmed
      error.textContent = view.error.text;
      error.hidden = false;
      pane.classList.add("stale");
      return;
    }
    error.hidden = true;
    pane.classList.remove("stale");
    state.views[side] = view;
    $(".title", pane).textContent = `${view.network} (${view.file.split("/").pop()})`;
    $(".totals", pane).textContent =
      `${dims(view.input)} → ${dims(view.output)} · ${human(view.params)} params · ${human(view.macs)} MACs · depth ${view.depth}`;
    $(".sizes", pane).textContent = view.sizes;
    const diagram = $(".diagram", pane);
    diagram.innerHTML = view.svg;
    state.elements[side] = decorate($("svg", diagram), view);
    if (side === "a") {
      showTable(view);
      const choice = $("#network");
      choice.hidden = view.networks.length < 2;
      choice.replaceChildren(...view.networks.map((name) => new Option(name, name)));
      choice.value = view.network;
    }
  }

  function decorate(svg, view) {
    const found = [];
    $$("a", svg).forEach((link) => link.removeAttribute("xlink:title"));  // our tooltip, not the browser's
    for (const group of $$("g.node, g.cluster", svg)) {
      const title = $(":scope > title", group);
      if (!title) continue;
      const name = title.textContent;
      title.remove();
      const item = view.items[name];
      if (!item || !item.facts.length) continue;
      group.classList.add("item");
      group.dataset.name = name;
      if (item.toggle) {
        group.classList.add(item.expands ? "expandable" : "collapsible");
        group.dataset.toggle = item.toggle;
      }
      group.addEventListener("mousemove", (event) => tooltip(event, item));
      group.addEventListener("mouseleave", () => { $("#tooltip").hidden = true; });
      group.addEventListener("click", (event) => {
        event.stopPropagation();
        select(item.paths, "drawing");
        if (item.toggle) toggle(item);
      });
      found.push({element: group, item});
    }
    return found;
  }

  function toggle(item) {
    const path = item.toggle;
    if (item.expands) {
      state.collapse.delete(path);
      state.expand.add(path);
    } else {
      state.expand.delete(path);
      state.collapse.add(path);
    }
    $("#tooltip").hidden = true;
    load();
  }

  const escape = (value) => String(value).replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);

  function numbers(facts) {
    const found = [`${dims(facts.input)} → ${dims(facts.output)}`];
    if (facts.params !== null) found.push(`${facts.params.toLocaleString("en")} params`, `${human(facts.macs)} MACs`);
    found.push(`memory ${facts.memory.elements.toLocaleString("en")} elements (${human(facts.memory.bytes)}B)`);
    return found.join(" · ");
  }

  function factsHTML(facts) {  // layer or block, source location, shapes, params, MACs, memory
    const where = facts.location;
    return `<div><b>${escape(facts.name || facts.kind)}</b> ${escape(facts.kind)} <span class="where">${escape(facts.path)}</span></div>`
      + `<div class="where">${escape(where.file.split("/").pop())}:${where.line}:${where.column}</div>`
      + `<div>${escape(numbers(facts))}</div>`;
  }

  const factsLine = (facts) =>
    `<div><b>${escape(facts.name || facts.kind)}</b> ${escape(facts.kind)} <span class="where">line ${facts.location.line}</span> ${escape(numbers(facts))}</div>`;

  function tooltip(event, item) {
    const box = $("#tooltip");
    const [first, ...rest] = item.facts;
    const copies = item.paths.length > 1 && rest.every((f) => f.kind === first.kind) && rest.length + 1 === item.paths.length;
    let html = factsHTML(first);
    if (copies) html += `<div class="more">×${item.paths.length}: ${item.paths[0]} … ${item.paths[item.paths.length - 1]} (first shown)</div>`;
    else if (rest.length) html += `<div class="more">${rest.slice(0, 12).map(factsLine).join("")}${rest.length > 12 ? `… ${rest.length - 12} more` : ""}</div>`;
    if (item.toggle) html += `<div class="more">click to ${item.expands ? "unfold" : "fold"} ${item.toggle}</div>`;
    box.innerHTML = html;
    box.hidden = false;
    const x = Math.min(event.clientX + 14, window.innerWidth - box.offsetWidth - 4);
    const y = Math.min(event.clientY + 14, window.innerHeight - box.offsetHeight - 4);
    box.style.left = `${Math.max(0, x)}px`;
    box.style.top = `${Math.max(0, y)}px`;
  }

  // ---- table, selection, diff --------------------------------------------------------------

  function showTable(view) {
    const body = $("#summary tbody");
    body.innerHTML = "";
    for (const row of view.rows) {
      const tr = document.createElement("tr");
      if (row.path && row.type !== "input") tr.dataset.path = row.path;
      const cells = [
        ["\u00a0\u00a0".repeat(row.level) + (row.name || `(${row.type})`) + (row.folded ? " …" : ""), ""],
        [row.name && row.type !== "input" ? row.type : "", ""], [dims(row.output), ""],
        [row.params ? row.params.toLocaleString("en") : "", "number"], [row.macs ? human(row.macs) : "", "number"],
        [row.memory.elements.toLocaleString("en"), "number"]];
      for (const [value, kind] of cells) {
        const td = document.createElement("td");
        td.textContent = value;
        if (kind) td.className = kind;
        tr.append(td);
      }
      if (tr.dataset.path) tr.addEventListener("click", () => select([row.path], "table"));
      body.append(tr);
    }
    markChangedRows();
  }

  const within = (path, ancestor) => path === ancestor || path.startsWith(`${ancestor}.`);

  function itemsFor(paths, side) {
    // the drawn items showing these modules or anything inside them; else the innermost drawn item holding one
    const elements = state.elements[side] || [];
    const hits = elements.filter(({item}) => item.paths.some((q) => paths.some((p) => within(q, p))));
    if (hits.length) return hits;
    let best = [], bestLength = -1;
    for (const entry of elements) {
      for (const q of entry.item.paths) {
        if (paths.some((p) => within(p, q)) && q.length >= bestLength) {
          if (q.length > bestLength) best = [];
          best.push(entry);
          bestLength = q.length;
        }
      }
    }
    return best;
  }

  function select(paths, from) {
    state.selected = {paths, from};
    $$(".selected").forEach((element) => element.classList.remove("selected"));
    for (const side of ["a", "b"]) {
      const chosen = from === "drawing" ? (state.elements[side] || []).filter(({item}) => item.paths.some((q) => paths.includes(q)))
        : itemsFor(paths, side);
      chosen.forEach(({element}) => element.classList.add("selected"));
    }
    const rows = $$("#summary tr[data-path]").filter((tr) => paths.some((p) => within(tr.dataset.path, p)));
    rows.forEach((tr) => tr.classList.add("selected"));
    if (from === "drawing" && rows.length) rows[0].scrollIntoView({block: "nearest"});
    if (from === "table") {
      const first = $("#pane-a g.selected");
      if (first) first.scrollIntoView({block: "nearest", inline: "nearest"});
    }
  }

  function showDiff() {
    const box = $("#diff");
    $$(".changed").forEach((element) => element.classList.remove("changed"));
    box.hidden = !state.diff;
    if (!state.diff) return;
    if (state.diff.error) {
      box.innerHTML = "";
      const pre = document.createElement("pre");
      pre.className = "error";
      pre.textContent = state.diff.error.text;
      box.append(pre);
      return;
    }
    const changed = state.diff.changed;
    for (const side of ["a", "b"]) {
      itemsFor(changed, side).forEach(({element}) => element.classList.add("changed"));
    }
    const show = (side, key, format) => (side ? format(side[key]) : "–");
    const rows = state.diff.rows.map((row) => {
      const isChanged = changed.includes(row.path);
      const cells = [row.name || row.path, show(row.a, "params", human), show(row.b, "params", human),
        show(row.a, "macs", human), show(row.b, "macs", human)];
      return `<tr class="${isChanged ? "changed" : ""}" data-diff="${row.path}">${cells.map((c, i) =>
        `<td class="${i && isChanged ? "changed" : ""}">${c}</td>`).join("")}</tr>`;
    });
    box.innerHTML = `<b>diff</b> A: ${state.diff.a.network} · B: ${state.diff.b.network} · ${changed.length} changed`
      + `<table><thead><tr><th>stage</th><th>params A</th><th>params B</th><th>MACs A</th><th>MACs B</th></tr></thead>`
      + `<tbody>${rows.join("")}</tbody></table>`;
    markChangedRows();
  }

  function markChangedRows() {
    const changed = state.diff && !state.diff.error ? state.diff.changed : [];
    $$("#summary tr[data-path]").forEach((tr) =>
      tr.classList.toggle("changed", changed.some((p) => within(tr.dataset.path, p))));
  }

  // ---- export --------------------------------------------------------------------------------

  function svgText(side = "a") {
    const svg = $(`#pane-${side} .diagram svg`);
    if (!svg) return null;
    const copy = svg.cloneNode(true);
    copy.setAttribute("xmlns", "http://www.w3.org/2000/svg");
    copy.setAttribute("xmlns:xlink", "http://www.w3.org/1999/xlink");
    return new XMLSerializer().serializeToString(copy);
  }

  function pngDataURL(side = "a", scale = 2) {
    return new Promise((resolve, reject) => {
      const text = svgText(side);
      if (!text) { reject(new Error("nothing drawn yet")); return; }
      const image = new Image();
      image.onload = () => {
        const canvas = document.createElement("canvas");
        canvas.width = Math.ceil(image.naturalWidth * scale);
        canvas.height = Math.ceil(image.naturalHeight * scale);
        const context = canvas.getContext("2d");
        context.fillStyle = "white";
        context.fillRect(0, 0, canvas.width, canvas.height);
        context.drawImage(image, 0, 0, canvas.width, canvas.height);
        resolve(canvas.toDataURL("image/png"));
      };
      image.onerror = () => reject(new Error("the drawing could not be rasterized"));
      image.src = `data:image/svg+xml;charset=utf-8,${encodeURIComponent(text)}`;
    });
  }

  function download(name, url) {
    const link = document.createElement("a");
    link.href = url;
    link.download = name;
    document.body.append(link);
    link.click();
    link.remove();
  }

  const baseName = () => (state.views.a ? state.views.a.network : "network");

  // ---- the page --------------------------------------------------------------------------------

  function remember() {
    const query = new URLSearchParams();
    if (state.file) query.set("file", state.file);
    if (state.other) query.set("other", state.other);
    if (state.network) query.set("network", state.network);
    if (state.legend) query.set("legend", "1");
    history.replaceState(null, "", `?${query}`);
  }

  function choose() {
    state.file = $("#file").value;
    state.other = $("#other").value;
    state.network = null;
    state.expand.clear();
    state.collapse.clear();
    state.selected = null;
    remember();
    listen();
    load();
  }

  async function start() {
    const listing = await getJSON("/api/files");
    const files = listing.files || [];
    if (!state.file) state.file = listing.first || files[0] || null;
    for (const [select, none] of [[$("#file"), false], [$("#other"), true]]) {
      for (const file of files) select.append(new Option(file, file));
      select.value = none ? state.other : state.file;
      select.addEventListener("change", choose);
    }
    $("#export-svg").addEventListener("click", () => {
      const text = svgText();
      if (text) download(`${baseName()}.svg`, URL.createObjectURL(new Blob([text], {type: "image/svg+xml"})));
    });
    $("#export-png").addEventListener("click", async () => download(`${baseName()}.png`, await pngDataURL()));
    $("#network").addEventListener("change", () => {
      state.network = $("#network").value;
      state.expand.clear();
      state.collapse.clear();
      remember();
      load();
    });
    $("#legend").checked = state.legend;
    $("#legend").addEventListener("change", () => {
      state.legend = $("#legend").checked;
      remember();
      load();
    });
    $("#reset").addEventListener("click", () => { state.expand.clear(); state.collapse.clear(); load(); });
    if (!state.file) {
      $("#pane-a .error").textContent = `no .net files under ${listing.root || "the served directory"}`;
      $("#pane-a .error").hidden = false;
      return;
    }
    remember();
    listen();
    await load();
  }

  window.netdslViewer = {state, load, select, svgText, pngDataURL};
  start();
})();
