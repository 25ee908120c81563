// trainhook status pages: live updates over /events for the list and build pages. The pages
// are complete without this file; it only keeps them current. Every value from the server is
// written with textContent or setAttribute, never as markup.
"use strict";

(function () {
  const { TERMINAL, $, $$, duration, time, setBadge, layoutWaterfall } = window.trainhook;

  function mergeLevels(container, levels) {
    if (!container || !levels || !Object.keys(levels).length) return;
    const current = {};
    $$("[data-level]", container).forEach((el) => (current[el.dataset.level] = el.dataset.result || el.textContent.split(" ")[1]));
    Object.assign(current, levels);
    container.textContent = "";
    ["deps", "nltk", "model"].forEach((level) => {
      if (!current[level]) return;
      const badge = document.createElement("span");
      badge.className = "badge b-" + current[level];
      badge.dataset.level = level;
      badge.dataset.result = current[level];
      badge.title = level + " cache " + current[level];
      badge.textContent = level + " " + current[level];
      container.appendChild(badge);
    });
  }

  function showLive(on) {
    const el = $("#live");
    if (!el) return;
    el.hidden = false;
    el.classList.toggle("off", !on);
    el.textContent = on ? "live" : "reconnecting…";
  }

  function subscribe(url, handlers) {
    const source = new EventSource(url);
    source.addEventListener("open", () => showLive(true));
    source.addEventListener("error", () => showLive(false));
    Object.keys(handlers).forEach((name) =>
      source.addEventListener(name, (event) => handlers[name](JSON.parse(event.data)))
    );
    // Too far behind to replay, or the server asked: read the page afresh.
    source.addEventListener("reload", () => {
      source.close();
      location.reload();
    });
    return source;
  }

  // ---- the build page ------------------------------------------------------------------------

  // The only links a fact may carry (service/details.py): another build, or the Cloud Build
  // log on the Cloud console. Anything else is shown as text.
  const CONSOLE = /^https:\/\/console\.cloud\.google\.com\//;

  function renderFacts(cell, facts, detail) {
    // The Cloud Build log comes from one event (the builder's record of its Cloud Build);
    // the stage's later events do not repeat it, so it stays when they replace the facts.
    const kept = [...cell.querySelectorAll('li[data-keep="cloud-build-log"]')];
    cell.textContent = "";
    const items = [];
    (facts || []).forEach((fact) => {
      const item = document.createElement("li");
      const key = document.createElement("span");
      key.className = "k";
      key.textContent = fact.label;
      const external = !!fact.href && CONSOLE.test(fact.href);
      const safe = external || (!!fact.href && /^\/builds\/\d+$/.test(fact.href));
      const value = document.createElement(safe ? "a" : "span");
      if (safe) {
        value.href = fact.href;
        if (external) {
          value.rel = "noopener noreferrer";
          value.target = "_blank";
          item.dataset.keep = "cloud-build-log";
        }
      }
      value.className = "badge b-" + (fact.tone || "pending");
      value.textContent = fact.value;
      item.append(key, value);
      items.push(item);
    });
    if (!items.some((item) => item.dataset.keep)) items.push(...kept);
    if (items.length) {
      const list = document.createElement("ul");
      list.className = "facts";
      list.append(...items);
      cell.appendChild(list);
    }
    if (detail) {
      const pre = document.createElement("pre");
      pre.textContent = detail;
      cell.appendChild(pre);
    }
  }

  function buildPage() {
    const card = $("#build");
    const svg = $("#waterfall");
    const [sinceEvent, sinceLog] = card.dataset.since.split(".").map(Number);
    let lastEvent = sinceEvent;
    let lastLog = sinceLog;
    let source = null;

    function onStage(d) {
      if (d.id <= lastEvent) return;
      lastEvent = d.id;
      const row = $("#stage-" + d.stage);
      const g = $('.wf-row[data-stage="' + d.stage + '"]', svg);
      if (!row) return;
      const open = d.status === "running" || d.status === "pending";
      if (!row.dataset.start || d.status === "pending") row.dataset.start = d.status === "pending" ? "" : d.at;
      row.dataset.end = open ? "" : d.at;
      setBadge($('[data-cell="status"] .badge', row), d.status);
      const start = time(row.dataset.start);
      $('[data-cell="duration"]', row).textContent =
        d.status === "skipped" ? "—" : open ? "—" : duration((time(d.at) - start) / 1000);
      if (d.cache) {
        const cell = $('[data-cell="cache"]', row);
        cell.textContent = "";
        const badge = document.createElement("span");
        badge.className = "badge b-" + d.cache;
        badge.textContent = d.cache;
        cell.appendChild(badge);
      }
      if (d.detail) renderFacts($('[data-cell="detail"]', row), d.facts, d.detail);
      if (g) {
        g.dataset.status = d.status;
        g.dataset.start = row.dataset.start;
        g.dataset.end = row.dataset.end;
      }
      mergeLevels($("#levels [data-levels]"), d.levels);
      tick();
    }

    function onLog(d) {
      if (d.id <= lastLog) return;
      lastLog = d.id;
      let box = $("#log-" + CSS.escape(d.stage));
      if (!box) {
        box = document.createElement("details");
        box.className = "log card";
        box.id = "log-" + d.stage;
        box.dataset.stage = d.stage;
        const summary = document.createElement("summary");
        const name = document.createElement("strong");
        name.textContent = d.stage;
        const lines = document.createElement("span");
        lines.className = "muted";
        const count = document.createElement("span");
        count.dataset.lines = "";
        lines.append(" · ", count);
        summary.append(name, " ", lines);
        box.append(summary, document.createElement("pre"));
        box.open = true;
        $("#logs").appendChild(box);
        const none = $("#no-logs");
        if (none) none.hidden = true;
      }
      const pre = $("pre", box);
      const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.appendChild(document.createTextNode(d.text));
      if (atBottom) pre.scrollTop = pre.scrollHeight;
      const text = pre.textContent;
      const n = (text.match(/\n/g) || []).length + (text.endsWith("\n") ? 0 : 1);
      $("[data-lines]", box).textContent = n + (n === 1 ? " line" : " lines");
    }

    function onBuild(d) {
      card.dataset.status = d.status;
      setBadge($("#build-status .badge"), d.status);
      if (TERMINAL.has(d.status)) {
        card.dataset.finished = d.finished_at || new Date().toISOString();
        $("#finished").textContent = (d.finished_at || card.dataset.finished).replace("T", " ").replace(/\.\d+Z$/, " UTC");
        const cancel = $("#cancel");
        if (cancel) cancel.hidden = true;
        const eta = $("#eta");
        if (eta) eta.textContent = "—";
        // Late events (a cancelled build's last stage) still arrive for a while; then stop.
        setTimeout(() => source && source.close(), 30000);
      }
      if (d.error) {
        const error = $("#error");
        error.textContent = d.error;
        error.hidden = false;
      }
      tick();
    }

    const started = Date.now();
    const etaEl = $("#eta");
    const eta = etaEl ? Number(etaEl.dataset.eta) : NaN;

    function tick() {
      const now = Date.now();
      const finished = card.dataset.finished;
      const created = time(card.dataset.created);
      const total = (isNaN(time(finished)) ? now : time(finished)) - created;
      $("#total").textContent = duration(total / 1000) + (finished ? "" : " so far");
      $$("#stages tr[data-stage]").forEach((row) => {
        if (row.dataset.start && !row.dataset.end && !finished) {
          $('[data-cell="duration"]', row).textContent = duration((now - time(row.dataset.start)) / 1000) + " so far";
        }
      });
      if (etaEl && !finished && !isNaN(eta)) {
        const left = Math.max(eta - (now - started) / 1000, 0);
        etaEl.textContent = left > 0 ? "about " + duration(left) + " more (median of recent builds)" : "any moment now (longer than usual)";
      }
      if (svg) layoutWaterfall(svg, finished, now);
    }

    window.trainhook.actions(card);
    if (TERMINAL.has(card.dataset.status)) return;
    const url = "/events?build=" + card.dataset.buildId + "&since=" + encodeURIComponent(card.dataset.since);
    source = subscribe(url, { stage: onStage, log: onLog, build: onBuild });
    setInterval(() => {
      if (!card.dataset.finished) tick();
    }, 1000);
    tick();
  }

  // ---- the list page -------------------------------------------------------------------------

  function listPage() {
    const list = $("#list");
    if (!list) return;
    const rows = () => $$("#builds tbody tr[data-build-id]", list);
    const byId = (id) => $('#builds tbody tr[data-build-id="' + id + '"]', list);
    // The newest build shown (0: none yet); empty on an older page, which gains no rows.
    const top = list.dataset.top === "" ? null : Number(list.dataset.top);
    const fresh = new Set();
    const banner = $("#new-builds");

    function announce(id) {
      if (top === null || id <= top || fresh.has(id)) return;
      fresh.add(id);
      const link = $("a", banner);
      link.textContent = fresh.size + (fresh.size === 1 ? " new build: show it" : " new builds: show them");
      link.href = location.pathname + location.search;
      banner.hidden = false;
    }

    function onStage(d) {
      const row = byId(d.build);
      if (!row) return announce(d.build);
      const cell = $('.stagebar li[data-stage="' + d.stage + '"]', row);
      if (cell) {
        cell.className = "s-" + d.status;
        const title = d.stage + ": " + d.status + (d.cache ? ", cache " + d.cache : "");
        cell.title = title;
        cell.setAttribute("aria-label", title);
      }
      mergeLevels($("[data-levels]", row), d.levels);
    }

    function onBuild(d) {
      const row = byId(d.build);
      if (!row) return announce(d.build);
      setBadge($("[data-build-status] .badge", row), d.status);
      if (TERMINAL.has(d.status)) {
        row.dataset.finished = d.finished_at || new Date().toISOString();
        const seconds = (time(row.dataset.finished) - time(row.dataset.created)) / 1000;
        $("[data-duration]", row).textContent = duration(seconds);
      }
    }

    const ids = rows().map((row) => row.dataset.buildId);
    const params = new URLSearchParams({ builds: ids.join(","), since: list.dataset.since });
    if (top !== null) params.set("top", String(top));
    if (list.dataset.repo) params.set("repo", list.dataset.repo);
    if (list.dataset.branch) params.set("branch", list.dataset.branch);
    subscribe("/events?" + params.toString(), { stage: onStage, build: onBuild });
    setInterval(() => {
      const now = Date.now();
      rows().forEach((row) => {
        if (!row.dataset.finished) {
          $("[data-duration]", row).textContent = duration((now - time(row.dataset.created)) / 1000) + "…";
        }
      });
    }, 1000);
  }

  document.addEventListener("DOMContentLoaded", () => {
    const page = document.body.dataset.page;
    if (page === "build") buildPage();
    else if (page === "list") listPage();
  });
})();
