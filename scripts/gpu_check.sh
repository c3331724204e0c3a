#!/usr/bin/env bash
# One prepared GPU check: on a machine with CUDA + TensorRT, build and run the demo model, MobileNetV1
# and ResNet50_vd in FP32 / INT8 / INT8+FP16 / INT8+FP16+pinned on trt and paddle-trt, compare top-1
# and scores with the CPU engines, check TensorRT's Q/DQ file (inference.trt.onnx) against the generic
# export on trt, run bench, and print what could not be tested and why.
#
#   scripts/gpu_check.sh [OUT_DIR]        (default: out/gpu_check; needs ~5-15 min with both stacks)
#
# Environment: PADDLECLS_Q (the CLI, default: paddlecls-q on PATH), PYTHON (default: python3),
# GPU_ID (default 0), MODELS_DIR (optional folder holding ResNet50_vd_infer/, MobileNetV1_ssld_infer/
# and their *_ptq/ INT8 folders, for machines without network), IMAGENET_VAL (optional val list of
# real ImageNet images for the full-size models' top-1).
# Exit code: 0 when every check that could run passed, 1 when one failed.
set -u
OUT=${1:-out/gpu_check}
CLI=${PADDLECLS_Q:-paddlecls-q}
PY=${PYTHON:-python3}
DEVICE="gpu:${GPU_ID:-0}"
mkdir -p "$OUT"
RESULTS="$OUT/results.txt"
: > "$RESULTS"
record() { echo "$1	$2	$3" | tee -a "$RESULTS"; }   # status, what, detail

echo "== environment"
if nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$OUT/gpu.txt" 2>&1; then
  cat "$OUT/gpu.txt"
else
  record SKIP "every GPU run" "nvidia-smi failed: no NVIDIA driver or GPU ($(tail -1 "$OUT/gpu.txt"))"
fi
$PY - <<'EOF' 2>&1 | tee "$OUT/stack.txt"
import importlib
for name in ("tensorrt", "cuda.bindings.runtime", "cuda.cudart", "paddle", "onnxruntime", "onnx", "paddle2onnx"):
    try:
        module = importlib.import_module(name)
        print(f"{name}: {getattr(module, '__version__', 'ok')}")
    except Exception as error:
        print(f"{name}: MISSING ({type(error).__name__}: {error})")
try:
    import paddle
    from paddle import inference
    print("paddle compiled with CUDA:", paddle.is_compiled_with_cuda(), "TensorRT:", inference.get_trt_compile_version())
except Exception as error:
    print("paddle GPU check failed:", error)
EOF

have_trt=0; have_paddle_trt=0
grep -q "^tensorrt: [0-9]" "$OUT/stack.txt" && grep -Eq "^cuda\.(bindings\.runtime|cudart): [^M]" "$OUT/stack.txt" && have_trt=1
grep -q "compiled with CUDA: True TensorRT: ([1-9]" "$OUT/stack.txt" && have_paddle_trt=1
[ $have_trt = 1 ] || record SKIP "backend trt" "tensorrt and cuda-python are not both importable (see $OUT/stack.txt)"
[ $have_paddle_trt = 1 ] || record SKIP "backend paddle-trt" "paddle is not a CUDA build with TensorRT (see $OUT/stack.txt)"

echo "== unit tests that need a GPU (tests/test_gpu.py)"
if $PY -m pytest -q tests/test_gpu.py tests/test_trt_logic.py > "$OUT/pytest.txt" 2>&1; then
  record PASS "tests/test_gpu.py + test_trt_logic.py" "$(tail -1 "$OUT/pytest.txt")"
else
  record FAIL "tests/test_gpu.py + test_trt_logic.py" "$(tail -1 "$OUT/pytest.txt")"
fi

echo "== models"
DATA="$OUT/fashion_mnist"
[ -d "$DATA" ] || $CLI data fashion-mnist --out "$DATA" --split test --limit 500 > /dev/null \
  || record SKIP "demo top-1" "Fashion-MNIST not available (apt-get install dataset-fashion-mnist)"
DEMO_INT8="$OUT/demo_int8"
if [ ! -d "$DEMO_INT8" ]; then
  $CLI data fashion-mnist --out "$OUT/fashion_train" --split train --limit 400 > /dev/null 2>&1
  cat > "$OUT/demo_ptq.yaml" <<EOF
Global:
  model_dir: $($PY -c 'from paddlecls_q import registry; print(registry.DEMO_MODEL_DIR)')
  ptq_image_path: $OUT/fashion_train/images/train
PTQ:
  calibration_method: hist
  calibration_images: 256
EOF
  $CLI quantize --config "$OUT/demo_ptq.yaml" --output "$DEMO_INT8" > "$OUT/demo_quantize.txt" 2>&1 \
    || record FAIL "demo PTQ" "$(tail -1 "$OUT/demo_quantize.txt")"
