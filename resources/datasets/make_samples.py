"""Make the small sample datasets shipped with LoRA Studio (synthetic, from templates, nothing downloaded).

Run from anywhere; it rewrites the files next to itself and is deterministic (fixed seed):

    python resources/datasets/make_samples.py

  chat_sample.jsonl            300 short conversations ("messages" format): unit conversions, arithmetic,
                               capital cities, simple definitions; some with a system prompt, some two turns
  classification_sample.csv    400 short product reviews, text,label with positive / negative / neutral
  alpaca_sample.jsonl          120 instruction / input / output rows (Alpaca format)
  text_sample.txt              200 lines of plain text (for the "text" format and packing)
  chat_long_sample.jsonl       200 conversations of very different lengths (~40 to ~1,000 tokens): one to
                               eight turns, short answers and worked explanations, passages pasted in to be
                               summarised; the length spread of real chat data (for padding-free batches
                               and the speed benchmark, tests/bench/bench_speed.py)

The answers follow fixed patterns on purpose: a 135M-parameter model picks them up in a few
hundred steps, so a short run visibly changes what it says.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent

CAPITALS = {
    "France": "Paris", "Japan": "Tokyo", "Italy": "Rome", "Spain": "Madrid", "Germany": "Berlin",
    "Canada": "Ottawa", "Australia": "Canberra", "Brazil": "Brasilia", "Egypt": "Cairo", "Kenya": "Nairobi",
    "India": "New Delhi", "China": "Beijing", "Mexico": "Mexico City", "Norway": "Oslo", "Sweden": "Stockholm",
    "Poland": "Warsaw", "Greece": "Athens", "Portugal": "Lisbon", "Ireland": "Dublin", "Peru": "Lima",
    "Chile": "Santiago", "Argentina": "Buenos Aires", "Turkey": "Ankara", "Thailand": "Bangkok",
    "Vietnam": "Hanoi", "Finland": "Helsinki", "Austria": "Vienna", "Hungary": "Budapest",
}

DEFINITIONS = {
    "photosynthesis": "the process by which plants use sunlight, water and carbon dioxide to make sugar and oxygen",
    "gravity": "the force that pulls objects with mass toward each other",
    "a prime number": "a whole number greater than 1 whose only divisors are 1 and itself",
    "an atom": "the smallest unit of a chemical element",
    "evaporation": "the change of a liquid into a gas",
    "a noun": "a word that names a person, place, thing or idea",
    "a verb": "a word that describes an action or a state",
    "an ecosystem": "a community of living things together with their environment",
    "democracy": "a system of government in which people choose their leaders by voting",
    "a mammal": "a warm-blooded animal that has hair and feeds its young with milk",
    "an algorithm": "a step-by-step procedure for solving a problem",
    "a volcano": "an opening in the Earth's crust through which molten rock escapes",
    "friction": "the force that resists the sliding of one surface over another",
    "a fraction": "a number that represents a part of a whole",
    "inflation": "a general rise in prices over time",
}

UNITS = [  # (from, to, factor, format of the amount)
    ("kilometres", "metres", 1000), ("metres", "centimetres", 100), ("kilograms", "grams", 1000),
    ("hours", "minutes", 60), ("minutes", "seconds", 60), ("litres", "millilitres", 1000),
    ("days", "hours", 24), ("weeks", "days", 7),
]

SYSTEM_PROMPTS = [
    "You are a concise assistant. Answer in one sentence.",
    "You are a helpful tutor for school students.",
]


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _qa(rng: random.Random) -> tuple[str, str]:
    kind = rng.choice(["units", "arith", "capital", "define"])
    if kind == "units":
        src, dst, factor = rng.choice(UNITS)
        amount = rng.choice([2, 3, 4, 5, 6, 8, 10, 12, 15, 2.5, 0.5])
        q = rng.choice([f"Convert {_number(amount)} {src} to {dst}.",
                        f"How many {dst} are in {_number(amount)} {src}?"])
        return q, f"{_number(amount)} {src} is {_number(amount * factor)} {dst}."
    if kind == "arith":
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        op = rng.choice(["+", "-", "*"])
        result = {"+": a + b, "-": a - b, "*": a * b}[op]
        word = {"+": "plus", "-": "minus", "*": "times"}[op]
        q = rng.choice([f"What is {a} {word} {b}?", f"Compute {a} {op} {b}."])
        return q, f"{a} {op} {b} = {result}."
    if kind == "capital":
        country = rng.choice(sorted(CAPITALS))
        q = rng.choice([f"What is the capital of {country}?", f"Name the capital city of {country}."])
        return q, f"The capital of {country} is {CAPITALS[country]}."
    term = rng.choice(sorted(DEFINITIONS))
    q = rng.choice([f"What is {term}?", f"Define {term}.", f"Explain {term} in simple words."])
    return q, f"{term[0].upper() + term[1:]} is {DEFINITIONS[term]}."


def chat_rows(rng: random.Random, n: int = 300) -> list[dict]:
    rows = []
    for i in range(n):
        messages = []
        if i % 5 == 0:
            messages.append({"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
        for _ in range(1 if i % 3 else 2):  # every third conversation has a follow-up turn
            q, a = _qa(rng)
            messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        rows.append({"messages": messages})
    return rows


PRODUCTS = ["headphones", "blender", "backpack", "desk lamp", "phone case", "coffee maker", "keyboard",
            "water bottle", "running shoes", "umbrella", "toaster", "book", "jacket", "charger"]
OPINIONS = {
    "positive": ["I love this {p}.", "This {p} is excellent.", "Great {p}, works perfectly.",
                 "Best {p} I have ever bought.", "The {p} exceeded my expectations.", "Really happy with this {p}."],
    "negative": ["This {p} broke after a week.", "Terrible {p}, do not buy.", "The {p} stopped working quickly.",
                 "Very disappointed with this {p}.", "Worst {p} I have owned.", "The {p} is cheap and flimsy."],
    "neutral": ["The {p} is okay.", "This {p} does the job, nothing special.", "An average {p}.",
                "The {p} arrived on time.", "It is a {p}, it works as described.", "The {p} is fine for the price."],
}
DETAILS = {
    "positive": ["Highly recommended!", "Would buy again.", "Five stars.", "Amazing quality."],
    "negative": ["Returning it.", "Waste of money.", "One star.", "Poor quality."],
    "neutral": ["", "Three stars.", "No complaints, no praise.", "It is what it is."],
}


def review_rows(rng: random.Random, n: int = 400) -> list[tuple[str, str]]:
    labels = sorted(OPINIONS)
    rows = []
    for i in range(n):
        label = labels[i % len(labels)]
        product = rng.choice(PRODUCTS)
        text = rng.choice(OPINIONS[label]).format(p=product)
        detail = rng.choice(DETAILS[label])
        rows.append(((text + " " + detail).strip(), label))
    rng.shuffle(rows)
    return rows


def alpaca_rows(rng: random.Random, n: int = 120) -> list[dict]:
    rows = []
    for i in range(n):
        if i % 2:
            q, a = _qa(rng)
            rows.append({"instruction": "Answer the question.", "input": q, "output": a})
        else:
            country = rng.choice(sorted(CAPITALS))
            rows.append({"instruction": f"Give the capital of {country}.", "input": "",
                         "output": f"The capital of {country} is {CAPITALS[country]}."})
    return rows


def text_lines(rng: random.Random, n: int = 200) -> list[str]:
    lines = []
    for _ in range(n):
        q, a = _qa(rng)
        lines.append(f"Question: {q} Answer: {a}")
    return lines


WORKED = {
    "units": ["First write down the factor: one {src} is {f} {dst}.", "Then multiply the amount by that factor.",
              "{a} times {f} gives {r}.", "So the answer is {r} {dst}.",
              "A quick check: a larger unit always gives a larger number of the smaller unit."],
    "arith": ["Let us work it out step by step.", "Start with {a}.", "Apply the operation to {b}.",
              "That gives {r}.", "You can check it by reversing the operation.", "The result is {r}."],
}
PASSAGE = ["The river rises in the hills and flows north for two hundred kilometres.",
           "Farmers along its banks grow wheat, barley and apples.", "In spring the snow melts and the water rises.",
           "A stone bridge built four centuries ago still carries traffic across it.",
           "The town at its mouth has a small harbour and a market every Saturday.",
           "Visitors come in summer to walk the old towpath and watch the boats.",
           "The local museum keeps maps that show how the river has moved over time.",
           "Floods were common until a dam was finished upstream in the last century.",
           "Today the valley is known for its cider and its quiet villages.",
           "Birdwatchers count herons, kingfishers and, in winter, large flocks of geese."]


def _long_answer(rng: random.Random) -> tuple[str, str]:
    """A question with a worked, several-sentence answer (or a plain one)."""
    q, a = _qa(rng)
    kind = "units" if " is " in a and any(u[0] in q for u in UNITS) else "arith" if "=" in a else "define"
    if "capital" in q:
        extra = ["A capital is the city where a country's government meets.",
                 "It is often, but not always, the largest city.", "Many embassies are found there.",
                 "Ask me about another country if you like."]
        return q, " ".join([a] + extra[: rng.randint(1, len(extra))])
    if kind == "define":
        extra = ["Put simply, that is the whole idea.",
                 "People often meet this idea at school and again in everyday life.",
                 "A simple example makes it easier to remember.", "Ask me if you would like another example."]
        return q, " ".join([a] + extra[: rng.randint(1, len(extra))])
    src, dst, f = next(((s_, d_, f_) for s_, d_, f_ in UNITS if s_ in q and d_ in q), ("unit", "unit", 1))
    nums = [int(t) if t.isdigit() else t for t in q.replace("?", " ").replace(".", " ").split()]
    numbers = [n for n in nums if isinstance(n, int)]
    a_num = numbers[0] if numbers else 2
    b_num = numbers[1] if len(numbers) > 1 else 2
    steps = [t.format(src=src, dst=dst, f=_number(f), a=a_num, b=b_num, r=a.split()[-1].rstrip("."))
             for t in WORKED[kind]]
    return q, " ".join(steps[: rng.randint(2, len(steps))] + [a])


def chat_long_rows(rng: random.Random, n: int = 200) -> list[dict]:
    rows = []
    for i in range(n):
        messages = []
        if rng.random() < 0.3:
            messages.append({"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
        turns = min(1 + int(rng.expovariate(0.45)), 8)   # most chats are short, a few run long
        for _ in range(turns):
            roll = rng.random()
            if roll < 0.15:   # a pasted passage, a one-sentence summary
                k = rng.randint(3, len(PASSAGE))
                text = " ".join(rng.sample(PASSAGE, k))
                messages += [{"role": "user", "content": f"Summarise this in one sentence:\n\n{text}"},
                             {"role": "assistant", "content": "It describes a river valley, its farms, its town "
                                                              "and the people who visit it."}]
            elif roll < 0.55:
                q, a = _long_answer(rng)
                messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
            else:
                q, a = _qa(rng)
                messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        rows.append({"messages": messages})
    return rows


def main() -> None:
    rng = random.Random(1234)
    with open(HERE / "chat_sample.jsonl", "w", encoding="utf-8", newline="\n") as f:
        for row in chat_rows(rng):
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    with open(HERE / "classification_sample.csv", "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["text", "label"])
        writer.writerows(review_rows(rng))
    with open(HERE / "alpaca_sample.jsonl", "w", encoding="utf-8", newline="\n") as f:
        for row in alpaca_rows(rng):
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    (HERE / "text_sample.txt").write_text("\n".join(text_lines(rng)) + "\n", encoding="utf-8")
    with open(HERE / "chat_long_sample.jsonl", "w", encoding="utf-8", newline="\n") as f:
        for row in chat_long_rows(random.Random(4321)):   # its own seed: the files above stay as they were
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    for name in ("chat_sample.jsonl", "classification_sample.csv", "alpaca_sample.jsonl", "text_sample.txt",
                 "chat_long_sample.jsonl"):
        print(f"{name}: {(HERE / name).stat().st_size} bytes")


if __name__ == "__main__":
    main()
