// The playground: one session in the editor, autosaved; runs streamed into the output pane.

import {
  api,
  describeError,
  getToken,
  register,
  sessionState,
  setToken,
  signIn,
  signOut,
  signedInUser,
} from "./api.js";
import { Autosaver } from "./autosave.js";
import { createEditor } from "./editor.js";
import { FileTabs } from "./files.js";
import { HistoryView } from "./history.js";
import { isSample, sampleFor } from "./languages.js";
import { OutputView } from "./output.js";
import { ShareDialog, redeemFromUrl } from "./share.js";
import { ExecutionStream, isTerminal } from "./stream.js";
import { TestsPanel } from "./tests.js";
import { VersionsPanel } from "./versions.js";

const $ = (id) => document.getElementById(id);
const LAST_LANGUAGE = "livecode.language";
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

const state = {
  sessionId: null,
  language: null,
  languages: new Map(), // id -> {id, name, version, available}
  running: false,
  needsToken: false,
  live: null, // a LiveSession while co-editing
  readOnly: false, // a viewer of a shared session
  executionId: null, // the run being followed, for the Stop button
};

const output = new OutputView();
const history = new HistoryView({ onSelect: (id) => showRun(id) });
const tests = new TestsPanel({ onRun: () => run({ withTests: true }) });
const versions = new VersionsPanel({
  getSession: () => ({
    sessionId: state.sessionId,
    // Pending edits are saved first: a checkpoint holds them, a restore names the version after them.
    flush: async () => {
      await saver.flush();
      return saver.version;
    },
  }),
  onRestored: (session) => openSession(session),
  onError: (prefix, err) => showApiError(prefix, err, "versions"),
});
let editor;
let tabs;
let saver;
let stream = null;
let shareDialog;

// --- Messages --------------------------------------------------------------------------------

let messageSource = null;

/** Show the banner. `source` tags it so the code that raised it can clear it later. */
function showMessage(text, { kind = "warn", source = null, actions = [] } = {}) {
  messageSource = source;
  $("message").dataset.kind = kind;
  $("message-text").textContent = text;
  const box = $("message-actions");
  box.textContent = "";
  for (const { label, id, onClick } of actions) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = label;
    if (id) b.id = id;
    b.addEventListener("click", onClick);
    box.append(b);
  }
  $("message").hidden = false;
}

function hideMessage(source) {
  if (source === undefined || source === messageSource) {
    $("message").hidden = true;
    messageSource = null;
  }
}

function showApiError(prefix, err, source) {
  if (err && err.status === 401) needSignIn();
  showMessage(`${prefix}: ${describeError(err)}`, { kind: "error", source });
}

// --- Signing in ------------------------------------------------------------------------------

/** The server wants an account: offer the sign-in form (once a 401 has said so). */
function needSignIn() {
  state.needsToken = true;
  $("account").hidden = true;
  $("sign-in").hidden = false;
}

function showAccount() {
  const name = signedInUser();
  $("account").hidden = !name;
  $("account-name").textContent = name ? `Signed in as ${name}` : "";
}

async function submitSignIn(e, creating = false) {
  if (e) e.preventDefault();
  const user = $("sign-in-user").value.trim();
  const password = $("sign-in-password").value;
  $("sign-in-error").textContent = "";
  if (!user || !password) {
    $("sign-in-error").textContent = "Enter a username and a password.";
    return;
  }
  try {
    if (creating) await register(user, password);
    else await signIn(user, password);
  } catch (err) {
    $("sign-in-error").textContent = describeError(err);
    return;
  }
  // Start again signed in: a shared session in the URL opens now.
  location.reload();
}

async function doSignOut() {
  await signOut();
  location.href = "/";
}

// --- Saving ----------------------------------------------------------------------------------

