"""Built-in diverse queries: topics x task types x templates, written for this project (no third-party text).

Used when no query file is given: the model then answers queries spread over many subjects and kinds of
request, like an instruction-tuning set, without borrowing anyone's data.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator

from delia.core.example import Example

TOPICS: tuple[str, ...] = (
    "photosynthesis",
    "volcanoes",
    "the water cycle",
    "black holes",
    "honeybees",
    "the printing press",
    "renewable energy",
    "compound interest",
    "sleep",
    "the human immune system",
    "coral reefs",
    "chess",
    "jazz music",
    "the Roman Empire",
    "machine learning",
    "recycling",
    "public libraries",
    "marathon running",
    "baking bread",
    "urban gardening",
    "electric cars",
    "the first moon landing",
    "earthquakes",
    "the Internet",
    "vaccines",
    "time management",
    "plate tectonics",
    "the stock market",
    "origami",
    "bird migration",
    "climate change",
    "ancient Egypt",
    "the piano",
    "rainforests",
    "volunteering",
    "remote work",
    "3D printing",
    "tea",
    "the Olympic Games",
    "bicycles",
    "friendship",
    "public speaking",
    "the periodic table",
    "solar eclipses",
    "museums",
    "smartphones",
    "deserts",
    "cryptography",
    "composting",
    "learning a second language",
    "the French Revolution",
    "antibiotics",
    "wind turbines",
    "octopuses",
    "credit cards",
    "meditation",
    "board games",
    "the Silk Road",
    "glaciers",
    "open-source software",
)

# {t}: the topic; {u}: a second topic; {n}: a small number. Each task type has a few phrasings.
TASK_TEMPLATES: dict[str, tuple[str, ...]] = {
    "explain": (
        "Explain {t} to a curious twelve-year-old.",
        "What is the basic idea behind {t}?",
        "Give a plain-language explanation of {t} in one paragraph.",
    ),
    "facts": (
        "List {n} interesting facts about {t}.",
        "Name {n} common misconceptions about {t} and correct each one.",
        "What are {n} things most people do not know about {t}?",
    ),
    "compare": (
        "Compare {t} and {u}: how are they alike and how do they differ?",
        "What could {t} learn from {u}? Answer in a short paragraph.",
    ),
    "poem": (
        "Write a short poem about {t}.",
        "Compose a haiku about {t}.",
        "Write a four-line rhyming verse that mentions {t}.",
    ),
    "story": (
        "Write a three-sentence story involving {t}.",
        "Begin a short mystery story in which {t} plays a part.",
        "Tell a brief bedtime story that teaches something about {t}.",
    ),
    "email": (
        "Draft a short email inviting a colleague to a talk about {t}.",
        "Write a polite email asking an expert for advice about {t}.",
        "Write a friendly message to a neighbour suggesting a weekend activity related to {t}.",
    ),
    "titles": (
        "Suggest {n} catchy titles for a blog post about {t}.",
        "Write a one-sentence summary of why {t} matters.",
        "Propose a newspaper headline about a surprising discovery in {t}.",
    ),
    "quiz": (
        "Write {n} quiz questions about {t}, each with its answer.",
        "What questions should a beginner ask when learning about {t}?",
        "Create a true-or-false question about {t} and explain the answer.",
    ),
    "pros_cons": (
        "What are the main advantages and disadvantages of {t}?",
        "Give one argument for and one argument against spending public money on {t}.",
    ),
    "analogy": (
        "Describe {t} using an analogy from cooking.",
        "Explain {t} with an everyday analogy a child would understand.",
        "Compare {t} to a team sport and explain the comparison.",
    ),
    "plan": (
        "Create a one-week plan for learning the basics of {t}.",
        "Outline the steps to start a small school project about {t}.",
        "Suggest a {n}-step routine for someone who wants to get into {t}.",
    ),
    "dialogue": (
        "Write a short dialogue between a teacher and a student about {t}.",
        "Write a conversation in which two friends disagree about {t}.",
    ),
    "definition": (
        "Define {t} in one sentence, then give an example.",
        "How would a dictionary define {t}? Add a sentence using the term.",
    ),
    "history": (
        "Briefly describe how {t} has changed over the last hundred years.",
        "What is one important moment in the history of {t}?",
    ),
    "persuade": (
        "Write a persuasive paragraph arguing that more people should learn about {t}.",
        "Convince a sceptical friend, in three sentences, that {t} is worth their attention.",
    ),
    "social_post": (
        "Write a tweet-length message encouraging people to explore {t}.",
        "Write a short, upbeat social media post about {t} with one hashtag.",
    ),
    "future": (
        "How might {t} change in the next twenty years?",
        "Imagine a world without {t}. What would be different?",
    ),
    "advice": (
        "What advice would you give to someone who feels overwhelmed by {t}?",
        "Give {n} practical tips for a beginner interested in {t}.",
    ),
    "classify": (
        "Is {t} mainly a topic of science, history, art or everyday life? Explain your choice.",
        "Would you call {t} simple or complex? Give two reasons.",
    ),
}

# Task types whose queries are built from numbers rather than topics: arithmetic, unit conversion, code.
NUMERIC_TEMPLATES: dict[str, tuple[str, ...]] = {
    "arithmetic": (
        "What is {a} multiplied by {b}? Show your working.",
        "A shop sells pencils at {a} cents each. How much do {b} pencils cost in dollars?",
        "If a train travels {a} kilometres in {b} hours, what is its average speed?",
    ),
    "code": (
        "Write a Python function that returns the sum of the first {a} square numbers.",
        "Write a Python function that checks whether a number is divisible by both {a} and {b}.",
        "Write a short Python loop that prints the multiples of {a} below {c}.",
    ),
    "units": (
        "Convert {c} minutes into hours and minutes.",
        "How many centimetres are there in {a} metres and {b} centimetres?",
    ),
}

NUMBER_WORDS = ("three", "four", "five")


def _topic_queries(rng: random.Random) -> dict[str, list[tuple[str, str]]]:
    pools: dict[str, list[tuple[str, str]]] = {}
    for task_type, templates in TASK_TEMPLATES.items():
        pool = []
        for template in templates:
            for topic in TOPICS:
                other = rng.choice([t for t in TOPICS if t != topic])
                text = template.format(t=topic, u=other, n=rng.choice(NUMBER_WORDS))
                pool.append((_capitalise(text), topic))
        pools[task_type] = pool
    return pools


def _numeric_queries(rng: random.Random, per_type: int) -> dict[str, list[tuple[str, str]]]:
    pools: dict[str, list[tuple[str, str]]] = {}
    for task_type, templates in NUMERIC_TEMPLATES.items():
        pool = []
        for index in range(per_type):
            template = templates[index % len(templates)]
            numbers = {"a": rng.randint(2, 99), "b": rng.randint(2, 30), "c": rng.randint(100, 999)}
            pool.append((template.format(**numbers), "numbers"))
        pools[task_type] = pool
    return pools


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def _normalise(text: str) -> str:
    return re.sub(r"\W+", " ", text.lower()).strip()


def _round_robin(
    pools: dict[str, list[tuple[str, str]]], rng: random.Random
) -> Iterator[tuple[str, str, str]]:
    """Yield (task type, query, topic) taking one from each task type in turn, so any prefix is balanced."""
    for pool in pools.values():
        rng.shuffle(pool)
    names = list(pools)
    rng.shuffle(names)
    depth = max(len(pool) for pool in pools.values())
    for index in range(depth):
        for name in names:
            if index < len(pools[name]):
                text, topic = pools[name][index]
                yield name, text, topic


def numeric_per_type() -> int:
    return 2 * len(TOPICS) * 3


def builtin_queries(n: int, seed: int = 0) -> list[Example]:
    """Up to `n` distinct user-only queries, balanced over task types; fewer only if the pool runs out."""
    rng = random.Random(seed)
    pools = _topic_queries(rng) | _numeric_queries(rng, numeric_per_type())
    seen: set[str] = set()
    queries: list[Example] = []
    for task_type, text, topic in _round_robin(pools, rng):
        key = _normalise(text)
        if key in seen:
            continue
        seen.add(key)
        meta = {"task_type": task_type, "topic": topic, "builtin": True}
        queries.append(Example(messages=[{"role": "user", "content": text}], source="query", meta=meta))
        if len(queries) == n:
            break
    return queries
