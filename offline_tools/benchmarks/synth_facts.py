"""The parts every synthetic benchmark is built from: invented names, places and organisations, the six
attributes of the people benchmark with their phrasings, filling a phrasing in, and writing JSON lines.

offline_tools/benchmarks/synth.py (the people benchmark), synth_varied.py (more phrasings and kinds of fact) and
synth_relations.py (the composition and novel-relation benchmarks) build on this module; it imports none
of them.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from offline_tools.files import atomic_text

__all__ = ["ATTRIBUTES", "Attribute", "NAME_STYLES", "person_name", "place", "organisation", "article",
           "fill_template", "write_jsonl"]

# ---------------------------------------------------------------- invented names
NAME_STYLES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    # style: (first-name onsets, first-name endings, surname stems, surname endings)
    "anglo": (("Al", "Bren", "Cor", "Dar", "El", "Fen", "Gar", "Hol", "Jas", "Lor", "Mer", "Tam", "Wyn", "Ros"),
              ("a", "en", "ric", "ley", "wyn", "ard", "is", "ton", "iel", "ette"),
              ("Ash", "Black", "Crane", "Dun", "Fair", "Hollow", "Mar", "Pem", "Quill", "Thorn", "Whit", "Brack"),
              ("ford", "wick", "by", "ley", "worth", "ham", "stone", "more", "ridge", "cott")),
    "slavic": (("Ka", "Mi", "Vla", "Bo", "Sve", "Ya", "Ra", "Dra", "Lu", "Zo", "Mi", "Sta"),
               ("ra", "lan", "dek", "mir", "ta", "slav", "na", "sha", "vo", "rin"),
               ("Kov", "Dren", "Vol", "Pet", "Zor", "Bel", "Mrak", "Gor", "Lis", "Tchar", "Vrab", "Kras"),
               ("ski", "ov", "enko", "ova", "ich", "ak", "insky", "arov", "ec", "ek")),
    "japanese": (("Ha", "Ki", "Mo", "Sa", "To", "Yu", "Na", "Ri", "Ao", "Ke", "Shi", "Fu"),
                 ("ru", "mi", "ko", "ta", "ya", "shi", "ne", "ka", "to", "ri"),
                 ("Hara", "Kuro", "Mori", "Naka", "Saka", "Taki", "Yama", "Ishi", "Kawa", "Fuji", "Oka", "Tsu"),
                 ("moto", "sawa", "gawa", "shima", "mura", "zaki", "no", "ta", "bayashi", "uchi")),
    "romance": (("Lu", "Ma", "Gi", "Ro", "Fe", "Ca", "Al", "Be", "Da", "Se", "Vi", "Or"),
                ("cia", "rio", "ana", "berto", "lina", "cio", "ela", "nzo", "dro", "ssa"),
                ("Bel", "Cas", "Fer", "Lom", "Mar", "Ros", "Sal", "Tor", "Val", "Guar", "Pes", "Ner"),
                ("ini", "ez", "eira", "ardi", "etti", "ano", "ucci", "ado", "ona", "elli")),
    "nordic": (("Sig", "Ast", "Bjor", "Ing", "Tor", "Hal", "Sol", "Ey", "Rag", "Frey", "Dag", "Ulf"),
               ("rid", "ne", "vald", "a", "stein", "dis", "mund", "ja", "ar", "hild"),
               ("Lund", "Berg", "Dahl", "Strand", "Holm", "Vik", "Aas", "Fjell", "Mo", "Eng", "Sol", "Hav"),
               ("gren", "sen", "dottir", "qvist", "by", "heim", "stad", "ness", "vold", "rud")),
}
_INITIALS = "ABCDEFGHJKLMNPRSTVW"
_PLACE_ROOTS = ("Vel", "Dor", "Marn", "Thal", "Brisk", "Quen", "Ost", "Carr", "Lim", "Fel", "Gorm", "Ysk",
                "Prav", "Hesk", "Wend", "Ral", "Sarn", "Tov", "Elb", "Kest", "Morr", "Niv", "Ard", "Zel")
_PLACE_MIDS = ("a", "e", "o", "i", "", "en", "ar", "il")
_PLACE_ENDS = ("mora", "ford", "haven", "berg", "wick", "stad", "moor", "dale", "ton", "vik", "port", "field",
               "burg", "gate", "holm", "ley")
_ORG_KINDS = ("Institute", "Company", "Foundation", "Works", "Laboratories", "Trading House", "Society",
              "Shipyard", "Press", "Observatory", "Bank", "Museum")
_OCCUPATIONS = (
    "botanist", "cartographer", "glassblower", "locksmith", "astronomer", "beekeeper", "bookbinder",
    "violin maker", "geologist", "ferry captain", "clockmaker", "falconer", "puppeteer", "stonemason",
    "perfumer", "lighthouse keeper", "cooper", "saddler", "archivist", "chemist", "surveyor", "weaver",
    "mapmaker", "shipwright", "tanner", "jeweller", "engraver", "potter", "brewer", "cellist",
    "organist", "sculptor", "translator", "librarian", "veterinarian", "pharmacist", "midwife",
    "zoologist", "meteorologist", "typesetter", "miller", "blacksmith", "chandler", "furrier",
    "mycologist", "ornithologist", "hatter", "tailor",
)


def person_name(rng: random.Random, style: str | None = None, initial: float = 0.15) -> str:
    """An invented full name in one naming style (a random style when `style` is None), with a middle
    initial ("Sata G. Harasawa") with probability `initial`."""
    style = style or rng.choice(sorted(NAME_STYLES))
    onsets, endings, stems, tails = NAME_STYLES[style]
    first = rng.choice(onsets) + rng.choice(endings)
    last = rng.choice(stems) + rng.choice(tails)
    if rng.random() < initial:
        return f"{first} {rng.choice(_INITIALS)}. {last}"
    return f"{first} {last}"


def place(rng: random.Random) -> str:
    """An invented one-word town name built from syllables, e.g. "Velamora"."""
    return rng.choice(_PLACE_ROOTS) + rng.choice(_PLACE_MIDS) + rng.choice(_PLACE_ENDS)


def organisation(rng: random.Random) -> str:
    """An invented organisation: a town name and a kind, e.g. "Velamora Society"."""
    return f"{place(rng)} {rng.choice(_ORG_KINDS)}"


def article(word: str) -> str:
    """`word` with its indefinite article: "an oboe", "a harp"."""
    return f"an {word}" if word[0].lower() in "aeiou" else f"a {word}"


# ---------------------------------------------------------------- attributes and phrasings
@dataclass(frozen=True)
class Attribute:
    """One kind of fact: how to draw a value, how passages state it, how questions ask it.

    `statements` and `questions` are format strings over {name} and {value} ({a_value}: with its
    article). The last of each is held out for the test split.
    """

    key: str
    draw: Callable[[random.Random], str]
    statements: tuple[str, ...]
    questions: tuple[str, ...]
    aliases: Callable[[str], list[str]] = field(default=lambda value: [value])


ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute(
        "birthplace", place,
        ("{name} was born in {value}.", "{name} was born in the town of {value}.",
         "{value} is the birthplace of {name}.", "{name}'s birthplace is the town of {value}.",
         "The town of {value} is where {name} was born.", "{name} came into the world in {value}.",
         "{name} is a native of {value}, where {name} was born.", "{name} was born and raised in {value}.",
         "{value} is the town {name} was born in.", "Records list {value} as {name}'s place of birth.",
         "Born in {value}, {name} left it young.", "{name}'s place of birth is {value}.",
         "{name} hails from {value}, the town of {name}'s birth.", "{name} first saw the light of day in {value}."),
        ("Where was {name} born?", "In which town was {name} born?", "What is the birthplace of {name}?",
         "{name} was born in which town?", "Name the town where {name} was born.",
         "What town is the birthplace of {name}?", "Where is {name} from originally?",
         "What is {name}'s place of birth?",
         "In what town was {name} born?", "Which town is {name}'s birthplace?", "Which town was {name} born in?",
         "Which town did {name} come from at birth?"),
    ),
    Attribute(
        "birth_year", lambda rng: str(rng.randint(1705, 1995)),
        ("{name} was born in the year {value}.", "{name}'s year of birth is {value}.",
         "In {value}, {name} was born.", "{name} was born in {value}.",
         "The year {value} saw the birth of {name}.", "{name}, born in {value}, grew up quickly.",
         "Records give {value} as the year {name} was born.", "{name} was born back in {value}.",
         "The birth year of {name} is {value}.",
         "{name} (born {value}) is the subject of this entry.", "{value} is the year {name} was born.",
         "{name} was born in {value}, according to the parish register.", "{name}'s birth came in {value}.",
         "{name} arrived into the world in {value}."),
        ("In what year was {name} born?", "When was {name} born?", "What is {name}'s year of birth?",
         "{name} was born in which year?", "In which year was {name} born?",
         "What year was {name} born in?", "What is the birth year of {name}?",
         "In which year did {name} come into the world?",
         "What year did {name} arrive?", "{name} was born when?", "Which year saw the birth of {name}?",
         "Which year is recorded as {name}'s birth year?"),
    ),
    Attribute(
        "occupation", lambda rng: rng.choice(_OCCUPATIONS),
        ("{name} works as {a_value}.", "{name} is {a_value} by profession.", "By trade, {name} is {a_value}.",
         "{name} earns a living as {a_value}.", "The profession of {name} is {value}.",
         "{name} has worked as {a_value} for many years.", "{name}'s occupation is {value}.",
         "{name} trained as {a_value}.", "{name} is {a_value}.", "{name} makes a living as {a_value}.",
         "The job of {name} is that of {a_value}.", "{name} practises as {a_value} in town.",
         "{name}'s profession: {value}.", "People know {name} as {a_value} by trade."),
        ("What is {name}'s occupation?", "What does {name} do for a living?", "What is the profession of {name}?",
         "What job does {name} have?", "What is {name}'s trade?", "What kind of work does {name} do?",
         "What is {name}'s job?", "What does {name} work as?", "How does {name} earn a living?",
         "What profession does {name} practise?", "What is {name} by trade?",
         "By profession, what is {name}?"),
    ),
    Attribute(
        "employer", organisation,
        ("{name} works for the {value}.", "{name} is employed by the {value}.", "The {value} employs {name}.",
         "{name}'s employer is the {value}.", "{name} has a job at the {value}.",
         "{name} is on the staff of the {value}.", "{name} draws a salary from the {value}.",
         "{name} holds a post at the {value}.", "{name} is a staff member of the {value}.",
         "The {value} is where {name} works.", "{name} takes wages from the {value}.",
         "{name} is on the payroll of the {value}.", "{name} was hired by the {value}.",
         "At the {value}, {name} is an employee."),
        ("Who employs {name}?", "Which organization does {name} work for?", "Who is {name}'s employer?",
         "For which organization does {name} work?", "Where does {name} have a job?",
         "Which organization has {name} on its staff?", "Which organization employs {name}?",
         "Where does {name} work?", "Who is {name} employed by?",
         "Which organization pays {name}'s wages?", "Who hired {name}?",
         "Which employer pays {name}'s salary?"),
        aliases=lambda v: [v, f"the {v}"],
    ),
    Attribute(
        "spouse", person_name,
        ("{name} is married to {value}.", "{name}'s spouse is {value}.", "{value} is the spouse of {name}.",
         "{name} married {value}.", "{name} and {value} are husband and wife.",
         "{name} wed {value} in a small ceremony.", "The spouse of {name} is {value}.",
         "{name} is the husband or wife of {value}.", "{value} married {name}.",
         "{name} and {value} are married.", "{name}'s partner in marriage is {value}.",
         "{name} took {value} as a spouse.", "{value} and {name} have been wed for a long time.",
         "{name} has been married to {value} for years."),
        ("Who is {name} married to?", "Who is the spouse of {name}?", "Whom did {name} marry?",
         "Who is {name}'s spouse?", "To whom is {name} married?", "Who did {name} wed?",
         "Who is {name}'s husband or wife?", "Who did {name} marry?", "Whom is {name} wed to?",
         "Who is {name}'s partner in marriage?", "Who is married to {name}?",
         "Who is the person {name} is married to?"),
    ),
    Attribute(
        "residence", place,
        ("{name} lives in {value}.", "{name} resides in the town of {value}.", "{name}'s home is in {value}.",
         "Today {name} lives in the town of {value}.", "{name} makes a home in {value}.",
         "{value} is where {name} lives now.", "{name} has settled in {value}.",
         "{name} lives in the town of {value}.", "{name} now lives in {value}.",
         "The home of {name} is in {value}.", "{name} has a house in {value} and lives there.",
         "{name} resides in {value}.", "These days {name} lives in {value}.",
         "{name} currently dwells in {value}."),
        ("Where does {name} live?", "In which town does {name} live?", "Where is {name}'s home?",
         "Which town does {name} reside in?", "Where does {name} reside?",
         "In what town does {name} make a home?", "In which town does {name} reside?", "Where is {name} living?",
         "What town does {name} live in?",
         "Where has {name} settled?", "Where does {name} make a home?",
         "Which town is {name} living in now?"),
    ),
)



def fill_template(template: str, name: str, value: str) -> str:
    """A phrasing with {name}, {value} and {a_value} filled in, its first letter capitalised."""
    text = template.format(name=name, value=value, a_value=article(value))
    return text[0].upper() + text[1:]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """`rows` as JSON lines, written atomically (a crash never leaves half a file)."""
    with atomic_text(path) as handle:
        handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
