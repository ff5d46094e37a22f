"""The adapter gallery in the window (issue 5): cards, search/sort/filters, details and notes,
rename/delete, combine and resize dialogs, export with progress and cancel, the playground, and
a finished run landing selected in the gallery.

Each test has its own studio home (so its own gallery). Cards, filters and dialogs run on quick
fake entries (any bytes pass for listing); export, combine, resize and the playground also run
for real on one tiny adapter trained once per module. The engine's slow parts are replaced by
fakes only where the test is about the window (streaming, cancel), never to skip a real check.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QComboBox, QLabel, QLineEdit, QPlainTextEdit, QPushButton

from studio.core.gallery import Gallery

from gallery_fixtures import (JOB_TIMEOUT, gallery, home, make_window, plant_engine,  # noqa: F401 (fixtures)
                              real_adapter)

LLAMA_LAYER = "base_model.model.model.layers.{}.self_attn.{}"




def add_fake(gallery: Gallery, tmp: Path, name: str, *, variant="lora", r=8, base="bundled:smollm2-135m-instruct",
             task="causal-lm", size=1000, losses=(2.0, 1.6, 1.3), created="2026-01-01T10:00:00", notes="",
             telemetry=None, use_dora=False):
    """A gallery entry whose weights are placeholder bytes: enough for listing and dialogs."""
    src = tmp / "fake-src" / name
    src.mkdir(parents=True)
    config = {"peft_type": "LORA", "r": r, "lora_alpha": 2 * r, "use_dora": use_dora,
              "task_type": "CAUSAL_LM" if task == "causal-lm" else "SEQ_CLS",
              "target_modules": ["q_proj", "v_proj"], "base_model_name_or_path": base}
    (src / "adapter_config.json").write_text(json.dumps(config), encoding="utf-8")
    (src / "adapter_model.safetensors").write_bytes(b"\0" * size)
    meta = {"base_model": base, "task": task, "variant": variant, "loss_history": list(losses),
            "metrics": {"loss": losses[-1]} if losses else {}, "created": created, "notes": notes,
            "options": {"r": r, "alpha": 2 * r}, "run": f"/runs/{name}"}
    return gallery.add_folder(src, name, meta, telemetry)


def telemetry_events() -> dict:
    layers = [LLAMA_LAYER.format(i, m) for i in range(2) for m in ("q_proj", "v_proj")]
    return {"spectra": {"type": "spectra", "step": 40, "final": True,
                        "layers": {n: {"sv": [3.0 - i * 0.5, 1.0, 0.25], "k90": 2, "k99": 3, "stable_rank": 1.5,
                                       "effective_rank": 2.0, "kind": "exact"} for i, n in enumerate(layers)}},
            "importance": {"type": "importance", "step": 40, "method": "relative update ‖ΔW‖F/‖W0‖F",
                           "layers": {n: 0.1 * (i + 1) for i, n in enumerate(layers)}}}


@pytest.fixture
def fakes(gallery, tmp_path):
    """Four entries on two base models, three variants, different sizes, losses and dates."""
    add_fake(gallery, tmp_path, "chat-lora", r=8, size=4_000_000, losses=(2.1, 1.5, 0.9),
             created="2026-03-01T09:00:00", notes="good at small talk", telemetry=telemetry_events())
    add_fake(gallery, tmp_path, "chat-dora", variant="dora", r=8, size=2_500_000, losses=(2.2, 1.9, 1.4),
             created="2026-03-02T09:00:00", use_dora=True)
    add_fake(gallery, tmp_path, "chat-r4", r=4, size=1_200_000, losses=(2.0, 1.1), created="2026-02-01T09:00:00")
    add_fake(gallery, tmp_path, "sentiment", variant="vera", r=16, base="bundled:minilm-l6",
             task="sequence-classification", size=800_000, losses=(), created="2026-01-15T09:00:00",
             notes="reviews, 3 labels")
    return gallery


def copy_real(real_adapter: Path, gallery: Gallery, name: str) -> str:
    shutil.copytree(real_adapter, gallery.root / name)
    return name


def job(qtbot, window, trigger, timeout=JOB_TIMEOUT) -> tuple[str, object]:
    """Trigger a gallery action and wait for its background job: (outcome, value)."""
    with qtbot.waitSignal(window.gallery.job_finished, timeout=timeout) as blocker:
        trigger()
    return tuple(blocker.args)


# -- cards, search, sort, filters ------------------------------------------------------------------

def test_cards_show_every_entry_with_name_variant_size_and_loss(make_window, fakes):
    window = make_window()
    view = window.findChild(object, "galleryView")
    assert view is window.gallery_view and window.findChild(object, "galleryDock") is window.gallery_dock
    assert window.gallery_dock.toggleViewAction() in window.findChild(object, "viewMenu").actions()
    assert view.visible_names() == ["chat-dora", "chat-lora", "chat-r4", "sentiment"]     # newest first
    texts = {c.name: c.describe() for c in view.model.cards}
    assert "lora · rank 8" in texts["chat-lora"] and "4 MB" in texts["chat-lora"]
    assert "final loss 0.9" in texts["chat-lora"] and "2026-03-01 09:00" in texts["chat-lora"]
    assert "dora" in texts["chat-dora"] and "2.5 MB" in texts["chat-dora"]
    assert "vera" in texts["sentiment"] and "minilm-l6" in texts["sentiment"] and "loss" not in texts["sentiment"]
    index = view.model.index(view.visible_names().index("chat-lora"))
    assert index.data(Qt.ItemDataRole.AccessibleTextRole) == texts["chat-lora"]
    card = view.model.cards[view.visible_names().index("chat-lora")]
    assert card.loss_history == [2.1, 1.5, 0.9]
    # the delegate paints every card (sparkline included) without complaint
    view.list.resize(360, 500)
    assert not view.list.grab().isNull()
    assert view.count_label.text() == "4 adapters"
    context = [a.objectName() for a in window.gallery.context_menu().actions() if a.objectName()]
    assert {"playgroundAction", "exportAdapterAction", "deleteAction", "renameAction"} <= set(context)
    for name in ("importAdapterAction", "exportMergedAction", "exportAdapterAction", "combineAction",
                 "resizeAction", "playgroundAction", "renameAction", "deleteAction", "refreshAction",
                 "openFolderAction"):
        assert window.findChild(object, name) in window.gallery_menu.actions(), name


def test_search_sort_and_filters_change_what_is_visible(make_window, fakes, qtbot):
    window = make_window()
    view = window.gallery_view
    search = window.findChild(QLineEdit, "gallerySearch")
    search.setText("talk")                   # notes
    qtbot.waitUntil(lambda: view.visible_names() == ["chat-lora"])
    search.setText("DORA")                   # variant, any case
    qtbot.waitUntil(lambda: view.visible_names() == ["chat-dora"])
    search.setText("minilm")                 # base model
    qtbot.waitUntil(lambda: view.visible_names() == ["sentiment"])
    assert view.count_label.text() == "1 of 4 adapters"
    search.setText("nothing-like-this")
    qtbot.waitUntil(lambda: view.visible_names() == [])
    assert view.list_stack.currentWidget() is view.empty_note
    search.clear()
    qtbot.waitUntil(lambda: len(view.visible_names()) == 4)

    sort = window.findChild(QComboBox, "gallerySort")
    orders = {}
    for key in ("oldest", "name", "loss", "size", "newest"):
        sort.setCurrentIndex(sort.findData(key))
        orders[key] = view.visible_names()
    assert orders["oldest"] == ["sentiment", "chat-r4", "chat-lora", "chat-dora"]
    assert orders["name"] == ["chat-dora", "chat-lora", "chat-r4", "sentiment"]
    assert orders["loss"] == ["chat-lora", "chat-r4", "chat-dora", "sentiment"]     # no loss: last
    assert orders["size"] == ["chat-lora", "chat-dora", "chat-r4", "sentiment"]
    assert orders["newest"] == ["chat-dora", "chat-lora", "chat-r4", "sentiment"]

    base = window.findChild(QComboBox, "galleryBaseFilter")
    base.setCurrentIndex(base.findData("bundled:minilm-l6"))
    assert view.visible_names() == ["sentiment"]
    base.setCurrentIndex(base.findData("bundled:smollm2-135m-instruct"))
    variant = window.findChild(QComboBox, "galleryVariantFilter")
    variant.setCurrentIndex(variant.findData("lora"))
    assert view.visible_names() == ["chat-lora", "chat-r4"]
    # selecting an entry that the filters hide brings it back into view
    assert view.select("sentiment") and view.selected_name() == "sentiment"
    assert variant.currentIndex() == 0 and base.currentIndex() == 0


def test_details_show_metadata_charts_and_saved_notes(make_window, fakes, qtbot):
    window = make_window()
    view = window.gallery_view
    details = window.findChild(object, "galleryDetails")
    assert view.select("chat-lora")
    info = window.findChild(QLabel, "galleryDetailsInfo").text()
    for text in ("lora", "bundled:smollm2-135m-instruct", "4 MB", "0.9", "/runs/chat-lora", "alpha = 16",
                 str(fakes.root / "chat-lora")):
        assert text in info, text
    assert window.findChild(QLabel, "galleryDetailsTitle").text() == "chat-lora"
    # the entry's kept telemetry in the run's own chart widgets
    spectrum, importance = details.spectrum_chart, details.importance_chart
    assert spectrum.objectName() == "gallerySpectrumChart" and not spectrum.is_empty
    assert len(spectrum.layers) == 4 and spectrum.matrix[0].tolist() == [3.0, 1.0, 0.25]
    layers, values = importance.bar_data()
    assert len(layers) == 4 and sorted(values.tolist()) == pytest.approx([0.1, 0.2, 0.3, 0.4])
    compatible = window.findChild(object, "galleryCompatible")
    assert sorted(compatible.item(i).text() for i in range(compatible.count())) == ["chat-dora", "chat-r4"]
    # notes: edited, then saved when the field is left
    notes = window.findChild(QPlainTextEdit, "galleryNotes")
    assert notes.toPlainText() == "good at small talk"
    notes.setPlainText("best on greetings; try r 4")
    notes.editing_finished.emit()
    assert fakes.get("chat-lora").notes == "best on greetings; try r 4"
    # an entry without telemetry says so instead of an empty frame; notes edited then another
    # entry selected are saved too
    assert view.select("chat-r4")
    assert spectrum.is_empty and "No spectrum" in spectrum.empty_label.text()
    notes.setPlainText("shorter")
    assert view.select("sentiment")
    assert fakes.get("chat-r4").notes == "shorter"
    assert "classifier" in window.findChild(QLabel, "galleryDetailsInfo").text()


# -- rename, delete --------------------------------------------------------------------------------

def test_rename_and_delete_change_the_store(make_window, fakes, qtbot):
    window = make_window()
    view = window.gallery_view
    view.select("chat-r4")
    window.prompts.ask_text = lambda title, label, text: "chat small"
    window.findChild(object, "renameAction").trigger()
    assert "chat small" in [e.name for e in fakes.entries()] and "chat-r4" not in [e.name for e in fakes.entries()]
    assert view.selected_name() == "chat small"
    assert not window.banner.isVisible()

    # a bad name: one line in the banner, nothing changed
    window.prompts.ask_text = lambda title, label, text: "../escape"
    window.findChild(object, "renameAction").trigger()
    banner = window.findChild(QLabel, "errorBanner")
    assert banner.isVisible() and "not a path" in banner.text() and "\n" not in banner.text()
    assert "Traceback" not in banner.text()
    assert sorted(e.name for e in fakes.entries()) == ["chat small", "chat-dora", "chat-lora", "sentiment"]
    assert not (fakes.root.parent / "escape").exists()

    # delete: refused when not confirmed, done when confirmed
    asked = []
    window.prompts.confirm = lambda title, text: asked.append(text) or False
    window.findChild(object, "deleteAction").trigger()
    assert asked and "chat small" in asked[0]
    assert "chat small" in [e.name for e in fakes.entries()]
    window.prompts.confirm = lambda title, text: True
    window.findChild(object, "deleteAction").trigger()
    assert "chat small" not in [e.name for e in fakes.entries()]
    assert "chat small" not in view.visible_names() and view.selected_name() == ""
    assert not window.findChild(object, "deleteAction").isEnabled()      # nothing selected now

    # the folder opens in the file manager
    opened = []
    window.prompts.open_url = opened.append
    view.select("chat-lora")
    window.findChild(object, "openFolderAction").trigger()
    assert [u.toLocalFile() for u in opened] == [str(fakes.root / "chat-lora")]


def test_entries_added_elsewhere_appear_by_themselves(make_window, gallery, tmp_path, qtbot):
    window = make_window()               # the gallery folder does not exist yet
    view = window.gallery_view
    assert view.visible_names() == [] and "No adapters yet" in view.empty_note.text()
    add_fake(gallery, tmp_path, "from-the-cli")          # as `lora-studio train` would
    qtbot.waitUntil(lambda: view.visible_names() == ["from-the-cli"], timeout=10_000)
    add_fake(gallery, tmp_path, "second", created="2026-05-01T00:00:00")
    qtbot.waitUntil(lambda: view.visible_names() == ["second", "from-the-cli"], timeout=10_000)


# -- combine and resize dialogs --------------------------------------------------------------------

def test_combine_dialog_explains_what_cannot_be_combined(make_window, fakes, qtbot):
    window = make_window()
    window.gallery_view.select("chat-lora")
    window.findChild(object, "combineAction").trigger()
    dialog = window.gallery.combine_dialog
    assert dialog is not None and dialog.objectName() == "combineDialog" and dialog.isVisible()
    assert [e.name for e in dialog.entries] == ["chat-lora", "chat-dora", "chat-r4"]   # same base only
    problem = dialog.findChild(QLabel, "combineProblem")
    ok = dialog.findChild(QPushButton, "combineOkButton")
    assert "at least two" in problem.text() and not ok.isEnabled()
    dialog.set_checked("chat-r4")
    dialog.set_method("linear")
    assert "equal rank" in problem.text() and not ok.isEnabled()
    dialog.set_method("cat")
    assert problem.text() == "" and ok.isEnabled()
    density = dialog.findChild(object, "combineDensity")
    assert not density.isEnabled()
    dialog.set_method("ties")
    assert density.isEnabled()
    dialog.set_method("cat")
    dialog.set_checked("chat-dora")
    assert "DoRA" in problem.text() and not ok.isEnabled()
    dialog.set_checked("chat-dora", False)
    name = dialog.findChild(QLineEdit, "combineName")
    name.setText("chat-dora")                  # taken
    assert "already exists" in problem.text() and not ok.isEnabled()
    name.setText("bad/name")
    assert "not a path" in problem.text() and not ok.isEnabled()
    dialog.weight_spins["chat-lora"].setValue(0.0)
    dialog.weight_spins["chat-r4"].setValue(0.0)
    name.setText("fine-name")
    assert "weight" in problem.text() and not ok.isEnabled()
    dialog.reject()


def test_combine_and_resize_for_real(make_window, gallery, real_adapter, qtbot):
    copy_real(real_adapter, gallery, "tiny-a")
    copy_real(real_adapter, gallery, "tiny-b")
    window = make_window()
    view = window.gallery_view
    view.select("tiny-a")
    window.findChild(object, "combineAction").trigger()
    dialog = window.gallery.combine_dialog
    dialog.set_checked("tiny-b")
    dialog.set_method("linear")
    dialog.weight_spins["tiny-a"].setValue(0.5)
    dialog.weight_spins["tiny-b"].setValue(0.5)
    dialog.findChild(QLineEdit, "combineName").setText("tiny-mean")
    outcome, value = job(qtbot, window, dialog.findChild(QPushButton, "combineOkButton").click)
    assert outcome == "ok", value
    assert view.selected_name() == "tiny-mean"
    combined = gallery.get("tiny-mean")
    assert combined.meta["derived_from"]["combine"] == ["tiny-a", "tiny-b"] and combined.rank == 4

    # resize: the curve is measured in the background, then a rank is picked on it
    window.findChild(object, "resizeAction").trigger()
    dialog = window.gallery.resize_dialog
    assert dialog.objectName() == "resizeDialog"
    qtbot.waitUntil(lambda: dialog.curve is not None, timeout=JOB_TIMEOUT)
    curve = dialog.curve
    assert curve["ranks"] == [1, 2, 3, 4] and curve["kept"][-1] == pytest.approx(1.0)
    x, y = dialog.energy_curve_item.getData()
    assert list(x) == [1, 2, 3, 4] and y[-1] == pytest.approx(100.0)
    dialog.set_rank(2)
    keeps = dialog.findChild(QLabel, "resizeKeeps").text()
    assert f"rank 2 of 4 keeps {100 * curve['kept'][1]:.1f}% of ‖ΔW‖²" in keeps
    dialog.set_rank(4)
    ok = dialog.findChild(QPushButton, "resizeOkButton")
    assert not ok.isEnabled() and "not lower" in dialog.findChild(QLabel, "resizeProblem").text()
    dialog.set_energy(0.5)
    assert dialog.choice() == {"energy": 0.5}
    assert dialog.rank() == next(r for r, k in zip(curve["ranks"], curve["kept"]) if k >= 0.5)
    dialog.set_rank(2)
    assert ok.isEnabled() and dialog.findChild(QLineEdit, "resizeName").text() == "tiny-mean-r2"
    outcome, value = job(qtbot, window, ok.click)
    assert outcome == "ok", value
    assert view.selected_name() == "tiny-mean-r2" and gallery.get("tiny-mean-r2").rank == 2


# -- export ----------------------------------------------------------------------------------------

def test_export_adapter_and_merged_model_through_the_window(make_window, gallery, real_adapter, qtbot, tmp_path):
    copy_real(real_adapter, gallery, "tiny")
    window = make_window()
    window.gallery_view.select("tiny")
    out = tmp_path / "exports"
    out.mkdir()
    window.gallery.ask_export_folder = lambda caption, suggested: str(out)
    # an empty folder takes the export itself
    outcome, path = job(qtbot, window, window.findChild(object, "exportAdapterAction").trigger)
    assert outcome == "ok", path
    assert Path(path) == out
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    assert "exported the adapter of tiny" in window.log_view.toPlainText()
    # a folder that does not exist yet is made for the export (the folder picked, never a subfolder)
    merged = tmp_path / "tiny-merged"
    window.gallery.ask_export_folder = lambda caption, suggested: str(merged)
    outcome, path = job(qtbot, window, window.findChild(object, "exportMergedAction").trigger)
    assert outcome == "ok", path
    assert Path(path) == merged and (merged / "config.json").is_file() and list(merged.glob("*.safetensors"))
    assert not (merged / "adapter_config.json").exists()
    assert not window.gallery_view.job_strip.isVisible() and not window.banner.isVisible()
    # exporting again asks before it replaces the folder; Cancel leaves it be
    asked = []
    window.gallery.ask_replace = lambda folder, what, name: asked.append(folder) or False
    window.findChild(object, "exportMergedAction").trigger()
    assert asked == [merged] and window.gallery.job is None
    # the engine refuses a folder inside the gallery: one line in the banner
    window.gallery.ask_export_folder = lambda caption, suggested: str(gallery.root / "inside")
    outcome, message = job(qtbot, window, window.findChild(object, "exportAdapterAction").trigger)
    assert outcome == "failed" and "outside the gallery" in message
    banner = window.findChild(QLabel, "errorBanner")
    assert banner.isVisible() and "outside the gallery" in banner.text() and "Traceback" not in banner.text()


def test_export_shows_its_progress_and_cancels(make_window, fakes, qtbot, tmp_path, plant_engine):
    # the export runs in the engine process: a slow one is planted there
    plant_engine("""
