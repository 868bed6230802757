"""Bad-input benchmark (issue #16): hundreds of generated bad inputs across eight families, each run
as its own `edgenas` process, scored against the CLI contract.

    python benchmarks/robustness/fuzz.py [--work DIR] [--workers 1] [--timeout 60] [--mode fork|exec]

Every case is a command line that must be refused: exit status 2 with one line on stderr
(`edgenas: error: ...`, or argparse's `edgenas CMD: error: ...` for a bad flag), under 300
characters, naming the file, key or flag at fault, no traceback, and no input file changed. A case
that runs past --timeout is a hang (the process is killed).

--mode exec starts `python -m edgenas ...` per case. --mode fork (the default) imports edgenas and
torch once and forks a fresh child process per case that calls `edgenas.cli.main(argv)` with its
own stdout/stderr, exit status and memory limit, exactly as `python -m edgenas` does after its
imports; it is ~10x faster on a small machine, which is what makes 300+ cases practical.

The inputs are real files built once into --work by the real commands (train, predictor build,
profile, search), then copied and mutated per case. Results go to results.json beside this file.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import pickle
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
FAMILIES = ["data_loss", "non_utf8", "numbers", "shapes", "output_paths", "runaway", "misleading", "corrupt_weights"]
MEM_LIMIT = 8 << 30  # address space per case: a runaway allocation is a MemoryError, not the OOM killer


# ---- the real files ---------------------------------------------------------------------------------

def edgenas(argv: list[str], **kw) -> None:
    subprocess.run([sys.executable, "-m", "edgenas", "-q", *argv], check=True, cwd=REPO,
                   stdout=subprocess.DEVNULL, **kw)


def build_real(work: Path) -> dict[str, Path]:
    real = work / "real"
    files = {
        "space": real / "space.yaml", "config": real / "run/config.yaml", "profile": real / "local-cpu.yaml",
        "table": real / "table.yaml", "results": real / "search.json", "predictor": real / "run/supernet.predictor.pt",
        "checkpoint": real / "run/supernet.pt", "resume": real / "run/checkpoint.pt",
        "measurements": real / "run/supernet.predictor.pt.measured.jsonl",
    }
    if all(p.exists() for p in files.values()):
        return files
    shutil.rmtree(real, ignore_errors=True)
    real.mkdir(parents=True)
    shutil.copy(REPO / "edgenas/space/presets/mbv3-tiny.yaml", files["space"])
    shutil.copy(REPO / "device_profiles/local-cpu.yaml", files["profile"])
    quick = ["--set", "schedule.name=sandwich", "--set", "schedule.phases.0.epochs=1", "--set", "train.steps_per_epoch=2",
             "--set", "train.val_bn_images=16", "--set", "train.bn_recal_images=16", "--set", "data.limit=64"]
    edgenas(["train", "configs/digits-tiny.yaml", "--out", str(real / "run"), "--no-progress", *quick])
    edgenas(["predictor", "build", str(files["checkpoint"]), "--samples", "5", "--calib-images", "16", "--epochs", "2"])
    edgenas(["profile", str(files["profile"]), "--space", "mbv3-tiny", "--resolutions", "24", "--calibrate", "0",
             "--runs", "1", "--warmup", "1", "--out", str(files["table"])])
    edgenas(["search", "--supernet", str(files["checkpoint"]), "--latency-table", str(files["table"]), "--latency-ms", "50",
             "--resolutions", "24", "--population", "4", "--generations", "1", "--out", str(files["results"])])
    return files


# ---- cases ------------------------------------------------------------------------------------------

class Cases:
    """Generates the cases; each gets its own directory with copies of the files it uses."""

    def __init__(self, work: Path, real: dict[str, Path], seed: int = 0):
        self.work, self.real, self.rng = work / "cases", real, random.Random(seed)
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
        self.cases: list[dict] = []

    def copy(self, d: Path, kind: str) -> Path:
        src = self.real[kind]
        if kind in ("checkpoint", "predictor", "resume", "measurements"):  # keep the run-directory layout
            dst = d / "run" / src.name
            dst.parent.mkdir(exist_ok=True)
        else:
            dst = d / src.name
        shutil.copy(src, dst)
        return dst

    def files(self, d: Path) -> dict[str, Path]:
        """Copies of every real file in the case directory (so a case can damage nothing else)."""
        return {k: self.copy(d, k) for k in self.real}

    def add(self, family, name, argv_of=None, mutate=None, names=(), kind=None, forbid=()):
        """A case: `argv_of(files)` (default: the command that reads `kind`) run on copies of the real
        files, with `mutate(files, dir)` applied first (it may return more input files). The message
        must contain one of `names` (default: the name of the `kind` file). Built when it runs, so
        only one case's copies exist at a time."""
        d = self.work / f"{len(self.cases):04d}"

        def build():
            d.mkdir()
            f = self.files(d)
            extra = mutate(f, d) if mutate else None
            argv = argv_of(f) if argv_of else Cases.reader(kind, f, d)
            return ([str(a) for a in argv], sorted({str(p) for p in [*f.values(), *(extra if isinstance(extra, list) else [])]}),
                    list(names) or ([self.real[kind].name] if kind else []))

        self.cases.append({"id": len(self.cases), "family": family, "name": name, "dir": str(d), "build": build,
                           "forbid": list(forbid)})

    # the command that reads each file kind
    @staticmethod
    def reader(kind: str, f: dict[str, Path], d: Path) -> list:
        search = ["search", "--supernet", f["checkpoint"], "--latency-table", f["table"], "--predictor", f["predictor"],
                  "--latency-ms", "50", "--resolutions", "24", "--population", "4", "--generations", "1",
                  "--out", d / "out.json"]
        return {
            "space": ["space", "info", f["space"]],
            "config": ["train", f["config"], "--out", d / "newrun", "--no-progress"],
            "profile": ["device", "check", f["profile"]],
            "table": search, "predictor": search, "checkpoint": search,
            "results": ["export", "--supernet", f["checkpoint"], "--from", f["results"], "--out", d / "export",
                        "--eval-images", "16", "--bn-images", "16"],
            "measurements": ["predictor", "build", f["checkpoint"], "--samples", "6", "--calib-images", "16",
                             "--epochs", "2"],
            "resume": ["train", "--resume", "--out", f["resume"].parent, "--no-progress"],
        }[kind]


