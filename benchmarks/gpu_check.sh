#!/usr/bin/env bash
# Issues #21 and #25 on a lent GPU machine (15 device-minutes a session, start-up included): build, the
# CUDA tests with the real weights, compute-sanitizer's four tools, the benchmarks; then the record.
#
# Here, once:      bash benchmarks/gpu_check.sh prepare    (wheels and the weights, in two halves: .gpu1 .gpu2)
# There, three `run` calls back to back (the machine stays warm only ~30 s between calls), in order of
# priority; expected ~2.5 + ~4 + ~2.5 minutes, each stage's limits sum to < 600 s:
#   bash benchmarks/gpu_check.sh kernels   carry .gpu1: build; op tests on CUDA and CPU; memcheck, racecheck,
#                                          initcheck, synccheck over the CUDA op tests
#   bash benchmarks/gpu_check.sh suite     carry .gpu2: the weights joined; every CUDA test; the network
#                                          variants (bench_network); the training-loop metric (bench_training)
#   bash benchmarks/gpu_check.sh bench     bench_fid on 2 × 10k JPEGs of 256²: fp16, --compile, fp32, pytorch-fid
# Each stage keeps its work under /tmp/fidfast-gpu (gone when the machine goes back) and refreshes
# $OUT/<stage>.tar.gz after every step, so a call cut short still returns what it did. Here:
#   mkdir -p /tmp/gpu && for f in <files_at>/*.tar.gz; do tar xzf "$f" -C /tmp/gpu; done
#   .venv/bin/python benchmarks/gpu_record.py /tmp/gpu --out benchmarks/results
set -uo pipefail
stage=${1:?usage: gpu_check.sh prepare|kernels|suite|bench}
cd "$(dirname "$0")/.."
W=/tmp/fidfast-gpu
R=$W/results/$stage
OUT=${OUT:-$W/out-local}
export PYTHONUNBUFFERED=1

archive() {  # the stage's results so far as one file under $OUT (the device returns at most 8 files)
  mkdir -p "$OUT"
  tar czf "$OUT/$stage.tar.gz" -C "$W/results" "$stage"
}

step() {  # step NAME SECONDS COMMAND...: runs it with a time limit, logs to $R/NAME.log, records its exit code
  local name=$1 limit=$2 begin=$SECONDS
  shift 2
  echo "== $name: $*"
  timeout -k 10 "$limit" "$@" > "$R/$name.log" 2>&1  # -k: a step that ignores SIGTERM must not eat the call
  local rc=$?
  echo "$name $rc" >> "$R/status.txt"
  echo "$name $((SECONDS - begin))" >> "$R/seconds.txt"
  tail -n 3 "$R/$name.log"
  echo "== $name: exit $rc, $((SECONDS - begin)) s"
  archive
}

environment() {
  # the toolkit that holds the nvcc on PATH (setup.py and compute-sanitizer need it)
  local nvcc
  nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
  export PYTHONPATH=$W/site CUDA_HOME=${CUDA_HOME:-$(dirname "$(dirname "$nvcc")")}
  export PATH=$PATH:$CUDA_HOME/bin
  # the tests' private caches, shared with the benchmarks: the compiled network is built once
  export FIDFAST_TEST_TMP=$W/testtmp XDG_CACHE_HOME=$W/testtmp/xdg
  if [ -f "$W/ff/w.pth" ]; then
    export FIDFAST_TEST_WEIGHTS=$W/ff/w.pth FIDFAST_WEIGHTS=$W/ff/w.pth
  fi
}

warm() {  # this is still the machine that ran the earlier stages: the weights joined, the CUDA build there
  [ -f "$W/ff/w.pth" ] && python3 -c "from fidfast import native; assert native.cuda_compiled()" 2>/dev/null || {
    echo "gpu_check: $W or the CUDA build is gone (a fresh machine): run 'kernels' and 'suite' again first"
    exit 1
  }
}

OPS=(tests/test_preprocess.py tests/test_stats.py tests/test_frechet.py tests/test_native.py tests/test_feeder.py)