from pathlib import Path
import threading
from studio.core import export
from studio.core.errors import Cancelled

release = threading.Event()

def slow_export(entry, out_dir, *, overwrite=False, gallery=None, progress=None, should_stop=None, dtype="auto"):
    progress("merging layer 3 of 12", 0.25)
    for _ in range(500):            # stops when the window asks, as the engine does
        if should_stop():
            raise Cancelled("cancelled; nothing was written")
        release.wait(0.01)
    return Path(out_dir)

export.export_merged = slow_export
""")
    window = make_window()
    window.gallery_view.select("chat-lora")
    window.gallery.ask_export_folder = lambda caption, suggested: str(tmp_path / "nowhere-yet")
    view = window.gallery_view
    window.findChild(object, "exportMergedAction").trigger()
    bar = window.findChild(object, "galleryProgress")
    qtbot.waitUntil(lambda: bar.maximum() == 1000 and bar.value() == 250,      # determinate: a fraction came
                    timeout=JOB_TIMEOUT)   # (the engine restarts with the plant first)
    assert view.job_strip.isVisible() and "merging layer 3 of 12" in view.job_label.text()
    assert not window.findChild(object, "exportAdapterAction").isEnabled()      # one gallery job at a time
    with qtbot.waitSignal(window.gallery.job_finished, timeout=JOB_TIMEOUT) as blocker:
        qtbot.mouseClick(window.findChild(QPushButton, "galleryCancelButton"), Qt.MouseButton.LeftButton)
    assert blocker.args[0] == "cancelled"
    assert not view.job_strip.isVisible() and not window.banner.isVisible()
    assert "cancelled" in window.log_view.toPlainText()
    assert window.findChild(object, "exportAdapterAction").isEnabled()


def test_import_adapter_folder(make_window, gallery, real_adapter, qtbot, tmp_path):
    window = make_window()
    folder = tmp_path / "made-elsewhere"
    shutil.copytree(real_adapter, folder)
    (folder / "telemetry.json").unlink(missing_ok=True)
    window.prompts.ask_directory = lambda caption: str(folder)
    outcome, entry = job(qtbot, window, window.findChild(object, "importAdapterAction").trigger)
    assert outcome == "ok", entry
    assert window.gallery_view.selected_name() == "made-elsewhere"
    assert gallery.get("made-elsewhere").variant == "lora"
    window.prompts.ask_directory = lambda caption: str(tmp_path)            # no adapter in it
    outcome, message = job(qtbot, window, window.findChild(object, "importAdapterAction").trigger)
    assert outcome == "failed" and "adapter_config.json" in window.banner.text()


# -- the playground --------------------------------------------------------------------------------

class FakePlayground:
    """Streams fixed text; the adapted answer waits for `gate`, so a test sees the base answer
    arrive alone first."""

    made: list["FakePlayground"] = []

    def __init__(self, entry):
        self.entry, self.task, self.closed = entry, entry.task, False
        self.gate = threading.Event()
        FakePlayground.made.append(self)

    def load(self, progress=None, should_stop=None):
        progress("loading the base model", 0.5)
        return self

    def generate(self, prompt, *, max_new_tokens=128, temperature=0.0, on_text=None, should_stop=None):
        for piece in ("The", " base", " answer"):
            on_text("base", piece)
        self.gate.wait(30)
        pieces = ["The", " adapted", " answer"]
        if prompt == "forever":
            pieces = (f" {i}" for i in range(10 ** 6))
        out = []
        for piece in pieces:
            if should_stop():
                break
            on_text("adapted", piece)
            out.append(piece)
            time.sleep(0.001 if prompt == "forever" else 0)
        return {"base": "The base answer", "adapted": "".join(out)}

    def classify(self, text):
        return {"labels": ["negative", "neutral", "positive"], "base": [0.4, 0.35, 0.25],
                "adapted": [0.05, 0.15, 0.8]}

    def close(self):
        self.closed = True


def test_playground_streams_into_both_panes(make_window, fakes, qtbot, monkeypatch):
    from studio.ui import playground

    FakePlayground.made = []
    monkeypatch.setattr(playground, "make_playground", FakePlayground)
    window = make_window()
    window.gallery_view.select("chat-lora")
    window.findChild(object, "playgroundAction").trigger()
    dialog = window.gallery.playground
    assert dialog.objectName() == "playground" and dialog.isVisible()
    qtbot.waitUntil(lambda: dialog.session is not None)
    assert dialog.adapter_combo.currentData() == "chat-lora"
    dialog.findChild(QPlainTextEdit, "playgroundPrompt").setPlainText("Say hello")
    base = dialog.findChild(QPlainTextEdit, "playgroundBase")
    adapted = dialog.findChild(QPlainTextEdit, "playgroundAdapted")
    dialog.findChild(QPushButton, "playgroundGenerate").click()
    qtbot.waitUntil(lambda: base.toPlainText() == "The base answer")
    assert adapted.toPlainText() == ""                     # streamed: the base answer came first, alone
    assert dialog.findChild(QPushButton, "playgroundStop").isEnabled()
    with qtbot.waitSignal(dialog.generated, timeout=JOB_TIMEOUT):
        FakePlayground.made[-1].gate.set()
    assert adapted.toPlainText() == "The adapted answer"
    assert "done" in dialog.findChild(QLabel, "playgroundStatus").text()

    # Stop ends a long generation; what came so far stays
    first = FakePlayground.made[-1]
    dialog.prompt.setPlainText("forever")
    dialog.generate()
    qtbot.waitUntil(lambda: len(adapted.toPlainText()) > 20, timeout=JOB_TIMEOUT)
    dialog.findChild(QPushButton, "playgroundStop").click()
    qtbot.waitUntil(lambda: dialog.run_job is None, timeout=JOB_TIMEOUT)
    assert "stopped" in dialog.status.text() and adapted.toPlainText().startswith(" 0 1 2")

    # the loaded model is kept for the next prompt, and closed when another adapter is chosen
    assert len(FakePlayground.made) == 1
    dialog.adapter_combo.setCurrentIndex(dialog.adapter_combo.findData("sentiment"))
    assert first.closed
    qtbot.waitUntil(lambda: dialog.session is not None and dialog.session_name == "sentiment")
    # a classifier: a probability per label, base and adapted, instead of text
    dialog.prompt.setPlainText("I loved it")
    with qtbot.waitSignal(dialog.classified, timeout=JOB_TIMEOUT):
        dialog.findChild(QPushButton, "playgroundGenerate").click()
    table = dialog.findChild(object, "playgroundClassification")
    assert dialog.pages.currentIndex() == 1 and table.rowCount() == 3
    assert [table.item(2, c).text() for c in range(3)] == ["positive", "25.0%", "80.0%"]
    prediction = dialog.findChild(QLabel, "playgroundPrediction").text()
    assert "Base model: <b>negative</b>" in prediction and "With adapter: <b>positive</b>" in prediction
    dialog.close()
    assert FakePlayground.made[-1].closed and dialog.session is None


def test_playground_generates_with_a_real_tiny_adapter(make_window, gallery, real_adapter, qtbot):
    copy_real(real_adapter, gallery, "tiny")
    window = make_window()
    window.gallery_view.select("tiny")
    window.gallery.open_playground()
    dialog = window.gallery.playground
    qtbot.waitUntil(lambda: dialog.session is not None, timeout=JOB_TIMEOUT)
    dialog.max_tokens.setValue(6)
    dialog.prompt.setPlainText("The capital of France is")
    with qtbot.waitSignal(dialog.generated, timeout=JOB_TIMEOUT) as blocker:
        dialog.generate()
    result = blocker.args[0]
    assert set(result) == {"base", "adapted"}
    assert dialog.base_pane.toPlainText() == result["base"] and dialog.adapted_pane.toPlainText() == result["adapted"]
    assert result["base"] or result["adapted"]              # a random tiny model still says something
    dialog.close()


# -- a run lands in the gallery --------------------------------------------------------------------

def test_a_finished_run_is_selected_in_the_gallery(make_window, qtbot):
    window = make_window()
    button = window.findChild(QPushButton, "trainButton")
    qtbot.waitUntil(button.isEnabled, timeout=60_000)
    with qtbot.waitSignal(window.run_finished, timeout=JOB_TIMEOUT) as blocker:
        button.click()
    result = blocker.args[0]
    assert result["status"] == "completed" and result["gallery_entry"]
    view = window.gallery_view
    assert view.selected_name() == result["gallery_entry"] and view.visible_names() == [result["gallery_entry"]]
    assert window.findChild(QLabel, "galleryDetailsTitle").text() == result["gallery_entry"]
    assert not view.details.spectrum_chart.is_empty         # the run's last spectrum came with it
    assert f"in the gallery as {result['gallery_entry']}" in window.log_view.toPlainText()


def test_an_engine_killed_while_exporting_or_generating_leaves_the_window_and_gallery_whole(
        make_window, gallery, real_adapter, qtbot, tmp_path, plant_engine):
    """The engine process dies (SIGKILL) in the middle of a merged export, then of a generation:
    each ends with one line naming the signal, nothing half-written is left, the gallery is as it
    was, and the next export and the next answer work on a fresh engine."""
    import os
    import signal

    from studio.core.engineclient import engine

    held = tmp_path / "held"
    plant_engine(f"""
