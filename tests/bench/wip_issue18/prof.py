import sys, torch, time
sys.path[:0] = ["/work/i18"]
from studio.core.models import resolve_source
from transformers import AutoModelForCausalLM
from peft import LoraConfig, get_peft_model
path = resolve_source("bundled:smollm2-135m-instruct").path
for name, dt in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
    m = AutoModelForCausalLM.from_pretrained(path, dtype=dt)
    p = get_peft_model(m, LoraConfig(r=16, target_modules="all-linear"))
    p.train()
    ids = torch.randint(0, 49000, (4, 400))
    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dt == torch.bfloat16):
            out = p(input_ids=ids, labels=ids)
        out.loss.backward()
    step()
    t = time.perf_counter(); step(); print(name, "step", round(time.perf_counter() - t, 2), "s", flush=True)
    with torch.profiler.profile() as prof:
        step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
