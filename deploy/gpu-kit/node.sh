#!/usr/bin/env bash
# swa-autotune offline GPU kit: the node side. It lies at the top of the unpacked kit:
#
#   tar -xJf swa-autotune-gpu-kit-*.tar.xz -C /opt/swa-kit
#   /opt/swa-kit/node.sh doctor                      # check Python, torch, GPUs and every import; non-zero on a problem
#   /opt/swa-kit/node.sh autotune run --backend sglang --dummy-weights --model 26B-A4B ...
#   /opt/swa-kit/node.sh python -m sglang.launch_server ...   # any Python command with the kit's environment
#   eval "$(/opt/swa-kit/node.sh env)"               # the same environment in this shell
#   /opt/swa-kit/node.sh caches save FILE.tar.gz     # pack this node's compile caches (Triton, TorchInductor,
#   /opt/swa-kit/node.sh caches load FILE.tar.gz     #   sgl-kernel's tvm-ffi JIT, FlashInfer's JIT); load on a fresh node
#
# It uses the node's own Python and torch ($PYTHON, default python3) and puts the kit's site/ first on PYTHONPATH.
# Ray comes in its own kit (build.sh --ray): unpacked beside this one (tar -xJf swa-autotune-ray-kit-*.tar.xz -C
# /opt/swa-kit makes /opt/swa-kit/ray-kit/), or wherever SWA_AUTOTUNE_RAY_KIT points, its site/ follows the kit's
# on PYTHONPATH and `autotune run --runner ray` works. `doctor` checks Ray (a local Ray, one task) unless
# SWA_AUTOTUNE_RAY=0 (for nodes that only ever use --runner local).
set -euo pipefail

KIT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
PYTHON="${PYTHON:-python3}"

export SWA_AUTOTUNE_KIT="$KIT"
# The Ray kit: $SWA_AUTOTUNE_RAY_KIT, else ray-kit/ inside this kit or beside it.
if [ -z "${SWA_AUTOTUNE_RAY_KIT:-}" ]; then
    for candidate in "$KIT/ray-kit" "$(dirname "$KIT")/ray-kit"; do
        if [ -d "$candidate/site" ]; then SWA_AUTOTUNE_RAY_KIT="$candidate"; break; fi
    done
fi
export SWA_AUTOTUNE_RAY_KIT="${SWA_AUTOTUNE_RAY_KIT:-}"
RAY_SITE=""
[ -n "$SWA_AUTOTUNE_RAY_KIT" ] && RAY_SITE="$SWA_AUTOTUNE_RAY_KIT/site"
export PYTHONPATH="$KIT/site${RAY_SITE:+:$RAY_SITE}${PYTHONPATH:+:$PYTHONPATH}"
# An offline node: Ray must not try to report usage statistics.
export RAY_USAGE_STATS_ENABLED="${RAY_USAGE_STATS_ENABLED:-0}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
export TRANSFORMERS_OFFLINE="${TRANSFORMERS_OFFLINE:-1}"
# Persistent across trials and runs: a warm Triton cache turns a ~200 s first boot into ~60 s.
export TRITON_CACHE_DIR="${TRITON_CACHE_DIR:-${HOME:-/tmp}/.cache/swa-autotune/triton}"
# The kit's copy of search_spaces/ (edit it there, or point this elsewhere).
export AUTOTUNE_SEARCH_SPACES="${AUTOTUNE_SEARCH_SPACES:-$KIT/search_spaces}"

# What a machine's first SGLang boot compiles (docs/real-gpu/boot-cost.md): sgl-kernel's JIT kernels
# (tvm-ffi), FlashInfer's JIT, Triton's and TorchInductor's caches. A leased or freshly imaged node
# loses them; `caches save` on a warm node and `caches load` on the next one skip that compilation.
CACHE_DIRS=(.cache/tvm-ffi .cache/flashinfer .cache/swa-autotune)

die() { printf 'node.sh: error: %s\n' "$*" >&2; exit 1; }

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | grep '^#' | sed 's/^# \{0,1\}//'
}

need_python() {
    command -v "$PYTHON" >/dev/null 2>&1 \
        || die "'$PYTHON' not found. Set PYTHON to the node image's Python 3 (the one that has torch), e.g. PYTHON=/opt/torch/.venv/bin/python3"
}

