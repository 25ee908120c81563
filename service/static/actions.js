// trainhook status pages: the protected actions of a build page (rebuild, rebuild with
// force, cancel). Signed in (a login cookie or an authenticating proxy), they ride on that
// session and send the page's CSRF token in X-CSRF-Token: another site can make the browser
// send the cookie but never read this page. Otherwise a bearer token is entered once and
// kept in this browser's localStorage; it is sent only in the Authorization header of
// same-origin requests.
"use strict";

(function () {
  const { $, $$, setBadge } = window.trainhook;
  const TOKEN_KEY = "trainhook.token";

  function actions(card) {
    const form = $("#actions");
    if (!form) return;
    form.hidden = false;
    const input = $("#token");
    const result = $("#action-result");
    const forget = $("#forget-token");
    const buttons = $$("button", form);
    const csrf = form.dataset.csrf || "";

    function stored() {
      try {
        return localStorage.getItem(TOKEN_KEY) || "";
      } catch (e) {
        return "";
      }
    }
    function refresh() {
      if (!input) return;
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

    // The session's headers, or the typed token's; null when there is neither.
    function credentials() {
      if (csrf) {
        return { headers: { "X-CSRF-Token": csrf }, credentials: "same-origin" };
      }
      const secret = token();
      return secret ? { headers: { Authorization: "Bearer " + secret }, credentials: "omit" } : null;
    }

    async function call(url, body) {
      const auth = credentials();
      if (!auth) {
        say("Enter the API token first.", "warn");
        input.focus();
        return null;
      }
      buttons.forEach((b) => (b.disabled = true));
      try {
        const response = await fetch(url, {
          method: "POST",
          headers: Object.assign({ "Content-Type": "application/json" }, auth.headers),
          body: JSON.stringify(body || {}),
          credentials: auth.credentials,
        });
        const data = await response.json().catch(() => ({}));
        if (response.status === 401 && csrf) {
          say("Your session was refused; sign in again.", "bad");
          return null;
        }
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

    if (input) {
      $("#save-token").addEventListener("click", () => {
        if (token()) say("Token saved in this browser.", "good");
      });
      forget.addEventListener("click", () => {
        localStorage.removeItem(TOKEN_KEY);
        refresh();
        say("Token forgotten.", "");
      });
    }
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
    if (form.dataset.readOnly === "true") {
      ["#rebuild", "#rebuild-force", "#cancel"].forEach((id) => {
        $(id).disabled = true;
        $(id).title = "your token is read-only";
      });
    } else if (form.dataset.configured !== "true") {
      ["#rebuild", "#rebuild-force"].forEach((id) => {
        $(id).disabled = true;
        $(id).title = "this repository is not configured here";
      });
    }
    refresh();
  }

  window.trainhook.actions = actions;
})();
