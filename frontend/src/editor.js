// The CodeMirror 6 editor: basic setup, a swappable language, Ctrl/Cmd+Enter to run.

import { indentWithTab } from "@codemirror/commands";
import { Compartment, EditorState, Prec } from "@codemirror/state";
import { EditorView, keymap } from "@codemirror/view";
import { basicSetup } from "codemirror";
import { languageSupport } from "./languages.js";

/**
 * Mount an editor in `parent`. `onChange` fires for edits the user makes (not for setText),
 * `onRun` for Ctrl/Cmd+Enter.
 */
export function createEditor(parent, { onChange, onRun }) {
  const language = new Compartment();
  const editable = new Compartment();
  const collab = new Compartment(); // live co-editing's binding (collab.js), when live
  let programmatic = false;
  let languageRequest = 0;

  const view = new EditorView({
    parent,
    state: EditorState.create({
      doc: "",
      extensions: [
        Prec.highest(keymap.of([{ key: "Mod-Enter", run: () => (onRun(), true) }])),
        basicSetup,
        // Tab indents; Escape then Tab still moves focus out (CodeMirror's tab-focus mode).
        keymap.of([indentWithTab]),
        language.of([]),
        collab.of([]),
        editable.of(EditorView.editable.of(false)),
        EditorView.contentAttributes.of({ "aria-label": "Source code", "data-testid": "code" }),
        EditorView.updateListener.of((update) => {
          if (update.docChanged && !programmatic) onChange();
        }),
      ],
    }),
  });

  return {
    view,
    getText: () => view.state.doc.toString(),
    /** Replace the whole text without it counting as an edit (no autosave). */
    setText(text) {
      programmatic = true;
      try {
        view.dispatch({ changes: { from: 0, to: view.state.doc.length, insert: text } });
      } finally {
        programmatic = false;
      }
    },
    /** Bind the editor to a shared document (or unbind with []); set its text first. */
    setCollab(extension) {
      view.dispatch({ effects: collab.reconfigure(extension) });
    },
    setEditable(on) {
      view.dispatch({ effects: editable.reconfigure(EditorView.editable.of(on)) });
    },
    async setLanguage(id) {
      // Chunks load asynchronously; only the latest choice may win.
      const request = ++languageRequest;
      const support = await languageSupport(id);
      if (request === languageRequest) view.dispatch({ effects: language.reconfigure(support) });
    },
    focus: () => view.focus(),
  };
}