fi
declare -A FP32 INT8 VAL
FP32[demo]=$($PY -c 'from paddlecls_q import registry; print(registry.DEMO_MODEL_DIR)'); INT8[demo]=$DEMO_INT8
VAL[demo]="$DATA/val_list.txt"
for model in ResNet50_vd MobileNetV1_ssld; do
  fp32="${MODELS_DIR:-}/${model}_infer"; int8="${MODELS_DIR:-}/${model,,}_ptq"
  if [ -z "${MODELS_DIR:-}" ] || [ ! -d "$fp32" ]; then
    $CLI download "$model" > /dev/null 2>&1 && $CLI download "$model" --quantized > /dev/null 2>&1 \
      && fp32=$($CLI models --json 2>/dev/null | $PY -c "import json,sys; d=json.load(sys.stdin); m=[m for m in d['models'] if m['name']=='$model'][0]; print(m.get('fp32_dir') or '')") \
      && int8=$($CLI models --json 2>/dev/null | $PY -c "import json,sys; d=json.load(sys.stdin); m=[m for m in d['models'] if m['name']=='$model'][0]; print(m.get('quantized_dir') or '')")
  fi
  if [ -d "$fp32" ] && [ -d "$int8" ]; then FP32[$model]=$fp32; INT8[$model]=$int8; VAL[$model]=${IMAGENET_VAL:-}
  else record SKIP "$model" "model folders not found (no network? set MODELS_DIR)"; fi
done

