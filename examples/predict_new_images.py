"""Predict masks for new images (no ground truth) with a saved fine-tuned model.

Usage: ``python predict_new_images.py MODEL_DIR IMAGES_DIR OUT_DIR``. The base SAM checkpoint is
the one recorded in the model's ``model.json``; its sha256 is checked. The same is available as
``samprompt predict --model MODEL_DIR --images IMAGES_DIR --out OUT_DIR``.
"""

import sys
from pathlib import Path

import numpy as np
from PIL import Image

from samprompt import Finetuner
from samprompt.data import ImageFolder

model_dir, images_dir, out_dir = (Path(a) for a in sys.argv[1:4])
segmenter = Finetuner.load(model_dir)  # mean-points needs no masks at inference
images = ImageFolder(images_dir)
out_dir.mkdir(parents=True, exist_ok=True)
for ident, mask in segmenter.predict_masks(images):  # bool masks at each image's own size
    Image.fromarray(mask.astype(np.uint8) * 255).save(out_dir / f"{ident}.png")
print(f"wrote {len(images)} masks to {out_dir}")