function onSaveState(kind, info = {}) {
  const el = $("save-state");
  el.dataset.state = kind;
  if (kind === "new") el.textContent = "Not saved yet";
  else if (kind === "dirty") el.textContent = "Unsaved changes";
  else if (kind === "saving") el.textContent = "Saving…";
  else if (kind === "saved") {
    el.textContent = `Saved v${info.version}`;
    hideMessage("save");
  } else if (kind === "conflict") {
    el.textContent = "Not saved: version conflict";
    showMessage(
      `This session was changed elsewhere (the server now has version ${info.serverVersion}), so your ` +
        "latest edits were not saved. Load the server's version, or keep yours and overwrite it.",
      {
        kind: "error",
        source: "save",
        actions: [
          { label: "Load server's version", id: "conflict-reload", onClick: reloadServerVersion },
          { label: "Keep mine", id: "conflict-overwrite", onClick: () => saver.overwrite() },
        ],
      },
    );
  } else if (kind === "live") {
    el.textContent = info.version ? `Live · saved v${info.version}` : "Live";
    hideMessage("save");
  } else if (kind === "offline") {
    el.textContent = "Live · reconnecting…";
  } else if (kind === "error") {
    el.textContent = "Not saved";
    const retry = info.error && info.error.transient ? " Retrying…" : " It will be saved on your next edit.";
    showApiError("Autosave failed", info.error, "save");
    $("message-text").textContent += retry;
  }
}

async function reloadServerVersion() {
  try {
    const session = await saver.takeServerVersion();
    tabs.load(session, defaultPath(session.language));
    saver.attach(session, tabs.snapshot());
  } catch (err) {
    showApiError("Could not load the server's version", err, "save");
  }
}

async function createSession(text) {
  const body = { language: state.language, ...FileTabs.body(text, defaultPath(state.language)) };
  const session = await api("POST", "/api/v1/code-sessions", body);
  state.sessionId = session.session_id;
  window.history.replaceState(null, "", sessionUrl(session.session_id));
  tests.adopt(session.session_id);
  sessionOpened();
  return session;
}

function hasUnsaved() {
  if (state.live) return false; // the server writes the shared document
  if (saver.sessionId === null) return tabs.multi || !isSample(editor.getText());
  return saver.dirty || saver.timer !== null || saver.inflight !== null;
}

// --- Languages -------------------------------------------------------------------------------

function fillLanguages(list) {
  const select = $("language");
  select.textContent = "";
  for (const lang of list) {
    state.languages.set(lang.id, lang);
    const opt = document.createElement("option");
    opt.value = lang.id;
    opt.disabled = !lang.available;
    opt.textContent = lang.available
      ? `${lang.name}${lang.version ? ` (${lang.version})` : ""}`
      : `${lang.name} (not installed)`;
    select.append(opt);
  }
}

// Where a single-file program lives, per language (GET /api/v1/languages says; these if it failed).
const DEFAULT_PATHS = { python: "main.py", javascript: "main.js", c: "main.c", cpp: "main.cpp", java: "Main.java",
  go: "main.go", rust: "main.rs", bash: "main.sh" };

function defaultPath(id) {
  return (state.languages.get(id) || {}).source_file || DEFAULT_PATHS[id] || "main.txt";
}

function languageName(id) {
  return (state.languages.get(id) || { name: id }).name;
}

function defaultLanguage() {
  const available = [...state.languages.values()].filter((l) => l.available).map((l) => l.id);
  let last = null;
  try {
    last = localStorage.getItem(LAST_LANGUAGE);
  } catch {
    // Storage disabled.
  }
  return [last, "python", available[0]].find((id) => id && available.includes(id)) || available[0] || "python";
}

function showLanguage(id) {
  const select = $("language");
  if (![...select.options].some((o) => o.value === id)) {
    // A session in a language this server no longer lists: show it rather than misreport.
    const opt = document.createElement("option");
    opt.value = id;
    opt.textContent = `${id} (not listed)`;
    select.append(opt);
  }
  select.value = id;
  state.language = id;
  editor.setLanguage(id);
}

async function changeLanguage() {
  const select = $("language");
  const next = select.value;
  const prev = state.language;
  if (next === prev) return;
  try {
    localStorage.setItem(LAST_LANGUAGE, next);
  } catch {
    // Storage disabled.
  }
  const text = editor.getText();
  const source = isSample(text) ? sampleFor(next) : text;
  if (state.sessionId === null) {
    if (!tabs.multi) tabs.single(source, defaultPath(next));
    showLanguage(next);
    return;
  }
  // A session's language is fixed when it is created: continue in a new session, and leave the
  // old one (still at its own link) as it was.
  select.disabled = true;
  try {
    await saver.flush();
    // Several files go over as they are; one file moves to the new language's default path.
    const program = tabs.multi ? { files: tabs.files, entry: tabs.entry } : { source_code: source };
    const session = await api("POST", "/api/v1/code-sessions", { language: next, ...program });
    window.history.pushState(null, "", sessionUrl(session.session_id));
    tests.copyTo(session.session_id);
    await openSession(session);
    $("language-note").textContent = `New ${languageName(next)} session; the ${languageName(prev)} one keeps its own link.`;
    $("language-note").hidden = false;
  } catch (err) {
    select.value = prev;
    showApiError("Could not switch language", err, "language");
  } finally {
    select.disabled = state.running;
  }
}

