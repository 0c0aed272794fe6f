// Pull progress: one row per layer (state + a <progress> that fills for the
// download and again for the extraction, like the docker CLI) and an overall
// bar with bytes, percentage, speed and ETA. Events only update the model;
// the DOM is updated once per animation frame.

import { formatBytes, formatDuration, frameScheduler, h } from "./format.js";

export const LAYER_LABELS = {
  waiting: "waiting",
  downloading: "downloading",
  verifying: "verifying",
  downloaded: "downloaded",
  extracting: "extracting",
  done: "done",
  exists: "already exists",
};

const SPEED_WINDOW_MS = 3000;

// The same state machine as backend/progress.py, per layer.
function applyMessage(layer, status, current, total, units) {
  const finished = layer.state === "done" || layer.state === "exists";
  if (status === "Already exists") {
    layer.state = "exists";
  } else if (status === "Pull complete") {
    layer.state = "done";
    if (layer.total) layer.downloaded = layer.total;
    layer.extracted = 1;
  } else if (status === "Downloading") {
    layer.state = "downloading";
    if (total) layer.total = total;
    if (current !== null && current !== undefined) layer.downloaded = Math.max(layer.downloaded, current);
  } else if (status === "Verifying Checksum" || status === "Download complete") {
    layer.state = status.startsWith("Verifying") ? "verifying" : "downloaded";
    if (layer.total) layer.downloaded = layer.total;
  } else if (status === "Extracting") {
    layer.state = "extracting";
    if (layer.total) layer.downloaded = layer.total;
    if (current !== null && current !== undefined && total && !units) {
      layer.extracted = Math.max(layer.extracted, Math.min(current / total, 1));
    }
  } else if ((status === "Pulling fs layer" || status === "Waiting") && !finished) {
    layer.state = "waiting";
  }
  layer.status = status;
}

function downloadFraction(layer) {
  if (["verifying", "downloaded", "extracting", "done"].includes(layer.state)) return 1;
  return layer.total ? Math.min(layer.downloaded / layer.total, 1) : 0;
}

export class PullView {
  constructor(root) {
    this.root = root;
    this.list = root.querySelector("#layers");
    this.overallBox = root.querySelector("#pull-overall");
    this.bar = root.querySelector("#pull-progress");
    this.figures = root.querySelector("#pull-figures");
    this.note = root.querySelector("#pull-note");
    this.errorBox = root.querySelector("#pull-error");
    this.layers = new Map(); // id -> {id, state, status, total, downloaded, extracted, row}
    this.overall = null;
    this.error = null;
    this.samples = []; // [ms, bytes_done]
    this.complete = false;
    this.started = null;
    this.finishedIn = null;
    this.noteText = "";
    this.pullSeconds = null;
    this.schedule = frameScheduler(() => this.render());
  }

  load(snapshotLayers, overall, error) {
    for (const s of snapshotLayers || []) {
      const layer = this.layer(s.id);
      layer.state = s.state;
      layer.status = s.status;
      layer.total = s.total || null;
      layer.downloaded = s.total ? Math.round((s.download || 0) * s.total) : 0;
      layer.extracted = s.extract || 0;
    }
    this.overall = overall || null;
    this.complete = Boolean(overall && overall.fraction >= 1);
    this.error = error || null;
    this.schedule();
  }

  layer(id) {
    let layer = this.layers.get(id);
    if (!layer) {
      layer = { id, state: "waiting", status: "", total: null, downloaded: 0, extracted: 0, row: null };
      this.layers.set(id, layer);
    }
    return layer;
  }

  // One `pull` event.
  apply(data) {
    if (data.layer) applyMessage(this.layer(data.layer), data.status, data.current, data.total, data.units);
    if (data.overall) {
      const now = performance.now();
      if (this.started === null) this.started = now;
      this.overall = data.overall;
      this.samples.push([now, data.overall.bytes_done]);
      while (this.samples.length > 2 && now - this.samples[0][0] > SPEED_WINDOW_MS) this.samples.shift();
      if (data.overall.fraction >= 1 && !this.complete) {
        this.complete = true;
        this.finishedIn = (now - this.started) / 1000;
      }
    }
    if (data.error) this.error = data.message || data.status;
    this.schedule();
  }

