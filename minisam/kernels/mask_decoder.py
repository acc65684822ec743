"""The mask decoder's fast path: the same arithmetic as :mod:`minisam.modeling.mask_decoder`
and :mod:`minisam.modeling.transformer`, arranged for one image and many prompts.

Paper: Kirillov et al. 2023, section 3 ("Mask decoder") and appendix A (figure 14). Mirrors
``segment_anything/modeling/mask_decoder.py`` and ``modeling/transformer.py``; the readable
twins in ``minisam/modeling`` follow those files line by line, and
``tests/test_mask_decoder.py`` holds this path equal to them and to the official model.

What this path does differently, and why:

- **One image, shared.** The official code repeats the image embedding once per prompt
  (``torch.repeat_interleave``). Until layer 0's image-to-token attention the image tokens
  are ``image_embeddings + dense``, the same for every prompt whose dense embedding is the
  same (no mask input), so one copy ``[1, GG, C]`` serves all prompts and NumPy's matmul
  broadcasts it.
- **The image state.** What depends on the image alone (the image tokens, their positional
  encoding, and layer 0's three projections of them: the token-to-image keys and values and
  the image-to-token queries, ~1/4 of the decoder's GEMM work at vit_b size) is an explicit
  value, :class:`DecoderImageState`, built by :func:`image_state` once per image and passed to
  :func:`mask_decoder` for every prompt batch on that image.
- **Channels-last upscaling** in chunks of :data:`PROMPTS_PER_UPSCALE` prompts, with the
  LayerNorm2d as a LayerNorm over the last axis and GELU in place.

``trace`` only observes: it never changes which arrays are computed or how. Entries are
given the official module's shape (a shared ``[1, ...]`` array is broadcast to ``[N, ...]``,
channels-last tensors are transposed to channels-first, chunks are concatenated), so the
parity suite checks the path users run.

Shapes: ``docs/shapes.md``.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional, Tuple

import numpy as np

from minisam.kernels.layers import gelu, layer_norm, softmax
from minisam.modeling.common import DECODER_LN_EPS, LAYER_NORM_2D_EPS

PROMPTS_PER_UPSCALE = 4  # prompts upscaled at a time: ~32 MB of intermediates at vit_b size, not N x 8 MB


class DecoderImageState(NamedTuple):
    """The decoder's inputs that depend on one image (and a dense embedding shared by all its prompts)."""

    image_embeddings: np.ndarray  # [1, C, G, G]
    image_pe: np.ndarray  # [1, C, G, G]
    keys: np.ndarray  # [1, GG, C] image tokens: image_embeddings + shared dense, row-major (y, x)
    key_pe: np.ndarray  # [1, GG, C] the dense positional encoding as tokens
    t2i_k: np.ndarray  # [1, GG, Ci] layer 0 token-to-image keys: k_proj(keys + key_pe)
    t2i_v: np.ndarray  # [1, GG, Ci] layer 0 token-to-image values: v_proj(keys)
    i2t_q: np.ndarray  # [1, GG, Ci] layer 0 image-to-token queries: q_proj(keys + key_pe)


def _observe(trace, key, x, n):  # [1 or N, ...] -> trace[key] = [N, ...]
    """Put x in the trace with the official batch size n (a shared [1, ...] array is broadcast)."""
    if trace is not None:
        trace[key] = np.broadcast_to(x, (n,) + x.shape[1:]) if x.shape[0] == 1 and n > 1 else x


