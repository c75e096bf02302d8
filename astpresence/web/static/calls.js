// "My calls": the signed-in person's call-handling rules (GET/PUT v1/me/call-handling).
// Started by app.js's "astpresence:session" event; everything shown is text, never
// markup. The server checks every rule and the site's forwarding policy; its answer
// (or refusal) is shown as it is.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const el = {
    section: $("calls"), now: $("calls-now"), list: $("calls-rules"), none: $("calls-none"),
    form: $("calls-form"), when: $("calls-when"), callers: $("calls-callers"),
    action: $("calls-action"), to: $("calls-to"), toField: $("calls-to-field"),
    after: $("calls-after"), afterField: $("calls-after-field"), save: $("calls-save"),
    error: $("calls-error"), result: $("calls-result"),
  };
  const STATES = [["away", "away"], ["xa", "extended away"], ["dnd", "on do not disturb"],
    ["available", "available"], ["chat", "free to chat"], ["unavailable", "unavailable"],
    ["any", "anything"]];
  const ON = { busy: "if busy", no_answer: "if not answered", unregistered: "if not registered" };
  let session = null; // {api, me, statuses, current}
  let rules = []; // what will be saved
  let showPresence = null; // the person's own choice, kept as it is on save

  function option(value, text) {
    const o = document.createElement("option");
    o.value = value;
    o.textContent = text;
    return o;
  }

  function describe(rule) {
    const status = session && session.statuses.find((s) => s.id === rule.when);
    const label = STATES.find(([v]) => v === rule.when);
    const when = status ? status.label : (label ? label[1] : rule.when);
    const who = { any: "calls", internal: "colleagues' calls", external: "outside calls" };
    let text = `When I'm ${when}, ${who[rule.callers || "any"]}`;
    if (rule.on) text += ` (${ON[rule.on] || rule.on})`;
    if (rule.action === "forward") {
      text += rule.both ? ` ring me and ${rule.to}` : ` go to ${rule.to}`;
      if (rule.after) text += ` after ${rule.after} s`;
    } else if (rule.action === "voicemail") {
      text += " go to voicemail";
    } else if (rule.action === "ring") {
      text += rule.timeout ? ` ring my phone for ${rule.timeout} s` : " ring my phone";
    } else {
      text += rule.action === "busy" ? " get busy" : " are refused (unavailable)";
    }
    return text;
  }

  function render() {
    el.list.replaceChildren(...rules.map((rule, i) => {
      const li = document.createElement("li");
      const text = document.createElement("span");
      text.textContent = describe(rule);
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "secondary";
      remove.textContent = "Remove";
      remove.setAttribute("aria-label", `Remove: ${describe(rule)}`);
      remove.addEventListener("click", () => {
        rules.splice(i, 1);
        render();
      });
      li.append(text, remove);
      return li;
    }));
    el.none.hidden = rules.length > 0;
  }

  function showAnswer(answer) {
    rules = answer.rules || [];
    showPresence = answer.show_presence === undefined ? null : answer.show_presence;
    const now = answer.now || {};
    const inside = now.internal ? now.internal.summary : "";
    const outside = now.external ? now.external.summary : "";
    el.now.textContent = inside === outside ? `Now: ${inside}.`
      : `Now: colleagues' ${inside}; outside ${outside}.`;
    render();
  }

  function fillWhen() {
    el.when.replaceChildren(...STATES.map(([v, t]) => option(v, t)),
      ...session.statuses.map((s) => option(s.id, `${s.label} (status)`)));
  }

  function fieldsFollowAction() {
    const forward = el.action.value === "forward";
    el.toField.hidden = !forward;
    el.afterField.hidden = !forward;
  }

  function addRule(ev) {
    ev.preventDefault();
    el.error.textContent = "";
    el.result.textContent = "";
    const rule = { when: el.when.value, action: el.action.value };
    if (el.callers.value !== "any") rule.callers = el.callers.value;
    if (rule.action === "forward") {
      const to = el.to.value.trim();
      if (!to) {
        el.error.textContent = "Enter the number or extension calls go to.";
        el.to.focus();
        return;
      }
      rule.to = to;
      const after = el.after.value.trim();
      if (after !== "") {
        const seconds = Number(after);
        if (!Number.isInteger(seconds) || seconds < 0 || seconds > 300) {
          el.error.textContent = "After: whole seconds from 0 to 300 (or empty).";
          el.after.focus();
          return;
        }
        if (seconds) rule.after = seconds;
      }
    }
    rules.push(rule);
    render();
    el.result.textContent = "Added; save to apply.";
  }

  async function save() {
    if (!session) return;
    const mine = session;
    el.error.textContent = "";
    el.result.textContent = "";
    el.save.disabled = true;
    try {
      const answer = await mine.api("PUT", "v1/me/call-handling",
        { rules, show_presence: showPresence });
      if (session !== mine || !mine.current()) return;
      showAnswer(answer);
      el.result.textContent = "Saved.";
    } catch (err) {
      if (session === mine) el.error.textContent = `Not saved: ${err.message}`;
    } finally {
      el.save.disabled = false;
    }
  }

  async function start(detail) {
    session = detail;
    el.section.hidden = true;
    el.error.textContent = "";
    el.result.textContent = "";
    rules = [];
    if (!detail || !detail.me.user) return;
    try {
      const answer = await detail.api("GET", "v1/me/call-handling");
      if (session !== detail || !detail.current() || !answer.enabled) return;
      fillWhen();
      showAnswer(answer);
      el.section.hidden = false;
    } catch {
      /* not offered: the section stays hidden */
    }
  }

  document.addEventListener("astpresence:session", (ev) => start(ev.detail));
  el.form.addEventListener("submit", addRule);
  el.save.addEventListener("click", save);
  el.action.addEventListener("change", fieldsFollowAction);
  fieldsFollowAction();
})();
