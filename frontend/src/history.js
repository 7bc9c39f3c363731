// The session's run history, newest first; choosing one shows its output.

import { api } from "./api.js";

const $ = (id) => document.getElementById(id);
const PER_PAGE = 20;

function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const sameDay = d.toDateString() === new Date().toDateString();
  return sameDay ? d.toLocaleTimeString() : d.toLocaleString();
}

export class HistoryView {
  constructor({ onSelect }) {
    this.list = $("history");
    this.empty = $("history-empty");
    this.onSelect = onSelect;
    this.items = [];
    this.total = 0;
    this.current = null;
    this.disabled = false;
  }

  /** Reload the list; resolves to the newest execution (or null). */
  async load(sessionId) {
    if (!sessionId) {
      this.items = [];
      this.total = 0;
      this.render();
      return null;
    }
    const page = await api("GET", `/api/v1/executions/session/${sessionId}?page=1&per_page=${PER_PAGE}`);
    this.items = page.items || [];
    this.total = page.total || 0;
    this.render();
    return this.items[0] || null;
  }

  select(executionId) {
    this.current = executionId;
    for (const b of this.list.querySelectorAll("button")) {
      b.setAttribute("aria-current", String(b.dataset.id === executionId));
    }
  }

  setDisabled(on) {
    this.disabled = on;
    for (const b of this.list.querySelectorAll("button")) b.disabled = on;
  }

  render() {
    this.list.textContent = "";
    this.empty.hidden = this.items.length > 0;
    this.items.forEach((ex, i) => {
      const li = document.createElement("li");
      const b = document.createElement("button");
      b.type = "button";
      b.dataset.id = ex.execution_id;
      b.disabled = this.disabled;
      b.setAttribute("aria-current", String(ex.execution_id === this.current));
      const status = document.createElement("span");
      status.className = `st-${ex.status}`;
      status.textContent = ex.status;
      const time = document.createElement("span");
      time.className = "when";
      time.textContent = `#${this.total - i} · ${when(ex.queued_at)}`;
      const detail = document.createElement("span");
      const parts = [];
      if (ex.summary) parts.push(`${ex.summary.passed}/${ex.summary.total} tests passed`);
      if (ex.exit_code !== null && ex.exit_code !== undefined) parts.push(`exit ${ex.exit_code}`);
      if (ex.execution_time_ms !== null && ex.execution_time_ms !== undefined) parts.push(`${ex.execution_time_ms} ms`);
      detail.textContent = parts.join(" · ");
      b.append(status, time, detail);
      b.setAttribute("aria-label", `Run ${this.total - i}, ${ex.status}, ${when(ex.queued_at)}`);
      b.addEventListener("click", () => this.onSelect(ex.execution_id));
      li.append(b);
      this.list.append(li);
    });
    if (this.total > this.items.length) {
      const li = document.createElement("li");
      li.className = "note";
      li.textContent = `…and ${this.total - this.items.length} older runs`;
      this.list.append(li);
    }
  }
}
