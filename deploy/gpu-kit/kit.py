#!/usr/bin/env python3
"""Helper for build.sh: requirement checks, wheel unpacking with trimming, dependency audit, manifest.

Standard library only (plus `packaging`, taken from pip's vendored copy when it is not installed), so it runs
on whatever python3 builds the kit; nothing here needs the target Python 3.12.

    kit.py check-reqs  NODE_BASE REQ...            pins exact, no duplicates, node-base names must say "# override:"
    kit.py missing     CACHE_DIR REQ...            the pins with no wheel in CACHE_DIR (one `name==version` a line)
    kit.py wheels      CACHE_DIR REQ...            the cached wheel file of every pin (fails on a missing one)
    kit.py install     SITE DATA TRIM WHEEL...     unzip wheels into SITE, *.data/data into DATA, skip TRIM globs;
                                                   prints JSON {distributions, trimmed} to stdout
    kit.py audit       NODE_BASE INSTALL_JSON      every shipped distribution's requirements, checked against the
                                                   kit and the node; conflicts inside the kit fail
    kit.py manifest    OUT INSTALL_JSON AUDIT_JSON KEY=VALUE...   (kit=swa-autotune-ray-kit ray=V python=V built_at=T
                                                   for the Ray kit; sglang= torch= ... for the GPU kit)
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import stat
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

try:  # pragma: no cover - whichever is there
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version
except ImportError:  # pragma: no cover
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name
    from pip._vendor.packaging.version import Version

# The node: Linux x86_64, CPython 3.12 (markers of shipped wheels are evaluated for it).
NODE_ENV = {
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "extra": "",
}

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!-]+)$")


def die(msg: str) -> None:
    print(f"kit.py: error: {msg}", file=sys.stderr)
    sys.exit(1)


def read_pins(path: str) -> list[tuple[str, str, str]]:
    """(name, version, comment) of every `name==version` line; anything else is an error."""
    pins = []
    for n, raw in enumerate(Path(path).read_text().splitlines(), 1):
        line, _, comment = raw.partition("#")
        line = line.strip()
        if not line:
            continue
        m = PIN.match(line)
        if not m:
            die(f"{path}:{n}: '{line}' is not an exact pin (name==version); the kit resolves nothing")
        pins.append((m.group(1), m.group(2), comment.strip()))
    return pins


def read_names(path: str) -> set[str]:
    lines = (line.split("#")[0].strip() for line in Path(path).read_text().splitlines())
    return {canonicalize_name(line) for line in lines if line}


def wheel_key(filename: str) -> tuple[str, str]:
    """(canonical name, normalised version) from a wheel's file name."""
    name, version = filename.split("-")[:2]
    return canonicalize_name(name), str(Version(version))


def cmd_check_reqs(node_base: str, *reqs: str) -> None:
    node = read_names(node_base)
    seen: dict[str, str] = {}
    problems = []
    for req in reqs:
        for name, version, comment in read_pins(req):
            key = canonicalize_name(name)
            if key in seen:
                problems.append(f"{name} is pinned twice ({seen[key]} and {req})")
            seen[key] = req
            if key in node and not comment.startswith("override:"):
                problems.append(
                    f"{req}: {name}=={version} is already on the node (node-base.txt). Drop it, or keep it with a "
                    f"'# override: WHY' comment if the node's version does not fit."
                )
    if problems:
        die("requirements check failed:\n  " + "\n  ".join(problems))
    print(f"requirements ok: {len(seen)} pins, none duplicated, node-base overrides justified")


def cached(cache: str) -> dict[tuple[str, str], Path]:
    return {wheel_key(p.name): p for p in Path(cache).glob("*.whl")}


def cmd_missing(cache: str, *reqs: str) -> None:
    have = cached(cache)
    for req in reqs:
        for name, version, _ in read_pins(req):
            if (canonicalize_name(name), str(Version(version))) not in have:
                print(f"{name}=={version}")


def cmd_wheels(cache: str, *reqs: str) -> None:
    have = cached(cache)
    for req in reqs:
        for name, version, _ in read_pins(req):
            path = have.get((canonicalize_name(name), str(Version(version))))
            if path is None:
                die(f"no wheel for {name}=={version} in {cache} (download step incomplete?)")
            print(path)


def metadata(z: zipfile.ZipFile) -> tuple[str, dict]:
    names = [n for n in z.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1]
    if len(names) != 1:
        die(f"{z.filename}: expected one top-level *.dist-info/METADATA, found {names}")
    md = Parser().parsestr(z.read(names[0]).decode("utf-8"))
    return names[0].split("/")[0], md


