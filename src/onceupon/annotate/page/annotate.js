// The annotation page: one story at a time, rated by keyboard (or by clicking).
// State lives on the server (the answers file); this page only remembers where it is.
// document.body.dataset.state is "ready" when the page waits for the annotator, "busy"
// while it talks to the server (keys are ignored then), "login" or "done".
"use strict";

const params = new URLSearchParams(location.search);
const token = params.get("token");
const $ = (id) => document.getElementById(id);

let criteria = [];   // [{name, title, description, levels: [[score, meaning], ...]}]
let name = null;     // the annotator
let history = [];    // keys of the stories this annotator answered, in order
let total = 0;       // how many stories this annotator will see
let pos = 0;         // position in history; history.length is the next new story
let story = null;    // {key, prompt, continuation, answer} on screen, or null when done
let values = {};     // criterion -> level chosen for the story on screen
let cursor = 0;      // the criterion the next digit rates
let typed = 0;       // digits typed on this story (Backspace erases them first)
let flagged = false;

async function api(path, body) {
  const url = new URL(path, location.href);
  if (token) url.searchParams.set("token", token);
  const response = await fetch(url, body === undefined ? {} : {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
  });
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail; } catch (e) { /* not JSON */ }
    throw new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
  }
  return response.json();
}

function setState(state) { document.body.dataset.state = state; }

function show(section) {
  for (const id of ["login", "task", "done"]) $(id).hidden = id !== section;
}

function buildRubric() {
  const box = $("rubric");
  criteria.forEach((c, i) => {
    const div = document.createElement("div");
    div.className = "criterion";
    div.id = "criterion-" + c.name;
    const title = document.createElement("h3");
    title.textContent = `${i + 1}. ${c.title}`;
    const about = document.createElement("p");
    about.className = "about";
    about.textContent = c.description;
    const levels = document.createElement("div");
    levels.className = "levels";
    for (const [score, meaning] of c.levels) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "level";
      b.dataset.criterion = c.name;
      b.dataset.score = score;
      const num = document.createElement("span");
      num.className = "score";
      num.textContent = score;
      const text = document.createElement("span");
      text.textContent = meaning;
      b.append(num, text);
      b.addEventListener("click", () => { if (ready()) choose(i, score); });
      levels.append(b);
    }
    div.append(title, about, levels);
    box.append(div);
  });
}

function render() {
  criteria.forEach((c, i) => {
    const div = $("criterion-" + c.name);
    div.classList.toggle("current", i === cursor);
    for (const b of div.querySelectorAll(".level")) {
      b.classList.toggle("chosen", values[c.name] === Number(b.dataset.score));
    }
  });
  $("flagbox").hidden = !flagged;
  $("flag").classList.toggle("on", flagged);
  $("back").disabled = pos === 0;
  const n = Math.max(total, pos + 1);
  $("progress").textContent = story ? `story ${pos + 1} of ${n}` : `${history.length} of ${total} answered`;
}

function say(text) { $("message").textContent = text || ""; }

function ready() { return document.body.dataset.state === "ready"; }

async function begin(who) {
  name = who;
  localStorage.setItem("onceupon-annotator", who);
  $("who-name").textContent = who;
  $("who").hidden = false;
  setState("busy");
  try {
    const view = await api("api/annotator?name=" + encodeURIComponent(who));
    history = view.history;
    total = view.total;
  } catch (e) {
    show("login");
    setState("login");
    say("The server did not answer: " + e.message);
    return;
  }
  await showStory(history.length);  // resume where this annotator left off
}

async function showStory(p) {
  setState("busy");
  say("");
  let next;
  try {
    next = p < history.length
      ? await api(`api/story?name=${encodeURIComponent(name)}&key=${history[p]}`)
      : await api("api/next", {name});
  } catch (e) {  // the server stopped or refused: say so and let the annotator retry
    say("The server did not answer (" + e.message + "); nothing is lost, try again.");
    setState(story ? "ready" : "login");
    return;
  }
  if (p >= history.length) {
    if (next.done) {
      pos = history.length;
      story = null;
      show("done");
      render();
      setState("done");
      return;
    }
  }
  pos = p;
  story = next;
  const answer = story.answer;
  values = answer && answer.scores ? {...answer.scores} : {};
  flagged = !!(answer && answer.flagged);
  $("comment").value = answer ? answer.comment || "" : "";
  cursor = 0;
  typed = 0;
  $("prompt").textContent = story.prompt;
  $("continuation").textContent = story.continuation;
  document.body.dataset.key = story.key;
  show("task");
  render();
  if (answer && answer.skipped) say("You skipped this story before.");
  setState("ready");
}

