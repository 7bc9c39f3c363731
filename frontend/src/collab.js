// Live co-editing: the session's Yjs document over the server's WebSocket (y-websocket speaks the
// y-protocols sync and awareness messages; the server is pycrdt), bound to CodeMirror by
// y-codemirror.next, with presence (who is here, their cursors and selections).

import * as decoding from "lib0/decoding";
import * as encoding from "lib0/encoding";
import { yCollab } from "y-codemirror.next";
import { WebsocketProvider } from "y-websocket";
import * as Y from "yjs";
import { ensureFreshToken, getToken, signedInUser } from "./api.js";

const LIVECODE = 100; // the server's own message type: {"type": "saved" | "error", ...} as JSON text
const FILES = "files"; // a Y.Map of Y.Text by file path (a single-source session: its default path)
const META = "meta"; // a Y.Map: "entry", the file that runs (absent: the session's own)
const COLORS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#008080", "#9a6324", "#800000"];

function wsBase() {
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/v1/code-sessions`;
}

function pickColor(seed) {
  let h = 0;
  for (const ch of seed) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
  return COLORS[h % COLORS.length];
}

export class LiveSession {
  /**
   * `onSaved(version)`: the document was written into the session's source.
   * `onPeers(list)`: who is here, [{name, color, self}].
   * `onRun(executionId)`: another participant started a run.
   * `onError(code, message)`: the server refused something (read-only, too large, deleted).
   * `onStatus(connected)`.
   */
  constructor(sessionId, handlers = {}) {
    this.sessionId = sessionId;
    this.handlers = handlers;
    this.doc = new Y.Doc();
    this.savedWaiters = [];
    this.seenRuns = new Set();
    const params = {};
    if (getToken()) params.access_token = getToken();
    this.provider = new WebsocketProvider(wsBase(), `${sessionId}/ws`, this.doc, {
      params,
      disableBc: true, // every change goes through the server, which writes it into the session
      maxBackoffTime: 5000,
    });
    this.provider.messageHandlers[LIVECODE] = (_encoder, decoder) => this.onServerMessage(decoding.readVarString(decoder));
    this.provider.on("status", ({ status }) => {
      if (status === "disconnected") this.renewToken();
      if (this.handlers.onStatus) this.handlers.onStatus(status === "connected");
    });
    const name = signedInUser() || "Guest";
    const color = pickColor(name + this.doc.clientID);
    this.awareness = this.provider.awareness;
    this.awareness.setLocalStateField("user", { name, color, colorLight: `${color}33` });
    this.awareness.on("change", () => this.onAwareness());
  }

  /** Resolves with the document's file paths once the first sync is done. */
  ready() {
    return new Promise((resolve) => {
      const done = () => {
        for (const state of this.awareness.getStates().values()) if (state.run) this.seenRuns.add(state.run.id);
        resolve(this.paths());
      };
      if (this.provider.synced) done();
      else this.provider.once("sync", done);
    });
  }

  files() {
    return this.doc.getMap(FILES);
  }

  paths() {
    return [...this.files().keys()];
  }

  text(path) {
    const t = this.files().get(path);
    return t ? t.toString() : "";
  }

  /** The CodeMirror extension for one file: shared text, remote cursors and selections, shared undo. */
  extension(path) {
    return yCollab(this.files().get(path), this.awareness);
  }

  /** The file that runs, as the document names it (null: the session's entry). */
  entry() {
    return this.doc.getMap(META).get("entry") || null;
  }

  /** Add an empty file to the shared set. */
  addFile(path) {
    this.doc.transact(() => this.files().set(path, new Y.Text()));
  }

  /** Rename a file: a new text with its content, the old one gone, in one change (what someone
   * types into the old name meanwhile is lost with it); the entry follows it. */
  renameFile(from, to, entry) {
    this.doc.transact(() => {
      const old = this.files().get(from);
      this.files().set(to, new Y.Text(old ? old.toString() : ""));
      this.files().delete(from);
      if ((this.entry() || entry) === from) this.doc.getMap(META).set("entry", to);
    });
  }

  /** Delete a file; `nextEntry` runs instead when it was the entry. */
  deleteFile(path, entry, nextEntry) {
    this.doc.transact(() => {
      this.files().delete(path);
      if ((this.entry() || entry) === path) this.doc.getMap(META).set("entry", nextEntry);
    });
  }

  setEntry(path) {
    this.doc.getMap(META).set("entry", path);
  }

  /** `fn()` when files are added, renamed or removed, or the entry changes (by anyone). */
  onFilesChanged(fn) {
    this.files().observe((event) => {
      if (event.changes.keys.size) fn();
    });
    this.doc.getMap(META).observe(() => fn());
  }

  /** Ask the server to write the document now (before a run); resolves with the version. */
  flush(timeoutMs = 3000) {
    if (!this.provider.wsconnected) return Promise.resolve(null);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(null), timeoutMs);
      this.savedWaiters.push((version) => {
        clearTimeout(timer);
        resolve(version);
      });
      const encoder = encoding.createEncoder();
      encoding.writeVarUint(encoder, LIVECODE);
      encoding.writeVarString(encoder, JSON.stringify({ type: "flush" }));
      this.provider.ws.send(encoding.toUint8Array(encoder));
    });
  }

  /** Tell the others a run started, so they follow it too. */
  announceRun(executionId) {
    this.seenRuns.add(executionId);
    this.awareness.setLocalStateField("run", { id: executionId });
  }

  onServerMessage(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      return;
    }
    if (msg.type === "saved") {
      const waiters = this.savedWaiters.splice(0);
      for (const w of waiters) w(msg.version);
      if (this.handlers.onSaved) this.handlers.onSaved(msg.version);
    } else if (msg.type === "error" && this.handlers.onError) {
      this.handlers.onError(msg.code, msg.message);
    }
  }

  onAwareness() {
    const peers = [];
    for (const [clientId, state] of this.awareness.getStates()) {
      if (state.user) peers.push({ ...state.user, self: clientId === this.doc.clientID });
      if (clientId !== this.doc.clientID && state.run && !this.seenRuns.has(state.run.id)) {
        this.seenRuns.add(state.run.id);
        if (this.handlers.onRun) this.handlers.onRun(state.run.id);
      }
    }
    if (this.handlers.onPeers) this.handlers.onPeers(peers);
  }

  async renewToken() {
    // The next reconnect carries a fresh access token.
    try {
      await ensureFreshToken();
    } catch {
      return;
    }
    if (getToken()) this.provider.params.access_token = getToken();
  }

  destroy() {
    this.provider.destroy();
    this.doc.destroy();
  }
}