def cmd_install(site: str, data: str, trim_file: str, *wheels: str) -> None:
    site_dir, data_dir = Path(site), Path(data)
    patterns = [line.split("#")[0].strip() for line in Path(trim_file).read_text().splitlines()]
    patterns = [p for p in patterns if p]
    site_dir.mkdir(parents=True, exist_ok=True)
    dists, trimmed = [], []
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as z:
            _, md = metadata(z)
            name, version = md["Name"], md["Version"]
            files = bytes_ = 0
            for info in z.infolist():
                if info.is_dir():
                    continue
                path = info.filename
                # *.data/purelib|platlib -> site; *.data/data -> DATA; scripts and headers are not needed (-m).
                parts = path.split("/")
                dest_root = site_dir
                if parts[0].endswith(".data") and len(parts) > 2:
                    kind, rest = parts[1], "/".join(parts[2:])
                    if kind in ("purelib", "platlib"):
                        path = rest
                    elif kind == "data":
                        dest_root, path = data_dir, rest
                    else:
                        continue
                if any(fnmatch.fnmatchcase(path, p) for p in patterns):
                    trimmed.append({"path": path, "bytes": info.file_size, "distribution": name})
                    continue
                target = dest_root / path
                if ".." in Path(path).parts or Path(path).is_absolute():
                    die(f"{wheel}: refusing unsafe path {info.filename}")
                target.parent.mkdir(parents=True, exist_ok=True)
                with z.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                mode = (info.external_attr >> 16) & 0o777
                os.chmod(target, 0o755 if mode & stat.S_IXUSR else 0o644)
                files += 1
                bytes_ += info.file_size
            dists.append({"name": name, "version": version, "wheel": Path(wheel).name,
                          "wheel_path": str(Path(wheel).resolve()), "files": files, "bytes": bytes_})
    # Record which trim patterns matched nothing: a renamed file in a new release should be noticed.
    unused = [p for p in patterns if not any(fnmatch.fnmatchcase(t["path"], p) for t in trimmed)]
    json.dump({"distributions": dists, "trimmed": trimmed, "trim_patterns": patterns, "unused_trim_patterns": unused},
              sys.stdout, indent=1)


def cmd_audit(node_base: str, install_json: str) -> None:
    node = read_names(node_base)
    installed = json.loads(Path(install_json).read_text())
    kit = {canonicalize_name(d["name"]): Version(d["version"]) for d in installed["distributions"]}
    conflicts, on_node, not_shipped = [], [], []
    for d in installed["distributions"]:
        with zipfile.ZipFile(d["wheel_path"]) as z:
            _, md = metadata(z)
        for raw in md.get_all("Requires-Dist") or []:
            req = Requirement(raw)
            if req.marker is not None and not req.marker.evaluate(NODE_ENV):
                continue
            key = canonicalize_name(req.name)
            entry = f"{d['name']}: {raw}"
            if key in kit:
                if not req.specifier.contains(kit[key], prereleases=True):
                    conflicts.append(f"{entry} (the kit has {kit[key]})")
            elif key in node:
                on_node.append(entry)
            else:
                not_shipped.append(entry)
    json.dump({"conflicts": conflicts, "met_by_node": sorted(on_node), "not_shipped": sorted(not_shipped)},
              sys.stdout, indent=1)
    if conflicts:
        die("shipped distributions disagree with each other:\n  " + "\n  ".join(conflicts))


def cmd_manifest(out: str, install_json: str, audit_json: str, *pairs: str) -> None:
    installed = json.loads(Path(install_json).read_text())
    audit = json.loads(Path(audit_json).read_text())
    fields: dict = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        fields[key] = value
    trimmed = installed["trimmed"]
    kind = fields.pop("kit", "swa-autotune-gpu-kit")
    if kind == "swa-autotune-gpu-kit":
        head = {
            "sglang": fields.pop("sglang"),
            "torch_required": fields.pop("torch"),
            "python": fields.pop("python"),
            "arch": fields.pop("arch"),
            "built_at": fields.pop("built_at"),
            "project": {"version": fields.pop("project_version"), "git_commit": fields.pop("git_commit"),
                        "git_dirty": fields.pop("git_dirty") == "true"},
        }
    else:  # the Ray kit (build.sh --ray): no project wheel, no SGLang
        head = {"ray": fields.pop("ray"), "python": fields.pop("python"), "built_at": fields.pop("built_at")}
    manifest = {
        "kit": kind,
        **head,
        **fields,
        "distributions": sorted(({"name": d["name"], "version": d["version"], "wheel": d["wheel"]}
                                 for d in installed["distributions"]), key=lambda d: d["name"].lower()),
        "trimmed": trimmed_by_pattern(installed["trim_patterns"], trimmed),
        "trimmed_bytes": sum(t["bytes"] for t in trimmed),
        "requirements_met_by_node": audit["met_by_node"],
        "requirements_not_shipped": audit["not_shipped"],
    }
    Path(out).write_text(json.dumps(manifest, indent=1) + "\n")


def trimmed_by_pattern(patterns: list[str], trimmed: list[dict], list_up_to: int = 50) -> list[dict]:
    """Per trim pattern: the files it removed (every path, unless there are more than `list_up_to`), and bytes."""
    groups = []
    for pattern in patterns:
        hits = sorted((t for t in trimmed if fnmatch.fnmatchcase(t["path"], pattern)), key=lambda t: t["path"])
        group = {"pattern": pattern, "files": len(hits), "bytes": sum(t["bytes"] for t in hits)}
        if len(hits) <= list_up_to:
            group["paths"] = [t["path"] for t in hits]
        else:
            group["paths_not_listed"] = f"{len(hits)} files under {os.path.commonpath([t['path'] for t in hits])}/"
        groups.append(group)
    return groups


COMMANDS = {
    "check-reqs": cmd_check_reqs,
    "missing": cmd_missing,
    "wheels": cmd_wheels,
    "install": cmd_install,
    "audit": cmd_audit,
    "manifest": cmd_manifest,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        die(f"usage: kit.py {{{'|'.join(COMMANDS)}}} ARGS... (see the docstring)")
    COMMANDS[sys.argv[1]](*sys.argv[2:])