TEXT_KINDS = {"space": "yaml", "config": "yaml", "profile": "yaml", "table": "yaml", "results": "json"}


def load_tree(path: Path, fmt: str):
    return json.loads(path.read_text()) if fmt == "json" else yaml.safe_load(path.read_text())


def dump_tree(tree, fmt: str, marks: dict[str, str] | None = None) -> str:
    text = json.dumps(tree, indent=1) if fmt == "json" else yaml.safe_dump(tree, sort_keys=False)
    for mark, value in (marks or {}).items():
        for q in (f'"{mark}"', f"'{mark}'", mark):
            text = text.replace(q, value)
    return text


def leaves(tree, prefix=()):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield prefix + (k,), v
            yield from leaves(v, prefix + (k,))
    elif isinstance(tree, list):
        for i, v in enumerate(tree[:6]):
            yield prefix + (i,), v
            yield from leaves(v, prefix + (i,))


def set_at(tree, path, value):
    node = tree
    for k in path[:-1]:
        node = node[k]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value


DELETE = object()
BOMB = "".join(f"{c}: &{c} [{', '.join(['*' + p] * 10 if p else ['lol'] * 10)}]\n"
               for p, c in zip([None, "a", "b", "c", "d", "e", "f", "g"], "abcdefgh"))


def key_name(path) -> str:
    return str([k for k in path if isinstance(k, str)][-1]) if any(isinstance(k, str) for k in path) else ""


