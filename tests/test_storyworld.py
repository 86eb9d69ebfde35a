"""storyworld: deterministic, grammatical stories whose text agrees with their ground truth,
and the entity-tracking probe made from them."""

import json
import re
from collections import Counter

import pytest

from onceupon.config import PAPER_PROMPT
from onceupon.corpus import storyworld
from onceupon.corpus.storyworld import generate, generate_story, story_seed
from onceupon.corpus.storyworld_probe import (
    PROBE_MAX_EVENTS,
    PROBE_MIN_EVENTS,
    entity_tracking_probe,
    write_probe,
)
from onceupon.files import read_jsonl


@pytest.fixture(scope="module")
def stories():
    return generate(300, seed=7)


# --------------------------------------------------------------------------- an independent replay
def replay(initial_holders: dict, events: list) -> list[dict]:
    """Apply events to a plain dict of holder -> set of objects (written here, independently of
    storyworld.apply_event); returns the holders after each event."""
    holders = {h: set(objs) for h, objs in initial_holders.items()}
    out = []
    for e in events:
        if e.kind == "find":
            assert all(e.obj not in objs for objs in holders.values()), "a found object already existed"
            holders[e.actor].add(e.obj)
        elif e.kind in ("put", "take", "move", "give"):
            assert e.obj in holders[e.source], f"{e.kind}: {e.obj} is not in {e.source}"
            holders[e.source].remove(e.obj)
            holders[e.target].add(e.obj)
        out.append({h: set(objs) for h, objs in holders.items()})
    return out


def nouns(listing: str) -> set:
    """'a shiny key, the coin and an apple' -> {'key', 'coin', 'apple'}; 'nothing' -> set()."""
    if listing == "nothing":
        return set()
    parts = re.split(r", | and ", listing)
    return {p.split()[-1] for p in parts}


# Every sentence shape that claims what a holder holds; (regex, holder group, listing group).
CLAIMS = [
    (r"^Now (the [a-z ]+?) contains (.+)\.$", 1, 2),
    (r"^(The [a-z ]+?) now held (.+)\.$", 1, 2),
    (r"^(The [a-z ]+?) held (.+)\.$", 1, 2),
    (r"^In (the [a-z ]+?) there (?:was|were) (.+)\.$", 1, 2),
    (r"^Inside (the [a-z ]+?) (?:was|were) (.+)\.$", 1, 2),
    (r"^Now ([A-Z][a-z]+) had (.+)\.$", 1, 2),
    (r"^([A-Z][a-z]+) (?:had|was holding) (an? [a-z ,]+)\.$", 1, 2),
]
EMPTY = [r"^(The [a-z ]+?) was empty(?: now)?\.$", r"^There was nothing (?:left )?in (the [a-z ]+?)\.$"]
PLACED = [r"^The ([a-z]+) was in (the [a-z ]+?) now\.$", r"^From that day on, the ([a-z]+) stayed in (the [a-z ]+?)\.$"]


def test_same_seed_same_stories_and_different_seeds_differ():
    a, b = generate(40, seed=3), generate(40, seed=3)
    assert [s.text for s in a] == [s.text for s in b]
    assert [s.events for s in a] == [s.events for s in b]
    assert [s.states for s in a] == [s.states for s in b]
    other = generate(40, seed=4)
    assert sum(x.text == y.text for x, y in zip(a, other)) == 0
    assert len({s.text for s in a}) == 40  # no repeats within a corpus
    # The probe stream never reuses a training story seed.
    assert story_seed(3, 0, "probe") != story_seed(3, 0, "train")
    assert generate_story(story_seed(3, 0, "probe")).text != a[0].text


def test_generator_leaves_the_global_rng_alone():
    import random

    random.seed(123)
    expected = random.random()
    random.seed(123)
    generate(5, seed=1)
    assert random.random() == expected


