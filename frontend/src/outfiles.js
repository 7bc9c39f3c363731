// The files a run left in out/ (GET /api/v1/executions/{id}/files): images are shown under the
// output, other files are download links. The bytes are fetched with the caller's credentials
// and shown through blob: URLs; nothing of a file is ever put into the page as HTML.

import { authHeaders, ensureFreshToken, errorFrom, networkError } from "./api.js";

const $ = (id) => document.getElementById(id);
const IMAGES = new Set(["image/png", "image/jpeg", "image/gif", "image/webp", "image/svg+xml"]);

async function fetchFile(path) {
  await ensureFreshToken();
  let resp;
  try {
    resp = await fetch(path, { headers: authHeaders() });
  } catch {
    throw networkError();
  }
  if (!resp.ok) throw await errorFrom(resp);
  return resp.blob();
}

function sizeLabel(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}

export class FilesView {
  constructor() {
    this.box = $("run-files");
    this.shown = null; // the execution whose files are listed
    this.urls = [];
  }

  clear() {
    this.shown = null;
    for (const url of this.urls) URL.revokeObjectURL(url);
    this.urls = [];
    if (!this.box) return;
    this.box.textContent = "";
    this.box.hidden = true;
  }

  /** List a finished execution's files (once per execution, however often it is shown). */
  async show(ex) {
    if (!this.box || !ex || !ex.execution_id || this.shown === ex.execution_id) return;
    if (!["COMPLETED", "FAILED", "TIMEOUT", "CANCELLED"].includes(ex.status)) return;
    this.clear();
    this.shown = ex.execution_id;
    const base = `/api/v1/executions/${ex.execution_id}/files`;
    let files;
    try {
      await ensureFreshToken();
      const resp = await fetch(base, { headers: { Accept: "application/json", ...authHeaders() } });
      if (!resp.ok) return; // the files are an extra: the result itself is already shown
      files = await resp.json();
    } catch {
      return;
    }
    if (this.shown !== ex.execution_id || (!files.length && !ex.files_truncated)) return;
    const title = document.createElement("h2");
    title.textContent = "Files";
    this.box.append(title);
    const links = document.createElement("ul");
    links.className = "run-file-links";
    for (const f of files) {
      const url = `${base}/${f.path.split("/").map(encodeURIComponent).join("/")}`;
      if (IMAGES.has(f.content_type)) {
        const figure = document.createElement("figure");
        const img = document.createElement("img");
        img.alt = f.path;
        img.dataset.path = f.path;
        const caption = document.createElement("figcaption");
        caption.textContent = `${f.path} · ${sizeLabel(f.size)}`;
        figure.append(img, caption);
        this.box.append(figure);
        fetchFile(url).then((blob) => {
          if (this.shown !== ex.execution_id) return;
          const objectUrl = URL.createObjectURL(blob);
          this.urls.push(objectUrl);
          img.src = objectUrl;
        }, () => (caption.textContent += " (could not be loaded)"));
      } else {
        const li = document.createElement("li");
        const a = document.createElement("a");
        a.href = "#";
        a.textContent = f.path;
        a.dataset.path = f.path;
        a.addEventListener("click", (e) => {
          e.preventDefault();
          this.download(url, f.path);
        });
        li.append(a, ` · ${sizeLabel(f.size)}`);
        links.append(li);
      }
    }
    if (links.childElementCount) this.box.append(links);
    if (ex.files_truncated) {
      const note = document.createElement("p");
      note.className = "note";
      note.textContent = "Some files in out/ were not kept: over the number or size limit.";
      this.box.append(note);
    }
    this.box.hidden = false;
  }

  async download(url, path) {
    try {
      const blob = await fetchFile(url);
      const objectUrl = URL.createObjectURL(blob);
      this.urls.push(objectUrl);
      const a = document.createElement("a");
      a.href = objectUrl;
      a.download = path.split("/").pop();
      document.body.append(a);
      a.click();
      a.remove();
    } catch {
      // a failed download leaves the link as it was; the user can try again
    }
  }
}