// --- Sessions --------------------------------------------------------------------------------

/** A session's shareable address. `/?session=` rather than `/s/<id>` (also served) because "/" is
 * reachable without signing in on servers that require accounts, so the page can ask for a token. */
function sessionUrl(id) {
  return `/?session=${encodeURIComponent(id)}`;
}

function sessionIdFromUrl() {
  const match = location.pathname.match(/^\/s\/([^/]+)\/?$/);
  const id = match ? decodeURIComponent(match[1]) : new URLSearchParams(location.search).get("session");
  return id && UUID.test(id) ? id : null;
}

function sessionOpened() {
  $("share").disabled = false;
  $("collab").disabled = false;
  document.title = `LiveCode · ${languageName(state.language)} session`;
}

function startNew() {
  state.sessionId = null;
  const lang = defaultLanguage();
  tabs.single(sampleFor(lang), defaultPath(lang));
  showLanguage(lang);
  output.clear();
  output.setStatus(null);
  history.load(null);
  tests.load(null);
  versions.refresh();
  onSaveState("new");
}

async function openSession(session) {
  stopLive();
  state.sessionId = session.session_id;
  tabs.load(session.files ? session : { files: [{ path: defaultPath(session.language), content: session.source_code }] },
    defaultPath(session.language));
  showLanguage(session.language);
  saver.attach(session, tabs.snapshot());
  sessionOpened();
  if (new URLSearchParams(location.search).get("live") === "1") await goLive();
  output.clear();
  output.setStatus(null);
  tests.load(session.session_id);
  versions.refresh();
  $("language-note").hidden = true;
  let newest = null;
  try {
    newest = await history.load(session.session_id);
  } catch (err) {
    showApiError("Could not load the run history", err, "history");
  }
  if (!newest) return;
  if (isTerminal(newest.status)) {
    history.select(newest.execution_id);
    showFinished(newest, { redraw: true });
  } else {
    // A run still in flight (started before a reload, or from another tab): follow it.
    track(newest.execution_id);
  }
}

// --- Running ---------------------------------------------------------------------------------

function setRunning(on) {
  state.running = on;
  const run = $("run");
  run.disabled = on;
  run.textContent = on ? "Running…" : "Run";
  run.setAttribute("aria-busy", String(on));
  $("language").disabled = on;
  const stop = $("stop");
  stop.hidden = !on || state.readOnly; // a viewer follows runs, never stops them
  stop.disabled = false;
  stop.textContent = "Stop";
  history.setDisabled(on);
  tests.setDisabled(on);
}

/** A finished execution in the output pane and, for a run of test cases, the tests panel. */
function showFinished(ex, options = {}) {
  output.showExecution(ex, options);
  if (ex.summary) {
    tests.showExecution(ex);
    output.note(`[${ex.summary.passed} of ${ex.summary.total} test cases passed: see Test cases]`);
  }
}

async function run({ withTests = false } = {}) {
  // Disable before the first await, so a double click (or Ctrl+Enter held down) starts one run.
  if (state.running || !editor) return;
  setRunning(true);
  hideMessage("run");
  try {
    if (state.live) {
      // The shared document is written into the session first, so the run is of what all see.
      if ((await state.live.flush()) === null) {
        showMessage("Not run: the live document could not be saved (connection lost?); try again.", { source: "run" });
        return;
      }
    } else if (!(await saver.flush())) {
      // A conflict already shows its own choices; anything else is said here, with the cause.
      if (saver.error) showApiError("Not run: the code could not be saved", saver.error, "save");
      else if (!saver.conflict) showMessage("Not run: the code is still being saved; try again.", { source: "run" });
      return;
    }
    // A run of test cases takes each case's input; the stdin box and live input are for plain runs.
    const interactive = !withTests && $("interactive").checked;
    const body = {};
    if (withTests) {
      body.tests = tests.cases();
      body.compare = tests.compare();
      tests.clearVerdicts();
    } else if ($("stdin").value) body.stdin = $("stdin").value;
    if (interactive) body.interactive = true;
    let executionId;
    try {
      const queued = await api("POST", `/api/v1/executions/session/${state.sessionId}/execute`, body);
      executionId = queued.execution_id;
      if (state.live) state.live.announceRun(executionId); // the others follow it too
    } catch (err) {
      const active = err.code === "EXECUTION_IN_PROGRESS" && err.details.active_execution_id;
      if (!active) throw err;
      showMessage("This session already had a run in progress (another tab?); showing that one.", { source: "run" });
      executionId = active;
    }
    await follow(executionId, { interactive });
  } catch (err) {
    showApiError("Run failed", err, "run");
  } finally {
    setRunning(false);
    refreshHistory();
  }
}

