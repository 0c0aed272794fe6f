// static/js/pullmodel.js: `pull` events -> layer rows and overall figures.
// tests/js/fixtures/pulls/*.json hold, for every pull stream recorded in
// tests/fixtures/pulls, the `pull` events the server sends and what
// backend/runs/progress.py makes of each: the model must agree.

import assert from "node:assert/strict";
import { describe as suite, test } from "node:test";

import {
  PullModel, applyMessage, downloadFraction, layerTotals, layerView, newLayer,
} from "../../static/js/pullmodel.js";
import { fixture, fixtureNames, vocabulary } from "./helpers.mjs";

const names = fixtureNames("pulls");

// A layer as the fixtures write progress.py's: the figures its row is drawn from.
function figures(layer) {
  return {
    id: layer.id,
    state: layer.state,
    total: layer.total,
    downloaded: layer.downloaded,
    extracted: layer.extracted,
    download: downloadFraction(layer),
  };
}

// A snapshot gives a layer's download and extraction as fractions rounded to
// 4 places (backend/web/snapshot.py), not its bytes: a page loaded mid-pull
// can be that far off (no visible difference) until the layer's next report.
function same(actual, expected, where, exact) {
  if (exact) {
    assert.deepEqual(actual, expected, where);
    return;
  }
  const { downloaded, download, extracted, ...rest } = actual;
  const { downloaded: d, download: f, extracted: e, ...expectedRest } = expected;
  assert.deepEqual(rest, expectedRest, where);
  const total = expected.total;
  assert.ok(Math.abs(extracted - e) <= 0.00005 + 1e-12, `${where}: extracted ${extracted} vs ${e}`);
  if (!total) return; // bytes without a total are not shown
  assert.ok(Math.abs(download - f) <= 0.00005 + 1 / total, `${where}: download ${download} vs ${f}`);
  const shown = Math.min(downloaded, total); // as the row and the overall figures count them
  assert.ok(Math.abs(shown - Math.min(d, total)) <= total * 0.00005 + 1, `${where}: ${downloaded} vs ${d} bytes`);
}

function counts(overall) {
  const { bytes_done, bytes_total, layers_done, layers_total } = overall;
  return { bytes_done, bytes_total, layers_done, layers_total };
}

test("every recorded pull stream has its fixture", () => {
  assert.ok(names.length >= 10, names.join(", "));
  assert.ok(names.some((name) => name.startsWith("recorded-")));
});

for (const name of names) {
  const pull = fixture(`pulls/${name}`);
  // progress.py's figures for each layer as of each event.
  const asOf = pull.events.map(() => new Map());
  pull.after.forEach((after, i) => {
    for (const [id, layer] of i ? asOf[i - 1] : []) asOf[i].set(id, layer);
    if (after.layer) asOf[i].set(after.layer.id, after.layer);
  });

  suite(`pull: ${name}`, () => {
    test("each event: the layer's figures and the overall ones agree with progress.py", () => {
      const model = new PullModel();
      pull.events.forEach((data, i) => {
        model.apply(structuredClone(data), i * 100);
        const expected = pull.after[i];
        const where = `event ${i + 1} (${data.status})`;
        if (expected.layer) assert.deepEqual(figures(model.layers.get(data.layer)), expected.layer, where);
        assert.deepEqual(model.overall, data.overall, where);
        // The rows add up to the overall figures the page shows.
        assert.deepEqual(layerTotals(model.layers.values()), counts(data.overall), where);
        assert.equal(model.complete, expected.complete, where);
        assert.equal(model.error, data.error ? data.message : null, where);
      });
      assert.deepEqual([...model.layers.values()].map(figures), pull.layers);
    });

    // The run page (re)loaded mid-pull: the snapshot's layers, then the events after it.
    for (const label of ["", " exactly"]) {
      test(`a page loaded after any event shows progress.py's figures${label}`, () => {
        for (const snap of pull.snapshots) {
          const model = new PullModel();
          model.load(structuredClone(snap.layers), snap.pull_overall, snap.pull_error);
          const at = `loaded after event ${snap.after}`;
          for (const layer of model.layers.values()) {
            same(figures(layer), asOf[snap.after - 1].get(layer.id), `${at}, layer ${layer.id}`, label !== "");
          }
          assert.equal(model.layers.size, asOf[snap.after - 1].size, at);
          assert.equal(model.complete, pull.after[snap.after - 1].complete, at);
          pull.events.slice(snap.after).forEach((data, j) => {
            const i = snap.after + j;
            model.apply(structuredClone(data), 0);
            const expected = pull.after[i].layer;
            if (expected) same(figures(model.layers.get(data.layer)), expected, `${at}, event ${i + 1}`, label !== "");
          });
          const final = [...model.layers.values()].map(figures);
          assert.deepEqual(final.map((l) => l.id), pull.layers.map((l) => l.id), at);
          final.forEach((layer, k) => same(layer, pull.layers[k], `${at}, in the end`, label !== ""));
          assert.deepEqual(model.overall, pull.events[pull.events.length - 1].overall, at);
        }
      });
    }
  });
}

