#!/usr/bin/env bash
# The GPU check of mome, in ONE device call: build the CUDA kernels for sm_90, run the CUDA tests, compute-sanitizer
# memcheck and racecheck on small selections, and the GPU benchmark cases of the kernel issues with their bytes floors.
#
#     bash tools/gpu_check.sh [STEP ...]      on the GPU machine (default: every step, in the order below)
#     bash tools/gpu_check.sh --dry-run       here / in CI, on the CPU: the same steps and the same summary, nothing
#                                             CUDA runs (the build is skipped: scripts/check_cuda_build.sh compiles it;
#                                             tests/cuda collects and skips; sanitizers run the selections without
#                                             compute-sanitizer; benchmarks parse their GPU arguments and run one
#                                             tiny CPU case)
#     bash tools/gpu_check.sh --pack          here, once: CUTLASS 4.2.0.0 headers -> .gpu_carry/cutlass.tar.gz
#     bash tools/gpu_check.sh --list          the steps and their time budgets
#
# The device machine (H200, sm_90; torch 2.11+cu130, Python 3.12, nvcc 13, cmake, ninja, scikit-build-core, pybind11,
# pytest, compute-sanitizer; no network, no nvidia-cutlass) allows 10 minutes per command and 15 minutes of device
# time per issue, start-up included. So: one call, carrying the CUTLASS headers,
#     run(command="bash tools/gpu_check.sh", carry=[".gpu_carry"], timeout_s=600)
# Each step runs in its own process under its own time budget (STEP_BUDGET below, 620 s in all; GPU_CHECK_BUDGET_<step>
# with '-' as '_' overrides one; 3× in the dry run), and no step starts past GPU_CHECK_DEADLINE (default 540 s; a
# running step is cut there), so the call ends inside its 10 minutes: a step that no longer fits is recorded as
# skipped (deadline). A failing step never stops the next; on the GPU a test or sanitizer step in which no test passed
# (all skipped) counts as failed. Expected, unmeasured (no GPU has run this yet): 6–8 minutes, the build 1.5–3 of them
# (its sm_90 build + info steps pass on a 2-core CPU machine in 270 s), each sanitizer process 15–30 s of start-up. A rerun of some steps on the
# still-warm machine (its 30 s idle window) rebuilds incrementally: `bash tools/gpu_check.sh build test-grouped-adapter`.
# The device tool's reply shows the output's last 12,000 characters: the summary table is printed last.
#
# Under $OUT (what comes back: at most 8 files), written as it goes, so a run killed at its limit still returns them:
#     summary.json   every step: status (pass / fail / timeout / skipped / pending), rc, seconds, budget, test and
#                    sanitizer counts, log; plus commit, date, GPU, mode. Rewritten after each step.
#     summary.txt    the same as a table (also printed at the end)
#     logs.tar.gz    every step's log and junit XML, refreshed after each step
#     bench_*.json   the benchmark results (times, bytes moved, floor, fraction of the floor; bench/common.py)
# Without $OUT (not on the device machine) everything goes to build/gpu_check_out.
set -uo pipefail
cd "$(dirname "$0")/.."
[ -d /usr/local/cuda/bin ] && PATH="$PATH:/usr/local/cuda/bin"  # nvcc, compute-sanitizer where they are not on PATH

STEPS=(env build info test-deform-attn test-router-mix test-grouped-adapter memcheck-deform-attn memcheck-router-mix
       memcheck-grouped-adapter racecheck bench-deform-attn bench-router-mix bench-grouped-adapter)
declare -A STEP_BUDGET=(  # seconds
  [env]=15 [build]=180 [info]=15 [test-deform-attn]=60 [test-router-mix]=30 [test-grouped-adapter]=75
  [memcheck-deform-attn]=40 [memcheck-router-mix]=25 [memcheck-grouped-adapter]=45 [racecheck]=40
  [bench-deform-attn]=45 [bench-router-mix]=20 [bench-grouped-adapter]=40
)

one_line() { tr -s '[:space:]' ' ' <<<"$1"; }  # pytest's -k takes no newlines

# Sanitizer selections: small shapes, every kernel and access path (pack / scalar / misaligned, empty, guarded reads);
# one process per op for memcheck (an error there can be sticky: it must not hide the next op's), never -x.
MEMCHECK_DEFORM_ATTN=(tests/cuda/test_deform_attn_cuda.py
  -k "$(one_line "test_matches_reference_fp64 and (16_16-D4 or 7_11 or 5_7x3_2x1_1 or 4_4 or 16_16-D176 or 3_3-D66)
      or test_float32_locations or test_misaligned_value or test_nonfinite or test_empty_inputs
      or test_inconsistent_layout or test_head_dims_float32 and 96")")
