"""The run machinery every stage shares, on the lowest floor: it imports no stage (student,
interact, teacher, corpus, evaluate), so every stage can use it.

- :mod:`.lock`: one process at a time writes a run directory (``RUN/.lock``).
- :mod:`.stop`: the first Ctrl-C or SIGTERM asks a loop to stop after its step; the second aborts.
- :mod:`.rng`: capture and restore every random generator, for bit-identical resumes.
- :mod:`.precision`: ``precision: auto`` resolved the same way by every stage.
- :mod:`.checkpoints`: the checkpoint directory (``onceupon.json``, ``trainer_state/``), written
  atomically, listed in order.
- :mod:`.resume`: new run or resume, the one resume rule, the one resume-state format.
"""
