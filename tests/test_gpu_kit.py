"""The offline GPU kit (deploy/gpu-kit/): node.sh doctor's checks, fast, and the real build, slow.

The slow tests run `bash deploy/gpu-kit/build.sh` once (PyPI needed the first time; downloads are cached in
dist/.gpu-kit-cache/ or $SWA_KIT_CACHE), unpack the tarball, and run the kit's autotune on a Python 3.12 that
stands in for the GPU node: a venv holding exactly the node image's copies of what the project imports from it
(deploy/gpu-kit/node-emulation-py312.txt). torch is not there, so sglang itself is not imported here.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
KIT_SRC = REPO / "deploy" / "gpu-kit"
NODE_SH = KIT_SRC / "node.sh"
KIT_NAME = "swa-autotune-gpu-kit-sglang0.5.17-py312-sm90"
LIMIT_MB = 60
RAY_KIT_NAME = "swa-autotune-ray-kit-ray2.60.0-py312"
RAY_LIMIT_MB = 50
CACHE = Path(os.environ.get("SWA_KIT_CACHE") or REPO / "dist" / ".gpu-kit-cache")
HERE_PY = f"{sys.version_info.major}.{sys.version_info.minor}"


# -- fast: node.sh doctor against a small fake kit --------------------------------------------------

FAKE_TORCH = '''
__version__ = "{version}"
class version:
    cuda = "13.0"
class _Props:
    total_memory = 141 * 2**30
class cuda:
    is_available = staticmethod(lambda: {gpus} > 0)
    device_count = staticmethod(lambda: {gpus})
    get_device_capability = staticmethod(lambda i: (9, 0))
    get_device_name = staticmethod(lambda i: "NVIDIA H200")
    get_device_properties = staticmethod(lambda i: _Props())
'''

MISSING_TORCH = 'raise ModuleNotFoundError("No module named \'torch\'", name="torch")\n'


def fake_kit(root: Path, torch_source: str | None, python: str = HERE_PY) -> Path:
    """A kit directory with node.sh, a manifest, and stub sglang/sgl_kernel modules (torch as given)."""
    kit = root / "kit"
    site = kit / "site"
    for mod in ("sglang/__init__.py", "sglang/srt/__init__.py", "sglang/srt/server_args.py", "sgl_kernel/__init__.py"):
        (site / mod).parent.mkdir(parents=True, exist_ok=True)
        (site / mod).write_text("")
    if torch_source is not None:
        (site / "torch").mkdir()
        (site / "torch" / "__init__.py").write_text(torch_source)
    shutil.copy(NODE_SH, kit / "node.sh")
    (kit / "manifest.json").write_text(json.dumps({
        "sglang": "0.5.17", "torch_required": "2.11.0", "python": python, "arch": "sm90",
        "built_at": "2026-11-28T00:00:00Z", "project": {"git_commit": "0" * 40}, "distributions": [],
    }))
    return kit


def doctor(kit: Path, tmp_path: Path, python: str = sys.executable, ray: str = "0") -> subprocess.CompletedProcess:
    """node.sh doctor; its Ray check is off (SWA_AUTOTUNE_RAY=0) unless `ray` says "1"."""
    env = {**os.environ, "PYTHON": python, "PYTHONPATH": str(REPO), "TRITON_CACHE_DIR": str(tmp_path / "triton"),
           "SWA_AUTOTUNE_RAY": ray}
    env.pop("SWA_AUTOTUNE_RAY_KIT", None)
    return subprocess.run(["bash", str(kit / "node.sh"), "doctor"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)


def test_doctor_passes_with_the_right_torch_and_a_gpu(tmp_path):
    kit = fake_kit(tmp_path, FAKE_TORCH.format(version="2.11.0+cu130", gpus=1))
    result = doctor(kit, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok    torch 2.11.0+cu130" in result.stdout
    assert "GPU 0: NVIDIA H200 (sm90" in result.stdout
    assert "ok    import sglang.srt.server_args" in result.stdout
    assert "warn  import autotune.cli.app from" in result.stdout  # the checkout's copy here, not the kit's
    assert "all good" in result.stdout


def test_doctor_names_the_fix_when_torch_mismatches(tmp_path):
    kit = fake_kit(tmp_path, FAKE_TORCH.format(version="2.13.0+cu130", gpus=1))
    result = doctor(kit, tmp_path)
    assert result.returncode != 0
    out = result.stdout
    assert "FAIL  torch 2.13.0+cu130 found, but this kit's sglang 0.5.17 needs torch 2.11.0" in out
    assert "build.sh --torch 2.13.0" in out
    assert "1 problem(s)" in out


def test_doctor_says_torch_is_missing_and_not_shipped(tmp_path):
    kit = fake_kit(tmp_path, MISSING_TORCH)
    result = doctor(kit, tmp_path)
    assert result.returncode != 0
    assert "FAIL  torch is not importable" in result.stdout
    assert "The kit does not ship torch" in result.stdout
    assert "skip  import sglang: it needs torch" in result.stdout
    assert "1 problem(s)" in result.stdout


def test_doctor_fails_without_a_gpu(tmp_path):
    kit = fake_kit(tmp_path, FAKE_TORCH.format(version="2.11.0", gpus=0))
    result = doctor(kit, tmp_path)
    assert result.returncode != 0
    assert "no CUDA GPU visible" in result.stdout


def test_doctor_rejects_another_python_and_a_missing_interpreter(tmp_path):
    kit = fake_kit(tmp_path, FAKE_TORCH.format(version="2.11.0", gpus=1), python="3.99")
    result = doctor(kit, tmp_path)
    assert result.returncode != 0
    assert "the kit was built for Python 3.99" in result.stdout

    result = doctor(kit, tmp_path, python=str(tmp_path / "no-such-python"))
    assert result.returncode != 0
    assert "not found. Set PYTHON to the node image's Python 3" in result.stderr


# A stand-in for Ray: enough of its API for doctor's probe (init, a remote task, get, shutdown).
FAKE_RAY = '''
__version__ = "2.60.0"
_gpus = 0
def init(num_cpus=None, num_gpus=0, **kwargs):
    global _gpus
    _gpus = num_gpus
def shutdown(): pass
def cluster_resources(): return {"CPU": 2.0, "GPU": float(_gpus)}
def get_gpu_ids(): return [0]
class _Ref:
    def __init__(self, value): self.value = value
class _Remote:
    def __init__(self, fn): self.fn = fn
    def remote(self, *args, **kwargs): return _Ref(self.fn(*args, **kwargs))
def remote(*args, **kwargs):
    if args and callable(args[0]):
        return _Remote(args[0])
    return _Remote
def get(ref, timeout=None): return ref.value
'''


def test_doctor_fails_with_the_fix_when_ray_is_missing(tmp_path):
    kit = fake_kit(tmp_path, FAKE_TORCH.format(version="2.11.0+cu130", gpus=1))
    (kit / "site" / "ray").mkdir()  # shadows any ray of this machine's Python, as on a node without the Ray kit
    (kit / "site" / "ray" / "__init__.py").write_text(MISSING_TORCH.replace("torch", "ray"))
    result = doctor(kit, tmp_path, ray="1")
    assert result.returncode != 0
    out = result.stdout
    assert "FAIL  ray is not importable" in out
    assert "bash deploy/gpu-kit/build.sh --ray" in out and "SWA_AUTOTUNE_RAY_KIT=DIR" in out
    assert "SWA_AUTOTUNE_RAY=0 if this node only runs --runner local" in out
    assert "1 problem(s)" in out

    # and a SWA_AUTOTUNE_RAY_KIT that is not a Ray kit
    env = {**os.environ, "PYTHONPATH": str(REPO), "TRITON_CACHE_DIR": str(tmp_path / "triton"),
           "SWA_AUTOTUNE_RAY_KIT": str(tmp_path / "nowhere")}
    missing_dir = subprocess.run(["bash", str(kit / "node.sh"), "doctor"], env=env, cwd=tmp_path,
                                 capture_output=True, text=True, timeout=120)
    assert f"FAIL  SWA_AUTOTUNE_RAY_KIT={tmp_path / 'nowhere'} has no site/ directory" in missing_dir.stdout


def test_doctor_starts_ray_from_the_ray_kit_beside_the_kit(tmp_path):
    kit = fake_kit(tmp_path, FAKE_TORCH.format(version="2.11.0+cu130", gpus=1))
    ray_site = kit / "ray-kit" / "site" / "ray"  # tar -xJf swa-autotune-ray-kit-*.tar.xz -C KIT
    ray_site.mkdir(parents=True)
    (ray_site / "__init__.py").write_text(FAKE_RAY)
    result = doctor(kit, tmp_path, ray="1")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert f"ok    import ray 2.60.0 ({ray_site})" in out
    assert "ok    ray: a local Ray started (num_gpus=1; cluster GPU=1.0), ran a task and a num_gpus=1 task on GPU 0" in out
    assert "all good" in out

    skipped = doctor(kit, tmp_path, ray="0")
    assert "skip  ray: SWA_AUTOTUNE_RAY=0" in skipped.stdout and skipped.returncode == 0


def test_node_sh_env_puts_the_kit_first(tmp_path):
    kit = fake_kit(tmp_path, None)
    env = {**os.environ, "PYTHONPATH": "/elsewhere"}
    env.pop("TRITON_CACHE_DIR", None)
    out = subprocess.run(["bash", str(kit / "node.sh"), "env"], env=env, capture_output=True, text=True,
                         check=True).stdout
    assert f"export PYTHONPATH={kit / 'site'}:/elsewhere" in out
    assert "export HF_HUB_OFFLINE=1" in out and "export TRANSFORMERS_OFFLINE=1" in out
    assert f"export SWA_AUTOTUNE_KIT={kit}" in out
    assert "swa-autotune/triton" in out
    assert "export RAY_USAGE_STATS_ENABLED=0" in out

    (tmp_path / "ray-kit" / "site").mkdir(parents=True)  # the Ray kit unpacked beside the kit: its site/ second
    env.pop("SWA_AUTOTUNE_RAY_KIT", None)
    out = subprocess.run(["bash", str(kit / "node.sh"), "env"], env=env, capture_output=True, text=True,
                         check=True).stdout
    assert f"export PYTHONPATH={kit / 'site'}:{tmp_path / 'ray-kit' / 'site'}:/elsewhere" in out
    assert f"export SWA_AUTOTUNE_RAY_KIT={tmp_path / 'ray-kit'}" in out


def test_node_sh_caches_carry_the_jit_builds_to_a_fresh_home(tmp_path):
    """`caches save` on a node that booted a server, `caches load` on a fresh one: the JIT builds
    (sgl-kernel's tvm-ffi, FlashInfer) and the pinned Triton/inductor caches arrive byte for byte."""
    kit = fake_kit(tmp_path, None)
    warm, fresh = tmp_path / "warm-home", tmp_path / "fresh-home"
    built = {".cache/tvm-ffi/sgl_kernel_jit_rope/rope.so": b"\x7fELF rope",
             ".cache/flashinfer/0.6.15.post1/sampling.so": b"\x7fELF sampling",
             ".cache/swa-autotune/triton/abc/kernel.cubin": b"cubin"}
    for rel, data in built.items():
        (warm / rel).parent.mkdir(parents=True, exist_ok=True)
        (warm / rel).write_bytes(data)
    tar = tmp_path / "caches.tar.gz"

    def node(home: Path, *args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "HOME": str(home)}
        env.pop("TRITON_CACHE_DIR", None)
        return subprocess.run(["bash", str(kit / "node.sh"), "caches", *args], env=env, capture_output=True, text=True)

    empty = node(fresh, "save", str(tar))
    assert empty.returncode != 0 and "boot a server on this node first" in empty.stderr and not tar.exists()
    missing = node(fresh, "load", str(tar))
    assert missing.returncode != 0 and "caches save" in missing.stderr

    saved = node(warm, "save", str(tar))
    assert saved.returncode == 0, saved.stderr
    loaded = node(fresh, "load", str(tar))
    assert loaded.returncode == 0, loaded.stderr
    for rel, data in built.items():
        assert (fresh / rel).read_bytes() == data
    assert node(fresh, "pack", str(tar)).returncode != 0


# -- slow: the real build --------------------------------------------------------------------------

def _python312() -> str | None:
    for candidate in (shutil.which("python3.12"), "/root/.pyenv/versions/3.12.1/bin/python3.12"):
        if not candidate or not Path(candidate).exists():
            continue
        probe = subprocess.run([candidate, "-c", "import sys, venv; print(sys.version_info[:2] == (3, 12))"],
                               capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.strip() == "True":
            return candidate
    return None


def _build(tmp_path_factory, name: str, *flags: str) -> tuple[Path, str, Path]:
    """Run build.sh FLAGS once: (tarball path, build stdout, the directory it unpacks into)."""
    out = tmp_path_factory.mktemp(name)
    result = subprocess.run(["bash", str(KIT_SRC / "build.sh"), *flags, "--out", str(out), "--cache", str(CACHE)],
                            cwd=REPO, capture_output=True, text=True, timeout=1700)
    assert result.returncode == 0, f"build.sh {' '.join(flags)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    tarball = next(out.glob("*.tar.xz"), None)
    assert tarball is not None and tarball.is_file(), result.stdout
    unpacked = out / "unpacked"
    unpacked.mkdir()
    subprocess.run(["tar", "-xJf", str(tarball), "-C", str(unpacked)], check=True)
    return tarball, result.stdout, unpacked


@pytest.fixture(scope="module")
def built_kit(tmp_path_factory):
    """Run build.sh once: (tarball path, build stdout, unpacked kit dir)."""
    tarball, stdout, unpacked = _build(tmp_path_factory, "gpu-kit")
    assert tarball.name == f"{KIT_NAME}.tar.xz"
    return tarball, stdout, unpacked


@pytest.fixture(scope="module")
def node_python(built_kit):
    """A Python 3.12 venv holding the node image's copies of what the project imports (see the module doc)."""
    py312 = _python312()
    if py312 is None:
        pytest.skip("python3.12 is not available here: it stands in for the GPU node's Python")
    spec = KIT_SRC / "node-emulation-py312.txt"
    digest = hashlib.sha256(spec.read_bytes()).hexdigest()[:12]
    venv = CACHE / f"node-venv-py312-{digest}"
    python = venv / "bin" / "python"
    if not (venv / ".complete").exists():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([py312, "-m", "venv", str(venv)], check=True, timeout=300)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--only-binary=:all:", "-r", str(spec)],
                       check=True, timeout=600)
        (venv / ".complete").write_text(digest)
    return str(python)


@pytest.fixture(scope="module")
def built_ray_kit(tmp_path_factory):
    """Run build.sh --ray once: (tarball path, build stdout, unpacked ray-kit dir)."""
    tarball, stdout, unpacked = _build(tmp_path_factory, "ray-kit", "--ray")
    assert tarball.name == f"{RAY_KIT_NAME}.tar.xz"
    return tarball, stdout, unpacked / "ray-kit"


@pytest.fixture(scope="module")
def ray_node_python():
    """The stand-in node's venv plus stand-ins for the image's copies of Ray core's requirements."""
    py312 = _python312()
    if py312 is None:
        pytest.skip("python3.12 is not available here: it stands in for the GPU node's Python")
    specs = [KIT_SRC / "node-emulation-py312.txt", KIT_SRC / "node-emulation-ray-py312.txt"]
    digest = hashlib.sha256(b"".join(spec.read_bytes() for spec in specs)).hexdigest()[:12]
    venv = CACHE / f"node-venv-ray-py312-{digest}"
    python = venv / "bin" / "python"
    if not (venv / ".complete").exists():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([py312, "-m", "venv", str(venv)], check=True, timeout=300)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--only-binary=:all:",
                        *[arg for spec in specs for arg in ("-r", str(spec))]], check=True, timeout=600)
        (venv / ".complete").write_text(digest)
    return str(python)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_ray_kit_is_small_trimmed_and_starts_ray_on_the_nodes_python(built_ray_kit, ray_node_python, tmp_path):
    tarball, stdout, ray_kit = built_ray_kit
    m = re.search(r"^kit size: ([0-9.]+) MB \(([0-9]+) bytes", stdout, re.M)
    assert m and int(m.group(2)) == tarball.stat().st_size, stdout
    assert tarball.stat().st_size <= RAY_LIMIT_MB * 1_000_000, f"Ray kit is {m.group(1)} MB, over {RAY_LIMIT_MB} MB"
    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
    for needed in ("ray-kit/manifest.json", "ray-kit/site/ray/__init__.py", "ray-kit/site/ray/_raylet.so",
                   "ray-kit/site/ray/core/src/ray/raylet/raylet", "ray-kit/site/jsonschema/__init__.py"):
        assert needed in names, f"{needed} missing from the Ray kit"
    for gone in ("ray-kit/site/ray/jars/", "ray-kit/site/ray/dashboard/client/build/", "ray-kit/site/ray/rllib/"):
        assert not [n for n in names if n.startswith(gone)], gone
    assert not [n for n in names if "/__pycache__/" in n]
    manifest = json.loads((ray_kit / "manifest.json").read_text())
    assert manifest["kit"] == "swa-autotune-ray-kit" and manifest["python"] == "3.12"
    assert {d["name"].lower() for d in manifest["distributions"]} >= {"ray", "jsonschema"}
    assert {g["pattern"]: g for g in manifest["trimmed"]}["ray/jars/*"]["bytes"] > 30_000_000

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "RAY_"))}
    env.update(PYTHONPATH=str(ray_kit / "site"), PYTHONNOUSERSITE="1", RAY_USAGE_STATS_ENABLED="0")
    probe = ("import ray; ray.init(num_cpus=1, num_gpus=0, include_dashboard=False, log_to_driver=False)\n"
             "f = ray.remote(lambda x: x + 1)\nprint('ray', ray.__version__, ray.__file__, ray.get(f.remote(1)))\n"
             "ray.shutdown()")
    ran = subprocess.run([ray_node_python, "-c", probe], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert f" {ray_kit / 'site'}" in ran.stdout and ran.stdout.strip().endswith(" 2"), ran.stdout


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_kit_size_is_printed_and_within_the_limit(built_kit):
    tarball, stdout, _ = built_kit
    m = re.search(r"^kit size: ([0-9.]+) MB \(([0-9]+) bytes", stdout, re.M)
    assert m, f"build.sh did not print the kit size:\n{stdout}"
    assert int(m.group(2)) == tarball.stat().st_size
    assert tarball.stat().st_size <= LIMIT_MB * 1_000_000, f"kit is {m.group(1)} MB, over {LIMIT_MB} MB"


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_kit_holds_what_the_node_needs_and_nothing_trimmed(built_kit):
    tarball, _, unpacked = built_kit
    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
    for needed in ("node.sh", "manifest.json", "README.md", "search_spaces/default.yaml",
                   "site/sglang/srt/server_args.py", "site/sgl_kernel/__init__.py", "site/autotune/cli/app.py",
                   "site/workers/__init__.py", "site/transformers/__init__.py", "site/optuna/__init__.py"):
        assert needed in names, f"{needed} missing from the kit"
    assert not [n for n in names if n.endswith("flash_ops.abi3.so")]
    assert not [n for n in names if n.startswith("site/sgl_kernel/sm100/")]
    assert not [n for n in names if "/__pycache__/" in n]
    assert not [n for n in names if n.startswith(("site/torch/", "site/ray/", "site/triton/"))]
    assert os.access(unpacked / "node.sh", os.X_OK)
    with tarfile.open(tarball) as tar:  # FlashInfer's JIT sources carry one fixed time: carried caches stay current
        times = {m.name: m.mtime for m in tar.getmembers()
                 if m.isfile() and m.name.startswith("site/flashinfer/data/") and not m.name.endswith(".py")}
        python_times = {m.mtime for m in tar.getmembers() if m.isfile() and m.name.endswith(".py")}
    assert times and set(times.values()) == {1767225600}
    assert python_times != {1767225600}  # .py files keep theirs (their .pyc files are checked by it)

    manifest = json.loads((unpacked / "manifest.json").read_text())
    assert (manifest["sglang"], manifest["torch_required"], manifest["python"], manifest["arch"]) == (
        "0.5.17", "2.11.0", "3.12", "sm90")
    versions = {d["name"].lower(): d["version"] for d in manifest["distributions"]}
    assert versions["sglang"] == "0.5.17" and versions["transformers"] == "5.12.1"
    assert versions["swa-autotune"]
    assert not {"torch", "ray", "triton"} & set(versions)
    trimmed = {group["pattern"]: group for group in manifest["trimmed"]}
    assert trimmed["sgl_kernel/flash_ops.abi3.so"]["paths"] == ["sgl_kernel/flash_ops.abi3.so"]
    assert trimmed["sgl_kernel/flash_ops.abi3.so"]["bytes"] > 1_000_000_000
    assert trimmed["sgl_kernel/sm100/*"]["files"] >= 1
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", manifest["project"]["git_commit"])


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_kit_runs_autotune_on_the_nodes_python(built_kit, node_python, tmp_path):
    _, _, unpacked = built_kit
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(PYTHONPATH=str(unpacked / "site"), PYTHONNOUSERSITE="1")
    imported = subprocess.run([node_python, "-c", "import autotune.cli.app, workers.trial, optuna, sqlalchemy, alembic;"
                               "import autotune; print(autotune.__file__)"],
                              env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip().startswith(str(unpacked / "site"))

    helped = subprocess.run([node_python, "-m", "autotune.cli.app", "--help"], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert helped.returncode == 0, helped.stderr
    assert "run" in helped.stdout

    # The same through node.sh, as on the node (its PYTHON, its environment).
    env.pop("PYTHONPATH")
    via_node = subprocess.run(["bash", str(unpacked / "node.sh"), "autotune", "run", "--help"],
                              env={**env, "PYTHON": node_python, "TRITON_CACHE_DIR": str(tmp_path / "triton")},
                              cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert via_node.returncode == 0, via_node.stderr
    assert "--swa-full-tokens-ratio" in via_node.stdout or "--model" in via_node.stdout


def test_session_runs_each_plan_line_as_its_own_timed_study(tmp_path):
    """deploy/gpu-kit/session.sh: one `autotune run` per plan line, each with its own database and log
    directory, `@repo@` resolved, comments skipped, and a line the deadline leaves no room for skipped."""
    stub = tmp_path / "stub"
    stub.mkdir()
    (stub / "node.sh").write_text('#!/bin/bash\necho "NODE $*" >> "$(dirname "$0")/calls.txt"\n'
                                  '[ "$1" = caches ] && [ "$2" = save ] && exit 1\nexit 0\n')
    (stub / "node.sh").chmod(0o755)
    kit_tar = tmp_path / "kit.tar.xz"
    subprocess.run(["tar", "-cJf", str(kit_tar), "-C", str(stub), "."], check=True)
    plan = tmp_path / "plan.txt"
    plan.write_text("# a comment line\n"
                    "wide  --runner ray --parallel 2 --workload @repo@/docs/real-gpu/ray/chat-32.yaml  # trailing\n"
                    "\n"
                    "alone --runner ray --parallel 1 --trials 2\n")
    out, work = tmp_path / "out", tmp_path / "work"
    env = {**os.environ, "WORK": str(work), "DEADLINE_S": "400", "PATH": f"{tmp_path}/bin:{os.environ['PATH']}"}
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "nvidia-smi").write_text("#!/bin/bash\necho 'NVIDIA H200'\n")
    (tmp_path / "bin" / "nvidia-smi").chmod(0o755)
    run = subprocess.run(["bash", str(KIT_SRC / "session.sh"), str(kit_tar), str(out), str(plan)], env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    calls = (work / "kit" / "calls.txt").read_text().splitlines()
    assert calls[0] == "NODE doctor"
    studies = [c for c in calls if c.startswith("NODE autotune run")]
    assert len(studies) == 2
    assert f"--storage sqlite:///{work}/wide.db --log-dir {work}/logs/wide" in studies[0]
    assert f"--workload {REPO}/docs/real-gpu/ray/chat-32.yaml" in studies[0] and "trailing" not in studies[0]
    assert studies[1].endswith("--runner ray --parallel 1 --trials 2 -- --attention-backend triton "
                               "--sampling-backend pytorch --disable-prefill-cuda-graph")
    rows = (out / "studies.tsv").read_text().splitlines()
    assert rows[0].split("\t") == ["name", "exit", "start", "end", "wall_s"] and [r.split("\t")[0] for r in rows[1:]] == ["wide", "alone"]

    # A second call on the same machine reuses the unpacked kit; with no time left, studies are skipped.
    again = subprocess.run(["bash", str(KIT_SRC / "session.sh"), str(kit_tar), str(tmp_path / "out2"), str(plan)],
                           env={**env, "DEADLINE_S": "60"}, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0
    assert "kit already unpacked" in again.stdout and again.stdout.count("== skipping") == 2


def _project_stub(tmp_path, changed: bool):
    """A kit stub that carries this checkout's autotune/ and workers/ (one file edited when `changed`)."""
    stub = tmp_path / "stub"
    for package in ("autotune", "workers"):
        for source in (REPO / package).rglob("*.py"):
            if "__pycache__" in source.parts:
                continue
            target = stub / "site" / source.relative_to(REPO)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
    if changed:
        (stub / "site/workers/trial.py").write_text("# an older build\n")
    (stub / "node.sh").write_text('#!/bin/bash\necho "NODE $*" >> "$(dirname "$0")/calls.txt"\nexit 0\n')
    (stub / "node.sh").chmod(0o755)
    kit_tar = tmp_path / "kit.tar.xz"
    subprocess.run(["tar", "-cJf", str(kit_tar), "-C", str(stub), "."], check=True)
    return kit_tar


@pytest.mark.parametrize("changed", [False, True])
def test_session_refuses_a_kit_whose_code_is_not_this_checkout(tmp_path, changed):
    """The kit carries its own copy of the project: a kit built before a change would run the old code, and an
    option added since would reach SGLang as an unknown flag. session.sh says so and stops, before any study."""
    kit_tar = _project_stub(tmp_path, changed)
    plan = tmp_path / "plan.txt"
    plan.write_text("one --trials 1\n")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "nvidia-smi").write_text("#!/bin/bash\necho 'NVIDIA H200'\n")
    (tmp_path / "bin" / "nvidia-smi").chmod(0o755)
    env = {**os.environ, "WORK": str(tmp_path / "work"), "DEADLINE_S": "300", "PATH": f"{tmp_path}/bin:{os.environ['PATH']}"}
    run = subprocess.run(["bash", str(KIT_SRC / "session.sh"), str(kit_tar), str(tmp_path / "out"), str(plan)],
                         env=env, capture_output=True, text=True, timeout=60)
    calls = tmp_path / "work" / "kit" / "calls.txt"
    if not changed:
        assert run.returncode == 0, run.stdout + run.stderr
        assert "NODE autotune run" in calls.read_text()
        return
    assert run.returncode == 1
    assert "are not this checkout's (1 file(s) differ)" in run.stdout and "deploy/gpu-kit/build.sh" in run.stdout
    assert not calls.exists()  # nothing ran
    anyway = subprocess.run(["bash", str(KIT_SRC / "session.sh"), str(kit_tar), str(tmp_path / "out2"), str(plan)],
                            env={**env, "KIT_MISMATCH_OK": "1"}, capture_output=True, text=True, timeout=60)
    assert anyway.returncode == 0 and "NODE autotune run" in calls.read_text()


def test_the_footprint_grid_refuses_a_kit_whose_code_is_not_this_checkout(tmp_path):
    """footprint_run.sh runs the grid from the checkout on the kit's copy of the project: a stale kit
    failed at import on a lent GPU (an option moved into workers/ since the build). It now stops first."""
    kit_tar = _project_stub(tmp_path, changed=True)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "nvidia-smi").write_text("#!/bin/bash\necho 'NVIDIA H200'\n")
    (tmp_path / "bin" / "nvidia-smi").chmod(0o755)
    env = {**os.environ, "WORK": str(tmp_path / "work"), "DEADLINE_S": "120", "PATH": f"{tmp_path}/bin:{os.environ['PATH']}"}
    run = subprocess.run(["bash", str(KIT_SRC / "footprint_run.sh"), str(kit_tar), str(tmp_path / "out"), "--ratios", "0.9"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert "are not this checkout's (1 file(s) differ)" in run.stdout and "deploy/gpu-kit/build.sh" in run.stdout
    assert not (tmp_path / "work" / "kit" / "calls.txt").exists()  # the grid never started
