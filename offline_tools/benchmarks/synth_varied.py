"""Extra phrasings and attribute types for *training-only* invented people (`regrad synth --varied`).

The benchmark (`offline_tools.benchmarks.synth.ATTRIBUTES`) states each attribute in 13 training phrasings and
asks it in 11; its test people are stated and asked in one more phrasing each, held out. A learner
trained on few phrasings answers new facts in them and not in others, so a training set that is meant
to generalise needs many more ways of saying and asking the same thing. `--varied` people draw:

- train: the benchmark's training phrasings *plus* `TRAIN_PHRASINGS` below, and besides the six
  benchmark attributes four more (`EXTRA_ATTRIBUTES`), two of which share a value type with a
  benchmark attribute (a sibling is a person like a spouse, the year someone moved is a year like a
  birth year): a fact of the wrong attribute is then a real distractor, as the two towns already are.
- train with `--more-phrasings`: also `MORE_TRAIN_PHRASINGS`, a second batch (9 statements and 7
  questions per benchmark attribute) in other sentence shapes.
- dev: only `DEV_PHRASINGS`, which no training person and no test person uses, and only the six
  benchmark attributes: a validation split that measures unseen phrasings the way the benchmark's
  test split does, without touching the test split.
- dev with `--wide-dev`: `DEV_PHRASINGS` and `WIDE_DEV_PHRASINGS` (10 statements and 10 questions per
  attribute in all). The test split is one held-out phrasing per attribute, so a dev split of two
  predicts it poorly (two learners 2 points apart on the narrow dev split were 2.7 apart the other
  way on test); a wide one averages over many unseen phrasings, which is what a choice between
  learners should rest on.

None of these equals a benchmark test phrasing (held out), and the benchmark's own files (`--varied`
off) do not change: `tests/offline_tools/test_synth_varied.py` checks both.
"""

from __future__ import annotations

from offline_tools.benchmarks.synth_facts import ATTRIBUTES, Attribute, person_name, place

__all__ = ["TRAIN_PHRASINGS", "MORE_TRAIN_PHRASINGS", "DEV_PHRASINGS", "WIDE_DEV_PHRASINGS", "EXTRA_ATTRIBUTES",
           "varied_phrasings", "varied_attributes"]

