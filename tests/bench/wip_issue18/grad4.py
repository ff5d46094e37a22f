import sys, tempfile, torch
sys.path[:0] = ["/work/i18", "/work/i18/tests"]
from tiny_models import make_tiny_llama
from studio.core import storage
from studio.core.models import ResolvedModel, load_model
from peft import LoraConfig, get_peft_model
tl = make_tiny_llama(tempfile.mkdtemp())
res = ResolvedModel(tl, tl, "folder", "x")
st = storage.resolve("auto", "4bit", "fp32", "cpu")
print(st)
q = load_model(res, "causal-lm", storage=st, device=torch.device("cpu"))
ref = load_model(res, "causal-lm", dtype=torch.float32)
# reference weights = dequantized 4bit weights
qmods = dict(q.named_modules())
for name, m in ref.named_modules():
    if isinstance(m, torch.nn.Linear) and name != "lm_head":
        m.weight.data = storage.dense_weight(qmods[name]).float().clone()
x = torch.randint(3, 100, (2, 12))
q.eval(); 
with torch.no_grad(): q(input_ids=x)   # eval pass that would repack
outs = []
for m in (q, ref):
    torch.manual_seed(0)
    p = get_peft_model(m, LoraConfig(r=4, target_modules="all-linear", init_lora_weights="gaussian"))
    for n, prm in p.named_parameters():
        if "lora_B" in n: torch.nn.init.normal_(prm, std=0.1)
    torch.manual_seed(1)
    for n, prm in p.named_parameters():
        if "lora_" in n: 
            g = torch.Generator().manual_seed(hash(n) % 1000); prm.data = torch.randn(prm.shape, generator=g) * 0.1
    p.train()
    out = p(input_ids=x, labels=x); out.loss.backward()
    outs.append((out.loss.item(), {n: prm.grad.clone() for n, prm in p.named_parameters() if prm.requires_grad}))
print(outs[0][0], outs[1][0])
worst = max(((outs[0][1][n] - outs[1][1][n]).abs().max() / outs[1][1][n].abs().max()).item() for n in outs[1][1])
print("worst relative grad diff", worst)
