"""RunHistory: a run's events accumulated into the arrays the charts draw. Synthetic events check
each event type and the edge cases (diverged layers, a resumed run, a torn log line, events
before run_started); one real tiny LoRA-drop run checks that the live events and the run
folder's events.jsonl give identical arrays, equal to the events' own values."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from background_run import finish_run, start_run, stop_run
from studio.ui.history import GROUPS, RunHistory
from studio.ui.layernames import compact_name, layer_period, module_type, short_name
from studio.ui.runseries import GrowingTable


LAYERS = [f"model.layers.{i}.self_attn.{t}" for i in range(2) for t in ("q_proj", "v_proj")]


def _ev(type_: str, step: int, **payload) -> dict:
    return {"type": type_, "step": step, "time": 1000.0 + step, **payload}


def synthetic_events() -> list[dict]:
    """A small AdaLoRA-like run: 6 steps, evals at 3 and 6, telemetry at 2, 4 and 6 (final)."""
    events = [_ev("progress", 0, message="loading the base model"),
              _ev("run_started", 0, config={"variant": {"name": "adalora"}}, trainable_params=100,
                  total_params=1000, adapted_layers=LAYERS, device="cpu", precision="fp32", total_steps=6,
                  train_examples=40, eval_examples=4, data_format="text", resumed_from=None,
                  run_dir="/runs/20250101-000000-adalora")]
    for step in range(1, 7):
        events.append(_ev("step", step, loss=3.0 - 0.1 * step, lr=1e-3 * (7 - step), grad_norm=0.5 + step,
                          tokens_per_s=1000.0 + step, epoch=step / 6, total_steps=6, memory_mb=100.0 + step))
        if step % 3 == 0:
            events.append(_ev("eval", step, eval_loss=3.1 - 0.1 * step, eval_accuracy=0.1 * step,
                              eval_runtime=0.1, epoch=step / 6))
        if step % 2 == 0:
            layers = {}
            for i, name in enumerate(LAYERS):
                n = 1 + (i + step) % 3                     # spectra of different lengths
                layers[name] = {"sv": [float(step + i) / (k + 1) for k in range(n)], "k90": n, "k99": n,
                                "stable_rank": 1.0, "effective_rank": 1.5, "fro_norm": 2.0, "kind": "exact"}
            if step == 4:
                layers[LAYERS[1]] = None                   # a diverged layer
            events.append(_ev("spectra", step, layers=layers, final=False, cost_s=0.01))
            events.append(_ev("importance", step, method="relative update",
                              layers={n: 0.1 * step + i for i, n in enumerate(LAYERS)}))
            events.append(_ev("importance", step, method="adalora sensitivity",
                              layers={n: 1e-9 * (step + i) for i, n in enumerate(LAYERS)}))
            events.append(_ev("ranks", step, layers={n: max(0, 6 - step + i % 2) for n in LAYERS},
                              budget=24 - 2 * step, target_budget=12))
            events.append(_ev("decomposition", step, layers={n: {"dM": 0.01 * step, "dD": 0.02 * step + i}
                                                             for i, n in enumerate(LAYERS)}))
    events.append(_ev("spectra", 6, layers={n: {"sv": [9.0, 1.0], "k90": 1, "k99": 2, "kind": "direction"}
                                            for n in LAYERS}, final=True))
    events.append(_ev("checkpoint", 6, path="/runs/x/checkpoints/checkpoint-6"))
    events.append(_ev("run_finished", 6, status="completed", error=None, adapter_path="/runs/x/adapter",
                      train_s=1.0))
    return events


# ---- names -------------------------------------------------------------------------------------

def test_display_names():
    name = "base_model.model.model.layers.11.mlp.down_proj"
    assert short_name(name) == "model.layers.11.mlp.down_proj"
    assert short_name("model.layers.0.self_attn.q_proj") == "model.layers.0.self_attn.q_proj"
    assert module_type(name) == "down_proj"
    assert compact_name(name) == "L11 down_proj"
    assert compact_name("encoder.dense") == "encoder.dense"
    assert layer_period(LAYERS) == 2 and layer_period(["encoder.dense", "pooler.dense"]) == 1


# ---- synthetic events ----------------------------------------------------------------------------

def test_step_series_eval_and_status_hold_the_events():
    events = synthetic_events()
    h = RunHistory()
    h.extend(events)
    steps = [e for e in events if e["type"] == "step"]
    np.testing.assert_array_equal(h.steps, [e["step"] for e in steps])
    for key in ("loss", "lr", "grad_norm", "tokens_per_s", "epoch", "memory_mb"):
        np.testing.assert_array_equal(getattr(h, key), [e[key] for e in steps])
    evals = [e for e in events if e["type"] == "eval"]
    np.testing.assert_array_equal(h.eval_steps, [3, 6])
    np.testing.assert_array_equal(h.eval_loss, [e["eval_loss"] for e in evals])
    assert set(h.eval_metrics) == {"eval_loss", "eval_accuracy"}      # runtimes are not metrics
    np.testing.assert_array_equal(h.eval_metrics["eval_accuracy"], [e["eval_accuracy"] for e in evals])

    assert h.name == "20250101-000000-adalora" and h.variant == "adalora"
    s = h.status
    assert s["state"] == "completed" and s["error"] is None and s["step"] == 6 and s["total_steps"] == 6
    assert s["tokens_per_s"] == 1006.0 and s["device"] == "cpu" and s["trainable_params"] == 100
    assert s["memory_mb"] == 106.0
    assert s["adapter_path"] == "/runs/x/adapter" and s["checkpoint"].endswith("checkpoint-6")
    assert h.layers == LAYERS


def test_add_reports_the_chart_groups_it_changed():
    h = RunHistory()
    changed = [h.add(e) for e in synthetic_events()]
    by_type = {}
    for event, groups in zip(synthetic_events(), changed):
        by_type.setdefault(event["type"], groups)
        assert groups <= GROUPS
    assert by_type["step"] == {"loss", "optimizer", "throughput", "status"}
    assert by_type["eval"] == {"loss"}
    assert by_type["spectra"] == {"spectra"}
    assert by_type["importance"] == {"importance"}
    assert by_type["ranks"] == {"ranks"}
    assert by_type["decomposition"] == {"decomposition"}
    assert by_type["run_finished"] == by_type["progress"] == {"status"}
    assert h.add({"type": "something_new", "step": 1, "time": 0}) == set()


def test_spectra_snapshots_keep_every_step_pad_and_mark_diverged_layers():
    events = synthetic_events()
    h = RunHistory()
    h.extend(events)
    spectra = [e for e in events if e["type"] == "spectra"]
    assert [s.step for s in h.spectra] == [2, 4, 6, 6]
    assert [s.final for s in h.spectra] == [False, False, False, True]
    assert h.latest_spectra is h.spectra[-1] and h.latest_spectra.kind == "direction"
    for snap, event in zip(h.spectra, spectra):
        assert snap.layers == LAYERS
        matrix = snap.matrix()
        assert matrix.shape == (len(LAYERS), max(len(v["sv"]) for v in event["layers"].values() if v))
        for row, name in enumerate(LAYERS):
            entry = event["layers"][name]
            if entry is None:
                assert snap.sv[row] is None and np.isnan(matrix[row]).all() and np.isnan(snap.k90[row])
                continue
            n = len(entry["sv"])
            np.testing.assert_array_equal(matrix[row, :n], entry["sv"])
            assert np.isnan(matrix[row, n:]).all()                      # padding
            assert snap.k90[row] == entry["k90"] and snap.k99[row] == entry["k99"]
    assert h.spectra[1].sv[1] is None and h.spectra[1].kinds[1] is None


def test_importance_keeps_the_latest_per_method():
    h = RunHistory()
    h.extend(synthetic_events())
    assert h.importance_methods == ["relative update", "adalora sensitivity"]
    latest = h.importance["relative update"]
    assert latest.step == 6 and latest.layers == LAYERS
    np.testing.assert_allclose(latest.values, [0.6 + i for i in range(len(LAYERS))])
    assert latest.kept is None and h.kept is None


def test_ranks_become_a_layers_by_time_matrix_with_the_budget():
    events = synthetic_events()
    h = RunHistory()
    h.extend(events)
    ranks = [e for e in events if e["type"] == "ranks"]
    np.testing.assert_array_equal(h.rank_steps, [2, 4, 6])
    assert h.rank_layers == LAYERS
    expected = np.array([[e["layers"][n] for e in ranks] for n in LAYERS], dtype=float)
    np.testing.assert_array_equal(h.rank_matrix, expected)
    np.testing.assert_array_equal(h.budget, [20, 16, 12])
    assert h.target_budget == 12


def test_decomposition_points_carry_layer_index_and_step():
    h = RunHistory()
    h.extend(synthetic_events())
    assert len(h.decomposition_dm) == 3 * len(LAYERS)
    np.testing.assert_array_equal(h.decomposition_layer, [0, 1, 2, 3] * 3)
    np.testing.assert_array_equal(h.decomposition_step, np.repeat([2, 4, 6], 4))
    np.testing.assert_allclose(h.decomposition_dd, [0.02 * s + i for s in (2, 4, 6) for i in range(4)])
    # the final measurement repeats the last step: it replaces that step's points
    h.add(_ev("decomposition", 6, layers={n: {"dM": 1.0, "dD": 2.0} for n in LAYERS}))
    assert len(h.decomposition_dm) == 12 and (h.decomposition_dm[-4:] == 1.0).all()


def test_events_before_run_started_are_reordered_to_the_model_order():
    """LoRA-drop reports its selection while building, before run_started: its importance lists
    layers grouped by type; run_started's adapted_layers then fixes the order."""
    h = RunHistory()
    by_type = sorted(LAYERS, key=module_type)
    h.add(_ev("decomposition", 0, layers={n: {"dM": i, "dD": i} for i, n in enumerate(by_type)}))
    h.add(_ev("importance", 0, method="lora-drop ‖BAx‖²", layers={n: 1.0 for n in by_type},
              kept=[LAYERS[0], LAYERS[3]], threshold=0.5, sample_rows=8))
    assert h.layers == by_type
    h.add(_ev("run_started", 0, config={"variant": {"name": "lora-drop"}}, adapted_layers=LAYERS))
    assert h.layers == LAYERS
    # the points keep naming the same layers
    names = [h.layers[int(i)] for i in h.decomposition_layer]
    assert names == by_type and list(h.decomposition_dm) == [0, 1, 2, 3]
    assert h.kept == [LAYERS[0], LAYERS[3]] and h.lora_drop_threshold == 0.5


