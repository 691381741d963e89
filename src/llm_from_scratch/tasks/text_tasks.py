"""String and list tasks: reverse words, spell backwards, count letters, sort numbers.

These look trivial to people and are hard for small language models, for a reason worth knowing:
a model does not see letters, it sees tokens ("strawberry" may be the two tokens "straw" and
"berry"). To count the r's or spell a word backwards it must know what letters each token is
made of. So these tasks test something different from arithmetic, and their answers are exact.

* ``reverse_words``: "Reverse the order of these words: cat dog sun." -> "sun dog cat"
  (2, 3, or 4-5 words by level; compared as a list, so "sun, dog, cat" counts too);
* ``reverse_letters``: "Spell the word 'garden' backwards." -> "nedrag" (short, medium, long words);
* ``count_letters``: "How many r's are in the word 'strawberry'?" -> "3" (the count is drawn
  first, uniformly: 0-2, 0-3, 1-4 by level, so no constant answer scores well);
* ``sort_numbers``: "Sort these numbers from smallest to largest: 9, 1, 4." -> "1, 4, 9"
  (3-4 numbers below 21, 4-5 below 100, 6-7 from -50 to 500 by level).

The words come from small lists written here. A list of a few dozen words would run out of
fresh questions quickly (each word can be in only one split), so half of the words for the
letter tasks are made up from syllables ("lomirka"): as good a test of spelling, never seen in
pretraining, and there is no end of them.
"""

from __future__ import annotations

import random
import string

from .core import Question, TaskFamily

SHORT_WORDS = (
    "cat", "dog", "sun", "tree", "book", "milk", "fish", "bird", "cake", "door", "rain", "star",
    "moon", "ship", "lamp", "hat", "cup", "bed", "car", "box", "pen", "egg", "key", "road", "song",
    "bell", "frog", "leaf", "wind", "sand", "apple", "bread", "chair", "house", "river", "stone",
    "cloud", "green", "table", "water", "plant", "smile", "train", "light", "horse", "paper",
    "music", "lemon",
)
MEDIUM_WORDS = (
    "garden", "window", "basket", "rabbit", "pencil", "dinner", "bottle", "letter", "coffee",
    "orange", "banana", "yellow", "butter", "kitten", "summer", "button", "cookie", "balloon",
    "pepper", "puzzle", "monkey", "guitar", "forest", "bridge", "candle", "planet", "rocket",
    "tomato", "kitchen", "blanket", "teacher", "morning", "picture", "chicken", "bicycle", "holiday",
)
LONG_WORDS = (
    "strawberry", "blueberry", "raspberry", "chocolate", "butterfly", "pineapple", "bookkeeper",
    "committee", "mississippi", "happiness", "cappuccino", "accessory", "necessary", "beginning",
    "sunflower", "classroom", "assessment", "successful", "watermelon", "grasshopper", "excellence",
    "parallel", "broccoli", "engineer",
)
WORDS_BY_LEVEL = {1: SHORT_WORDS, 2: MEDIUM_WORDS, 3: LONG_WORDS}
SYLLABLES = ("ba", "do", "ki", "lu", "mo", "ne", "pa", "ri", "so", "tu", "vel", "zor", "mip", "rak",
             "ten", "lor", "fin", "gus", "ble", "tra", "sno", "qua", "ess", "oom", "arr", "ill")
SYLLABLES_BY_LEVEL = {1: 2, 2: 3, 3: 4}
# Words per level for reverse_words, numbers per level for sort_numbers: (fewest, most).
WORD_COUNT_BY_LEVEL = {1: (2, 2), 2: (3, 3), 3: (4, 5)}
SORT_COUNT_BY_LEVEL = {1: (3, 4), 2: (4, 5), 3: (6, 7)}
SORT_RANGE_BY_LEVEL = {1: (0, 20), 2: (0, 99), 3: (-50, 500)}

REVERSE_WORDS_WORDINGS = ("Reverse the order of these words: {words}.",
                          "Write these words in reverse order: {words}.",
                          "Here are some words: {words}. List them from last to first.")
REVERSE_LETTERS_WORDINGS = ("Spell the word '{word}' backwards.",
                            "Write the letters of '{word}' in reverse order.",
                            "What is '{word}' spelled backwards?")
