"""Configuration: a benchmark TOML file -> frozen dataclasses (:mod:`.parse`), the one vocabulary
of names (:mod:`.vocabulary`) and the one hash of settings (:mod:`.hashing`). No torch here."""