def generate(c: Cases) -> list[dict]:
    rng = c.rng

    # 1. data loss: outputs pointed at inputs
    def search_with(flag, target):
        def argv(f, d=None):
            base = ["search", "--supernet", f["checkpoint"], "--latency-table", f["table"], "--predictor", f["predictor"],
                    "--latency-ms", "50", "--resolutions", "24", "--population", "4", "--generations", "1"]
            out = {"--out": f["checkpoint"].parent / "out.json"}
            out[flag] = f[target]
            return base + [x for kv in out.items() for x in kv]
        return argv
    for flag in ("--out", "--plot"):
        for target in ("checkpoint", "table", "predictor"):
            c.add("data_loss", f"search {flag} = {target}", search_with(flag, target),
                  names=[flag, c.real[target].name])
    for ckpt in ("checkpoint", "resume"):  # CKPT is supernet.pt or the run's checkpoint.pt
        for flag in ("--out", "--measurements"):
            c.add("data_loss", f"predictor build {c.real[ckpt].name} {flag} = CKPT",
                  lambda f, t=ckpt, flag=flag: ["predictor", "build", f[t], "--samples", "5", "--calib-images", "16",
                                                "--epochs", "2", flag, f[t]], names=[flag, c.real[ckpt].name])
    profile = lambda f: ["profile", f["profile"], "--space", "mbv3-tiny", "--resolutions", "24",  # noqa: E731
                         "--runs", "1", "--warmup", "1", "--out", f["table"]]
    c.add("data_loss", "profile --out = PROFILE", lambda f: profile(f)[:-1] + [f["profile"], "--calibrate", "0"],
          names=["--out", c.real["profile"].name])
    for target in ("profile", "table"):
        c.add("data_loss", f"profile --plot = {target}",
              lambda f, t=target: profile(f) + ["--calibrate", "1", "--validate", "2", "--plot", f[t]],
              names=["--plot", c.real[target].name])
    c.add("data_loss", "profile --space FILE --out = that space file",
          lambda f: ["profile", f["profile"], "--space", f["space"], "--resolutions", "24", "--calibrate", "0",
                     "--runs", "1", "--warmup", "1", "--out", f["space"]], names=["--out", c.real["space"].name])
    c.add("data_loss", "export --out = directory holding --from, named model.json (the card export writes)",
          lambda f: ["export", "--supernet", f["checkpoint"], "--from", f["results"].parent / "model.json", "--out",
                     f["results"].parent, "--eval-images", "16", "--bn-images", "16"], names=["--out", "model.json"],
          mutate=lambda f, d: [shutil.copy(f["results"], d / "model.json")])
    c.add("data_loss", "export --out = --supernet file",
          lambda f: ["export", "--supernet", f["checkpoint"], "--from", f["results"], "--out", f["checkpoint"],
                     "--eval-images", "16", "--bn-images", "16"], names=["--out"])
    c.add("data_loss", "train --out = run directory of its config",
          lambda f: ["train", f["config"], "--out", f["config"].parent, "--no-progress"], names=["--out", "--resume"])

    # 2. files that are not UTF-8
    garbage = {
        "latin1 comment": lambda b: b"# r\xe9solution caf\xe9\n" + b,
        "latin1 value": lambda b: b.replace(b"mbv3-tiny", b"mbv3-t\xefny", 1) if b"mbv3-tiny" in b else b"\xe9" + b,
        "binary": lambda b: bytes(random.Random(len(b)).randrange(256) for _ in range(3000)),
        "utf16": lambda b: b.decode().encode("utf-16"),
        "a .pt file": lambda b: c.real["predictor"].read_bytes(),
        "invalid byte mid-file": lambda b: b[: len(b) // 2] + b"\xff\xfe\xc0" + b[len(b) // 2:],
    }
    for kind in [*TEXT_KINDS, "measurements"]:
        for gname, g in garbage.items():
            def mutate(f, d, kind=kind, g=g):
                f[kind].write_bytes(g(f[kind].read_bytes()))
            c.add("non_utf8", f"{kind}: {gname}", None, mutate, kind=kind)

    # 3. bad numbers in files and flags
    bad_numbers = {"NaN": ".nan", "inf": ".inf", "-inf": "-.inf", "5000 digits": "9" * 5000, "negative": "-1000000000"}
    for kind, fmt in TEXT_KINDS.items():
        tree = load_tree(c.real[kind], fmt)
        numeric = [p for p, v in leaves(tree) if isinstance(v, (int, float)) and not isinstance(v, bool)]
        for path in rng.sample(numeric, min(len(numeric), 9)):
            for vname in rng.sample(sorted(bad_numbers), 3):
                value = bad_numbers[vname]
                if fmt == "json":
                    value = {".nan": "NaN", ".inf": "Infinity", "-.inf": "-Infinity"}.get(value, value)
                def mutate(f, d, kind=kind, fmt=fmt, path=path, value=value):
                    t = load_tree(f[kind], fmt)
                    set_at(t, path, "@@V@@")
                    f[kind].write_text(dump_tree(t, fmt, {"@@V@@": value}))
                c.add("numbers", f"{kind}: {'.'.join(map(str, path))} = {vname}", None, mutate, kind=kind)
    for path, flag in numeric_flags():
        for value in rng.sample(["nan", "inf", "-1", "-inf", "1e400", "9" * 5000, "abc", "\u0662\u0668", "0x10", ""], 3):
            c.add("numbers", f"{' '.join(path)} {flag}={value[:12]}", lambda f, path=path, flag=flag, value=value:
                  [*path, f"{flag}={value}"], names=[flag])

    # 4. wrong shapes
    for kind, fmt in TEXT_KINDS.items():
        tree = load_tree(c.real[kind], fmt)
        containers = [(p, v) for p, v in leaves(tree) if isinstance(v, (dict, list)) and v]
        for path, v in rng.sample(containers, min(len(containers), 8)):
            swap = rng.choice(["x?y", [1, 2]] if isinstance(v, dict) else ["x?y", {"x?y": 1}])
            def mutate(f, d, kind=kind, fmt=fmt, path=path, swap=swap):
                t = load_tree(f[kind], fmt)
                set_at(t, path, swap)
                f[kind].write_text(dump_tree(t, fmt))
            c.add("shapes", f"{kind}: {'.'.join(map(str, path))} -> {type(swap).__name__}", None, mutate, kind=kind)
        c.add("shapes", f"{kind}: a list at the top", None,
              lambda f, d, kind=kind, fmt=fmt: f[kind].write_text(dump_tree([load_tree(f[kind], fmt)], fmt)), kind=kind)
    for kind, keys in {"table": ["header", "ops"], "results": ["top", "space", "format"]}.items():
        for key in keys:
            def mutate(f, d, kind=kind, key=key):
                t = load_tree(f[kind], TEXT_KINDS[kind])
                del t[key]
                f[kind].write_text(dump_tree(t, TEXT_KINDS[kind]))
            c.add("shapes", f"{kind}: key {key} missing", None, mutate, kind=kind)
    import torch
    for kind in ("checkpoint", "predictor"):
        payload = torch.load(c.real[kind], weights_only=True)
        for key in sorted(payload):
            if key == "checksum":
                continue
            for change in ("missing", "a list"):
                def mutate(f, d, kind=kind, key=key, change=change):
                    p = torch.load(f[kind], weights_only=True)
                    if change == "missing":
                        del p[key]
                    else:
                        p[key] = [1, 2]
                    torch.save(p, f[kind])
                c.add("shapes", f"{kind}: key {key} {change}", None, mutate, kind=kind)

    # 5. bad output paths
    cmds = {
        "search --out": lambda f, o: search_with("--out", "checkpoint")(f)[:-2] + ["--out", o],
        "search --plot": lambda f, o: search_with("--out", "checkpoint")(f)[:-2] + [
            "--out", f["config"].parent / "o.json", "--plot", o],
        "profile --out": lambda f, o: ["profile", f["profile"], "--space", "mbv3-tiny", "--resolutions", "24",
                                       "--calibrate", "0", "--runs", "1", "--warmup", "1", "--out", o],
        "predictor build --out": lambda f, o: ["predictor", "build", f["checkpoint"], "--samples", "5", "--calib-images",
                                               "16", "--epochs", "2", "--out", o],
        "export --out": lambda f, o: ["export", "--supernet", f["checkpoint"], "--from", f["results"], "--eval-images",
                                      "16", "--bn-images", "16", "--out", o],
        "train --out": lambda f, o: ["train", f["config"], "--no-progress", "--set", "train.steps_per_epoch=1",
                                     "--out", o],
    }
    for cname, cmd in cmds.items():
        flag = cname.split()[-1]
        is_dir = cname.startswith(("export", "train"))
        spots = {"under a regular file": lambda d: d / "afile" / "x.out",
                 "in /proc (not writable)": lambda d: Path("/proc/edgenas-fuzz/x.out"),
                 "empty name": lambda d: ""}
        if is_dir:
            spots["an existing regular file"] = lambda d: d / "afile"
        else:
            spots["an existing directory"] = lambda d: d / "adir"
        for sname, spot in spots.items():
            def mutate(f, d):
                (d / "afile").write_text("keep me\n")
                (d / "adir").mkdir(exist_ok=True)
                return [d / "afile"]
            c.add("output_paths", f"{cname} {sname}", lambda f, cmd=cmd, spot=spot: cmd(f, spot(f["config"].parent)),
                  mutate, names=[flag])

    # 6. runaway input
    for kind in ("space", "config", "profile", "table"):
        def mutate(f, d, kind=kind):
            text = f[kind].read_text()
            t = yaml.safe_load(text)
            key = "name" if kind != "table" else "header"
            f[kind].write_text(BOMB + "\n" + dump_tree({**t, key: "@@B@@"} if kind != "table" else t, "yaml",
                                                      {"@@B@@": "*h"}))
        c.add("runaway", f"{kind}: billion laughs", None, mutate, kind=kind)
    for kind, fmt in TEXT_KINDS.items():
        for depth in (200, 5000, 100000):
            def mutate(f, d, kind=kind, fmt=fmt, depth=depth):
                t = load_tree(f[kind], fmt)
                first = next(iter(t))
                t[first] = "@@D@@"
                f[kind].write_text(dump_tree(t, fmt, {"@@D@@": "[" * depth + "]" * depth}))
            c.add("runaway", f"{kind}: {depth}-deep nesting", None, mutate, kind=kind)
        def mutate(f, d, kind=kind):
            with open(f[kind], "r+b") as fh:  # a sparse 100 MB file
                fh.truncate(100 << 20)
        c.add("runaway", f"{kind}: 100 MB file", None, mutate, kind=kind)
    for which in ("data_batch_1", "test_batch", "batches.meta"):
        def mutate(f, d, which=which):
            root = d / "cifar" / "cifar-10-batches-py"
            root.mkdir(parents=True)
            import numpy as np
            ok = pickle.dumps({b"data": np.zeros((10, 3072), np.uint8), b"labels": list(range(10))}, protocol=2)
            meta = pickle.dumps({b"label_names": [b"c%d" % i for i in range(10)]}, protocol=2)
            for n in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
                good = meta if n == "batches.meta" else ok
                (root / n).write_bytes(b"\x80\x04\x8e" + (2**62).to_bytes(8, "little") + b"xx" if n == which else good)
            return list(root.iterdir())
        c.add("runaway", f"CIFAR pickle {which} declaring 2^62 bytes", lambda f: [
            "train", f["config"], "--out", f["config"].parent / "newrun", "--no-progress", "--set", "data.name=cifar10",
            "--set", f"data.path={f['config'].parent / 'cifar'}", "--set", "data.limit=null"], mutate, names=[which])
    for flag, value in (("--population", "1000000000"), ("--population", "9" * 30), ("--generations", "1000000000000"),
                        ("--top-k", "1000000000"), ("--evaluations", "10" * 20)):
        c.add("runaway", f"search {flag} {value[:14]}", lambda f, flag=flag, value=value:
              search_with("--out", "checkpoint")(f)[:-2] + ["--out", f["checkpoint"].parent / "o.json", flag, value],
              names=[flag])
    for flag, value in (("--samples", "1000000000"), ("--calib-images", "100000000000"), ("--epochs", "10000000000")):
        c.add("runaway", f"predictor build {flag} {value}", lambda f, flag=flag, value=value:
              ["predictor", "build", f["checkpoint"], flag, value], names=[flag])
    c.add("runaway", "profile --runs 10^12", lambda f: ["profile", f["profile"], "--space", "mbv3-tiny", "--runs",
                                                        "1000000000000"], names=["--runs"])
    c.add("runaway", "eval --sample 10^12", lambda f: ["eval", f["checkpoint"], "--sample", "1000000000000"],
          names=["--sample"])

    # 7. misleading messages
    def config_set(path, value):
        def mutate(f, d):
            t = load_tree(f["config"], "yaml")
            set_at(t, path, "@@V@@")
            f["config"].write_text(dump_tree(t, "yaml", {"@@V@@": value}))
        return mutate
    tree = load_tree(c.real["config"], "yaml")
    c.add("misleading", "config: phase lr .nan", None, config_set(("schedule", "phases", 0, "lr"), ".nan"),
          names=["lr"], kind="config", forbid=["--set"])
    c.add("misleading", "config: phases []", None, config_set(("schedule", "phases"), "[]"), names=["phases"],
          kind="config")
    c.add("misleading", "train --set lr=nan", lambda f: ["train", f["config"], "--out", f["config"].parent / "x",
                                                          "--set", "schedule.phases.0.lr=nan"], names=["lr"])
    for field in ("scale", "offset_ms", "overhead_ms"):
        def mutate(f, d, field=field):
            t = load_tree(f["table"], "yaml")
            cal = t["header"].get("calibration") or {}
            cal[field] = "@@V@@"
            t["header"]["calibration"] = cal
            f["table"].write_text(dump_tree(t, "yaml", {"@@V@@": ".nan"}))
        c.add("misleading", f"table: calibration {field} NaN", None, mutate, names=[field], kind="table",
              forbid=["budget"])
    for kind in ("checkpoint", "predictor"):
        def mutate(f, d, kind=kind):
            import collections
            p = torch.load(f[kind], weights_only=True)
            p["extra"] = collections.OrderedDict  # a global that weights_only refuses
            with open(f[kind], "wb") as fh:
                torch.save(p, fh)
        c.add("misleading", f"{kind}: pickle with a blocked global", None, mutate, kind=kind,
              forbid=["weights_only=False", "weights_only = False"])
    c.add("misleading", "IDX path is a file", lambda f: ["train", f["config"], "--out", f["config"].parent / "x",
                                                          "--set", "data.name=idx", "--set", f"data.path={f['table']}"],
          names=["data.path", f"{c.real['table'].name}"], forbid=["does not exist", "not found"])
    for arch in ("r\u0662\u0664_k3e3", "r24_k\u0663e3", "r24_" + "k3e3," * 10000, "r24", "r24_k3e3_k3e3\n"):
        c.add("misleading", f"export --arch {arch[:12]!r}", lambda f, arch=arch:
              ["export", "--supernet", f["checkpoint"], "--arch", arch, "--out", f["checkpoint"].parent / "e",
               "--eval-images", "16", "--bn-images", "16"], names=["arch"])
        c.add("misleading", f"eval --arch {arch[:12]!r}", lambda f, arch=arch:
              ["eval", f["checkpoint"], "--arch", arch, "--bn-images", "16"], names=["arch"])

    # 8. corrupt weights
    for kind, reader in (("checkpoint", "search"), ("checkpoint", "eval"), ("checkpoint", "export"),
                         ("predictor", "search"), ("resume", "train")):
        for frac in (0.2, 0.35, 0.5, 0.65, 0.8, 0.95):
            size = rng.choice([1024, 2048, 4096])
            def mutate(f, d, kind=kind, frac=frac, size=size):
                data = bytearray(f[kind].read_bytes())
                r = random.Random(int(frac * 1000) + size)
                start = int(len(data) * frac)
                for i in range(start, min(start + size, len(data))):
                    data[i] ^= r.randrange(1, 256)
                f[kind].write_bytes(bytes(data))
            def argv(f, reader=reader, kind=kind):
                d = f["config"].parent
                if reader == "eval":
                    return ["eval", f[kind], "--arch", "smallest", "--bn-images", "16", "--batch-size", "100"]
                if reader == "export":
                    return ["export", "--supernet", f[kind], "--from", f["results"], "--out", d / "e",
                            "--eval-images", "16", "--bn-images", "16"]
                return Cases.reader(kind, f, d)
            c.add("corrupt_weights", f"{kind} via {reader}: {size} B flipped at {frac:.0%}", argv, mutate, kind=kind)
    return c.cases


def numeric_flags():
    from edgenas.cli import build_parser
    from edgenas.cli.types import walk_flags

    return [(p, a.option_strings[-1]) for p, a in walk_flags(build_parser())
            if getattr(a.type, "__module__", "") == "edgenas.cli.types"]


# ---- running and scoring ----------------------------------------------------------------------------

def sha(path: str) -> str | None:
    try:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()
    except OSError:
        return None


def run_fork(argv: list[str], cwd: str, timeout: float) -> tuple[int | None, str, float]:
    err_path = Path(cwd) / "stderr.txt"
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: what `python -m edgenas ARGV` does after its imports
        try:
            os.chdir(cwd)
            os.setpgid(0, 0)
            resource.setrlimit(resource.RLIMIT_AS, (MEM_LIMIT, MEM_LIMIT))
            fd = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(fd, 2)
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
            sys.argv = ["edgenas", *argv]
            from edgenas.cli import main
            try:
                rc = main(argv)
            except SystemExit as exc:
                rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                if not isinstance(exc.code, (int, type(None))):
                    print(exc.code, file=sys.stderr)
        except BaseException:
            import traceback
            traceback.print_exc()
            rc = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc if isinstance(rc, int) else 1)
    rc = None
    while time.monotonic() - t0 < timeout:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            rc = os.waitstatus_to_exitcode(status)
            break
        time.sleep(0.02)
    else:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
    return rc, err_path.read_text(errors="replace") if err_path.exists() else "", time.monotonic() - t0


