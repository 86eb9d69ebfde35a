"""The watch: a second opinion on an interaction run while it trains (``interact.watch``).

RL is an optimiser pointed at the teacher's blind spots: whatever the teacher rewards without
judging, the student finds. The loop calls the watch twice a step:

1. :meth:`Watch.start`, right after the rollout: a held-out judge (a second teacher, never
   trained on) starts rating a fixed share of the step's stories in a background thread,
   while the teacher rates, the student scores its tokens and the update runs;
2. :meth:`Watch.observe`, when the step is recorded: the held-out ratings are collected
   beside the teacher's on the same stories, the drift signals (drift.py) are measured on
   every story of the step, the rules below are checked, and the step's ``watch/*`` and
   ``drift/*`` metrics are returned for ``metrics.csv``; one line goes to ``RUN/log.txt`` and
   one record to ``RUN/watch.jsonl`` (read by the report).

**Gains since the start.** The first ``baseline_steps`` steps are the start; the latest
``window`` steps are now. On the stories both judges rated, a judge's gain is its mean score
now minus its mean at the start (0..1 scores); the gap is the teacher's gain minus the
held-out judge's, with an interval from the per-story differences (teacher minus held-out),
so what both judges see alike cancels.

**The alarm.** A rule holds when its whole interval (``confidence``) lies past its threshold;
a rule that holds on ``patience`` consecutive steps raises the alarm, once per rule:

- gap: the teacher's gain exceeds the held-out judge's by more than ``max_gap``;
- address: the share of stories addressing the listener or grader rose by more than
  ``max_address_rise`` (a difference of two proportions);
- diversity: distinct bigrams fell below ``1 - max_distinct_drop`` of their start value.

``on_alarm: warn`` logs the alarm (and the report shows it); ``stop`` ends the run after the
step with its resume point saved, one sentence naming the rule and the step, exit code 2.
Under ``accelerate launch`` the main process watches its own share of the batch (the held-out
judge) and the gathered batch (drift), and every process follows its decision.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import deque
from concurrent.futures import Future
from pathlib import Path
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

from onceupon.errors import UserError
from onceupon.files import append_jsonl, atomic_write_text
from onceupon.interact import drift
from onceupon.teacher.base import Rating, Story, Teacher
from onceupon.teacher.judges import teacher_key
from onceupon.tracking import log

if TYPE_CHECKING:
    from onceupon.config import WatchConfig

FILE = "watch.jsonl"
RULES = ("gap", "address", "diversity")


def resolve_judge(watch: WatchConfig, teacher: Teacher, teacher_is_heuristic: bool) -> Teacher | None:
    """The held-out judge ``interact.watch.judge`` asks for, built (None: no held-out judge).
    ``auto`` is the built-in heuristic unless the trained-on teacher is it already (then the
    two would be one judge, and their gap 0 by construction)."""
    if not watch.enabled or watch.judge == "none":
        return None
    from onceupon.config import TeacherConfig
    from onceupon.teacher.factory import build_teacher

    if watch.judge == "auto":
        if teacher_is_heuristic:
            return None
        return build_teacher(TeacherConfig())
    try:
        judge = build_teacher(watch.judge)
    except UserError as e:  # else its sentence reads as the trained-on teacher's ("teacher.api_key_env")
        raise UserError(f"The held-out judge (interact.watch.judge) cannot be used: {str(e)[:1].lower()}{str(e)[1:]}") from None
    if teacher_key(judge) == teacher_key(teacher):
        log(
            f"warning: the held-out judge ({judge.identity}) is the trained-on teacher: their gap is 0 by "
            "construction; give interact.watch.judge another judge, or 'none'.",
            echo=True,
        )
    return judge


class Watch:
    """The watch of one run (see the module docstring). ``judge``: the held-out judge or
    None (its owner closes it); ``main``: whether this process watches (the others only
    follow its decisions)."""

    def __init__(self, cfg: WatchConfig, judge: Teacher | None, run_dir: Path, *, main: bool, length_norm_words: int, seed: int):
        self.cfg, self.judge, self.main = cfg, judge, main
        self.path = Path(run_dir) / FILE
        self.length_norm_words, self.seed = length_norm_words, seed
        self.active = cfg.enabled and main
        self._z = NormalDist().inv_cdf((1 + cfg.confidence) / 2)
        self._pending: tuple[int, list[int], Future] | None = None
        self._judge_failed = False
        self._judge_cpu: float | None = None
        # the state a checkpoint keeps (state_dict): the start, the latest window, the rules
        self.steps = 0  # steps observed
        self.judged = 0  # steps the held-out judge rated
        self.start_signals: list[dict] = []  # the first baseline_steps steps' signals
        self.start_address = [0, 0]  # stories addressing the listener, stories (the start)
        self.start_presence = drift.Presence()
        self.start_pairs: list[tuple[float, float]] = []  # (teacher, held-out) at the start
        self.recent: deque[dict] = deque(maxlen=cfg.window)  # per step: signals, address counts, presence
        self.recent_pairs: deque[list[tuple[float, float]]] = deque(maxlen=cfg.window)
        self.streak = dict.fromkeys(RULES, 0)
        self.alarms: list[dict] = []  # {"rule", "step", "sentence"}, once per rule
        self._new_alarm: str | None = None  # a sentence raised by the latest step

    # ----------------------------------------------------------------- the run's files
    def open(self, step: int) -> None:
        """Keep ``watch.jsonl``'s records up to ``step`` (the step a resumed run continues
        after; a new run: 0), as the metrics keep their rows."""
        if not self.main or not self.path.exists():
            return
        kept = []
        with open(self.path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    row = json.loads(line) if line.endswith("\n") else None
                except json.JSONDecodeError:
                    row = None
                if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= step:
                    kept.append(line)
        atomic_write_text(self.path, "".join(kept))

    # ----------------------------------------------------------------- one step
    def start(self, step: int, stories: list[Story]) -> None:
        """The held-out judge starts rating this step's share of ``stories`` (this process's
        stories, in order) in a background thread."""
        if not self.active or self.judge is None or self._judge_failed or (step - 1) % self.cfg.every:
            return
        k = min(len(stories), max(2, round(self.cfg.share * len(stories))))
        # its own generator: the run's RNG (and so every story it tells) is not touched
        chosen = sorted(random.Random(self.seed * 1_000_003 + step).sample(range(len(stories)), k))
        judge, future = self.judge, Future()

        def work() -> None:
            began = time.thread_time()  # this thread's CPU time: what the judge takes from the step at most
            try:
                future.set_result((judge.rate([stories[i] for i in chosen]), time.thread_time() - began))
            except BaseException as e:  # handed to observe(), which says so and goes on
                future.set_exception(e)

        threading.Thread(target=work, name="held-out judge", daemon=True).start()
        self._pending = (step, chosen, future)

    def judging(self, step: int) -> bool:
        """Whether the held-out judge is still rating ``step``'s stories (observe() waits for it)."""
        return self._pending is not None and self._pending[0] == step and not self._pending[2].done()

    def observe(self, step: int, records: list[dict], ratings: list[Rating], admitted: int) -> dict[str, float | None]:
        """Collect the held-out ratings, measure the step, check the rules; returns the
        step's metrics. ``records``: the step's admitted stories (anthology records, every
        process's); ``ratings``: the teacher's ratings of this process's stories, of which
        the first ``admitted`` were admitted."""
        if not self.active:
            return {}
        began = time.perf_counter()
        self._judge_cpu = None
        pairs, heldout = self._collect(step, ratings, admitted)
        texts = [r["continuation"] for r in records]
        signals = drift.signals(texts, [r["n_words"] for r in records], [bool(r["valid"]) for r in records], self.length_norm_words)
        presence = drift.Presence()
        presence.add(texts)
        addressing = round(signals["address"] * len(texts)) if texts else 0  # the stories signals() found addressing
        self._remember(signals, addressing, len(texts), presence, pairs)

        address = self._address_rise()
        distinct = self._distinct_ratio()
        gains = self._gains()
        growing = drift.growing(self.start_presence, _merge(self.recent)) if self.steps > self.cfg.baseline_steps else []
        holding = self._rules(address, distinct, gains, heldout is not None)
        self._raise(step, holding, address, distinct, gains, growing)

        # the invalid share is in the row already (invalid_rate); watch.jsonl keeps it with the rest
        m: dict[str, float | None] = {f"drift/{k}": v for k, v in signals.items() if k != "invalid"}
        m["drift/address_rise"] = address[0] if address else None
        m["drift/distinct2_ratio"] = distinct[0] if distinct else None
        m["watch/teacher"] = heldout["teacher"] if heldout else None
        m["watch/heldout"] = heldout["heldout"] if heldout else None
        for name in ("teacher_gain", "heldout_gain", "gap"):
            m[f"watch/{name}"] = gains[name][0] if gains and heldout else None
        m["watch/gap_low"] = gains["gap"][1] if gains and heldout else None
        m["watch/gap_high"] = gains["gap"][2] if gains and heldout else None
        m["watch/alarm"] = float(bool(self.alarms))
        m["time/watch"] = time.perf_counter() - began  # on the step's path: its own work, any wait for the judge
        m["time/watch_judge_cpu"] = self._judge_cpu  # the held-out judge's thread, beside the step
        self._write(step, signals, address, distinct, gains, heldout, growing, holding)
        return m

    def alarm_to_stop(self, acc: Any) -> str | None:
        """The sentence to stop with, when ``on_alarm: stop`` and this step raised an alarm
        (the same answer on every process; a non-main process gets an empty sentence)."""
        sentence, self._new_alarm = self._new_alarm, None
        if not self.cfg.enabled or self.cfg.on_alarm != "stop":  # the same on every process
            return None
        if acc.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            box = [sentence]
            broadcast_object_list(box, from_process=0)
            sentence = box[0] if self.main else ("" if box[0] is not None else None)
        return sentence

    # ----------------------------------------------------------------- the parts of a step
    def _collect(self, step: int, ratings: list[Rating], admitted: int) -> tuple[list[tuple[float, float]], dict | None]:
        """The held-out judge's ratings of this step, paired with the teacher's."""
        if self._pending is None or self._pending[0] != step:
            return [], None
        _, chosen, future = self._pending
        self._pending = None
        try:
            theirs, self._judge_cpu = future.result()
        except Exception as e:  # the run does not depend on its watch: say so once and go on
            self._judge_failed = True
            log(f"warning: the held-out judge failed at step {step} ({type(e).__name__}: {e}); the run goes on without it.", echo=True)
            return [], None
        stories, pairs = [], []
        for i, h in zip(chosen, theirs):
            t = ratings[i].score if i < admitted else None
            if t is not None and h.score is not None:
                pairs.append((float(t), float(h.score)))
            if i < admitted:
                stories.append([i, t, h.score])
        self.judged += 1
        return pairs, {
            "judge": getattr(self.judge, "identity", "?"),
            "n": len(pairs),
            "invalid": sum(h.score is None for h in theirs) / len(theirs) if theirs else None,
            "teacher": _mean([t for t, _ in pairs]),
            "heldout": _mean([h for _, h in pairs]),
            "stories": stories,  # [anthology index, teacher score, held-out score]
        }

    def _remember(self, signals: dict, addressing: int, n: int, presence: drift.Presence, pairs: list) -> None:
        self.steps += 1
        entry = {"signals": signals, "address": [addressing, n], "presence": presence}
        if self.steps <= self.cfg.baseline_steps:
            self.start_signals.append(signals)
            self.start_address = [self.start_address[0] + addressing, self.start_address[1] + n]
            self.start_presence = self.start_presence.merged([presence])
        self.recent.append(entry)
        if pairs:
            if self.judged <= self.cfg.baseline_steps:
                self.start_pairs.extend(pairs)
            self.recent_pairs.append(pairs)

    def _address_rise(self) -> tuple[float, float, float] | None:
        """The share addressing the listener now minus at the start, with its interval."""
        a0, n0 = self.start_address
        a1, n1 = sum(e["address"][0] for e in self.recent), sum(e["address"][1] for e in self.recent)
        if not n0 or not n1 or self.steps <= self.cfg.baseline_steps:
            return None
        p0, p1 = a0 / n0, a1 / n1
        se = (p0 * (1 - p0) / n0 + p1 * (1 - p1) / n1) ** 0.5
        return p1 - p0, p1 - p0 - self._z * se, p1 - p0 + self._z * se

    def _distinct_ratio(self) -> tuple[float, float, float] | None:
        """Distinct bigrams now as a share of their start value, with an interval over the
        window's steps."""
        start = [s["distinct2"] for s in self.start_signals if s["distinct2"] is not None]
        now = [e["signals"]["distinct2"] for e in self.recent if e["signals"]["distinct2"] is not None]
        if not start or not now or self.steps <= self.cfg.baseline_steps or not _mean(start):
            return None
        base = _mean(start)
        mean, half = _mean(now), self._z * _sd(now) / len(now) ** 0.5
        return mean / base, (mean - half) / base, (mean + half) / base

    def _gains(self) -> dict[str, tuple[float, float, float]] | None:
        """Each judge's gain since the start and the gap between them, with intervals."""
        now = [p for step in self.recent_pairs for p in step]
        if len(self.start_pairs) < 2 or len(now) < 2 or self.judged <= self.cfg.baseline_steps:
            return None
        out = {}
        for name, f in (("teacher_gain", lambda p: p[0]), ("heldout_gain", lambda p: p[1]), ("gap", lambda p: p[0] - p[1])):
            a, b = [f(p) for p in self.start_pairs], [f(p) for p in now]
            d = _mean(b) - _mean(a)
            se = (_sd(a) ** 2 / len(a) + _sd(b) ** 2 / len(b)) ** 0.5
            out[name] = (d, d - self._z * se, d + self._z * se)
        return out

    def _rules(self, address, distinct, gains, judged_now: bool) -> list[str]:
        """The rules that hold at this step; each one's streak of consecutive steps."""
        c = self.cfg
        holds = {
            "address": address is not None and address[1] > c.max_address_rise,
            "diversity": distinct is not None and distinct[2] < 1 - c.max_distinct_drop,
        }
        for rule, held in holds.items():
            self.streak[rule] = self.streak[rule] + 1 if held else 0
        if judged_now:  # the gap's streak counts the steps the held-out judge rated
            held = gains is not None and gains["gap"][1] > c.max_gap
            self.streak["gap"] = self.streak["gap"] + 1 if held else 0
            holds["gap"] = held
        return [rule for rule in RULES if holds.get(rule)]

    def _raise(self, step: int, holding: list[str], address, distinct, gains, growing) -> None:
        raised = {a["rule"] for a in self.alarms}
        for rule in holding:
            if rule in raised or self.streak[rule] < self.cfg.patience:
                continue
            sentence = f"watch alarm at step {step}: " + _explain(rule, self.cfg, address, distinct, gains, growing)
            self.alarms.append({"rule": rule, "step": step, "sentence": sentence})
            log(sentence, echo=self.cfg.on_alarm == "warn")  # stop: the run's last sentence says it
            self._new_alarm = self._new_alarm or sentence

    def _write(self, step, signals, address, distinct, gains, heldout, growing, holding) -> None:
        row = {
            "step": step,
            "signals": signals,
            "address_rise": address,
            "distinct2_ratio": distinct,
            "heldout": heldout,
            "gains": gains if heldout else None,
            "growing": [list(g) for g in growing],
            "holding": holding,
            "alarm": next((a for a in self.alarms if a["step"] == step), None),
        }
        append_jsonl(self.path, [row], durable=False)
        log(_line(step, signals, heldout, gains, address, growing))

    # ----------------------------------------------------------------- resume
    def state_dict(self) -> dict:
        return {
            "steps": self.steps,
            "judged": self.judged,
            "start_signals": self.start_signals,
            "start_address": self.start_address,
            "start_presence": self.start_presence.state_dict(),
            "start_pairs": self.start_pairs,
            "recent": [{**e, "presence": e["presence"].state_dict()} for e in self.recent],
            "recent_pairs": list(self.recent_pairs),
            "streak": self.streak,
            "alarms": self.alarms,
        }

    def load_state_dict(self, state: dict) -> None:
        self.steps, self.judged = int(state["steps"]), int(state["judged"])
        self.start_signals, self.start_address = list(state["start_signals"]), list(state["start_address"])
        self.start_presence = drift.Presence.from_state(state["start_presence"])
        self.start_pairs = [tuple(p) for p in state["start_pairs"]]
        self.recent.clear()
        self.recent.extend({**e, "presence": drift.Presence.from_state(e["presence"])} for e in state["recent"])
        self.recent_pairs.clear()
        self.recent_pairs.extend([tuple(p) for p in step] for step in state["recent_pairs"])
        self.streak = {**dict.fromkeys(RULES, 0), **state["streak"]}
        self.alarms = list(state["alarms"])