COUNT_LETTERS_WORDINGS = ("How many times does the letter '{letter}' appear in the word '{word}'?",
                          "How many {letter}'s are in the word '{word}'?",
                          "Count how many times the letter '{letter}' occurs in '{word}'.")
SORT_WORDINGS = ("Sort these numbers from smallest to largest: {numbers}.",
                 "Put these numbers in ascending order: {numbers}.",
                 "Arrange the following numbers in increasing order: {numbers}.")


def made_up_word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(syllables))


def real_or_made_up_word(rng: random.Random, level: int) -> str:
    """A common word of the level's length, or (half the time) a made-up one."""
    if rng.random() < 0.5:
        return rng.choice(WORDS_BY_LEVEL[level])
    return made_up_word(rng, SYLLABLES_BY_LEVEL[level])


def draw_reverse_words(rng: random.Random, level: int) -> Question:
    fewest, most = WORD_COUNT_BY_LEVEL[level]
    words = rng.sample(SHORT_WORDS + MEDIUM_WORDS, rng.randint(fewest, most))
    text = rng.choice(REVERSE_WORDS_WORDINGS).format(words=" ".join(words))
    # The key ignores the order: "cat dog" and "dog cat" are each other's answers, so they must
    # be in the same split.
    return Question(text=text, answer=" ".join(reversed(words)), key=" ".join(sorted(words)),
                    meta={"words": words})


def draw_reverse_letters(rng: random.Random, level: int) -> Question:
    word = real_or_made_up_word(rng, level)
    text = rng.choice(REVERSE_LETTERS_WORDINGS).format(word=word)
    # A word and its reverse ("stressed", "desserts") are each other's answers: one key.
    return Question(text=text, answer=word[::-1], key=min(word, word[::-1]), meta={"word": word})


# The counts asked for at each level, drawn uniformly. Drawing the *answer* first matters: with
# a letter picked from the word, most answers are 1 (most letters occur once), and a model that
# always says "1" would score over half - reinforcement learning finds that shortcut at once.
COUNTS_BY_LEVEL = {1: (0, 1, 2), 2: (0, 1, 2, 3), 3: (1, 2, 3, 4)}


def _word_and_letter(rng: random.Random, level: int) -> tuple[str, str]:
    """A word and a letter that occurs in it a count drawn uniformly from the level's counts."""
    target = rng.choice(COUNTS_BY_LEVEL[level])
    word = real_or_made_up_word(rng, level)
    for _ in range(500):
        if target == 0:
            return word, rng.choice([c for c in string.ascii_lowercase if c not in word])
        letters = sorted(c for c in set(word) if word.count(c) == target)
        if letters:
            return word, rng.choice(letters)
        word = real_or_made_up_word(rng, level)
    # no word with that many of one letter came up: the letter this word has most of
    return word, max(sorted(set(word)), key=word.count)


def draw_count_letters(rng: random.Random, level: int) -> Question:
    word, letter = _word_and_letter(rng, level)
    text = rng.choice(COUNT_LETTERS_WORDINGS).format(letter=letter, word=word)
    return Question(text=text, answer=str(word.count(letter)), key=f"{word}|{letter}",
                    meta={"word": word, "letter": letter})


def draw_sort_numbers(rng: random.Random, level: int) -> Question:
    fewest, most = SORT_COUNT_BY_LEVEL[level]
    low, high = SORT_RANGE_BY_LEVEL[level]
    numbers = rng.sample(range(low, high + 1), rng.randint(fewest, most))
    while numbers == sorted(numbers):  # a question that is already its own answer asks nothing
        rng.shuffle(numbers)
    text = rng.choice(SORT_WORDINGS).format(numbers=", ".join(map(str, numbers)))
    ordered = ", ".join(map(str, sorted(numbers)))
    # The key is the sorted set: the same numbers shuffled differently are the same question.
    return Question(text=text, answer=ordered, key=ordered, meta={"numbers": numbers})


REVERSE_WORDS = TaskFamily("reverse_words", "list", "reverse the order of 2-5 words",
                           draw_reverse_words)
REVERSE_LETTERS = TaskFamily("reverse_letters", "text", "spell one word backwards",
                             draw_reverse_letters)
COUNT_LETTERS = TaskFamily("count_letters", "number", "count one letter in a word",
                           draw_count_letters)
SORT_NUMBERS = TaskFamily("sort_numbers", "list", "sort 3-7 whole numbers ascending",
                          draw_sort_numbers)