# attribute key -> (extra statements, extra questions), training people only
TRAIN_PHRASINGS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "birthplace": (
        ("{name}'s birth took place in {value}.", "In {value}, {name} was born.",
         "{name}, a child of {value}, was born there.", "It was in {value} that {name} was born.",
         "{name} was born not far from the market square of {value}.",
         "{value}: the town where {name} was born.", "The birth of {name} happened in {value}.",
         "Before moving away, {name} was born and spent a childhood in {value}.",
         "{name} (born in {value}) keeps a house elsewhere.", "Birthplace of {name}: {value}."),
        ("Where did {name} come into the world?", "{name}'s birthplace is which town?",
         "Where was {name} born, which town?", "In what place was {name} born?", "Which town saw the birth of {name}?",
         "Tell me where {name} was born.", "What town was {name} born in?"),
    ),
    "birth_year": (
        ("It was in {value} that {name} was born.",
         "Born in {value}, {name} is the subject of this note.", "{value} was the year of {name}'s birth.",
         "{name}'s birth year: {value}.", "The parish register dates {name}'s birth to {value}.",
         "In the year {value}, {name} was born to a large family.", "{name} was born during the year {value}.",
         "Year of birth of {name}: {value}.", "The records show that {name} was born in {value}."),
        ("When was {name} born, in what year?", "In which year did {name} come into the world?",
         "Which year was {name} born in?", "{name}'s birth year is what?", "Tell me the year {name} was born.",
         "What was the year of {name}'s birth?", "How many years ago, in what year, was {name} born?",
         "The birth of {name} took place in which year?"),
    ),
    "occupation": (
        ("{name}'s trade is that of {a_value}.", "As {a_value}, {name} is well regarded.",
         "{name} has long been {a_value}.", "For a living, {name} works as {a_value}.",
         "Occupation of {name}: {value}.", "{name}, {a_value}, keeps a workshop in town.",
         "The work {name} does is that of {a_value}.",
         "{name} spends each working day as {a_value}.", "{name} took up work as {a_value} early on."),
        ("What is {name}'s line of work?", "What trade does {name} follow?", "What does {name} do for work?",
         "{name} works as what?", "What kind of job does {name} hold?", "What is the occupation of {name}?",
         "As what does {name} earn a living?", "In what profession does {name} work?"),
    ),
    "employer": (
        ("The {value} has employed {name} for years.",
         "{name} earns wages at the {value}.", "Employer of {name}: the {value}.",
         "It is the {value} that employs {name}.", "{name} went to work for the {value}.",
         "Each morning {name} reports to the {value}, the employer.", "{name}'s job is with the {value}.",
         "The {value} counts {name} among its staff.", "{name} is paid by the {value}."),
        ("Which organization is {name}'s employer?", "Where is {name} employed?",
         "{name} works for which organization?", "Which organization is {name} employed by?",
         "Who gives {name} a job?", "By which organization is {name} employed?",
         "Which organization does {name} draw wages from?"),
    ),
    "spouse": (
        ("{value} is married to {name}.", "{name}'s husband or wife is {value}.",
         "Married to {value}, {name} lives a quiet life.", "{name} and {value} got married long ago.",
         "Spouse of {name}: {value}.", "The marriage of {name} and {value} took place in spring.",
         "{value} wed {name}.", "{name} is the spouse of {value}.",
         "{name} shares a home with {value}, the person {name} married.", "It was {value} whom {name} married."),
        ("Whom has {name} married?", "Who is {name} wed to?", "{name} is married to whom?",
         "Who is the husband or wife of {name}?", "Which person did {name} marry?", "Who married {name}?",
         "Who is the spouse of {name}, by name?", "To whom did {name} get married?"),
    ),
    "residence": (
        ("{name} lives today in {value}.", "The town {name} lives in is {value}.",
         "{value} is home to {name}.", "Residence of {name}: {value}.",
         "These days, {value} is where {name} resides.", "{name} moved to {value} and lives there still.",
         "In {value}, {name} keeps a home.", "{name} is a resident of {value}.",
         "At present {name} lives in {value}."),
        ("In what town does {name} live?", "Where does {name} have a home?", "Where is {name}'s residence?",
         "{name} lives in which town?", "What is {name}'s town of residence?", "Where does {name} reside now?",
         "Which town is home to {name}?", "In which town is {name}'s home?"),
    ),
}

