"""Quick start: fine-tune SAM's mask decoder and evaluate it, in about twenty lines.

Runs on synthetic phantoms with a tiny random-weight SAM; swap in your data folder and an
official checkpoint (e.g. ``load_sam("sam_vit_b_01ec64.pth")``) for real work.
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
data = make_phantoms(30, 128, seed=0)  # or FolderDataset("path/to/data")
split = train_val_test_split(len(data), seed=0)  # 60/20/20
train, val, test = (data.subset(split.train), data.subset(split.val), data.subset(split.test))

model = load_sam("random:tiny")  # or load_sam("sam_vit_b_01ec64.pth")
config = FinetuneConfig(epochs=epochs, lr=1e-3)  # random decoders want a larger lr than 1e-5
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
