// Presence board: plain JavaScript, no build step, no dependencies.
//
// Data flow: sign in with an API token -> GET v1/me and v1/users -> open the
// WebSocket v1/events (first message carries the token) -> on "hello" load
// v1/presence (events that arrive meanwhile are buffered and replayed on top,
// so nothing is lost between the snapshot and the stream) -> live "presence"
// events update single tiles. On a drop: reconnect with backoff and resume from
// the last seq; the server replays what was missed or sends a snapshot.
//
// All text from the server goes into the page with textContent, never as HTML.
"use strict";

(() => {
  const TOKEN_KEY = "astpresence.token";
  // Seconds, like the daemon's own AMI reconnect loop; jittered by +-20 %.
  const BACKOFF = [1, 2, 4, 8, 16, 32];
  const STATE_LABELS = {
    available: "Available",
    chat: "Chat",
    away: "Away",
    xa: "Extended away",
    dnd: "Do not disturb",
    unavailable: "Unavailable",
    not_set: "Not set",
  };
  const COLOURS = {
    available: "green",
    chat: "green",
    dnd: "red",
    unavailable: "red",
    away: "yellow",
    xa: "yellow",
    not_set: "grey",
  };
  const NOT_SET = {
    state: "not_set", subtype: "", message: "", source: "default", rule: "default",
    actor: "", since: null, pending: false,
  };

  // -- pure helpers (no DOM) ----------------------------------------------

  const ACTIVITY_LABELS = {
    "on-the-phone": "On the phone",
    ringing: "Ringing",
    "on-hold": "On hold",
    offline: "Offline",
    meeting: "In a meeting",
    "out-of-office": "Out of office",
  };

  /** What the person chose, apart from a call or offline overlay (servers before
   * 0.2 send no "chosen": the effective presence is all there is). */
  function chosenOf(p) {
    return p.chosen || { state: p.state, subtype: p.subtype, message: p.message };
  }

  /** What is going on now: on-the-phone, ringing, on-hold, offline, meeting... or "". */
  function activityOf(p) {
    if (typeof p.activity === "string") return p.activity;
    if (p.rule === "offline" || p.rule === "on-the-phone") return p.rule;
    return "";
  }

  function activityLabel(p) {
    const activity = activityOf(p);
    return ACTIVITY_LABELS[activity] || activity.replace(/-/g, " ");
  }

  /** "offline", "on-the-phone" or the chosen state: what the filter and colour use. */
  function statusOf(p) {
    const activity = activityOf(p);
    if (activity === "offline" || activity === "on-the-phone") return activity;
    return chosenOf(p).state;
  }

  function colourOf(p) {
    const status = statusOf(p);
    if (status === "offline") return "grey";
    if (status === "on-the-phone") return "red";
    return COLOURS[chosenOf(p).state] || "grey";
  }

  /** The chosen state's name; the activity beside it, if any. */
  function statusLabel(p) {
    const chosen = chosenOf(p);
    const label = STATE_LABELS[chosen.state] || chosen.state;
    const activity = activityLabel(p);
    return activity ? `${label}, ${activity.toLowerCase()}` : label;
  }

  function formatSince(iso) {
    const at = new Date(iso);
    if (Number.isNaN(at.getTime())) return "";
    const now = new Date();
    const time = at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    if (at.toDateString() === now.toDateString()) return `since ${time}`;
    return `since ${at.toLocaleDateString([], { month: "short", day: "numeric" })} ${time}`;
  }

  function naturalKey(uid) {
    return /^\d+$/.test(uid) ? [0, Number(uid), uid] : [1, 0, uid];
  }

  function compareIds(a, b) {
    const ka = naturalKey(a);
    const kb = naturalKey(b);
    for (let i = 0; i < 3; i += 1) {
      if (ka[i] < kb[i]) return -1;
      if (ka[i] > kb[i]) return 1;
    }
    return 0;
  }

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  // -- elements -----------------------------------------------------------

  const $ = (id) => document.getElementById(id);
  const el = {
    conn: $("conn"),
    whoami: $("whoami"),
    signOut: $("sign-out"),
    signInSection: $("sign-in"),
    signInForm: $("sign-in-form"),
    token: $("token"),
    signInButton: $("sign-in-button"),
    signInError: $("sign-in-error"),
    app: $("app"),
    mine: $("mine"),
    myForm: $("my-form"),
    myState: $("my-state"),
    mySubtype: $("my-subtype"),
    myMessage: $("my-message"),
    myExpiry: $("my-expiry"),
    myStatus: $("my-status"),
    mySubmit: $("my-submit"),
    myClear: $("my-clear"),
    myError: $("my-error"),
    myResult: $("my-result"),
    filterText: $("filter-text"),
    filterState: $("filter-state"),
    count: $("count"),
    board: $("board"),
    stale: $("stale"),
    empty: $("empty"),
    announcer: $("announcer"),
    template: $("tile-template"),
  };

  // -- session state --------------------------------------------------------

  const S = {
    gen: 0, // bumped on sign-in/out; callbacks of an older generation do nothing
    token: null,
    me: null, // {token: {...}, user: {...} | null}
    users: new Map(), // id -> user object from v1/users
    presence: new Map(), // id -> presence object
    tiles: new Map(), // id -> <li>
    ws: null,
    seq: null, // last event seq applied; null = nothing to resume from
    epoch: undefined, // server run id, if the hello carries one
    buffer: null, // events held back while v1/presence loads
    attempt: 0,
    timer: null,
    lastError: "",
    formFilled: false,
    usersRefresh: null,
  };

  function storedToken() {
    try {
      return window.localStorage.getItem(TOKEN_KEY);
    } catch {
      return null; // storage disabled: the user signs in on every visit
    }
  }

  function storeToken(token) {
    try {
      if (token) window.localStorage.setItem(TOKEN_KEY, token);
      else window.localStorage.removeItem(TOKEN_KEY);
    } catch {
      /* storage disabled; nothing to keep */
    }
  }

  // -- HTTP -----------------------------------------------------------------

  async function api(method, path, body) {
    const headers = { Accept: "application/json", Authorization: `Bearer ${S.token}` };
    const init = { method, headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(new URL(path, document.baseURI), init);
    } catch {
      throw new ApiError(0, "cannot reach the presence server");
    }
    let data = null;
    try {
      data = await res.json();
    } catch {
      data = null;
    }
    if (!res.ok) {
      const message = data && typeof data.error === "string" ? data.error : `HTTP ${res.status}`;
      throw new ApiError(res.status, message);
    }
    return data;
  }

  // -- connection status ----------------------------------------------------

  function setConn(status, text) {
    el.conn.dataset.status = status;
    el.conn.textContent = text;
  }

  // -- presence may be stale ------------------------------------------------

  /** Show why the board may be out of date (null: it is live). */
  function setStale(text) {
    el.stale.hidden = !text;
    el.stale.textContent = text || "";
    el.board.classList.toggle("stale", Boolean(text));
  }

  function onLink(link) {
    if (!link || link.state !== "down") {
      setStale(null);
      return;
    }
    const since = link.since ? ` ${formatSince(link.since)}` : "";
    const why = link.reason ? ` (${link.reason})` : "";
    setStale(`The link to Asterisk is down${since}${why}: presence shown may be out of date.`);
  }

  // -- sign in / out --------------------------------------------------------

  function showSignIn(message) {
    el.app.hidden = true;
    el.signInSection.hidden = false;
    el.signOut.hidden = true;
    el.whoami.hidden = true;
    el.signInError.textContent = message || "";
    setConn("signed-out", "Signed out");
  }

  function resetBoard() {
    S.users.clear();
    S.presence.clear();
    S.tiles.clear();
    el.board.replaceChildren();
    S.seq = null;
    S.epoch = undefined;
    S.buffer = null;
    S.attempt = 0;
    S.lastError = "";
    S.formFilled = false;
    setStale(null);
    el.board.setAttribute("aria-busy", "true");
    el.myError.textContent = "";
    el.myResult.textContent = "";
    el.myForm.reset();
    updateCount();
  }

  function stopConnection() {
    if (S.timer !== null) {
      clearTimeout(S.timer);
      S.timer = null;
    }
    if (S.usersRefresh !== null) {
      clearTimeout(S.usersRefresh);
      S.usersRefresh = null;
    }
    if (S.ws !== null) {
      const ws = S.ws;
      S.ws = null;
      ws.close(1000, "signed out");
    }
  }

  function signOut(message) {
    S.gen += 1;
    stopConnection();
    storeToken(null);
    S.token = null;
    S.me = null;
    resetBoard();
    document.dispatchEvent(new CustomEvent("astpresence:session", { detail: null }));
    showSignIn(message);
    el.token.value = "";
    el.token.focus();
  }

  /**
   * Start a session with a token. ``interactive``: typed in just now, so a
   * failure goes back to the form; a stored token instead keeps retrying
   * while the server is unreachable (it may be restarting).
   */
  async function start(token, interactive, attempt = 0) {
    S.gen += 1;
    const gen = S.gen;
    stopConnection();
    resetBoard();
    S.attempt = attempt; // a retry keeps backing off
    S.token = token;
    setConn("connecting", "Connecting…");
    if (!interactive) {
      // A saved token: show no form while it is tried (and retried).
      el.signInSection.hidden = true;
      el.signOut.hidden = false;
    }
    el.signInButton.disabled = true;
    try {
      const me = await api("GET", "v1/me");
      const users = await api("GET", "v1/users");
      const catalogue = await api("GET", "v1/statuses");
      if (gen !== S.gen) return;
      S.me = me;
      storeToken(token);
      showApp();
      setStatuses(catalogue.statuses || []);
      setUsers(users.users || []);
      openSocket(gen);
      // Other panels of the page (calls.js) start with the session.
      document.dispatchEvent(new CustomEvent("astpresence:session", {
        detail: { api, me, statuses: catalogue.statuses || [], current: () => gen === S.gen },
      }));
    } catch (err) {
      if (gen !== S.gen) return;
      if (err.status === 401) {
        signOut(interactive ? `Sign-in failed: ${err.message}`
          : `Your saved token no longer works (${err.message}); sign in again.`);
      } else if (interactive) {
        S.token = null;
        showSignIn(`Sign-in failed: ${err.message}`);
      } else {
        scheduleRetry(gen, err.message, () => start(token, false, S.attempt));
      }
    } finally {
      el.signInButton.disabled = false;
    }
  }

  function showApp() {
    el.signInSection.hidden = true;
    el.app.hidden = false;
    el.signOut.hidden = false;
    const tok = S.me.token || {};
    const user = S.me.user;
    let who;
    if (user) {
      who = user.name ? `${user.name} (${user.id})` : user.id;
    } else {
      who = "no user";
    }
    el.whoami.textContent = `Signed in as ${who} · ${tok.role || "?"}`;
    el.whoami.hidden = false;
    el.mine.hidden = !user;
  }

  /** The named statuses ([[statuses]]) in the picker of my presence. */
  function setStatuses(list) {
    const keep = el.myStatus.firstElementChild; // "Custom"
    el.myStatus.replaceChildren(keep);
    for (const s of list) {
      const option = document.createElement("option");
      option.value = s.id;
      const hours = s.duration ? s.duration / 3600 : 0;
      const lasts = !hours ? "" : hours >= 24 ? ` (${Math.round(hours / 24)} d)`
        : hours >= 1 ? ` (${Math.round(hours)} h)` : ` (${Math.round(hours * 60)} min)`;
      option.textContent = `${s.label}${lasts}`;
      el.myStatus.append(option);
    }
    el.myStatus.closest(".field").hidden = list.length === 0;
  }

  function myId() {
    return S.me && S.me.user ? S.me.user.id : null;
  }

  // -- WebSocket ------------------------------------------------------------

  function socketUrl() {
    const url = new URL("v1/events", document.baseURI);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    return url;
  }

  function openSocket(gen) {
    S.timer = null;
    if (gen !== S.gen) return;
    setConn(S.attempt === 0 ? "connecting" : "reconnecting",
      S.attempt === 0 ? "Connecting…" : "Reconnecting…");
    let ws;
    try {
      ws = new WebSocket(socketUrl());
    } catch (err) {
      scheduleRetry(gen, String(err), () => openSocket(gen));
      return;
    }
    S.ws = ws;
    S.lastError = "";
    ws.addEventListener("open", () => {
      if (ws !== S.ws) return;
      const hello = { token: S.token, subscribe: ["*"] };
      if (S.seq !== null) hello.resume = S.seq;
      ws.send(JSON.stringify(hello));
    });
    ws.addEventListener("message", (ev) => {
      if (ws !== S.ws || gen !== S.gen) return;
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return; // not ours to interpret
      }
      onMessage(gen, ws, msg);
    });
    ws.addEventListener("close", (ev) => {
      if (ws !== S.ws || gen !== S.gen) return; // closed on purpose
      S.ws = null;
      S.buffer = null;
      onDrop(gen, S.lastError || ev.reason || "connection lost");
    });
  }

  function onMessage(gen, ws, msg) {
    switch (msg.type) {
      case "hello": {
        S.attempt = 0;
        setConn("connected", "Connected");
        onLink(msg.link);
        const restarted = (S.seq !== null && typeof msg.seq === "number" && msg.seq < S.seq) ||
          (msg.epoch !== undefined && S.epoch !== undefined && msg.epoch !== S.epoch);
        S.epoch = msg.epoch;
        if (S.seq === null || restarted) {
          // Nothing to resume from (or the server's counter started over):
          // take a full picture, holding back events until it is in.
          loadPresence(gen, ws, msg.seq);
        }
        break;
      }
      case "snapshot":
        replaceAll(msg.presence || []);
        if (typeof msg.seq === "number") S.seq = msg.seq;
        break;
      case "presence":
        if (S.buffer !== null) S.buffer.push(msg);
        else applyEvent(msg, true);
        break;
      case "link":
        onLink(msg);
        break;
      case "shutdown":
        setStale(`The presence server is shutting down ${formatSince(new Date().toISOString())}: ` +
                 "presence shown may be out of date until it is back.");
        break;
      case "error":
        S.lastError = msg.error || "the server refused the event stream";
        setConn("error", `Error: ${S.lastError}`);
        break;
      default:
        break; // newer server, unknown message: ignore
    }
  }

  async function loadPresence(gen, ws, helloSeq) {
    S.buffer = [];
    el.board.setAttribute("aria-busy", "true");
    try {
      const data = await api("GET", "v1/presence");
      if (gen !== S.gen || ws !== S.ws) return;
      replaceAll(data.presence || []);
      el.board.setAttribute("aria-busy", "false");
      const held = S.buffer || [];
      S.buffer = null;
      S.seq = typeof helloSeq === "number" ? helloSeq : 0;
      for (const msg of held) applyEvent(msg, true);
    } catch (err) {
      if (gen !== S.gen) return;
      if (err.status === 401) {
        signOut(`The token was refused: ${err.message}`);
        return;
      }
      S.buffer = null;
      S.seq = null;
      S.lastError = err.message;
      if (ws === S.ws) ws.close(4000, "reload"); // -> onDrop -> reconnect
    }
  }

  async function onDrop(gen, reason) {
    if (el.stale.hidden) {
      setStale(`Disconnected from the presence server ${formatSince(new Date().toISOString())}` +
               `: presence shown may be out of date.`);
    }
    if (S.lastError) {
      // The server said why it hung up; if it is the token, stop retrying.
      try {
        await api("GET", "v1/me");
      } catch (err) {
        if (gen !== S.gen) return;
        if (err.status === 401) {
          signOut(`The token was refused: ${err.message}`);
          return;
        }
      }
      if (gen !== S.gen) return;
    }
    scheduleRetry(gen, reason, () => openSocket(gen));
  }

  function scheduleRetry(gen, reason, fn) {
    if (gen !== S.gen) return;
    const base = BACKOFF[Math.min(S.attempt, BACKOFF.length - 1)];
    const delay = base * (0.8 + Math.random() * 0.4);
    S.attempt += 1;
    setConn("reconnecting", `Reconnecting in ${Math.max(1, Math.round(delay))} s… (${reason})`);
    S.timer = setTimeout(fn, delay * 1000);
  }

  // -- data -> tiles ----------------------------------------------------------

  function setUsers(users) {
    for (const u of users) {
      if (u && typeof u.id === "string") S.users.set(u.id, u);
    }
    for (const uid of S.users.keys()) renderTile(uid);
    reorder();
    updateCount();
    fillMyForm();
  }

  function refreshUsersSoon() {
    if (S.usersRefresh !== null) return;
    const gen = S.gen;
    S.usersRefresh = setTimeout(async () => {
      S.usersRefresh = null;
      try {
        const data = await api("GET", "v1/users");
        if (gen === S.gen) setUsers(data.users || []);
      } catch {
        /* the tile keeps showing the id; the next unknown user tries again */
      }
    }, 500);
  }

  function replaceAll(list) {
    S.presence.clear();
    for (const p of list) {
      if (p && typeof p.user === "string") S.presence.set(p.user, p);
    }
    for (const uid of new Set([...S.users.keys(), ...S.presence.keys()])) renderTile(uid);
    reorder();
    updateCount();
    fillMyForm();
  }

  function applyEvent(msg, live) {
    if (typeof msg.seq === "number" && (S.seq === null || msg.seq > S.seq)) S.seq = msg.seq;
    const p = msg.presence;
    if (!p) return;
    const uid = typeof msg.user === "string" ? msg.user : p.user;
    if (typeof uid !== "string") return;
    const known = S.tiles.has(uid);
    S.presence.set(uid, { ...p, user: uid });
    const li = renderTile(uid);
    updateCount();
    if (!known) {
      reorder();
      if (!S.users.has(uid)) refreshUsersSoon();
    }
    if (live) {
      flash(li);
      announce(uid);
    }
  }

  // The contact card: the name comes with each presence (read from Asterisk),
  // else from the user list.
  function nameOf(uid) {
    const p = S.presence.get(uid);
    const u = S.users.get(uid);
    return (p && p.name) || (u && u.name) || "";
  }

  function displayName(uid) {
    return nameOf(uid) || uid;
  }

  function announce(uid) {
    const p = S.presence.get(uid) || NOT_SET;
    let text = `${displayName(uid)} is now ${statusLabel(p).toLowerCase()}`;
    if (p.message) text += `: ${p.message}`;
    el.announcer.textContent = text;
  }

  function flash(li) {
    li.classList.remove("flash");
    void li.offsetWidth; // restart the animation
    li.classList.add("flash");
  }

  function renderTile(uid) {
    let li = S.tiles.get(uid);
    if (!li) {
      li = el.template.content.firstElementChild.cloneNode(true);
      li.addEventListener("animationend", () => li.classList.remove("flash"));
      S.tiles.set(uid, li);
      el.board.append(li);
    }
    const user = S.users.get(uid) || { id: uid };
    const p = S.presence.get(uid) || NOT_SET;
    const status = statusOf(p);
    const chosen = chosenOf(p);
    li.dataset.user = uid;
    li.dataset.state = chosen.state;
    li.dataset.effective = p.state;
    li.dataset.colour = colourOf(p);
    li.dataset.status = status;
    li.dataset.activity = activityOf(p);
    li.classList.toggle("me", uid === myId());

    const q = (sel) => li.querySelector(sel);
    q(".tile-name").textContent = displayName(uid);
    if (uid === myId()) {
      const you = document.createElement("span");
      you.className = "you";
      you.textContent = " (you)";
      q(".tile-name").append(you);
    }
    q(".tile-ext").textContent = user.extension ? `Ext. ${user.extension}` : "";
    const vm = q(".tile-voicemail");
    const waiting = typeof p.voicemail === "number" ? p.voicemail : 0;
    vm.hidden = waiting === 0;
    vm.textContent = waiting ? `\u2709 ${waiting}` : "";
    vm.title = waiting === 1 ? "1 new voicemail message" : `${waiting} new voicemail messages`;
    // The chosen state, its words, and beside them what is going on now.
    q(".tile-state-text").textContent = STATE_LABELS[chosen.state] || chosen.state;
    const activity = q(".tile-activity");
    activity.textContent = activityLabel(p);
    activity.hidden = activity.textContent === "";
    q(".tile-subtype").textContent = chosen.subtype === activityOf(p) ? "" : chosen.subtype;
    q(".tile-message").textContent = chosen.message;
    // Forwarding FreePBX applies (*72, follow-me), and where calls go by the
    // person's own call-handling rules; a viewer who may not see where only
    // learns that calls are forwarded.
    const fwd = p.forwarding;
    const forwarding = q(".tile-forwarding");
    forwarding.textContent = fwd && fwd.on && fwd.on.length ? forwardingText(fwd) : "";
    forwarding.hidden = forwarding.textContent === "";
    const calls = q(".tile-calls");
    calls.textContent = p.calls || "";
    calls.hidden = calls.textContent === "";
    const since = q(".tile-since");
    if (p.since) {
      since.dateTime = p.since;
      since.textContent = formatSince(p.since);
    } else {
      since.removeAttribute("datetime");
      since.textContent = "";
    }
    applyFilter(li);
    return li;
  }

  function forwardingText(fwd) {
    const parts = [];
    if (fwd.on.includes("unconditional")) {
      parts.push(fwd.unconditional ? `Forwarded to ${fwd.unconditional}` : "Calls forwarded");
    }
    if (fwd.on.includes("busy")) parts.push(fwd.busy ? `if busy: ${fwd.busy}` : "if busy: forwarded");
    if (fwd.on.includes("unavailable")) {
      parts.push(fwd.unavailable ? `if unavailable: ${fwd.unavailable}` : "if unavailable: forwarded");
    }
    if (fwd.on.includes("followme")) {
      parts.push(fwd.followme.length ? `follow-me: ${fwd.followme.join(", ")}` : "follow-me on");
    }
    return `\u21aa ${parts.join("; ")}`;
  }

  function reorder() {
    const ids = [...S.tiles.keys()].sort(compareIds);
    // Users come in the server's order (natural by id); keep it.
    el.board.append(...ids.map((uid) => S.tiles.get(uid)));
  }

  // -- filters ----------------------------------------------------------------

  function matches(li) {
    const uid = li.dataset.user;
    const text = el.filterText.value.trim().toLowerCase();
    const wanted = el.filterState.value;
    if (wanted && li.dataset.status !== wanted) return false;
    if (!text) return true;
    const user = S.users.get(uid) || {};
    return [uid, nameOf(uid), user.extension || ""]
      .some((field) => field.toLowerCase().includes(text));
  }

  function applyFilter(li) {
    li.hidden = !matches(li);
  }

  function applyFilters() {
    for (const li of S.tiles.values()) applyFilter(li);
    updateCount();
  }

  function updateCount() {
    const total = S.tiles.size;
    let shown = 0;
    for (const li of S.tiles.values()) if (!li.hidden) shown += 1;
    const noun = total === 1 ? "person" : "people";
    el.count.textContent = shown === total ? `${total} ${noun}` : `${shown} of ${total} ${noun} shown`;
    el.empty.hidden = !(total > 0 && shown === 0);
  }

  // -- my presence ----------------------------------------------------------------

  function fillMyForm() {
    const uid = myId();
    if (!uid || S.formFilled || !S.presence.has(uid)) return;
    const p = S.presence.get(uid);
    // Only what was set by hand: overlays (on the phone, offline) and timed
    // entries are not something to pick again in this form.
    const chosen = chosenOf(p);
    if (p.source === "manual" || (p.rule === "on-the-phone" && STATE_LABELS[chosen.state])) {
      el.myState.value = chosen.state;
      el.mySubtype.value = chosen.subtype;
      el.myMessage.value = chosen.message;
    }
    S.formFilled = true;
  }

  async function submitMine(ev) {
    ev.preventDefault();
    el.myError.textContent = "";
    el.myResult.textContent = "";
    const body = el.myStatus.value
      ? { status: el.myStatus.value } // a named status: its state, words and duration
      : { state: el.myState.value, subtype: el.mySubtype.value, message: el.myMessage.value };
    const expiry = el.myExpiry.value.trim();
    if (expiry !== "") {
      const minutes = Number(expiry);
      if (!Number.isInteger(minutes) || minutes < 1) {
        el.myError.textContent = "Expiry: a whole number of minutes, 1 or more (or empty).";
        el.myExpiry.focus();
        return;
      }
      body.expires = minutes * 60;
    }
    await sendMine("PUT", body);
  }

  async function clearMine() {
    el.myError.textContent = "";
    el.myResult.textContent = "";
    await sendMine("DELETE");
  }

  async function sendMine(method, body) {
    const gen = S.gen;
    el.mySubmit.disabled = true;
    el.myClear.disabled = true;
    try {
      const p = await api(method, "v1/me/presence", body);
      if (gen !== S.gen) return;
      const uid = (p && p.user) || myId();
      const current = S.presence.get(uid);
      // The event stream normally brings this too; take the answer unless the
      // stream already has something newer.
      if (!current || !current.since || !p.since ||
          Date.parse(p.since) >= Date.parse(current.since)) {
        S.presence.set(uid, { ...p, user: uid });
        renderTile(uid);
        updateCount();
      }
      let text = method === "DELETE" ? `Cleared; now ${statusLabel(p).toLowerCase()}`
        : `Saved: ${statusLabel(p)}`;
      if (body && body.expires) {
        const until = new Date(Date.now() + body.expires * 1000);
        text += ` until ${until.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}`;
      }
      el.myResult.textContent = `${text}.`;
      if (method === "DELETE") {
        S.formFilled = false;
        el.myForm.reset();
        fillMyForm();
      }
    } catch (err) {
      if (gen !== S.gen) return;
      if (err.status === 401) {
        signOut(`The token was refused: ${err.message}`);
        return;
      }
      el.myError.textContent = `Not saved: ${err.message}`;
    } finally {
      el.mySubmit.disabled = false;
      el.myClear.disabled = false;
    }
  }

  // -- wiring -------------------------------------------------------------------

  el.signInForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const token = el.token.value.trim();
    if (!token) {
      el.signInError.textContent = "Enter an API token.";
      el.token.focus();
      return;
    }
    el.signInError.textContent = "";
    start(token, true);
  });
  el.signOut.addEventListener("click", () => signOut(""));
  el.myForm.addEventListener("submit", submitMine);
  el.myClear.addEventListener("click", clearMine);
  // Once the user edits the form, loading presence must not overwrite it.
  el.myForm.addEventListener("input", () => { S.formFilled = true; });
  el.filterText.addEventListener("input", applyFilters);
  el.filterState.addEventListener("change", applyFilters);
  document.getElementById("filters").addEventListener("submit", (ev) => ev.preventDefault());

  // Signed out in another tab: follow.
  window.addEventListener("storage", (ev) => {
    if (ev.key === TOKEN_KEY && !ev.newValue && S.token) signOut("Signed out in another tab.");
  });
  // Back online: do not wait out the backoff.
  window.addEventListener("online", () => {
    if (S.timer !== null && S.token && S.me) {
      clearTimeout(S.timer);
      S.timer = null;
      openSocket(S.gen);
    }
  });

  const saved = storedToken();
  if (saved) start(saved, false);
  else showSignIn("");
})();
