"""The run the window shows: starting, resuming, pausing and stopping it, opening a past one, and
what the window says about it (the header line, the status bar, which actions are enabled).

    session = RunSession(window)     # window.session; owns the RunController (worker.py)
    session.train()                  # the panels' RunConfig, in a worker thread
    session.open_run_folder(path)    # a past run, redrawn from its events.jsonl

The worker's events are added to a RunHistory (plain data) and the charts repaint from it on a
timer, at most ten times a second, whatever the step rate. A past run opens from its folder's
events.jsonl into the same RunHistory, so it looks exactly as it did live. The session asks the
window (the composition root) for the set-up (`current_config`, `validate`), the banner
(`show_error`), the log, the Runs dock and the gallery.
"""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import QObject, QTimer
from PySide6.QtWidgets import QProgressBar, QPushButton, QStatusBar

from studio.core.units import hms
from studio.core import runlock
from studio.core.config import RunConfig
from studio.core.errors import StudioError
from studio.core.events import describe
from studio.core.storage import held_text

from .elide import ElidedLabel
from .history import RunHistory
from .worker import RunController

FINISHED = ("completed", "stopped", "failed", "interrupted")
PREWARM_MS = 2000   # after the window opens: the spare run process starts
REPAINT_MS = 100          # charts and status bar repaint at most this often while a run reports


