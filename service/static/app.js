// trainhook status pages: live updates over /events, the waterfall redrawn while a build runs,
// and the token-protected actions. The pages are complete without this file; it only keeps
// them current. Every value from the server is written with textContent or setAttribute,
// never as markup.
"use strict";

(function () {
  const TERMINAL = new Set(["succeeded", "failed", "cancelled", "superseded"]);
  const TOKEN_KEY = "trainhook.token";
  const SVG = "http://www.w3.org/2000/svg";

  const $ = (selector, root) => (root || document).querySelector(selector);
  const $$ = (selector, root) => Array.from((root || document).querySelectorAll(selector));

  function duration(seconds) {
    if (seconds === null || seconds === undefined || isNaN(seconds)) return "—";
    if (seconds < 1) return seconds.toFixed(2) + "s";
    if (seconds < 10) return seconds.toFixed(1) + "s";
    const whole = Math.round(seconds);
    const pad = (n) => String(n).padStart(2, "0");
    if (whole < 60) return whole + "s";
    if (whole < 3600) return Math.floor(whole / 60) + "m " + pad(whole % 60) + "s";
    return Math.floor(whole / 3600) + "h " + pad(Math.floor((whole % 3600) / 60)) + "m";
  }

  const time = (iso) => (iso ? Date.parse(iso) : NaN);

  function setBadge(badge, status) {
    if (!badge) return;
    badge.className = "badge b-" + status;
    badge.dataset.status = status;
    badge.textContent = status;
  }

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

  // ---- the waterfall (mirrors service/charts.py) -------------------------------------------

  function layoutWaterfall(svg, finishedIso, now) {
    const created = time(svg.dataset.created);
    const left = Number(svg.dataset.left);
    const right = Number(svg.dataset.right);
    const finished = time(finishedIso);
    const running = isNaN(finished);
    let end = running ? now : finished;
    let cursor = now;
    const rows = $$(".wf-row", svg).map((g) => {
      const status = g.dataset.status;
      const start = time(g.dataset.start);
      let stop = time(g.dataset.end);
      const median = g.dataset.median === "" ? null : Number(g.dataset.median);
      if (!isNaN(start)) {
        if (isNaN(stop)) stop = status === "running" ? now : start;
        end = Math.max(end, stop);
        if (status === "running" && median !== null) cursor = Math.max(cursor, start + median * 1000);
      }
      return { g, status, start, stop, median };
    });
    if (running) {
      rows.forEach((row) => {
        if (row.status === "pending" && row.median !== null) {
          row.forecast = [cursor, cursor + row.median * 1000];
          cursor += row.median * 1000;
          end = Math.max(end, cursor);
        }
      });
    }
    const span = Math.max(end - created, 1);
    const x = (t) => left + Math.min(Math.max((t - created) / span, 0), 1) * (right - left);
    rows.forEach((row) => {
      const bar = $("rect.bar", row.g);
      const label = $("text.lbl", row.g);
      let from = null;
      let to = null;
      let text = "";
      bar.setAttribute("class", "bar s-" + row.status);
      if (!isNaN(row.start)) {
        from = row.start;
        to = row.stop;
        text = row.status === "skipped" ? "skipped" : duration((to - from) / 1000);
        if (row.status === "running") text += " so far";
      } else if (row.forecast) {
        [from, to] = row.forecast;
        text = "~" + duration((to - from) / 1000);
        bar.setAttribute("class", "bar s-pending forecast");
      }
      if (from === null) {
        bar.setAttribute("visibility", "hidden");
        label.textContent = "";
        return;
      }
      const bx = x(from);
      const width = Math.max(x(to) - bx, 2);
      bar.removeAttribute("visibility");
      bar.setAttribute("x", bx.toFixed(1));
      bar.setAttribute("width", width.toFixed(1));
      label.setAttribute("x", (bx + width + 4).toFixed(1));
      label.textContent = text;
    });
    drawTicks(svg, span, left, right);
  }

  function drawTicks(svg, span, left, right) {
    const steps = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400];
    const seconds = span / 1000;
    const step = steps.find((s) => seconds / s <= 6) || Math.ceil(seconds / 6 / 3600) * 3600;
    const group = $("g.ticks", svg);
    const top = Number($(".wf-row rect.track", svg).getAttribute("y")) - 4;
    const bottom = svg.viewBox.baseVal.height;
    group.textContent = "";
    for (let t = 0; t <= seconds + 1e-9; t += step) {
      const tx = (left + (t / seconds) * (right - left)).toFixed(1);
      const line = document.createElementNS(SVG, "line");
      line.setAttribute("class", "axis");
      [["x1", tx], ["x2", tx], ["y1", top - 6], ["y2", bottom]].forEach(([k, v]) => line.setAttribute(k, v));
      const text = document.createElementNS(SVG, "text");
      text.setAttribute("class", "tick");
      text.setAttribute("x", tx);
      text.setAttribute("y", top - 10);
      text.setAttribute("text-anchor", "middle");
      text.textContent = t === 0 ? "0" : duration(t);
      group.append(line, text);
    }
  }

  // ---- the build page ------------------------------------------------------------------------

  function renderFacts(cell, facts, detail) {
    cell.textContent = "";
    if (facts && facts.length) {
      const list = document.createElement("ul");
      list.className = "facts";
      facts.forEach((fact) => {
        const item = document.createElement("li");
        const key = document.createElement("span");
        key.className = "k";
        key.textContent = fact.label;
        const safe = fact.href && (/^\/builds\/\d+$/.test(fact.href) || /^https:\/\//.test(fact.href));
        const value = document.createElement(safe ? "a" : "span");
        if (safe) {
          value.href = fact.href;
          if (fact.href.startsWith("https://")) {
            value.rel = "noopener noreferrer";
            value.target = "_blank";
          }
        }
        value.className = "badge b-" + (fact.tone || "pending");
        value.textContent = fact.value;
        item.append(key, value);
        list.appendChild(item);
      });
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

    actions(card);
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

  // ---- actions: rebuild, rebuild with force, cancel (bearer token kept in localStorage) -------

  function actions(card) {
    const form = $("#actions");
    if (!form) return;
    form.hidden = false;
    const input = $("#token");
    const result = $("#action-result");
    const forget = $("#forget-token");
    const buttons = $$("button", form);

    function stored() {
      try {
        return localStorage.getItem(TOKEN_KEY) || "";
      } catch (e) {
        return "";
      }
    }
    function refresh() {
      const has = Boolean(stored());
      input.placeholder = has ? "token saved in this browser" : "API token (kept in this browser)";
      forget.hidden = !has;
    }
    function say(text, tone) {
      result.textContent = text;
      result.className = "msg " + (tone ? "b-" + tone : "");
    }
    function token() {
      const typed = input.value.trim();
      if (typed) {
        localStorage.setItem(TOKEN_KEY, typed);
        input.value = "";
        refresh();
      }
      return stored();
    }

    async function call(url, body) {
      const secret = token();
      if (!secret) {
        say("Enter the API token first.", "warn");
        input.focus();
        return null;
      }
      buttons.forEach((b) => (b.disabled = true));
      try {
        const response = await fetch(url, {
          method: "POST",
          headers: { Authorization: "Bearer " + secret, "Content-Type": "application/json" },
          body: JSON.stringify(body || {}),
          credentials: "omit",
        });
        const data = await response.json().catch(() => ({}));
        if (response.status === 401) {
          localStorage.removeItem(TOKEN_KEY);
          refresh();
          say("The token was refused; enter it again.", "bad");
          return null;
        }
        if (!response.ok) {
          say(data.error || "Failed: HTTP " + response.status, "bad");
          return null;
        }
        return data;
      } catch (e) {
        say("The service cannot be reached.", "bad");
        return null;
      } finally {
        buttons.forEach((b) => (b.disabled = false));
      }
    }

    async function rebuild(force) {
      const sha = form.dataset.sha;
      const body = { repo: form.dataset.repo };
      if (/^([0-9a-f]{40}|[0-9a-f]{64})$/.test(sha)) body.sha = sha;
      else body.ref = form.dataset.ref;
      if (force) body.force = true;
      const data = await call("/rebuild", body);
      if (data && /^\/builds\/\d+$/.test(data.status_url || "")) {
        say("Queued build #" + data.build_id + ".", "good");
        location.assign(data.status_url);
      }
    }

    $("#save-token").addEventListener("click", () => {
      if (token()) say("Token saved in this browser.", "good");
    });
    forget.addEventListener("click", () => {
      localStorage.removeItem(TOKEN_KEY);
      refresh();
      say("Token forgotten.", "");
    });
    $("#rebuild").addEventListener("click", () => rebuild(false));
    $("#rebuild-force").addEventListener("click", () => rebuild(true));
    $("#cancel").addEventListener("click", async () => {
      const data = await call("/api/builds/" + card.dataset.buildId + "/cancel");
      if (data) {
        say("Cancelled: the worker stops at the next stage boundary.", "good");
        setBadge($("#build-status .badge"), data.status || "cancelled");
        $("#cancel").hidden = true;
      }
    });
    if (form.dataset.configured !== "true") {
      ["#rebuild", "#rebuild-force"].forEach((id) => {
        $(id).disabled = true;
        $(id).title = "this repository is not configured here";
      });
    }
    refresh();
  }

  document.addEventListener("DOMContentLoaded", () => {
    const page = document.body.dataset.page;
    if (page === "build") buildPage();
    else if (page === "list") listPage();
  });
})();
