import sys, tempfile, torch
sys.path[:0] = ["/work/i18", "/work/i18/tests"]
import studio.core
from tiny_models import make_tiny_llama
from transformers import AutoModelForCausalLM, BitsAndBytesConfig
from peft import LoraConfig, get_peft_model
from studio.core import storage
tl = make_tiny_llama(tempfile.mkdtemp())
def base():
    return AutoModelForCausalLM.from_pretrained(tl, dtype=torch.bfloat16, device_map={"": "cpu"},
        quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16))
ids = torch.randint(5, 100, (2, 12))
res = []
for flag in (True, False):
    torch.manual_seed(0)
    b = base()
    if flag: storage.keep_4bit_differentiable(b)
    p = get_peft_model(b, LoraConfig(r=4, target_modules="all-linear", use_dora=True, init_lora_weights="gaussian")).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        a = p(input_ids=ids).logits.float()
        a2 = p(input_ids=ids).logits.float()
    res.append((a, a2))
print("flag: first vs second", (res[0][0]-res[0][1]).abs().max().item())
print("noflag: first vs second", (res[1][0]-res[1][1]).abs().max().item())
print("flag vs noflag first", (res[0][0]-res[1][0]).abs().max().item(), "scale", res[0][0].abs().max().item())
b = base(); storage.keep_4bit_differentiable(b)
ref = AutoModelForCausalLM.from_pretrained(tl, dtype=torch.bfloat16)
mods = dict(b.named_modules())
for n, m in ref.named_modules():
    if isinstance(m, torch.nn.Linear) and n != "lm_head":
        m.weight.data = storage.dense_weight(mods[n]).to(torch.bfloat16).clone()
torch.manual_seed(0)
p = get_peft_model(ref, LoraConfig(r=4, target_modules="all-linear", use_dora=True, init_lora_weights="gaussian")).eval()
with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
    r = p(input_ids=ids).logits.float()
print("dense ref vs flag", (r-res[0][0]).abs().max().item(), "dense ref vs noflag", (r-res[1][0]).abs().max().item())
