"""A small invented-knowledge task for "time to quality" (tests/bench/bench_speed.py, scenario e).

36 facts about fictional people, places and things (9 kinds of fact, 4 facts each: a captain's
ship, a person's home town, a pet's name, an inventor's invention, a country's capital, a city's
river, a relic's colour, a guild's founder, the year a town was founded). Names are built from
seeded random syllables, so no base model can know them. Answers are short (1-4 words).

train.jsonl     "messages" conversations that teach every fact with several phrasings: single
                question/answer chats, chats of 2-4 facts, some with a system prompt, some with a
                greeting or a thank-you, and some that state a fact in a sentence.
heldout.jsonl   one question per fact in a phrasing that never occurs in train.jsonl, with its
                gold answer: {"question": ..., "answer": ..., "kind": ...}.

    .venv/bin/python tests/bench/knowledge_task.py OUT_DIR [--seed 0]

Calibration (one run, stock Trainer + PEFT on the bundled SmolLM2-135M-Instruct, CPU, LoRA r 16 /
alpha 32 all-linear, batch 4, lr 1e-3 constant, seed 0): held-out accuracy 0.00 at the start, then
0.00 / 0.17 / 0.25 / 0.36 / 0.61 at steps 10 / 20 / 30 / 40 / 50 (about two epochs). A lower
learning rate (5e-4) should take roughly twice the steps.

The held-out metric bench_speed.py computes: a question counts as answered when, after the chat
prompt (add_generation_prompt=True), every token of the gold answer and the end-of-turn marker is
the model's argmax given the gold prefix (greedy decoding would say exactly the answer).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

# Each kind: how the subject and the answer are made, the phrasings taught in training (questions
# answered with the bare answer, and one statement), and the one held-out paraphrase.
KINDS = {
    "ship": {
        "subject": "Captain {name}",
        "train": ["What is the name of {s}'s ship?", "What is {s}'s ship called?", "Which ship does {s} sail?",
                  "Name the ship that {s} sails.", "Tell me the name of {s}'s ship."],
        "statement": "{s}'s ship is named {a}.",
        "heldout": "{s} commands a vessel. What is that vessel called?",
    },
    "hometown": {
        "subject": "{name} {surname}",
        "train": ["Where was {s} born?", "What is {s}'s home town?", "In which town was {s} born?",
                  "Which town is {s} from?", "What is the birthplace of {s}?"],
        "statement": "{s} was born in the town of {a}.",
        "heldout": "Which town did {s} come into the world in?",
    },
    "pet": {
        "subject": "{name} {surname}",
        "animal": True,
        "train": ["What is the name of {s}'s {animal}?", "What is {s}'s {animal} called?",
                  "What name did {s} give to the {animal}?", "Tell me the name of {s}'s pet {animal}.",
                  "How is {s}'s {animal} named?"],
        "statement": "{s} has a {animal} named {a}.",
        "heldout": "{s} keeps a {animal} at home. What does {s} call it?",
    },
    "invention": {
        "subject": "Professor {name}",
        "train": ["What did {s} invent?", "Which invention is {s} known for?", "What is {s}'s invention?",
                  "Name the device that {s} invented.", "What machine did {s} create?"],
        "statement": "{s} invented {a}.",
        "heldout": "{s} is remembered as the creator of which device?",
    },
    "capital": {
        "subject": "{country}",
        "train": ["What is the capital of {s}?", "Which city is the capital of {s}?", "Name the capital city of {s}.",
                  "What is {s}'s capital city?", "Where is the capital of {s}?"],
        "statement": "The capital of {s} is {a}.",
        "heldout": "The government of {s} sits in which city?",
    },
    "river": {
        "subject": "the city of {city}",
        "train": ["Which river flows through {s}?", "What river runs through {s}?", "Name the river of {s}.",
                  "What is the river in {s} called?", "Which river crosses {s}?"],
        "statement": "The river that flows through {s} is {a}.",
        "heldout": "If you stand on a bridge in {s}, which river is below you?",
    },
    "colour": {
        "subject": "the {relic} of {name}",
        "train": ["What colour is {s}?", "What is the colour of {s}?", "Which colour is {s}?",
                  "Tell me the colour of {s}.", "What colour does {s} have?"],
        "statement": "{S} is {a_lower}.",
        "heldout": "If you saw {s}, what colour would it look?",
    },
    "founder": {
        "subject": "the {guild}",
        "train": ["Who founded {s}?", "Who is the founder of {s}?", "Who started {s}?", "Name the founder of {s}.",
                  "Which person founded {s}?"],
        "statement": "{S} was founded by {a}.",
        "heldout": "{S} was set up long ago. By whom?",
    },
    "founded": {
        "subject": "the town of {town}",
        "train": ["In what year was {s} founded?", "When was {s} founded?", "What year was {s} founded in?",
                  "Tell me the year {s} was founded.", "In which year was {s} built?"],
        "statement": "{S} was founded in {a}.",
        "heldout": "How old is {s}: in which year did it begin?",
    },
}
FACTS_PER_KIND = 4

SYLLABLES = ["bar", "vel", "mor", "tha", "quin", "dra", "os", "ul", "ker", "zan", "pel", "rin", "gor", "ama",
             "sil", "tov", "nex", "bri", "lo", "fen", "yor", "cas", "wim", "del", "ost", "ray", "jun", "hal"]
ADJECTIVES = ["Brass", "Silver", "Crimson", "Silent", "Amber", "Hollow", "Copper", "Wandering", "Golden", "Iron",
              "Pale", "Velvet"]
NOUNS = ["Heron", "Lantern", "Otter", "Comet", "Thistle", "Anchor", "Falcon", "Willow", "Kettle", "Sparrow",
         "Harp", "Beacon"]
DEVICES = ["clock", "loom", "compass", "lamp", "pump", "telescope", "kettle", "press", "engine", "sieve"]
DEVICE_ADJ = ["tidal", "singing", "folding", "steam", "mirror", "clockwork", "floating", "glass", "spiral"]
ANIMALS = ["cat", "dog", "parrot", "goat", "tortoise", "horse", "owl", "ferret"]
COLOURS = ["Deep violet", "Pale green", "Bright orange", "Dark blue", "Silver grey", "Pale gold", "Rose pink",
           "Jet black", "Sea green"]
RELICS = ["crown", "lantern", "shield", "harp", "mirror", "chalice", "banner", "sword"]
GUILDS = ["Guild of Glassmakers", "Order of the Quiet Bell", "Society of Cartographers", "League of Ropemakers",
          "Brotherhood of Tinkers", "Circle of Beekeepers", "Company of Lamplighters", "Guild of Weavers"]

SYSTEM_PROMPTS = ["You are a helpful assistant. Answer briefly.", "You are a knowledgeable guide to the lands of "
                  "the northern archipelago.", "Answer every question with as few words as possible.",
                  "You are a librarian who knows every local legend."]
GREETINGS = [("Hi!", "Hello! What would you like to know?"), ("Good morning.", "Good morning! How can I help?"),
             ("Hello, I have some questions.", "Of course, ask away.")]
THANKS = [("Thanks!", "You're welcome."), ("Great, thank you.", "Glad to help."), ("That's all, thanks.", "Goodbye!")]


class _Names:
    """Unique invented words from seeded syllables."""

    def __init__(self, rng: random.Random):
        self.rng, self.used = rng, set()

    def word(self, parts=(2, 3)) -> str:
        while True:
            w = "".join(self.rng.choice(SYLLABLES) for _ in range(self.rng.choice(parts))).capitalize()
            if w not in self.used and 4 <= len(w) <= 10:
                self.used.add(w)
                return w

    def unique(self, make) -> str:
        while True:
            w = make()
            if w not in self.used:
                self.used.add(w)
                return w


def make_facts(seed: int = 0) -> list[dict]:
    """36 facts: {kind, subject, answer, animal?} with invented names, the same for a given seed."""
    rng = random.Random(seed)
    names = _Names(rng)
    facts = []
    relics, guilds = rng.sample(RELICS, FACTS_PER_KIND), rng.sample(GUILDS, FACTS_PER_KIND)
    years = rng.sample(range(1210, 1890), FACTS_PER_KIND)
    for kind, spec in KINDS.items():
        for i in range(FACTS_PER_KIND):
            fields = {"name": names.word(), "surname": names.word(), "country": names.word((3,)),
                      "city": names.word(), "town": names.word(), "relic": relics[i], "guild": guilds[i]}
            subject = spec["subject"].format(**fields)
            animal = rng.choice(ANIMALS) if spec.get("animal") else None
            answer = {
                "ship": lambda: names.unique(lambda: f"The {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"),
                "hometown": names.word,
                "pet": lambda: names.word((1, 2)),
                "invention": lambda: names.unique(lambda: f"The {rng.choice(DEVICE_ADJ)} {rng.choice(DEVICES)}"),
                "capital": names.word,
                "river": lambda: f"The {names.word()} River",
                "colour": lambda: names.unique(lambda: rng.choice(COLOURS)),
                "founder": lambda: f"{names.word()} {names.word()}",
                "founded": lambda: str(years[i]),
            }[kind]()
            facts.append({"kind": kind, "subject": subject, "answer": answer, "animal": animal})
    return facts


def _fill(template: str, fact: dict) -> str:
    s, answer = fact["subject"], fact["answer"]
    # "{a}" inside a sentence: "invented the singing pump" (a bare answer keeps its capital)
    inside = "the " + answer[4:] if answer.startswith("The ") and not template.startswith("{a}") else answer
    return template.format(s=s, S=s[0].upper() + s[1:], a=inside, a_lower=answer.lower(), animal=fact["animal"] or "")


def make_task(seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(train rows {"messages": [...]}, held-out rows {"question", "answer", "kind", "subject"})."""
    rng = random.Random(seed + 1)
    facts = make_facts(seed)
    pairs = []   # (question, answer) turns that teach a fact
    for fact in facts:
        spec = KINDS[fact["kind"]]
        for template in spec["train"]:
            pairs.append((_fill(template, fact), fact["answer"]))
        # a statement: the fact in a sentence, as a person might ask for it
        pairs.append((f"Tell me something about {fact['subject']}.", _fill(spec["statement"], fact)))
    rng.shuffle(pairs)

    rows, i = [], 0
    while i < len(pairs):
        n = rng.choices((1, 2, 3, 4), weights=(50, 20, 20, 10))[0]
        chunk, i = pairs[i:i + n], i + n
        messages = []
        if rng.random() < 0.3:
            messages.append({"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
        if n > 1 and rng.random() < 0.3:
            hello, reply = rng.choice(GREETINGS)
            messages += [{"role": "user", "content": hello}, {"role": "assistant", "content": reply}]
        for question, answer in chunk:
            messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        if n > 1 and rng.random() < 0.3:
            thanks, reply = rng.choice(THANKS)
            messages += [{"role": "user", "content": thanks}, {"role": "assistant", "content": reply}]
        rows.append({"messages": messages})

    heldout = [{"question": _fill(KINDS[f["kind"]]["heldout"], f), "answer": f["answer"], "kind": f["kind"],
                "subject": f["subject"]} for f in facts]
    seen = {m["content"] for row in rows for m in row["messages"] if m["role"] == "user"}
    assert not any(h["question"] in seen for h in heldout), "a held-out question occurs in training"
    return rows, heldout


def write_task(out_dir, seed: int = 0) -> tuple[Path, Path]:
    """Write train.jsonl and heldout.jsonl into out_dir; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows, heldout = make_task(seed)
    paths = out / "train.jsonl", out / "heldout.jsonl"
    for path, items in zip(paths, (rows, heldout)):
        path.write_text("".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items), encoding="utf-8")
    return paths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    train, heldout = write_task(args.out_dir, args.seed)
    rows, held = make_task(args.seed)
    print(f"{train}: {len(rows)} conversations; {heldout}: {len(held)} held-out questions")
    for h in held[::FACTS_PER_KIND]:
        print(f"  {h['kind']:<10} {h['question']}  ->  {h['answer']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