# --------------------------------------------------------------------------- helpers
def _explain(rule: str, c: WatchConfig, address, distinct, gains, growing) -> str:
    grown = ", ".join(f"'{t}' {a:.0%} -> {b:.0%}" for t, a, b in growing[:3])
    if rule == "gap":
        t, h, g = gains["teacher_gain"][0], gains["heldout_gain"][0], gains["gap"]
        return (
            f"the teacher's score rose {t:+.3f} since the start but the held-out judge's {h:+.3f} "
            f"(gap {g[0]:+.3f}, {c.confidence:.0%} interval {g[1]:+.3f}..{g[2]:+.3f}, above {c.max_gap}) for {c.patience} "
            f"rated steps: the gain is not seen by the held-out judge" + (f"; grown most: {grown}" if grown else "")
        )
    if rule == "address":
        return (
            f"the share of stories addressing the listener or grader rose {address[0]:+.0%} since the start "
            f"(interval {address[1]:+.0%}..{address[2]:+.0%}, above {c.max_address_rise:.0%}) for {c.patience} steps"
            + (f"; grown most: {grown}" if grown else "")
        )
    return (
        f"distinct bigrams fell to {distinct[0]:.0%} of their start value (at most {distinct[2]:.0%}, "
        f"below {1 - c.max_distinct_drop:.0%}) for {c.patience} steps: the stories are collapsing onto one text"
    )