def run_exec(argv: list[str], cwd: str, timeout: float) -> tuple[int | None, str, float]:
    t0 = time.monotonic()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    try:
        p = subprocess.run([sys.executable, "-m", "edgenas", *argv], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, timeout=timeout,
                           preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (MEM_LIMIT, MEM_LIMIT)))
        return p.returncode, p.stderr.decode(errors="replace"), time.monotonic() - t0
    except subprocess.TimeoutExpired as exc:
        return None, (exc.stderr or b"").decode(errors="replace"), time.monotonic() - t0


def score(case: dict, rc, err: str, before: dict, seconds: float) -> dict:
    # The message is the error line and whatever follows it; log lines before it (progress, notes) are
    # not part of it.
    lines = err.strip().splitlines()
    start = next((i for i in range(len(lines) - 1, -1, -1) if ": error:" in lines[i] and lines[i].startswith("edgenas")), 0)
    lines = lines[start:]
    line = lines[0] if lines else ""
    after = {p: sha(p) for p in before}
    problems = []
    if rc is None:
        problems.append("hang")
    if "Traceback (most recent call last)" in err:
        problems.append("traceback")
    if rc in (0, 1):
        problems.append("accepted")
    elif rc is not None and rc != 2:
        problems.append(f"exit {rc}")
    changed = [p for p in before if before[p] != after[p]]
    if changed:
        problems.append("changed input")
    if rc == 2:
        msg = []
        if len(lines) != 1:
            msg.append("lines")
        if len("\n".join(lines)) >= 300:
            msg.append("long")
        if not (line.startswith("edgenas: error:") or line.startswith("edgenas ") and ": error: " in line):
            msg.append("form")
        if case["names"] and not any(n in line for n in case["names"]):
            msg.append("unnamed")
        if any(s in err for s in case["forbid"]):
            msg.append("misleading")
        if msg:
            problems.append("message:" + ",".join(msg))
    r = {"id": case["id"], "family": case["family"], "name": case["name"], "rc": rc, "seconds": round(seconds, 2),
         "problems": problems}
    if problems:  # what it takes to reproduce and read a failure
        r.update(stderr=err.strip()[-600:], changed=[Path(p).name for p in changed], argv=[a[:200] for a in case["argv"]])
    return r


