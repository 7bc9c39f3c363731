// A session's program as file tabs: add, rename, delete and switch files; the entry (the file
// that runs) is marked. The program is {files: [{path, content}], entry}; a program of just the
// language's default file is saved as `source_code` (the single-file form every client knows).

/** Why `path` is not a file name the server takes (it checks again), or "". */
export function pathProblem(path, files, except = -1) {
  if (!path) return "Give the file a name.";
  if (path.startsWith("/") || path.includes("\\") || path.split("/").some((p) => p === ".." || p === "." || p === ""))
    return "Use a relative path like util.py or lib/util.py (no leading /, no .., no backslash).";
  if (files.some((f, i) => i !== except && f.path === path)) return `There is already a file named ${path}.`;
  return "";
}

export class FileTabs {
  /**
   * @param {object} o
   * @param {HTMLElement} o.bar  the tab bar
   * @param {object} o.editor  createEditor()'s handle
   * @param {() => void} o.onChange  the program changed (autosave it)
   * @param {(text: string) => void} o.onError  a name was refused
   */
  constructor({ bar, editor, onChange, onError }) {
    Object.assign(this, { bar, editor, onChange, onError });
    this.files = [];
    this.entry = null;
    this.active = 0;
    this.defaultPath = "main.py";
    this.liveSwitch = null; // (path) => void while co-editing live
    this.live = null; // while co-editing: the LiveSession whose document the set of files is
  }

  /** Show a program: {files, entry} (a session) or one default file. */
  load({ files, entry }, defaultPath) {
    this.defaultPath = defaultPath || this.defaultPath;
    this.files = files.map((f) => ({ path: f.path, content: f.content }));
    this.entry = entry || this.files[0].path;
    this.active = Math.max(0, this.files.findIndex((f) => f.path === this.entry));
    this.editor.setText(this.files[this.active].content);
    this.render();
  }

  /** A new single-file program at the language's default path. */
  single(content, defaultPath) {
    this.load({ files: [{ path: defaultPath, content }], entry: defaultPath }, defaultPath);
  }

  get multi() {
    return this.files.length > 1 || this.files[0].path !== this.defaultPath;
  }

  /** The editor's text went into the active file. */
  edited() {
    this.files[this.active].content = this.editor.getText();
  }

  /** The program as autosave compares it: the same text means nothing to save. */
  snapshot() {
    return JSON.stringify({ files: this.files, entry: this.entry });
  }

  /** The request body fields that store a snapshot(). */
  static body(snapshot, defaultPath) {
    const program = JSON.parse(snapshot);
    const one = program.files.length === 1 && program.files[0].path === defaultPath;
    return one ? { source_code: program.files[0].content } : { files: program.files, entry: program.entry };
  }

  switchTo(index) {
    if (index === this.active || !this.files[index]) return;
    this.edited();
    this.active = index;
    // Live, the editor is rebound to the shared file (main.js); otherwise it shows the tab's text.
    if (this.liveSwitch) this.liveSwitch(this.files[index].path);
    else this.editor.setText(this.files[index].content);
    this.render();
    this.editor.focus();
  }

  add(path) {
    const why = pathProblem(path, this.files);
    if (why) return this.onError(why), false;
    if (this.live) return this.live.addFile(path), this.liveFocus(path), true; // the tabs follow the document
    this.edited();
    this.files.push({ path, content: "" });
    this.active = this.files.length - 1;
    this.editor.setText("");
    this.render();
    this.onChange();
    return true;
  }

  rename(path) {
    const why = pathProblem(path, this.files, this.active);
    if (why) return this.onError(why), false;
    const file = this.files[this.active];
    if (this.live) return this.live.renameFile(file.path, path, this.entry), this.liveFocus(path), true;
    if (this.entry === file.path) this.entry = path;
    file.path = path;
    this.render();
    this.onChange();
    return true;
  }

  remove() {
    if (this.files.length === 1) return this.onError("A program needs at least one file."), false;
    if (this.live) {
      const gone = this.files[this.active].path;
      const next = this.files.find((f) => f.path !== gone).path;
      this.live.deleteFile(gone, this.entry, next);
      return true;
    }
    const [gone] = this.files.splice(this.active, 1);
    if (this.entry === gone.path) this.entry = this.files[0].path;
    this.active = Math.min(this.active, this.files.length - 1);
    this.editor.setText(this.files[this.active].content);
    this.render();
    this.onChange();
    return true;
  }

  makeEntry() {
    if (this.live) return this.live.setEntry(this.files[this.active].path);
    this.entry = this.files[this.active].path;
    this.render();
    this.onChange();
  }

  /** Show `path` once the document's change has made its tab (main.js re-renders the tabs). */
  liveFocus(path) {
    const at = this.files.findIndex((f) => f.path === path);
    if (at >= 0) this.switchTo(at);
  }

  render() {
    this.bar.textContent = "";
    this.files.forEach((file, i) => {
      const tab = document.createElement("button");
      tab.type = "button";
      tab.className = "file-tab";
      tab.setAttribute("role", "tab");
      tab.setAttribute("aria-selected", String(i === this.active));
      tab.dataset.path = file.path;
      tab.textContent = file.path;
      if (file.path === this.entry) {
        tab.dataset.entry = "true";
        tab.title = "The entry: the file that runs";
      }
      tab.addEventListener("click", () => this.switchTo(i));
      this.bar.append(tab);
    });
  }
}
