// The tests panel: test cases (name, stdin, expected output) kept per session in this browser,
// run with "Run tests" (POST .../execute with `tests` and `compare`), each case shown with its
// verdict (green ACCEPTED, red anything else) and its output. Program output is set as text,
// never as HTML.

const $ = (id) => document.getElementById(id);
const STORE = "livecode.tests.";
const NEW_KEY = "new";

export class TestsPanel {
  /** `onRun()` starts a run of the current cases (main.js owns runs). */
  constructor({ onRun }) {
    this.list = $("tests-list");
    this.summary = $("tests-summary");
    this.key = NEW_KEY;
    this.busy = false;
    $("add-test").addEventListener("click", () => {
      this.addRow({});
      this.save();
      this.rows().at(-1).querySelector(".test-stdin").focus();
    });
    $("run-tests").addEventListener("click", () => onRun());
    $("compare").addEventListener("change", () => this.save());
    this.list.addEventListener("input", () => {
      this.clearVerdicts();
      this.save();
    });
  }

  rows() {
    return [...this.list.querySelectorAll(".test-case")];
  }

  /** The cases as the API takes them; empty names and expected outputs are left out. */
  cases() {
    return this.rows().map((row) => {
      const c = { stdin: row.querySelector(".test-stdin").value };
      const name = row.querySelector(".test-name").value.trim();
      const expected = row.querySelector(".test-expected").value;
      if (name) c.name = name;
      if (expected) c.expected_output = expected;
      return c;
    });
  }

  compare() {
    return $("compare").value;
  }

  /** While a run is in flight (any run: a session runs one at a time), no new one starts. */
  setDisabled(on) {
    this.busy = on;
    $("run-tests").disabled = on || this.rows().length === 0;
  }

  addRow({ name = "", stdin = "", expected_output = "" }) {
    const row = document.createElement("li");
    row.className = "test-case";
    const field = (cls, label, tag, value) => {
      const wrap = document.createElement("label");
      wrap.className = "field test-field";
      const span = document.createElement("span");
      span.textContent = label;
      const input = document.createElement(tag);
      input.className = cls;
      input.spellcheck = false;
      if (tag === "textarea") input.rows = 2;
      else input.type = "text";
      input.value = value || "";
      wrap.append(span, input);
      return wrap;
    };
    const head = document.createElement("div");
    head.className = "test-head";
    const verdict = document.createElement("span");
    verdict.className = "verdict";
    verdict.setAttribute("role", "status");
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "remove-test";
    remove.textContent = "Remove";
    remove.addEventListener("click", () => {
      row.remove();
      this.renumber();
      this.clearVerdicts();
      this.save();
    });
    head.append(field("test-name", "Name", "input", name), verdict, remove);
    const out = document.createElement("pre");
    out.className = "test-output";
    out.hidden = true;
    row.append(head, field("test-stdin", "Input", "textarea", stdin),
      field("test-expected", "Expected output", "textarea", expected_output), out);
    this.list.append(row);
    this.renumber();
  }

  renumber() {
    this.rows().forEach((row, i) => {
      row.dataset.index = String(i);
      row.querySelector(".test-name").placeholder = `Test ${i + 1}`;
    });
    $("tests-count").textContent = this.rows().length ? `(${this.rows().length})` : "";
    $("run-tests").disabled = this.rows().length === 0 || this.busy;
  }

  clearVerdicts() {
    for (const row of this.rows()) this.setVerdict(row, null);
    this.summary.textContent = "";
    this.summary.removeAttribute("data-verdict");
  }

  setVerdict(row, verdict, label) {
    const el = row.querySelector(".verdict");
    if (verdict) el.dataset.verdict = verdict;
    else el.removeAttribute("data-verdict");
    el.textContent = label || verdict || "";
    row.dataset.verdict = verdict || "";
    if (!verdict) row.querySelector(".test-output").hidden = true;
  }

  /** test_started: this case is running now. */
  started(index) {
    const row = this.rows()[index];
    if (row) this.setVerdict(row, "RUNNING", "Running…");
  }

  /** test_finished, or a case of a finished execution: its verdict and output. */
  finished(test) {
    const row = this.rows()[test.index];
    if (!row || !test.verdict) return;
    this.setVerdict(row, test.verdict, test.verdict.replace(/_/g, " "));
    const out = row.querySelector(".test-output");
    out.textContent = "";
    for (const [cls, text] of [["stdout", test.stdout], ["stderr", test.stderr]]) {
      if (!text) continue;
      const span = document.createElement("span");
      span.className = cls;
      span.textContent = text;
      out.append(span);
    }
    out.hidden = !out.textContent;
  }

  /** A finished execution's tests (the stored result is the truth). */
  showExecution(ex) {
    if (!ex || !ex.tests) return;
    if (ex.tests.length !== this.rows().length) {
      this.clearVerdicts();
    } else {
      for (const test of ex.tests) this.finished(test);
    }
    const s = ex.summary;
    if (s) {
      this.summary.dataset.verdict = s.verdict || "";
      this.summary.textContent = `${s.passed} of ${s.total} passed${s.verdict && s.verdict !== "ACCEPTED"
        ? ` · first failure: ${s.verdict.replace(/_/g, " ")}` : ""}`;
    }
  }

  /** Show the cases kept for a session (null: a session not saved yet). */
  load(sessionId) {
    const key = sessionId || NEW_KEY;
    let saved = null;
    try {
      saved = JSON.parse(localStorage.getItem(STORE + key) || "null");
    } catch {
      // Storage disabled or damaged: start empty.
    }
    this.key = key;
    this.list.textContent = "";
    for (const c of (saved && saved.cases) || []) this.addRow(c);
    if (saved && saved.compare) $("compare").value = saved.compare;
    if (this.rows().length) $("tests-box").open = true; // a session with cases shows them
    this.renumber();
    this.clearVerdicts();
  }

  /** Keep the current cases for another session too (a language switch starts a new session). */
  copyTo(sessionId) {
    try {
      localStorage.setItem(STORE + sessionId, JSON.stringify({ cases: this.cases(), compare: this.compare() }));
    } catch {
      // Storage disabled.
    }
  }

  /** The session not saved yet was just created as `sessionId`: its cases move with it. */
  adopt(sessionId) {
    this.key = sessionId;
    this.save();
    try {
      localStorage.removeItem(STORE + NEW_KEY);
    } catch {
      // Storage disabled.
    }
  }

  save() {
    try {
      localStorage.setItem(STORE + this.key, JSON.stringify({ cases: this.cases(), compare: this.compare() }));
    } catch {
      // Storage disabled: the cases live as long as the page.
    }
  }
}
