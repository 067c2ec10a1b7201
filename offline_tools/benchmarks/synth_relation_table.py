"""The relations of `regrad synth --relations` (see `offline_tools/benchmarks/synth_relations.py`): data only.

Each relation is one kind of fact about a subject (an invented person or organisation): how its
value is drawn, how a passage states it and how a question asks it. None is one of the six synth
attributes (birthplace, birth year, occupation, employer, spouse, residence) nor a `--varied`
extra kind (sibling, school, instrument, moved year).

Relations are in three fixed groups, the same for every seed:

- `TRAIN_RELATIONS` (28): stated and asked in all but their *last* statement and question phrasing
  (the last ones are listed in synth.json and used by no one: room for an unseen-phrasing check);
- `DEV_RELATIONS` (6): held out of training, to choose hyper-parameters on;
- `TEST_RELATIONS` (12): held out of training and dev entirely.

`EXTRA_TRAIN_RELATIONS` (7, training only, outside the 46 and outside `GROUPS`, so the benchmarks'
files do not change with them): values of the shapes the training relations lack and the held-out
ones have, counts of two to four digits asked "how many" and answered bare, a four-digit code and a
colour. The shipped learner's composition-dev misses are such values cut short ("5" for 52) or
answered with their noun ("18 beehives"), where the only "how many" relation of training
(grandchildren) counts 2 to 19. `regrad synth --relations MODE --extra-train-relations` writes them.
`EXTRA_TRAIN_RELATIONS_2` (9, training only, the same way; `--extra-train-relations 2`): counts stated
before their noun and asked bare, colours stated with a material, a name with initials, a five-digit number.
`EXTRA_TRAIN_RELATIONS_3` (9, training only; `--extra-train-relations 3`): names that always carry a middle
initial, small counts stated with their noun, a date, a letter-and-digit code, two-word colours and places.
`EXTRA_TRAIN_RELATIONS_4` (10, training only; `--extra-train-relations 4`): objects with their material (a kind of
value no other training relation has), titles, vessel names and three-digit counts, in frames of their own.
`DEV_RELATIONS_2` (8, dev only, outside `GROUPS` the same way; `--dev-relations 2`): the held-out kinds of
value the six dev relations lack and the twelve test relations have (boat and pet names, a title, an object
with its material, a year, three-digit counts, a language, an animal), so that a dev read can see what the
test will.

Every phrasing and every question of a relation contains its `cue` (a word stem no other
relation's phrasings contain: `tests/offline_tools/test_synth_relations.py` checks it), so BM25
ranks same-relation passages right after the asked subject's own: the distractors a ReGrad sum
must not mix up. Organisation subjects are named "<brand> <kind>", the kind their relation's
`org_kind` (shared by all its subjects, so it adds to the relation's words), except in a
composition cluster sharing a brand, whose members take different kinds of `ORG_KINDS`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from offline_tools.benchmarks.synth import NAME_STYLES, article, person_name, place

__all__ = ["Relation", "TRAIN_RELATIONS", "DEV_RELATIONS", "TEST_RELATIONS", "RELATIONS", "GROUPS", "ORG_KINDS",
           "EXTRA_TRAIN_RELATIONS", "EXTRA_TRAIN_RELATIONS_2", "EXTRA_TRAIN_RELATIONS_3", "EXTRA_TRAIN_RELATIONS_4",
           "DEV_RELATIONS_2"]



@dataclass(frozen=True)
class Relation:
    """One kind of fact about a subject.

    Args:
        key: the relation's name in ids, questions (`relation`, `attribute`) and synth.json.
        group: `train`, `dev` or `test`: which split's subjects have it.
        subject: `person` (a full name) or `org` (an organisation "<brand> <kind>").
        cue: a word stem in every phrasing and question of this relation and in no other's.
        draw: an invented value (so a model cannot know it before reading the passage).
        statements, questions: format strings over {name}, {value}, {a_value} (with its article).
        aliases: the gold answers for a value (e.g. with and without "the").
        org_kind: an `org` relation's kind of organisation, the last word of its subjects' names.
    """

    key: str
    group: Literal["train", "dev", "test"]
    subject: Literal["person", "org"]
    cue: str
    draw: Callable[[random.Random], str]
    statements: tuple[str, ...]
    questions: tuple[str, ...]
    aliases: Callable[[str], list[str]] = field(default=lambda value: [value])
    org_kind: str = ""


# ---------------------------------------------------------------- value drawers
_COLOURS = ("crimson", "ochre", "teal", "saffron", "indigo", "mauve", "olive", "amber", "cobalt", "scarlet",
            "lilac", "maroon", "turquoise", "vermilion", "russet", "emerald", "slate grey", "mustard yellow",
            "sea green", "plum", "coral", "charcoal", "ivory", "burgundy", "cerulean", "magenta", "tan",
            "lavender", "jade", "copper")
_ANIMALS = ("heron", "lynx", "otter", "badger", "stag", "falcon", "salamander", "hare", "kingfisher", "wolf",
            "boar", "raven", "tortoise", "octopus", "pelican", "ibis", "marten", "owl", "swan", "crane", "bison",
            "ferret", "gecko", "walrus", "seahorse", "mole", "wren", "weasel", "beaver", "jackal", "ocelot",
            "armadillo", "lemur", "puffin", "stork", "viper", "newt", "moth", "toad", "yak")
_SHIP_WORDS = (("Silver", "Northern", "Restless", "Crimson", "Patient", "Golden", "Quiet", "Brave", "Wandering",
                "Morning", "Evening", "Salt", "Steady", "Faithful", "Swift", "Distant", "Hidden", "Merry", "Gentle",
                "Stubborn"),
               ("Heron", "Gull", "Lantern", "Promise", "Tide", "Anchor", "Compass", "Star", "Wind", "Pearl",
                "Harvest", "Rose", "Voyager", "Kestrel", "Dawn", "Fortune", "Wave", "Comet", "Thistle", "Petrel"))
_TITLE_WORDS = ("Lanterns", "Willows", "Bells", "Winters", "Shadows", "Letters", "Mirrors", "Harbours", "Lamps",
                "Clocks", "Storms", "Ashes", "Candles", "Feathers", "Bridges", "Ghosts")
_FOODS = ("stew", "dumplings", "pie", "broth", "flatbread", "pudding", "fritters", "chowder", "porridge",
          "custard", "noodles", "pastries", "dumpling soup", "tart")
_FLOWERS = ("tulips", "dahlias", "peonies", "irises", "asters", "lupins", "poppies", "camellias", "foxgloves",
            "marigolds", "hyacinths", "primroses")
_MATERIALS = ("silver", "brass", "pewter", "copper", "oak", "walnut", "bone", "tin", "enamel", "porcelain", "glass",
              "ebony")
_OBJECTS = ("compass", "snuffbox", "pocket watch", "hourglass", "inkwell", "music box", "spyglass", "candlestick",
            "chess set", "sextant", "locket", "teapot")
_SHADES = ("dove grey", "forest green", "sky blue", "burnt orange", "dusty pink", "deep purple", "pale yellow",
           "rust red", "navy blue", "bottle green", "ash grey", "rose pink", "sand brown", "ice blue")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")
_PLACE_PREFIXES = ("Upper", "Lower", "Little", "Great", "North", "South", "East", "West", "High", "Nether")
_CODE_LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"
_STREETS = ("Street", "Lane", "Close", "Road", "Walk", "Terrace")
_PET_ENDINGS = ("by", "bo", "kin", "ster", "ley", "po", "mi", "zu", "ette", "o", "wick", "sy")
_ONSETS = tuple(sorted({onset for onsets, _, _, _ in NAME_STYLES.values() for onset in onsets}))


def _year(rng: random.Random) -> str:
    return str(rng.randint(1700, 1990))


def _count(low: int, high: int) -> Callable[[random.Random], str]:
    return lambda rng: str(rng.randint(low, high))


def _pick(pool: tuple[str, ...]) -> Callable[[random.Random], str]:
    return lambda rng: rng.choice(pool)


def _pet(rng: random.Random) -> str:
    return rng.choice(_ONSETS) + rng.choice(_PET_ENDINGS)


def _ship(rng: random.Random) -> str:
    return f"{rng.choice(_SHIP_WORDS[0])} {rng.choice(_SHIP_WORDS[1])}"


def _title(rng: random.Random) -> str:
    return f"The {rng.choice(_TITLE_WORDS)} of {place(rng)}"


def _dish(rng: random.Random) -> str:
    return f"{place(rng)} {rng.choice(_FOODS)}"


def _language(rng: random.Random) -> str:
    stem = place(rng).rstrip("aeiouy")  # "Velamora" -> "Velamorese", an invented language
    return stem + rng.choice(("ese", "ic", "ian", "ish"))


def _mountain(rng: random.Random) -> str:
    return f"Mount {place(rng)}"


def _flowers(rng: random.Random) -> str:
    return f"{rng.choice(_COLOURS)} {rng.choice(_FLOWERS)}"


def _heirloom(rng: random.Random) -> str:
    return f"{rng.choice(_MATERIALS)} {rng.choice(_OBJECTS)}"


def _street(rng: random.Random) -> str:
    return f"{place(rng)} {rng.choice(_STREETS)}"


def _code(rng: random.Random) -> str:
    return str(rng.randint(1000, 9999))


def _initialled_name(rng: random.Random) -> str:
    return person_name(rng, initial=1.0)


def _date(rng: random.Random) -> str:
    return f"{rng.randint(1, 28)} {rng.choice(_MONTHS)} {rng.randint(1820, 1990)}"


def _card(rng: random.Random) -> str:
    return f"{rng.choice(_CODE_LETTERS)}{rng.choice(_CODE_LETTERS)}-{rng.randint(100, 9999)}"


def _two_word_place(rng: random.Random) -> str:
    return f"{rng.choice(_PLACE_PREFIXES)} {place(rng)}"


def _with_the(value: str) -> list[str]:
    return [value, f"the {value}"]


def _with_article(value: str) -> list[str]:
    return [value, article(value)]


# ---------------------------------------------------------------- train relations (the last phrasing unused)
TRAIN_RELATIONS: tuple[Relation, ...] = (
    Relation(
        "dog_name", "train", "person", "dog", _pet,
        ("{name} has a dog called {value}.", "{name}'s dog is named {value}.", "{value} is the name of {name}'s dog.",
         "Every morning {name} walks a dog named {value}."),
        ("What is the name of {name}'s dog?", "What is {name}'s dog called?", "What did {name} name the dog?",
         "Which dog belongs to {name}, by name?"),
    ),
    Relation(
        "boat_name", "train", "person", "boat", _ship,
        ("{name} owns a sailing boat named the {value}.", "{name}'s boat is called the {value}.",
         "The boat {name} sails is named the {value}.", "{name} keeps a small boat, the {value}, at the pier."),
        ("What is the name of {name}'s boat?", "What is {name}'s boat called?", "Which boat is {name}'s?",
         "What did {name} name the sailing boat?"),
        aliases=_with_the,
    ),
    Relation(
        "door_colour", "train", "person", "door", _pick(_COLOURS),
        ("{name} painted the front door {value}.", "The front door of {name}'s house is {value}.",
         "{name}'s front door is painted {value}.", "{name} chose {value} paint for the front door."),
        ("What colour is {name}'s front door?", "Which colour did {name} paint the front door?",
         "What colour is the front door of {name}'s house?", "The front door of {name} is which colour?"),
    ),
    Relation(
        "summer_island", "train", "person", "island", place,
        ("{name} spent a summer on the island of {value}.", "{name} once lived for a summer on the island of {value}.",
         "The island of {value} saw {name} spend a summer.", "{name} sailed out to the island of {value}."),
        ("On which island did {name} spend a summer?", "Which island did {name} spend a summer on?",
         "What island did {name} stay on for a summer?", "Name the island where {name} spent a summer."),
    ),
    Relation(
        "river_swum", "train", "person", "river", place,
        ("{name} swam across the river {value}.", "{name} once crossed the river {value} by swimming.",
         "The river {value} was swum by {name} in one afternoon.", "{name} is known for swimming the river {value}."),
        ("Which river did {name} swim across?", "What river did {name} swim?", "Across which river did {name} swim?",
         "Name the river that {name} swam."),
    ),
    Relation(
        "novel_title", "train", "person", "novel", _title,
        ("{name} wrote a novel titled {value}.", "{name} is the author of the novel {value}.",
         "The novel {value} is by {name}.", "{name}'s only novel is {value}."),
        ("What novel did {name} write?", "What is the title of {name}'s novel?",
         "Which novel is {name} the author of?", "Name the novel written by {name}."),
    ),
    Relation(
        "signature_dish", "train", "person", "dish", _dish,
        ("{name}'s signature dish is {value}.", "{name} is famous for cooking a dish called {value}.",
         "The dish {name} cooks best is {value}.", "At every feast {name} serves the same dish, {value}."),
        ("What is {name}'s signature dish?", "Which dish is {name} famous for cooking?",
         "What dish does {name} cook best?", "Name the dish {name} always serves."),
    ),
    Relation(
        "home_language", "train", "person", "language", _language,
        ("{name} speaks the language {value}.", "{name} learned the {value} language as a child.",
         "The language {name} speaks at home is {value}.", "{name} is fluent in the language {value}."),
        ("Which language does {name} speak?", "What language did {name} learn as a child?",
         "What language does {name} speak at home?", "In which language is {name} fluent?"),
    ),
    Relation(
        "horse_name", "train", "person", "horse", _pet,
        ("{name} rides a horse called {value}.", "{name}'s horse is named {value}.",
         "{value} is the name of the horse {name} rides.", "{name} bought a horse at the fair and named it {value}."),
        ("What is the name of {name}'s horse?", "What horse does {name} ride?", "What is {name}'s horse called?",
         "What did {name} name the horse?"),
    ),
    Relation(
        "lucky_number", "train", "person", "lucky", _count(2, 999),
        ("{name}'s lucky number is {value}.", "{name} considers {value} a lucky number.",
         "The number {value} is lucky for {name}.", "{name} always bets on the lucky number {value}."),
        ("What is {name}'s lucky number?", "Which number does {name} consider lucky?",
         "Which number is lucky for {name}?", "What lucky number does {name} bet on?"),
    ),
    Relation(
        "mountain_climbed", "train", "person", "climb", _mountain,
        ("{name} climbed {value} last spring.", "{name} reached the top of {value} on a solo climb.",
         "{value} was climbed by {name} in a single day.", "The first mountain {name} climbed was {value}."),
        ("Which mountain did {name} climb?", "What mountain has {name} climbed?", "Name the mountain {name} climbed.",
         "Which peak did {name} climb in a single day?"),
        aliases=lambda v: [v, v.removeprefix("Mount ")],
    ),
    Relation(
        "mentor", "train", "person", "mentor", person_name,
        ("{name}'s mentor was {value}.", "{name} was taught the craft by a mentor, {value}.",
         "{value} served as mentor to {name}.", "As a mentor, {value} guided {name} for years."),
        ("Who was {name}'s mentor?", "Who served as mentor to {name}?", "Which mentor taught {name} the craft?",
         "Who guided {name} as a mentor?"),
    ),
    Relation(
        "oldest_friend", "train", "person", "friend", person_name,
        ("{name}'s oldest friend is {value}.", "{name} and {value} became friends in childhood.",
         "{value} is the oldest friend of {name}.", "The friend {name} has known longest is {value}."),
        ("Who is {name}'s oldest friend?", "Who became {name}'s friend in childhood?",
         "Who is the oldest friend of {name}?", "Which friend has {name} known longest?"),
    ),
    Relation(
        "car_colour", "train", "person", "car", _pick(_COLOURS),
        ("{name} drives a car painted {value}.", "{name}'s car is {value}.", "The car {name} drives is {value}.",
         "{name} bought a car in {value} last year."),
        ("What colour is {name}'s car?", "Which colour is the car {name} drives?", "What colour car does {name} drive?",
         "The car of {name} is which colour?"),
    ),
    Relation(
        "rowing_club", "train", "person", "rowing", lambda rng: f"{place(rng)} Rowing Club",
        ("{name} is a member of the {value}.", "{name} rows for the {value}.",
         "The {value} counts {name} among its rowers.", "{name} joined the {value} as a young rower."),
        ("Which rowing club is {name} a member of?", "{name} belongs to which rowing club?",
         "What rowing club does {name} row for?", "Name the rowing club {name} joined."),
        aliases=_with_the,
    ),
    Relation(
        "savings_bank", "train", "person", "savings", lambda rng: f"{place(rng)} Savings Bank",
        ("{name} keeps savings at the {value}.", "{name}'s savings are held by the {value}.",
         "The {value} holds {name}'s savings.", "{name} opened a savings account at the {value}."),
        ("Where does {name} keep savings?", "Which bank holds {name}'s savings?",
         "At which savings bank does {name} keep money?", "Which bank did {name} open a savings account with?"),
        aliases=_with_the,
    ),
    Relation(
        "garden_flowers", "train", "person", "garden", _flowers,
        ("{name} grows {value} in the garden.", "The garden of {name} is full of {value}.",
         "In {name}'s garden grow {value}.", "{name} tends a garden of {value}."),
        ("What does {name} grow in the garden?", "What flowers fill {name}'s garden?",
         "Which flowers grow in {name}'s garden?", "What is {name}'s garden full of?"),
    ),
    Relation(
        "grandchildren", "train", "person", "grandchildren", _count(2, 19),
        ("{name} has {value} grandchildren.", "{name} is a grandparent of {value} grandchildren.",
         "{name}'s grandchildren are {value} in all.", "At the last count, {name} had {value} grandchildren."),
        ("How many grandchildren does {name} have?", "How many grandchildren are there in {name}'s family?",
         "How many grandchildren has {name} got?", "Count {name}'s grandchildren: how many?"),
    ),
    Relation(
        "bakery_street", "train", "person", "bakery", _street,
        ("{name} runs a bakery on {value}.", "{name}'s bakery is on {value}.",
         "The bakery {name} runs is on {value}.", "On {value} you will find {name}'s bakery."),
        ("On which street is {name}'s bakery?", "Where does {name} run a bakery?",
         "What street is {name}'s bakery on?", "Where can one find the bakery of {name}?"),
    ),
    Relation(
        "tattoo", "train", "person", "tattoo", _pick(_ANIMALS),
        ("{name} has a tattoo of {a_value}.", "{name}'s tattoo depicts {a_value}.",
         "On {name}'s arm is a tattoo of {a_value}.", "{name} got a tattoo of {a_value} at sea."),
        ("What is {name}'s tattoo of?", "What animal is on {name}'s tattoo?",
         "What does {name} have a tattoo of?", "Which animal is tattooed on {name}?"),
        aliases=_with_article,
    ),
    Relation(
        "first_exhibition", "train", "person", "exhibition", _year,
        ("{name} held a first exhibition in {value}.", "{name}'s first exhibition opened in {value}.",
         "The first exhibition of {name}'s work was in {value}.",
         "It was in {value} that {name} showed a first exhibition."),
        ("In what year did {name} hold a first exhibition?", "When did {name}'s first exhibition open?",
         "In which year was {name}'s first exhibition?", "What year saw {name}'s first exhibition?"),
    ),
    Relation(
        "pen_name", "train", "person", "pen", person_name,
        ("{name} publishes under the pen name {value}.", "{name}'s pen name is {value}.",
         "The pen name {value} belongs to {name}.", "{name} signs every book with the pen name {value}."),
        ("What is {name}'s pen name?", "Under what pen name does {name} publish?", "Which pen name does {name} use?",
         "What pen name does {name} sign with?"),
    ),
    Relation(
        "established_year", "train", "org", "establish", _year,
        ("The {name} was established in {value}.", "The {name} was established back in {value}.",
         "In {value} the {name} was established.", "The year the {name} was established is {value}."),
        ("When was the {name} established?", "In what year was the {name} established?",
         "Which year was the {name} established in?", "The {name} was established in which year?"),
        org_kind="Glassworks",
    ),
    Relation(
        "headquarters", "train", "org", "headquarter", place,
        ("The {name} has its headquarters in {value}.", "The headquarters of the {name} are in {value}.",
         "{value} hosts the headquarters of the {name}.", "The {name} moved its headquarters to {value}."),
        ("Where are the headquarters of the {name}?", "In which town does the {name} have its headquarters?",
         "Where is the {name} headquartered?", "Which town hosts the {name}'s headquarters?"),
        org_kind="Shipyard",
    ),
    Relation(
        "founder", "train", "org", "found", person_name,
        ("The {name} was founded by {value}.", "{value} founded the {name}.",
         "The {name} was founded long ago by {value}.", "The {name} began when {value} founded it."),
        ("Who founded the {name}?", "By whom was the {name} founded?", "Which person founded the {name}?",
         "Who founded the {name} in the first place?"),
        org_kind="Orchestra",
    ),
    Relation(
        "emblem_colour", "train", "org", "emblem", _pick(_COLOURS),
        ("The emblem of the {name} is {value}.", "The {name} has an emblem of {value} on every banner.",
         "The {name}'s emblem is painted {value}.", "The {name} flies an emblem coloured {value}."),
        ("What colour is the emblem of the {name}?", "What is the colour of the {name}'s emblem?",
         "Which colour is the {name}'s emblem?", "The {name}'s emblem is what colour?"),
        org_kind="Guild",
    ),
    Relation(
        "mascot", "train", "org", "mascot", _pick(_ANIMALS),
        ("The {name} has {a_value} as its mascot.", "The mascot of the {name} is {a_value}.",
         "{a_value} is the mascot of the {name}.", "The {name} adopted {a_value} as a mascot."),
        ("What is the mascot of the {name}?", "Which animal is the {name}'s mascot?",
         "What animal acts as mascot of the {name}?", "What mascot did the {name} adopt?"),
        aliases=_with_article,
        org_kind="Distillery",
    ),
    Relation(
        "flagship", "train", "org", "flagship", _ship,
        ("The {name}'s flagship is the {value}.", "The flagship of the {name} is the {value}.",
         "The {value} is the flagship of the {name}.", "The {name} launched the {value} as its flagship."),
        ("What is the flagship of the {name}?", "Which vessel is the {name}'s flagship?",
         "What is the {name}'s flagship called?", "What flagship did the {name} launch?"),
        aliases=_with_the,
        org_kind="Fleet",
    ),
)

# ---------------------------------------------------------------- dev relations (held out of training)
DEV_RELATIONS: tuple[Relation, ...] = (
    Relation(
        "godparent", "dev", "person", "godparent", person_name,
        ("{name}'s godparent is {value}.", "{value} stood as godparent to {name}.",
         "{name} was christened with {value} as godparent."),
        ("Who is {name}'s godparent?", "Who stood as godparent to {name}?",
         "Which person is the godparent of {name}?"),
    ),
    Relation(
        "beehives", "dev", "person", "beehive", _count(3, 60),
        ("{name} keeps {value} beehives.", "{name} tends {value} beehives on the hill.",
         "Beehives kept by {name}: {value}."),
        ("How many beehives does {name} keep?", "How many beehives does {name} tend?",
         "How many beehives are kept by {name}?"),
    ),
    Relation(
        "kite_colour", "dev", "person", "kite", _pick(_COLOURS),
        ("{name} flies a kite of {value} silk.", "{name}'s kite is {value}.",
         "The kite that {name} flies on windy days is {value}."),
        ("What colour is {name}'s kite?", "Which colour is the kite {name} flies?",
         "The kite of {name} is what colour?"),
    ),
    Relation(
        "pilgrimage", "dev", "person", "pilgrimage", place,
        ("{name} made a pilgrimage to {value}.", "{name}'s pilgrimage ended in {value}.",
         "On a pilgrimage, {name} walked to {value}."),
        ("Where did {name} make a pilgrimage to?", "Which town was the goal of {name}'s pilgrimage?",
         "To which town did {name} go on pilgrimage?"),
    ),
    Relation(
        "anthem_composer", "dev", "org", "anthem", person_name,
        ("The anthem of the {name} was composed by {value}.", "The {name}'s anthem is a composition by {value}.",
         "The {name}'s anthem is a tune by {value}."),
        ("Who composed the anthem of the {name}?", "Whose composition is the {name}'s anthem?",
         "Who is the composer of the {name}'s anthem?"),
        org_kind="Lyceum",
    ),
    Relation(
        "regatta", "dev", "org", "regatta", place,
        ("The {name}'s regatta takes place off {value}.", "Each season the {name} races a regatta off {value}.",
         "The regatta of the {name} starts off {value}."),
        ("Off which town is the {name}'s regatta?", "Which town is the regatta of the {name} off?",
         "The {name}'s regatta is off which town?"),
        org_kind="Boathouse",
    ),
)

# ---------------------------------------------------------------- test relations (held out of training and dev)
TEST_RELATIONS: tuple[Relation, ...] = (
    Relation(
        "canoe_name", "test", "person", "canoe", _ship,
        ("{name} paddles a canoe called the {value}.", "{name}'s canoe bears the name {value}.",
         "The canoe {name} built is named the {value}."),
        ("What is {name}'s canoe called?", "What name does {name}'s canoe bear?", "Which canoe does {name} paddle?"),
        aliases=_with_the,
    ),
    Relation(
        "parrot_name", "test", "person", "parrot", _pet,
        ("{name} has a parrot called {value}.", "{name}'s parrot answers to {value}.",
         "The parrot living with {name} is named {value}."),
        ("What is {name}'s parrot called?", "What name does {name}'s parrot answer to?",
         "What is the name of {name}'s parrot?"),
    ),
    Relation(
        "heirloom", "test", "person", "inherit", _heirloom,
        ("{name} inherited {a_value} through an uncle.", "The heirloom {name} inherited is {a_value}.",
         "{name} inherited {a_value} at a great-aunt's death."),
        ("What did {name} inherit through an uncle?", "What heirloom did {name} inherit?",
         "Which object did {name} inherit?"),
        aliases=_with_article,
    ),
    Relation(
        "fishing_lake", "test", "person", "fishing", place,
        ("{name} goes fishing on Lake {value}.", "Lake {value} is {name}'s favourite spot for fishing.",
         "{name} passes weekends fishing on Lake {value}."),
        ("On which lake does {name} go fishing?", "Where does {name} go fishing?",
         "Which lake is {name}'s fishing spot?"),
        aliases=lambda v: [v, f"Lake {v}"],
    ),
    Relation(
        "poem_title", "test", "person", "poem", _title,
        ("{name} wrote a poem called {value}.", "The poem {value} is by {name}.",
         "{name} is remembered for the poem {value}."),
        ("Which poem did {name} write?", "What poem is {name} remembered for?", "What is the poem by {name} called?"),
    ),
    Relation(
        "pilot_licence", "test", "person", "pilot", _year,
        ("{name} earned a pilot's licence in {value}.", "In {value}, {name} qualified as a pilot.",
         "{name} has been a licensed pilot since {value}."),
        ("When did {name} become a pilot?", "In what year did {name} become a pilot?",
         "In which year was {name} first a pilot?"),
    ),
    Relation(
        "orchard_trees", "test", "person", "orchard", _count(20, 900),
        ("{name}'s orchard has {value} apple trees.", "{name} has an orchard of {value} apple trees.",
         "In {name}'s orchard stand {value} apple trees."),
        ("How many apple trees are in {name}'s orchard?", "How many apple trees does {name}'s orchard have?",
         "How many apple trees stand in {name}'s orchard?"),
    ),
    Relation(
        "umbrella_colour", "test", "person", "umbrella", _pick(_COLOURS),
        ("{name} walks with an umbrella of {value} cloth.", "{name}'s umbrella is {value}.",
         "The umbrella {name} carries in the rain is {value}."),
        ("What colour is {name}'s umbrella?", "Which colour is the umbrella of {name}?",
         "{name}'s umbrella is what colour?"),
    ),
    Relation(
        "diary_tongue", "test", "person", "diary", _language,
        ("{name} keeps a diary in {value}.", "{name}'s diary is written in {value}.",
         "Every page of {name}'s diary is in {value}."),
        ("In what tongue does {name} keep a diary?", "What is {name}'s diary written in?",
         "Which tongue is {name}'s diary in?"),
    ),
    Relation(
        "archive_town", "test", "org", "archive", place,
        ("The {name} keeps its archive in {value}.", "The archive of the {name} is stored in {value}.",
         "{value} shelters the archive of the {name}."),
        ("Where does the {name} keep its archive?", "In which town is the archive of the {name} stored?",
         "In which town is the {name}'s archive?"),
        org_kind="Gazette",
    ),
    Relation(
        "renamed_year", "test", "org", "renamed", _year,
        ("The {name} was renamed in {value}.", "In {value} the {name} was renamed.",
         "The {name} was renamed, to its present name, in {value}."),
        ("When was the {name} renamed?", "In what year was the {name} renamed?",
         "The {name} was renamed in which year?"),
        org_kind="Infirmary",
    ),
    Relation(
        "logo_animal", "test", "org", "logo", _pick(_ANIMALS),
        ("The logo of the {name} shows {a_value}.", "The {name}'s logo is {a_value}.",
         "{a_value} appears on the logo of the {name}."),
        ("What animal does the logo of the {name} show?", "What is on the {name}'s logo?",
         "Which animal appears on the {name}'s logo?"),
        aliases=_with_article,
        org_kind="Cooperative",
    ),
)

RELATIONS: tuple[Relation, ...] = TRAIN_RELATIONS + DEV_RELATIONS + TEST_RELATIONS
GROUPS: dict[str, tuple[Relation, ...]] = {"train": TRAIN_RELATIONS, "dev": DEV_RELATIONS, "test": TEST_RELATIONS}
ORG_KINDS: tuple[str, ...] = tuple(r.org_kind for r in RELATIONS if r.subject == "org")  # a brand cluster's kinds

# ---------------------------------------------------------------- training only (see the module's docstring)
EXTRA_TRAIN_RELATIONS: tuple[Relation, ...] = (
    Relation(
        "sheep", "train", "person", "sheep", _count(12, 480),
        ("{name} keeps a flock of {value} sheep.", "There are {value} sheep in the flock {name} keeps.",
         "{name} shears {value} sheep every spring.", "The flock of {name} numbers {value} sheep."),
        ("How many sheep does {name} keep?", "How many sheep are in {name}'s flock?",
         "How many sheep does {name} shear every spring?", "How large is {name}'s flock of sheep?"),
    ),
    Relation(
        "stamps", "train", "person", "stamp", _count(120, 4800),
        ("{name} has collected {value} stamps.", "The stamp album of {name} holds {value} stamps.",
         "{name} owns a collection of {value} stamps.", "{value} stamps fill the albums of {name}."),
        ("How many stamps has {name} collected?", "How many stamps are in {name}'s album?",
         "How many stamps does {name} own?", "What is the size of {name}'s stamp collection?"),
    ),
    Relation(
        "marathons", "train", "person", "marathon", _count(11, 95),
        ("{name} has run {value} marathons.", "{name} finished {value} marathons in all.",
         "By now {name} has completed {value} marathons.", "{value} marathons have been run by {name}."),
        ("How many marathons has {name} run?", "How many marathons did {name} finish?",
         "How many marathons has {name} completed?", "What is the number of marathons {name} has run?"),
    ),
    Relation(
        "recipes", "train", "person", "recipe", _count(24, 640),
        ("{name} has written down {value} recipes.", "The notebook of {name} holds {value} recipes.",
         "{name} keeps {value} recipes in a notebook.", "{value} recipes were written by {name}."),
        ("How many recipes has {name} written down?", "How many recipes are in {name}'s notebook?",
         "How many recipes does {name} keep?", "What is the number of recipes {name} wrote?"),
    ),
    Relation(
        "pumpkin_weight", "train", "person", "pumpkin", _count(40, 650),
        ("{name}'s prize pumpkin weighed {value} kilograms.", "{name} grew a pumpkin of {value} kilograms.",
         "The pumpkin {name} entered at the show weighed {value} kilograms.",
         "At {value} kilograms, {name}'s pumpkin won a prize."),
        ("How many kilograms did {name}'s prize pumpkin weigh?", "How heavy was the pumpkin {name} grew, in kilograms?",
         "What did {name}'s show pumpkin weigh in kilograms?", "How many kilograms was {name}'s pumpkin?"),
    ),
    Relation(
        "locker_code", "train", "person", "locker", _code,
        ("{name}'s locker code is {value}.", "{name} opens the locker with the code {value}.",
         "The code of the locker {name} uses is {value}.", "{value} is the code to {name}'s locker."),
        ("What is {name}'s locker code?", "Which code opens {name}'s locker?",
         "What code does {name}'s locker take?", "What is the code of the locker {name} uses?"),
    ),
    Relation(
        "bicycle_colour", "train", "person", "bicycl", _pick(_COLOURS),
        ("{name} rides a {value} bicycle.", "The bicycle {name} rides is {value}.",
         "{name}'s bicycle is painted {value}.", "{name} cycles to work on a {value} bicycle."),
        ("What colour is {name}'s bicycle?", "What colour is the bicycle {name} rides?",
         "In what colour is {name}'s bicycle painted?", "Which colour is {name}'s bicycle?"),
    ),
)

# A second training-only set (`--extra-train-relations 2`), apart from the first so that the files written
# with the first stay byte for byte what run 13 trained on. The shapes run 13 still misses on the dev
# relations it never saw: a count read back with its noun ("57 beehives" where "57" was asked), a colour
# stated before a material ("a kite of plum silk") read back as a near colour or with the material, a
# name with a middle initial cut or repeated. Counts here are stated before their noun and asked bare,
# colours stated with a material and asked bare, names carry initials.
EXTRA_TRAIN_RELATIONS_2: tuple[Relation, ...] = (
    Relation(
        "goats", "train", "person", "goat", _count(3, 90),
        ("{name} keeps {value} goats.", "{name} herds {value} goats along the valley.",
         "There are {value} goats on the farm of {name}.", "The herd of {name} counts {value} goats."),
        ("How many goats does {name} keep?", "How many goats does {name} herd?",
         "How many goats are on {name}'s farm?", "What is the number of goats {name} keeps?"),
    ),
    Relation(
        "trophies", "train", "person", "trophi", _count(2, 75),
        ("{name} has won {value} trophies at county fairs.", "{name} keeps {value} trophies on a shelf.",
         "{value} trophies stand in the hallway of {name}.", "At county fairs {name} won {value} trophies."),
        ("How many trophies has {name} won?", "How many trophies does {name} keep on the shelf?",
         "How many trophies stand in {name}'s hallway?", "What is the number of trophies {name} has won?"),
    ),
    Relation(
        "canaries", "train", "person", "canari", _count(4, 160),
        ("{name} raises {value} canaries in an aviary.", "The aviary of {name} holds {value} canaries.",
         "{name} breeds {value} canaries every year.", "{value} canaries sing in {name}'s aviary."),
        ("How many canaries does {name} raise?", "How many canaries are in {name}'s aviary?",
         "How many canaries does {name} breed each year?", "What is the number of canaries {name} raises?"),
    ),
    Relation(
        "quilts", "train", "person", "quilt", _count(5, 300),
        ("{name} has sewn {value} quilts by hand.", "{name} stitched {value} quilts over the years.",
         "{value} quilts were sewn by {name}.", "By hand, {name} made {value} quilts."),
        ("How many quilts has {name} sewn?", "How many quilts did {name} stitch?",
         "How many quilts were sewn by {name}?", "What is the number of quilts {name} made?"),
    ),
    Relation(
        "scarf_colour", "train", "person", "scarf", _pick(_COLOURS),
        ("{name} wears a scarf of {value} wool.", "{name}'s woollen scarf is {value}.",
         "The scarf {name} knitted is {value} wool.", "In winter {name} wraps up in a {value} scarf."),
        ("What colour is {name}'s scarf?", "Which colour is the scarf {name} wears?",
         "The scarf of {name} is what colour?", "In what colour did {name} knit the scarf?"),
    ),
    Relation(
        "hammock_colour", "train", "person", "hammock", _pick(_COLOURS),
        ("{name} sleeps in a hammock of {value} cotton.", "The hammock {name} naps in is {value}.",
         "{name} strung up a {value} cotton hammock.", "{name}'s hammock is made of {value} cotton."),
        ("What colour is {name}'s hammock?", "Which colour is the hammock {name} sleeps in?",
         "The hammock of {name} is what colour?", "In which colour is {name}'s hammock?"),
    ),
    Relation(
        "shutter_colour", "train", "person", "shutter", _pick(_COLOURS),
        ("The shutters of {name}'s cottage are painted {value}.", "{name} painted the cottage shutters {value}.",
         "{name}'s cottage has {value} shutters.", "{value} shutters hang on the cottage of {name}."),
        ("What colour are the shutters of {name}'s cottage?", "Which colour did {name} paint the shutters?",
         "The shutters on {name}'s cottage are what colour?", "What colour are {name}'s shutters?"),
    ),
    Relation(
        "tailor", "train", "person", "tailor", person_name,
        ("{name}'s suits are made by the tailor {value}.", "{name} has every coat cut by the tailor {value}.",
         "The tailor {value} sews the clothes of {name}.", "{name} goes to {value}, a tailor, for suits."),
        ("Who is {name}'s tailor?", "Which tailor makes {name}'s suits?",
         "By which tailor are {name}'s clothes sewn?", "Name the tailor who dresses {name}."),
    ),
    Relation(
        "ferry_pass", "train", "person", "ferri", _count(10000, 99999),
        ("{name}'s ferry pass has the number {value}.", "{name} crosses with ferry pass number {value}.",
         "The ferry pass of {name} is number {value}.", "Ferry pass {value} belongs to {name}."),
        ("What is the number of {name}'s ferry pass?", "Which ferry pass number does {name} use?",
         "What number is on {name}'s ferry pass?", "Which ferry pass is {name}'s, by number?"),
    ),
)

# A third training-only set (`--extra-train-relations 3`). Run 14's dev misses are names with a middle
# initial dropped, cut or repeated ("Svemir Volec" for Svemir V. Volec, "Kana C. Kana C. ..."), small
# counts read back with their noun ("6 beehives"), and two-word colours cut to one ("grey" for slate grey).
# Here names always carry an initial, counts are small, colours and places have two words, and two shapes
# training has not had at all: a date and a letter-and-digit code.
EXTRA_TRAIN_RELATIONS_3: tuple[Relation, ...] = (
    Relation(
        "notary", "train", "person", "notari", _initialled_name,
        ("{name}'s notary is {value}.", "{name} signs every deed before the notary {value}.",
         "The notary {value} keeps the papers of {name}.", "As notary, {value} witnessed the will of {name}."),
        ("Who is {name}'s notary?", "Before which notary does {name} sign deeds?",
         "Which notary keeps {name}'s papers?", "Name the notary of {name}."),
    ),
    Relation(
        "landlord", "train", "person", "landlord", _initialled_name,
        ("{name} rents a flat from the landlord {value}.", "{name}'s landlord is {value}.",
         "The landlord of {name} is {value}.", "{value} is the landlord {name} pays rent to."),
        ("Who is {name}'s landlord?", "From which landlord does {name} rent a flat?",
         "Who is the landlord of {name}?", "To which landlord does {name} pay rent?"),
    ),
    Relation(
        "apprentice", "train", "person", "apprentice", _initialled_name,
        ("{name} took on {value} as an apprentice.", "{name}'s apprentice is {value}.",
         "{value} learned the trade as the apprentice of {name}.", "The apprentice of {name} is {value}."),
        ("Who is {name}'s apprentice?", "Whom did {name} take on as an apprentice?",
         "Who learned the trade as {name}'s apprentice?", "Name the apprentice of {name}."),
    ),
    Relation(
        "rowboats", "train", "person", "rowboat", _count(1, 12),
        ("{name} owns {value} rowboats.", "{name} rents out {value} rowboats on the lake.",
         "There are {value} rowboats at the jetty of {name}.", "{value} rowboats belong to {name}."),
        ("How many rowboats does {name} own?", "How many rowboats does {name} rent out?",
         "How many rowboats are at {name}'s jetty?", "What is the number of rowboats {name} owns?"),
    ),
    Relation(
        "ducks", "train", "person", "duck", _count(2, 15),
        ("{name} keeps {value} ducks by the pond.", "{name} feeds {value} ducks each morning.",
         "{value} ducks live on the pond of {name}.", "The pond of {name} has {value} ducks."),
        ("How many ducks does {name} keep?", "How many ducks does {name} feed each morning?",
         "How many ducks live on {name}'s pond?", "What is the number of ducks {name} keeps?"),
    ),
    Relation(
        "diploma_date", "train", "person", "diploma", _date,
        ("{name} received a diploma on {value}.", "The diploma of {name} is dated {value}.",
         "On {value}, {name} was handed a diploma.", "{name}'s diploma was signed on {value}."),
        ("On what date did {name} receive a diploma?", "What date is on {name}'s diploma?",
         "When was {name} handed a diploma?", "On which day was {name}'s diploma signed?"),
    ),
    Relation(
        "library_card", "train", "person", "librari", _card,
        ("{name}'s library card is number {value}.", "{name} borrows books with library card {value}.",
         "Library card {value} belongs to {name}.", "The library card of {name} reads {value}."),
        ("What is the number of {name}'s library card?", "Which library card does {name} borrow books with?",
         "Which library card belongs to {name}?", "What does {name}'s library card read?"),
    ),
    Relation(
        "tent_colour", "train", "person", "tent", _pick(_SHADES),
        ("{name} pitches a tent of {value} canvas.", "{name}'s tent is {value}.",
         "The tent {name} camps in is made of {value} canvas.", "A {value} tent is the one {name} sleeps in."),
        ("What colour is {name}'s tent?", "Which colour is the tent {name} pitches?",
         "The tent of {name} is what colour?", "In which colour is {name}'s canvas tent?"),
    ),
    Relation(
        "retirement", "train", "person", "retir", _two_word_place,
        ("{name} retired to {value}.", "After work, {name} retired to the village of {value}.",
         "{value} is where {name} retired.", "In old age {name} retired to {value}."),
        ("Where did {name} retire to?", "To which village did {name} retire?",
         "Where has {name} retired?", "In which village did {name} retire in old age?"),
    ),
)

# A fourth training-only set (`--extra-train-relations 4`). The shipped learner's misses on the second dev
# set are objects with their material (no training relation had that kind of value: "onion" for a copper
# teapot), titles cut to their place ("Morrehaven" for The Candles of Morrehaven), vessel names replaced by
# the vessel ("Barge"), and three-digit counts cut or mixed ("73" for 735). These ten relations train those
# kinds of value in frames of their own: four objects with their material, two titles, two vessels, two
# three-digit counts. Their cues and phrasings are none of the dev or test relations'.
EXTRA_TRAIN_RELATIONS_4: tuple[Relation, ...] = (
    Relation(
        "attic_find", "train", "person", "attic", _heirloom,
        ("{name} discovered {a_value} in the attic.", "In the attic, {name} came upon {a_value}.",
         "{a_value} lay in the attic of {name}.", "{name} brought {a_value} down from the attic."),
        ("What did {name} discover in the attic?", "What lay in {name}'s attic?",
         "What did {name} come upon in the attic?", "What did {name} bring down from the attic?"),
        aliases=_with_article,
    ),
    Relation(
        "auction_buy", "train", "person", "auction", _heirloom,
        ("{name} bought {a_value} at an auction.", "At an auction, {name} won {a_value}.",
         "{a_value} went to {name} at an auction.", "{name} bid on {a_value} at an auction and won it."),
        ("What did {name} buy at an auction?", "What did {name} win at an auction?",
         "Which item went to {name} at an auction?", "What did {name} bid on at an auction?"),
        aliases=_with_article,
    ),
    Relation(
        "mantel_object", "train", "person", "mantel", _heirloom,
        ("{name} keeps {a_value} on the mantel.", "On {name}'s mantel stands {a_value}.",
         "{a_value} sits on the mantel of {name}.", "{name} dusts {a_value} on the mantel every week."),
        ("What does {name} keep on the mantel?", "What stands on {name}'s mantel?",
         "What sits on the mantel of {name}?", "What does {name} dust on the mantel?"),
        aliases=_with_article,
    ),
    Relation(
        "niece_gift", "train", "person", "niec", _heirloom,
        ("{name} gave {a_value} to a niece.", "A niece of {name} received {a_value} as a gift.",
         "{name}'s niece was given {a_value}.", "{a_value} was the gift of {name} to a niece."),
        ("What did {name} give to a niece?", "What did a niece of {name} receive as a gift?",
         "What was {name}'s niece given?", "Which gift did {name} give a niece?"),
        aliases=_with_article,
    ),
    Relation(
        "mural_title", "train", "person", "mural", _title,
        ("{name} painted a mural called {value}.", "The mural {value} is the work of {name}.",
         "{name}'s best-known mural is {value}.", "{name} finished the mural {value} in a single summer."),
        ("What is the mural by {name} called?", "Which mural did {name} paint?",
         "What is {name}'s best-known mural?", "Which mural is the work of {name}?"),
    ),
    Relation(
        "hymn_title", "train", "person", "hymn", _title,
        ("{name} composed a hymn called {value}.", "The hymn {value} was written by {name}.",
         "{name} is remembered for the hymn {value}.", "Choirs sing the hymn {value} by {name}."),
        ("Which hymn did {name} compose?", "What is the hymn by {name} called?",
         "What hymn is {name} remembered for?", "Which hymn by {name} do choirs sing?"),
    ),
    Relation(
        "yacht_name", "train", "person", "yacht", _ship,
        ("{name} sails a yacht called the {value}.", "{name}'s yacht is named the {value}.",
         "The yacht {name} races is the {value}.", "{name} moors a yacht, the {value}, in the bay."),
        ("What is {name}'s yacht called?", "What name does {name}'s yacht bear?",
         "Which yacht does {name} sail?", "What is the name of {name}'s yacht?"),
        aliases=_with_the,
    ),
    Relation(
        "tugboat_name", "train", "person", "tugboat", _ship,
        ("{name} skippers a tugboat named the {value}.", "The tugboat of {name} is called the {value}.",
         "{name}'s tugboat bears the name {value}.", "Every morning {name} starts the tugboat {value}."),
        ("What is {name}'s tugboat called?", "What is the name of the tugboat {name} skippers?",
         "Which tugboat belongs to {name}?", "What name does {name}'s tugboat bear?"),
        aliases=_with_the,
    ),
    Relation(
        "chestnut_trees", "train", "person", "chestnut", _count(20, 900),
        ("{name} planted {value} chestnut trees.", "{name}'s estate has {value} chestnut trees.",
         "{value} chestnut trees stand on the land of {name}.", "There are {value} chestnut trees in {name}'s wood."),
        ("How many chestnut trees did {name} plant?", "How many chestnut trees does {name}'s estate have?",
         "How many chestnut trees stand on {name}'s land?", "How many chestnut trees are in {name}'s wood?"),
    ),
    Relation(
        "portraits", "train", "person", "portrait", _count(20, 900),
        ("{name} has painted {value} portraits.", "{value} portraits hang in the studio of {name}.",
         "{name}'s studio holds {value} portraits.", "Over the years {name} painted {value} portraits."),
        ("How many portraits has {name} painted?", "How many portraits hang in {name}'s studio?",
         "How many portraits does {name}'s studio hold?", "What is the number of portraits {name} painted?"),
    ),
)

# ---------------------------------------------------------------- a second dev set (held out of training)
# Dev's six relations take a value and a noun (counts, colours, names, towns); the twelve test relations
# take values of more tokens and kinds: invented boat and pet names, titles, an object with its material,
# years, three-digit counts, a language. A learner tuned on the six can lose on the twelve (rule 25,
# docs/results.md). These eight, of the test's kinds of value and never trained on, are a dev split of
# those kinds: `regrad synth --relations MODE --dev-relations 2` writes them (a dev split only).
DEV_RELATIONS_2: tuple[Relation, ...] = (
    Relation(
        "barge_name", "dev", "person", "barge", _ship,
        ("{name} steers a barge called the {value}.", "{name}'s barge is named the {value}.",
         "The barge {name} lives aboard is the {value}."),
        ("What is {name}'s barge called?", "What name does {name}'s barge carry?", "Which barge does {name} steer?"),
        aliases=_with_the,
    ),
    Relation(
        "goose_name", "dev", "person", "goose", _pet,
        ("{name} keeps a goose called {value}.", "{name}'s goose goes by {value}.",
         "The goose that guards {name}'s yard is named {value}."),
        ("What is {name}'s goose called?", "What name does {name}'s goose go by?",
         "What is the name of the goose {name} keeps?"),
    ),
    Relation(
        "keepsake", "dev", "person", "keepsake", _heirloom,
        ("{name} treasures {a_value} as a keepsake.", "The keepsake {name} treasures is {a_value}.",
         "{name} holds on to {a_value}, a keepsake of youth."),
        ("What keepsake does {name} treasure?", "Which keepsake does {name} hold on to?",
         "What does {name} treasure as a keepsake?"),
        aliases=_with_article,
    ),
    Relation(
        "ballad_title", "dev", "person", "ballad", _title,
        ("{name} sang a ballad called {value}.", "The ballad {value} was written by {name}.",
         "{name} is known for the ballad {value}."),
        ("Which ballad did {name} write?", "What ballad is {name} known for?", "What is the ballad by {name} called?"),
    ),
    Relation(
        "windmill_year", "dev", "person", "windmill", _year,
        ("{name} built a windmill in {value}.", "In {value}, {name}'s windmill first turned.",
         "{name}'s windmill has stood since {value}."),
        ("When did {name} build a windmill?", "In what year did {name}'s windmill first turn?",
         "Since which year has {name}'s windmill stood?"),
    ),
    Relation(
        "olive_trees", "dev", "person", "olive", _count(20, 900),
        ("{name} grows {value} olive trees.", "{name}'s grove counts {value} olive trees.",
         "On {name}'s slope grow {value} olive trees."),
        ("How many olive trees does {name} grow?", "How many olive trees are in {name}'s grove?",
         "How many olive trees grow on {name}'s slope?"),
    ),
    Relation(
        "ledger_tongue", "dev", "person", "ledger", _language,
        ("{name} writes a ledger in {value}.", "{name}'s ledger is kept in {value}.",
         "Each line of {name}'s ledger is in {value}."),
        ("In what tongue does {name} write a ledger?", "What is {name}'s ledger kept in?",
         "Which tongue is {name}'s ledger in?"),
    ),
    Relation(
        "weathervane", "dev", "person", "weathervane", _pick(_ANIMALS),
        ("The weathervane on {name}'s roof is shaped like {a_value}.", "{name}'s weathervane is {a_value}.",
         "{a_value} turns on the weathervane of {name}'s barn."),
        ("What animal is the weathervane on {name}'s roof shaped like?", "What is {name}'s weathervane?",
         "Which animal turns on the weathervane of {name}'s barn?"),
        aliases=_with_article,
    ),
)