import os, time
from studio.core import export, playground

def hold(what):
    open(os.path.join({str(held)!r}, what), "w").close()
    time.sleep(60)

merge, generate = export.export_merged, playground.Playground.generate
def slow_merge(*args, **kwargs):
    if not os.path.exists(os.path.join({str(held)!r}, "export-done")):
        hold("export")
    return merge(*args, **kwargs)
def slow_generate(self, *args, **kwargs):
    if not os.path.exists(os.path.join({str(held)!r}, "generate-done")):
        hold("generate")
    return generate(self, *args, **kwargs)
export.export_merged = slow_merge
playground.Playground.generate = slow_generate
""")
    held.mkdir()
    copy_real(real_adapter, gallery, "tiny")
    window = make_window()
    window.gallery_view.select("tiny")
    target = tmp_path / "merged"
    window.gallery.ask_export_folder = lambda caption, suggested: str(target)
    with qtbot.waitSignal(window.gallery.job_finished, timeout=JOB_TIMEOUT) as blocker:
        window.findChild(object, "exportMergedAction").trigger()
        qtbot.waitUntil(lambda: (held / "export").exists(), timeout=JOB_TIMEOUT)
        os.kill(engine().pid, signal.SIGKILL)
    outcome, message = blocker.args
    assert outcome == "failed" and "SIGKILL" in message and "\n" not in message
    assert window.banner.isVisible() and "SIGKILL" in window.banner.text()
    assert not target.exists() and sorted(e.name for e in gallery.entries()) == ["tiny"]
    (held / "export-done").touch()            # the next export, on a fresh engine, is not held
    outcome, value = job(qtbot, window, window.findChild(object, "exportMergedAction").trigger)
    assert outcome == "ok" and (target / "config.json").is_file()

    window.gallery.open_playground()
    dialog = window.gallery.playground
    qtbot.waitUntil(lambda: dialog.session is not None, timeout=JOB_TIMEOUT)
    dialog.max_tokens.setValue(4)
    dialog.prompt.setPlainText("The capital of France is")
    failures = []
    dialog.failed.connect(failures.append)
    dialog.generate()
    qtbot.waitUntil(lambda: (held / "generate").exists(), timeout=JOB_TIMEOUT)
    os.kill(engine().pid, signal.SIGKILL)
    qtbot.waitUntil(lambda: bool(failures), timeout=JOB_TIMEOUT)
    assert "SIGKILL" in failures[0] and dialog.run_job is None
    (held / "generate-done").touch()
    with qtbot.waitSignal(dialog.generated, timeout=JOB_TIMEOUT) as blocker:
        dialog.generate()                    # the adapter loads again in the fresh engine
    assert set(blocker.args[0]) == {"base", "adapted"}
    dialog.close()
