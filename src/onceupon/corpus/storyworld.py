"""storyworld: simple stories from a tiny world whose state the generator always knows.

A story has one to three characters (children, animals, fairy-tale folk) who live in a home
with a few containers (a box, a basket, a drawer, ...). Objects start in the containers or in
the characters' hands; then a handful of *events* change the world: a character puts an object
into a container, takes one out, moves one from container to container, gives one to another
character, walks to a place, or finds something there. Each event is told with one of many
sentence templates and may be followed by a feeling, a line of dialogue, or a sentence that
states where things are now. Openers and endings come in many shapes; some open like the
paper's story prompt ("Let me tell you a long, magical tale. Once upon a time, in a faraway
land, ..."), so a student pretrained on storyworld learns to continue that prompt.

Because the generator applies every event to an explicit :class:`State`, each :class:`Story`
carries the ground truth: the initial state, the event list, and the state after each event.
``storyworld_probe`` turns that into an entity-tracking probe in the BabyLM format.

Determinism: a story depends only on its *story seed*, a string such as
``"storyworld:train:0:17"`` (stream, corpus seed, index), fed to its own
``random.Random``; the global RNG is never touched. Training corpora use the ``train`` stream
and the probe uses the ``probe`` stream, so probe stories never share a seed with training
stories.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from onceupon.errors import UserError
from onceupon.words import count_words

# --------------------------------------------------------------------------- vocabulary
GIRLS = ["Mia", "Lily", "Anna", "Sara", "Emma", "Zoe", "Lucy", "Rosa", "Nina", "Ella", "Maya", "Ava",
         "Grace", "Ruby", "Amy", "Hannah", "Julia", "Leah", "Ivy", "Clara"]
BOYS = ["Tom", "Ben", "Max", "Leo", "Sam", "Jack", "Tim", "Finn", "Omar", "Noah", "Luke", "Adam",
        "Dan", "Eli", "Hugo", "Kai", "Oscar", "Peter", "Theo", "Felix"]
PET_NAMES = ["Pip", "Bruno", "Coco", "Daisy", "Fluffy", "Hazel", "Jasper", "Nutmeg", "Rusty", "Sunny",
             "Toby", "Willow", "Bella", "Milo", "Ollie", "Poppy", "Rosie", "Teddy", "Ziggy", "Biscuit"]
#: (role noun, pronoun; None: either)
HUMAN_ROLES = [("girl", "she"), ("boy", "he"), ("princess", "she"), ("prince", "he"), ("queen", "she"),
               ("king", "he"), ("farmer", None), ("baker", None), ("knight", None), ("witch", "she"),
               ("wizard", "he"), ("fairy", "she")]
ANIMALS = ["fox", "rabbit", "bear", "cat", "dog", "mouse", "owl", "duck", "frog", "squirrel",
           "hedgehog", "pig", "lamb", "turtle", "dragon", "goose", "kitten", "puppy"]
ROLE_ADJECTIVES = ["little", "young", "kind", "clever", "brave", "curious", "gentle", "happy", "small",
                   "old", "friendly", "shy", "funny", "wise"]
TRAITS = [
    "{A} was kind and curious.", "{A} loved to play outside.", "{A} liked to collect little things.",
    "{A} was always very careful with {poss} things.", "{A} was gentle and kind to everyone.",
    "Everyone said that {a} was very clever.", "{A} liked to sing while {pron} worked.",
    "{A} was a little shy, but very brave.", "{A} loved stories and surprises.",
]

HOMES = ["cottage", "house", "cabin", "hut", "farmhouse", "treehouse", "little house", "castle"]
PLACES = ["the forest", "the river", "the market", "the beach", "the big hill", "the garden",
          "the meadow", "the lake", "the farm", "the park", "the old bridge", "the village square",
          "the bakery", "the pond", "the orchard", "the mountain", "the library", "the school"]

CONTAINERS = ["box", "basket", "bag", "drawer", "jar", "chest", "bucket", "bowl", "sack", "cupboard",
              "tin", "pot", "crate", "trunk", "case"]
CONTAINER_ADJECTIVES = ["big", "small", "old", "red", "blue", "green", "yellow", "brown", "little",
                        "pretty", "white", "new"]
OBJECTS = ["key", "coin", "ball", "apple", "shell", "stone", "ring", "feather", "button", "spoon",
           "cookie", "flower", "book", "crayon", "marble", "acorn", "carrot", "candle", "bell", "crown",
           "pearl", "sock", "mitten", "whistle", "map", "letter", "cup", "brush", "comb", "banana",
           "pear", "plum", "egg", "leaf", "hat", "scarf", "toy", "kite", "doll", "pencil", "glove", "cake"]
OBJECT_ADJECTIVES = ["shiny", "little", "red", "blue", "green", "golden", "silver", "tiny", "old",
                     "round", "soft", "pretty", "yellow", "purple", "magic", "small", "big", "new",
                     "orange", "bright"]
FEELINGS = ["happy", "glad", "proud", "excited", "pleased", "cheerful"]

VOWEL_SOUND = tuple("aeiou")


def article(phrase: str) -> str:
    """``"a"`` or ``"an"`` for a phrase (by its first letter: the vocabulary has no traps)."""
    return "an" if phrase[0].lower() in VOWEL_SOUND else "a"


def join_list(items: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def capitalize(sentence: str) -> str:
    """Upper-case the first letter (after an opening quote), leave the rest alone."""
    if sentence[:1].isalpha():
        return sentence[0].upper() + sentence[1:]
    for i, ch in enumerate(sentence):
        if ch.isalpha():
            return sentence[:i] + ch.upper() + sentence[i + 1:]
    return sentence


# --------------------------------------------------------------------------- data structures
@dataclass(frozen=True)
class Character:
    """A character: ``name`` (how the text refers to them), ``pronoun`` (she/he), and a
    ``description`` used when they are introduced (``"a clever fox named Pip"``)."""

    name: str
    pronoun: str
    description: str
    animal: bool


@dataclass(frozen=True)
class Event:
    """One change to the world.

    ``kind`` is ``put`` (actor's object into container ``target``), ``take`` (object out of
    container ``source`` into the actor's hands), ``move`` (object from container ``source`` to
    container ``target``), ``give`` (object from the actor to character ``target``), ``go``
    (actor to place ``target``) or ``find`` (a new object, found at the actor's place, goes to
    the actor). Holders are container labels (``"the red box"``) or character names; objects
    are nouns (``"key"``).
    """

    kind: str
    actor: str
    obj: str | None = None
    source: str | None = None
    target: str | None = None

    def touches(self, holder: str) -> bool:
        """Whether this event changes what ``holder`` holds."""
        return self.obj is not None and holder in (self.source, self.target)


@dataclass(frozen=True)
class State:
    """What is where: ``holders`` maps every container label and character name to the tuple
    of objects it holds (in the order the story introduced them); ``places`` maps each
    character to the place they are at (the home is ``"home"``)."""

    holders: dict[str, tuple[str, ...]]
    places: dict[str, str]

    def holder_of(self, obj: str) -> str | None:
        for holder, objs in self.holders.items():
            if obj in objs:
                return holder
        return None


@dataclass(frozen=True)
class Sentence:
    """A sentence of the story. ``kind`` is one of opener, intro, event, feeling, dialogue,
    state (says where things are now), ending. ``event`` is the index of the event it tells or
    follows (-1 before the first event)."""

    text: str
    kind: str
    event: int


@dataclass
class Story:
    """A generated story with its ground truth.

    ``states[i]`` is the state after ``events[i]``; ``initial`` is the state the intro
    describes. ``objects`` lists every object noun in the order the story introduces it (the
    order used whenever contents are listed). ``containers`` are the container labels.
    """

    seed: str
    sentences: list[Sentence]
    characters: list[Character]
    home: str
    containers: list[str]
    objects: list[str]
    initial: State
    events: list[Event]
    states: list[State]

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.sentences)

    @property
    def final(self) -> State:
        return self.states[-1] if self.states else self.initial

    def state_before(self, event_index: int) -> State:
        return self.states[event_index - 1] if event_index > 0 else self.initial

    def contents_phrase(self, objs: tuple[str, ...] | list[str] | frozenset[str]) -> str:
        """``"the key and the coin"`` (story order) or ``"nothing"``."""
        ordered = [o for o in self.objects if o in objs]
        return join_list([f"the {o}" for o in ordered]) if ordered else "nothing"


def apply_event(state: State, event: Event) -> State:
    """The state after ``event``; raises ValueError if the event is impossible in ``state``.

    This is the one definition of what events do; tests replay stories through it.
    """
    holders = dict(state.holders)
    places = dict(state.places)
    if event.kind == "go":
        places[event.actor] = event.target
    elif event.kind == "find":
        if state.holder_of(event.obj) is not None:
            raise ValueError(f"{event.obj} already exists")
        holders[event.actor] = holders[event.actor] + (event.obj,)
    else:
        if event.obj not in holders.get(event.source, ()):
            raise ValueError(f"{event.obj} is not held by {event.source}")
        holders[event.source] = tuple(o for o in holders[event.source] if o != event.obj)
        holders[event.target] = holders[event.target] + (event.obj,)
    return State(holders, places)


# --------------------------------------------------------------------------- templates
# Slots: {A}/{a} actor (sentence-initial / inside), {o} "the key", {c} / {c2} containers,
# {r} recipient, {p} place, {new} "a shiny key" (first mention), {poss} his/her, {home}.
PUT = [
    "{A} put {o} into {c}.", "{A} carefully placed {o} in {c}.", "{A} dropped {o} into {c}.",
    "Then {a} put {o} in {c}.", "{A} hid {o} inside {c}.", "{A} tucked {o} away in {c}.",
    "With a smile, {a} put {o} into {c}.", "{A} opened {c} and put {o} inside.",
    "After a while, {a} put {o} back in {c}.", "Quietly, {a} slipped {o} into {c}.",
]
TAKE = [
    "{A} took {o} out of {c}.", "{A} reached into {c} and took out {o}.", "{A} opened {c} and took {o}.",
    "Then {a} pulled {o} out of {c}.", "{A} picked up {o} from {c}.", "Slowly, {a} lifted {o} out of {c}.",
    "{A} looked inside {c} and took {o}.", "{A} got {o} out of {c}.",
]
MOVE = [
    "{A} moved {o} from {c} to {c2}.", "{A} took {o} out of {c} and put it into {c2}.",
    "{A} carried {o} from {c} to {c2}.", "Then {a} moved {o} from {c} into {c2}.",
    "{A} took {o} from {c} and placed it in {c2}.", "Later, {a} moved {o} out of {c} and into {c2}.",
    "{A} decided that {o} belonged in {c2}, so {a} moved it there from {c}.",
]
GIVE = [
    "{A} gave {o} to {r}.", "{A} handed {o} to {r}.", "{A} gave {r} {o} as a present.",
    "Then {a} gave {o} to {r}.", "{A} smiled and handed {o} to {r}.", "{A} shared {o} with {r} and let {r_obj} keep it.",
]
GO = [
    "{A} went to {p}.", "{A} walked to {p}.", "Then {a} ran to {p}.", "{A} decided to visit {p}.",
    "One morning, {a} set off for {p}.", "{A} skipped all the way to {p}.", "After lunch, {a} went to {p}.",
]
GO_HOME = [
    "{A} went back home.", "{A} walked back to the {home}.", "Then {a} ran home.",
    "When the sun went down, {a} returned to the {home}.", "{A} hurried back to the {home}.",
]
FIND = [
    "At {p}, {a} found {new}.", "{A} saw {new} on the ground and picked it up.",
    "{A} looked around and found {new}.", "Under a bush, {a} found {new}.",
    "Suddenly, {a} spotted {new} and took it.", "{A} was lucky and found {new}.",
]
FEELING = [
    "{A} felt {feeling}.", "{A} was very {feeling}.", "{A} smiled.", "{A} laughed.",
    "{A} was {feeling} about it.", "It was a lovely day.", "The sun was shining.",
    "{A} hummed a little song.", "A bird sang in a tree nearby.", "The sky was blue and the air was warm.",
    "It was a quiet afternoon.", "{A} took a deep breath and smiled.", "{A} clapped {poss} hands.",
    "A soft wind was blowing.", "{A} felt a little tired, but {pron} kept going.",
]
DIALOGUE = {
    "put": ['"Now it is safe," said {name}.', '"There, that is a good place for it," said {name}.',
            '"I will keep it here," {name} said.'],
    "take": ['"I need this," said {name}.', '"Here you are!" said {name}.', '"Found it!" {name} said.'],
    "move": ['"This is a better place," said {name}.', '"Much better," said {name}.'],
    "give": ['"Thank you so much!" said {rname}.', '"This is for you," said {name}.',
             '"What a lovely gift!" said {rname}.'],
    "go": ['"What a beautiful place!" said {name}.', '"I love it here," said {name}.'],
    "find": ['"Look what I found!" said {name}.', '"How wonderful!" {name} said.', '"Wow!" said {name}.'],
}
# State sentences say what a holder holds *now*; the probe's query reuses the first form.
STATE_CONTAINS = ["Now {c} contains {list}.", "{C} now held {list}.", "Now {c} contains {list}."]
STATE_EMPTY = ["Now {c} contains nothing.", "{C} was empty now.", "There was nothing left in {c}."]
STATE_OBJECT = ["{O} was in {c} now."]
STATE_PERSON = ["Now {name} had {list}."]
OPENERS = [
    "Let me tell you a long, magical tale. Once upon a time, in a faraway land, there lived {desc}.",
    "Once upon a time, in a faraway land, there lived {desc}.",
    "Once upon a time, there was {desc}.",
    "Long ago, in a small village, there lived {desc}.",
    "There once was {desc}.",
    "In a faraway land, there lived {desc}.",
    "This is a story about {desc}.",
    "Once upon a time, in a land far away, there lived {desc}.",
    "Let me tell you a story about {desc}.",
]
ENDINGS_ALWAYS = [
    "The end.", "It had been a wonderful day.", "That night, {a} went to sleep with a big smile.",
    "{A} lived happily ever after.", "It was the best day ever.", "And that is the end of the story.",
    "{A} was happy, because everything was in its place.", "What a day it had been!",
    "{A} would remember this day for a long time.", "And so the day came to a happy end.",
]
ENDINGS_MANY = ["And they all lived happily ever after.", "They were the best of friends forever."]


# --------------------------------------------------------------------------- generator
class _Teller:
    """Builds one story: picks the cast and world, runs events, writes sentences."""

    def __init__(self, seed: str, min_events: int, max_events: int):
        self.seed = seed
        self.rng = random.Random(seed)
        self.min_events, self.max_events = min_events, max_events
        self.sentences: list[Sentence] = []
        self.last_subject: str | None = None
        self.event_index = -1

    # -- referring to characters
    def ref(self, name: str) -> str:
        """Name, or pronoun when the previous sentence was about the same character and no
        other character of that pronoun is in the story (so the pronoun is unambiguous)."""
        if self.last_subject == name and name in self.unambiguous and self.rng.random() < 0.6:
            return self.by_name[name].pronoun
        return name

    def say(self, text: str, kind: str) -> None:
        self.sentences.append(Sentence(capitalize(text), kind, self.event_index))

    def fill(self, template: str, actor: str | None = None, **slots: str) -> str:
        if actor is not None:
            a = self.ref(actor)
            ch = self.by_name[actor]
            slots.setdefault("a", a)
            slots.setdefault("A", capitalize(a))
            slots.setdefault("poss", "her" if ch.pronoun == "she" else "his")
            slots.setdefault("name", actor)
            slots.setdefault("pron", ch.pronoun)
        slots.setdefault("home", self.home)
        return template.format(**slots)

    # -- cast and world
    def cast(self) -> None:
        rng = self.rng
        n = rng.choices([1, 2, 3], weights=[3, 5, 2])[0]
        used: set[str] = set()
        self.characters = []
        for _ in range(n):
            if rng.random() < 0.4:
                animal = rng.choice(ANIMALS)
                pronoun = rng.choice(["she", "he"])
                pool = PET_NAMES
                role = animal
            else:
                role, pronoun = rng.choice(HUMAN_ROLES)
                pronoun = pronoun or rng.choice(["she", "he"])
                pool = GIRLS if pronoun == "she" else BOYS
            name = rng.choice([x for x in pool if x not in used])
            used.add(name)
            adjective = rng.choice(ROLE_ADJECTIVES)
            phrase = f"{adjective} {role}"
            self.characters.append(Character(name, pronoun, f"{article(phrase)} {phrase} named {name}", pool is PET_NAMES))
        self.by_name = {c.name: c for c in self.characters}
        pronouns = [c.pronoun for c in self.characters]
        self.unambiguous = {c.name for c in self.characters if pronouns.count(c.pronoun) == 1}

        self.home = rng.choice(HOMES)
        nouns = rng.sample(CONTAINERS, rng.choice([2, 2, 3, 3, 4]))
        self.containers = []
        for noun in nouns:
            adjective = rng.choice(CONTAINER_ADJECTIVES) if rng.random() < 0.6 else None
            self.containers.append(f"the {adjective} {noun}" if adjective else f"the {noun}")
        self.places = rng.sample(PLACES, 4)
        self.spare_objects = rng.sample(OBJECTS, len(OBJECTS))  # draw order for new objects
        self.objects: list[str] = []
        self.object_adj: dict[str, str] = {}

    def new_object(self) -> str:
        noun = self.spare_objects.pop()
        self.objects.append(noun)
        self.object_adj[noun] = self.rng.choice(OBJECT_ADJECTIVES)
        return noun

    def first_mention(self, noun: str) -> str:
        phrase = f"{self.object_adj[noun]} {noun}"
        return f"{article(phrase)} {phrase}"

    # -- opening: characters, home, containers and what is in them
    def introduce(self) -> State:
        rng = self.rng
        hero, *others = self.characters
        self.say(rng.choice(OPENERS).format(desc=hero.description), "opener")
        self.last_subject = hero.name
        if rng.random() < 0.5:
            self.say(self.fill(rng.choice(TRAITS), hero.name), "intro")
        for other in others:
            template = rng.choice([
                "{A} had a friend, {desc}.", "{A} lived with {desc}.", "{A} shared {poss} home with {desc}.",
                "{name}'s best friend was {desc}.",
            ])
            self.say(self.fill(template, hero.name, desc=other.description), "intro")
            self.last_subject = None
        where = f"{article(self.home)} {self.home}"
        if len(self.characters) == 1:
            self.say(self.fill(rng.choice(["{A} lived in {where}.", "{name}'s home was {where}."]), hero.name, where=where), "intro")
        else:
            self.say(f"They lived together in {where}.", "intro")
        self.last_subject = None

        holders: dict[str, tuple[str, ...]] = {c: () for c in self.containers}
        holders.update({ch.name: () for ch in self.characters})
        things = [f"{article(c.split(' ', 1)[1])} {c.split(' ', 1)[1]}" for c in self.containers]
        self.say(f"In the {self.home} there was {join_list(things)}.", "intro")
        # Initial contents: most containers get one or two objects, some stay empty.
        for label in self.containers:
            k = self.rng.choices([0, 1, 2], weights=[2, 5, 3])[0]
            objs = tuple(self.new_object() for _ in range(k))
            holders[label] = objs
            mentions = join_list([self.first_mention(o) for o in objs])
            if objs:
                verb = "was" if len(objs) == 1 else "were"
                template = rng.choice(["{C} held {m}.", f"In {{c}} there {verb} {{m}}.", f"Inside {{c}} {verb} {{m}}."])
            else:
                template = rng.choice(["{C} was empty.", "There was nothing in {c}."])
            self.say(template.format(C=capitalize(label), c=label, m=mentions), "intro")
        for ch in self.characters:
            if rng.random() < 0.5:
                obj = self.new_object()
                holders[ch.name] = (obj,)
                template = rng.choice(["{name} had {m}.", "{name} was holding {m}."])
                self.say(template.format(name=ch.name, m=self.first_mention(obj)), "intro")
        return State(holders, {ch.name: "home" for ch in self.characters})

    # -- events
    def possible_events(self, state: State) -> list[tuple[float, str, str, str | None]]:
        """Every kind of event that makes sense now, as ``(weight, kind, actor, what)``;
        container events are favoured. ``what`` is the object (put, give), the container
        (take, move), ``"home"`` or None (go); the rest is drawn in :meth:`pick_event`, so
        that only the chosen option costs random draws."""
        options: list[tuple[float, str, str, str | None]] = []
        n_chars = len(self.characters)
        for ch in self.characters:
            name, here = ch.name, state.places[ch.name]
            hand = state.holders[name]
            if here == "home":
                full = [c for c in self.containers if state.holders[c]]
                for obj in hand:
                    options.append((3.0 / len(hand), "put", name, obj))
                for c in full:
                    options.append((2.0 / len(full), "take", name, c))
                    options.append((3.0 / len(full), "move", name, c))
                options.append((1.6 / n_chars, "go", name, None))
            else:
                if self.spare_objects and len(self.objects) < 9:
                    options.append((2.5, "find", name, None))
                options.append((1.5, "go", name, "home"))
                options.append((0.3, "go", name, None))
            if n_chars > 1 and any(o.name != name and state.places[o.name] == here for o in self.characters):
                for obj in hand:
                    options.append((1.5 / len(hand), "give", name, obj))
        return options

    def pick_event(self, state: State) -> Event | None:
        options = self.possible_events(state)
        if not options:
            return None
        rng = self.rng
        _, kind, actor, what = rng.choices(options, weights=[o[0] for o in options])[0]
        if kind == "put":
            return Event("put", actor, what, actor, rng.choice(self.containers))
        if kind in ("take", "move"):
            obj = rng.choice(state.holders[what])
            if kind == "take":
                return Event("take", actor, obj, what, actor)
            return Event("move", actor, obj, what, rng.choice([c for c in self.containers if c != what]))
        if kind == "give":
            here = state.places[actor]
            friends = [o.name for o in self.characters if o.name != actor and state.places[o.name] == here]
            return Event("give", actor, what, actor, rng.choice(friends))
        if kind == "go":
            if what == "home":
                return Event("go", actor, target="home")
            return Event("go", actor, target=rng.choice([p for p in self.places if p != state.places[actor]]))
        return Event("find", actor, self.new_object(), None, actor)

    def tell_event(self, event: Event, state_before: State) -> None:
        rng = self.rng
        actor = event.actor
        o = f"the {event.obj}" if event.obj else ""
        kind = event.kind
        if kind == "put":
            text = self.fill(rng.choice(PUT), actor, o=o, c=event.target)
        elif kind == "take":
            text = self.fill(rng.choice(TAKE), actor, o=o, c=event.source)
        elif kind == "move":
            text = self.fill(rng.choice(MOVE), actor, o=o, c=event.source, c2=event.target)
        elif kind == "give":
            rp = self.by_name[event.target].pronoun
            text = self.fill(rng.choice(GIVE), actor, o=o, r=event.target, r_obj="her" if rp == "she" else "him")
        elif kind == "go":
            if event.target == "home":
                text = self.fill(rng.choice(GO_HOME), actor)
            else:
                text = self.fill(rng.choice(GO), actor, p=event.target)
        elif kind == "find":
            place = state_before.places[actor]
            text = self.fill(rng.choice(FIND), actor, p=place, new=self.first_mention(event.obj))
        else:  # pragma: no cover - the generator only makes the kinds above
            raise AssertionError(kind)
        self.say(text, "event")
        self.last_subject = actor

    def comment(self, event: Event, state: State) -> None:
        """Maybe add a feeling, a line of dialogue, or a sentence saying where things are."""
        rng = self.rng
        roll = rng.random()
        if roll < 0.2:
            self.say(self.fill(rng.choice(FEELING), event.actor, feeling=rng.choice(FEELINGS)), "feeling")
        elif roll < 0.32:
            template = rng.choice(DIALOGUE[event.kind])
            self.say(template.format(name=event.actor, rname=event.target or ""), "dialogue")
            self.last_subject = None
        elif roll < 0.42 and event.obj:
            self.ask_where(event.obj, state, event.actor)
        elif roll < 0.66 and event.obj:
            holder = rng.choice([h for h in (event.source, event.target) if h])
            self.say_state(holder, state, event.obj)

    def ask_where(self, obj: str, state: State, actor: str) -> None:
        """Someone other than ``actor`` (if there is anyone) asks where an object is, and a
        character at the same place answers truly."""
        rng = self.rng
        asker = rng.choice([c for c in self.characters if c.name != actor] or self.characters)
        here = state.places[asker.name]
        answerers = [c for c in self.characters if c is not asker and state.places[c.name] == here] or [asker]
        answerer = rng.choice(answerers)
        holder = state.holder_of(obj)
        question = rng.choice(['"Where is the {o}?" asked {n}.', '"Where did the {o} go?" asked {n}.'])
        if answerer is asker:
            question = rng.choice(['{n} wondered, "Where is the {o}?"', '"Hmm, where is the {o} now?" {n} said to {p}self.'])
        self.say(question.format(o=obj, n=asker.name, p="her" if asker.pronoun == "she" else "him"), "dialogue")
        if answerer is asker:  # thinking aloud: the answer is remembered, not said
            if holder == asker.name:
                answer = "Then {n} remembered that {pron} was holding it."
            elif holder in self.by_name:
                answer = "Then {n} remembered that {h} had it."
            else:
                answer = "Then {n} remembered that it was in {h}."
        elif holder in self.by_name:
            answer = '"I have it," said {n}.' if holder == answerer.name else '"{h} has it," said {n}.'
        else:
            answer = rng.choice(['"It is in {h}," said {n}.', '"It is in {h} now," said {n}.'])
        self.say(answer.format(h=holder, n=answerer.name, pron=asker.pronoun), "state")
        self.last_subject = None

    def say_state(self, holder: str, state: State, obj: str) -> None:
        rng = self.rng
        objs = state.holders[holder]
        if holder in self.by_name:
            if objs:
                self.say(rng.choice(STATE_PERSON).format(name=holder, list=self._the_list(objs)), "state")
            return
        if not objs:
            template = rng.choice(STATE_EMPTY)
        elif obj in objs and rng.random() < 0.3:
            template = rng.choice(STATE_OBJECT)
        else:
            template = rng.choice(STATE_CONTAINS)
        self.say(template.format(c=holder, C=capitalize(holder), O=f"The {obj}", list=self._the_list(objs)), "state")

    def _the_list(self, objs: tuple[str, ...]) -> str:
        return join_list([f"the {o}" for o in self.objects if o in objs])

    def end(self, state: State) -> None:
        rng = self.rng
        self.event_index = len(self.events) - 1
        stored = [(o, c) for c in self.containers for o in state.holders[c]]
        if stored and rng.random() < 0.4:
            obj, label = rng.choice(stored)
            self.say(f"From that day on, the {obj} stayed in {label}.", "ending")
        pool = ENDINGS_ALWAYS + (ENDINGS_MANY if len(self.characters) > 1 else [])
        self.say(self.fill(rng.choice(pool), self.characters[0].name), "ending")

    def tell(self) -> Story:
        self.cast()
        initial = self.introduce()
        state = initial
        self.events: list[Event] = []
        states: list[State] = []
        n_events = self.rng.randint(self.min_events, self.max_events)
        for i in range(n_events):
            event = self.pick_event(state)
            if event is None:
                break
            before, state = state, apply_event(state, event)
            self.event_index = i
            self.events.append(event)
            states.append(state)
            self.tell_event(event, before)
            self.comment(event, state)
        self.end(state)
        return Story(self.seed, self.sentences, self.characters, self.home, self.containers, self.objects,
                     initial, self.events, states)


def story_seed(seed: int, index: int, stream: str = "train") -> str:
    """The seed string of story ``index`` in ``stream`` (``train`` for corpora, ``probe`` for
    the held-out entity-tracking probe)."""
    return f"storyworld:{stream}:{seed}:{index}"


def generate_story(seed: str, min_events: int = 3, max_events: int = 7) -> Story:
    """One story from its seed string (see :func:`story_seed`)."""
    if min_events < 0 or max_events < max(min_events, 1):
        raise UserError(f"storyworld needs 0 <= min_events <= max_events and max_events >= 1, got {min_events} and {max_events}.")
    return _Teller(seed, min_events, max_events).tell()


def iter_stories(seed: int = 0, min_events: int = 3, max_events: int = 7, stream: str = "train") -> Iterator[Story]:
    """Stories 0, 1, 2, ... of a stream, without end."""
    index = 0
    while True:
        yield generate_story(story_seed(seed, index, stream), min_events, max_events)
        index += 1


def generate(n_stories: int, seed: int = 0, min_events: int = 3, max_events: int = 7, stream: str = "train") -> list[Story]:
    """``n_stories`` stories; the same arguments always give the same stories."""
    stories = iter_stories(seed, min_events, max_events, stream)
    return [next(stories) for _ in range(n_stories)]


def iter_words(n_words: int, seed: int = 0, min_events: int = 3, max_events: int = 7) -> Iterator[Story]:
    """Training stories until they hold at least ``n_words`` words (the last may overshoot),
    one at a time (a corpus of millions of words shows its progress as they are told)."""
    total = 0
    for story in iter_stories(seed, min_events, max_events, "train"):
        if total >= n_words:
            return
        yield story
        total += count_words(story.text)


def generate_words(n_words: int, seed: int = 0, min_events: int = 3, max_events: int = 7) -> list[Story]:
    """:func:`iter_words` as a list."""
    return list(iter_words(n_words, seed, min_events, max_events))


__all__ = [
    "Character", "Event", "State", "Sentence", "Story", "apply_event", "generate", "generate_story",
    "generate_words", "iter_stories", "iter_words", "story_seed",
]
