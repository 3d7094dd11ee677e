#!/usr/bin/env bash
# The whole test suite against a build with AddressSanitizer + UndefinedBehaviorSanitizer
# (CMake option VGKERN_SANITIZE) and the CUDA backend emulated on the CPU (VGKERN_CUDA=EMULATE,
# csrc/cuda/emulation.h): the tests that take a `device` argument, and tests/test_cuda.py, then
# run the CUDA backend's kernels and drivers too, with ASan watching their memory accesses. Python itself is not instrumented, so the sanitizer runtimes
# are preloaded. Any report fails the run: UBSan aborts on the first error
# (-fno-sanitize-recover), and both runtimes also write to log files that are checked at the
# end, because pytest captures the stderr of passing tests. Leak detection is off here (CPython
# keeps objects alive until exit); leaks are checked by .ci/leak_check.py and
# .ci/valgrind_check.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

work="$(mktemp -d "${TMPDIR:-/tmp}/vgkern-sanitize.XXXXXX")"
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
# shellcheck disable=SC1091
. "$work/venv/bin/activate"
python -m pip install --quiet --upgrade pip
python -m pip install --quiet ".[test]" -Ccmake.define.VGKERN_SANITIZE=ON \
  -Ccmake.define.VGKERN_CUDA=EMULATE -Cbuild-dir="$work/build"

mkdir "$work/logs"
export LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"
# allocator_may_return_null: the tests ask numpy for terabytes on purpose (sizes that must be
# refused); ASan would abort where the normal allocator returns NULL and numpy a MemoryError.
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:allocator_may_return_null=1:log_path=$work/logs/asan"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$work/logs/ubsan"
(cd "$work" && python -c "import vgkern; assert vgkern.build_info()['cuda_emulated']")
status=0
# run from outside the source tree so the installed (sanitized) package is the one imported
(cd "$work" && python -m pytest -q -p no:cacheprovider -c "$OLDPWD/pyproject.toml" \
  --rootdir "$OLDPWD" "$OLDPWD/tests") || status=$?
unset LD_PRELOAD

# The only lines allowed in the logs: ASan saying it returned NULL for a terabyte request.
expected='WARNING: AddressSanitizer failed to allocate 0x[0-9a-f]+ bytes$'
if compgen -G "$work/logs/*" > /dev/null; then
  refused="$(cat "$work"/logs/* | grep -cE "$expected" || true)"
  echo "sanitize: ASan returned NULL for $refused huge requests (expected: the tests make them)"
  if cat "$work"/logs/* | grep -vE "$expected" | grep -q .; then
    echo "sanitize: sanitizer reports:" >&2
    cat "$work"/logs/* | grep -vE "$expected" >&2
    exit 1
  fi
fi
echo "sanitize: pytest exit status $status, no sanitizer reports"
exit "$status"
