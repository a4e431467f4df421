// The designer's code editor: CodeMirror 6 set up for ax workflow files.
//
// The Rust page (web/src/editor_host.rs) creates one `AxEditor` and talks to it
// through the few methods below. The editor owns the text while it is mounted:
// every change (typing, undo, and the form's and graph's edits, which arrive
// through `replaceAll`) is reported to `onChange`, so undo/redo covers them all.
// Knowledge of the file format stays in Rust: completion asks `complete`, and the
// validator's problems arrive through `setDiagnostics`.

import { Compartment, EditorSelection, EditorState, Transaction } from "@codemirror/state";
import {
  Decoration,
  EditorView,
  MatchDecorator,
  ViewPlugin,
  crosshairCursor,
  drawSelection,
  dropCursor,
  highlightActiveLine,
  highlightActiveLineGutter,
  highlightSpecialChars,
  keymap,
  lineNumbers,
  rectangularSelection,
} from "@codemirror/view";
import {
  defaultKeymap,
  history,
  historyKeymap,
  indentWithTab,
  isolateHistory,
  redo,
  redoDepth,
  undo,
  undoDepth,
} from "@codemirror/commands";
import {
  StreamLanguage,
  bracketMatching,
  foldGutter,
  foldKeymap,
  foldService,
  indentOnInput,
  indentUnit,
  syntaxHighlighting,
} from "@codemirror/language";
import { classHighlighter } from "@lezer/highlight";
import { highlightSelectionMatches, openSearchPanel, search, searchKeymap } from "@codemirror/search";
import {
  autocompletion,
  closeBrackets,
  closeBracketsKeymap,
  completionKeymap,
  startCompletion,
} from "@codemirror/autocomplete";
import { forEachDiagnostic, lintGutter, lintKeymap, setDiagnostics } from "@codemirror/lint";
import { yaml as yamlMode } from "@codemirror/legacy-modes/mode/yaml";
import { json } from "@codemirror/lang-json";

// `{{…}}` placeholders stand out inside prompts and conditions.
const placeholderMark = Decoration.mark({ class: "cm-ax-placeholder" });
const placeholders = ViewPlugin.fromClass(
  class {
    constructor(view) {
      this.matcher = new MatchDecorator({ regexp: /\{\{[^{}\n]*\}\}/g, decoration: placeholderMark });
      this.decorations = this.matcher.createDeco(view);
    }
    update(update) {
      this.decorations = this.matcher.updateDeco(update, this.decorations);
    }
  },
  { decorations: (v) => v.decorations },
);

// Transactions made for the page (form and graph edits, restores) carry this
// user event: they are undoable like typing, and each is its own undo step.
const PAGE_EDIT = "input.page";

// YAML is highlighted line by line (CodeMirror's stream parser, which keeps
// its state per line): @codemirror/lang-yaml's incremental parser re-parsed
// most of a 1,000-step document on every keystroke (23 ms against 2.6 ms
// without a language, measured in the keystroke benchmark), and nothing here
// needs its syntax tree: completion and problems come from ax's own parser.
const yamlLanguage = StreamLanguage.define(yamlMode);

// YAML folds by indentation: a line folds the lines below it that are indented
// deeper (a step, a block scalar, a nested mapping).
const indentFolding = foldService.of((state, lineStart) => {
  const line = state.doc.lineAt(lineStart);
  const indent = (text) => text.length - text.trimStart().length;
  if (!line.text.trim()) return null;
  const base = indent(line.text);
  let end = line;
  for (let n = line.number + 1; n <= state.doc.lines; n++) {
    const next = state.doc.line(n);
    if (!next.text.trim()) continue;
    if (indent(next.text) <= base) break;
    end = next;
  }
  return end.number > line.number ? { from: line.to, to: end.to } : null;
});

function language(name) {
  return name === "json" ? json() : [yamlLanguage, indentFolding];
}

// The smallest change that turns `from` into `to` (one replaced range), so that
// the cursor, the scroll position and the undo history of the rest survive.
function diff(from, to) {
  let start = 0;
  const max = Math.min(from.length, to.length);
  while (start < max && from.charCodeAt(start) === to.charCodeAt(start)) start++;
  let endFrom = from.length;
  let endTo = to.length;
  while (endFrom > start && endTo > start && from.charCodeAt(endFrom - 1) === to.charCodeAt(endTo - 1)) {
    endFrom--;
    endTo--;
  }
  return { from: start, to: endFrom, insert: to.slice(start, endTo) };
}

export class AxEditor {
  // `options`: { doc, language: "yaml" | "json", label, onChange(text),
  // onEdit([from, to, inserted, …]),
  // onCursor(head), onHistory(undoDepth, redoDepth), onDropFile(file),
  // complete(pos, explicit) -> JSON text of {from, to, options} or "" }.
  constructor(parent, options) {
    this.options = options;
    this.language = new Compartment();
    this.lastHistory = "";
    const completionSource = (context) => this.completions(context);
    const extensions = [
      lineNumbers(),
      highlightActiveLineGutter(),
      highlightSpecialChars(),
      history(),
      foldGutter(),
      lintGutter(),
      drawSelection(),
      dropCursor(),
      EditorState.allowMultipleSelections.of(true),
      indentOnInput(),
      indentUnit.of("  "),
      EditorState.tabSize.of(2),
      syntaxHighlighting(classHighlighter),
      bracketMatching(),
      closeBrackets(),
      autocompletion({ override: [completionSource], activateOnTyping: true, icons: false }),
      rectangularSelection(),
      crosshairCursor(),
      highlightActiveLine(),
      highlightSelectionMatches(),
      search({ top: true }),
      placeholders,
      this.language.of(language(options.language)),
      keymap.of([
        ...closeBracketsKeymap,
        ...defaultKeymap,
        ...searchKeymap,
        ...historyKeymap,
        ...foldKeymap,
        ...completionKeymap,
        ...lintKeymap,
        // Tab indents; Escape then Tab leaves the editor (CodeMirror's rule).
        indentWithTab,
      ]),
      EditorView.contentAttributes.of({
        "aria-label": options.label || "Workflow text",
        "data-testid": "editor-content",
        // Focusable for every tool (axe counts tabindex, not contenteditable,
        // as keyboard access to the scrolling area around it).
        tabindex: "0",
      }),
      EditorView.updateListener.of((update) => this.updated(update)),
      EditorView.domEventHandlers({
        // A dropped file opens as a document instead of being pasted as text.
        drop: (event) => {
          const file = event.dataTransfer && event.dataTransfer.files && event.dataTransfer.files[0];
          if (!file || !this.options.onDropFile) return false;
          event.preventDefault();
          this.options.onDropFile(file);
          return true;
        },
      }),
    ];
    this.view = new EditorView({
      parent,
      state: EditorState.create({ doc: options.doc || "", extensions }),
    });
    this.extensions = extensions;
    // Tests and tools reach the editor through its element.
    parent.axEditor = this;
  }

