"""One schema per file format onceupon reads, and the reader that goes with it.

Every file a user gives (or a run keeps and reads back) is read here, validated as a whole
before the command does any work, and a bad value is one sentence naming the file, the line
and the field (:mod:`onceupon.schemas.base`):

- stories and probes: :mod:`onceupon.schemas.stories`
- ratings and annotations (checked against the rubric's scales): :mod:`onceupon.schemas.ratings`
- a teacher check's results and an agreement with people: :mod:`onceupon.schemas.results`
- an interaction run's ``state.json`` and a checkpoint's ``onceupon.json``: :mod:`onceupon.schemas.run`
- the config: :mod:`onceupon.config`; a prompt template: :func:`onceupon.files.read_text_file`
"""