  // The pull phase's duration as the server measured it (from `done`).
  setDuration(seconds) {
    this.pullSeconds = seconds || null;
    this.schedule();
  }

  setNote(text) {
    this.noteText = text;
    this.schedule();
  }

  speed() {
    if (this.samples.length < 2) return null;
    const [t0, b0] = this.samples[0];
    const [t1, b1] = this.samples[this.samples.length - 1];
    if (t1 - t0 < 250) return null;
    return Math.max(0, ((b1 - b0) * 1000) / (t1 - t0));
  }

  render() {
    if (this.note.textContent !== this.noteText) this.note.textContent = this.noteText;
    for (const layer of this.layers.values()) this.renderLayer(layer);
    const o = this.overall;
    this.overallBox.hidden = !o;
    if (o) {
      this.bar.value = o.fraction;
      this.bar.setAttribute("aria-valuetext", `${Math.floor(o.fraction * 100)}%`);
      const parts = [
        `${formatBytes(o.bytes_done)} / ${formatBytes(o.bytes_total)}`,
        `${Math.floor(o.fraction * 100)}%`,
        `${o.layers_done}/${o.layers_total} layers`,
      ];
      const speed = this.speed();
      if (!this.complete && !this.error && speed !== null) {
        parts.push(`${formatBytes(speed)}/s`);
        const left = o.bytes_total - o.bytes_done;
        if (speed > 0 && left > 0) parts.push(`ETA ${formatDuration(left / speed)}`);
      } else if (this.complete && !this.error) {
        const seconds = this.pullSeconds ?? this.finishedIn;
        if (seconds) parts.push(`${formatBytes(o.bytes_total / seconds)}/s average over ${formatDuration(seconds)}`);
      }
      const text = parts.join(" · ");
      if (this.figures.textContent !== text) this.figures.textContent = text;
    }
    this.errorBox.hidden = !this.error;
    if (this.error && this.errorBox.textContent !== this.error) this.errorBox.textContent = this.error;
  }

  renderLayer(layer) {
    if (!layer.row) {
      layer.row = this.list.querySelector(`li[data-layer="${CSS.escape(layer.id)}"]`);
      if (!layer.row) {
        layer.row = h(
          "li",
          { class: "layer", "data-layer": layer.id },
          h("code", { class: "layer-id", text: layer.id }),
          h("span", { class: "layer-state" }),
          h("progress", { class: "layer-bar", max: "1", value: "0" }),
          h("span", { class: "layer-bytes" }),
        );
        this.list.append(layer.row);
      }
      layer.els = {
        state: layer.row.querySelector(".layer-state"),
        bar: layer.row.querySelector(".layer-bar"),
        bytes: layer.row.querySelector(".layer-bytes"),
      };
    }
    const { row, els } = layer;
    const label = LAYER_LABELS[layer.state] || layer.state;
    const extracting = layer.state === "extracting";
    const finished = layer.state === "done" || layer.state === "exists";
    const value = finished ? 1 : extracting ? layer.extracted : downloadFraction(layer);
    row.className = `layer layer-${layer.state}`;
    row.dataset.state = layer.state;
    let stateText = label;
    if (layer.state === "downloading" || extracting) stateText += ` ${Math.floor(value * 100)}%`;
    else if (!LAYER_LABELS[layer.state] || (layer.status && layer.status.startsWith("Retrying"))) stateText = layer.status;
    if (els.state.textContent !== stateText) els.state.textContent = stateText;
    els.bar.value = value;
    els.bar.classList.toggle("bar-extract", extracting);
    els.bar.setAttribute("aria-label", `Layer ${layer.id}: ${label}`);
    let bytes = "";
    if (layer.state === "downloading" && layer.total) bytes = `${formatBytes(layer.downloaded)} / ${formatBytes(layer.total)}`;
    else if (layer.total) bytes = formatBytes(layer.total);
    if (els.bytes.textContent !== bytes) els.bytes.textContent = bytes;
  }
}
