// trainhook status pages, shared helpers: DOM shortcuts, durations as the server writes them,
// badges, and the waterfall redrawn while a build runs (mirrors service/charts.py). Every
// value from the server is written with textContent or setAttribute, never as markup.
"use strict";

window.trainhook = (function () {
  const TERMINAL = new Set(["succeeded", "failed", "cancelled", "superseded"]);
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

  return { TERMINAL, $, $$, duration, time, setBadge, layoutWaterfall };
})();