def markdown(summary: dict) -> str:
    keys = list(next(iter(summary.values())))
    rows = ["| family | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    for fam, s in summary.items():
        name = f"**{fam}**" if fam == "total" else fam
        rows.append(f"| {name} | " + " | ".join(str(s[k]) for k in keys) + " |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default="/tmp/edgenas-fuzz", help="scratch directory (the real files are kept here)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per case before it counts as a hang")
    ap.add_argument("--mode", choices=["fork", "exec"], default="fork")
    ap.add_argument("--only", help="run only cases whose family or name contains this")
    ap.add_argument("--out", default=str(HERE / "results.json"))
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    real = build_real(work)
    cases = generate(Cases(work, real))
    if args.only:
        cases = [c for c in cases if args.only in c["family"] or args.only in c["name"]]
    import torch  # noqa: F401  (imported once, before forking)
    import edgenas.cli  # noqa: F401
    torch.set_num_threads(1)
    runner = run_fork if args.mode == "fork" else run_exec
    started = datetime.now(timezone.utc)
    results = []

    def one(case):
        case["argv"], case["inputs"], case["names"] = case.pop("build")()
        before = {p: sha(p) for p in case["inputs"]}
        rc, err, secs = runner(case["argv"], case["dir"], args.timeout)
        result = score(case, rc, err, before, secs)
        shutil.rmtree(case["dir"], ignore_errors=True)
        return result

    if args.workers > 1 and args.mode == "exec":
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(args.workers) as pool:
            results = list(pool.map(one, cases))
    else:
        for i, case in enumerate(cases):
            results.append(one(case))
            r = results[-1]
            if (i + 1) % 50 == 0:
                print(f"[{i + 1}/{len(cases)}] done", flush=True)
            if r["problems"]:
                print(f"[{i + 1}/{len(cases)}] {case['family']}: {case['name']}: {' '.join(r['problems'])}: "
                      f"{r['stderr'].splitlines()[-1][:160] if r['stderr'] else ''}", flush=True)
    summary = {}
    keys = ["cases", "traceback", "accepted", "hang", "changed input", "message", "other exit"]
    for fam in FAMILIES + ["total"]:
        rs = [r for r in results if fam == "total" or r["family"] == fam]
        s = dict.fromkeys(keys, 0)
        s["cases"] = len(rs)
        for r in rs:
            for p in r["problems"]:
                k = "message" if p.startswith("message") else "other exit" if p.startswith("exit") else p
                s[k] += 1
        summary[fam] = s
    doc = {"command": " ".join(["python", "benchmarks/robustness/fuzz.py", *sys.argv[1:]]),
           "date": started.strftime("%Y-%m-%d %H:%M UTC"), "mode": args.mode,
           "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                    text=True).stdout.strip(), "timeout_s": args.timeout,
           "seconds": round((datetime.now(timezone.utc) - started).total_seconds()),
           "summary": summary, "cases": results}
    Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    print(markdown(summary))
    shutil.rmtree(work / "cases", ignore_errors=True)


if __name__ == "__main__":
    main()
