// Syntax highlighting per language id from /api/v1/languages, loaded on demand so the first
// page load carries only the editor core (each import() below is its own bundle chunk).

const cpp = () => import("@codemirror/lang-cpp").then((m) => m.cpp());

const LOADERS = {
  python: () => import("@codemirror/lang-python").then((m) => m.python()),
  javascript: () => import("@codemirror/lang-javascript").then((m) => m.javascript()),
  typescript: () => import("@codemirror/lang-javascript").then((m) => m.javascript({ typescript: true })),
  c: cpp,
  cpp,
  java: () => import("@codemirror/lang-java").then((m) => m.java()),
  rust: () => import("@codemirror/lang-rust").then((m) => m.rust()),
  go: () => import("@codemirror/lang-go").then((m) => m.go()),
  bash: () =>
    Promise.all([import("@codemirror/language"), import("@codemirror/legacy-modes/mode/shell")]).then(
      ([language, mode]) => language.StreamLanguage.define(mode.shell),
    ),
};

const ALIASES = { python3: "python", py: "python", node: "javascript", js: "javascript", ts: "typescript",
  "c++": "cpp", golang: "go", sh: "bash", shell: "bash" };

function family(id) {
  const key = String(id || "").toLowerCase();
  return LOADERS[key] ? key : ALIASES[key];
}

/** The CodeMirror extension highlighting `id`, or [] (plain text) for a language we don't know. */
export async function languageSupport(id) {
  const key = family(id);
  if (!key) return [];
  try {
    return await LOADERS[key]();
  } catch {
    return []; // A chunk failed to load: editing still works, just without colours.
  }
}

const SAMPLES = {
  python: 'print("Hello, World!")\n',
  javascript: 'console.log("Hello, World!");\n',
  typescript: 'const greeting: string = "Hello, World!";\nconsole.log(greeting);\n',
  c: '#include <stdio.h>\n\nint main(void) {\n    printf("Hello, World!\\n");\n    return 0;\n}\n',
  cpp: '#include <iostream>\n\nint main() {\n    std::cout << "Hello, World!" << std::endl;\n    return 0;\n}\n',
  java: 'public class Main {\n    public static void main(String[] args) {\n        System.out.println("Hello, World!");\n    }\n}\n',
  rust: 'fn main() {\n    println!("Hello, World!");\n}\n',
  go: 'package main\n\nimport "fmt"\n\nfunc main() {\n\tfmt.Println("Hello, World!")\n}\n',
  bash: 'echo "Hello, World!"\n',
};

/** A hello-world to start a new session with. */
export function sampleFor(id) {
  return SAMPLES[family(id)] || "";
}

/** True when `text` is nothing the user wrote: empty or one of the samples. */
export function isSample(text) {
  return !text.trim() || Object.values(SAMPLES).includes(text);
}
