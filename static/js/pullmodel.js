// Pull progress without the DOM: per-layer state from `pull` events (the same
// state machine as backend/runs/progress.py), the server's overall figures,
// speed, and what a layer row or the overall line says. pull.js draws it.
// tests/js/pullmodel.test.mjs feeds it the `pull` events of every stream in
// tests/fixtures/pulls and checks it agrees with progress.py.

import { formatBytes, formatDuration } from "./format.js";

const SPEED_WINDOW_MS = 3000;
const FINISHED = new Set(["done", "exists"]);
const DOWNLOADED = new Set(["verifying", "downloaded", "extracting", "done"]);

export function newLayer(id) {
  return { id, state: "waiting", status: "", total: null, downloaded: 0, extracted: 0 };
}

// One `pull` event's message for one layer: progress.py's `PullProgress._apply`.
// `units` is the event's (present only when the engine gave one).
export function applyMessage(layer, status, current, total, units) {
  const finished = FINISHED.has(layer.state);
  const known = (v) => v !== null && v !== undefined;
  if (status === "Already exists") {
    layer.state = "exists";
  } else if (status === "Pull complete") {
    layer.state = "done";
    if (layer.total) layer.downloaded = layer.total;
    layer.extracted = 1;
  } else if (status === "Downloading") {
    layer.state = "downloading";
    if (total) layer.total = total;
    if (known(current)) layer.downloaded = Math.max(layer.downloaded, current);
  } else if (status === "Verifying Checksum" || status === "Download complete") {
    layer.state = status.startsWith("Verifying") ? "verifying" : "downloaded";
    if (layer.total) layer.downloaded = layer.total;
  } else if (status === "Extracting") {
    layer.state = "extracting";
    if (layer.total) layer.downloaded = layer.total;
    // Seconds-based progress (`units: "s"`) has no total: no fraction.
    if (known(current) && total && !known(units)) {
      layer.extracted = Math.max(layer.extracted, Math.min(current / total, 1));
    }
  } else if ((status === "Pulling fs layer" || status === "Waiting") && !finished) {
    layer.state = "waiting";
  }
  // Anything else ("Retrying in N seconds", new texts) leaves the state as is.
  layer.status = status;
}

// How much of the layer has downloaded, 0..1: progress.py's `Layer.download`.
export function downloadFraction(layer) {
  if (DOWNLOADED.has(layer.state)) return 1;
  return layer.total ? Math.min(layer.downloaded / layer.total, 1) : 0;
}

// Overall figures summed from the layers, as progress.py's `overall()` sums
// them (its fraction is the server's alone: it never goes backwards).
export function layerTotals(layers) {
  let bytesDone = 0;
  let bytesTotal = 0;
  let done = 0;
  let count = 0;
  for (const layer of layers) {
    count++;
    if (FINISHED.has(layer.state)) done++;
    if (layer.total) bytesTotal += layer.total;
    bytesDone += Math.min(layer.downloaded, layer.total || layer.downloaded);
  }
  return { bytes_done: bytesDone, bytes_total: bytesTotal, layers_done: done, layers_total: count };
}

// What a layer's row shows. `labels`: the vocabulary's layer labels.
export function layerView(layer, labels) {
  const label = labels[layer.state] || layer.state;
  const extracting = layer.state === "extracting";
  const value = FINISHED.has(layer.state) ? 1 : extracting ? layer.extracted : downloadFraction(layer);
  let stateText = label;
  if (layer.state === "downloading" || extracting) stateText += ` ${Math.floor(value * 100)}%`;
  else if (!labels[layer.state] || (layer.status && layer.status.startsWith("Retrying"))) stateText = layer.status;
  let bytes = "";
  // Past the total (the engine says so at times) counts as the total, as in the overall figures.
  const done = Math.min(layer.downloaded, layer.total);
  if (layer.state === "downloading" && layer.total) bytes = `${formatBytes(done)} / ${formatBytes(layer.total)}`;
  else if (layer.total) bytes = formatBytes(layer.total);
  return { state: layer.state, label, stateText, value, extracting, bytes };
}

export class PullModel {
  constructor() {
    this.layers = new Map(); // id -> layer (newLayer), in the order they appeared
    this.overall = null; // the last `overall` of the server
    this.error = null;
    this.samples = []; // [ms, bytes_done]
    this.complete = false;
    this.started = null;
    this.finishedIn = null;
    this.pullSeconds = null;
  }

  // The snapshot's layers (backend/web/snapshot.py) and overall figures. Its
  // `download` and `extract` are rounded: the exact `downloaded` bytes and
  // `extracted` fraction are used when it gives them.
  load(snapshotLayers, overall, error) {
    for (const s of snapshotLayers || []) {
      const layer = this.layer(s.id);
      layer.state = s.state;
      layer.status = s.status;
      layer.total = s.total || null;
      layer.downloaded = s.downloaded ?? (s.total ? Math.round((s.download || 0) * s.total) : 0);
      layer.extracted = s.extracted ?? (s.extract || 0);
    }
    this.overall = overall || null;
    this.complete = Boolean(overall && overall.fraction >= 1);
    this.error = error || null;
  }

  layer(id) {
    let layer = this.layers.get(id);
    if (!layer) {
      layer = newLayer(id);
      this.layers.set(id, layer);
    }
    return layer;
  }

  // One `pull` event's data; `now` in ms (for the speed).
  apply(data, now) {
    if (data.layer) applyMessage(this.layer(data.layer), data.status, data.current, data.total, data.units);
    if (data.overall) {
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
  }

  // Bytes per second over the last few seconds, or null.
  speed() {
    if (this.samples.length < 2) return null;
    const [t0, b0] = this.samples[0];
    const [t1, b1] = this.samples[this.samples.length - 1];
    if (t1 - t0 < 250) return null;
    return Math.max(0, ((b1 - b0) * 1000) / (t1 - t0));
  }

  // The overall line: bytes, %, layers, then speed and ETA, or the average once done.
  figures() {
    const o = this.overall;
    if (!o) return "";
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
    return parts.join(" · ");
  }
}
