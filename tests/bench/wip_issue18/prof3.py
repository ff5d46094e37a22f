import sys, torch, time
sys.path[:0] = ["/work/i18"]
from transformers import TrainerCallback
from studio.core.config import RunConfig
from studio.core.training import Session
flag = sys.argv[1] == "nocast"
cfg = RunConfig.from_toml("resources/configs/default.toml").with_overrides([
    "data.path=resources/datasets/chat_long_sample.jsonl", "data.max_seq_len=1024", "train.batch_size=4",
    "train.max_steps=6", "train.save_every=0", "train.eval_every=0", "train.gallery=false", "train.output_dir=/tmp/pfruns",
    "telemetry.every=0"])
class NoCast(TrainerCallback):
    def on_train_begin(self, args, state, control, model=None, **kw):
        if flag:
            n = 0
            for m in model.modules():
                if hasattr(m, "cast_input_dtype_enabled"):
                    m.cast_input_dtype_enabled = False; n += 1
            print("disabled casting on", n, "layers")
ev = []
Session(cfg, callbacks=[NoCast()]).run(sink=ev.append)
r = [e["tokens_per_s"] for e in ev if e["type"] == "step" and e.get("tokens_per_s")][1:]
print(sys.argv[1], round(sum(r) / len(r)), [round(e["loss"], 4) for e in ev if e["type"] == "step"])