# attribute key -> (statements, questions): a second batch for `--more-phrasings`, on top of the
# first; longer sentences, the name late, relative clauses, asides, and questions asked indirectly
MORE_TRAIN_PHRASINGS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "birthplace": (
        ("Ask anyone in {value} and they will say {name} was born there.",
         "The child who would become known as {name} was born in {value}.",
         "Although {name} has travelled widely, {name} was born in {value}.",
         "{value}, a small town by the river, is where {name} was born.",
         "Of all the people born in {value}, {name} is the best known.",
         "A plaque in {value} marks the house where {name} was born.",
         "{name}'s story starts with a birth in {value}.",
         "Whoever asks where {name} was born is told: {value}.",
         "{name} was delivered by a midwife in {value}."),
        ("Do you know which town {name} was born in?", "Can you tell me the town of {name}'s birth?",
         "I'd like to know where {name} was born.", "{name}: born in which town?",
         "The town where {name} was born is called what?", "Which town can claim {name} as born there?",
         "Which town's records show {name}'s birth?"),
    ),
    "birth_year": (
        ("The year was {value} when {name} was born.",
         "Family papers put the birth of {name} in {value}.",
         "Ask {name}'s family and they will name {value} as the year of the birth.",
         "{name} arrived in {value}, the youngest of three.",
         "A baptism entry from {value} records the newborn {name}.",
         "The calendar read {value} on the day {name} was born.",
         "{name} celebrates birthdays counted from {value}.",
         "Since {name}'s birth in {value}, the town has grown.",
         "Born {value}: {name}."),
        ("Do you know in which year {name} was born?", "Can you tell me {name}'s year of birth?",
         "I'd like to know the year {name} was born.", "{name}: born in which year?",
         "The year of {name}'s birth is what?", "From which year do {name}'s birthdays count?",
         "What year was it when {name} was born?"),
    ),
    "occupation": (
        ("Neighbours know {name} as {a_value}.", "{name} spent years learning to be {a_value}.",
         "Whatever else {name} does, {name} is {a_value} first.",
         "The sign over {name}'s door says: {value}.",
         "Ask what {name} does and the answer is that {name} is {a_value}.",
         "Work as {a_value} fills most of {name}'s days.",
         "{name}, who is {a_value}, keeps long hours.",
         "Everyone who hires {a_value} in the district knows {name}.",
         "As a working {value}, {name} has many clients."),
        ("Do you know what {name} does for work?", "Can you tell me {name}'s occupation?",
         "I'd like to know what {name} works as.", "{name}: what occupation?",
         "The occupation of {name} is what?", "What work fills {name}'s days?",
         "In which trade does {name} earn money?"),
    ),
    "employer": (
        ("The {value} is the organization {name} works for.",
         "Every weekday, {name} goes in to work at the {value}.",
         "Having joined the {value} young, {name} has stayed there.",
         "The staff list of the {value} includes {name}.",
         "{name} spends working hours at the {value}.",
         "A badge from the {value} hangs on {name}'s coat.",
         "The {value} took {name} on and keeps {name} busy.",
         "{name} has worked at the {value} since joining it.",
         "Asked about work, {name} names the {value}."),
        ("Do you know which organization {name} works for?", "Can you tell me who employs {name}?",
         "I'd like to know where {name} works.", "{name}: employed by which organization?",
         "The organization that {name} works for is which?", "At which organization does {name} work?",
         "Which organization has {name} as a worker?"),
    ),
    "spouse": (
        ("Years ago, {name} and {value} married in a quiet ceremony.",
         "The person {name} married is {value}.",
         "Friends of {name} often visit {name} and {value}, who are married.",
         "{value} said yes when {name} proposed, and they married.",
         "Of everyone {name} knows, the one {name} married is {value}.",
         "A wedding photograph shows {name} beside {value} on their wedding day.",
         "{name}'s marriage is to {value}.",
         "{name} lives with {value}, whom {name} married.",
         "Married: {name} and {value}."),
        ("Do you know who {name} is married to?", "Can you tell me the name of {name}'s spouse?",
         "I'd like to know whom {name} married.", "{name}: married to whom?",
         "Who shares a marriage with {name}?", "Who was it that {name} married?",
         "Whose spouse is {name}, by name?"),
    ),
    "residence": (
        ("Most days you will find {name} at home in {value}.",
         "After years elsewhere, {name} lives in {value} now.",
         "The house {name} lives in stands in {value}.",
         "{name} sleeps, eats and lives in {value}.",
         "A letter to {name} goes to {value}, where {name} lives.",
         "Of all the towns, {name} chose {value} to live in.",
         "{name}'s present home town is {value}.",
         "Neighbours in {value} see {name} every morning at home.",
         "Lives in: {value} ({name})."),
        ("Do you know where {name} lives?", "Can you tell me {name}'s town of residence?",
         "I'd like to know which town {name} lives in.", "{name}: lives in which town?",
         "The town {name} lives in is called what?", "Which town has {name}'s house in it?",
         "Where would a letter to {name} be sent?"),
    ),
}

# attribute key -> (statements, questions) of the varied set's dev people only: unseen in training and test
DEV_PHRASINGS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "birthplace": (("The birth records of {value} include {name}.", "{name} began life in {value}."),
                   ("Which town was the place of {name}'s birth?", "Where did {name}'s life begin?")),
    "birth_year": (("{name} was born in the year of {value}.", "The year {name} was born was {value}."),
                   ("What year saw {name} born?", "Born in which year was {name}?")),
    "occupation": (("By occupation {name} is {a_value}.", "{name} follows the trade of {a_value}."),
                   ("What is the trade of {name}?", "What line of work is {name} in?")),
    "employer": (("{name} is employed at the {value}.", "The {value} is {name}'s employer."),
                 ("Which organization gives {name} work?", "Who is the employer of {name}?")),
    "spouse": (("{name} lives in marriage with {value}.", "{value} is {name}'s spouse."),
               ("Who is {name}'s partner in life?", "Who became {name}'s spouse?")),
    "residence": (("{value} is the town {name} lives in.", "{name} makes a life in {value}."),
                  ("Which town does {name} call home?", "Where is {name}'s home town now?")),
}