def test_a_resumed_run_replaces_what_followed_its_checkpoint():
    h = RunHistory()
    first = [e for e in synthetic_events() if e["type"] != "run_finished"]
    h.extend(first)
    resumed = [_ev("run_started", 4, config={"variant": {"name": "adalora"}}, adapted_layers=LAYERS,
                   resumed_from="/runs/x/checkpoints/checkpoint-4")]
    changed = h.add(resumed[0])
    assert {"loss", "optimizer", "spectra", "ranks", "decomposition"} <= changed
    np.testing.assert_array_equal(h.steps, [1, 2, 3, 4])
    np.testing.assert_array_equal(h.eval_steps, [3])
    assert [s.step for s in h.spectra] == [2, 4]
    np.testing.assert_array_equal(h.rank_steps, [2, 4])
    assert h.decomposition_step.max() == 4
    h.add(_ev("step", 5, loss=9.0, lr=0.0, grad_norm=0.0, tokens_per_s=1.0))
    np.testing.assert_array_equal(h.steps, [1, 2, 3, 4, 5])
    assert h.loss[-1] == 9.0
    # a replayed step without a resumed_from is also not drawn twice
    h.add(_ev("step", 3, loss=7.0))
    np.testing.assert_array_equal(h.steps, [1, 2, 3])


