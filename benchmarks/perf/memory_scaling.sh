#!/usr/bin/env bash
# Peak resident memory of `xaibench run` on the demo grid (benchmarks/rooftops-demo.toml) at
# several numbers of scored images: docs/scale.md "## Memory".
#
#   benchmarks/perf/memory_scaling.sh 8 32 96        # image counts; default 8 32 96
#
# For each N: the demo config with [dataset] n_test = 128 (rooftops.toml's dataset, so one model,
# already trained by rooftops.toml, serves every N: the model's cache key hashes every [dataset]
# parameter, n_test included, while n_images is not one) and n_images = N, under its own
# [benchmark] name, written under $WORK (default /tmp/xaibench-memory). A warm-up run of a
# one-cell grid first trains the model if it is not cached, outside the measurement. Each
# measured run is `xaibench run --fresh --quiet` (every map recomputed) under `/usr/bin/time -v`;
# printed per N: peak RSS ("Maximum resident set size"), total_s, cells, rows and the manifest's
# timings. Run directories go under $WORK, never into runs/ or leaderboard/.
set -euo pipefail
cd "$(dirname "$0")/../.."
WORK=${WORK:-/tmp/xaibench-memory}
mkdir -p "$WORK"
[ $# -gt 0 ] || set -- 8 32 96
config() {  # N NAME -> the demo grid on the first N of 128 test tiles
    sed -e "s/^n_test = .*/n_test = 128\nn_images = $1/" -e "s/^name = \"rooftops-demo\"/name = \"$2\"/" benchmarks/rooftops-demo.toml
}
config 8 rooftops-demo-mem-warm | sed -e 's/^explainers = .*/explainers = ["random"]/' -e 's/^layers = .*/layers = ["decoder1"]/' \
    -e 's/^thresholds = .*/thresholds = [0.5]/' -e 's/^perturbations = .*/perturbations = ["background_only"]/' \
    -e 's/^metrics = .*/metrics = ["iou_drop"]/' > "$WORK/warm.toml"
xaibench run --fresh --quiet --out "$WORK/warm" "$WORK/warm.toml" > "$WORK/warm.log" 2>&1
for n in "$@"; do
    cfg=$WORK/demo-n$n.toml
    config "$n" "rooftops-demo-mem$n" > "$cfg"
    grep -q "^n_images = $n$" "$cfg" && grep -q "^name = \"rooftops-demo-mem$n\"" "$cfg"
    /usr/bin/time -v xaibench run --fresh --quiet --out "$WORK/run-n$n" "$cfg" > "$WORK/run-n$n.log" 2>&1
    rss=$(grep 'Maximum resident' "$WORK/run-n$n.log" | awk '{print $NF}')
    python3 - "$WORK/run-n$n/manifest.json" "$n" "$rss" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
t = m["timings"]
print(f"n_images={sys.argv[2]} images={m['images']} cells={m['cells']} rows={m['rows']} "
      f"peak_rss={int(sys.argv[3]) / 1e6:.2f} GB total_s={t['total_s']:.1f}", flush=True)
print("  timings:", json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in t.items()}), flush=True)
PY
done
