"""``onceupon annotate``: people rate stories on a local web page, so a teacher can be checked.

- :mod:`~onceupon.annotate.sample`: which stories are shown (read from stories files, ratings
  files or run directories; sampled, stratified over runs and checkpoints, shuffled) and the
  sample file that keeps that choice fixed across restarts;
- :mod:`~onceupon.annotate.answers`: the answers file (append-only, fsynced, shared by
  several annotators and processes) and what each annotator has done and sees next;
- :mod:`~onceupon.annotate.annotate`: the command: the FastAPI app and its uvicorn server; the page itself
  is plain HTML/JS/CSS in ``annotate/page/``;
- :mod:`~onceupon.annotate.guard`: what every request passes first (its Host, its Origin, its
  size) and the security headers on every response;
- :mod:`~onceupon.annotate.agreement`: ``onceupon rate --compare OTHER``: tells people's
  answers from another rater's ratings; for people, the teacher against each annotator and
  their mean, beside the agreement between annotators.
"""
