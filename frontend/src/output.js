// The output pane and the result summary. Output is appended as text nodes (never as HTML):
// a program's output is untrusted.

import { FilesView } from "./outfiles.js";

const $ = (id) => document.getElementById(id);

export class OutputView {
  constructor() {
    this.pre = $("output");
    this.status = $("run-status");
    this.streamed = { stdout: "", stderr: "", compile: "" };
    this.files = new FilesView(); // what the run left in out/, under the output
  }

  clear() {
    this.pre.textContent = "";
    this.streamed = { stdout: "", stderr: "", compile: "" };
    this.files.clear();
    this.setResult(null);
  }

  /** Append a piece of output; `stream` is stdout | stderr | compile | stdin | meta. */
  append(stream, text) {
    if (!text) return;
    if (stream in this.streamed) this.streamed[stream] += text;
    // Stick to the bottom only if the reader was already there (don't yank them while scrolling up).
    const atBottom = this.pre.scrollHeight - this.pre.scrollTop - this.pre.clientHeight < 24;
    const last = this.pre.lastElementChild;
    if (last && last.dataset.stream === stream) {
      last.append(text);
    } else {
      const span = document.createElement("span");
      span.className = stream;
      span.dataset.stream = stream;
      span.textContent = text;
      this.pre.append(span);
    }
    if (atBottom) this.pre.scrollTop = this.pre.scrollHeight;
  }

  note(text) {
    const needsBreak = this.pre.textContent && !this.pre.textContent.endsWith("\n");
    this.append("meta", `${needsBreak ? "\n" : ""}${text}\n`);
  }

  setStatus(status, reason) {
    const labels = { QUEUED: "Queued…", RUNNING: "Running…", COMPLETED: "Completed", FAILED: "Failed",
      TIMEOUT: "Timed out", CANCELLED: "Stopped" };
    this.status.dataset.status = status || "";
    let label = labels[status] || status || "Not run yet";
    if (reason) label += ` · ${reason}`;
    this.status.textContent = label;
  }

  /** Show a finished execution. The stored result is the truth: if what streamed differs from
   * it (events missed, a polling fallback, a past run), the pane is redrawn from it. */
  showExecution(ex, { redraw = false } = {}) {
    const stored = { stdout: ex.stdout || "", stderr: ex.stderr || "", compile: ex.compile_output || "" };
    const same = ["stdout", "stderr", "compile"].every((k) => stored[k] === this.streamed[k]);
    if (redraw || !same) {
      this.pre.textContent = "";
      this.streamed = { stdout: "", stderr: "", compile: "" };
      this.append("compile", stored.compile);
      this.append("stdout", stored.stdout);
      this.append("stderr", stored.stderr);
    }
    if (ex.stdout_truncated || ex.stderr_truncated) this.note("[output truncated at the output limit]");
    if (!this.pre.textContent) this.note("(no output)");
    this.setStatus(ex.status, ex.reason);
    this.setResult(ex);
    this.files.show(ex);
  }

  setResult(ex) {
    const ms = (v) => (v === null || v === undefined ? "–" : `${v} ms`);
    $("exit-code").textContent = ex && ex.exit_code !== null && ex.exit_code !== undefined
      ? String(ex.exit_code) + (ex.signal ? ` (signal ${ex.signal})` : "") : "–";
    $("reason").textContent = (ex && ex.reason) || "–";
    $("time-ms").textContent = ms(ex && ex.execution_time_ms);
    $("cpu-ms").textContent = ms(ex && ex.cpu_time_ms);
    const kb = ex && ex.memory_kb;
    $("memory-kb").textContent = kb === null || kb === undefined || kb === "" ? "–"
      : kb >= 10240 ? `${(kb / 1024).toFixed(1)} MB` : `${kb} KB`;
    $("memory-kb").title = kb ? `${kb} KB` : "";
  }
}
