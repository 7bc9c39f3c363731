// Debounced autosave with optimistic locking. Saves are serialised (one request in flight);
// each PATCH names the version it was based on, so a save never overwrites someone else's.

import { api } from "./api.js";

const RETRY_MS = 3000;

export class Autosaver {
  /**
   * @param {object} o
   * @param {() => string} o.getText  the editor's current text
   * @param {(text: string) => Promise<object>} o.create  creates the session on first save
   * @param {(state: string, info?: object) => void} o.onState  "dirty" | "saving" | "saved" |
   *   "conflict" | "error" | "new"
   * @param {number} [o.delay]  debounce in ms
   * @param {(text: string) => object} [o.toBody]  the PATCH fields that store `text`
   */
  constructor({ getText, create, onState, delay = 500, toBody = (text) => ({ source_code: text }) }) {
    Object.assign(this, { getText, create, onState, delay, toBody });
    this.sessionId = null;
    this.version = null;
    this.savedText = null;
    this.timer = null;
    this.inflight = null;
    this.again = false;
    this.conflict = null; // {serverVersion} while the server has a newer version than ours
    this.error = null;
  }

  /** Track an existing session whose text (getText() form) the editor now shows. */
  attach(session, text = session.source_code) {
    this.sessionId = session.session_id;
    this.version = session.version;
    this.savedText = text;
    this.conflict = null;
    this.error = null;
    this.onState("saved", { version: this.version });
  }

  get dirty() {
    return this.getText() !== this.savedText;
  }

  /** The user edited: save once they pause. */
  changed() {
    if (this.conflict) return; // Nothing saves until the user picks a side.
    this.onState("dirty");
    this.schedule(this.delay);
  }

  schedule(ms) {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.save();
    }, ms);
  }

  /** Save now; resolves true once the editor's text is stored (false on conflict or error). */
  async flush() {
    clearTimeout(this.timer);
    this.timer = null;
    await this.save();
    if (this.inflight) await this.inflight;
    return !this.conflict && !this.error && this.sessionId !== null && !this.dirty;
  }

  save() {
    if (this.inflight) {
      this.again = true;
      return this.inflight;
    }
    this.inflight = this.loop().finally(() => {
      this.inflight = null;
    });
    return this.inflight;
  }

  async loop() {
    do {
      this.again = false;
      if (this.conflict) return;
      const text = this.getText();
      if (this.sessionId !== null && text === this.savedText) continue;
      this.onState("saving");
      try {
        if (this.sessionId === null) {
          const created = await this.create(text);
          this.sessionId = created.session_id;
          this.version = created.version;
        } else {
          const saved = await api("PATCH", `/api/v1/code-sessions/${this.sessionId}`, {
            ...this.toBody(text),
            version: this.version,
          });
          this.version = saved.version;
        }
        this.savedText = text;
        this.error = null;
      } catch (err) {
        if (err.code === "VERSION_CONFLICT") {
          this.conflict = { serverVersion: err.details.current_version };
          this.onState("conflict", this.conflict);
          return;
        }
        this.error = err;
        this.onState("error", { error: err });
        // A dropped connection or a busy server heals by itself; a 4xx waits for the next edit.
        if (err.transient) this.schedule(RETRY_MS);
        return;
      }
    } while (this.again);
    this.onState(this.dirty ? "dirty" : "saved", { version: this.version });
  }

  /** Conflict resolution 1: drop our edits and take the server's current text. */
  async takeServerVersion() {
    const session = await api("GET", `/api/v1/code-sessions/${this.sessionId}`);
    return session; // The caller puts the text in the editor, then calls attach(session).
  }

  /** Conflict resolution 2: keep our text, saving it over the server's newer version. */
  overwrite() {
    if (!this.conflict) return Promise.resolve();
    this.version = this.conflict.serverVersion;
    this.conflict = null;
    return this.save();
  }
}
