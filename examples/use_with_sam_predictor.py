"""Use a fine-tuned samprompt model from segment-anything's own ``SamPredictor``.

Usage: ``python use_with_sam_predictor.py MODEL_DIR IMAGES_DIR``. Prints, per image, the Dice
between the official predictor's mask and ``samprompt predict``'s: >= 0.999 for a trained model
(``samprompt predict`` reads fp16 cached embeddings, ``SamPredictor`` computes fp32 ones, so pixels
right at the threshold may differ).

The two settings that matter: decoder-only fine-tuning trains SAM's *single-mask* output
(``multimask_output=False``), and ``SamPredictor`` thresholds *logits*, while samprompt saves a
*probability* threshold.
"""

import math
import sys

import numpy as np
from segment_anything import SamPredictor

from samprompt import Finetuner
from samprompt.data import ImageFolder
from samprompt.interop import PromptedPredictor

model_dir, images_dir = sys.argv[1:3]
segmenter = Finetuner.load(model_dir)  # the base SAM with the fine-tuned decoder loaded
images = ImageFolder(images_dir)

# 1. The plain official predictor, configured by hand.
predictor = SamPredictor(segmenter.model.sam)
logit_threshold = math.log(segmenter.threshold / (1 - segmenter.threshold))
# 2. The same, ready-made: samprompt.interop.PromptedPredictor.
ready = PromptedPredictor(segmenter)

for sample, (ident, expected) in zip(images, segmenter.predict_masks(images), strict=True):
    rgb = np.repeat(sample.image[..., None], 3, axis=2) if sample.image.ndim == 2 else sample.image
    predictor.set_image(rgb)
    prompt = segmenter.inference_prompt(sample)  # the fitted points, in this image's pixels
    logits, _, _ = predictor.predict(
        point_coords=prompt.points,
        point_labels=prompt.point_labels,
        multimask_output=False,
        return_logits=True,
    )
    mask = logits[0] >= logit_threshold
    ready.set_image(sample.image)
    same = ready.predict()
    dice = 2 * (mask & expected).sum() / max(mask.sum() + expected.sum(), 1)
    agree = (same == mask).mean()
    print(f"{ident}: Dice vs samprompt predict {dice:.5f}; PromptedPredictor agrees on {agree:.5f}")