class RunSession(QObject):
    """The run under way (or the past run opened) and its controls. Its widgets (`train_button`,
    `pause_button`, `stop_button`, `run_title`, `status_labels`, `progress_bar`) are laid out by
    the window."""

    def __init__(self, window):
        super().__init__(window)
        self.window = window
        self.controller = RunController(window)
        self.controller.events_arrived.connect(self.on_events)
        self.controller.run_finished.connect(self.on_controller_finished)
        self.controller.state_changed.connect(self.on_controller_state)
        self.controller.unresponsive.connect(self.on_unresponsive)
        self.history = RunHistory()
        self.run_dir: Path | None = None
        self.run_config: RunConfig | None = None
        self.status: dict = {}                    # what the status bar shows
        self.run_started_at: float | None = None  # the first step's time, for the ETA
        self.changed: set[str] = set()            # what the charts have not drawn yet
        self.gallery_entry: str | None = None     # what the run under way was added to the gallery as
        self.close_when_finished = False
        self.silent_s = 0.0                       # how long the run's process has not answered
        self.repaint_timer = QTimer(self, interval=REPAINT_MS)
        self.repaint_timer.timeout.connect(lambda: self.repaint(spread=True))
        self._build_widgets()
        # a spare run process imports torch while the person sets up, so Train starts at once
        QTimer.singleShot(PREWARM_MS, self.controller.prewarm)

    def _build_widgets(self) -> None:
        self.train_button = QPushButton("Train")
        self.train_button.setObjectName("trainButton")
        self.train_button.setAccessibleName("Train")
        self.train_button.setDefault(True)
        self.pause_button = QPushButton("Pause")
        self.pause_button.setObjectName("pauseButton")
        self.pause_button.setAccessibleName("Pause or resume")
        self.pause_button.clicked.connect(self.toggle_pause)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setObjectName("stopButton")
        self.stop_button.setAccessibleName("Stop")
        # the texts that grow with a run are shortened to their room, never widening the window
        self.run_title = ElidedLabel(name="runTitle")
        bold = self.run_title.font()
        bold.setBold(True)
        self.run_title.setFont(bold)
        self.progress_bar = QProgressBar()
        self.progress_bar.setObjectName("runProgress")
        self.progress_bar.setMaximumWidth(180)
        self.progress_bar.hide()
        self.status_labels: dict[str, ElidedLabel] = {}
        for key, tip in (("device", "Where the run trains"), ("step", "Optimizer step / total"),
                         ("speed", "Tokens per second"), ("eta", "Estimated time left"),
                         ("memory", "Memory in use (GPU allocator on a GPU, the process on a CPU)")):
            self.status_labels[key] = ElidedLabel(name=f"{key}Status", tip=tip)

    def install_status_bar(self, bar: QStatusBar) -> None:
        for label in self.status_labels.values():
            bar.addPermanentWidget(label)
        bar.addPermanentWidget(self.progress_bar)
        self.update_status_bar()

    def _message(self, text: str, ms: int = 0) -> None:
        self.window.statusBar().showMessage(text, ms)

    # -- starting and stopping ---------------------------------------------------------------

    def train(self) -> bool:
        w = self.window
        if self.controller.is_running:
            return False
        if not w.validate():
            w.show_error("cannot train yet: " + w.validation_label.text())
            return False
        try:
            config = w.current_config()
        except StudioError as e:
            w.show_error(str(e))
            return False
        w.hide_error()
        self.history = RunHistory()
        self.run_dir = None
        w.charts.clear()
        self.start(config, None)
        return True

    def resume_run(self, run_dir: str | Path | None = None) -> bool:
        """Continue a stopped, failed or interrupted run from its last checkpoint."""
        from studio.core.runfolder import last_checkpoint

        w = self.window
        run_dir = Path(run_dir) if run_dir else self.run_dir
        if self.controller.is_running or run_dir is None:
            return False
        pid = runlock.holder(run_dir)
        if pid is not None:
            w.show_error(f"{run_dir}: this run is still running in process {pid}")
            return False
        if last_checkpoint(run_dir) is None and self.history.status.get("state") != "interrupted":
            w.show_error(f"{run_dir}: no checkpoint to resume from")
            return False
        try:
            config = RunConfig.from_toml(run_dir / "config.toml")
        except StudioError as e:
            w.show_error(str(e))
            return False
        w.hide_error()
        self.history = RunHistory.from_run_folder(run_dir)
        # until the resumed run reports, it is loading (not the "stopped" its folder last said)
        self.history.status.update(state="waiting", message="resuming: loading the model and the checkpoint",
                                   error=None)
        self.changed.add("status")
        self.run_dir = run_dir
        self.start(config, run_dir)
        return True

    def start(self, config: RunConfig, resume_dir: Path | None) -> None:
        self.window.log(f"— {'resuming ' + resume_dir.name if resume_dir else 'starting'}: "
                        f"{config.variant_name} on {config.model.source}")
        self.status = {"device": config.train.device, "total": 0, "step": 0}
        self.run_started_at = None
        self.gallery_entry = None
        self.progress_bar.setRange(0, 0)     # busy until the run knows its length
        self.progress_bar.show()
        self.run_config = config
        self.controller.start(config, resume_dir)
        self.repaint_timer.start()
        self.changed.add("status")       # the header says "loading" at once
        self.repaint()
        self.update_actions()
        self.update_status_bar()

    def stop(self) -> None:
        if self.controller.is_running:
            self.controller.stop()
            self._message("Stopping after the step under way…")

    def toggle_pause(self) -> None:
        if self.controller.state == "paused":
            self.controller.resume()
        else:
            self.controller.pause()

    def may_close(self) -> bool:
        """True when the window may close now; with a run going on, asks, stops it and closes the
        window once it has saved (from on_controller_finished)."""
        if not self.controller.is_running:
            return True
        if not self.close_when_finished:
            if not self.window.prompts.confirm(
                    "A run is in progress", "Stop the run and close? The adapter trained so far and a checkpoint "
                                            "are saved, and the run can be resumed later."):
                return False
            self.close_when_finished = True
            self.controller.stop()
            self._message("Stopping the run; the window closes when it has saved…")
        elif self.controller.child_pid is not None and self.window.prompts.confirm(
                "The run is still stopping", "End the run's process now? The run can be resumed from its "
                                             "last checkpoint; the steps since then are lost."):
            self.controller.kill()          # the last resort; the window closes once it has ended
        return False

    def on_unresponsive(self, seconds: float) -> None:
        """The run's process has not answered for `seconds` (0: it answers again): said in the
        header until it answers, and once in the status bar."""
        self.silent_s = seconds
        self.update_title()
        if seconds:
            self._message(f"The run has not answered for {seconds:.0f} s: its process may be stuck "
                          "(Stop asks it to end; closing the window offers to end it)")
        else:
            self._message("The run answers again", 4000)

    def reset(self) -> None:
        """No run shown (New run)."""
        self.history = RunHistory()
        self.run_dir = None
        self.window.charts.clear()
        self.status = {}
        self.update_status_bar()
        self.update_title()

    # -- what the run reports ----------------------------------------------------------------

    def on_events(self, events: list) -> None:
        for event in events:
            self.changed |= self.history.add(event)
            self.note_event(event)

    def note_event(self, e: dict) -> None:
        kind = e.get("type")
        s = self.status
        if kind == "step":
            s["step"] = e.get("step", 0)
            s["total"] = e.get("total_steps") or s.get("total", 0)
            if e.get("tokens_per_s") is not None:
                s["speed"] = e["tokens_per_s"]
            if e.get("memory_mb") is not None:
                s["memory"] = e["memory_mb"]
            if self.run_started_at is None:
                self.run_started_at = time.monotonic()
                s["first_step"] = s["step"]
        elif kind == "run_started":
            s["device"] = f"{e.get('device')} · {held_text(e)}"
            s["total"] = e.get("total_steps", 0)
            s["step"] = e.get("step", 0)
            self.run_dir = Path(e["run_dir"]) if e.get("run_dir") else self.run_dir
        elif kind == "progress":
            self._message(e.get("message", ""))
        elif kind == "run_finished":
            self.gallery_entry = e.get("gallery_entry") or self.gallery_entry
        line = describe(e)          # the same line the CLI prints (studio.core.events)
        if line is not None:
            self.window.log(line)
        if kind == "run_started":
            self.window.log(f"run folder: {e.get('run_dir')}")

    def repaint(self, spread: bool = False) -> None:
        """Draw what changed since the last repaint (the repaint timer calls it while a run
        reports, with `spread`: one chart per turn of the event loop, see ChartsPanel)."""
        if self.changed:
            changed, self.changed = self.changed, set()
            self.window.charts.show_history(self.history, changed, spread=spread)
            if "status" in changed:
                self.update_title()
        self.update_status_bar()

    def on_controller_state(self, state: str) -> None:
        self.update_actions()
        self.pause_button.setText("Resume" if state == "paused" else "Pause")
        # the header follows a request at once; the run's own paused/resumed/finished events then
        # set the state it reached (a pause takes effect after the step under way)
        shown = self.history.status.get("state")
        if state == "paused" and shown == "running":
            self._set_shown_state("pausing")
        elif state == "running" and shown == "pausing":
            self._set_shown_state("running")
        elif state == "stopping" and shown in ("running", "pausing", "paused"):
            self._set_shown_state("stopping")
        bar = self.window.statusBar()
        if state == "paused":
            bar.showMessage("Paused — press Resume to continue")
        elif bar.currentMessage().startswith("Paused"):   # it follows the run's state
            bar.clearMessage()

    def _set_shown_state(self, state: str) -> None:
        self.history.status["state"] = state
        self.changed.add("status")
        self.repaint()

    def on_controller_finished(self, result: dict) -> None:
        w = self.window
        self.repaint_timer.stop()
        self.repaint()
        if self.history.status.get("state") not in FINISHED:     # the Session could not even report
            self.changed |= self.history.add({"type": "run_finished", "step": self.status.get("step", 0),
                                              "time": time.time(), **result})
            self.repaint()
        self.progress_bar.hide()
        status, error = result.get("status"), result.get("error")
        if result.get("run_dir"):
            self.run_dir = Path(result["run_dir"])
            w.recent_files.add(self.run_dir)
        if status == "failed":
            w.show_error(f"the run failed: {error}" if error else "the run failed")
            if error:
                w.setup_check.place_run_error(error, result.get("error_field"), self.run_config)
            self._message("Run failed", 10000)
        elif status == "interrupted":     # its process was killed: the window stays, Resume continues
            w.show_error(error or "the run was interrupted")
            self._message("Run interrupted", 10000)
        else:
            self._message(f"Run {status}" + (f": {result.get('adapter_path')}" if result.get("adapter_path") else ""),
                          10000)
        added = result.get("gallery_entry") or self.gallery_entry
        self.gallery_entry = None
        if added:
            w.gallery.on_run_added(str(added))
            w.log(f"the adapter is in the gallery as {added}")
        w.refresh_runs()
        self.update_actions()
        self.update_title()
        w.run_finished.emit(result)
        if self.close_when_finished:
            w.close()

    # -- a past run --------------------------------------------------------------------------

    def open_run_folder(self, path: str | Path) -> bool:
        """Redraw a past run from its events.jsonl and load its config into the panels."""
        w = self.window
        path = Path(path)
        if self.controller.is_running:
            w.show_error("a run is in progress: stop it before opening another")
            return False
        if not (path / "events.jsonl").is_file():
            w.show_error(f"{path}: not a run folder (expected events.jsonl inside)")
            return False
        try:
            history = RunHistory.from_run_folder(path)
        except (OSError, ValueError) as e:
            w.show_error(f"{path / 'events.jsonl'}: cannot read ({e})")
            return False
        w.hide_error()
        if (path / "config.toml").is_file():
            try:
                config = RunConfig.from_toml(path / "config.toml")
                w.set_config(config, None)
                w.config_path = None
            except StudioError as e:
                w.show_error(f"the run's charts are shown, but its config could not be loaded: {e}")
        self.history = history
        self.run_dir = path
        w.charts.show_history(history, None)
        self.status = status_from_history(history)
        self.update_status_bar()
        w.recent_files.add(path)
        self.update_title()
        self.update_actions()
        if history.status.get("state") == "failed" and history.status.get("error"):
            w.show_error(f"this run failed: {history.status['error']}")
        elif history.status.get("state") not in FINISHED:
            self._explain_unfinished(path)
        self._message(f"Opened run {path.name}", 5000)
        return True

    def _explain_unfinished(self, path: Path) -> None:
        """A log without run_finished: the run is alive in another process, or it was killed
        (or crashed) and can be resumed from its last checkpoint."""
        pid = runlock.holder(path)
        if pid is not None:
            self.window.show_error(f"this run is still being written by process {pid}: its charts are as of now")
            return
        self.history.status["state"] = "interrupted"
        from studio.core.runfolder import last_checkpoint   # a complete one (no torch imported)

        checkpoint = last_checkpoint(path)
        step = self.history.status.get("step", 0)
        hint = (f"Resume run continues from {checkpoint.name}" if checkpoint
                else "it has no complete checkpoint yet, so Resume run starts it again")
        self.window.show_error(f"this run was interrupted at step {step} (its process was killed or crashed); {hint}")
        self.update_actions()
        self.update_title()

    # -- what the window shows of it ---------------------------------------------------------

    def update_actions(self, valid: bool | None = None) -> None:
        """Enable what the run's state and the set-up's validity allow (`valid`: the set-up's, when
        known; otherwise the last validation's)."""
        w = self.window
        if valid is None:
            valid = not w.setup_check.errors
        state = self.controller.state
        running = self.controller.is_running
        w.train_action.setEnabled(valid and not running)
        self.train_button.setEnabled(valid and not running)
        w.pause_action.setEnabled(running and state == "running")
        w.resume_action.setEnabled(running and state == "paused")
        self.pause_button.setEnabled(running and state in ("running", "paused"))
        w.stop_action.setEnabled(running and state != "stopping")
        self.stop_button.setEnabled(running and state != "stopping")
        run_state = self.history.status.get("state")
        resumable = (not running and self.run_dir is not None
                     and (run_state == "interrupted" or (run_state in ("stopped", "failed")
                                                     and _has_checkpoint(self.run_dir))))
        w.resume_run_action.setEnabled(bool(resumable))
        w.runs.resume_button.setEnabled(bool(resumable))
        for a in (w.open_run_action, w.open_config_action, w.new_action):
            a.setEnabled(not running)
        w.setup_scroll.widget().setEnabled(not running)

    def update_status_bar(self) -> None:
        s, labels = self.status, self.status_labels
        labels["device"].setText(f"device: {s.get('device', 'auto')}")
        step, total = s.get("step", 0), s.get("total", 0)
        labels["step"].setText(f"step {step}/{total}" if total else "step –")
        speed = s.get("speed")
        labels["speed"].setText(f"{speed:,.0f} tok/s" if speed else "– tok/s")
        eta = "ETA –"
        # an ETA only while the run goes on: not once it stopped or finished, nor while it is paused
        if (self.controller.is_running and self.controller.state != "paused" and self.run_started_at is not None
                and total and step > s.get("first_step", 0)):
            rate = (time.monotonic() - self.run_started_at) / (step - s.get("first_step", 0))
            eta = f"ETA {hms(rate * (total - step))}"
        labels["eta"].setText(eta)
        memory = s.get("memory")
        labels["memory"].setText(f"{memory / 1024:.2f} GiB" if memory and memory >= 1024
                                 else f"{memory:.0f} MiB" if memory else "memory –")
        bar = self.progress_bar
        if self.controller.is_running and total and (bar.maximum(), bar.value()) != (total, min(step, total)):
            bar.setRange(0, total)
            bar.setValue(min(step, total))

    def update_title(self) -> None:
        """The window's title (the config's name) and the header line (the run and its state)."""
        w = self.window
        name = w.config_path.name if w.config_path else "default run"
        w.setWindowTitle(f"{name} — LoRA Studio")
        state = self.history.status.get("state")
        if state == "waiting" and self.controller.is_running:
            state = "loading"
        if self.silent_s and self.controller.is_running:
            state = f"{state} — not answering for {self.silent_s:.0f} s"
        if state and state != "waiting":
            where = self.run_dir.name if self.run_dir else ""
            self.run_title.setText(" ".join(p for p in (self.history.variant, where) if p) + f" — {state}")
        else:
            self.run_title.setText("")


def _has_checkpoint(run_dir: Path) -> bool:
    from studio.core.runfolder import last_checkpoint

    return last_checkpoint(run_dir) is not None


def status_from_history(history: RunHistory) -> dict:
    """The status bar's values for a past run."""
    st = history.status
    return {"device": f"{st['device']} · {held_text(st)}" if st.get("device") else "auto",
            "step": st.get("step", 0), "total": st.get("total_steps") or 0,
            "speed": st.get("tokens_per_s"), "memory": st.get("memory_mb")}