_SCHOOL_KINDS = ("College", "Academy", "University", "School of Arts", "Polytechnic", "Seminary")
_INSTRUMENTS = ("oboe", "harp", "lute", "accordion", "bassoon", "zither", "trombone", "viola", "mandolin",
                "bagpipes", "harpsichord", "clarinet", "tuba", "banjo", "dulcimer", "flute", "cornet", "sitar")

# more kinds of fact, training people only (the last phrasing of each is theirs too: nothing is held out)
EXTRA_ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute(
        "sibling", person_name,
        ("{name}'s sibling is {value}.", "{name} has a sibling named {value}.", "{value} is {name}'s sibling.",
         "{name} and {value} are siblings.", "{name} grew up with a sibling, {value}.",
         "The sibling of {name} is {value}.", "{value} is the brother or sister of {name}."),
        ("Who is {name}'s sibling?", "What is the name of {name}'s sibling?", "Who is the sibling of {name}?",
         "Who is {name}'s brother or sister?", "Which person is {name}'s sibling?"),
    ),
    Attribute(
        "school", lambda rng: f"{place(rng)} {rng.choice(_SCHOOL_KINDS)}",
        ("{name} studied at the {value}.", "{name} is a graduate of the {value}.",
         "{name} was educated at the {value}.", "The {value} is where {name} studied.",
         "{name} attended the {value}.", "{name}'s alma mater is the {value}.",
         "{name} took a degree at the {value}."),
        ("Where did {name} study?", "Which school did {name} attend?", "Where was {name} educated?",
         "What is {name}'s alma mater?", "Which school did {name} graduate from?"),
        aliases=lambda v: [v, f"the {v}"],
    ),
    Attribute(
        "instrument", lambda rng: rng.choice(_INSTRUMENTS),
        ("{name} plays the {value}.", "{name}'s instrument is the {value}.", "The {value} is {name}'s instrument.",
         "{name} has played the {value} since childhood.", "In the evenings {name} plays the {value}.",
         "{name} is a keen player of the {value}.", "The instrument {name} plays is the {value}."),
        ("What instrument does {name} play?", "Which instrument is {name}'s?", "What does {name} play?",
         "Which musical instrument does {name} play?", "What is {name}'s instrument?"),
    ),
    Attribute(
        "moved_year", lambda rng: str(rng.randint(1720, 2015)),
        ("{name} moved house in {value}.", "In {value}, {name} moved to a new town.",
         "{name} changed towns in {value}.", "The year {name} moved away was {value}.",
         "{name} relocated in {value}.", "{value} is the year {name} moved.",
         "{name} left for another town in {value}."),
        ("In what year did {name} move?", "When did {name} move to a new town?", "Which year did {name} relocate?",
         "In which year did {name} change towns?", "What year did {name} move away?"),
    ),
)