doctor() {
    need_python
    [ -f "$KIT/manifest.json" ] || die "$KIT/manifest.json is missing: unpack the whole kit (tar -xJf KIT.tar.xz -C DIR)"
    mkdir -p "$TRITON_CACHE_DIR" 2>/dev/null || true
    PYTHONSAFEPATH=1 "$PYTHON" - "$KIT" <<'EOF'
import importlib, importlib.metadata as md, json, os, sys, traceback

kit = sys.argv[1]
manifest = json.load(open(os.path.join(kit, "manifest.json")))
problems = []

def ok(msg): print(f"ok    {msg}")
def warn(msg): print(f"warn  {msg}")
def fail(msg):
    problems.append(msg)
    print(f"FAIL  {msg}")

def pairing_hint(found):
    return (f"build a kit for torch {found} where PyPI is reachable: bash deploy/gpu-kit/build.sh --torch {found} "
            f"(known pairings: torch 2.11.0 -> sglang 0.5.17, 2.13.0 -> 0.5.20, 2.14.1 -> 0.5.23)")

print(f"kit   {kit}: sglang {manifest.get('sglang')} for torch {manifest.get('torch_required')}, "
      f"Python {manifest.get('python')}, {manifest.get('arch')}, built {manifest.get('built_at')}, "
      f"swa-autotune {manifest.get('project', {}).get('git_commit', '?')[:12]}")

# Python: the kit's compiled wheels are for one CPython minor version.
want_py = str(manifest.get("python", ""))
have_py = f"{sys.version_info.major}.{sys.version_info.minor}"
if want_py and have_py != want_py:
    fail(f"python {sys.version.split()[0]} ({sys.executable}), but the kit was built for Python {want_py}. "
         f"Fix: set PYTHON to the node's Python {want_py}, or build the kit with --python {have_py}")
else:
    ok(f"python {sys.version.split()[0]} ({sys.executable})")

# torch: the node's own; the kit's sglang pins one exact release.
want_torch = str(manifest.get("torch_required", ""))
torch = None
try:
    import torch
except ImportError as exc:
    fail(f"torch is not importable by {sys.executable} ({exc}). The kit does not ship torch: run with the node "
         f"image's Python, which has torch {want_torch} (PYTHON=/path/to/python3)")
if torch is not None:
    found = torch.__version__.split("+")[0]
    if want_torch and found != want_torch:
        fail(f"torch {torch.__version__} found, but this kit's sglang {manifest.get('sglang')} needs torch "
             f"{want_torch}. Fix: use a node image with torch {want_torch}, or {pairing_hint(found)}")
    else:
        ok(f"torch {torch.__version__} (CUDA {torch.version.cuda}) at {os.path.dirname(torch.__file__)}")
    try:
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception as exc:  # a broken driver raises here
        n = 0
        warn(f"torch.cuda failed: {exc}")
    if n == 0:
        fail("no CUDA GPU visible to torch (check nvidia-smi, CUDA_VISIBLE_DEVICES and the driver)")
    want_arch = str(manifest.get("arch", ""))
    for i in range(n):
        major, minor = torch.cuda.get_device_capability(i)
        arch = f"sm{major}{minor}"
        line = f"GPU {i}: {torch.cuda.get_device_name(i)} ({arch}, {torch.cuda.get_device_properties(i).total_memory / 2**30:.0f} GiB)"
        if want_arch and arch != want_arch:
            warn(f"{line}: the kit was trimmed for {want_arch}; kernels for {arch} may be missing")
        else:
            ok(line)

# The kit's distributions must be the ones Python sees (site/ first on PYTHONPATH, ahead of the node's copies).
shadowed = []
for d in manifest.get("distributions", []):
    try:
        v = md.version(d["name"])
    except md.PackageNotFoundError:
        shadowed.append(f"{d['name']} (not found)")
        continue
    if v != d["version"]:
        shadowed.append(f"{d['name']} {v} instead of {d['version']}")
if shadowed:
    fail("distributions not taken from the kit: " + ", ".join(shadowed) +
         f". Is {kit}/site first on PYTHONPATH? Run Python through node.sh")
elif manifest.get("distributions"):
    ok(f"{len(manifest['distributions'])} distributions from {kit}/site")

# The imports a trial needs. With torch missing the sglang ones cannot work: say so once.
for mod in ("sglang", "sglang.srt.server_args", "sgl_kernel", "autotune.cli.app"):
    if torch is None and mod != "autotune.cli.app":
        print(f"skip  import {mod}: it needs torch")
        continue
    try:
        m = importlib.import_module(mod)
        where = os.path.dirname(getattr(m, "__file__", "") or "")
        if where.startswith(os.path.join(kit, "site") + os.sep):
            ok(f"import {mod} ({where})")
        else:
            warn(f"import {mod} from {where}, not from the kit's site/ (a copy earlier on PYTHONPATH?)")
    except ModuleNotFoundError as exc:
        missing = exc.name or str(exc)
        fail(f"import {mod}: module '{missing}' is missing. If it is not a module of the node image, add its "
             f"distribution to deploy/gpu-kit/requirements/ and rebuild the kit")
    except Exception as exc:
        fail(f"import {mod}: {type(exc).__name__}: {exc}")
        traceback.print_exc(limit=3)

# Ray (`--runner ray`): from the Ray kit; a local Ray with this node's GPUs must start and run a task.
ray_kit = os.environ.get("SWA_AUTOTUNE_RAY_KIT", "")
ray_fix = ("Fix: build the Ray kit where PyPI is reachable (bash deploy/gpu-kit/build.sh --ray), carry "
           "swa-autotune-ray-kit-*.tar.xz across and unpack it beside this kit (tar -xJf ... -C "
           f"{kit}: it makes {kit}/ray-kit/), or set SWA_AUTOTUNE_RAY_KIT=DIR; "
           "or SWA_AUTOTUNE_RAY=0 if this node only runs --runner local")
if os.environ.get("SWA_AUTOTUNE_RAY", "1") == "0":
    print("skip  ray: SWA_AUTOTUNE_RAY=0 (only --runner local can run here)")
elif ray_kit and not os.path.isdir(os.path.join(ray_kit, "site")):
    fail(f"SWA_AUTOTUNE_RAY_KIT={ray_kit} has no site/ directory. {ray_fix}")
else:
    try:
        import ray
    except Exception as exc:
        fail(f"ray is not importable ({type(exc).__name__}: {exc}); `autotune run --runner ray` cannot work. {ray_fix}")
    else:
        where = os.path.dirname(getattr(ray, "__file__", "") or "")
        line = f"import ray {getattr(ray, '__version__', '?')} ({where})"
        if ray_kit and where.startswith(os.path.join(ray_kit, "site") + os.sep):
            ok(line)
        else:
            warn(f"{line}: not from a Ray kit ({'SWA_AUTOTUNE_RAY_KIT=' + ray_kit if ray_kit else 'none found'})")
        gpus = n if torch is not None else 0
        # In a child process, with a time limit: a Ray that cannot start must not hang the doctor.
        probe = f"""
import os, sys, ray
ray.init(num_cpus=2, num_gpus={gpus}, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
try:
    @ray.remote(num_cpus=1)
    def plus_one(x):
        return x + 1
    assert ray.get(plus_one.remote(1), timeout=60) == 2
    gpu_ids = []
    if {gpus} > 0:
        @ray.remote(num_gpus=1)
        def gpu_ids_task():
            return [str(g) for g in ray.get_gpu_ids()]
        gpu_ids = ray.get(gpu_ids_task.remote(), timeout=60)
    print("RAY_OK", ray.cluster_resources().get("GPU", 0), ",".join(gpu_ids))
finally:
    ray.shutdown()
"""
        import subprocess, time
        t0 = time.monotonic()
        limit = float(os.environ.get("SWA_AUTOTUNE_RAY_TIMEOUT_S", "90"))
        try:
            res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=limit)
            out = [l for l in res.stdout.splitlines() if l.startswith("RAY_OK")]
            if res.returncode == 0 and out:
                _, n_gpu, ids = (out[-1].split(" ") + [""])[:3]
                ok(f"ray: a local Ray started (num_gpus={gpus}; cluster GPU={n_gpu}), ran a task"
                   f"{' and a num_gpus=1 task on GPU ' + ids if gpus else ''}, shut down in {time.monotonic() - t0:.0f} s")
            else:
                tail = " | ".join((res.stderr or res.stdout).strip().splitlines()[-3:])
                fail(f"ray: a local Ray did not start or run a task (exit {res.returncode}): {tail}. Check /tmp space "
                     f"and /dev/shm (Ray's object store), and that nothing else holds Ray's ports")
        except subprocess.TimeoutExpired:
            fail(f"ray: a local Ray did not start and run a task within {limit:.0f} s (SWA_AUTOTUNE_RAY_TIMEOUT_S). "
                 f"Check /tmp, /dev/shm and `ray stop` leftovers")

