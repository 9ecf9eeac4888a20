#!/usr/bin/env bash
# Many `freezetune compare` studies at once on one GPU: issue 10's levers (benchmarks/gpu_recipes.txt).
#
#   bash benchmarks/gpu_recipes.sh RESULTS_DIR [STUDIES_FILE] [DEADLINE_S] [PARALLEL]
#
# The builtin model is small and a batch of 16 titles leaves a GPU mostly idle between kernel launches, so
# each (study, seed) runs as its own process, PARALLEL (default 12) at a time, one CPU thread each: a one-seed
# study in RESULTS_DIR/per-seed/NAME-seedS. `python benchmarks/gpu_recipes_report.py RESULTS_DIR` then merges
# each study's seeds into RESULTS_DIR/NAME/, writes its report (no training) and a summary of all studies. Model weights are deleted as
# runs finish: only metrics.json and the logs are kept. No new run starts after DEADLINE_S seconds (default
# 0: none), and the ones still going are stopped then (each run's own `timeout`); what finished stays.
# COMMON: the flags every study gets, on top of its line.
set -uo pipefail
out=${1:?usage: bash benchmarks/gpu_recipes.sh RESULTS_DIR [STUDIES_FILE] [DEADLINE_S] [PARALLEL]}
studies=${2:-benchmarks/gpu_recipes.txt}
deadline=${3:-0}
parallel=${4:-12}
COMMON=${COMMON:---strategies full --decision macro_f1 --metric macro_f1 --no-compact-embeddings --no-checkpoints}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
mkdir -p "$out/per-seed"
start=$(date +%s)

# One run per (study, seed), seed-major within each line, lines in file order.
queue=()
while read -r name seeds flags; do
  [[ -z "$name" || "$name" == \#* ]] && continue
  for seed in ${seeds//,/ }; do queue+=("$name $seed $flags"); done
done <"$studies"
echo "${#queue[@]} runs, $parallel at a time" | tee "$out/jobs.log"

run_one() {  # NAME SEED FLAGS...: one seed of one study, stopped at the deadline; not started after it
  local name=$1 seed=$2; shift 2
  local left=$(( deadline > 0 ? deadline - ($(date +%s) - start) : 0 ))
  if (( deadline > 0 && left <= 0 )); then echo "$name seed $seed: not started (deadline)"; return; fi
  local dir="$out/per-seed/$name-seed$seed" t0=$(date +%s)
  # Later flags win: the study's own (e.g. --strategies llrd) override COMMON's. timeout 0 = no limit.
  timeout "$left" python3 -m freezetune compare $COMMON "$@" --seeds "$seed" --output-dir "$dir" >"$dir.log" 2>&1
  local rc=$?
  find "$dir" -name '*.safetensors' -delete 2>/dev/null
  echo "$name seed $seed: exit $rc after $(( $(date +%s) - t0 )) s"
}
export -f run_one
export out start deadline COMMON

printf '%s\n' "${queue[@]}" | xargs -P "$parallel" -L 1 bash -c 'run_one $0 "$@"' | tee -a "$out/jobs.log"
find "$out" -name '*.safetensors' -delete
echo "all done after $(( $(date +%s) - start )) s" | tee -a "$out/jobs.log"
