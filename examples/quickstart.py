"""Quick start: fine-tune SAM's mask decoder and evaluate it, in about twenty lines.

Runs on synthetic phantoms with LiteMedSAM, the pretrained SAM that samprompt ships (no
download); swap in your data folder, and ``load_sam("sam_vit_b_01ec64.pth")`` or a MedSAM file if
you have one. Usage: ``python quickstart.py [EPOCHS] [IMAGES]``.
"""

import sys

from samprompt import (
    EmbeddingCache,
    Evaluator,
    FinetuneConfig,
    Finetuner,
    MeanMaskPrior,
    get_strategy,
    load_sam,
)
from samprompt.data import make_phantoms, train_val_test_split

epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 8
n_images = int(sys.argv[2]) if len(sys.argv) > 2 else 30
data = make_phantoms(n_images, 256, seed=0)  # or FolderDataset("path/to/data")
split = train_val_test_split(len(data), seed=0)  # 60/20/20
train, val, test = (data.subset(split.train), data.subset(split.val), data.subset(split.test))

model = load_sam("litemedsam")  # or load_sam("sam_vit_b_01ec64.pth")
config = FinetuneConfig(epochs=epochs)  # lr: the model's recommended rate (1e-4 for LiteMedSAM)
tuner = Finetuner(
    model, get_strategy("mean-points"), config, cache=EmbeddingCache("quickstart-cache")
)
result = tuner.fit(train, val)  # threshold chosen on validation

scores = Evaluator().evaluate(result.segmenter, test)
prior = Evaluator().evaluate(MeanMaskPrior().fit(train), test)
print(
    f"F1 {scores.f1_mean:.3f} ± {scores.f1_std:.3f} (mean-mask prior {prior.f1_mean:.3f}), "
    f"threshold {result.threshold}"
)
