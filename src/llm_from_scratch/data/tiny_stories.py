"""A small built-in corpus, made by this project, so the demo needs no download.

Short, regular stories generated from templates with a seeded random generator: the same
text on every machine. The grammar is simple enough that a character-level model of a few
hundred thousand parameters learns to write plausible sentences in a couple of minutes on a
CPU, which makes progress visible (the samples get better as the loss falls).
"""

from __future__ import annotations

import random

NAMES = ["Mia", "Leo", "Ada", "Sam", "Nora", "Ben", "Lily", "Max", "Zoe", "Tom"]
ANIMALS = ["cat", "dog", "fox", "owl", "frog", "bird", "duck", "bear"]
PLACES = ["the park", "the garden", "the river", "the hill", "the market", "the forest", "the beach"]
THINGS = ["a red ball", "a blue kite", "a small box", "a shiny stone", "an old map", "a green hat"]
FEELINGS = ["happy", "sleepy", "brave", "curious", "hungry", "proud"]
WEATHER = ["sunny", "rainy", "windy", "cold", "warm"]

TEMPLATES = [
    "{name} went to {place} with a {animal}.",
    "It was a {weather} day, and {name} felt {feeling}.",
    "The {animal} found {thing} near {place}.",
    "{name} gave {thing} to the {animal}.",
    "\"Look!\" said {name}. \"The {animal} is {feeling}.\"",
    "After lunch, {name} and the {animal} walked home from {place}.",
    "The {animal} was {feeling}, so it sat under a tree.",
    "{name} smiled and put {thing} in a bag.",
]


def tiny_stories(num_stories: int = 600, seed: int = 0) -> str:
    """About 150 KB of text for the default `num_stories`; stories separated by blank lines."""
    rng = random.Random(seed)
    stories = []
    for _ in range(num_stories):
        slots = dict(name=rng.choice(NAMES), animal=rng.choice(ANIMALS), place=rng.choice(PLACES),
                     thing=rng.choice(THINGS), feeling=rng.choice(FEELINGS), weather=rng.choice(WEATHER))
        templates = rng.sample(TEMPLATES, rng.randint(3, 6))
        sentences = [template.format(**slots) for template in templates] + ["The end."]
        stories.append(" ".join(sentences))
    return "\n\n".join(stories) + "\n"