suite("applyMessage", () => {
  test("extraction in seconds (units) gives no fraction, whatever the event carries", () => {
    for (const units of ["s", ""]) {
      const layer = newLayer("a1b2c3d4e5f6");
      applyMessage(layer, "Extracting", 7, 8, units);
      assert.equal(layer.extracted, 0, `units ${JSON.stringify(units)}`);
    }
    const layer = newLayer("a1b2c3d4e5f6");
    applyMessage(layer, "Extracting", 4, 8, undefined);
    assert.equal(layer.extracted, 0.5);
  });

  test("a late Waiting does not un-finish a layer", () => {
    const layer = newLayer("a1b2c3d4e5f6");
    applyMessage(layer, "Already exists", null, null);
    applyMessage(layer, "Waiting", null, null);
    assert.equal(layer.state, "exists");
    assert.equal(layer.status, "Waiting");
  });

  test("a stale, lower report does not move the bytes back", () => {
    const layer = newLayer("a1b2c3d4e5f6");
    applyMessage(layer, "Downloading", 30, 100);
    applyMessage(layer, "Downloading", 5, 100);
    assert.equal(layer.downloaded, 30);
  });
});

suite("layerView: what a row says", () => {
  const labels = vocabulary.layerLabels;
  const layer = (fields) => ({ ...newLayer("a1b2c3d4e5f6"), ...fields });

  test("downloading: percentage and bytes", () => {
    assert.deepEqual(
      layerView(layer({ state: "downloading", status: "Downloading", total: 2097152, downloaded: 1048576 }), labels),
      {
        state: "downloading", label: "downloading", stateText: "downloading 50%", value: 0.5, extracting: false,
        bytes: "1.0 MiB / 2.0 MiB",
      },
    );
  });

  test("extracting fills the bar again", () => {
    const view = layerView(layer({ state: "extracting", status: "Extracting", total: 1024, downloaded: 1024, extracted: 0.25 }), labels);
    assert.equal(view.value, 0.25);
    assert.equal(view.stateText, "extracting 25%");
    assert.equal(view.bytes, "1.0 KiB");
    assert.ok(view.extracting);
  });

  test("cached and done layers are full; their labels are the server's", () => {
    const exists = layerView(layer({ state: "exists", status: "Already exists" }), labels);
    assert.equal(exists.stateText, "already exists");
    assert.equal(exists.value, 1);
    assert.equal(layerView(layer({ state: "done", status: "Pull complete", total: 10, downloaded: 10 }), labels).value, 1);
  });

  test("bytes past the total (the engine says so at times) are counted as the total, as overall", () => {
    const view = layerView(layer({ state: "downloading", status: "Downloading", total: 100000, downloaded: 150000 }), labels);
    assert.equal(view.bytes, "97.7 KiB / 97.7 KiB");
    assert.equal(view.value, 1);
  });

  test("a retry is shown in the engine's words", () => {
    const view = layerView(layer({ state: "waiting", status: "Retrying in 5 seconds" }), labels);
    assert.equal(view.stateText, "Retrying in 5 seconds");
    assert.equal(view.label, "waiting");
  });

  test("every layer state progress.py has is labelled", () => {
    const states = new Set();
    for (const name of names) for (const l of fixture(`pulls/${name}`).layers) states.add(l.state);
    for (const state of states) assert.ok(labels[state], state);
  });
});

suite("figures: the overall line", () => {
  const overall = (bytesDone, fraction) => ({
    bytes_done: bytesDone, bytes_total: 4 * 1048576, layers_done: 1, layers_total: 4, fraction,
  });

  test("speed and ETA while pulling", () => {
    const model = new PullModel();
    model.apply({ layer: null, status: "x", overall: overall(0, 0) }, 0);
    model.apply({ layer: null, status: "x", overall: overall(1048576, 0.25) }, 1000);
    assert.equal(model.speed(), 1048576);
    assert.equal(model.figures(), "1.0 MiB / 4.0 MiB · 25% · 1/4 layers · 1.0 MiB/s · ETA 3.0 s");
  });

  test("no speed from samples too close together", () => {
    const model = new PullModel();
    model.apply({ layer: null, status: "x", overall: overall(0, 0) }, 0);
    model.apply({ layer: null, status: "x", overall: overall(1000, 0.1) }, 100);
    assert.equal(model.speed(), null);
  });

  test("the average once complete, over the server's pull duration when known", () => {
    const model = new PullModel();
    model.apply({ layer: null, status: "x", overall: overall(0, 0) }, 0);
    model.apply({ layer: null, status: "Status: done", overall: { ...overall(4 * 1048576, 1), layers_done: 4 } }, 2000);
    assert.ok(model.complete);
    assert.equal(model.finishedIn, 2);
    assert.equal(model.figures(), "4.0 MiB / 4.0 MiB · 100% · 4/4 layers · 2.0 MiB/s average over 2.0 s");
    model.pullSeconds = 4;
    assert.match(model.figures(), /1\.0 MiB\/s average over 4\.0 s$/);
  });

  test("an error stops the speed", () => {
    const model = new PullModel();
    model.apply({ layer: null, status: "x", overall: overall(0, 0) }, 0);
    model.apply({ layer: null, status: "error", error: true, message: "unknown blob", overall: overall(1048576, 0.25) }, 1000);
    assert.equal(model.error, "unknown blob");
    assert.equal(model.figures(), "1.0 MiB / 4.0 MiB · 25% · 1/4 layers");
  });
});