def _line(step, signals, heldout, gains, address, growing) -> str:
    """The step's log line: the held-out judge beside the teacher, and the drift."""
    parts = [f"watch step {step}:"]
    if heldout:
        parts.append(f"teacher {_f(heldout['teacher'])} / held-out {_f(heldout['heldout'])} on {heldout['n']} stories")
        if gains:
            g = gains["gap"]
            parts.append(
                f"gains {gains['teacher_gain'][0]:+.3f} / {gains['heldout_gain'][0]:+.3f}, gap {g[0]:+.3f} [{g[1]:+.3f}, {g[2]:+.3f}]"
            )
    parts.append(f"address {_f(signals['address'], '.0%')}" + (f" ({address[0]:+.0%})" if address else ""))
    parts.append(f"distinct-2 {_f(signals['distinct2'])}, repetition {_f(signals['repetition'])}, words {_f(signals['words'], '.1f')}")
    if growing:
        parts.append("grown: " + ", ".join(f"'{t}' {a:.0%}->{b:.0%}" for t, a, b in growing[:3]))
    return "; ".join([parts[0] + " " + parts[1], *parts[2:]])


def _f(x, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def _merge(entries) -> drift.Presence:
    return drift.Presence().merged(e["presence"] for e in entries)


def _mean(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def _sd(xs) -> float:
    if len(xs) < 2:
        return 0.0
    m = sum(xs) / len(xs)
    return (sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5
