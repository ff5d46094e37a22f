"""The playground: an adapter and its base model, loaded once, answering prompts side by side.

The base model's answer (peft's `disable_adapter`), then the adapted model's, each streamed piece
by piece through a transformers TextStreamer, with the chat template the run trained with; for a
classifier, the label probabilities of both (the base with its untrained head). The window's
Playground dialog and `lora-studio generate` both use this. torch and transformers are imported
inside the methods.
"""

from __future__ import annotations

from typing import Callable

from .errors import InputError
from .export import Reporter, load_adapted
from .gallery import Entry


class Playground:
    """An adapter and its base, loaded once, answering prompts side by side."""

    def __init__(self, entry: Entry):
        self.entry = entry
        self.task = entry.task
        self.model = None
        self.tokenizer = None

    def load(self, progress=None, should_stop=None) -> "Playground":
        import torch

        from .devices import pick_device

        torch.manual_seed(0)   # a classifier's base head is random: the same one every time
        report = Reporter(progress, should_stop)
        self.model, self.tokenizer = load_adapted(self.entry, device=pick_device("auto"), report=report)
        report("ready", 1.0)
        return self

    def _inputs(self, prompt: str):
        tok = self.tokenizer
        if self.task == "causal-lm" and getattr(tok, "chat_template", None):
            enc = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                          return_tensors="pt", return_dict=True)
        else:
            enc = tok(prompt, return_tensors="pt", truncation=True)
        device = next(self.model.parameters()).device
        return {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}

    def generate(self, prompt: str, *, max_new_tokens: int = 128, temperature: float = 0.0,
                 on_text: Callable[[str, str], None] | None = None, should_stop=None) -> dict:
        """The base model's answer, then the adapted model's, each streamed piece by piece."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextStreamer

        if self.model is None:
            self.load()
        if self.task != "causal-lm":
            raise InputError(f"{self.entry.name}: a {self.task} adapter classifies text; it does not generate")
        inputs = self._inputs(prompt)

        class _Stop(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return bool(should_stop and should_stop())

        answers = {}
        for which in ("base", "adapted"):
            pieces: list[str] = []

            class _Streamer(TextStreamer):
                def on_finalized_text(self, text: str, stream_end: bool = False):
                    if text:
                        pieces.append(text)
                        if on_text is not None:
                            on_text(which, text)

            streamer = _Streamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
            kwargs = dict(max_new_tokens=int(max_new_tokens), streamer=streamer,
                          stopping_criteria=StoppingCriteriaList([_Stop()]),
                          pad_token_id=self.tokenizer.pad_token_id)
            if temperature > 0:
                kwargs.update(do_sample=True, temperature=float(temperature))
            else:
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            torch.manual_seed(0)
            with torch.no_grad():
                if which == "base":
                    with self.model.disable_adapter():
                        self.model.generate(**inputs, **kwargs)
                else:
                    self.model.generate(**inputs, **kwargs)
            answers[which] = "".join(pieces)
            if should_stop and should_stop():
                break
        return answers

    def classify(self, text: str) -> dict:
        """Label probabilities of the base model (its untrained head) and of the adapted model."""
        import torch

        if self.model is None:
            self.load()
        if self.task != "sequence-classification":
            raise InputError(f"{self.entry.name}: a {self.task} adapter generates text; it does not classify")
        inputs = self._inputs(text)
        with torch.no_grad():
            with self.model.disable_adapter():
                base = torch.softmax(self.model(**inputs).logits.float(), -1)[0]
            adapted = torch.softmax(self.model(**inputs).logits.float(), -1)[0]
        id2label = self.model.config.id2label
        labels = [str(id2label.get(i, i)) for i in range(adapted.numel())]
        return {"labels": labels, "base": base.tolist(), "adapted": adapted.tolist()}

    def close(self) -> None:
        self.model = None
        self.tokenizer = None
