"""Datasets, readers, splits, phantoms and SAM preprocessing."""

from samprompt.data.augment import FLIPS, Flipped, check_flips, flip_sample, with_flips
from samprompt.data.phantoms import make_phantoms
from samprompt.data.preprocess import low_res_target, preprocess_image, to_rgb, valid_shape
from samprompt.data.readers import (
    FolderDataset,
    ImageFolder,
    MontgomeryDataset,
    PairedDataset,
    ShenzhenDataset,
    read_image,
    read_mask,
)
from samprompt.data.sample import Dataset, Sample, SampleList, Subset, as_dataset
from samprompt.data.splits import (
    Split,
    cv_splits,
    kfold_indices,
    nested_subset,
    train_val_test_split,
)
from samprompt.data.writer import write_folder_dataset

__all__ = [
    "FLIPS",
    "Dataset",
    "Flipped",
    "FolderDataset",
    "ImageFolder",
    "MontgomeryDataset",
    "PairedDataset",
    "Sample",
    "SampleList",
    "ShenzhenDataset",
    "Split",
    "Subset",
    "as_dataset",
    "check_flips",
    "flip_sample",
    "cv_splits",
    "kfold_indices",
    "nested_subset",
    "low_res_target",
    "make_phantoms",
    "preprocess_image",
    "read_image",
    "read_mask",
    "to_rgb",
    "train_val_test_split",
    "valid_shape",
    "with_flips",
    "write_folder_dataset",
]