  updated(update) {
    if (update.docChanged) {
      // The changes, not the whole text: a keystroke in a large document hands
      // over one character. `[from, to, inserted]` in the old document's
      // positions, ascending (they do not overlap).
      if (update.changes) {
        const edits = [];
        update.changes.iterChanges((fromA, toA, _fromB, _toB, inserted) => {
          edits.push(fromA, toA, inserted.toString());
        });
        this.options.onEdit(edits);
      } else {
        this.options.onChange(update.state.doc.toString());
      }
    }
    if (update.selectionSet || update.docChanged) this.options.onCursor(update.state.selection.main.head);
    const h = `${undoDepth(update.state)}/${redoDepth(update.state)}`;
    if (h !== this.lastHistory) {
      this.lastHistory = h;
      this.options.onHistory(undoDepth(update.state), redoDepth(update.state));
    }
  }

  completions(context) {
    const answer = this.options.complete(context.pos, context.explicit);
    if (!answer) return null;
    const result = JSON.parse(answer);
    if (!result.options.length) return null;
    return {
      from: result.from,
      to: result.to,
      // Narrowing the list as the word grows is CodeMirror's job; a new word asks again.
      validFor: /^[\w.-]*$/,
      options: result.options.map((o) => ({
        label: o.label,
        apply: o.apply || o.label,
        type: o.kind,
        detail: o.detail || undefined,
        info: o.info || undefined,
        boost: o.boost || 0,
      })),
    };
  }

  text() {
    return this.view.state.doc.toString();
  }

  setLanguage(name) {
    this.view.dispatch({ effects: this.language.reconfigure(language(name)) });
  }

  // The page changed the text (form, graph, a restored version): one undoable step.
  replaceAll(text) {
    const current = this.view.state.doc.toString();
    if (current === text) return;
    this.view.dispatch({
      changes: diff(current, text),
      annotations: [Transaction.userEvent.of(PAGE_EDIT), isolateHistory.of("full")],
    });
  }

  // Another document: new text, its own history, the cursor at the start.
  reset(text, languageName) {
    this.view.setState(EditorState.create({ doc: text, extensions: this.extensions }));
    this.setLanguage(languageName);
    this.lastHistory = "";
    this.updated({ docChanged: true, selectionSet: true, state: this.view.state });
  }

  // `list`: [{from, to, severity: "error" | "warning", message, source, fix: {label, from, to, insert}?}]
  setDiagnostics(list) {
    const length = this.view.state.doc.length;
    const diagnostics = list.map((d) => {
      const from = Math.min(d.from, length);
      const to = Math.min(Math.max(d.to, from), length);
      const diagnostic = { from, to, severity: d.severity, message: d.message, source: d.source };
      if (d.fix) {
        diagnostic.actions = [
          {
            name: d.fix.label,
            apply: (view) =>
              view.dispatch({
                changes: { from: d.fix.from, to: d.fix.to, insert: d.fix.insert },
                annotations: [Transaction.userEvent.of("input.fix"), isolateHistory.of("full")],
              }),
          },
        ];
      }
      return diagnostic;
    });
    this.view.dispatch(setDiagnostics(this.view.state, diagnostics));
  }

  diagnosticCount() {
    let n = 0;
    forEachDiagnostic(this.view.state, () => n++);
    return n;
  }

  // Select a range, scroll it to the middle and focus the editor.
  select(from, to) {
    const length = this.view.state.doc.length;
    const a = Math.min(from, length);
    const b = Math.min(Math.max(to, a), length);
    this.view.dispatch({
      selection: EditorSelection.single(a, b),
      effects: EditorView.scrollIntoView(a, { y: "center" }),
    });
    this.view.focus();
  }

  cursor() {
    return this.view.state.selection.main.head;
  }

  selectionRange() {
    const { from, to } = this.view.state.selection.main;
    return [from, to];
  }

  scrollTop() {
    return this.view.scrollDOM.scrollTop;
  }

  focus() {
    this.view.focus();
  }

  undo() {
    return undo(this.view);
  }

  redo() {
    return redo(this.view);
  }

  openSearch() {
    return openSearchPanel(this.view);
  }

  startCompletion() {
    return startCompletion(this.view);
  }

  // Type as a person would (tests and the keystroke benchmark): insert at the cursor.
  typeText(text) {
    const { from, to } = this.view.state.selection.main;
    this.view.dispatch({
      changes: { from, to, insert: text },
      selection: EditorSelection.cursor(from + text.length),
      userEvent: "input.type",
    });
  }

  destroy() {
    this.view.destroy();
  }
}
