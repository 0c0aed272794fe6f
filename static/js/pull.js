// Pull progress on the page: one row per layer (state + a <progress> that
// fills for the download and again for the extraction, like the docker CLI)
// and an overall bar with bytes, percentage, speed and ETA. Events only update
// the model (pullmodel.js, no DOM); the DOM is updated once per animation frame.

import { frameScheduler, h } from "./format.js";
import { PullModel, layerView } from "./pullmodel.js";

export class PullView {
  // `labels`: the vocabulary's layer labels (vocabulary.js).
  constructor(root, labels) {
    this.labels = labels;
    this.list = root.querySelector("#layers");
    this.overallBox = root.querySelector("#pull-overall");
    this.bar = root.querySelector("#pull-progress");
    this.figures = root.querySelector("#pull-figures");
    this.note = root.querySelector("#pull-note");
    this.errorBox = root.querySelector("#pull-error");
    this.model = new PullModel();
    this.rows = new Map(); // layer id -> {row, state, bar, bytes}
    this.noteText = "";
    this.schedule = frameScheduler(() => this.render());
  }

  load(snapshotLayers, overall, error) {
    this.model.load(snapshotLayers, overall, error);
    this.schedule();
  }

  // One `pull` event.
  apply(data) {
    this.model.apply(data, performance.now());
    this.schedule();
  }

  // The pull phase's duration as the server measured it (from `done`).
  setDuration(seconds) {
    this.model.pullSeconds = seconds || null;
    this.schedule();
  }

  setNote(text) {
    this.noteText = text;
    this.schedule();
  }

  render() {
    const model = this.model;
    if (this.note.textContent !== this.noteText) this.note.textContent = this.noteText;
    for (const layer of model.layers.values()) this.renderLayer(layer);
    const o = model.overall;
    this.overallBox.hidden = !o;
    if (o) {
      this.bar.value = o.fraction;
      this.bar.setAttribute("aria-valuetext", `${Math.floor(o.fraction * 100)}%`);
      const text = model.figures();
      if (this.figures.textContent !== text) this.figures.textContent = text;
    }
    const error = model.error;
    this.errorBox.hidden = !error;
    if (error && this.errorBox.textContent !== error) this.errorBox.textContent = error;
  }

  // The layer's row: the server's (rendered from the snapshot) or a new one.
  row(id) {
    let els = this.rows.get(id);
    if (!els) {
      let row = this.list.querySelector(`li[data-layer="${CSS.escape(id)}"]`);
      if (!row) {
        row = h(
          "li",
          { class: "layer", "data-layer": id },
          h("code", { class: "layer-id", text: id }),
          h("span", { class: "layer-state" }),
          h("progress", { class: "layer-bar", max: "1", value: "0" }),
          h("span", { class: "layer-bytes" }),
        );
        this.list.append(row);
      }
      els = {
        row,
        state: row.querySelector(".layer-state"),
        bar: row.querySelector(".layer-bar"),
        bytes: row.querySelector(".layer-bytes"),
      };
      this.rows.set(id, els);
    }
    return els;
  }

  renderLayer(layer) {
    const els = this.row(layer.id);
    const view = layerView(layer, this.labels);
    els.row.className = `layer layer-${view.state}`;
    els.row.dataset.state = view.state;
    if (els.state.textContent !== view.stateText) els.state.textContent = view.stateText;
    els.bar.value = view.value;
    els.bar.classList.toggle("bar-extract", view.extracting);
    els.bar.setAttribute("aria-label", `Layer ${layer.id}: ${view.label}`);
    if (els.bytes.textContent !== view.bytes) els.bytes.textContent = view.bytes;
  }
}
