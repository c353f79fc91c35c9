from __future__ import annotations

import numpy as np
import torch

from samprompt import LoadedSam, Prompt
from samprompt.decoder import decode_low_res
from samprompt.prompts.tokens import PromptTokens


def _official(
    model: LoadedSam, embedding: torch.Tensor, prompt: Prompt, multimask: bool = False
) -> torch.Tensor:
    """SAM's own per-image path: prompt encoder + MaskDecoder.forward, one prompt row per box."""
    points, boxes = prompt.to_input_frame(model.img_size)
    rows = [None] if boxes is None else list(boxes)
    outs = []
    for box in rows:
        point_arg = None
        if points is not None:
            point_arg = (
                torch.tensor(points[None], dtype=torch.float32),
                torch.tensor(prompt.point_labels[None]),
            )
        box_arg = None if box is None else torch.tensor(box[None], dtype=torch.float32)
        sparse, dense = model.sam.prompt_encoder(points=point_arg, boxes=box_arg, masks=None)
        masks, iou = model.sam.mask_decoder(
            image_embeddings=embedding[None],
            image_pe=model.sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
        )
        outs.append(masks[0, int(iou[0].argmax())] if multimask else masks[0, 0])
    return torch.stack(outs).amax(dim=0)


def test_batched_decoder_matches_official_per_image_path(tiny: LoadedSam) -> None:
    torch.manual_seed(0)
    embeddings = torch.randn(4, 256, 64, 64)
    prompts = [
        Prompt((100, 80), points=[[10.0, 20.0], [60.0, 70.0]], point_labels=[1, 0]),
        Prompt((256, 256), boxes=[[10, 10, 200, 220]]),
        Prompt(
            (300, 150),
            points=[[40.0, 40.0]],
            point_labels=[1],
            boxes=[[5, 5, 60, 100], [70, 5, 140, 290]],
        ),
        Prompt((64, 64), boxes=[[1, 2, 30, 40], [35, 2, 60, 40]]),
    ]
    with torch.no_grad():
        for multimask in (False, True):
            batched = decode_low_res(tiny.sam, embeddings, prompts, multimask_output=multimask)
            assert batched.shape == (4, 1, 256, 256)
            for b, prompt in enumerate(prompts):
                expected = _official(tiny, embeddings[b], prompt, multimask)
                torch.testing.assert_close(batched[b, 0], expected, atol=1e-4, rtol=1e-4)


def test_gradients_reach_only_the_decoder(tiny: LoadedSam) -> None:
    embeddings = torch.randn(2, 256, 64, 64)
    prompts = [Prompt((64, 64), points=np.array([[30.0, 30.0]]), point_labels=[1])] * 2
    decode_low_res(tiny.sam, embeddings, prompts).sum().backward()
    decoder = tiny.sam.mask_decoder
    used = [decoder.transformer, decoder.output_upscaling, decoder.output_hypernetworks_mlps[0]]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for m in used for p in m.parameters())
    assert all(p.grad is None for p in tiny.sam.prompt_encoder.parameters())


def test_gradients_equal_those_of_the_official_per_image_path(tiny: LoadedSam) -> None:
    """The token-layout forward (fused projections, SDPA, pixelwise upscaling) must train the
    same decoder: every parameter's gradient of a batch loss matches SAM's per-image path."""
    torch.manual_seed(1)
    embeddings = torch.randn(3, 256, 64, 64)
    targets = (torch.rand(3, 256, 256) > 0.5).float()
    prompts = [
        Prompt((128, 128), points=[[30.0, 40.0], [90.0, 100.0]], point_labels=[1, 1]),
        Prompt((128, 128), points=[[60.0, 20.0], [10.0, 110.0]], point_labels=[1, 0]),
        Prompt((128, 128), points=[[64.0, 64.0], [5.0, 5.0]], point_labels=[1, 1]),
    ]
    params = [p for p in tiny.sam.mask_decoder.parameters() if p.requires_grad]

    def grads(logits: list[torch.Tensor]) -> list[torch.Tensor]:
        loss = sum(
            torch.nn.functional.binary_cross_entropy_with_logits(x, t)
            for x, t in zip(logits, targets, strict=True)
        )
        assert isinstance(loss, torch.Tensor)
        found = torch.autograd.grad(loss, params, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for p, g in zip(params, found, strict=True)]

    ours = grads(list(decode_low_res(tiny.sam, embeddings, prompts)[:, 0]))
    official = grads([_official(tiny, embeddings[b], p) for b, p in enumerate(prompts)])
    assert any(g.abs().sum() > 0 for g in official)
    for mine, theirs in zip(ours, official, strict=True):
        torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-3)


def test_mask_inputs_learned_tokens_and_empty_prompts_match_the_official_modules(
    tiny: LoadedSam,
) -> None:
    """A prompt's mask_input is SAM's dense mask prompt, learned tokens follow the prompt's own
    tokens, and an empty prompt leaves only the learned ones: each as SAM's modules compute it."""
    torch.manual_seed(2)
    embeddings = torch.randn(3, 256, 64, 64)
    mask = torch.randn(256, 256)
    tokens = PromptTokens(torch.randn(3, 256), torch.randn(256, 256))
    prompts = [
        Prompt((100, 80), boxes=[[5, 5, 60, 90]], mask_input=mask.numpy()),
        Prompt((64, 64), points=[[30.0, 30.0]], point_labels=[1]),
        Prompt((64, 64)),
    ]
    sam = tiny.sam
    with torch.no_grad():
        ours = decode_low_res(sam, embeddings, prompts, tokens=tokens)
        for b, prompt in enumerate(prompts):
            points, boxes = prompt.to_input_frame(tiny.img_size)
            point_arg = None
            if points is not None:
                labels = torch.tensor(prompt.point_labels[None])
                point_arg = (torch.tensor(points[None]).float(), labels)
            box_arg = None if boxes is None else torch.tensor(boxes).float()
            masks = None if prompt.mask_input is None else mask[None, None]
            sparse, dense = sam.prompt_encoder(points=point_arg, boxes=box_arg, masks=masks)
            if masks is None:
                dense = sam.prompt_encoder.mask_downscaling(tokens.mask_logits[None, None])
            sparse = torch.cat([sparse, tokens.sparse[None]], dim=1)
            expected, _ = sam.mask_decoder(
                image_embeddings=embeddings[b : b + 1],
                image_pe=sam.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=False,
            )
            torch.testing.assert_close(ours[b, 0], expected[0, 0], atol=1e-4, rtol=1e-4)
