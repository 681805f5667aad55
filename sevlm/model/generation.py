"""SEVLM's decoding loop (``SEVLM.generate`` checks its arguments and calls :func:`decode`):
one token per step for every image of the batch, with the segment, explanation flag and
lexicon VAD of each fed token derived as in training (``sevlm.text.GeneratedTokenFeatures``)."""

from __future__ import annotations

import torch

from sevlm.text import GeneratedTokenFeatures


def decode(model, image_features: torch.Tensor, prompt_ids: list[int], prompt_segs: list[int], *,
           max_new_tokens: int, decoding: str, top_p: float, temperature: float,
           generator: torch.Generator | None, use_cache: bool, min_new_tokens: int) -> list[list[int]]:
    """Per image, the ids generated after the prompt, cut before ``<eos>`` (the model in
    eval mode, under ``torch.no_grad``)."""
    tok = model.tokenizer
    device = image_features.device
    bsz = image_features.shape[0]
    enc = model.decoder.project_image(image_features)
    ids = torch.tensor(prompt_ids, device=device).unsqueeze(0).repeat(bsz, 1)
    segs = torch.tensor(prompt_segs, device=device).unsqueeze(0).repeat(bsz, 1)
    vad = torch.zeros(bsz, ids.shape[1], 3, device=device)
    expl = torch.zeros(bsz, ids.shape[1], dtype=torch.bool, device=device)
    suppress = torch.tensor(model.never_generated_ids(), device=device)
    use_vad = model.vad_model is not None

    features = GeneratedTokenFeatures(tok, model.vad_lexicon if use_vad else None, bsz, prompt_segs[-1])
    outputs: list[list[int]] = [[] for _ in range(bsz)]
    finished = torch.zeros(bsz, dtype=torch.bool, device=device)

    embeds = model.embed(ids, vad, expl, segs)
    hidden, past = model.decoder(embeds, segs, enc, use_cache=use_cache)
    logits = model.decoder.lm_head(hidden[:, -1]).float()

    for step in range(max_new_tokens):
        logits[:, suppress] = float("-inf")
        if step < min_new_tokens:
            logits[:, tok.eos_id] = float("-inf")
        if decoding == "greedy":
            nxt = logits.argmax(dim=-1)
        else:
            nxt = sample_top_p(logits / temperature, top_p, generator)
        nxt = torch.where(finished, torch.full_like(nxt, tok.eos_id), nxt)
        nxt_list = nxt.tolist()
        for b, (t, done) in enumerate(zip(nxt_list, finished.tolist())):
            if not done and t != tok.eos_id:
                outputs[b].append(t)
        finished = finished | (nxt == tok.eos_id)
        if bool(finished.all()) or step == max_new_tokens - 1:
            break

        new_seg, new_expl, new_vad = features.step(nxt_list)
        seg_t = torch.tensor(new_seg, device=device).unsqueeze(1)
        expl_t = torch.tensor(new_expl, dtype=torch.bool, device=device).unsqueeze(1)
        vad_t = torch.tensor(new_vad, dtype=vad.dtype, device=device).unsqueeze(1)
        ids = torch.cat([ids, nxt.unsqueeze(1)], dim=1)
        segs = torch.cat([segs, seg_t], dim=1)
        expl = torch.cat([expl, expl_t], dim=1)
        vad = torch.cat([vad, vad_t], dim=1)

        if use_cache:
            new_embeds = model.embed(nxt.unsqueeze(1), vad, expl, segs, last_only=True)
            hidden, past = model.decoder(new_embeds, seg_t, enc, past_key_values=past, use_cache=True)
        else:
            embeds = model.embed(ids, vad, expl, segs)
            hidden, _ = model.decoder(embeds, segs, enc, use_cache=False)
        logits = model.decoder.lm_head(hidden[:, -1]).float()
    return outputs


# Candidates ranked before falling back to sorting the whole vocabulary: a trained model's
# nucleus is a few tokens, and sorting all of them was the largest cost of generation.
NUCLEUS_CANDIDATES = 256


def sample_top_p(logits: torch.Tensor, top_p: float, generator: torch.Generator | None) -> torch.Tensor:
    """Nucleus sampling: keep the most probable tokens until their mass reaches ``top_p``
    (the token that crosses it included), renormalise, sample. (B, V) -> (B,).

    The same tokens, and the same generator state after, as ``torch.multinomial`` over the
    whole sorted distribution (checked in the tests): multinomial draws one Exp(1) variate
    per vocabulary entry and takes ``argmax(p / q)``, so the variates are drawn for the
    whole vocabulary even when the nucleus lies within the first candidates."""
    probs = torch.softmax(logits.float(), dim=-1)
    vocab = probs.shape[-1]
    ranked_p, ranked_idx = probs.topk(min(NUCLEUS_CANDIDATES, vocab), dim=-1)
    before = ranked_p.cumsum(dim=-1) - ranked_p  # mass of the strictly more probable tokens
    if ranked_p.shape[-1] < vocab and not bool((before[:, -1] >= top_p).all()):
        ranked_p, ranked_idx = probs.sort(dim=-1, descending=True)  # a nucleus may be longer
        before = ranked_p.cumsum(dim=-1) - ranked_p
    ranked_p = ranked_p.masked_fill(before >= top_p, 0.0)
    exponential = torch.empty_like(probs).exponential_(1, generator=generator)[:, : ranked_p.shape[-1]]
    choice = (ranked_p / exponential).argmax(dim=-1, keepdim=True)
    return ranked_idx.gather(-1, choice).squeeze(-1)