def linear(x, p):  # [..., in], {"weight": [out, in], "bias": [out]} -> [..., out]
    """``nn.Linear`` as ONE GEMM over all leading axes (a stacked matmul would run one small
    GEMM per prompt), with the bias added in place."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    y = x.reshape(-1, x.shape[-1]) @ p["weight"].T  # [-1, in] @ [in, out] -> [-1, out], all rows at once
    y += p["bias"]  # [-1, out]
    return y.reshape(x.shape[:-1] + (y.shape[-1],))  # [..., out]


def _ln(x, p, eps=DECODER_LN_EPS):  # [..., C] -> [..., C]
    return layer_norm(x, p["weight"], p["bias"], eps)


def image_state(p, cfg, image_embeddings, image_pe, dense) -> DecoderImageState:
    """The image state for prompts that share one dense embedding.

    image_embeddings [1, C, G, G], image_pe [1, C, G, G], dense [1, C, G, G] or [1, C, 1, 1]
    (the no-mask embedding) -> :class:`DecoderImageState`.
    """
    _, C, G, _ = image_embeddings.shape
    src = image_embeddings + dense  # [1, C, G, G]
    keys = np.ascontiguousarray(src.reshape(1, C, G * G).transpose(0, 2, 1))  # [1, GG, C]
    key_pe = np.ascontiguousarray(image_pe.reshape(1, C, G * G).transpose(0, 2, 1))  # [1, GG, C]
    layer0 = p["transformer"]["layers"][0]
    k_img = keys + key_pe  # [1, GG, C]
    return DecoderImageState(
        image_embeddings, image_pe, keys, key_pe,
        t2i_k=linear(k_img, layer0["cross_attn_token_to_image"]["k_proj"]),  # [1, GG, Ci]
        t2i_v=linear(keys, layer0["cross_attn_token_to_image"]["v_proj"]),  # [1, GG, Ci]
        i2t_q=linear(k_img, layer0["cross_attn_image_to_token"]["q_proj"]))  # [1, GG, Ci]


def attention(p, q, k, v, num_heads: int, n: int, trace=None, name: str = "",
              q_proj=None, k_proj=None, v_proj=None):
    """``Attention.forward`` on [N or 1, ., C] inputs (a [1, ...] input is shared by the n prompts).

    q [N, Tq, C], k [N, Tk, C], v [N, Tk, C] -> [N, Tq, C]. ``q_proj``/``k_proj``/``v_proj``:
    projections already computed (from the image state); the matching input is then unused.
    """
    q = linear(q, p["q_proj"]) if q_proj is None else q_proj  # [N, Tq, C] -> [N, Tq, Ci]
    k = linear(k, p["k_proj"]) if k_proj is None else k_proj  # [N, Tk, C] -> [N, Tk, Ci]
    v = linear(v, p["v_proj"]) if v_proj is None else v_proj  # [N, Tk, C] -> [N, Tk, Ci]
    _observe(trace, name + ".q_proj", q, n)
    _observe(trace, name + ".k_proj", k, n)
    _observe(trace, name + ".v_proj", v, n)
    Bq, Tq, Ci = q.shape
    Bk, Tk, _ = k.shape
    hd = Ci // num_heads
    qh = q.reshape(Bq, Tq, num_heads, hd).transpose(0, 2, 1, 3)  # [N, Tq, Ci] -> [N, nH, Tq, hd]
    kh = k.reshape(Bk, Tk, num_heads, hd).transpose(0, 2, 1, 3)  # [N, Tk, Ci] -> [N, nH, Tk, hd]
    vh = v.reshape(Bk, Tk, num_heads, hd).transpose(0, 2, 1, 3)  # [N, Tk, Ci] -> [N, nH, Tk, hd]
    attn = qh @ kh.transpose(0, 1, 3, 2)  # [N, nH, Tq, hd] @ [N, nH, hd, Tk] -> [N, nH, Tq, Tk]
    attn /= np.float32(math.sqrt(hd))  # [N, nH, Tq, Tk] in place; the scale comes after the product
    softmax(attn, out=attn)  # [N, nH, Tq, Tk], rows sum to 1 over the keys
    # Not an official hook (the softmax is not a module); kept for the lessons.
    _observe(trace, name + ".attn_weights", attn, n)
    out = attn @ vh  # [N, nH, Tq, Tk] @ [N, nH, Tk, hd] -> [N, nH, Tq, hd]
    out = out.transpose(0, 2, 1, 3).reshape(out.shape[0], Tq, Ci)  # [N, nH, Tq, hd] -> [N, Tq, Ci]
    out = linear(out, p["out_proj"])  # [N, Tq, Ci] -> [N, Tq, C]
    _observe(trace, name + ".out_proj", out, n)
    _observe(trace, name, out, n)
    return out


def mlp_block(p, x, trace=None, name: str = ""):  # [N, Tt, C] -> [N, Tt, C]
    """``MLPBlock`` with ReLU: lin2(relu(lin1(x)))."""
    hidden = linear(x, p["lin1"])  # [N, Tt, C] -> [N, Tt, Dm]
    act = np.maximum(hidden, np.float32(0))  # [N, Tt, Dm]
    out = linear(act, p["lin2"])  # [N, Tt, Dm] -> [N, Tt, C]
    if trace is not None:
        trace[name + ".lin1"], trace[name + ".act"], trace[name + ".lin2"] = hidden, act, out
        trace[name] = out
    return out


def two_way_block(p, queries, keys, query_pe, key_pe, num_heads: int, skip_first_layer_pe: bool,
                  trace=None, name: str = "", norm_eps: float = DECODER_LN_EPS,
                  state: Optional[DecoderImageState] = None):
    """``TwoWayAttentionBlock.forward``.

    queries [N, Tt, C], keys [N or 1, GG, C], query_pe [N, Tt, C], key_pe [1, GG, C]
    -> (queries [N, Tt, C], keys [N, GG, C]). ``state``: layer 0's image projections.
    """
    n = queries.shape[0]
    # 1. Self-attention of the tokens. Layer 0 *replaces* the queries (no residual, no PE).
    if skip_first_layer_pe:
        queries = attention(p["self_attn"], queries, queries, queries, num_heads, n, trace,
                            name + ".self_attn")  # [N, Tt, C]
    else:
        q = queries + query_pe  # [N, Tt, C]
        queries = queries + attention(p["self_attn"], q, q, queries, num_heads, n, trace,
                                      name + ".self_attn")  # [N, Tt, C]
    queries = _ln(queries, p["norm1"], norm_eps)  # [N, Tt, C]
    _observe(trace, name + ".norm1", queries, n)

    # 2. Tokens read the image: q = tokens + PE, k = image + PE, v = image (no PE).
    q = queries + query_pe  # [N, Tt, C]
    k_img = keys + key_pe if state is None else None  # [N or 1, GG, C]; projected already with a state
    queries = queries + attention(p["cross_attn_token_to_image"], q, k_img, keys, num_heads, n, trace,
                                  name + ".cross_attn_token_to_image",
                                  k_proj=None if state is None else state.t2i_k,
                                  v_proj=None if state is None else state.t2i_v)  # [N, Tt, C]
    queries = _ln(queries, p["norm2"], norm_eps)  # [N, Tt, C]
    _observe(trace, name + ".norm2", queries, n)

    # 3. MLP on the tokens.
    queries = queries + mlp_block(p["mlp"], queries, trace, name + ".mlp")  # [N, Tt, C]
    queries = _ln(queries, p["norm3"], norm_eps)  # [N, Tt, C]
    _observe(trace, name + ".norm3", queries, n)

    # 4. The image reads the tokens (q = image + PE, k = tokens + PE, v = tokens); the keys did
    # not change since step 2, so keys + key_pe is reused. From here the image is per prompt.
    q = queries + query_pe  # [N, Tt, C]
    keys = keys + attention(p["cross_attn_image_to_token"], k_img, q, queries, num_heads, n, trace,
                            name + ".cross_attn_image_to_token",
                            q_proj=None if state is None else state.i2t_q)  # [N, GG, C]
    keys = _ln(keys, p["norm4"], norm_eps)  # [N, GG, C]
    if trace is not None:
        trace[name + ".norm4"] = keys
        trace[name] = (queries, keys)
    return queries, keys


def two_way_transformer(p, cfg, keys, key_pe, point_embedding, trace=None,
                        state: Optional[DecoderImageState] = None,
                        name: str = "mask_decoder.transformer") -> Tuple[np.ndarray, np.ndarray]:
    """``TwoWayTransformer.forward`` on image tokens.

    keys [N or 1, GG, C] (image + dense, as tokens), key_pe [1, GG, C], point_embedding [N, Tt, C]
    -> (tokens [N, Tt, C], image [N, GG, C]).
    """
    queries = point_embedding  # [N, Tt, C]
    for i in range(cfg.decoder_depth):
        queries, keys = two_way_block(p["layers"][i], queries, keys, point_embedding, key_pe,
                                      cfg.decoder_num_heads, skip_first_layer_pe=(i == 0), norm_eps=cfg.decoder_norm_eps, trace=trace,
                                      name=f"{name}.layers.{i}",
                                      state=state if i == 0 else None)  # [N, Tt, C], [N, GG, C]
    # Final tokens -> image attention, again with both PEs re-added.
    q = queries + point_embedding  # [N, Tt, C]
    k = keys + key_pe  # [N, GG, C]
    queries = queries + attention(p["final_attn_token_to_image"], q, k, keys, cfg.decoder_num_heads,
                                  queries.shape[0], trace, f"{name}.final_attn_token_to_image")  # [N, Tt, C]
    queries = _ln(queries, p["norm_final_attn"])  # [N, Tt, C]
    if trace is not None:
        trace[f"{name}.norm_final_attn"] = queries
        trace[name] = (queries, keys)
    return queries, keys


def conv_transpose2x2_s2_nhwc(x, weight, bias):  # [N, g, g, Cin], [Cin, Cout, 2, 2], [Cout] -> [N, 2g, 2g, Cout]
    """ConvTranspose2d(kernel 2, stride 2), channels-last: the GEMM writes [pixel, di, dj, Cout]
    (weight reordered to (in, kH, kW, out)), and one strided copy, fused with the bias add,
    puts the 2x2 patches in place. Twin of :func:`minisam.modeling.mask_decoder.conv_transpose2x2_s2`."""
    N, H, W, Cin = x.shape
    Cout = weight.shape[1]
    w = np.ascontiguousarray(weight.transpose(0, 2, 3, 1)).reshape(Cin, 4 * Cout)  # [Cin, 2*2*Cout]
    patches = x.reshape(N * H * W, Cin) @ w  # [N*g*g, Cin] @ [Cin, 2*2*Cout] -> [N*g*g, 2*2*Cout]
    patches = patches.reshape(N, H, W, 2, 2, Cout).transpose(0, 1, 3, 2, 4, 5)  # [N, g, 2, g, 2, Cout]
    out = np.empty((N, H, 2, W, 2, Cout), np.float32)  # [N, g, 2, g, 2, Cout]
    np.add(patches, bias, out=out)  # copy into place + bias, one pass
    return out.reshape(N, 2 * H, 2 * W, Cout)  # [N, 2g, 2g, Cout]


def output_upscaling(p, src, steps=None):  # [n, G, G, C] -> [n, 4G, 4G, C/8], channels-last
    """ConvT 2x2/2 -> LayerNorm2d -> GELU -> ConvT 2x2/2 -> GELU, all channels-last (a
    LayerNorm2d over channels is a LayerNorm over the last axis). ``steps``: a list that gets
    the five intermediates, channels-first, for the trace (copies: GELU runs in place)."""
    def keep(x):  # [n, g, g, Cout] -> steps += [n, Cout, g, g]
        if steps is not None:
            steps.append(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))

    x = conv_transpose2x2_s2_nhwc(src, p[0]["weight"], p[0]["bias"])  # [n, G, G, C] -> [n, 2G, 2G, C/4]
    keep(x)
    x = layer_norm(x, p[1]["weight"], p[1]["bias"], LAYER_NORM_2D_EPS)  # [n, 2G, 2G, C/4]
    keep(x)
    gelu(x, out=x)  # [n, 2G, 2G, C/4] in place
    keep(x)
    x = conv_transpose2x2_s2_nhwc(x, p[3]["weight"], p[3]["bias"])  # [n, 2G, 2G, C/4] -> [n, 4G, 4G, C/8]
    keep(x)
    gelu(x, out=x)  # [n, 4G, 4G, C/8] in place
    keep(x)
    return x


def mlp(p, x, num_layers: int, trace=None, name: str = ""):  # [N, in] -> [N, out]
    """``MLP`` (from MaskFormer): Linear -> ReLU -> ... -> Linear, no sigmoid."""
    for i in range(num_layers):
        x = linear(x, p["layers"][i])  # [N, in_i] -> [N, out_i]
        if trace is not None:
            trace[f"{name}.layers.{i}"] = x
        if i < num_layers - 1:
            x = np.maximum(x, np.float32(0))  # [N, out_i], F.relu (not a module: no hook)
    if trace is not None:
        trace[name] = x
    return x


def predict_masks(p, cfg, state: DecoderImageState, sparse, dense=None, trace=None):
    """``MaskDecoder.predict_masks``: all K masks and K IoU scores.

    state: the image's :class:`DecoderImageState`; sparse [N, Ns, C]; dense [N, C, G, G], or
    None for the dense embedding the state was built with -> (masks [N, K, R, R], iou [N, K]).
    ``dense=None`` shares one copy of the image tokens among the prompts; per-prompt dense
    embeddings (mask inputs) give per-prompt image tokens, as in the official code. A dense
    embedding shared by all prompts belongs in the state (:meth:`MaskDecoder.__call__
    <minisam.modeling.sam.MaskDecoder.__call__>` builds it so).
    """
    K = cfg.num_mask_tokens
    N = sparse.shape[0]
    output_tokens = np.concatenate([p["iou_token"]["weight"], p["mask_tokens"]["weight"]], axis=0)  # [1+K, C]
    output_tokens = np.broadcast_to(output_tokens[None], (N,) + output_tokens.shape)  # [N, 1+K, C]
    tokens = np.concatenate([output_tokens, sparse], axis=1)  # [N, Tt, C]

    if dense is None:
        keys, layer0 = state.keys, state  # [1, GG, C]: one image for all prompts
    else:
        emb = state.image_embeddings  # [1, C, G, G]
        _, C, G, _ = emb.shape
        src = np.repeat(emb, N, axis=0) + dense  # [N, C, G, G], repeat_interleave as the official code
        keys = np.ascontiguousarray(src.reshape(N, C, G * G).transpose(0, 2, 1))  # [N, GG, C]
        layer0 = None

    hs, src = two_way_transformer(p["transformer"], cfg, keys, state.key_pe, tokens, trace,
                                  state=layer0)  # [N, Tt, C], [N, GG, C]
    iou_token_out = hs[:, 0, :]  # [N, C]
    mask_tokens_out = hs[:, 1:1 + K, :]  # [N, K, C]

    hyper_in = np.stack([mlp(p["output_hypernetworks_mlps"][i], mask_tokens_out[:, i, :], 3, trace,
                             f"mask_decoder.output_hypernetworks_mlps.{i}")
                         for i in range(K)], axis=1)  # K x [N, C/8] -> [N, K, C/8]
    G = state.image_embeddings.shape[2]
    C = src.shape[2]
    src = src.reshape(N, G, G, C)  # [N, GG, C] -> [N, G, G, C], channels-last: no transpose
    R = 4 * G
    masks = np.empty((N, K, R * R), np.float32)  # [N, K, R*R]
    steps = [] if trace is not None else None
    for b0 in range(0, N, PROMPTS_PER_UPSCALE):
        b1 = min(N, b0 + PROMPTS_PER_UPSCALE)
        chunk_steps = [] if trace is not None else None
        upscaled = output_upscaling(p["output_upscaling"], src[b0:b1], chunk_steps)  # [n, R, R, C/8]
        if trace is not None:
            steps.append(chunk_steps)
        # mask logits: each mask token's vector dotted with the upscaled embedding at every pixel
        np.matmul(hyper_in[b0:b1], upscaled.reshape(b1 - b0, R * R, -1).transpose(0, 2, 1),
                  out=masks[b0:b1])  # [n, K, C/8] @ [n, C/8, R*R] -> [n, K, R*R]
    masks = masks.reshape(N, K, R, R)  # [N, K, R, R]
    if trace is not None and steps:
        name = "mask_decoder.output_upscaling"
        for i in range(5):
            trace[f"{name}.{i}"] = np.concatenate([s[i] for s in steps], axis=0)  # [N, Cout, g, g]
        trace[name] = trace[f"{name}.4"]

    iou_pred = mlp(p["iou_prediction_head"], iou_token_out, cfg.iou_head_depth, trace,
                   "mask_decoder.iou_prediction_head")  # [N, C] -> [N, K], raw scores
    return masks, iou_pred


def mask_decoder(p, cfg, state: DecoderImageState, sparse, dense, multimask_output: bool,
                 trace: Optional[dict] = None) -> Tuple[np.ndarray, np.ndarray]:
    """``MaskDecoder.forward``: the three ambiguity masks (tokens 1..K-1) or the single mask (token 0).

    -> (low_res_masks [N, K', R, R], iou_predictions [N, K']) with K' = K-1 or 1.
    ``dense``: see :func:`predict_masks`.
    """
    masks, iou_pred = predict_masks(p, cfg, state, sparse, dense, trace)  # [N, K, R, R], [N, K]
    sel = slice(1, None) if multimask_output else slice(0, 1)
    masks = np.ascontiguousarray(masks[:, sel])  # [N, K', R, R]
    iou_pred = np.ascontiguousarray(iou_pred[:, sel])  # [N, K']
    if trace is not None:
        trace["mask_decoder"] = (masks, iou_pred)
    return masks, iou_pred
