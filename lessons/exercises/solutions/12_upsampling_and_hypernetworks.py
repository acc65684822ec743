"""Reference solutions for lesson 12's exercises."""

import copy


def masks_from_hypernetwork(hyper_in, upscaled):
    c, R, _ = upscaled.shape
    return (hyper_in @ upscaled.reshape(c, R * R)).reshape(-1, R, R)


def conv_transpose_2x2(x, weight, bias):
    cin, g, _ = x.shape
    cout = weight.shape[1]
    out = weight.reshape(cin, cout * 4).T @ x.reshape(cin, g * g)       # [Cout*2*2, g*g]
    out = out.reshape(cout, 2, 2, g, g).transpose(0, 3, 1, 4, 2)        # [Cout, i, a, j, b]
    return out.reshape(cout, 2 * g, 2 * g) + bias[:, None, None]


def swap_mask_outputs(p, i, j):
    # Output k is made by mask token k (its row of the embedding), read by hypernetwork MLP k;
    # its score is row k of the IoU head's last layer. The transformer treats the tokens as a
    # set (attention has no notion of order), so swapping rows i and j of the token embedding
    # swaps their outputs; the MLPs and the score rows must follow.
    q = copy.deepcopy(p)
    tokens = q["mask_tokens"]["weight"]
    tokens[[i, j]] = tokens[[j, i]]
    mlps = q["output_hypernetworks_mlps"]
    mlps[i], mlps[j] = mlps[j], mlps[i]
    last = q["iou_prediction_head"]["layers"][max(q["iou_prediction_head"]["layers"])]
    last["weight"][[i, j]] = last["weight"][[j, i]]
    last["bias"][[i, j]] = last["bias"][[j, i]]
    return q
