#!/usr/bin/env bash
# One prepared check for an NVIDIA machine WITHOUT network, in under 8 minutes (BUDGET_S, default 460 s):
#   1. nvidia-smi and what is installed (torch + CUDA, onnxruntime providers, tensorrt, PyAV, OpenCV)
#   2. pip install --no-deps -e .   only when textsam_eus is not importable (falls back to PYTHONPATH)
#   3. CUDA parity: torch engine cuda vs cpu (fp32, fp16, bf16 (info), CUDA graphs): mask IoU >= 0.98;
#      the SDPA encoder attention vs segment-anything's on vit_b@1024 (fp32 max |diff| < 1e-4, bf16 timing)
#   4. export the demo bundle with fp16 graphs, and TensorRT plans when `tensorrt` is importable
#   5. parity of ONNX Runtime (cpu, cuda) and TensorRT against torch / ONNX Runtime: IoU >= 0.98
#   6. latency matrix on cuda with benchmarks/run.py: tiny (torch, onnxruntime, tensorrt) and vit_b (torch)
# Every step runs under `timeout`; a failed step does not stop the others. Everything (logs, JSON, MD, PNG) goes
# to ${OUT:-gpu_check_out}; a PASS/FAIL table is printed at the end and written to $OUT/summary.md.
#
# usage: OUT=/path/to/out bash benchmarks/gpu_check.sh        (from anywhere; BUDGET_S=... to change the budget)
set -u

cd "$(dirname "$0")/.." || exit 2
REPO=$(pwd)
OUT="${OUT:-gpu_check_out}"
mkdir -p "$OUT/logs" || exit 2
OUT=$(cd "$OUT" && pwd)
BUDGET_S=${BUDGET_S:-460}
PY=${PYTHON:-python}
command -v "$PY" >/dev/null 2>&1 || PY=python3
START=$(date +%s)
NAMES=()
STATUS=()
SECS=()
NOTES=()

record() {  # name status seconds note
    NAMES+=("$1"); STATUS+=("$2"); SECS+=("$3"); NOTES+=("$4")
}

remaining() {
    echo $(( BUDGET_S - ($(date +%s) - START) ))
}

# run_step NAME LIMIT_S CMD...: runs CMD under timeout (capped by what is left of the budget), logs to
# $OUT/logs/NAME.log, records PASS / FAIL / TIMEOUT.
run_step() {
    local name=$1 limit=$2
    shift 2
    local left t rc t0 status note=""
    left=$(( $(remaining) - 5 ))
    if (( left < 15 )); then
        record "$name" "SKIP" 0 "no time left in the ${BUDGET_S} s budget"
        echo "=== $name: SKIPPED (budget used up)"
        return 1
    fi
    t=$(( limit < left ? limit : left ))
    if (( t < 15 )); then
        record "$name" "SKIP" 0 "only ${t} s left for it"
        echo "=== $name: SKIPPED (only ${t} s left)"
        return 1
    fi
    echo
    echo "=== $name (timeout ${t} s, $(remaining) s of the budget left): $*"
    t0=$(date +%s)
    timeout -k 10 "$t" "$@" 2>&1 | tee "$OUT/logs/$name.log"
    rc=${PIPESTATUS[0]}
    case $rc in
        0) status=PASS ;;
        124|137) status=TIMEOUT; note="killed after ${t} s" ;;
        *) status=FAIL; note="exit status $rc" ;;
    esac
    record "$name" "$status" $(( $(date +%s) - t0 )) "$note"
    return "$rc"
}

echo "gpu_check: repo $REPO, output $OUT, budget ${BUDGET_S} s, python $(command -v "$PY")"

# ------------------------------------------------------------------------------------------- 1. the machine
if command -v nvidia-smi >/dev/null 2>&1; then
    run_step nvidia_smi 30 bash -c \
        "nvidia-smi; nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv"
else
    record nvidia_smi FAIL 0 "nvidia-smi not found (no NVIDIA driver?)"
    echo "nvidia-smi not found"
fi

run_step environment 90 "$PY" - "$OUT/environment.json" <<'EOF'
import importlib, json, sys
info, missing = {}, []
for mod in ("torch", "torchvision", "onnx", "onnxruntime", "tensorrt", "av", "cv2", "numpy", "matplotlib",
            "safetensors", "segment_anything", "open_clip", "transformers", "scipy", "textsam_eus"):
    try:
        m = importlib.import_module(mod)
        info[mod] = getattr(m, "__version__", "ok")
    except Exception as exc:  # noqa: BLE001
        info[mod] = None
        missing.append(f"{mod} ({type(exc).__name__}: {str(exc)[:120]})")