def test_json_nulls_become_nan():
    h = RunHistory()
    h.add(_ev("step", 1, loss=None, lr=1e-3, grad_norm=None, tokens_per_s=None))
    assert math.isnan(h.loss[0]) and math.isnan(h.grad_norm[0]) and h.lr[0] == 1e-3


def test_growing_table_doubles_capacity_and_hands_out_views():
    table = GrowingTable(["step", "loss"], capacity=4)
    for i in range(1000):
        table.append({"step": i, "loss": 1.0 / (i + 1)})
    assert len(table) == 1000 and table._data.shape[1] == 1024    # 4 doubled 8 times
    column = table.column("loss")
    assert column.base is not None and np.shares_memory(column, table._data)
    np.testing.assert_array_equal(table.column("step"), np.arange(1000))
    table.append({"step": 1000, "extra": 5.0})                     # a late column, back-filled
    assert np.isnan(table.column("extra")[:-1]).all() and table.column("extra")[-1] == 5.0


def test_from_run_folder_skips_a_torn_last_line(tmp_path):
    events = synthetic_events()
    lines = [json.dumps(e) for e in events]
    (tmp_path / "events.jsonl").write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:25], encoding="utf-8")
    h = RunHistory.from_run_folder(tmp_path)
    assert h.name == tmp_path.name
    assert len(h.steps) == 6 and len(h.spectra) == 4
    assert h.status["state"] == "running"                          # run_finished was the torn line
    assert RunHistory.from_run_folder(tmp_path / "missing").steps.size == 0


