"""The gallery after a usability test (issue 20): a readable default width that never forces the
window wider, one rule for where an export goes (a new folder is made, a folder holding an
earlier export is replaced only when the person says so, never a silent subfolder) and a
finishing message that names the folder, a Resize dialog whose stated rank is where its curve
ends (AdaLoRA's saved rank is its average budget, while layers keep up to init_r), and details
that say why a resized, combined or imported adapter has no telemetry.

Each test has its own studio home. Exports and the resize curve run for real on tiny adapters
trained once per module; the dialogs a person answers are replaced (the controller's
`ask_export_folder` / `ask_replace`), or answered by a timer where the dialog itself is checked.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QApplication, QComboBox, QLabel, QMessageBox, QPushButton, QStyle, QStyleOptionComboBox

from studio.core.gallery import Gallery

from gallery_fixtures import JOB_TIMEOUT, gallery, home, make_window, real_adapter, trained  # noqa: F401 (fixtures)


@pytest.fixture(scope="module")
def adalora_adapter(tiny_llama, tmp_path_factory) -> Path:
    """AdaLoRA from init_r 6 to an average budget of target_r 4: pruning leaves some layers above 4."""
    variant = {"name": "adalora", "init_r": 6, "target_r": 4, "tinit": 2, "tfinal": 2, "deltaT": 1}
    return trained(tiny_llama, tmp_path_factory.mktemp("adalora-run"), "tiny-adalora", variant, max_steps=8)


def add_entry(gallery: Gallery, tmp: Path, name: str, meta: dict | None = None, r: int = 8,
              telemetry: dict | None = None):
    """An entry whose weights are placeholder bytes (enough for listing and the details)."""
    src = tmp / "src" / name
    src.mkdir(parents=True)
    config = {"peft_type": "LORA", "r": r, "lora_alpha": 2 * r, "task_type": "CAUSAL_LM",
              "target_modules": ["q_proj", "v_proj"], "base_model_name_or_path": "bundled:smollm2-135m-instruct"}
    (src / "adapter_config.json").write_text(json.dumps(config), encoding="utf-8")
    (src / "adapter_model.safetensors").write_bytes(b"\0" * 1000)
    full = {"base_model": "bundled:smollm2-135m-instruct", "task": "causal-lm", "variant": "lora",
            "loss_history": [2.0, 1.5], "metrics": {}, "created": "2026-03-01T09:00:00", "notes": "",
            "options": {"r": r}, **(meta or {})}
    return gallery.add_folder(src, name, full, telemetry)


def make_view(qtbot, gallery: Gallery, width: int):
    from studio.ui.gallery_view import GalleryView

    view = GalleryView(gallery.root)
    qtbot.addWidget(view)
    view.refresh()
    view.resize(width, 900)
    view.show()
    qtbot.waitExposed(view)
    QApplication.processEvents()
    return view


def text_room(combo: QComboBox) -> int:
    """The width a combo gives its text (its frame and arrow left out)."""
    option = QStyleOptionComboBox()
    combo.initStyleOption(option)
    rect = combo.style().subControlRect(QStyle.ComplexControl.CC_ComboBox, option,
                                        QStyle.SubControl.SC_ComboBoxEditField, combo)
    return rect.width()


def job(qtbot, window, trigger, timeout=JOB_TIMEOUT) -> tuple[str, object]:
    """Trigger a gallery action and wait for its background job: (outcome, value)."""
    with qtbot.waitSignal(window.gallery.job_finished, timeout=timeout) as blocker:
        trigger()
    return tuple(blocker.args)


# -- A: the gallery's width ----------------------------------------------------------------------

def test_the_gallery_asks_for_a_readable_width_and_stays_narrow_at_its_minimum(gallery, tmp_path, qtbot):
    from studio.ui.gallery_cards import SORTS
    from studio.ui.gallery_view import PREFERRED_WIDTH

    long_name = "chat-lora-with-a-rather-long-name"
    add_entry(gallery, tmp_path, long_name, {"run": "/runs/x"})
    add_entry(gallery, tmp_path, "other", {"run": "/runs/y"})
    view = make_view(qtbot, gallery, 300)
    # the width the window gives the dock, and a minimum that never pushes the window wider
    assert 380 <= view.sizeHint().width() == PREFERRED_WIDTH <= 420
    assert view.minimumSizeHint().width() <= 320
    for width in (PREFERRED_WIDTH, 320):
        view.resize(width, 900)
        QApplication.processEvents()
        # every order and the filters' "All …" items show whole
        sort = view.sort_combo
        for key, text in SORTS.items():
            sort.setCurrentIndex(sort.findData(key))
            assert text_room(sort) >= sort.fontMetrics().horizontalAdvance(text), (width, text)
        for combo in (view.base_filter, view.variant_filter):
            combo.setCurrentIndex(0)
            assert text_room(combo) >= combo.fontMetrics().horizontalAdvance(combo.currentText()), \
                (width, combo.currentText())
        assert view.base_filter.toolTip() == "Filter by base model: All base models"
        # the details wrap to the pane: nothing hides past its right edge
        assert view.select(long_name)
        QApplication.processEvents()
        scroll = view.details_scroll
        assert view.details.minimumSizeHint().width() <= scroll.viewport().width(), width
        assert scroll.horizontalScrollBar().maximum() == 0, width
        assert view.details.title.wordWrap() and view.details.title.toolTip() == long_name
    # a base model's full id is in the filter's tooltip, whatever the combo's width shows of it
    view.base_filter.setCurrentIndex(1)
    assert view.base_filter.toolTip() == "Filter by base model: bundled:smollm2-135m-instruct"
    assert sort.toolTip() == f"Sort adapters: {sort.currentText()}"


def test_a_card_name_takes_the_first_line_and_its_tooltip_holds_it_whole(gallery, tmp_path, qtbot):
    from studio.ui.gallery_card_delegate import CardDelegate

    long_name = "an-adapter-whose-name-is-long-enough-to-be-elided"
    add_entry(gallery, tmp_path, long_name)
    view = make_view(qtbot, gallery, 400)
    index = view.model.index(0)
    assert index.data(Qt.ItemDataRole.ToolTipRole).splitlines()[0] == long_name
    # the name runs up to the loss text, not only over the column left of the sparkline
    inner, loss, spark = 360.0, 50.0, float(CardDelegate.SPARK_W)
    assert CardDelegate.name_width(inner, loss, spark) == inner - loss - CardDelegate.PAD
    assert CardDelegate.name_width(inner, loss, spark) > inner - spark - CardDelegate.PAD
    view.list.resize(400, 300)
    assert not view.list.grab().isNull()


# -- B: one rule for where an export goes -------------------------------------------------------------

def test_export_plan_names_what_happens_to_the_folder(tmp_path):
    from studio.ui.gallery_actions import export_plan

    assert export_plan(tmp_path / "new" / "deeper") == "create"
    (tmp_path / "empty").mkdir()
    assert export_plan(tmp_path / "empty") == "use"
    for marker in ("config.json", "adapter_config.json"):
        folder = tmp_path / f"holds-{marker}"
        folder.mkdir()
        (folder / marker).write_text("{}", encoding="utf-8")
        assert export_plan(folder) == "ask"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine", encoding="utf-8")
    assert export_plan(tmp_path / "other") == "refuse"
    assert export_plan(tmp_path / "other" / "notes.txt") == "refuse"


def test_export_writes_the_folder_picked_asking_before_it_replaces_one(make_window, gallery, real_adapter,
                                                                       qtbot, tmp_path):
    shutil.copytree(real_adapter, gallery.root / "tiny")
    window = make_window()
    window.gallery_view.select("tiny")
    controller = window.gallery
    target = tmp_path / "exports" / "tiny-out"          # neither it nor its parent exists yet
    picked, asked, opened = [], [], []
    controller.ask_export_folder = lambda caption, suggested: picked.append(suggested) or str(target)
    answer = {"replace": False}
    controller.ask_replace = lambda folder, what, name: asked.append(Path(folder)) or answer["replace"]
    window.prompts.open_url = opened.append
    window.prompts.ask_directory = lambda caption: ""    # the picker of existing folders cannot make a new one

    # a folder that does not exist is made, with the merged model in it (no subfolder)
    with qtbot.waitSignal(controller.job_finished, timeout=JOB_TIMEOUT) as blocker:
        window.findChild(object, "exportMergedAction").trigger()
        assert controller.job is not None, "the export did not start"
    outcome, path = blocker.args
    assert outcome == "ok", path
    assert Path(path) == target and picked == ["tiny-merged"] and not asked
    assert (target / "config.json").is_file() and list(target.glob("*.safetensors"))
    assert [p.name for p in target.iterdir() if p.is_dir()] == []
    # the finishing message names the folder and opens it
    box = controller.export_done_box
    assert box is not None and box.isVisible() and str(target) in box.text()
    open_button = box.findChild(QPushButton, "exportOpenFolderButton")
    assert open_button.text() == "Open folder"
    open_button.click()
    assert [u.toLocalFile() for u in opened] == [str(target)]
    qtbot.waitUntil(lambda: controller.export_done_box is None)

    # a folder holding that export: asked first; Cancel writes nothing
    before = sorted(p.name for p in target.iterdir())
    window.findChild(object, "exportAdapterAction").trigger()
    assert asked == [target] and controller.job is None
    assert sorted(p.name for p in target.iterdir()) == before
    assert not (target / "tiny").exists() and not (target / "tiny-merged").exists()
    assert controller.export_done_box is None

    # Replace: the adapter goes into the folder itself, in place of what was there
    answer["replace"] = True
    outcome, path = job(qtbot, window, window.findChild(object, "exportAdapterAction").trigger)
    assert outcome == "ok", path
    assert Path(path) == target and len(asked) == 2
    assert (target / "adapter_config.json").is_file() and not (target / "config.json").exists()
    assert [p.name for p in target.iterdir() if p.is_dir()] == []
    assert str(target) in controller.export_done_box.text()
    controller.export_done_box.close()

    # a folder with other things in it is never written: one line, nothing asked
    other = tmp_path / "my-documents"
    other.mkdir()
    (other / "notes.txt").write_text("mine", encoding="utf-8")
    controller.ask_export_folder = lambda caption, suggested: str(other)
    window.findChild(object, "exportMergedAction").trigger()
    assert controller.job is None and len(asked) == 2
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]
    banner = window.findChild(QLabel, "errorBanner")
    assert banner.isVisible() and "not empty" in banner.text() and "\n" not in banner.text()


def test_the_export_dialogs_take_a_new_folder_and_ask_replace_or_cancel(make_window, gallery, real_adapter,
                                                                        qtbot, tmp_path):
    from studio.ui.export_dialog import ExportFolderDialog

    window = make_window()
    controller = window.gallery
    controller.export_folder = str(tmp_path / "last" / "export")      # the picker starts beside it
    (tmp_path / "last").mkdir()
    (tmp_path / "last" / "existing").mkdir()

    def accept_picker(typed: str):
        def go():
            dialog = window.findChild(ExportFolderDialog)
            if dialog is None or not dialog.isVisible():
                QTimer.singleShot(20, go)
                return
            if typed:
                dialog.selectFile(typed)
            dialog.accept()
        QTimer.singleShot(0, go)

    # the name of a folder that does not exist yet is taken (QFileDialog's folder mode refuses it)
    accept_picker("")                     # the suggested name, as the dialog proposes it
    assert controller.ask_export_folder("Export", "tiny-merged") == str(tmp_path / "last" / "tiny-merged")
    accept_picker("existing")
    assert controller.ask_export_folder("Export", "tiny-merged") == str(tmp_path / "last" / "existing")

    # the question about a folder that holds an export: Replace or Cancel, Cancel the default
    seen = []

    def answer(text: str):
        def go():
            box = window.findChild(QMessageBox, "exportReplaceBox")
            if box is None or not box.isVisible():
                QTimer.singleShot(20, go)
                return
            seen.append((box.text(), sorted(b.text().replace("&", "") for b in box.buttons()),
                         box.defaultButton().text().replace("&", "")))
            next(b for b in box.buttons() if b.text().replace("&", "") == text).click()
        QTimer.singleShot(0, go)

    folder = tmp_path / "old-export"
    answer("Cancel")
    assert controller.ask_replace(folder, "the merged model", "tiny") is False
    answer("Replace")
    assert controller.ask_replace(folder, "the merged model", "tiny") is True
    text, buttons, default = seen[0]
    assert f"Folder {folder} is not empty" in text and "Replace it with the merged model of tiny" in text
    assert buttons == ["Cancel", "Replace"] and default == "Cancel"


# -- C: the Resize dialog's rank and its curve agree ----------------------------------------------

def test_resize_states_the_rank_its_curve_runs_to(gallery, adalora_adapter, qtbot):
    from studio.ui.resize_dialog import ResizeDialog

    shutil.copytree(adalora_adapter, gallery.root / "ada")
    entry = gallery.get("ada")
    assert entry.rank == 4          # AdaLoRA's saved rank: its average budget target_r
    dialog = ResizeDialog(entry, gallery)
    qtbot.addWidget(dialog)
    head = dialog.findChild(QLabel, "resizeHead")
    assert "rank 4 on average, up to 6 per layer" in head.text()       # before the curve: what the config says
    dialog.start()
    qtbot.waitUntil(lambda: dialog.curve is not None, timeout=JOB_TIMEOUT)
    # pruning leaves some layers above the average: the curve runs to the largest layer's rank
    top = dialog.curve["max_rank"]
    assert 4 < top <= 6
    x, _ = dialog.energy_curve_item.getData()
    assert int(x[-1]) == top and dialog.current_rank() == top
    assert f"now up to rank {top} per layer" in head.text() and "budget is rank 4 on average" in head.text()
    assert "now rank 4" not in head.text()
    assert dialog.rank_spin.suffix() == f" of {top}" and dialog.rank_spin.maximum() == top
    # a rank between the average and the largest truncates the largest layers: it may be chosen
    dialog.set_rank(top - 1)
    ok = dialog.findChild(QPushButton, "resizeOkButton")
    assert ok.isEnabled(), dialog.findChild(QLabel, "resizeProblem").text()
    assert f"rank {top - 1} of {top} keeps" in dialog.findChild(QLabel, "resizeKeeps").text()
    dialog.set_rank(top)
    assert not ok.isEnabled() and f"not lower than the adapter's rank now ({top})" in \
        dialog.findChild(QLabel, "resizeProblem").text()
    dialog.reject()


# -- D: why an entry has no telemetry, by where it came from ----------------------------------------

def test_details_say_why_an_adapter_has_no_telemetry(gallery, tmp_path, qtbot):
    add_entry(gallery, tmp_path, "chat-lora-r2", {"derived_from": {"resize": "chat-lora", "rank": 2,
                                                                   "energy_kept": 0.97, "from_variant": "lora"}}, r=2)
    add_entry(gallery, tmp_path, "chat-mix", {"derived_from": {"combine": ["chat-a", "chat-b"], "method": "ties",
                                                               "weights": [1.0, 0.5]}})
    add_entry(gallery, tmp_path, "from-elsewhere", {"imported_from": "/data/adapters/from-elsewhere"})
    add_entry(gallery, tmp_path, "short-run", {"run": "/runs/short-run"})
    view = make_view(qtbot, gallery, 400)
    spectrum, importance = view.details.spectrum_chart, view.details.importance_chart

    def notes(name):
        assert view.select(name)
        assert spectrum.is_empty and importance.is_empty
        return spectrum.empty_label.text(), importance.empty_label.text()

    for text in notes("chat-lora-r2"):
        assert "made by resizing chat-lora to rank 2" in text and "no training telemetry of its own" in text
        assert "imported" not in text and "its run" not in text
    for text in notes("chat-mix"):
        assert "combined from chat-a and chat-b (ties)" in text and "no training telemetry of its own" in text
        assert "imported" not in text and "its run" not in text
    for text in notes("from-elsewhere"):
        assert "imported" in text and "its run" not in text
    for text in notes("short-run"):
        assert "its run measured none" in text and "imported" not in text


def test_playground_is_ready_at_launch_when_the_gallery_has_adapters(make_window, gallery, tmp_path):
    """Issue 20 (polish): the Playground toolbar button was greyed out at launch although the gallery
    had adapters (it waited for a card to be selected)."""
    add_entry(gallery, tmp_path, "ready-to-try")
    window = make_window()
    assert window.gallery_view.selected_entry() is None
    assert window.gallery.playground_action.isEnabled()
