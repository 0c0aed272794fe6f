// The run page's timeline: each phase of the pipeline with its state
// (pending | active | done | skipped | failed) and its duration in seconds.
// backend/web/pages.py `timeline()` renders the page with the same rules;
// tests/js/phases.test.mjs checks the two agree. Pure: no DOM.

import { secondsBetween } from "./format.js";

// `vocab`: vocabulary.js; `statusAt`: status -> RFC 3339 time it was entered;
// `done`: the `done` event's data or null; `now`: ms, for the phase in progress.
export function phaseView(vocab, statusAt, done, now = Date.now()) {
  const { phases, phaseStatus } = vocab;
  const at = statusAt;
  const entered = phases.filter((p) => at[phaseStatus[p]]);
  const current = !done && entered.length ? entered[entered.length - 1] : null;
  // A non-zero exit or a timeout has no error: the run phase is what failed.
  const failed = done && done.status !== "succeeded" ? (done.error ? done.error.phase : "run") : null;
  const lastEntered = entered.length ? phases.indexOf(entered[entered.length - 1]) : -1;
  return phases.map((phase, index) => {
    let seconds = null;
    if (entered.includes(phase)) {
      if (done) seconds = done.durations ? done.durations[phase] ?? null : null;
      else {
        const next = entered.find((p) => phases.indexOf(p) > index);
        seconds = next
          ? secondsBetween(at[phaseStatus[phase]], at[phaseStatus[next]])
          : Math.max(0, (now - Date.parse(at[phaseStatus[phase]])) / 1000);
      }
    }
    let state = "pending";
    if (phase === failed) state = "failed";
    else if (phase === current) state = "active";
    else if (entered.includes(phase)) state = "done";
    else if (done || lastEntered > index) state = "skipped";
    return { phase, state, seconds };
  });
}

// Whether the run has got past its pull phase (it entered a later one).
export function pastPhase(vocab, statusAt, phase) {
  const { phases, phaseStatus } = vocab;
  return phases.slice(phases.indexOf(phase) + 1).some((p) => statusAt[phaseStatus[p]]);
}