def test_states_are_the_replayed_events(stories):
    for story in stories:
        assert story.events, "every story changes the world at least once"
        replayed = replay(story.initial.holders, story.events)
        assert len(story.states) == len(story.events)
        for state, expected in zip(story.states, replayed):
            assert {h: set(o) for h, o in state.holders.items()} == expected
            # Every object is in exactly one place.
            held = [o for objs in state.holders.values() for o in objs]
            assert len(held) == len(set(held))
        # Characters handle containers only at home, and give things only to someone beside them.
        for i, e in enumerate(story.events):
            before = story.state_before(i)
            if e.kind in ("put", "take", "move"):
                assert before.places[e.actor] == "home"
            if e.kind == "give":
                assert before.places[e.actor] == before.places[e.target]
            if e.kind == "find":
                assert before.places[e.actor] != "home"


def test_every_sentence_that_says_where_things_are_agrees_with_the_state(stories):
    checked = Counter()
    for story in stories:
        replayed = [{h: set(o) for h, o in story.initial.holders.items()}] + replay(story.initial.holders, story.events)
        events_told = 0
        asked = None
        for sentence in story.sentences:
            text = sentence.text
            if sentence.kind == "event":
                events_told += 1
                assert sentence.event == events_told - 1
            holders = replayed[events_told]  # the state after the events told so far
            for pattern, hg, lg in CLAIMS:
                m = re.match(pattern, text)
                if m and (m.group(hg) in holders or m.group(hg).lower() in holders):
                    holder = m.group(hg) if m.group(hg) in holders else m.group(hg).lower()
                    assert nouns(m.group(lg)) == holders[holder], (text, holders[holder])
                    checked["contents"] += 1
            for pattern in EMPTY:
                m = re.match(pattern, text)
                if m:
                    assert holders[m.group(1).lower()] == set(), text
                    checked["empty"] += 1
            for pattern in PLACED:
                m = re.match(pattern, text)
                if m:
                    assert m.group(1) in holders[m.group(2)], text
                    checked["placed"] += 1
            # Dialogue: "Where is the key?" asked Tom. / "It is in the box," said Mia.
            m = re.search(r"[Ww]here (?:is|did) the ([a-z]+)", text)
            if m:
                asked = m.group(1)
                continue
            answer = [
                (r'^"It is in (the [a-z ]+?)(?: now)?," said [A-Z][a-z]+\.$', None),
                (r"^Then [A-Z][a-z]+ remembered that it was in (the [a-z ]+?)\.$", None),
                (r'^"([A-Z][a-z]+) has it," said [A-Z][a-z]+\.$', None),
                (r'^"I have it," said ([A-Z][a-z]+)\.$', None),
                (r"^Then [A-Z][a-z]+ remembered that ([A-Z][a-z]+) had it\.$", None),
                (r"^Then ([A-Z][a-z]+) remembered that (?:she|he) was holding it\.$", None),
            ]
            for pattern, _ in answer:
                m = re.match(pattern, text)
                if m:
                    assert asked in holders[m.group(1)], (text, asked)
                    checked["answers"] += 1
        assert events_told == len(story.events)
    # The patterns really matched many sentences (a test that checks nothing would pass too).
    assert checked["contents"] > 500 and checked["empty"] > 50 and checked["placed"] > 50, checked
    assert checked["answers"] > 50, checked


def test_event_sentences_name_what_moves_and_where(stories):
    verbs = {
        "put": r"\b(put|placed|dropped|hid|tucked|slipped)\b",
        "take": r"\b(took|pulled|picked up|lifted|got)\b",
        "move": r"\b(moved|carried|took)\b",
        "give": r"\b(gave|handed|shared)\b",
        "go": r"\b(went|walked|ran|visit|set off|skipped|returned|hurried)\b",
        "find": r"\b(found|spotted|picked it up)\b",
    }
    for story in stories:
        told = [s.text for s in story.sentences if s.kind == "event"]
        for e, text in zip(story.events, told):
            assert re.search(verbs[e.kind], text), (e, text)
            if e.kind in ("put", "take", "move", "give"):
                assert f"the {e.obj}" in text
            if e.kind in ("take", "move"):
                assert e.source in text
            if e.kind in ("put", "move", "give"):
                assert e.target in text
            if e.kind == "find":
                assert re.search(rf"\ban? [a-z]+ {e.obj}\b", text), text
            if e.kind == "go" and e.target != "home":
                assert e.target in text


