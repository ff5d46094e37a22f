"""Deterministic synthetic chat data (JSONL, the `messages` format) for data-preparation benchmarks.

    python tests/bench/synth_chat.py OUT.jsonl --rows 100000 [--seed 0]

    from synth_chat import write_chat
    write_chat("chat.jsonl", 100_000, seed=0)

Each line is {"messages": [{"role": "user", "content": ...}, {"role": "assistant", "content": ...}]}
with a user and an assistant turn of 20-400 words each (triangular, mostly short: mean ~185 words),
sentences of common English words: about 435 tokens a row on average with SmolLM2's tokenizer and
chat template (its default system prompt included; min ~120, max ~860). The same rows and seed give
the same file, byte for byte.

Fast: a pool of random sentences is made once from a fixed vocabulary with random.Random; every turn
is a slice of that pool from a random word (string slicing, no per-word work), and the lines are
written through one large buffer (1M rows, ~2 GB).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

MIN_WORDS, MAX_WORDS = 20, 400
MODE_WORDS = 135              # turn lengths: triangular over 20-400 words, mostly short (mean ~185)
POOL_WORDS = 1 << 20          # words in the shared pool (turns are slices of it)
CHUNK_ROWS = 20_000           # rows joined per write
BUFFER = 16 << 20             # the file's write buffer

# Common English words; each is one token (with its leading space) in GPT-2 style BPE vocabularies.
VOCAB = """
the of and to in is was for on that with as by at from it his an were are which this be has had
not but have one their after first its new they who or two been also other her time all she more
when during there only over into can he some up would most these may about school out three many
year used him then so such where between later team each under four world through years while both
city then part known well state since no people area before work season life being high three main
game because best could did made called any against several album own four second number found take
way make long end great old back good group line water right day name family music place system may
small large home show war just still now play book film point give side local like help set field
around last next open real come well kind hand word head house light order night paper early body
power money often free food story young close road case lead level ever child today across country
given less among based hard rather short land study river sound course market human fact run mind
point above among care data field public model start state tree test value view west weight white
whole wind window winter woman wood yellow word write color board bring build carry catch change check
clean clear cover cross deep draw drive earth east easy even fall fast feel fire fish floor fly follow
force form full glass green grow heat heavy hold hope horse hour idea inside iron job keep king know
learn leave letter lift list live look love low machine mark matter mean measure meet metal middle
milk miss month moon morning mother move near need never note notice office page pair party pass path
pay picture piece plan plant plate police pool poor press pretty price print problem pull push question
quick rain reach read ready record red rest rich ring rise rock room round rule safe salt same sand
save scale sea seat seem sell send serve shape share ship shop should sign simple single sit size skin
sky sleep slow smile snow soft soil solid song soon space speak speed spring square stand star step
stone stop store street strong such sugar summer sun table talk teach tell than thank thick thin thing
think those though thought through tie together tool top total touch town track trade train travel
true try turn under unit until upon use usual very visit voice wait walk wall want warm wash watch wave
""".split()
VOCAB = list(dict.fromkeys(VOCAB))   # (a few words are listed twice)


def _pool(rng: random.Random) -> tuple[str, list[int]]:
    """One long text of sentences, and the offset where each of its words starts."""
    words = rng.choices(VOCAB, k=POOL_WORDS)
    ends = set()
    i = 0
    while i < POOL_WORDS:                    # a sentence every 6-18 words
        i += rng.randint(6, 18)
        ends.add(i - 1)
    parts, starts, pos = [], [], 0
    for i, w in enumerate(words):
        if i in ends:
            w += "."
        if i == 0 or i - 1 in ends:
            w = w.capitalize()
        starts.append(pos)
        parts.append(w)
        pos += len(w) + 1
    text = " ".join(parts) + " "
    starts.append(len(text))
    return text, starts


def chat_lines(rows: int, seed: int = 0):
    """The JSONL lines (str, each ending in a newline) of `rows` synthetic chats."""
    rng = random.Random(seed)
    text, starts = _pool(rng)
    last = POOL_WORDS - MAX_WORDS
    triangular, rand = rng.triangular, rng.random

    def turn() -> str:
        n = int(triangular(MIN_WORDS, MAX_WORDS + 1, MODE_WORDS))
        at = int(rand() * last)
        return text[starts[at]:starts[at + n] - 1]    # the pool has only letters, '.' and ' ': no escaping

    for _ in range(rows):
        user, assistant = turn(), turn()
        yield ('{"messages": [{"role": "user", "content": "' + user + '"}, '
               '{"role": "assistant", "content": "' + assistant + '"}]}\n')


def write_chat(path, rows: int, seed: int = 0) -> Path:
    """Write `rows` synthetic chats to `path` (JSONL); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = chat_lines(rows, seed)
    with open(path, "w", encoding="utf-8", buffering=BUFFER) as f:
        while True:
            chunk = "".join(next(lines, "") for _ in range(CHUNK_ROWS))
            if not chunk:
                break
            f.write(chunk)
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Write deterministic synthetic chat JSONL (messages format).")
    ap.add_argument("out", help="the .jsonl file to write")
    ap.add_argument("--rows", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    started = time.perf_counter()
    path = write_chat(args.out, args.rows, args.seed)
    size = path.stat().st_size
    print(f"{path}: {args.rows} rows, {size / 2**20:.1f} MiB in {time.perf_counter() - started:.1f} s",
          file=sys.stderr)


if __name__ == "__main__":
    main()