/** Follow a run already in flight, with the Run button disabled until it ends. */
async function track(executionId) {
  setRunning(true);
  try {
    await follow(executionId);
  } catch (err) {
    showApiError("Lost track of the run", err, "run");
  } finally {
    setRunning(false);
    refreshHistory();
  }
}

/** The Stop button: the run gets SIGKILL (or, still queued, never runs); its end arrives as usual. */
async function stopRun() {
  const executionId = state.executionId;
  if (!executionId) return;
  const stop = $("stop");
  stop.disabled = true;
  stop.textContent = "Stopping…";
  try {
    await api("POST", `/api/v1/executions/${executionId}/cancel`);
  } catch (err) {
    if (err.code === "EXECUTION_FINISHED") return; // it ended on its own meanwhile
    stop.disabled = false;
    stop.textContent = "Stop";
    showApiError("Could not stop the run", err, "run");
  }
}

async function follow(executionId, { interactive = false } = {}) {
  state.executionId = executionId;
  output.clear();
  output.setStatus("QUEUED");
  history.current = executionId;
  refreshHistory();
  let result = null;
  const s = new ExecutionStream(executionId, {
    onEvent(event, data) {
      if (event === "status") {
        if (data.attempt > 1) {
          // The run started over on another worker (the first one was lost): its output restarts too.
          output.clear();
          output.note(`[the run restarted on another worker: attempt ${data.attempt}]`);
        }
        output.setStatus(data.status);
      } else if (event === "error") {
        const err = data.error || {};
        output.note(`[${err.message || err.code || "error"}]`);
      } else if (event === "output") {
        const kind = data.stream === "stderr" ? "stderr" : data.stream === "compile" ? "compile" : "stdout";
        output.append(kind, data.text);
      } else if (event === "test_started") {
        tests.started(data.index);
      } else if (event === "test_finished") {
        tests.finished(data);
      } else if (event === "result") {
        result = data;
        showFinished(data);
      }
    },
    onInputReady(ready) {
      $("live-input").hidden = !ready;
      if (ready) $("live-line").focus();
    },
    onTransport(transport) {
      $("output").dataset.transport = transport;
    },
  });
  stream = s;
  try {
    s.start({ interactive });
    await s.done;
  } finally {
    s.close();
    if (stream === s) stream = null;
    if (state.executionId === executionId) state.executionId = null;
    $("live-input").hidden = true;
  }
  if (!result || !result.status) {
    result = await api("GET", `/api/v1/executions/${executionId}`);
    showFinished(result);
  }
  if (interactive && $("output").dataset.transport !== "websocket") {
    output.note("(this server did not offer interactive input; the run used the stdin box only)");
  }
}

async function refreshHistory() {
  if (!state.sessionId) return;
  versions.refresh();
  try {
    await history.load(state.sessionId);
  } catch {
    // The history is a convenience; a failed refresh keeps the old list.
  }
}

async function showRun(executionId) {
  if (state.running) return;
  try {
    const execution = await api("GET", `/api/v1/executions/${executionId}`);
    history.select(executionId);
    if (!isTerminal(execution.status)) {
      track(executionId);
      return;
    }
    output.clear();
    showFinished(execution, { redraw: true });
  } catch (err) {
    showApiError("Could not load that run", err, "history");
  }
}

function sendLine(event) {
  event.preventDefault();
  const input = $("live-line");
  const text = `${input.value}\n`;
  if (stream && stream.sendStdin(text)) {
    output.append("stdin", text);
    input.value = "";
  }
}

// --- Files -----------------------------------------------------------------------------------

function openFileForm(mode) {
  const form = $("file-form");
  form.dataset.mode = mode;
  form.hidden = false;
  const input = $("file-name");
  input.value = mode === "rename" ? tabs.files[tabs.active].path : "";
  input.focus();
}