MEMCHECK_ROUTER_MIX=(tests/cuda/test_router_mix_cuda.py
  -k "test_matches_reference_fp64 and not 3x8x576 or test_one_hot or test_misaligned_input")
MEMCHECK_GROUPED_ADAPTER=(tests/cuda/test_grouped_adapter_cuda.py
  -k "test_small_ and not gradcheck and not grid_stride and not expert_limit")
# racecheck (shared memory: cub's sort, the block reductions, the counting sort, the CUTLASS GEMMs): one small case each.
RACECHECK=(tests/cuda/test_deform_attn_cuda.py tests/cuda/test_router_mix_cuda.py tests/cuda/test_grouped_adapter_cuda.py
  -k "$(one_line "test_matches_reference_fp64 and (16_16-D4 or 3_3-D66 or 4x3x256x96) or test_inconsistent_layout
      or test_small_sorted_equals_unsorted and T300 or test_small_rank_zero and float32")")

usage() { sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

log() { echo "[gpu_check $(date -u +%H:%M:%S)] $*"; }

# --------------------------------------------------------------------------------------------------------------------
# The steps. Each runs in a child bash (`--run-step NAME`) under `timeout`; $DRY is 1 for --dry-run.

step_env() {
  uname -a
  nvidia-smi || echo "nvidia-smi: not available"
  "$PY" -c "import sys, torch; print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'device', torch.cuda.get_device_name() if torch.cuda.is_available() else None)"
  nvcc --version | tail -2 || echo "nvcc: not available"
  echo "compute-sanitizer: $(command -v compute-sanitizer || echo 'not available')"
  cmake --version | head -1; ninja --version
  "$PY" -m pip list 2>/dev/null |
    grep -i -E "^(torch|pytest|pytest-timeout|scikit-build-core|pybind11|nvidia-cutlass|expecttest|transformers) "
  echo "CUTLASS for the build: $(cutlass_root || echo '<none>')"
  echo "nproc $(nproc)"
  return 0
}

step_build() {
  local cutlass
  cutlass=$(cutlass_root) || cutlass=""
  # The wheel build a user runs (`pip wheel .`, then install the wheel). The device machine has no network, so the
  # build requirements come from its preinstalled tools (--no-build-isolation --no-index) and CUTLASS from the carry
  # (MOME_CUTLASS_DIR: build_backend/mome_build.py then asks for no nvidia-cutlass); the core needs no torch to build.
  local -a cmd=(env MOME_WITH_CUDA=ON MOME_CUDA_ARCHS=9.0 MOME_CUTLASS_DIR="$cutlass"
                CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" "$PY" -m pip wheel --no-build-isolation --no-deps --no-index
                -v -C build-dir="$WORK/build" -w "$WORK/wheel" .)
  local -a install=("$PY" -m pip install --no-deps --no-index --force-reinstall "$WORK/wheel/mome-0.1.0-*.whl")
  echo "CUTLASS: ${cutlass:-<none: run --pack here and carry .gpu_carry, or grouped_adapter gets no CUDA kernel>}"
  echo "build: ${cmd[*]}"
  echo "install: ${install[*]}"
  if [ "$DRY" = 1 ]; then
    echo "dry run: not built (the CUDA build is compile-checked by scripts/check_cuda_build.sh)"
    return 3  # recorded as skipped
  fi
  [ -n "$cutlass" ] || return 1
  rm -rf "$WORK/wheel"
  "${cmd[@]}" || return 1
  "$PY" -m pip install --no-deps --no-index --force-reinstall "$WORK"/wheel/mome-*.whl
}

step_info() {
  (cd /tmp && "$PY" -m mome.info) || return 1
  [ "$DRY" = 1 ] && return 0
  (cd /tmp && "$PY" -c "
from mome import ops
missing = [op for op in ops.OPS if not ops.has_kernel(op, 'cuda')]
print('BUILD_INFO', ops.BUILD_INFO)
assert not missing, f'no CUDA kernel for {missing} in this build (CUTLASS found? see build.log)'
print('every op has a CUDA kernel')")
}

pytest_step() {  # pytest over a selection, junit XML beside the log; no -x: every test runs
  local -a opts=(-q -rfEs -p no:cacheprovider --junitxml="$LOGS/$STEP.xml")
  "$PY" -c "import pytest_timeout" 2>/dev/null && opts+=(--timeout=120)
  "$PY" -m pytest "${opts[@]}" "$@"
}
step_test_deform_attn() { pytest_step tests/cuda/test_deform_attn_cuda.py; }
step_test_router_mix() { pytest_step tests/cuda/test_router_mix_cuda.py; }
step_test_grouped_adapter() { pytest_step tests/cuda/test_grouped_adapter_cuda.py; }

sanitize() {  # tool, pytest arguments
  local tool="$1"; shift
  if [ "$DRY" = 1 ]; then
    echo "dry run: the $tool selection without compute-sanitizer"
    pytest_step "$@"
    return
  fi
  # One cudaMalloc per tensor: inside PyTorch's cached blocks an overrun would go unseen.
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool "$tool" --error-exitcode 86 --print-limit 30 \
    --target-processes all "$PY" -m pytest -q -rfEs -p no:cacheprovider --junitxml="$LOGS/$STEP.xml" "$@"
  local rc=$?
  [ "$rc" -eq 86 ] && echo "compute-sanitizer $tool REPORTED ERRORS (see above)"
  return "$rc"
}
step_memcheck_deform_attn() { sanitize memcheck "${MEMCHECK_DEFORM_ATTN[@]}"; }
step_memcheck_router_mix() { sanitize memcheck "${MEMCHECK_ROUTER_MIX[@]}"; }
step_memcheck_grouped_adapter() { sanitize memcheck "${MEMCHECK_GROUPED_ADAPTER[@]}"; }
step_racecheck() { sanitize racecheck "${RACECHECK[@]}"; }

bench() {  # script, json name, GPU arguments (the dry run parses the same ones, then runs one tiny CPU case)
  local script="$1" json="$OUT/$2"; shift 2
  if [ "$DRY" = 1 ]; then
    "$PY" "$script" --json "$json" "$@" --device cpu --reps 1 --smoke
  else
    "$PY" "$script" --device cuda --json "$json" "$@"
  fi
}
step_bench_deform_attn() { bench bench/deform_attn.py bench_deform_attn.json --dtypes bfloat16 --reps 5; }
step_bench_router_mix() { bench bench/router_mix.py bench_router_mix.json --reps 5; }
step_bench_grouped_adapter() { bench bench/grouped_adapter.py bench_grouped_adapter.json --quick --reps 5; }

# --------------------------------------------------------------------------------------------------------------------
# CUTLASS headers: MOME_CUTLASS_DIR, else .gpu_carry/cutlass.tar.gz unpacked once, else an installed nvidia-cutlass.
cutlass_root() {
  if [ -n "${MOME_CUTLASS_DIR:-}" ]; then
    echo "$MOME_CUTLASS_DIR"; return 0
  fi
  if [ -f .gpu_carry/cutlass.tar.gz ]; then
    if [ ! -f "$WORK/cutlass/include/cutlass/version.h" ]; then
      mkdir -p "$WORK/cutlass" && tar -C "$WORK/cutlass" -xzf .gpu_carry/cutlass.tar.gz || return 1
    fi
    echo "$WORK/cutlass"; return 0
  fi
  "$PY" -c "import cutlass_library, os; print(os.path.join(os.path.dirname(cutlass_library.__file__), 'source'))" \
    2>/dev/null
}

pack() {  # here: the CUTLASS headers the build needs, as one small file to carry
  local py="${PYTHON:-.venv-cuda/bin/python}" src version
  src=$("$py" -c "import cutlass_library as c, os; print(os.path.join(os.path.dirname(c.__file__), 'source'))") ||
    { echo "pack: no nvidia-cutlass in $py (pip install --no-deps nvidia-cutlass==4.2.0.0)"; return 1; }
  version=$(grep -E "#define CUTLASS_(MAJOR|MINOR|PATCH) " "$src/include/cutlass/version.h" | awk '{print $3}' |
            paste -sd.)
  [ "$version" = "4.2.0" ] || echo "pack: warning: CUTLASS $version; the build is tested with 4.2.0 (nvidia-cutlass==4.2.0.0)"
  mkdir -p .gpu_carry
  tar -C "$src" -czf .gpu_carry/cutlass.tar.gz include tools/util/include
  grep -qxF "/.gpu_carry/" .git/info/exclude 2>/dev/null || echo "/.gpu_carry/" >> .git/info/exclude
  echo "pack: CUTLASS $version headers -> .gpu_carry/cutlass.tar.gz ($(du -h .gpu_carry/cutlass.tar.gz | cut -f1))"
}

# --------------------------------------------------------------------------------------------------------------------
# Bookkeeping: one row per step in $WORK/steps.tsv, turned into summary.json / summary.txt after every step.

counts_of() {  # step -> JSON fragment with the junit counts and compute-sanitizer's error summary, if any
  "$PY" - "$LOGS/$1.xml" "$LOGS/$1.log" <<'EOF' 2>/dev/null || echo '{}'
import json, re, sys, xml.etree.ElementTree as ET
out = {}
try:
    root = ET.parse(sys.argv[1]).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    tests = sum(int(s.get("tests", 0)) for s in suites)
    bad = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("failures", "errors", "skipped")}
    out["tests"] = {"passed": tests - sum(bad.values()), "failed": bad["failures"], "errors": bad["errors"],
                    "skipped": bad["skipped"]}
except (OSError, ET.ParseError):
    pass
try:
    found = re.findall(r"ERROR SUMMARY: (\d+) error", open(sys.argv[2], errors="replace").read())
    if found:
        out["sanitizer_errors"] = sum(int(n) for n in found)
except OSError:
    pass
print(json.dumps(out))
EOF
}

write_summary() {  # finished (true/false)
  "$PY" - "$WORK/steps.tsv" "$OUT" "$1" "$MODE" "$COMMIT" "$STARTED" "$DEADLINE" "$GPU_NAME" <<'EOF' || true
import json, sys, time
tsv, out, finished, mode, commit, started, deadline, gpu = sys.argv[1:]
steps = []
for line in open(tsv):
    name, status, rc, secs, budget, counts = line.rstrip("\n").split("\t")
    step = {"name": name, "status": status, "rc": None if rc == "" else int(rc),
            "seconds": None if secs == "" else int(secs), "budget_s": int(budget), "log": f"logs.tar.gz:{name}.log"}
    step.update(json.loads(counts or "{}"))
    steps.append(step)
summary = {
    "script": "tools/gpu_check.sh", "mode": mode, "commit": commit, "gpu": gpu or None,
    "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(started))),
    "elapsed_s": int(time.time()) - int(started), "deadline_s": int(deadline), "finished": finished == "true",
    "ok": all(s["status"] in ("pass", "skipped") for s in steps) and finished == "true"
          and not any(s["status"] == "skipped" and s.get("reason") == "deadline" for s in steps),
    "steps": steps,
}
with open(f"{out}/summary.json.tmp", "w") as f:
    json.dump(summary, f, indent=1)
import os
os.replace(f"{out}/summary.json.tmp", f"{out}/summary.json")
with open(f"{out}/summary.txt", "w") as f:
    f.write(f"# gpu_check {mode} commit {commit} gpu {gpu or '-'} started {summary['started_utc']} "
            f"elapsed {summary['elapsed_s']} s{'' if summary['finished'] else ' (unfinished)'}\n")
    for s in steps:
        t = s.get("tests")
        tests = f"{t['passed']} passed {t['failed']} failed {t['errors']} errors {t['skipped']} skipped" if t else ""
        san = f" sanitizer errors {s['sanitizer_errors']}" if "sanitizer_errors" in s else ""
        secs = "-" if s["seconds"] is None else s["seconds"]
        why = f" ({s['reason']})" if "reason" in s else ""
        f.write(f"{s['name']:26s} {s['status'] + why:19s} {secs:>4}s / {s['budget_s']:>3}s  {tests}{san}\n")
EOF
  tar -C "$LOGS" -czf "$OUT/logs.tar.gz.tmp" . 2>/dev/null && mv "$OUT/logs.tar.gz.tmp" "$OUT/logs.tar.gz"
  return 0
}

set_row() {  # name status rc secs budget counts: replace the step's row in steps.tsv
  local row tmp="$WORK/steps.tsv.tmp"
  row=$(printf '%s\t%s\t%s\t%s\t%s\t%s' "$@")
  awk -F'\t' -v n="$1" -v row="$row" '$1 == n {print row; next} {print}' "$WORK/steps.tsv" >"$tmp" &&
    mv "$tmp" "$WORK/steps.tsv"
}

budget_of() {  # the dry run gets 3× (a slower CPU machine; it checks the script, not the timings)
  local override="GPU_CHECK_BUDGET_${1//-/_}"
  echo $(( ${!override:-${STEP_BUDGET[$1]}} * (DRY == 1 ? 3 : 1) ))
}

run_step() {
  local step="$1" budget limit left start rc secs status counts
  budget=$(budget_of "$step")
  left=$(( STARTED + DEADLINE - $(date +%s) ))
  limit=$(( budget < left ? budget : left ))
  if [ "$left" -lt 5 ]; then
    log "step $step: skipped, the run's deadline (${DEADLINE}s) leaves ${left}s"
    set_row "$step" skipped "" "" "$budget" '{"reason": "deadline"}'
    write_summary false
    return
  fi
  log "step $step (budget ${budget}s, limit ${limit}s) -> $LOGS/$step.log"
  start=$(date +%s)
  # timeout signals the child's whole process group (pytest, nvcc, compute-sanitizer, ...); -k: then KILL.
  STEP="$step" timeout -k 10 "$limit" bash "$0" --run-step "$step" >"$LOGS/$step.log" 2>&1
  rc=$?
  secs=$(( $(date +%s) - start ))
  case "$rc" in
    0) status=pass ;;
    3) status=skipped ;;
    124|137) status=timeout ;;
    *) status=fail ;;
  esac
  counts=$(counts_of "$step")
  # On the GPU a test step in which nothing passed failed (everything skipped: no CUDA build, no kernel, no GPU).
  if [ "$DRY" != 1 ] && [ "$status" = pass ] && [[ "$step" == test-* || "$step" == *check* ]] &&
     [[ "$counts" != *'"passed": '[1-9]* ]]; then
    status=fail
    if [ "$counts" = "{}" ]; then counts='{"reason": "no test passed"}'
    else counts="${counts%\}}, \"reason\": \"no test passed\"}"; fi
  fi
  set_row "$step" "$status" "$rc" "$secs" "$budget" "$counts"
  log "step $step: $status (rc $rc) in ${secs}s"
  tail -n 12 "$LOGS/$step.log" | sed 's/^/    /'
  write_summary false
}