cache = os.environ.get("TRITON_CACHE_DIR", "")
if cache and os.access(cache, os.W_OK):
    ok(f"TRITON_CACHE_DIR {cache} (writable; {len(os.listdir(cache))} entries)")
else:
    warn(f"TRITON_CACHE_DIR {cache or '(unset)'} is not writable: every trial will recompile Triton's kernels")
print(f"env   HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE')} TRANSFORMERS_OFFLINE={os.environ.get('TRANSFORMERS_OFFLINE')} "
      f"AUTOTUNE_SEARCH_SPACES={os.environ.get('AUTOTUNE_SEARCH_SPACES')}")

if problems:
    print(f"\nnode.sh doctor: {len(problems)} problem(s); the kit cannot run trials here until they are fixed.")
    sys.exit(1)
print("\nnode.sh doctor: all good")
EOF
}

cmd="${1:-help}"
[ $# -gt 0 ] && shift
case "$cmd" in
    doctor) doctor ;;
    # PYTHONSAFEPATH: -m would otherwise put the working directory first, and a checkout there would win over the kit.
    autotune) need_python; PYTHONSAFEPATH=1 exec "$PYTHON" -m autotune.cli.app "$@" ;;
    python) need_python; exec "$PYTHON" "$@" ;;
    env)
        for v in SWA_AUTOTUNE_KIT SWA_AUTOTUNE_RAY_KIT RAY_USAGE_STATS_ENABLED PYTHONPATH HF_HUB_OFFLINE TRANSFORMERS_OFFLINE TRITON_CACHE_DIR AUTOTUNE_SEARCH_SPACES; do
            printf 'export %s=%q\n' "$v" "${!v}"
        done ;;
    caches)
        action="${1:-}"; file="${2:-}"
        [ -n "$file" ] || die "usage: node.sh caches save|load FILE.tar.gz"
        home="${HOME:?HOME must be set: the caches live under it}"
        case "$action" in
            save)
                present=()
                for d in "${CACHE_DIRS[@]}"; do [ -d "$home/$d" ] && present+=("$d"); done
                [ ${#present[@]} -gt 0 ] || die "no compile cache under $home (${CACHE_DIRS[*]}): boot a server on this node first"
                # A custom TRITON_CACHE_DIR outside ~/.cache/swa-autotune is not packed: say so rather than miss it.
                case "$TRITON_CACHE_DIR" in "$home/.cache/swa-autotune"*) ;; *)
                    echo "node.sh: note: TRITON_CACHE_DIR=$TRITON_CACHE_DIR is outside $home/.cache/swa-autotune and is not packed" >&2 ;;
                esac
                tar -czf "$file.partial" -C "$home" "${present[@]}" && mv "$file.partial" "$file"
                echo "saved ${present[*]} from $home: $(du -h "$file" | cut -f1) in $file" ;;
            load)
                [ -f "$file" ] || die "$file not found: make it with 'node.sh caches save FILE' on a node that has booted a server"
                mkdir -p "$home" && tar -xzf "$file" -C "$home"
                echo "loaded $(tar -tzf "$file" | cut -d/ -f1-2 | sort -u | paste -sd' ') into $home" ;;
            *) die "unknown caches action '$action': use save or load" ;;
        esac ;;
    help|-h|--help) usage ;;
    *) usage >&2; die "unknown command '$cmd' (doctor | autotune ... | python ... | env | caches save|load FILE)" ;;
esac