function submitFileForm(event) {
  event.preventDefault();
  const form = $("file-form");
  const name = $("file-name").value.trim();
  const done = form.dataset.mode === "rename" ? tabs.rename(name) : tabs.add(name);
  if (done) {
    form.hidden = true;
    hideMessage("files");
  }
}

function fileError(text) {
  showMessage(text, { kind: "error", source: "files" });
}

function programChanged() {
  hideMessage("files");
  saver.changed();
}

// --- Start-up --------------------------------------------------------------------------------

async function copyLink() {
  const url = location.href;
  try {
    await navigator.clipboard.writeText(url);
    $("share").textContent = "Link copied";
    setTimeout(() => ($("share").textContent = "Copy link"), 2000);
  } catch {
    showMessage(`This session's address: ${url}`, { source: "share" });
  }
}

// --- Live co-editing ----------------------------------------------------------------------------

async function myRole() {
  const me = signedInUser();
  if (!me) return "owner"; // no accounts: the one local user
  try {
    const { items } = await api("GET", `/api/v1/code-sessions/${state.sessionId}/members`);
    const mine = items.find((m) => m.username === me);
    return mine ? mine.role : "viewer";
  } catch {
    return "owner";
  }
}

function showPeers(peers) {
  const box = $("presence");
  box.textContent = "";
  for (const p of peers) {
    const span = document.createElement("span");
    span.className = "peer";
    span.dataset.name = p.name;
    const dot = document.createElement("span");
    dot.className = "dot";
    dot.style.background = p.color;
    span.append(dot, p.self ? `${p.name} (you)` : p.name);
    box.append(span);
  }
  box.hidden = peers.length === 0;
}

/** Switch the open session to live co-editing: the editor edits the shared document. */
async function goLive() {
  if (state.live || !state.sessionId) return;
  await saver.flush(); // what was typed before goes into the document through the source
  const url = new URL(location.href);
  if (url.searchParams.get("live") !== "1") {
    url.searchParams.set("live", "1");
    window.history.replaceState(null, "", url.pathname + url.search);
  }
  const role = await myRole();
  state.readOnly = role === "viewer";
  // Yjs and its bindings load on demand, as languages do: the first load stays small.
  const { LiveSession } = await import("./collab.js");
  const live = new LiveSession(state.sessionId, {
    onSaved: (version) => onSaveState("live", { version }),
    onPeers: showPeers,
    onRun: (executionId) => {
      if (!state.running) track(executionId);
    },
    onError: (code, message) => showMessage(`Live editing: ${message} (${code})`, { kind: "error", source: "live" }),
    onStatus: (connected) => onSaveState(connected ? "live" : "offline"),
  });
  state.live = live;
  onSaveState("live");
  await live.ready();
  if (state.live !== live) return;
  showLiveFiles(live);
  live.onFilesChanged(() => state.live === live && showLiveFiles(live));
  tabs.liveSwitch = (path) => bindFile(live, path);
  tabs.live = state.readOnly ? null : live;
  editor.setEditable(!state.readOnly);
  $("run").disabled = state.readOnly || state.running;
  document.body.dataset.live = "true";
  if (state.readOnly) document.body.dataset.viewer = "true";
}

/** The tabs show the shared document's files (in the program's order); the editor edits the active one. */
function showLiveFiles(live) {
  const paths = live.paths();
  const order = tabs.files.map((f) => f.path).filter((p) => paths.includes(p));
  const all = [...order, ...paths.filter((p) => !order.includes(p)).sort()];
  const active = tabs.files[tabs.active] && all.includes(tabs.files[tabs.active].path) ? tabs.files[tabs.active].path : null;
  editor.setCollab([]);
  const entry = live.entry() && all.includes(live.entry()) ? live.entry() : tabs.entry;
  tabs.load({ files: all.map((path) => ({ path, content: live.text(path) })), entry }, defaultPath(state.language));
  if (active) tabs.active = all.indexOf(active);
  tabs.render();
  bindFile(live, tabs.files[tabs.active].path);
}

function bindFile(live, path) {
  editor.setCollab([]);
  editor.setText(live.text(path));
  editor.setCollab(live.extension(path));
}