# attribute key -> (statements, questions) added to DEV_PHRASINGS for `--wide-dev`: 8 + 8 more, unseen in
# training and test, so that a dev split averages over many unseen phrasings instead of two
WIDE_DEV_PHRASINGS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "birthplace": (
        ("{value} was the town of {name}'s birth.", "The town that {name} was born in is {value}.",
         "Long ago, {name} entered life in {value}.", "The birth certificate of {name} names {value} as the town.",
         "{name} was brought into the world at {value}.", "The hometown of {name}, where {name} was born, is {value}.",
         "Place where {name} was born: {value}.", "{name} spent the first day of life in {value}, the town of birth."),
        ("Which town is the one {name} was born in?", "Where did {name}'s birth take place?",
         "What is the name of the town where {name} was born?", "{name} is a native of which town?",
         "Where was {name} brought into the world?", "Which town issued {name}'s birth certificate?",
         "What was {name}'s town of birth?", "Which is {name}'s hometown, where {name} was born?"),
    ),
    "birth_year": (
        ("{name}'s birth is dated {value}.", "The year of {name}'s birth was {value}.",
         "{name} came along in {value}.", "{name}, whose birth year is {value}, lives quietly.",
         "A register entry of {value} notes the birth of {name}.",
         "{name} was a baby in {value}, the year of the birth.", "Born: {value}. Name: {name}.",
         "{name} has been alive since the year {value}."),
        ("What is the year in which {name} was born?", "{name} was born in what year?",
         "When, by year, was {name} born?",
         "What year is {name}'s birth dated to?", "Which year was the year of {name}'s birth?",
         "Since which year has {name} been alive?", "In which year did {name}'s life begin?",
         "What birth year does {name} have?"),
    ),
    "occupation": (
        ("{name}'s work is that of {a_value}.", "{name} earns money as {a_value}.",
         "{name} is known in town as {a_value}.",
         "The line of work of {name} is {value}.", "{name} chose to become {a_value} and still is one.",
         "By calling, {name} is {a_value}.", "{name} is employed as {a_value}.", "Job title of {name}: {value}."),
        ("What does {name} do to earn money?", "What is {name}'s calling?", "What is {name} employed as?",
         "Which occupation does {name} have?", "What kind of worker is {name}?", "What is {name}'s job title?",
         "Which profession is {name}'s?", "What does {name} do all day at work?"),
    ),
    "employer": (
        ("{name} has worked for the {value} for some years.", "The {value} gives {name} a job.",
         "{name} is a worker at the {value}.", "{name}'s wages come from the {value}.",
         "Among the employees of the {value} is {name}.", "{name} works in the offices of the {value}.",
         "Workplace of {name}: the {value}.", "{name} joined the {value} as staff and works there."),
        ("Which organization is {name} working for?", "At what organization is {name} on staff?",
         "What is the name of {name}'s employer?", "Where does {name} go to work?",
         "What organization does {name} work at?", "{name} is employed by which organization?",
         "Whose staff does {name} belong to?", "Which organization is {name}'s workplace?"),
    ),
    "spouse": (
        ("{name} is wedded to {value}.", "{name} chose {value} as a partner for life and married.",
         "{value} and {name} are a married couple.", "{name} exchanged vows with {value}.",
         "The person married to {name} is {value}.", "At the wedding, {name} married {value}.",
         "{name} has {value} as a spouse.", "Husband or wife of {name}: {value}."),
        ("Whom is {name} married to?", "Who did {name} exchange vows with?", "Who is {name} wedded to?",
         "Name {name}'s spouse.", "Who is the married partner of {name}?", "Which person is {name}'s spouse?",
         "Who is the one {name} married?", "Who is in a marriage with {name}?"),
    ),
    "residence": (
        ("{name} has lived in {value} for some time.", "{name}'s house is in {value}.",
         "{name} is settled in {value} these days.", "The town where {name} lives is {value}.",
         "{name} rents rooms in {value} and lives there.", "Home for {name} is {value}.",
         "Town of residence of {name}: {value}.", "{name} stays in {value}, where {name} lives."),
        ("Where does {name} keep house?", "Which town has {name} as a resident?", "In what town is {name}'s house?",
         "Where does {name} live these days?", "What is the town {name} lives in?", "Where is {name} a resident?",
         "Which town is {name}'s place of residence?", "Where can {name} be found at home?"),
    ),
}


def varied_phrasings(attribute: Attribute, split: str, more: bool = False,
                     wide: bool = False) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(statements, questions) a `--varied` person of `split` is written in.

    train: the benchmark's training phrasings and the extra ones (an extra attribute: all its own), and
    with `more` the second batch too; dev: the dev-only phrasings, with `wide` the wide batch too. A
    varied set has no test split (the benchmark's test is the test).
    """
    if split == "dev":
        statements, questions = DEV_PHRASINGS[attribute.key]
        if wide:
            wide_statements, wide_questions = WIDE_DEV_PHRASINGS[attribute.key]
            statements, questions = statements + wide_statements, questions + wide_questions
        return statements, questions
    if attribute.key not in TRAIN_PHRASINGS:
        return attribute.statements, attribute.questions
    statements, questions = TRAIN_PHRASINGS[attribute.key]
    if more:
        more_statements, more_questions = MORE_TRAIN_PHRASINGS[attribute.key]
        statements, questions = statements + more_statements, questions + more_questions
    return attribute.statements[:-1] + statements, attribute.questions[:-1] + questions


def varied_attributes(split: str) -> tuple[Attribute, ...]:
    """The kinds of fact a `--varied` person of `split` may have: dev keeps to the benchmark's six."""
    return ATTRIBUTES + EXTRA_ATTRIBUTES if split == "train" else ATTRIBUTES

