import sys, torch, time
sys.path[:0] = ["/work/i18"]
from transformers import TrainerCallback
from studio.core.config import RunConfig
from studio.core.training import Session
prec = sys.argv[1]
cfg = RunConfig.from_toml("resources/configs/default.toml").with_overrides([
    "data.path=resources/datasets/chat_long_sample.jsonl", "data.max_seq_len=1024", "train.batch_size=4",
    "train.max_steps=4", "train.save_every=0", "train.eval_every=0", "train.gallery=false", "train.output_dir=/tmp/pfruns",
    "telemetry.every=0", "data.padding_free=false", f"train.precision={prec}", f"model.dtype={prec}"])
class Prof(TrainerCallback):
    prof = None
    def on_step_begin(self, args, state, control, **kw):
        if state.global_step == 2:
            self.t = time.perf_counter()
            self.prof = torch.profiler.profile(); self.prof.__enter__()
    def on_step_end(self, args, state, control, **kw):
        if state.global_step == 3 and self.prof is not None:
            self.prof.__exit__(None, None, None)
            print(prec, "profiled step", round(time.perf_counter() - self.t, 2), "s", torch.get_num_threads(), "threads")
            print(self.prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14))
Session(cfg, callbacks=[Prof()]).run()