function stopLive() {
  if (!state.live) return;
  tabs.liveSwitch = null;
  tabs.live = null;
  editor.setCollab([]);
  state.live.destroy();
  state.live = null;
  $("presence").hidden = true;
  delete document.body.dataset.live;
  delete document.body.dataset.viewer;
}

function wire() {
  $("run").addEventListener("click", () => run());
  $("stop").addEventListener("click", stopRun);
  $("language").addEventListener("change", changeLanguage);
  $("share").addEventListener("click", copyLink);
  shareDialog = new ShareDialog({ onLive: goLive });
  $("collab").addEventListener("click", () => shareDialog.open(state.sessionId, { live: Boolean(state.live) }));
  $("live-input").addEventListener("submit", sendLine);
  $("live-eof").addEventListener("click", () => stream && stream.sendEof() && output.note("[stdin closed]"));
  $("stdin").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      run();
    }
  });
  $("settings-form").addEventListener("submit", (e) => e.preventDefault());
  $("sign-in").addEventListener("submit", (e) => submitSignIn(e));
  $("register").addEventListener("click", () => submitSignIn(null, true));
  $("sign-out").addEventListener("click", doSignOut);
  $("file-add").addEventListener("click", () => openFileForm("add"));
  $("file-rename").addEventListener("click", () => openFileForm("rename"));
  $("file-delete").addEventListener("click", () => tabs.remove());
  $("file-entry").addEventListener("click", () => tabs.makeEntry());
  $("file-form").addEventListener("submit", submitFileForm);
  $("file-cancel").addEventListener("click", () => ($("file-form").hidden = true));
  showAccount();
  const token = $("token");
  token.value = getToken();
  token.addEventListener("change", () => {
    setToken(token.value.trim());
    if (state.needsToken) location.reload();
  });
  window.addEventListener("popstate", () => location.reload());
  window.addEventListener("beforeunload", (e) => {
    if (!editor || !hasUnsaved()) return;
    saver.flush();
    e.preventDefault();
    e.returnValue = "";
  });
}

async function init() {
  wire();
  editor = createEditor($("editor"), {
    onChange: () => {
      tabs.edited();
      if (!state.live) saver.changed(); // live, the server writes the shared document
    },
    onRun: () => run(),
  });
  tabs = new FileTabs({ bar: $("file-tabs"), editor, onChange: programChanged, onError: fileError });
  saver = new Autosaver({
    getText: () => tabs.snapshot(),
    create: createSession,
    onState: onSaveState,
    toBody: (text) => FileTabs.body(text, defaultPath(state.language)),
  });
  try {
    fillLanguages(await api("GET", "/api/v1/languages"));
  } catch (err) {
    showApiError("Could not load the language list", err, "languages");
  }
  if (!getToken()) {
    // Does this server want an account? A made-up session id answers 401 if so, 404 if not.
    try {
      await api("GET", "/api/v1/code-sessions/00000000-0000-0000-0000-000000000000");
    } catch (err) {
      if (err.status === 401) needSignIn();
    }
  }
  const sessionId = sessionIdFromUrl();
  if (sessionId && getToken()) {
    try {
      await redeemFromUrl(); // a share link's token: become a member first
    } catch (err) {
      showApiError("Could not join with that link", err, "join");
    }
  }
  if (sessionId) {
    try {
      await openSession(await api("GET", `/api/v1/code-sessions/${sessionId}`));
    } catch (err) {
      if (err.status === 404) {
        window.history.replaceState(null, "", "/");
        startNew();
        showMessage("That session does not exist (it may have been deleted); this is a new one.", { kind: "error" });
      } else if (err.status === 401) {
        // A shared link opened while signed out (or after the sign-in expired): say so, and keep
        // the link, rather than putting a sample in its place.
        needSignIn();
        editor.setText("");
        const why = sessionState.expired || getToken() ? "Your sign-in has expired" : "This shared session needs sign-in";
        showMessage(`${why}: sign in (top right) to open it; the link keeps working.`, {
          kind: "error",
          source: "session",
        });
        $("language").disabled = true;
        $("run").disabled = true;
        document.body.dataset.ready = "true";
        return;
      } else {
        startNew();
        showApiError("Could not open the session", err, "session");
      }
    }
  } else {
    startNew();
  }
  $("language").disabled = state.running || Boolean(state.live);
  $("run").disabled = state.running || state.readOnly;
  editor.setEditable(!state.readOnly);
  document.body.dataset.ready = "true";
}

init();
