"""Checking the set-up before Train: every invalid value marked next to its field, the first one
in the line beside Train, and the memory plan (studio.core.plan: the estimated peak against the
device's free memory), re-estimated in the background whenever the set-up changes. A run that
failed on its input has its reason put back next to the field at fault.

    check = SetupCheck(window)       # window.setup_check; its labels sit beside Train
    check.validate()                 # True when Train may start
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, QTimer
from PySide6.QtWidgets import QLabel

from studio.core.config import RunConfig
from studio.core.errors import StudioError

from .elide import ElidedLabel
from .tasks import TaskSlot


class SetupCheck(QObject):
    """Validation and the memory plan for the window's set-up panels. `errors` holds the last
    validation's problems by field ({} when the set-up is valid)."""

    def __init__(self, window):
        super().__init__(window)
        self.window = window
        self.errors: dict[str, str] = {"": "not checked yet"}
        self.plan = None
        self.plan_task = TaskSlot(self, "memoryPlan")
        self.label = QLabel()
        self.label.setObjectName("validationLabel")
        self.label.setStyleSheet("color: #d0342c;")
        self.label.setWordWrap(True)
        self.label.setMinimumWidth(120)
        self.memory_label = ElidedLabel(name="memoryPlan")
        self.memory_label.setAccessibleName("Memory plan")
        self.plan_timer = QTimer(self)
        self.plan_timer.setSingleShot(True)
        self.plan_timer.setInterval(300)
        self.plan_timer.timeout.connect(self.start_plan)
        self.validate_timer = QTimer(self, singleShot=True, interval=150)   # soon after a change
        self.validate_timer.timeout.connect(self.validate)

    @property
    def panels(self) -> tuple:
        w = self.window
        return (w.model_panel, w.data_panel, w.variant_panel, w.training_panel)

    def validate(self) -> bool:
        """Mark every invalid value next to its field; Train is enabled only for a valid run."""
        w = self.window
        errors = {}
        for panel in self.panels:
            errors.update(panel.errors())
        if not errors:
            try:
                w.current_config()
            except StudioError as e:
                errors["config"] = e.reason
                self.mark_field_error(e.reason, field=e.field)
        self.errors = errors
        w.variant_panel.set_run_steps(self.planned_steps())
        if errors:
            self.plan_timer.stop()
            self.show_plan(None)
        else:
            self.plan_timer.start()
        busy = w.model_panel.busy and w.model_panel.description is None
        if errors:
            first_key = next(iter(errors))
            message = errors[first_key]
            if first_key != "config" and not message.startswith(f"{first_key}:"):   # a core error names it already
                message = f"{first_key}: {message}"
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            self.label.setText(message + more)
        else:
            self.label.setText("")
        w.session.update_actions(valid=not errors and not busy)
        return not errors

    def on_setup_changed(self) -> None:
        """A panel changed: the data panel follows the model, and the set-up is checked soon."""
        w = self.window
        model = w.model_panel.values()
        described = w.model_panel.description
        if described is not None and described.get("source") == model["source"]:
            w.data_panel.set_model(model["source"], model.get("task", ""), ready=described.get("ready", True)
                                   and described.get("kind") != "hub")
        self.validate_timer.start()

    def planned_steps(self) -> int | None:
        """The optimizer steps the set-up would train: from train.max_steps, or from the
        dataset preview's training examples, the batch size and the epochs (None while unknown)."""
        from studio.core.training import planned_steps   # plain arithmetic, no torch imported

        w = self.window
        train = w.training_panel.train.values()
        preview = None if w.data_panel.busy else w.data_panel.preview
        examples = (preview or {}).get("train_examples")
        try:
            if int(train["max_steps"]) <= 0 and not isinstance(examples, int):
                return None
            return planned_steps(examples or 0, int(train["batch_size"]), int(train["grad_accum"]),
                                 float(train["epochs"]), int(train["max_steps"]))
        except (TypeError, ValueError, ZeroDivisionError):
            return None

    # -- the memory plan ---------------------------------------------------------------------

    def start_plan(self) -> None:
        from studio.core.plan import estimate   # torch-free: file headers, psutil, nvidia-smi

        try:
            config = self.window.current_config()
        except StudioError:
            return

        def work(progress, should_stop):
            try:
                return estimate(config), None
            except StudioError as e:     # the error object: its field marks the form
                return None, e

        self.plan_task.start(work, done=lambda value: self.show_plan(*value),
                             failed=lambda text: self.show_plan(None, text))

    def show_plan(self, plan, error: "str | StudioError | None" = "") -> None:
        """'Memory ~2.8 of 17.6 GiB', red with what would make it fit when it will not fit."""
        from studio.core.plan import gib

        self.plan = plan
        if plan is None:
            self.memory_label.setText("")
            self.memory_label.set_tip(f"memory plan: {error}" if error else "")
            field = getattr(error, "field", None)
            if field and field.startswith("variant."):   # a rank the layers cannot take: before Train, once
                self.mark_field_error(error.reason, field)
                self.errors = {"config": error.reason}
                self.label.setText(str(error))
                self.window.session.update_actions(valid=False)
            return
        free = f" of {gib(plan.free_bytes)} free" if plan.free_bytes is not None else ""
        text = f"Memory ~{gib(plan.peak_bytes)}{free}"
        details = "\n".join([plan.summary(), *plan.lines()])
        if plan.fits is False:
            hint = plan.advice[0] if plan.advice else "a smaller model"
            self.memory_label.setText(f"{text}: will not fit (try {hint.split(':')[0]})")
            self.memory_label.setStyleSheet("color: #d0342c; font-weight: bold;")
        else:
            self.memory_label.setText(text)
            self.memory_label.setStyleSheet("")
        self.memory_label.set_tip(details)

    def shutdown(self) -> None:
        """The window closes: no estimate left running."""
        self.plan_timer.stop()
        self.validate_timer.stop()
        self.plan_task.shutdown(30000)

    # -- errors next to their fields ---------------------------------------------------------

    def mark_field_error(self, text: str, field: str | None, reveal: bool = False) -> None:
        """A whole-config error about `field` ("variant.r"): put `text` next to that field."""
        w = self.window
        forms = {"variant": w.variant_panel.form, "train": w.training_panel.train,
                 "telemetry": w.training_panel.telemetry, "data": w.data_panel.options,
                 "model": w.model_panel.options}
        if field and "." in field:
            section, key = field.split(".", 1)
            form = forms.get(section)
            if form is not None and key in form.editors:
                form.set_external_error(key, text)
                if reveal:   # scroll the set-up column to the field at fault
                    w.setup_scroll.ensureWidgetVisible(form.error_labels.get(key, form.editors[key]))

    def place_run_error(self, error: str, field: str | None = None, config: RunConfig | None = None) -> None:
        """A run that failed on its input also shows the reason next to what caused it: the model
        source, the data file, or the option the error is about (its `field`). `config`: the run's."""
        w = self.window
        reason = error[len(field) + 2:] if field and error.startswith(field + ": ") else error
        if field == "model.source":
            w.model_panel.show_source_error(reason)
        elif field in ("data.path", "data.eval_path"):
            w.data_panel.show_file_error(error)
        elif field and field != "train.output_dir":   # a folder problem is not the field's
            self.mark_field_error(reason, field, reveal=True)
        elif config is not None:
            # a data error starts with the file (a Windows path has a colon of its own)
            files = [config.data.path, Path(config.data.path).name]
            if config.data.eval_path:
                files += [config.data.eval_path, Path(config.data.eval_path).name]
            if any(f and error.startswith(f + ":") for f in files):
                w.data_panel.show_file_error(error)
        self.validate()