# ---- a real run ----------------------------------------------------------------------------------

# The run goes in a subprocess: it keeps torch out of this process, whose heap every test's
# teardown walks (conftest.py), and trains on the other core while the synthetic tests run.
VARIANT = {"name": "lora-drop", "r": 4, "threshold": 0.5}     # threshold 0.5: some layers shared


@pytest.fixture(scope="module", autouse=True)
def _real_run(tmp_path_factory, studio_home):
    """Start the tiny LoRA-drop run (8 steps, telemetry every 2) when the module starts."""
    folder = tmp_path_factory.mktemp("lora-drop-run")
    proc = start_run(folder, VARIANT)
    yield folder, proc
    stop_run(proc)


@pytest.fixture(scope="module")
def lora_drop_run(_real_run):
    """(run folder, the events its sink received live)."""
    return finish_run(*_real_run)


def _arrays(h: RunHistory) -> dict:
    out = {k: getattr(h, k).copy() for k in ("steps", "loss", "lr", "grad_norm", "tokens_per_s", "epoch", "memory_mb",
                                              "eval_steps", "eval_loss", "rank_steps", "rank_matrix", "budget",
                                              "decomposition_layer", "decomposition_step", "decomposition_dm",
                                              "decomposition_dd")}
    for i, snap in enumerate(h.spectra):
        out[f"spectra{i}"] = snap.matrix()
        out[f"k90_{i}"], out[f"k99_{i}"] = snap.k90, snap.k99
    for method, snap in h.importance.items():
        out[f"importance {method}"] = snap.values
    return out


def test_live_and_from_the_run_folder_give_identical_arrays(lora_drop_run):
    run_dir, events = lora_drop_run
    live = RunHistory(name=run_dir.name)
    for event in events:
        live.add(event)
    folder = RunHistory.from_run_folder(run_dir)
    a, b = _arrays(live), _arrays(folder)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert live.layers == folder.layers and live.kept == folder.kept and live.shared == folder.shared
    assert [s.layers for s in live.spectra] == [s.layers for s in folder.spectra]
    assert live.status == folder.status and live.name == folder.name == run_dir.name


def test_a_real_run_history_holds_its_events(lora_drop_run):
    run_dir, events = lora_drop_run
    h = RunHistory.from_run_folder(run_dir)
    of = lambda kind: [e for e in events if e["type"] == kind]    # noqa: E731
    started = of("run_started")[0]
    assert h.layers == started["adapted_layers"] and h.variant == "lora-drop"
    np.testing.assert_array_equal(h.steps, [e["step"] for e in of("step")])
    np.testing.assert_array_equal(h.loss, [e["loss"] for e in of("step")])
    np.testing.assert_array_equal(h.eval_loss, [e["eval_loss"] for e in of("eval")])
    assert [s.step for s in h.spectra] == [e["step"] for e in of("spectra")]
    last = of("spectra")[-1]
    for row, name in enumerate(h.latest_spectra.layers):
        np.testing.assert_array_equal(h.latest_spectra.sv[row], last["layers"][name]["sv"])
    # LoRA-drop: its build-time selection, then the relative update every telemetry step
    ranks = of("ranks")[0]
    assert h.kept == ranks["kept"] and h.shared == ranks["shared"] and h.shared
    assert 0 < len(h.kept) < len(h.layers)
    np.testing.assert_array_equal(h.rank_matrix[:, 0], [ranks["layers"][n] for n in h.rank_layers])
    for event in of("importance"):
        if event["step"] == of("importance")[-1]["step"] or event["method"].startswith("lora-drop"):
            snap = h.importance[event["method"]]
            assert snap.values.tolist() == [event["layers"][n] for n in snap.layers]
    drop = h.importance["lora-drop ‖BAx‖²"]
    assert drop.threshold == 0.5 and drop.kept == h.kept
    assert h.status["state"] == "completed"


def test_every_event_kind_has_a_handler_and_a_chart_group():
    """The window folds every kind the protocol defines (studio/core/events.py), by an explicit table."""
    from studio.core.events import EVENT_KINDS
    from studio.ui.history import _EVENT_GROUPS

    assert set(RunHistory.HANDLERS) == set(EVENT_KINDS) == set(_EVENT_GROUPS)
