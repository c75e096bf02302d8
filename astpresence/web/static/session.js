// The board tab as a client session (sources/sessions): active while the tab is
// visible and used, idle while it is hidden or untouched, locked when the browser's
// Idle Detection API (only where the person already granted it; the board never
// asks) says the screen is locked. Reports go to v1/me/sessions; started by
// app.js's "astpresence:session" event. Only state and seconds are sent.
"use strict";

(() => {
  const BEAT_MS = 20000; // a third of the server's default expiry
  const UNTOUCHED_MS = 60000; // no input for this long while visible: idle
  let session = null; // {api, me, current}
  let sid = null;
  let timer = null;
  let lastInput = Date.now();
  let hiddenSince = document.hidden ? Date.now() : null;
  let screenLocked = false;
  let sent = "";

  function reading() {
    const now = Date.now();
    if (screenLocked) return { state: "locked", idle_seconds: 0 };
    if (hiddenSince !== null) {
      return { state: "idle", idle_seconds: Math.round((now - Math.min(hiddenSince, lastInput)) / 1000) };
    }
    if (now - lastInput >= UNTOUCHED_MS) {
      return { state: "idle", idle_seconds: Math.round((now - lastInput) / 1000) };
    }
    return { state: "active", idle_seconds: 0 };
  }

  async function open(mine) {
    const answer = await mine.api("POST", "v1/me/sessions",
      { client: `board in ${navigator.userAgent.split(" ").pop() || "a browser"}`.slice(0, 80),
        kind: "board" });
    return answer.session.id;
  }

  async function report() {
    const mine = session;
    if (!mine || !mine.current()) return;
    const body = reading();
    try {
      if (sid === null) sid = await open(mine);
      await mine.api("PUT", `v1/me/sessions/${encodeURIComponent(sid)}`, body);
      sent = body.state;
      document.documentElement.dataset.session = sent;
    } catch (err) {
      if (err.status === 404) sid = null; // expired or the server restarted: reopen next
    }
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      await report();
      schedule();
    }, BEAT_MS);
  }

  function changed() {
    if (reading().state !== sent) report();
  }

  function onInput() {
    lastInput = Date.now();
    if (sent !== "active" && hiddenSince === null) changed();
  }

  async function watchIdleDetector() {
    // Only where already granted: the board does not ask for the permission.
    if (!("IdleDetector" in window) || !navigator.permissions) return;
    try {
      const status = await navigator.permissions.query({ name: "idle-detection" });
      if (status.state !== "granted") return;
      const detector = new window.IdleDetector();
      detector.addEventListener("change", () => {
        screenLocked = detector.screenState === "locked";
        if (detector.userState === "active") lastInput = Date.now();
        changed();
      });
      await detector.start({ threshold: UNTOUCHED_MS });
    } catch {
      /* not available here: visibility and input only */
    }
  }

  function close() {
    const mine = session;
    clearTimeout(timer);
    if (mine && sid !== null) {
      mine.api("DELETE", `v1/me/sessions/${encodeURIComponent(sid)}`).catch(() => {});
    }
    sid = null;
    sent = "";
  }

  document.addEventListener("astpresence:session", (ev) => {
    close();
    session = ev.detail && ev.detail.me.user ? ev.detail : null;
    if (session) {
      report();
      schedule();
    }
  });
  document.addEventListener("visibilitychange", () => {
    hiddenSince = document.hidden ? Date.now() : null;
    if (!document.hidden) lastInput = Date.now();
    changed();
  });
  for (const name of ["pointerdown", "pointermove", "keydown", "wheel", "touchstart"]) {
    window.addEventListener(name, onInput, { passive: true });
  }
  window.addEventListener("pagehide", close);
  watchIdleDetector();
})();
