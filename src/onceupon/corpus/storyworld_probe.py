"""An offline entity-tracking probe in the BabyLM format, made from storyworld stories.

Each item is the beginning of a storyworld story followed by a query about one container::

    {"input_prefix": "... Tom moved the key from the red box to the basket. Now the red box contains ",
     "options": ["the coin", "the key and the coin", "nothing", "the key", "the coin and the apple"],
     "numops": 1, ...}

as in BabyLM's ``entity_tracking`` files: ``options[0]`` is correct, the other four are wrong,
and a model is scored by the summed log-probability of each option after the prefix.
``numops`` is the number of events in the prefix that changed the queried container's
contents (0..5), the grouping the BabyLM task averages over.

What the prefix keeps: the opener and introduction (which say what every container holds at
the start), the event sentences and feelings. It drops the sentences that state contents after
an event, dialogue, and the ending, so the answer must be tracked through the events rather
than copied from a sentence that states it.

Held out from training: probe stories come from the ``probe`` stream of seeds
(``storyworld:probe:SEED:i``), training corpora from the ``train`` stream
(``storyworld:train:SEED:i``); the two never share a story seed, whatever seeds are chosen.

Distractors are other plausible contents, in this order of preference: what the container
held earlier in the story, what the other containers hold now, the answer with one object
added or removed, "nothing", then other sets of the story's objects.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from onceupon.corpus.storyworld import Story, generate_story, story_seed
from onceupon.files import atomic_write_text

MAX_NUMOPS = 5
N_OPTIONS = 5
#: The probe's stories run longer than training ones so that a container can be changed up
#: to five times.
PROBE_MIN_EVENTS, PROBE_MAX_EVENTS = 6, 14
PREFIX_KINDS = {"opener", "intro", "event", "feeling"}
QUERY = "Now {c} contains "


def story_prefix(story: Story, n_events: int) -> str:
    """The story's text up to (not including) event ``n_events``, without state sentences,
    dialogue or ending."""
    kept = []
    for sentence in story.sentences:
        if sentence.kind == "ending" or (sentence.kind == "event" and sentence.event >= n_events):
            break
        if sentence.kind in PREFIX_KINDS:
            kept.append(sentence.text)
    return " ".join(kept)


def numops(story: Story, container: str, n_events: int) -> int:
    """Events among the first ``n_events`` that changed ``container``."""
    return sum(1 for e in story.events[:n_events] if e.touches(container))


def _introduced(story: Story, n_events: int) -> list[str]:
    """Objects the reader has met by event ``n_events`` (initial ones and ones found so far)."""
    state = story.state_before(n_events)
    return [o for o in story.objects if state.holder_of(o) is not None]


def distractors(story: Story, container: str, n_events: int, rng: random.Random) -> list[frozenset[str]]:
    """Four wrong answers for ``container`` after ``n_events`` events, most plausible first."""
    answer = frozenset(story.state_before(n_events).holders[container])
    known = _introduced(story, n_events)
    earlier = [frozenset(story.state_before(i).holders[container]) for i in range(n_events)]
    others = [frozenset(story.state_before(n_events).holders[c]) for c in story.containers if c != container]
    plus_minus = [answer | {o} for o in known if o not in answer] + [answer - {o} for o in answer]
    groups: list[list[frozenset[str]]] = [earlier[::-1], others, plus_minus, [frozenset()]]
    pool = known or list(story.objects)
    random_sets = []
    for _ in range(60):
        k = rng.choice([1, 1, 2, 2, 3])
        random_sets.append(frozenset(rng.sample(pool, min(k, len(pool)))))
    groups.append(random_sets)
    chosen: list[frozenset[str]] = []
    for group in groups:
        group = list(dict.fromkeys(group))  # distinct, first-seen order
        rng.shuffle(group)
        for option in group:
            if option != answer and option not in chosen and len(chosen) < N_OPTIONS - 1:
                chosen.append(option)
    return chosen


def _item(story: Story, container: str, n_events: int, rng: random.Random, index: int) -> dict | None:
    wrong = distractors(story, container, n_events, rng)
    if len(wrong) < N_OPTIONS - 1:
        return None
    answer = story.state_before(n_events).holders[container]
    prefix = story_prefix(story, n_events) + " " + QUERY.format(c=container)
    return {
        "input_prefix": prefix,
        "options": [story.contents_phrase(answer)] + [story.contents_phrase(w) for w in wrong],
        "numops": numops(story, container, n_events),
        "id": f"storyworld_et_{index}",
        "story_seed": story.seed,
        "container": container,
        "n_events": n_events,
    }


def entity_tracking_probe(n_items: int, seed: int = 10_000) -> list[dict]:
    """``n_items`` probe items, numops cycling 0, 1, ..., 5 so every group is the same size.

    Deterministic in ``seed``; stories come from the held-out ``probe`` seed stream.
    """
    rng = random.Random(f"storyworld-probe:{seed}")
    items: list[dict] = []
    story_index = 0
    while len(items) < n_items:
        wanted = len(items) % (MAX_NUMOPS + 1)
        story = generate_story(story_seed(seed, story_index, "probe"), PROBE_MIN_EVENTS, PROBE_MAX_EVENTS)
        story_index += 1
        # Every (cut point, container) whose container the prefix changed exactly `wanted`
        # times; events on other containers may come after the last change, as in BabyLM.
        candidates = [
            (n, c)
            for c in story.containers
            for n in range(len(story.events) + 1)
            if numops(story, c, n) == wanted
        ]
        if not candidates:
            continue
        n_events, container = rng.choice(candidates)
        item = _item(story, container, n_events, rng, len(items))
        if item is not None:
            items.append(item)
    return items


def write_probe(path: str | Path, n_items: int, seed: int = 10_000) -> Path:
    """Write the probe as a JSONL file (atomically), like BabyLM's ``entity_tracking/*.jsonl``."""
    path = Path(path)
    lines = [json.dumps(item, ensure_ascii=False) for item in entity_tracking_probe(n_items, seed)]
    atomic_write_text(path, "\n".join(lines) + ("\n" if lines else ""))
    return path
