"""``onceupon annotate``: the local web server (FastAPI on uvicorn) and the command around it.

Loopback (127.0.0.1) by default. Bound to any other address, the page and every API call need
the access token in the address (``?token=...``; generated unless ``--token`` is given, and
printed with the URL); without it the answer is HTTP 403. The same holds on loopback when
``--token`` is given. Without a token, a request must name this machine in its ``Host`` (no
DNS rebinding); bodies are bounded and every response carries security headers
(:mod:`~onceupon.annotate.guard`).

Every field is checked strictly (an integer is a JSON integer, not ``"3"`` or ``true``; a
boolean is ``true`` or ``false``; a name is printable text without markup) and a refusal is
HTTP 422 with one sentence naming the field, never the value sent back.

The API the page uses (stories are named by their position in the shuffled sample, a key that
says nothing about their run, checkpoint or score):

GET  /                        the page (``annotate/page/``: plain HTML, JS and CSS)
GET  /api/setup               the rubric (criteria, titles, level descriptions) and sizes
GET  /api/annotator?name=A    A's answered stories (keys, in order) and how many A will see
GET  /api/story?name=A&key=K  one story, with A's last answer to it
POST /api/next                {name}: the story A sees next, or {"done": true}
POST /api/answer              {name, key, scores (null: skipped), flagged, comment}
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import unicodedata
from importlib import resources
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError

from onceupon import preflight
from onceupon.annotate import sample
from onceupon.annotate.answers import AnswersFile, Desk
from onceupon.annotate.guard import Guard, is_loopback
from onceupon.config import ExperimentConfig
from onceupon.errors import UserError
from onceupon.teacher.rubric import Rubric

MEDIA = {"html": "text/html; charset=utf-8", "js": "text/javascript; charset=utf-8", "css": "text/css; charset=utf-8"}


#: characters no name holds: markup, and (by Unicode category) control and format characters,
#: lone surrogates, private use, unassigned code points, line and paragraph separators. A
#: name is stored in the answers file and shown in tables and the report.
_NOT_IN_NAMES = set('<>&"')
_NOT_TEXT = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def _name(value: str) -> str:
    if value != value.strip():
        raise ValueError("a name has no spaces at its start or end")
    if any(ch in _NOT_IN_NAMES or unicodedata.category(ch) in _NOT_TEXT for ch in value):
        raise ValueError('a name is printable text without control characters or any of < > & "')
    return value


def _comment(value: str) -> str:
    # newline and tab are text; other control characters and lone surrogates (which cannot
    # even be written to a UTF-8 file) are not
    if any(unicodedata.category(ch) in ("Cc", "Cs") and ch not in "\n\t" for ch in value):
        raise ValueError("a comment is printable text without control characters")
    return value


Name = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_name)]


class Who(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    name: Name


class Answer(Who):
    key: StrictInt
    scores: dict[str, StrictInt] | None  # None: skipped
    flagged: StrictBool = False
    comment: Annotated[str, Field(max_length=2000), AfterValidator(_comment)] = ""


def page_file(name: str) -> str:
    return resources.files("onceupon.annotate").joinpath("page", name).read_text(encoding="utf-8")


def _refusal(errors) -> str:
    """One sentence for a request FastAPI could not validate: the field and what it must be,
    without the value sent (which may be anything, of any size)."""
    first = errors[0] if errors else {}
    loc = [part for part in first.get("loc", ()) if part not in ("body", "query")]
    field = loc[0] if loc and isinstance(loc[0], str) else "the request"
    if first.get("type") == "json_invalid":
        return "The request is not valid JSON."
    if first.get("type") == "extra_forbidden":
        return f"{field} is not a field of this request."
    message = str(first.get("msg", "is not valid")).removeprefix("Value error, ")
    return f"{field}: {message.rstrip('.')}."


def create_app(desk: Desk, rubric: Rubric, token: str | None, host: str = "127.0.0.1"):
    """The FastAPI app: the page's three files and the JSON API over ``desk``, behind the
    guard (Host, Origin, body size, security headers) for a server bound to ``host``."""
    from fastapi import Depends, FastAPI, HTTPException, Query, Response
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    def need_token(t: str | None = Query(None, alias="token")) -> None:
        if token is not None and not (t and secrets.compare_digest(t, token)):
            raise HTTPException(403, "This page needs its access token: open the address onceupon annotate printed.")

    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _refusal(exc.errors())}, status_code=422)

    guarded = [Depends(need_token)]
    n_shared = sum(item.shared for item in desk.items)

    def named(name: str) -> str:  # a name in the query: the same rule as in a body
        try:
            return Who(name=name).name
        except ValidationError as e:
            raise RequestValidationError(e.errors()) from None

    def checked(key: int) -> int:
        if not 0 <= key < len(desk.items):
            raise HTTPException(404, f"There is no story {key}.")
        return key

    @app.get("/", dependencies=guarded)
    def index() -> Response:
        return Response(page_file("index.html"), media_type=MEDIA["html"])

    @app.get("/annotate.{ext}")
    def asset(ext: str) -> Response:  # the page's code and style: shipped in the package, not secret
        if ext not in ("js", "css"):
            raise HTTPException(404)
        return Response(page_file(f"annotate.{ext}"), media_type=MEDIA[ext])

    @app.get("/api/setup", dependencies=guarded)
    def setup() -> dict:
        criteria = [
            {"name": c.name, "title": c.title, "description": c.description, "levels": [list(level) for level in c.levels]}
            for c in rubric.criteria
        ]
        return {"criteria": criteria, "stories": len(desk.items), "shared": n_shared}

    @app.get("/api/annotator", dependencies=guarded)
    def annotator(name: str = Query()) -> dict:
        return desk.view(named(name))

    @app.get("/api/story", dependencies=guarded)
    def story(key: int, name: str = Query()) -> dict:
        return desk.story(named(name), checked(key))

    @app.post("/api/next", dependencies=guarded)
    def next_story(who: Who) -> dict:
        return desk.next(who.name) or {"done": True}

    @app.post("/api/answer", dependencies=guarded)
    def answer(a: Answer) -> dict:
        try:
            return desk.answer(a.name, checked(a.key), a.scores, a.flagged, a.comment)
        except ValueError as e:
            raise HTTPException(422, f"{e}.") from None

    return Guard(app, bound=host, check_host=token is None)


def access_token(host: str, token: str | None) -> str | None:
    """The token the URL must carry: the one given, else a random one beyond loopback (where
    anyone on the network could otherwise read the stories and write answers)."""
    if token is None and not is_loopback(host):
        return secrets.token_urlsafe(16)
    return token


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, or one sentence on what is wrong (before anything is written)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # what uvicorn does too
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        if e.errno == 98:  # EADDRINUSE
            raise UserError(f"Port {port} on {host} is in use; choose another with --port (0 picks a free one).") from None
        raise UserError(f"Cannot listen on {host} port {port}: {e.strerror}.") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _load_sample(sources: list[Path], out: Path, n: int, seed: int, overlap: float) -> tuple[list[sample.Item], bool]:
    """The stories to show: the sample file of an earlier start, or a new sample (not yet
    written). Returns (items, new)."""
    path = sample.sample_path(out)
    for source in sources:
        sample.check_source(Path(source))
    if path.exists():
        return sample.read(path), False
    if out.exists() and out.stat().st_size > 0:
        raise UserError(f"{out} holds answers but its sample file {path} is missing; give a new --out.")
    print(f"reading stories from {', '.join(map(str, sources))}", flush=True)
    items = sample.choose(sample.collect(sources), n, seed, overlap)
    return items, True


def run(
    cfg: ExperimentConfig,
    sources: list[Path],
    out: Path,
    *,
    n: int = 100,
    seed: int = 0,
    overlap: float = 0.2,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
) -> None:
    """The ``onceupon annotate`` command: checks, sample, then serve until Ctrl-C."""
    if n < 1:
        raise UserError(f"--sample must be at least 1, got {n}.")
    if not 0.0 <= overlap <= 1.0:
        raise UserError(f"--overlap is a share of the stories, from 0 to 1; got {overlap}.")
    if token is not None and not token.strip():
        raise UserError("--token must not be empty.")
    if not 0 <= port <= 65535:
        raise UserError(f"--port must be from 0 to 65535, got {port}.")
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        raise UserError("onceupon annotate needs FastAPI and uvicorn: pip install 'onceupon[serve]'.") from None
    out = Path(out)
    preflight.output_file(out)
    preflight.output_file(sample.sample_path(out), "the sample file")
    rubric = Rubric.from_config(cfg.teacher)
    token = access_token(host, token)
    items, new = _load_sample([Path(s) for s in sources], out, n, seed, overlap)
    sock = bind(host, port)
    if new:
        sample.write(sample.sample_path(out), items)
    answers = AnswersFile(out)
    if answers.drop_torn_line():
        print(f"{out}: dropped an unfinished last line (an answer cut off by a crash)", flush=True)
    desk = Desk(items, answers, rubric)
    app = create_app(desk, rubric, token, host)
    shown = socket.gethostname() if host in ("0.0.0.0", "::") else f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{sock.getsockname()[1]}/" + (f"?token={quote(token)}" if token else "")
    n_shared = sum(i.shared for i in items)
    if new:
        print(f"sampled {len(items)} stories ({n_shared} shown to every annotator) into {sample.sample_path(out)}", flush=True)
    else:
        print(
            f"resuming with the {len(items)} stories of {sample.sample_path(out)} ({n_shared} shown to every annotator); "
            "SOURCE, --sample, --seed and --overlap apply to a new --out",
            flush=True,
        )
    print(f"answers are appended to {out}", flush=True)
    print(f"annotate at {url}  (Ctrl-C stops; every answer is saved as it is given)", flush=True)
    server = _server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    server.run(sockets=[sock])
    records = answers.records()
    people = len({r.get("annotator") for r in records})
    print(f"stopped: {len(records)} answers from {people} annotator(s) in {out}; the same command continues", flush=True)
    if server.stopped_by is not None:  # exit like every command a signal stops: 130 (Ctrl-C), 143 (SIGTERM)
        raise SystemExit(128 + server.stopped_by)


def _server(config):
    """uvicorn's server, except that Ctrl-C or SIGTERM end the command through our own exit
    (the summary line, then 128 + the signal) rather than uvicorn re-raising the signal after
    its graceful stop; every answer is already on disk. ``stopped_by``: the first signal."""
    import uvicorn

    class Server(uvicorn.Server):
        stopped_by: int | None = None

        @contextlib.contextmanager
        def capture_signals(self):
            with super().capture_signals():
                try:
                    yield
                finally:
                    if self._captured_signals:
                        self.stopped_by = int(self._captured_signals[0])
                    self._captured_signals.clear()

    return Server(config)