echo "== engines vs the CPU engines (top-1 agreement and max score difference on the same images)"
IMAGES="$OUT/images"; mkdir -p "$IMAGES"
ls "$DATA/images/test/"*.png 2>/dev/null | head -64 | xargs -r -I{} cp {} "$IMAGES/"
PHOTO_DIR="$OUT/photos"; mkdir -p "$PHOTO_DIR"
cp paddlecls_q/assets/images/*.jpeg "$PHOTO_DIR/" 2>/dev/null
compare() {  # reference.json candidate.json label
  $PY - "$1" "$2" <<'EOF'
import json, sys
a, b = (json.load(open(p))["predictions"] for p in sys.argv[1:3])
same = sum(x["class_ids"][0] == y["class_ids"][0] for x, y in zip(a, b))
diff = max(abs(x["scores"][0] - y["scores"][0]) for x, y in zip(a, b))
print(f"top-1 agreement {same}/{len(a)}, max top-1 score difference {diff:.4f}")
sys.exit(0 if same >= 0.98 * len(a) and len(a) == len(b) else 1)
EOF
}
for model in "${!FP32[@]}"; do
  [ $have_trt = 0 ] && [ $have_paddle_trt = 0 ] && record SKIP "$model on trt and paddle-trt" "no GPU backend importable (CPU references still written)"
  images=$IMAGES; [ "$model" = demo ] || images=$PHOTO_DIR
  for precision in fp32 int8; do
    folder=${FP32[$model]}; [ $precision = int8 ] && folder=${INT8[$model]}
    ref="$OUT/$model-$precision-ort-cpu.json"
    $CLI infer --model-dir "$folder" --image "$images" --backend ort --device cpu --json > "$ref" 2>"$ref.err" \
      || { record FAIL "$model $precision ort cpu (reference)" "$(tail -1 "$ref.err")"; continue; }
    for backend in trt paddle-trt; do
      [ $backend = trt ] && [ $have_trt = 0 ] && continue
      [ $backend = paddle-trt ] && [ $have_paddle_trt = 0 ] && continue
      modes=("")
      [ $precision = int8 ] && modes=("" "--fp16" "--fp16 --pinned-memory")
      for flags in "${modes[@]}"; do
        name="$model $precision${flags:+ $flags} $backend $DEVICE"
        out="$OUT/$(echo "$name" | tr ' :/' '___').json"
        # shellcheck disable=SC2086
        if $CLI infer --model-dir "$folder" --image "$images" --backend $backend --device $DEVICE $flags --batch-size 8 --json > "$out" 2>"$out.err"; then
          if detail=$(compare "$ref" "$out"); then record PASS "$name" "$detail"; else record FAIL "$name" "$detail"; fi
        elif grep -q "INT8 alone can't be had\|no FP16 builder flag" "$out.err"; then
          record N/A "$name" "$(tail -1 "$out.err")"
        else
          record FAIL "$name" "$(tail -1 "$out.err")"
        fi
      done
    done
  done
  if [ -n "${VAL[$model]}" ] && [ -f "${VAL[$model]}" ]; then
    for backend in trt paddle-trt; do
      [ $backend = trt ] && [ $have_trt = 0 ] && continue
      [ $backend = paddle-trt ] && [ $have_paddle_trt = 0 ] && continue
      $CLI eval --data "${VAL[$model]}" --model-dir "${INT8[$model]}" --compare "${FP32[$model]}" --backend $backend \
        --device $DEVICE --json > "$OUT/$model-eval-$backend.json" 2>"$OUT/$model-eval-$backend.err" \
        && record PASS "$model eval $backend" "see $OUT/$model-eval-$backend.json" \
        || record FAIL "$model eval $backend" "$(tail -1 "$OUT/$model-eval-$backend.err")"
    done
  else
    record SKIP "$model top-1 on labelled data" "no labelled set (IMAGENET_VAL unset for the full-size models)"
  fi
  if [ $have_trt = 1 ] || [ $have_paddle_trt = 1 ]; then
    $CLI bench --model-dir "${FP32[$model]}" --int8-dir "${INT8[$model]}" --device $DEVICE --iters 200 --warmup 20 \
      --format json --output "$OUT/$model-bench.json" > "$OUT/$model-bench.txt" 2>&1 \
      && record PASS "$model bench" "$OUT/$model-bench.json" \
      || record FAIL "$model bench" "$(tail -1 "$OUT/$model-bench.txt")"
  fi
done

echo "== TensorRT Q/DQ placement (inference.trt.onnx) vs the generic paddle2onnx export, on trt"
# quantize writes inference.trt.onnx; a downloaded INT8 folder has none, so one is written into a copy.
# Two copies of each INT8 folder: without the file (trt converts the generic export) and with it.
onnx_of() { $PY -c "import json,sys; print(json.load(open(sys.argv[1]))['engine'].get('onnx_file',''))" "$1" 2>/dev/null; }
images_per_s() { $PY -c "import json,sys; v=json.load(open(sys.argv[1]))['throughput']['images_per_s']; print(f'{v:.1f}' if v else '?')" "$1" 2>/dev/null; }
for model in "${!INT8[@]}"; do
  source=${INT8[$model]}; generic="$OUT/$model-int8-generic"; placed="$OUT/$model-int8-trt-qdq"
  [ -d "$source" ] || continue
  rm -rf "$generic" "$placed"; cp -r "$source" "$generic"; rm -f "$generic/inference.trt.onnx"; cp -r "$source" "$placed"
  if [ ! -f "$placed/inference.trt.onnx" ]; then
    $PY - "$placed" > "$OUT/$model-trt-qdq.txt" 2>&1 <<'PYEOF'
import sys
from pathlib import Path
from paddlecls_q.model_files import find_model_files
from paddlecls_q.qdq_tensorrt import write_tensorrt_model
from paddlecls_q.runtime.convert import paddle_to_onnx
folder = Path(sys.argv[1])
files = find_model_files(folder)
exported = paddle_to_onnx(files.program, files.params, folder / "paddle2onnx.onnx")
print(write_tensorrt_model(exported, folder).to_dict())
exported.unlink()
PYEOF
  fi
  if [ -f "$placed/inference.trt.onnx" ]; then record PASS "$model inference.trt.onnx" "$placed/inference.trt.onnx"
  else record FAIL "$model inference.trt.onnx" "$(tail -1 "$OUT/$model-trt-qdq.txt")"; continue; fi
  [ $have_trt = 0 ] && { record SKIP "$model trt: TensorRT Q/DQ file vs generic" "backend trt not importable"; continue; }
  images=$IMAGES; [ "$model" = demo ] || images=$PHOTO_DIR
  for flags in "" "--fp16"; do
    name="$model int8${flags:+ $flags} trt"
    a="$OUT/$(echo "$name generic" | tr ' :/' '___').json"; b="$OUT/$(echo "$name trt-qdq" | tr ' :/' '___').json"
    # shellcheck disable=SC2086
    if $CLI infer --model-dir "$generic" --image "$images" --backend trt --device $DEVICE $flags --batch-size 8 --json > "$a" 2>"$a.err" \
      && $CLI infer --model-dir "$placed" --image "$images" --backend trt --device $DEVICE $flags --batch-size 8 --json > "$b" 2>"$b.err"; then
      case "$(onnx_of "$b")" in
        *inference.trt.onnx) ;;
        *) record FAIL "$name: engine source" "trt did not load inference.trt.onnx ($(onnx_of "$b"))"; continue ;;
      esac
      detail="$(compare "$a" "$b"); images/s generic $(images_per_s "$a"), TensorRT placement $(images_per_s "$b")"
      if compare "$a" "$b" > /dev/null; then record PASS "$name: TensorRT Q/DQ vs generic" "$detail"
      else record FAIL "$name: TensorRT Q/DQ vs generic" "$detail"; fi
    elif grep -q "no FP16 builder flag" "$a.err" "$b.err" 2>/dev/null; then
      record N/A "$name: TensorRT Q/DQ vs generic" "$(tail -1 "$b.err" 2>/dev/null)"
    else
      record FAIL "$name: TensorRT Q/DQ vs generic" "$(tail -1 "$a.err") | $(tail -1 "$b.err" 2>/dev/null)"
    fi
  done
done

echo "== summary"
sort "$RESULTS" | column -t -s "	" || cat "$RESULTS"
echo "Not tested and why: the SKIP and N/A lines above. Raw outputs: $OUT/"
! grep -q "^FAIL" "$RESULTS"