case $stage in
prepare)
  exclude=$(git rev-parse --git-path info/exclude) && mkdir -p "$(dirname "$exclude")"
  grep -qsx '/.gpu1/' "$exclude" || printf '/.gpu1/\n/.gpu2/\n' >> "$exclude"
  rm -rf .gpu1 .gpu2 && mkdir -p .gpu1 .gpu2
  # the test references the machine lacks (pure Python; it has torchmetrics, pytest-mock, scikit-learn)
  .venv/bin/pip wheel -q --no-deps -w .gpu1 pytorch-fid==0.3.0 torch-fidelity==0.4.0 clean-fid==0.1.35 prdc==0.2
  weights=$(.venv/bin/python -c "from fidfast.weights import resolve_weights; print(resolve_weights().path)")
  split -n 2 -d "$weights" .gpu1/w. && mv .gpu1/w.01 .gpu2/
  (cd "$(dirname "$weights")" && sha256sum "$(basename "$weights")") | sed 's/ .*/  w.pth/' > .gpu1/w.sha256
  # what is measured: the commit and a hash of any uncommitted change (the device gets no .git)
  echo "$(git rev-parse HEAD) diff:$(git diff HEAD | sha256sum | cut -c1-12)" > .gpu1/source.txt
  du -sh .gpu1 .gpu2
  ;;
kernels)
  rm -rf "$W" && mkdir -p "$W/ff" "$R"
  cp .gpu1/* "$W/ff/" && cp .gpu1/source.txt "$R/"
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$W/site" "$W"/ff/*.whl
  environment
  { nvidia-smi; echo "CUDA_HOME=$CUDA_HOME"; command -v nvcc compute-sanitizer; compute-sanitizer --version; nproc
  } > "$R/nvidia-smi.txt" 2>&1
  step build 120 env FIDFAST_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 python3 setup.py build_ext --inplace
  step version 20 python3 -m fidfast --version
  step kernel_tests 60 python3 -m pytest -q -p no:cacheprovider -m cuda "${OPS[@]}" --junitxml="$R/kernel_tests.xml"
  # the CPU ops' checks too, built by this machine's toolchain (a failed check crashed here once)
  step cpu_op_tests 90 env CUDA_VISIBLE_DEVICES= OMP_NUM_THREADS=2 python3 -m pytest -q -p no:cacheprovider -n 8 \
    -m "not cuda" "${OPS[@]}" --junitxml="$R/cpu_op_tests.xml"
  # fidfast's own kernels only (kns: a substring of their names); no caching allocator, so a read past a
  # tensor's end is not hidden inside a cached block; API errors PyTorch itself provokes and handles are not
  # fidfast's, so only a kernel error sets the exit code
  for tool in memcheck racecheck initcheck synccheck; do
    step "$tool" 75 env PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool "$tool" --kernel-name kns=fidfast \
      --report-api-errors no --error-exitcode 99 python3 -m pytest -q -p no:cacheprovider -m cuda \
      tests/test_preprocess.py tests/test_stats.py tests/test_frechet.py tests/test_native.py
  done
  cat "$R/status.txt"
  ;;
suite)
  mkdir -p "$R"
  [ -f "$W/ff/w.00" ] || { echo "gpu_check: $W is gone (a fresh machine): run 'kernels' again first"; exit 1; }
  cat "$W/ff/w.00" .gpu2/w.01 > "$W/ff/w.pth" && (cd "$W/ff" && sha256sum -c w.sha256) || exit 1
  environment
  warm
  step cuda_tests 260 python3 -m pytest -q -p no:cacheprovider -m cuda tests --junitxml="$R/cuda_tests.xml"
  step bench_network 150 python3 benchmarks/bench_network.py --device cuda --weights "$W/ff/w.pth" \
    --variants ts_fp16,ts_fp32_noautotune,ts_fp32_tf32,aoti_fp16 --out "$R"
  step bench_training 90 python3 benchmarks/bench_training.py --device cuda --batches 8 --batch-size 250 \
    --repeat 2 --out "$R"
  cat "$R/status.txt"
  ;;
bench)
  mkdir -p "$R"
  environment
  warm
  step bench_fid 400 python3 benchmarks/bench_fid.py --device cuda --images 10000 --format jpg \
    --repeat "${REPEAT:-1}" --skip-sqrtm --work "$W/bench" --out "$R"
  cat "$R"/fid_*.md 2>/dev/null | tail -n 30
  ;;
*)
  echo "gpu_check: unknown stage $stage (prepare, kernels, suite, bench)"
  exit 2
  ;;
esac
