#!/usr/bin/env bash
# The main job on the bundled example: make a reference from one photo of a dog and its
# mask, then remove the background of five other frames of the same video.
# Model: $DINOMASK_MODEL (default dinov2_vits14_reg, fetched from the Hugging Face hub once).
# Where the hub cannot be reached and the model is not cached, it says so and runs the same
# pipeline on a RANDOM-weight model so that every step can still be seen working; those
# masks mean nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
MODEL=${DINOMASK_MODEL:-dinov2_vits14_reg}
OUT=${OUT:-out/example}
mkdir -p "$OUT"
if ! HF_HUB_OFFLINE=1 python -c "from dinomask import load_backbone; load_backbone('$MODEL', device='cpu')" 2>/dev/null \
   && ! dinomask download "$MODEL"; then
  echo "example: the real weights of $MODEL could not be had (no internet to huggingface.co?)."
  echo "example: running on a RANDOM-weight DINOv2 instead: the pipeline runs, the masks are meaningless."
  MODEL="$OUT/random-model"
  [ -f "$MODEL/config.json" ] || dinomask random-model "$MODEL"
fi
dinomask reference examples/dog/reference.jpg --mask examples/dog/reference_mask.png \
  --label dog --model "$MODEL" -o "$OUT/dog.npz" --overwrite
dinomask remove --ref "$OUT/dog.npz" examples/dog/frames -o "$OUT/removed" --overwrite
dinomask remove --ref "$OUT/dog.npz" examples/dog/frames -o "$OUT/heatmaps" --output-kind heatmap --overwrite
echo "example: results in $OUT/removed (background removed) and $OUT/heatmaps (similarity)"
