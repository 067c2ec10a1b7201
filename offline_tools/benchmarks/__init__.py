"""The synthetic benchmarks: invented people (synth.py, with more phrasings in synth_varied.py) and the
composition and novel-relation sets (synth_relations.py over the relation table), built from the shared
parts in synth_facts.py. `regrad synth` writes them."""