try:
    import torch
    info["torch_cuda_build"] = torch.version.cuda
    info["cuda_available"] = torch.cuda.is_available()
    info["gpu"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
except Exception:  # noqa: BLE001
    info["cuda_available"] = False
try:
    import onnxruntime as ort
    info["onnxruntime_providers"] = ort.get_available_providers()
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        missing.append("onnxruntime CUDAExecutionProvider (onnxruntime-gpu not installed: ORT cuda rows skipped)")
except Exception:  # noqa: BLE001
    pass
info["missing"] = missing
json.dump(info, open(sys.argv[1], "w"), indent=1)
for k, v in info.items():
    if k != "missing":
        print(f"{k:24} {v}")
print("MISSING: " + ("; ".join(missing) if missing else "nothing"))
sys.exit(0 if info.get("cuda_available") else 1)  # no CUDA in torch: the GPU checks cannot pass
EOF

# ------------------------------------------------------------------------------------------- 2. install
if "$PY" -c "import textsam_eus" >/dev/null 2>&1; then
    record install SKIP 0 "textsam_eus already importable"
else
    # no network: no build isolation (it would download setuptools), no dependencies
    run_step install 120 "$PY" -m pip install --no-deps --no-build-isolation -e .
    if ! "$PY" -c "import textsam_eus" >/dev/null 2>&1; then
        export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
        echo "textsam_eus still not importable after pip: using PYTHONPATH=$PYTHONPATH"
    fi
fi

# ------------------------------------------------------------------------------------------- 3. the model
CKPT=demo
if ! "$PY" -c "from textsam_eus.model.checkpoint import resolve_checkpoint; resolve_checkpoint('demo')" \
        >/dev/null 2>&1; then
    CKPT="$OUT/random_tiny.safetensors"
    echo "the shipped demo model is missing: the checks use a seeded random tiny model ($CKPT)"
    run_step make_checkpoint 60 "$PY" benchmarks/gpu_parity.py --make-checkpoint "$CKPT"
fi

run_step parity_torch_cuda 150 "$PY" benchmarks/gpu_parity.py --checkpoint "$CKPT" --checks torch \
    --out "$OUT/parity_torch.json"

run_step attention_fp32 60 "$PY" benchmarks/attention_parity.py --preset vit_b --size 1024 --device cuda \
    --dtype fp32 --out "$OUT/attention_fp32.json"
run_step attention_bf16 60 "$PY" benchmarks/attention_parity.py --preset vit_b --size 1024 --device cuda \
    --dtype bf16 --tol 0.5 --out "$OUT/attention_bf16.json"

# ------------------------------------------------------------------------------------------- 4-5. export, TensorRT
HAS_TRT=0
"$PY" -c "import tensorrt" >/dev/null 2>&1 && HAS_TRT=1
TRT_FLAG=()
if (( HAS_TRT )); then
    TRT_FLAG=(--tensorrt)
else
    echo "tensorrt is not importable: exporting ONNX only; the TensorRT checks are skipped"
fi
rm -rf "$OUT/bundle"
if run_step export_bundle 240 "$PY" -m textsam_eus.cli export --checkpoint "$CKPT" --out "$OUT/bundle" --fp16 \
        ${TRT_FLAG[@]+"${TRT_FLAG[@]}"}; then
    run_step parity_engines 120 "$PY" benchmarks/gpu_parity.py --checkpoint "$CKPT" --bundle "$OUT/bundle" \
        --checks engines --out "$OUT/parity_engines.json"
else
    record parity_engines SKIP 0 "the export failed"
fi
(( HAS_TRT )) || record tensorrt SKIP 0 "tensorrt is not installed (pip install 'textsam-eus[trt]')"

# ------------------------------------------------------------------------------------------- 6. latency
# run.py stops starting configurations at --time-budget and still writes results.json/md/png
left=$(( $(remaining) - 10 ))
tiny_t=$(( left * 2 / 5 < 170 ? left * 2 / 5 : 170 ))
run_step bench_tiny "$tiny_t" "$PY" benchmarks/run.py --device cuda --presets tiny \
    --engines torch,onnxruntime,tensorrt --iterations 0,1,2 --modes model,reference,stream --frames 30 --warmup 5 \
    --checkpoint "$CKPT" --time-budget $(( tiny_t > 60 ? tiny_t - 35 : tiny_t / 2 )) --out "$OUT/bench_tiny"

left=$(( $(remaining) - 10 ))
run_step bench_vit_b "$left" "$PY" benchmarks/run.py --device cuda --presets vit_b --engines torch \
    --sizes 1024,512 --iterations 0,2 --modes model,reference,stream --frames 20 --warmup 5 \
    --time-budget $(( left > 60 ? left - 40 : left / 2 )) --out "$OUT/bench_vit_b"

# ------------------------------------------------------------------------------------------- summary
TOTAL=$(( $(date +%s) - START ))
FAILED=0
{
    echo "# gpu_check summary ($(date -u +%Y-%m-%dT%H:%M:%SZ), ${TOTAL} s)"
    echo
    echo "| step | result | seconds | note |"
    echo "|---|---|---|---|"
    for i in "${!NAMES[@]}"; do
        echo "| ${NAMES[$i]} | ${STATUS[$i]} | ${SECS[$i]} | ${NOTES[$i]} |"
        case ${STATUS[$i]} in FAIL|TIMEOUT) FAILED=1 ;; esac
    done
    echo
    echo "logs: $OUT/logs; parity: parity_torch.json, parity_engines.json; latency: bench_tiny/, bench_vit_b/"
    echo "overall: $([ $FAILED = 0 ] && echo PASS || echo FAIL)"
} > "$OUT/summary.md"
echo
printf '%-20s %-8s %8s  %s\n' STEP RESULT SECONDS NOTE
for i in "${!NAMES[@]}"; do
    printf '%-20s %-8s %8s  %s\n' "${NAMES[$i]}" "${STATUS[$i]}" "${SECS[$i]}" "${NOTES[$i]}"
done
echo "overall: $([ $FAILED = 0 ] && echo PASS || echo FAIL) in ${TOTAL} s; everything is in $OUT"
exit $FAILED