def test_sentences_look_grammatical(stories):
    for story in stories:
        assert story.text == " ".join(s.text for s in story.sentences)
        for s in story.sentences:
            t = s.text
            assert re.match(r'^"?[A-Z]', t), t
            assert re.search(r'[.!?]"?$', t), t
            assert not re.search(r"[{}\[\]]", t), t  # no unfilled template slots
            assert "  " not in t and " ." not in t and " ," not in t, t
            assert not re.search(r"\ba [aeiou]", t) and not re.search(r"\ban [^aeiou\s]", t), t
            # Quotes come in pairs and dialogue ends inside its quote mark.
            assert t.count('"') % 2 == 0, t


def test_openers_teach_the_papers_prompt(stories):
    texts = [s.text for s in stories]
    paper = sum(t.startswith(PAPER_PROMPT + " ") for t in texts)
    fairy = sum(t.startswith("Once upon a time, in a faraway land, ") for t in texts)
    assert paper >= 15 and fairy >= 15, (paper, fairy)
    assert len({s.sentences[0].text.split(" there")[0] for s in stories}) >= 6  # varied openers


def test_variety(stories):
    kinds = Counter(e.kind for s in stories for e in s.events)
    assert set(kinds) == {"put", "take", "move", "give", "go", "find"}, kinds
    words = Counter(w.strip('.,!?"').lower() for s in stories for w in s.text.split())
    assert len(words) > 400  # a vocabulary, not a handful of templates
    assert len({s.text.split(". ")[2] for s in stories if s.text.count(". ") > 3}) > 100


# --------------------------------------------------------------------------- the probe
@pytest.fixture(scope="module")
def probe():
    return entity_tracking_probe(120, seed=99)


def test_probe_format_and_balance(probe):
    assert len(probe) == 120
    assert Counter(item["numops"] for item in probe) == {k: 20 for k in range(6)}
    for item in probe:
        assert item["input_prefix"].endswith(" contains ")
        assert not item["input_prefix"].endswith("  ")
        assert len(item["options"]) == 5 and len(set(item["options"])) == 5
        for option in item["options"]:
            assert option == "nothing" or re.fullmatch(r"the [a-z]+((, the [a-z]+)* and the [a-z]+)?", option), option


def test_probe_answers_are_the_generators_states(probe):
    for item in probe:
        story = generate_story(item["story_seed"], PROBE_MIN_EVENTS, PROBE_MAX_EVENTS)
        assert ":probe:" in item["story_seed"]
        n = item["n_events"]
        holders = ([{h: set(o) for h, o in story.initial.holders.items()}] + replay(story.initial.holders, story.events))[n]
        container = item["container"]
        answer = holders[container]
        assert nouns(item["options"][0]) == answer
        for wrong in item["options"][1:]:
            assert nouns(wrong) != answer
        assert item["numops"] == sum(1 for e in story.events[:n] if container in (e.source, e.target))
        # The prefix tells the events but never states the answer outright.
        body = item["input_prefix"][: -len(f"Now {container} contains ")]
        assert "contains" not in body and "now held" not in body and '"' not in body
        assert body.count(". ") >= 3


def test_probe_is_deterministic_and_written_as_jsonl(tmp_path, probe):
    assert entity_tracking_probe(120, seed=99) == probe
    assert entity_tracking_probe(30, seed=98) != probe[:30]
    path = write_probe(tmp_path / "storyworld" / "entity_tracking.jsonl", 12, seed=99)
    assert list(read_jsonl(path)) == probe[:12]
    assert json.loads(path.read_text().splitlines()[0])["options"][0] == probe[0]["options"][0]


def test_bad_event_range_is_a_user_error():
    from onceupon.errors import UserError

    with pytest.raises(UserError, match="min_events"):
        storyworld.generate(1, 0, min_events=5, max_events=2)
