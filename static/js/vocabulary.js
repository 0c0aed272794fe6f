// Statuses, phases and the words the pages show for them. They are the
// server's (backend/models.py, through `vocabulary()` in backend/web/pages.py):
// every page carries them as JSON in <script id="pullrun-vocabulary">
// (templates/base.html), so no script keeps a copy of its own.
//
// makeVocabulary is pure: Node's tests give it tests/js/fixtures/vocabulary.json,
// which a Python unit test keeps equal to what the server embeds.

export function makeVocabulary(raw) {
  const active = new Set(raw.active);
  const statusLabels = new Map(Object.entries(raw.status_labels));
  const engineStates = new Map(Object.entries(raw.engine_states));
  return Object.freeze({
    statuses: Object.freeze([...raw.statuses]),
    phases: Object.freeze([...raw.phases]), // the pipeline's phases, in order
    phaseStatus: Object.freeze({ ...raw.phase_status }), // phase -> the status a run has in it
    layerLabels: Object.freeze({ ...raw.layer_labels }), // pull layer state -> label
    isActive: (status) => active.has(status),
    statusLabel: (status) => statusLabels.get(status) ?? String(status ?? ""),
    engineStateLabel: (state) => engineStates.get(state) ?? String(state ?? ""), // engine health
  });
}

let embedded = null;

// The vocabulary the server embedded in this page.
export function pageVocabulary(doc = document) {
  if (embedded === null) {
    embedded = makeVocabulary(JSON.parse(doc.getElementById("pullrun-vocabulary").textContent));
  }
  return embedded;
}
