import sys, tempfile, json, torch
sys.path[:0] = ["/work/i18", "/work/i18/tests"]
from pathlib import Path
from tiny_models import make_tiny_llama
from studio.cli import main
from studio.core.telemetry import read_events
from safetensors.torch import load_file
tl = make_tiny_llama(tempfile.mkdtemp()); out = tempfile.mkdtemp()
sets = [f"model.source={tl}", f"train.output_dir={out}", "train.max_steps=5", "data.max_seq_len=64", "train.eval_every=0",
        "train.learning_rate=0.005", "telemetry.every=2", "telemetry.budget=0", "variant.name=adalora", "variant.init_r=6",
        "variant.target_r=2", "variant.tinit=1", "variant.tfinal=1", "train.gallery=false"]
import io, contextlib
buf = io.StringIO()
with contextlib.redirect_stdout(buf):
    main(["train", "resources/configs/default.toml", *[x for s in sets for x in ("--set", s)]])
run = Path(buf.getvalue().strip().splitlines()[-1])
sp = [e for e in read_events(run / "events.jsonl") if e["type"] == "spectra"][-1]["layers"]
cfg = json.loads((run / "adapter/adapter_config.json").read_text())
t = load_file(str(run / "adapter/adapter_model.safetensors"))
print({k: v.dtype for k, v in list(t.items())[:3]}, cfg.get("rank_pattern") and list(cfg["rank_pattern"].items())[:1], cfg["lora_alpha"], cfg["init_r"])
for name, entry in sp.items():
    if not entry["sv"]: continue
    A = t[f"base_model.model.{name}.lora_A"].double(); B = t[f"base_model.model.{name}.lora_B"].double(); E = t[f"base_model.model.{name}.lora_E"].double()
    d = B @ (A * E) * cfg["lora_alpha"] / (cfg["init_r"] + 1e-5)
    sv = torch.linalg.svdvals(d)[:len(entry["sv"])]
    err = ((sv - torch.tensor(entry["sv"], dtype=torch.float64)).abs().max() / sv.max()).item()
    print(name, A.shape[0], err, sv[0].item(), entry["sv"][0])