function choose(i, score) {
  values[criteria[i].name] = score;
  cursor = Math.min(i + 1, criteria.length);
  render();
}

async function save(skip) {
  const missing = criteria.filter((c) => values[c.name] === undefined);
  if (!skip && missing.length) {
    cursor = criteria.indexOf(missing[0]);
    render();
    say(`Rate every criterion first (missing: ${missing.map((c) => c.title).join(", ")}), or S to skip.`);
    return;
  }
  setState("busy");
  const scores = skip ? null : Object.fromEntries(criteria.map((c) => [c.name, values[c.name]]));
  try {
    const view = await api("api/answer", {
      name, key: story.key, scores, flagged, comment: flagged ? $("comment").value : "",
    });
    history = view.history;
    total = view.total;
  } catch (e) {
    say("Not saved: " + e.message);
    setState("ready");
    return;
  }
  await showStory(history.indexOf(story.key) + 1);
}

function onKey(event) {
  if (event.target.id === "comment") {
    if (event.key === "Enter") { event.preventDefault(); event.target.blur(); }
    if (event.key === "Escape") { flagged = false; event.target.blur(); render(); }
    return;
  }
  if (event.target.tagName === "INPUT" || event.ctrlKey || event.metaKey || event.altKey) return;
  const state = document.body.dataset.state;
  if (state === "done" && event.key === "Backspace" && history.length) {
    event.preventDefault();
    showStory(history.length - 1);
    return;
  }
  if (state !== "ready") return;
  if (/^[0-9]$/.test(event.key)) {
    event.preventDefault();
    const c = criteria[cursor];
    if (!c) { say("Every criterion is rated: Enter saves, Backspace erases."); return; }
    const score = Number(event.key);
    if (!c.levels.some(([s]) => s === score)) { say(`${c.title} goes from ${c.levels[0][0]} to ${c.levels[c.levels.length - 1][0]}.`); return; }
    typed += 1;
    say("");
    choose(cursor, score);
  } else if (event.key === "Backspace") {
    event.preventDefault();
    if (typed > 0) {
      typed -= 1;
      cursor -= 1;
      delete values[criteria[cursor].name];
      render();
    } else if (pos > 0) {
      showStory(pos - 1);
    }
  } else if (event.key === "Enter") {
    event.preventDefault();
    save(false);
  } else if (event.key === "s" || event.key === "S") {
    save(true);
  } else if (event.key === "f" || event.key === "F") {
    event.preventDefault();
    toggleFlag();
  }
}

function toggleFlag() {
  flagged = !flagged;
  render();
  if (flagged) $("comment").focus();
}

async function main() {
  try {
    const setup = await api("api/setup");
    criteria = setup.criteria;
  } catch (e) {
    document.body.textContent = "This page cannot reach its server: " + e.message;
    return;
  }
  buildRubric();
  document.addEventListener("keydown", onKey);
  $("back").addEventListener("click", () => { if (ready() && pos > 0) showStory(pos - 1); });
  $("skip").addEventListener("click", () => { if (ready()) save(true); });
  $("flag").addEventListener("click", () => { if (ready()) toggleFlag(); });
  $("next").addEventListener("click", () => { if (ready()) save(false); });
  $("change").addEventListener("click", () => {
    localStorage.removeItem("onceupon-annotator");
    $("who").hidden = true;
    show("login");
    setState("login");
  });
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const who = $("name").value.trim();
    if (who) begin(who);
  });
  const who = params.get("name") || localStorage.getItem("onceupon-annotator");
  if (who) {
    begin(who);
  } else {
    show("login");
    setState("login");
    $("name").focus();
  }
}

main();
