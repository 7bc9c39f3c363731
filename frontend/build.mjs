// Bundles the playground into ../src/livecode/static (committed, so the Python package ships it).
// Languages are split into chunks loaded on demand, so the first load stays small.
import { build } from "esbuild";
import { copyFile, mkdir, readdir, rm, stat } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "src", "livecode", "static");

await rm(out, { recursive: true, force: true });
await mkdir(out, { recursive: true });
await build({
  entryPoints: { app: join(here, "src", "main.js"), admin: join(here, "src", "admin.js") },
  bundle: true,
  splitting: true,
  format: "esm",
  minify: true,
  target: ["es2020"],
  outdir: out,
  entryNames: "[name]",
  chunkNames: "chunks/[name]-[hash]",
  legalComments: "linked",
  logLevel: "warning",
});
await copyFile(join(here, "src", "index.html"), join(out, "index.html"));
await copyFile(join(here, "src", "style.css"), join(out, "style.css"));
await copyFile(join(here, "src", "admin.html"), join(out, "admin.html"));
await copyFile(join(here, "src", "admin.css"), join(out, "admin.css"));
await copyFile(join(here, "node_modules", "uplot", "dist", "uPlot.min.css"), join(out, "uplot.css"));

let total = 0;
for (const entry of await readdir(out, { recursive: true })) {
  const s = await stat(join(out, entry));
  if (s.isFile()) total += s.size;
}
console.log(`built ${out.split("/").slice(-3).join("/")}: ${(total / 1024).toFixed(0)} KiB in all`);