# --------------------------------------------------------------------------------------------------------------------
DRY="${GPU_CHECK_DRY:-0}"  # a step's child bash inherits it
steps=()
while [ $# -gt 0 ]; do
  case "$1" in
    --run-step) RUN_STEP="$2"; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    --pack) pack; exit $? ;;
    --list) for s in "${STEPS[@]}"; do printf '%-26s %4ss\n' "$s" "${STEP_BUDGET[$s]}"; done; exit 0 ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "gpu_check: unknown option $1"; usage; exit 2 ;;
    *) [ -n "${STEP_BUDGET[$1]:-}" ] || { echo "gpu_check: unknown step '$1' (known: ${STEPS[*]})"; exit 2; }
       steps+=("$1"); shift ;;
  esac
done
export GPU_CHECK_DRY="$DRY"
MODE=$([ "$DRY" = 1 ] && echo dry-run || echo device)
PY="${PYTHON:-python3}"
[[ "$PY" == */* && "$PY" != /* ]] && PY="$PWD/$PY"  # steps run from other folders too
WORK="${GPU_CHECK_WORK:-/tmp/gpu_check-$MODE}"  # the build folder there survives between calls on a warm machine
OUT="${OUT:-$PWD/build/gpu_check_out}"
LOGS="$WORK/logs"
export PY WORK OUT LOGS PYTHONUNBUFFERED=1

if [ -n "${RUN_STEP:-}" ]; then  # internal: one step, in the child bash that run_step starts
  "step_${RUN_STEP//-/_}"
  exit $?
fi

[ ${#steps[@]} -eq 0 ] && steps=("${STEPS[@]}")
DEADLINE="${GPU_CHECK_DEADLINE:-$(( DRY == 1 ? 1620 : 540 ))}"
STARTED=$(date +%s)
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
mkdir -p "$OUT" "$WORK"
rm -rf "$LOGS" && mkdir -p "$LOGS"
: >"$WORK/steps.tsv"
for s in "${steps[@]}"; do printf '%s\tpending\t\t\t%s\t{}\n' "$s" "$(budget_of "$s")" >>"$WORK/steps.tsv"; done
log "$MODE run of ${#steps[@]} steps, commit $COMMIT, deadline ${DEADLINE}s; summary under $OUT"
write_summary false
for s in "${steps[@]}"; do
  run_step "$s"
done
write_summary true
log "summary ($OUT/summary.json):"
cat "$OUT/summary.txt"
"$PY" -c "import json, sys; sys.exit(0 if json.load(open('$OUT/summary.json'))['ok'] else 1)"
