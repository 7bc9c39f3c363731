// The session's code history (docs/history.md): versions made by runs, checkpoints, autosaves
// and restores. Choosing one shows its diff to the newest version; Restore makes it current.

import { api } from "./api.js";

const $ = (id) => document.getElementById(id);
const PER_PAGE = 30;

function when(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso || "" : d.toLocaleString();
}

export class VersionsPanel {
  /**
   * getSession: () => {sessionId, flush} where flush() saves pending edits first and resolves to
   * the session version to restore over; onRestored(session): the restored session (from GET).
   */
  constructor({ getSession, onRestored, onError }) {
    this.box = $("versions-box");
    this.list = $("versions");
    this.diff = $("version-diff");
    this.getSession = getSession;
    this.onRestored = onRestored;
    this.onError = onError;
    this.items = [];
    this.selected = null;
    this.box.addEventListener("toggle", () => this.box.open && this.refresh());
    $("checkpoint").addEventListener("click", () => this.checkpoint());
    $("version-restore").addEventListener("click", () => this.restore());
  }

  /** Reload the list when the panel is open (it costs nothing while closed). */
  async refresh() {
    const { sessionId } = this.getSession();
    if (!sessionId) {
      this.items = [];
      this.selected = null;
      this.render();
      return;
    }
    if (!this.box.open) return;
    try {
      const page = await api("GET", `/api/v1/code-sessions/${sessionId}/versions?per_page=${PER_PAGE}`);
      this.items = page.items || [];
      this.render();
    } catch (err) {
      this.onError("Could not load the versions", err);
    }
  }

  async checkpoint() {
    const { sessionId, flush } = this.getSession();
    if (!sessionId) return;
    try {
      await flush();
      const label = $("checkpoint-label").value.trim();
      await api("POST", `/api/v1/code-sessions/${sessionId}/versions`, label ? { label } : {});
      $("checkpoint-label").value = "";
      await this.refresh();
    } catch (err) {
      this.onError("Could not save a checkpoint", err);
    }
  }

  async select(number) {
    const { sessionId } = this.getSession();
    this.selected = number;
    for (const b of this.list.querySelectorAll("button")) {
      b.setAttribute("aria-current", String(Number(b.dataset.version) === number));
    }
    $("version-restore").disabled = false;
    $("version-restore").textContent = `Restore version ${number}`;
    const newest = this.items.length ? this.items[0].version : number;
    try {
      const d = await api("GET", `/api/v1/code-sessions/${sessionId}/versions/${number}/diff/${newest}`);
      this.showDiff(d);
    } catch (err) {
      this.onError("Could not load the diff", err);
    }
  }

  showDiff(d) {
    this.diff.textContent = "";
    const head = document.createElement("p");
    head.className = "note";
    head.textContent = d.files.length
      ? `Version ${d.from} → version ${d.to} (newest):`
      : `Version ${d.from} holds the same code as version ${d.to} (newest).`;
    this.diff.append(head);
    for (const f of d.files) {
      const title = document.createElement("div");
      title.className = `diff-file diff-${f.change}`;
      title.textContent = `${f.path} (${f.change})`;
      const pre = document.createElement("pre");
      pre.className = "diff";
      for (const line of f.diff.split("\n")) {
        const span = document.createElement("span");
        if (line.startsWith("+") && !line.startsWith("+++")) span.className = "add";
        else if (line.startsWith("-") && !line.startsWith("---")) span.className = "del";
        span.textContent = `${line}\n`;
        pre.append(span);
      }
      this.diff.append(title, pre);
    }
    this.diff.hidden = false;
  }

  async restore() {
    const { sessionId, flush } = this.getSession();
    if (!sessionId || this.selected === null) return;
    try {
      const version = await flush();
      await api("POST", `/api/v1/code-sessions/${sessionId}/versions/${this.selected}/restore`, { version });
      this.onRestored(await api("GET", `/api/v1/code-sessions/${sessionId}`));
      this.selected = null;
      this.diff.hidden = true;
      $("version-restore").disabled = true;
      $("version-restore").textContent = "Restore";
      await this.refresh();
    } catch (err) {
      this.onError("Could not restore that version", err);
    }
  }

  render() {
    this.list.textContent = "";
    $("versions-empty").hidden = this.items.length > 0;
    for (const v of this.items) {
      const li = document.createElement("li");
      const b = document.createElement("button");
      b.type = "button";
      b.dataset.version = String(v.version);
      b.setAttribute("aria-current", String(v.version === this.selected));
      const num = document.createElement("strong");
      num.textContent = `v${v.version}`;
      const reason = document.createElement("span");
      reason.className = `reason reason-${v.reason}`;
      reason.textContent = v.label ? `${v.reason}: ${v.label}` : v.reason;
      const time = document.createElement("span");
      time.className = "when";
      time.textContent = when(v.created_at);
      b.append(num, reason, time);
      b.addEventListener("click", () => this.select(v.version));
      li.append(b);
      this.list.append(li);
    }
  }
}
