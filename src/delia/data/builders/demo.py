"""demo: the project's own field-extraction task (name, city, job), generated from word lists; no file needed.
See docs/demo.md."""

from __future__ import annotations

import json
import random
from typing import Any, Literal

from delia.core.example import Example
from delia.core.registry import TASK_BUILDERS
from delia.data.builders._common import Options, parse_options, window


def words(text: str) -> list[str]:
    return text.split()


# Disjoint value pools: held-out examples use names, cities and jobs never seen in training.
FIRST_NAMES = words(
    "Mara Tomas Ines Oskar Lena Felix Nora Hugo Alma Jonas Clara Emil Ada Leon Vera Anton Ida Paul Rosa Max "
    "Elsa Karl Mila Otto Lisa Finn Hanna Erik Sara Jan Lucia Marco Eva Nils Greta Ivan Olga Pablo Yara Theo "
    "Irene Bruno Dora Kai Maya Rafael Tilda Viktor Zoe Amir"
)
SURNAMES = words(
    "Lind Berg Costa Novak Weber Silva Moreau Jensen Rossi Kowal Brandt Duarte Holm Keller Petrov Ortega "
    "Lang Vogel Marin Falk Sato Okafor Nagy Ruiz Dahl Sorensen Castro Meyer Varga Quint"
)
CITIES = words(
    "Oslo Lisbon Vienna Porto Dublin Zurich Prague Lyon Bergen Krakow Seville Turin Ghent Malmo Tallinn "
    "Bilbao Geneva Leipzig Nantes Aarhus Bologna Riga Split Graz Utrecht Cork Lille Naples Bremen Salzburg "
    "Toulouse Valencia Gdansk Tampere Basel Verona Antwerp Dresden Brno Galway"
)
JOBS = words(
    "baker nurse pilot teacher plumber chemist farmer lawyer painter dentist carpenter librarian architect "
    "florist journalist mechanic tailor pharmacist firefighter surveyor butcher jeweller gardener translator "
    "potter electrician veterinarian welder"
)
SENTENCES = [
    "{name} works as {a_job} in {city}.",
    "Last year {name}, {a_job}, moved to {city}.",
    "In {city}, the {job} {name} opened a small shop.",
    "{name} has been {a_job} in {city} for ten years.",
    "My neighbour {name} is {a_job} who grew up in {city}.",
    "The {job} from {city}, {name}, won the local prize.",
    "After training as {a_job}, {name} settled in {city}.",
    "{name} commutes every day to {city}, where they work as {a_job}.",
    "Everyone in {city} knows {name}, the friendly {job}.",
    "{name}, who lives in {city}, recently became {a_job}.",
]
DEMO_KEYS = ("name", "city", "job")
DEMO_INSTRUCTIONS = {
    "train": [
        "Extract the person's details from the sentence above. Answer in the <sep> format.",
        "Pull out who is mentioned, where, and their job. Use <sep>.",
        "Give me the name, city and job from this text in the <sep> format.",
        "Read the sentence and reply with its details using the <sep> format.",
        "Fill in the record for the person above; follow <sep>.",
        "Identify the person, their city and their occupation. Respond in <sep>.",
        "From the sentence, list the details in <sep> form.",
        "Extract the fields. Format: <sep>.",
    ],
    "heldout": [
        "Who is this, where are they, and what do they do? Reply strictly as <sep>.",
        "Turn the sentence above into a <sep> record.",
        "Please capture the person's name, town and profession, formatted according to <sep>.",
        "I need the details of the person described above in the <sep> format, nothing else.",
        "Summarise the sentence's person, place and occupation using <sep>.",
        "Parse the text above and output the result as <sep>.",
    ],
}


class DemoOptions(Options):
    split: Literal["train", "heldout"] = "train"
    n: int = 64
    instructions: Literal["train", "heldout"] | None = None  # default: the split's own phrasings


def demo_pools(split: str) -> dict[str, list[str]]:
    """Every pool cut in two by a fixed rule, so train and held-out values never meet."""

    def half(values: list[str]) -> list[str]:
        cut = (len(values) * 3) // 4
        return values[:cut] if split == "train" else values[cut:]

    return {"first": half(FIRST_NAMES), "last": half(SURNAMES), "city": half(CITIES), "job": half(JOBS)}


def demo_answer(fields: dict[str, str]) -> str:
    return json.dumps({key: fields[key] for key in DEMO_KEYS}, ensure_ascii=False)


def demo_record(rng: random.Random, pools: dict[str, list[str]]) -> dict[str, str]:
    name = f"{rng.choice(pools['first'])} {rng.choice(pools['last'])}"
    return {"name": name, "city": rng.choice(pools["city"]), "job": rng.choice(pools["job"])}


def with_article(job: str) -> str:
    return f"an {job}" if job[0] in "aeiou" else f"a {job}"


@TASK_BUILDERS.register("demo")
def build_demo(path: str | None, options: dict[str, Any], field: str = "builder_options") -> list[Example]:
    opts: DemoOptions = parse_options(DemoOptions, options, field)
    rng = random.Random(f"demo:{opts.split}:{opts.seed}")
    pools = demo_pools(opts.split)
    instructions = DEMO_INSTRUCTIONS[opts.instructions or opts.split]
    examples: list[Example] = []
    seen: set[str] = set()
    while len(examples) < opts.offset + opts.n:
        fields = demo_record(rng, pools)
        sentence = rng.choice(SENTENCES).format(**fields, a_job=with_article(fields["job"]))
        if sentence in seen:
            continue
        seen.add(sentence)
        instruction = rng.choice(instructions)
        examples.append(
            Example(
                messages=[
                    {"role": "user", "content": f"{sentence}\n\n{instruction}"},
                    {"role": "assistant", "content": demo_answer(fields)},
                ],
                meta={"task": "demo", "fields": fields, "sentence": sentence, "instruction": instruction},
            )
        )
    return window(examples, Options(offset=opts.offset, limit=opts.n))
